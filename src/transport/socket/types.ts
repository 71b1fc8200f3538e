/** A peer's UDP address. */
export interface PeerAddress {
  readonly address: string;
  readonly port: number;
}

/**
 * Receives one datagram. `arrivedAt`: when the kernel received it, in the socket's clock
 * (real sockets that can tell: the native one), so that a receiver's timing does not
 * depend on how late its event loop read the socket; undefined: now.
 */
export type DatagramHandler = (packet: Buffer, from: PeerAddress, arrivedAt?: number) => void;

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
  onDatagram(handler: DatagramHandler): void;
  /** The locally bound address. */
  local(): PeerAddress;
  close(): Promise<void>;
}

export function peerKey(p: PeerAddress): string {
  return `${p.address}|${p.port}`;
}
