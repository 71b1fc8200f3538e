/**
 * A cache of directory listings for backends whose `list` must read a whole directory to
 * sort it (LocalStorage): one entry per directory, valid while the directory's identity
 * and change stamp are the same (`dev:ino:mtime:ctime`: any entry added, removed or
 * renamed changes it) and for at most `maxAgeMs` (a file's size or mtime changes without
 * touching its directory; within that age a page may show the old values). Sorted orders
 * are computed once per sort key and reused for every page and both directions. Bounded by
 * the total number of entries held (least recently used directories go first).
 *
 * Not a singleton: whoever opens backends (the node API's storage factory) makes one and
 * shares it among them.
 */
import { pageEntries, type ListOptions, type ListPage, type ListSort, type StorageEntry } from './backend.js';

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

class Listing {
  private readonly sorted = new Map<ListSort, StorageEntry[]>();
  constructor(
    readonly stamp: string,
    readonly createdMs: number,
    private readonly all: StorageEntry[],
  ) {}

  get size(): number {
    return this.all.length;
  }

  private ascending(sort: ListSort): StorageEntry[] {
    let s = this.sorted.get(sort);
    if (!s) {
      // the same order as pageEntries: key, then name
      const byName = (a: StorageEntry, b: StorageEntry): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
      const key = sort === 'size' ? (e: StorageEntry) => e.size : sort === 'mtime' ? (e: StorageEntry) => e.mtimeMs : null;
      s = [...this.all].sort((a, b) => (key === null ? 0 : key(a) - key(b)) || byName(a, b));
      this.sorted.set(sort, s);
    }
    return s;
  }

  page(options: ListOptions = {}): ListPage {
    pageEntries([], options); // the same validation (USAGE) as an uncached listing
    const offset = options.offset ?? 0;
    const limit = options.limit ?? Number.MAX_SAFE_INTEGER;
    const asc = this.ascending(options.sort ?? 'name');
    const n = asc.length;
    if ((options.order ?? 'asc') === 'asc') return { entries: asc.slice(offset, offset + limit), total: n };
    const end = Math.max(0, n - offset);
    const start = Math.max(0, end - limit);
    return { entries: asc.slice(start, end).reverse(), total: n };
  }
}

/** A directory's names (files and directories, by d_type), sorted by name. */
export interface NameListing {
  readonly names: readonly string[];
}

export class ListingCache {
  private readonly byDir = new Map<string, Listing>();
  private readonly namesByDir = new Map<string, { stamp: string; createdMs: number; names: string[] }>();
  private held = 0;
  private readonly maxEntries: number;
  private readonly maxAgeMs: number;
  readonly minEntries: number;
  private readonly now: () => number;

  constructor(o: ListingCacheOptions = {}) {
    this.maxEntries = o.maxEntries ?? 1_000_000;
    this.maxAgeMs = o.maxAgeMs ?? 2000;
    this.minEntries = o.minEntries ?? 1000;
    this.now = o.now ?? Date.now;
  }

  /** A page from the cached listing of `dir`, if it is there with this stamp and young enough. */
  page(dir: string, stamp: string, options?: ListOptions): ListPage | undefined {
    const l = this.byDir.get(dir);
    if (!l) return undefined;
    if (l.stamp !== stamp || this.now() - l.createdMs > this.maxAgeMs) {
      this.drop(dir, l);
      return undefined;
    }
    // most recently used last
    this.byDir.delete(dir);
    this.byDir.set(dir, l);
    return l.page(options);
  }

  /** Stores a fresh listing and returns the requested page of it. */
  store(dir: string, stamp: string, entries: StorageEntry[], options?: ListOptions): ListPage {
    const l = new Listing(stamp, this.now(), entries);
    const old = this.byDir.get(dir);
    if (old) this.drop(dir, old);
    if (entries.length >= this.minEntries && entries.length <= this.maxEntries) {
      for (const [d, x] of this.byDir) {
        if (this.held + l.size <= this.maxEntries) break;
        this.drop(d, x);
      }
      this.byDir.set(dir, l);
      this.held += l.size;
    }
    return l.page(options);
  }

  /**
   * The sorted names of `dir` (for name-ordered pages, which need the stats of one page
   * only), if cached with this stamp and young enough.
   */
  names(dir: string, stamp: string): readonly string[] | undefined {
    const n = this.namesByDir.get(dir);
    if (!n) return undefined;
    if (n.stamp !== stamp || this.now() - n.createdMs > this.maxAgeMs) {
      this.namesByDir.delete(dir);
      this.held -= n.names.length;
      return undefined;
    }
    this.namesByDir.delete(dir);
    this.namesByDir.set(dir, n);
    return n.names;
  }

  storeNames(dir: string, stamp: string, names: string[]): void {
    const old = this.namesByDir.get(dir);
    if (old) {
      this.namesByDir.delete(dir);
      this.held -= old.names.length;
    }
    if (names.length < this.minEntries || names.length > this.maxEntries) return;
    for (const [d, x] of this.namesByDir) {
      if (this.held + names.length <= this.maxEntries) break;
      this.namesByDir.delete(d);
      this.held -= x.names.length;
    }
    for (const [d, x] of this.byDir) {
      if (this.held + names.length <= this.maxEntries) break;
      this.drop(d, x);
    }
    this.namesByDir.set(dir, { stamp, createdMs: this.now(), names });
    this.held += names.length;
  }

  private drop(dir: string, l: Listing): void {
    if (this.byDir.get(dir) === l) {
      this.byDir.delete(dir);
      this.held -= l.size;
    }
  }
}
