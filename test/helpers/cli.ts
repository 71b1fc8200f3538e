/**
 * Real `tachyon` processes for end-to-end tests: a `tachyon serve` child on 127.0.0.1
 * (port 0) with a fresh user key, and a runner for client commands.
 */
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const bin = path.join(repo, 'bin', 'tachyon.js');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function jsonLines(s: string): Record<string, unknown>[] {
  return s
    .split('\n')
    .filter((l) => l.trim().startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

export interface CliServer {
  root: string;
  port: number;
  fingerprint: string;
  key: string;
  /** the options every client command needs: port, key, pinned host key */
  common(): string[];
  /** the server's JSON log events so far */
  events: Record<string, unknown>[];
  stop(): void;
}

/** Starts `tachyon serve` with a root under `work`; resolves once it listens. */
export async function startCliServer(work: string): Promise<CliServer> {
  const root = path.join(work, 'root');
  mkdirSync(root, { recursive: true });
  const key = path.join(work, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  writeFileSync(path.join(work, 'authorized_keys'), readFileSync(`${key}.pub`));
  const child: ChildProcessWithoutNullStreams = spawn(
    process.execPath,
    [bin, 'serve', '--root', root, '--authorized-keys', path.join(work, 'authorized_keys'), '--host-key', path.join(work, 'host_key'), '--listen', '127.0.0.1', '--port', '0', '--json'],
    { cwd: work },
  );
  const events: Record<string, unknown>[] = [];
  let buf = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    const cut = buf.lastIndexOf('\n');
    if (cut < 0) return;
    events.push(...jsonLines(buf.slice(0, cut)));
    buf = buf.slice(cut + 1);
  });
  const start = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const t = setInterval(() => {
      const ev = events.find((e) => e.type === 'server.start');
      if (ev) {
        clearInterval(t);
        resolve(ev);
      }
    }, 10);
    setTimeout(() => {
      clearInterval(t);
      reject(new Error('server did not start'));
    }, 20_000).unref();
    child.on('exit', (c) => reject(new Error(`server exited with ${c}`)));
  });
  const port = start.tcpPort as number;
  const fingerprint = start.fingerprint as string;
  return {
    root,
    port,
    fingerprint,
    key,
    events,
    common: () => ['-P', String(port), '-i', key, '--host-key-fingerprint', fingerprint],
    stop: () => {
      child.kill('SIGTERM');
    },
  };
}

/** Starts a `tachyon` command; `done` resolves with its exit code and output. */
export function startCli(args: string[], cwd: string, timeoutMs = 60_000, env: NodeJS.ProcessEnv = {}): { child: ChildProcessWithoutNullStreams; done: Promise<RunResult> } {
  const child = spawn(process.execPath, [bin, ...args], { cwd, env: { ...process.env, ...env, HOME: cwd } });
  const done = new Promise<RunResult>((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`tachyon ${args.join(' ')} timed out\n${stderr}`));
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code: code ?? (signal ? 128 + 9 : -1), stdout, stderr });
    });
  });
  return { child, done };
}

export function runCli(args: string[], cwd: string, timeoutMs = 60_000, env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return startCli(args, cwd, timeoutMs, env).done;
}

export interface ConfigServer {
  child: ChildProcessWithoutNullStreams;
  /** The JSON log event that was waited for (`server.start` by default: tcpPort, fingerprint …). */
  event: Record<string, unknown>;
  /** Everything the server wrote to stderr so far (for assertion messages). */
  stderr(): string;
}

/**
 * Starts `tachyon serve --config FILE --json` in `cwd` (environment: this process's plus
 * `env`) and resolves once its log shows an event of type `until` (default
 * `server.start`); rejects if it exits first or takes longer than `timeoutMs`.
 */
export function startConfigServer(cfgFile: string, cwd: string, o: { env?: NodeJS.ProcessEnv; until?: string; timeoutMs?: number } = {}): Promise<ConfigServer> {
  const child = spawn(process.execPath, [bin, 'serve', '--config', cfgFile, '--json'], { cwd, env: { ...process.env, ...o.env } });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const wanted = `"${o.until ?? 'server.start'}"`;
  return new Promise<ConfigServer>((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`server did not start: ${err}`)), o.timeoutMs ?? 20_000);
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const line = buf.split('\n').find((l) => l.includes(wanted));
      if (line) {
        clearTimeout(t);
        resolve({ child, event: JSON.parse(line) as Record<string, unknown>, stderr: () => err });
      }
    });
    child.on('exit', (c) => reject(new Error(`server exited with ${c}: ${err}`)));
  });
}

/** A record of a server's JSON-lines audit log. */
export interface AuditLine {
  type: string;
  correlationId?: string;
  fields: Record<string, unknown>;
}

/** The complete records of a JSON-lines audit log (a line the server is still writing is left out). */
export function auditRecords(file: string): AuditLine[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  lines.pop(); // after the last newline: empty, or a record not complete yet
  return lines.filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as AuditLine);
}

/**
 * The first record after the first `since` that matches `pred`, waiting up to `timeoutMs`
 * for it: a server process audits a refusal on its own time, and the client that was
 * refused may exit first.
 */
export async function auditRecordAfter(file: string, since: number, pred: (r: AuditLine) => boolean, timeoutMs = 3000): Promise<AuditLine | undefined> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const found = auditRecords(file).slice(since).find(pred);
    if (found !== undefined || Date.now() >= until) return found;
    await new Promise((r) => setTimeout(r, 20));
  }
}
