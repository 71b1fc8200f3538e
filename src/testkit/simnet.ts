/**
 * A deterministic simulated datagram network for protocol tests.
 *
 * Sockets created by {@link SimNetwork.socket} implement the transport's
 * {@link DatagramSocket} seam. Every packet crosses a per-direction {@link SimLink}
 * (configured with {@link SimNetwork.link}) and is delivered by a {@link SimClock} timer,
 * so a test drives the whole exchange by advancing the clock. All randomness comes from
 * seeded PRNGs (one stream per link, derived from the network seed and the link's
 * endpoints), so identical seeds and identical traffic give identical traces.
 *
 * The path of one packet across a link:
 * 1. **Bottleneck** (`rateBps > 0`): a FIFO transmitter at `rateBps`; a packet that finds
 *    more than `queueBytes` waiting ahead of it (not counting the packet being
 *    transmitted) is dropped (drop-tail, counter `droppedQueue`).
 * 2. **Wire**: after serialisation the packet is lost with probability `loss`, otherwise
 *    it is delayed by `delayMs` plus a uniform `[0, jitterMs]` (jitter never reorders),
 *    possibly held back by an extra `reorderDelayMs` (probability `reorder`, so later
 *    packets overtake it), bit-flipped (probability `corrupt`, on a copy) and duplicated
 *    (probability `duplicate`; the copy takes its own jitter).
 * 3. **Delivery**: at arrival time the packet goes to the socket bound to the
 *    destination address and port; if none is bound (or it has no handler) the packet is
 *    dropped silently (counter `noListener`).
 */
import type { PeerAddress, DatagramSocket } from '../transport/socket/types.js';
import type { SimClock } from './simclock.js';

/** Largest UDP payload over IPv4. */
const MAX_UDP_PAYLOAD = 65507;
/** First port handed out for `socket(addr, 0)`. */
const EPHEMERAL_FIRST = 49152;

/** One direction of a simulated path between two addresses. */
export interface LinkConfig {
  /** Bottleneck rate in bits per second; 0 or absent = unlimited. */
  rateBps?: number;
  /** Drop-tail queue capacity in bytes in front of the bottleneck; absent = unlimited. */
  queueBytes?: number;
  /** Fixed one-way propagation delay in milliseconds (the minimum one-way delay). */
  delayMs: number;
  /** Extra delay drawn uniformly from [0, jitterMs] per packet; never reorders. */
  jitterMs?: number;
  /** Probability (0..1) that a packet is lost on the wire (after the bottleneck). */
  loss?: number;
  /** Probability (0..1) that a delivered packet is delivered twice. */
  duplicate?: number;
  /** Probability (0..1) that a packet is held back by `reorderDelayMs` so later ones overtake it. */
  reorder?: number;
  /**
   * Extra delay of a reordered packet in ms. Default: the larger of 1 ms, half of
   * `delayMs` and three serialisation times at the bottleneck.
   */
  reorderDelayMs?: number;
  /** Probability (0..1) that one random bit of the packet is flipped (on a copy). */
  corrupt?: number;
  /** Packets larger than this many bytes are dropped (counter `oversize`); absent = 65507. */
  mtuBytes?: number;
}

/** Counters of one link direction. All counts are packets unless named bytes. */
export interface LinkStats {
  /** Packets handed to the link by a sender. */
  sent: number;
  /** Bytes handed to the link by a sender. */
  bytesSent: number;
  /** Packets (including duplicates) handed to a bound socket's handler. */
  delivered: number;
  /** Bytes (including duplicates) handed to a bound socket's handler. */
  bytesDelivered: number;
  /** Packets lost on the wire (`loss`). */
  lost: number;
  /** Packets dropped because the bottleneck queue was full. */
  droppedQueue: number;
  /** Extra copies created by `duplicate`. */
  duplicated: number;
  /** Packets delivered with a flipped bit. */
  corrupted: number;
  /** Packets held back by `reorder`. */
  reordered: number;
  /** Packets dropped for exceeding `mtuBytes`. */
  oversize: number;
  /** Packets that arrived where no socket (or no handler) was listening. */
  noListener: number;
  /**
   * Bytes waiting in the bottleneck queue (excluding the packet in service), as of the
   * last send on this link or the last {@link SimNetwork.stats} call.
   */
  queuedBytes: number;
  /** Largest value `queuedBytes` has reached. */
  maxQueuedBytes: number;
}

/** What happened to a packet, as reported to {@link SimNetwork.observe} listeners. */
export type SimEventKind =
  | 'send'
  | 'deliver'
  | 'lose'
  | 'queue-drop'
  | 'oversize'
  | 'duplicate'
  | 'corrupt'
  | 'reorder'
  | 'no-listener';

/** One entry of the network trace. */
export interface SimEvent {
  /** Virtual time in ms. */
  readonly t: number;
  readonly kind: SimEventKind;
  /** Packet id, unique per network in send order (a duplicate keeps its original's id). */
  readonly id: number;
  readonly from: PeerAddress;
  readonly to: PeerAddress;
  /** Packet size in bytes. */
  readonly size: number;
}

/** Options for {@link SimNetwork}. */
export interface SimNetworkOptions {
  /** PRNG seed (32-bit integer); default 1. */
  seed?: number;
  /** Configuration of links never set with `link()`; default `{ delayMs: 1 }`. */
  defaultLink?: LinkConfig;
}

/** mulberry32: a small, fast, seedable 32-bit PRNG. Returns a function yielding [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a over a string, mixed with a seed: derives independent per-link PRNG seeds. */
function hashSeed(seed: number, text: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function validateConfig(cfg: LinkConfig): Readonly<LinkConfig> {
  const prob = (name: keyof LinkConfig): void => {
    const v = cfg[name];
    if (v !== undefined && !(v >= 0 && v <= 1)) throw new RangeError(`LinkConfig.${name} must be within 0..1, got ${v}`);
  };
  const nonNeg = (name: keyof LinkConfig, required = false): void => {
    const v = cfg[name];
    if (v === undefined && !required) return;
    if (typeof v !== 'number' || !(v >= 0) || Number.isNaN(v)) {
      throw new RangeError(`LinkConfig.${name} must be a number >= 0, got ${v}`);
    }
  };
  nonNeg('delayMs', true);
  for (const k of ['rateBps', 'queueBytes', 'jitterMs', 'reorderDelayMs', 'mtuBytes'] as const) nonNeg(k);
  for (const k of ['loss', 'duplicate', 'reorder', 'corrupt'] as const) prob(k);
  return Object.freeze({ ...cfg });
}

function newStats(): LinkStats {
  return {
    sent: 0,
    bytesSent: 0,
    delivered: 0,
    bytesDelivered: 0,
    lost: 0,
    droppedQueue: 0,
    duplicated: 0,
    corrupted: 0,
    reordered: 0,
    oversize: 0,
    noListener: 0,
    queuedBytes: 0,
    maxQueuedBytes: 0,
  };
}

function asBuffer(p: Uint8Array): Buffer {
  return Buffer.isBuffer(p) ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength);
}

/** One direction of the path between two addresses, with its state and counters. */
export class SimLink {
  /** Counters; updated live. */
  readonly stats: LinkStats = newStats();
  private cfg: Readonly<LinkConfig>;
  private readonly rng: () => number;
  /** Packets accepted by the bottleneck and not yet fully transmitted: [txStart, txEnd, size]. */
  private readonly inSystem: Array<[number, number, number]> = [];
  private inSystemHead = 0;
  private inSystemBytes = 0;
  /** Arrival time of the last in-order packet, so that jitter never reorders. */
  private lastArrival = -Infinity;

  /** @internal Created by SimNetwork. */
  constructor(
    readonly from: string,
    readonly to: string,
    cfg: LinkConfig,
    seed: number,
  ) {
    this.cfg = validateConfig(cfg);
    this.rng = mulberry32(hashSeed(seed, `${from}\u0000${to}`));
  }

  /** The current configuration (frozen). */
  get config(): Readonly<LinkConfig> {
    return this.cfg;
  }

  /** Replaces the configuration; counters, the queue and in-flight packets are kept. */
  configure(cfg: LinkConfig): void {
    this.cfg = validateConfig(cfg);
  }

  /** Resets the counters (not the queue state). */
  resetStats(): void {
    const queued = this.stats.queuedBytes;
    Object.assign(this.stats, newStats(), { queuedBytes: queued, maxQueuedBytes: queued });
  }

  /** @internal Bytes waiting in the bottleneck queue at time `now`, after expiring sent packets. */
  waitingBytes(now: number): number {
    const q = this.inSystem;
    while (this.inSystemHead < q.length) {
      const head = q[this.inSystemHead] as [number, number, number];
      if (head[1] > now) break;
      this.inSystemBytes -= head[2];
      this.inSystemHead++;
    }
    if (this.inSystemHead > 1024 && this.inSystemHead * 2 > q.length) {
      q.splice(0, this.inSystemHead);
      this.inSystemHead = 0;
    }
    const head = q[this.inSystemHead];
    if (head === undefined) return 0;
    return head[0] <= now ? this.inSystemBytes - head[2] : this.inSystemBytes;
  }

  /**
   * @internal Runs a packet through the bottleneck. Returns the time its last bit leaves
   * the transmitter, or undefined when the queue drops it.
   */
  admit(now: number, size: number): number | undefined {
    const rate = this.cfg.rateBps ?? 0;
    if (rate <= 0) return now;
    const waiting = this.waitingBytes(now);
    const q = this.inSystem;
    const busy = this.inSystemHead < q.length;
    if (busy && waiting + size > (this.cfg.queueBytes ?? Infinity)) return undefined;
    const last = q[q.length - 1];
    const txStart = busy && last !== undefined ? Math.max(now, last[1]) : now;
    const txEnd = txStart + (size * 8 * 1000) / rate;
    q.push([txStart, txEnd, size]);
    this.inSystemBytes += size;
    const queued = txStart > now ? waiting + size : waiting;
    this.stats.queuedBytes = queued;
    if (queued > this.stats.maxQueuedBytes) this.stats.maxQueuedBytes = queued;
    return txEnd;
  }

  /** @internal Draws the next random number of this link's stream. */
  random(): number {
    return this.rng();
  }

  /** @internal Computes the in-order arrival time of a packet leaving the transmitter at `txEnd`. */
  arrival(txEnd: number): number {
    const jitter = this.cfg.jitterMs ?? 0;
    const t = txEnd + this.cfg.delayMs + (jitter > 0 ? this.rng() * jitter : 0);
    const at = Math.max(t, this.lastArrival);
    this.lastArrival = at;
    return at;
  }

  /** @internal Extra delay applied to a reordered packet of `size` bytes. */
  reorderDelay(size: number): number {
    if (this.cfg.reorderDelayMs !== undefined) return this.cfg.reorderDelayMs;
    const rate = this.cfg.rateBps ?? 0;
    const serialisation = rate > 0 ? (size * 8 * 1000) / rate : 0;
    return Math.max(1, this.cfg.delayMs / 2, 3 * serialisation);
  }

  /** @internal Updates the live queue gauge (called when time has moved). */
  refreshQueue(now: number): void {
    if ((this.cfg.rateBps ?? 0) > 0) this.stats.queuedBytes = this.waitingBytes(now);
  }
}

type Handler = (packet: Buffer, from: PeerAddress) => void;

/** A socket bound on a {@link SimNetwork}; implements the transport's DatagramSocket seam. */
class SimSocket implements DatagramSocket {
  readonly addr: PeerAddress;
  handler: Handler | undefined;
  closed = false;

  constructor(
    private readonly net: SimNetwork,
    address: string,
    port: number,
  ) {
    this.addr = Object.freeze({ address, port });
  }

  send(packets: readonly Uint8Array[], to: PeerAddress): void {
    if (this.closed) {
      throw Object.assign(new Error(`simnet: send on closed socket ${this.addr.address}:${this.addr.port}`), {
        code: 'ERR_SOCKET_DGRAM_NOT_RUNNING',
      });
    }
    for (const p of packets) this.net.transmit(this, p, to);
  }

  /** Sets the datagram handler (replacing any previous one, as a single 'message' listener would). */
  onDatagram(handler: Handler): void {
    this.handler = handler;
  }

  local(): PeerAddress {
    return this.addr;
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.handler = undefined;
      this.net.unbind(this);
    }
    return Promise.resolve();
  }
}

/**
 * A simulated network of datagram sockets driven by a {@link SimClock}.
 *
 * @example
 * const clock = new SimClock();
 * const net = new SimNetwork(clock, { seed: 42 });
 * net.link('10.0.0.1', '10.0.0.2', { delayMs: 40, rateBps: 100e6, queueBytes: 256_000, loss: 0.01 });
 * net.link('10.0.0.2', '10.0.0.1', { delayMs: 40 });
 * const a = net.socket('10.0.0.1', 0);
 * const b = net.socket('10.0.0.2', 33001);
 * b.onDatagram((pkt, from) => { ... });
 * a.send([payload], b.local());
 * clock.advance(100);
 */
export class SimNetwork {
  private readonly sockets = new Map<string, SimSocket>();
  private readonly linkMap = new Map<string, SimLink>();
  private readonly listeners: Array<(e: SimEvent) => void> = [];
  private readonly seed: number;
  private readonly defaultLink: Readonly<LinkConfig>;
  private nextEphemeral = EPHEMERAL_FIRST;
  private nextPacketId = 0;

  constructor(
    /** The clock that schedules every delivery. */
    readonly clock: SimClock,
    options: SimNetworkOptions = {},
  ) {
    this.seed = (options.seed ?? 1) >>> 0;
    this.defaultLink = validateConfig(options.defaultLink ?? { delayMs: 1 });
  }

  /**
   * Binds a socket at `address:port`. Port 0 picks a free ephemeral port (49152 upwards).
   * Throws (code `EADDRINUSE`) when the address and port are taken.
   */
  socket(address: string, port: number): DatagramSocket {
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`simnet: invalid port ${port}`);
    let p = port;
    if (p === 0) {
      for (let tries = 0; ; tries++) {
        if (tries > 65535 - EPHEMERAL_FIRST) throw new Error(`simnet: no free ephemeral port on ${address}`);
        const candidate = this.nextEphemeral;
        this.nextEphemeral = candidate >= 65535 ? EPHEMERAL_FIRST : candidate + 1;
        if (!this.sockets.has(SimNetwork.key(address, candidate))) {
          p = candidate;
          break;
        }
      }
    }
    const key = SimNetwork.key(address, p);
    if (this.sockets.has(key)) {
      throw Object.assign(new Error(`simnet: address in use ${address}:${p}`), { code: 'EADDRINUSE' });
    }
    const s = new SimSocket(this, address, p);
    this.sockets.set(key, s);
    return s;
  }

  /**
   * Configures the direction `fromAddr → toAddr` (ports do not matter). Calling it again
   * reconfigures the same link, keeping its counters, queue and in-flight packets.
   * Returns the link, whose `stats` are live.
   */
  link(fromAddr: string, toAddr: string, cfg: LinkConfig): SimLink {
    const existing = this.linkMap.get(SimNetwork.linkKey(fromAddr, toAddr));
    if (existing) {
      existing.configure(cfg);
      return existing;
    }
    const l = new SimLink(fromAddr, toAddr, cfg, this.seed);
    this.linkMap.set(SimNetwork.linkKey(fromAddr, toAddr), l);
    return l;
  }

  /** Shorthand: configures both directions between `a` and `b` with the same settings. */
  linkBoth(a: string, b: string, cfg: LinkConfig): [SimLink, SimLink] {
    return [this.link(a, b, cfg), this.link(b, a, cfg)];
  }

  /** The link `fromAddr → toAddr` (created with the default configuration if never used). */
  getLink(fromAddr: string, toAddr: string): SimLink {
    return this.linkMap.get(SimNetwork.linkKey(fromAddr, toAddr)) ?? this.link(fromAddr, toAddr, this.defaultLink);
  }

  /** Live counters of the link `fromAddr → toAddr`. */
  stats(fromAddr: string, toAddr: string): Readonly<LinkStats> {
    const l = this.getLink(fromAddr, toAddr);
    l.refreshQueue(this.clock.now());
    return l.stats;
  }

  /** Every link used or configured so far. */
  links(): SimLink[] {
    return [...this.linkMap.values()];
  }

  /** Subscribes to the packet trace; returns an unsubscribe function. */
  observe(listener: (e: SimEvent) => void): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /** Records every trace event into an array (handy for determinism checks). */
  record(): { events: SimEvent[]; stop: () => void } {
    const events: SimEvent[] = [];
    const stop = this.observe((e) => events.push(e));
    return { events, stop };
  }

  /** @internal Called by SimSocket.send for each packet. */
  transmit(src: SimSocket, packet: Uint8Array, to: PeerAddress): void {
    const now = this.clock.now();
    const link = this.getLink(src.addr.address, to.address);
    const cfg = link.config;
    const st = link.stats;
    const size = packet.byteLength;
    const id = this.nextPacketId++;
    const dest: PeerAddress = Object.freeze({ address: to.address, port: to.port });
    st.sent++;
    st.bytesSent += size;
    this.emit('send', id, src.addr, dest, size);

    if (size > Math.min(cfg.mtuBytes ?? MAX_UDP_PAYLOAD, MAX_UDP_PAYLOAD)) {
      st.oversize++;
      this.emit('oversize', id, src.addr, dest, size);
      return;
    }
    const txEnd = link.admit(now, size);
    if (txEnd === undefined) {
      st.droppedQueue++;
      this.emit('queue-drop', id, src.addr, dest, size);
      return;
    }
    // The random draws happen in a fixed order per packet so traces stay reproducible.
    if ((cfg.loss ?? 0) > 0 && link.random() < (cfg.loss ?? 0)) {
      st.lost++;
      this.emit('lose', id, src.addr, dest, size);
      return;
    }
    let at = link.arrival(txEnd);
    if ((cfg.reorder ?? 0) > 0 && link.random() < (cfg.reorder ?? 0)) {
      st.reordered++;
      at += link.reorderDelay(size);
      this.emit('reorder', id, src.addr, dest, size);
    }
    let payload = asBuffer(packet);
    if ((cfg.corrupt ?? 0) > 0 && size > 0 && link.random() < (cfg.corrupt ?? 0)) {
      const bit = Math.floor(link.random() * size * 8);
      payload = Buffer.from(payload); // copy: never touch the sender's memory
      payload[bit >> 3] = (payload[bit >> 3] as number) ^ (1 << (bit & 7));
      st.corrupted++;
      this.emit('corrupt', id, src.addr, dest, size);
    }
    this.clock.setTimerAt(at, () => this.deliver(link, id, src.addr, dest, payload));
    if ((cfg.duplicate ?? 0) > 0 && link.random() < (cfg.duplicate ?? 0)) {
      const jitter = cfg.jitterMs ?? 0;
      const dupAt = at + (jitter > 0 ? link.random() * jitter : 0);
      const copy = Buffer.from(payload); // receivers may process buffers in place
      st.duplicated++;
      this.emit('duplicate', id, src.addr, dest, size);
      this.clock.setTimerAt(dupAt, () => this.deliver(link, id, src.addr, dest, copy));
    }
  }

  /** @internal Called by SimSocket.close. */
  unbind(s: SimSocket): void {
    const key = SimNetwork.key(s.addr.address, s.addr.port);
    if (this.sockets.get(key) === s) this.sockets.delete(key);
  }

  private deliver(link: SimLink, id: number, from: PeerAddress, to: PeerAddress, payload: Buffer): void {
    const target = this.sockets.get(SimNetwork.key(to.address, to.port));
    const handler = target?.handler;
    if (handler === undefined) {
      link.stats.noListener++;
      this.emit('no-listener', id, from, to, payload.byteLength);
      return;
    }
    link.stats.delivered++;
    link.stats.bytesDelivered += payload.byteLength;
    this.emit('deliver', id, from, to, payload.byteLength);
    handler(payload, from);
  }

  private emit(kind: SimEventKind, id: number, from: PeerAddress, to: PeerAddress, size: number): void {
    if (this.listeners.length === 0) return;
    const e: SimEvent = { t: this.clock.now(), kind, id, from, to, size };
    for (const l of this.listeners) l(e);
  }

  private static key(address: string, port: number): string {
    return `${address}|${port}`;
  }

  private static linkKey(from: string, to: string): string {
    return `${from}\u0000${to}`;
  }
}
