/**
 * LocalStorage: a StorageBackend over one directory on the local disk.
 *
 * - Symbolic links are never followed: a link in any component of a path is refused
 *   (PATH_INVALID, reason 'symlink'), files are opened with O_NOFOLLOW, and listings show
 *   only regular files and directories.
 * - A writer fills a temporary file `.tachyon.part.<random>` (O_CREAT | O_EXCL |
 *   O_NOFOLLOW, mode 0600) in the destination's directory; `commit()` syncs it and
 *   publishes it with link() (no-clobber, EXISTS if the name was taken meanwhile) or,
 *   with `overwrite`, rename(); `abort()` unlinks it. Temporary names are hidden from
 *   listings and refused as paths.
 * - A directory rename checks that the destination is free and then renames (Node has no
 *   renameat2(RENAME_NOREPLACE)): a directory created at the destination in between can
 *   be replaced if it is empty. File renames use link() + unlink(), so they never clobber.
 * - Check-then-use races with a local process that swaps a directory for a link between
 *   the check and the use are not closed here (the transfer jail pins directories through
 *   /proc/self/fd; this backend is for trusted roots).
 */
import { constants } from 'node:fs';
import { link, lstat, mkdir, open, realpath, rename, rm, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { TachyonError, toTachyonError } from '../core/errors.js';
import {
  CoverageSet,
  RESERVED_PREFIX,
  baseName,
  checkChunk,
  checkRange,
  checkMtime,
  checkSize,
  incomplete,
  normalizeStoragePath,
  pageEntries,
  parentOf,
  writerClosed,
  type ChunkWriter,
  type ListOptions,
  type ListPage,
  type ReadHandle,
  type StorageBackend,
  type StorageCapabilities,
  type StorageEntry,
  type WriterOptions,
} from './backend.js';
import { DirListing, type ListingCache } from './list-cache.js';
import { defaultDirScanner, type DirScanner } from './dir-scan.js';

const O_NOFOLLOW = constants.O_NOFOLLOW ?? 0;
/** lstat calls in flight at once while listing a directory. */
const LSTAT_BATCH = 64;

/** Translates a Node fs error met while working on `rel` (a backend-relative path). */
export function translateFsError(err: unknown, rel: string): TachyonError {
  if (err instanceof TachyonError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const where = rel === '' ? '/' : rel;
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new TachyonError('NOT_FOUND', `no such file or directory: ${where}`, {
        cause: err,
        publicMessage: 'No such file or directory.',
      });
    case 'ENOTEMPTY':
      return new TachyonError('IS_DIRECTORY', `directory not empty: ${where}`, { cause: err, details: { reason: 'not-empty' } });
    case 'ELOOP':
      return new TachyonError('PATH_INVALID', `symbolic link refused: ${where}`, { cause: err, details: { reason: 'symlink' } });
    case 'EEXIST':
      return new TachyonError('EXISTS', `exists: ${where}`, { cause: err });
    case 'EISDIR':
      return new TachyonError('IS_DIRECTORY', `is a directory: ${where}`, { cause: err });
    default: {
      const t = toTachyonError(err, 'IO');
      return new TachyonError(t.code, `${t.code === 'IO' ? 'storage I/O error' : t.message} (${where}): ${code ?? ''}`, {
        cause: err,
        publicMessage: t.publicMessage,
      });
    }
  }
}

function symlinkRefused(rel: string): TachyonError {
  return new TachyonError('PATH_INVALID', `symbolic link refused: ${rel}`, { details: { reason: 'symlink' } });
}

export class LocalStorage implements StorageBackend {
  readonly capabilities: StorageCapabilities = { rangedReads: true, outOfOrderWrites: true, atomicRename: true };

  private constructor(
    private readonly root: string,
    private readonly scanner: DirScanner,
    private readonly listCache?: ListingCache,
  ) {}

  /**
   * Opens a backend over an existing directory (NOT_FOUND if missing, PATH_INVALID if not a
   * directory). With `listCache`, listings of large directories are reused between pages
   * (see list-cache.ts). `scanner` reads directories for listings (default: the native
   * scanner when built, else node:fs; see dir-scan.ts).
   */
  static async open(root: string, options: { readonly listCache?: ListingCache; readonly scanner?: DirScanner } = {}): Promise<LocalStorage> {
    let real: string;
    try {
      real = await realpath(root);
    } catch (err) {
      throw translateFsError(err, root);
    }
    const st = await lstat(real);
    if (!st.isDirectory()) {
      throw new TachyonError('PATH_INVALID', `storage root is not a directory: ${root}`, { details: { reason: 'not-a-directory' } });
    }
    return new LocalStorage(real, options.scanner ?? defaultDirScanner(), options.listCache);
  }

  private abs(rel: string): string {
    return rel === '' ? this.root : join(this.root, rel);
  }

  /**
   * Checks that every directory above `rel` is a real directory (no links); NOT_FOUND when
   * one is missing or is a file.
   */
  private async checkParents(rel: string): Promise<void> {
    const parent = parentOf(rel);
    if (parent === '') return;
    let real: string;
    try {
      real = await realpath(this.abs(parent));
    } catch (err) {
      throw translateFsError(err, parent);
    }
    if (real !== this.abs(parent)) throw symlinkRefused(parent);
    const st = await lstat(real).catch((err: unknown) => {
      throw translateFsError(err, parent);
    });
    if (!st.isDirectory()) throw translateFsError(Object.assign(new Error('ENOTDIR'), { code: 'ENOTDIR' }), parent);
  }

  /** lstat of `rel` after checking its parents; symbolic links and other kinds are refused. */
  private async lstatChecked(rel: string): Promise<StorageEntry> {
    await this.checkParents(rel);
    try {
      const st = await lstat(this.abs(rel));
      if (st.isSymbolicLink()) throw symlinkRefused(rel);
      if (!st.isFile() && !st.isDirectory()) {
        throw new TachyonError('PERMISSION', `not a regular file or directory: ${rel}`, { details: { reason: 'special-file' } });
      }
      const kind = st.isFile() ? 'file' : 'directory';
      return { name: baseName(rel), path: rel, kind, size: kind === 'file' ? st.size : 0, mtimeMs: st.mtimeMs };
    } catch (err) {
      throw translateFsError(err, rel);
    }
  }

  /** Like lstatChecked, but undefined when nothing is there. */
  private async lookup(rel: string): Promise<StorageEntry | undefined> {
    try {
      return await this.lstatChecked(rel);
    } catch (err) {
      if (err instanceof TachyonError && err.code === 'NOT_FOUND') {
        await this.checkParents(rel); // a missing parent stays NOT_FOUND for the caller
        return undefined;
      }
      throw err;
    }
  }

  async stat(path: string): Promise<StorageEntry> {
    return this.lstatChecked(normalizeStoragePath(path));
  }

  async list(dir: string, options?: ListOptions): Promise<ListPage> {
    const d = normalizeStoragePath(dir);
    const self = await this.lstatChecked(d);
    if (self.kind !== 'directory') throw translateFsError(Object.assign(new Error('ENOTDIR'), { code: 'ENOTDIR' }), d);
    pageEntries([], options); // validates the options (USAGE)
    // name order needs the stats of the requested page only; size and mtime orders need all
    const needStats = (options?.sort ?? 'name') !== 'name';
    const absDir = this.abs(d);
    const cache = this.listCache;
    let listing: DirListing | undefined;
    let stamp = '';
    if (cache) {
      const st = await lstat(absDir).catch((err: unknown) => {
        throw translateFsError(err, d);
      });
      stamp = `${st.dev}:${st.ino}:${st.mtimeMs}:${st.ctimeMs}`;
      listing = cache.get(absDir, stamp, needStats);
    }
    if (!listing) {
      const ticket = cache?.begin();
      try {
        const scan = await this.scanner.scan(absDir, needStats).catch((err: unknown) => {
          throw translateFsError(err, d);
        });
        listing = DirListing.fromScan(scan, needStats);
        if (cache && ticket !== undefined) cache.store(absDir, stamp, listing, ticket);
      } finally {
        if (ticket !== undefined) cache?.end();
      }
    }
    const ranks = listing.page(options);
    const l = listing;
    if (l.statted) return { entries: ranks.map((r) => l.entry(d, r)), total: l.total };
    return { entries: await this.statAll(d, ranks.map((r) => l.name(r))), total: l.total };
  }

  /**
   * `rel` was created, replaced, moved or removed: forget its own listing, its
   * directory's, and that directory's parent's (whose mtime column changed).
   */
  private changed(rel: string): void {
    if (!this.listCache) return;
    const parent = this.abs(parentOf(rel));
    if (rel !== '') this.listCache.invalidate(this.abs(rel)); // removed or moved away
    this.listCache.invalidate(parent);
    this.listCache.invalidate(dirname(parent));
  }

  /** Entries for `names` in `d`, in that order; names gone (or turned into links) meanwhile are left out. */
  private async statAll(d: string, names: readonly string[]): Promise<StorageEntry[]> {
    const wanted = names.map((name) => ({ name }));
    const entries: StorageEntry[] = [];
    // lstat in parallel batches (one at a time costs a thread-pool round trip per entry)
    for (let i = 0; i < wanted.length; i += LSTAT_BATCH) {
      const batch = wanted.slice(i, i + LSTAT_BATCH);
      const stats = await Promise.all(batch.map((e) => lstat(this.abs(d === '' ? e.name : `${d}/${e.name}`)).catch(() => undefined)));
      for (const [j, e] of batch.entries()) {
        const st = stats[j];
        const rel = d === '' ? e.name : `${d}/${e.name}`;
        // undefined: removed between readdir and lstat, not listed
        if (st?.isFile()) entries.push({ name: e.name, path: rel, kind: 'file', size: st.size, mtimeMs: st.mtimeMs });
        else if (st?.isDirectory()) entries.push({ name: e.name, path: rel, kind: 'directory', size: 0, mtimeMs: st.mtimeMs });
      }
    }
    return entries;
  }

  async openRead(path: string): Promise<ReadHandle> {
    const p = normalizeStoragePath(path);
    const entry = await this.lstatChecked(p); // refuses links and special files before opening
    if (entry.kind === 'directory') throw new TachyonError('IS_DIRECTORY', `is a directory: ${p}`);
    let fh: FileHandle;
    try {
      // O_NONBLOCK: a FIFO swapped in after the check must not block the open
      fh = await open(this.abs(p), constants.O_RDONLY | O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      throw translateFsError(err, p);
    }
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw st.isDirectory()
        ? new TachyonError('IS_DIRECTORY', `is a directory: ${p}`)
        : new TachyonError('PERMISSION', `not a regular file: ${p}`, { details: { reason: 'special-file' } });
    }
    let closed = false;
    return {
      size: st.size,
      async read(offset: number, length: number): Promise<Buffer> {
        if (closed) throw new TachyonError('INTERNAL', `read of ${p} after close`);
        checkRange(p, offset, length);
        const buf = Buffer.allocUnsafe(length);
        let got = 0;
        try {
          while (got < length) {
            const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
            if (bytesRead === 0) break;
            got += bytesRead;
          }
        } catch (err) {
          throw translateFsError(err, p);
        }
        return buf.subarray(0, got);
      },
      async close(): Promise<void> {
        if (closed) return;
        closed = true;
        await fh.close();
      },
    };
  }

  private async checkTarget(p: string, overwrite: boolean): Promise<void> {
    if (p === '') throw new TachyonError('IS_DIRECTORY', 'the root is a directory');
    const existing = await this.lookup(p);
    if (existing?.kind === 'directory') throw new TachyonError('IS_DIRECTORY', `is a directory: ${p}`);
    if (existing !== undefined && !overwrite) throw new TachyonError('EXISTS', `exists: ${p}`);
  }

  async createWriter(path: string, size: number, options: WriterOptions = {}): Promise<ChunkWriter> {
    const p = normalizeStoragePath(path);
    checkSize(p, size);
    checkMtime(p, options.mtimeMs);
    const overwrite = options.overwrite === true;
    await this.checkTarget(p, overwrite);
    const parent = parentOf(p);
    const tempRel = `${parent === '' ? '' : `${parent}/`}${RESERVED_PREFIX}${randomBytes(12).toString('hex')}`;
    const temp = this.abs(tempRel);
    const final = this.abs(p);
    let fh: FileHandle;
    try {
      fh = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | O_NOFOLLOW, 0o600);
    } catch (err) {
      throw translateFsError(err, p);
    }
    try {
      await fh.truncate(size);
    } catch (err) {
      await fh.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      throw translateFsError(err, p);
    }
    const coverage = new CoverageSet();
    let state: 'open' | 'committing' | 'committed' | 'aborted' = 'open';
    const discard = async (): Promise<void> => {
      state = 'aborted';
      await fh.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
    };
    return {
      path: p,
      size,
      write: async (offset: number, chunk: Uint8Array): Promise<void> => {
        if (state !== 'open') throw writerClosed(p, state);
        checkChunk(p, size, offset, chunk.length);
        try {
          let done = 0;
          while (done < chunk.length) {
            const { bytesWritten } = await fh.write(chunk, done, chunk.length - done, offset + done);
            done += bytesWritten;
          }
        } catch (err) {
          throw translateFsError(err, p);
        }
        coverage.add(offset, offset + chunk.length);
      },
      commit: async (): Promise<void> => {
        if (state !== 'open') throw writerClosed(p, state);
        if (!coverage.covers(size)) throw incomplete(p);
        state = 'committing';
        try {
          await fh.datasync();
          if (options.mtimeMs !== undefined) {
            const t = new Date(options.mtimeMs);
            await fh.utimes(t, t);
          }
          await fh.close();
          await this.checkTarget(p, overwrite);
          if (overwrite) {
            await rename(temp, final);
          } else {
            await link(temp, final); // fails with EEXIST instead of replacing
            await unlink(temp);
          }
          state = 'committed';
          this.changed(p);
        } catch (err) {
          await discard();
          throw translateFsError(err, p);
        }
      },
      abort: async (): Promise<void> => {
        if (state === 'committed' || state === 'aborted') return;
        await discard();
      },
    };
  }

  async mkdir(path: string, options: { readonly recursive?: boolean } = {}): Promise<void> {
    const p = normalizeStoragePath(path);
    if (p === '') throw new TachyonError('EXISTS', 'exists: /');
    const parts = p.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const rel = parts.slice(0, i).join('/');
      const last = i === parts.length;
      let st;
      try {
        st = await lstat(this.abs(rel));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT') throw translateFsError(err, rel);
      }
      if (st !== undefined) {
        if (last) throw new TachyonError('EXISTS', `exists: ${rel}`);
        if (st.isSymbolicLink()) throw symlinkRefused(rel);
        if (!st.isDirectory()) throw translateFsError(Object.assign(new Error('ENOTDIR'), { code: 'ENOTDIR' }), rel);
        continue;
      }
      if (!last && options.recursive !== true) throw translateFsError(Object.assign(new Error('ENOENT'), { code: 'ENOENT' }), rel);
      try {
        await mkdir(this.abs(rel), 0o755);
      } catch (err) {
        throw translateFsError(err, rel);
      }
      this.changed(rel);
    }
  }

  async rename(from: string, to: string, options: { readonly overwrite?: boolean } = {}): Promise<void> {
    const f = normalizeStoragePath(from);
    const t = normalizeStoragePath(to);
    if (f === '' || t === '') throw new TachyonError('PERMISSION', 'the root cannot be renamed or replaced');
    const src = await this.lstatChecked(f);
    if (t === f) return;
    if (t.startsWith(`${f}/`)) {
      throw new TachyonError('PATH_INVALID', `cannot move ${f} into itself`, { details: { reason: 'into-itself' } });
    }
    const existing = await this.lookup(t);
    if (existing !== undefined && !(options.overwrite === true && existing.kind === 'file' && src.kind === 'file')) {
      throw new TachyonError(existing.kind === 'directory' ? 'IS_DIRECTORY' : 'EXISTS', `exists: ${t}`);
    }
    try {
      if (src.kind === 'file' && existing === undefined) {
        await link(this.abs(f), this.abs(t));
        await unlink(this.abs(f));
      } else {
        await rename(this.abs(f), this.abs(t));
      }
    } catch (err) {
      throw translateFsError(err, t);
    } finally {
      this.changed(f);
      this.changed(t);
    }
  }

  async remove(path: string, options: { readonly recursive?: boolean } = {}): Promise<void> {
    const p = normalizeStoragePath(path);
    if (p === '') throw new TachyonError('PERMISSION', 'the root cannot be removed');
    const entry = await this.lstatChecked(p);
    try {
      if (entry.kind === 'file') await unlink(this.abs(p));
      else if (options.recursive === true) await rm(this.abs(p), { recursive: true });
      else await rmdir(this.abs(p));
    } catch (err) {
      throw translateFsError(err, p);
    } finally {
      this.changed(p);
    }
  }
}
