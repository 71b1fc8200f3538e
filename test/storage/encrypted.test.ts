/**
 * EncryptedStorage (server-side encryption at rest): the StorageBackend contract over
 * memory and over a real directory, plus what encryption adds — the inner backend holds
 * only envelopes under a master key, a missing or wrong master key is a named error,
 * tampering is detected on read, and re-keying rewrites only the 128-byte header.
 */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { EncryptedStorage, LocalStorage, MemoryStorage, RESERVED_PREFIX, type StorageBackend } from '../../src/storage/index.js';
import {
  addKeyToKeyringFile,
  decodeHeader,
  envelopeSize,
  HEADER_BYTES,
  keyringFromEnv,
  loadKeyringFile,
  rewrapEnvelopeFile,
  StaticKeyring,
} from '../../src/storage/envelope/index.js';
import { rejectsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';
import { storageContract } from './contract.js';

const key = (seed: number): Buffer => new Rng(seed).bytes(32);
const ring = (): StaticKeyring => new StaticKeyring({ k1: key(1) }, 'k1');

storageContract('encrypted(memory)', async () => ({ backend: new EncryptedStorage(new MemoryStorage(), ring()) }));

storageContract('encrypted(local)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tachyon-encstorage-'));
  return {
    backend: new EncryptedStorage(await LocalStorage.open(dir), ring()),
    cleanup: async () => {
      for (const name of readdirSync(dir, { recursive: true }) as string[]) {
        assert.ok(!name.split('/').some((c) => c.startsWith(RESERVED_PREFIX)), `temporary file left behind: ${name}`);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
});

async function put(s: StorageBackend, path: string, data: Buffer): Promise<void> {
  const w = await s.createWriter(path, data.length);
  await w.write(0, data);
  await w.commit();
}

async function get(s: StorageBackend, path: string): Promise<Buffer> {
  const h = await s.openRead(path);
  try {
    return await h.read(0, h.size);
  } finally {
    await h.close();
  }
}

describe('EncryptedStorage specifics', () => {
  it('the inner backend holds only envelopes under the master key; reads are transparent', async () => {
    const inner = new MemoryStorage();
    const s = new EncryptedStorage(inner, ring());
    const data = new Rng(9).bytes(200_000);
    await put(s, 'f.bin', data);
    const raw = await get(inner, 'f.bin');
    assert.equal(raw.length, envelopeSize(data.length));
    assert.equal(raw.indexOf(data.subarray(1000, 1064)), -1, 'no plaintext stored');
    const h = decodeHeader(raw.subarray(0, HEADER_BYTES));
    assert.deepEqual(h.slot, { kind: 'master', keyId: 'k1' });
    assert.equal((await s.stat('f.bin')).size, data.length);
    assert.equal((await s.list('')).entries[0]!.size, data.length);
    assert.ok((await get(s, 'f.bin')).equals(data));
  });

  it('a missing master key is KEY_MISSING, a wrong one WRONG_KEY, tampering ENVELOPE_INVALID', async () => {
    const inner = new MemoryStorage();
    await put(new EncryptedStorage(inner, ring()), 'f', new Rng(2).bytes(100_000));
    await rejectsCode(new EncryptedStorage(inner, new StaticKeyring({ k2: key(2) }, 'k2')).openRead('f'), 'KEY_MISSING');
    await rejectsCode(new EncryptedStorage(inner, new StaticKeyring({ k1: key(3) }, 'k1')).openRead('f'), 'WRONG_KEY');
    const raw = await get(inner, 'f');
    raw[HEADER_BYTES + 70_000]! ^= 1;
    await inner.remove('f');
    await put(inner, 'f', raw);
    const h = await new EncryptedStorage(inner, ring()).openRead('f');
    assert.equal((await h.read(0, 1000)).length, 1000, 'segment 0 is intact');
    const e = await rejectsCode(h.read(60_000, 20_000), 'ENVELOPE_INVALID');
    assert.equal(e.details?.reason, 'segment-corrupted');
    await h.close();
  });

  it('keys rotate: re-wraps the header only, under the new current key; content unchanged', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tachyon-rotate-'));
    try {
      const file = join(dir, 'keyring.json');
      const k1 = addKeyToKeyringFile(file, 'k1');
      assert.equal(k1, 'k1');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      const local = await LocalStorage.open(join(dir));
      const before = new EncryptedStorage(local, loadKeyringFile(file));
      const data = new Rng(4).bytes(150_000);
      await put(before, 'doc.bin', data);
      const raw1 = readFileSync(join(dir, 'doc.bin'));
      addKeyToKeyringFile(file, 'k2');
      const after = loadKeyringFile(file);
      assert.equal(after.currentKeyId(), 'k2');
      assert.equal(await rewrapEnvelopeFile(join(dir, 'doc.bin'), after), 'rewrapped');
      assert.equal(await rewrapEnvelopeFile(join(dir, 'doc.bin'), after), 'current');
      const raw2 = readFileSync(join(dir, 'doc.bin'));
      assert.ok(raw2.subarray(HEADER_BYTES).equals(raw1.subarray(HEADER_BYTES)), 'segments untouched');
      assert.ok(!raw2.subarray(0, HEADER_BYTES).equals(raw1.subarray(0, HEADER_BYTES)));
      assert.deepEqual(decodeHeader(raw2).slot, { kind: 'master', keyId: 'k2' });
      assert.ok((await get(new EncryptedStorage(local, after), 'doc.bin')).equals(data));
      // once k1 is gone, only the re-wrapped file can be read
      await rejectsCode(get(new EncryptedStorage(local, new StaticKeyring({ k1: key(99) }, 'k1')), 'doc.bin'), 'KEY_MISSING');
      chmodSync(file, 0o644);
      assert.throws(() => loadKeyringFile(file), /readable by group or others/);
      writeFileSync(join(dir, 'bad.json'), '{"current":"x","keys":{"x":"zz"}}', { mode: 0o600 });
      assert.throws(() => loadKeyringFile(join(dir, 'bad.json')), /64 hex digits/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('TACHYON_MASTER_KEY: ID:HEX64, anything else refused', () => {
    assert.equal(keyringFromEnv(`main:${'ab'.repeat(32)}`).currentKeyId(), 'main');
    assert.throws(() => keyringFromEnv(undefined), /no master key/);
    assert.throws(() => keyringFromEnv('main:abcd'), /ID:HEX64/);
  });

  it('fuzz: keyring files and TACHYON_MASTER_KEY values are parsed or refused with CONFIG/KEY_MISSING, never anything else (seeded)', async () => {
    const rng = new Rng(77);
    const dir = await mkdtemp(join(tmpdir(), 'tachyon-keyfuzz-'));
    const pieces = ['{', '}', '"current"', '"keys"', ':', ',', '"k1"', `"${'ab'.repeat(32)}"`, '"zz"', 'null', '[]', '1', '"', ' ', 'main', 'ab'.repeat(32), '\u0000'];
    try {
      for (let k = 0; k < 400; k++) {
        const text = Array.from({ length: rng.range(0, 12) }, () => rng.pick(pieces)).join('');
        for (const attempt of [() => keyringFromEnv(text), () => {
          const f = join(dir, `k${k}.json`);
          writeFileSync(f, text, { mode: 0o600 });
          return loadKeyringFile(f);
        }]) {
          try {
            const r = attempt();
            assert.equal((await r.key(r.currentKeyId())).length, 32);
          } catch (err) {
            assert.ok(err instanceof Error && 'code' in err && ['CONFIG', 'KEY_MISSING'].includes(String((err as { code: string }).code)), `${JSON.stringify(text)}: ${String(err)}`);
          }
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
