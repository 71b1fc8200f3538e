/**
 * The `DirScanner` seam: read one local directory's entries, and optionally the lstat of
 * every one (kind, size, mtime), for LocalStorage listings.
 *
 * - `nativeDirScanner()`: the optional addon (native/tachyon_dir.c, built with the
 *   datagram addon by node-gyp): one work item on the libuv pool reads the directory and
 *   fstatat(AT_SYMLINK_NOFOLLOW)s its entries on two threads, and sorts the names (off the
 *   event loop); JavaScript gets one buffer of sorted names and three typed arrays. Undefined when not built, not on Linux, or disabled
 *   with TACHYON_NATIVE=0.
 * - `nodeDirScanner()`: node:fs (readdir with file types, lstat in parallel batches), the
 *   same results; used when the addon is missing, and by the tests to check the addon.
 *
 * Errors are Node-style (an `Error` with an errno `code`); the caller translates them
 * (translateFsError). Names are returned as Node decodes them (UTF-8).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { RESERVED_PREFIX } from './backend.js';

/** Entry kinds in a scan. */
export const SCAN_OTHER = 0;
export const SCAN_FILE = 1;
export const SCAN_DIRECTORY = 2;

/**
 * One directory's entries, never a name starting with RESERVED_PREFIX or holding U+FFFD
 * (what Node decodes bytes that are not UTF-8 to; the storage API refuses such paths). When `sorted`,
 * they are in name order (UTF-16 code units, JavaScript's `<`) and only files and
 * directories; otherwise in the order read, with SCAN_OTHER entries among them.
 */
export interface ScannedDir {
  readonly count: number;
  /** The name of entry `i` (0 <= i < count). */
  name(i: number): string;
  readonly sorted: boolean;
  /** SCAN_FILE, SCAN_DIRECTORY or SCAN_OTHER (links, devices, entries gone meanwhile). */
  readonly kinds: Uint8Array;
  /** Bytes of a file (0 for a directory); all 0 without stats. */
  readonly sizes: Float64Array;
  /** Modification times (ms since the epoch, as Node's `mtimeMs`); all 0 without stats. */
  readonly mtimes: Float64Array;
}

export interface DirScanner {
  /** 'native' or 'node', for reports. */
  readonly kind: string;
  /**
   * The entries of the directory at the absolute path `dir` (not followed if it is a
   * link). Without `withStats`, kinds come from the directory itself (d_type) and
   * sizes/mtimes are 0.
   */
  scan(dir: string, withStats: boolean): Promise<ScannedDir>;
}

/** lstat calls in flight at once in the node:fs scanner. */
const LSTAT_BATCH = 64;

export function nodeDirScanner(): DirScanner {
  return {
    kind: 'node',
    async scan(dir: string, withStats: boolean): Promise<ScannedDir> {
      const dirents = (await readdir(dir, { withFileTypes: true })).filter((e) => !e.name.startsWith(RESERVED_PREFIX) && !e.name.includes('\uFFFD'));
      const n = dirents.length;
      const names = dirents.map((e) => e.name);
      const kinds = new Uint8Array(n);
      const sizes = new Float64Array(n);
      const mtimes = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const e = dirents[i];
        kinds[i] = e?.isFile() ? SCAN_FILE : e?.isDirectory() ? SCAN_DIRECTORY : SCAN_OTHER;
      }
      if (withStats) {
        // one at a time would cost a thread-pool round trip per entry
        for (let i = 0; i < n; i += LSTAT_BATCH) {
          const end = Math.min(n, i + LSTAT_BATCH);
          const stats = await Promise.all(names.slice(i, end).map((name) => lstat(path.join(dir, name)).catch(() => undefined)));
          for (let j = i; j < end; j++) {
            const st = stats[j - i];
            kinds[j] = st?.isFile() ? SCAN_FILE : st?.isDirectory() ? SCAN_DIRECTORY : SCAN_OTHER;
            sizes[j] = st?.isFile() ? st.size : 0;
            mtimes[j] = st?.mtimeMs ?? 0;
          }
        }
      }
      return { count: n, name: (i) => names[i] as string, kinds, sizes, mtimes, sorted: false };
    },
  };
}

interface DirAddon {
  scanDir(
    dir: string,
    withStats: boolean,
    threads: number,
    skipPrefix: string,
  ): Promise<{ count: number; names: Buffer; offsets: Uint32Array; validUtf8: boolean; kinds: Uint8Array; sizes: Float64Array; mtimes: Float64Array }>;
}

/** Where the addon would be (dist/src/storage/ or src/storage/ under a TS loader). */
function addonFile(): string | undefined {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return [path.resolve(here, '../../../build/Release/tachyon_dir.node'), path.resolve(here, '../../build/Release/tachyon_dir.node')].find((c) => existsSync(c));
}

/**
 * The native scanner, or undefined (with the reason) when the addon is not available.
 * `threads`: fstatat threads per scan (default 2).
 */
export function nativeDirScanner(options: { readonly threads?: number } = {}): { scanner: DirScanner | undefined; reason: string } {
  if (process.env['TACHYON_NATIVE'] === '0') return { scanner: undefined, reason: 'disabled by TACHYON_NATIVE=0' };
  if (process.platform !== 'linux') return { scanner: undefined, reason: `not built on ${process.platform}` };
  const file = addonFile();
  if (!file) return { scanner: undefined, reason: 'addon not built (npm run build:native)' };
  let addon: DirAddon;
  try {
    addon = createRequire(import.meta.url)(file) as DirAddon;
  } catch (err) {
    return { scanner: undefined, reason: `addon failed to load: ${(err as Error).message}` };
  }
  const threads = options.threads ?? 2;
  return {
    reason: file,
    scanner: {
      kind: 'native',
      async scan(dir: string, withStats: boolean): Promise<ScannedDir> {
        const r = await addon.scanDir(dir, withStats, threads, RESERVED_PREFIX);
        const { names: buf, offsets } = r;
        // names are decoded when asked for (a page's worth), not all 100,000
        const name = (i: number): string => buf.toString('utf8', offsets[i], offsets[i + 1]);
        // sorted in code-unit order (names that are not valid UTF-8 are left out)
        return { count: r.count, name, kinds: r.kinds, sizes: r.sizes, mtimes: r.mtimes, sorted: true };
      },
    },
  };
}

/** The native scanner when available, else node:fs. */
export function defaultDirScanner(): DirScanner {
  return nativeDirScanner().scanner ?? nodeDirScanner();
}
