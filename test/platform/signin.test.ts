/**
 * Local sign-in and sessions over real HTTP (fetch against the platform app on a
 * loopback port, a real SQLite file, the hash-chained audit file, a virtual clock):
 * enumeration resistance, lockout and its expiry, cookies, fixation, CSRF, timeouts,
 * sign-out, one's own sessions, self-service and administrator password changes,
 * forced change on expiry, audit records that never hold a password.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { verifyAuditLog } from '../../src/audit/index.js';
import { ADMIN_PW, Client, PG_URL, seedTenant, signedIn, startPlatform, USER_PW, type Platform, type SeededTenant } from './helpers.js';

const MIN = 60_000;

function auditRecords(p: Platform): { type: string; correlationId?: string; fields: Record<string, unknown> }[] {
  return readFileSync(p.auditFile, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { type: string; correlationId?: string; fields: Record<string, unknown> });
}

for (const [engine, url] of [
  ['SQLite', undefined],
  ['PostgreSQL', PG_URL],
] as const) {
describe(`platform sign-in on ${engine}`, { skip: engine === 'PostgreSQL' && !url ? 'set TACHYON_TEST_PG_URL=postgres://… to run against PostgreSQL' : false }, () => {
  let p: Platform;
  let acme: SeededTenant;
  // the tenant of this run (PostgreSQL keeps earlier runs')
  const T = `acme-${randomBytes(3).toString('hex')}`;

  before(async () => {
    p = await startPlatform(url ? { url } : {});
    acme = await seedTenant(p, T);
  });
  after(async () => {
    await p.close();
  });

  it('signs in: a __Host- cookie that is Secure, HttpOnly, SameSite=Strict, Path=/, and a CSRF token; /me answers', async () => {
    const c = new Client(p.base);
    const r = await c.signIn(T, 'member1', USER_PW);
    assert.equal(r.status, 200, r.text);
    const cookie = r.headers.get('set-cookie') ?? '';
    assert.match(cookie, /^__Host-tachyon-session=[A-Za-z0-9_-]{43}; /);
    for (const attr of ['Path=/', 'Secure', 'HttpOnly', 'SameSite=Strict']) assert.ok(cookie.split('; ').includes(attr), `${attr} in ${cookie}`);
    assert.doesNotMatch(cookie, /Domain=/i);
    assert.equal(typeof r.body['csrfToken'], 'string');
    assert.equal((r.body['user'] as Record<string, unknown>)['username'], 'member1');
    assert.equal(r.text.includes('password_hash') || r.text.includes('$argon2'), false);
    assert.equal(r.headers.get('cache-control'), 'no-store');
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    const me = await c.req('GET', '/api/v1/me');
    assert.equal(me.status, 200, me.text);
    assert.equal(me.body['csrfToken'], c.csrf);
    assert.deepEqual((me.body['user'] as Record<string, unknown>)['roles'], ['member']);
    // only the SHA-256 of the token is stored
    const token = (c.cookie ?? '').split('=')[1] as string;
    const rows = await p.db.db.selectFrom('platform_session').selectAll().execute();
    assert.ok(rows.length > 0);
    for (const row of rows) assert.ok(!Object.values(row).includes(token), 'the raw token is not stored');
  });

  it('user names are case-insensitive', async () => {
    const c = new Client(p.base);
    assert.equal((await c.signIn(T, 'MEMBER1', USER_PW)).status, 200);
  });

  it('unknown user, unknown tenant, wrong password and a malformed name get the same status and body (only the ref differs)', async () => {
    await p.identity.provisionUser(acme.id, { username: 'enum-victim', password: USER_PW });
    const cases = [
      [T, 'enum-victim', 'wrong password here'],
      [T, 'nobody-at-all', 'wrong password here'],
      ['no-such-tenant', 'enum-victim', 'wrong password here'],
      [T, "admin' OR '1'='1", 'wrong password here'],
    ] as const;
    const answers: string[] = [];
    const times: number[] = [];
    for (const [tenant, user, pw] of cases) {
      const c = new Client(p.base);
      const t0 = performance.now();
      const r = await c.signIn(tenant, user, pw);
      times.push(performance.now() - t0);
      assert.equal(r.status, 401, `${tenant}/${user}`);
      assert.equal(r.headers.get('set-cookie'), null);
      assert.match(String(r.error?.correlation_id), /^[0-9A-Z]{26}$/);
      assert.equal(r.headers.get('x-correlation-id'), r.error?.correlation_id);
      assert.deepEqual(Object.keys(r.body), ['error']);
      answers.push(JSON.stringify({ code: r.error?.code, message: r.error?.message }));
    }
    assert.equal(new Set(answers).size, 1, answers.join('\n'));
    // every path runs one argon2 verification: no path is an order of magnitude faster
    // (loose bound: the machine is shared; the structural guarantee is the dummy hash)
    assert.ok(Math.min(...times) > 0);
    const audit = auditRecords(p).filter((r) => r.type === 'web.signin' && r.fields['result'] === 'failure');
    const reasons = audit.slice(-4).map((r) => r.fields['reason']);
    assert.deepEqual(reasons, ['bad-credentials', 'unknown-user', 'unknown-tenant', 'unknown-user']);
  });

  it('locks after 5 failures within 15 minutes, refuses even the right password while locked, unlocks after 15 minutes', async () => {
    const u = await p.identity.provisionUser(acme.id, { username: 'lock-me', password: USER_PW });
    const c = new Client(p.base);
    for (let i = 0; i < 4; i++) assert.equal((await c.signIn(T, 'lock-me', `nope-${i}-xxxxxxxx`)).status, 401);
    // 4 failures: not locked yet, the right password works and resets the count
    assert.equal((await c.signIn(T, 'lock-me', USER_PW)).status, 200);
    for (let i = 0; i < 4; i++) assert.equal((await c.signIn(T, 'lock-me', `nope-${i}-xxxxxxxx`)).status, 401);
    // failures spread beyond the window do not add up
    p.clock.advance(16 * MIN);
    assert.equal((await c.signIn(T, 'lock-me', 'nope-again-xxxxxxxx')).status, 401);
    assert.equal((await c.signIn(T, 'lock-me', USER_PW)).status, 200, 'only 1 failure in the new window');
    for (let i = 0; i < 5; i++) assert.equal((await c.signIn(T, 'lock-me', `nope-${i}-xxxxxxxx`)).status, 401);
    const locked = await c.signIn(T, 'lock-me', USER_PW);
    assert.equal(locked.status, 401, 'locked: the right password is refused');
    // the answer when locked is the same as for a wrong password
    const wrong = await new Client(p.base).signIn(T, 'nobody-at-all', USER_PW);
    assert.equal(locked.error?.message, wrong.error?.message);
    assert.equal(locked.error?.code, wrong.error?.code);
    const lockouts = auditRecords(p).filter((r) => r.type === 'web.lockout' && r.fields['user'] === 'lock-me');
    assert.equal(lockouts.length, 1);
    assert.equal(lockouts[0]?.fields['failures'], 5);
    assert.equal(lockouts[0]?.fields['lockedUntil'], new Date(p.clock.now() + 15 * MIN).toISOString());
    p.clock.advance(14 * MIN);
    assert.equal((await c.signIn(T, 'lock-me', USER_PW)).status, 401, 'still locked after 14 minutes');
    p.clock.advance(1 * MIN + 1);
    assert.equal((await c.signIn(T, 'lock-me', USER_PW)).status, 200, 'unlocked after 15 minutes');
    const row = await p.identity.repo.userById(acme.id, u.id);
    assert.equal(row?.lockedUntil, null);
  });

  it('the lockout is configurable per tenant (3 failures → 1 hour)', async () => {
    const admin = await signedIn(p, T, 'admin', ADMIN_PW);
    const put = await admin.req('PUT', '/api/v1/policy', { maxFailedAttempts: 3, lockoutSeconds: 3600 });
    assert.equal(put.status, 200, put.text);
    await p.identity.provisionUser(acme.id, { username: 'lock-three', password: USER_PW });
    const c = new Client(p.base);
    for (let i = 0; i < 3; i++) assert.equal((await c.signIn(T, 'lock-three', `nope-${i}-xxxxxxxx`)).status, 401);
    p.clock.advance(59 * MIN);
    assert.equal((await c.signIn(T, 'lock-three', USER_PW)).status, 401);
    p.clock.advance(1 * MIN);
    assert.equal((await c.signIn(T, 'lock-three', USER_PW)).status, 200);
    assert.equal((await admin.req('GET', '/api/v1/policy')).status, 401, 'the admin session went idle meanwhile');
    const again = await signedIn(p, T, 'admin', ADMIN_PW);
    assert.equal((await again.req('PUT', '/api/v1/policy', { maxFailedAttempts: 5, lockoutSeconds: 900 })).status, 200);
  });

  it('a burst of 12 concurrent wrong passwords locks the account once, and every failure counts', async () => {
    await p.identity.provisionUser(acme.id, { username: 'burst', password: USER_PW });
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => new Client(p.base).signIn(T, 'burst', `burst-guess-${i}-xxxx`)));
    assert.ok(results.every((r) => r.status === 401));
    assert.equal(auditRecords(p).filter((r) => r.type === 'web.lockout' && r.fields['user'] === 'burst').length, 1);
    assert.equal((await new Client(p.base).signIn(T, 'burst', USER_PW)).status, 401, 'locked');
    p.clock.advance(15 * MIN);
    assert.equal((await new Client(p.base).signIn(T, 'burst', USER_PW)).status, 200);
  });

  it('disabling a user ends their sessions and refuses their sign-in; enabling lets them back', async () => {
    const u = await p.identity.provisionUser(acme.id, { username: 'leaver', password: USER_PW });
    const c = await signedIn(p, T, 'leaver', USER_PW);
    const admin = await signedIn(p, T, 'admin', ADMIN_PW);
    const off = await admin.req('PATCH', `/api/v1/users/${u.id}`, { status: 'disabled' });
    assert.equal(off.status, 200, off.text);
    assert.equal((await c.req('GET', '/api/v1/me')).status, 401);
    assert.equal((await new Client(p.base).signIn(T, 'leaver', USER_PW)).status, 401);
    assert.equal((await admin.req('PATCH', `/api/v1/users/${u.id}`, { status: 'active' })).status, 200);
    assert.equal((await new Client(p.base).signIn(T, 'leaver', USER_PW)).status, 200);
    assert.equal((await admin.req('PATCH', `/api/v1/users/${acme.users.tenant_admin}`, { status: 'disabled' })).status, 409, 'not oneself');
  });

  it('a sign-in always issues a new session id: a planted cookie is ended, not adopted (no fixation)', async () => {
    const victim = new Client(p.base);
    await victim.signIn(T, 'member1', USER_PW);
    const first = victim.cookie;
    // an attacker plants a token of their own, then the victim signs in with it present
    const attacker = await signedIn(p, T, 'member1', USER_PW);
    victim.cookie = attacker.cookie;
    const r = await victim.signIn(T, 'member1', USER_PW);
    assert.equal(r.status, 200);
    assert.notEqual(victim.cookie, attacker.cookie, 'the id changes at sign-in');
    assert.notEqual(victim.cookie, first);
    assert.equal((await attacker.req('GET', '/api/v1/me')).status, 401, 'the planted session is over');
    // an invented token is not adopted either
    const c = new Client(p.base);
    c.cookie = '__Host-tachyon-session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
    await c.signIn(T, 'member1', USER_PW);
    assert.notEqual(c.cookie, '__Host-tachyon-session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
    assert.equal((await new Client(p.base).req('GET', '/api/v1/me')).status, 401);
  });

  it('refuses a state-changing request without the CSRF token, or with another session’s, or as a form post', async () => {
    const c = await signedIn(p, T, 'member1', USER_PW);
    const other = await signedIn(p, T, 'member1', USER_PW);
    const none = await c.req('POST', '/api/v1/auth/signout', undefined, { csrf: null });
    assert.equal(none.status, 403);
    assert.equal(none.error?.code, 'PERMISSION');
    const foreign = await c.req('POST', '/api/v1/auth/signout', undefined, { csrf: other.csrf ?? '' });
    assert.equal(foreign.status, 403);
    const change = await c.req('POST', '/api/v1/me/password', { currentPassword: USER_PW, newPassword: 'another good passphrase 1' }, { csrf: null });
    assert.equal(change.status, 403);
    const form = await c.req('POST', '/api/v1/me/password', 'currentPassword=x&newPassword=y', {
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(form.status, 415);
    assert.equal((await c.req('GET', '/api/v1/me')).status, 200, 'still signed in: nothing was done');
    const refusals = auditRecords(p).filter((x) => x.type === 'web.refusal');
    const csrfRec = refusals.find((x) => x.correlationId === none.error?.correlation_id);
    assert.equal(csrfRec?.fields['reason'], 'csrf');
    assert.equal(csrfRec?.fields['route'], 'POST /api/v1/auth/signout');
    assert.equal(csrfRec?.fields['user'], 'member1');
    assert.equal(csrfRec?.fields['tenant'], T);
    assert.equal(refusals.find((x) => x.correlationId === form.error?.correlation_id)?.fields['status'], 415);
    const withToken = await c.req('POST', '/api/v1/auth/signout');
    assert.equal(withToken.status, 204);
  });

  it('sign-out ends the session server-side: the old cookie no longer works', async () => {
    const c = await signedIn(p, T, 'member1', USER_PW);
    const saved = c.cookie;
    const r = await c.req('POST', '/api/v1/auth/signout');
    assert.equal(r.status, 204);
    assert.match(r.headers.get('set-cookie') ?? '', /Max-Age=0/);
    c.cookie = saved;
    assert.equal((await c.req('GET', '/api/v1/me')).status, 401);
    assert.ok(auditRecords(p).some((x) => x.type === 'web.signout' && x.fields['reason'] === 'signout'));
  });

  it('idle and absolute timeouts end sessions', async () => {
    const idle = await signedIn(p, T, 'member1', USER_PW);
    p.clock.advance(29 * MIN);
    assert.equal((await idle.req('GET', '/api/v1/me')).status, 200, 'used within 30 minutes');
    p.clock.advance(29 * MIN);
    assert.equal((await idle.req('GET', '/api/v1/me')).status, 200, 'each use restarts the idle timer');
    p.clock.advance(30 * MIN);
    assert.equal((await idle.req('GET', '/api/v1/me')).status, 401, 'idle for 30 minutes');
    const busy = await signedIn(p, T, 'member1', USER_PW);
    for (let h = 0; h < 12 * 4 - 1; h++) {
      p.clock.advance(15 * MIN);
      assert.equal((await busy.req('GET', '/api/v1/me')).status, 200, `quarter ${h}`);
    }
    p.clock.advance(15 * MIN);
    assert.equal((await busy.req('GET', '/api/v1/me')).status, 401, 'absolute timeout (12 h) despite activity');
    const ends = auditRecords(p).filter((x) => x.type === 'web.signout').map((x) => x.fields['reason']);
    assert.ok(ends.includes('idle') && ends.includes('expired'), ends.join(','));
  });

  it('lists one’s own sessions and ends one; another user’s session id is not found', async () => {
    const a = await signedIn(p, T, 'auditor1', USER_PW);
    const b = await signedIn(p, T, 'auditor1', USER_PW);
    const list = await a.req('GET', '/api/v1/me/sessions');
    assert.equal(list.status, 200);
    const sessions = list.body['sessions'] as { id: string; current: boolean }[];
    assert.ok(sessions.length >= 2);
    assert.equal(sessions.filter((s) => s.current).length, 1);
    assert.ok(!list.text.includes('token'), 'no token in the list');
    const bId = ((await b.req('GET', '/api/v1/me')).body['sessionId']) as string;
    const other = await signedIn(p, T, 'member1', USER_PW);
    assert.equal((await other.req('DELETE', `/api/v1/me/sessions/${bId}`)).status, 404, 'not one of mine');
    assert.equal((await b.req('GET', '/api/v1/me')).status, 200);
    assert.equal((await a.req('DELETE', `/api/v1/me/sessions/${bId}`)).status, 204);
    assert.equal((await b.req('GET', '/api/v1/me')).status, 401);
  });

  it('self-service change needs the current password and the policy; it ends the other sessions', async () => {
    await p.identity.provisionUser(acme.id, { username: 'changer', password: USER_PW });
    const c = await signedIn(p, T, 'changer', USER_PW);
    const elsewhere = await signedIn(p, T, 'changer', USER_PW);
    const wrong = await c.req('POST', '/api/v1/me/password', { currentPassword: 'not the password', newPassword: 'brand new passphrase 77' });
    assert.equal(wrong.status, 401);
    const short = await c.req('POST', '/api/v1/me/password', { currentPassword: USER_PW, newPassword: 'Sh0rt!pw' });
    assert.equal(short.status, 400);
    assert.match(String(short.error?.message), /at least 12 characters/);
    const common = await c.req('POST', '/api/v1/me/password', { currentPassword: USER_PW, newPassword: 'Password123456!' });
    assert.equal(common.status, 400);
    assert.match(String(common.error?.message), /too common/);
    const long = 'x7'.repeat(64) + 'q'; // 129 characters
    const ok = await c.req('POST', '/api/v1/me/password', { currentPassword: USER_PW, newPassword: long });
    assert.equal(ok.status, 204, ok.text);
    assert.equal((await c.req('GET', '/api/v1/me')).status, 200, 'this session goes on');
    assert.equal((await elsewhere.req('GET', '/api/v1/me')).status, 401, 'other sessions end');
    assert.equal((await new Client(p.base).signIn(T, 'changer', USER_PW)).status, 401);
    assert.equal((await new Client(p.base).signIn(T, 'changer', long)).status, 200);
  });

  it('wrong current passwords on a change count like failed sign-ins: at the threshold the account locks and its sessions end', async () => {
    await p.identity.provisionUser(acme.id, { username: 'stolen', password: USER_PW });
    const thief = await signedIn(p, T, 'stolen', USER_PW);
    for (let i = 0; i < 4; i++) {
      assert.equal((await thief.req('POST', '/api/v1/me/password', { currentPassword: `guess ${i} xxxxxxx`, newPassword: 'thief passphrase 12345' })).status, 401);
    }
    assert.equal((await thief.req('GET', '/api/v1/me')).status, 200);
    assert.equal((await thief.req('POST', '/api/v1/me/password', { currentPassword: 'guess 5 xxxxxxx', newPassword: 'thief passphrase 12345' })).status, 401);
    assert.equal((await thief.req('GET', '/api/v1/me')).status, 401, 'the session ended with the lockout');
    assert.equal((await new Client(p.base).signIn(T, 'stolen', USER_PW)).status, 401, 'locked');
    assert.ok(auditRecords(p).some((r) => r.type === 'web.lockout' && r.fields['user'] === 'stolen'));
    p.clock.advance(15 * MIN);
    assert.equal((await new Client(p.base).signIn(T, 'stolen', USER_PW)).status, 200);
  });

  it('an administrator’s reset forces a change at next sign-in; nothing else is allowed until then', async () => {
    const u = await p.identity.provisionUser(acme.id, { username: 'forgetful', password: USER_PW });
    const old = await signedIn(p, T, 'forgetful', USER_PW);
    const admin = await signedIn(p, T, 'admin', ADMIN_PW);
    const r = await admin.req('POST', `/api/v1/users/${u.id}/reset-password`, { password: 'temporary passphrase 2026' });
    assert.equal(r.status, 200, r.text);
    assert.equal((r.body['user'] as Record<string, unknown>)['mustChangePassword'], true);
    assert.equal((await old.req('GET', '/api/v1/me')).status, 401, 'the reset ends their sessions');
    const c = new Client(p.base);
    const s = await c.signIn(T, 'forgetful', 'temporary passphrase 2026');
    assert.equal(s.status, 200);
    assert.equal(s.body['passwordChangeRequired'], true);
    // promote to auditor: still gated until the password changes
    assert.equal((await admin.req('PATCH', `/api/v1/users/${u.id}`, { roles: ['member', 'auditor'] })).status, 200);
    const gated = await c.req('GET', '/api/v1/users');
    assert.equal(gated.status, 403, 'an auditor now, but gated until the password changes');
    assert.match(String(gated.error?.message), /Change your password first/);
    assert.equal((await c.req('GET', '/api/v1/me')).status, 200, '/me is allowed while gated');
    assert.equal((await c.req('POST', '/api/v1/me/password', { currentPassword: 'temporary passphrase 2026', newPassword: 'my own secret phrase 31' })).status, 204);
    assert.equal((await c.req('GET', '/api/v1/users')).status, 200);
    assert.equal((await new Client(p.base).signIn(T, 'forgetful', 'my own secret phrase 31')).body['passwordChangeRequired'], false);
  });

  it('optional expiry (off by default) forces a reset once the password is older than the policy allows', async () => {
    await p.identity.provisionUser(acme.id, { username: 'ageing', roles: ['auditor'], password: USER_PW });
    p.clock.advance(400 * 86_400_000);
    let c = await signedIn(p, T, 'ageing', USER_PW);
    assert.equal((await c.req('GET', '/api/v1/me')).body['passwordChangeRequired'], false, 'off by default');
    const admin = await signedIn(p, T, 'admin', ADMIN_PW);
    assert.equal((await admin.req('PUT', '/api/v1/policy', { passwordExpiryDays: 90 })).status, 200);
    c = await signedIn(p, T, 'ageing', USER_PW);
    assert.equal((await c.req('GET', '/api/v1/me')).body['passwordChangeRequired'], true);
    assert.equal((await c.req('GET', '/api/v1/users')).status, 403, 'gated');
    assert.equal((await c.req('POST', '/api/v1/me/password', { currentPassword: USER_PW, newPassword: 'fresh autumn passphrase 5' })).status, 204);
    assert.equal((await c.req('GET', '/api/v1/users')).status, 200, 'allowed after the change');
    // the admin's own password is also older than 90 days now; switch expiry off again
    const admin2 = await signedIn(p, T, 'admin', ADMIN_PW);
    assert.equal((await admin2.req('PUT', '/api/v1/policy', { passwordExpiryDays: 0 })).status, 403, 'the admin is gated too');
    await p.db.db.updateTable('platform_policy').set({ policy: JSON.stringify({}) }).where('tenant_id', '=', acme.id).execute();
  });

  it('audit: every attempt recorded with its request’s correlation id; no password anywhere; the chain verifies', async () => {
    const marker = 'Marker-Passphrase-For-Audit-991';
    const c = new Client(p.base);
    const r = await c.signIn(T, 'member1', marker);
    assert.equal(r.status, 401);
    const recs = auditRecords(p);
    const mine = recs.filter((x) => x.correlationId === r.error?.correlation_id);
    assert.equal(mine.length, 1);
    assert.equal(mine[0]?.type, 'web.signin');
    assert.equal(mine[0]?.fields['clientAddress'], '127.0.0.1');
    const text = readFileSync(p.auditFile, 'utf8');
    for (const secret of [marker, USER_PW, ADMIN_PW, 'temporary passphrase 2026', '$argon2id$']) assert.ok(!text.includes(secret), `audit holds ${secret}`);
    const types = new Set(recs.map((x) => `${x.type}:${String(x.fields['action'] ?? x.fields['result'] ?? x.fields['reason'] ?? '')}`));
    for (const t of ['web.signin:success', 'web.signin:failure', 'web.signout:signout', 'web.lockout:', 'web.change:policy.update', 'web.change:user.reset', 'web.change:user.roles', 'web.change:user.self-change']) {
      assert.ok(types.has(t), `audit has ${t}: ${[...types].join(' ')}`);
    }
    const v = await verifyAuditLog(p.auditFile);
    assert.equal(v.ok, true, JSON.stringify(v.failure));
    assert.equal(v.records, recs.length);
  });
});
}
