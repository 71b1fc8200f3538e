/**
 * `--manifest FILE`: one JSON object per line and per file, in the order files are
 * settled, written as the transfer goes (an interrupted transfer leaves the lines of
 * the files settled so far):
 *
 *   {"path":"tree/a.bin","size":300000,"status":"done","sha256":"…","bytes":300000,"skippedBytes":0}
 *   {"path":"old.log","size":12,"status":"skipped","reason":"same","bytes":0,"skippedBytes":12}
 *   {"path":"x","size":5,"status":"failed","code":"IS_DIRECTORY","message":"…","bytes":0,"skippedBytes":0}
 *
 * `path` is the file's path relative to the destination, `bytes` the file bytes carried
 * over UDP (after a resume offset), `skippedBytes` those not carried (resumed prefix, or
 * the whole skipped file). JSON lines rather than TSV because a file name may hold a tab
 * or a newline.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { TachyonError } from '../core/errors.js';
import type { FileOutcome } from '../transfer/roles.js';

const FLUSH_LINES = 256;

export class ManifestWriter {
  private fd: number;
  private lines: string[] = [];

  constructor(readonly file: string) {
    try {
      this.fd = openSync(file, 'w', 0o644);
    } catch (err) {
      throw new TachyonError('USAGE', `cannot write the manifest ${file}: ${(err as Error).message}`, { cause: err });
    }
  }

  add(f: FileOutcome): void {
    const line: Record<string, unknown> = { path: f.path, size: f.size, status: f.status };
    if (f.sha256) line.sha256 = f.sha256;
    if (f.reason) line.reason = f.reason;
    if (f.code) line.code = f.code;
    if (f.message) line.message = f.message;
    line.bytes = f.sentBytes;
    line.skippedBytes = f.skippedBytes;
    this.lines.push(JSON.stringify(line));
    if (this.lines.length >= FLUSH_LINES) this.flush();
  }

  flush(): void {
    if (this.lines.length === 0 || this.fd < 0) return;
    const text = this.lines.join('\n') + '\n';
    this.lines = [];
    writeSync(this.fd, text);
  }

  close(): void {
    if (this.fd < 0) return;
    try {
      this.flush();
    } finally {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}
