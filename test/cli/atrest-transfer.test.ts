/**
 * Client-side encryption at rest end to end, with real processes: `send --encrypt-at-rest`
 * stores only `NAME.tachyon-enc` envelopes (the server never holds plaintext or key; the
 * SHA-256 verified is the stored envelope's), `tachyon decrypt` and `recv --decrypt`
 * restore the plaintext, an upload killed half-way resumes with `-k sparse` (the same
 * envelope bytes are re-created), and a wrong passphrase on `recv --decrypt` leaves the
 * envelope and no plaintext.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { envelopeSize } from '../../src/storage/envelope/index.js';
import { jsonLines, runCli, startCli, startCliServer, type CliServer } from '../helpers/cli.js';

const MiB = 1 << 20;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const PW = { TACHYON_FILE_PASSPHRASE: 'correct horse battery staple' };

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sizeOf = (p: string): number => {
  try {
    return statSync(p).size;
  } catch {
    return 0;
  }
};

describe('send --encrypt-at-rest / recv --decrypt', () => {
  let work: string;
  let server: CliServer;
  const remote = (p: string): string => `xfer@127.0.0.1:${p}`;
  const files: Record<string, Buffer> = {
    'empty.bin': Buffer.alloc(0),
    'one.txt': Buffer.from('x'),
    'page.bin': randomBytes(65536),
    'mid.bin': randomBytes(200_001),
    'big.bin': randomBytes(3 * MiB + 17),
  };

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-atrest-'));
    server = await startCliServer(work);
    mkdirSync(path.join(work, 'src'));
    for (const [n, b] of Object.entries(files)) writeFileSync(path.join(work, 'src', n), b);
  });

  after(() => {
    server?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('the server stores only envelopes; the verified SHA-256 is the stored bytes; decrypt and recv --decrypt restore the files', async () => {
    mkdirSync(path.join(server.root, 'enc'));
    const r = await runCli(['send', ...server.common(), '--encrypt-at-rest', '--json', '-l', '1g', path.join(work, 'src'), remote('/enc/')], work, 60_000, PW);
    assert.equal(r.code, 0, r.stderr);
    const stored = path.join(server.root, 'enc', 'src');
    assert.deepEqual(readdirSync(stored).sort(), Object.keys(files).map((n) => `${n}.tachyon-enc`).sort());
    const done = jsonLines(r.stdout).filter((e) => e.event === 'file.done');
    for (const [n, b] of Object.entries(files)) {
      const env = readFileSync(path.join(stored, `${n}.tachyon-enc`));
      assert.equal(env.length, envelopeSize(b.length), n);
      assert.equal(env.subarray(0, 8).toString('latin1'), 'TACHYENC');
      if (b.length >= 64) assert.equal(env.indexOf(b.subarray(0, 64)), -1, `${n}: plaintext visible at the server`);
      const ev = done.find((e) => e.path === `src/${n}.tachyon-enc`)!;
      assert.equal(ev.sha256, sha(env), `${n}: the digest is over what is stored`);
    }
    // offline
    const out = path.join(work, 'offline');
    mkdirSync(out);
    const d = await runCli(['decrypt', '--out', out, ...Object.keys(files).map((n) => path.join(stored, `${n}.tachyon-enc`))], work, 60_000, PW);
    assert.equal(d.code, 0, d.stderr);
    for (const [n, b] of Object.entries(files)) assert.ok(readFileSync(path.join(out, n)).equals(b), n);
    // download and decrypt
    const got = path.join(work, 'got');
    mkdirSync(got);
    const rr = await runCli(['recv', ...server.common(), '--decrypt', '--json', '-l', '1g', remote('/enc/src'), got], work, 60_000, PW);
    assert.equal(rr.code, 0, rr.stderr + rr.stdout);
    assert.equal(jsonLines(rr.stdout).filter((e) => e.event === 'file.decrypted').length, Object.keys(files).length);
    assert.deepEqual(readdirSync(path.join(got, 'src')).sort(), Object.keys(files).sort());
    for (const [n, b] of Object.entries(files)) assert.ok(readFileSync(path.join(got, 'src', n)).equals(b), n);
  });

  it('one file sent to a DEST that names it keeps the extension: DEST.tachyon-enc', async () => {
    const r = await runCli(['send', ...server.common(), '--encrypt-at-rest', path.join(work, 'src', 'one.txt'), remote('/enc/renamed')], work, 60_000, PW);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(readdirSync(path.join(server.root, 'enc')).includes('renamed.tachyon-enc'));
    assert.ok(!readdirSync(path.join(server.root, 'enc')).includes('renamed'));
  });

  it('recv --decrypt with a wrong passphrase keeps the verified envelope and writes no plaintext', async () => {
    const got = path.join(work, 'got-wrong');
    mkdirSync(got);
    const rr = await runCli(['recv', ...server.common(), '--decrypt', '--json', remote('/enc/src/mid.bin.tachyon-enc'), got], work, 60_000, { TACHYON_FILE_PASSPHRASE: 'not the passphrase' });
    assert.equal(rr.code, 1, rr.stderr);
    const err = jsonLines(rr.stdout).find((e) => e.event === 'file.error')!;
    assert.equal(err.code, 'WRONG_KEY');
    assert.equal(err.stage, 'decrypt');
    assert.deepEqual(readdirSync(got), ['mid.bin.tachyon-enc']);
  });

  it('recv --decrypt of one file to a DEST name without the extension decrypts it in place, under that name', async () => {
    const out = path.join(work, 'chosen-name.bin');
    const rr = await runCli(['recv', ...server.common(), '--decrypt', '--json', remote('/enc/src/page.bin.tachyon-enc'), out], work, 60_000, PW);
    assert.equal(rr.code, 0, rr.stderr + rr.stdout);
    assert.ok(readFileSync(out).equals(files['page.bin']!));
    assert.equal(readdirSync(work).filter((n) => n.includes('chosen-name')).length, 1, 'no temporary file left');
  });

  it('refuses --encrypt-at-rest without a passphrase, and on recv', async () => {
    const a = await runCli(['send', ...server.common(), '--encrypt-at-rest', path.join(work, 'src', 'one.txt'), remote('/enc/')], work, 30_000, { TACHYON_FILE_PASSPHRASE: '' });
    assert.equal(a.code, 2);
    assert.match(a.stderr, /TACHYON_FILE_PASSPHRASE/);
    const b = await runCli(['recv', ...server.common(), '--encrypt-at-rest', remote('/enc/x'), work], work, 30_000, PW);
    assert.equal(b.code, 2);
  });

  it('an encrypted upload killed at about 50% resumes with -k sparse: the same envelope is re-created, little is resent', async (t) => {
    const size = 24 * MiB;
    const src = path.join(work, 'resume.bin');
    const plain = randomBytes(size);
    writeFileSync(src, plain);
    mkdirSync(path.join(server.root, 'resume'));
    const partial = path.join(server.root, 'resume', '.resume.bin.tachyon-enc.tachyon-partial');
    const envSize = envelopeSize(size);
    const opts = [...server.common(), '--encrypt-at-rest', '-k', 'sparse', '--mtu', '9000', '-l', '150m', '--policy', 'fixed', '--json'];
    const ended = (): number => server.events.filter((e) => e.type === 'transfer.error' || e.type === 'transfer.end').length;
    const before = ended();
    const first = startCli(['send', ...opts, src, remote('/resume/')], work, 60_000, PW);
    await waitFor(() => sizeOf(partial) >= envSize / 2, 30_000, 'half of the envelope at the server');
    first.child.kill('SIGKILL');
    await first.done;
    await waitFor(() => ended() > before, 10_000, 'the end of the session at the server');
    const kept = (JSON.parse(readFileSync(`${partial}.json`, 'utf8')) as { verified: number }).verified;
    assert.ok(kept > envSize * 0.3, `kept ${kept} of ${envSize}`);
    const second = await runCli(['send', ...opts, src, remote('/resume/')], work, 60_000, PW);
    assert.equal(second.code, 0, second.stderr);
    const done = jsonLines(second.stdout).find((e) => e.event === 'done')!;
    const stats = done.stats as Record<string, number>;
    t.diagnostic(`kept ${kept} of ${envSize}; the resumed run sent ${stats.bytesSent} bytes over UDP`);
    assert.equal(done.skippedBytes, kept);
    assert.ok(stats.bytesSent! < envSize - kept + envSize * 0.1, `resent ${stats.bytesSent}`);
    const stored = path.join(server.root, 'resume', 'resume.bin.tachyon-enc');
    const outDir = path.join(work, 'resumed');
    mkdirSync(outDir);
    const d = await runCli(['decrypt', '--out', outDir, stored], work, 60_000, PW);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(sha(readFileSync(path.join(outDir, 'resume.bin'))), sha(plain));
    assert.ok(existsSync(stored));
  });
});
