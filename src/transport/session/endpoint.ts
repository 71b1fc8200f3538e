/**
 * One UDP socket shared by many sessions, demultiplexed by the session id in the
 * common header. Datagrams too short to carry a header are counted and dropped.
 *
 * A datagram for a session id that is not registered yet is dropped too, unless its
 * source address has an SSH connection to this server (`holdFrom`): then it may be the
 * client's early data, sent with the session id and keys it chose in `hello` before the
 * server has handled `hello` (docs/protocol.md: early data). Such datagrams are held,
 * within bounds (HOLD_MS old, HOLD_TOTAL_BYTES in all, HOLD_PER_ID_BYTES per id), and
 * handed to the session, in arrival order and with their arrival times, when it
 * registers. Nothing about them is trusted: the session authenticates each one as if it
 * had just arrived.
 */
import { systemClock, type Clock } from '../../core/clock.js';
import type { DatagramSocket, PeerAddress } from '../socket/types.js';
import { COMMON_HEADER, peekSessionId } from '../wire/packet.js';

export interface PacketSink {
  /**
   * `arrivedAt`: when the datagram arrived, in the session's clock: the kernel's receive
   * time when the socket tells it, and for a datagram the endpoint held before the session
   * registered, that time or when the endpoint got it
   */
  onPacket(packet: Buffer, from: PeerAddress, arrivedAt?: number, held?: boolean): void;
}

export interface EndpointStats {
  received: number;
  /** dropped: no session with its id, and not held */
  unknownSession: number;
  malformed: number;
  /** held for a session not registered yet */
  held: number;
  /** held, then handed to their session */
  heldDelivered: number;
  /** held or eligible to be, but dropped: over a bound, or expired before their session came */
  heldDropped: number;
}

/** a held datagram is dropped when it is older than this (ms) */
export const HOLD_MS = 2000;
/** the most bytes held for all unknown session ids together */
export const HOLD_TOTAL_BYTES = 16 * 1024 * 1024;
/** the most bytes held for one unknown session id */
export const HOLD_PER_ID_BYTES = 8 * 1024 * 1024;
/** bookkeeping charged per held datagram besides its bytes (a flood of tiny ones cannot make millions of entries) */
export const HOLD_ENTRY_BYTES = 128;

export interface EndpointOptions {
  /**
   * Whether a datagram for an unknown session from this source address may be held: the
   * server answers true while the address has an SSH connection to it. Default: hold nothing.
   */
  holdFrom?(address: string): boolean;
  /** the clock held datagrams are timed by (default: the system clock) */
  clock?: Clock;
}

interface Held {
  id: number;
  packet: Buffer;
  from: PeerAddress;
  at: number;
  cost: number;
  /** delivered or dropped already (still in the arrival queue until it reaches the head) */
  gone: boolean;
}

interface HeldBucket {
  packets: Held[];
  head: number;
  bytes: number;
}

export class Endpoint {
  readonly stats: EndpointStats = { received: 0, unknownSession: 0, malformed: 0, held: 0, heldDelivered: 0, heldDropped: 0 };
  private readonly sessions = new Map<number, PacketSink>();
  private readonly holdFrom: ((address: string) => boolean) | undefined;
  private readonly clock: Clock;
  /** every held datagram in arrival order (for expiry), and by session id */
  private heldQueue: Held[] = [];
  private heldHead = 0;
  private readonly heldById = new Map<number, HeldBucket>();
  private heldBytes = 0;
  private purgeTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly socket: DatagramSocket,
    o: EndpointOptions = {},
  ) {
    this.holdFrom = o.holdFrom;
    this.clock = o.clock ?? systemClock;
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
      if (id !== undefined && id !== 0 && this.holdFrom !== undefined && this.mayHold(from.address)) this.hold(id, packet, from, arrivedAt);
      else this.stats.unknownSession++;
      return;
    }
    sink.onPacket(packet, from, arrivedAt);
  }

  private mayHold(address: string): boolean {
    try {
      return this.holdFrom!(address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address);
    } catch {
      return false;
    }
  }

  private hold(id: number, packet: Buffer, from: PeerAddress, arrivedAt: number | undefined): void {
    const now = this.clock.now();
    this.purge(now);
    const cost = packet.length + HOLD_ENTRY_BYTES;
    const bucket = this.heldById.get(id);
    if (this.heldBytes + cost > HOLD_TOTAL_BYTES || (bucket?.bytes ?? 0) + cost > HOLD_PER_ID_BYTES) {
      this.stats.heldDropped++;
      return;
    }
    // the socket may reuse its receive buffer after this call: keep a copy
    const h: Held = { id, packet: Buffer.from(packet), from: { address: from.address, port: from.port }, at: arrivedAt ?? now, cost, gone: false };
    if (bucket) {
      bucket.packets.push(h);
      bucket.bytes += cost;
    } else this.heldById.set(id, { packets: [h], head: 0, bytes: cost });
    this.heldQueue.push(h);
    this.heldBytes += cost;
    this.stats.held++;
    this.armPurge();
  }

  /** Drops held datagrams older than HOLD_MS (oldest first: the queue is in arrival order). */
  private purge(now: number): void {
    const q = this.heldQueue;
    while (this.heldHead < q.length) {
      const h = q[this.heldHead]!;
      if (!h.gone) {
        if (now - h.at <= HOLD_MS) break;
        h.gone = true;
        this.heldBytes -= h.cost;
        this.stats.heldDropped++;
        const bucket = this.heldById.get(h.id);
        if (bucket) {
          // the oldest of its id, too
          bucket.head++;
          bucket.bytes -= h.cost;
          if (bucket.head >= bucket.packets.length) this.heldById.delete(h.id);
        }
      }
      this.heldHead++;
    }
    if (this.heldHead >= q.length) {
      this.heldQueue = [];
      this.heldHead = 0;
    } else if (this.heldHead > 4096 && this.heldHead * 2 > q.length) {
      this.heldQueue = q.slice(this.heldHead);
      this.heldHead = 0;
    }
    if (this.heldById.size === 0 && this.purgeTimer !== undefined) {
      clearTimeout(this.purgeTimer);
      this.purgeTimer = undefined;
    }
  }

  /** An unref'd timer purges what nobody came for (a hold that no session takes must not keep its memory). */
  private armPurge(): void {
    if (this.purgeTimer !== undefined) return;
    this.purgeTimer = setTimeout(() => {
      this.purgeTimer = undefined;
      this.purge(this.clock.now());
      if (this.heldById.size > 0) this.armPurge();
    }, HOLD_MS / 2);
    this.purgeTimer.unref();
  }

  /** Bytes held now (bookkeeping included), for all ids. */
  get heldNow(): number {
    return this.heldBytes;
  }

  /**
   * Registers a session. Datagrams held for its id are handed to it, in arrival order and
   * each with its arrival time, in a microtask (the sink is usually still being
   * constructed when it registers), before any datagram that arrives later.
   */
  register(sessionId: number, sink: PacketSink): void {
    this.sessions.set(sessionId, sink);
    if (this.heldById.size === 0) return;
    this.purge(this.clock.now());
    const bucket = this.heldById.get(sessionId);
    if (!bucket) return;
    this.heldById.delete(sessionId);
    const packets = bucket.packets.slice(bucket.head);
    for (const h of packets) {
      h.gone = true;
      this.heldBytes -= h.cost;
    }
    queueMicrotask(() => {
      for (const h of packets) {
        if (this.sessions.get(sessionId) !== sink) {
          this.stats.heldDropped++;
          continue;
        }
        this.stats.heldDelivered++;
        sink.onPacket(h.packet, h.from, h.at, true);
      }
    });
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
