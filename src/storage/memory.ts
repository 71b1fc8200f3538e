/**
 * MemoryStorage: a StorageBackend held in memory, for tests. Same semantics as the local
 * backend (the shared contract suite checks both); an optional byte budget makes writers
 * fail with DISK_FULL.
 */
import { TachyonError } from '../core/errors.js';
import {
  CoverageSet,
  baseName,
  checkChunk,
  checkMtime,
  checkRange,
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

type Node = { kind: 'directory'; mtimeMs: number } | { kind: 'file'; mtimeMs: number; data: Buffer };

export interface MemoryStorageOptions {
  /** Milliseconds since the epoch for mtimes (default Date.now). */
  readonly now?: () => number;
  /** Total bytes files and open writers may hold; beyond it writers fail with DISK_FULL. */
  readonly maxBytes?: number;
}

function notFound(path: string): TachyonError {
  return new TachyonError('NOT_FOUND', `no such file or directory: ${path}`, { publicMessage: 'No such file or directory.' });
}

export class MemoryStorage implements StorageBackend {
  readonly capabilities: StorageCapabilities = { rangedReads: true, outOfOrderWrites: true, atomicRename: true };
  private readonly nodes = new Map<string, Node>();
  private readonly now: () => number;
  private readonly maxBytes: number;
  private reserved = 0;

  constructor(options: MemoryStorageOptions = {}) {
    this.now = options.now ?? Date.now;
    this.maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
    this.nodes.set('', { kind: 'directory', mtimeMs: this.now() });
  }

  private entry(path: string, node: Node): StorageEntry {
    return { name: baseName(path), path, kind: node.kind, size: node.kind === 'file' ? node.data.length : 0, mtimeMs: node.mtimeMs };
  }

  private get(path: string): Node {
    const node = this.nodes.get(path);
    if (node === undefined) {
      // A file in the way is reported like a missing directory (ENOTDIR on disk).
      throw notFound(path);
    }
    return node;
  }

  private requireDir(path: string): void {
    const node = this.nodes.get(path);
    if (node === undefined || node.kind !== 'directory') throw notFound(path);
  }

  private touch(dir: string): void {
    const node = this.nodes.get(dir);
    if (node !== undefined) node.mtimeMs = this.now();
  }

  private children(dir: string): string[] {
    const prefix = dir === '' ? '' : `${dir}/`;
    const out: string[] = [];
    for (const key of this.nodes.keys()) {
      if (key !== '' && key.startsWith(prefix) && !key.slice(prefix.length).includes('/')) out.push(key);
    }
    return out;
  }

  private descendants(dir: string): string[] {
    const prefix = `${dir}/`;
    return [...this.nodes.keys()].filter((k) => k.startsWith(prefix));
  }

  async stat(path: string): Promise<StorageEntry> {
    const p = normalizeStoragePath(path);
    return this.entry(p, this.get(p));
  }

  async list(dir: string, options?: ListOptions): Promise<ListPage> {
    const d = normalizeStoragePath(dir);
    this.requireDir(d);
    return pageEntries(
      this.children(d).map((p) => this.entry(p, this.get(p))),
      options,
    );
  }

  async openRead(path: string): Promise<ReadHandle> {
    const p = normalizeStoragePath(path);
    const node = this.get(p);
    if (node.kind !== 'file') throw new TachyonError('IS_DIRECTORY', `is a directory: ${p}`);
    const data = node.data; // a snapshot: later writes publish a new buffer
    let closed = false;
    return {
      size: data.length,
      async read(offset: number, length: number): Promise<Buffer> {
        if (closed) throw new TachyonError('INTERNAL', `read of ${p} after close`);
        checkRange(p, offset, length);
        return Buffer.from(data.subarray(Math.min(offset, data.length), Math.min(offset + length, data.length)));
      },
      async close(): Promise<void> {
        closed = true;
      },
    };
  }

  private checkTarget(p: string, overwrite: boolean): void {
    if (p === '') throw new TachyonError('IS_DIRECTORY', 'the root is a directory');
    this.requireDir(parentOf(p));
    const existing = this.nodes.get(p);
    if (existing?.kind === 'directory') throw new TachyonError('IS_DIRECTORY', `is a directory: ${p}`);
    if (existing !== undefined && !overwrite) throw new TachyonError('EXISTS', `exists: ${p}`);
  }

  async createWriter(path: string, size: number, options: WriterOptions = {}): Promise<ChunkWriter> {
    const p = normalizeStoragePath(path);
    checkSize(p, size);
    checkMtime(p, options.mtimeMs);
    const overwrite = options.overwrite === true;
    this.checkTarget(p, overwrite);
    if (this.reserved + size > this.maxBytes) throw new TachyonError('DISK_FULL', `memory storage full writing ${p}`);
    this.reserved += size;
    const data = Buffer.alloc(size);
    const coverage = new CoverageSet();
    let state: 'open' | 'committed' | 'aborted' = 'open';
    const release = (): void => {
      this.reserved -= size;
    };
    return {
      path: p,
      size,
      write: async (offset: number, chunk: Uint8Array): Promise<void> => {
        if (state !== 'open') throw writerClosed(p, state);
        checkChunk(p, size, offset, chunk.length);
        data.set(chunk, offset);
        coverage.add(offset, offset + chunk.length);
      },
      commit: async (): Promise<void> => {
        if (state !== 'open') throw writerClosed(p, state);
        if (!coverage.covers(size)) throw incomplete(p);
        try {
          this.checkTarget(p, overwrite);
        } catch (err) {
          state = 'aborted';
          release();
          throw err;
        }
        const old = this.nodes.get(p);
        if (old?.kind === 'file') this.reserved -= old.data.length;
        this.nodes.set(p, { kind: 'file', mtimeMs: options.mtimeMs ?? this.now(), data });
        this.touch(parentOf(p));
        state = 'committed';
      },
      abort: async (): Promise<void> => {
        if (state !== 'open') return;
        state = 'aborted';
        release();
      },
    };
  }

  async mkdir(path: string, options: { readonly recursive?: boolean } = {}): Promise<void> {
    const p = normalizeStoragePath(path);
    if (this.nodes.has(p)) throw new TachyonError('EXISTS', `exists: ${p || '/'}`);
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      const node = this.nodes.get(prefix);
      if (node?.kind === 'directory') continue;
      if (node === undefined && options.recursive === true) {
        this.nodes.set(prefix, { kind: 'directory', mtimeMs: this.now() });
        this.touch(parentOf(prefix));
        continue;
      }
      throw notFound(prefix);
    }
    this.nodes.set(p, { kind: 'directory', mtimeMs: this.now() });
    this.touch(parentOf(p));
  }

  async rename(from: string, to: string, options: { readonly overwrite?: boolean } = {}): Promise<void> {
    const f = normalizeStoragePath(from);
    const t = normalizeStoragePath(to);
    if (f === '' || t === '') throw new TachyonError('PERMISSION', 'the root cannot be renamed or replaced');
    const node = this.get(f);
    if (t === f) return;
    if (t.startsWith(`${f}/`)) {
      throw new TachyonError('PATH_INVALID', `cannot move ${f} into itself`, { details: { reason: 'into-itself' } });
    }
    this.requireDir(parentOf(t));
    const existing = this.nodes.get(t);
    if (existing !== undefined && !(options.overwrite === true && existing.kind === 'file' && node.kind === 'file')) {
      throw new TachyonError(existing.kind === 'directory' ? 'IS_DIRECTORY' : 'EXISTS', `exists: ${t}`);
    }
    if (existing?.kind === 'file') this.reserved -= existing.data.length;
    const moved: Array<[string, Node]> = [[t, node]];
    for (const k of this.descendants(f)) moved.push([t + k.slice(f.length), this.nodes.get(k) as Node]);
    for (const k of this.descendants(f)) this.nodes.delete(k);
    this.nodes.delete(f);
    for (const [k, n] of moved) this.nodes.set(k, n);
    this.touch(parentOf(f));
    this.touch(parentOf(t));
  }

  async remove(path: string, options: { readonly recursive?: boolean } = {}): Promise<void> {
    const p = normalizeStoragePath(path);
    if (p === '') throw new TachyonError('PERMISSION', 'the root cannot be removed');
    const node = this.get(p);
    const below = node.kind === 'directory' ? this.descendants(p) : [];
    if (below.length > 0 && options.recursive !== true) {
      throw new TachyonError('IS_DIRECTORY', `directory not empty: ${p}`, { details: { reason: 'not-empty' } });
    }
    for (const k of [...below, p]) {
      const n = this.nodes.get(k);
      if (n?.kind === 'file') this.reserved -= n.data.length;
      this.nodes.delete(k);
    }
    this.touch(parentOf(p));
  }
}
