/**
 * Whole-envelope operations on top of the segment functions: a position-independent
 * encrypting view of a plaintext (what a sender reads blocks from, at any offset, in any
 * order), buffer encryption and decryption, and the diagnosis of a segment that does not
 * authenticate (truncated, extended, swapped or repeated, corrupted, foreign header).
 */
import { createHash, type Hash } from 'node:crypto';
import { TachyonError } from '../../core/errors.js';
import {
  BOUND_HEADER_BYTES,
  decodeHeader,
  envelopeError,
  envelopeSize,
  HEADER_BYTES,
  plaintextSize,
  SEGMENT_BYTES,
  SEGMENT_OVERHEAD,
  SEGMENT_PLAIN,
  segmentCount,
  segmentOffset,
  segmentPlainLength,
  type EnvelopeHeader,
} from './format.js';
import { segmentKeys, unwrapContentKey, type SegmentKeys } from './keys.js';
import { openSegment, sealSegment } from './segment.js';

/** Reads `len` plaintext bytes at `pos` into `out` at `at` (exactly, or throws). */
export type PlainReader = (pos: number, len: number, out: Buffer, at: number) => void;

/** An opened envelope: the header, its bytes and the segment keys. */
export interface OpenedEnvelope {
  readonly headerBytes: Buffer;
  readonly header: EnvelopeHeader;
  readonly keys: SegmentKeys;
}

/** Parses a header and unwraps its content key with the key-encryption key `kek`. */
export function openEnvelope(headerBytes: Buffer, kek: Buffer | ((h: EnvelopeHeader) => Buffer)): OpenedEnvelope {
  const header = decodeHeader(headerBytes);
  const hb = Buffer.from(headerBytes.subarray(0, HEADER_BYTES));
  const k = typeof kek === 'function' ? kek(header) : kek;
  const contentKey = unwrapContentKey(hb, header, k);
  return { headerBytes: hb, header, keys: segmentKeys(contentKey, header.fileId) };
}

/** sealed segments an encryptor keeps (4 MiB): a retransmission about one RTT behind finds its segment */
export const ENCRYPTOR_CACHE_SEGMENTS = 64;

/**
 * The envelope of a plaintext, readable at any offset: the header, then each segment
 * encrypted when first needed. The most recently used sealed segments are kept (up to
 * `cacheSegments`), so sequential block reads encrypt each segment once and a
 * retransmission of a recent block does not encrypt its segment again. The SHA-256 of
 * the whole envelope is computed as bytes are produced in order; `digest()` completes it
 * if needed.
 */
export class EnvelopeEncryptor {
  readonly size: number;
  readonly segments: number;
  private readonly plain: Buffer = Buffer.allocUnsafe(SEGMENT_PLAIN);
  /** sealed segments by index (whole SEGMENT_BYTES buffers), least recently used first (a Map keeps insertion order) */
  private readonly cache = new Map<number, Buffer>();
  private readonly cacheSegments: number;
  /** segments encrypted so far (a retransmission that missed the cache costs one more) */
  sealedSegments = 0;
  private hash: Hash = createHash('sha256');
  private hashed = 0;
  private digestHex: string | undefined;

  constructor(
    private readonly env: OpenedEnvelope,
    readonly plainSize: number,
    private readonly readPlain: PlainReader,
    cacheSegments = ENCRYPTOR_CACHE_SEGMENTS,
  ) {
    this.size = envelopeSize(plainSize);
    this.segments = segmentCount(plainSize);
    this.cacheSegments = Math.max(1, Math.min(cacheSegments, this.segments));
  }

  /** Resume: `prefix` is the SHA-256 state after the first `offset` envelope bytes. */
  resumeAt(offset: number, prefix: Hash): void {
    this.hash = prefix;
    this.hashed = offset;
    this.digestHex = offset === this.size ? prefix.digest('hex') : undefined;
  }

  private load(i: number): Buffer {
    const len = segmentPlainLength(i, this.plainSize);
    const sealedLen = len + SEGMENT_BYTES - SEGMENT_PLAIN;
    const hit = this.cache.get(i);
    if (hit) {
      this.cache.delete(i);
      this.cache.set(i, hit);
      return hit.subarray(0, sealedLen);
    }
    let buf: Buffer;
    if (this.cache.size >= this.cacheSegments) {
      const [old, b] = this.cache.entries().next().value as [number, Buffer];
      this.cache.delete(old);
      buf = b;
    } else buf = Buffer.allocUnsafe(SEGMENT_BYTES);
    const p = this.plain.subarray(0, len);
    if (len > 0) this.readPlain(i * SEGMENT_PLAIN, len, p, 0);
    sealSegment(this.env.keys, this.env.headerBytes, i, i === this.segments - 1, p, buf, 0);
    this.sealedSegments++;
    this.cache.set(i, buf);
    return buf.subarray(0, sealedLen);
  }

  /** Copies envelope bytes [offset, offset+len) into `out` at `at`. */
  read(offset: number, len: number, out: Buffer, at: number): void {
    if (offset < 0 || offset + len > this.size) throw new TachyonError('IO', 'read beyond the end of the envelope');
    const start = offset;
    const startAt = at;
    let pos = offset;
    const end = offset + len;
    if (pos < HEADER_BYTES) {
      const n = Math.min(end, HEADER_BYTES) - pos;
      this.env.headerBytes.copy(out, at, pos, pos + n);
      pos += n;
      at += n;
    }
    while (pos < end) {
      const i = Math.floor((pos - HEADER_BYTES) / SEGMENT_BYTES);
      const seg = this.load(i);
      const within = pos - segmentOffset(i);
      const n = Math.min(end - pos, seg.length - within);
      seg.copy(out, at, within, within + n);
      pos += n;
      at += n;
    }
    if (start <= this.hashed && this.hashed < end && this.digestHex === undefined) {
      this.hash.update(out.subarray(startAt + (this.hashed - start), startAt + len));
      this.hashed = end;
      if (this.hashed === this.size) this.digestHex = this.hash.digest('hex');
    }
  }

  /** SHA-256 of the whole envelope (what the receiver stores). */
  digest(): string {
    if (this.digestHex === undefined) {
      const b = Buffer.allocUnsafe(SEGMENT_BYTES);
      while (this.digestHex === undefined) this.read(this.hashed, Math.min(b.length, this.size - this.hashed), b, 0);
    }
    return this.digestHex;
  }
}

/** Encrypts a whole plaintext held in memory (tests, vectors, small files). */
export function encryptBuffer(env: OpenedEnvelope, plain: Buffer): Buffer {
  const e = new EnvelopeEncryptor(env, plain.length, (pos, len, out, at) => plain.copy(out, at, pos, pos + len));
  const out = Buffer.allocUnsafe(e.size);
  e.read(0, e.size, out, 0);
  return out;
}

/** The plaintext size of an envelope of `size` bytes, or a `bad-size` error. */
export function checkedPlainSize(size: number): number {
  const p = plaintextSize(size);
  if (p === undefined) {
    if (size < HEADER_BYTES + SEGMENT_OVERHEAD) throw envelopeError('truncated', `truncated: ${size} bytes is shorter than a header and one segment`);
    throw envelopeError('bad-size', `size ${size} is not a possible envelope size (truncated or extended)`, { size });
  }
  return p;
}

/**
 * Explains why segment `index` (of `n`) did not authenticate where it is, by trying the
 * other hypotheses: it is the final segment but more follows (extended), it is not final
 * but the file ends (truncated), it belongs at another index (swapped or repeated), or
 * nothing fits (corrupted, or content from another file).
 * `probe(j)` opens another segment of the file, for telling a foreign header from one
 * corrupted segment.
 */
export function diagnoseSegment(
  env: OpenedEnvelope,
  index: number,
  n: number,
  sealed: Buffer,
  probe?: (j: number) => boolean,
): TachyonError {
  const { keys, headerBytes } = env;
  const final = index === n - 1;
  const aad = Buffer.allocUnsafe(BOUND_HEADER_BYTES + 9);
  if (openSegment(keys, headerBytes, index, !final, sealed, aad)) {
    return final
      ? envelopeError('truncated', `truncated: segment ${index} is the last one present but not the final segment of the file`, { segment: index })
      : envelopeError('extended', `extended: segment ${index} is the file's final segment but ${n - 1 - index} more follow`, { segment: index });
  }
  const lo = Math.max(0, index - 2048);
  const hi = Math.min(Math.max(n, index + 1) + 16, index + 2048);
  for (let j = lo; j < hi; j++) {
    if (j === index) continue;
    for (const f of [false, true]) {
      if (openSegment(keys, headerBytes, j, f, sealed, aad)) {
        return envelopeError('segment-misplaced', `segment ${index} is segment ${j} of this file (segments swapped or repeated)`, { segment: index, belongsAt: j });
      }
    }
  }
  if (index === 0 && (n === 1 || (probe !== undefined && !probe(1)))) {
    return envelopeError('header-mismatch', 'the content does not belong to this header (a header from another file, or the content is corrupted)', { segment: index });
  }
  if (final) return envelopeError('segment-corrupted', `the last segment (${index}) does not authenticate: the file was truncated or corrupted`, { segment: index });
  return envelopeError('segment-corrupted', `segment ${index} is corrupted (it does not authenticate)`, { segment: index });
}

/** Decrypts a whole envelope held in memory; every failure is a named ENVELOPE_INVALID or WRONG_KEY. */
export function decryptBuffer(envelope: Buffer, kek: Buffer | ((h: EnvelopeHeader) => Buffer)): Buffer {
  const env = openEnvelope(envelope.subarray(0, Math.min(envelope.length, HEADER_BYTES)), kek);
  const plain = checkedPlainSize(envelope.length);
  const n = segmentCount(plain);
  const out = Buffer.allocUnsafe(plain);
  const aad = Buffer.allocUnsafe(BOUND_HEADER_BYTES + 9);
  const sealedAt = (i: number): Buffer => envelope.subarray(segmentOffset(i), segmentOffset(i) + segmentPlainLength(i, plain) + SEGMENT_BYTES - SEGMENT_PLAIN);
  for (let i = 0; i < n; i++) {
    const p = openSegment(env.keys, env.headerBytes, i, i === n - 1, sealedAt(i), aad);
    if (!p) throw diagnoseSegment(env, i, n, sealedAt(i), (j) => j < n && openSegment(env.keys, env.headerBytes, j, j === n - 1, sealedAt(j)) !== undefined);
    p.copy(out, i * SEGMENT_PLAIN);
  }
  return out;
}
