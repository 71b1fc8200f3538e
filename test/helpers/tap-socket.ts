/** A DatagramSocket double: records what is sent and lets a test inject datagrams. */
import type { DatagramHandler, DatagramSocket, PeerAddress } from '../../src/transport/socket/types.js';

export class TapSocket implements DatagramSocket {
  readonly sent: { packet: Buffer; to: PeerAddress }[] = [];
  private handler: DatagramHandler | undefined;
  closed = false;

  constructor(readonly addr: PeerAddress) {}

  send(packets: readonly Uint8Array[], to: PeerAddress): void {
    for (const p of packets) this.sent.push({ packet: Buffer.from(p), to });
  }

  onDatagram(handler: DatagramHandler): void {
    this.handler = handler;
  }

  local(): PeerAddress {
    return this.addr;
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  /**
   * Delivers a datagram as if it had arrived from `from`. Like a real socket, the
   * receiver gets its own copy (a receiver may decrypt in place). `arrivedAt`: the
   * kernel receive time a native socket would report.
   */
  inject(packet: Buffer, from: PeerAddress, arrivedAt?: number): void {
    this.handler?.(Buffer.from(packet), from, arrivedAt);
  }

  /** Removes and returns everything sent so far. */
  drain(): Buffer[] {
    return this.sent.splice(0).map((s) => s.packet);
  }
}
