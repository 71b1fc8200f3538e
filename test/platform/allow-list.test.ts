/**
 * Per-tenant IP allow-lists of the web platform (GET/PUT /api/v1/allow-list), over real
 * HTTP on port 0 with requests from 127.0.0.1 and 127.0.0.2 (`localAddress`; Linux routes
 * all of 127/8 to lo), on a real SQLite file: administrators change, auditors read,
 * members are refused; bad lists are refused naming the entry; a list without the
 * caller's address needs confirmLockout; the list is enforced for the tenant's sign-ins
 * (refused like a wrong password, not counted against the account) and for every request
 * of its sessions and API tokens, and for no other tenant; changes are audited.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { TachyonError } from '../../src/core/errors.js';
import { MAX_ALLOW_ENTRIES, TenantAllowLists, validateAllowList } from '../../src/platform/allow-list-store.js';
import { Rng } from '../helpers/rng.js';
import { ADMIN_PW, seedTenant, signedIn, startPlatform, USER_PW, type Client, type Platform, type SeededTenant } from './helpers.js';

interface Res {
  status: number;
  body: Record<string, unknown>;
  text: string;
  setCookie: string | undefined;
}

/** One HTTP request from `localAddress` (cookie and CSRF token as a browser would send them). */
function call(base: string, method: string, path: string, opts: { from: string; body?: unknown; cookie?: string | undefined; csrf?: string | undefined; bearer?: string }): Promise<Res> {
  const url = new URL(path, base);
  const data = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  const headers: Record<string, string | number> = {};
  if (data !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = Buffer.byteLength(data);
  }
  if (opts.cookie !== undefined) headers['cookie'] = opts.cookie;
  if (opts.csrf !== undefined) headers['x-csrf-token'] = opts.csrf;
  if (opts.bearer !== undefined) headers['authorization'] = `Bearer ${opts.bearer}`;
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method, localAddress: opts.from, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let body: Record<string, unknown> = {};
        try {
          body = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
        } catch {
          body = {};
        }
        const sc = res.headers['set-cookie']?.[0];
        resolve({ status: res.statusCode ?? 0, body, text, setCookie: sc === undefined ? undefined : sc.split(';')[0] });
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

const INSIDE = '127.0.0.1';
const OUTSIDE = '127.0.0.2';

describe('per-tenant IP allow-lists in the web platform', () => {
  let p: Platform;
  let A: SeededTenant;
  let admin: Client;

  before(async () => {
    p = await startPlatform();
    A = await seedTenant(p, 'acme');
    await seedTenant(p, 'globex');
    admin = await signedIn(p, 'acme', 'admin', ADMIN_PW);
  });
  after(async () => {
    await p.close();
  });

  async function signInFrom(tenant: string, username: string, password: string, from: string): Promise<Res> {
    return call(p.base, 'POST', '/api/v1/auth/signin', { from, body: { tenant, username, password } });
  }

  it('starts empty; auditors read it, members and auditors cannot change it', async () => {
    const r = await admin.req('GET', '/api/v1/allow-list');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body['cidrs'], []);
    assert.equal(r.body['yourAddress'], '127.0.0.1');
    assert.equal(r.body['youAreAdmitted'], true);
    const auditor = await signedIn(p, 'acme', 'auditor1', USER_PW);
    assert.equal((await auditor.req('GET', '/api/v1/allow-list')).status, 200);
    assert.equal((await auditor.req('PUT', '/api/v1/allow-list', { cidrs: ['10.0.0.0/8'] })).status, 403);
    const member = await signedIn(p, 'acme', 'member1', USER_PW);
    assert.equal((await member.req('GET', '/api/v1/allow-list')).status, 403);
    assert.equal((await member.req('PUT', '/api/v1/allow-list', { cidrs: ['10.0.0.0/8'] })).status, 403);
    assert.equal((await admin.req('PUT', '/api/v1/allow-list', { cidrs: ['127.0.0.0/8'] }, { csrf: null })).status, 403, 'CSRF is checked');
    assert.deepEqual((await admin.req('GET', '/api/v1/allow-list')).body['cidrs'], []);
  });

  it('refuses bad lists naming the entry, never echoing it', async () => {
    const cases: [unknown, number, RegExp][] = [
      [{ cidrs: ['10.0.0.1/8'] }, 400, /^Invalid request: cidrs\[0\]: /],
      [{ cidrs: ['127.0.0.1/32', 'not-an-address'] }, 400, /^Invalid request: cidrs\[1\]: not an IP address\.$/],
      [{ cidrs: ['10.0.0.0/33'] }, 400, /^Invalid request: cidrs\[0\]: /],
      [{ cidrs: ["10.0.0.0/8' OR 1=1 --"] }, 400, /^Invalid request: cidrs\[0\]: /],
      [{ cidrs: ['<script>alert(1)</script>'] }, 400, /^Invalid request: cidrs\[0\]: /],
      [{ cidrs: ['fe80::1%eth0'] }, 400, /^Invalid request: cidrs\[0\]: zone ids are not allowed\.$/],
      [{ cidrs: [5] }, 400, /^Invalid request: cidrs\[0\] is not an address block\.$/],
      [{ cidrs: '127.0.0.0/8' }, 400, /^Invalid request: field cidrs\.$/],
      [{ cidrs: Array.from({ length: MAX_ALLOW_ENTRIES + 1 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`) }, 400, /^Invalid request: at most 256 address blocks\.$/],
      [{ cidrs: ['127.0.0.0/8'], tenant: 'globex' }, 400, /^Invalid request: unknown field tenant\.$/],
      [{}, 400, /^Invalid request: field cidrs\.$/],
    ];
    for (const [body, status, message] of cases) {
      const r = await admin.req('PUT', '/api/v1/allow-list', body);
      assert.equal(r.status, status, `${JSON.stringify(body).slice(0, 80)}: ${r.text}`);
      assert.match(r.error?.message ?? '', message);
      assert.ok(!r.text.includes('script') && !r.text.includes('OR 1=1'), 'not echoed');
    }
    // oversized, malformed and non-JSON bodies
    const big = await admin.req('PUT', '/api/v1/allow-list', { cidrs: Array.from({ length: 2000 }, () => '192.0.2.0/24') });
    assert.equal(big.status, 413, big.text);
    assert.equal((await admin.req('PUT', '/api/v1/allow-list', '{"cidrs": [')).status, 400);
    assert.equal((await admin.req('PUT', '/api/v1/allow-list', 'cidrs=10.0.0.0/8', { headers: { 'content-type': 'application/x-www-form-urlencoded' } })).status, 415);
    assert.deepEqual((await admin.req('GET', '/api/v1/allow-list')).body['cidrs'], [], 'nothing was stored');
  });

  it('refuses a list without the caller’s own address unless confirmed', async () => {
    const r = await admin.req('PUT', '/api/v1/allow-list', { cidrs: ['127.0.0.2/32'] });
    assert.equal(r.status, 409);
    assert.match(r.error?.message ?? '', /does not include your current address/);
    assert.deepEqual((await admin.req('GET', '/api/v1/allow-list')).body['cidrs'], []);
  });

  it('enforces the list for the tenant’s sign-ins, sessions and tokens only; audited', async () => {
    const saved = await admin.req('PUT', '/api/v1/allow-list', { cidrs: ['127.0.0.1', '10.0.0.0/8', '10.0.0.0/8'] });
    assert.equal(saved.status, 200, saved.text);
    assert.deepEqual(saved.body['cidrs'], ['127.0.0.1/32', '10.0.0.0/8'], 'normalized, without duplicates');
    assert.equal(saved.body['updatedBy'], 'admin');

    // sign-in from outside: the same answer as a wrong password, and the account is not charged
    const outside = await signInFrom('acme', 'member1', USER_PW, OUTSIDE);
    const wrong = await signInFrom('acme', 'member1', 'not the password at all', INSIDE);
    assert.equal(outside.status, 401);
    assert.equal(wrong.status, 401);
    assert.equal((outside.body['error'] as { message: string }).message, (wrong.body['error'] as { message: string }).message);
    assert.equal(outside.setCookie, undefined, 'no session');
    for (let i = 0; i < 6; i++) assert.equal((await signInFrom('acme', 'member1', `wrong from outside ${i}`, OUTSIDE)).status, 401);
    const inside = await signInFrom('acme', 'member1', USER_PW, INSIDE);
    assert.equal(inside.status, 200, 'outsiders’ attempts did not lock the account');
    // another tenant is unaffected
    assert.equal((await signInFrom('globex', 'member1', USER_PW, OUTSIDE)).status, 200);

    // a session opened inside cannot be used from outside
    const cookie = inside.setCookie;
    const csrf = inside.body['csrfToken'] as string;
    assert.equal((await call(p.base, 'GET', '/api/v1/me', { from: INSIDE, cookie })).status, 200);
    const stolen = await call(p.base, 'GET', '/api/v1/me', { from: OUTSIDE, cookie });
    assert.equal(stolen.status, 403);
    assert.equal((stolen.body['error'] as { message: string }).message, 'Access denied.');
    assert.ok(!stolen.text.includes('127.0.0'), 'the answer does not explain');
    // nor an API token
    const tok = await call(p.base, 'POST', '/api/v1/me/tokens', { from: INSIDE, cookie, csrf, body: { scopes: ['read'] } });
    assert.equal(tok.status, 201, tok.text);
    const bearer = (tok.body['token'] as { token: string }).token;
    assert.equal((await call(p.base, 'GET', '/api/v1/me', { from: INSIDE, bearer })).status, 200);
    assert.equal((await call(p.base, 'GET', '/api/v1/me', { from: OUTSIDE, bearer })).status, 403);

    await p.dbAudit.flush();
    const rows = await p.dbAudit.list({ tenant: 'acme', limit: 10_000 });
    const recs = rows.map((r) => JSON.parse(r.line) as { type: string; fields: Record<string, unknown> });
    assert.ok(recs.some((r) => r.type === 'web.change' && r.fields['action'] === 'allow-list.update' && r.fields['actor'] === 'admin'));
    assert.ok(recs.some((r) => r.type === 'web.signin' && r.fields['reason'] === 'address-not-allowed' && r.fields['clientAddress'] === OUTSIDE));
    assert.ok(recs.some((r) => r.type === 'web.refusal' && r.fields['reason'] === 'address-not-allowed-tenant'));
  });

  it('a confirmed lock-out applies at once, even to the administrator; removing the list restores access', async () => {
    const r = await admin.req('PUT', '/api/v1/allow-list', { cidrs: ['192.0.2.0/24'], confirmLockout: true });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body['youAreAdmitted'], false);
    assert.equal((await admin.req('GET', '/api/v1/allow-list')).status, 403);
    assert.equal((await signInFrom('acme', 'admin', ADMIN_PW, INSIDE)).status, 401);
    // recovery is an operator's job (the store, as `tachyon` would do it); then the admin signs in again
    const tenant = await p.identity.repo.tenantBySlug('acme');
    assert.equal(tenant?.id, A.id);
    await new TenantAllowLists(p.db, p.clock).set(A.id, [], 'operator');
    p.clock.advance(3000);
    const again = await signedIn(p, 'acme', 'admin', ADMIN_PW);
    assert.deepEqual((await again.req('GET', '/api/v1/allow-list')).body['cidrs'], []);
  });
});

describe('allow-list validation (seeded fuzz)', () => {
  it('returns normalized blocks or throws USAGE naming an index, for 3,000 random lists', () => {
    const rng = new Rng(0xa110_1157);
    const PIECES = ['10.0.0.0/8', '10.0.0.1/8', '127.0.0.1', '::1', '2001:db8::/32', '2001:db8::1/32', '::ffff:10.0.0.0/104', '0.0.0.0/0', '256.1.1.1', '1.2.3', '/8', '10.0.0.0/', '10.0.0.0/-1', 'fe80::1%lo', ' 10.0.0.0/8 ', '', 'x'.repeat(70)];
    let ok = 0;
    for (let i = 0; i < 3000; i++) {
      const n = rng.int(6);
      const list: unknown[] = [];
      for (let k = 0; k < n; k++) {
        const r = rng.int(8);
        list.push(r === 0 ? rng.bytes(rng.int(20)).toString('latin1') : r === 1 ? rng.int(100) : r === 2 ? `${rng.int(300)}.${rng.int(300)}.${rng.int(300)}.${rng.int(300)}/${rng.int(40)}` : rng.pick(PIECES));
      }
      const input: unknown = rng.chance(0.03) ? rng.pick(['10.0.0.0/8', null, 5, { a: 1 }]) : list;
      try {
        const out = validateAllowList(input);
        ok++;
        assert.ok(out.length <= list.length);
        assert.equal(new Set(out).size, out.length);
        for (const c of out) assert.match(c, /\/\d{1,3}$/);
      } catch (err) {
        assert.ok(err instanceof TachyonError, String(err));
        assert.equal(err.code, 'USAGE');
        assert.match(err.publicMessage, /^Invalid request: (cidrs\[\d+\]|cidrs must be|at most)/);
      }
    }
    assert.ok(ok > 100, `some lists are valid (${ok})`);
  });
});
