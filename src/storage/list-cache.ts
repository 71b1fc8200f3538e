/**
 * Directory listings for backends whose `list` must read a whole directory to sort it
 * (LocalStorage), and a cache of them.
 *
 * A `DirListing` holds one directory's entries as columns (names sorted by name, kinds,
 * sizes, mtimes in the same order); orders by size and mtime are index permutations
 * computed once (numeric keys, ties by name rank: no string comparison) and reused for
 * every page and both directions. A listing made without stats (for name order) knows
 * names and kinds only; the caller stats the page.
 *
 * `ListingCache`: one listing per directory, valid while
 *  - the directory's identity and change stamp are the same (`dev:ino:mtime:ctime`: any
 *    entry added, removed or renamed changes it, on file systems whose timestamps are
 *    fine enough to tell two changes apart),
 *  - nothing was written through a LocalStorage sharing the cache into the directory or
 *    into one of its subdirectories (`invalidate`: covers coarse timestamps, and a
 *    subdirectory's mtime, which changes without touching its parent),
 *  - and for at most `maxAgeMs` (a file rewritten in place by another process changes
 *    without touching its directory; within that age a page may show its old values).
 * A listing read while a write invalidated its directory is not stored. Bounded by the
 * total number of entries held (least recently used directories go first).
 *
 * Not a singleton: whoever opens backends (the node API's storage factory) makes one and
 * shares it among them.
 */
import { MAX_LIST_LIMIT, RESERVED_PREFIX, pageEntries, type ListOptions, type StorageEntry } from './backend.js';
import { SCAN_DIRECTORY, SCAN_FILE, type ScannedDir } from './dir-scan.js';

export interface ListingCacheOptions {
  /** Entries held across all directories. Default 1,000,000. */
  readonly maxEntries?: number;
  /** Longest time a listing is reused, ms. Default 2000. */
  readonly maxAgeMs?: number;
  /** Directories smaller than this are not cached (cheap to list). Default 1000. */
  readonly minEntries?: number;
  /** Time source (ms). Default Date.now. */
  readonly now?: () => number;
}

/** Code-unit order, the order of `a < b` (and of the other backends' pageEntries). */
function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const LITTLE_ENDIAN = new Uint8Array(new Float64Array([1]).buffer)[7] === 0x3f;

/**
 * The indices of `keys` in ascending key order, ties in index order: a stable LSD radix
 * sort on the bytes of the doubles (for non-negative doubles, the order of the bit
 * patterns is the order of the values), skipping bytes that are the same in every key
 * (all sizes 0, whole seconds…). Undefined when a key is negative (or -0) or the platform
 * is big-endian: the caller sorts with a comparator.
 */
function radixOrder(keys: Float64Array): Uint32Array | undefined {
  const n = keys.length;
  if (!LITTLE_ENDIAN) return undefined;
  for (let i = 0; i < n; i++) if ((keys[i] as number) < 0 || Object.is(keys[i], -0)) return undefined;
  const bytes = new Uint8Array(keys.buffer, keys.byteOffset, n * 8);
  let idx = new Uint32Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  let tmp = new Uint32Array(n);
  const count = new Uint32Array(256);
  for (let b = 0; b < 8 && n > 1; b++) {
    count.fill(0);
    for (let i = 0; i < n; i++) {
      const v = bytes[i * 8 + b] as number;
      count[v] = (count[v] as number) + 1;
    }
    if (count[bytes[b] as number] === n) continue; // this byte is the same in every key
    let pos = 0;
    for (let v = 0; v < 256; v++) {
      const c = count[v] as number;
      count[v] = pos;
      pos += c;
    }
    for (let i = 0; i < n; i++) {
      const j = idx[i] as number;
      const v = bytes[j * 8 + b] as number;
      tmp[count[v] as number] = j;
      count[v] = (count[v] as number) + 1;
    }
    const t = idx;
    idx = tmp;
    tmp = t;
  }
  return idx;
}

/** One directory's files and directories, sorted by name, with or without their stats. */
export class DirListing {
  private readonly orders = new Map<'size' | 'mtime', Uint32Array>();

  private constructor(
    /** The name at name rank r. */
    private readonly nameAt: (r: number) => string,
    /** Entries in all. */
    readonly total: number,
    readonly kinds: Uint8Array,
    readonly sizes: Float64Array,
    readonly mtimes: Float64Array,
    /** Sizes and mtimes are known (else zeros: stat the page). */
    readonly statted: boolean,
  ) {}

  /** The files and directories of a scan, without reserved temporary names, sorted by name. */
  static fromScan(scan: ScannedDir, statted: boolean): DirListing {
    if (scan.sorted) return new DirListing((r) => scan.name(r), scan.count, scan.kinds, scan.sizes, scan.mtimes, statted);
    const keep: number[] = [];
    for (let i = 0; i < scan.count; i++) {
      const k = scan.kinds[i];
      if ((k === SCAN_FILE || k === SCAN_DIRECTORY) && !scan.name(i).startsWith(RESERVED_PREFIX)) keep.push(i);
    }
    const names = keep.map((i) => scan.name(i));
    // sort the names themselves (fast), then find each one's scan index (names are unique)
    const sorted = names.slice().sort(byCodeUnits);
    const at = new Map<string, number>();
    for (let j = 0; j < keep.length; j++) at.set(names[j] as string, keep[j] as number);
    const n = sorted.length;
    const kinds = new Uint8Array(n);
    const sizes = new Float64Array(n);
    const mtimes = new Float64Array(n);
    for (let r = 0; r < n; r++) {
      const i = at.get(sorted[r] as string) as number;
      kinds[r] = scan.kinds[i] as number;
      sizes[r] = scan.sizes[i] as number;
      mtimes[r] = scan.mtimes[i] as number;
    }
    return new DirListing((r) => sorted[r] as string, n, kinds, sizes, mtimes, statted);
  }

  /** The name at name rank `r`. */
  name(r: number): string {
    return this.nameAt(r);
  }

  /** Name ranks in ascending `sort` order (ties by name). */
  private ascending(sort: 'size' | 'mtime'): Uint32Array {
    let o = this.orders.get(sort);
    if (!o) {
      const key = sort === 'size' ? this.sizes : this.mtimes;
      o = radixOrder(key);
      if (!o) {
        o = new Uint32Array(this.total);
        for (let i = 0; i < o.length; i++) o[i] = i;
        o.sort((a, b) => (key[a] as number) - (key[b] as number) || a - b);
      }
      this.orders.set(sort, o);
    }
    return o;
  }

  /**
   * The name ranks of one page (validated as pageEntries validates: USAGE). Size and
   * mtime orders need a statted listing.
   */
  page(options: ListOptions = {}): number[] {
    pageEntries([], options); // the same validation (USAGE) as the other backends
    const offset = options.offset ?? 0;
    const limit = options.limit ?? MAX_LIST_LIMIT;
    const sort = options.sort ?? 'name';
    const n = this.total;
    const asc = options.order !== 'desc';
    const start = asc ? Math.min(n, offset) : Math.max(0, n - offset - limit);
    const end = asc ? Math.min(n, offset + limit) : Math.max(0, n - offset);
    const out: number[] = [];
    const order = sort === 'name' ? undefined : this.ascending(sort);
    for (let i = start; i < end; i++) out.push(order ? (order[i] as number) : i);
    return asc ? out : out.reverse();
  }

  /** The entry at name rank `r` of the directory `dir` (normalized; '' for the root). */
  entry(dir: string, r: number): StorageEntry {
    const name = this.nameAt(r);
    const kind = this.kinds[r] === SCAN_FILE ? 'file' : 'directory';
    return { name, path: dir === '' ? name : `${dir}/${name}`, kind, size: kind === 'file' ? (this.sizes[r] as number) : 0, mtimeMs: this.mtimes[r] as number };
  }
}

interface Cached {
  readonly stamp: string;
  readonly createdMs: number;
  readonly listing: DirListing;
}

/** What `begin` returns and `store` takes: when the read started, in invalidations. */
export type ListingTicket = number;

export class ListingCache {
  private readonly byDir = new Map<string, Cached>();
  private held = 0;
  private readonly maxEntries: number;
  private readonly maxAgeMs: number;
  readonly minEntries: number;
  private readonly now: () => number;
  /** Invalidations so far, and the last one of each directory while reads are in flight. */
  private invalidations = 0;
  private readonly invalidatedAt = new Map<string, number>();
  private reading = 0;

  constructor(o: ListingCacheOptions = {}) {
    this.maxEntries = o.maxEntries ?? 1_000_000;
    this.maxAgeMs = o.maxAgeMs ?? 2000;
    this.minEntries = o.minEntries ?? 1000;
    this.now = o.now ?? Date.now;
  }

  /**
   * The cached listing of `dir` (an absolute path), if it is there with this stamp, young
   * enough, and statted when `needStats`.
   */
  get(dir: string, stamp: string, needStats: boolean): DirListing | undefined {
    const c = this.byDir.get(dir);
    if (!c) return undefined;
    if (c.stamp !== stamp || this.now() - c.createdMs > this.maxAgeMs) {
      this.drop(dir);
      return undefined;
    }
    if (needStats && !c.listing.statted) return undefined;
    // most recently used last
    this.byDir.delete(dir);
    this.byDir.set(dir, c);
    return c.listing;
  }

  /** Call before reading a directory; pass the ticket to `store` (and always call `end`). */
  begin(): ListingTicket {
    this.reading++;
    return this.invalidations;
  }

  /** A read begun with `begin` is over (stored or not). */
  end(): void {
    this.reading = Math.max(0, this.reading - 1);
    if (this.reading === 0) this.invalidatedAt.clear();
  }

  /**
   * Stores a listing read since `ticket` under `stamp` (unless `dir` was invalidated
   * meanwhile, or it is outside [minEntries, maxEntries]).
   */
  store(dir: string, stamp: string, listing: DirListing, ticket: ListingTicket): void {
    if ((this.invalidatedAt.get(dir) ?? -1) >= ticket) return;
    this.drop(dir);
    if (listing.total < this.minEntries || listing.total > this.maxEntries) return;
    for (const d of this.byDir.keys()) {
      if (this.held + listing.total <= this.maxEntries) break;
      this.drop(d);
    }
    this.byDir.set(dir, { stamp, createdMs: this.now(), listing });
    this.held += listing.total;
  }

  /** Forgets the listing of `dir` (an absolute path): something in it changed. */
  invalidate(dir: string): void {
    const n = this.invalidations++;
    if (this.reading > 0) this.invalidatedAt.set(dir, n);
    this.drop(dir);
  }

  private drop(dir: string): void {
    const c = this.byDir.get(dir);
    if (c) {
      this.byDir.delete(dir);
      this.held -= c.listing.total;
    }
  }
}
