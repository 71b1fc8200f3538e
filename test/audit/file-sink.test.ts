/**
 * FileAuditSink on real files: format, permissions, restart continuity, a second writer,
 * crash recovery, refusals at open, fsync policies and size bounds; MemoryAuditSink.
 */
import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TachyonError } from '../../src/core/errors.js';
import { FileAuditSink, MemoryAuditSink, REDACTED, decodeLine, loadAuditKey, generateAuditKeyFile, verifyAuditLog } from '../../src/audit/index.js';
import type { AuditEvent } from '../../src/audit/index.js';
import { SimClock } from '../../src/testkit/simclock.js';
import { recordSamples, sampleEvent, splitLines, tempDir } from './helpers.js';

function isCode(code: string, pattern?: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof TachyonError, `expected TachyonError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

/** The records of a file; every non-empty line must be one unless `skipBad`. */
function records(file: string, skipBad = false) {
  return splitLines(readFileSync(file))
    .filter((l) => l.length > 0)
    .flatMap((l) => {
      const d = decodeLine(l);
      if (skipBad && !d.ok) return [];
      assert.ok(d.ok, d.ok ? '' : d.reason);
      return [d.line.record];
    });
}

describe('FileAuditSink', () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => {};
  let n = 0;
  const fresh = (): string => join(dir, `log-${n++}.jsonl`);

  before(async () => {
    ({ dir, cleanup } = await tempDir('audit-sink'));
  });
  after(() => cleanup());

  it('writes one JSON line per record with UTC time, severity, component, type, id and fields; file mode 0600', async () => {
    const f = fresh();
    const clock = new SimClock({ startMs: Date.UTC(2025, 0, 31, 12, 0, 0, 123) });
    const sink = new FileAuditSink(f, { clock });
    const id = sink.record(sampleEvent(0));
    clock.advance(1000);
    const id2 = sink.record({ ...sampleEvent(1), severity: 'critical', correlationId: id });
    await sink.close();
    assert.equal(statSync(f).mode & 0o777, 0o600);
    const text = readFileSync(f, 'utf8');
    assert.ok(text.endsWith('\n'));
    assert.equal(text.split('\n').length, 3);
    const [a, b] = records(f);
    assert.ok(a && b);
    assert.equal(a.seq, 1);
    assert.equal(a.ts, '2025-01-31T12:00:00.123Z');
    assert.equal(a.severity, 'warning', 'auth.failure defaults to warning');
    assert.equal(a.component, 'ssh');
    assert.equal(a.type, 'auth.failure');
    assert.equal(a.id, id);
    assert.match(id, /^[0-9A-HJKMNP-TV-Z]{26}$/);
    assert.equal(a.fields['user'], 'user0');
    assert.equal(a.prev, '0'.repeat(64));
    assert.equal(b.seq, 2);
    assert.equal(b.ts, '2025-01-31T12:00:01.123Z');
    assert.equal(b.severity, 'critical');
    assert.equal(b.correlationId, id);
    assert.equal(b.id, id2);
  });

  it('continues the chain across restarts (seq and prev carry on)', async () => {
    const f = fresh();
    for (let round = 0; round < 3; round++) {
      const sink = new FileAuditSink(f);
      assert.equal(sink.seq, round * 4);
      recordSamples(sink, 4, round * 4);
      await sink.close();
    }
    const r = await verifyAuditLog(f);
    assert.equal(r.ok, true, r.failure?.message);
    assert.equal(r.records, 12);
    assert.deepEqual(records(f).map((x) => x.seq), Array.from({ length: 12 }, (_, i) => i + 1));
  });

  it('keeps one chain when a second writer appends to the same file', async () => {
    const f = fresh();
    const a = new FileAuditSink(f);
    const b = new FileAuditSink(f);
    for (let i = 0; i < 10; i++) (i % 3 === 0 ? b : a).record(sampleEvent(i));
    await a.close();
    await b.close();
    const r = await verifyAuditLog(f);
    assert.equal(r.ok, true, r.failure?.message);
    assert.equal(r.records, 10);
  });

  it('recovers from a line cut short by a crash: skips it with an audit.recovery record that verify accepts', async () => {
    const f = fresh();
    let sink = new FileAuditSink(f);
    recordSamples(sink, 3);
    await sink.close();
    const good = readFileSync(f);
    const partial = '{"v":1,"seq":4,"ts":"2025-01-31T12:00';
    appendFileSync(f, partial);
    const before = await verifyAuditLog(f);
    assert.deepEqual([before.failure?.line, before.failure?.reason], [4, 'partial-line']);

    sink = new FileAuditSink(f);
    assert.equal(sink.stats.recoveries, 1);
    assert.equal(sink.seq, 4, 'the recovery record takes seq 4');
    sink.record(sampleEvent(9));
    await sink.close();
    const r = await verifyAuditLog(f);
    assert.equal(r.ok, true, r.failure?.message);
    assert.equal(r.records, 5);
    assert.deepEqual(r.recoveries, [{ line: 4, lines: 1, bytes: partial.length + 1 }]);
    const rec = records(f, true).find((x) => x.type === 'audit.recovery');
    assert.ok(rec);
    assert.equal(rec.severity, 'critical');
    assert.equal(rec.fields['reason'], 'partial-line');

    // The recovery vouches only for those exact bytes: changing them is detected.
    const text = readFileSync(f, 'utf8').replace('12:00\n', '12:01\n');
    writeFileSync(f, text);
    const tampered = await verifyAuditLog(f);
    assert.deepEqual([tampered.failure?.line, tampered.failure?.reason], [4, 'recovery-mismatch']);
    // And removing them is detected too.
    writeFileSync(f, Buffer.concat([good, Buffer.from(text.split('\n').slice(4).join('\n'))]));
    const removed = await verifyAuditLog(f);
    assert.equal(removed.failure?.reason, 'recovery-mismatch');
  });

  it('recovers from garbage lines and from a first record cut short', async () => {
    const f = fresh();
    let sink = new FileAuditSink(f);
    recordSamples(sink, 2);
    await sink.close();
    appendFileSync(f, Buffer.concat([Buffer.alloc(100, 0), Buffer.from('\n\u0000\u0000\n')]));
    sink = new FileAuditSink(f);
    recordSamples(sink, 1);
    await sink.close();
    const r = await verifyAuditLog(f);
    assert.equal(r.ok, true, r.failure?.message);
    assert.deepEqual(r.recoveries, [{ line: 3, lines: 2, bytes: 104 }]);

    const g = fresh();
    writeFileSync(g, '{"v":1,"seq":1,"ts":"20', { mode: 0o600 });
    sink = new FileAuditSink(g);
    recordSamples(sink, 2);
    await sink.close();
    const r2 = await verifyAuditLog(g);
    assert.equal(r2.ok, true, r2.failure?.message);
    assert.equal(r2.records, 3);
  });

  it('ends a whole record that lost only its newline instead of skipping it', async () => {
    const f = fresh();
    let sink = new FileAuditSink(f);
    recordSamples(sink, 3);
    await sink.close();
    writeFileSync(f, readFileSync(f).subarray(0, -1));
    assert.equal((await verifyAuditLog(f)).failure?.reason, 'partial-line');
    sink = new FileAuditSink(f);
    assert.equal(sink.seq, 3);
    assert.equal(sink.stats.recoveries, 0);
    recordSamples(sink, 1);
    await sink.close();
    const r = await verifyAuditLog(f);
    assert.equal(r.ok, true, r.failure?.message);
    assert.equal(r.records, 4);
    assert.deepEqual(r.recoveries, []);
  });

  it('resumes writing after a failed write by re-reading the tail', async () => {
    const f = fresh();
    const sink = new FileAuditSink(f);
    recordSamples(sink, 2);
    // Simulate a write cut short behind the sink's back (as a failed write(2) might leave).
    appendFileSync(f, '{"v":1,"seq":3');
    recordSamples(sink, 2, 2);
    await sink.close();
    assert.equal(sink.stats.recoveries, 1);
    const r = await verifyAuditLog(f);
    assert.equal(r.ok, true, r.failure?.message);
    assert.equal(r.records, 5);
  });

  it('refuses to open a symlink, a group/other-writable file, a non-log, a tampered tail, a key mismatch', async () => {
    const target = fresh();
    writeFileSync(target, '', { mode: 0o600 });
    const link = join(dir, 'link.log');
    symlinkSync(target, link);
    assert.throws(() => new FileAuditSink(link), isCode('CONFIG', /symbolic link/));

    const loose = fresh();
    writeFileSync(loose, '');
    chmodSync(loose, 0o666);
    assert.throws(() => new FileAuditSink(loose), isCode('CONFIG', /writable by group or others/));

    const notLog = fresh();
    writeFileSync(notLog, 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\n', { mode: 0o600 });
    assert.throws(() => new FileAuditSink(notLog), isCode('CONFIG', /not a Tachyon audit log/));

    const edited = fresh();
    const s1 = new FileAuditSink(edited);
    recordSamples(s1, 3);
    await s1.close();
    writeFileSync(edited, readFileSync(edited, 'utf8').replace('user2', 'userZ'));
    assert.throws(() => new FileAuditSink(edited), isCode('CONFIG', /fails its sha256 check/));

    const keyed = fresh();
    const key = Buffer.alloc(32, 7);
    const s2 = new FileAuditSink(keyed, { key });
    recordSamples(s2, 2);
    await s2.close();
    assert.throws(() => new FileAuditSink(keyed), isCode('CONFIG', /is keyed/));
    assert.throws(() => new FileAuditSink(keyed, { key: Buffer.alloc(32, 8) }), isCode('CONFIG', /wrong key/));
    const plain = fresh();
    const s3 = new FileAuditSink(plain);
    recordSamples(s3, 1);
    await s3.close();
    assert.throws(() => new FileAuditSink(plain, { key }), isCode('CONFIG', /not keyed/));
    const s4 = new FileAuditSink(keyed, { key });
    assert.equal(s4.seq, 2);
    await s4.close();
  });

  it('redacts secret fields before they reach the file, and lists what it redacted', async () => {
    const f = fresh();
    const sink = new FileAuditSink(f);
    const pem = '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----';
    sink.record({
      type: 'config.change',
      component: 'config',
      fields: {
        actor: 'admin',
        action: 'set',
        target: 'user bob',
        password: 'hunter2-pw',
        nested: { apiToken: 'tok-SECRET-1', hostKey: pem, keyFingerprint: 'SHA256:fp' },
        comment: pem,
        privateKey: Buffer.from('raw-key-bytes'),
      },
    } as unknown as AuditEvent);
    await sink.close();
    const text = readFileSync(f, 'utf8');
    for (const secret of ['hunter2-pw', 'tok-SECRET-1', 'PRIVATE KEY', 'b3BlbnNzaC1', 'raw-key-bytes', 'cmF3LWtleS1ieXRlcw']) {
      assert.ok(!text.includes(secret), `the log holds ${secret}`);
    }
    const [rec] = records(f);
    assert.ok(rec);
    assert.equal(rec.fields['password'], REDACTED);
    assert.deepEqual(rec.fields['nested'], { apiToken: REDACTED, hostKey: REDACTED, keyFingerprint: 'SHA256:fp' });
    assert.deepEqual(rec.redacted, ['password', 'nested.apiToken', 'nested.hostKey', 'comment', 'privateKey']);
    assert.equal((await verifyAuditLog(f)).ok, true);
  });

  it('bounds what one record can hold', async () => {
    const f = fresh();
    const sink = new FileAuditSink(f);
    const huge = 'x'.repeat(10_000);
    sink.record({ type: 'refusal.jail', component: 'transfer', fields: { user: 'u', clientAddress: 'a', path: huge, reason: 'too-long' } });
    const many = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`f${i}`, 'y'.repeat(2000)]));
    sink.record({ type: 'config.change', component: 'config', fields: { actor: 'a', action: 'b', target: 'c', ...many } } as unknown as AuditEvent);
    await sink.close();
    const [a, b] = records(f);
    assert.ok(a && b);
    assert.ok(String(a.fields['path']).length < 2100);
    assert.match(String(a.fields['path']), /…\[7952 more\]$/);
    assert.deepEqual(b.fields, { oversize: true, bytes: b.fields['bytes'] });
    assert.ok((b.fields['bytes'] as number) > 64 * 1024);
    assert.equal((await verifyAuditLog(f)).ok, true);
  });

  it('refuses malformed events (programming errors) without writing', async () => {
    const f = fresh();
    const sink = new FileAuditSink(f);
    assert.throws(() => sink.record({ ...sampleEvent(0), type: 'Auth Failure' } as unknown as AuditEvent), isCode('INTERNAL'));
    assert.throws(() => sink.record({ ...sampleEvent(0), component: '' } as unknown as AuditEvent), isCode('INTERNAL'));
    assert.throws(() => sink.record({ ...sampleEvent(0), severity: 'loud' } as unknown as AuditEvent), isCode('INTERNAL'));
    assert.throws(() => sink.record({ ...sampleEvent(0), correlationId: 'not an id\n' }), isCode('INTERNAL'));
    await sink.close();
    assert.equal(readFileSync(f).length, 0);
    assert.throws(() => sink.record(sampleEvent(0)), isCode('INTERNAL', /closed/));
  });

  it('fsync policies: always syncs every record, batched syncs critical records at once and the rest later, never only at close', async () => {
    const always = new FileAuditSink(fresh(), { fsync: 'always' });
    recordSamples(always, 5);
    assert.equal(always.stats.fsyncs, 5);
    await always.close();

    const batched = new FileAuditSink(fresh(), { fsync: 'batched', fsyncIntervalMs: 20 });
    recordSamples(batched, 5);
    assert.equal(batched.stats.fsyncs, 0);
    batched.record({ ...sampleEvent(1), severity: 'critical' });
    assert.equal(batched.stats.fsyncs, 1);
    recordSamples(batched, 3);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(batched.stats.fsyncs, 2, 'one background fdatasync for the batch');
    await batched.close();
    assert.equal(batched.stats.fsyncs, 3);

    const never = new FileAuditSink(fresh(), { fsync: 'never' });
    recordSamples(never, 5);
    never.record({ ...sampleEvent(1), severity: 'critical' });
    assert.equal(never.stats.fsyncs, 0);
    await never.close();
    assert.equal(never.stats.fsyncs, 1);
  });

  it('loads chain keys strictly and makes new ones', () => {
    const keyFile = join(dir, 'audit.key');
    generateAuditKeyFile(keyFile);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    const key = loadAuditKey(keyFile);
    assert.equal(key.length, 64);
    assert.match(key.toString(), /^[0-9a-f]{64}$/);
    assert.throws(() => generateAuditKeyFile(keyFile), isCode('EXISTS'));
    chmodSync(keyFile, 0o644);
    assert.throws(() => loadAuditKey(keyFile), isCode('CONFIG', /group or others/));
    assert.equal(loadAuditKey(keyFile, { strict: false }).length, 64);
    const short = join(dir, 'short.key');
    writeFileSync(short, 'too short\n', { mode: 0o600 });
    assert.throws(() => loadAuditKey(short), isCode('CONFIG', /too short/));
    assert.throws(() => loadAuditKey(join(dir, 'nope.key')), isCode('NOT_FOUND'));
  });
});

describe('MemoryAuditSink', () => {
  it('records with the same validation and redaction, and finds records by id and type', async () => {
    const clock = new SimClock({ startMs: 1_700_000_000_000 });
    const sink = new MemoryAuditSink({ clock });
    const id = sink.record(sampleEvent(0));
    sink.record({ type: 'auth.failure', component: 'ssh', fields: { user: 'x', method: 'password', reason: 'method-not-allowed', clientAddress: 'a', password: 'pw' } } as unknown as AuditEvent);
    assert.equal(sink.records.length, 2);
    assert.equal(sink.byId(id)?.seq, 1);
    assert.equal(sink.ofType('auth.failure').length, 2);
    assert.equal(sink.records[1]?.fields['password'], REDACTED);
    assert.equal(sink.records[0]?.ts, new Date(1_700_000_000_000).toISOString());
    await sink.close();
    assert.throws(() => sink.record(sampleEvent(0)), isCode('INTERNAL'));
  });
});
