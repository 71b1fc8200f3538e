/**
 * The administrators' and auditors' pages in a real browser (Debian's chromium driven by
 * playwright-core, as in pages.test.ts): the audit log page against the app served over
 * HTTPS on 127.0.0.1 port 0, its records written by real sign-ins through the database
 * audit sink. The page must run under the strict CSP without a script error.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { type Browser, type BrowserContext, type Page } from 'playwright-core';
import { newCorrelationId } from '../../src/core/correlation.js';
import { CidrList, ScoringDefender } from '../../src/defender/index.js';
import { openDatabase, type Database } from '../../src/db/database.js';
import { createPlatformApp, type PlatformApp } from '../../src/platform/app.js';
import { DatabaseAuditSink } from '../../src/platform/audit-store.js';
import { TenantAllowLists } from '../../src/platform/allow-list-store.js';
import { argon2idHasher } from '../../src/platform/passwords.js';
import { IdentityService } from '../../src/platform/service.js';
import { AesGcmSecretBox, MfaService } from '../../src/platform/mfa/index.js';
import { Secret, TOTP } from 'otpauth';
import { SimClock } from '../../src/testkit/simclock.js';
import { ADMIN_PW, seedTenant, TEST_ARGON2, USER_PW, type Platform } from './helpers.js';
import { CHROMIUM, issueTestCert, launchChromium, openPage } from '../helpers/browser.js';


interface HttpsPlatform {
  readonly dir: string;
  readonly db: Database;
  readonly audit: DatabaseAuditSink;
  readonly clock: SimClock;
  readonly defender: ScoringDefender;
  readonly identity: IdentityService;
  readonly web: PlatformApp;
  readonly base: string;
  /** base64 SHA-256 of the server certificate's SubjectPublicKeyInfo. */
  readonly spki: string;
  close(): Promise<void>;
}

async function startHttpsPlatform(options: { mfa?: boolean } = {}): Promise<HttpsPlatform> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-admin-pages-'));
  const { certPem, keyPem, spki } = await issueTestCert(dir, 'admin pages');
  const db = await openDatabase({ url: `sqlite://${path.join(dir, 'platform.db')}` });
  const clock = new SimClock({ startMs: Date.now() });
  const audit = await DatabaseAuditSink.open(db, { clock });
  // the browser's own address is never blocked (its scenarios are not about that)
  const defender = await ScoringDefender.open({ database: db, clock, audit, settings: { threshold: 3, syncIntervalMs: 60_000 }, safeList: CidrList.parse(['127.0.0.0/8']) });
  const allowLists = new TenantAllowLists(db, clock, defender);
  const mfa = options.mfa === true ? new MfaService({ database: db, box: AesGcmSecretBox.random(), audit, clock }) : undefined;
  const identity = new IdentityService({ database: db, audit, clock, hasher: argon2idHasher(TEST_ARGON2), addressGate: allowLists, ...(mfa ? { mfa } : {}) });
  const web = createPlatformApp({ identity, https: { key: keyPem, cert: certPem }, auditLog: audit, allowLists, defender, now: () => clock.now() });
  await web.app.listen({ host: '127.0.0.1', port: 0 });
  const base = `https://127.0.0.1:${(web.app.server.address() as AddressInfo).port}`;
  return {
    dir,
    db,
    audit,
    clock,
    defender,
    identity,
    web,
    base,
    spki,
    async close() {
      await web.app.close();
      await defender.close();
      await audit.close();
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('administrator pages in chromium', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent (apt-get install chromium): browser tests skipped` }, () => {
  let p: HttpsPlatform;
  let browser: Browser;
  const T = 'acme';
  const contexts: BrowserContext[] = [];

  before(async () => {
    p = await startHttpsPlatform();
    await seedTenant({ identity: p.identity } as unknown as Platform, T);
    await seedTenant({ identity: p.identity } as unknown as Platform, 'globex');
    browser = await launchChromium(p.spki);
  });
  after(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await p.close();
  });

  const newPage = (): Promise<{ context: BrowserContext; page: Page; problems: string[] }> => openPage(browser, p.base, contexts);

  async function ready(page: Page): Promise<void> {
    await page.waitForSelector('body[data-ready="true"]', { timeout: 5000 });
  }

  async function signIn(page: Page, username: string, password: string, tenant = T): Promise<void> {
    await page.goto('/signin');
    await ready(page);
    await page.getByLabel('Organisation').fill(tenant);
    await page.getByLabel('User name').fill(username);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${p.base}/`);
    await ready(page);
  }

  it('an auditor filters the audit log, pages through it and exports it; a member is refused', async () => {
    // history: wrong passwords for member1 (one with markup as the user name), another tenant's sign-in
    for (let i = 0; i < 3; i++) {
      await assert.rejects(p.identity.signIn({ tenant: T, username: 'member1', password: `wrong ${i} password` }, { clientAddress: '192.0.2.7', userAgent: 'test', correlationId: newCorrelationId() }));
    }
    await assert.rejects(p.identity.signIn({ tenant: T, username: '<img src=x>', password: 'wrong password' }, { clientAddress: '192.0.2.8', userAgent: 'test', correlationId: newCorrelationId() }));
    await p.identity.signIn({ tenant: 'globex', username: 'admin', password: ADMIN_PW }, { clientAddress: '192.0.2.9', userAgent: 'test', correlationId: newCorrelationId() });

    const { page, problems } = await newPage();
    await signIn(page, 'auditor1', USER_PW);
    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.waitForURL(`${p.base}/admin/audit`);
    await ready(page);
    const rows = page.locator('#audit tbody tr');
    const all = await rows.count();
    assert.ok(all >= 5, `records shown: ${all}`);
    assert.match((await page.locator('#audit-count').textContent()) ?? '', new RegExp(`^Records 1–${all} of ${all}\\.$`));
    assert.equal(await page.locator('#audit tbody', { hasText: 'globex' }).count(), 0, 'no other tenant’s record');
    // markup in a record is text
    assert.equal(await page.locator('#audit img').count(), 0);
    assert.equal(await page.locator('#audit tbody td', { hasText: '<img src=x>' }).count(), 1);

    await page.getByLabel('Outcome').selectOption('failure');
    await page.getByLabel('Actor').fill('member1');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.locator('#audit-count', { hasText: 'of 3.' }).waitFor({ timeout: 5000 });
    assert.equal(await rows.count(), 3);
    for (let i = 0; i < 3; i++) assert.equal(await rows.nth(i).getAttribute('data-outcome'), 'failure');
    assert.equal(await page.getByRole('button', { name: 'Next page' }).isDisabled(), true);

    // the export links carry the filters; the export is the tenant's records with the verification
    const href = (await page.locator('#export-csv').getAttribute('href')) ?? '';
    assert.match(href, /^\/api\/v1\/audit\/export\?/);
    const params = new URLSearchParams(href.split('?')[1]);
    assert.equal(params.get('format'), 'csv');
    assert.equal(params.get('outcome'), 'failure');
    assert.equal(params.get('actor'), 'member1');
    // fetched by the page itself (the browser's cookie and TLS; under the page's CSP)
    const get = (u: string) =>
      page.evaluate(async (url) => {
        const r = await fetch(url, { credentials: 'same-origin' });
        return { status: r.status, chain: r.headers.get('x-audit-chain'), text: await r.text() };
      }, u);
    const csv = await get(href);
    assert.equal(csv.status, 200);
    assert.equal(csv.chain, 'ok');
    const lines = csv.text.split('\r\n').filter((l) => l !== '');
    assert.equal(lines.length, 1 + 3 + 1);
    const jsonl = await get((await page.locator('#export-jsonl').getAttribute('href')) ?? '');
    const last = JSON.parse(jsonl.text.trim().split('\n').at(-1) as string) as Record<string, unknown>;
    assert.equal(last['chain'], 'ok');
    assert.equal(last['records'], 3);

    // a bad filter shows the API's message
    await page.getByLabel('Action').fill('BAD ACTION');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.locator('#message.error').waitFor({ timeout: 5000 });
    assert.match((await page.locator('#message').textContent()) ?? '', /^Invalid request: query parameter action\. \(reference [0-9A-Z]{26}\)$/);
    assert.deepEqual(problems, []);

    const member = await newPage();
    await signIn(member.page, 'member1', USER_PW);
    await member.page.goto('/admin/audit');
    await ready(member.page);
    assert.match((await member.page.locator('#message.error').textContent()) ?? '', /^Permission denied\. \(reference [0-9A-Z]{26}\)$/);
    assert.equal(await member.page.locator('#audit tbody tr').count(), 0);
    assert.equal(await member.page.locator('#audit-filter').isVisible(), false, 'no filter form is offered');
  });

  it('an administrator edits the allow-list: a list that would lock them out needs a confirmation; an auditor only reads it', async () => {
    const { page, problems } = await newPage();
    await signIn(page, 'admin', ADMIN_PW);
    await page.getByRole('link', { name: 'Allow-list' }).click();
    await page.waitForURL(`${p.base}/admin/allow-list`);
    await ready(page);
    assert.equal(await page.locator('#your-address').textContent(), '127.0.0.1');
    assert.equal(await page.locator('#allowlist-updated').textContent(), 'No list has been set.');
    const box = page.getByLabel(/Address blocks/);

    await box.fill('10.0.0.1/8');
    await page.getByRole('button', { name: 'Save allow-list' }).click();
    await page.locator('#message.error').waitFor({ timeout: 5000 });
    assert.match((await page.locator('#message').textContent()) ?? '', /^Invalid request: cidrs\[0\]: /);

    await box.fill('192.0.2.0/24');
    await page.getByRole('button', { name: 'Save allow-list' }).click();
    await page.locator('#message.error', { hasText: 'does not include your current address' }).waitFor({ timeout: 5000 });
    assert.equal(await page.getByLabel('I understand that this list locks me out').isVisible(), true);

    await box.fill('192.0.2.0/24\n127.0.0.1\n');
    await page.getByRole('button', { name: 'Save allow-list' }).click();
    await page.locator('#message.ok').waitFor({ timeout: 5000 });
    assert.equal(await box.inputValue(), '192.0.2.0/24\n127.0.0.1/32');
    assert.equal(await page.locator('#you-admitted').textContent(), 'admitted by the list');
    const tenant = await p.identity.repo.tenantBySlug(T);
    const allowLists = new TenantAllowLists(p.db, p.clock);
    assert.deepEqual((await allowLists.get(tenant?.id as string)).cidrs, ['192.0.2.0/24', '127.0.0.1/32']);
    assert.deepEqual(problems, []);

    const auditor = await newPage();
    await signIn(auditor.page, 'auditor1', USER_PW);
    await auditor.page.goto('/admin/allow-list');
    await ready(auditor.page);
    assert.equal(await auditor.page.getByLabel(/Address blocks/).inputValue(), '192.0.2.0/24\n127.0.0.1/32');
    assert.equal(await auditor.page.getByRole('button', { name: 'Save allow-list' }).isVisible(), false);

    // back to no list, for the other scenarios
    await box.fill('');
    const [put] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/v1/allow-list') && r.request().method() === 'PUT', { timeout: 5000 }),
      page.getByRole('button', { name: 'Save allow-list' }).click(),
    ]);
    assert.equal(put.status(), 200);
    assert.deepEqual((await allowLists.get(tenant?.id as string)).cidrs, []);
  });

  it('an administrator lifts a block caused by failures against the organisation; a shared one is for a platform administrator', async () => {
    const fail = async (tenant: string, address: string): Promise<void> => {
      await assert.rejects(p.identity.signIn({ tenant, username: 'nobody', password: 'wrong password here' }, { clientAddress: address, userAgent: 'test', correlationId: newCorrelationId() }));
      p.defender.report(address, 'auth-failed');
    };
    for (let i = 0; i < 3; i++) await fail(T, '198.51.100.1');
    for (const t of [T, 'globex', T]) await fail(t, '198.51.100.2');
    for (let i = 0; i < 3; i++) await fail('globex', '198.51.100.3');
    await p.audit.flush();

    const { page, problems } = await newPage();
    await signIn(page, 'admin', ADMIN_PW);
    await page.getByRole('link', { name: 'Blocked addresses' }).click();
    await page.waitForURL(`${p.base}/admin/blocks`);
    await ready(page);
    const rows = page.locator('#blocks tbody tr');
    assert.equal(await rows.count(), 2, 'globex’s block is not shown');
    const shared = page.locator('#blocks tbody tr[data-address="198.51.100.2"]');
    assert.equal(await shared.locator('td').nth(4).textContent(), 'Platform administrator only');
    assert.equal(await shared.locator('button').count(), 0);
    await page.getByRole('button', { name: 'Lift the block of 198.51.100.1' }).click();
    await page.locator('#message.ok').waitFor({ timeout: 5000 });
    assert.equal(await page.locator('#message').textContent(), 'The block of 198.51.100.1 was lifted.');
    assert.equal(await rows.count(), 1);
    assert.equal(p.defender.isBlocked('198.51.100.1'), false);
    assert.equal(p.defender.isBlocked('198.51.100.2'), true);
    assert.equal(p.defender.isBlocked('198.51.100.3'), true);
    assert.deepEqual(problems, []);
  });
});

describe('TOTP enrolment page in chromium', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent: browser tests skipped` }, () => {
  let p: HttpsPlatform;
  let browser: Browser;
  let context: BrowserContext | undefined;

  before(async () => {
    p = await startHttpsPlatform({ mfa: true });
    await seedTenant({ identity: p.identity } as unknown as Platform, 'acme');
    browser = await launchChromium(p.spki);
  });
  after(async () => {
    await context?.close().catch(() => undefined);
    await browser?.close();
    await p.close();
  });

  const codeAt = (secret: string, ms: number): string => new TOTP({ secret: Secret.fromBase32(secret), algorithm: 'SHA1', digits: 6, period: 30 }).generate({ timestamp: ms });

  it('an administrator who must enrol is sent to /totp, enrols with a code computed by otpauth, sees the recovery codes once and gets a full session', async () => {
    context = await browser.newContext({ baseURL: p.base });
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) problems.push(m.text());
    });
    await page.goto('/signin');
    await page.waitForSelector('body[data-ready="true"]');
    await page.getByLabel('Organisation').fill('acme');
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill(ADMIN_PW);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${p.base}/totp?required=1`);
    await page.waitForSelector('body[data-ready="true"]');
    assert.match((await page.locator('#message').textContent()) ?? '', /must use two-step sign-in/);

    await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
    await page.locator('#totp-setup').waitFor({ state: 'visible', timeout: 5000 });
    const uri = (await page.locator('#totp-uri').textContent()) ?? '';
    assert.match(uri, /^otpauth:\/\/totp\/.*secret=[A-Z2-7]+/);
    const secret = ((await page.locator('#totp-secret').textContent()) ?? '').replace(/\s+/g, '');
    assert.equal(new URL(uri).searchParams.get('secret'), secret, 'the key shown is the one in the link');

    // a wrong code: the API's message, and the form stays
    await page.getByLabel('Code from the app').fill(codeAt(secret, p.clock.now() + 10 * 60_000));
    await page.getByRole('button', { name: 'Confirm' }).click();
    await page.locator('#message.error').waitFor({ timeout: 5000 });
    assert.equal(await page.locator('#totp-setup').isVisible(), true);

    await page.getByLabel('Code from the app').fill(codeAt(secret, p.clock.now()));
    await page.getByRole('button', { name: 'Confirm' }).click();
    await page.locator('#totp-done').waitFor({ state: 'visible', timeout: 5000 });
    const codes = await page.locator('#recovery-codes li').allTextContents();
    assert.equal(codes.length, 10);
    assert.equal(new Set(codes).size, 10);
    assert.equal(await page.locator('#totp-secret').textContent(), '', 'the key is no longer on screen');

    // the session is full now: an administrator's page works
    await page.goto('/admin/users');
    await page.waitForSelector('body[data-ready="true"]');
    assert.ok((await page.locator('#users tbody tr').count()) >= 3);
    // the recovery codes were shown once: enrolling again is refused, nothing shows them
    await page.goto('/totp');
    await page.waitForSelector('body[data-ready="true"]');
    await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
    await page.locator('#message.error').waitFor({ timeout: 5000 });
    assert.equal(await page.locator('#recovery-codes li').count(), 0);

    // next sign-in: password, then the code on the same page, then a full session
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(`${p.base}/signin`);
    await page.waitForSelector('body[data-ready="true"]');
    p.clock.advance(31_000);
    await page.getByLabel('Organisation').fill('acme');
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill(ADMIN_PW);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByLabel('Authentication code').waitFor({ state: 'visible', timeout: 5000 });
    await page.getByLabel('Authentication code').fill(codeAt(secret, p.clock.now()));
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${p.base}/`);
    await page.goto('/admin/users');
    await page.waitForSelector('body[data-ready="true"]');
    assert.ok((await page.locator('#users tbody tr').count()) >= 3);
    assert.deepEqual(problems, []);
  });

  it('an administrator with a temporary password enrols first, then is sent to change the password', async () => {
    const tenant = await p.identity.repo.tenantBySlug('acme');
    await p.identity.provisionUser(tenant?.id as string, { username: 'admin2', roles: ['tenant_admin'], password: 'temporary passphrase 77', mustChangePassword: true });
    const ctx = await browser.newContext({ baseURL: p.base });
    try {
      const page = await ctx.newPage();
      await page.goto('/signin');
      await page.waitForSelector('body[data-ready="true"]');
      await page.getByLabel('Organisation').fill('acme');
      await page.getByLabel('User name').fill('admin2');
      await page.getByLabel('Password').fill('temporary passphrase 77');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(`${p.base}/totp?required=1`);
      await page.waitForSelector('body[data-ready="true"]');
      await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
      await page.locator('#totp-setup').waitFor({ state: 'visible', timeout: 5000 });
      const secret = ((await page.locator('#totp-secret').textContent()) ?? '').replace(/\s+/g, '');
      await page.getByLabel('Code from the app').fill(codeAt(secret, p.clock.now()));
      await page.getByRole('button', { name: 'Confirm' }).click();
      await page.locator('#totp-done').waitFor({ state: 'visible', timeout: 5000 });
      await page.getByRole('link', { name: 'Continue: change your password' }).click();
      await page.waitForURL(`${p.base}/password?required=1`);
      await page.waitForSelector('body[data-ready="true"]');
      await page.getByLabel('Current password').fill('temporary passphrase 77');
      await page.getByLabel('New password', { exact: true }).fill('settled passphrase 2027 x');
      await page.getByLabel('New password again').fill('settled passphrase 2027 x');
      await page.getByRole('button', { name: 'Change password' }).click();
      await page.locator('#message.ok').waitFor({ timeout: 5000 });
    } finally {
      await ctx.close();
    }
  });
});
