/**
 * Single sign-on through the platform app, over real HTTP (port 0): one OIDC sign-in
 * against a real oidc-provider and one SAML sign-in through the signing test IdP, each
 * ending in a new session for the mapped user (created at the first sign-in: just-in-time
 * provisioning, linked by issuer and subject afterwards); `ssoJustInTime: false` refuses
 * an unknown identity; `ssoRequiredForAdmins` refuses an administrator's password sign-in;
 * the ACS takes the IdP's form post without a CSRF token but only with a RelayState it issued.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as client from 'openid-client';
import { MemoryAuditSink } from '../../src/audit/memory-sink.js';
import { MemorySsoConfigSource, MemorySsoStore, SsoServices, type OidcDiscover } from '../../src/platform/sso/index.js';
import { ADMIN_PW, Client, seedTenant, signedIn, startPlatform, USER_PW, type Platform, type SeededTenant } from './helpers.js';
import { browse, startOidcProvider, type TestOidcProvider } from './sso/oidc-idp.js';
import { fetchPostForm, startSamlIdp, type TestSamlIdp } from './sso/saml-idp.js';

/** The test adapter of the discovery seam: plain HTTP to 127.0.0.1 (test only); signatures still checked. */
const testDiscover: OidcDiscover = (c) =>
  client.discovery(new URL(c.issuer), c.clientId, undefined, client.ClientSecretBasic(c.clientSecret), {
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
  });

const SP = 'https://tachyon.example/sso/saml/test';

/** Reads the session cookie a 303 set, as a `cookie` header value. */
function cookieOf(res: Response): string {
  const m = /^(__Host-tachyon-session=[^;]+)/.exec(res.headers.get('set-cookie') ?? '');
  assert.ok(m, `no session cookie (${res.status})`);
  return m[1]!;
}

async function me(p: Platform, cookie: string): Promise<Record<string, unknown>> {
  const c = new Client(p.base);
  c.cookie = cookie;
  const r = await c.req('GET', '/api/v1/me');
  assert.equal(r.status, 200, r.text);
  return r.body;
}

describe('platform sign-in through SSO', () => {
  let p: Platform;
  let A: SeededTenant;
  let J: SeededTenant;
  let oidc: TestOidcProvider;
  let saml: TestSamlIdp;
  const configs = new MemorySsoConfigSource();

  before(async () => {
    const sso = new SsoServices({ configs, store: new MemorySsoStore(), audit: new MemoryAuditSink(), oidcDiscover: testDiscover });
    p = await startPlatform({ sso });
    A = await seedTenant(p, 'sso-acme');
    J = await seedTenant(p, 'sso-nojit');
    const redirectUri = `${p.base}/api/v1/auth/sso/oidc/callback`;
    const oidcClient = { clientId: 'tachyon-platform', clientSecret: 'secret-of-the-platform-0123456789', redirectUri };
    oidc = await startOidcProvider(
      {
        alice: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['tachyon-admins'] },
        bob: { email: 'bob@example.com', email_verified: true, groups: ['staff'] },
      },
      [oidcClient],
    );
    saml = await startSamlIdp(SP);
    const roleMapping = { 'tachyon-admins': 'tenant_admin' as const, 'tachyon-auditors': 'auditor' as const };
    const oidcConfig = { issuer: oidc.issuer, ...oidcClient, scopes: ['openid', 'email', 'profile', 'groups'], roleMapping };
    const samlConfig = {
      idpEntityId: saml.entityId,
      ssoUrl: saml.ssoUrl,
      idpCertificates: [saml.identity.certPem],
      spEntityId: SP,
      acsUrl: `${p.base}/api/v1/auth/sso/saml/acs`,
      roleMapping,
    };
    configs.set({ tenantId: A.id, oidc: oidcConfig, saml: samlConfig, ssoRequiredForAdmins: true });
    configs.set({ tenantId: J.id, oidc: oidcConfig });
    const admin = await signedIn(p, J.slug, 'admin', ADMIN_PW);
    assert.equal((await admin.req('PUT', '/api/v1/policy', { ssoJustInTime: false })).status, 200);
  });
  after(async () => {
    await oidc.close();
    await saml.close();
    await p.close();
  });

  /** start → provider (signs in `account`) → callback through the app. */
  async function oidcSignIn(slug: string, account: string): Promise<Response> {
    oidc.nextAccount = account;
    const start = await fetch(`${p.base}/api/v1/auth/sso/${slug}/oidc/start`, { redirect: 'manual' });
    assert.equal(start.status, 303);
    const callback = await browse(start.headers.get('location')!, `${p.base}/api/v1/auth/sso/oidc/callback?`);
    return fetch(callback, { redirect: 'manual' });
  }

  it('OIDC end to end: a new session for the user created at the first sign-in with the mapped role, the same user the next time', async () => {
    const res = await oidcSignIn(A.slug, 'alice');
    assert.equal(res.status, 303, await res.text());
    assert.equal(res.headers.get('location'), '/');
    const first = await me(p, cookieOf(res));
    const user = first['user'] as Record<string, unknown>;
    assert.equal(user['username'], 'alice@example.com');
    assert.deepEqual(user['roles'], ['tenant_admin']);
    assert.equal(first['secondFactor'], null, 'the identity provider is trusted for the second factor');
    const again = await oidcSignIn(A.slug, 'alice');
    assert.equal(again.status, 303);
    const second = await me(p, cookieOf(again));
    assert.equal((second['user'] as Record<string, unknown>)['id'], user['id'], 'linked by issuer and subject');
    assert.notEqual(second['sessionId'], first['sessionId'], 'a new session');
    // the provisioned user has no local password
    assert.equal((await new Client(p.base).signIn(A.slug, 'alice@example.com', USER_PW)).status, 401);
  });

  it('a replayed OIDC callback is refused (401 SSO_FAILED)', async () => {
    oidc.nextAccount = 'bob';
    const start = await fetch(`${p.base}/api/v1/auth/sso/${A.slug}/oidc/start`, { redirect: 'manual' });
    const callback = await browse(start.headers.get('location')!, `${p.base}/api/v1/auth/sso/oidc/callback?`);
    assert.equal((await fetch(callback, { redirect: 'manual' })).status, 303);
    const replay = await fetch(callback, { redirect: 'manual' });
    assert.equal(replay.status, 401);
    assert.equal(((await replay.json()) as { error: { code: string } }).error.code, 'SSO_FAILED');
  });

  it('a tenant without just-in-time provisioning refuses an unknown identity', async () => {
    const res = await oidcSignIn(J.slug, 'bob');
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('set-cookie'), null);
  });

  it('SAML through the app: the IdP form post (no CSRF token) opens a session for the mapped user', async () => {
    saml.next = { nameId: 'carol@example.com', attributes: { email: ['carol@example.com'], groups: ['tachyon-auditors'] } };
    const start = await fetch(`${p.base}/api/v1/auth/sso/${A.slug}/saml/start`, { redirect: 'manual' });
    assert.equal(start.status, 303);
    const form = await fetchPostForm(start.headers.get('location')!);
    assert.equal(form.action, `${p.base}/api/v1/auth/sso/saml/acs`);
    const post = (relay: string) =>
      fetch(form.action, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ SAMLResponse: form.SAMLResponse, RelayState: relay }).toString(),
      });
    assert.equal((await post('not-the-relay-state')).status, 401, 'a RelayState this server did not issue');
    const res = await post(form.RelayState);
    assert.equal(res.status, 303, await res.text());
    const m = await me(p, cookieOf(res));
    assert.equal((m['user'] as Record<string, unknown>)['username'], 'carol@example.com');
    assert.deepEqual((m['user'] as Record<string, unknown>)['roles'], ['auditor']);
    assert.equal((await post(form.RelayState)).status, 401, 'the same response again');
  });

  it('only the ACS takes a form post', async () => {
    const r = await fetch(`${p.base}/api/v1/auth/signin`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `tenant=${A.slug}&username=member1&password=x`,
    });
    assert.equal(r.status, 415);
  });

  it('ssoRequiredForAdmins: an administrator’s password sign-in is refused, a member’s is not', async () => {
    const r = await new Client(p.base).signIn(A.slug, 'admin', ADMIN_PW);
    assert.equal(r.status, 401);
    assert.equal(r.error?.code, 'AUTH_FAILED');
    const last = readFileSync(p.auditFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; fields: Record<string, unknown> })
      .filter((x) => x.type === 'web.signin' && x.fields['user'] === 'admin').at(-1);
    assert.equal(last?.fields['reason'], 'sso-required');
    assert.equal((await new Client(p.base).signIn(A.slug, 'member1', USER_PW)).status, 200);
    assert.equal((await new Client(p.base).signIn(J.slug, 'admin', ADMIN_PW)).status, 200, 'another tenant does not require it');
  });
});
