/** Shared helpers for the control-channel tests. */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { findAuthorizedKey, loadOrCreateHostKey, parseAuthorizedKeys } from '../../src/control/hostkeys.js';
import type { HostKeyInfo } from '../../src/control/hostkeys.js';
import type { ControlLink } from '../../src/control/messages.js';
import { startControlServer } from '../../src/control/ssh-server.js';
import type { ControlServer, ControlServerEvent } from '../../src/control/ssh-server.js';
import { mulberry32 } from '../../src/testkit/simnet.js';

/** Two connected in-memory duplex streams (what one writes, the other reads). */
/** Test server behaviour: answers every `digests` with `results` (same ids), `bye` with `bye`, then closes. */
export function echoSession(link: ControlLink): void {
  link.onMessage((m) => {
    if (m.t === 'digests') link.send({ t: 'results', files: m.files.map((f) => ({ id: f.id, ok: true })) });
    if (m.t === 'bye') {
      link.send({ t: 'bye' });
      link.close();
    }
  });
}

export function duplexPair(): [Duplex, Duplex] {
  const ends: { a?: Duplex; b?: Duplex } = {};
  const make = (peer: () => Duplex | undefined): Duplex =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        peer()?.push(chunk);
        cb();
      },
      final(cb) {
        peer()?.push(null);
        cb();
      },
    });
  const a = make(() => ends.b);
  const b = make(() => ends.a);
  ends.a = a;
  ends.b = b;
  return [a, b];
}

/** Runs a program; resolves with its exit code and output (never rejects on exit code). */
export function run(
  file: string,
  args: string[],
  opts: { timeoutMs?: number; input?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: opts.timeoutMs ?? 10_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: unknown }) | null;
      if (e && typeof e.code === 'string') {
        reject(err);
        return;
      }
      resolve({ code: child.exitCode, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** Makes a temporary directory; returns it and a cleanup function. */
export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `tachyon-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Generates a key pair with ssh-keygen; returns the private key path. */
export async function sshKeygen(dir: string, name: string, type = 'ed25519', extra: string[] = []): Promise<string> {
  const file = join(dir, name);
  const r = await run('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', name, '-f', file, ...extra]);
  if (r.code !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  return file;
}

/** Deterministic PRNG for reproducible fuzzing (the testkit's mulberry32). */
export const prng = mulberry32;

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A control server for the client's tests (see {@link echoServer}). */
export interface EchoServerFixture {
  hostKey: HostKeyInfo;
  /** alice's private key (authorized) and another one (not) */
  aliceKey: Buffer;
  otherKey: Buffer;
  server: ControlServer;
  /** every event the server reported, in order */
  events: ControlServerEvent[];
  close(): Promise<void>;
}

/**
 * Starts a control server on 127.0.0.1 (port 0) with a fresh host key that accepts the
 * user `alice` with her key only and serves every session with {@link echoSession}.
 * `authorizeDelayMs`: the key check answers that much later, as a database lookup would.
 */
export async function echoServer(prefix: string, o: { authorizeDelayMs?: number } = {}): Promise<EchoServerFixture> {
  const { dir, cleanup } = await tempDir(prefix);
  const hostKey = await loadOrCreateHostKey(join(dir, 'host_key'));
  const [alice, other] = await Promise.all([sshKeygen(dir, 'alice'), sshKeygen(dir, 'other')]);
  const aliceKey = await readFile(alice);
  const otherKey = await readFile(other);
  const authorized = parseAuthorizedKeys(await readFile(`${alice}.pub`, 'utf8')).keys;
  const events: ControlServerEvent[] = [];
  const server = await startControlServer({
    listen: '127.0.0.1',
    port: 0,
    hostKey: hostKey.privateKey,
    authorize: async (user, _algo, blob) => {
      if (o.authorizeDelayMs !== undefined) await sleep(o.authorizeDelayMs);
      return user === 'alice' && findAuthorizedKey(authorized, blob) !== undefined;
    },
    onSession: (link) => echoSession(link),
    onEvent: (e) => events.push(e),
  });
  return {
    hostKey,
    aliceKey,
    otherKey,
    server,
    events,
    close: async () => {
      await server.close();
      await cleanup();
    },
  };
}
