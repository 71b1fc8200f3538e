/**
 * Transfers into a StorageBackend (S3 and the like) instead of the local disk: the
 * receiver's BlockSink over the backend's ChunkWriter, and digests of stored ranges for
 * the `compare` decision. The local path keeps its own sink (local-file.ts): these
 * adapters are used only when an account's storage is not a local directory.
 */
import { constants } from 'node:fs';
import { chmod, mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TachyonError, toTachyonError } from '../core/errors.js';
import { MAX_LIST_LIMIT, baseName, parentOf, type ChunkWriter, type StorageBackend, type StorageEntry } from '../storage/backend.js';
import type { BlockSink } from '../transport/session/receiver.js';
import type { ExcludeSet } from './exclude.js';
import type { OutgoingFile } from './roles.js';
import type { Listing } from './sources.js';

/** How a receiving role writes into a storage backend. */
export interface ReceiverStore {
  readonly backend: StorageBackend;
  /** Makes a directory and its parents if missing (the server checks the account's permission). */
  ensureDir(path: string): Promise<void>;
}

/** Out-of-order bytes a StoreSink holds for the digest before it refuses (DISK_FULL, 'buffer-limit'). */
export const MAX_HELD_BYTES = 256 * 1024 * 1024;

/**
 * A received file going into a storage backend. Blocks arrive out of order, through the
 * synchronous BlockSink interface: each is passed on to the backend's writer at once (a
 * copy: the datagram buffer is reused), and the SHA-256 of the whole file is computed as
 * the contiguous prefix grows; blocks beyond the prefix are held (at most
 * {@link MAX_HELD_BYTES}) until it reaches them. The writer is created on the first block
 * (or at `finish()` for an empty file), after its parent directory is ensured. A writer
 * error is kept and thrown by the next `write` (the receiver then fails the session) or by
 * `finish()`. Nothing is visible in the backend before `commit()`; `abort()` (and `close()`
 * before a commit) leaves nothing behind.
 */
export class StoreSink implements BlockSink {
  private writer: ChunkWriter | undefined;
  private opening: Promise<void> | undefined;
  private pendingBlocks: { offset: number; data: Buffer }[] = [];
  private readonly writes = new Set<Promise<void>>();
  private error: TachyonError | undefined;
  private readonly hash: Hash = createHash('sha256');
  private hashed = 0;
  private readonly held = new Map<number, Buffer>();
  private heldBytes = 0;
  private state: 'open' | 'committed' | 'aborted' = 'open';

  constructor(
    private readonly store: ReceiverStore,
    readonly path: string,
    readonly size: number,
    private readonly mtimeMs: number | undefined,
    private readonly maxHeldBytes = MAX_HELD_BYTES,
  ) {}

  private open(): Promise<void> {
    this.opening ??= (async () => {
      try {
        await this.store.ensureDir(parentOf(this.path));
        const w = await this.store.backend.createWriter(this.path, this.size, {
          overwrite: true, // the receiver's policy decided already
          ...(this.mtimeMs !== undefined ? { mtimeMs: this.mtimeMs } : {}),
        });
        if (this.state !== 'open') {
          await w.abort();
          return;
        }
        this.writer = w;
        for (const b of this.pendingBlocks) this.pass(b.offset, b.data);
        this.pendingBlocks = [];
      } catch (err) {
        this.error ??= toTachyonError(err, 'IO');
        this.pendingBlocks = [];
      }
    })();
    return this.opening;
  }

  private pass(offset: number, data: Buffer): void {
    const w = this.writer as ChunkWriter;
    const p = w.write(offset, data).then(
      () => {
        this.writes.delete(p);
      },
      (err: unknown) => {
        this.writes.delete(p);
        this.error ??= toTachyonError(err, 'IO');
      },
    );
    this.writes.add(p);
  }

  write(offset: number, data: Buffer): void {
    if (this.error !== undefined) throw this.error;
    if (this.state !== 'open') return;
    const end = offset + data.length;
    if (offset < 0 || end > this.size) throw new TachyonError('PROTOCOL', `block [${offset}, ${end}) outside ${this.path}`);
    const copy = Buffer.from(data);
    // the digest: hash what extends the prefix, hold what is beyond it
    if (offset <= this.hashed && end > this.hashed) {
      this.hash.update(copy.subarray(this.hashed - offset));
      this.hashed = end;
      for (let next = this.held.get(this.hashed); next !== undefined; next = this.held.get(this.hashed)) {
        this.held.delete(this.hashed);
        this.heldBytes -= next.length;
        this.hash.update(next);
        this.hashed += next.length;
      }
    } else if (offset > this.hashed && !this.held.has(offset)) {
      if (this.heldBytes + copy.length > this.maxHeldBytes) {
        this.error = new TachyonError('DISK_FULL', `${this.path}: more than ${this.maxHeldBytes} bytes out of order`, { details: { reason: 'buffer-limit' } });
        throw this.error;
      }
      this.held.set(offset, copy);
      this.heldBytes += copy.length;
    }
    if (this.writer !== undefined) this.pass(offset, copy);
    else {
      this.pendingBlocks.push({ offset, data: copy });
      void this.open();
    }
  }

  /** Waits for every write and returns the SHA-256 of the whole file (not yet committed). */
  async finish(): Promise<string> {
    await this.open();
    while (this.writes.size > 0) await Promise.all([...this.writes]);
    if (this.error !== undefined) throw this.error;
    if (this.hashed !== this.size) {
      throw new TachyonError('IO', `${this.path}: ${this.size - this.hashed} bytes missing at the end`, { details: { reason: 'incomplete' } });
    }
    return this.hash.digest('hex');
  }

  /** Publishes the file (after `finish()`). */
  async commit(): Promise<void> {
    if (this.writer === undefined) throw this.error ?? new TachyonError('INTERNAL', `${this.path}: no writer to commit`);
    await this.writer.commit();
    this.state = 'committed';
  }

  /** Drops everything written; nothing stays visible. */
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    this.held.clear();
    this.pendingBlocks = [];
    await this.opening?.catch(() => undefined);
    while (this.writes.size > 0) await Promise.all([...this.writes]).catch(() => undefined);
    await this.writer?.abort().catch(() => undefined);
  }

  /** As the local sink's close: anything not committed is aborted (in the background). */
  close(): void {
    void this.abort();
  }
}

/**
 * Digests of ranges of a stored file (the `compare` decision of `--overwrite diff` with
 * `-k sparse|full`), read with ranged reads 1 MiB at a time.
 */
export async function hashStoredRanges(
  backend: StorageBackend,
  path: string,
  ranges: readonly { at: number; len: number }[],
): Promise<{ at: number; len: number; sha256: string }[]> {
  const h = await backend.openRead(path);
  try {
    const out: { at: number; len: number; sha256: string }[] = [];
    for (const r of ranges) {
      const hash = createHash('sha256');
      for (let pos = r.at; pos < r.at + r.len; ) {
        const b = await h.read(pos, Math.min(1 << 20, r.at + r.len - pos));
        if (b.length === 0) throw new TachyonError('IO', `${path} is shorter than ${r.at + r.len} bytes`);
        hash.update(b);
        pos += b.length;
      }
      out.push({ at: r.at, len: r.len, sha256: hash.digest('hex') });
    }
    return out;
  } finally {
    await h.close();
  }
}

// ---- downloads from a storage backend ----------------------------------------------------

/** Bytes per ranged read when an object is spooled, and reads in flight. */
const SPOOL_READ_BYTES = 8 * 1024 * 1024;
const SPOOL_READS = 4;
/** Objects spooled at the same time (in announcement order). */
const SPOOL_FILES = 2;

/**
 * Downloads from a storage backend. The transport reads blocks synchronously
 * (`BlockSource.read`), so each object is first fetched with ranged reads (8 MiB, four in
 * flight) into a private spool file (mode 0600 in a 0700 directory of its own), which the
 * local sender then reads as usual; the file's blocks go out once its spool is complete,
 * and the spool is removed as soon as the file is settled. `prepare` rewrites `f.abs` from
 * the object's storage path to the spool file. Objects are spooled in the order the role
 * asks, at most two at a time; the spool directory holds at most the files in flight.
 */
export class Spooler {
  private readonly made = new Map<OutgoingFile, Promise<void>>();
  private readonly files = new Set<string>();
  private queue: Promise<void>[] = [];
  private closed = false;

  private constructor(
    private readonly backend: StorageBackend,
    readonly dir: string,
  ) {}

  static async create(backend: StorageBackend, parent = tmpdir()): Promise<Spooler> {
    const dir = await mkdtemp(join(parent, 'tachyon-spool-'));
    await chmod(dir, 0o700);
    return new Spooler(backend, dir);
  }

  prepare = (f: OutgoingFile): Promise<void> => {
    let p = this.made.get(f);
    if (p === undefined) {
      // at most SPOOL_FILES at a time, in order
      const before = this.queue.length >= SPOOL_FILES ? this.queue[this.queue.length - SPOOL_FILES] : undefined;
      p = (async () => {
        await before?.catch(() => undefined);
        await this.spool(f);
      })();
      this.queue.push(p);
      if (this.queue.length > 64) this.queue = this.queue.slice(-SPOOL_FILES);
      this.made.set(f, p);
    }
    return p;
  };

  private async spool(f: OutgoingFile): Promise<void> {
    if (this.closed) throw new TachyonError('CANCELLED', 'the session ended');
    const storagePath = f.abs;
    const h = await this.backend.openRead(storagePath);
    const spool = join(this.dir, `${this.files.size}-${randomBytes(6).toString('hex')}`);
    this.files.add(spool);
    let fh: FileHandle | undefined;
    try {
      if (h.size !== f.size) throw new TachyonError('IO', `${storagePath} changed since it was listed`, { details: { reason: 'changed' } });
      fh = await open(spool, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      const file = fh;
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < f.size && !this.closed) {
          const at = next;
          const len = Math.min(SPOOL_READ_BYTES, f.size - at);
          next += len;
          const b = await h.read(at, len);
          if (b.length !== len) throw new TachyonError('IO', `${storagePath} is shorter than listed`, { details: { reason: 'changed' } });
          let done = 0;
          while (done < len) done += (await file.write(b, done, len - done, at + done)).bytesWritten;
        }
      };
      await Promise.all(Array.from({ length: SPOOL_READS }, worker));
      if (this.closed) throw new TachyonError('CANCELLED', 'the session ended');
      f.abs = spool;
    } catch (err) {
      await rm(spool, { force: true }).catch(() => undefined);
      this.files.delete(spool);
      throw toTachyonError(err, 'IO');
    } finally {
      await fh?.close().catch(() => undefined);
      await h.close();
    }
  }

  release = (f: OutgoingFile): void => {
    if (!this.files.has(f.abs)) return;
    this.files.delete(f.abs);
    void rm(f.abs, { force: true }).catch(() => undefined);
  };

  /** Removes every spool file and the directory (the session ended). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled(this.made.values());
    await rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * The files and empty directories a download sends from a storage backend, as
 * `listSources` does for local files: each source keeps its last component (or, with a
 * source base, its path below the base); directories are walked in name order; exclude
 * patterns prune files and directories. `abs` holds the object's storage path until
 * {@link Spooler.prepare} replaces it. Client paths pass the jail's name checks.
 */
export async function storageListing(
  backend: StorageBackend,
  sources: readonly string[],
  o: { readonly srcBase?: string; readonly exclude?: ExcludeSet; readonly toStorage: (clientPath: string) => string },
): Promise<Listing> {
  const files: OutgoingFile[] = [];
  const dirs: string[] = [];
  const base = o.srcBase === undefined ? undefined : o.toStorage(o.srcBase);
  const listAll = async (dir: string): Promise<StorageEntry[]> => {
    const out: StorageEntry[] = [];
    for (let offset = 0; ; offset += MAX_LIST_LIMIT) {
      const page = await backend.list(dir, { offset, limit: MAX_LIST_LIMIT, sort: 'name' });
      out.push(...page.entries);
      if (offset + page.entries.length >= page.total || page.entries.length === 0) return out;
    }
  };
  const walk = async (dir: string, rel: string): Promise<void> => {
    const before = files.length + dirs.length;
    for (const e of await listAll(dir)) {
      const r = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.kind === 'directory') {
        if (o.exclude?.matchesEntry(r, true)) continue;
        await walk(e.path, r);
      } else {
        if (o.exclude?.matchesEntry(r, false)) continue;
        files.push({ path: r, abs: e.path, size: e.size, mtimeMs: e.mtimeMs });
      }
    }
    if (files.length + dirs.length === before && rel !== '') dirs.push(rel);
  };
  for (const src of sources) {
    const p = o.toStorage(src);
    let st: StorageEntry;
    try {
      st = await backend.stat(p);
    } catch (err) {
      if (err instanceof TachyonError && err.code === 'NOT_FOUND') {
        throw new TachyonError('NOT_FOUND', `source ${src} does not exist`, { publicMessage: `Source ${src} does not exist.` });
      }
      throw err;
    }
    let rel: string;
    if (base !== undefined) {
      if (!(base === '' || p === base || p.startsWith(`${base}/`))) {
        throw new TachyonError('USAGE', `source ${src} is not below the source base`, { publicMessage: `Source ${src} is not below the source base.` });
      }
      rel = base === '' ? p : p.slice(base.length + 1);
    } else {
      rel = baseName(p) || 'root';
    }
    if (st.kind === 'file') {
      if (rel === '') throw new TachyonError('USAGE', `source ${src} is the source base itself`);
      if (o.exclude?.excludes(rel, false)) continue;
      // a stat of the object itself: its mtime is the sender's (x-amz-meta-mtime), not the listing's
      files.push({ path: rel, abs: p, size: st.size, mtimeMs: st.mtimeMs });
    } else {
      if (rel !== '' && o.exclude?.excludes(rel, true)) continue;
      await walk(p, rel);
    }
  }
  return { files, dirs };
}
