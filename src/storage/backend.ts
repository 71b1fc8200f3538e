/**
 * The `StorageBackend` seam: what the rest of Tachyon may do with stored files, whatever
 * holds them (a local directory, memory, later an object store). Paths are
 * backend-relative POSIX paths ('' or '/' is the backend's root); every path passes
 * {@link normalizeStoragePath} before a backend touches it. Every failure is a
 * TachyonError with a catalogue code: NOT_FOUND, EXISTS, IS_DIRECTORY, PERMISSION,
 * DISK_FULL, IO, PATH_INVALID (with `details.reason`), USAGE for bad options and
 * INTERNAL for misuse of a closed writer.
 */
import { Readable } from 'node:stream';
import { TachyonError } from '../core/errors.js';

/** What a backend can do natively; callers adapt (for example buffer parts) when it cannot. */
export interface StorageCapabilities {
  /** `read(offset, length)` costs about `length`, not the whole object. */
  readonly rangedReads: boolean;
  /** A writer accepts chunks in any order cheaply (the seam always accepts them). */
  readonly outOfOrderWrites: boolean;
  /** `rename` is atomic (a directory rename is one operation, not copy + delete). */
  readonly atomicRename: boolean;
  /** Smallest part an upload may use (object stores' multipart minimum), if any. */
  readonly multipartMinPartBytes?: number;
}

export type StorageEntryKind = 'file' | 'directory';

export interface StorageEntry {
  /** Last component ('' for the root). */
  readonly name: string;
  /** Normalized backend-relative path (no leading '/'; '' for the root). */
  readonly path: string;
  readonly kind: StorageEntryKind;
  /** Bytes for a file, 0 for a directory. */
  readonly size: number;
  /** Modification time, milliseconds since the Unix epoch. */
  readonly mtimeMs: number;
}

export type ListSort = 'name' | 'size' | 'mtime';

export interface ListOptions {
  /** Entries to skip (default 0). */
  readonly offset?: number;
  /** Entries to return at most (default and maximum {@link MAX_LIST_LIMIT}). */
  readonly limit?: number;
  /** Sort key (default 'name'); ties are broken by name. */
  readonly sort?: ListSort;
  /** Default 'asc'. */
  readonly order?: 'asc' | 'desc';
}

export interface ListPage {
  /** The requested page, sorted. */
  readonly entries: StorageEntry[];
  /** How many entries the directory holds in all. */
  readonly total: number;
}

/** An open file for ranged reads. */
export interface ReadHandle {
  /** Size when opened. */
  readonly size: number;
  /** Reads up to `length` bytes at `offset` (fewer only at the end of the file). */
  read(offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

export interface WriterOptions {
  /** Replace an existing file at commit (never a directory). Default false: EXISTS. */
  readonly overwrite?: boolean;
  /**
   * The committed file's modification time (ms since the epoch), for example the
   * sender's mtime so that `-k attrs` resume sees it; default: the time of the commit.
   */
  readonly mtimeMs?: number;
}

/**
 * Receives a file of a known size in chunks, in any order. Nothing is visible under the
 * final name before `commit()`, which publishes atomically and fails (IO,
 * `details.reason: 'incomplete'`) unless every byte was written; `abort()` leaves nothing
 * behind. After either, the writer refuses further writes and commits (INTERNAL);
 * `abort()` after `commit()` or a second `abort()` is a no-op.
 */
export interface ChunkWriter {
  readonly path: string;
  readonly size: number;
  write(offset: number, data: Uint8Array): Promise<void>;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

export interface StorageBackend {
  readonly capabilities: StorageCapabilities;
  /** NOT_FOUND if nothing is there. */
  stat(path: string): Promise<StorageEntry>;
  /** One page of a directory. NOT_FOUND if missing or not a directory. */
  list(dir: string, options?: ListOptions): Promise<ListPage>;
  /** NOT_FOUND if missing; IS_DIRECTORY for a directory. */
  openRead(path: string): Promise<ReadHandle>;
  /**
   * A writer for a file of `size` bytes. The parent must exist (NOT_FOUND); a directory
   * at `path` is IS_DIRECTORY; an existing file is EXISTS unless `overwrite` (checked
   * again at commit).
   */
  createWriter(path: string, size: number, options?: WriterOptions): Promise<ChunkWriter>;
  /** EXISTS if anything is there; NOT_FOUND for a missing parent unless `recursive`. */
  mkdir(path: string, options?: { readonly recursive?: boolean }): Promise<void>;
  /**
   * Moves a file or directory. The destination's parent must exist (NOT_FOUND). An
   * existing destination is EXISTS unless `overwrite` and both are files. Moving a
   * directory into itself is PATH_INVALID; the root cannot be moved (PERMISSION).
   */
  rename(from: string, to: string, options?: { readonly overwrite?: boolean }): Promise<void>;
  /**
   * Removes a file or an empty directory; a non-empty one is IS_DIRECTORY (reason
   * 'not-empty') unless `recursive`. The root cannot be removed (PERMISSION).
   */
  remove(path: string, options?: { readonly recursive?: boolean }): Promise<void>;
}

export const MAX_LIST_LIMIT = 10_000;
export const MAX_PATH_BYTES = 4096;
export const MAX_COMPONENT_BYTES = 255;
/** Names backends reserve for their own temporary files; refused in every path. */
export const RESERVED_PREFIX = '.tachyon.part.';

function refuse(path: string, reason: string): TachyonError {
  return new TachyonError('PATH_INVALID', `storage path refused (${reason}): ${JSON.stringify(path.slice(0, 200))}`, {
    details: { reason },
  });
}

/**
 * Validates a backend-relative path and returns it normalized: components joined by
 * '/', no leading or trailing '/', '' for the root. A leading '/' means the backend's
 * root; empty components are dropped. Refused (PATH_INVALID, `details.reason`): non
 * strings, NUL and control characters, backslashes, '.' and '..' components (refused,
 * not clamped), invalid UTF-16 (lone surrogates), more than 4096 bytes in all or 255 in
 * a component, and names starting with the reserved temporary-file prefix.
 */
export function normalizeStoragePath(path: unknown): string {
  if (typeof path !== 'string') throw refuse(String(path), 'not-a-string');
  if (Buffer.byteLength(path, 'utf8') > MAX_PATH_BYTES) throw refuse(path, 'too-long');
  if (path.includes('\0')) throw refuse(path, 'nul');
  // eslint-disable-next-line no-control-regex
  if (/[\u0001-\u001f\u007f-\u009f]/u.test(path)) throw refuse(path, 'control-character');
  if (!isWellFormed(path)) throw refuse(path, 'invalid-unicode');
  if (path.includes('\\')) throw refuse(path, 'backslash');
  const parts: string[] = [];
  for (const part of path.split('/')) {
    if (part === '') continue;
    if (part === '.' || part === '..') throw refuse(path, 'dot-component');
    if (Buffer.byteLength(part, 'utf8') > MAX_COMPONENT_BYTES) throw refuse(path, 'component-too-long');
    if (part.startsWith(RESERVED_PREFIX)) throw refuse(path, 'reserved-name');
    parts.push(part);
  }
  return parts.join('/');
}

/** False for strings holding a lone surrogate (or U+FFFD, the mark of a failed decode). */
function isWellFormed(s: string): boolean {
  return !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]|\ufffd/.test(s);
}

/** The parent of a normalized path ('' for top-level entries and the root). */
export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

/** The last component of a normalized path. */
export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** Validates list options and applies them to all of a directory's entries. */
export function pageEntries(all: StorageEntry[], options: ListOptions = {}): ListPage {
  const offset = options.offset ?? 0;
  const limit = options.limit ?? MAX_LIST_LIMIT;
  const sort = options.sort ?? 'name';
  const order = options.order ?? 'asc';
  if (!Number.isSafeInteger(offset) || offset < 0) throw new TachyonError('USAGE', `list: bad offset ${String(offset)}`);
  if (!Number.isSafeInteger(limit) || limit < 0 || limit > MAX_LIST_LIMIT) {
    throw new TachyonError('USAGE', `list: bad limit ${String(limit)} (0..${MAX_LIST_LIMIT})`);
  }
  if (sort !== 'name' && sort !== 'size' && sort !== 'mtime') throw new TachyonError('USAGE', `list: bad sort ${String(sort)}`);
  if (order !== 'asc' && order !== 'desc') throw new TachyonError('USAGE', `list: bad order ${String(order)}`);
  const byName = (a: StorageEntry, b: StorageEntry): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const key = sort === 'size' ? (e: StorageEntry) => e.size : sort === 'mtime' ? (e: StorageEntry) => e.mtimeMs : null;
  const sign = order === 'asc' ? 1 : -1;
  const sorted = [...all].sort((a, b) => sign * ((key === null ? 0 : key(a) - key(b)) || byName(a, b)));
  return { entries: sorted.slice(offset, offset + limit), total: all.length };
}

/** Checks a chunk against the writer's size (USAGE when outside). */
export function checkChunk(path: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > size) {
    throw new TachyonError('USAGE', `write to ${path}: chunk [${offset}, ${offset + length}) outside [0, ${size})`);
  }
}

/** Checks a writer's declared size (USAGE unless a safe non-negative integer). */
export function checkSize(path: string, size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new TachyonError('USAGE', `writer for ${path}: bad size ${String(size)}`);
}

/** Checks a writer's requested mtime (USAGE unless a finite, non-negative number or absent). */
export function checkMtime(path: string, mtimeMs: number | undefined): void {
  if (mtimeMs !== undefined && (!Number.isFinite(mtimeMs) || mtimeMs < 0)) {
    throw new TachyonError('USAGE', `writer for ${path}: bad mtime ${String(mtimeMs)}`);
  }
}

/** Checks a read range (USAGE unless non-negative safe integers). */
export function checkRange(path: string, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new TachyonError('USAGE', `read of ${path}: bad range ${String(offset)}+${String(length)}`);
  }
}

/** Which byte ranges of a file have been written: sorted, disjoint, non-adjacent half-open intervals. */
export class CoverageSet {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];

  add(start: number, end: number): void {
    if (end <= start) return;
    // first interval whose end reaches `start` (touching intervals merge)
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.ends[mid] as number) < start) lo = mid + 1;
      else hi = mid;
    }
    let s = start;
    let e = end;
    let j = lo;
    while (j < this.starts.length && (this.starts[j] as number) <= e) {
      s = Math.min(s, this.starts[j] as number);
      e = Math.max(e, this.ends[j] as number);
      j++;
    }
    this.starts.splice(lo, j - lo, s);
    this.ends.splice(lo, j - lo, e);
  }

  /** True when [0, size) is written (always for size 0). */
  covers(size: number): boolean {
    if (size === 0) return true;
    return this.starts.length === 1 && this.starts[0] === 0 && (this.ends[0] as number) >= size;
  }
}

/**
 * A Node Readable over `length` bytes of an open handle from `offset` (default: to the
 * end), read `chunkBytes` at a time on demand. It does not close the handle.
 */
export function readRange(
  handle: ReadHandle,
  options: { readonly offset?: number; readonly length?: number; readonly chunkBytes?: number } = {},
): Readable {
  const start = options.offset ?? 0;
  const end = options.length === undefined ? handle.size : Math.min(handle.size, start + options.length);
  const chunk = options.chunkBytes ?? 256 * 1024;
  checkRange('range', start, end > start ? end - start : 0);
  if (!Number.isSafeInteger(chunk) || chunk <= 0) throw new TachyonError('USAGE', `readRange: bad chunk size ${String(chunk)}`);
  let pos = start;
  return new Readable({
    highWaterMark: chunk,
    read(): void {
      if (pos >= end) {
        this.push(null);
        return;
      }
      const n = Math.min(chunk, end - pos);
      handle.read(pos, n).then(
        (buf) => {
          if (buf.length === 0) {
            this.push(null); // the file shrank
            return;
          }
          pos += buf.length;
          this.push(buf);
        },
        (err: unknown) => this.destroy(err instanceof Error ? err : new Error(String(err))),
      );
    },
  });
}

/** The error a commit with unwritten bytes fails with. */
export function incomplete(path: string): TachyonError {
  return new TachyonError('IO', `commit of ${path}: not every byte was written`, { details: { reason: 'incomplete' } });
}

/** The error a closed writer answers with. */
export function writerClosed(path: string, state: string): TachyonError {
  return new TachyonError('INTERNAL', `writer for ${path} is ${state}`);
}
