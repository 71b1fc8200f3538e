/**
 * Resume support on local disk: the names of a file's partial copy and of its resume
 * record, reading and writing the record, and hashing a file's prefix (and sampled
 * ranges of it) without blocking the event loop.
 *
 * The partial file `.NAME.tachyon-partial` sits beside the final name. When resume is
 * on (`-k attrs|sparse|full`), an interrupted transfer keeps it, with the record
 * `.NAME.tachyon-partial.json`: `{"v":1,"size":…,"mtimeMs":…,"verified":…}` — the
 * source's size and modification time, and how many bytes from the start of the
 * partial file were written (the prefix a later run may keep). The record is advisory:
 * the whole-file SHA-256 is still compared at the end, so a wrong record costs a
 * retransfer, never a wrong file.
 */
import { constants, openSync, closeSync, read as fsRead, readSync, writeSync, unlinkSync } from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import path from 'node:path';
import { toTachyonError } from '../core/errors.js';
import { createTempFile } from './local-file.js';
import type { ResumeRecord } from './policy.js';

export const PARTIAL_SUFFIX = '.tachyon-partial';
export const RECORD_SUFFIX = '.tachyon-partial.json';
/** a record is tiny; anything longer is not one */
const MAX_RECORD_BYTES = 1024;

export function partialPath(final: string): string {
  return path.join(path.dirname(final), `.${path.basename(final)}${PARTIAL_SUFFIX}`);
}

export function recordPath(final: string): string {
  return path.join(path.dirname(final), `.${path.basename(final)}${RECORD_SUFFIX}`);
}

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;

/** Parses a resume record; anything malformed is `undefined` (the file is then sent from the start). */
export function parseRecord(text: string): ResumeRecord | undefined {
  if (text.length > MAX_RECORD_BYTES) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length !== 4 || o.v !== 1) return undefined;
  const { size, mtimeMs, verified } = o;
  if (!isCount(size) || !isCount(verified) || verified > size) return undefined;
  if (typeof mtimeMs !== 'number' || !Number.isFinite(mtimeMs) || mtimeMs < 0) return undefined;
  return { size, mtimeMs, verified };
}

export function formatRecord(r: ResumeRecord): string {
  return JSON.stringify({ v: 1, size: r.size, mtimeMs: r.mtimeMs, verified: r.verified });
}

/** Opens a file for reading, never through a symbolic link (the server passes its jail's pinned open). */
export type ReadOpener = (abs: string) => number;

export const openNoFollow: ReadOpener = (abs) => openSync(abs, constants.O_RDONLY | constants.O_NOFOLLOW);

/** Reads the record beside `final` (never through a symbolic link); undefined if absent or invalid. */
export function readRecord(final: string, open: ReadOpener = openNoFollow): ResumeRecord | undefined {
  let fd: number;
  try {
    fd = open(recordPath(final));
  } catch {
    return undefined;
  }
  try {
    const b = Buffer.allocUnsafe(MAX_RECORD_BYTES + 1);
    const n = readSync(fd, b, 0, b.length, 0);
    return parseRecord(b.subarray(0, n).toString('utf8'));
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes the record beside `final` as a fresh file (mode 0600; whatever had that name,
 * a link included, is replaced, never followed). `create` is how temporary files are
 * created (the server's jail pins it). Best effort: false when it could not be written.
 */
export function writeRecord(final: string, r: ResumeRecord, create: (p: string) => number = createTempFile): boolean {
  try {
    const fd = create(recordPath(final));
    try {
      const b = Buffer.from(formatRecord(r));
      writeSync(fd, b, 0, b.length, 0);
    } finally {
      closeSync(fd);
    }
    return true;
  } catch {
    return false;
  }
}

export function removeRecord(final: string): void {
  try {
    unlinkSync(recordPath(final));
  } catch {
    // absent
  }
}

export interface HashedRanges {
  /** SHA-256 state after [0, end) (not finalized), when the prefix was asked for */
  prefix: Hash | undefined;
  /** digests of the asked ranges, in order */
  sums: { at: number; len: number; sha256: string }[];
}

const CHUNK = 1 << 20;

/**
 * Hashes a file asynchronously (reads on the thread pool), 1 MiB per read: with `prefix`, all of [0, end) in order
 * (the SHA-256 state that a resumed transfer continues) and the ranges on the way;
 * without, only the ranges (positioned reads). Ranges must lie within [0, end), sorted and
 * not overlapping (see policy.checkRanges). Never follows a symbolic link. Fails with a
 * TachyonError (IO, NOT_FOUND, …), also when the file is shorter than `end`.
 */
export async function hashRanges(
  file: string,
  end: number,
  ranges: readonly { at: number; len: number }[],
  prefix: boolean,
  open: ReadOpener = openNoFollow,
): Promise<HashedRanges> {
  let fd: number;
  try {
    fd = open(file);
  } catch (err) {
    throw toTachyonError(err, 'IO');
  }
  const readSome = (b: Buffer, at: number, len: number, pos: number): Promise<number> =>
    new Promise((resolve, reject) => fsRead(fd, b, at, len, pos, (err, n) => (err ? reject(toTachyonError(err, 'IO')) : resolve(n))));
  try {
    const buf = Buffer.allocUnsafe(Math.max(1, Math.min(CHUNK, end)));
    const readAt = async (pos: number, len: number): Promise<Buffer> => {
      let got = 0;
      while (got < len) {
        const bytesRead = await readSome(buf, got, len - got, pos + got);
        if (bytesRead === 0) throw toTachyonError(Object.assign(new Error(`${file} is shorter than ${end} bytes`), { code: 'EIO' }), 'IO');
        got += bytesRead;
      }
      return buf.subarray(0, len);
    };
    const sums: HashedRanges['sums'] = [];
    if (!prefix) {
      for (const r of ranges) {
        const h = createHash('sha256');
        for (let pos = r.at; pos < r.at + r.len; pos += CHUNK) h.update(await readAt(pos, Math.min(CHUNK, r.at + r.len - pos)));
        sums.push({ at: r.at, len: r.len, sha256: h.digest('hex') });
      }
      return { prefix: undefined, sums };
    }
    const whole = createHash('sha256');
    let ri = 0;
    let rh: Hash | undefined;
    for (let pos = 0; pos < end; ) {
      const n = Math.min(CHUNK, end - pos);
      const chunk = await readAt(pos, n);
      whole.update(chunk);
      // feed the ranges that overlap this chunk
      let p = pos;
      while (ri < ranges.length && p < pos + n) {
        const r = ranges[ri]!;
        if (r.at >= pos + n) break;
        const from = Math.max(r.at, p);
        const to = Math.min(r.at + r.len, pos + n);
        if (to > from) {
          rh ??= createHash('sha256');
          rh.update(chunk.subarray(from - pos, to - pos));
        }
        if (r.at + r.len <= pos + n) {
          sums.push({ at: r.at, len: r.len, sha256: (rh ?? createHash('sha256')).digest('hex') });
          rh = undefined;
          ri++;
          p = to;
        } else break;
      }
      pos += n;
    }
    return { prefix: whole, sums };
  } finally {
    closeSync(fd);
  }
}

/** Runs async jobs with bounded concurrency, in submission order. */
export class JobQueue {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  run<T>(job: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const start = (): void => {
        this.running++;
        job().then(resolve, reject).finally(() => {
          this.running--;
          this.waiting.shift()?.();
        });
      };
      if (this.running < this.limit) start();
      else this.waiting.push(start);
    });
  }
}
