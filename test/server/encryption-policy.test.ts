/**
 * Policy: a transfer user that requires client-side encryption (`requireEncryptedAtRest`,
 * migration 0004) gets only `.tachyon-enc` envelopes. With `tachyon serve --config` as a
 * child process and real `tachyon send` processes: a plaintext name is refused before any
 * data flows, a `.tachyon-enc` name over plaintext content is refused after the upload
 * and removed, an encrypted upload is accepted; each refusal is a clear message to the
 * client and an audit record; another user is unaffected; SFTP cannot write for it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { envelopeSize } from '../../src/storage/envelope/index.js';
import { jsonLines, runCli, startConfigServer } from '../helpers/cli.js';

const PW = { TACHYON_FILE_PASSPHRASE: 'correct horse battery staple' };

function auditRecords(file: string): { type: string; fields: Record<string, unknown> }[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { type: string; fields: Record<string, unknown> });
}

describe('requireEncryptedAtRest: plaintext uploads are refused', () => {
  let work: string;
  let files: string;
  let cfgFile: string;
  let auditLog: string;
  let server: ChildProcessWithoutNullStreams;
  let port: number;
  let fingerprint: string;
  const key: Record<string, string> = {};

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-encpol-'));
    files = path.join(work, 'files');
    for (const u of ['dana', 'eve']) {
      mkdirSync(path.join(files, u), { recursive: true });
      key[u] = path.join(work, `id_${u}`);
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', u, '-f', key[u]!]);
    }
    auditLog = path.join(work, 'audit.log');
    cfgFile = path.join(work, 'tachyon.json');
    const pub = (u: string): string => readFileSync(`${key[u]}.pub`, 'utf8').trim();
    writeFileSync(
      cfgFile,
      JSON.stringify({
        listen: '127.0.0.1',
        port: 0,
        database: 'tachyon.db',
        allowedRoots: [`file://${files}/*`],
        auditLog,
        users: [
          { name: 'dana', docroot: `file://${files}/dana`, keys: [pub('dana')], requireEncryptedAtRest: true },
          { name: 'eve', docroot: `file://${files}/eve`, keys: [pub('eve')] },
        ],
      }),
    );
    const started = await startConfigServer(cfgFile, work);
    server = started.child;
    const start = started.event;
    port = start.tcpPort as number;
    fingerprint = start.fingerprint as string;
    writeFileSync(path.join(work, 'plain.bin'), randomBytes(300_000));
    // plaintext under an envelope's name, with a size an envelope could have
    writeFileSync(path.join(work, 'fake.bin.tachyon-enc'), randomBytes(envelopeSize(1000)));
  });

  after(() => {
    server?.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
  });

  const common = (u: string): string[] => ['-P', String(port), '-i', key[u]!, '--host-key-fingerprint', fingerprint, '-l', '300m', '--json'];

  it('the policy is stored (migration 0004) and shown by tachyon user show', async () => {
    const r = await runCli(['user', 'show', 'dana', '--config', cfgFile, '--json'], work);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as Record<string, unknown>).requireEncryptedAtRest, true);
    const e = await runCli(['user', 'show', 'eve', '--config', cfgFile, '--json'], work);
    assert.equal((JSON.parse(e.stdout) as Record<string, unknown>).requireEncryptedAtRest, false);
  });

  it('refuses a plaintext name before any data flows: clear message, nothing stored, an audit record', async () => {
    const r = await runCli(['send', ...common('dana'), path.join(work, 'plain.bin'), 'dana@127.0.0.1:/'], work);
    assert.equal(r.code, 1, r.stderr);
    const err = jsonLines(r.stdout).find((e) => e.event === 'file.error')!;
    assert.equal(err.code, 'ENCRYPTION_REQUIRED');
    assert.match(String(err.message), /accepts only files encrypted by the client \(send them with --encrypt-at-rest/);
    assert.match(String(err.message), /does not end in \.tachyon-enc/);
    assert.deepEqual(readdirSync(path.join(files, 'dana')), []);
    await new Promise((res) => setTimeout(res, 200));
    const rec = auditRecords(auditLog).find((x) => x.type === 'refusal.permission' && x.fields['permission'] === 'plaintext-upload' && x.fields['path'] === 'plain.bin');
    assert.ok(rec, 'an audit record of the refusal');
    assert.equal(rec.fields['user'], 'dana');
  });

  it('refuses plaintext content under a .tachyon-enc name once received, and removes it', async () => {
    const r = await runCli(['send', ...common('dana'), path.join(work, 'fake.bin.tachyon-enc'), 'dana@127.0.0.1:/'], work);
    assert.equal(r.code, 1, r.stderr);
    const err = jsonLines(r.stdout).find((e) => e.event === 'file.error')!;
    assert.equal(err.code, 'ENCRYPTION_REQUIRED');
    assert.match(String(err.message), /no valid encryption header/);
    assert.deepEqual(readdirSync(path.join(files, 'dana')), []);
    await new Promise((res) => setTimeout(res, 200));
    assert.ok(auditRecords(auditLog).some((x) => x.type === 'refusal.permission' && x.fields['permission'] === 'plaintext-upload' && x.fields['path'] === 'fake.bin.tachyon-enc'));
  });

  it('accepts send --encrypt-at-rest; another user may still upload plaintext', async () => {
    const r = await runCli(['send', ...common('dana'), '--encrypt-at-rest', path.join(work, 'plain.bin'), 'dana@127.0.0.1:/'], work, 60_000, PW);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.deepEqual(readdirSync(path.join(files, 'dana')), ['plain.bin.tachyon-enc']);
    const e = await runCli(['send', ...common('eve'), path.join(work, 'plain.bin'), 'eve@127.0.0.1:/'], work);
    assert.equal(e.code, 0, e.stderr);
    assert.deepEqual(readdirSync(path.join(files, 'eve')), ['plain.bin']);
  });

  it('SFTP cannot write for such an account (no point to check the content before it is visible); reading still works', async () => {
    const batch = path.join(work, 'sftp-batch');
    writeFileSync(batch, `put ${path.join(work, 'plain.bin')} /sneaky.bin\n`);
    const args = (b: string): string[] => [
      '-b', b, '-F', '/dev/null', '-i', key['dana']!, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes',
      '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-P', String(port), 'dana@127.0.0.1',
    ];
    const r = spawnSync('sftp', args(batch), { encoding: 'utf8', timeout: 30_000 });
    assert.notEqual(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stderr, /[Pp]ermission denied/);
    assert.ok(!readdirSync(path.join(files, 'dana')).includes('sneaky.bin'));
    const get = path.join(work, 'sftp-get');
    writeFileSync(get, `get /plain.bin.tachyon-enc ${path.join(work, 'fetched.tachyon-enc')}\n`);
    const g = spawnSync('sftp', args(get), { encoding: 'utf8', timeout: 30_000 });
    assert.equal(g.status, 0, g.stdout + g.stderr);
    assert.ok(readFileSync(path.join(work, 'fetched.tachyon-enc')).equals(readFileSync(path.join(files, 'dana', 'plain.bin.tachyon-enc'))));
  });
});
