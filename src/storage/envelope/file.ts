/**
 * Decrypting an envelope file on local disk, fast and safe: the plaintext goes to a
 * fresh temporary file beside the destination (O_EXCL, no symbolic link followed, mode
 * 0600) and is published under the final name only after every segment authenticated;
 * on any failure the temporary file is removed, so no partial plaintext ever appears
 * under the final name. Reads and writes are large (about 4 MiB) and overlap with the
 * decryption (double-buffered, on libuv's thread pool).
 */
import { closeSync, constants as fsc, fdatasyncSync, fstatSync, linkSync, openSync, read as fsRead, readSync, renameSync, unlinkSync, writeSync, writev as fsWritev } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { TachyonError, toTachyonError } from '../../core/errors.js';
import { checkedPlainSize, diagnoseSegment, openEnvelope, type OpenedEnvelope } from './codec.js';
import { BOUND_HEADER_BYTES, decodeHeader, envelopeError, HEADER_BYTES, SEGMENT_BYTES, SEGMENT_PLAIN, segmentCount, segmentOffset, segmentPlainLength, type EnvelopeHeader } from './format.js';
import { rewrapHeader } from './keys.js';
import { openSegment } from './segment.js';

/** segments per read: 64 × 64 KiB ≈ 4 MiB */
const BATCH_SEGMENTS = 64;

/** Finds the key-encryption key for a header (passphrase KDF, or a master key). */
export type KekResolver = (header: EnvelopeHeader) => Promise<Buffer>;

export interface DecryptFileResult {
  /** plaintext bytes written */
  bytes: number;
  /** envelope bytes read */
  envelopeBytes: number;
}

function readFully(fd: number, b: Buffer, len: number, pos: number): number {
  let got = 0;
  while (got < len) {
    const n = readSync(fd, b, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

const readAsync = (fd: number, b: Buffer, len: number, pos: number): Promise<number> =>
  new Promise((resolve, reject) => {
    let got = 0;
    const step = (): void =>
      fsRead(fd, b, got, len - got, pos + got, (err, n) => {
        if (err) return reject(toTachyonError(err, 'IO'));
        got += n;
        if (n === 0 || got === len) resolve(got);
        else step();
      });
    step();
  });

const writevAsync = (fd: number, bufs: Buffer[], pos: number): Promise<void> =>
  new Promise((resolve, reject) => {
    const step = (list: Buffer[], at: number): void =>
      fsWritev(fd, list, at, (err, n) => {
        if (err) return reject(toTachyonError(err, 'IO'));
        let left = n;
        const rest: Buffer[] = [];
        for (const b of list) {
          if (left >= b.length) left -= b.length;
          else {
            rest.push(b.subarray(left));
            left = 0;
          }
        }
        if (rest.length === 0) resolve();
        else step(rest, at + n);
      });
    step(bufs, pos);
  });

/** The temporary name beside `final` that a decryption writes to. */
export function decryptTempPath(final: string): string {
  return path.join(path.dirname(final), `.${path.basename(final)}.tachyon-decrypt-${randomBytes(6).toString('hex')}`);
}

/** Reads and opens the header of an envelope file descriptor. */
export async function openEnvelopeFd(fd: number, kek: KekResolver): Promise<{ env: OpenedEnvelope; plain: number; size: number }> {
  const size = fstatSync(fd).size;
  const hb = Buffer.alloc(HEADER_BYTES);
  const n = readFully(fd, hb, HEADER_BYTES, 0);
  const header = decodeHeader(hb.subarray(0, n));
  const k = await kek(header);
  const env = openEnvelope(hb, k);
  return { env, plain: checkedPlainSize(size), size };
}

/**
 * Decrypts the envelope file `src` to `dest`. Refuses an existing `dest` (EXISTS) unless
 * `overwrite`. Every problem is a TachyonError naming it (ENVELOPE_INVALID with
 * details.reason, WRONG_KEY, NOT_FOUND, …).
 */
export async function decryptFile(src: string, dest: string, kek: KekResolver, opts: { overwrite?: boolean; durable?: boolean } = {}): Promise<DecryptFileResult> {
  let fd: number;
  try {
    fd = openSync(src, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    throw toTachyonError(err, 'IO');
  }
  let out = -1;
  let temp: string | undefined;
  try {
    const { env, plain, size } = await openEnvelopeFd(fd, kek);
    const n = segmentCount(plain);
    temp = decryptTempPath(dest);
    try {
      out = openSync(temp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    } catch (err) {
      throw toTachyonError(err, 'IO');
    }
    const bufs = [Buffer.allocUnsafeSlow(BATCH_SEGMENTS * SEGMENT_BYTES), Buffer.allocUnsafeSlow(BATCH_SEGMENTS * SEGMENT_BYTES)];
    const aad = Buffer.allocUnsafe(BOUND_HEADER_BYTES + 9);
    const batchLen = (first: number): number => {
      const last = Math.min(n, first + BATCH_SEGMENTS) - 1;
      return segmentOffset(last) + segmentPlainLength(last, plain) + SEGMENT_BYTES - SEGMENT_PLAIN - segmentOffset(first);
    };
    const readBatch = async (first: number, b: Buffer): Promise<Buffer> => {
      const len = batchLen(first);
      const got = await readAsync(fd, b, len, segmentOffset(first));
      if (got !== len) throw envelopeError('truncated', 'truncated: the file shrank while being decrypted');
      return b.subarray(0, len);
    };
    let pending: Promise<Buffer> | undefined = n > 0 ? readBatch(0, bufs[0]!) : undefined;
    let writing: Promise<void> = Promise.resolve();
    for (let first = 0, k = 0; first < n; first += BATCH_SEGMENTS, k ^= 1) {
      const data = await pending!;
      const next = first + BATCH_SEGMENTS;
      pending = next < n ? readBatch(next, bufs[k ^ 1]!) : undefined;
      const plains: Buffer[] = [];
      for (let i = first, at = 0; i < Math.min(n, next); i++) {
        const sealedLen = segmentPlainLength(i, plain) + SEGMENT_BYTES - SEGMENT_PLAIN;
        const sealed = data.subarray(at, at + sealedLen);
        const p = openSegment(env.keys, env.headerBytes, i, i === n - 1, sealed, aad);
        if (!p) {
          throw diagnoseSegment(env, i, n, Buffer.from(sealed), (j) => {
            if (j >= n) return false;
            const l = segmentPlainLength(j, plain) + SEGMENT_BYTES - SEGMENT_PLAIN;
            const b = Buffer.allocUnsafe(l);
            return readFully(fd, b, l, segmentOffset(j)) === l && openSegment(env.keys, env.headerBytes, j, j === n - 1, b) !== undefined;
          });
        }
        plains.push(p);
        at += sealedLen;
      }
      await writing;
      writing = writevAsync(out, plains, first * SEGMENT_PLAIN);
    }
    await writing;
    if (opts.durable !== false) fdatasyncSync(out);
    closeSync(out);
    out = -1;
    try {
      if (opts.overwrite) renameSync(temp, dest);
      else {
        linkSync(temp, dest);
        unlinkSync(temp);
      }
    } catch (err) {
      throw toTachyonError(err, 'IO');
    }
    temp = undefined;
    return { bytes: plain, envelopeBytes: size };
  } catch (err) {
    throw err instanceof TachyonError ? err : toTachyonError(err, 'IO');
  } finally {
    closeSync(fd);
    if (out >= 0) closeSync(out);
    if (temp !== undefined) {
      try {
        unlinkSync(temp);
      } catch {
        // never created
      }
    }
  }
}

/** What re-wrapping one file did. */
export type RewrapOutcome = 'rewrapped' | 'current' | 'not-master';

/**
 * Re-wraps the content key of a server-side (master-key) envelope file under the
 * provider's current key, in place: only the 128-byte header is rewritten (one positioned
 * write at offset 0, then fdatasync); the segments are untouched, since they bind the file
 * id, not the wrapped key. A file already under the current key is left alone; a
 * passphrase (client-side) envelope is not the server's to re-key.
 */
export async function rewrapEnvelopeFile(
  file: string,
  keys: { currentKeyId(): string; key(id: string): Promise<Buffer> },
): Promise<RewrapOutcome> {
  let fd: number;
  try {
    fd = openSync(file, fsc.O_RDWR | fsc.O_NOFOLLOW);
  } catch (err) {
    throw toTachyonError(err, 'IO');
  }
  try {
    const hb = Buffer.alloc(HEADER_BYTES);
    const n = readFully(fd, hb, HEADER_BYTES, 0);
    const h = decodeHeader(hb.subarray(0, n));
    if (h.slot.kind !== 'master') return 'not-master';
    const current = keys.currentKeyId();
    if (h.slot.keyId === current) return 'current';
    const next = rewrapHeader(hb, h, await keys.key(h.slot.keyId), await keys.key(current), { kind: 'master', keyId: current });
    let done = 0;
    while (done < next.length) done += writeSync(fd, next, done, next.length - done, done);
    fdatasyncSync(fd);
    return 'rewrapped';
  } finally {
    closeSync(fd);
  }
}
