/**
 * The platform's web pages (src/platform/pages), in two parts:
 *  - over plain fetch: every page, the script and the style sheet answer with the pages'
 *    CSP, hold no inline script or handler and name no external resource; the API keeps
 *    its own CSP and route table; `pages: false` serves none of them;
 *  - in a real browser: Debian's chromium (/usr/bin/chromium) driven by playwright-core,
 *    against the app served over HTTPS on 127.0.0.1 port 0 with a certificate from our own
 *    PKI (src/node-api/pki.ts) — the `__Host-` cookie is Secure, so it needs HTTPS.
 *
 * Trusting the test certificate: chromium is told `--ignore-certificate-errors-spki-list=
 * <base64 SHA-256 of the server certificate's SubjectPublicKeyInfo>`, which accepts exactly
 * that key and no other certificate error (importing the test CA into an NSS database
 * would need certutil, which is not installed). The page is still a secure context, so
 * the Secure cookie is stored and sent.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { type Browser, type BrowserContext, type Page } from 'playwright-core';
import { FileAuditSink } from '../../src/audit/index.js';
import { openDatabase, type Database } from '../../src/db/database.js';
import { createPlatformApp, type PlatformApp } from '../../src/platform/app.js';
import { argon2idHasher } from '../../src/platform/passwords.js';
import { PAGE_CSP, pageRoutes } from '../../src/platform/pages/pages.js';
import { IdentityService } from '../../src/platform/service.js';
import { SimClock } from '../../src/testkit/simclock.js';
import { ROUTE_TABLE } from '../../src/platform/routes.js';
import { ADMIN_PW, seedTenant, startPlatform, TEST_ARGON2, USER_PW, type Platform } from './helpers.js';
import { CHROMIUM, issueTestCert, launchChromium, openPage } from '../helpers/browser.js';


describe('platform pages over HTTP', () => {
  let p: Platform;
  before(async () => {
    p = await startPlatform();
  });
  after(async () => {
    await p.close();
  });

  it('every page, the script and the style sheet answer 200 with the pages CSP and no inline script or external resource', async () => {
    const routes = pageRoutes();
    assert.ok(routes.includes('/signin') && routes.includes('/admin/users') && routes.includes('/assets/app.js'));
    for (const url of routes) {
      const r = await fetch(p.base + url);
      const text = await r.text();
      assert.equal(r.status, 200, url);
      assert.equal(r.headers.get('content-security-policy'), PAGE_CSP, url);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff', url);
      assert.doesNotMatch(text, /https?:\/\//, `${url} names no external resource`);
      if (url.startsWith('/assets/')) continue;
      assert.match(r.headers.get('content-type') ?? '', /^text\/html/);
      // every script element loads /assets/app.js; no inline script, handler, style or javascript: URL
      const scripts = [...text.matchAll(/<script\b[^>]*>([\s\S]*?)<\/script>/g)];
      assert.equal(scripts.length, 1, url);
      assert.match(scripts[0]?.[0] ?? '', /src="\/assets\/app\.js"/);
      assert.equal(scripts[0]?.[1], '', `${url}: no inline script body`);
      assert.doesNotMatch(text, /\son[a-z]+\s*=|javascript:|<style|\sstyle=/i, url);
      // every input has a label
      for (const m of text.matchAll(/<(?:input|select)\b[^>]*\bid="([^"]+)"/g)) {
        const id = m[1] as string;
        const labelled = text.includes(`for="${id}"`) || new RegExp(`<label><input id="${id}"`).test(text);
        assert.ok(labelled, `${url}: #${id} has a label`);
      }
    }
  });

  it('the API keeps its own CSP and route table; pages are GET only', async () => {
    const r = await fetch(`${p.base}/api/v1/me`);
    assert.equal(r.status, 401);
    assert.equal(r.headers.get('content-security-policy'), "default-src 'none'; frame-ancestors 'none'");
    const table = Object.values(ROUTE_TABLE).map((x) => `${x.method} ${x.url}`).sort();
    assert.deepEqual([...p.web.registeredRoutes()].sort(), table);
    const post = await fetch(`${p.base}/signin`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(post.status, 404);
  });

  it('pages: false serves no page', async () => {
    const web = createPlatformApp({ identity: p.identity, insecureHttp: true, pages: false });
    try {
      await web.app.listen({ host: '127.0.0.1', port: 0 });
      const base = `http://127.0.0.1:${(web.app.server.address() as AddressInfo).port}`;
      for (const url of pageRoutes()) assert.equal((await fetch(base + url)).status, 404, url);
    } finally {
      await web.app.close();
    }
  });
});

interface HttpsPlatform {
  readonly dir: string;
  readonly db: Database;
  readonly audit: FileAuditSink;
  readonly identity: IdentityService;
  readonly web: PlatformApp;
  readonly base: string;
  /** base64 SHA-256 of the server certificate's SubjectPublicKeyInfo. */
  readonly spki: string;
}

async function startHttpsPlatform(): Promise<HttpsPlatform> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-pages-'));
  const { certPem, keyPem, spki } = await issueTestCert(dir, 'pages');
  const db = await openDatabase({ url: `sqlite://${path.join(dir, 'platform.db')}` });
  const clock = new SimClock({ startMs: Date.now() });
  const audit = new FileAuditSink(path.join(dir, 'audit.log'), { clock, fsync: 'never' });
  const identity = new IdentityService({ database: db, audit, clock, hasher: argon2idHasher(TEST_ARGON2) });
  const web = createPlatformApp({ identity, https: { key: keyPem, cert: certPem } });
  await web.app.listen({ host: '127.0.0.1', port: 0 });
  const base = `https://127.0.0.1:${(web.app.server.address() as AddressInfo).port}`;
  return { dir, db, audit, identity, web, base, spki };
}

describe('platform pages in chromium', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent (apt-get install chromium): browser tests skipped` }, () => {
  let p: HttpsPlatform;
  let browser: Browser;
  const T = 'acme';
  const contexts: BrowserContext[] = [];

  before(async () => {
    p = await startHttpsPlatform();
    // seedTenant takes a Platform; it uses only `identity`
    await seedTenant({ identity: p.identity } as unknown as Platform, T);
    browser = await launchChromium(p.spki);
  });
  after(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await p.web.app.close();
    await p.audit.close();
    await p.db.close();
    rmSync(p.dir, { recursive: true, force: true });
  });

  async function newPage(): Promise<{ context: BrowserContext; page: Page }> {
    const { context, page, problems } = await openPage(browser, p.base, contexts);
    // a CSP violation or script error fails the scenario
    (page as Page & { problems?: string[] }).problems = problems;
    return { context, page };
  }

  function problemsOf(page: Page): string[] {
    return (page as Page & { problems?: string[] }).problems ?? [];
  }

  async function ready(page: Page): Promise<void> {
    await page.waitForSelector('body[data-ready="true"]', { timeout: 5000 });
  }

  async function signIn(page: Page, username: string, password: string): Promise<void> {
    await page.goto('/signin');
    await ready(page);
    await page.getByLabel('Organisation').fill(T);
    await page.getByLabel('User name').fill(username);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }

  it('a member signs in, sees their account, changes the password and signs out', async () => {
    const { context, page } = await newPage();
    await signIn(page, 'member1', USER_PW);
    await page.waitForURL(`${p.base}/`);
    await ready(page);
    assert.equal(await page.locator('#me-username').textContent(), 'member1');
    assert.equal(await page.locator('#me-roles').textContent(), 'member');
    assert.equal(await page.getByRole('link', { name: 'Users' }).isVisible(), false, 'no admin links for a member');
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === '__Host-tachyon-session');
    assert.ok(session, 'the session cookie is stored');
    assert.equal(session.secure, true);
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');

    await page.getByRole('link', { name: 'Change password' }).click();
    await page.waitForURL(`${p.base}/password`);
    await ready(page);
    const NEW = 'amber kettle under 12 stars';
    await page.getByLabel('Current password').fill(USER_PW);
    await page.getByLabel('New password', { exact: true }).fill(NEW);
    await page.getByLabel('New password again').fill(NEW);
    await page.getByRole('button', { name: 'Change password' }).click();
    await page.locator('#message.ok').waitFor({ timeout: 5000 });
    assert.match((await page.locator('#message').textContent()) ?? '', /password was changed/);

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(`${p.base}/signin`);
    assert.equal((await context.cookies()).some((c) => c.name === '__Host-tachyon-session'), false, 'the cookie is cleared');
    // signed out: the account page sends the browser back to sign-in
    await page.goto('/');
    await page.waitForURL(`${p.base}/signin`);
    // the new password works, the old one does not
    await signIn(page, 'member1', NEW);
    await page.waitForURL(`${p.base}/`);
    assert.deepEqual(problemsOf(page), []);
  });

  it("a tenant's notice shows before sign-in: without the box ticked the page refuses, ticked it signs in and the acceptance is recorded", async () => {
    const g = await seedTenant({ identity: p.identity } as unknown as Platform, 'globex');
    const NOTICE = 'Authorised users only. Activity is recorded.';
    await p.identity.repo.setPolicy(g.id, { ...(await p.identity.repo.policy(g.id)), disclaimer: NOTICE }, new Date().toISOString());
    const { context, page } = await newPage();
    await page.goto('/signin');
    await ready(page);
    assert.equal(await page.locator('#disclaimer').isVisible(), false, 'no notice before an organisation is named');
    await page.getByLabel('Organisation').fill('globex');
    await page.getByLabel('User name').fill('member1');
    await page.locator('#disclaimer').waitFor({ state: 'visible', timeout: 5000 });
    assert.equal(await page.locator('#disclaimer-text').textContent(), NOTICE);
    await page.getByLabel('Password').fill(USER_PW);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#message.error').waitFor({ timeout: 5000 });
    assert.match((await page.locator('#message').textContent()) ?? '', /Read the notice above/);
    assert.deepEqual(await context.cookies(), [], 'no session without accepting');
    await page.getByLabel('I have read this notice and I am authorised to proceed').check();
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${p.base}/`);
    const accepted = readFileSync(path.join(p.dir, 'audit.log'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { type: string; fields: Record<string, unknown> })
      .filter((e) => e.type === 'web.signin' && e.fields['tenant'] === 'globex' && e.fields['result'] === 'success');
    assert.equal(accepted.length, 1);
    assert.equal(typeof accepted[0]!.fields['disclaimerAccepted'], 'string', 'the acceptance (a digest of the notice) is in the sign-in record');
    // an organisation without a notice shows none
    const other = await newPage();
    await other.page.goto('/signin');
    await ready(other.page);
    await other.page.getByLabel('Organisation').fill(T);
    await other.page.getByLabel('User name').fill('member1');
    await other.page.waitForTimeout(300);
    assert.equal(await other.page.locator('#disclaimer').isVisible(), false);
    assert.deepEqual(problemsOf(page), []);
  });

  it('a wrong password shows the API message and creates no session', async () => {
    const { context, page } = await newPage();
    await signIn(page, 'auditor1', 'not the password at all');
    await page.locator('#message.error').waitFor({ timeout: 5000 });
    const text = (await page.locator('#message').textContent()) ?? '';
    assert.match(text, /^Sign-in failed: the credentials are wrong, or the account is locked or disabled\. \(reference [0-9A-Z]{26}\)$/);
    assert.equal(await page.locator('#message').getAttribute('role'), 'alert');
    assert.equal(page.url(), `${p.base}/signin`);
    assert.equal(await page.getByLabel('Password').inputValue(), '', 'the password field is cleared');
    assert.deepEqual(await context.cookies(), []);
  });

  it('an administrator creates a user, resets a password and edits the policy; the user must change it at sign-in', async () => {
    const { page } = await newPage();
    await signIn(page, 'admin', ADMIN_PW);
    await page.waitForURL(`${p.base}/`);
    await ready(page);
    await page.getByRole('link', { name: 'Users' }).click();
    await page.waitForURL(`${p.base}/admin/users`);
    await ready(page);
    assert.equal(await page.locator('#users tbody tr').count(), 3);

    await page.getByLabel('User name').fill('newbie');
    await page.getByLabel('Name', { exact: true }).fill('New <b>Bie</b>');
    await page.getByLabel('Role', { exact: true }).selectOption('member');
    await page.getByLabel('Temporary password').first().fill('first temporary pass 1');
    await page.getByRole('button', { name: 'Create user' }).click();
    await page.locator('#message.ok').waitFor({ timeout: 5000 });
    assert.match((await page.locator('#message').textContent()) ?? '', /User newbie was created/);
    const row = page.locator('#users tbody tr[data-username="newbie"]');
    await row.waitFor();
    // text is shown as text, never as HTML
    assert.equal(await row.locator('td').nth(1).textContent(), 'New <b>Bie</b>');
    assert.equal(await page.locator('#users b').count(), 0);

    // a refused creation shows the API's message (duplicate user name)
    await page.getByLabel('User name').fill('newbie');
    await page.getByLabel('Temporary password').first().fill('first temporary pass 1');
    await page.getByRole('button', { name: 'Create user' }).click();
    await page.locator('#message.error').waitFor({ timeout: 5000 });

    await page.getByLabel('User', { exact: true }).selectOption({ label: 'newbie' });
    await page.locator('#reset-password').fill('second temporary pass 2');
    await page.getByRole('button', { name: 'Reset password' }).click();
    await page.locator('#message.ok').waitFor({ timeout: 5000 });
    assert.match((await page.locator('#message').textContent()) ?? '', /password of newbie was reset/);

    await page.getByRole('button', { name: 'Disable auditor1' }).click();
    await page.locator('#users tbody tr[data-username="auditor1"] td:nth-child(4)', { hasText: 'disabled' }).waitFor({ timeout: 5000 });

    // roles: the new user becomes an auditor from the page
    await page.getByLabel('Role of newbie', { exact: true }).selectOption('auditor');
    await page.getByRole('button', { name: 'Set the role of newbie' }).click();
    await page.locator('#users tbody tr[data-username="newbie"] td:nth-child(3)', { hasText: 'auditor' }).waitFor({ timeout: 5000 });
    const acme = (await p.identity.repo.tenantBySlug(T))?.id as string;
    assert.deepEqual((await p.identity.repo.listUsers(acme)).find((u) => u.username === 'newbie')?.roles, ['auditor']);

    await page.getByRole('link', { name: 'Policy' }).click();
    await page.waitForURL(`${p.base}/admin/policy`);
    await ready(page);
    assert.equal(await page.getByLabel('Shortest password (characters)').inputValue(), '12');
    await page.getByLabel('Shortest password (characters)').fill('14');
    assert.equal(await page.getByLabel('Failed sign-ins lock').inputValue(), 'account');
    await page.getByLabel('Failed sign-ins lock').selectOption('address');
    await page.getByRole('button', { name: 'Save policy' }).click();
    await page.locator('#message.ok').waitFor({ timeout: 5000 });
    const tenant = await p.identity.repo.tenantBySlug(T);
    assert.equal((await p.identity.repo.policy(tenant?.id as string)).minPasswordLength, 14);
    assert.equal((await p.identity.repo.policy(tenant?.id as string)).lockoutScope, 'address');
    assert.deepEqual(problemsOf(page), []);

    // the new user signs in with the reset password and is sent to change it
    const other = await newPage();
    await signIn(other.page, 'newbie', 'second temporary pass 2');
    await other.page.waitForURL(`${p.base}/password?required=1`);
    await ready(other.page);
    assert.match((await other.page.locator('#message').textContent()) ?? '', /must change your password/);
  });

  it('a member cannot use the administrator pages: the API refuses and the page says so', async () => {
    await p.identity.provisionUser((await p.identity.repo.tenantBySlug(T))?.id as string, { username: 'member2', roles: ['member'], password: USER_PW });
    const { page } = await newPage();
    await signIn(page, 'member2', USER_PW);
    await page.waitForURL(`${p.base}/`);
    for (const url of ['/admin/users', '/admin/policy']) {
      await page.goto(url);
      await ready(page);
      assert.match((await page.locator('#message.error').textContent()) ?? '', /^Permission denied\. \(reference [0-9A-Z]{26}\)$/, url);
      assert.equal(await page.locator('form:visible').count(), 0, `${url}: no form is offered`);
    }
    assert.equal(await page.locator('#users tbody tr').count(), 0);
  });

  it('the session list shows the current session and ends another one', async () => {
    const first = await newPage();
    await signIn(first.page, 'admin', ADMIN_PW);
    await first.page.waitForURL(`${p.base}/`);
    const { page } = await newPage();
    await signIn(page, 'admin', ADMIN_PW);
    await page.waitForURL(`${p.base}/`);
    await page.getByRole('link', { name: 'My sessions' }).click();
    await page.waitForURL(`${p.base}/sessions`);
    await ready(page);
    const rows = page.locator('#sessions tbody tr');
    const before = await rows.count();
    assert.ok(before >= 2, `at least this and the other session (${before})`);
    assert.equal(await page.locator('#sessions tbody tr.current').count(), 1);
    assert.match((await page.locator('#sessions tbody tr.current td').first().textContent()) ?? '', /\(this session\)/);
    await page.locator('#sessions tbody tr:not(.current) button').first().click();
    await page.locator('#message.ok').waitFor({ timeout: 5000 });
    // the list is drawn again after the message: wait for it rather than race it
    for (let i = 0; i < 50 && (await rows.count()) !== before - 1; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await rows.count(), before - 1);
    assert.equal(await page.locator('#sessions tbody tr.current').count(), 1, 'this session stays');
  });
});
