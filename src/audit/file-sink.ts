/**
 * The audit log file: JSON lines (line.ts), append-only, hash-chained, optionally keyed.
 *
 * Opening: the file is created with mode 0600 if missing, opened O_APPEND and never
 * truncated, rewritten or seeked for writing. A symbolic link or a file writable by group
 * or others is refused. The chain continues across restarts: at open (and whenever the
 * file grew behind this writer's back) the sink reads the file's last valid record and
 * carries on from its `seq` and line hash. Bytes after that record that are not a record —
 * a line cut short by a crash or a full disk — are terminated with a newline and skipped,
 * and an `audit.recovery` record (severity critical) states their length and SHA-256, so
 * that `verify` accepts exactly that gap and nothing else. A last line that *is* a record
 * but fails its hash (tampering, or the wrong key) is not skipped: open fails.
 *
 * Durability (`fsync` option), measured in docs/audit.md:
 * - `batched` (default): each record is written with one write(2) before `record`
 *   returns, so it survives a crash of the process; fdatasync runs in the background at
 *   most `fsyncIntervalMs` (1000 ms) after a write, so a power loss or kernel crash can
 *   lose at most about that long. Records of severity `syncSeverity` (default `critical`)
 *   or above are fdatasync'ed before `record` returns. Attacker-triggered events
 *   (authentication failures are `warning`) never cost a synchronous fsync each.
 * - `always`: fdatasync before every `record` returns (slow on real disks).
 * - `never`: the kernel decides, except at `close`.
 * `close` always fdatasyncs.
 *
 * One writer per file is the intended set-up. A second writer (say the CLI recording a
 * configuration change while the server runs) is tolerated: before each write the sink
 * checks the file size and re-reads the tail if another writer appended. Two writes racing
 * within microseconds can still fork the chain; `verify` then reports the fork.
 */
import { closeSync, constants, fdatasync, fdatasyncSync, fstatSync, openSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import { TachyonError, toTachyonError } from '../core/errors.js';
import { severityRank } from './event.js';
import type { AuditEvent, AuditRecord, AuditSeverity, AuditSink } from './event.js';
import { checkHash, decodeLine, encodeLine, GENESIS, lineMac, MAX_LINE_BYTES, sha256Hex } from './line.js';
import type { LineMac } from './line.js';
import { readTail } from './reader.js';
import { buildRecord } from './record.js';

/** How hard the sink pushes records to stable storage; see the module comment. */
export type AuditFsyncPolicy = 'batched' | 'always' | 'never';

export interface FileAuditSinkOptions {
  /** HMAC-SHA-256 chain key (see key.ts); without it the chain uses plain SHA-256. */
  key?: Buffer;
  /** Timestamps. Default: the system clock. */
  clock?: Clock;
  /** Default `batched`. */
  fsync?: AuditFsyncPolicy;
  /** `batched`: longest delay before a background fdatasync. Default 1000 ms. */
  fsyncIntervalMs?: number;
  /** `batched`: records at or above this severity are fdatasync'ed at once. Default `critical`. */
  syncSeverity?: AuditSeverity;
}

/** Largest record line the sink writes; a bigger one has its fields replaced by a note. */
export const MAX_RECORD_BYTES = 64 * 1024;
/** How far back from the end the sink looks for the last valid record. */
const TAIL_WINDOW = MAX_LINE_BYTES + 64 * 1024;

interface Head {
  /** seq of the last record (0 for an empty file). */
  seq: number;
  /** SHA-256 of the last record's line (the next record's `prev`). */
  lineSha: string;
  /** File size after the last record's newline. */
  end: number;
}

/** Counters, for tests and measurements. */
export interface FileAuditSinkStats {
  records: number;
  fsyncs: number;
  resyncs: number;
  recoveries: number;
}

export class FileAuditSink implements AuditSink {
  readonly file: string;
  readonly stats: FileAuditSinkStats = { records: 0, fsyncs: 0, resyncs: 0, recoveries: 0 };
  private readonly fd: number;
  private readonly mac: LineMac;
  private readonly clock: Clock;
  private readonly policy: AuditFsyncPolicy;
  private readonly intervalMs: number;
  private readonly syncRank: number;
  private head: Head = { seq: 0, lineSha: GENESIS, end: 0 };
  private needsResync = true;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;

  /**
   * Opens (creating if needed) the audit log `file` and positions the chain after its last
   * record (see the module comment).
   * @throws TachyonError `CONFIG` for a symlink, a non-regular or group/other-writable file,
   *   a log keyed differently from `options.key`, or a tail that fails its hash;
   *   `PERMISSION`/`IO` if it cannot be opened.
   */
  constructor(file: string, options: FileAuditSinkOptions = {}) {
    this.file = file;
    this.mac = lineMac(options.key);
    this.clock = options.clock ?? systemClock;
    this.policy = options.fsync ?? 'batched';
    this.intervalMs = options.fsyncIntervalMs ?? 1000;
    this.syncRank = severityRank(options.syncSeverity ?? 'critical');
    if (!['batched', 'always', 'never'].includes(this.policy)) throw new TachyonError('CONFIG', `unknown audit fsync policy ${String(this.policy)}`);
    if (!Number.isFinite(this.intervalMs) || this.intervalMs < 0) throw new TachyonError('CONFIG', 'fsyncIntervalMs must be >= 0');
    const flags = constants.O_APPEND | constants.O_CREAT | constants.O_RDWR | (constants.O_NOFOLLOW ?? 0);
    let fd: number;
    try {
      fd = openSync(file, flags, 0o600);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ELOOP') throw new TachyonError('CONFIG', `audit log ${file} is a symbolic link; name the file itself`, { cause: err });
      const te = toTachyonError(err, 'IO');
      throw new TachyonError(te.code, `cannot open audit log ${file}: ${te.message}`, { cause: err });
    }
    this.fd = fd;
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new TachyonError('CONFIG', `audit log ${file} is not a regular file`);
      if (process.platform !== 'win32' && (st.mode & 0o022) !== 0) {
        throw new TachyonError('CONFIG', `audit log ${file} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
      }
      this.resync();
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** seq of the last record written (or found at open). */
  get seq(): number {
    return this.head.seq;
  }

  record(event: AuditEvent): string {
    if (this.closed) throw new TachyonError('INTERNAL', `audit log ${this.file} is closed`);
    const nowMs = this.clock.now();
    this.syncHead();
    const rec = buildRecord(event, this.head.seq + 1, nowMs);
    this.append(rec);
    this.afterWrite(rec.severity);
    return rec.id;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flushing;
    try {
      fdatasyncSync(this.fd);
      this.stats.fsyncs++;
    } catch {
      /* reported by the writes that failed */
    } finally {
      closeSync(this.fd);
    }
  }

  // -------------------------------------------------------------------------------------

  /** Re-reads the tail if a write failed or the file grew behind this writer. */
  private syncHead(): void {
    if (!this.needsResync) {
      let size: number;
      try {
        size = fstatSync(this.fd).size;
      } catch (err) {
        throw this.ioError('stat', err);
      }
      if (size === this.head.end) return;
    }
    this.resync();
  }

  private resync(): void {
    try {
      this.resyncUnsafe();
    } catch (err) {
      this.needsResync = true;
      if (err instanceof TachyonError) throw err;
      throw this.ioError('reading the tail', err);
    }
  }

  private resyncUnsafe(): void {
    this.stats.resyncs++;
    const size = fstatSync(this.fd).size;
    if (size === 0) {
      this.head = { seq: 0, lineSha: GENESIS, end: 0 };
      this.needsResync = false;
      return;
    }
    const { lines, complete } = readTail(this.fd, size, TAIL_WINDOW);
    // A whole record that lost only its newline (a write cut short by one byte): end it.
    const last = lines[lines.length - 1];
    if (last !== undefined && !last.terminated) {
      const d = decodeLine(last.bytes);
      if (d.ok && d.line.record.alg === this.mac.alg && checkHash(d.line, this.mac)) {
        this.write(Buffer.from('\n'));
        this.head = { seq: d.line.record.seq, lineSha: sha256Hex(last.bytes), end: size + 1 };
        this.needsResync = false;
        return;
      }
    }
    let found: Head | undefined;
    for (let i = lines.length - 1; i >= 0; i--) {
      const l = lines[i];
      if (l === undefined || !l.terminated) continue;
      const d = decodeLine(l.bytes);
      if (!d.ok) continue;
      const rec = d.line.record;
      if (rec.alg !== this.mac.alg) {
        throw new TachyonError(
          'CONFIG',
          `audit log ${this.file} is ${rec.alg === 'sha256' ? 'not keyed' : 'keyed (HMAC-SHA-256)'} but the sink was ${this.mac.alg === 'sha256' ? 'given no key' : 'given a key'}; keep the same key for a file, or start a new file`,
        );
      }
      if (!checkHash(d.line, this.mac)) {
        throw new TachyonError(
          'CONFIG',
          `audit log ${this.file}: the last record (seq ${rec.seq}) fails its ${rec.alg} check: ${rec.alg === 'hmac-sha256' ? 'wrong key, or ' : ''}the log was tampered with. Run \`tachyon audit verify\` and start a new file`,
        );
      }
      found = { seq: rec.seq, lineSha: sha256Hex(l.bytes), end: l.offset + l.bytes.length + 1 };
      break;
    }
    if (found === undefined) {
      // Nothing valid in the window. Only a file that holds nothing but the first record's
      // debris (no complete line, and it starts like a record) is recovered from genesis.
      const first = lines[0];
      const debris = complete && size <= 2 * MAX_RECORD_BYTES && first !== undefined && first.bytes.subarray(0, 8).toString('latin1') === '{"v":1,"';
      if (!debris) {
        throw new TachyonError(
          'CONFIG',
          `${this.file} is not a Tachyon audit log (no valid record in its last ${Math.min(size, TAIL_WINDOW)} bytes); name a new file`,
        );
      }
      found = { seq: 0, lineSha: GENESIS, end: 0 };
    }
    this.head = found;
    this.needsResync = false;
    if (found.end < size) this.recover(size, lines);
  }

  /** Skips the bytes after the last valid record and records that it did. */
  private recover(size: number, lines: { offset: number; bytes: Buffer; terminated: boolean }[]): void {
    const from = this.head.end;
    const last = lines[lines.length - 1];
    const partial = last !== undefined && !last.terminated;
    if (partial) this.write(Buffer.from('\n'));
    const skipped: Buffer[] = [];
    let skippedLines = 0;
    for (const l of lines) {
      if (l.offset < from) continue;
      skipped.push(l.bytes, Buffer.from('\n'));
      skippedLines++;
    }
    const bytes = Buffer.concat(skipped);
    if (bytes.length !== size - from + (partial ? 1 : 0)) {
      throw new TachyonError('INTERNAL', `audit log ${this.file}: recovery miscounted the skipped bytes`);
    }
    this.head.end = size + (partial ? 1 : 0);
    const rec = buildRecord(
      {
        type: 'audit.recovery',
        component: 'audit',
        fields: {
          reason: partial ? 'partial-line' : 'corrupt-lines',
          skippedBytes: bytes.length,
          skippedLines,
          skippedSha256: createHash('sha256').update(bytes).digest('hex'),
        },
      },
      this.head.seq + 1,
      this.clock.now(),
    );
    this.append(rec);
    this.stats.recoveries++;
    this.sync();
  }

  private append(rec: AuditRecord): void {
    let { line } = encodeLine(rec, this.head.lineSha, this.mac);
    if (line.length > MAX_RECORD_BYTES) {
      const small: AuditRecord = { ...rec, fields: { oversize: true, bytes: line.length } };
      ({ line } = encodeLine(small, this.head.lineSha, this.mac));
    }
    this.write(Buffer.concat([line, Buffer.from('\n')]));
    this.head = { seq: rec.seq, lineSha: sha256Hex(line), end: this.head.end + line.length + 1 };
    this.stats.records++;
  }

  private write(data: Buffer): void {
    let off = 0;
    try {
      while (off < data.length) off += writeSync(this.fd, data, off, data.length - off);
    } catch (err) {
      this.needsResync = true;
      throw this.ioError('write', err);
    }
  }

  private afterWrite(severity: AuditSeverity): void {
    if (this.policy === 'always' || (this.policy === 'batched' && severityRank(severity) >= this.syncRank)) {
      this.sync();
    } else if (this.policy === 'batched' && this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flushInBackground();
      }, this.intervalMs);
      this.timer.unref();
    }
  }

  private sync(): void {
    try {
      fdatasyncSync(this.fd);
      this.stats.fsyncs++;
    } catch (err) {
      throw this.ioError('fdatasync', err);
    }
  }

  private flushInBackground(): void {
    if (this.closed || this.flushing) return;
    this.flushing = new Promise<void>((resolve) => {
      fdatasync(this.fd, (err) => {
        if (!err) this.stats.fsyncs++;
        this.flushing = undefined;
        resolve();
      });
    });
  }

  private ioError(what: string, err: unknown): TachyonError {
    const e = toTachyonError(err, 'IO');
    return new TachyonError(e.code, `audit log ${this.file}: ${what} failed: ${e.message}`, { cause: err });
  }
}
