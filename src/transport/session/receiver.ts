/**
 * The data receiver of one session: authenticates every datagram, places blocks by
 * their stream sequence number, detects gaps and asks for exactly the missing blocks
 * (selective NAKs), and reports delay and rate so that the sender can pace itself.
 *
 * NAK timing: a gap is requested at the first feedback after it is seen, then again
 * each time a retransmission could have arrived and did not (about one RTT plus a
 * margin), so a lost request or a lost retransmission costs one round trip, no more.
 */
import type { PeerAddress } from '../socket/types.js';
import { SessionPeer, type SessionPeerOptions } from './session-peer.js';
import { findBySsn } from './ssn-range.js';
/** a missing block is asked for again after this many (smoothed) round trips */
const RENAK = 1.25;
/** copies of each NAK after the first, one per feedback (see collectNaks) */
const NAK_REPEATS = 2;
/** feedbacks that carry each verified file id (a lost feedback costs nothing then) */
const VERIFIED_REPEATS = 4;
import { MAX_GROUP, recover } from '../fec/parity.js';
import {
  COMMON_HEADER,
  DATA_HEADER,
  FLAG_GROUPED,
  FLAG_TRAIN,
  PacketType,
  decodeCommon,
  decodeDataHeader,
  decodeParityHeader,
  type ParityHeader,
  decodeStatus,
  encodeFeedback,
  type Feedback,
  type Status,
  maxNakRanges,
  MAX_VERIFIED_PER_FEEDBACK,
  verifiedTrailerBytes,
  type CommonHeader,
  type DataHeader,
  type NakRange,
} from '../wire/packet.js';

/** Where a file's blocks go. */
export interface BlockSink {
  /** Stores `data` at `offset`; may throw (e.g. disk full): the receiver reports it. */
  write(offset: number, data: Buffer): void;
}

export interface ReceiverStats {
  packets: number;
  duplicates: number;
  bytes: number;
  /** datagrams that failed authentication, were malformed, or replayed */
  rejected: number;
  replayed: number;
  naksSent: number;
  feedbacksSent: number;
  lastPacketAt: number;
  /** parity datagrams received (tail parity) */
  parity: number;
  /** blocks rebuilt from parity instead of waiting for their retransmission */
  rebuilt: number;
}

export interface DataReceiverOptions extends SessionPeerOptions {
  datagramSize: number;
  /** all blocks of a file have arrived */
  onFileComplete?: (fileId: number) => void;
  /** a sink threw while storing a block */
  onWriteError?: (fileId: number, err: unknown) => void;
  /** feedback interval in ms (default 5) */
  feedbackMs?: number;
}

/**
 * Blocks that arrive before their file's announcement (the `files` message travels on the
 * TCP control channel; a lost segment delays it by a retransmission timeout) are held, up
 * to this many bytes per session, and written when the announcement comes, instead of
 * being dropped and asked for again: that resent a whole timeout's worth of data.
 * Only authenticated datagrams of this session get here. 32 MiB is 1.4 s at 190 Mbit/s:
 * a retransmission timeout of the control channel on a 300 ms path (0.6–1 s). With 8 MiB
 * an upload whose plan came a timeout late (its first file goes out before the plan)
 * overflowed the hold within 0.35 s, what arrived then counted as nothing delivered, and
 * start-up cut the rate to 42 Mbit/s for 4 s. The sender sends at most 24 MiB of a file
 * the receiver has not been told of (`DataSender.limit`).
 */
const EARLY_HOLD_BYTES = 32 * 1024 * 1024;
const TRACE = process.env.TACHYON_TRACE === '1';
/** an interval's arrival rate is taken over its arrivals' span when it is at least this long (ms) and has this many datagrams */
const SPAN_MIN_MS = 2;
const SPAN_MIN_PACKETS = 8;
/** a train of fewer datagrams measures nothing; its measurement rides in this many feedbacks */
const TRAIN_MIN_PACKETS = 8;
/** the train's rate is fitted to its first arrivals, at most this many */
const TRAIN_FIT_POINTS = 1024;
const TRAIN_REPEATS = 4;
/** feedback intervals over which the least socket wait counts as the receiver's queue (50 ms at 5 ms) */
const BACKLOG_WINDOW = 10;
/**
 * Tail parity (docs/protocol.md): copies of blocks sent in parity groups are kept until
 * their group is settled, up to this many bytes per session (past it, a lost block of a
 * group is asked for by NAK as before). The sender covers at most 24 MiB of blocks.
 */
const KEEP_BYTES = 32 * 1024 * 1024;
/** most parity groups waiting for blocks at once */
const MAX_GROUPS = 4096;

/** where a block placed in its file came from: counting differs */
type Arrival = 'arrived' | 'held' | 'rebuilt';

interface ParityGroup {
  k: number;
  /** parity symbols by index */
  parity: Map<number, Buffer>;
}
interface RxFile {
  id: number;
  ssn0: number;
  blocks: number;
  size: number;
  sink: BlockSink;
  have: Uint8Array;
  count: number;
  done: boolean;
  skipped: boolean;
}

interface Missing {
  seen: number;
  naked: number;
  /** copies of the last NAK still to send, one per feedback (a lost NAK costs a re-NAK interval) */
  repeat?: number;
}

export class DataReceiver extends SessionPeer {
  readonly payloadSize: number;
  readonly stats: ReceiverStats;
  onFileComplete: ((fileId: number) => void) | undefined;
  onWriteError: ((fileId: number, err: unknown) => void) | undefined;
  /** the sender's digest of a file, sent beside the `digests` control message (each copy: the sender repeats it) */
  onDigest: ((fileId: number, sha256Hex: string) => void) | undefined;
  private readonly files: RxFile[] = [];
  private lastFile: RxFile | undefined;
  private nextExpected = 0;
  private cumAck = 0;
  private readonly missing = new Map<number, Missing>();
  /** blocks held until their file is announced, by ssn */
  private readonly early = new Map<number, Buffer>();
  private earlyBytes = 0;
  /** copies of blocks in parity groups (FLAG_GROUPED), by ssn, until their group settles */
  private readonly kept = new Map<number, Buffer>();
  private keptBytes = 0;
  /** parity groups not yet settled, by first SSN */
  private readonly groups = new Map<number, ParityGroup>();
  private senderSrttMs = 0;
  // delay and rate measurement
  private owdRef: number | undefined;
  private intervalMinOwd = Infinity;
  /** the least time a datagram of this interval waited in the socket (ms), and that of the last intervals */
  private intervalMinLag = Infinity;
  private readonly lagHist: number[] = [];
  private baseOwd: number[] = [];
  private baseSlotAt = 0;
  private intervalBytes = 0;
  private intervalPackets = 0;
  // the interval's arrivals: first and last arrival time, and the bytes after the first
  private spanFirst = 0;
  private spanLast = 0;
  private spanBytes = 0;
  private spanPackets = 0;
  private intervalLost = 0;
  private intervalStart: number;
  private lastEchoTs = 0;
  private lastEchoAt = 0;
  /** arrival time of the newest data datagram handled (kernel time when the socket gives it) */
  private lastArrivalAt = 0;
  private lastActivity = 0;

  constructor(private readonly o: DataReceiverOptions) {
    super(o);
    this.payloadSize = o.datagramSize - DATA_HEADER - o.open.overhead;
    this.onFileComplete = o.onFileComplete;
    this.onWriteError = o.onWriteError;
    this.intervalStart = o.clock.now();
    this.stats = { packets: 0, duplicates: 0, bytes: 0, rejected: 0, replayed: 0, naksSent: 0, feedbacksSent: 0, lastPacketAt: o.clock.now(), parity: 0, rebuilt: 0 };
    this.schedule();
  }

  /** Expects a file of `size` bytes whose blocks start at `ssn0`. */
  addFile(id: number, ssn0: number, size: number, sink: BlockSink): void {
    const blocks = Math.ceil(size / this.payloadSize);
    const f: RxFile = { id, ssn0, blocks, size, sink, have: new Uint8Array(blocks), count: 0, done: false, skipped: false };
    // keep files in SSN order
    this.insertFile(f);
    if (blocks === 0) {
      f.done = true;
      queueMicrotask(() => this.onFileComplete?.(id));
    }
    this.placeEarly(f);
  }

  /** Writes the held blocks of a file just announced (or drops them for a skipped one). */
  private placeEarly(f: RxFile): void {
    if (this.early.size === 0) return;
    // whichever is shorter: the held blocks, or the file's range (thousands of small files
    // announced while a full hold waits must not each walk the whole hold)
    const ssns = f.blocks < this.early.size ? range(f.ssn0, f.ssn0 + f.blocks) : this.early.keys(); // deleting while iterating a Map is safe
    for (const ssn of ssns) {
      const data = this.early.get(ssn);
      if (data === undefined || ssn < f.ssn0 || ssn >= f.ssn0 + f.blocks) continue;
      this.early.delete(ssn);
      this.earlyBytes -= data.length;
      // no longer held: if it cannot be placed, it is asked for like any missing block
      this.place(f, ssn, data, 'held');
    }
  }

  /** The file's blocks will not be sent (it was refused): never ask for them. */
  skipFile(id: number, ssn0: number, size: number): void {
    const blocks = Math.ceil(size / this.payloadSize);
    const f: RxFile = { id, ssn0, blocks, size, sink: { write() {} }, have: new Uint8Array(0), count: 0, done: true, skipped: true };
    this.insertFile(f);
    for (let s = ssn0; s < ssn0 + blocks; s++) this.missing.delete(s);
    this.placeEarly(f);
    this.advanceCumAck();
  }

  /** The SSN range [ssn0, ssn0 + count) carries no file (sent speculatively, then not wanted): count it received, never ask for it. */
  voidRange(ssn0: number, count: number): void {
    const f: RxFile = { id: -1, ssn0, blocks: count, size: 0, sink: { write() {} }, have: new Uint8Array(0), count: 0, done: true, skipped: true };
    this.insertFile(f);
    if (this.missing.size < count) {
      for (const s of this.missing.keys()) if (s >= ssn0 && s < ssn0 + count) this.missing.delete(s);
    } else for (let s = ssn0; s < ssn0 + count; s++) this.missing.delete(s);
    this.placeEarly(f);
    this.advanceCumAck();
  }

  /** Keeps `files` sorted by ssn0 (announcements mostly arrive in order: scan from the end). */
  private insertFile(f: RxFile): void {
    let i = this.files.length;
    while (i > 0 && this.files[i - 1]!.ssn0 > f.ssn0) i--;
    this.files.splice(i, 0, f);
  }

  removeFile(id: number): void {
    const i = this.files.findIndex((f) => f.id === id);
    if (i >= 0) this.files.splice(i, 1);
    if (this.lastFile?.id === id) this.lastFile = undefined;
  }

  // ---- incoming ------------------------------------------------------------------

  /**
   * `arrivedAt`: the kernel's receive time, when the socket tells it (or when the endpoint
   * held the datagram before the session registered: early data, `held`); else now.
   * Rates (the train, the intervals, delivery) and one-way delays are timed by arrival;
   * the queueing delay reported adds the receiver's persistent backlog (see
   * {@link socketBacklogMs}), measured from when each datagram is handled, except for
   * held datagrams, whose wait is the session's set-up.
   */
  onPacket(packet: Buffer, from: PeerAddress, arrivedAt?: number, held = false): void {
    if (this.closed) return;
    let common: CommonHeader;
    try {
      common = decodeCommon(packet);
    } catch {
      this.stats.rejected++;
      return;
    }
    if (!this.isFresh(common.packetNumber)) {
      this.stats.replayed++;
      this.stats.rejected++;
      return;
    }
    const now = this.o.clock.now();
    const at = arrivedAt ?? now;
    if (common.type === PacketType.DATA) this.onData(packet, common, from, at, held ? at : now);
    else if (common.type === PacketType.STATUS) this.onStatus(packet, common.packetNumber, from, at);
    else if (common.type === PacketType.PARITY) this.onParity(packet, common, from, at);
    else this.stats.rejected++;
  }

  private authentic(packet: Buffer, headerLen: number, pn: number): Buffer | undefined {
    const body = this.openAuthentic(packet, headerLen, pn);
    if (!body) this.stats.rejected++;
    return body;
  }

  private onStatus(packet: Buffer, pn: number, from: PeerAddress, at: number): void {
    const body = this.authentic(packet, COMMON_HEADER, pn);
    if (!body) return;
    let status: Status;
    try {
      status = decodeStatus(body);
    } catch {
      this.stats.rejected++;
      return;
    }
    const nextSsn = status.nextSsn;
    this.heardFrom(from, at);
    if (nextSsn > this.nextExpected) this.markGap(this.nextExpected, nextSsn, at);
    if (status.digest) this.onDigest?.(status.digest.fileId, status.digest.sha256.toString('hex'));
  }

  /** `now`: when it arrived; `handled`: when it was handled (a held datagram: when it arrived), for the backlog and the echo */
  private onData(packet: Buffer, common: CommonHeader, from: PeerAddress, now: number, handled: number): void {
    let h: DataHeader;
    try {
      h = decodeDataHeader(packet, common);
    } catch {
      this.stats.rejected++;
      return;
    }
    const data = this.authentic(packet, DATA_HEADER, common.packetNumber);
    if (!data) return;
    this.noteArrival(data.length, now);
    this.noteTrain((common.flags & FLAG_TRAIN) !== 0, h.ssn, data.length, now);
    if (now > this.lastArrivalAt) this.lastArrivalAt = now;
    // a held datagram's interval began when it arrived (a burst handed over at once is no arrival rate)
    if (now < this.intervalStart) this.intervalStart = now;
    this.heardFrom(from, now);
    this.stats.packets++;
    this.intervalPackets++;
    this.senderSrttMs = h.srttMs;
    this.sampleDelay(h.sendTsUs, now);
    // the echo is held from when it was handled: the round trip includes the receiver's
    // backlog, as the queueing delay does (the sender takes the smaller of the two)
    this.lastEchoAt = handled;
    // how long it waited in the socket before it was handled
    const lag = handled - now;
    if (lag < this.intervalMinLag) this.intervalMinLag = lag;
    if ((common.flags & FLAG_GROUPED) !== 0) this.keep(h.ssn, data);
    this.accept(h.ssn, data, now, 'arrived');
  }

  /** A block that arrived (or was rebuilt from parity): stream bookkeeping, then its file or the hold. */
  private accept(ssn: number, data: Buffer, now: number, how: 'arrived' | 'rebuilt'): void {
    if (ssn >= this.nextExpected) {
      if (ssn > this.nextExpected) this.markGap(this.nextExpected, ssn, now);
      this.nextExpected = ssn + 1;
    } else if (!this.missing.has(ssn)) {
      if (how === 'arrived') this.stats.duplicates++;
      return;
    }
    const f = this.fileFor(ssn);
    if (!f) {
      // not announced yet. It arrived all the same: it counts in the interval's arrival
      // rate (what the sender's start-up train is measured from), held or not, so that
      // the rate does not fall to nothing while the announcement is late
      if (how === 'arrived') this.intervalBytes += data.length;
      // hold it (EARLY_HOLD_BYTES); past that, leave it missing so that it is asked for again
      if (!this.early.has(ssn) && this.earlyBytes + data.length <= EARLY_HOLD_BYTES) {
        this.early.set(ssn, Buffer.from(data));
        this.earlyBytes += data.length;
        // received now, when it arrived: counted when written, a whole hold would show the
        // sender a burst of delivery that the path never carried
        this.stats.bytes += data.length;
        // missing until placed (out of the cumulative ack), but not asked for while held
        this.missing.set(ssn, { seen: now, naked: 0 });
        return;
      }
      if (!this.missing.has(ssn)) this.missing.set(ssn, { seen: now, naked: 0 });
      return;
    }
    this.place(f, ssn, data, how);
  }

  // ---- tail parity -------------------------------------------------------------------

  /** Keeps a copy of a block of a parity group (bounded), and settles its group if it waits for it. */
  private keep(ssn: number, data: Buffer): void {
    if (ssn + MAX_GROUP <= this.cumAck || this.kept.has(ssn) || this.keptBytes + data.length > KEEP_BYTES) return;
    this.kept.set(ssn, Buffer.from(data));
    this.keptBytes += data.length;
    if (this.groups.size === 0) return;
    for (const [first, g] of this.groups) {
      if (ssn >= first && ssn < first + g.k) {
        this.settle(first, g, this.o.clock.now());
        break;
      }
    }
  }

  private onParity(packet: Buffer, common: CommonHeader, from: PeerAddress, now: number): void {
    let h: ParityHeader;
    try {
      h = decodeParityHeader(packet, common);
    } catch {
      this.stats.rejected++;
      return;
    }
    const symbol = this.authentic(packet, DATA_HEADER, common.packetNumber);
    if (!symbol) return;
    this.noteArrival(symbol.length, now);
    this.heardFrom(from, now);
    this.stats.parity++;
    // it crossed the path like a block: it counts in the arrival rate, not in unique bytes
    this.intervalBytes += symbol.length;
    if (h.first + h.k <= this.cumAck) return; // the group's blocks are all here
    let g = this.groups.get(h.first);
    if (!g) {
      if (this.groups.size >= MAX_GROUPS || symbol.length !== this.payloadSize) {
        this.stats.rejected++;
        return;
      }
      g = { k: h.k, parity: new Map() };
      this.groups.set(h.first, g);
    } else if (g.k !== h.k) {
      this.stats.rejected++;
      return;
    }
    if (!g.parity.has(h.j)) g.parity.set(h.j, Buffer.from(symbol));
    this.settle(h.first, g, now);
  }

  /** Whether the block is here (written, or held until its file is announced). */
  private received(ssn: number): boolean {
    return ssn < this.nextExpected && (!this.missing.has(ssn) || this.early.has(ssn));
  }

  /**
   * Rebuilds a group's lost blocks once enough of it is here (any k of its k data and m
   * parity blocks), then forgets the group. A group whose blocks all arrived is
   * forgotten too.
   */
  private settle(first: number, g: ParityGroup, now: number): void {
    const have = new Map<number, Buffer>();
    let lost = 0;
    for (let i = 0; i < g.k; i++) {
      const b = this.kept.get(first + i);
      if (b) have.set(i, b);
      else if (!this.received(first + i)) lost++;
    }
    if (lost > 0) {
      if (have.size + g.parity.size < g.k) return;
      const rebuilt = recover(g.k, this.payloadSize, have, g.parity);
      for (const [i, block] of rebuilt ?? []) {
        const ssn = first + i;
        const f = this.fileFor(ssn);
        if (!f || this.received(ssn)) continue;
        const len = Math.min(this.payloadSize, f.size - (ssn - f.ssn0) * this.payloadSize);
        if (len <= 0) continue;
        this.stats.rebuilt++;
        this.accept(ssn, block.subarray(0, len), now, 'rebuilt');
      }
    }
    this.groups.delete(first);
    for (let i = 0; i < g.k; i++) this.unkeep(first + i);
  }

  private unkeep(ssn: number): void {
    const b = this.kept.get(ssn);
    if (b === undefined) return;
    this.kept.delete(ssn);
    this.keptBytes -= b.length;
  }

  /** Forgets groups and kept blocks the cumulative ack has passed (a group whose parity was all lost). */
  private sweepParity(): void {
    for (const [first, g] of this.groups) if (first + g.k <= this.cumAck) this.groups.delete(first);
    let fresh = 0;
    for (const ssn of this.kept.keys()) {
      if (ssn + MAX_GROUP <= this.cumAck) this.unkeep(ssn);
      else if (++fresh >= 64) break; // kept in SSN order, mostly: the stale ones come first
    }
  }

  /**
   * Writes one block of a known file. `how`: it arrived just now, or was held (counted
   * when it arrived), or was rebuilt from parity (a unique block, but not an arrival).
   */
  private place(f: RxFile, ssn: number, data: Buffer, how: Arrival): void {
    if (f.skipped) {
      this.missing.delete(ssn);
      this.advanceCumAck();
      return;
    }
    const idx = ssn - f.ssn0;
    if (f.have[idx]) {
      this.missing.delete(ssn);
      this.stats.duplicates++;
      return;
    }
    const offset = idx * this.payloadSize;
    const expectLen = Math.min(this.payloadSize, f.size - offset);
    if (data.length !== expectLen) {
      this.stats.rejected++;
      return;
    }
    try {
      f.sink.write(offset, data);
    } catch (err) {
      this.onWriteError?.(f.id, err);
      return;
    }
    f.have[idx] = 1;
    f.count++;
    this.missing.delete(ssn);
    if (how !== 'held') this.stats.bytes += data.length;
    if (how === 'arrived') this.intervalBytes += data.length;
    this.advanceCumAck();
    if (f.count === f.blocks && !f.done) {
      f.done = true;
      this.onFileComplete?.(f.id);
    }
  }

  private markGap(from: number, to: number, now: number): void {
    const n = to - from;
    // a sender that claims a huge jump is broken or hostile; cap what we track
    if (n > 1_000_000) {
      this.stats.rejected++;
      return;
    }
    for (let s = from; s < to; s++) {
      if (this.missing.has(s)) continue;
      const f = this.fileFor(s);
      if (f?.skipped) continue;
      this.missing.set(s, { seen: now, naked: 0 });
    }
    this.intervalLost += n;
    this.nextExpected = Math.max(this.nextExpected, to);
  }

  private advanceCumAck(): void {
    if (this.missing.size === 0) {
      this.cumAck = this.nextExpected;
      return;
    }
    while (this.cumAck < this.nextExpected && !this.missing.has(this.cumAck)) this.cumAck++;
  }

  private fileFor(ssn: number): RxFile | undefined {
    const l = this.lastFile;
    if (l && ssn >= l.ssn0 && ssn < l.ssn0 + l.blocks) return l;
    const f = findBySsn(this.files, ssn);
    if (f) this.lastFile = f;
    return f;
  }

  // the sender's initial burst (FLAG_TRAIN): the bottleneck spaced it out at its own rate
  private trainFirst = 0;
  private trainLast = 0;
  private trainBytes = 0;
  private trainCount = 0;
  private trainMinSsn = Infinity;
  private trainMaxSsn = -1;
  private trainDone = false;
  /** feedbacks still to carry the train's measurement */
  private trainTell = 0;
  /** the train's arrivals: stream sequence numbers and times */
  private trainSsns: number[] = [];
  private trainAts: number[] = [];
  /** the train's arrival rate, kbit/s, once it is over (trainRateKbps) */
  private trainKbps = 0;
  /** (trace) the previous arrival in the train, and the longest gap between two of them */
  private trainPrev = 0;
  private trainGap = { ms: 0, after: 0 };

  /**
   * Records the initial burst's arrivals (kernel times when the socket gives them, and
   * held datagrams keep theirs), whatever feedback interval or read batch each fell in.
   * The first datagram after it ends it, and its rate is taken then (trainRateKbps).
   */
  private noteTrain(inTrain: boolean, ssn: number, bytes: number, at: number): void {
    if (this.trainDone) return;
    if (!inTrain) {
      if (this.trainCount === 0) return;
      this.trainDone = true;
      this.trainKbps = this.trainRateKbps();
      this.trainSsns = [];
      this.trainAts = [];
      if (this.trainCount >= TRAIN_MIN_PACKETS && this.trainLast > this.trainFirst) this.trainTell = TRAIN_REPEATS;
      if (TRACE) {
        process.stderr.write(
          `rtrace train: ${this.trainCount} datagrams (ssn ${this.trainMinSsn}..${this.trainMaxSsn}) arrived over ${(this.trainLast - this.trainFirst).toFixed(2)} ms, ${((this.trainBytes * 8) / (this.trainLast - this.trainFirst) / 1000).toFixed(1)} Mbit/s over the span, ${(this.trainKbps / 1000).toFixed(1)} fitted; ended by ssn ${ssn} at +${(at - this.trainLast).toFixed(2)} ms; first at t=${this.trainFirst.toFixed(1)}, longest gap ${this.trainGap.ms.toFixed(2)} ms after ${this.trainGap.after} datagrams\n`,
        );
      }
      return;
    }
    if (TRACE && this.trainCount > 0 && at - this.trainPrev > this.trainGap.ms) this.trainGap = { ms: at - this.trainPrev, after: this.trainCount };
    this.trainPrev = at;
    if (this.trainCount++ === 0) {
      this.trainFirst = this.trainLast = at;
    } else {
      if (at > this.trainLast) this.trainLast = at;
      else if (at < this.trainFirst) this.trainFirst = at;
      this.trainBytes += bytes;
    }
    if (ssn < this.trainMinSsn) this.trainMinSsn = ssn;
    if (ssn > this.trainMaxSsn) this.trainMaxSsn = ssn;
    if (this.trainSsns.length < TRAIN_FIT_POINTS) {
      this.trainSsns.push(ssn);
      this.trainAts.push(at);
    }
  }

  /**
   * The train's arrival rate. Not its bytes over the span from the first arrival to the
   * last: the emulator on the 300 ms path sometimes lost a millisecond within a burst
   * (one gap of 1.0–1.15 ms after datagram 195–205 of about 208, in 3 of 30 runs), the span
   * grew by that much and the rate read 4–8% low, and start-up held that for a second. The
   * bottleneck's time per datagram is fitted instead (`fitSlotMs`: the median of the
   * slopes between arrivals n/8 to n/4 apart, by stream sequence number, which also puts
   * lost datagrams in their slots), and the rate is what arrived of it: (bytes per datagram) /
   * slot × (arrived / sent). The sender divides the loss back out as before.
   */
  private trainRateKbps(): number {
    const slotMs = fitSlotMs(this.trainSsns, this.trainAts);
    if (slotMs <= 0) return (this.trainBytes * 8) / (this.trainLast - this.trainFirst);
    const perDatagram = this.trainBytes / Math.max(1, this.trainCount - 1);
    return ((perDatagram * 8) / slotMs) * (this.trainCount / (this.trainMaxSsn - this.trainMinSsn + 1));
  }

  private takeTrain(): Feedback['train'] {
    if (this.trainTell <= 0) return undefined;
    this.trainTell--;
    return { rateKbps: this.trainKbps, packets: this.trainCount, lost: Math.max(0, this.trainMaxSsn - this.trainMinSsn + 1 - this.trainCount) };
  }

  /** An authentic datagram came from the peer at `at`: feedback goes to its address. */
  private heardFrom(from: PeerAddress, at: number): void {
    this.peer = from;
    this.lastActivity = at;
    this.stats.lastPacketAt = at;
  }

  /** Notes an authentic datagram's arrival for the interval's arrival rate. */
  private noteArrival(bytes: number, at: number): void {
    if (this.spanPackets++ === 0) {
      this.spanFirst = this.spanLast = at;
      this.spanBytes = 0;
      return;
    }
    if (at > this.spanLast) this.spanLast = at;
    else if (at < this.spanFirst) this.spanFirst = at;
    this.spanBytes += bytes;
  }

  /**
   * The interval's arrival rate, kbit/s: over the span of its arrivals when they span at
   * least SPAN_MIN_MS with SPAN_MIN_PACKETS (kernel times, when the socket gives them: a
   * read that came late, or in one batch, does not change them), else over the interval.
   * The start-up train is measured from this: reading the socket late used to split the
   * train's intervals into slow/fast pairs (61 then 217, 48 then 253 on a 200 Mbit/s path).
   */
  private arrivalRateKbps(interval: number): number {
    const span = this.spanLast - this.spanFirst;
    if (this.spanPackets >= SPAN_MIN_PACKETS && span >= SPAN_MIN_MS) return (this.spanBytes * 8) / span;
    return interval > 0 ? (this.intervalBytes * 8) / interval : 0;
  }

  /**
   * The receiver's own queue (ms): the least time a datagram waited in the socket before
   * it was handled, over the last BACKLOG_WINDOW feedback intervals. The path's queue is
   * timed by kernel arrival, so a receiver that stalls for a moment shows no queue; one
   * that cannot keep up waits on every datagram for as long as it falls behind, and that
   * is a queue the sender must see (on loopback it is the bottleneck: without it the
   * sender overran the socket buffer, 30–67 thousand repairs for 33 thousand blocks).
   */
  private socketBacklogMs(): number {
    if (this.intervalMinLag !== Infinity) {
      this.lagHist.push(Math.max(0, this.intervalMinLag));
      if (this.lagHist.length > BACKLOG_WINDOW) this.lagHist.shift();
    }
    if (this.lagHist.length < BACKLOG_WINDOW) return 0;
    let m = Infinity;
    for (const l of this.lagHist) if (l < m) m = l;
    return m;
  }

  /** One-way delay relative to the first sample (immune to clock offset and wrap). */
  private sampleDelay(sendTsUs: number, now: number): void {
    const arrivalUs = Math.round(now * 1000) >>> 0;
    const raw = (arrivalUs - sendTsUs) >>> 0;
    if (this.owdRef === undefined) this.owdRef = raw;
    const rel = (raw - this.owdRef) | 0;
    if (rel < this.intervalMinOwd) this.intervalMinOwd = rel;
    this.lastEchoTs = sendTsUs;
    this.lastEchoAt = now;
  }

  // ---- feedback ------------------------------------------------------------------

  private schedule(): void {
    if (this.closed) return;
    this.cancelTimer = this.o.clock.setTimer(this.o.feedbackMs ?? 5, () => {
      this.cancelTimer = undefined;
      this.sendFeedback();
      this.schedule();
    });
  }

  private baseDelay(sample: number, now: number): number {
    // windowed minimum: 10 slots of 3 s each
    if (this.baseOwd.length === 0 || now - this.baseSlotAt >= 3000) {
      this.baseOwd.push(sample);
      this.baseSlotAt = now;
      if (this.baseOwd.length > 10) this.baseOwd.shift();
    } else if (sample < this.baseOwd[this.baseOwd.length - 1]!) {
      this.baseOwd[this.baseOwd.length - 1] = sample;
    }
    let m = Infinity;
    for (const v of this.baseOwd) if (v < m) m = v;
    return m;
  }

  /** files verified and stored, still to be told to the sender: id -> feedbacks left */
  private readonly verifiedToTell = new Map<number, number>();

  /**
   * Tells the sender, in the next {@link VERIFIED_REPEATS} feedbacks, that file `fileId`
   * was verified and stored: a fast path beside the control channel's `results`, which
   * a lost TCP segment on a lossy path can delay by a retransmission timeout.
   */
  announceVerified(fileId: number): void {
    if (!this.closed) this.verifiedToTell.set(fileId >>> 0, VERIFIED_REPEATS);
  }

  /**
   * Closes the session; files verified but not yet told to the sender go out first in a
   * last burst of feedbacks (the session usually ends right after its last file is
   * verified, before the next feedback was due).
   */
  override close(): void {
    if (this.closed) return;
    for (let i = 0; i < VERIFIED_REPEATS && this.verifiedToTell.size > 0; i++) this.sendFeedback();
    this.early.clear();
    this.earlyBytes = 0;
    this.kept.clear();
    this.keptBytes = 0;
    this.groups.clear();
    super.close();
  }

  private takeVerified(): number[] {
    const ids: number[] = [];
    for (const [id, left] of this.verifiedToTell) {
      if (ids.length === MAX_VERIFIED_PER_FEEDBACK) break;
      ids.push(id);
      if (left <= 1) this.verifiedToTell.delete(id);
      else this.verifiedToTell.set(id, left - 1);
    }
    return ids;
  }

  private sendFeedback(): void {
    const peer = this.peer;
    const now = this.o.clock.now();
    const interval = now - this.intervalStart;
    if (!peer) return;
    // when nothing is happening, slow down to a keepalive
    const quiet = this.intervalPackets === 0 && this.missing.size === 0 && this.verifiedToTell.size === 0;
    if (quiet && now - this.lastActivity > 1000 && interval < 200) return;
    let qdelayUs = -1;
    if (this.intervalMinOwd !== Infinity) {
      const base = this.baseDelay(this.intervalMinOwd, now);
      qdelayUs = Math.max(0, this.intervalMinOwd - base) + this.socketBacklogMs() * 1000;
    }
    const recvRateKbps = this.arrivalRateKbps(interval);
    const naks = this.collectNaks(now);
    const capacity = this.o.datagramSize - COMMON_HEADER - this.o.seal.overhead;
    const verified = this.takeVerified();
    const train = this.takeTrain();
    const perPacket = Math.max(1, maxNakRanges(capacity));
    const firstRanges = Math.max(1, maxNakRanges(capacity - verifiedTrailerBytes(verified.length)));
    // the first feedback carries the verified ids and correspondingly fewer NAK ranges
    for (let i = 0, packet = 0; packet === 0 || i < naks.length; packet++) {
      const first = packet === 0;
      const take = first ? firstRanges : perPacket;
      const chunk = naks.slice(i, i + take);
      i += take;
      const body = encodeFeedback({
        cumAck: this.cumAck,
        nextExpected: this.nextExpected,
        bytesReceived: this.stats.bytes,
        echoTsUs: this.lastEchoTs,
        holdUs: this.lastEchoAt ? (now - this.lastEchoAt) * 1000 : 0,
        qdelayUs: first ? qdelayUs : -1,
        recvRateKbps: first ? recvRateKbps : 0,
        intervalPackets: first ? this.intervalPackets : 0,
        intervalLost: first ? this.intervalLost : 0,
        ...(first && train ? { train } : {}),
        ...(this.lastArrivalAt ? { rxTsUs: Math.round(this.lastArrivalAt * 1000) >>> 0 } : {}),
        naks: chunk,
        ...(first && verified.length > 0 ? { verified } : {}),
      });
      this.sendSealed(PacketType.FEEDBACK, body, peer);
      if (TRACE && this.stats.feedbacksSent === 0) process.stderr.write(`rtrace first feedback t=${now.toFixed(1)} packets=${this.stats.packets}\n`);
      this.stats.feedbacksSent++;
      if (packet >= 16) break;
    }
    if (this.kept.size > 0 || this.groups.size > 0) this.sweepParity();
    if (TRACE && this.stats.feedbacksSent % 8 === 0) {
      process.stderr.write(
        `rtrace t=${now.toFixed(1)} next=${this.nextExpected} cum=${this.cumAck} missing=${this.missing.size} naks=${naks.length} early=${this.early.size} kept=${this.kept.size} groups=${this.groups.size} parity=${this.stats.parity} rebuilt=${this.stats.rebuilt} dup=${this.stats.duplicates} rej=${this.stats.rejected}\n`,
      );
    }
    this.intervalStart = now;
    this.intervalMinOwd = Infinity;
    this.intervalMinLag = Infinity;
    this.intervalBytes = 0;
    this.intervalPackets = 0;
    this.spanPackets = 0;
    this.intervalLost = 0;
  }

  private collectNaks(now: number): NakRange[] {
    const naks: NakRange[] = [];
    if (this.missing.size === 0) return naks;
    const rtt = this.senderSrttMs > 0 ? this.senderSrttMs : 100;
    const renak = Math.max(20, rtt * RENAK + 2 * (this.o.feedbackMs ?? 5));
    // tolerate a little reordering before asking: a sixteenth of the RTT, 1 to 10 ms
    const reorder = Math.min(10, Math.max(1, (this.senderSrttMs || 16) / 16));
    let cur: NakRange | undefined;
    let budget = 4096;
    for (const [ssn, m] of this.missing) {
      if (this.early.size > 0 && this.early.has(ssn)) continue; // held until its file is announced
      const due = m.naked === 0 ? now - m.seen >= reorder : now - m.naked >= renak;
      if (due) {
        m.naked = now;
        m.repeat = NAK_REPEATS;
        this.stats.naksSent++;
      } else if (m.repeat !== undefined && m.repeat > 0 && now > m.naked) {
        // every NAK goes out three times, in consecutive feedbacks: on a lossy return
        // path a lost NAK would leave the block missing for a whole re-NAK interval
        // (1.25 RTT), which near the end of a transfer adds to its duration. The sender
        // ignores a copy that arrives just after it resent the block.
        m.repeat--;
      } else continue;
      if (cur && ssn === cur.start + cur.count && cur.count < 0xffff) cur.count++;
      else {
        cur = { start: ssn, count: 1 };
        naks.push(cur);
      }
      if (--budget === 0) break;
    }
    naks.sort((a, b) => a.start - b.start);
    return naks;
  }
}

/** The integers from `from` up to (not including) `to`. */
function* range(from: number, to: number): Generator<number> {
  for (let i = from; i < to; i++) yield i;
}

/**
 * The time per stream sequence number that fits the arrivals (ms; 0 when there are too
 * few): the median of the slopes between arrivals that are n/8 to n/4 apart (n arrivals;
 * at least 1 and 2 apart). A late stretch anywhere (the emulator losing a millisecond)
 * moves only the slopes of the pairs that span it, at most a quarter of them, which
 * leaves the median where the others are; a baseline of n/8 or more averages out the
 * emulator's bunching of arrivals. (All pairs, Theil–Sen, let half of them span a
 * stretch in the middle of the train and the median moved with them.)
 */
export function fitSlotMs(ssns: readonly number[], ats: readonly number[]): number {
  const n = Math.min(ssns.length, ats.length);
  if (n < 2) return 0;
  const lo = Math.max(1, Math.floor(n / 8));
  const hi = Math.max(lo + 1, Math.floor(n / 4));
  const slopes: number[] = [];
  for (let i = 0; i < n; i++) {
    for (let j = i + lo; j <= Math.min(n - 1, i + hi); j++) {
      const d = ssns[j]! - ssns[i]!;
      if (d > 0) slopes.push((ats[j]! - ats[i]!) / d);
    }
  }
  if (slopes.length === 0) return 0;
  slopes.sort((x, y) => x - y);
  const m = slopes[Math.floor((slopes.length - 1) / 2)]!;
  return m > 0 ? m : 0;
}
