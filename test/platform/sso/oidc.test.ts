/**
 * OIDC single sign-on against a real provider (oidc-provider v8 on 127.0.0.1): the whole
 * browserless flow (authorization request, interaction, consent, callback, code
 * redemption, ID token and userinfo), role mapping, and every refusal the issue names.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import { systemClock, type Clock } from '../../../src/core/clock.js';
import { MemoryAuditSink } from '../../../src/audit/memory-sink.js';
import { MemorySsoConfigSource, type TenantSsoConfigInput } from '../../../src/platform/sso/config.js';
import { OidcService, type OidcDiscover } from '../../../src/platform/sso/oidc.js';
import { MemorySsoStore } from '../../../src/platform/sso/store.js';
import { rejectsCode } from '../../helpers/errors.js';
import { generateKeyPairSync } from 'node:crypto';
import { browse, signJwt, startOidcProvider, type TestOidcProvider } from './oidc-idp.js';

const A = { clientId: 'tachyon-a', clientSecret: 'secret-of-client-a-0123456789', redirectUri: 'http://127.0.0.1:1/sso/oidc/callback' };
const B = { clientId: 'tachyon-b', clientSecret: 'secret-of-client-b-0123456789', redirectUri: 'http://127.0.0.1:1/sso/oidc/callback-b' };

/** Rewrites the ID token in token endpoint responses when set (re-signed with the provider's own key). */
let forgeIdToken: ((claims: Record<string, unknown>) => Record<string, unknown>) | undefined;
/** When true, the forged ID token is signed by a key the provider does not publish (same kid). */
let forgeWithOtherKey = false;
const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

function decodePayload(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** The test adapter of the discovery seam: plain HTTP to 127.0.0.1 allowed (test only), signatures still checked. */
function testDiscover(idp: () => TestOidcProvider): OidcDiscover {
  return async (c) => {
    const cfg = await client.discovery(new URL(c.issuer), c.clientId, undefined, client.ClientSecretBasic(c.clientSecret), {
      execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    });
    cfg[client.customFetch] = async (url, options) => {
      const res = await fetch(url, options as RequestInit);
      if (forgeIdToken === undefined || !url.endsWith('/token') || !res.ok) return res;
      const body = (await res.json()) as Record<string, unknown>;
      const claims = forgeIdToken(decodePayload(String(body.id_token)));
      body.id_token = forgeWithOtherKey ? signJwt(otherKey, 'test-key-1', claims) : idp().signJwt(claims);
      return new Response(JSON.stringify(body), { status: res.status, headers: { 'content-type': 'application/json' } });
    };
    return cfg;
  };
}

describe('platform/sso OIDC against a real oidc-provider', () => {
  let idp: TestOidcProvider;
  let configs: MemorySsoConfigSource;
  let audit: MemoryAuditSink;
  let offset = 0;
  const clock: Clock = { now: () => systemClock.now() + offset, setTimer: systemClock.setTimer };
  let svc: OidcService;

  const tenant = (id: string, c: typeof A, extra: Partial<NonNullable<TenantSsoConfigInput['oidc']>> = {}): TenantSsoConfigInput => ({
    tenantId: id,
    oidc: {
      issuer: idp.issuer,
      clientId: c.clientId,
      clientSecret: c.clientSecret,
      redirectUri: c.redirectUri,
      scopes: ['openid', 'email', 'profile', 'groups'],
      roleMapping: { 'tachyon-admins': 'tenant_admin', 'tachyon-auditors': 'auditor' },
      ...extra,
    },
  });

  /** begin → provider (auto sign-in as `account`) → the callback URL. */
  async function signInAt(tenantId: string, account: string): Promise<{ callback: string; state: string }> {
    idp.nextAccount = account;
    const b = await svc.begin(tenantId, { clientAddress: '198.51.100.7' });
    const cfg = await configs.get(tenantId);
    const callback = await browse(b.redirectUrl, cfg!.oidc!.redirectUri + '?');
    return { callback, state: b.state };
  }

  before(async () => {
    idp = await startOidcProvider(
      {
        alice: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['tachyon-admins', 'staff'] },
        bob: { email: 'bob@example.com', email_verified: true, groups: ['staff'] },
        carol: { email: 'carol@example.com', email_verified: false, groups: ['tachyon-auditors'] },
        dave: { email: 'dave@elsewhere.org', email_verified: true, groups: ['tachyon-auditors'] },
      },
      [A, B],
    );
    configs = new MemorySsoConfigSource();
    configs.set(tenant('acme', A));
    configs.set(tenant('beta', B));
    configs.set(tenant('strict', { ...A, redirectUri: A.redirectUri }, { unmapped: 'refuse', allowedEmailDomains: ['Example.com'] }));
    audit = new MemoryAuditSink();
    svc = new OidcService({ configs, store: new MemorySsoStore({ clock }), audit, discover: testDiscover(() => idp), clock });
  });
  after(async () => {
    await idp.close();
  });

  it('signs in through the provider and maps groups to roles (admin, member by default)', async () => {
    const { callback } = await signInAt('acme', 'alice');
    const id = await svc.complete(callback, { clientAddress: '198.51.100.7' });
    assert.deepEqual(
      { ...id },
      { tenantId: 'acme', protocol: 'oidc', issuer: idp.issuer, subject: 'alice', email: 'alice@example.com', emailVerified: true, name: 'Alice', roles: ['tenant_admin'] },
    );
    const bob = await svc.complete((await signInAt('acme', 'bob')).callback);
    assert.deepEqual(bob.roles, ['member']);
    const ok = audit.ofType('sso.success');
    assert.equal(ok.length, 2);
    assert.deepEqual(ok[0]!.fields, { tenantId: 'acme', protocol: 'oidc', subject: 'alice', email: 'alice@example.com', roles: ['tenant_admin'], clientAddress: '198.51.100.7' });
    assert.ok(audit.ofType('sso.start').length >= 2);
    const everything = JSON.stringify(audit.records);
    assert.ok(!everything.includes(A.clientSecret), 'client secret in the audit log');
    assert.ok(!everything.includes(new URL(callback).searchParams.get('code')!), 'authorization code in the audit log');
  });

  it('refuses a tampered state, and the untouched transaction still works once', async () => {
    const { callback } = await signInAt('acme', 'bob');
    const u = new URL(callback);
    const s = u.searchParams.get('state')!;
    u.searchParams.set('state', (s[0] === 'A' ? 'B' : 'A') + s.slice(1));
    const err = await rejectsCode(svc.complete(u), 'SSO_FAILED', 'tampered state');
    assert.equal(err.details?.reason, 'state-unknown');
    assert.equal(err.publicMessage, 'Single sign-on failed.');
    u.searchParams.delete('state');
    assert.equal((await rejectsCode(svc.complete(u), 'SSO_FAILED')).details?.reason, 'state-missing');
    assert.equal((await svc.complete(callback)).subject, 'bob');
    const last = audit.ofType('sso.failure').at(-1)!;
    assert.equal(last.fields.reason, 'state-missing');
  });

  it('refuses a replayed callback', async () => {
    const { callback } = await signInAt('acme', 'bob');
    await svc.complete(callback);
    const err = await rejectsCode(svc.complete(callback), 'SSO_FAILED', 'replay');
    assert.equal(err.details?.reason, 'state-unknown');
    assert.equal(audit.ofType('sso.failure').at(-1)!.fields.reason, 'state-unknown');
  });

  it('refuses an expired transaction', async () => {
    const { callback } = await signInAt('acme', 'bob');
    offset += 11 * 60_000;
    try {
      assert.equal((await rejectsCode(svc.complete(callback), 'SSO_FAILED')).details?.reason, 'state-unknown');
    } finally {
      offset -= 11 * 60_000;
    }
  });

  it("refuses a code replayed into another transaction (the other transaction's PKCE verifier and nonce)", async () => {
    const first = await signInAt('acme', 'alice');
    const other = await svc.begin('acme');
    const u = new URL(first.callback);
    u.searchParams.set('state', other.state);
    const err = await rejectsCode(svc.complete(u), 'SSO_FAILED');
    assert.equal(err.details?.reason, 'token-refused');
  });

  it('refuses an ID token whose nonce does not match the transaction', async () => {
    const { callback } = await signInAt('acme', 'alice');
    forgeIdToken = (c) => ({ ...c, nonce: 'a-nonce-from-another-sign-in' });
    try {
      assert.equal((await rejectsCode(svc.complete(callback), 'SSO_FAILED')).details?.reason, 'nonce-mismatch');
    } finally {
      forgeIdToken = undefined;
    }
  });

  it('refuses an ID token for another audience, and a code of another client', async () => {
    const { callback } = await signInAt('acme', 'alice');
    forgeIdToken = (c) => ({ ...c, aud: 'some-other-client' });
    try {
      assert.equal((await rejectsCode(svc.complete(callback), 'SSO_FAILED')).details?.reason, 'audience-mismatch');
    } finally {
      forgeIdToken = undefined;
    }
    // a code issued to client B (tenant beta), delivered to a transaction of client A (tenant acme)
    const forB = await signInAt('beta', 'alice');
    const txA = await svc.begin('acme');
    const u = new URL(A.redirectUri);
    u.search = new URL(forB.callback).search;
    u.searchParams.set('state', txA.state);
    assert.equal((await rejectsCode(svc.complete(u), 'SSO_FAILED')).details?.reason, 'token-refused');
  });

  it('refuses an ID token signed by another key, expired, or from another issuer', async () => {
    {
      const { callback } = await signInAt('acme', 'alice');
      forgeIdToken = (c) => c;
      forgeWithOtherKey = true;
      try {
        assert.equal((await rejectsCode(svc.complete(callback), 'SSO_FAILED')).details?.reason, 'signature-invalid');
      } finally {
        forgeIdToken = undefined;
        forgeWithOtherKey = false;
      }
    }
    for (const [forge, reason] of [
      [(c: Record<string, unknown>) => ({ ...c, exp: Math.floor(Date.now() / 1000) - 3600 }), 'token-expired'],
      [(c: Record<string, unknown>) => ({ ...c, iss: 'https://evil.example' }), 'issuer-mismatch'],
    ] as const) {
      const { callback } = await signInAt('acme', 'alice');
      forgeIdToken = forge;
      try {
        assert.equal((await rejectsCode(svc.complete(callback), 'SSO_FAILED')).details?.reason, reason);
      } finally {
        forgeIdToken = undefined;
      }
    }
  });

  it('refuses unverified e-mail, a foreign e-mail domain and unmapped roles when so configured', async () => {
    assert.equal((await rejectsCode(svc.complete((await signInAt('acme', 'carol')).callback), 'SSO_FAILED')).details?.reason, 'email-unverified');
    assert.equal((await rejectsCode(svc.complete((await signInAt('strict', 'dave')).callback), 'SSO_FAILED')).details?.reason, 'email-domain');
    assert.equal((await rejectsCode(svc.complete((await signInAt('strict', 'bob')).callback), 'SSO_FAILED')).details?.reason, 'role-unmapped');
    assert.deepEqual((await svc.complete((await signInAt('strict', 'alice')).callback)).roles, ['tenant_admin']);
  });

  it('refuses a callback to another path and a tenant without OIDC', async () => {
    const { callback } = await signInAt('acme', 'bob');
    const u = new URL(callback);
    u.pathname = '/elsewhere';
    assert.equal((await rejectsCode(svc.complete(u), 'SSO_FAILED')).details?.reason, 'redirect-mismatch');
    assert.equal((await rejectsCode(svc.begin('nobody'), 'SSO_FAILED')).details?.reason, 'not-configured');
  });
});
