/**
 * The path jail: confines client-named paths to a root directory whose top the client
 * sees as `/`. Shared by the transfer roles (uploads, downloads) and the SFTP server.
 *
 * Names. A client path is split on `/` (and `\`, which is never a name character here),
 * `.` and empty components are dropped and `..` pops one component; `..` at the top is
 * refused, never clamped. Each component is normalised to Unicode NFC, so names created
 * through Tachyon are always stored in NFC (a macOS client's decomposed `é` and a Linux
 * client's composed one reach the same file). Refused, with a `PATH_INVALID` error whose
 * `details.reason` says why (see {@link PathRefusal}):
 * - NUL bytes; C0/C1 control characters and DEL; bidirectional-override controls;
 *   unpaired surrogates and U+FFFD (what invalid UTF-8 decodes to);
 * - more than {@link MAX_PATH_BYTES} bytes in all or {@link MAX_COMPONENT_BYTES} in one
 *   component (UTF-8, after NFC);
 * - a component whose NFKC form contains `/`, `\` or NUL or, ignoring combining marks and
 *   default-ignorable code points, is `.` or `..` (fullwidth solidus U+FF0F, one dot
 *   leader U+2024, two dot leader U+2025, small full stop U+FE52, `.` + U+200B …), and a
 *   component that starts with a combining mark (it would join the separator before it).
 *
 * Symbolic links. Resolution walks the components from the root: a symbolic link is
 * followed only when its full target lies inside the root (`symlink-escape` otherwise, or
 * when it dangles towards the outside); links inside the root are fine. The paths this
 * class returns are physical (links resolved). Operations that act on a name rather than
 * on what it points to (lstat, remove, rename, open for writing) never follow the final
 * component; opening for writing refuses a final-component link (`O_NOFOLLOW`).
 *
 * Races. Checking a path and then using it leaves a window in which a local process that
 * can write inside the root could swap a directory for a link to the outside. On Linux
 * this class closes that window: every operation opens the parent directory, verifies
 * where that descriptor really is (`/proc/self/fd/N`), and then acts on
 * `/proc/self/fd/N/name` — the kernel resolves that to the verified directory whatever
 * happens to the path meanwhile (the same guarantee as `openat`/`unlinkat`, which Node
 * does not expose). Opened files and directories are verified the same way. Without
 * `/proc` (other systems) the checks still run but the window stays open; see
 * docs/architecture.md. Writes never truncate before the verification (`O_TRUNC` is not
 * used; the file is truncated through the verified descriptor), and new files are created
 * with `O_CREAT|O_EXCL`, so a lost race can at worst create an empty file, never change an
 * existing one. A file with more than one hard link is not opened for writing (a hard
 * link planted inside the root could point at a file outside it).
 */
import {
  closeSync,
  constants as fsc,
  existsSync,
  fstatSync,
  ftruncateSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmdirSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { TachyonError, toTachyonError } from '../core/errors.js';

export const MAX_PATH_BYTES = 4096;
export const MAX_COMPONENT_BYTES = 255;

/** Why a path was refused: `details.reason` of a `PATH_INVALID` error (for the audit log). */
export type PathRefusal =
  | 'nul-byte'
  | 'control-character'
  | 'bidi-control'
  | 'invalid-unicode'
  | 'path-too-long'
  | 'component-too-long'
  | 'above-root'
  | 'unicode-escape'
  | 'symlink-escape'
  | 'symlink-loop'
  | 'final-symlink'
  | 'hard-link'
  | 'not-regular-file'
  | 'empty-path';

/** One entry of {@link Jail.list}: a name and what it is (links resolved). */
export interface JailEntry {
  name: string;
  stats: Stats;
}

export interface OpenForWriteOptions {
  /** Create the file if it does not exist. */
  create: boolean;
  /** Fail with `EXISTS` if it exists (with `create`). */
  exclusive?: boolean;
  /** Empty an existing file (through the verified descriptor). */
  truncate?: boolean;
  /** Also open for reading. */
  read?: boolean;
  /** Append every write (`O_APPEND`). */
  append?: boolean;
  /** Permission bits for a new file; masked to 0755 and at least 0600. Default 0644. */
  mode?: number;
}

export interface OpenedFile {
  fd: number;
  /** Physical absolute path inside the root. */
  abs: string;
  stats: Stats;
  /** True when this call created the file. */
  created: boolean;
}

const PROC_FD = '/proc/self/fd';

// eslint-disable-next-line no-control-regex -- finding control characters is the point
const CONTROL = /[\u0001-\u001f\u007f-\u009f]/;
const BIDI = /[\u202a-\u202e\u2066-\u2069]/;
const INVALID_UNICODE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]|\ufffd/;
const ESCAPING_CHARS = /[/\\\0]/;
const IGNORABLE = /[\p{M}\p{Default_Ignorable_Code_Point}]/gu;
const STARTS_WITH_MARK = /^\p{M}/u;

/**
 * Splits and checks a client path (the jail's rules, without a root): its normalised (NFC)
 * components. Refusals are PATH_INVALID with `details.reason`. Storage-backed accounts
 * (s3:// docroots) use it too.
 */
export function clientPathComponents(clientPath: string): string[] {
  if (typeof clientPath !== 'string') throw refusal(String(clientPath), 'empty-path', 'is not a string');
  if (clientPath.includes('\0')) throw refusal(clientPath, 'nul-byte', 'contains a NUL byte');
  if (INVALID_UNICODE.test(clientPath)) throw refusal(clientPath, 'invalid-unicode', 'is not valid UTF-8 text');
  if (CONTROL.test(clientPath)) throw refusal(clientPath, 'control-character', 'contains a control character');
  if (BIDI.test(clientPath)) throw refusal(clientPath, 'bidi-control', 'contains a bidirectional text control');
  if (Buffer.byteLength(clientPath) > MAX_PATH_BYTES) throw refusal(clientPath, 'path-too-long', `is longer than ${MAX_PATH_BYTES} bytes`);
  const p = clientPath.normalize('NFC');
  if (Buffer.byteLength(p) > MAX_PATH_BYTES) throw refusal(clientPath, 'path-too-long', `is longer than ${MAX_PATH_BYTES} bytes`);
  const out: string[] = [];
  for (const c of p.split(/[/\\]/)) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (out.length === 0) throw refusal(clientPath, 'above-root', 'leaves the root');
      out.pop();
      continue;
    }
    if (Buffer.byteLength(c) > MAX_COMPONENT_BYTES) {
      throw refusal(clientPath, 'component-too-long', `has a component longer than ${MAX_COMPONENT_BYTES} bytes`);
    }
    const k = c.normalize('NFKC');
    if (ESCAPING_CHARS.test(k)) throw refusal(clientPath, 'unicode-escape', 'has a character that normalises to a path separator');
    const bare = k.replace(IGNORABLE, '');
    if (bare === '.' || bare === '..' || bare === '') {
      throw refusal(clientPath, 'unicode-escape', 'has a component that normalises to "." or ".."');
    }
    if (STARTS_WITH_MARK.test(c)) throw refusal(clientPath, 'unicode-escape', 'has a component that starts with a combining mark');
    out.push(c);
  }
  return out;
}

export class Jail {
  /** The root's physical path (symbolic links resolved when the jail was made). */
  readonly root: string;
  /** Whether `/proc/self/fd` lets operations be pinned to verified directories. */
  readonly pinned: boolean;

  constructor(root: string, options: { pinned?: boolean } = {}) {
    try {
      this.root = realpathSync(root);
    } catch (err) {
      throw new TachyonError('CONFIG', `root directory ${root} does not exist`, { cause: err });
    }
    let isDir = false;
    try {
      isDir = statSync(this.root).isDirectory();
    } catch {
      isDir = false;
    }
    if (!isDir) throw new TachyonError('CONFIG', `root ${root} is not a directory`);
    this.pinned = options.pinned ?? existsSync(PROC_FD);
  }

  // ---- names -------------------------------------------------------------------------

  /** Splits and checks a client path; returns its normalised (NFC) components under the root. */
  components(clientPath: string): string[] {
    return clientPathComponents(clientPath);
  }

  /** Whether `name` (one entry read from disk) is what {@link components} would make of it. */
  isCanonicalName(name: string): boolean {
    try {
      const c = this.components(name);
      return c.length === 1 && c[0] === name;
    } catch {
      return false;
    }
  }

  // ---- resolution ----------------------------------------------------------------------

  /**
   * Resolves a client path to a physical absolute path inside the root (symbolic links
   * that stay inside resolved). With `final: 'nofollow'` the last component is not
   * followed (for operations on the name itself). Parts that do not exist yet are kept
   * as given.
   * @throws TachyonError `PATH_INVALID` (with `details.reason`), `NOT_FOUND` for a path
   *   through a dangling link inside the root, `IO`.
   */
  resolve(clientPath: string, options: { final?: 'follow' | 'nofollow' } = {}): string {
    return this.walk(this.components(clientPath), clientPath, options.final ?? 'follow');
  }

  /**
   * Checks that an absolute path (one this jail returned, possibly with components added)
   * resolves inside the root, following every symbolic link in it.
   * @throws TachyonError `PATH_INVALID` when it does not.
   */
  checkInside(abs: string, shown: string): void {
    this.walk(this.relComponents(abs, shown), shown, 'follow');
  }

  /** The client's view (`/a/b`) of an absolute path inside the root. */
  display(abs: string): string {
    const rel = path.relative(this.root, abs);
    if (rel === '') return '/';
    return '/' + rel.split(path.sep).join('/');
  }

  /** Whether an absolute physical path is the root or below it. */
  contains(abs: string): boolean {
    if (this.root === path.sep) return path.isAbsolute(abs);
    return abs === this.root || abs.startsWith(this.root + path.sep);
  }

  private relComponents(abs: string, shown: string): string[] {
    const rel = path.relative(this.root, path.resolve(abs));
    if (rel === '') return [];
    if (rel === '..' || rel.startsWith('..' + path.sep) || path.isAbsolute(rel)) throw refusal(shown, 'above-root', 'leaves the root');
    return rel.split(path.sep);
  }

  private walk(comps: readonly string[], shown: string, final: 'follow' | 'nofollow'): string {
    let cur = this.root;
    for (let i = 0; i < comps.length; i++) {
      const next = path.join(cur, comps[i]!);
      let st: Stats;
      try {
        st = lstatSync(next);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return path.join(cur, ...comps.slice(i));
        throw fsError(err, shown);
      }
      if (!st.isSymbolicLink() || (final === 'nofollow' && i === comps.length - 1)) {
        cur = next;
        continue;
      }
      cur = this.followLink(next, shown);
    }
    return cur;
  }

  /** The physical target of the link at `link` (a physical path), if inside the root. */
  private followLink(link: string, shown: string): string {
    let real: string;
    try {
      real = realpathSync(link);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP') throw refusal(shown, 'symlink-loop', 'goes through a symbolic link loop');
      // dangling: refuse if it points outside, else the path does not exist
      let target = '';
      try {
        target = path.resolve(path.dirname(link), readlinkSync(link));
      } catch {
        target = '';
      }
      if (target === '' || !this.contains(target)) throw refusal(shown, 'symlink-escape', 'goes through a symbolic link that leads outside the root');
      throw new TachyonError('NOT_FOUND', `path '${clip(shown)}' goes through a dangling symbolic link`, {
        cause: err,
        publicMessage: 'No such file or directory.',
      });
    }
    if (!this.contains(real)) throw refusal(shown, 'symlink-escape', 'goes through a symbolic link that leads outside the root');
    return real;
  }

  // ---- pinned operations -----------------------------------------------------------------

  /**
   * Runs `fn` with a reference to abs's parent directory that cannot be redirected: on
   * Linux `/proc/self/fd/N` of a descriptor verified to be inside the root.
   */
  private atParent<T>(abs: string, shown: string, fn: (dir: string, name: string) => T): T {
    if (abs === this.root) throw new TachyonError('PATH_INVALID', 'the root itself', { publicMessage: 'Invalid path: it is the root directory.', details: { reason: 'above-root' } });
    const dir = path.dirname(abs);
    const name = path.basename(abs);
    if (!this.pinned) {
      this.checkInside(dir, shown);
      return fn(dir, name);
    }
    let fd: number;
    try {
      fd = openSync(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
    } catch (err) {
      throw fsError(err, shown);
    }
    try {
      this.verifyFd(fd, shown);
      return fn(`${PROC_FD}/${fd}`, name);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Checks where an open descriptor really is (Linux: `/proc/self/fd/N`).
   * @throws TachyonError `PATH_INVALID` (reason `symlink-escape`, `details.race`) if outside.
   */
  verifyFd(fd: number, shown: string): void {
    if (!this.pinned) return;
    let where: string;
    try {
      where = readlinkSync(`${PROC_FD}/${fd}`);
    } catch (err) {
      throw fsError(err, shown);
    }
    if (!path.isAbsolute(where) || !this.contains(where)) {
      throw refusal(shown, 'symlink-escape', 'was moved outside the root while in use', { race: true });
    }
  }

  // ---- operations for callers -------------------------------------------------------------

  /**
   * Opens an existing file for reading (or, with `directory`, a file or a directory, e.g.
   * for fstat/futimes). The last component was resolved beforehand, so it is opened with
   * `O_NOFOLLOW`; the descriptor is verified.
   * @throws TachyonError `NOT_FOUND`, `IS_DIRECTORY` (a directory without `directory`),
   *   `PATH_INVALID` (reasons above, `not-regular-file` for devices, FIFOs, sockets).
   */
  openForRead(clientPath: string, options: { directory?: boolean } = {}): OpenedFile {
    return this.openResolvedForRead(this.resolve(clientPath), clientPath, options);
  }

  /**
   * Opens an absolute path inside the root (e.g. a file a listing of this jail found) for
   * reading, with the same checks as {@link openForRead}; returns the descriptor.
   */
  openAbsForRead(abs: string): number {
    const shown = this.contains(abs) ? this.display(abs) : abs;
    const real = this.walk(this.relComponents(abs, shown), shown, 'follow');
    return this.openResolvedForRead(real, shown, {}).fd;
  }

  private openResolvedForRead(abs: string, clientPath: string, options: { directory?: boolean }): OpenedFile {
    const flags = fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;
    let fd: number;
    try {
      fd = abs === this.root ? openSync(abs, flags) : this.atParent(abs, clientPath, (dir, name) => openSync(path.join(dir, name), flags));
    } catch (err) {
      throw fsError(err, clientPath);
    }
    try {
      this.verifyFd(fd, clientPath);
      const stats = fstatSync(fd);
      if (stats.isDirectory() && options.directory !== true) {
        throw new TachyonError('IS_DIRECTORY', `path '${clip(clientPath)}' is a directory`, { publicMessage: 'It is a directory.' });
      }
      if (!stats.isFile() && !stats.isDirectory()) throw refusal(clientPath, 'not-regular-file', 'is not a regular file');
      return { fd, abs, stats, created: false };
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /**
   * Opens a file for writing without ever following a symbolic link in its last
   * component (`O_NOFOLLOW`, `O_EXCL` when creating); truncates only after the descriptor
   * is verified to be inside the root and the file has a single link.
   * @throws TachyonError `PATH_INVALID` (`final-symlink`, `hard-link`, `not-regular-file`,
   *   and the name reasons), `EXISTS`, `NOT_FOUND`, `IS_DIRECTORY`, `DISK_FULL`, `IO`.
   */
  openForWrite(clientPath: string, o: OpenForWriteOptions): OpenedFile {
    const abs = this.resolve(clientPath, { final: 'nofollow' });
    if (abs === this.root) throw new TachyonError('IS_DIRECTORY', 'the root is a directory', { publicMessage: 'It is a directory.' });
    return this.openAbsForWrite(abs, clientPath, o);
  }

  /**
   * Creates a fresh temporary file at `abs` (an absolute path inside the root, e.g. next
   * to an upload's destination): any existing entry of that name (a stale partial file,
   * or a link planted there) is removed first, then it is created with
   * `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600, and verified. Returns the descriptor (read/write).
   */
  createTemp(abs: string): number {
    const shown = this.display(abs);
    this.relComponents(abs, shown);
    this.atParent(abs, shown, (dir, name) => {
      try {
        unlinkSync(path.join(dir, name));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT') throw fsError(err, shown);
      }
    });
    return this.openAbsForWrite(abs, shown, { create: true, exclusive: true, read: true, mode: 0o600 }).fd;
  }

  private openAbsForWrite(abs: string, shown: string, o: OpenForWriteOptions): OpenedFile {
    const base = (o.read === true ? fsc.O_RDWR : fsc.O_WRONLY) | fsc.O_NOFOLLOW | fsc.O_NONBLOCK | (o.append === true ? fsc.O_APPEND : 0);
    const mode = ((o.mode ?? 0o644) & 0o755) | 0o600;
    const { fd, created } = this.atParent(abs, shown, (dir, name) => {
      const p = path.join(dir, name);
      if (o.create) {
        try {
          return { fd: openSync(p, base | fsc.O_CREAT | fsc.O_EXCL, mode), created: true };
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'EEXIST' || o.exclusive === true) throw fsError(err, shown);
        }
      }
      try {
        return { fd: openSync(p, base), created: false };
      } catch (err) {
        throw fsError(err, shown);
      }
    });
    try {
      this.verifyFd(fd, shown);
      const stats = fstatSync(fd);
      if (stats.isDirectory()) throw new TachyonError('IS_DIRECTORY', `path '${clip(shown)}' is a directory`, { publicMessage: 'It is a directory.' });
      if (!stats.isFile()) throw refusal(shown, 'not-regular-file', 'is not a regular file');
      if (stats.nlink > 1) throw refusal(shown, 'hard-link', 'is a file with several hard links');
      if (o.truncate === true && !created && stats.size > 0) {
        ftruncateSync(fd, 0);
        return { fd, abs, stats: fstatSync(fd), created };
      }
      return { fd, abs, stats, created };
    } catch (err) {
      closeSync(fd);
      if (created) {
        try {
          this.atParent(abs, shown, (dir, name) => unlinkSync(path.join(dir, name)));
        } catch {
          /* best effort: it was created empty by us */
        }
      }
      throw err instanceof TachyonError ? err : fsError(err, shown);
    }
  }

  /** Stats of what a client path names, links followed (inside the root). */
  stat(clientPath: string): Stats {
    const abs = this.resolve(clientPath);
    return this.lstatAbs(abs, clientPath);
  }

  /** Stats of the name itself (a link is not followed; its parent is resolved inside). */
  lstat(clientPath: string): Stats {
    return this.lstatAbs(this.resolve(clientPath, { final: 'nofollow' }), clientPath);
  }

  private lstatAbs(abs: string, shown: string): Stats {
    try {
      if (abs === this.root) return statSync(abs);
      return this.atParent(abs, shown, (dir, name) => lstatSync(path.join(dir, name)));
    } catch (err) {
      throw err instanceof TachyonError ? err : fsError(err, shown);
    }
  }

  /**
   * The entries of a directory, sorted by name: links that stay inside the root appear as
   * what they point to; links that lead out or dangle, and names that a client could not
   * name back (not NFC, control characters, …), are left out.
   */
  list(clientPath: string): JailEntry[] {
    const abs = this.resolve(clientPath);
    let fd: number;
    try {
      const flags = fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW;
      fd = abs === this.root ? openSync(abs, flags) : this.atParent(abs, clientPath, (dir, name) => openSync(path.join(dir, name), flags));
    } catch (err) {
      throw err instanceof TachyonError ? err : fsError(err, clientPath);
    }
    try {
      this.verifyFd(fd, clientPath);
      const dirRef = this.pinned ? `${PROC_FD}/${fd}` : abs;
      const names = readdirSync(dirRef).sort();
      const out: JailEntry[] = [];
      for (const name of names) {
        if (!this.isCanonicalName(name)) continue;
        let st: Stats;
        try {
          st = lstatSync(path.join(dirRef, name));
          if (st.isSymbolicLink()) {
            const real = this.followLink(path.join(abs, name), `${clientPath}/${name}`);
            st = statSync(real);
          }
        } catch {
          continue;
        }
        out.push({ name, stats: st });
      }
      return out;
    } catch (err) {
      throw err instanceof TachyonError ? err : fsError(err, clientPath);
    } finally {
      closeSync(fd);
    }
  }

  /** Makes one directory (its parent must exist). Mode masked to 0755, at least 0700. */
  mkdir(clientPath: string, mode = 0o755): string {
    const abs = this.resolve(clientPath, { final: 'nofollow' });
    this.mkdirAbs(abs, clientPath, mode);
    return abs;
  }

  private mkdirAbs(abs: string, shown: string, mode: number): void {
    try {
      this.atParent(abs, shown, (dir, name) => mkdirSync(path.join(dir, name), (mode & 0o755) | 0o700));
    } catch (err) {
      throw err instanceof TachyonError ? err : fsError(err, shown);
    }
    if (this.pinned) return; // made inside a verified directory
    // without pinning: check where the new directory really is, and take it back if a
    // parent was swapped for a link meanwhile
    let real = '';
    try {
      real = realpathSync(abs);
    } catch {
      real = '';
    }
    if (real === '' || !this.contains(real)) {
      try {
        if (real !== '') rmdirSync(real);
      } catch {
        /* best effort: it is empty, we just made it */
      }
      throw refusal(shown, 'symlink-escape', 'was moved outside the root while in use', { race: true });
    }
  }

  /**
   * Makes a directory and its missing parents (an absolute path inside the root), one
   * component at a time, each made relative to its verified parent; existing links that
   * stay inside the root are followed. Returns the physical path.
   */
  ensureDir(abs: string, shown = this.display(abs)): string {
    const comps = this.relComponents(abs, shown);
    let cur = this.root;
    for (const c of comps) {
      const next = path.join(cur, c);
      try {
        this.mkdirAbs(next, shown, 0o755);
      } catch (err) {
        if (!(err instanceof TachyonError && err.code === 'EXISTS')) throw err;
      }
      const st = this.lstatAbs(next, shown);
      if (st.isSymbolicLink()) cur = this.followLink(next, shown);
      else cur = next;
      if (!this.lstatAbs(cur, shown).isDirectory()) {
        throw new TachyonError('EXISTS', `'${clip(shown)}': ${this.display(cur)} is not a directory`, {
          publicMessage: 'A file is in the way of a directory.',
        });
      }
    }
    return cur;
  }

  /** Removes a file or link (never a directory; the name itself, links not followed). */
  remove(clientPath: string): void {
    const abs = this.resolve(clientPath, { final: 'nofollow' });
    try {
      this.atParent(abs, clientPath, (dir, name) => {
        const p = path.join(dir, name);
        if (lstatSync(p).isDirectory()) {
          throw new TachyonError('IS_DIRECTORY', `path '${clip(clientPath)}' is a directory`, { publicMessage: 'It is a directory.' });
        }
        unlinkSync(p);
      });
    } catch (err) {
      throw err instanceof TachyonError ? err : fsError(err, clientPath);
    }
  }

  /** Removes an empty directory (not the root). */
  rmdir(clientPath: string): void {
    const abs = this.resolve(clientPath, { final: 'nofollow' });
    try {
      this.atParent(abs, clientPath, (dir, name) => rmdirSync(path.join(dir, name)));
    } catch (err) {
      throw err instanceof TachyonError ? err : fsError(err, clientPath);
    }
  }

  /**
   * Renames a name (links not followed) inside the root. Without `overwrite`, an existing
   * target is an `EXISTS` error; for files this is atomic (hard link, then unlink of the
   * old name, as OpenSSH's sftp-server does), for directories it is checked just before.
   */
  rename(fromClient: string, toClient: string, o: { overwrite: boolean }): void {
    const from = this.resolve(fromClient, { final: 'nofollow' });
    const to = this.resolve(toClient, { final: 'nofollow' });
    if (from === this.root || to === this.root) {
      throw new TachyonError('PATH_INVALID', 'cannot rename the root', { publicMessage: 'Invalid path: it is the root directory.', details: { reason: 'above-root' } });
    }
    if (to === from || to.startsWith(from + path.sep)) {
      throw new TachyonError('PATH_INVALID', `cannot move '${clip(fromClient)}' into itself`, { publicMessage: 'Invalid path: a directory cannot move into itself.' });
    }
    try {
      this.atParent(from, fromClient, (fdir, fname) =>
        this.atParent(to, toClient, (tdir, tname) => {
          const src = path.join(fdir, fname);
          const dst = path.join(tdir, tname);
          if (o.overwrite) {
            renameSync(src, dst);
            return;
          }
          const st = lstatSync(src);
          if (!st.isDirectory()) {
            try {
              linkSync(src, dst);
              unlinkSync(src);
              return;
            } catch (err) {
              const code = (err as NodeJS.ErrnoException).code;
              if (code === 'EEXIST') throw err;
              // link() not possible here (file system without hard links): check, then rename
            }
          }
          if (existsOrLink(dst)) throw Object.assign(new Error(`EEXIST: ${toClient}`), { code: 'EEXIST' });
          renameSync(src, dst);
        }),
      );
    } catch (err) {
      throw err instanceof TachyonError ? err : fsError(err, `${fromClient} -> ${toClient}`);
    }
  }
}

function existsOrLink(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function clip(p: string): string {
  const shown = p.length > 200 ? `${p.slice(0, 200)}…` : p;
  // keep log lines on one line and free of invisible characters
  // eslint-disable-next-line no-control-regex -- escaping control characters is the point
  return shown.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A `PATH_INVALID` error with `details.reason` for the audit log. */
function refusal(p: string, reason: PathRefusal, why: string, extra: Record<string, unknown> = {}): TachyonError {
  return new TachyonError('PATH_INVALID', `path '${clip(p)}' ${why}`, {
    publicMessage: `Invalid path: it ${why}.`,
    details: { reason, path: clip(p), ...extra },
  });
}

/** Translates a file system error met while working on client path `shown`. */
function fsError(err: unknown, shown: string): TachyonError {
  if (err instanceof TachyonError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const msg = `${clip(shown)}: ${(err as Error | undefined)?.message ?? String(err)}`;
  switch (code) {
    case 'ELOOP':
      return refusal(shown, 'final-symlink', 'is a symbolic link', { errno: code });
    case 'ENOTDIR':
      return new TachyonError('NOT_FOUND', msg, { cause: err, publicMessage: 'No such file or directory.' });
    case 'ENAMETOOLONG':
      return refusal(shown, 'path-too-long', 'is too long');
    case 'ENOTEMPTY':
      return new TachyonError('EXISTS', msg, { cause: err, publicMessage: 'The directory is not empty.' });
    case 'EXDEV':
      return new TachyonError('IO', msg, { cause: err, publicMessage: 'Cannot move across file systems.' });
    default: {
      const te = toTachyonError(err, 'IO');
      return new TachyonError(te.code, msg, { cause: err, publicMessage: te.publicMessage });
    }
  }
}
