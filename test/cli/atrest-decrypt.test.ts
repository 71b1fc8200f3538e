/**
 * `tachyon decrypt` as a real process: restores the plaintext, and for each bad input the
 * issue names (wrong passphrase, truncated, extended, swapped or repeated segments, a
 * header from another file, a corrupted header, an unknown version) exits with a clear
 * error naming it and leaves no plaintext — final or temporary — behind.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { deriveKek, encryptBuffer, HEADER_BYTES, openEnvelope, sealHeader, segmentOffset, SEGMENT_PLAIN, type KdfParams } from '../../src/storage/envelope/index.js';
import { spawn } from 'node:child_process';
import { bin, jsonLines, runCli } from '../helpers/cli.js';
import { Rng } from '../helpers/rng.js';

const PW = 'a file passphrase';

describe('tachyon decrypt', () => {
  let dir: string;
  let plain: Buffer;
  let good: Buffer;
  let other: Buffer;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'tachyon-decrypt-'));
    const rng = new Rng(5);
    const kdf: KdfParams = { id: 'scrypt', log2N: 10, r: 8, p: 1, salt: rng.bytes(16) };
    const kek = await deriveKek(PW, kdf);
    const mk = (): ReturnType<typeof openEnvelope> => openEnvelope(sealHeader({ kek, contentKey: rng.bytes(32), slot: { kind: 'passphrase', kdf } }), kek);
    plain = rng.bytes(3 * SEGMENT_PLAIN + 999);
    good = encryptBuffer(mk(), plain);
    other = encryptBuffer(mk(), plain);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const env = { TACHYON_FILE_PASSPHRASE: PW };

  it('restores the plaintext under the name without .tachyon-enc, into --out', async () => {
    writeFileSync(path.join(dir, 'clip.mov.tachyon-enc'), good);
    const r = await runCli(['decrypt', '--json', '--out', dir, path.join(dir, 'clip.mov.tachyon-enc')], dir, 30_000, env);
    assert.equal(r.code, 0, r.stderr);
    const ev = jsonLines(r.stdout);
    assert.equal(ev[0]!.event, 'file.done');
    assert.equal(ev[0]!.bytes, plain.length);
    assert.ok(readFileSync(path.join(dir, 'clip.mov')).equals(plain));
    // it exists now: refused without --force
    const again = await runCli(['decrypt', path.join(dir, 'clip.mov.tachyon-enc')], dir, 30_000, env);
    assert.equal(again.code, 73, again.stderr);
    const forced = await runCli(['decrypt', '--force', path.join(dir, 'clip.mov.tachyon-enc')], dir, 30_000, env);
    assert.equal(forced.code, 0, forced.stderr);
  });

  it('needs a passphrase from the environment or a terminal, never the command line', async () => {
    writeFileSync(path.join(dir, 'np.tachyon-enc'), good);
    const r = await runCli(['decrypt', path.join(dir, 'np.tachyon-enc')], dir, 30_000, { TACHYON_FILE_PASSPHRASE: '' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /TACHYON_FILE_PASSPHRASE/);
  });

  it('asks for the passphrase on a terminal with echo off (a real pty through script(1))', async () => {
    const sub = mkdtempSync(path.join(dir, 'tty-'));
    writeFileSync(path.join(sub, 't.bin.tachyon-enc'), good);
    const cmd = `${JSON.stringify(process.execPath)} ${JSON.stringify(bin)} decrypt ${JSON.stringify(path.join(sub, 't.bin.tachyon-enc'))}`;
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: sub };
    delete env.TACHYON_FILE_PASSPHRASE;
    const child = spawn('script', ['-q', '-e', '-c', cmd, '/dev/null'], { cwd: sub, env });
    let out = '';
    let typed = false;
    const code = await new Promise<number | null>((resolve, reject) => {
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`no prompt: ${out}`));
      }, 30_000);
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (!typed && out.includes('File passphrase:')) {
          typed = true;
          child.stdin.write(`${PW}\r`);
        }
      });
      child.on('close', (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    assert.equal(code, 0, out);
    assert.ok(!out.includes(PW), `the passphrase was echoed: ${JSON.stringify(out)}`);
    assert.ok(readFileSync(path.join(sub, 't.bin')).equals(plain));
  });

  const seg = (b: Buffer, i: number): Buffer => b.subarray(segmentOffset(i), segmentOffset(i + 1));
  const cases: { name: string; bytes: () => Buffer; code: string; reason?: string; message: RegExp; exit: number }[] = [
    { name: 'wrong passphrase', bytes: () => good, code: 'WRONG_KEY', message: /wrong passphrase/, exit: 77 },
    { name: 'truncated', bytes: () => good.subarray(0, segmentOffset(2)), code: 'ENVELOPE_INVALID', reason: 'truncated', message: /truncated/, exit: 65 },
    { name: 'a segment repeated inside', bytes: () => Buffer.concat([good.subarray(0, segmentOffset(3)), seg(good, 1), good.subarray(segmentOffset(3))]), code: 'ENVELOPE_INVALID', reason: 'segment-misplaced', message: /segment 3 is segment 1/, exit: 65 },
    { name: 'extended by bytes', bytes: () => Buffer.concat([good, Buffer.alloc(64)]), code: 'ENVELOPE_INVALID', reason: 'segment-corrupted', message: /last segment/, exit: 65 },
    { name: 'swapped', bytes: () => Buffer.concat([good.subarray(0, segmentOffset(1)), seg(good, 2), seg(good, 1), good.subarray(segmentOffset(3))]), code: 'ENVELOPE_INVALID', reason: 'segment-misplaced', message: /segment 1 is segment 2 of this file/, exit: 65 },
    { name: 'header from another file', bytes: () => Buffer.concat([other.subarray(0, HEADER_BYTES), good.subarray(HEADER_BYTES)]), code: 'ENVELOPE_INVALID', reason: 'header-mismatch', message: /header from another file/, exit: 65 },
    {
      name: 'corrupted header',
      bytes: () => {
        const b = Buffer.from(good);
        b[50]! ^= 4;
        return b;
      },
      code: 'ENVELOPE_INVALID',
      reason: 'corrupted-header',
      message: /corrupted header/,
      exit: 65,
    },
    {
      name: 'unknown version',
      bytes: () => {
        const b = Buffer.from(good);
        b[8] = 7;
        return b;
      },
      code: 'ENVELOPE_INVALID',
      reason: 'unknown-version',
      message: /unknown format version 7/,
      exit: 65,
    },
  ];
  for (const c of cases) {
    it(`refuses: ${c.name}, leaving no plaintext behind`, async () => {
      const sub = mkdtempSync(path.join(dir, 'case-'));
      const f = path.join(sub, 'x.bin.tachyon-enc');
      writeFileSync(f, c.bytes());
      const r = await runCli(['decrypt', '--json', f], sub, 30_000, c.name === 'wrong passphrase' ? { TACHYON_FILE_PASSPHRASE: 'not it at all' } : env);
      assert.equal(r.code, c.exit, r.stdout + r.stderr);
      const ev = jsonLines(r.stdout).find((e) => e.event === 'file.error')!;
      assert.equal(ev.code, c.code);
      if (c.reason) assert.equal(ev.reason, c.reason);
      assert.match(String(ev.message), c.message);
      assert.equal(existsSync(path.join(sub, 'x.bin')), false);
      assert.deepEqual(readdirSync(sub), ['x.bin.tachyon-enc']);
    });
  }
});
