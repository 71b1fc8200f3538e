import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MemoryAuditSink } from '../../src/audit/index.js';
import { openDatabase } from '../../src/db/database.js';
import { MIGRATIONS } from '../../src/db/migrations.js';
import { CidrList, ScoringDefender, type DefenderNotice, type Notifier } from '../../src/defender/index.js';
import { SimClock } from '../../src/testkit/simclock.js';

const START = Date.parse('2026-11-29T12:00:00Z');
const MIN = 60_000;

class Recorder implements Notifier {
  readonly notices: DefenderNotice[] = [];
  notify(n: DefenderNotice): Promise<void> {
    this.notices.push(n);
    return Promise.resolve();
  }
}

async function withDb<T>(fn: (url: string, dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-defender-'));
  try {
    return await fn(`sqlite://${path.join(dir, 'tachyon.db')}`, dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const settings = { threshold: 5, observationMs: 10 * MIN, banMs: 10 * MIN, banMultiplier: 2, maxBanMs: 35 * MIN, syncIntervalMs: 0 };

describe('ScoringDefender', () => {
  it('blocks at the threshold within the window, with ban times that grow on a clock', async () => {
    await withDb(async (url) => {
      const database = await openDatabase({ url });
      const clock = new SimClock({ startMs: START });
      const audit = new MemoryAuditSink();
      const notifier = new Recorder();
      const d = await ScoringDefender.open({ database, clock, audit, notifier, settings });
      const a = '203.0.113.9';
      // events older than the window do not add up
      for (let i = 0; i < 4; i++) d.report(a, 'auth-failed');
      clock.advance(11 * MIN);
      d.report(a, 'auth-failed');
      assert.equal(d.isBlocked(a), false);
      for (let i = 0; i < 3; i++) d.report(a, 'auth-failed');
      assert.equal(d.isBlocked(a), false);
      d.report(a, 'auth-failed-unknown-user'); // 4 + 2 ≥ 5
      assert.equal(d.isBlocked(a), true);
      assert.equal(d.isBlocked('::ffff:203.0.113.9'), true, 'the mapped form is the same address');
      assert.equal(d.isBlocked('203.0.113.10'), false);
      const bans: number[] = [];
      for (let round = 1; round <= 4; round++) {
        const [b] = await d.list();
        assert.ok(b);
        assert.equal(b.banCount, round);
        bans.push((Date.parse(b.until) - clock.now()) / MIN);
        clock.advance(Date.parse(b.until) - clock.now() - 1);
        assert.equal(d.isBlocked(a), true, 'still blocked 1 ms before the end');
        clock.advance(1);
        assert.equal(d.isBlocked(a), false, 'free at the end');
        for (let i = 0; i < 5; i++) d.report(a, 'auth-failed');
      }
      assert.deepEqual(bans, [10, 20, 35, 35], 'x2 per ban, capped at the maximum');
      // no-auth scores nothing
      for (let i = 0; i < 100; i++) d.report('198.51.100.1', 'no-auth');
      assert.equal(d.isBlocked('198.51.100.1'), false);
      await d.settled();
      const blocks = audit.records.filter((r) => r.type === 'defender.block');
      assert.equal(blocks.length, 5);
      assert.equal(blocks[0]!.fields.clientAddress, a);
      assert.equal(blocks[0]!.fields.banSeconds, 600);
      assert.equal(notifier.notices.filter((n) => n.event === 'blocked').length, 5);
      await d.close();
      await database.close();
    });
  });

  it('keeps blocks across a restart, shares them through the database, and lifts them', async () => {
    await withDb(async (url) => {
      const clock = new SimClock({ startMs: START });
      const db1 = await openDatabase({ url });
      const d1 = await ScoringDefender.open({ database: db1, clock, settings });
      for (let i = 0; i < 5; i++) d1.report('2001:db8:1:2::7', 'auth-failed');
      assert.equal(d1.isBlocked('2001:db8:1:2:ffff::1'), true, 'the whole /64');
      assert.equal(d1.isBlocked('2001:db8:1:3::1'), false);
      await d1.close();
      await db1.close();

      // a restart on the same file: still blocked
      const db2 = await openDatabase({ url });
      const audit = new MemoryAuditSink();
      const notifier = new Recorder();
      const d2 = await ScoringDefender.open({ database: db2, clock, settings, audit, notifier });
      assert.equal(d2.isBlocked('2001:db8:1:2::7'), true);
      // a second process on the same database sees blocks after its next sync, and lifts them for everyone
      const db3 = await openDatabase({ url });
      const d3 = await ScoringDefender.open({ database: db3, clock, settings: { ...settings, syncIntervalMs: 1000 } });
      for (let i = 0; i < 5; i++) d2.report('192.0.2.50', 'auth-failed');
      await d2.settled();
      assert.equal(d3.isBlocked('192.0.2.50'), false, 'not yet synced');
      await clock.advanceAsync(1000); // its sync timer fires
      await d3.sync(); // (and its query has finished)
      assert.equal(d3.isBlocked('192.0.2.50'), true);
      assert.deepEqual((await d3.list()).map((b) => b.address).sort(), ['192.0.2.50', '2001:db8:1:2::/64']);
      assert.equal(await d3.unblock('2001:db8:1:2::1', 'cli:test'), true);
      assert.equal(await d3.unblock('2001:db8:1:2::1', 'cli:test'), false, 'a second unblock finds nothing');
      await d2.sync();
      assert.equal(d2.isBlocked('2001:db8:1:2::7'), false, 'the other process follows');
      assert.equal(await d2.unblock('192.0.2.50', 'admin:root'), true);
      await d2.settled();
      assert.deepEqual(
        audit.records.filter((r) => r.type === 'defender.unblock').map((r) => r.fields),
        [{ clientAddress: '192.0.2.50', actor: 'admin:root' }],
      );
      assert.deepEqual(notifier.notices.map((n) => n.event), ['blocked', 'unblocked']);
      for (const d of [d2, d3]) await d.close();
      for (const db of [db2, db3]) await db.close();
    });
  });

  it('never blocks the safe list, and bounds the hosts it tracks', async () => {
    await withDb(async (url) => {
      const database = await openDatabase({ url });
      const clock = new SimClock({ startMs: START });
      const d = await ScoringDefender.open({ database, clock, settings: { ...settings, maxHosts: 100 }, safeList: CidrList.parse(['10.0.0.0/8']) });
      for (let i = 0; i < 50; i++) d.report('10.1.2.3', 'protocol-violation');
      assert.equal(d.isBlocked('10.1.2.3'), false);
      // 4 points each on 1000 addresses: only the 100 most recent are remembered
      for (let i = 0; i < 1000; i++) for (let k = 0; k < 4; k++) d.report(`198.18.${i >> 8}.${i & 255}`, 'auth-failed');
      d.report('198.18.0.0', 'auth-failed'); // evicted long ago: starts from 0 again
      assert.equal(d.isBlocked('198.18.0.0'), false);
      d.report('198.18.3.231', 'auth-failed'); // the 1000th: still tracked, 5 points
      assert.equal(d.isBlocked('198.18.3.231'), true);
      await d.close();
      await database.close();
    });
  });

  it('migration 0006 applies to a database that already has later migrations (numbers taken by parallel work)', async () => {
    await withDb(async (url) => {
      const { '0006_defender': _skip, ...without } = MIGRATIONS;
      void _skip;
      const old = await openDatabase({ url, migrations: without });
      assert.equal(old.migrations.includes('0006_defender'), false);
      await old.close();
      const database = await openDatabase({ url });
      assert.deepEqual(database.migrations, Object.keys(MIGRATIONS).sort());
      const d = await ScoringDefender.open({ database, settings });
      for (let i = 0; i < 5; i++) d.report('192.0.2.9', 'auth-failed');
      await d.settled();
      assert.deepEqual((await d.list()).map((b) => b.address), ['192.0.2.9']);
      await d.close();
      await database.close();
    });
  });
});
