/**
 * Single sign-on configured per tenant in the served platform: the platform server of
 * `tachyon start` (startPlatformServer, over real HTTPS on port 0 with a generated CA, a
 * real SQLite file, the DatabaseAuditSink) and a real oidc-provider on 127.0.0.1. A tenant
 * administrator stores the configuration with PUT /api/v1/sso; auditors read it, members
 * may not; the OIDC client secret is sealed in the row and never appears in an answer or
 * an audit row; a person then signs in through the provider with the stored
 * configuration, also after the server restarts on the same file, and through a SAML
 * IdP once a SAML section is added; `ssoRequiredForAdmins`
 * refuses the administrators' password sign-in until the configuration is removed.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { Agent as HttpsAgent } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import * as client from 'openid-client';
import { Secret, TOTP } from 'otpauth';
import { openDatabase, type Database } from '../../src/db/database.js';
import { clientAgent } from '../../src/node-api/pki.js';
import { AesGcmSecretBox } from '../../src/platform/mfa/index.js';
import { argon2idHasher } from '../../src/platform/passwords.js';
import { startPlatformServer, type PlatformServer } from '../../src/platform/server.js';
import type { OidcDiscover } from '../../src/platform/sso/index.js';
import { httpsCall, makePki, WebClient, type Response } from '../node-api/helpers.js';
import { ADMIN_PW, TEST_ARGON2, USER_PW } from './helpers.js';
import { browse, startOidcProvider, type TestOidcProvider } from './sso/oidc-idp.js';
import { fetchPostForm, startSamlIdp, type TestSamlIdp } from './sso/saml-idp.js';

/** The test adapter of the discovery seam: plain HTTP to the provider on 127.0.0.1; signatures still checked. */
const testDiscover: OidcDiscover = (c) =>
  client.discovery(new URL(c.issuer), c.clientId, undefined, client.ClientSecretBasic(c.clientSecret), {
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
  });

const SECRET = 'the-oidc-client-secret-7f3a9c41d2e8';
const SP = 'https://tachyon.example/sso/saml/served';

describe('SSO configured per tenant in the served platform (HTTPS, SQLite file, real oidc-provider)', () => {
  let work: string;
  let dbFile: string;
  let tls: { key: string; cert: string };
  let agent: HttpsAgent;
  let database: Database;
  let server: PlatformServer;
  let oidc: TestOidcProvider;
  let saml: TestSamlIdp;
  let port = 0;
  const box = AesGcmSecretBox.random();
  let admin: WebClient;
  let auditor: WebClient;
  let member: WebClient;
  let oidcConfig: Record<string, unknown>;
  let tenantId: string;

  async function start(mfaBox = box): Promise<void> {
    database = await openDatabase({ url: `sqlite://${dbFile}` });
    server = await startPlatformServer({ database, tls, mfaBox, port, hasher: argon2idHasher(TEST_ARGON2), oidcDiscover: testDiscover });
    port = server.port;
  }

  async function stop(): Promise<void> {
    await server.close();
    await database.close();
  }

  async function signIn(username: string, password: string): Promise<WebClient> {
    const c = new WebClient(agent, () => port);
    const r = await c.req('POST', '/api/v1/auth/signin', { tenant: 'acme', username, password });
    assert.equal(r.status, 200, r.text);
    return c;
  }

  /** start → provider (signs in `account`) → the callback of the served platform; the answer of the callback. */
  async function oidcSignIn(account: string): Promise<Response> {
    oidc.nextAccount = account;
    const startRes = await httpsCall(agent, port, 'GET', '/api/v1/auth/sso/acme/oidc/start');
    assert.equal(startRes.status, 303, startRes.text);
    const callback = await browse(String(startRes.headers['location']), `${server.url}/api/v1/auth/sso/oidc/callback?`);
    const u = new URL(callback);
    return httpsCall(agent, port, 'GET', `${u.pathname}${u.search}`);
  }

  async function auditLines(): Promise<{ type: string; line: string }[]> {
    return database.db.selectFrom('platform_audit').select(['type', 'line']).orderBy('seq').execute();
  }

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-sso-config-'));
    dbFile = path.join(work, 'tachyon.db');
    const pki = await makePki(work);
    tls = { key: readFileSync(pki.keyFile, 'utf8'), cert: readFileSync(pki.certFile, 'utf8') };
    agent = clientAgent({ caFile: pki.caFile, keepAlive: false });
    await start();
    const t = await server.identity.createTenant('acme', 'Acme');
    tenantId = t.id;
    await server.identity.provisionUser(t.id, { username: 'admin', roles: ['tenant_admin'], password: ADMIN_PW });
    await server.identity.provisionUser(t.id, { username: 'auditor1', roles: ['auditor'], password: USER_PW });
    await server.identity.provisionUser(t.id, { username: 'member1', roles: ['member'], password: USER_PW });
    const redirectUri = `${server.url}/api/v1/auth/sso/oidc/callback`;
    oidc = await startOidcProvider(
      {
        alice: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['tachyon-admins'] },
        bob: { email: 'bob@example.com', email_verified: true, groups: ['staff'] },
      },
      [{ clientId: 'tachyon-platform', clientSecret: SECRET, redirectUri }],
    );
    saml = await startSamlIdp(SP);
    oidcConfig = {
      issuer: oidc.issuer,
      clientId: 'tachyon-platform',
      clientSecret: SECRET,
      redirectUri,
      scopes: ['openid', 'email', 'profile', 'groups'],
      roleMapping: { 'tachyon-admins': 'tenant_admin' },
    };
    // a local administrator of the served platform enrols TOTP at the first sign-in
    admin = await signIn('admin', ADMIN_PW);
    const e = await admin.req('POST', '/api/v1/me/totp/enrol');
    assert.equal(e.status, 200, e.text);
    const code = new TOTP({ secret: Secret.fromBase32(String(e.body['secret'])), algorithm: 'SHA1', digits: 6, period: 30 }).generate();
    const ok = await admin.req('POST', '/api/v1/me/totp/confirm', { code });
    assert.equal(ok.status, 200, ok.text);
    auditor = await signIn('auditor1', USER_PW);
    member = await signIn('member1', USER_PW);
  });

  after(async () => {
    await oidc?.close();
    await saml?.close();
    await stop().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  });

  it('no configuration: the OIDC start is refused (401 SSO_FAILED) and GET /api/v1/sso answers null', async () => {
    const r = await httpsCall(agent, port, 'GET', '/api/v1/auth/sso/acme/oidc/start');
    assert.equal(r.status, 401);
    assert.equal((r.json as { error: { code: string } }).error.code, 'SSO_FAILED');
    const g = await auditor.req('GET', '/api/v1/sso');
    assert.equal(g.status, 200, g.text);
    assert.equal(g.body['sso'], null);
  });

  it('PUT /api/v1/sso (administrators only) stores it; GET shows clientSecretSet, never the secret; the row holds the secret sealed', async () => {
    assert.equal((await member.req('GET', '/api/v1/sso')).status, 403, 'members do not read it');
    assert.equal((await auditor.req('PUT', '/api/v1/sso', { oidc: oidcConfig })).status, 403, 'auditors do not change it');
    assert.equal((await auditor.req('DELETE', '/api/v1/sso')).status, 403);
    // a bad configuration: 400 naming the field, not echoing the secret
    const bad = await admin.req('PUT', '/api/v1/sso', { oidc: { ...oidcConfig, redirectUri: 'javascript:alert(1)' } });
    assert.equal(bad.status, 400, bad.text);
    assert.match(String((bad.body['error'] as { message: string }).message), /oidc\.redirectUri/);
    assert.ok(!bad.text.includes(SECRET));
    // an OIDC section without a secret when none is stored
    const noSecret = await admin.req('PUT', '/api/v1/sso', { oidc: { ...oidcConfig, clientSecret: undefined } });
    assert.equal(noSecret.status, 400, noSecret.text);
    assert.match(noSecret.text, /oidc\.clientSecret/);
    // SSO mandatory for administrators without any method would lock them out
    assert.equal((await admin.req('PUT', '/api/v1/sso', { ssoRequiredForAdmins: true })).status, 400);

    const put = await admin.req('PUT', '/api/v1/sso', { oidc: oidcConfig });
    assert.equal(put.status, 200, put.text);
    assert.ok(!put.text.includes(SECRET), 'the answer never holds the secret');
    const view = put.body['sso'] as { tenantId: string; oidc: Record<string, unknown>; ssoRequiredForAdmins: boolean };
    assert.equal(view.tenantId, tenantId);
    assert.equal(view.oidc['clientSecretSet'], true);
    assert.equal(view.oidc['clientSecret'], undefined);
    assert.equal(view.oidc['issuer'], oidc.issuer);
    assert.equal(view.ssoRequiredForAdmins, false);
    const got = await auditor.req('GET', '/api/v1/sso');
    assert.equal(got.status, 200);
    assert.ok(!got.text.includes(SECRET));
    assert.deepEqual(got.body['sso'], put.body['sso']);

    const row = await database.db.selectFrom('platform_sso_config').selectAll().where('tenant_id', '=', tenantId).executeTakeFirstOrThrow();
    assert.ok(!row.config.includes(SECRET) && !row.config.includes('clientSecret'), 'the JSON column has no secret');
    assert.match(row.oidc_secret_sealed ?? '', /^v1\.[0-9a-f]{16}\./);
    assert.ok(!(row.oidc_secret_sealed ?? '').includes(SECRET));
    for (const f of [dbFile, `${dbFile}-wal`]) {
      if (existsSync(f)) assert.ok(!readFileSync(f).includes(Buffer.from(SECRET)), `nor anywhere in ${path.basename(f)}`);
    }
  });

  it('OIDC sign-in end to end through the served platform with the stored configuration (the sealed secret authenticates the client)', async () => {
    const res = await oidcSignIn('alice');
    assert.equal(res.status, 303, res.text);
    assert.equal(res.headers['location'], '/');
    const c = new WebClient(agent, () => port);
    c.cookie = /^(__Host-tachyon-session=[^;]+)/.exec(String(res.headers['set-cookie']))?.[1];
    const me = await c.req('GET', '/api/v1/me');
    assert.equal(me.status, 200, me.text);
    const user = me.body['user'] as { username: string; roles: string[] };
    assert.equal(user.username, 'alice@example.com');
    assert.deepEqual(user.roles, ['tenant_admin'], 'mapped from the groups claim');
    assert.equal(me.body['secondFactor'], null);
  });

  it('a PUT without clientSecret keeps the stored one (a view sent back changed)', async () => {
    const view = (await admin.req('GET', '/api/v1/sso')).body['sso'] as Record<string, unknown>;
    const oidcView = view['oidc'] as Record<string, unknown>;
    const put = await admin.req('PUT', '/api/v1/sso', { ...view, oidc: { ...oidcView, scopes: ['openid', 'email', 'groups'] } });
    assert.equal(put.status, 200, put.text);
    assert.deepEqual(((put.body['sso'] as Record<string, unknown>)['oidc'] as Record<string, unknown>)['scopes'], ['openid', 'email', 'groups']);
    const res = await oidcSignIn('bob');
    assert.equal(res.status, 303, `the kept secret still authenticates: ${res.text}`);
  });

  it('after a restart on the same SQLite file the configuration is served again (sessions and sign-in through the provider)', async () => {
    const before = (await auditor.req('GET', '/api/v1/sso')).body['sso'];
    await stop();
    await start();
    const after = await auditor.req('GET', '/api/v1/sso');
    assert.equal(after.status, 200, after.text);
    assert.deepEqual(after.body['sso'], before);
    const res = await oidcSignIn('alice');
    assert.equal(res.status, 303, res.text);
  });

  it('restarted with another key: SSO answers 503 KEY_MISSING with a sanitized message; members still sign in with a password; the view still reads', async () => {
    await stop();
    await start(AesGcmSecretBox.random());
    try {
      const r = await httpsCall(agent, port, 'GET', '/api/v1/auth/sso/acme/oidc/start');
      assert.equal(r.status, 503, r.text);
      const err = (r.json as { error: { code: string; message: string } }).error;
      assert.equal(err.code, 'KEY_MISSING');
      assert.equal(err.message, 'Single sign-on is not available; contact an administrator.');
      await signIn('member1', USER_PW);
      assert.equal((await auditor.req('GET', '/api/v1/sso')).status, 200);
    } finally {
      await stop();
      await start();
    }
  });

  it('bad input on PUT /api/v1/sso: oversized (413), malformed (400) and form-encoded (415) bodies; script and SQL in fields are data, returned JSON-encoded', async () => {
    const before = (await auditor.req('GET', '/api/v1/sso')).text;
    const big = await httpsCall(agent, port, 'PUT', '/api/v1/sso', {
      rawBody: JSON.stringify({ oidc: { ...oidcConfig, clientId: 'x'.repeat(100 * 1024) } }),
      headers: { cookie: admin.cookie!, 'x-csrf-token': admin.csrf! },
    });
    assert.equal(big.status, 413, big.text);
    const malformed = await httpsCall(agent, port, 'PUT', '/api/v1/sso', { rawBody: '{"oidc": {', headers: { cookie: admin.cookie!, 'x-csrf-token': admin.csrf!, 'content-type': 'application/json' } });
    assert.equal(malformed.status, 400, malformed.text);
    const form = await httpsCall(agent, port, 'PUT', '/api/v1/sso', { rawBody: 'oidc=1', headers: { cookie: admin.cookie!, 'x-csrf-token': admin.csrf!, 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(form.status, 415, form.text);
    const noCsrf = await httpsCall(agent, port, 'PUT', '/api/v1/sso', { body: { oidc: oidcConfig }, headers: { cookie: admin.cookie! } });
    assert.equal(noCsrf.status, 403, 'a CSRF-less change is refused');
    assert.equal((await auditor.req('GET', '/api/v1/sso')).text, before, 'nothing changed');
    const view = JSON.parse(before) as { sso: Record<string, unknown> };
    const hostile = `<script>alert(1)</script>'; drop table platform_sso_config; --`;
    const put = await admin.req('PUT', '/api/v1/sso', { ...view.sso, oidc: { ...(view.sso['oidc'] as object), clientId: hostile } });
    assert.equal(put.status, 200, put.text);
    assert.match(String(put.headers['content-type']), /^application\/json/);
    assert.equal(((await auditor.req('GET', '/api/v1/sso')).body['sso'] as { oidc: { clientId: string } }).oidc.clientId, hostile);
    const restore = await admin.req('PUT', '/api/v1/sso', { ...view.sso, oidc: { ...(view.sso['oidc'] as object) } });
    assert.equal(restore.status, 200, restore.text);
  });

  it('SAML added to the stored configuration: the IdP’s form post to the served ACS opens a session for the mapped user', async () => {
    const view = (await admin.req('GET', '/api/v1/sso')).body['sso'] as Record<string, unknown>;
    const samlConfig = {
      idpEntityId: saml.entityId,
      ssoUrl: saml.ssoUrl,
      idpCertificates: [saml.identity.certPem],
      spEntityId: SP,
      acsUrl: `${server.url}/api/v1/auth/sso/saml/acs`,
      roleMapping: { 'tachyon-auditors': 'auditor' },
    };
    const put = await admin.req('PUT', '/api/v1/sso', { ...view, saml: samlConfig });
    assert.equal(put.status, 200, put.text);
    saml.next = { nameId: 'carol@example.com', attributes: { email: ['carol@example.com'], groups: ['tachyon-auditors'] } };
    const startRes = await httpsCall(agent, port, 'GET', '/api/v1/auth/sso/acme/saml/start');
    assert.equal(startRes.status, 303, startRes.text);
    const form = await fetchPostForm(String(startRes.headers['location']));
    assert.equal(form.action, `${server.url}/api/v1/auth/sso/saml/acs`);
    const res = await httpsCall(agent, port, 'POST', '/api/v1/auth/sso/saml/acs', {
      rawBody: new URLSearchParams({ SAMLResponse: form.SAMLResponse, RelayState: form.RelayState }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(res.status, 303, res.text);
    const c = new WebClient(agent, () => port);
    c.cookie = /^(__Host-tachyon-session=[^;]+)/.exec(String(res.headers['set-cookie']))?.[1];
    const me = await c.req('GET', '/api/v1/me');
    assert.equal(me.status, 200, me.text);
    assert.deepEqual((me.body['user'] as { roles: string[] }).roles, ['auditor']);
  });

  it('ssoRequiredForAdmins: the administrators’ password sign-in is refused (members sign in); DELETE lifts it', async () => {
    const view = (await admin.req('GET', '/api/v1/sso')).body['sso'] as Record<string, unknown>;
    const put = await admin.req('PUT', '/api/v1/sso', { ...view, ssoRequiredForAdmins: true });
    assert.equal(put.status, 200, put.text);
    const refused = await new WebClient(agent, () => port).req('POST', '/api/v1/auth/signin', { tenant: 'acme', username: 'admin', password: ADMIN_PW });
    assert.equal(refused.status, 401, 'the same answer as a wrong password');
    assert.equal((refused.body['error'] as { code: string }).code, 'AUTH_FAILED');
    await signIn('member1', USER_PW);
    // an administrator signs in through the provider instead
    assert.equal((await oidcSignIn('alice')).status, 303);
    const del = await admin.req('DELETE', '/api/v1/sso');
    assert.equal(del.status, 204, del.text);
    assert.equal((await admin.req('DELETE', '/api/v1/sso')).status, 204, 'idempotent');
    assert.equal((await auditor.req('GET', '/api/v1/sso')).body['sso'], null);
    const again = await new WebClient(agent, () => port).req('POST', '/api/v1/auth/signin', { tenant: 'acme', username: 'admin', password: ADMIN_PW });
    assert.equal(again.status, 200, again.text);
    assert.equal(again.body['secondFactor'], 'totp');
    assert.equal((await httpsCall(agent, port, 'GET', '/api/v1/auth/sso/acme/oidc/start')).status, 401, 'no configuration, no SSO');
    const rows = await auditLines();
    const refusal = rows.filter((r) => r.type === 'web.signin').map((r) => JSON.parse(r.line) as { fields: Record<string, unknown> }).find((r) => r.fields['reason'] === 'sso-required');
    assert.ok(refusal, 'the refusal is audited with its reason');
  });

  it('the audit rows record every change (sso.update with the changed sections, sso.clear) and never hold the secret', async () => {
    await server.close(); // flushes the queued records
    const rows = await auditLines();
    await database.close();
    await start();
    assert.ok(rows.length > 10);
    for (const r of rows) assert.ok(!r.line.includes(SECRET), `an audit row holds the secret: ${r.type}`);
    const changes = rows
      .filter((r) => r.type === 'web.change')
      .map((r) => (JSON.parse(r.line) as { fields: Record<string, unknown> }).fields)
      .filter((f) => String(f['action']).startsWith('sso.'));
    assert.deepEqual(
      changes.map((f) => f['action']),
      ['sso.update', 'sso.update', 'sso.update', 'sso.update', 'sso.update', 'sso.update', 'sso.clear'],
    );
    assert.deepEqual(changes[0]!['changed'], ['oidc', 'oidc.clientSecret']);
    assert.deepEqual(changes[1]!['changed'], ['oidc']);
    assert.deepEqual(changes[2]!['changed'], ['oidc'], 'the hostile client id');
    assert.deepEqual(changes[3]!['changed'], ['oidc'], 'restored');
    assert.deepEqual(changes[4]!['changed'], ['saml']);
    assert.deepEqual(changes[5]!['changed'], ['ssoRequiredForAdmins']);
    assert.ok(changes.every((f) => f['actor'] === 'admin' && f['target'] === tenantId));
    // the refused PUTs are audited as refusals (no secret either: checked above)
    assert.ok(rows.some((r) => r.type === 'web.refusal' && r.line.includes('PUT /api/v1/sso')));
  });
});
