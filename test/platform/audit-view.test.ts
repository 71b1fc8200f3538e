/**
 * The audit views (GET /api/v1/audit, /api/v1/audit/export) over real HTTP, on a real
 * SQLite file whose records real sign-ins wrote through the database audit sink:
 * tenant-only records (a `tenant=` parameter changes nothing), each filter, paging with
 * X-Total-Count, members refused, bad query parameters refused with a sanitized message,
 * exports (JSON lines verbatim + summary; CSV with formula cells neutralized) carrying the
 * chain verification, which reports an edited row; and a seeded fuzz of the query parser.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TachyonError } from '../../src/core/errors.js';
import { csvCell, MAX_PAGE, OUTCOMES, parseAuditQuery, parseExportFormat } from '../../src/platform/audit-view.js';
import { Rng } from '../helpers/rng.js';
import { ADMIN_PW, Client, seedTenant, signedIn, startPlatform, USER_PW, type Platform, type SeededTenant } from './helpers.js';

interface Entry {
  seq: number;
  ts: string;
  type: string;
  actor: string;
  action: string;
  outcome: string;
  clientAddress: string;
  fields: Record<string, unknown>;
}

describe('platform audit views', () => {
  let p: Platform;
  let A: SeededTenant;
  let B: SeededTenant;
  let admin: Client;
  let auditor: Client;

  before(async () => {
    p = await startPlatform();
    A = await seedTenant(p, 'acme');
    B = await seedTenant(p, 'globex');
    // history of tenant A: failures, successes, a change, at known times
    const anon = new Client(p.base);
    for (let i = 0; i < 3; i++) assert.equal((await anon.signIn('acme', 'member1', `wrong password ${i} xx`)).status, 401);
    assert.equal((await anon.signIn('acme', '=HYPERLINK("http://x.invalid","a")', 'wrong password, quoted "x"')).status, 401);
    p.clock.advance(3_600_000);
    admin = await signedIn(p, 'acme', 'admin', ADMIN_PW);
    auditor = await signedIn(p, 'acme', 'auditor1', USER_PW);
    assert.equal((await admin.req('PUT', '/api/v1/policy', { minPasswordLength: 13 })).status, 200);
    // tenant B's own history
    const bAdmin = await signedIn(p, 'globex', 'admin', ADMIN_PW);
    assert.equal((await bAdmin.req('PUT', '/api/v1/policy', { minPasswordLength: 15 })).status, 200);
    assert.equal((await anon.signIn('globex', 'member1', 'wrong for globex xx')).status, 401);
    await p.dbAudit.flush();
  });
  after(async () => {
    await p.close();
  });

  async function list(c: Client, query = ''): Promise<{ total: number; entries: Entry[]; header: string | null; status: number }> {
    const r = await c.req('GET', `/api/v1/audit${query}`);
    assert.equal(r.status, 200, r.text);
    return { total: r.body['total'] as number, entries: r.body['entries'] as Entry[], header: r.headers.get('x-total-count'), status: r.status };
  }

  it('lists only the caller’s tenant, whatever tenant the query names, oldest first, with X-Total-Count', async () => {
    for (const c of [admin, auditor]) {
      const r = await list(c, `?tenant=globex&tenantId=${B.id}&limit=500`);
      assert.ok(r.total >= 7, `total ${r.total}`);
      assert.equal(r.header, String(r.total));
      assert.equal(r.entries.length, r.total);
      for (const e of r.entries) assert.equal(e.fields['tenant'], 'acme');
      const seqs = r.entries.map((e) => e.seq);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
      assert.ok(!JSON.stringify(r.entries).includes('globex'));
    }
    const rows = await p.dbAudit.list({ tenant: 'acme', limit: 10_000 });
    assert.equal((await list(admin, '?limit=500')).total, rows.length, 'every record of the tenant');
  });

  it('filters by time, action, actor and outcome, and pages', async () => {
    const all = (await list(admin, '?limit=500')).entries;
    const failures = await list(admin, '?outcome=failure&action=web.signin&limit=500');
    assert.equal(failures.total, 4);
    assert.ok(failures.entries.every((e) => e.type === 'web.signin' && e.outcome === 'failure'));
    const member = await list(admin, '?actor=member1&outcome=failure');
    assert.equal(member.total, 3);
    assert.ok(member.entries.every((e) => e.actor === 'member1'));
    const change = await list(admin, '?action=policy.update');
    assert.equal(change.total, 1);
    assert.equal(change.entries[0]?.actor, 'admin');
    assert.equal(change.entries[0]?.outcome, 'success');
    // the failures happened at T0, the rest an hour later
    const early = await list(admin, '?to=2026-01-05T09:30:00Z&limit=500');
    assert.equal(early.total, 4);
    const late = await list(admin, '?from=2026-01-05T09:30:00%2B00:00&limit=500');
    assert.equal(late.total, all.length - 4);
    assert.equal((await list(admin, '?from=2026-01-05&to=2026-01-05&limit=500')).total, all.length, 'a date is its whole day');
    assert.equal((await list(admin, '?from=2026-01-06')).total, 0);
    // pages: the same records, in order, whatever the page size
    const paged: Entry[] = [];
    for (let offset = 0; ; offset += 3) {
      const page = await list(admin, `?limit=3&offset=${offset}`);
      assert.equal(page.total, all.length);
      if (page.entries.length === 0) break;
      assert.ok(page.entries.length <= 3);
      paged.push(...page.entries);
    }
    assert.deepEqual(paged.map((e) => e.seq), all.map((e) => e.seq));
    // an injection attempt as a value matches nothing (it is compared, never interpreted)
    assert.equal((await list(admin, `?actor=${encodeURIComponent("' OR 1=1 --")}`)).total, 0);
  });

  it('members are refused, anonymous callers are asked to sign in, and both are audited', async () => {
    const member = await signedIn(p, 'acme', 'member1', USER_PW);
    for (const url of ['/api/v1/audit', '/api/v1/audit/export', '/api/v1/audit/export?format=csv']) {
      const r = await member.req('GET', url);
      assert.equal(r.status, 403, url);
      assert.equal(r.error?.message, 'Permission denied.');
      assert.equal((await new Client(p.base).req('GET', url)).status, 401, url);
    }
    await p.dbAudit.flush();
    const refusals = await list(admin, '?action=web.refusal&actor=member1');
    assert.ok(refusals.total >= 3);
  });

  it('bad query parameters are refused with a sanitized message that never echoes the value', async () => {
    const bad: Record<string, string> = {
      from: 'yesterday<script>',
      to: '2026-13-45',
      action: "web.signin' OR '1'='1",
      outcome: 'maybe',
      limit: String(MAX_PAGE + 1),
      offset: '-1',
      format: 'xlsx',
    };
    for (const [k, v] of Object.entries(bad)) {
      const url = k === 'format' ? `/api/v1/audit/export?format=${encodeURIComponent(v)}` : `/api/v1/audit?${k}=${encodeURIComponent(v)}`;
      const r = await admin.req('GET', url);
      assert.equal(r.status, 400, `${k}=${v}: ${r.text}`);
      assert.equal(r.error?.code, 'USAGE');
      assert.equal(r.error?.message, `Invalid request: query parameter ${k}.`);
      assert.ok(!r.text.includes(v), 'the value is not echoed');
    }
    assert.equal((await admin.req('GET', '/api/v1/audit?from=2026-01-06&to=2026-01-05')).status, 400, 'from after to');
    assert.equal((await admin.req('GET', '/api/v1/audit?actor=a&actor=b')).status, 400, 'a repeated parameter');
    assert.equal((await admin.req('GET', `/api/v1/audit?actor=${encodeURIComponent('a\nb')}`)).status, 400, 'a control character');
  });

  it('exports JSON lines: the stored lines verbatim, then a summary with the chain verification', async () => {
    const r = await fetch(`${p.base}/api/v1/audit/export?format=jsonl&tenant=globex`, { headers: { cookie: auditor.cookie as string } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^application\/x-ndjson/);
    assert.match(r.headers.get('content-disposition') ?? '', /^attachment; filename="audit-acme-2026-01-05\.jsonl"$/);
    assert.equal(r.headers.get('x-audit-chain'), 'ok');
    const lines = (await r.text()).split('\n').filter((l) => l !== '');
    const summary = JSON.parse(lines.pop() as string) as Record<string, unknown>;
    assert.equal(summary['type'], 'audit.export');
    assert.equal(summary['tenant'], 'acme');
    assert.equal(summary['chain'], 'ok');
    assert.equal(summary['records'], lines.length);
    const stored = await p.dbAudit.list({ tenant: 'acme', limit: 10_000 });
    // the export itself is audited (after the rows were read): compare the rows it had
    assert.deepEqual(lines, stored.slice(0, lines.length).map((s) => s.line));
    for (const l of lines) {
      const rec = JSON.parse(l) as { fields: { tenant: string }; hash: string };
      assert.equal(rec.fields.tenant, 'acme');
      assert.match(rec.hash, /^[0-9a-f]{64}$/);
    }
    await p.dbAudit.flush();
    const exports = await list(admin, '?action=audit.export');
    assert.ok(exports.entries.some((e) => e.actor === 'auditor1' && e.fields['target'] === A.id), 'the export is audited');
  });

  it('exports CSV with formula cells neutralized, and filters apply', async () => {
    const r = await fetch(`${p.base}/api/v1/audit/export?format=csv&outcome=failure&action=web.signin`, { headers: { cookie: admin.cookie as string } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/csv/);
    const text = await r.text();
    const rows = text.split('\r\n').filter((l) => l !== '');
    assert.equal(rows[0], 'seq,ts,type,severity,actor,action,outcome,clientAddress,correlationId,id,fields');
    assert.equal(rows.length, 1 + 4 + 1, 'header, four failures, summary');
    assert.ok(text.includes(`"'=HYPERLINK(""http://x.invalid"",""a"")"`), 'a formula becomes text');
    assert.ok(!/(^|,)=/m.test(text), 'no cell starts with =');
    assert.match(rows.at(-1) ?? '', /audit\.export/);
    assert.match(rows.at(-1) ?? '', /""chain"":""ok""/);
    assert.equal(csvCell('plain'), 'plain');
    assert.equal(csvCell('+1'), "'+1");
    assert.equal(csvCell('-2'), "'-2");
    assert.equal(csvCell('@SUM(A1)'), "'@SUM(A1)");
    assert.equal(csvCell('a,b'), '"a,b"');
  });

  it('an edited row breaks the chain: the export says so', async () => {
    const row = await p.db.db.selectFrom('platform_audit').select(['seq', 'line']).where('tenant', '=', 'globex').orderBy('seq').limit(1).executeTakeFirstOrThrow();
    const edited = row.line.replace('"member1"', '"member2"').replace('"admin"', '"admln"');
    assert.notEqual(edited, row.line);
    await p.db.db.updateTable('platform_audit').set({ line: edited }).where('seq', '=', row.seq).execute();
    try {
      const r = await fetch(`${p.base}/api/v1/audit/export`, { headers: { cookie: admin.cookie as string } });
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-audit-chain'), 'broken');
      const last = JSON.parse((await r.text()).trim().split('\n').at(-1) as string) as Record<string, unknown>;
      assert.equal(last['chain'], 'broken');
      assert.equal(last['reason'], 'hash-mismatch');
      // the other tenant's row is not shown, only that the chain is broken
      assert.ok(!JSON.stringify(last).includes('globex'));
    } finally {
      await p.db.db.updateTable('platform_audit').set({ line: row.line }).where('seq', '=', row.seq).execute();
    }
  });
});

describe('audit query parser (seeded fuzz)', () => {
  const PIECES = ['', 'a', '2026-01-05', '2026-01-05T09:00:00Z', '2026-01-05T09:00:00.123+02:00', '9999-12-31', '0000-00-00', '-1', '0', '1', '500', '501', '1e3', ' 5', 'web.signin', 'user.create', "' OR 1=1 --", '<script>', '\u0000', '\n', 'é', 'success', 'failure', 'pending', 'x'.repeat(200)];
  const KEYS = ['from', 'to', 'action', 'actor', 'outcome', 'offset', 'limit', 'format', 'tenant', '__proto__', 'constructor'];

  it('returns a valid query or throws USAGE naming a parameter, for 5,000 random inputs', () => {
    const rng = new Rng(0x5eed_a0d1);
    let ok = 0;
    for (let i = 0; i < 5000; i++) {
      const q: Record<string, unknown> = {};
      const n = rng.int(5);
      for (let k = 0; k < n; k++) {
        const key = rng.pick(KEYS);
        const r = rng.int(10);
        q[key] =
          r === 0 ? [rng.pick(PIECES), rng.pick(PIECES)] : r === 1 ? rng.bytes(rng.int(24)).toString('latin1') : r === 2 ? rng.int(1000) : rng.pick(PIECES) + (rng.chance(0.2) ? rng.pick(PIECES) : '');
      }
      try {
        const parsed = parseAuditQuery(q);
        parseExportFormat(q);
        ok++;
        assert.ok(Number.isInteger(parsed.offset) && parsed.offset >= 0);
        assert.ok(Number.isInteger(parsed.limit) && parsed.limit >= 1 && parsed.limit <= MAX_PAGE);
        if (parsed.from !== undefined) assert.match(parsed.from, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
        if (parsed.to !== undefined) assert.match(parsed.to, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
        if (parsed.from !== undefined && parsed.to !== undefined) assert.ok(parsed.from <= parsed.to);
        if (parsed.outcome !== undefined) assert.ok((OUTCOMES as readonly string[]).includes(parsed.outcome));
        if (parsed.action !== undefined) assert.match(parsed.action, /^[a-z0-9][a-z0-9._-]{0,63}$/);
        // eslint-disable-next-line no-control-regex -- control characters are what must not pass
        if (parsed.actor !== undefined) assert.ok(parsed.actor.length <= 128 && !/[\u0000-\u001f]/.test(parsed.actor));
      } catch (err) {
        assert.ok(err instanceof TachyonError, `seed input ${i}: ${String(err)}`);
        assert.equal(err.code, 'USAGE');
        assert.match(err.publicMessage, /^Invalid request: query parameter (from|to|action|actor|outcome|offset|limit|format)\.$/);
      }
    }
    assert.ok(ok > 500, `some inputs are valid (${ok})`);
  });
});
