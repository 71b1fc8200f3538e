/**
 * The encrypted-file envelope (docs/encryption-at-rest.md): the documented test vectors,
 * size arithmetic, position independence, every bad input the issue names, a seeded fuzz
 * of mutated envelopes and headers, and file decryption that never leaves plaintext
 * under the final name.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TachyonError } from '../../src/core/errors.js';
import {
  decodeHeader,
  decryptBuffer,
  decryptFile,
  deriveKek,
  encryptBuffer,
  envelopeSize,
  EnvelopeEncryptor,
  HEADER_BYTES,
  openEnvelope,
  plaintextSize,
  SEGMENT_BYTES,
  SEGMENT_PLAIN,
  sealHeader,
  segmentOffset,
  rewrapHeader,
  type KdfParams,
} from '../../src/storage/envelope/index.js';
import { Rng } from '../helpers/rng.js';

const hex = (b: Buffer): string => b.toString('hex');
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const h2b = (s: string): Buffer => Buffer.from(s, 'hex');

// the vectors of docs/encryption-at-rest.md ("Test vectors")
const PASSPHRASE = 'correct horse battery staple';
const SALT = h2b('000102030405060708090a0b0c0d0e0f');
const FILE_ID = h2b('101112131415161718191a1b1c1d1e1f');
const WRAP_NONCE = h2b('202122232425262728292a2b');
const CONTENT_KEY = h2b('404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f');
const KDF: KdfParams = { id: 'argon2id', memoryKiB: 1024, passes: 1, parallelism: 1, salt: SALT };
const V = {
  kekArgon2id: 'f0d1525842159cef972608e2f8bc1cb2c8230f81eea76f124789f6beb42403b2',
  kekScrypt: '9a9f74cc441de571a18c4bf8580ad51f86745d14b39065ad24ad92fc05c99515',
  header:
    '5441434859454e430101008000010000101112131415161718191a1b1c1d1e1f01000000000004000000000100000001000102030405060708090a0b0c0d0e0f' +
    '202122232425262728292a2b79c302b92d9e540dd21db5ce74fc089a9c8b184772a7ae1bb75be5b7144eb5b4525bc13c48014af2822fd3b715e03fe658dc6d38',
  dataKey: 'e46dd0fa00866dfac8b09b3d93a72b70ed9a5d9ec92c5849bdf6e165bfbbb697',
  nonceKey: '37afa0e969fc31255185f7cf7ef70af5244ef9ff4e44ff624a1dab57841461fe',
  outputs: [
    { n: 0, size: 156, body: 'f635e755fbcf2080385cd348bdc77b53e26a5d69913dc81d9fed717a', sha256: 'f840583c04da1c7d3d9ba726147debf194b1cc7193a40e7d42108b5407c175b5' },
    { n: 1, size: 157, body: '162fe3323e9796bb3f147b18b4610de236751a8a230351d06126384527', sha256: 'f76f3e6856dadb7605bb7110867f7ccbc29dfecf1a71597902d6da8bc140e51b' },
    { n: 65536, size: 65692, body: undefined, sha256: '618f26681dbfaa4c4f5125fc7d14e756b919741f12152a7bd7cb6f89c75e7cf6' },
    { n: 65537, size: 65721, body: undefined, sha256: '755b5362a6da10cfc972be05c12657b5c57266478ad6d0d33678e861d73c4093' },
  ],
};
const pattern = (n: number): Buffer => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
};

/** a fast KDF for tests (the cost is in the header; decryption accepts it) */
const FAST: (salt: Buffer) => KdfParams = (salt) => ({ id: 'scrypt', log2N: 4, r: 1, p: 1, salt });

async function fixture(seed: number, passphrase = 'pw') {
  const rng = new Rng(seed);
  const kdf = FAST(rng.bytes(16));
  const kek = await deriveKek(passphrase, kdf);
  const hb = sealHeader({ kek, contentKey: rng.bytes(32), slot: { kind: 'passphrase', kdf }, fileId: rng.bytes(16), wrapNonce: rng.bytes(12) });
  return { kek, hb, env: openEnvelope(hb, kek), rng };
}

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TachyonError, `not a TachyonError: ${String(err)}`);
    return `${err.code}:${String(err.details?.reason)}`;
  }
  assert.fail('expected a failure');
}

describe('envelope format: the documented test vectors', () => {
  it('derives the documented key-encryption keys (argon2id raw hash, scrypt)', async () => {
    assert.equal(hex(await deriveKek(PASSPHRASE, KDF)), V.kekArgon2id);
    assert.equal(hex(await deriveKek(PASSPHRASE, { id: 'scrypt', log2N: 10, r: 8, p: 1, salt: SALT })), V.kekScrypt);
  });

  it('produces the documented header, keys and outputs for 0, 1, 65536 and 65537 bytes, and reads them back', async () => {
    const kek = await deriveKek(PASSPHRASE, KDF);
    const hb = sealHeader({ kek, contentKey: CONTENT_KEY, slot: { kind: 'passphrase', kdf: KDF }, fileId: FILE_ID, wrapNonce: WRAP_NONCE });
    assert.equal(hex(hb), V.header);
    const env = openEnvelope(hb, kek);
    assert.equal(hex(env.keys.data), V.dataKey);
    assert.equal(hex(env.keys.nonce), V.nonceKey);
    for (const v of V.outputs) {
      const c = encryptBuffer(env, pattern(v.n));
      assert.equal(c.length, v.size, `size of ${v.n}`);
      assert.equal(envelopeSize(v.n), v.size);
      assert.equal(hex(c.subarray(0, HEADER_BYTES)), V.header);
      if (v.body) assert.equal(hex(c.subarray(HEADER_BYTES)), v.body, `body of ${v.n}`);
      assert.equal(sha256(c), v.sha256, `sha256 of ${v.n}`);
      assert.deepEqual(decryptBuffer(c, kek), pattern(v.n));
    }
  });
});

describe('envelope format: sizes and positions', () => {
  it('the envelope size is a pure, invertible function of the plaintext size; impossible sizes are refused', () => {
    for (const p of [0, 1, 2, 65535, 65536, 65537, 131072, 131073, 10 * 65536 + 7, 2 ** 40 + 3]) {
      assert.equal(plaintextSize(envelopeSize(p)), p, `p=${p}`);
    }
    assert.equal(plaintextSize(0), undefined);
    assert.equal(plaintextSize(HEADER_BYTES + 27), undefined);
    assert.equal(plaintextSize(HEADER_BYTES + SEGMENT_BYTES + 5), undefined);
    assert.equal(plaintextSize(HEADER_BYTES + SEGMENT_BYTES + 28), undefined); // empty final segment after a full one
    const rng = new Rng(7);
    for (let k = 0; k < 2000; k++) {
      const e = rng.range(0, 5 * SEGMENT_BYTES);
      const p = plaintextSize(e);
      if (p !== undefined) assert.equal(envelopeSize(p), e);
    }
  });

  it('any byte range of the envelope can be produced on its own, in any order (out-of-order blocks, resume)', async () => {
    const { env, rng } = await fixture(11);
    const plain = rng.bytes(3 * SEGMENT_PLAIN + 1234);
    const whole = encryptBuffer(env, plain);
    for (let k = 0; k < 200; k++) {
      const e = new EnvelopeEncryptor(env, plain.length, (pos, len, out, at) => plain.copy(out, at, pos, pos + len));
      const off = rng.int(whole.length);
      const len = rng.range(0, Math.min(whole.length - off, 200_000));
      const out = Buffer.alloc(len + 3);
      e.read(off, len, out, 3);
      assert.ok(out.subarray(3).equals(whole.subarray(off, off + len)), `range ${off}+${len}`);
    }
    // the digest covers the envelope whatever order the blocks were read in
    const e = new EnvelopeEncryptor(env, plain.length, (pos, len, out, at) => plain.copy(out, at, pos, pos + len));
    const b = Buffer.alloc(1000);
    e.read(whole.length - 1000, 1000, b, 0);
    e.read(5000, 1000, b, 0);
    assert.equal(e.digest(), sha256(whole));
    // a small cache evicts and re-encrypts (the final, short segment included) with the same result
    const small = new EnvelopeEncryptor(env, plain.length, (pos, len, out, at) => plain.copy(out, at, pos, pos + len), 2);
    for (let k = 0; k < 100; k++) {
      const off = rng.int(whole.length);
      const len = rng.range(0, Math.min(whole.length - off, 70_000));
      const out = Buffer.alloc(len);
      small.read(off, len, out, 0);
      assert.ok(out.equals(whole.subarray(off, off + len)), `small cache: range ${off}+${len}`);
    }
    // sequential reads, then retransmissions of recent blocks: each segment is encrypted once
    const seq = new EnvelopeEncryptor(env, plain.length, (pos, len, out, at) => plain.copy(out, at, pos, pos + len));
    const blk = Buffer.alloc(1400);
    for (let off = 0; off < whole.length; off += 1400) seq.read(off, Math.min(1400, whole.length - off), blk, 0);
    for (let k = 0; k < 50; k++) seq.read(rng.int(whole.length - 1400), 1400, blk, 0);
    assert.equal(seq.sealedSegments, 4);
    // re-encryption is deterministic for the same header (what resume relies on)
    assert.ok(encryptBuffer(env, plain).equals(whole));
  });
});

describe('envelope format: bad input is a clear, named error', () => {
  it('refuses a wrong passphrase, a corrupted header, an unknown version and a file that is not an envelope', async () => {
    const { env, kek, hb } = await fixture(21);
    const c = encryptBuffer(env, pattern(1000));
    const wrong = await deriveKek('not the passphrase', decodeHeader(hb).slot.kind === 'passphrase' ? (decodeHeader(hb).slot as { kdf: KdfParams }).kdf : KDF);
    assert.equal(reason(() => decryptBuffer(c, wrong)), 'WRONG_KEY:wrong-key');
    for (const at of [9, 12, 20, 40, 50, 70, 80, 110, 125]) {
      const bad = Buffer.from(c);
      bad[at]! ^= 0x10;
      assert.equal(reason(() => decryptBuffer(bad, kek)), 'ENVELOPE_INVALID:corrupted-header', `flip at ${at}`);
    }
    const v2 = Buffer.from(c);
    v2[8] = 2;
    assert.match(String((() => { try { decryptBuffer(v2, kek); } catch (e) { return (e as Error).message; } return ''; })()), /unknown format version 2/);
    assert.equal(reason(() => decryptBuffer(v2, kek)), 'ENVELOPE_INVALID:unknown-version');
    assert.equal(reason(() => decryptBuffer(Buffer.from('hello world, plainly'), kek)), 'ENVELOPE_INVALID:not-envelope');
    assert.equal(reason(() => decryptBuffer(c.subarray(0, 100), kek)), 'ENVELOPE_INVALID:truncated');
  });

  it('refuses truncated and extended files', async () => {
    const { env, kek } = await fixture(22);
    const c = encryptBuffer(env, pattern(3 * SEGMENT_PLAIN + 100));
    assert.equal(reason(() => decryptBuffer(c.subarray(0, segmentOffset(3)), kek)), 'ENVELOPE_INVALID:truncated'); // at a segment boundary
    assert.equal(reason(() => decryptBuffer(c.subarray(0, segmentOffset(2)), kek)), 'ENVELOPE_INVALID:truncated');
    assert.equal(reason(() => decryptBuffer(c.subarray(0, c.length - 50), kek)), 'ENVELOPE_INVALID:segment-corrupted'); // inside the last segment
    assert.equal(reason(() => decryptBuffer(c.subarray(0, c.length - 120), kek)), 'ENVELOPE_INVALID:bad-size');
    assert.equal(reason(() => decryptBuffer(c.subarray(0, HEADER_BYTES), kek)), 'ENVELOPE_INVALID:truncated');
    // extended: a copy of a whole segment appended, or bytes appended
    const full = encryptBuffer(env, pattern(2 * SEGMENT_PLAIN));
    const ext = Buffer.concat([full, full.subarray(segmentOffset(0), segmentOffset(1))]);
    assert.equal(reason(() => decryptBuffer(ext, kek)), 'ENVELOPE_INVALID:extended');
    assert.equal(reason(() => decryptBuffer(Buffer.concat([c, Buffer.alloc(40)]), kek)), 'ENVELOPE_INVALID:segment-corrupted');
  });

  it('refuses swapped and repeated segments, naming where they belong', async () => {
    const { env, kek } = await fixture(23);
    const c = encryptBuffer(env, pattern(4 * SEGMENT_PLAIN + 10));
    const seg = (i: number): Buffer => c.subarray(segmentOffset(i), segmentOffset(i + 1));
    const swapped = Buffer.concat([c.subarray(0, HEADER_BYTES), seg(0), seg(2), seg(1), seg(3), c.subarray(segmentOffset(4))]);
    assert.equal(reason(() => decryptBuffer(swapped, kek)), 'ENVELOPE_INVALID:segment-misplaced');
    assert.throws(() => decryptBuffer(swapped, kek), /segment 1 is segment 2 of this file/);
    const repeated = Buffer.concat([c.subarray(0, HEADER_BYTES), seg(0), seg(1), seg(1), seg(3), c.subarray(segmentOffset(4))]);
    assert.throws(() => decryptBuffer(repeated, kek), /segment 2 is segment 1 of this file/);
  });

  it('refuses a header from another file, and splices of segments between files', async () => {
    const a = await fixture(24);
    const other = sealHeader({ kek: a.kek, contentKey: a.rng.bytes(32), slot: decodeHeader(a.hb).slot, fileId: a.rng.bytes(16) });
    const b = openEnvelope(other, a.kek);
    const ca = encryptBuffer(a.env, pattern(3 * SEGMENT_PLAIN));
    const cb = encryptBuffer(b, pattern(3 * SEGMENT_PLAIN));
    const foreignHeader = Buffer.concat([cb.subarray(0, HEADER_BYTES), ca.subarray(HEADER_BYTES)]);
    assert.equal(reason(() => decryptBuffer(foreignHeader, a.kek)), 'ENVELOPE_INVALID:header-mismatch');
    const spliced = Buffer.concat([ca.subarray(0, segmentOffset(1)), cb.subarray(segmentOffset(1), segmentOffset(2)), ca.subarray(segmentOffset(2))]);
    assert.equal(reason(() => decryptBuffer(spliced, a.kek)), 'ENVELOPE_INVALID:segment-corrupted');
    const tampered = Buffer.from(ca);
    tampered[segmentOffset(1) + 500]! ^= 1;
    assert.throws(() => decryptBuffer(tampered, a.kek), /segment 1 is corrupted/);
  });

  it('re-wrapping a header under another key keeps every segment valid', async () => {
    const { env, kek, hb, rng } = await fixture(25);
    const c = encryptBuffer(env, pattern(SEGMENT_PLAIN + 5));
    const kdf2 = FAST(rng.bytes(16));
    const kek2 = await deriveKek('new', kdf2);
    const hb2 = rewrapHeader(hb, decodeHeader(hb), kek, kek2, { kind: 'passphrase', kdf: kdf2 });
    const c2 = Buffer.concat([hb2, c.subarray(HEADER_BYTES)]);
    assert.deepEqual(decryptBuffer(c2, kek2), pattern(SEGMENT_PLAIN + 5));
    assert.equal(reason(() => decryptBuffer(c2, kek)), 'WRONG_KEY:wrong-key');
  });
});

describe('envelope format: fuzz', () => {
  it('a mutated envelope either decrypts to the original or fails with a named error (seeded)', async () => {
    const { env, kek, rng } = await fixture(31);
    const plain = rng.bytes(2 * SEGMENT_PLAIN + 777);
    const c = encryptBuffer(env, plain);
    const counts = new Map<string, number>();
    for (let k = 0; k < 300; k++) {
      let m = Buffer.from(c);
      switch (rng.int(4)) {
        case 0:
          m[rng.int(m.length)]! ^= 1 << rng.int(8);
          break;
        case 1:
          m = m.subarray(0, rng.int(m.length));
          break;
        case 2:
          m = Buffer.concat([m, rng.bytes(rng.range(1, 70_000))]);
          break;
        default: {
          const at = rng.int(m.length);
          m = Buffer.concat([m.subarray(0, at), m.subarray(Math.min(m.length, at + rng.range(1, 70_000)))]);
        }
      }
      try {
        const p = decryptBuffer(m, kek);
        assert.ok(p.equals(plain), 'a mutated envelope decrypted to something else');
      } catch (err) {
        assert.ok(err instanceof TachyonError, `not a TachyonError: ${String(err)}`);
        assert.ok(err.code === 'ENVELOPE_INVALID' || err.code === 'WRONG_KEY', err.code);
        const r = String(err.details?.reason);
        counts.set(r, (counts.get(r) ?? 0) + 1);
      }
    }
    assert.ok(counts.size >= 2, `few kinds of failure: ${[...counts.keys()].join(',')}`);
  });

  it('decodeHeader on random and mutated bytes only ever throws ENVELOPE_INVALID', async () => {
    const { hb } = await fixture(32);
    const rng = new Rng(33);
    for (let k = 0; k < 3000; k++) {
      const b = k % 2 ? rng.bytes(rng.int(200)) : Buffer.from(hb);
      if (k % 2 === 0) for (let j = rng.range(1, 4); j > 0; j--) b[rng.int(b.length)] = rng.int(256);
      try {
        decodeHeader(b);
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'ENVELOPE_INVALID', String(err));
      }
    }
  });
});

describe('envelope files: decryptFile', () => {
  it('publishes the plaintext only when every segment verified; a bad file leaves nothing behind', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tachyon-env-'));
    try {
      const { env, kek, rng } = await fixture(41);
      const plain = rng.bytes(70 * SEGMENT_PLAIN + 3); // more than one 64-segment batch
      const c = encryptBuffer(env, plain);
      writeFileSync(path.join(dir, 'a.tachyon-enc'), c);
      const r = await decryptFile(path.join(dir, 'a.tachyon-enc'), path.join(dir, 'a'), async () => kek);
      assert.equal(r.bytes, plain.length);
      assert.ok(readFileSync(path.join(dir, 'a')).equals(plain));
      await assert.rejects(decryptFile(path.join(dir, 'a.tachyon-enc'), path.join(dir, 'a'), async () => kek), (e: TachyonError) => e.code === 'EXISTS');
      // corrupt the last segment: the error comes after 70 good segments were written to the temporary file
      const bad = Buffer.from(c);
      bad[bad.length - 3]! ^= 1;
      writeFileSync(path.join(dir, 'b.tachyon-enc'), bad);
      await assert.rejects(decryptFile(path.join(dir, 'b.tachyon-enc'), path.join(dir, 'b'), async () => kek), (e: TachyonError) => e.details?.reason === 'segment-corrupted');
      assert.equal(existsSync(path.join(dir, 'b')), false);
      assert.deepEqual(readdirSync(dir).sort(), ['a', 'a.tachyon-enc', 'b.tachyon-enc']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
