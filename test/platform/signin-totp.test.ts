/**
 * TOTP in the platform's sign-in, over real HTTP (port 0, a real SQLite file, the
 * hash-chained audit file, a virtual clock), with codes computed by an independent
 * implementation (otpauth): a local administrator without a factor gets a session that
 * may only enrol; enrolment returns the recovery codes once and then a full session (a
 * new token); an enrolled user's password yields a pending session that may only send a
 * code or a recovery code; wrong codes are 401 and a locked factor 429, all audited; the
 * tenant's `requireTotp` applies to members too.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ADMIN_PW, Client, seedTenant, signedIn, startPlatform, USER_PW, type Platform, type SeededTenant } from './helpers.js';
import { codeAt } from '../helpers/totp.js';

function auditRecords(p: Platform): { type: string; fields: Record<string, unknown> }[] {
  return readFileSync(p.auditFile, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { type: string; fields: Record<string, unknown> });
}

describe('platform sign-in with TOTP', () => {
  let p: Platform;
  let A: SeededTenant;
  let adminSecret = '';
  let recovery: string[] = [];

  before(async () => {
    p = await startPlatform({ mfa: true });
    A = await seedTenant(p, 'totp-a');
  });
  after(async () => {
    await p.close();
  });

  it('a local administrator without TOTP gets a session that may only enrol; confirming gives the recovery codes once and a new full session', async () => {
    const c = new Client(p.base);
    const r = await c.signIn(A.slug, 'admin', ADMIN_PW);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body['secondFactor'], 'enrol');
    const pendingCookie = c.cookie;
    assert.match(r.headers.get('set-cookie') ?? '', /Max-Age=300;/, 'a pending session is short-lived');
    // nothing but enrolment (and sign-out)
    assert.equal((await c.req('GET', '/api/v1/users')).status, 403);
    const me = await c.req('GET', '/api/v1/me');
    assert.equal(me.status, 200, 'a page may ask what is still due');
    assert.equal(me.body['secondFactor'], 'enrol');
    assert.equal((await c.req('POST', '/api/v1/auth/totp', { code: '123456' })).status, 403);
    const e = await c.req('POST', '/api/v1/me/totp/enrol');
    assert.equal(e.status, 200, e.text);
    assert.match(String(e.body['uri']), /^otpauth:\/\/totp\//);
    adminSecret = String(e.body['secret']);
    const wrong = await c.req('POST', '/api/v1/me/totp/confirm', { code: codeAt(adminSecret, p.clock.now() + 10 * 60_000) });
    assert.equal(wrong.status, 401, wrong.text);
    assert.equal(wrong.error?.code, 'MFA_INVALID');
    const ok = await c.req('POST', '/api/v1/me/totp/confirm', { code: codeAt(adminSecret, p.clock.now()) });
    assert.equal(ok.status, 200, ok.text);
    recovery = ok.body['recoveryCodes'] as string[];
    assert.equal(recovery.length, 10);
    assert.equal(ok.body['secondFactor'], null);
    assert.notEqual(c.cookie, pendingCookie, 'a new session token after enrolment');
    c.csrf = ok.body['csrfToken'] as string;
    assert.equal((await c.req('GET', '/api/v1/users')).status, 200);
    // the pending session is gone
    const old = new Client(p.base);
    old.cookie = pendingCookie;
    assert.equal((await old.req('GET', '/api/v1/me')).status, 401);
  });

  it('an enrolled user: the password yields a pending session; a wrong code is 401, the right one a new full session; all audited', async () => {
    p.clock.advance(31_000);
    const c = new Client(p.base);
    const r = await c.signIn(A.slug, 'admin', ADMIN_PW);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body['secondFactor'], 'totp');
    const pendingCookie = c.cookie;
    assert.equal((await c.req('GET', '/api/v1/users')).status, 403, 'no access before the second step');
    assert.equal((await c.req('POST', '/api/v1/me/totp/enrol')).status, 403, 'a pending session cannot re-enrol');
    const bad = await c.req('POST', '/api/v1/auth/totp', { code: '000000' === codeAt(adminSecret, p.clock.now()) ? '111111' : '000000' });
    assert.equal(bad.status, 401, bad.text);
    assert.equal(bad.error?.code, 'MFA_INVALID');
    assert.equal((await c.req('POST', '/api/v1/auth/totp', { code: '123456' }, { csrf: null })).status, 403, 'CSRF applies to the second step');
    const ok = await c.req('POST', '/api/v1/auth/totp', { code: codeAt(adminSecret, p.clock.now()) });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body['secondFactor'], null);
    assert.notEqual(c.cookie, pendingCookie);
    c.csrf = ok.body['csrfToken'] as string;
    assert.equal((await c.req('GET', '/api/v1/users')).status, 200);
    const signins = auditRecords(p).filter((x) => x.type === 'web.signin' && x.fields['user'] === 'admin');
    assert.deepEqual(
      signins.slice(-3).map((x) => [x.fields['result'], x.fields['method']]),
      [
        ['pending', 'password'],
        ['failure', 'password+totp'],
        ['success', 'password+totp'],
      ],
    );
  });

  it('a recovery code instead of a code works once and reports how many are left', async () => {
    const c = await signedIn(p, A.slug, 'admin', ADMIN_PW);
    const ok = await c.req('POST', '/api/v1/auth/totp', { recoveryCode: recovery[0] });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body['recoveryCodesLeft'], 9);
    const again = await signedIn(p, A.slug, 'admin', ADMIN_PW);
    const reused = await again.req('POST', '/api/v1/auth/totp', { recoveryCode: recovery[0] });
    assert.equal(reused.status, 401, reused.text);
    const both = await again.req('POST', '/api/v1/auth/totp', { code: '123456', recoveryCode: recovery[1] });
    assert.equal(both.status, 400);
  });

  it('repeated wrong codes lock the factor: 429 with the code MFA_LOCKED, audited as mfa-locked', async () => {
    const c = await signedIn(p, A.slug, 'admin', ADMIN_PW);
    const now = codeAt(adminSecret, p.clock.now());
    let last = 0;
    for (let i = 0; i < 12 && last !== 429; i++) {
      const wrong = String((Number(now) + 1 + i) % 1_000_000).padStart(6, '0');
      last = (await c.req('POST', '/api/v1/auth/totp', { code: wrong })).status;
    }
    assert.equal(last, 429);
    const r = await c.req('POST', '/api/v1/auth/totp', { code: now });
    assert.equal(r.status, 429, 'locked even for the right code');
    assert.equal(r.error?.code, 'MFA_LOCKED');
    const rec = auditRecords(p).filter((x) => x.type === 'web.signin' && x.fields['reason'] === 'mfa-locked');
    assert.ok(rec.length >= 1);
  });

  it('members sign in with the password alone, until the tenant sets requireTotp', async () => {
    const m = await signedIn(p, A.slug, 'member1', USER_PW);
    assert.equal((await m.req('GET', '/api/v1/me')).status, 200);
    // a new administrator of tenant B (the locked one above stays locked): enrols, then sets the policy
    const B = await seedTenant(p, 'totp-b');
    const a = await signedIn(p, B.slug, 'admin', ADMIN_PW);
    const secret = String((await a.req('POST', '/api/v1/me/totp/enrol')).body['secret']);
    const done = await a.req('POST', '/api/v1/me/totp/confirm', { code: codeAt(secret, p.clock.now()) });
    assert.equal(done.status, 200, done.text);
    a.csrf = done.body['csrfToken'] as string;
    const set = await a.req('PUT', '/api/v1/policy', { requireTotp: true });
    assert.equal(set.status, 200, set.text);
    const c = new Client(p.base);
    const r = await c.signIn(B.slug, 'member1', USER_PW);
    assert.equal(r.status, 200);
    assert.equal(r.body['secondFactor'], 'enrol');
    assert.equal((await c.req('GET', '/api/v1/me/sessions')).status, 403);
  });

  it('a pending session ends after five minutes', async () => {
    const c = await signedIn(p, 'totp-b', 'admin', ADMIN_PW);
    p.clock.advance(301_000);
    const r = await c.req('POST', '/api/v1/auth/totp', { code: '123456' });
    assert.equal(r.status, 401);
    assert.equal(r.error?.code, 'AUTH_FAILED');
  });
});

describe('platform sign-in without a TOTP service', () => {
  it('administrators sign in with the password alone, enrolment answers 409 and the policy refuses requireTotp', async () => {
    const p = await startPlatform();
    try {
      const A = await seedTenant(p, 'no-totp');
      const a = await signedIn(p, A.slug, 'admin', ADMIN_PW);
      assert.equal((await a.req('GET', '/api/v1/users')).status, 200);
      assert.equal((await a.req('POST', '/api/v1/me/totp/enrol')).status, 409);
      assert.equal((await a.req('PUT', '/api/v1/policy', { requireTotp: true })).status, 409);
      assert.equal((await a.req('GET', '/api/v1/policy')).body['policy'] !== undefined, true);
    } finally {
      await p.close();
    }
  });
});
