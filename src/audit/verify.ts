/**
 * `verifyAuditLog`: reads an audit log line by line and reports the first line that breaks
 * the format, its hash or the chain (see line.ts and docs/audit.md).
 *
 * What is detected, and what is not:
 * - an edited line: its `hash` no longer matches its body (`hash-mismatch`); if the editor
 *   recomputed that hash (possible without a key), the next line's `prev` no longer
 *   matches (`chain-broken`); with a key neither can be recomputed;
 * - removed lines in the middle: the next line's `seq` jumps (`missing-lines`) and its
 *   `prev` does not match;
 * - reordered or duplicated lines: `seq` goes back or jumps and the line after has the
 *   expected one (`reordered`);
 * - garbage, a broken or foreign line anywhere (`malformed`), a cut last line without its
 *   newline (`partial-line`);
 * - removed lines at the *end* leave a shorter, valid chain: that is only detectable
 *   against a checkpoint (`seq` and `hash` of a record taken earlier, e.g. the `head` a
 *   previous verify printed, kept somewhere the log's writer cannot change): the log must
 *   still hold that record (`truncated`, `checkpoint-mismatch`). Without a key, whoever
 *   can write the file can also rewrite it whole with a fresh valid chain; only a key kept
 *   away from that party, or a checkpoint kept elsewhere, detects that.
 *
 * A gap that the sink itself skipped after a crash is accepted when an `audit.recovery`
 * record right after it states its exact length and SHA-256, and is reported in
 * `recoveries`.
 */
import { open } from 'node:fs/promises';
import { TachyonError, toTachyonError } from '../core/errors.js';
import { checkHash, decodeLine, GENESIS, lineMac } from './line.js';
import type { ChainAlg, StoredRecord } from './line.js';
import { readLines } from './reader.js';
import type { RawLine } from './reader.js';
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';

export type AuditVerifyReason =
  | 'malformed'
  | 'partial-line'
  | 'hash-mismatch'
  | 'chain-broken'
  | 'bad-genesis'
  | 'missing-lines'
  | 'reordered'
  | 'unkeyed'
  | 'mixed-alg'
  | 'recovery-mismatch'
  | 'checkpoint-mismatch'
  | 'truncated';

/** A record's position in the chain, as printed by verify and given back as a checkpoint. */
export interface AuditCheckpoint {
  seq: number;
  /** The record's `hash` field. */
  hash: string;
}

export interface AuditVerifyOptions {
  /** Chain key: every line must then be HMAC-SHA-256 under it. */
  key?: Buffer;
  /** A record the log must still hold (detects truncation back past it, and rewrites). */
  checkpoint?: AuditCheckpoint;
}

export interface AuditVerifyResult {
  ok: boolean;
  /** Lines read (a failure stops the reading). */
  lines: number;
  /** Records that verified. */
  records: number;
  /** The chain algorithm of the log (undefined for an empty log). */
  alg: ChainAlg | undefined;
  /** False when the log is keyed but no key was given: the chain links were checked, the line MACs not. */
  macsChecked: boolean;
  /** The last record that verified. */
  head: (AuditCheckpoint & { line: number; ts: string; id: string }) | undefined;
  /** Gaps skipped by the writer after a crash, each vouched for by an `audit.recovery` record. */
  recoveries: { line: number; lines: number; bytes: number }[];
  /** The first problem, if any. */
  failure: { line: number; reason: AuditVerifyReason; message: string } | undefined;
}

const CHECKPOINT = /^(\d{1,15}):([0-9a-f]{64})$/;

/** Parses `SEQ:HASH` (as `tachyon audit verify` prints it). */
export function parseCheckpoint(text: string): AuditCheckpoint {
  const m = CHECKPOINT.exec(text.trim());
  if (m === null) throw new TachyonError('USAGE', `a checkpoint is SEQ:HASH (a record's seq and its 64-hex "hash"), got ${JSON.stringify(text.slice(0, 100))}`);
  return { seq: Number(m[1]), hash: m[2] as string };
}

export function formatCheckpoint(cp: AuditCheckpoint): string {
  return `${cp.seq}:${cp.hash}`;
}

interface Pending {
  firstLine: number;
  reason: AuditVerifyReason;
  message: string;
  lines: number;
  bytes: number;
  hash: Hash;
}

/**
 * Verifies the audit log `file`.
 * @throws TachyonError `NOT_FOUND`/`PERMISSION`/`IO` if the file cannot be read (a log that
 *   reads but fails verification is a result with `ok: false`, not an exception).
 */
export async function verifyAuditLog(file: string, options: AuditVerifyOptions = {}): Promise<AuditVerifyResult> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    const e = toTachyonError(err, 'IO');
    throw new TachyonError(e.code, `cannot read audit log ${file}: ${e.message}`, { cause: err });
  }
  try {
    return await verifyLines(readLines(fh), options);
  } catch (err) {
    if (err instanceof TachyonError) throw err;
    const e = toTachyonError(err, 'IO');
    throw new TachyonError(e.code, `cannot read audit log ${file}: ${e.message}`, { cause: err });
  } finally {
    await fh.close();
  }
}

/** The verification itself, over any source of lines (exported for tests). */
export async function verifyLines(
  source: AsyncIterable<RawLine> | Iterable<RawLine>,
  options: AuditVerifyOptions = {},
): Promise<AuditVerifyResult> {
  const keyedMac = options.key !== undefined ? lineMac(options.key) : undefined;
  const plainMac = lineMac();
  const result: AuditVerifyResult = {
    ok: false,
    lines: 0,
    records: 0,
    alg: undefined,
    macsChecked: true,
    head: undefined,
    recoveries: [],
    failure: undefined,
  };
  const fail = (line: number, reason: AuditVerifyReason, message: string): AuditVerifyResult => {
    result.failure = { line, reason, message };
    return result;
  };

  let expectSeq = 1;
  let prevSha = GENESIS;
  let prevLine = 0;
  let pending: Pending | undefined;
  let checkpointSeen = false;

  const it: AsyncIterator<RawLine> | Iterator<RawLine> =
    Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]();
  let next = await it.next();
  while (!next.done) {
    const l = next.value;
    next = await it.next();
    const peek: RawLine | undefined = next.done ? undefined : next.value;
    result.lines = l.no;

    const bad = (reason: AuditVerifyReason, message: string): void => {
      if (pending === undefined) {
        pending = { firstLine: l.no, reason, message, lines: 0, bytes: 0, hash: createHash('sha256') };
      }
      pending.lines++;
      pending.bytes += l.length + (l.terminated ? 1 : 0);
      pending.hash.update(l.bytes);
      if (l.terminated) pending.hash.update('\n');
    };

    if (!l.terminated) {
      // The last line of the file has no newline: a write was cut short (or the tail cut).
      bad('partial-line', `line ${l.no} is incomplete (${l.length} bytes, no newline): a write was cut short or the file was truncated mid-line`);
      break;
    }
    if (l.length > l.bytes.length) {
      bad('malformed', `line ${l.no} is ${l.length} bytes long, more than a record can be`);
      continue;
    }
    const d = decodeLine(l.bytes);
    if (!d.ok) {
      bad('malformed', `line ${l.no} is not an audit record: ${d.reason}`);
      continue;
    }
    const rec: StoredRecord = d.line.record;

    // The chain algorithm: one per file; a key demands HMAC on every line.
    if (result.alg === undefined) result.alg = rec.alg;
    else if (rec.alg !== result.alg) {
      return fail(l.no, 'mixed-alg', `line ${l.no} uses ${rec.alg} but the log began with ${result.alg}: a line was replaced`);
    }
    if (keyedMac !== undefined) {
      if (rec.alg !== 'hmac-sha256') {
        return fail(l.no, 'unkeyed', `line ${l.no} is not keyed (alg ${rec.alg}) but a key was given: the log is not keyed, or lines were re-chained without the key`);
      }
      if (!checkHash(d.line, keyedMac)) {
        return fail(l.no, 'hash-mismatch', `line ${l.no} (seq ${rec.seq}) fails its HMAC: it was edited, or the key is wrong`);
      }
    } else if (rec.alg === 'sha256') {
      if (!checkHash(d.line, plainMac)) return fail(l.no, 'hash-mismatch', `line ${l.no} (seq ${rec.seq}) fails its SHA-256: it was edited`);
    } else {
      result.macsChecked = false;
    }

    // A gap of bad lines is acceptable only when an audit.recovery record vouches for it.
    const claimsRecovery = rec.type === 'audit.recovery' && typeof rec.fields['skippedBytes'] === 'number' && rec.fields['skippedBytes'] > 0;
    if (pending !== undefined) {
      const p: Pending = pending;
      const sha = p.hash.digest('hex');
      if (!claimsRecovery) return fail(p.firstLine, p.reason, p.message);
      if (rec.fields['skippedBytes'] !== p.bytes || rec.fields['skippedSha256'] !== sha || rec.seq !== expectSeq || rec.prev !== prevSha) {
        return fail(
          p.firstLine,
          'recovery-mismatch',
          `${p.message}; the audit.recovery record at line ${l.no} does not describe these ${p.lines} line(s) exactly`,
        );
      }
      result.recoveries.push({ line: p.firstLine, lines: p.lines, bytes: p.bytes });
      pending = undefined;
    } else if (claimsRecovery) {
      return fail(l.no, 'recovery-mismatch', `line ${l.no} records a skipped gap of ${String(rec.fields['skippedBytes'])} bytes that is not there: lines were removed`);
    }

    if (rec.seq !== expectSeq) {
      if (rec.seq < expectSeq) {
        return fail(l.no, 'reordered', `line ${l.no} has seq ${rec.seq} where seq ${expectSeq} was expected: lines were reordered, duplicated or inserted`);
      }
      // Is the expected record further down (moved), or gone (removed)?
      const later = await findSeq(peek, it, expectSeq);
      if (later !== undefined) {
        return fail(l.no, 'reordered', `line ${l.no} has seq ${rec.seq} where seq ${expectSeq} was expected, and seq ${expectSeq} is at line ${later}: lines were reordered`);
      }
      const missing = rec.seq - expectSeq;
      return fail(
        l.no,
        'missing-lines',
        `line ${l.no} has seq ${rec.seq} where seq ${expectSeq} was expected: ${missing} record(s) before it were removed`,
      );
    }
    if (rec.prev !== prevSha) {
      if (expectSeq === 1) return fail(l.no, 'bad-genesis', `line ${l.no} is seq 1 but its "prev" is not the genesis value: the start of the log was cut or replaced`);
      return fail(
        l.no,
        'chain-broken',
        `line ${l.no} (seq ${rec.seq}) does not chain to line ${prevLine}: one of the two lines was edited or replaced`,
      );
    }
    if (options.checkpoint !== undefined && rec.seq === options.checkpoint.seq) {
      checkpointSeen = true;
      if (rec.hash !== options.checkpoint.hash) {
        return fail(l.no, 'checkpoint-mismatch', `line ${l.no} (seq ${rec.seq}) is not the record the checkpoint names: the log was rewritten`);
      }
    }
    expectSeq = rec.seq + 1;
    prevSha = l.sha256;
    prevLine = l.no;
    result.records++;
    result.head = { seq: rec.seq, hash: rec.hash, line: l.no, ts: rec.ts, id: rec.id };
  }
  if (pending !== undefined) {
    const p: Pending = pending;
    return fail(p.firstLine, p.reason, p.message);
  }
  if (options.checkpoint !== undefined && !checkpointSeen) {
    const last = result.head?.seq ?? 0;
    return fail(
      result.lines + 1,
      'truncated',
      `the log ends at seq ${last} but the checkpoint names seq ${options.checkpoint.seq}: records at the end were removed`,
    );
  }
  result.ok = true;
  return result;
}

/** The line number of the first record with `seq` among `first` and the rest of `it` (consumed). */
async function findSeq(first: RawLine | undefined, it: AsyncIterator<RawLine> | Iterator<RawLine>, seq: number): Promise<number | undefined> {
  let l = first;
  while (l !== undefined) {
    if (l.terminated) {
      const d = decodeLine(l.bytes);
      if (d.ok && d.line.record.seq === seq) return l.no;
    }
    const n = await it.next();
    l = n.done ? undefined : n.value;
  }
  return undefined;
}
