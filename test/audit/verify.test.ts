/**
 * Tamper detection: every way of changing a hash-chained audit log that the issue names
 * (edit, remove in the middle, remove at the end, reorder, append garbage, cut the last
 * line), each against a real file written by FileAuditSink and read by verifyAuditLog.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileAuditSink, GENESIS, decodeLine, encodeLine, verifyAuditLog } from '../../src/audit/index.js';
import type { AuditVerifyResult } from '../../src/audit/index.js';
import { joinLines, recordSamples, splitLines, tempDir } from './helpers.js';

const N = 8;
const KEY = Buffer.from('k'.repeat(48));

function failure(r: AuditVerifyResult): [number, string] | undefined {
  return r.failure ? [r.failure.line, r.failure.reason] : undefined;
}

describe('verifyAuditLog: tamper detection', () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => {};
  let plain: Buffer; // N records, unkeyed
  let keyed: Buffer; // N records, keyed
  let n = 0;

  /** Writes `data` to a fresh file and verifies it. */
  async function verifyBytes(data: Buffer, opts: Parameters<typeof verifyAuditLog>[1] = {}): Promise<AuditVerifyResult> {
    const f = join(dir, `case-${n++}.log`);
    await writeFile(f, data);
    return verifyAuditLog(f, opts);
  }

  before(async () => {
    ({ dir, cleanup } = await tempDir('audit-verify'));
    for (const [name, key] of [['plain.log', undefined], ['keyed.log', KEY]] as const) {
      const sink = new FileAuditSink(join(dir, name), key ? { key } : {});
      recordSamples(sink, N);
      await sink.close();
    }
    plain = await readFile(join(dir, 'plain.log'));
    keyed = await readFile(join(dir, 'keyed.log'));
  });

  after(() => cleanup());

  it('accepts an intact log and reports its head as a checkpoint', async () => {
    const r = await verifyBytes(plain);
    assert.equal(r.ok, true, r.failure?.message);
    assert.equal(r.records, N);
    assert.equal(r.lines, N);
    assert.equal(r.alg, 'sha256');
    assert.equal(r.head?.seq, N);
    assert.equal(r.head?.line, N);
    const last = decodeLine(splitLines(plain)[N - 1] as Buffer);
    assert.ok(last.ok);
    assert.equal(r.head?.hash, last.line.record.hash);
    const k = await verifyBytes(keyed, { key: KEY });
    assert.equal(k.ok, true, k.failure?.message);
    assert.equal(k.alg, 'hmac-sha256');
    assert.equal(k.macsChecked, true);
  });

  it('accepts an empty log', async () => {
    const r = await verifyBytes(Buffer.alloc(0));
    assert.equal(r.ok, true);
    assert.equal(r.records, 0);
    assert.equal(r.head, undefined);
  });

  it('detects an edited line (hash-mismatch at that line)', async () => {
    const lines = splitLines(plain);
    lines[3] = Buffer.from((lines[3] as Buffer).toString().replace('user3', 'userX'));
    assert.deepEqual(failure(await verifyBytes(joinLines(lines))), [4, 'hash-mismatch']);
  });

  it('detects an edited line whose hash was recomputed (chain-broken at the next line)', async () => {
    const lines = splitLines(plain);
    const d = decodeLine(lines[3] as Buffer);
    assert.ok(d.ok);
    const forged = encodeLine({ ...d.line.record, fields: { ...d.line.record.fields, user: 'mallory' } }, d.line.record.prev, {
      alg: 'sha256',
      mac: (b) => createHash('sha256').update(b).digest('hex'),
    });
    lines[3] = forged.line;
    assert.deepEqual(failure(await verifyBytes(joinLines(lines))), [5, 'chain-broken']);
  });

  it('detects an edit of a keyed log even when the editor recomputes with SHA-256 or a wrong key', async () => {
    const lines = splitLines(keyed);
    const d = decodeLine(lines[2] as Buffer);
    assert.ok(d.ok);
    const rec = { ...d.line.record, fields: { ...d.line.record.fields, user: 'mallory' } };
    const wrongKey = encodeLine(rec, d.line.record.prev, {
      alg: 'hmac-sha256',
      mac: (b) => createHmac('sha256', 'guess').update(b).digest('hex'),
    });
    const withWrongKey = [...lines];
    withWrongKey[2] = wrongKey.line;
    assert.deepEqual(failure(await verifyBytes(joinLines(withWrongKey), { key: KEY })), [3, 'hash-mismatch']);
    const downgraded = [...lines];
    downgraded[2] = encodeLine(rec, d.line.record.prev, { alg: 'sha256', mac: (b) => createHash('sha256').update(b).digest('hex') }).line;
    assert.deepEqual(failure(await verifyBytes(joinLines(downgraded), { key: KEY })), [3, 'mixed-alg']);
  });

  it('detects a removed line in the middle (missing-lines)', async () => {
    const lines = splitLines(plain);
    lines.splice(4, 1);
    const r = await verifyBytes(joinLines(lines));
    assert.deepEqual(failure(r), [5, 'missing-lines']);
    assert.match(r.failure?.message ?? '', /seq 6 where seq 5 was expected: 1 record/);
    assert.equal(r.head?.seq, 4);
  });

  it('detects a removed first line (missing-lines at line 1)', async () => {
    const lines = splitLines(plain);
    lines.splice(0, 1);
    assert.deepEqual(failure(await verifyBytes(joinLines(lines))), [1, 'missing-lines']);
  });

  it('cannot see a removed last line without a checkpoint, and reports it with one', async () => {
    const lines = splitLines(plain); // last element is '' (the file ends with a newline)
    const head = await verifyBytes(plain);
    assert.ok(head.head);
    lines.splice(N - 1, 1);
    const cut = joinLines(lines);
    const r = await verifyBytes(cut);
    assert.equal(r.ok, true, 'a cut tail leaves a valid, shorter chain');
    assert.equal(r.records, N - 1);
    const withCheckpoint = await verifyBytes(cut, { checkpoint: { seq: head.head.seq, hash: head.head.hash } });
    assert.deepEqual(failure(withCheckpoint), [N, 'truncated']);
    // An older checkpoint still holds.
    const mid = decodeLine(splitLines(plain)[2] as Buffer);
    assert.ok(mid.ok);
    assert.equal((await verifyBytes(cut, { checkpoint: { seq: 3, hash: mid.line.record.hash } })).ok, true);
  });

  it('detects a log rewritten from scratch against a checkpoint (checkpoint-mismatch)', async () => {
    const head = await verifyBytes(plain);
    assert.ok(head.head);
    const f = join(dir, 'rewritten.log');
    const sink = new FileAuditSink(f);
    recordSamples(sink, N, 100);
    await sink.close();
    const r = await verifyAuditLog(f, { checkpoint: { seq: head.head.seq, hash: head.head.hash } });
    assert.deepEqual(failure(r), [N, 'checkpoint-mismatch']);
  });

  it('detects reordered lines (reordered)', async () => {
    const lines = splitLines(plain);
    [lines[2], lines[3]] = [lines[3] as Buffer, lines[2] as Buffer];
    assert.deepEqual(failure(await verifyBytes(joinLines(lines))), [3, 'reordered']);
    const moved = splitLines(plain);
    const [first] = moved.splice(0, 1);
    moved.splice(N - 1, 0, first as Buffer);
    assert.deepEqual(failure(await verifyBytes(joinLines(moved))), [1, 'reordered']);
  });

  it('detects a duplicated line (reordered)', async () => {
    const lines = splitLines(plain);
    lines.splice(3, 0, lines[2] as Buffer);
    assert.deepEqual(failure(await verifyBytes(joinLines(lines))), [4, 'reordered']);
  });

  it('detects appended garbage (malformed)', async () => {
    for (const junk of ['garbage\n', '{"v":1}\n', '\n', `${'x'.repeat(200)}\n`]) {
      const r = await verifyBytes(Buffer.concat([plain, Buffer.from(junk)]));
      assert.deepEqual(failure(r), [N + 1, 'malformed'], JSON.stringify(junk));
      assert.equal(r.head?.seq, N);
    }
  });

  it('detects garbage inserted in the middle (malformed)', async () => {
    const lines = splitLines(plain);
    lines.splice(5, 0, Buffer.from('{"note":"nothing to see"}'));
    assert.deepEqual(failure(await verifyBytes(joinLines(lines))), [6, 'malformed']);
  });

  it('detects a cut last line (partial-line), however much of it is left', async () => {
    for (const cut of [1, 2, 40, 300]) {
      const r = await verifyBytes(plain.subarray(0, plain.length - cut));
      assert.deepEqual(failure(r), [N, 'partial-line'], `cut ${cut}`);
    }
  });

  it('detects a log whose beginning was cut and re-chained (bad-genesis)', async () => {
    const lines = splitLines(plain);
    const d = decodeLine(lines[0] as Buffer);
    assert.ok(d.ok);
    lines[0] = encodeLine(d.line.record, 'f'.repeat(64), { alg: 'sha256', mac: (b) => createHash('sha256').update(b).digest('hex') }).line;
    assert.deepEqual(failure(await verifyBytes(joinLines(lines))), [1, 'bad-genesis']);
    assert.notEqual(GENESIS, 'f'.repeat(64));
  });

  it('checks keys: unkeyed log with a key, keyed log with the wrong key, keyed log without a key', async () => {
    assert.deepEqual(failure(await verifyBytes(plain, { key: KEY })), [1, 'unkeyed']);
    assert.deepEqual(failure(await verifyBytes(keyed, { key: Buffer.from('w'.repeat(48)) })), [1, 'hash-mismatch']);
    const noKey = await verifyBytes(keyed);
    assert.equal(noKey.ok, true);
    assert.equal(noKey.macsChecked, false, 'without the key the MACs cannot be checked, only the links');
    // The links are still checked without the key.
    const lines = splitLines(keyed);
    lines.splice(3, 1);
    assert.deepEqual(failure(await verifyBytes(joinLines(lines))), [4, 'missing-lines']);
  });

  it('throws NOT_FOUND for a missing file (not a verification failure)', async () => {
    await assert.rejects(verifyAuditLog(join(dir, 'missing.log')), (e: unknown) => (e as { code?: string }).code === 'NOT_FOUND');
  });
});
