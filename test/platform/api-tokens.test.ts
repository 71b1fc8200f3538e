/**
 * API tokens for scripts, over real HTTP (port 0, a real SQLite file, the audit file, a
 * virtual clock): created once-shown and stored as SHA-256, scopes limited by the
 * owner's roles, `Authorization: Bearer` in place of the cookie without CSRF, scope
 * `read` only for GET, never for the session-only routes, expiry, revocation, audit.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Client} from './helpers.js';
import { Rng } from '../helpers/rng.js';
import { ADMIN_PW, seedTenant, signedIn, startPlatform, USER_PW, type Platform, type SeededTenant } from './helpers.js';

async function bearer(p: Platform, token: string, method: string, url: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(p.base + url, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await r.text();
  return { status: r.status, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

describe('platform API tokens', () => {
  let p: Platform;
  let A: SeededTenant;
  let member: Client;
  let admin: Client;
  let readToken = '';
  let readId = '';
  let adminToken = '';

  before(async () => {
    p = await startPlatform();
    A = await seedTenant(p, 'tokens-a');
    member = await signedIn(p, A.slug, 'member1', USER_PW);
    admin = await signedIn(p, A.slug, 'admin', ADMIN_PW);
  });
  after(async () => {
    await p.close();
  });

  it('creation: shown once, stored as SHA-256, scopes limited by the roles, audited without the token', async () => {
    const r = await member.req('POST', '/api/v1/me/tokens', { name: 'backup script', scopes: ['read'], expiresInDays: 7 });
    assert.equal(r.status, 201, r.text);
    const t = r.body['token'] as Record<string, unknown>;
    readToken = String(t['token']);
    readId = String(t['id']);
    assert.match(readToken, /^tach_[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(t['scopes'], ['read']);
    const row = await p.db.db.selectFrom('platform_api_token').selectAll().where('id', '=', readId).executeTakeFirstOrThrow();
    assert.equal(row.token_sha256, createHash('sha256').update(readToken).digest('hex'));
    assert.ok(!Object.values(row).includes(readToken));
    const listed = await member.req('GET', '/api/v1/me/tokens');
    assert.equal(listed.status, 200);
    assert.ok(!listed.text.includes(readToken), 'never shown again');
    assert.deepEqual((listed.body['tokens'] as { id: string }[]).map((x) => x.id), [readId]);
    assert.equal((await member.req('POST', '/api/v1/me/tokens', { scopes: ['admin'] })).status, 403, 'admin scope for a member');
    assert.equal((await member.req('POST', '/api/v1/me/tokens', { scopes: ['root'] })).status, 400);
    assert.equal((await member.req('POST', '/api/v1/me/tokens', { scopes: ['read'], expiresInDays: 0 })).status, 400);
    assert.equal((await member.req('POST', '/api/v1/me/tokens', { scopes: ['read'], expiresInDays: 366 })).status, 400);
    assert.equal((await member.req('POST', '/api/v1/me/tokens', { scopes: ['read'] }, { csrf: null })).status, 403, 'CSRF for the cookie session');
    const a = await admin.req('POST', '/api/v1/me/tokens', { name: 'provisioning', scopes: ['admin', 'read'] });
    assert.equal(a.status, 201, a.text);
    adminToken = String((a.body['token'] as Record<string, unknown>)['token']);
    const log = readFileSync(p.auditFile, 'utf8');
    assert.ok(!log.includes(readToken) && !log.includes(adminToken), 'a token in the audit log');
    const created = log.split('\n').filter((l) => l.includes('"token.create"'));
    assert.equal(created.length, 2);
    assert.ok(created[0]!.includes(readId));
  });

  it('Bearer in place of the cookie: no CSRF; read is GET only; admin follows the roles; session-only routes refuse tokens', async () => {
    const me = await bearer(p, readToken, 'GET', '/api/v1/me');
    assert.equal(me.status, 200);
    assert.equal((me.body['user'] as Record<string, unknown>)['username'], 'member1');
    assert.equal(me.body['csrfToken'], null);
    assert.equal((await bearer(p, readToken, 'GET', '/api/v1/users')).status, 403, 'the member role still applies');
    assert.equal((await bearer(p, readToken, 'DELETE', `/api/v1/me/tokens/${readId}`)).status, 403, 'read scope: GET only');
    assert.equal((await bearer(p, adminToken, 'GET', '/api/v1/users')).status, 200);
    const put = await bearer(p, adminToken, 'PUT', '/api/v1/policy', { minPasswordLength: 13 });
    assert.equal(put.status, 200, 'no CSRF token with a bearer');
    assert.equal((await bearer(p, adminToken, 'POST', '/api/v1/me/tokens', { scopes: ['read'] })).status, 403, 'a token cannot mint tokens');
    assert.equal((await bearer(p, adminToken, 'POST', '/api/v1/auth/signout')).status, 403);
    assert.equal((await bearer(p, 'tach_' + 'A'.repeat(43), 'GET', '/api/v1/me')).status, 401);
    assert.equal((await bearer(p, 'not-a-token', 'GET', '/api/v1/me')).status, 401);
    const last = await p.db.db.selectFrom('platform_api_token').select('last_used_at').where('id', '=', readId).executeTakeFirstOrThrow();
    assert.notEqual(last.last_used_at, null);
  });

  it('revocation: another user’s id is 404; one’s own ends the token', async () => {
    const other = await signedIn(p, A.slug, 'auditor1', USER_PW);
    assert.equal((await other.req('DELETE', `/api/v1/me/tokens/${readId}`)).status, 404);
    assert.equal((await bearer(p, readToken, 'GET', '/api/v1/me')).status, 200);
    assert.equal((await member.req('DELETE', `/api/v1/me/tokens/${readId}`)).status, 204);
    assert.equal((await bearer(p, readToken, 'GET', '/api/v1/me')).status, 401);
    assert.ok(readFileSync(p.auditFile, 'utf8').includes('"token.revoke"'));
  });

  it('a token stops working at its expiry', async () => {
    const fresh = await signedIn(p, A.slug, 'member1', USER_PW);
    const r = await fresh.req('POST', '/api/v1/me/tokens', { scopes: ['read'], expiresInDays: 1 });
    const token = String((r.body['token'] as Record<string, unknown>)['token']);
    assert.equal((await bearer(p, token, 'GET', '/api/v1/me')).status, 200);
    p.clock.advance(86_400_000);
    assert.equal((await bearer(p, token, 'GET', '/api/v1/me')).status, 401);
  });

  it('fuzz: seeded random Authorization headers and ACS form bodies are refused cleanly (401/400/413/415, never 500)', async () => {
    const rng = new Rng(0x5eed_7011);
    const alphabet = 'tach_ABCxyz019-_=+/. \t%&;\u00e9Bearer';
    const pick = (n: number) => Array.from({ length: n }, () => alphabet[rng.int(alphabet.length)]).join('');
    for (let i = 0; i < 150; i++) {
      const prefix = ['Bearer ', 'bearer ', 'Bearer', 'Basic ', 'Bearer tach_', ''][rng.int(6)]!;
      const value = prefix + pick(rng.int(90));
      const r = await fetch(`${p.base}/api/v1/me`, { headers: { authorization: value } });
      assert.ok([401].includes(r.status), `Authorization ${JSON.stringify(value)} → ${r.status}`);
      await r.arrayBuffer();
    }
    for (let i = 0; i < 100; i++) {
      const body = pick(rng.int(300)) + (rng.chance(0.5) ? `&SAMLResponse=${pick(rng.int(60))}&RelayState=${pick(10)}` : '');
      const type = ['application/x-www-form-urlencoded', 'application/json', 'text/plain', 'multipart/form-data; boundary=x'][rng.int(4)]!;
      const r = await fetch(`${p.base}/api/v1/auth/sso/saml/acs`, { method: 'POST', headers: { 'content-type': type }, body });
      assert.ok([400, 401, 415].includes(r.status), `ACS ${type} ${JSON.stringify(body.slice(0, 80))} → ${r.status}`);
      await r.arrayBuffer();
    }
  });
});
