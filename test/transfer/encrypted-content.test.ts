/**
 * The sending role's encrypted content (send --encrypt-at-rest) on the simulated data
 * plane: an EnvelopeEncryptor as the BlockSource of a DataSender over a path with 3% loss,
 * reordering and duplication, so blocks are read and arrive out of order and are
 * retransmitted; every block the receiver writes must equal the envelope at its offset,
 * and the result decrypts to the plaintext. Also the resume hashing of encryptingContent
 * (the same ranges and prefix as hashing the stored envelope) and the header store.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decryptBuffer, deriveKek, encryptBuffer, EnvelopeEncryptor, openEnvelope, sealHeader, SEGMENT_PLAIN, type KdfParams } from '../../src/storage/envelope/index.js';
import { encryptingContent, memoryHeaderStore, type ContentFile } from '../../src/transfer/encrypted-content.js';
import { hashRanges } from '../../src/transfer/resume.js';
import { CheckingSink, contentFor, createFlow, HOST_A, HOST_B, simPath } from '../helpers/sim-flow.js';
import { Rng } from '../helpers/rng.js';

describe('encrypted content on the data plane', () => {
  it('out-of-order, lost and duplicated blocks of an envelope arrive exact and decrypt (3% loss, reordering, seeded)', async () => {
    const rng = new Rng(2024);
    const kdf: KdfParams = { id: 'scrypt', log2N: 4, r: 1, p: 1, salt: rng.bytes(16) };
    const kek = await deriveKek('pw', kdf);
    const env = openEnvelope(sealHeader({ kek, contentKey: rng.bytes(32), slot: { kind: 'passphrase', kdf } }), kek);
    const plain = contentFor(3 * 1024 * 1024 + 4321, 77);
    const envelope = encryptBuffer(env, plain);
    const { clock, net } = simPath(7, { delayMs: 20, loss: 0.03, reorder: 0.05, duplicate: 0.01, rateBps: 100e6, queueBytes: 400_000 });
    // the flow's own file is only a placeholder for the wiring; the envelope goes as file 1
    const flow = createFlow({ net, clock, sender: { address: HOST_A, port: 5000 }, receiver: { address: HOST_B, port: 6000 }, files: [envelope], targetBps: 100e6 });
    const source = new EnvelopeEncryptor(env, plain.length, (pos, len, out, at) => plain.copy(out, at, pos, pos + len));
    const sink = new CheckingSink(envelope, () => clock.now());
    let done = false;
    flow.receiver.onFileComplete = () => (done = true);
    flow.receiver.addFile(1, flow.sender.assign(1, source.size), source.size, sink);
    flow.sender.start(1, source);
    clock.runUntil(() => done, 120_000);
    assert.ok(done, 'the envelope arrived');
    assert.equal(sink.bad, 0, sink.firstBad);
    assert.ok(flow.sender.stats.retransmits > 0, 'blocks were retransmitted');
    assert.ok(sink.out.equals(envelope));
    assert.equal(source.digest(), createHash('sha256').update(envelope).digest('hex'));
    assert.ok(decryptBuffer(sink.out, kek).equals(plain));
    await flow.close();
  });

  it('encryptingContent: announced as NAME.tachyon-enc with the envelope size; resume hashes match the stored envelope; headers are reused', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tachyon-enccontent-'));
    try {
      const rng = new Rng(5);
      const abs = path.join(dir, 'f.bin');
      const plain = rng.bytes(5 * SEGMENT_PLAIN + 99);
      writeFileSync(abs, plain);
      const f: ContentFile = { path: 'f.bin', abs, size: plain.length, mtimeMs: 1000 };
      const kdf: KdfParams = { id: 'scrypt', log2N: 4, r: 1, p: 1, salt: rng.bytes(16) };
      const headers = memoryHeaderStore();
      const c1 = await encryptingContent([f], { passphrase: 'passphrase', kdf, headers, scope: 'x@h:1:/' });
      const a = c1.announced(f);
      assert.equal(a.path, 'f.bin.tachyon-enc');
      assert.equal(a.plainSize, plain.length);
      const blocks = c1.open(a, 0, undefined);
      const stored = Buffer.alloc(a.size);
      for (let off = 0; off < a.size; off += 1000) blocks.read(off, Math.min(1000, a.size - off), stored, off);
      blocks.close();
      const storedFile = path.join(dir, 'stored.tachyon-enc');
      writeFileSync(storedFile, stored);
      const ranges = [{ at: 10, len: 500 }, { at: 70_000, len: 4096 }, { at: 200_000, len: 1 }];
      const want = await hashRanges(storedFile, 250_000, ranges, true);
      const got = await c1.hash(a, 250_000, ranges, true);
      assert.deepEqual(got.sums, want.sums);
      assert.equal(got.prefix!.digest('hex'), want.prefix!.digest('hex'));
      assert.deepEqual((await c1.hash(a, 250_000, ranges, false)).sums, want.sums);
      // a later run (another KDF salt) re-creates the same envelope from the remembered header
      const c2 = await encryptingContent([f], { passphrase: 'passphrase', kdf: { ...kdf, salt: rng.bytes(16) }, headers, scope: 'x@h:1:/' });
      const again = Buffer.alloc(a.size);
      c2.open(a, 0, undefined).read(0, a.size, again, 0);
      assert.ok(again.equals(stored));
      // another destination, or another passphrase: a fresh envelope
      const c3 = await encryptingContent([f], { passphrase: 'passphrase', kdf, headers, scope: 'x@h:1:/other' });
      const other = Buffer.alloc(a.size);
      c3.open(a, 0, undefined).read(0, a.size, other, 0);
      assert.ok(!other.equals(stored));
      const c4 = await encryptingContent([f], { passphrase: 'another one', kdf, headers, scope: 'x@h:1:/' });
      const fresh = Buffer.alloc(a.size);
      c4.open(a, 0, undefined).read(0, a.size, fresh, 0);
      assert.ok(!fresh.equals(stored));
      assert.ok(decryptBuffer(fresh, await deriveKek('another one', kdf)).equals(plain));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
