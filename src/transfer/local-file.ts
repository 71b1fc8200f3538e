/**
 * Local-disk block source and sink. (The storage layer will generalise these behind
 * the StorageBackend seam; the transport only sees BlockSource/BlockSink.)
 */
import { closeSync, constants as fsc, fstatSync, openSync, readSync, unlinkSync, writeSync, ftruncateSync } from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import type { BlockSink } from '../transport/session/receiver.js';
import type { BlockSource } from '../transport/session/sender.js';
import { TachyonError, toTachyonError } from '../core/errors.js';

const READ_AHEAD = 1 << 20;

/**
 * Reads a file for sending. Sequential reads go through a 1 MiB read-ahead buffer and
 * feed the SHA-256 of the whole file; out-of-order reads (retransmissions) read directly.
 */
export class LocalFileSource implements BlockSource {
  private fd: number;
  private buf = Buffer.allocUnsafe(READ_AHEAD);
  private bufStart = 0;
  private bufLen = 0;
  private hashed = 0;
  private readonly hash: Hash = createHash('sha256');
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
    if (size === 0) this.digestHex = this.hash.digest('hex');
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

  private readFully(into: Buffer, len: number, pos: number): number {
    let got = 0;
    while (got < len) {
      const n = readSync(this.fd, into, got, len - got, pos + got);
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

const RUN_MAX = 256 * 1024;
const HASH_STEP = 256 * 1024;

/**
 * Writes received blocks to a temporary file: contiguous blocks are gathered into
 * runs of up to 256 KiB per write. The SHA-256 is computed over the contiguous
 * prefix as it grows, reading back what was written.
 */
export class LocalFileSink implements BlockSink {
  private fd: number;
  private run = Buffer.allocUnsafe(RUN_MAX);
  private runStart = 0;
  private runLen = 0;
  private readonly hash: Hash = createHash('sha256');
  private hashed = 0;
  /** received byte ranges beyond the hashed prefix: start -> end */
  private readonly ranges = new Map<number, number>();
  private contiguous = 0;

  /**
   * @param open creates the temporary file and returns a read/write descriptor; the
   *   default is {@link createTempFile}. The server passes its jail's `createTemp`, which
   *   also pins the file inside the user's root.
   */
  constructor(
    readonly tempPath: string,
    readonly size: number,
    open: (tempPath: string) => number = createTempFile,
  ) {
    try {
      this.fd = open(tempPath);
    } catch (err) {
      throw toTachyonError(err, 'IO');
    }
  }

  write(offset: number, data: Buffer): void {
    if (this.runLen > 0 && offset === this.runStart + this.runLen && this.runLen + data.length <= RUN_MAX) {
      data.copy(this.run, this.runLen);
      this.runLen += data.length;
    } else {
      this.flushRun();
      this.runStart = offset;
      data.copy(this.run, 0);
      this.runLen = data.length;
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
    // hash the verified prefix a little at a time so that the event loop never stalls long
    if (this.contiguous - this.hashed >= 2 * HASH_STEP) this.hashUpTo(this.hashed + HASH_STEP);
  }

  private flushRun(): void {
    if (this.runLen === 0) return;
    if (this.runStart === this.hashed && this.runStart + this.runLen <= this.contiguous) {
      // in-order data: hash it now, no read-back needed
      this.hash.update(this.run.subarray(0, this.runLen));
      this.hashed += this.runLen;
    }
    let done = 0;
    while (done < this.runLen) {
      done += writeSync(this.fd, this.run, done, this.runLen - done, this.runStart + done);
    }
    this.runLen = 0;
  }

  private hashUpTo(limit: number): void {
    // data still in the run buffer is not on disk yet
    if (this.runLen > 0 && this.runStart < limit) this.flushRun();
    const b = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(1, limit - this.hashed)));
    while (this.hashed < limit) {
      const n = readSync(this.fd, b, 0, Math.min(b.length, limit - this.hashed), this.hashed);
      if (n === 0) throw new TachyonError('IO', `short read back from ${this.tempPath}`);
      this.hash.update(b.subarray(0, n));
      this.hashed += n;
    }
  }

  /** Flushes everything and returns the SHA-256 of the complete file. */
  finish(): string {
    this.flushRun();
    if (this.contiguous !== this.size) {
      // ranges map may hold pieces not joined yet; they are all present when complete
      this.contiguous = this.size;
    }
    this.hashUpTo(this.size);
    const st = fstatSync(this.fd);
    if (st.size !== this.size) ftruncateSync(this.fd, this.size);
    return this.hash.digest('hex');
  }

  close(): void {
    if (this.fd >= 0) {
      try {
        this.flushRun();
      } catch {
        // the caller is discarding the file
      }
      try {
        closeSync(this.fd);
      } catch {
        // already closed
      }
      this.fd = -1;
    }
  }
}
