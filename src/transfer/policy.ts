/**
 * What the receiver does with a file it already (partly) holds: the overwrite policy
 * (ascp's `--overwrite`) for a complete destination file and the resume level (ascp's
 * `-k`) for a partial one. `decide` is the whole decision table, as a pure function of
 * the announced source attributes and what is on the receiver's disk; the roles turn
 * its answer into a `plan` entry (docs/protocol.md, "Existing files and resume").
 */
import type { OverwritePolicy, ResumeLevel } from '../core/types.js';

export interface TransferPolicy {
  overwrite: OverwritePolicy;
  resume: ResumeLevel;
  /** also set the destination's access time to the source's (the modification time always is) */
  preserveTimes: boolean;
  /** create a missing destination directory (and its parents) */
  createDir: boolean;
}

/** ascp's defaults: `--overwrite diff`, `-k none`. */
export const DEFAULT_POLICY: Readonly<TransferPolicy> = Object.freeze({ overwrite: 'diff', resume: 'none', preserveTimes: false, createDir: false });

/**
 * True when the receiver must look at its disk before a file is sent: then the sender
 * probes first (a batch of files per message, pipelined) instead of sending at once.
 */
export function needsPlan(p: Pick<TransferPolicy, 'overwrite' | 'resume'>): boolean {
  return !(p.overwrite === 'always' && p.resume === 'none');
}

/** Modification times closer than this are equal (file systems keep ns, µs or ms). */
export const MTIME_TOLERANCE_MS = 1;

export function sameTime(a: number | undefined, b: number | undefined): boolean {
  return a !== undefined && b !== undefined && Math.abs(a - b) < MTIME_TOLERANCE_MS;
}

/** Attributes of the source as announced. */
export interface SourceAttrs {
  size: number;
  mtimeMs: number | undefined;
}

/** What the receiver found at the destination. */
export interface DestState {
  /** a complete (regular) file under the final name */
  final?: { size: number; mtimeMs: number };
  /** a partial file of an interrupted transfer, with its resume record if it is valid */
  partial?: { size: number; record?: ResumeRecord };
}

/** The resume record kept beside a partial file (see resume.ts). */
export interface ResumeRecord {
  /** the source's size and modification time when the partial file was started */
  size: number;
  mtimeMs: number;
  /** bytes from the start of the partial file that were written and can be kept */
  verified: number;
}

export type SkipReason = 'exists' | 'newer' | 'same';

export type Decision =
  /** send the whole file (any partial file is started over) */
  | { do: 'send' }
  /** do not send: the destination exists (`never`), is not older, or is the same */
  | { do: 'skip'; reason: SkipReason }
  /** compare digests of the complete destination with the source: equal -> skip, else send */
  | { do: 'compare'; mode: 'sparse' | 'full'; length: number }
  /** resume the partial file at `offset`, after comparing digests of its prefix unless `verify` is none */
  | { do: 'resume'; offset: number; verify: 'none' | 'sparse' | 'full' };

/**
 * The decision table (ascp semantics, with the choices documented in docs/protocol.md):
 *
 * A complete destination file is subject to the overwrite policy:
 * - `always`: replaced. `never`: kept (skipped, reason `exists`).
 * - `older`: replaced only if it is older than the source (else skipped, `newer`).
 * - `diff`: replaced only if it differs from the source; the comparison is the resume
 *   level's: `none`/`attrs` compare size and modification time, `sparse` the size and
 *   the digests of sampled ranges, `full` the size and the digest of the whole file.
 * - `diff+older`: replaced only if it is older *and* differs.
 *
 * A file that is to be sent resumes its partial file when the resume level is not
 * `none` and the partial file's record matches the source's size and modification
 * time (`attrs` trusts that; `sparse` and `full` also compare digests of the prefix);
 * otherwise it is sent from the start.
 */
export function decide(policy: Pick<TransferPolicy, 'overwrite' | 'resume'>, src: SourceAttrs, dest: DestState): Decision {
  if (dest.final) {
    const d = dest.final;
    const destOlder = src.mtimeMs !== undefined && d.mtimeMs < src.mtimeMs - MTIME_TOLERANCE_MS;
    switch (policy.overwrite) {
      case 'never':
        return { do: 'skip', reason: 'exists' };
      case 'always':
        break;
      case 'older':
        if (!destOlder) return { do: 'skip', reason: 'newer' };
        break;
      case 'diff':
      case 'diff+older': {
        if (policy.overwrite === 'diff+older' && !destOlder) return { do: 'skip', reason: 'newer' };
        if (d.size !== src.size) break;
        if (policy.resume === 'sparse' || policy.resume === 'full') {
          if (src.size === 0) return { do: 'skip', reason: 'same' };
          return { do: 'compare', mode: policy.resume, length: src.size };
        }
        if (sameTime(d.mtimeMs, src.mtimeMs)) return { do: 'skip', reason: 'same' };
        break;
      }
    }
  }
  const rec = dest.partial?.record;
  if (policy.resume !== 'none' && dest.partial && rec && rec.size === src.size && sameTime(rec.mtimeMs, src.mtimeMs)) {
    const offset = Math.min(rec.verified, dest.partial.size, src.size);
    if (offset > 0) return { do: 'resume', offset, verify: policy.resume === 'attrs' ? 'none' : policy.resume };
  }
  return { do: 'send' };
}

/** Sampled ranges for `sparse`: 16 ranges of 64 KiB spread over [0, length), first and last included. */
export const SPARSE_SAMPLES = 16;
export const SPARSE_SAMPLE_BYTES = 64 * 1024;

export function sampleRanges(length: number): { at: number; len: number }[] {
  if (length <= 0) return [];
  if (length <= SPARSE_SAMPLES * SPARSE_SAMPLE_BYTES) return [{ at: 0, len: length }];
  const out: { at: number; len: number }[] = [];
  const span = length - SPARSE_SAMPLE_BYTES;
  for (let i = 0; i < SPARSE_SAMPLES; i++) out.push({ at: Math.floor((i * span) / (SPARSE_SAMPLES - 1)), len: SPARSE_SAMPLE_BYTES });
  return out;
}

/**
 * Checks ranges named by the peer before reading them: sorted, not overlapping, within
 * [0, end) and end within the file. Returns an error text, or undefined when they are fine.
 */
export function checkRanges(ranges: readonly { at: number; len: number }[], end: number, fileSize: number): string | undefined {
  if (end > fileSize) return `range end ${end} beyond the file size ${fileSize}`;
  let prev = 0;
  for (const r of ranges) {
    if (r.len <= 0) return 'empty range';
    if (r.at < prev) return 'ranges overlap or are not sorted';
    if (r.at + r.len > end) return `range ${r.at}+${r.len} beyond ${end}`;
    prev = r.at + r.len;
  }
  return undefined;
}
