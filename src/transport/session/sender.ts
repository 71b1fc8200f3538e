/**
 * The data sender of one session: paces blocks onto the path at the rate the
 * controller allows, retransmissions first, and reacts to receiver feedback.
 *
 * Blocks: the sender numbers every block it will ever send with a stream sequence
 * number (SSN). A file announced with `assign(size)` takes the contiguous SSN range
 * [ssn0, ssn0 + blocks), block i covering bytes [i*payload, (i+1)*payload). So the
 * sender keeps no per-packet state: an SSN names its file and offset. A
 * retransmission carries the block's SSN under a fresh packet number.
 */
import { TachyonError } from '../../core/errors.js';
import type { RateController } from '../rate/controller.js';
import type { PeerAddress } from '../socket/types.js';
import { SessionPeer, type SessionPeerOptions } from './session-peer.js';
import { findBySsn } from './ssn-range.js';
import { ParityEncoder, parityFor } from '../fec/parity.js';
import {
  DATA_HEADER,
  FLAG_GROUPED,
  FLAG_RETRANSMIT,
  FLAG_TRAIN,
  PacketType,
  decodeCommon,
  decodeFeedback,
  encodeStatus,
  writeCommon,
  writeDataHeader,
  writeParityHeader,
  COMMON_HEADER,
  type Feedback,
} from '../wire/packet.js';

/** Reads a file's bytes for sending. */
export interface BlockSource {
  /** Copies `len` bytes at `offset` into `out` at `at`. Sequential calls are the common case. */
  read(offset: number, len: number, out: Buffer, at: number): void;
}

const TRACE = process.env.TACHYON_TRACE === '1';
/** see DataSender.nearTail */
const TAIL_RTTS = 2.5;
/** extra copies of a retransmission near the end (P(all 3 lost) at 5% loss: 1 in 8000) */
const TAIL_EXTRA = 2;
/** data blocks per parity group in the tail (docs/protocol.md, "Tail parity") */
const PARITY_GROUP = 64;
/** a group may fail to decode (and wait for a NAK round trip) with at most this probability */
const PARITY_FAILURE = 1e-4;
/** below this measured loss rate the tail gets no parity */
const PARITY_MIN_LOSS = 5e-4;
/** the tail covered by parity: a round trip of sending and a margin, at most this many bytes */
const PARITY_MAX_BYTES = 24 * 1024 * 1024;
/** STATUS datagrams that carry each file's digest */
const DIGEST_COPIES = 3;
/** most datagram bytes sent in one pacing tick before yielding to the event loop */
const MAX_TICK_BYTES = 1 << 20;

export interface SenderStats {
  packetsSent: number;
  bytesSent: number;
  retransmits: number;
  feedbacks: number;
  badPackets: number;
  srttMs: number;
  minRttMs: number;
  rateBps: number;
  bytesAcked: number;
  lastFeedbackAt: number;
  /** sending opportunity lost because the event loop was late by more than the burst allowance */
  pacingLostBytes: number;
  /** second copies of retransmissions sent in the tail of the transfer */
  tailDuplicates: number;
  /** parity datagrams sent for the tail's groups */
  parityPackets: number;
  /** clock time of the first data datagram, and of the latest first sending of a block */
  firstSendAt: number;
  allSentAt: number;
}

export interface DataSenderOptions extends SessionPeerOptions {
  rate: RateController;
  /** UDP payload size */
  datagramSize: number;
  /** called when every block of a file has been sent once (its digest can follow) */
  onFileSent?: (fileId: number) => void;
  /** called on each feedback */
  onFeedback?: (f: Feedback) => void;
  /** send parity for the last round trip of new blocks (default true; docs/protocol.md, "Tail parity") */
  tailParity?: boolean;
}

/** the parity group being filled: blocks first .. first + enc.k - 1, `added` of them sent */
interface OpenGroup {
  first: number;
  enc: ParityEncoder;
  added: number;
}

interface FileEntry {
  id: number;
  ssn0: number;
  blocks: number;
  size: number;
  source: BlockSource | undefined;
  ready: boolean;
  sentAll: boolean;
  skipped: boolean;
  /** new blocks stop here until {@link DataSender.unlimit} (a file sent before the receiver knows of it) */
  limitSsn?: number;
}

export class DataSender extends SessionPeer {
  readonly payloadSize: number;
  readonly stats: SenderStats;
  /** called when every block of a file has been sent once (its digest can follow) */
  onFileSent: ((fileId: number) => void) | undefined;
  /** called when reading a file's blocks failed; the file is no longer sent */
  onSourceError: ((fileId: number, err: unknown) => void) | undefined;
  /**
   * called when a feedback says the receiver verified and stored a file (each id may be
   * reported several times: feedbacks repeat it)
   */
  onFileVerified: ((fileId: number) => void) | undefined;
  private readonly files: FileEntry[] = [];
  private readonly byId = new Map<number, FileEntry>();
  private nextAssign = 0;
  private nextNew = 0;
  private newFileIdx = 0;
  private cumAck = 0;
  private readonly retransmitQueue: number[] = [];
  private retransmitHead = 0;
  private readonly queued = new Set<number>();
  /** blocks retransmitted at least once and not yet known delivered: when last resent (ms) */
  private readonly resent = new Map<number, number>();
  /** `resent` is swept of delivered blocks when it grows past this (twice what the last sweep left) */
  private resentSweepAt = 4096;
  private tokens = 0;
  private lastTick: number;
  /** no more files will be assigned: the end of the stream is known */
  private final = false;
  /** first SSN the tail parity covers (-1: not started) */
  private parityFrom = -1;
  private group: OpenGroup | undefined;
  /** parity datagrams of finished groups, sent ahead of new blocks */
  private readonly parityQueue: { first: number; k: number; j: number; symbol: Buffer }[] = [];
  // loss rate seen by the receiver: packets and new gaps, decayed with a 2 s time constant
  private lossSeen = 0;
  private lossLost = 0;
  private lossAt = 0;
  private lastStatusAt = 0;

  constructor(private readonly o: DataSenderOptions) {
    super(o);
    this.payloadSize = o.datagramSize - DATA_HEADER - o.seal.overhead;
    if (this.payloadSize < 256) throw new TachyonError('USAGE', `datagram size ${o.datagramSize} is too small`);
    this.onFileSent = o.onFileSent;
    this.lastTick = o.clock.now();
    this.stats = {
      packetsSent: 0,
      bytesSent: 0,
      retransmits: 0,
      feedbacks: 0,
      badPackets: 0,
      srttMs: 0,
      minRttMs: Infinity,
      rateBps: o.rate.rateBps(),
      bytesAcked: 0,
      lastFeedbackAt: o.clock.now(),
      pacingLostBytes: 0,
      tailDuplicates: 0,
      parityPackets: 0,
      firstSendAt: 0,
      allSentAt: 0,
    };
    o.endpoint.register(o.sessionId, this);
    this.schedule(0);
  }

  /** Reserves the SSN range for a file of `size` bytes; returns its first SSN. */
  assign(fileId: number, size: number): number {
    if (this.byId.has(fileId)) throw new TachyonError('PROTOCOL', `file id ${fileId} assigned twice`);
    const blocks = Math.ceil(size / this.payloadSize);
    const e: FileEntry = { id: fileId, ssn0: this.nextAssign, blocks, size, source: undefined, ready: false, sentAll: false, skipped: false };
    this.nextAssign += blocks;
    this.files.push(e);
    this.byId.set(fileId, e);
    return e.ssn0;
  }

  /** No file is assigned after this one: the stream's end is known, and its tail gets parity. */
  lastFileAssigned(): void {
    this.final = true;
  }

  /** The receiver is ready for the file: its blocks may now be sent. */
  start(fileId: number, source: BlockSource): void {
    const e = this.byId.get(fileId);
    if (!e) throw new TachyonError('PROTOCOL', `ready for unknown file ${fileId}`);
    e.source = source;
    e.ready = true;
    this.kick();
  }

  /** The receiver refused the file: its blocks are never sent. */
  skip(fileId: number): void {
    const e = this.byId.get(fileId);
    if (!e) return;
    e.skipped = true;
    e.sentAll = true;
    this.kick();
  }

  /** The file is finished (verified or failed): forget it. */
  release(fileId: number): void {
    const e = this.byId.get(fileId);
    if (!e) return;
    e.source = undefined;
    e.ready = false;
    this.byId.delete(fileId);
  }

  /**
   * Stops sending a file that was sent speculatively, before its plan (it must be the last
   * one assigned): its range shrinks to the blocks sent so far, which are never sent
   * again, and the next file is assigned right after them. Returns that void range.
   */
  abandon(fileId: number): { ssn0: number; blocks: number } {
    const e = this.byId.get(fileId);
    if (!e || this.files[this.files.length - 1] !== e) throw new TachyonError('INTERNAL', `file ${fileId} is not the last assigned`);
    e.blocks = Math.min(e.blocks, Math.max(0, this.nextNew - e.ssn0));
    e.source = undefined;
    e.ready = false;
    e.skipped = true;
    e.sentAll = true;
    this.byId.delete(fileId);
    this.nextAssign = e.ssn0 + e.blocks;
    return { ssn0: e.ssn0, blocks: e.blocks };
  }

  /**
   * Sends at most `bytes` of a file's blocks until {@link unlimit}: a file sent before the
   * receiver was told of it lands in the receiver's hold for unannounced blocks, which is
   * bounded; what does not fit is lost and sent again.
   */
  limit(fileId: number, bytes: number): void {
    const e = this.byId.get(fileId);
    if (e) e.limitSsn = e.ssn0 + Math.ceil(bytes / this.payloadSize);
  }

  unlimit(fileId: number): void {
    const e = this.byId.get(fileId);
    if (!e || e.limitSsn === undefined) return;
    e.limitSsn = undefined;
    this.kick();
  }

  /** True when every assigned block has been acknowledged. */
  get allAcked(): boolean {
    return this.cumAck >= this.nextAssign && this.nextNew >= this.nextAssign;
  }

  // ---- incoming ------------------------------------------------------------------

  onPacket(packet: Buffer, from: PeerAddress): void {
    if (this.closed) return;
    let pn: number;
    try {
      const h = decodeCommon(packet);
      if (h.type !== PacketType.FEEDBACK) throw new TachyonError('PROTOCOL', `unexpected packet type ${h.type} at sender`);
      pn = h.packetNumber;
    } catch {
      this.stats.badPackets++;
      return;
    }
    const body = this.isFresh(pn) ? this.openAuthentic(packet, COMMON_HEADER, pn) : undefined;
    let f: Feedback;
    try {
      if (!body) throw new TachyonError('PROTOCOL', 'forged, corrupted or replayed feedback');
      f = decodeFeedback(body);
    } catch {
      this.stats.badPackets++;
      return;
    }
    this.peer = from;
    this.handleFeedback(f);
  }

  private handleFeedback(f: Feedback): void {
    const now = this.o.clock.now();
    this.stats.feedbacks++;
    this.stats.lastFeedbackAt = now;
    if (f.nextExpected > this.nextAssign || f.cumAck > this.nextNew) {
      this.stats.badPackets++;
      return;
    }
    // RTT from the echoed timestamp
    let rttQueueMs: number | undefined;
    if (f.echoTsUs !== 0 || f.holdUs !== 0) {
      const nowUs = this.nowUs();
      const rttUs = ((nowUs - f.echoTsUs) >>> 0) - f.holdUs;
      if (rttUs > 0 && rttUs < 60e6) {
        const r = rttUs / 1000;
        this.stats.minRttMs = Math.min(this.stats.minRttMs, r);
        this.stats.srttMs = this.stats.srttMs === 0 ? r : this.stats.srttMs * 0.875 + r * 0.125;
        rttQueueMs = r - this.stats.minRttMs;
      }
    }
    if (f.cumAck > this.cumAck) {
      this.cumAck = f.cumAck;
      if (this.resent.size > this.resentSweepAt) {
        for (const s of this.resent.keys()) if (s < this.cumAck) this.resent.delete(s);
        this.resentSweepAt = Math.max(4096, 2 * this.resent.size);
      }
    }
    this.stats.bytesAcked = f.bytesReceived;
    const decay = Math.exp(-Math.max(0, now - this.lossAt) / 2000);
    this.lossAt = now;
    this.lossSeen = this.lossSeen * decay + f.intervalPackets;
    this.lossLost = this.lossLost * decay + f.intervalLost;
    for (const r of f.naks) {
      for (let s = r.start; s < r.start + r.count; s++) {
        if (s < this.cumAck || s >= this.nextNew || this.queued.has(s)) continue;
        // the receiver repeats each NAK once; a copy arriving just after the block was
        // resent is not a new request (a real re-NAK comes after more than a round trip)
        const last = this.resent.get(s);
        if (last !== undefined && now - last < Math.max(10, 0.5 * (this.stats.srttMs || 20))) continue;
        this.queued.add(s);
        this.retransmitQueue.push(s);
      }
    }
    // no timestamp until the receiver has had a data datagram: nothing delivered yet
    const delivered = f.rxTsUs !== undefined ? this.deliveryRate(f.rxTsUs, f.bytesReceived) : 0;
    this.o.rate.onFeedback({
      now,
      qdelayMs: queueingDelay(f.qdelayUs, rttQueueMs),
      rttMs: this.stats.srttMs || 100,
      recvRateBps: delivered,
      intervalRateBps: f.recvRateKbps * 1000,
      intervalPackets: f.intervalPackets,
      intervalLost: f.intervalLost,
      ...(f.train ? { trainRateBps: f.train.rateKbps * 1000, trainLoss: f.train.lost / Math.max(1, f.train.packets + f.train.lost) } : {}),
    });
    this.stats.rateBps = this.o.rate.rateBps();
    if (TRACE && f.train) {
      process.stderr.write(`trace train: ${(f.train.rateKbps / 1000).toFixed(1)} Mbit/s over ${f.train.packets} datagrams, ${f.train.lost} lost (sent: ${this.trainSent ?? '?'}); rate now ${(this.stats.rateBps / 1e6).toFixed(1)}\n`);
    }
    if (TRACE) {
      process.stderr.write(
        `trace t=${now.toFixed(1)} rel=${(now - this.stats.firstSendAt).toFixed(0)} sent=${this.stats.packetsSent} rtxq=${this.retransmitQueue.length - this.retransmitHead} allSent=${this.stats.allSentAt > 0 ? (this.stats.allSentAt - this.stats.firstSendAt).toFixed(0) : '-'} rate=${(this.stats.rateBps / 1e6).toFixed(1)} q=${(f.qdelayUs / 1000).toFixed(2)} srtt=${this.stats.srttMs.toFixed(1)} recv=${(f.recvRateKbps / 1000).toFixed(1)} dlv=${(delivered / 1e6).toFixed(1)} rtx=${this.stats.retransmits} acked=${f.bytesReceived} naks=${f.naks.length} cum=${f.cumAck} next=${this.nextNew}\n`,
      );
    }
    this.o.onFeedback?.(f);
    if (f.verified && this.onFileVerified) for (const id of f.verified) this.onFileVerified(id);
    if (this.retransmitHead < this.retransmitQueue.length) this.kick();
  }

  /**
   * Delivery rate (bits/s) over receiver time: the bytes delivered between two feedbacks'
   * newest arrivals (kernel times at the receiver), over about 50 ms of them. Feedback
   * that reached this sender in bunches (its return path or its own late reads) read up
   * to 15% fast through the max filter over this sender's own feedback arrival times that
   * this replaced (210–222 Mbit/s on the 200 Mbit/s path while 179 arrived), start-up took
   * that for the capacity, and the rate went to 248 with a 236 ms queue. The bytes count
   * each block once; the path also carried the repairs of lost blocks, so the rate is
   * scaled by the share of datagrams that were retransmissions.
   */
  private deliveryRate(rxTsUs: number, bytesReceived: number): number {
    const h = this.rxHistory;
    if (this.rxLast !== undefined) {
      const d = (rxTsUs - this.rxLast) >>> 0;
      if (d >= 2 ** 31) return this.rxRate; // an older feedback, reordered
      this.rxMs += d / 1000;
    }
    this.rxLast = rxTsUs;
    if (h.length > 0 && this.rxMs <= h[h.length - 1]![0]) return this.rxRate;
    h.push([this.rxMs, bytesReceived]);
    while (h.length > 2 && this.rxMs - h[1]![0] >= 50) h.shift();
    const [t0, b0] = h[0]!;
    if (this.rxMs - t0 >= 20) {
      const repair = this.stats.packetsSent > 1000 ? Math.min(0.5, this.stats.retransmits / this.stats.packetsSent) : 0;
      this.rxRate = ((bytesReceived - b0) * 8 * 1000) / (this.rxMs - t0) / (1 - repair);
    }
    return this.rxRate;
  }

  private readonly rxHistory: [number, number][] = [];
  private rxLast: number | undefined;
  private rxMs = 0;
  private rxRate = 0;

  // ---- outgoing ------------------------------------------------------------------

  private nowUs(): number {
    return Math.round(this.o.clock.now() * 1000) >>> 0;
  }

  /** Work arrived (a file is ready, blocks were NAKed): send now, not at the next idle tick. */
  private kick(): void {
    if (this.cancelTimer !== undefined) {
      // a pacing wait is due soon anyway; an idle wait (10-50 ms) would hold the work back
      if (this.timerDueAt - this.o.clock.now() <= 1) return;
      this.cancelTimer();
      this.cancelTimer = undefined;
    }
    this.schedule(0);
  }

  /** when the pending timer fires (clock ms) */
  private timerDueAt = 0;

  private schedule(ms: number): void {
    if (this.closed) return;
    this.timerDueAt = this.o.clock.now() + ms;
    this.cancelTimer = this.o.clock.setTimer(ms, () => {
      this.cancelTimer = undefined;
      this.tick();
    });
  }

  private fileForSsn(ssn: number): FileEntry | undefined {
    return findBySsn(this.files, ssn);
  }

  private nextNewFile(): FileEntry | undefined {
    while (this.newFileIdx < this.files.length) {
      const f = this.files[this.newFileIdx]!;
      if (f.skipped) {
        this.nextNew = Math.max(this.nextNew, f.ssn0 + f.blocks);
        this.newFileIdx++;
        continue;
      }
      if (this.nextNew < f.ssn0 + f.blocks || (f.blocks === 0 && !f.ready)) return f;
      if (!f.sentAll) {
        f.sentAll = true;
        this.onFileSent?.(f.id);
      }
      this.newFileIdx++;
    }
    return undefined;
  }

  private hasWork(): boolean {
    return this.retransmitHead < this.retransmitQueue.length || this.parityQueue.length > 0 || this.nextNew < this.nextAssign;
  }

  /** The share of datagrams the path loses, as the receiver's feedback shows it. */
  lossRate(): number {
    const n = this.lossSeen + this.lossLost;
    return n < 100 ? 0 : this.lossLost / n;
  }

  /**
   * The parity group a new block joins, if any. Blocks sent in the last round trip of
   * the stream cannot be repaired by a NAK before the stream would otherwise end (the
   * NAK takes a round trip, the repair half of one more): they go in groups of
   * PARITY_GROUP with enough parity blocks that the receiver rebuilds what the path lost
   * at the measured loss rate, and the transfer ends a round trip sooner.
   */
  private groupFor(ssn: number): OpenGroup | undefined {
    const g = this.group;
    if (g) {
      if (ssn === g.first + g.added) return g;
      // the stream skipped past the group (a file was skipped): its parity is never sent
      this.group = undefined;
    }
    if (this.o.tailParity === false || !this.final) return undefined;
    if (this.parityFrom < 0) {
      const srtt = this.stats.srttMs;
      if (!srtt) return undefined;
      const leftBytes = (this.nextAssign - ssn) * this.payloadSize;
      const cover = Math.min(PARITY_MAX_BYTES, (this.stats.rateBps / 8) * ((srtt * 1.1 + 20) / 1000));
      if (leftBytes > cover) return undefined;
      this.parityFrom = ssn;
    }
    if (ssn < this.parityFrom) return undefined;
    const p = this.lossRate();
    if (p < PARITY_MIN_LOSS) return undefined;
    const k = Math.min(PARITY_GROUP, this.nextAssign - ssn);
    const m = Math.min(k, parityFor(k, p * 1.25 + 0.002, PARITY_FAILURE));
    this.group = { first: ssn, enc: new ParityEncoder(k, m, this.payloadSize), added: 0 };
    return this.group;
  }

  private tick(): void {
    if (this.closed) return;
    const now = this.o.clock.now();
    const rate = this.o.rate.rateBps();
    this.stats.rateBps = rate;
    const elapsed = Math.max(0, now - this.lastTick);
    this.lastTick = now;
    const bytesPerMs = rate / 8000;
    // burst allowance: timers are coarse and the event loop is shared, so allow up to
    // ~50 ms of sending to catch up after a late tick or a descheduled process
    const burst = Math.max(bytesPerMs * 50, this.o.datagramSize * 8);
    let refill = this.tokens + bytesPerMs * elapsed;
    // the first datagrams go out as one burst allowance at the start rate (an initial
    // window: the path shows its first delay samples a little sooner)
    // the first tick's datagrams are that burst: flagged, the receiver times them as a packet train
    const train = this.stats.packetsSent === 0;
    if (train && this.hasWork()) refill = Math.max(refill, burst);
    else if (refill > burst && this.hasWork()) this.stats.pacingLostBytes += refill - burst;
    this.tokens = Math.min(burst, refill);
    let sentThisTick = 0;
    const peer = this.peer;
    let blockedOnReady = false;
    if (peer) {
      const batch: Buffer[] = [];
      // yield to the event loop (feedback!) after a bounded amount of work per tick
      let bytesThisTick = 0;
      let sentNew = false;
      while (this.tokens >= this.payloadSize && sentThisTick < 512 && bytesThisTick < MAX_TICK_BYTES) {
        let ssn: number | undefined;
        let retransmit = false;
        while (this.retransmitHead < this.retransmitQueue.length) {
          const s = this.retransmitQueue[this.retransmitHead++]!;
          this.queued.delete(s);
          if (s >= this.cumAck) {
            ssn = s;
            retransmit = true;
            break;
          }
        }
        if (this.retransmitHead >= this.retransmitQueue.length && this.retransmitHead > 0) {
          this.retransmitQueue.length = 0;
          this.retransmitHead = 0;
        }
        if (ssn === undefined && this.parityQueue.length > 0) {
          const par = this.parityQueue.shift()!;
          const pkt = this.buildParity(par.first, par.k, par.j, par.symbol);
          this.emit(batch, pkt, peer);
          this.tokens -= par.symbol.length;
          bytesThisTick += pkt.length;
          sentThisTick++;
          this.stats.packetsSent++;
          this.stats.bytesSent += pkt.length;
          this.stats.parityPackets++;
          continue;
        }
        if (ssn === undefined) {
          const f = this.nextNewFile();
          if (!f) break;
          if (!f.ready || (f.limitSsn !== undefined && this.nextNew >= f.limitSsn)) {
            blockedOnReady = true;
            break;
          }
          ssn = this.nextNew++;
          sentNew = true;
        }
        const f = this.fileForSsn(ssn);
        if (!f || !f.source) continue; // released (already verified): nothing to resend
        const offset = (ssn - f.ssn0) * this.payloadSize;
        const len = Math.min(this.payloadSize, f.size - offset);
        const group = retransmit ? undefined : this.groupFor(ssn);
        let pkt: Buffer;
        try {
          pkt = this.buildData(ssn, f.source, offset, len, retransmit, group, train && !retransmit);
        } catch (err) {
          // the source failed (vanished, shrank, I/O error): stop sending this file
          f.source = undefined;
          this.skip(f.id);
          this.onSourceError?.(f.id, err);
          continue;
        }
        this.emit(batch, pkt, peer);
        // the rate counts block bytes (file data, retransmissions included)
        this.tokens -= len;
        bytesThisTick += pkt.length;
        sentThisTick++;
        this.stats.packetsSent++;
        this.stats.bytesSent += pkt.length;
        if (retransmit) {
          this.stats.retransmits++;
          // extra copies where losing this one costs another round trip for little
          // bandwidth: near the end (a block lost now finishes a re-NAK interval after
          // everything else) and for a block whose retransmission was lost already
          // (about 1 in 400 blocks at 5% loss)
          const again = this.resent.has(ssn);
          this.resent.set(ssn, now);
          const extra = (again ? 1 : 0) + (this.nearTail() ? TAIL_EXTRA : 0);
          for (let c = 0; c < extra; c++) {
            const dup = this.buildData(ssn, f.source, offset, len, true);
            this.emit(batch, dup, peer);
            this.tokens -= len;
            bytesThisTick += dup.length;
            sentThisTick++;
            this.stats.packetsSent++;
            this.stats.bytesSent += dup.length;
            this.stats.tailDuplicates++;
          }
        }
      }
      if (sentThisTick > 0) {
        if (batch.length) this.o.endpoint.send(batch, peer);
        if (TRACE && train) this.trainSent = `${sentThisTick} datagrams left in ${(this.o.clock.now() - now).toFixed(2)} ms`;
        if (this.stats.firstSendAt === 0) this.stats.firstSendAt = now;
        if (sentNew) this.stats.allSentAt = now;
      }
      // complete the "sent once" bookkeeping for a file whose last block just left
      this.nextNewFile();
      // tell the receiver how far the stream goes when we have nothing new to send
      const idle = this.retransmitHead >= this.retransmitQueue.length && (this.nextNew >= this.nextAssign || blockedOnReady);
      if (idle && this.nextNew > this.cumAck) {
        const interval = Math.max(10, Math.min(100, (this.stats.srttMs || 50) / 2));
        if (now - this.lastStatusAt >= interval) {
          this.lastStatusAt = now;
          this.sendStatus(peer);
        }
      }
    }
    const more = this.retransmitHead < this.retransmitQueue.length || this.parityQueue.length > 0 || (this.nextNew < this.nextAssign && !blockedOnReady);
    if (more) {
      // wait until enough tokens for a datagram have accumulated (timers are ~1 ms coarse)
      const deficit = this.payloadSize - this.tokens;
      const wait = deficit <= 0 ? 0 : Math.max(1, deficit / bytesPerMs);
      this.schedule(sentThisTick >= 512 || this.tokens >= this.payloadSize ? 0 : Math.min(wait, 50));
    } else if (this.nextNew > this.cumAck || blockedOnReady) {
      this.schedule(10);
    } else {
      this.schedule(50);
    }
  }

  /**
   * Whether what is left to send for the first time is under TAIL_RTTS round trips of
   * sending: a block lost there and lost again on its retransmission would finish a
   * re-NAK interval (1.25 RTT) after everything else, so its retransmission goes twice.
   */
  private nearTail(): boolean {
    const left = (this.nextAssign - this.nextNew) * this.payloadSize * 8;
    return left <= (this.stats.rateBps * TAIL_RTTS * (this.stats.srttMs || 0)) / 1000;
  }

  /** TACHYON_TRACE: how the initial burst (the packet train) left */
  private trainSent: string | undefined;

  /** the one datagram buffer reused for every packet when the socket copies on send */
  private txBuf: Buffer | undefined;

  /** Sends now into a copying socket (the buffer is reused), else gathers the batch. */
  private emit(batch: Buffer[], pkt: Buffer, peer: PeerAddress): void {
    if (this.txBuf !== undefined) this.o.endpoint.send([pkt], peer);
    else batch.push(pkt);
  }

  private datagram(size: number): Buffer {
    if (this.txBuf === undefined && this.o.endpoint.socket.copiesOnSend === true) this.txBuf = Buffer.allocUnsafeSlow(this.o.datagramSize);
    return this.txBuf !== undefined && size <= this.txBuf.length ? this.txBuf.subarray(0, size) : Buffer.allocUnsafe(size);
  }

  /** A DATA datagram; a first sending in a parity group also adds the block to the group's parity. */
  private buildData(ssn: number, source: BlockSource, offset: number, len: number, retransmit: boolean, group?: OpenGroup, train = false): Buffer {
    const pkt = this.datagram(DATA_HEADER + len + this.o.seal.overhead);
    const pn = this.nextPacketNumber();
    // a retransmission of a block in a group is kept by the receiver too (it may complete the group)
    const grouped = group !== undefined || (this.parityFrom >= 0 && ssn >= this.parityFrom);
    writeCommon(pkt, PacketType.DATA, (retransmit ? FLAG_RETRANSMIT : 0) | (grouped ? FLAG_GROUPED : 0) | (train ? FLAG_TRAIN : 0), this.o.sessionId, pn);
    writeDataHeader(pkt, ssn, this.nowUs(), this.stats.srttMs);
    source.read(offset, len, pkt, DATA_HEADER);
    if (group) {
      group.enc.add(group.added++, pkt.subarray(DATA_HEADER, DATA_HEADER + len));
      if (group.added === group.enc.k) {
        this.group = undefined;
        group.enc.parity.forEach((symbol, j) => this.parityQueue.push({ first: group.first, k: group.enc.k, j, symbol }));
      }
    }
    this.o.seal.sealInPlace(pkt, DATA_HEADER, len, pn);
    return pkt;
  }

  private buildParity(first: number, k: number, j: number, symbol: Buffer): Buffer {
    const pkt = this.datagram(DATA_HEADER + symbol.length + this.o.seal.overhead);
    const pn = this.nextPacketNumber();
    writeCommon(pkt, PacketType.PARITY, 0, this.o.sessionId, pn);
    writeParityHeader(pkt, first, k, j, this.nowUs());
    symbol.copy(pkt, DATA_HEADER);
    this.o.seal.sealInPlace(pkt, DATA_HEADER, symbol.length, pn);
    return pkt;
  }

  /**
   * Sends a file's digest in STATUS datagrams beside the control channel's `digests`
   * (DIGEST_COPIES of them: at 5% loss all three are lost once in 8000 files).
   */
  sendDigest(fileId: number, sha256Hex: string): void {
    const peer = this.peer;
    if (!peer || this.closed) return;
    const digest = { fileId, sha256: Buffer.from(sha256Hex, 'hex') };
    for (let i = 0; i < DIGEST_COPIES; i++) this.sendSealed(PacketType.STATUS, encodeStatus({ nextSsn: this.nextNew, sendTsUs: this.nowUs(), digest }), peer);
  }

  private sendStatus(peer: PeerAddress): void {
    this.sendSealed(PacketType.STATUS, encodeStatus({ nextSsn: this.nextNew, sendTsUs: this.nowUs() }), peer);
  }
}

/**
 * The queueing delay the rate controller acts on (ms; undefined: no sample): the
 * receiver's one-way estimate (its delay above the lowest it has seen), but never more
 * than this feedback's round trip above the lowest round trip. Both err high, never low:
 * a one-way base taken a few ms too low (seen on the real 300 ms path: 4.3 ms of "queue"
 * for a whole transfer, while the round trip showed 0.8) held the rate at 56% of the path
 * and crept up for 20 s.
 */
function queueingDelay(owdQueueUs: number, rttQueueMs: number | undefined): number | undefined {
  if (owdQueueUs < 0) return undefined;
  const owd = owdQueueUs / 1000;
  return rttQueueMs === undefined ? owd : Math.min(owd, Math.max(0, rttQueueMs));
}
