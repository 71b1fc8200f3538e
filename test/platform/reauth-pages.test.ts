/**
 * The sign-in page's SSO buttons, the re-authentication dialog and the SSO administration
 * page in a real browser (Debian's chromium driven by playwright-core, as in
 * admin-pages.test.ts), against the app over HTTPS on 127.0.0.1 port 0 with a real SQLite
 * file, real SSO services and a real oidc-provider: the button of a tenant with SSO goes
 * through the provider and back signed in, a tenant without SSO and an unknown tenant look
 * the same; an administrator whose proof of identity is stale is asked for the password
 * when saving the policy (a wrong one is refused in the dialog), and the save then
 * succeeds; /admin/sso shows the secret only as "set", saves edited JSON and clears.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import * as client from 'openid-client';
import { type Browser, type BrowserContext, type Page } from 'playwright-core';
import { openDatabase, type Database } from '../../src/db/database.js';
import { createPlatformApp, type PlatformApp } from '../../src/platform/app.js';
import { DatabaseAuditSink } from '../../src/platform/audit-store.js';
import { AesGcmSecretBox } from '../../src/platform/mfa/index.js';
import { argon2idHasher } from '../../src/platform/passwords.js';
import { IdentityService } from '../../src/platform/service.js';
import { DatabaseSsoConfigSource, MemorySsoStore, SsoServices, type OidcDiscover } from '../../src/platform/sso/index.js';
import { SimClock } from '../../src/testkit/simclock.js';
import { ADMIN_PW, seedTenant, TEST_ARGON2, type Platform } from './helpers.js';
import { startOidcProvider, type TestOidcProvider } from './sso/oidc-idp.js';
import { CHROMIUM, issueTestCert, launchChromium, openPage } from '../helpers/browser.js';

const SECRET = 'reauth-pages-oidc-secret-5c2e7a91';

/** The test adapter of the discovery seam: plain HTTP to the provider on 127.0.0.1; signatures still checked. */
const testDiscover: OidcDiscover = (c) =>
  client.discovery(new URL(c.issuer), c.clientId, undefined, client.ClientSecretBasic(c.clientSecret), {
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
  });

describe('SSO buttons, re-authentication dialog and SSO page in chromium', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent (apt-get install chromium): browser tests skipped` }, () => {
  let dir: string;
  let db: Database;
  let audit: DatabaseAuditSink;
  let clock: SimClock;
  let identity: IdentityService;
  let ssoConfigs: DatabaseSsoConfigSource;
  let web: PlatformApp;
  let base: string;
  let oidc: TestOidcProvider;
  let browser: Browser;
  let acmeId: string;
  const contexts: BrowserContext[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-reauth-pages-'));
    const { certPem, keyPem, spki } = await issueTestCert(dir, 'reauth pages');
    db = await openDatabase({ url: `sqlite://${path.join(dir, 'platform.db')}` });
    clock = new SimClock({ startMs: Date.now() });
    audit = await DatabaseAuditSink.open(db, { clock });
    ssoConfigs = new DatabaseSsoConfigSource({ database: db, box: AesGcmSecretBox.random(), clock });
    const sso = new SsoServices({ configs: ssoConfigs, store: new MemorySsoStore({ clock }), audit, clock, oidcDiscover: testDiscover });
    identity = new IdentityService({ database: db, audit, clock, hasher: argon2idHasher(TEST_ARGON2), sso, ssoConfigs });
    web = createPlatformApp({ identity, https: { key: keyPem, cert: certPem }, auditLog: audit, now: () => clock.now() });
    await web.app.listen({ host: '127.0.0.1', port: 0 });
    base = `https://127.0.0.1:${(web.app.server.address() as AddressInfo).port}`;
    acmeId = (await seedTenant({ identity } as unknown as Platform, 'acme')).id;
    await seedTenant({ identity } as unknown as Platform, 'globex');
    const redirectUri = `${base}/api/v1/auth/sso/oidc/callback`;
    oidc = await startOidcProvider({ alice: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['staff'] } }, [
      { clientId: 'tachyon-platform', clientSecret: SECRET, redirectUri },
    ]);
    await ssoConfigs.put(acmeId, {
      oidc: { issuer: oidc.issuer, clientId: 'tachyon-platform', clientSecret: SECRET, redirectUri, scopes: ['openid', 'email', 'profile', 'groups'] },
    });
    browser = await launchChromium(spki);
  });
  after(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await oidc?.close();
    await web?.app.close();
    await audit?.close();
    await db?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const newPage = (): Promise<{ page: Page; problems: string[] }> => openPage(browser, base, contexts);

  async function ready(page: Page): Promise<void> {
    await page.waitForSelector('body[data-ready="true"]', { timeout: 5000 });
  }

  async function signIn(page: Page, username: string, password: string): Promise<void> {
    await page.goto('/signin');
    await ready(page);
    await page.getByLabel('Organisation').fill('acme');
    await page.getByLabel('User name').fill(username);
    await page.getByLabel('Password', { exact: true }).fill(password);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.waitForURL(`${base}/`);
    await ready(page);
  }

  it('the sign-in page offers SSO for a tenant that has it (the same nothing for one without and for no tenant); the button signs in through the IdP', async () => {
    // the public route: one answer shape, an empty list for a tenant without SSO and for no such tenant
    const methods = async (t: string): Promise<string> => (await web.app.inject({ method: 'GET', url: `/api/v1/auth/sso/${t}/methods` })).body;
    assert.equal(await methods('acme'), '{"methods":["oidc"]}');
    assert.equal(await methods('globex'), '{"methods":[]}');
    assert.equal(await methods('no-such-tenant'), '{"methods":[]}');
    assert.equal(await methods('%3Cscript%3E'), '{"methods":[]}');

    const { page, problems } = await newPage();
    await page.goto('/signin');
    await ready(page);
    const button = page.getByRole('link', { name: /Sign in with your organisation’s SSO/ });
    for (const t of ['globex', 'no-such-tenant']) {
      await page.getByLabel('Organisation').fill(t);
      await page.getByLabel('User name').focus();
      await page.waitForTimeout(150);
      assert.equal(await button.count(), 0, `no SSO button for ${t}`);
      assert.equal(await page.locator('#sso').isHidden(), true);
    }
    await page.getByLabel('Organisation').fill('acme');
    await page.getByLabel('User name').focus();
    await button.waitFor({ timeout: 5000 });
    assert.equal(await button.textContent(), 'Sign in with your organisation’s SSO (OpenID Connect)');
    assert.equal(await button.getAttribute('href'), '/api/v1/auth/sso/acme/oidc/start');
    // through the provider (which signs alice in without a form) and back, signed in
    const visited: string[] = [];
    page.on('request', (r) => {
      if (r.isNavigationRequest()) visited.push(r.url());
    });
    await button.click();
    await page.waitForURL(`${base}/`, { timeout: 15_000 });
    await ready(page);
    assert.ok(visited.some((u) => u.startsWith(`${oidc.issuer}/`)), `went to the IdP: ${visited.join(' ')}`);
    assert.equal(await page.locator('#me-username').textContent(), 'alice@example.com');
    // an SSO-only account re-authenticates through SSO again: no password to send (409, audited)
    const r = await page.evaluate(async () => {
      const me = (await (await fetch('/api/v1/me')).json()) as { csrfToken: string; reauthMethod: string };
      const res = await fetch('/api/v1/auth/reauth', { method: 'POST', headers: { 'content-type': 'application/json', 'x-csrf-token': me.csrfToken }, body: JSON.stringify({ password: 'anything at all 1' }) });
      return { method: me.reauthMethod, status: res.status, body: await res.text() };
    });
    assert.equal(r.method, 'sso');
    assert.equal(r.status, 409, r.body);
    assert.match(r.body, /sign in again through your organisation/);
    // stale: a sensitive change is refused like anyone's (the dialog then offers to sign in again)
    clock.advance(601_000);
    await page.goto('/');
    await ready(page);
    const stale = await page.evaluate(async () => {
      const me = (await (await fetch('/api/v1/me')).json()) as { csrfToken: string };
      const res = await fetch('/api/v1/me/tokens', { method: 'POST', headers: { 'content-type': 'application/json', 'x-csrf-token': me.csrfToken }, body: JSON.stringify({ scopes: ['read'] }) });
      return { status: res.status, body: await res.text() };
    });
    assert.equal(stale.status, 403, stale.body);
    assert.match(stale.body, /REAUTH_REQUIRED/);
    assert.deepEqual(problems, []);
  });

  it('an administrator whose proof is stale is asked for the password when saving the policy; a wrong one is refused; the save then succeeds', async () => {
    const { page, problems } = await newPage();
    await signIn(page, 'admin', ADMIN_PW);
    await page.goto('/admin/policy');
    await ready(page);
    assert.equal(await page.locator('#reauthWindowSeconds').inputValue(), '600');
    clock.advance(601_000);

    // cancelled: the change is not made, the refusal is shown
    await page.locator('#minPasswordLength').fill('15');
    await page.getByRole('button', { name: 'Save policy' }).click();
    const dialog = page.getByRole('dialog', { name: 'Confirm it is you' });
    await dialog.waitFor({ timeout: 5000 });
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await page.locator('#message.error').waitFor({ timeout: 5000 });
    assert.match(String(await page.locator('#message').textContent()), /^Confirm your identity again \(re-authenticate\) to do this\./);
    assert.equal((await identity.repo.policy(acmeId)).minPasswordLength, 12);

    await page.getByRole('button', { name: 'Save policy' }).click();
    await dialog.waitFor({ timeout: 5000 });
    await dialog.getByLabel('Password').fill('certainly not the password');
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    await page.locator('#reauth-message', { hasText: 'Re-authentication failed' }).waitFor({ timeout: 5000 });
    assert.equal(await dialog.getByLabel('Password').inputValue(), '', 'the wrong password is cleared');
    await dialog.getByLabel('Password').fill(ADMIN_PW);
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    await page.locator('#message.ok', { hasText: 'The policy was saved.' }).waitFor({ timeout: 5000 });
    assert.equal(await page.locator('#reauth-dialog').count(), 0, 'the dialog is gone');
    assert.equal((await identity.repo.policy(acmeId)).minPasswordLength, 15);

    await audit.flush();
    const rows = await db.db.selectFrom('platform_audit').select(['type', 'line']).orderBy('seq').execute();
    const reauths = rows.filter((r) => r.type === 'web.signin' && r.line.includes('"method":"reauth"') && r.line.includes('"user":"admin"')).map((r) => (JSON.parse(r.line) as { fields: { result: string } }).fields.result);
    assert.deepEqual(reauths, ['failure', 'success']);
    assert.ok(!rows.some((r) => r.line.includes(ADMIN_PW) || r.line.includes('certainly not the password')), 'no password in the audit');
    assert.deepEqual(problems, []);
  });

  it('/admin/sso shows the configuration with the secret only as "set", saves edited JSON and clears it', async () => {
    const { page, problems } = await newPage();
    await signIn(page, 'admin', ADMIN_PW);
    await page.goto('/admin/sso');
    await ready(page);
    assert.equal(await page.locator('#sso-secret').textContent(), 'set');
    const text = await page.locator('#sso-config').inputValue();
    assert.ok(!text.includes(SECRET) && !text.includes('clientSecret'), 'no secret in the editor');
    const shown = JSON.parse(text) as { oidc: Record<string, unknown> };
    assert.equal(shown.oidc['clientId'], 'tachyon-platform');

    await page.locator('#sso-config').fill('{ not json');
    await page.getByRole('button', { name: 'Save configuration' }).click();
    await page.locator('#message.error', { hasText: 'not valid JSON' }).waitFor({ timeout: 5000 });

    shown.oidc['scopes'] = ['openid', 'email'];
    await page.locator('#sso-config').fill(JSON.stringify(shown, null, 2));
    await page.getByRole('button', { name: 'Save configuration' }).click();
    await page.locator('#message.ok', { hasText: 'was saved' }).waitFor({ timeout: 5000 });
    const stored = await ssoConfigs.view(acmeId);
    assert.deepEqual(stored?.oidc?.scopes, ['openid', 'email']);
    assert.equal(stored?.oidc?.clientSecretSet, true, 'the stored secret is kept');
    assert.equal(await page.locator('#sso-secret').textContent(), 'set');

    await page.getByRole('button', { name: 'Remove single sign-on' }).click();
    await page.locator('#message.ok', { hasText: 'Single sign-on was removed.' }).waitFor({ timeout: 5000 });
    assert.equal(await ssoConfigs.view(acmeId), undefined);
    assert.equal(await page.locator('#sso-secret').textContent(), 'none');
    assert.equal(await page.locator('#sso-config').inputValue(), '');
    assert.deepEqual(problems, []);
  });
});
