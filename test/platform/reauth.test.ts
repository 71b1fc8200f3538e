/**
 * Re-authentication before sensitive changes, over real HTTP (port 0, a real SQLite file,
 * the hash-chained audit file, a virtual clock): every route the table flags `reauth`
 * (generated from ROUTE_TABLE, so a newly flagged route is covered) refuses a session whose
 * last proof of identity is older than the tenant's window with 403 REAUTH_REQUIRED, and
 * lets it through after POST /api/v1/auth/reauth; a wrong password there is refused,
 * audited, counts towards the account's lockout and (test with a real ScoringDefender) the
 * address's score; a TOTP user must send a code; API tokens are not asked; the window is a
 * validated policy setting; random bodies never get past the parser.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { readFileSync } from 'node:fs';
import { ScoringDefender, type Defender } from '../../src/defender/index.js';
import { routeRules } from '../../src/platform/routes.js';
import { Rng } from '../helpers/rng.js';
import { ADMIN_PW, Client, seedTenant, signedIn, startPlatform, USER_PW, type Platform, type SeededTenant } from './helpers.js';
import { codeAt } from '../helpers/totp.js';

interface Rec {
  type: string;
  correlationId?: string;
  fields: Record<string, unknown>;
}

function auditRecords(p: Platform): Rec[] {
  return readFileSync(p.auditFile, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Rec);
}

/** A concrete URL of a route (parameters filled with well-formed values that name nothing). */
function concrete(url: string): string {
  return url.replace(/:(\w+)/g, (_m, name: string) => (name === 'address' ? '192.0.2.77' : name === 'tenant' ? 'nobody' : '00000000-0000-4000-8000-000000000000'));
}

const FLAGGED = routeRules().filter((r) => r.reauth !== undefined);
const ALWAYS = FLAGGED.filter((r) => r.reauth === true);
const WINDOW_MS = 600_000;

describe('re-authentication before sensitive changes', () => {
  let p: Platform;
  let A: SeededTenant;

  before(async () => {
    p = await startPlatform();
    A = await seedTenant(p, 'reauth-a');
  });
  after(async () => {
    await p.close();
  });

  it('the route table flags the sensitive routes', () => {
    const names = FLAGGED.map((r) => r.name).sort();
    for (const n of ['setPolicy', 'setSso', 'clearSso', 'setAllowList', 'createUser', 'resetPassword', 'updateUser', 'createToken', 'enrolTotp', 'liftBlock']) {
      assert.ok(names.includes(n as never), `${n} is flagged reauth`);
    }
    for (const r of FLAGGED) assert.ok(r.access !== 'public', `${r.name}: a public route cannot ask for re-authentication`);
  });

  it('a stale session is refused (403 REAUTH_REQUIRED, audited) on every flagged route, and let through after re-authenticating', async () => {
    const admin = await signedIn(p, A.slug, 'admin', ADMIN_PW);
    // fresh: through
    assert.equal((await admin.req('PUT', '/api/v1/policy', {})).status, 200);
    // an admin-scoped API token, made while fresh: tokens are not asked
    const tok = await admin.req('POST', '/api/v1/me/tokens', { name: 'ops', scopes: ['read', 'admin'] });
    assert.equal(tok.status, 201, tok.text);
    const bearer = String((tok.body['token'] as Record<string, unknown>)['token']);
    const me0 = await admin.req('GET', '/api/v1/me');
    assert.equal(me0.body['reauthMethod'], 'password');
    assert.equal(me0.body['authenticatedAt'], new Date(p.clock.now()).toISOString());

    p.clock.advance(WINDOW_MS);
    const refs: string[] = [];
    for (const r of FLAGGED) {
      const res = await admin.req(r.method, concrete(r.url), r.method === 'DELETE' ? undefined : {});
      if (r.reauth === 'when-enrolled') {
        // no second factor on this platform: nothing to replace, nothing asked
        assert.notEqual(res.error?.code, 'REAUTH_REQUIRED', `${r.name}: ${res.text}`);
        continue;
      }
      assert.equal(res.status, 403, `${r.name} ${r.method} ${r.url}: ${res.text}`);
      assert.equal(res.error?.code, 'REAUTH_REQUIRED', r.name);
      assert.equal(res.error?.message, 'Confirm your identity again (re-authenticate) to do this.');
      refs.push(String(res.error?.correlation_id));
    }
    assert.equal(refs.length, ALWAYS.length);
    // not-sensitive routes still answer
    assert.equal((await admin.req('GET', '/api/v1/policy')).status, 200);
    const viaToken = await fetch(`${p.base}/api/v1/policy`, { method: 'PUT', headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(viaToken.status, 200, 'an admin-scoped API token is not asked');
    const recs = auditRecords(p);
    for (const ref of refs) {
      assert.ok(recs.some((x) => x.correlationId === ref && x.type === 'web.refusal' && x.fields['code'] === 'REAUTH_REQUIRED'), `refusal ${ref} audited`);
    }

    // a wrong password: refused, audited, still stale
    const wrong = await admin.req('POST', '/api/v1/auth/reauth', { password: 'not the password at all' });
    assert.equal(wrong.status, 401, wrong.text);
    assert.equal(wrong.error?.code, 'AUTH_FAILED');
    assert.ok(!wrong.text.includes('not the password'));
    assert.equal((await admin.req('PUT', '/api/v1/policy', {})).error?.code, 'REAUTH_REQUIRED');
    // no CSRF token: refused before the password is looked at
    assert.equal((await admin.req('POST', '/api/v1/auth/reauth', { password: ADMIN_PW }, { csrf: null })).status, 403);

    const ok = await admin.req('POST', '/api/v1/auth/reauth', { password: ADMIN_PW });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body['authenticatedAt'], new Date(p.clock.now()).toISOString());
    for (const r of FLAGGED) {
      const res = await admin.req(r.method, concrete(r.url), r.method === 'DELETE' ? undefined : {});
      assert.notEqual(res.error?.code, 'REAUTH_REQUIRED', `${r.name} after reauth: ${res.text}`);
      assert.ok(res.status !== 401 && res.status !== 403, `${r.name} after reauth: ${res.status} ${res.text}`);
    }
    const changed = await admin.req('PUT', '/api/v1/policy', { minPasswordLength: 13 });
    assert.equal(changed.status, 200, changed.text);

    // the window: just inside, through; just past, refused again
    p.clock.advance(WINDOW_MS - 1000);
    assert.equal((await admin.req('PUT', '/api/v1/policy', {})).status, 200);
    p.clock.advance(1000);
    assert.equal((await admin.req('PUT', '/api/v1/policy', {})).error?.code, 'REAUTH_REQUIRED');

    const after = auditRecords(p).filter((x) => x.type === 'web.signin' && String(x.fields['method']).startsWith('reauth') && x.fields['user'] === 'admin');
    assert.deepEqual(
      after.map((x) => [x.fields['result'], x.fields['reason'] ?? null]),
      [
        ['failure', 'bad-credentials'],
        ['success', null],
      ],
    );
    assert.ok(!readFileSync(p.auditFile, 'utf8').includes(ADMIN_PW), 'no password in the audit');
  });

  it('the window is a validated tenant policy setting', async () => {
    const admin = await signedIn(p, A.slug, 'admin', ADMIN_PW);
    for (const bad of [59, 86401, 600.5, '600', null, -1]) {
      const r = await admin.req('PUT', '/api/v1/policy', { reauthWindowSeconds: bad });
      assert.equal(r.status, 400, `${String(bad)}: ${r.text}`);
      assert.equal(r.error?.message, 'Invalid policy field reauthWindowSeconds.');
    }
    assert.equal((await admin.req('GET', '/api/v1/policy')).body['policy'] !== undefined, true);
    const set = await admin.req('PUT', '/api/v1/policy', { reauthWindowSeconds: 60 });
    assert.equal(set.status, 200, set.text);
    assert.equal((set.body['policy'] as Record<string, unknown>)['reauthWindowSeconds'], 60);
    p.clock.advance(61_000);
    assert.equal((await admin.req('PUT', '/api/v1/policy', {})).error?.code, 'REAUTH_REQUIRED');
    assert.equal((await admin.req('POST', '/api/v1/auth/reauth', { password: ADMIN_PW })).status, 200);
    assert.equal((await admin.req('PUT', '/api/v1/policy', { reauthWindowSeconds: 600 })).status, 200);
  });

  it('wrong passwords at reauth count towards the lockout: at the threshold the account locks and its sessions end', async () => {
    await p.identity.provisionUser(A.id, { username: 'mallory-target', roles: ['member'], password: USER_PW });
    const victim = await signedIn(p, A.slug, 'mallory-target', USER_PW);
    const other = await signedIn(p, A.slug, 'mallory-target', USER_PW);
    for (let i = 0; i < 5; i++) {
      const r = await victim.req('POST', '/api/v1/auth/reauth', { password: `guess number ${i} wrong` });
      assert.equal(r.status, 401, `attempt ${i}: ${r.text}`);
      assert.equal(r.error?.code, 'AUTH_FAILED');
    }
    // locked (default policy: 5 failures): every session ended, the right password refused
    assert.equal((await victim.req('GET', '/api/v1/me')).status, 401);
    assert.equal((await other.req('GET', '/api/v1/me')).status, 401);
    assert.equal((await new Client(p.base).signIn(A.slug, 'mallory-target', USER_PW)).status, 401);
    const recs = auditRecords(p);
    assert.ok(recs.some((x) => x.type === 'web.lockout' && x.fields['user'] === 'mallory-target' && x.fields['failures'] === 5));
    const fails = recs.filter((x) => x.type === 'web.signin' && x.fields['method'] === 'reauth' && x.fields['user'] === 'mallory-target');
    assert.equal(fails.length, 5);
    assert.equal(fails.at(-1)?.fields['reason'], 'bad-credentials-locked');
    // after the lockout, the owner signs in again
    p.clock.advance(901_000);
    assert.equal((await new Client(p.base).signIn(A.slug, 'mallory-target', USER_PW)).status, 200);
  });

  it('fuzz: random reauth bodies are refused with a sanitized error, never 200 or 5xx (seed 6101)', async () => {
    await p.identity.provisionUser(A.id, { username: 'fuzzed', roles: ['member'], password: USER_PW });
    let c = await signedIn(p, A.slug, 'fuzzed', USER_PW);
    const rng = new Rng(6101);
    const atoms = (): unknown => rng.pick([null, true, 0, -1, 1e308, '', 'x'.repeat(rng.int(5000)), "' OR 1=1 --", '<script>alert(1)</script>', [], {}, ['a'], { $ne: 1 }]);
    for (let i = 0; i < 60; i++) {
      let body: unknown;
      switch (rng.int(4)) {
        case 0:
          body = { password: atoms() };
          break;
        case 1:
          body = { password: `wrong ${i}`, code: atoms(), ...(rng.chance(0.5) ? { recoveryCode: atoms() } : {}) };
          break;
        case 2:
          body = { [rng.pick(['passwd', 'user', '__proto__', 'tenant'])]: atoms() };
          break;
        default:
          body = atoms();
      }
      const r = await c.req('POST', '/api/v1/auth/reauth', body === undefined ? '' : JSON.stringify(body));
      assert.ok([400, 401, 403, 413, 415].includes(r.status), `case ${i}: ${r.status} ${r.text.slice(0, 200)}`);
      assert.deepEqual(Object.keys(r.body), ['error'], `case ${i}: sanitized`);
      assert.ok(!r.text.includes('<script>') && !r.text.includes('OR 1=1'), `case ${i}: nothing echoed`);
      if (r.status === 401 && r.error?.message.startsWith('Not signed in')) {
        // locked out by the wrong passwords: wait out the lock and sign in again
        p.clock.advance(901_000);
        c = await signedIn(p, A.slug, 'fuzzed', USER_PW);
      }
    }
  });
});

describe('re-authentication with a second factor', () => {
  let p: Platform;
  let A: SeededTenant;

  before(async () => {
    p = await startPlatform({ mfa: true });
    A = await seedTenant(p, 'reauth-totp');
  });
  after(async () => {
    await p.close();
  });

  it('a TOTP user sends a code with the password; enrolling again when a factor exists needs a recent proof', async () => {
    const c = await signedIn(p, A.slug, 'member1', USER_PW);
    const e = await c.req('POST', '/api/v1/me/totp/enrol');
    assert.equal(e.status, 200, 'no factor yet: enrolling is not asked for a recent proof');
    const secret = String(e.body['secret']);
    assert.equal((await c.req('POST', '/api/v1/me/totp/confirm', { code: codeAt(secret, p.clock.now()) })).status, 200);
    assert.equal((await c.req('GET', '/api/v1/me')).body['reauthMethod'], 'password+totp');

    p.clock.advance(WINDOW_MS + 31_000);
    const stale = await c.req('POST', '/api/v1/me/totp/enrol');
    assert.equal(stale.status, 403, stale.text);
    assert.equal(stale.error?.code, 'REAUTH_REQUIRED');
    const noCode = await c.req('POST', '/api/v1/auth/reauth', { password: USER_PW });
    assert.equal(noCode.status, 400, noCode.text);
    const badCode = await c.req('POST', '/api/v1/auth/reauth', { password: USER_PW, code: codeAt(secret, p.clock.now() + 600_000) });
    assert.equal(badCode.status, 401, badCode.text);
    assert.equal(badCode.error?.code, 'MFA_INVALID');
    assert.equal((await c.req('POST', '/api/v1/me/totp/enrol')).error?.code, 'REAUTH_REQUIRED');
    const ok = await c.req('POST', '/api/v1/auth/reauth', { password: USER_PW, code: codeAt(secret, p.clock.now()) });
    assert.equal(ok.status, 200, ok.text);
    // past the gate: the TOTP service itself refuses to replace a confirmed factor (409)
    const again = await c.req('POST', '/api/v1/me/totp/enrol');
    assert.equal(again.status, 409, again.text);
    assert.equal(again.error?.code, 'CONFLICT');
    const recs = auditRecords(p).filter((x) => x.type === 'web.signin' && String(x.fields['method']).startsWith('reauth'));
    assert.deepEqual(
      recs.map((x) => [x.fields['method'], x.fields['result']]),
      [
        ['reauth+totp', 'failure'],
        ['reauth+totp', 'success'],
      ],
    );
  });
});

/** A request from a chosen loopback address (the defender scores source addresses). */
function from(
  base: string,
  localAddress: string,
  method: string,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; setCookie: string | undefined; json: Record<string, unknown> }> {
  const url = new URL(path, base);
  const data = body === undefined ? '' : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method,
        localAddress,
        headers: { ...headers, ...(data !== '' ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (b: Buffer) => chunks.push(b));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const sc = res.headers['set-cookie']?.[0];
          resolve({ status: res.statusCode ?? 0, setCookie: sc, json: text.startsWith('{') ? (JSON.parse(text) as Record<string, unknown>) : {} });
        });
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? resolve({ status: 0, setCookie: undefined, json: {} }) : reject(err)));
    req.end(data);
  });
}

describe('re-authentication and the IP defender', () => {
  let p: Platform;
  let defender: Defender | undefined;
  const THRESHOLD = 3;

  before(async () => {
    p = await startPlatform({
      defender: async (database, clock) => {
        defender = await ScoringDefender.open({ database, clock, settings: { threshold: THRESHOLD, syncIntervalMs: 60_000 } });
        return defender;
      },
    });
    await seedTenant(p, 'reauth-d');
  });
  after(async () => {
    await p.close();
  });

  it('wrong passwords at reauth are reported to the defender like failed sign-ins: the address is blocked at the threshold', async () => {
    const addr = '127.0.0.9';
    const s = await from(p.base, addr, 'POST', '/api/v1/auth/signin', { tenant: 'reauth-d', username: 'member1', password: USER_PW });
    assert.equal(s.status, 200);
    const cookie = /^([^;]*)/.exec(s.setCookie ?? '')?.[1] ?? '';
    const csrf = String(s.json['csrfToken']);
    for (let i = 0; i < THRESHOLD; i++) {
      const r = await from(p.base, addr, 'POST', '/api/v1/auth/reauth', { password: `wrong guess ${i}` }, { cookie, 'x-csrf-token': csrf });
      assert.equal(r.status, 401, `attempt ${i}`);
    }
    assert.ok(defender?.isBlocked(addr), 'the address is blocked');
    assert.ok([0, 403].includes((await from(p.base, addr, 'POST', '/api/v1/auth/reauth', { password: USER_PW }, { cookie, 'x-csrf-token': csrf })).status));
    // others are not
    assert.equal((await signedIn(p, 'reauth-d', 'admin', ADMIN_PW)).cookie !== undefined, true);
  });
});
