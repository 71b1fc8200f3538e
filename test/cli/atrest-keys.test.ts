/**
 * `tachyon keys new` and `tachyon keys rotate` as real processes: a keyring is created
 * 0600, files stored through EncryptedStorage are re-wrapped under the new current key
 * (headers only), client-side envelopes and other files are left alone, and the old key
 * is then no longer needed; `tachyon decrypt --keyring` reads a server-side file offline.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EncryptedStorage, LocalStorage } from '../../src/storage/index.js';
import { decodeHeader, deriveKek, encryptBuffer, HEADER_BYTES, loadKeyringFile, openEnvelope, sealHeader, StaticKeyring } from '../../src/storage/envelope/index.js';
import { jsonLines, runCli } from '../helpers/cli.js';
import { Rng } from '../helpers/rng.js';

describe('tachyon keys', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'tachyon-keys-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('new, then rotate: headers re-wrapped under the new key, content untouched, others left alone', async () => {
    const ring = path.join(dir, 'keyring.json');
    const a = await runCli(['keys', 'new', '--keyring', ring, '--id', 'k1'], dir);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout.trim(), 'k1');
    assert.equal(statSync(ring).mode & 0o777, 0o600);
    const root = path.join(dir, 'root');
    mkdirSync(path.join(root, 'sub'), { recursive: true });
    const store = new EncryptedStorage(await LocalStorage.open(root), loadKeyringFile(ring));
    const rng = new Rng(12);
    const data = { 'a.bin': rng.bytes(100_000), 'sub/b.bin': rng.bytes(10) };
    for (const [p, b] of Object.entries(data)) {
      const w = await store.createWriter(p, b.length);
      await w.write(0, b);
      await w.commit();
    }
    // a client-side envelope and a plain file beside them
    const kdf = { id: 'scrypt' as const, log2N: 4, r: 1, p: 1, salt: rng.bytes(16) };
    const kek = await deriveKek('pw', kdf);
    writeFileSync(path.join(root, 'client.tachyon-enc'), encryptBuffer(openEnvelope(sealHeader({ kek, contentKey: rng.bytes(32), slot: { kind: 'passphrase', kdf } }), kek), Buffer.from('hi')));
    writeFileSync(path.join(root, 'plain.txt'), 'plain');
    const before = readFileSync(path.join(root, 'a.bin'));
    assert.equal((await runCli(['keys', 'new', '--keyring', ring, '--id', 'k2'], dir)).code, 0);
    const r = await runCli(['keys', 'rotate', '--keyring', ring, '--json', root], dir);
    assert.equal(r.code, 0, r.stderr);
    const done = jsonLines(r.stdout).find((e) => e.event === 'done')!;
    assert.deepEqual({ rewrapped: done.rewrapped, current: done.current, passphrase: done.passphrase, failed: done.failed }, { rewrapped: 2, current: 0, passphrase: 1, failed: 0 });
    const after = readFileSync(path.join(root, 'a.bin'));
    assert.ok(after.subarray(HEADER_BYTES).equals(before.subarray(HEADER_BYTES)));
    assert.deepEqual(decodeHeader(after).slot, { kind: 'master', keyId: 'k2' });
    assert.equal(readFileSync(path.join(root, 'plain.txt'), 'utf8'), 'plain');
    // the new key alone reads everything
    const k2 = await loadKeyringFile(ring).key('k2');
    const only = new EncryptedStorage(await LocalStorage.open(root), new StaticKeyring({ k2 }, 'k2'));
    for (const [p, b] of Object.entries(data)) {
      const h = await only.openRead(p);
      assert.ok((await h.read(0, h.size)).equals(b), p);
      await h.close();
    }
    const again = await runCli(['keys', 'rotate', '--keyring', ring, '--json', root], dir);
    assert.equal(jsonLines(again.stdout).find((e) => e.event === 'done')!.current, 2);
    // offline, with the keyring (the name has no .tachyon-enc: server-side files keep their names)
    writeFileSync(path.join(dir, 'copy.tachyon-enc'), after);
    const d = await runCli(['decrypt', '--keyring', ring, path.join(dir, 'copy.tachyon-enc')], dir);
    assert.equal(d.code, 0, d.stderr);
    assert.ok(readFileSync(path.join(dir, 'copy')).equals(data['a.bin']));
    const nokey = await runCli(['decrypt', '--force', path.join(dir, 'copy.tachyon-enc')], dir, 30_000, { TACHYON_FILE_PASSPHRASE: 'x' });
    assert.equal(nokey.code, 78);
    assert.match(nokey.stderr, /master key 'k2'/);
  });

  it('rotate without a keyring or TACHYON_MASTER_KEY is a clear error', async () => {
    const r = await runCli(['keys', 'rotate', dir], dir, 30_000, { TACHYON_MASTER_KEY: '' });
    assert.equal(r.code, 78);
    assert.match(r.stderr, /no master key/);
  });
});
