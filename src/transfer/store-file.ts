/**
 * Transfers into a StorageBackend (S3 and the like) instead of the local disk: the
 * receiver's BlockSink over the backend's ChunkWriter, and digests of stored ranges for
 * the `compare` decision. The local path keeps its own sink (local-file.ts): these
 * adapters are used only when an account's storage is not a local directory.
 */
import { createHash, type Hash } from 'node:crypto';
import { TachyonError, toTachyonError } from '../core/errors.js';
import { parentOf, type ChunkWriter, type StorageBackend } from '../storage/backend.js';
import type { BlockSink } from '../transport/session/receiver.js';

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
