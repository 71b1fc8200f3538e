/**
 * Server-side encryption at rest (issue #5, item 2), end to end: `tachyon serve --config`
 * with a `serverSideEncryption` section (master key from TACHYON_MASTER_KEY) as a child
 * process and real `tachyon send` / `recv` processes. A user whose docroot lies under an
 * encrypted root gets files stored as envelopes (never the plaintext on disk) and
 * downloads the plaintext transparently, also after `tachyon keys rotate` re-wrapped the
 * headers under a new key; a user outside the encrypted roots is stored in plaintext;
 * SFTP is refused for the encrypted account (it would write plaintext through the jail);
 * a server configured without a master key refuses to start with a clear message.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MAGIC } from '../../src/storage/envelope/format.js';
import { bin, runCli, startConfigServer } from '../helpers/cli.js';

const KEY1 = `k1:${'11'.repeat(32)}`;

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function startServer(cfgFile: string, cwd: string, env: NodeJS.ProcessEnv): Promise<{ child: ChildProcessWithoutNullStreams; port: number; fingerprint: string }> {
  const { child, event } = await startConfigServer(cfgFile, cwd, { env });
  return { child, port: event.tcpPort as number, fingerprint: event.fingerprint as string };
}

describe('server-side encryption at rest', () => {
  let work: string;
  let files: string;
  let cfgFile: string;
  let server: { child: ChildProcessWithoutNullStreams; port: number; fingerprint: string };
  const key: Record<string, string> = {};
  const content = randomBytes(3 * 65536 + 1234);

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-sse-'));
    files = path.join(work, 'files');
    for (const [u, dir] of [['sam', 'secure/sam'], ['pat', 'plain/pat']] as const) {
      mkdirSync(path.join(files, dir), { recursive: true });
      key[u] = path.join(work, `id_${u}`);
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', u, '-f', key[u]!]);
    }
    const pub = (u: string): string => readFileSync(`${key[u]}.pub`, 'utf8').trim();
    cfgFile = path.join(work, 'tachyon.json');
    writeFileSync(
      cfgFile,
      JSON.stringify({
        listen: '127.0.0.1',
        port: 0,
        database: 'tachyon.db',
        allowedRoots: [`file://${files}/*/*`],
        serverSideEncryption: { roots: [`file://${files}/secure/*`] },
        users: [
          { name: 'sam', docroot: `file://${files}/secure/sam`, keys: [pub('sam')] },
          { name: 'pat', docroot: `file://${files}/plain/pat`, keys: [pub('pat')] },
        ],
      }),
    );
    writeFileSync(path.join(work, 'data.bin'), content);
    server = await startServer(cfgFile, work, { TACHYON_MASTER_KEY: KEY1 });
  });

  after(() => {
    server?.child.kill();
    rmSync(work, { recursive: true, force: true });
  });

  const common = (u: string): string[] => ['-P', String(server.port), '-i', key[u]!, '--host-key-fingerprint', server.fingerprint, '-l', '300m', '--json'];

  it('an upload under an encrypted root is stored as an envelope, never as plaintext, and downloads as the plaintext', async () => {
    const up = await runCli(['send', ...common('sam'), path.join(work, 'data.bin'), 'sam@127.0.0.1:/'], work);
    assert.equal(up.code, 0, up.stderr);
    const stored = readFileSync(path.join(files, 'secure', 'sam', 'data.bin'));
    assert.ok(stored.subarray(0, MAGIC.length).equals(MAGIC), 'the stored file starts with the envelope magic');
    assert.ok(stored.length > content.length, 'the envelope is larger than the plaintext');
    assert.equal(stored.indexOf(content.subarray(1000, 1064)), -1, 'no plaintext run appears in the stored file');
    const out = path.join(work, 'back-sam');
    mkdirSync(out);
    const down = await runCli(['recv', ...common('sam'), 'sam@127.0.0.1:/data.bin', out], work);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(sha(readFileSync(path.join(out, 'data.bin'))), sha(content));
  });

  it('a user outside the encrypted roots is stored in plaintext', async () => {
    const up = await runCli(['send', ...common('pat'), path.join(work, 'data.bin'), 'pat@127.0.0.1:/'], work);
    assert.equal(up.code, 0, up.stderr);
    assert.equal(sha(readFileSync(path.join(files, 'plain', 'pat', 'data.bin'))), sha(content));
  });

  it('SFTP is refused for the encrypted account (it would write plaintext), and works for the other', () => {
    const batch = path.join(work, 'sftp-batch');
    writeFileSync(batch, 'ls /\n');
    const args = (u: string): string[] => [
      '-b', batch, '-F', '/dev/null', '-i', key[u]!, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes',
      '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-P', String(server.port), `${u}@127.0.0.1`,
    ];
    const sam = spawnSync('sftp', args('sam'), { encoding: 'utf8', timeout: 30_000 });
    assert.notEqual(sam.status, 0, sam.stdout + sam.stderr);
    const pat = spawnSync('sftp', args('pat'), { encoding: 'utf8', timeout: 30_000 });
    assert.equal(pat.status, 0, pat.stdout + pat.stderr);
    assert.match(pat.stdout, /data\.bin/);
  });

  it('after `tachyon keys rotate` (headers re-wrapped under a new key) the file still downloads; without the new key it does not', async () => {
    const keyring = path.join(work, 'keyring.json');
    writeFileSync(keyring, JSON.stringify({ current: 'k2', keys: { k1: '11'.repeat(32), k2: '22'.repeat(32) } }), { mode: 0o600 });
    const before = readFileSync(path.join(files, 'secure', 'sam', 'data.bin'));
    const rot = await runCli(['keys', 'rotate', '--keyring', keyring, path.join(files, 'secure', 'sam'), '--json'], work);
    assert.equal(rot.code, 0, rot.stderr + rot.stdout);
    const after = readFileSync(path.join(files, 'secure', 'sam', 'data.bin'));
    assert.equal(after.length, before.length);
    assert.ok(after.subarray(128).equals(before.subarray(128)), 'only the 128-byte header was rewritten');
    assert.ok(!after.subarray(0, 128).equals(before.subarray(0, 128)), 'the header changed');
    // the running server holds only k1: the re-wrapped file is refused, with a clear error
    const out1 = path.join(work, 'back-k1');
    mkdirSync(out1);
    const refused = await runCli(['recv', ...common('sam'), 'sam@127.0.0.1:/data.bin', out1], work);
    assert.notEqual(refused.code, 0);
    // a server with the keyring (k1 and k2) serves it
    server.child.kill();
    const cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
    writeFileSync(cfgFile, JSON.stringify({ ...cfg, serverSideEncryption: { roots: [`file://${files}/secure/*`], keyringFile: keyring } }));
    server = await startServer(cfgFile, work, {});
    const out2 = path.join(work, 'back-k2');
    mkdirSync(out2);
    const down = await runCli(['recv', ...common('sam'), 'sam@127.0.0.1:/data.bin', out2], work);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(sha(readFileSync(path.join(out2, 'data.bin'))), sha(content));
  });

  it('a server configured for encryption without a master key refuses to start, naming what is missing', () => {
    const cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
    const noKey = path.join(work, 'nokey.json');
    writeFileSync(noKey, JSON.stringify({ ...cfg, database: 'other.db', serverSideEncryption: { roots: [`file://${files}/secure/*`] } }));
    const env = { ...process.env };
    delete env.TACHYON_MASTER_KEY;
    const r = spawnSync(process.execPath, [bin, 'serve', '--config', noKey], { cwd: work, env, encoding: 'utf8', timeout: 20_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /master key/i);
    assert.match(r.stderr, /TACHYON_MASTER_KEY/);
  });
});
