/**
 * What both ends of a session's data plane share: registration on the endpoint, the
 * peer's address (learned from authentic, fresh datagrams), packet numbering, the replay
 * window, and sealing of body-only datagrams (FEEDBACK, STATUS).
 */
import type { Clock } from '../../core/clock.js';
import type { PacketProtection } from '../crypto/aead.js';
import { ReplayWindow } from '../crypto/aead.js';
import type { PeerAddress } from '../socket/types.js';
import type { Endpoint, PacketSink } from './endpoint.js';
import { COMMON_HEADER, writeCommon, type PacketTypeValue } from '../wire/packet.js';

export interface SessionPeerOptions {
  endpoint: Endpoint;
  sessionId: number;
  clock: Clock;
  /** protects what this side sends */
  seal: PacketProtection;
  /** opens what the peer sends */
  open: PacketProtection;
  /** the peer's address, if known in advance (client side) */
  peer?: PeerAddress;
}

export abstract class SessionPeer implements PacketSink {
  protected peer: PeerAddress | undefined;
  protected closed = false;
  protected cancelTimer: (() => void) | undefined;
  private pn = 0;
  private readonly replay = new ReplayWindow();

  constructor(private readonly base: SessionPeerOptions) {
    this.peer = base.peer;
    base.endpoint.register(base.sessionId, this);
  }

  abstract onPacket(packet: Buffer, from: PeerAddress, arrivedAt?: number, held?: boolean): void;

  get peerAddress(): PeerAddress | undefined {
    return this.peer;
  }

  /** Sends to `peer` from now on (the client learned the server's data port from `welcome`). */
  redirect(peer: PeerAddress): void {
    this.peer = peer;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.cancelTimer?.();
    this.base.endpoint.unregister(this.base.sessionId);
  }

  /** A packet number for the next datagram (each one used once: it is the nonce). */
  protected nextPacketNumber(): number {
    return this.pn++;
  }

  /** False for a packet number already seen or too old for the replay window. */
  protected isFresh(pn: number): boolean {
    return this.replay.check(pn);
  }

  /** The plaintext of an authentic datagram (and its number marked seen), or undefined. */
  protected openAuthentic(packet: Buffer, headerLen: number, pn: number): Buffer | undefined {
    try {
      const body = this.base.open.open(packet, headerLen, pn);
      this.replay.accept(pn);
      return body;
    } catch {
      return undefined;
    }
  }

  /** Seals a datagram that is a common header and an encrypted body, and sends it. */
  protected sendSealed(type: PacketTypeValue, body: Buffer, to: PeerAddress): void {
    const pkt = Buffer.allocUnsafe(COMMON_HEADER + body.length + this.base.seal.overhead);
    const pn = this.nextPacketNumber();
    writeCommon(pkt, type, 0, this.base.sessionId, pn);
    this.base.seal.seal(pkt, COMMON_HEADER, body, pn);
    this.base.endpoint.send([pkt], to);
  }
}
