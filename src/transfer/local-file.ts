/**
 * Local-disk block source and sink. (The storage layer will generalise these behind
 * the StorageBackend seam; the transport only sees BlockSource/BlockSink.)
 */
import { closeSync, constants as fsc, fstatSync, openSync, readSync, unlinkSync, write as fsWrite, writeSync, ftruncateSync } from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import type { BlockSink } from '../transport/session/receiver.js';
import type { BlockSource } from '../transport/session/sender.js';
import { TachyonError, toTachyonError } from '../core/errors.js';

const READ_AHEAD = 1 << 20;
/** blocks at least this large are read straight into the datagram (no read-ahead) */
const DIRECT_READ_MIN = 16 * 1024;

/**
 * Reads a file for sending. Sequential reads go through a 1 MiB read-ahead buffer and
 * feed the SHA-256 of the whole file; out-of-order reads (retransmissions) read directly.
 */
export class LocalFileSource implements BlockSource {
  private fd: number;
  private buf: Buffer;
  private bufStart = 0;
  private bufLen = 0;
  private hashed = 0;
  private hash: Hash = createHash('sha256');
  private digestHex: string | undefined;

  /**
   * @param openFile opens the file for reading and returns the descriptor (default: a
   *   plain open); the server passes its jail's `openAbsForRead`.
   */
  constructor(
    readonly path: string,
    readonly size: number,
    private readonly openFile: (path: string) => number = (p) => openSync(p, 'r'),
  ) {
    // the file is opened on first read, so that many announced files hold no descriptor
    this.fd = -1;
    // a small file needs no more read-ahead than its size (many small files: not 1 MiB each)
    this.buf = Buffer.allocUnsafe(Math.max(1, Math.min(READ_AHEAD, size)));
    if (size === 0) this.digestHex = this.hash.digest('hex');
  }

  /**
   * Resume: the bytes before `offset` are already at the receiver and are not read;
   * `prefixHash` is the SHA-256 state after them, so that digest() still covers the whole
   * file. Call before the first read.
   */
  resumeAt(offset: number, prefixHash: Hash): void {
    this.hash = prefixHash;
    this.hashed = offset;
    this.digestHex = offset === this.size ? prefixHash.digest('hex') : undefined;
  }

  private open(): void {
    if (this.fd >= 0) return;
    try {
      this.fd = this.openFile(this.path);
    } catch (err) {
      throw toTachyonError(err, 'IO');
    }
  }

  read(offset: number, len: number, out: Buffer, at: number): void {
    this.open();
    if (offset + len > this.size) throw new TachyonError('IO', `read beyond end of ${this.path}`);
    if (len >= DIRECT_READ_MIN && this.bufLen === 0) {
      // large blocks (jumbo datagrams): one read straight into the packet, no staging copy
      const n = this.readFully(out, len, offset, at);
      if (n !== len) throw new TachyonError('IO', `${this.path} shrank while being sent`);
      if (offset === this.hashed) {
        this.hash.update(out.subarray(at, at + len));
        this.hashed += len;
        if (this.hashed === this.size) this.digestHex = this.hash.digest('hex');
      }
      return;
    }
    const bufEnd = this.bufStart + this.bufLen;
    if (offset >= this.bufStart && offset + len <= bufEnd) {
      this.buf.copy(out, at, offset - this.bufStart, offset - this.bufStart + len);
      return;
    }
    // moving forward from the buffer (a block may straddle its end): refill from here
    if ((offset >= this.bufStart && offset <= bufEnd) || this.bufLen === 0) {
      const want = Math.min(READ_AHEAD, this.size - offset);
      const n = this.readFully(this.buf, want, offset);
      if (n < want) throw new TachyonError('IO', `${this.path} shrank while being sent`);
      this.bufStart = offset;
      this.bufLen = n;
      // feed the whole-file digest with the bytes not hashed yet, in order
      if (this.hashed >= offset && this.hashed < offset + n) {
        this.hash.update(this.buf.subarray(this.hashed - offset, n));
        this.hashed = offset + n;
        if (this.hashed === this.size) this.digestHex = this.hash.digest('hex');
      }
      this.buf.copy(out, at, 0, len);
      return;
    }
    const n = readSync(this.fd, out, at, len, offset);
    if (n !== len) throw new TachyonError('IO', `short read from ${this.path}`);
  }

  private readFully(into: Buffer, len: number, pos: number, at = 0): number {
    let got = 0;
    while (got < len) {
      const n = readSync(this.fd, into, at + got, len - got, pos + got);
      if (n === 0) break;
      got += n;
    }
    return got;
  }

  /** The SHA-256 of the whole file, available once every byte was read in order. */
  digest(): string {
    if (this.digestHex === undefined) {
      this.open();
      // not everything was read sequentially (should not happen): hash what remains
      const b = Buffer.allocUnsafe(READ_AHEAD);
      while (this.hashed < this.size) {
        const n = this.readFully(b, Math.min(READ_AHEAD, this.size - this.hashed), this.hashed);
        if (n === 0) throw new TachyonError('IO', `${this.path} shrank while being sent`);
        this.hash.update(b.subarray(0, n));
        this.hashed += n;
      }
      this.digestHex = this.hash.digest('hex');
    }
    return this.digestHex;
  }

  close(): void {
    if (this.fd >= 0) {
      try {
        closeSync(this.fd);
      } catch {
        // already closed
      }
      this.fd = -1;
    }
  }
}

/**
 * Creates a fresh temporary file for writing, mode 0600: a stale file (or a symbolic
 * link planted) under that name is removed first, then the file is created with
 * `O_CREAT|O_EXCL|O_NOFOLLOW`, so writing never follows a link to somewhere else.
 */
export function createTempFile(tempPath: string): number {
  try {
    unlinkSync(tempPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toTachyonError(err, 'IO');
  }
  try {
    return openSync(tempPath, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  } catch (err) {
    throw toTachyonError(err, 'IO');
  }
}

const RUN_MAX = 1 << 20;
const HASH_STEP = 1 << 20;
/** run buffers a sink may have in flight to the thread pool (16 MiB of write-behind) */
const RUN_POOL = 16;

/**
 * Writes received blocks to a temporary file. Contiguous blocks are gathered into runs
 * of up to 1 MiB, written behind on libuv's thread pool so that the event loop (which
 * receives, authenticates and decrypts datagrams) never waits for the file system; when
 * all run buffers are in flight, a run is written synchronously (back-pressure).
 * The SHA-256 is computed over the contiguous prefix as it grows: in-order runs are
 * hashed from memory, anything that arrived out of order is read back once written.
 */
export class LocalFileSink implements BlockSink {
  private fd: number;
  private run: Buffer;
  private runStart = 0;
  private runLen = 0;
  private readonly free: Buffer[] = [];
  private buffers = 1;
  /** writes in flight on the thread pool: [start, end) byte ranges */
  private readonly inflight = new Set<{ start: number; end: number }>();
  private drained: (() => void) | undefined;
  private asyncError: unknown;
  private closeWhenDrained = false;
  private hash: Hash = createHash('sha256');
  private hashed = 0;
  /** received byte ranges beyond the hashed prefix: start -> end */
  private readonly ranges = new Map<number, number>();
  private contiguous = 0;
  /** runs written synchronously because every run buffer was in flight */
  syncWrites = 0;

  /**
   * @param open creates the temporary file and returns a read/write descriptor; the
   *   default is {@link createTempFile}. The server passes its jail's `createTemp`, which
   *   also pins the file inside the user's root.
   * @param resume keep the first `offset` bytes of an existing temporary file (the SHA-256
   *   state after them is `hash`) and drop the rest; `open` then opens that file (read and
   *   write, no truncation, never through a symbolic link) instead of creating one.
   */
  constructor(
    readonly tempPath: string,
    readonly size: number,
    open: (tempPath: string) => number = createTempFile,
    resume?: { offset: number; hash: Hash },
  ) {
    try {
      this.fd = open(tempPath);
    } catch (err) {
      throw toTachyonError(err, 'IO');
    }
    if (resume) {
      try {
        ftruncateSync(this.fd, resume.offset);
      } catch (err) {
        closeSync(this.fd);
        throw toTachyonError(err, 'IO');
      }
      this.hash = resume.hash;
      this.hashed = this.contiguous = resume.offset;
    }
    this.run = Buffer.allocUnsafeSlow(Math.min(RUN_MAX, Math.max(size, 1)));
  }

  /**
   * Bytes from the start of the file that are written (what a later run may resume from):
   * the contiguous prefix, short of any write still in flight.
   */
  writtenPrefix(): number {
    let prefix = this.contiguous;
    if (this.runLen > 0) prefix = Math.min(prefix, this.runStart);
    for (const w of this.inflight) prefix = Math.min(prefix, w.start);
    return prefix;
  }

  write(offset: number, data: Buffer): void {
    if (this.asyncError !== undefined) throw toTachyonError(this.asyncError, 'IO');
    if (this.runLen > 0 && offset === this.runStart + this.runLen && this.runLen + data.length <= this.run.length) {
      data.copy(this.run, this.runLen);
      this.runLen += data.length;
    } else {
      this.flushRun();
      this.runStart = offset;
      if (data.length > this.run.length) {
        // a block larger than a run (tiny files start with a small run): write it as it is
        this.writeSyncAll(data, offset);
      } else {
        data.copy(this.run, 0);
        this.runLen = data.length;
      }
    }
    // track contiguity for hashing
    if (offset === this.contiguous) {
      this.contiguous += data.length;
      let next = this.ranges.get(this.contiguous);
      while (next !== undefined) {
        this.ranges.delete(this.contiguous);
        this.contiguous = next;
        next = this.ranges.get(this.contiguous);
      }
    } else {
      // merge with a following range if one starts where this ends
      const end = offset + data.length;
      const after = this.ranges.get(end);
      if (after !== undefined) this.ranges.delete(end);
      this.ranges.set(offset, after ?? end);
      // (ranges that end exactly at `offset` are joined when contiguity reaches them)
    }
    if (this.runLen === this.run.length) this.flushRun();
    // hash the verified prefix a little at a time so that the event loop never stalls long
    if (this.contiguous - this.hashed >= 2 * HASH_STEP) this.hashUpTo(this.hashed + HASH_STEP, false);
  }

  private writeSyncAll(buf: Buffer, pos: number): void {
    let done = 0;
    while (done < buf.length) done += writeSync(this.fd, buf, done, buf.length - done, pos + done);
  }

  private flushRun(): void {
    if (this.runLen === 0) return;
    const start = this.runStart;
    const len = this.runLen;
    const buf = this.run;
    this.runLen = 0;
    const end = start + len;
    if (end <= this.contiguous) {
      // everything before the run is here: catch the digest up (reading back what is
      // on disk already, if any) and hash the run from memory
      if (start > this.hashed) this.hashUpTo(start, false);
      if (start <= this.hashed && this.hashed < end) {
        this.hash.update(buf.subarray(this.hashed - start, len));
        this.hashed = end;
      }
    }
    const next = this.free.pop() ?? (this.buffers < RUN_POOL ? (this.buffers++, Buffer.allocUnsafeSlow(buf.length)) : undefined);
    if (next === undefined) {
      // every run buffer is in flight: write this one now (the disk is the bottleneck)
      this.syncWrites++;
      this.writeSyncAll(buf.subarray(0, len), start);
      return;
    }
    this.run = next;
    const w = { start, end: start + len };
    this.inflight.add(w);
    const submit = (done: number): void => {
      fsWrite(this.fd, buf, done, len - done, start + done, (err, n) => {
        if (err === null && done + n < len && n > 0) return submit(done + n);
        if (err !== null) this.asyncError ??= err;
        else if (n === 0) this.asyncError ??= new TachyonError('IO', `short write to ${this.tempPath}`);
        this.inflight.delete(w);
        this.free.push(buf);
        if (this.inflight.size === 0) this.onDrained();
      });
    };
    submit(0);
  }

  private onDrained(): void {
    const d = this.drained;
    this.drained = undefined;
    d?.();
    if (this.closeWhenDrained) this.closeNow();
  }

  private waitDrained(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((resolve) => (this.drained = resolve));
  }

  /**
   * Hashes [hashed, limit) reading back from the file. Unless `force`, gives up when a
   * write in flight covers part of that range (it is hashed later, once on disk).
   */
  private hashUpTo(limit: number, force: boolean): void {
    // data still in the run buffer is not on disk yet
    if (this.runLen > 0 && this.runStart < limit) this.flushRun();
    if (this.hashed >= limit) return;
    if (!force) for (const w of this.inflight) if (w.start < limit && w.end > this.hashed) return;
    const b = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(1, limit - this.hashed)));
    while (this.hashed < limit) {
      const n = readSync(this.fd, b, 0, Math.min(b.length, limit - this.hashed), this.hashed);
      if (n === 0) throw new TachyonError('IO', `short read back from ${this.tempPath}`);
      this.hash.update(b.subarray(0, n));
      this.hashed += n;
    }
  }

  /** Flushes everything, waits for the writes behind, and returns the file's SHA-256. */
  async finish(): Promise<string> {
    this.flushRun();
    await this.waitDrained();
    if (this.asyncError !== undefined) throw toTachyonError(this.asyncError, 'IO');
    if (this.contiguous !== this.size) {
      // ranges map may hold pieces not joined yet; they are all present when complete
      this.contiguous = this.size;
    }
    this.hashUpTo(this.size, true);
    const st = fstatSync(this.fd);
    if (st.size !== this.size) ftruncateSync(this.fd, this.size);
    return this.hash.digest('hex');
  }

  /** Releases the file; with writes still in flight, the descriptor closes when they end. */
  close(): void {
    if (this.fd < 0) return;
    try {
      this.flushRun();
    } catch {
      // the caller is discarding the file
    }
    if (this.inflight.size > 0) this.closeWhenDrained = true;
    else this.closeNow();
  }

  private closeNow(): void {
    if (this.fd < 0) return;
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    this.fd = -1;
  }
}
