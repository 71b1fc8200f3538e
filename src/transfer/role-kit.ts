/**
 * Small pieces the file roles are built from: batching of per-file control entries into
 * few messages, an ordered work queue that yields to the event loop (so that a batch of
 * thousands of entries never stalls the datagram path), and block sources and sinks that
 * open their file only when data first flows (so that a window of many announced files
 * holds no descriptor and no buffer until then).
 */
import { closeSync, constants, open as fsOpen, unlinkSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
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
 * `prefixHash` is the SHA-256 state after those bytes). The file is opened at the first read.
 */
export class TxSource implements BlockSource {
  private src: LocalFileSource | undefined;

  constructor(
    readonly abs: string,
    readonly size: number,
    readonly offset: number,
    private readonly prefixHash: Hash | undefined,
  ) {}

  private get(): LocalFileSource {
    if (!this.src) {
      this.src = new LocalFileSource(this.abs, this.size);
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

/**
 * Where a received file's blocks go: a temporary file, opened (created, or for a resume
 * the existing partial file) on libuv's thread pool when the first block arrives, so that
 * creating thousands of small files never stalls the event loop that receives the
 * datagrams; blocks that arrive before it is open wait in memory. A file with no block to
 * receive is opened when it is finished. Offsets from the data receiver count from the
 * resume offset.
 *
 * An error opening the file is kept and reported when the file is finished (the file
 * fails, the session goes on); a write error, or a full disk, goes to `onFatal`.
 */
export class RxFile implements BlockSink {
  private sink: LocalFileSink | undefined;
  private opening: Promise<void> | undefined;
  private pending: { offset: number; data: Buffer }[] = [];
  private closed = false;
  error: TachyonError | undefined;

  constructor(
    readonly temp: string,
    readonly size: number,
    readonly offset: number,
    private readonly prefixHash: Hash | undefined,
    private readonly ensureDir: (dir: string) => Promise<void>,
    private readonly dir: string,
    private readonly onFatal: (err: TachyonError) => void,
    /** an earlier partial file was found and started over (not a resume) */
    private readonly onReplaced?: () => void,
  ) {}

  /** The temporary file was (or is being) opened: it may have been created or truncated. */
  get touched(): boolean {
    return this.opening !== undefined;
  }

  /** The temporary file is open (its resumed prefix, if any, kept and the rest dropped). */
  get opened(): boolean {
    return this.sink !== undefined;
  }

  private open(): Promise<void> {
    this.opening ??= (async () => {
      let fd: number;
      try {
        await this.ensureDir(this.dir);
        const open = (flags: number): Promise<number> =>
          new Promise<number>((resolve, reject) => fsOpen(this.temp, flags, 0o600, (err, n) => (err ? reject(err) : resolve(n))));
        if (this.prefixHash) fd = await open(LocalFileSink.openFlags(true));
        else {
          // exclusive first: a partial file of an earlier run is the rare case, and its
          // resume record must go with it
          try {
            fd = await open(LocalFileSink.openFlags(false) | constants.O_EXCL);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
            fd = await open(LocalFileSink.openFlags(false));
            this.onReplaced?.();
          }
        }
      } catch (err) {
        this.error = toTachyonError(err, 'IO');
        this.pending = [];
        if (this.error.code === 'DISK_FULL' && !this.closed) this.onFatal(this.error);
        return;
      }
      if (this.closed) {
        // abandoned while opening: leave nothing behind that was not there
        closeSync(fd);
        if (!this.prefixHash) rmQuiet(this.temp);
        return;
      }
      try {
        this.sink = new LocalFileSink(this.temp, this.size, {
          fd,
          ...(this.prefixHash ? { resume: { offset: this.offset, hash: this.prefixHash } } : {}),
        });
        for (const p of this.pending) this.sink.write(this.offset + p.offset, p.data);
      } catch (err) {
        this.error = toTachyonError(err, 'IO');
        this.onFatal(this.error);
      }
      this.pending = [];
    })();
    return this.opening;
  }

  write(offset: number, data: Buffer): void {
    if (this.sink) {
      this.sink.write(this.offset + offset, data);
      return;
    }
    if (this.error) return;
    // the datagram buffer is reused: keep a copy until the file is open
    this.pending.push({ offset, data: Buffer.from(data) });
    void this.open();
  }

  /** Flushes, waits for the writes behind, and returns the SHA-256 of the whole file. */
  async finish(): Promise<string> {
    await this.open();
    if (!this.sink) throw this.error ?? new TachyonError('IO', `cannot open ${this.temp}`);
    return this.sink.finish();
  }

  /** Bytes from the start of the file that are on disk (or kept from before, if untouched). */
  writtenPrefix(): number {
    return this.sink ? this.sink.writtenPrefix() : this.opening ? 0 : this.offset;
  }

  close(): void {
    this.closed = true;
    this.sink?.close();
  }
}

/**
 * mkdir -p on the thread pool, remembering what exists (or is being made) so that many
 * files in one directory cost one call.
 */
export function directoryMaker(): (dir: string) => Promise<void> {
  const made = new Map<string, Promise<void>>();
  return (dir: string): Promise<void> => {
    let p = made.get(dir);
    if (!p) {
      p = mkdir(dir, { recursive: true }).then(() => undefined);
      made.set(dir, p);
      p.catch(() => made.delete(dir));
    }
    return p;
  };
}

function rmQuiet(p: string): void {
  try {
    unlinkSync(p);
  } catch {
    // already gone
  }
}
