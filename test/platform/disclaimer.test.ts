/**
 * The sign-in disclaimer, over real HTTP (port 0): a tenant's text in its policy, served
 * publicly (null for a tenant without one and for an unknown tenant alike), required as
 * `acceptDisclaimer: true` at password sign-in, checked before the password (so its
 * refusal tells nothing about the account), and its acceptance audited with the hash of
 * the text accepted.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ADMIN_PW, Client, seedTenant, signedIn, startPlatform, USER_PW, type Platform, type SeededTenant } from './helpers.js';

const TEXT = 'Authorised use only.\nActivity on this system is monitored and recorded.';

describe('platform sign-in disclaimer', () => {
  let p: Platform;
  let A: SeededTenant;

  before(async () => {
    p = await startPlatform();
    A = await seedTenant(p, 'disc-a');
    await seedTenant(p, 'disc-b');
    const admin = await signedIn(p, A.slug, 'admin', ADMIN_PW);
    const r = await admin.req('PUT', '/api/v1/policy', { disclaimer: TEXT });
    assert.equal(r.status, 200, r.text);
  });
  after(async () => {
    await p.close();
  });

  it('is served publicly; a tenant without one and an unknown tenant both answer null', async () => {
    const c = new Client(p.base);
    const a = await c.req('GET', `/api/v1/auth/disclaimer/${A.slug}`);
    assert.equal(a.status, 200);
    assert.equal(a.body['disclaimer'], TEXT);
    assert.equal((await c.req('GET', '/api/v1/auth/disclaimer/disc-b')).body['disclaimer'], null);
    assert.equal((await c.req('GET', '/api/v1/auth/disclaimer/no-such-tenant')).body['disclaimer'], null);
    assert.equal((await c.req('GET', '/api/v1/auth/disclaimer/NOT%20A%20SLUG')).body['disclaimer'], null);
  });

  it('sign-in requires acceptDisclaimer: true, before the password is looked at', async () => {
    const c = new Client(p.base);
    const without = await c.req('POST', '/api/v1/auth/signin', { tenant: A.slug, username: 'member1', password: USER_PW });
    assert.equal(without.status, 400);
    const wrongPw = await c.req('POST', '/api/v1/auth/signin', { tenant: A.slug, username: 'member1', password: 'wrong' });
    assert.equal(wrongPw.status, 400, 'the same answer whatever the password');
    assert.equal((await c.req('POST', '/api/v1/auth/signin', { tenant: A.slug, username: 'member1', password: USER_PW, acceptDisclaimer: false })).status, 400);
    assert.equal((await c.req('POST', '/api/v1/auth/signin', { tenant: A.slug, username: 'member1', password: USER_PW, acceptDisclaimer: 'yes' })).status, 400);
    const ok = await c.req('POST', '/api/v1/auth/signin', { tenant: A.slug, username: 'member1', password: USER_PW, acceptDisclaimer: true });
    assert.equal(ok.status, 200, ok.text);
    // a tenant without a disclaimer needs no acceptance
    assert.equal((await new Client(p.base).signIn('disc-b', 'member1', USER_PW)).status, 200);
  });

  it('the acceptance is audited with the hash of the text accepted', () => {
    const rec = readFileSync(p.auditFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; fields: Record<string, unknown> })
      .filter((x) => x.type === 'web.signin' && x.fields['tenant'] === A.slug && x.fields['result'] === 'success' && x.fields['user'] === 'member1');
    assert.equal(rec.length, 1);
    assert.equal(rec[0]!.fields['disclaimerAccepted'], createHash('sha256').update(TEXT).digest('hex').slice(0, 16));
  });

  it('the policy refuses a disclaimer with control characters or over 4000 characters', async () => {
    const admin = new Client(p.base);
    const r = await admin.req('POST', '/api/v1/auth/signin', { tenant: A.slug, username: 'admin', password: ADMIN_PW, acceptDisclaimer: true });
    assert.equal(r.status, 200);
    admin.csrf = r.body['csrfToken'] as string;
    assert.equal((await admin.req('PUT', '/api/v1/policy', { disclaimer: 'bell\u0007' })).status, 400);
    assert.equal((await admin.req('PUT', '/api/v1/policy', { disclaimer: 'x'.repeat(4001) })).status, 400);
    assert.equal((await admin.req('PUT', '/api/v1/policy', { disclaimer: '' })).status, 200, 'removing it');
    assert.equal((await new Client(p.base).signIn(A.slug, 'member1', USER_PW)).status, 200);
  });
});
