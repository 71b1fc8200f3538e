/**
 * The database-backed audit sink: the platform's records in `platform_audit`, one audit
 * log line per row (same format and hash chain as the file sink), written by real
 * sign-ins over HTTP; the chain verifies, continues across a reopen, and detects an
 * edited, deleted or reordered row; filters by tenant and type; never a password.
 * On SQLite, and on PostgreSQL when TACHYON_TEST_PG_URL is set.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { openDatabase, type Database } from '../../src/db/database.js';
import { createPlatformApp, type PlatformApp } from '../../src/platform/app.js';
import { DatabaseAuditSink } from '../../src/platform/audit-store.js';
import { argon2idHasher } from '../../src/platform/passwords.js';
import { IdentityService } from '../../src/platform/service.js';
import { SimClock } from '../../src/testkit/simclock.js';
import { ADMIN_PW, Client, PG_URL, T0, TEST_ARGON2, USER_PW } from './helpers.js';

for (const [engine, url] of [
  ['SQLite', undefined],
  ['PostgreSQL', PG_URL],
] as const) {
  describe(`platform audit in the database on ${engine}`, { skip: engine === 'PostgreSQL' && !url ? 'set TACHYON_TEST_PG_URL=postgres://… to run against PostgreSQL' : false }, () => {
    let dir: string;
    let db: Database;
    let sink: DatabaseAuditSink;
    let web: PlatformApp;
    let base: string;
    const key = randomBytes(32);
    const slug = `audit-${randomBytes(3).toString('hex')}`;
    const other = `${slug}-b`;

    before(async () => {
      dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-paudit-'));
      db = await openDatabase({ url: url ?? `sqlite://${path.join(dir, 'p.db')}` });
      // PostgreSQL keeps earlier runs' rows, chained without this run's key: start this run's chain on an empty table
      if (url) await db.db.deleteFrom('platform_audit').execute();
      const clock = new SimClock({ startMs: T0 });
      sink = await DatabaseAuditSink.open(db, { key, clock });
      const identity = new IdentityService({ database: db, audit: sink, clock, hasher: argon2idHasher(TEST_ARGON2) });
      for (const s of [slug, other]) {
        const t = await identity.createTenant(s, s);
        await identity.provisionUser(t.id, { username: 'admin', roles: ['tenant_admin'], password: ADMIN_PW });
        await identity.provisionUser(t.id, { username: 'member1', password: USER_PW });
      }
      web = createPlatformApp({ identity, insecureHttp: true });
      await web.app.listen({ host: '127.0.0.1', port: 0 });
      base = `http://127.0.0.1:${(web.app.server.address() as AddressInfo).port}`;
    });
    after(async () => {
      await web.app.close();
      await sink.close();
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('stores every sign-in, sign-out and change as a chained audit line; filters by tenant and type', async () => {
      const bad = await new Client(base).signIn(slug, 'member1', 'Wrong-Passphrase-Marker-55');
      assert.equal(bad.status, 401);
      const admin = new Client(base);
      assert.equal((await admin.signIn(slug, 'admin', ADMIN_PW)).status, 200);
      assert.equal((await admin.req('PUT', '/api/v1/policy', { maxFailedAttempts: 4 })).status, 200);
      assert.equal((await admin.req('POST', '/api/v1/auth/signout')).status, 204);
      assert.equal((await new Client(base).signIn(other, 'member1', USER_PW)).status, 200);
      await sink.flush();
      const mine = await sink.list({ tenant: slug });
      assert.deepEqual(
        mine.map((r) => `${r.type}:${String((JSON.parse(r.line) as { fields: Record<string, unknown> }).fields['result'] ?? (JSON.parse(r.line) as { fields: Record<string, unknown> }).fields['action'] ?? (JSON.parse(r.line) as { fields: Record<string, unknown> }).fields['reason'])}`),
        ['web.signin:failure', 'web.signin:success', 'web.change:policy.update', 'web.signout:signout'],
      );
      assert.equal(mine[0]?.correlationId, bad.error?.correlation_id, 'the error ref is the record’s correlation id');
      assert.equal((await sink.list({ tenant: other })).length, 1);
      assert.equal((await sink.list({ type: 'web.change' })).length, 1);
      const all = await sink.list();
      for (const r of all) {
        for (const secret of ['Wrong-Passphrase-Marker-55', ADMIN_PW, USER_PW, '$argon2id$']) assert.ok(!r.line.includes(secret), `row ${r.seq} holds a secret`);
        assert.match(r.line, /"alg":"hmac-sha256","prev":"[0-9a-f]{64}","hash":"[0-9a-f]{64}"\}$/);
      }
      const v = await sink.verify({ key });
      assert.equal(v.ok, true, JSON.stringify(v.failure));
      assert.equal(v.records, all.length);
      assert.equal((await sink.verify({ key: randomBytes(32) })).ok, false, 'another key does not verify');
    });

    it('continues the chain after a reopen', async () => {
      await sink.close();
      const before = (await sink.list()).length;
      sink = await DatabaseAuditSink.open(db, { key });
      sink.record({ type: 'web.signout', component: 'web', fields: { clientAddress: '127.0.0.1', tenant: slug, user: 'admin', reason: 'test' } });
      await sink.flush();
      const all = await sink.list();
      assert.equal(all.length, before + 1);
      assert.equal(all.at(-1)?.seq, before + 1);
      assert.equal((await sink.verify({ key })).ok, true);
    });

    it('detects an edited, a deleted and a reordered row', async () => {
      const rows = await sink.list();
      const victim = rows[1];
      assert.ok(victim);
      const edited = victim.line.replace('"result":"success"', '"result":"failure"');
      assert.notEqual(edited, victim.line);
      await db.db.updateTable('platform_audit').set({ line: edited }).where('seq', '=', victim.seq).execute();
      const e = await sink.verify({ key });
      assert.equal(e.ok, false);
      assert.equal(e.failure?.line, 2);
      await db.db.updateTable('platform_audit').set({ line: victim.line }).where('seq', '=', victim.seq).execute();
      assert.equal((await sink.verify({ key })).ok, true, 'restored');
      await db.db.deleteFrom('platform_audit').where('seq', '=', victim.seq).execute();
      assert.equal((await sink.verify({ key })).ok, false, 'a deleted row breaks the chain');
      await db.db.insertInto('platform_audit').values({ seq: victim.seq, id: victim.id, ts: victim.ts, tenant: victim.tenant, type: victim.type, severity: victim.severity, correlation_id: victim.correlationId, line: victim.line }).execute();
      const [a, b] = [rows[2], rows[3]];
      assert.ok(a && b);
      await db.db.updateTable('platform_audit').set({ line: b.line }).where('seq', '=', a.seq).execute();
      await db.db.updateTable('platform_audit').set({ line: a.line }).where('seq', '=', b.seq).execute();
      assert.equal((await sink.verify({ key })).ok, false, 'swapped rows break the chain');
      await db.db.updateTable('platform_audit').set({ line: a.line }).where('seq', '=', a.seq).execute();
      await db.db.updateTable('platform_audit').set({ line: b.line }).where('seq', '=', b.seq).execute();
      assert.equal((await sink.verify({ key })).ok, true);
    });

    it('a failed insert stops the sink (IO) instead of forking the chain', async () => {
      // a row planted at the next seq makes the sink's insert collide
      const rows = await sink.list();
      const next = (rows.at(-1)?.seq ?? 0) + 1;
      await db.db.insertInto('platform_audit').values({ seq: next, id: `PLANTED${next}`, ts: 'x', tenant: '', type: 'x', severity: 'info', correlation_id: null, line: '{}' }).execute();
      sink.record({ type: 'web.signout', component: 'web', fields: { clientAddress: '127.0.0.1', tenant: slug, user: 'admin', reason: 'test' } });
      await assert.rejects(sink.flush());
      assert.throws(() => sink.record({ type: 'web.signout', component: 'web', fields: { clientAddress: '127.0.0.1', tenant: slug, user: 'admin', reason: 'test' } }), /no longer be stored/);
      await db.db.deleteFrom('platform_audit').where('seq', '=', next).execute();
    });
  });
}
