/**
 * One UDP socket shared by many sessions, demultiplexed by the session id in the
 * common header. Datagrams for unknown sessions or too short to carry a header are
 * counted and dropped; nothing about them reaches a session.
 */
import type { DatagramSocket, PeerAddress } from '../socket/types.js';
import { COMMON_HEADER, peekSessionId } from '../wire/packet.js';

export interface PacketSink {
  /** `arrivedAt`: the kernel's receive time in the session's clock, when the socket tells it */
  onPacket(packet: Buffer, from: PeerAddress, arrivedAt?: number): void;
}

export interface EndpointStats {
  received: number;
  unknownSession: number;
  malformed: number;
}

export class Endpoint {
  readonly stats: EndpointStats = { received: 0, unknownSession: 0, malformed: 0 };
  private readonly sessions = new Map<number, PacketSink>();

  constructor(readonly socket: DatagramSocket) {
    socket.onDatagram((packet, from, arrivedAt) => this.dispatch(packet, from, arrivedAt));
  }

  private dispatch(packet: Buffer, from: PeerAddress, arrivedAt: number | undefined): void {
    this.stats.received++;
    if (packet.length < COMMON_HEADER) {
      this.stats.malformed++;
      return;
    }
    const id = peekSessionId(packet);
    const sink = id === undefined ? undefined : this.sessions.get(id);
    if (!sink) {
      this.stats.unknownSession++;
      return;
    }
    sink.onPacket(packet, from, arrivedAt);
  }

  register(sessionId: number, sink: PacketSink): void {
    this.sessions.set(sessionId, sink);
  }

  unregister(sessionId: number): void {
    this.sessions.delete(sessionId);
  }

  has(sessionId: number): boolean {
    return this.sessions.has(sessionId);
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  send(packets: readonly Uint8Array[], to: PeerAddress): void {
    this.socket.send(packets, to);
  }
}
