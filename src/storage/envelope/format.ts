/**
 * Tachyon's encrypted-file envelope, version 1: the byte layout, header codec and size
 * arithmetic. The exact layout is documented in docs/encryption-at-rest.md (which also
 * carries test vectors); keep the two in step.
 *
 *   header (128 bytes) || segment 0 || segment 1 || … || segment n-1
 *   segment i = nonce (12) || AES-256-GCM ciphertext (SEGMENT_PLAIN or fewer) || tag (16)
 *
 * Every segment but the last carries exactly SEGMENT_PLAIN plaintext bytes; the last one
 * carries 1..SEGMENT_PLAIN (0 only for an empty file, which has one empty segment). The
 * envelope size is therefore a pure function of the plaintext size, and segment i
 * starts at a fixed offset, so any segment can be produced or checked on its own.
 */
import { createHash } from 'node:crypto';
import { TachyonError } from '../../core/errors.js';

/** the file name extension of an envelope */
export const ENVELOPE_EXTENSION = '.tachyon-enc';
export const MAGIC = Buffer.from('TACHYENC', 'latin1');
export const FORMAT_VERSION = 1;
export const HEADER_BYTES = 128;
export const SEGMENT_PLAIN = 65536;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const SEGMENT_OVERHEAD = NONCE_BYTES + TAG_BYTES;
export const SEGMENT_BYTES = SEGMENT_PLAIN + SEGMENT_OVERHEAD;
export const FILE_ID_BYTES = 16;
export const SALT_BYTES = 16;
/** the header bytes every segment's associated data binds (magic … file id): never change on re-wrapping */
export const BOUND_HEADER_BYTES = 32;
/** the header bytes the key wrap authenticates (everything before the wrap nonce) */
export const WRAP_AAD_BYTES = 64;

/** How the content key is wrapped. */
export type KeySlot =
  | { kind: 'passphrase'; kdf: KdfParams }
  | { kind: 'master'; keyId: string };

export type KdfParams =
  | { id: 'argon2id'; memoryKiB: number; passes: number; parallelism: number; salt: Buffer }
  | { id: 'scrypt'; log2N: number; r: number; p: number; salt: Buffer };

export interface EnvelopeHeader {
  version: number;
  fileId: Buffer;
  slot: KeySlot;
  wrapNonce: Buffer;
  /** the content key encrypted under the key-encryption key (32 bytes) */
  wrappedKey: Buffer;
  wrapTag: Buffer;
}

const KIND_PASSPHRASE = 1;
const KIND_MASTER = 2;
const KDF_ARGON2ID = 1;
const KDF_SCRYPT = 2;
/** bounds on KDF parameters read from a file (a hostile header must not exhaust memory) */
export const KDF_LIMITS = {
  argon2id: { memoryKiB: [8, 4 * 1024 * 1024], passes: [1, 64], parallelism: [1, 16] },
  scrypt: { log2N: [1, 22], r: [1, 32], p: [1, 16] },
} as const;
const MAX_KEY_ID_BYTES = 32;

/** Why an envelope was refused: named in `details.reason` and in the message. */
export type EnvelopeProblem =
  | 'not-envelope'
  | 'unknown-version'
  | 'corrupted-header'
  | 'bad-size'
  | 'truncated'
  | 'extended'
  | 'segment-misplaced'
  | 'segment-corrupted'
  | 'header-mismatch'
  | 'wrong-key';

export function envelopeError(reason: EnvelopeProblem, message: string, details: Record<string, unknown> = {}): TachyonError {
  if (reason === 'wrong-key') return new TachyonError('WRONG_KEY', message, { details: { reason, ...details } });
  return new TachyonError('ENVELOPE_INVALID', message, { details: { reason, ...details }, publicMessage: `The encrypted file is invalid: ${message}` });
}

/** Number of segments of a plaintext of `plain` bytes (an empty file has one empty segment). */
export function segmentCount(plain: number): number {
  return plain === 0 ? 1 : Math.ceil(plain / SEGMENT_PLAIN);
}

/** Envelope size for a plaintext size: a pure function. */
export function envelopeSize(plain: number): number {
  return HEADER_BYTES + plain + segmentCount(plain) * SEGMENT_OVERHEAD;
}

/** Plaintext size for an envelope size, or undefined when no plaintext has that envelope size. */
export function plaintextSize(env: number): number | undefined {
  if (!Number.isSafeInteger(env) || env < HEADER_BYTES + SEGMENT_OVERHEAD) return undefined;
  const body = env - HEADER_BYTES;
  const full = Math.floor(body / SEGMENT_BYTES);
  const rest = body % SEGMENT_BYTES;
  if (rest === 0) return full * SEGMENT_PLAIN; // last segment full
  if (rest < SEGMENT_OVERHEAD) return undefined;
  if (rest === SEGMENT_OVERHEAD && full > 0) return undefined; // an empty final segment only in an empty file
  return full * SEGMENT_PLAIN + rest - SEGMENT_OVERHEAD;
}

/** Envelope offset where segment `i` starts. */
export function segmentOffset(i: number): number {
  return HEADER_BYTES + i * SEGMENT_BYTES;
}

/** Plaintext bytes in segment `i` of a file of `plain` bytes. */
export function segmentPlainLength(i: number, plain: number): number {
  const n = segmentCount(plain);
  return i < n - 1 ? SEGMENT_PLAIN : plain - (n - 1) * SEGMENT_PLAIN;
}

/** The associated data of segment `i`: header bytes 0..32, index (u64 BE), final flag (u8). */
export function segmentAad(header: Buffer, index: number, final: boolean, out: Buffer = Buffer.allocUnsafe(BOUND_HEADER_BYTES + 9)): Buffer {
  header.copy(out, 0, 0, BOUND_HEADER_BYTES);
  out.writeBigUInt64BE(BigInt(index), BOUND_HEADER_BYTES);
  out[BOUND_HEADER_BYTES + 8] = final ? 1 : 0;
  return out;
}

function headerCheck(b: Buffer): Buffer {
  return createHash('sha256').update(b.subarray(0, 124)).digest().subarray(0, 4);
}

/** Serialises a header (128 bytes). */
export function encodeHeader(h: EnvelopeHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(b, 0);
  b[8] = h.version;
  b[9] = h.slot.kind === 'passphrase' ? KIND_PASSPHRASE : KIND_MASTER;
  b.writeUInt16BE(HEADER_BYTES, 10);
  b.writeUInt32BE(SEGMENT_PLAIN, 12);
  if (h.fileId.length !== FILE_ID_BYTES) throw new TachyonError('INTERNAL', 'file id must be 16 bytes');
  h.fileId.copy(b, 16);
  if (h.slot.kind === 'passphrase') {
    const k = h.slot.kdf;
    if (k.salt.length !== SALT_BYTES) throw new TachyonError('INTERNAL', 'KDF salt must be 16 bytes');
    if (k.id === 'argon2id') {
      b[32] = KDF_ARGON2ID;
      b.writeUInt32BE(k.memoryKiB, 36);
      b.writeUInt32BE(k.passes, 40);
      b.writeUInt32BE(k.parallelism, 44);
    } else {
      b[32] = KDF_SCRYPT;
      b.writeUInt32BE(k.log2N, 36);
      b.writeUInt32BE(k.r, 40);
      b.writeUInt32BE(k.p, 44);
    }
    k.salt.copy(b, 48);
  } else {
    const id = Buffer.from(h.slot.keyId, 'utf8');
    if (id.length === 0 || id.length > MAX_KEY_ID_BYTES || id.includes(0)) throw new TachyonError('INTERNAL', 'master key id must be 1..32 bytes without NUL');
    id.copy(b, 32);
  }
  if (h.wrapNonce.length !== NONCE_BYTES || h.wrappedKey.length !== 32 || h.wrapTag.length !== TAG_BYTES) {
    throw new TachyonError('INTERNAL', 'bad key wrap field sizes');
  }
  h.wrapNonce.copy(b, 64);
  h.wrappedKey.copy(b, 76);
  h.wrapTag.copy(b, 108);
  headerCheck(b).copy(b, 124);
  return b;
}

const inRange = (v: number, [lo, hi]: readonly [number, number]): boolean => v >= lo && v <= hi;

/**
 * Parses and checks a header. Refuses (ENVELOPE_INVALID with details.reason) anything
 * that is not an envelope, an unknown version, and a header whose check value, fixed
 * fields or KDF parameters are wrong ('corrupted-header').
 */
export function decodeHeader(b: Buffer): EnvelopeHeader {
  if (b.length < MAGIC.length || !b.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw envelopeError('not-envelope', 'not a Tachyon encrypted file (no TACHYENC magic)');
  }
  if (b.length < HEADER_BYTES) throw envelopeError('truncated', `truncated header (${b.length} of ${HEADER_BYTES} bytes)`);
  const version = b[8]!;
  if (version !== FORMAT_VERSION) throw envelopeError('unknown-version', `unknown format version ${version} (this Tachyon reads version ${FORMAT_VERSION})`, { version });
  if (!headerCheck(b).equals(b.subarray(124, 128))) throw envelopeError('corrupted-header', 'corrupted header (check value mismatch)');
  const bad = (what: string): TachyonError => envelopeError('corrupted-header', `corrupted header (${what})`);
  if (b.readUInt16BE(10) !== HEADER_BYTES) throw bad('header length');
  if (b.readUInt32BE(12) !== SEGMENT_PLAIN) throw bad('segment size');
  let slot: KeySlot;
  const kind = b[9];
  if (kind === KIND_PASSPHRASE) {
    const id = b[32];
    if (b[33] !== 0 || b[34] !== 0 || b[35] !== 0) throw bad('reserved bytes');
    const [x, y, z] = [b.readUInt32BE(36), b.readUInt32BE(40), b.readUInt32BE(44)];
    const salt = Buffer.from(b.subarray(48, 64));
    if (id === KDF_ARGON2ID) {
      const L = KDF_LIMITS.argon2id;
      if (!inRange(x, L.memoryKiB) || !inRange(y, L.passes) || !inRange(z, L.parallelism) || x < 8 * z) throw bad('argon2id parameters out of range');
      slot = { kind: 'passphrase', kdf: { id: 'argon2id', memoryKiB: x, passes: y, parallelism: z, salt } };
    } else if (id === KDF_SCRYPT) {
      const L = KDF_LIMITS.scrypt;
      if (!inRange(x, L.log2N) || !inRange(y, L.r) || !inRange(z, L.p)) throw bad('scrypt parameters out of range');
      slot = { kind: 'passphrase', kdf: { id: 'scrypt', log2N: x, r: y, p: z, salt } };
    } else throw bad(`unknown KDF ${id}`);
  } else if (kind === KIND_MASTER) {
    const raw = b.subarray(32, 64);
    const end = raw.indexOf(0);
    const idBytes = raw.subarray(0, end < 0 ? raw.length : end);
    if (idBytes.length === 0 || raw.subarray(idBytes.length).some((x) => x !== 0)) throw bad('master key id');
    slot = { kind: 'master', keyId: idBytes.toString('utf8') };
  } else throw bad(`unknown key slot kind ${kind}`);
  return {
    version,
    fileId: Buffer.from(b.subarray(16, 32)),
    slot,
    wrapNonce: Buffer.from(b.subarray(64, 76)),
    wrappedKey: Buffer.from(b.subarray(76, 108)),
    wrapTag: Buffer.from(b.subarray(108, 124)),
  };
}
