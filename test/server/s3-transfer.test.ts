/**
 * Transfers into S3 end to end: `tachyon serve --config FILE` as a child process with a
 * user whose docroot is `s3://bucket/prefix` in a real s3rver (started here), driven by
 * real `tachyon send` / `tachyon recv` processes. Files of several MiB (several multipart
 * parts) are verified by SHA-256 in the bucket, the sender's mtime lands in the object's
 * metadata so `-k attrs` skips an unchanged file, downloads spool objects with ranged
 * reads and arrive verified, and a client killed mid-upload leaves neither an object nor
 * a pending multipart upload.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { S3Storage } from '../../src/storage/s3.js';
import { jsonLines, runCli, startCli, startConfigServer } from '../helpers/cli.js';
import { S3RVER_CREDENTIALS, startS3rver, type S3rverFixture } from '../helpers/s3rver.js';

const BUCKET = 'tachyon-e2e';
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('transfers into an s3:// docroot (serve --config, s3rver)', () => {
  let work: string;
  let s3: S3rverFixture;
  let client: S3Client;
  let dave: S3Storage;
  let server: ChildProcessWithoutNullStreams;
  let serverErr = (): string => '';
  let port: number;
  let fingerprint: string;
  let key: string;
  let erinKey: string;
  let fayKey: string;
  /** the server's TMPDIR: download spools live there while files are in flight */
  let spoolParent: string;

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-s3e2e-'));
    s3 = await startS3rver([BUCKET]);
    client = s3.client();
    dave = new S3Storage({ client, location: `s3://${BUCKET}/tenants/dave` });
    key = path.join(work, 'id_dave');
    spoolParent = path.join(work, 'server-tmp');
    mkdirSync(spoolParent);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'dave', '-f', key]);
    erinKey = path.join(work, 'id_erin');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'erin', '-f', erinKey]);
    fayKey = path.join(work, 'id_fay');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'fay', '-f', fayKey]);
    const cfgFile = path.join(work, 'tachyon.json');
    writeFileSync(
      cfgFile,
      JSON.stringify({
        listen: '127.0.0.1',
        port: 0,
        database: 'tachyon.db',
        allowedRoots: [`s3://${BUCKET}/tenants/*`],
        users: [
          { name: 'dave', docroot: `s3://${BUCKET}/tenants/dave`, keys: [readFileSync(`${key}.pub`, 'utf8').trim()], permissions: ['list', 'read', 'write', 'mkdir'] },
          // erin may write but not create directories, and not read
          { name: 'erin', docroot: `s3://${BUCKET}/tenants/erin`, keys: [readFileSync(`${erinKey}.pub`, 'utf8').trim()], permissions: ['write'] },
          // fay must upload client-encrypted files only: not checkable on S3 yet, so her uploads are refused
          { name: 'fay', docroot: `s3://${BUCKET}/tenants/fay`, keys: [readFileSync(`${fayKey}.pub`, 'utf8').trim()], permissions: ['list', 'read', 'write', 'mkdir'], requireEncryptedAtRest: true },
        ],
        s3: { endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, requestTimeoutSeconds: 10, maxAttempts: 2, partSizeMiB: 5 },
      }),
    );
    // credentials from the environment only (never the configuration file)
    const started = await startConfigServer(cfgFile, work, { env: { TMPDIR: spoolParent, AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey } });
    server = started.child;
    const start = started.event;
    serverErr = started.stderr;
    port = start.tcpPort as number;
    fingerprint = start.fingerprint as string;
  });

  after(async () => {
    server?.kill('SIGTERM');
    await s3?.close();
    rmSync(work, { recursive: true, force: true });
  });

  const common = (...extra: string[]): string[] => ['-P', String(port), '-i', key, '--host-key-fingerprint', fingerprint, '-l', '500m', ...extra];

  const stored = async (p: string): Promise<Buffer> => {
    const h = await dave.openRead(p);
    try {
      return await h.read(0, h.size);
    } finally {
      await h.close();
    }
  };

  it('uploads files of several MiB straight into the bucket, verified by SHA-256, with the source mtime', async () => {
    const big = path.join(work, 'big.bin');
    const small = path.join(work, 'small.bin');
    const bigData = randomBytes(12 * 1024 * 1024 + 321); // three 5 MiB parts
    const smallData = randomBytes(300_000);
    writeFileSync(big, bigData);
    writeFileSync(small, smallData);
    utimesSync(big, new Date(1_700_000_000_000), new Date(1_700_000_000_000));
    const r = await runCli(['send', ...common('--json', '--create-dir'), big, small, 'dave@127.0.0.1:/in/'], work, 90_000);
    assert.equal(r.code, 0, `${r.stderr}\nserver: ${serverErr()}`);
    assert.equal(sha(await stored('in/big.bin')), sha(bigData));
    assert.equal(sha(await stored('in/small.bin')), sha(smallData));
    const st = await dave.stat('in/big.bin');
    assert.equal(st.size, bigData.length);
    assert.equal(st.mtimeMs, statSync(big).mtimeMs, 'the sender mtime is in x-amz-meta-mtime');
    assert.deepEqual(await s3.pendingUploads(BUCKET), [], 'no multipart upload left pending');
  });

  it('-k attrs skips an unchanged file (size and mtime from the object metadata) and sends a changed one', async () => {
    const f = path.join(work, 'again.bin');
    writeFileSync(f, randomBytes(6 * 1024 * 1024));
    const first = await runCli(['send', ...common('--json', '-k', 'attrs'), f, 'dave@127.0.0.1:/'], work, 60_000);
    assert.equal(first.code, 0, first.stderr);
    const second = await runCli(['send', ...common('--json', '-k', 'attrs'), f, 'dave@127.0.0.1:/'], work, 60_000);
    assert.equal(second.code, 0, second.stderr);
    const ev = jsonLines(second.stdout).find((e) => e['path'] === 'again.bin' && e['status'] !== undefined);
    assert.equal(ev?.['status'], 'skipped', second.stdout);
    assert.equal(ev?.['reason'], 'same');
    const changed = randomBytes(6 * 1024 * 1024);
    writeFileSync(f, changed);
    const third = await runCli(['send', ...common('--json', '-k', 'attrs'), f, 'dave@127.0.0.1:/'], work, 60_000);
    assert.equal(third.code, 0, third.stderr);
    assert.equal(sha(await stored('again.bin')), sha(changed));
    const never = await runCli(['send', ...common('--json', '--overwrite', 'never'), f, 'dave@127.0.0.1:/'], work, 60_000);
    assert.equal(never.code, 0, never.stderr);
    assert.equal(jsonLines(never.stdout).find((e) => e['path'] === 'again.bin' && e['status'] !== undefined)?.['status'], 'skipped');
  });

  it('downloads objects (spooled with ranged reads): a file and a directory, verified by SHA-256, mtime kept; -k attrs skips', async () => {
    const one = path.join(work, 'back.bin');
    const r1 = await runCli(['recv', ...common('--json'), 'dave@127.0.0.1:/in/big.bin', one], work, 90_000);
    assert.equal(r1.code, 0, `${r1.stderr}\nserver: ${serverErr()}`);
    assert.equal(sha(readFileSync(one)), sha(await stored('in/big.bin')));
    assert.equal(statSync(one).mtimeMs, 1_700_000_000_000, 'the object mtime (metadata) becomes the file mtime');
    const out = path.join(work, 'tree-out');
    const r2 = await runCli(['recv', ...common('--json', '--create-dir'), 'dave@127.0.0.1:/in', `${out}/`], work, 90_000);
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(sha(readFileSync(path.join(out, 'in', 'big.bin'))), sha(await stored('in/big.bin')));
    assert.equal(sha(readFileSync(path.join(out, 'in', 'small.bin'))), sha(await stored('in/small.bin')));
    const r3 = await runCli(['recv', ...common('--json', '-k', 'attrs'), 'dave@127.0.0.1:/in/big.bin', one], work, 60_000);
    assert.equal(r3.code, 0, r3.stderr);
    assert.equal(jsonLines(r3.stdout).find((e) => e['status'] !== undefined)?.['status'], 'skipped', r3.stdout);
    // the spools are gone once the sessions ended
    const t0 = Date.now();
    while (readdirSync(spoolParent).length > 0 && Date.now() - t0 < 5_000) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(readdirSync(spoolParent), []);
    const missing = await runCli(['recv', ...common(), 'dave@127.0.0.1:/nope.bin', path.join(work, 'nope.bin')], work, 30_000);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /does not exist/);
  });

  it('refuses paths that leave the docroot, with sanitized messages', async () => {
    const f = path.join(work, 'x.txt');
    writeFileSync(f, 'x');
    const up = await runCli(['send', ...common(), f, 'dave@127.0.0.1:../../other/'], work, 30_000);
    assert.notEqual(up.code, 0);
    assert.match(up.stderr, /path|leaves|root/i);
    const down = await runCli(['recv', ...common(), 'dave@127.0.0.1:../../tenants/other/x', path.join(work, 'x2')], work, 30_000);
    assert.notEqual(down.code, 0);
    for (const r of [up, down]) {
      assert.ok(!r.stderr.includes(BUCKET) && !r.stderr.includes('S3RVER') && !r.stderr.includes('tenants/dave'), r.stderr);
    }
    assert.deepEqual((await dave.list('')).entries.map((e) => e.name).sort(), ['again.bin', 'in']);
  });

  it('permissions hold for s3 accounts: no mkdir, no read', async () => {
    const erin = ['-P', String(port), '-i', erinKey, '--host-key-fingerprint', fingerprint, '-l', '500m'];
    const f = path.join(work, 'e.txt');
    writeFileSync(f, 'erin');
    const flat = await runCli(['send', ...erin, f, 'erin@127.0.0.1:/'], work, 30_000);
    assert.equal(flat.code, 0, flat.stderr);
    const made = await runCli(['send', ...erin, '--create-dir', f, 'erin@127.0.0.1:/new/'], work, 30_000);
    assert.notEqual(made.code, 0);
    assert.match(made.stderr, /may not create directories/);
    const read = await runCli(['recv', ...erin, 'erin@127.0.0.1:/e.txt', path.join(work, 'e2.txt')], work, 30_000);
    assert.notEqual(read.code, 0);
    assert.match(read.stderr, /may not download/);
    const erinStore = new S3Storage({ client, location: `s3://${BUCKET}/tenants/erin` });
    assert.deepEqual((await erinStore.list('')).entries.map((e) => e.name), ['e.txt']);
  });

  it('send --encrypt-at-rest stores the envelope (DEST keeps .tachyon-enc); recv --decrypt gets the plaintext back', async () => {
    const PW = { TACHYON_FILE_PASSPHRASE: 'correct horse battery staple' };
    const f = path.join(work, 'plain.bin');
    const data = randomBytes(3 * 1024 * 1024 + 17);
    writeFileSync(f, data);
    const up = await runCli(['send', ...common('--create-dir'), '--encrypt-at-rest', f, 'dave@127.0.0.1:/enc/renamed'], work, 90_000, PW);
    assert.equal(up.code, 0, `${up.stderr}\nserver: ${serverErr()}`);
    const st = await dave.stat('enc/renamed.tachyon-enc');
    assert.ok(st.size > data.length, 'the envelope is stored, larger than the plaintext');
    await assert.rejects(dave.stat('enc/renamed'), (e: unknown) => (e as { code?: string }).code === 'NOT_FOUND');
    assert.ok(!(await stored('enc/renamed.tachyon-enc')).includes(data.subarray(0, 64)), 'no plaintext in the bucket');
    const out = path.join(work, 'decrypted.bin');
    const down = await runCli(['recv', ...common(), '--decrypt', 'dave@127.0.0.1:/enc/renamed.tachyon-enc', out], work, 90_000, PW);
    assert.equal(down.code, 0, `${down.stderr}\nserver: ${serverErr()}`);
    assert.equal(sha(readFileSync(out)), sha(data));
  });

  it('an account that requires encryption at rest cannot upload into S3 yet: refused clearly (ENCRYPTION_REQUIRED), nothing stored', async () => {
    const fay = ['-P', String(port), '-i', fayKey, '--host-key-fingerprint', fingerprint, '-l', '500m'];
    const f = path.join(work, 'f.txt');
    writeFileSync(f, 'fay');
    const plain = await runCli(['send', ...fay, '--json', f, 'fay@127.0.0.1:/'], work, 30_000);
    assert.notEqual(plain.code, 0);
    assert.match(plain.stderr + plain.stdout, /ENCRYPTION_REQUIRED|client-encrypted files/);
    assert.match(plain.stderr + plain.stdout, /storage cannot check them yet/);
    const enc = await runCli(['send', ...fay, '--encrypt-at-rest', f, 'fay@127.0.0.1:/'], work, 30_000, { TACHYON_FILE_PASSPHRASE: 'pw for fay' });
    assert.notEqual(enc.code, 0, 'refused too: the content check cannot run on S3');
    const fayStore = new S3Storage({ client, location: `s3://${BUCKET}/tenants/fay` });
    assert.deepEqual((await fayStore.list('')).entries, []);
    assert.deepEqual(await s3.pendingUploads(BUCKET), []);
  });

  it('a client killed mid-upload leaves no object and no pending multipart upload', async () => {
    const f = path.join(work, 'killed.bin');
    writeFileSync(f, randomBytes(40 * 1024 * 1024));
    const { child, done } = startCli(['send', '-P', String(port), '-i', key, '--host-key-fingerprint', fingerprint, '-l', '40m', f, 'dave@127.0.0.1:/'], work, 60_000);
    // wait until parts are being uploaded, then kill the client
    const t0 = Date.now();
    while ((await s3.pendingUploads(BUCKET)).length === 0 && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 100));
    assert.ok((await s3.pendingUploads(BUCKET)).length > 0, 'an upload was in progress');
    child.kill('SIGKILL');
    await done;
    const t1 = Date.now();
    while ((await s3.pendingUploads(BUCKET)).length > 0 && Date.now() - t1 < 45_000) await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(await s3.pendingUploads(BUCKET), [], 'the multipart upload was aborted');
    await assert.rejects(dave.stat('killed.bin'), (e: unknown) => (e as { code?: string }).code === 'NOT_FOUND');
  });
});
