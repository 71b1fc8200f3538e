/**
 * The transfer monitor on its own (memory only, virtual time): sampled progress events,
 * the per-file estimate, the bounded history and file list, outcomes and the totals
 * behind the metrics, cancel of active and finished transfers. The real transfers are in
 * test/node-api/ops.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TachyonError } from '../../src/core/errors.js';
import { TransferMonitor, type MonitorEvent, type SessionStart } from '../../src/server/monitor.js';
import type { SessionProgress } from '../../src/transfer/session.js';
import { SimClock } from '../../src/testkit/simclock.js';

const start = (over: Partial<SessionStart> = {}): SessionStart => ({
  correlationId: 'c',
  user: 'alice',
  clientAddress: '127.0.0.1',
  direction: 'download',
  cipher: 'aes-128-gcm',
  cancel: () => {},
  ...over,
});

const progress = (bytes: number, totalBytes: number, datagrams: number, retransmits: number): SessionProgress => ({
  bytes,
  totalBytes,
  files: 0,
  totalFiles: 2,
  rateBps: 0,
  elapsedMs: 0,
  direction: 'download',
  data: { datagrams, retransmits },
});

describe('TransferMonitor', () => {
  it('samples progress events, estimates files in flight in order, and settles exact figures', () => {
    const clock = new SimClock();
    const m = new TransferMonitor({ clock, progressIntervalMs: 250 });
    const events: MonitorEvent[] = [];
    m.subscribe((e) => events.push(e));
    const s = m.begin(start());
    s.fileStarted({ path: 'a', size: 1000, offset: 0 });
    s.fileStarted({ path: 'b', size: 1000, offset: 200 });
    // many reports within one interval: one event
    for (let i = 1; i <= 10; i++) {
      clock.advance(20);
      s.progress(progress(i * 100, 2000, i * 2, 0));
    }
    assert.equal(events.filter((e) => e.type === 'transfer.progress').length, 1);
    clock.advance(250);
    s.progress(progress(1300, 2000, 30, 3));
    assert.equal(events.filter((e) => e.type === 'transfer.progress').length, 2);
    return m.get(s.id).then((d) => {
      assert.equal(d.bytes, 1300);
      assert.deepEqual(
        d.fileList.map((f) => [f.path, f.bytes]),
        [['a', 1000], ['b', 300]],
        'the first file fills first; the second holds the rest (its 200-byte offset not counted)',
      );
      assert.equal(d.retransmits, 3);
      assert.equal(m.totals.retransmits, 3);
      assert.equal(m.totals.datagramsSent, 30);
      s.fileSettled({ path: 'a', size: 1000, ok: true, status: 'done', sentBytes: 1000, skippedBytes: 0, elapsedMs: 100 });
      s.fileSettled({ path: 'b', size: 1000, ok: true, status: 'done', sentBytes: 800, skippedBytes: 200, elapsedMs: 100 });
      s.ended({ ok: true, bytes: 1800 });
      assert.equal(m.totals.bytes.download, 1800);
      assert.equal(m.totals.sessions.completed, 1);
      assert.equal(m.activeCount(), 0);
      assert.equal(events.at(-1)!.type, 'transfer.end');
      return m.get(s.id);
    }).then((d) => {
      assert.equal(d.status, 'completed');
      assert.equal(d.skippedBytes, 200);
      assert.deepEqual(d.fileList.map((f) => [f.path, f.state, f.bytes, f.rateBps]), [['a', 'done', 1000, 80_000], ['b', 'done', 800, 64_000]]);
    });
  });

  it('bounds the history and the file list; outcomes, refusals and cancel', async () => {
    const m = new TransferMonitor({ clock: new SimClock(), historySize: 3, maxFilesPerTransfer: 2 });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const s = m.begin(start({ user: `u${i}`, direction: i % 2 ? 'upload' : 'download' }));
      for (let f = 0; f < 4; f++) s.fileSettled({ path: `f${f}`, size: 1, ok: false, status: 'failed', code: 'IO', sentBytes: 0, skippedBytes: 0, elapsedMs: 0 });
      s.ended({ ok: false, error: new TachyonError('IO', 'disk', { publicMessage: 'A storage read or write failed.' }) });
      ids.push(s.id);
    }
    const page = await m.list({ offset: 0, limit: 10 });
    assert.equal(page.total, 3, 'only the last three are remembered');
    await assert.rejects(m.get(ids[0]!), (e: unknown) => e instanceof TachyonError && e.code === 'NOT_FOUND');
    const last = await m.get(ids[4]!);
    assert.equal(last.status, 'failed');
    assert.equal(last.code, 'IO');
    assert.equal(last.fileList.length, 2);
    assert.equal(last.filesOmitted, 2);
    assert.equal(last.filesFailed, 4);
    assert.equal(m.totals.sessions.failed, 5);
    assert.equal((await m.list({ offset: 0, limit: 10, direction: 'upload' })).total, 1);
    assert.equal((await m.list({ offset: 1, limit: 1 })).items[0]!.user, 'u3');
    // cancel: an active one asks its session to stop; a finished one is CONFLICT
    let asked = 0;
    const s = m.begin(start({ cancel: () => asked++ }));
    const c = await m.cancel(s.id);
    assert.equal(c.status, 'active');
    assert.equal(asked, 1);
    s.ended({ ok: false, error: new TachyonError('PEER_VANISHED', 'closed') });
    assert.equal((await m.get(s.id)).status, 'cancelled', 'a requested cancel wins over the error it causes');
    await assert.rejects(m.cancel(s.id), (e: unknown) => e instanceof TachyonError && e.code === 'CONFLICT');
    await assert.rejects(m.cancel('00000000-0000-4000-8000-000000000000'), (e: unknown) => e instanceof TachyonError && e.code === 'NOT_FOUND');
    m.refused('auth', 'mallory');
    m.refused('auth');
    m.refused('cipher');
    assert.deepEqual(m.totals.refusals, { auth: 2, cipher: 1 });
    // a failing listener does not stop the others
    let seen = 0;
    m.subscribe(() => {
      throw new Error('listener bug');
    });
    const off = m.subscribe(() => seen++);
    m.refused('limit');
    off();
    m.refused('limit');
    assert.equal(seen, 1);
  });
});
