/**
 * LocalFileSink: runs written behind on the thread pool, the digest computed from memory
 * for in-order data and read back for data that arrived out of order, whatever the
 * arrival order; LocalFileSource: direct reads for large blocks, read-ahead for small.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { LocalFileSink, LocalFileSource } from '../../src/transfer/local-file.js';
import { Rng } from '../helpers/rng.js';
import { removeDir, tempDir } from '../helpers/loopback.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function blocksOf(size: number, block: number): [number, number][] {
  const out: [number, number][] = [];
  for (let o = 0; o < size; o += block) out.push([o, Math.min(block, size - o)]);
  return out;
}

describe('LocalFileSink and LocalFileSource', () => {
  const rng = new Rng(0xf11e);
  const orders: Record<string, (b: [number, number][]) => [number, number][]> = {
    'in order': (b) => b,
    reversed: (b) => [...b].reverse(),
    'shuffled': (b) => {
      const c = [...b];
      for (let i = c.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [c[i], c[j]] = [c[j]!, c[i]!];
      }
      return c;
    },
    'a gap filled late (a lost block repaired after 8 MiB)': (b) => {
      const c = [...b];
      const [lost] = c.splice(3, 1);
      c.splice(Math.min(c.length, 3 + Math.ceil((8 << 20) / b[0]![1])), 0, lost!);
      return c;
    },
  };
  for (const block of [1432, 65467]) {
    for (const [name, order] of Object.entries(orders)) {
      it(`${block}-byte blocks, ${name}: the file and its digest are exact`, async () => {
        const dir = tempDir('tachyon-sink-');
        try {
          const size = 12 * 1024 * 1024 + 4321;
          const content = rng.bytes(size);
          const sink = new LocalFileSink(path.join(dir, 'f.partial'), size);
          for (const [o, n] of order(blocksOf(size, block))) sink.write(o, content.subarray(o, o + n));
          const digest = await sink.finish();
          sink.close();
          assert.equal(digest, sha(content));
          assert.ok(readFileSync(path.join(dir, 'f.partial')).equals(content));
        } finally {
          removeDir(dir);
        }
      });
    }
  }

  it('close() with writes still in flight keeps the descriptor until they land', async () => {
    const dir = tempDir('tachyon-sink-');
    try {
      const size = 8 << 20;
      const sink = new LocalFileSink(path.join(dir, 'f'), size);
      const data = rng.bytes(size);
      for (const [o, n] of blocksOf(size, 65467)) sink.write(o, data.subarray(o, o + n));
      sink.close();
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(readFileSync(path.join(dir, 'f')).subarray(0, 1 << 20).equals(data.subarray(0, 1 << 20)));
    } finally {
      removeDir(dir);
    }
  });

  for (const block of [1432, 65467]) {
    it(`source with ${block}-byte blocks: reads and digest match, retransmission reads included`, () => {
      const dir = tempDir('tachyon-src-');
      try {
        const size = 5 * 1024 * 1024 + 99;
        const content = rng.bytes(size);
        writeFileSync(path.join(dir, 's'), content);
        const src = new LocalFileSource(path.join(dir, 's'), size);
        const out = Buffer.alloc(block + 40);
        for (const [o, n] of blocksOf(size, block)) {
          src.read(o, n, out, 24);
          assert.ok(out.subarray(24, 24 + n).equals(content.subarray(o, o + n)), `block at ${o}`);
          if (o > 0 && o % (block * 7) === 0) {
            // a retransmission of an earlier block in between
            const back = o - block * 3;
            src.read(back, block, out, 24);
            assert.ok(out.subarray(24, 24 + block).equals(content.subarray(back, back + block)));
          }
        }
        assert.equal(src.digest(), sha(content));
        src.close();
      } finally {
        removeDir(dir);
      }
    });
  }
});
