/**
 * Fuzzing the audit log reader and verifier with a seeded PRNG (the seed is in each
 * message, so a failure replays exactly):
 *
 * 1. decodeLine on random bytes, random JSON and mutated valid lines never throws, and
 *    whatever it accepts has the record shape;
 * 2. any mutation of a valid log's bytes (flips, deletions, insertions, swaps, splices) is
 *    reported by verify, except one that only removes whole lines at the end (the one
 *    change a hash chain cannot see; see the checkpoint tests);
 * 3. readLines over a real file splits exactly as the in-memory splitter does, for random
 *    files whose lines straddle the reader's 64 KiB chunks.
 */
import assert from 'node:assert/strict';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AUDIT_SEVERITIES, MemoryAuditSink, decodeLine, encodeLine, GENESIS, linesFromBuffer, verifyLines } from '../../src/audit/index.js';
import { lineMac, sha256Hex } from '../../src/audit/line.js';
import { readLines } from '../../src/audit/reader.js';
import type { RawLine } from '../../src/audit/reader.js';
import { Rng } from '../helpers/rng.js';
import { sampleEvent, tempDir } from './helpers.js';

const SEED = 0xa0d17;

/** A valid log of `n` records as bytes (built with the real encoder). */
function validLog(n: number, key?: Buffer): Buffer {
  const mem = new MemoryAuditSink();
  for (let i = 0; i < n; i++) mem.record(sampleEvent(i));
  const mac = lineMac(key);
  let prev = GENESIS;
  const parts: Buffer[] = [];
  for (const rec of mem.records) {
    const { line } = encodeLine(rec, prev, mac);
    prev = sha256Hex(line);
    parts.push(line, Buffer.from('\n'));
  }
  return Buffer.concat(parts);
}

function randomJsonValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 2 ? 4 : 6)) {
    case 0:
      return r.int(1000) - 500;
    case 1:
      return r.pick(['', 'x', 'seq', 'v', '\u0000', '\u2028', 'a'.repeat(r.int(50))]);
    case 2:
      return r.chance(0.5);
    case 3:
      return null;
    case 4:
      return Array.from({ length: r.int(4) }, () => randomJsonValue(r, depth + 1));
    default:
      return Object.fromEntries(
        Array.from({ length: r.int(5) }, () => [r.pick(['v', 'seq', 'ts', 'id', 'fields', 'alg', 'prev', 'hash', 'type', 'x']), randomJsonValue(r, depth + 1)]),
      );
  }
}

function mutateLine(r: Rng, line: Buffer): Buffer {
  const out: Buffer = Buffer.from(line);
  switch (r.int(5)) {
    case 0: {
      const i = r.int(out.length);
      out[i] = (out[i] as number) ^ (1 << r.int(8));
      return out;
    }
    case 1:
      return out.subarray(0, r.int(out.length));
    case 2:
      return Buffer.concat([out, r.bytes(r.range(1, 20))]);
    case 3: {
      // Replace a JSON value with a random one, keep the hash suffix.
      const text = out.toString('utf8');
      const key = r.pick(['"seq":', '"ts":', '"severity":', '"type":', '"id":', '"alg":', '"prev":', '"v":']);
      const at = text.indexOf(key);
      if (at === -1) return out;
      const end = text.indexOf(',', at);
      return Buffer.from(`${text.slice(0, at + key.length)}${JSON.stringify(randomJsonValue(r))}${text.slice(end)}`);
    }
    default: {
      const i = r.int(out.length);
      return Buffer.concat([out.subarray(0, i), r.bytes(r.range(1, 8)), out.subarray(i)]);
    }
  }
}

/** Whether `mutated` is `original` with only whole lines removed from its end. */
function isTailCut(original: Buffer, mutated: Buffer): boolean {
  if (mutated.length > original.length || !original.subarray(0, mutated.length).equals(mutated)) return false;
  return mutated.length === 0 || mutated[mutated.length - 1] === 0x0a;
}

function mutateLog(r: Rng, log: Buffer): Buffer {
  const lines: Buffer[] = linesFromBuffer(log).map((l): Buffer => Buffer.from(l.bytes));
  switch (r.int(7)) {
    case 0: {
      const out: Buffer = Buffer.from(log);
      for (let k = r.range(1, 3); k > 0; k--) {
        const i = r.int(out.length);
        out[i] = (out[i] as number) ^ (1 << r.int(8));
      }
      return out;
    }
    case 1: {
      const a = r.int(log.length);
      const b = Math.min(log.length, a + r.range(1, 300));
      return Buffer.concat([log.subarray(0, a), log.subarray(b)]);
    }
    case 2: {
      const a = r.int(log.length + 1);
      return Buffer.concat([log.subarray(0, a), r.bytes(r.range(1, 40)), log.subarray(a)]);
    }
    case 3: {
      const i = r.int(lines.length);
      const j = r.int(lines.length);
      [lines[i], lines[j]] = [lines[j] as Buffer, lines[i] as Buffer];
      return Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')]));
    }
    case 4: {
      const i = r.int(lines.length);
      lines.splice(i, r.range(1, 3));
      return Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')]));
    }
    case 5: {
      const i = r.int(lines.length);
      lines[i] = mutateLine(r, lines[i] as Buffer);
      return Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')]));
    }
    default: {
      // Splice in a line from another valid log (right format, wrong chain).
      const other = linesFromBuffer(validLog(6)).map((l) => l.bytes);
      lines.splice(r.int(lines.length + 1), 0, r.pick(other));
      return Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')]));
    }
  }
}

describe('audit log fuzz', () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => {};
  before(async () => {
    ({ dir, cleanup } = await tempDir('audit-fuzz'));
  });
  after(() => cleanup());

  it('decodeLine never throws on random lines and accepts only well-shaped records', () => {
    const r = new Rng(SEED);
    const valid = linesFromBuffer(validLog(12)).map((l) => l.bytes);
    let accepted = 0;
    for (let i = 0; i < 6000; i++) {
      let line: Buffer;
      const kind = r.int(4);
      if (kind === 0) line = r.bytes(r.int(400));
      else if (kind === 1) line = Buffer.from(JSON.stringify(randomJsonValue(r)));
      else if (kind === 2) line = Buffer.from(`${JSON.stringify(randomJsonValue(r)).slice(0, -1)},"hash":"${'a'.repeat(64)}"}`);
      else line = mutateLine(r, r.pick(valid));
      let d;
      try {
        d = decodeLine(line);
      } catch (err) {
        assert.fail(`seed ${SEED} case ${i}: decodeLine threw ${String(err)} on ${JSON.stringify(line.toString('latin1').slice(0, 200))}`);
      }
      if (d.ok) {
        accepted++;
        const rec = d.line.record;
        assert.ok(Number.isSafeInteger(rec.seq) && rec.seq >= 1, `seed ${SEED} case ${i}`);
        assert.ok((AUDIT_SEVERITIES as readonly string[]).includes(rec.severity));
        assert.match(rec.prev, /^[0-9a-f]{64}$/);
        assert.match(rec.hash, /^[0-9a-f]{64}$/);
        assert.ok(d.line.body.length < line.length);
      }
    }
    // Mutations that change only a field's value still parse (the hash catches them).
    assert.ok(accepted > 0, 'some mutated lines still parse, so the hash check is exercised');
  });

  it('verify reports every mutation of a valid log except a cut at a line boundary at the end', async () => {
    const r = new Rng(SEED + 1);
    const key = Buffer.alloc(32, 3);
    const logs = [
      { log: validLog(10), opts: {} },
      { log: validLog(10, key), opts: { key } },
    ];
    let detected = 0;
    let tailCuts = 0;
    for (let i = 0; i < 1500; i++) {
      const { log, opts } = logs[i % 2] as (typeof logs)[number];
      const bad = mutateLog(r, log);
      if (bad.equals(log)) continue;
      let res;
      try {
        res = await verifyLines(linesFromBuffer(bad), opts);
      } catch (err) {
        assert.fail(`seed ${SEED + 1} case ${i}: verify threw ${String(err)}`);
      }
      if (isTailCut(log, bad)) {
        tailCuts++;
        assert.equal(res.ok, true, `seed ${SEED + 1} case ${i}: a clean tail cut verifies`);
        continue;
      }
      assert.equal(res.ok, false, `seed ${SEED + 1} case ${i}: mutation not detected:\n${bad.toString('latin1').slice(0, 600)}`);
      assert.ok(res.failure && res.failure.line >= 1 && res.failure.line <= linesFromBuffer(bad).length + 1);
      detected++;
    }
    assert.ok(detected > 1000, `detected ${detected}`);
    assert.ok(tailCuts >= 0);
  });

  it('readLines splits a file exactly like linesFromBuffer, across chunk boundaries', async () => {
    const r = new Rng(SEED + 2);
    for (let round = 0; round < 12; round++) {
      const parts: Buffer[] = [];
      const count = r.range(0, 30);
      for (let i = 0; i < count; i++) {
        const len = r.pick([0, 1, 10, 1000, 65535, 65536, 65537, 200_000]);
        parts.push(Buffer.alloc(len, 0x41 + (i % 26)));
        if (i < count - 1 || r.chance(0.5)) parts.push(Buffer.from('\n'));
      }
      const data = Buffer.concat(parts);
      const f = join(dir, `split-${round}.bin`);
      await writeFile(f, data);
      const fh = await open(f, 'r');
      const got: RawLine[] = [];
      try {
        for await (const l of readLines(fh)) got.push(l);
      } finally {
        await fh.close();
      }
      const want = linesFromBuffer(data);
      assert.equal(got.length, want.length, `seed ${SEED + 2} round ${round}`);
      for (let i = 0; i < want.length; i++) {
        const a = got[i];
        const b = want[i];
        assert.ok(a && b);
        assert.deepEqual([a.no, a.offset, a.length, a.terminated, a.sha256], [b.no, b.offset, b.length, b.terminated, b.sha256]);
        assert.ok(a.bytes.equals(b.bytes));
      }
    }
  });
});
