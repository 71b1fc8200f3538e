/**
 * The native datagram path and the pure-TypeScript path speak the same wire format:
 * transfers between a server and a client that use different paths arrive verified, in
 * both directions, with every cipher. The pure path is forced with TACHYON_NATIVE=0.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native, nativeStatus } from '../../src/transport/native/binding.js';
import { bin, runCli, type RunResult } from '../helpers/cli.js';

const skip = native || process.env['TACHYON_REQUIRE_NATIVE'] === '1' ? false : `native addon not loaded (${nativeStatus})`;

const run = (args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<RunResult> => runCli(args, cwd, 60_000, env);

const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');

describe('native and pure-TypeScript datagram paths interoperate', { skip }, () => {
  let work: string;
  let key: string;
  const servers: ChildProcessWithoutNullStreams[] = [];

  async function startServer(root: string, env: NodeJS.ProcessEnv): Promise<{ port: number; fingerprint: string }> {
    const s = spawn(
      process.execPath,
      [bin, 'serve', '--root', root, '--authorized-keys', path.join(work, 'authorized_keys'), '--host-key', path.join(work, 'host_key'), '--listen', '127.0.0.1', '--port', '0', '--json'],
      { cwd: work, env: { ...process.env, ...env } },
    );
    servers.push(s);
    return new Promise((resolve, reject) => {
      let buf = '';
      const t = setTimeout(() => reject(new Error('server did not start')), 20_000);
      s.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const line = buf.split('\n').find((l) => l.includes('"server.start"'));
        if (line) {
          clearTimeout(t);
          const ev = JSON.parse(line) as { tcpPort: number; fingerprint: string };
          resolve({ port: ev.tcpPort, fingerprint: ev.fingerprint });
        }
      });
      s.on('exit', (c) => reject(new Error(`server exited with ${c}`)));
    });
  }

  before(() => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-mixed-'));
    key = path.join(work, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    writeFileSync(path.join(work, 'authorized_keys'), readFileSync(`${key}.pub`));
  });

  after(() => {
    for (const s of servers) s.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
  });

  for (const [serverPath, clientPath] of [
    ['pure', 'native'],
    ['native', 'pure'],
  ] as const) {
    it(`server ${serverPath}, client ${clientPath}: send and recv with each cipher, standard and jumbo datagrams`, async () => {
      const root = path.join(work, `root-${serverPath}`);
      mkdirSync(root);
      const env = (p: string): NodeJS.ProcessEnv => (p === 'pure' ? { TACHYON_NATIVE: '0' } : {});
      const { port, fingerprint } = await startServer(root, env(serverPath));
      const src = path.join(work, `src-${serverPath}.bin`);
      writeFileSync(src, randomBytes(3 * 1024 * 1024 + 77));
      const common = ['-P', String(port), '-i', key, '--host-key-fingerprint', fingerprint, '-l', '400m', '--json'];
      for (const [cipher, mtu] of [
        ['aes-128-gcm', '1500'],
        ['aes-192-gcm', '9000'],
        ['aes-256-gcm', '65535'],
      ] as const) {
        const up = await run(['send', ...common, '-c', cipher, '--mtu', mtu, src, `xfer@127.0.0.1:/${cipher}.bin`], env(clientPath), work);
        assert.equal(up.code, 0, up.stderr);
        assert.equal(sha(path.join(root, `${cipher}.bin`)), sha(src), `${cipher} upload`);
        const back = path.join(work, `back-${serverPath}-${cipher}.bin`);
        const down = await run(['recv', ...common, '-c', cipher, '--mtu', mtu, `xfer@127.0.0.1:/${cipher}.bin`, back], env(clientPath), work);
        assert.equal(down.code, 0, down.stderr);
        assert.equal(sha(back), sha(src), `${cipher} download`);
      }
    });
  }
});
