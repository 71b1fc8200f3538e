/**
 * Small pieces the file roles are built from: batching of per-file control entries into
 * few messages, an ordered work queue that yields to the event loop (so that a batch of
 * thousands of entries never stalls the datagram path), and block sources and sinks that
 * open their file only when data first flows (so that a window of many announced files
 * holds no descriptor and no buffer until then).
 */
import { mkdirSync } from 'node:fs';
import type { Hash } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import { TachyonError, toTachyonError } from '../core/errors.js';
import type { BlockSink } from '../transport/session/receiver.js';
import type { BlockSource } from '../transport/session/sender.js';
import { LocalFileSink, LocalFileSource } from './local-file.js';

/** most entries and (estimated) JSON bytes in one batched message: well under the 1 MiB frame limit */
export const BATCH_ENTRIES = 1024;
export const BATCH_BYTES = 384 * 1024;

/** Upper bound of a path's JSON size (escapes can take 6 bytes per character). */
export function pathCost(p: string): number {
  return 96 + p.length * 6;
}

/**
 * Collects entries and hands them over in batches: when the batch is full, at `flush()`,
 * or `delayMs` after the first entry (when a delay is given).
 */
export class Batcher<T> {
  private items: T[] = [];
  private bytes = 0;
  private cancel: (() => void) | undefined;

  constructor(
    private readonly emit: (items: T[]) => void,
    private readonly clock: Clock,
    private readonly delayMs?: number,
  ) {}

  push(item: T, cost = 96): void {
    this.items.push(item);
    this.bytes += cost;
    if (this.items.length >= BATCH_ENTRIES || this.bytes >= BATCH_BYTES) this.flush();
    else if (this.delayMs !== undefined && this.cancel === undefined) this.cancel = this.clock.setTimer(this.delayMs, () => {
      this.cancel = undefined;
      this.flush();
    });
  }

  flush(): void {
    this.cancel?.();
    this.cancel = undefined;
    if (this.items.length === 0) return;
    const items = this.items;
    this.items = [];
    this.bytes = 0;
    this.emit(items);
  }

  /** Drops what is pending (the session failed). */
  discard(): void {
    this.cancel?.();
    this.cancel = undefined;
    this.items = [];
    this.bytes = 0;
  }
}

/** time one slice of queued work may take before the event loop gets a turn */
const SLICE_MS = 4;

/**
 * Runs queued jobs in order, a few milliseconds at a time. A job that throws ends the
 * queue's processing through `onError`.
 */
export class WorkQueue {
  private readonly jobs: (() => void)[] = [];
  private head = 0;
  private cancel: (() => void) | undefined;
  private running = false;
  private stopped = false;

  constructor(
    private readonly clock: Clock,
    private readonly onError: (err: unknown) => void,
  ) {}

  push(job: () => void): void {
    if (this.stopped) return;
    this.jobs.push(job);
    if (!this.running && this.cancel === undefined) this.drain();
  }

  stop(): void {
    this.stopped = true;
    this.cancel?.();
    this.cancel = undefined;
    this.jobs.length = 0;
    this.head = 0;
  }

  private drain(): void {
    this.running = true;
    const t0 = this.clock.now();
    try {
      while (this.head < this.jobs.length && !this.stopped) {
        const job = this.jobs[this.head++]!;
        job();
        if (this.clock.now() - t0 >= SLICE_MS && this.head < this.jobs.length) {
          this.cancel = this.clock.setTimer(0, () => {
            this.cancel = undefined;
            this.drain();
          });
          return;
        }
      }
      this.jobs.length = 0;
      this.head = 0;
    } catch (err) {
      this.stop();
      this.onError(err);
    } finally {
      this.running = false;
    }
  }
}

/**
 * The blocks of a file to send, from `offset` on (the receiver holds what is before it;
 * `prefixHash` is the SHA-256 state after those bytes). The file is opened at the first
 * read, with `openFile` (the server's jail pins it).
 */
export class TxSource implements BlockSource {
  private src: LocalFileSource | undefined;

  constructor(
    readonly abs: string,
    readonly size: number,
    readonly offset: number,
    private readonly prefixHash: Hash | undefined,
    private readonly openFile?: (abs: string) => number,
  ) {}

  private get(): LocalFileSource {
    if (!this.src) {
      this.src = new LocalFileSource(this.abs, this.size, this.openFile);
      if (this.prefixHash) this.src.resumeAt(this.offset, this.prefixHash);
    }
    return this.src;
  }

  read(offset: number, len: number, out: Buffer, at: number): void {
    this.get().read(this.offset + offset, len, out, at);
  }

  /** SHA-256 of the whole file (resumed prefix included). */
  digest(): string {
    return this.get().digest();
  }

  close(): void {
    this.src?.close();
  }
}

/** How a receiver opens its temporary files (the server's jail pins both). */
export interface TempFiles {
  /** creates a fresh temporary file (a stale entry of that name is removed); read/write descriptor */
  create(temp: string): number;
  /** opens an existing temporary file to resume it: read/write, not truncated, never through a link */
  reopen(temp: string): number;
}

/**
 * Where a received file's blocks go: a temporary file, opened (created, or for a resume
 * the existing partial file) when the first block arrives. The opening runs through
 * `defer` (the role's queue of file work, a few milliseconds at a time) rather than inside
 * the datagram handler, so that creating thousands of small files never stalls the
 * datagram path; blocks that arrive before the file is open wait in memory. A file with
 * no block to receive is opened when it is finished. Offsets from the data receiver count
 * from the resume offset.
 *
 * An error opening the file is kept and reported when the file is finished (the file
 * fails, the session goes on); a full disk, or a write error, goes to `onFatal`.
 */
export class RxFile implements BlockSink {
  private sink: LocalFileSink | undefined;
  private state: 'idle' | 'queued' | 'open' | 'failed' | 'closed' = 'idle';
  private pending: { offset: number; data: Buffer }[] = [];
  private waiters: (() => void)[] = [];
  error: TachyonError | undefined;

  constructor(
    readonly temp: string,
    readonly size: number,
    readonly offset: number,
    private readonly prefixHash: Hash | undefined,
    private readonly files: TempFiles,
    private readonly defer: (job: () => void) => void,
    private readonly onFatal: (err: TachyonError) => void,
  ) {}

  /** An open was attempted: the temporary file may have been created, or cut to its kept prefix. */
  get touched(): boolean {
    return this.state === 'open' || this.state === 'failed';
  }

  /** The temporary file is open (its resumed prefix, if any, kept and the rest dropped). */
  get opened(): boolean {
    return this.sink !== undefined;
  }

  private request(): void {
    if (this.state !== 'idle') return;
    this.state = 'queued';
    this.defer(() => this.openNow());
  }

  private openNow(): void {
    if (this.state !== 'queued') return; // closed meanwhile
    try {
      this.sink = this.prefixHash
        ? new LocalFileSink(this.temp, this.size, (p) => this.files.reopen(p), { offset: this.offset, hash: this.prefixHash })
        : new LocalFileSink(this.temp, this.size, (p) => this.files.create(p));
      this.state = 'open';
      for (const p of this.pending) this.sink.write(this.offset + p.offset, p.data);
    } catch (err) {
      this.error = toTachyonError(err, 'IO');
      if (this.state !== 'open') this.state = 'failed';
      if (this.state === 'open' || this.error.code === 'DISK_FULL') this.onFatal(this.error);
    }
    this.pending = [];
    for (const w of this.waiters.splice(0)) w();
  }

  write(offset: number, data: Buffer): void {
    if (this.sink) {
      this.sink.write(this.offset + offset, data);
      return;
    }
    if (this.state === 'failed' || this.state === 'closed') return;
    // the datagram buffer is reused: keep a copy until the file is open
    this.pending.push({ offset, data: Buffer.from(data) });
    this.request();
  }

  /** Flushes, waits for the writes behind, and returns the SHA-256 of the whole file. */
  async finish(): Promise<string> {
    if (this.state === 'idle' || this.state === 'queued') {
      const opened = new Promise<void>((resolve) => this.waiters.push(resolve));
      this.request();
      await opened;
    }
    if (!this.sink) throw this.error ?? new TachyonError('IO', `cannot open ${this.temp}`);
    return this.sink.finish();
  }

  /** Bytes from the start of the file that are on disk (or kept from before, if untouched). */
  writtenPrefix(): number {
    return this.sink ? this.sink.writtenPrefix() : this.touched ? 0 : this.offset;
  }

  close(): void {
    if (this.state !== 'open' && this.state !== 'failed') this.state = 'closed';
    this.sink?.close();
    this.pending = [];
    for (const w of this.waiters.splice(0)) w();
  }
}

/** mkdir -p, remembering what exists so that many files in one directory cost one call. */
export function directoryMaker(): (dir: string) => void {
  const made = new Set<string>();
  return (dir: string): void => {
    if (made.has(dir)) return;
    mkdirSync(dir, { recursive: true });
    made.add(dir);
  };
}
