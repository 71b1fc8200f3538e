/** A peer's UDP address. */
export interface PeerAddress {
  readonly address: string;
  readonly port: number;
}

/**
 * The datagram seam: a bound UDP socket (real: node:dgram; tests: simulated network).
 * `send` takes ownership of the buffers (callers must not reuse them after the call).
 */
export interface DatagramSocket {
  send(packets: readonly Uint8Array[], to: PeerAddress): void;
  /**
   * True when `send` copies the packets before it returns (the native socket): the
   * caller may then reuse its buffers at once, and `send`'s ownership rule is lifted.
   */
  readonly copiesOnSend?: boolean;
  onDatagram(handler: (packet: Buffer, from: PeerAddress) => void): void;
  /** The locally bound address. */
  local(): PeerAddress;
  close(): Promise<void>;
}

export function peerKey(p: PeerAddress): string {
  return `${p.address}|${p.port}`;
}
