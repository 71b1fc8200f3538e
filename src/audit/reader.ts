/** Reading audit files as lines of exact bytes: forwards (verify) and from the end (open, tail). */
import { createHash } from 'node:crypto';
import { readSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { MAX_LINE_BYTES } from './line.js';

/** One line of a file as stored. */
export interface RawLine {
  /** 1-based line number. */
  no: number;
  /** Byte offset of the line's first byte. */
  offset: number;
  /** The line's bytes without the newline (only the first MAX_LINE_BYTES + 1 of an over-long line). */
  bytes: Buffer;
  /** Full length in bytes, without the newline. */
  length: number;
  /** Whether a newline ends it (false only for the file's last line). */
  terminated: boolean;
  /** SHA-256 (hex) of the full line bytes, without the newline. */
  sha256: string;
}

const CHUNK = 64 * 1024;

/** Yields every line of the file, in order, with exact bytes. Memory stays bounded by MAX_LINE_BYTES. */
export async function* readLines(fh: FileHandle): AsyncGenerator<RawLine> {
  const chunk = Buffer.alloc(CHUNK);
  let parts: Buffer[] = [];
  let kept = 0;
  let length = 0;
  let hash = createHash('sha256');
  let no = 1;
  let lineStart = 0;
  let pos = 0;
  const take = (data: Buffer): void => {
    hash.update(data);
    length += data.length;
    if (kept <= MAX_LINE_BYTES) {
      const room = MAX_LINE_BYTES + 1 - kept;
      const part = Buffer.from(data.subarray(0, room));
      parts.push(part);
      kept += part.length;
    }
  };
  const finish = (terminated: boolean): RawLine => {
    const line: RawLine = {
      no,
      offset: lineStart,
      bytes: Buffer.concat(parts, kept),
      length,
      terminated,
      sha256: hash.digest('hex'),
    };
    no++;
    lineStart += length + (terminated ? 1 : 0);
    parts = [];
    kept = 0;
    length = 0;
    hash = createHash('sha256');
    return line;
  };
  for (;;) {
    const { bytesRead } = await fh.read(chunk, 0, CHUNK, pos);
    if (bytesRead === 0) break;
    pos += bytesRead;
    let from = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, from);
      if (nl === -1 || nl >= bytesRead) {
        take(chunk.subarray(from, bytesRead));
        break;
      }
      take(chunk.subarray(from, nl));
      yield finish(true);
      from = nl + 1;
    }
  }
  if (length > 0) yield finish(false);
}

/** A line found by {@link readTail}: offsets are absolute in the file. */
export interface TailLine {
  offset: number;
  bytes: Buffer;
  terminated: boolean;
}

/**
 * Reads up to the last `maxBytes` bytes of a file (size `size`, read through `fd`) and splits
 * them into lines. The first line is dropped when it may have begun before the window
 * (`complete` tells whether the window reached the start of the file). Returns the lines
 * in file order, at most `maxLines` of them (the last ones).
 */
export function readTail(
  fd: number,
  size: number,
  maxBytes: number,
  maxLines = Number.MAX_SAFE_INTEGER,
): { lines: TailLine[]; complete: boolean; windowStart: number } {
  const windowBytes = Math.min(size, maxBytes);
  const start = size - windowBytes;
  const buf = Buffer.alloc(windowBytes);
  let got = 0;
  while (got < windowBytes) {
    const n = readSync(fd, buf, got, windowBytes - got, start + got);
    if (n === 0) break;
    got += n;
  }
  const data = buf.subarray(0, got);
  const lines: TailLine[] = [];
  let from = 0;
  for (;;) {
    const nl = data.indexOf(0x0a, from);
    if (nl === -1) {
      if (from < data.length) lines.push({ offset: start + from, bytes: data.subarray(from), terminated: false });
      break;
    }
    lines.push({ offset: start + from, bytes: data.subarray(from, nl), terminated: true });
    from = nl + 1;
  }
  // A window that does not start at 0 or right after a newline cuts its first line.
  if (start > 0 && lines.length > 0) {
    const before = Buffer.alloc(1);
    const n = readSync(fd, before, 0, 1, start - 1);
    if (n !== 1 || before[0] !== 0x0a) lines.shift();
  }
  return { lines: lines.slice(Math.max(0, lines.length - maxLines)), complete: start === 0, windowStart: start };
}

/**
 * The last `n` complete or partial lines of a file (fewer if the file has fewer), reading
 * backwards in growing windows, at most `maxBytes` in all.
 */
export function readLastLines(fd: number, size: number, n: number, maxBytes = 64 * 1024 * 1024): TailLine[] {
  if (n <= 0 || size === 0) return [];
  let window = Math.min(size, Math.max(64 * 1024, n * 1024));
  for (;;) {
    const { lines, complete } = readTail(fd, size, window, n);
    if (lines.length >= n || complete || window >= maxBytes) return lines;
    window = Math.min(size, window * 4, maxBytes);
  }
}

/** Splits a buffer into lines exactly as {@link readLines} does a file (for in-memory checks). */
export function linesFromBuffer(data: Buffer): RawLine[] {
  const out: RawLine[] = [];
  let from = 0;
  let no = 1;
  while (from < data.length) {
    const nl = data.indexOf(0x0a, from);
    const end = nl === -1 ? data.length : nl;
    const full = data.subarray(from, end);
    out.push({
      no: no++,
      offset: from,
      bytes: Buffer.from(full.subarray(0, MAX_LINE_BYTES + 1)),
      length: full.length,
      terminated: nl !== -1,
      sha256: createHash('sha256').update(full).digest('hex'),
    });
    from = end + 1;
  }
  return out;
}
