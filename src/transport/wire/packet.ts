/**
 * Datagram wire format (version 1). All integers big-endian.
 *
 *   common header (12 bytes, authenticated as AEAD associated data)
 *     0  u8   version (high nibble, = 1) | type (low nibble)
 *     1  u8   flags (bit 0: retransmission; bit 1, DATA only: the block is in a parity
 *              group, so the receiver keeps a copy until the group is settled; bit 2, DATA
 *              only: the block left in the initial burst, the packet train; others 0)
 *     2  u32  session id
 *     6  u48  packet number (never reused within a session direction; the AEAD nonce)
 *
 *   DATA adds (authenticated, not encrypted):
 *    12  u48  stream sequence number (SSN) of the block
 *    18  u32  sender timestamp, microseconds mod 2^32
 *    22  u16  sender's smoothed RTT, milliseconds (so the receiver can time NAK repeats)
 *   then the encrypted block (length = datagram - 24 - tag)
 *
 *   PARITY (tail parity, docs/protocol.md) adds (authenticated, not encrypted):
 *    12  u48  first SSN of the group
 *    18  u8   k: data blocks in the group (SSNs first .. first + k - 1), 1..128
 *    19  u8   j: which parity block this is, 0..127
 *    20  u32  sender timestamp, microseconds mod 2^32
 *   then the encrypted parity symbol (length = datagram - 24 - tag)
 *
 *   FEEDBACK, STATUS and PROBE carry their body encrypted after the common header.
 */
import { TachyonError } from '../../core/errors.js';

export const WIRE_VERSION = 1;
export const COMMON_HEADER = 12;
export const DATA_HEADER = 24;

export const PacketType = {
  DATA: 1,
  FEEDBACK: 2,
  STATUS: 3,
  PROBE: 4,
  PARITY: 5,
} as const;
export type PacketTypeValue = (typeof PacketType)[keyof typeof PacketType];

export const FLAG_RETRANSMIT = 1;
export const FLAG_GROUPED = 2;
export const FLAG_TRAIN = 4;
const KNOWN_FLAGS = FLAG_RETRANSMIT | FLAG_GROUPED | FLAG_TRAIN;
const DATA_ONLY_FLAGS = FLAG_GROUPED | FLAG_TRAIN;

export interface CommonHeader {
  type: PacketTypeValue;
  flags: number;
  sessionId: number;
  packetNumber: number;
}

export interface DataHeader extends CommonHeader {
  ssn: number;
  sendTsUs: number;
  srttMs: number;
}

/** Reads the session id without validating anything else (for demultiplexing). */
export function peekSessionId(buf: Uint8Array): number | undefined {
  if (buf.length < COMMON_HEADER) return undefined;
  return ((buf[2]! << 24) >>> 0) + (buf[3]! << 16) + (buf[4]! << 8) + buf[5]!;
}

function readU48(b: Buffer, o: number): number {
  return b.readUIntBE(o, 6);
}

export function decodeCommon(buf: Buffer): CommonHeader {
  if (buf.length < COMMON_HEADER) throw new TachyonError('PROTOCOL', `datagram too short (${buf.length} bytes)`);
  const vt = buf[0]!;
  const version = vt >> 4;
  const type = vt & 0x0f;
  if (version !== WIRE_VERSION) throw new TachyonError('PROTOCOL', `unknown wire version ${version}`);
  if (type < PacketType.DATA || type > PacketType.PARITY) throw new TachyonError('PROTOCOL', `unknown packet type ${type}`);
  const flags = buf[1]!;
  if ((flags & ~KNOWN_FLAGS) !== 0 || (type !== PacketType.DATA && (flags & DATA_ONLY_FLAGS) !== 0)) {
    throw new TachyonError('PROTOCOL', `reserved flags set (${flags})`);
  }
  return {
    type: type as PacketTypeValue,
    flags,
    sessionId: buf.readUInt32BE(2),
    packetNumber: readU48(buf, 6),
  };
}

export function decodeDataHeader(buf: Buffer, common: CommonHeader): DataHeader {
  if (buf.length < DATA_HEADER) throw new TachyonError('PROTOCOL', `data datagram too short (${buf.length} bytes)`);
  return { ...common, ssn: readU48(buf, 12), sendTsUs: buf.readUInt32BE(18), srttMs: buf.readUInt16BE(22) };
}

export interface ParityHeader extends CommonHeader {
  /** first SSN of the group */
  first: number;
  k: number;
  j: number;
  sendTsUs: number;
}

export function decodeParityHeader(buf: Buffer, common: CommonHeader): ParityHeader {
  if (buf.length < DATA_HEADER) throw new TachyonError('PROTOCOL', `parity datagram too short (${buf.length} bytes)`);
  const k = buf[18]!;
  const j = buf[19]!;
  if (k < 1 || k > 128 || j > 127) throw new TachyonError('PROTOCOL', `parity group out of range (k ${k}, j ${j})`);
  return { ...common, first: readU48(buf, 12), k, j, sendTsUs: buf.readUInt32BE(20) };
}

export function writeParityHeader(buf: Buffer, first: number, k: number, j: number, sendTsUs: number): void {
  buf.writeUIntBE(first, 12, 6);
  buf[18] = k;
  buf[19] = j;
  buf.writeUInt32BE(sendTsUs >>> 0, 20);
}

export function writeCommon(buf: Buffer, type: PacketTypeValue, flags: number, sessionId: number, pn: number): void {
  buf[0] = (WIRE_VERSION << 4) | type;
  buf[1] = flags;
  buf.writeUInt32BE(sessionId >>> 0, 2);
  buf.writeUIntBE(pn, 6, 6);
}

export function writeDataHeader(buf: Buffer, ssn: number, sendTsUs: number, srttMs: number): void {
  buf.writeUIntBE(ssn, 12, 6);
  buf.writeUInt32BE(sendTsUs >>> 0, 18);
  buf.writeUInt16BE(Math.min(0xffff, Math.max(0, Math.round(srttMs))), 22);
}

// ---- FEEDBACK body -------------------------------------------------------------------

export interface NakRange {
  start: number;
  count: number;
}

export interface Feedback {
  /** every SSN below this has been received */
  cumAck: number;
  /** one more than the highest SSN seen */
  nextExpected: number;
  /** unique payload bytes received so far */
  bytesReceived: number;
  /** timestamp of the newest data packet received, echoed */
  echoTsUs: number;
  /** microseconds between receiving that packet and sending this feedback */
  holdUs: number;
  /** queueing delay estimate in microseconds; -1 when no sample */
  qdelayUs: number;
  /** receive rate over the last interval, kbit/s */
  recvRateKbps: number;
  /** data packets received in the interval (including duplicates) */
  intervalPackets: number;
  /** gaps newly detected in the interval */
  intervalLost: number;
  /**
   * The initial burst (FLAG_TRAIN) as it arrived: its rate from the first to the last
   * arrival (the bottleneck's spacing), how many of its blocks arrived and how many were
   * lost between them. Repeated in a few feedbacks once the burst is over; absent before.
   */
  train?: { rateKbps: number; packets: number; lost: number };
  /**
   * When the newest data datagram arrived, receiver clock µs mod 2^32 (kernel time when
   * the socket gives it): the sender measures delivery over receiver time, which neither
   * the return path's jitter nor its own late reads stretch or squeeze. Absent (0): none.
   */
  rxTsUs?: number;
  naks: NakRange[];
  /**
   * Files the receiver has verified (digest matched) and stored, by file id: each is
   * repeated in a few consecutive feedbacks so that the sender learns of success without
   * waiting for the `results` message, which a lost TCP segment can hold back by a
   * retransmission timeout. Optional trailer: u16 count, then u32 ids.
   */
  verified?: number[];
}

export const FEEDBACK_FIXED = 56;
export const NAK_RANGE_BYTES = 8;

/** Most file ids one feedback carries in its `verified` trailer. */
export const MAX_VERIFIED_PER_FEEDBACK = 32;

/** Bytes the `verified` trailer takes for `n` ids (0 when there are none). */
export function verifiedTrailerBytes(n: number): number {
  return n === 0 ? 0 : 2 + 4 * n;
}

export function maxNakRanges(bodyCapacity: number): number {
  return Math.max(0, Math.floor((bodyCapacity - FEEDBACK_FIXED) / NAK_RANGE_BYTES));
}

export function encodeFeedback(f: Feedback): Buffer {
  const verified = f.verified ?? [];
  if (verified.length > MAX_VERIFIED_PER_FEEDBACK) throw new TachyonError('PROTOCOL', `too many verified ids in one feedback (${verified.length})`);
  const b = Buffer.allocUnsafe(FEEDBACK_FIXED + f.naks.length * NAK_RANGE_BYTES + verifiedTrailerBytes(verified.length));
  b.writeUIntBE(f.cumAck, 0, 6);
  b.writeUIntBE(f.nextExpected, 6, 6);
  b.writeUIntBE(Math.min(f.bytesReceived, 2 ** 48 - 1), 12, 6);
  b.writeUInt32BE(f.echoTsUs >>> 0, 18);
  b.writeUInt32BE(Math.min(0xffffffff, Math.max(0, Math.round(f.holdUs))), 22);
  b.writeInt32BE(Math.max(-1, Math.min(0x7fffffff, Math.round(f.qdelayUs))), 26);
  b.writeUInt32BE(Math.min(0xffffffff, Math.max(0, Math.round(f.recvRateKbps))), 30);
  b.writeUInt32BE(Math.min(0xffffffff, f.intervalPackets), 34);
  b.writeUInt32BE(Math.min(0xffffffff, f.intervalLost), 38);
  b.writeUInt32BE(Math.min(0xffffffff, Math.max(0, Math.round(f.train?.rateKbps ?? 0))), 42);
  b.writeUInt16BE(Math.min(0xffff, f.train?.packets ?? 0), 46);
  b.writeUInt16BE(Math.min(0xffff, f.train?.lost ?? 0), 48);
  b.writeUInt32BE((f.rxTsUs ?? 0) >>> 0, 50);
  b.writeUInt16BE(f.naks.length, 54);
  let o = FEEDBACK_FIXED;
  for (const r of f.naks) {
    b.writeUIntBE(r.start, o, 6);
    b.writeUInt16BE(r.count, o + 6);
    o += NAK_RANGE_BYTES;
  }
  if (verified.length > 0) {
    b.writeUInt16BE(verified.length, o);
    o += 2;
    for (const id of verified) {
      b.writeUInt32BE(id >>> 0, o);
      o += 4;
    }
  }
  return b;
}

export function decodeFeedback(b: Buffer): Feedback {
  if (b.length < FEEDBACK_FIXED) throw new TachyonError('PROTOCOL', `feedback body too short (${b.length})`);
  const n = b.readUInt16BE(54);
  const nakEnd = FEEDBACK_FIXED + n * NAK_RANGE_BYTES;
  let verified: number[] | undefined;
  if (b.length !== nakEnd) {
    const m = b.length >= nakEnd + 2 ? b.readUInt16BE(nakEnd) : -1;
    if (m < 1 || m > MAX_VERIFIED_PER_FEEDBACK || b.length !== nakEnd + verifiedTrailerBytes(m)) {
      throw new TachyonError('PROTOCOL', `feedback body length ${b.length} does not match ${n} NAK ranges`);
    }
    verified = [];
    for (let i = 0; i < m; i++) verified.push(b.readUInt32BE(nakEnd + 2 + 4 * i));
  }
  const cumAck = b.readUIntBE(0, 6);
  const nextExpected = b.readUIntBE(6, 6);
  if (cumAck > nextExpected) throw new TachyonError('PROTOCOL', 'feedback acknowledges beyond what it has seen');
  const naks: NakRange[] = [];
  let o = FEEDBACK_FIXED;
  for (let i = 0; i < n; i++) {
    const start = b.readUIntBE(o, 6);
    const count = b.readUInt16BE(o + 6);
    if (count === 0 || start + count > nextExpected) throw new TachyonError('PROTOCOL', 'NAK range outside the stream seen');
    naks.push({ start, count });
    o += NAK_RANGE_BYTES;
  }
  return {
    cumAck,
    nextExpected,
    bytesReceived: b.readUIntBE(12, 6),
    echoTsUs: b.readUInt32BE(18),
    holdUs: b.readUInt32BE(22),
    qdelayUs: b.readInt32BE(26),
    recvRateKbps: b.readUInt32BE(30),
    intervalPackets: b.readUInt32BE(34),
    intervalLost: b.readUInt32BE(38),
    ...(b.readUInt32BE(42) > 0 ? { train: { rateKbps: b.readUInt32BE(42), packets: b.readUInt16BE(46), lost: b.readUInt16BE(48) } } : {}),
    ...(b.readUInt32BE(50) !== 0 ? { rxTsUs: b.readUInt32BE(50) } : {}),
    naks,
    ...(verified ? { verified } : {}),
  };
}

// ---- STATUS body (sender -> receiver): how far the stream has been sent ----------------

export interface Status {
  nextSsn: number;
  sendTsUs: number;
  /**
   * A file's whole-content SHA-256, as the `digests` control message carries it: the
   * receiver verifies a complete file on whichever copy comes first (a lost TCP segment
   * holds the control channel's copy back by a retransmission timeout). Optional
   * trailer: u32 file id, 32 bytes of digest.
   */
  digest?: { fileId: number; sha256: Buffer };
}

export const STATUS_BYTES = 10;
export const STATUS_DIGEST_BYTES = STATUS_BYTES + 4 + 32;

export function encodeStatus(s: Status): Buffer {
  const b = Buffer.allocUnsafe(s.digest ? STATUS_DIGEST_BYTES : STATUS_BYTES);
  b.writeUIntBE(s.nextSsn, 0, 6);
  b.writeUInt32BE(s.sendTsUs >>> 0, 6);
  if (s.digest) {
    if (s.digest.sha256.length !== 32) throw new TachyonError('PROTOCOL', `digest of ${s.digest.sha256.length} bytes`);
    b.writeUInt32BE(s.digest.fileId >>> 0, 10);
    s.digest.sha256.copy(b, 14);
  }
  return b;
}

export function decodeStatus(b: Buffer): Status {
  if (b.length !== STATUS_BYTES && b.length !== STATUS_DIGEST_BYTES) {
    throw new TachyonError('PROTOCOL', `status body has ${b.length} bytes, expected ${STATUS_BYTES} or ${STATUS_DIGEST_BYTES}`);
  }
  const s: Status = { nextSsn: b.readUIntBE(0, 6), sendTsUs: b.readUInt32BE(6) };
  if (b.length === STATUS_DIGEST_BYTES) s.digest = { fileId: b.readUInt32BE(10), sha256: Buffer.from(b.subarray(14, 46)) };
  return s;
}

/** UDP payload size for a link MTU (IPv4 20 + UDP 8 bytes of headers). */
export function datagramSizeForMtu(mtu: number): number {
  return mtu - 28;
}
