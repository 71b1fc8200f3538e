/** Progress output: a bar on a terminal, JSON lines with --json, nothing otherwise. */
import type { FileOutcome, FileStart, Progress } from '../transfer/roles.js';
import { formatBytes, formatRate } from '../core/units.js';

export interface ProgressReporter {
  progress(p: Progress): void;
  fileStart(f: FileStart): void;
  file(f: FileOutcome): void;
  end(): void;
}

/** The `file.done` / `file.error` event of a settled file (JSON lines). */
export function fileEvent(f: FileOutcome): Record<string, unknown> {
  if (f.status === 'failed') {
    return { event: 'file.error', path: f.path, size: f.size, code: f.code ?? 'IO', message: f.message ?? '', ...(f.sha256 ? { sha256: f.sha256 } : {}) };
  }
  const seconds = f.elapsedMs / 1000;
  return {
    event: 'file.done',
    path: f.path,
    size: f.size,
    status: f.status,
    ...(f.reason ? { reason: f.reason } : {}),
    ...(f.sha256 ? { sha256: f.sha256 } : {}),
    bytes: f.sentBytes,
    skippedBytes: f.skippedBytes,
    seconds: Math.round(seconds * 1000) / 1000,
    rateMbps: seconds > 0 ? round((f.sentBytes * 8) / seconds / 1e6) : 0,
  };
}

export function createReporter(opts: { json: boolean; tty: boolean; out: NodeJS.WritableStream; err: NodeJS.WritableStream }): ProgressReporter {
  if (opts.json) {
    let last = 0;
    return {
      progress(p) {
        const now = Date.now();
        if (now - last < 1000 && p.bytes < p.totalBytes) return;
        last = now;
        opts.out.write(
          JSON.stringify({
            event: 'progress',
            bytes: p.bytes,
            totalBytes: p.totalBytes,
            files: p.files,
            totalFiles: p.totalFiles,
            seconds: round(p.elapsedMs / 1000),
            goodputMbps: round(p.elapsedMs > 0 ? (p.bytes * 8) / p.elapsedMs / 1000 : 0),
            rateMbps: round(p.rateBps / 1e6),
          }) + '\n',
        );
      },
      fileStart(f) {
        opts.out.write(JSON.stringify({ event: 'file.start', path: f.path, size: f.size, offset: f.offset }) + '\n');
      },
      file(f) {
        opts.out.write(JSON.stringify(fileEvent(f)) + '\n');
      },
      end() {},
    };
  }
  if (!opts.tty) return { progress() {}, fileStart() {}, file() {}, end() {} };
  let lastLen = 0;
  let lastDraw = 0;
  let prevBytes = 0;
  let prevAt = 0;
  let rate = 0;
  return {
    progress(p) {
      const now = Date.now();
      if (now - lastDraw < 200 && p.bytes < p.totalBytes) return;
      if (prevAt > 0 && now > prevAt) {
        const inst = ((p.bytes - prevBytes) * 8 * 1000) / (now - prevAt);
        rate = rate === 0 ? inst : rate * 0.7 + inst * 0.3;
      }
      prevBytes = p.bytes;
      prevAt = now;
      lastDraw = now;
      const frac = p.totalBytes > 0 ? Math.min(1, p.bytes / p.totalBytes) : 1;
      const width = 30;
      const filled = Math.round(frac * width);
      const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
      const eta = rate > 0 ? ((p.totalBytes - p.bytes) * 8) / rate : Infinity;
      const line = `[${bar}] ${(frac * 100).toFixed(1).padStart(5)}%  ${formatBytes(p.bytes)}/${formatBytes(p.totalBytes)}  ${formatRate(rate)}  ETA ${fmtEta(eta)}  files ${p.files}/${p.totalFiles}`;
      opts.err.write('\r' + line + ' '.repeat(Math.max(0, lastLen - line.length)));
      lastLen = line.length;
    },
    fileStart() {},
    file(f) {
      if (!f.ok) {
        opts.err.write(`\r${' '.repeat(lastLen)}\r${f.path}: ${f.message ?? f.code ?? 'failed'}\n`);
      }
    },
    end() {
      if (lastLen > 0) opts.err.write('\n');
    },
  };
}

function fmtEta(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const m = Math.floor(s / 60);
  const sec = Math.floor(s % 60);
  return `${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
