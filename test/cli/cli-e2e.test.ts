/**
 * The `tachyon` command end to end: real processes, a real SSH control channel (ssh2
 * server, ssh2 client), real UDP on 127.0.0.1. Covers the forms the benchmarks use,
 * --json output, exit codes, and host-key pinning (never trust on first use).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bin, runCli, type RunResult } from '../helpers/cli.js';


const run = (args: string[], timeoutMs = 60_000): Promise<RunResult> => runCli(args, work, timeoutMs);

function sha(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

function jsonLines(s: string): Record<string, unknown>[] {
  return s
    .split('\n')
    .filter((l) => l.trim().startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

let work: string;
let server: ChildProcessWithoutNullStreams;
let port: number;
let fingerprint: string;
let root: string;
let key: string;

describe('tachyon CLI end to end (serve, send, recv)', () => {
  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-cli-'));
    root = path.join(work, 'root');
    mkdirSync(root);
    key = path.join(work, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    writeFileSync(path.join(work, 'authorized_keys'), readFileSync(`${key}.pub`));
    server = spawn(
      process.execPath,
      [bin, 'serve', '--root', root, '--authorized-keys', path.join(work, 'authorized_keys'), '--host-key', path.join(work, 'host_key'), '--listen', '127.0.0.1', '--port', '0', '--json'],
      { cwd: work },
    );
    const start = await new Promise<Record<string, unknown>>((resolve, reject) => {
      let buf = '';
      const t = setTimeout(() => reject(new Error('server did not start')), 20_000);
      server.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const ev = jsonLines(buf).find((e) => e.type === 'server.start');
        if (ev) {
          clearTimeout(t);
          resolve(ev);
        }
      });
      server.on('exit', (c) => reject(new Error(`server exited with ${c}`)));
    });
    port = start.tcpPort as number;
    fingerprint = start.fingerprint as string;
    assert.equal(start.udpPort, port, 'UDP data shares the TCP port number');
    // the printed fingerprint is the one ssh-keygen -l shows for the host key
    const keygen = execFileSync('ssh-keygen', ['-lf', path.join(work, 'host_key.pub')]).toString();
    assert.ok(keygen.includes(fingerprint), `${keygen} vs ${fingerprint}`);
  });

  after(() => {
    server?.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
  });

  const common = (): string[] => ['-P', String(port), '-i', key, '--host-key-fingerprint', fingerprint];

  it('npx-style --help lists the commands', async () => {
    const r = await run(['--help']);
    assert.equal(r.code, 0);
    for (const c of ['start', 'serve', 'send', 'recv']) assert.match(r.stdout, new RegExp(`\\b${c}\\b`));
  });

  it('send: a file and a directory tree arrive verified, with --json progress and done events', async () => {
    const src = path.join(work, 'big.bin');
    writeFileSync(src, randomBytes(6 * 1024 * 1024 + 123));
    const tree = path.join(work, 'tree');
    mkdirSync(path.join(tree, 'a', 'b'), { recursive: true });
    mkdirSync(path.join(tree, 'empty'));
    writeFileSync(path.join(tree, 'a', 'one.txt'), 'one');
    writeFileSync(path.join(tree, 'a', 'b', 'two.bin'), randomBytes(300_000));
    writeFileSync(path.join(tree, 'zero'), '');
    const r = await run(['send', ...common(), '--json', '-l', '500m', '--create-dir', src, tree, `xfer@127.0.0.1:/up/`]);
    assert.equal(r.code, 0, r.stderr);
    const events = jsonLines(r.stdout);
    const done = events.at(-1)!;
    assert.equal(done.event, 'done');
    assert.equal(done.ok, true);
    assert.equal(done.files, 4);
    assert.equal(done.bytes, 6 * 1024 * 1024 + 123 + 3 + 300_000);
    assert.equal(typeof done.goodputMbps, 'number');
    assert.equal(typeof done.seconds, 'number');
    assert.ok(events.some((e) => e.event === 'progress'), 'progress events are printed');
    assert.equal(sha(path.join(root, 'up', 'big.bin')), sha(src));
    assert.equal(sha(path.join(root, 'up', 'tree', 'a', 'b', 'two.bin')), sha(path.join(tree, 'a', 'b', 'two.bin')));
    assert.deepEqual(readdirSync(path.join(root, 'up', 'tree', 'empty')), []);
    assert.ok(!readdirSync(path.join(root, 'up')).some((n) => n.includes('tachyon-partial')));
  });

  it('recv: downloads a file under a new name and a tree into a directory', async () => {
    const out = path.join(work, 'down');
    mkdirSync(out);
    const r1 = await run(['recv', ...common(), '--json', 'xfer@127.0.0.1:/up/big.bin', path.join(out, 'copy.bin')]);
    assert.equal(r1.code, 0, r1.stderr);
    assert.equal(sha(path.join(out, 'copy.bin')), sha(path.join(work, 'big.bin')));
    const r2 = await run(['recv', ...common(), 'xfer@127.0.0.1:/up/tree', out]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(readFileSync(path.join(out, 'tree', 'a', 'one.txt'), 'utf8'), 'one');
  });

  it('a wrong pinned fingerprint is refused (exit 77) with the real fingerprint and how to pin it', async () => {
    const wrong = 'SHA256:' + 'A'.repeat(43);
    const src = path.join(work, 'small.txt');
    writeFileSync(src, 'hello');
    const r = await run(['send', '-P', String(port), '-i', key, '--host-key-fingerprint', wrong, src, 'xfer@127.0.0.1:/']);
    assert.equal(r.code, 77);
    assert.ok(r.stderr.includes(fingerprint), r.stderr);
    assert.match(r.stderr, /--host-key-fingerprint/);
    assert.ok(!readdirSync(root).includes('small.txt'), 'nothing was sent');
  });

  it('an unknown host key is never trusted on first use (empty known_hosts: exit 77)', async () => {
    const kh = path.join(work, 'known_hosts');
    writeFileSync(kh, '');
    const src = path.join(work, 'small.txt');
    const r = await run(['send', '-P', String(port), '-i', key, '--known-hosts', kh, src, 'xfer@127.0.0.1:/']);
    assert.equal(r.code, 77);
    assert.ok(r.stderr.includes(fingerprint), r.stderr);
    // and pinning it through known_hosts then works
    writeFileSync(kh, `[127.0.0.1]:${port} ${readFileSync(path.join(work, 'host_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    const ok = await run(['send', '-P', String(port), '-i', key, '--known-hosts', kh, src, 'xfer@127.0.0.1:/']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(readFileSync(path.join(root, 'small.txt'), 'utf8'), 'hello');
  });

  it('a key that is not authorized fails with exit 77; bad usage with exit 2', async () => {
    const other = path.join(work, 'other_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const r = await run(['send', '-P', String(port), '-i', other, '--host-key-fingerprint', fingerprint, path.join(work, 'small.txt'), 'xfer@127.0.0.1:/']);
    assert.equal(r.code, 77, r.stderr);
    const u = await run(['send', ...common(), '-l', 'fast', path.join(work, 'small.txt'), 'xfer@127.0.0.1:/']);
    assert.equal(u.code, 2);
    assert.match(u.stderr, /200m, 1g or 500k/);
  });

  it('a traversal destination is refused with a clear message (exit 65)', async () => {
    const r = await run(['send', ...common(), '--json', path.join(work, 'small.txt'), 'xfer@127.0.0.1:../../etc']);
    assert.equal(r.code, 65, r.stderr);
    assert.match(r.stderr, /Invalid path/);
  });
});
