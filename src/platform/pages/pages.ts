/**
 * The platform's web pages: a fixed table of static HTML pages, one vanilla ES-module
 * script and one style sheet (no framework, no build step). The pages hold no data and
 * need no session to load; everything they show comes from the JSON API (/api/v1), which
 * authenticates, checks CSRF and roles — a member who opens an administrator's page gets
 * the page's frame and the API's refusal, shown as its sanitized message.
 *
 * Every page answer carries `Content-Security-Policy: default-src 'self'; base-uri 'none';
 * form-action 'self'; frame-ancestors 'none'` (set by a route-level onSend hook, which runs
 * after the app's own, stricter `default-src 'none'` for API answers): no inline script or
 * style, no external resource.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

/** The CSP of every page, script and style sheet. */
export const PAGE_CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** Where the script and style sheet live (read once, when the routes are registered). */
const STATIC_DIR = new URL('../../../../src/platform/pages/static/', import.meta.url);

interface PageDef {
  readonly title: string;
  /** `data-page` of the body: selects the script's behaviour. */
  readonly page: string;
  readonly body: string;
}

const MESSAGE = '<p id="message" role="alert" aria-live="assertive" hidden></p>';

const NAV = `<nav aria-label="Main">
  <a href="/">My account</a>
  <a href="/password">Change password</a>
  <a href="/sessions">My sessions</a>
  <a href="/totp">Two-step sign-in</a>
  <a href="/admin/users" data-admin hidden>Users</a>
  <a href="/admin/policy" data-admin hidden>Policy</a>
  <a href="/admin/audit" data-admin hidden>Audit log</a>
  <a href="/admin/allow-list" data-admin hidden>Allow-list</a>
  <a href="/admin/blocks" data-admin hidden>Blocked addresses</a>
  <a href="/admin/sso" data-admin hidden>Single sign-on</a>
  <button type="button" id="signout">Sign out</button>
</nav>`;

/** The pages, by URL. */
export const PAGES: Readonly<Record<string, PageDef>> = Object.freeze({
  '/signin': {
    title: 'Sign in',
    page: 'signin',
    body: `<section id="disclaimer" hidden aria-labelledby="disclaimer-title"><h2 id="disclaimer-title">Notice</h2><p id="disclaimer-text"></p>
  <label><input id="accept-disclaimer" type="checkbox"> I have read this notice and I am authorised to proceed</label></section>
<form id="signin-form" novalidate>
  <label for="tenant">Organisation</label>
  <input id="tenant" name="tenant" autocomplete="organization" required>
  <label for="username">User name</label>
  <input id="username" name="username" autocomplete="username" required>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required>
  <div id="second-factor" hidden>
    <label for="totp">Authentication code</label>
    <input id="totp" name="totp" inputmode="numeric" autocomplete="one-time-code">
  </div>
  <button type="submit">Sign in</button>
</form>
<div id="sso" hidden></div>`,
  },
  '/': {
    title: 'My account',
    page: 'account',
    body: `<dl id="account" aria-busy="true">
  <dt>User name</dt><dd id="me-username"></dd>
  <dt>Name</dt><dd id="me-displayname"></dd>
  <dt>Organisation</dt><dd id="me-tenant"></dd>
  <dt>Roles</dt><dd id="me-roles"></dd>
</dl>`,
  },
  '/password': {
    title: 'Change password',
    page: 'password',
    body: `<form id="password-form" novalidate>
  <label for="current-password">Current password</label>
  <input id="current-password" type="password" autocomplete="current-password" required>
  <label for="new-password">New password</label>
  <input id="new-password" type="password" autocomplete="new-password" required>
  <label for="confirm-password">New password again</label>
  <input id="confirm-password" type="password" autocomplete="new-password" required>
  <button type="submit">Change password</button>
</form>`,
  },
  '/sessions': {
    title: 'My sessions',
    page: 'sessions',
    body: `<table id="sessions">
  <caption>Your active sessions</caption>
  <thead><tr><th scope="col">Signed in</th><th scope="col">Last seen</th><th scope="col">Address</th><th scope="col">Browser</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
  <tbody></tbody>
</table>`,
  },
  '/admin/users': {
    title: 'Users',
    page: 'users',
    body: `<table id="users">
  <caption>Users of your organisation</caption>
  <thead><tr><th scope="col">User name</th><th scope="col">Name</th><th scope="col">Roles</th><th scope="col">Status</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
  <tbody></tbody>
</table>
<h2>Create a user</h2>
<form id="create-form" novalidate>
  <label for="new-username">User name</label>
  <input id="new-username" required autocomplete="off">
  <label for="new-displayname">Name</label>
  <input id="new-displayname" autocomplete="off">
  <label for="new-role">Role</label>
  <select id="new-role"><option value="member">member</option><option value="auditor">auditor</option><option value="tenant_admin">tenant_admin</option></select>
  <label for="new-user-password">Temporary password</label>
  <input id="new-user-password" type="password" autocomplete="new-password" required>
  <button type="submit">Create user</button>
</form>
<h2>Reset a password</h2>
<form id="reset-form" novalidate>
  <label for="reset-user">User</label>
  <select id="reset-user" required></select>
  <label for="reset-password">Temporary password</label>
  <input id="reset-password" type="password" autocomplete="new-password" required>
  <button type="submit">Reset password</button>
</form>`,
  },
  '/admin/policy': {
    title: 'Policy',
    page: 'policy',
    body: `<form id="policy-form" novalidate aria-busy="true">
  <label for="minPasswordLength">Shortest password (characters)</label><input id="minPasswordLength" type="number" min="8" max="256">
  <label><input id="rejectCommonPasswords" type="checkbox"> Refuse common passwords</label>
  <label for="maxFailedAttempts">Failed sign-ins before locking</label><input id="maxFailedAttempts" type="number" min="1" max="100">
  <label for="failureWindowSeconds">Counting window (seconds)</label><input id="failureWindowSeconds" type="number" min="1">
  <label for="lockoutSeconds">Lockout (seconds)</label><input id="lockoutSeconds" type="number" min="1">
  <label for="lockoutScope">Failed sign-ins lock</label><select id="lockoutScope"><option value="account">the account (from every address)</option><option value="address">the account from the guessing address only</option></select>
  <label for="passwordExpiryDays">Password expiry (days, 0 = never)</label><input id="passwordExpiryDays" type="number" min="0">
  <label for="sessionIdleSeconds">Session idle timeout (seconds)</label><input id="sessionIdleSeconds" type="number" min="1">
  <label for="sessionAbsoluteSeconds">Session lifetime (seconds)</label><input id="sessionAbsoluteSeconds" type="number" min="1">
  <label for="reauthWindowSeconds">Re-authentication before sensitive changes after (seconds)</label><input id="reauthWindowSeconds" type="number" min="60" max="86400">
  <button type="submit">Save policy</button>
</form>`,
  },
  '/admin/audit': {
    title: 'Audit log',
    page: 'audit',
    body: `<form id="audit-filter" novalidate>
  <label for="audit-from">From (date)</label><input id="audit-from" type="date">
  <label for="audit-to">To (date)</label><input id="audit-to" type="date">
  <label for="audit-action">Action</label><input id="audit-action" autocomplete="off" placeholder="web.signin, user.create …">
  <label for="audit-actor">Actor</label><input id="audit-actor" autocomplete="off">
  <label for="audit-outcome">Outcome</label>
  <select id="audit-outcome"><option value="">any</option><option value="success">success</option><option value="failure">failure</option><option value="pending">pending</option></select>
  <button type="submit">Filter</button>
</form>
<p id="audit-count" aria-live="polite"></p>
<table id="audit">
  <caption>Audit records of your organisation (oldest first)</caption>
  <thead><tr><th scope="col">Time</th><th scope="col">Action</th><th scope="col">Actor</th><th scope="col">Outcome</th><th scope="col">Address</th><th scope="col">Details</th></tr></thead>
  <tbody></tbody>
</table>
<nav aria-label="Pages" id="audit-pages"><button type="button" id="audit-prev">Previous page</button> <button type="button" id="audit-next">Next page</button></nav>
<p id="audit-export">Export the filtered records: <a id="export-jsonl" href="/api/v1/audit/export?format=jsonl" download>JSON lines</a> · <a id="export-csv" href="/api/v1/audit/export?format=csv" download>CSV</a></p>`,
  },
  '/admin/allow-list': {
    title: 'IP allow-list',
    page: 'allowlist',
    body: `<p>Only addresses in this list may sign in to your organisation or use its sessions and API tokens. An empty list admits every address.</p>
<p>Your current address: <strong id="your-address"></strong> (<span id="you-admitted"></span>)</p>
<form id="allowlist-form" novalidate aria-busy="true">
  <label for="allowlist-cidrs">Address blocks (one per line, e.g. 192.0.2.0/24 or 2001:db8::/32)</label>
  <textarea id="allowlist-cidrs" rows="8" cols="40" spellcheck="false" autocomplete="off"></textarea>
  <div id="allowlist-confirm" hidden><label><input id="confirmLockout" type="checkbox"> I understand that this list locks me out</label></div>
  <button type="submit">Save allow-list</button>
</form>
<p id="allowlist-updated"></p>`,
  },
  '/admin/blocks': {
    title: 'Blocked addresses',
    page: 'blocks',
    body: `<p>Addresses the IP defender blocks after failed sign-ins against your organisation. You can lift a block caused only by failures against your organisation; one that also failed elsewhere is lifted by a platform administrator.</p>
<table id="blocks">
  <caption>Blocked addresses</caption>
  <thead><tr><th scope="col">Address</th><th scope="col">Blocked until</th><th scope="col">Blocks so far</th><th scope="col">Failures here</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
  <tbody></tbody>
</table>
<p id="blocks-empty" hidden>No address is blocked.</p>`,
  },
  '/admin/sso': {
    title: 'Single sign-on',
    page: 'sso',
    body: `<p>Your organisation’s identity providers (OpenID Connect, SAML 2.0), as JSON: see the documentation for the fields. An OpenID Connect section without <code>clientSecret</code> keeps the stored secret.</p>
<p>OpenID Connect client secret: <strong id="sso-secret"></strong></p>
<form id="sso-form" novalidate aria-busy="true">
  <label for="sso-config">Configuration (JSON)</label>
  <textarea id="sso-config" rows="18" cols="80" spellcheck="false" autocomplete="off"></textarea>
  <button type="submit">Save configuration</button>
  <button type="button" id="sso-clear" hidden>Remove single sign-on</button>
</form>
<p id="sso-updated"></p>`,
  },
  '/totp': {
    title: 'Two-step sign-in',
    page: 'totp',
    body: `<p>Protect your account with an authenticator app (time-based one-time codes, RFC 6238).</p>
<section id="totp-start">
  <button type="button" id="totp-begin">Set up an authenticator app</button>
</section>
<section id="totp-setup" hidden aria-labelledby="totp-setup-title">
  <h2 id="totp-setup-title">1. Add the account to your app</h2>
  <p>Enter this key in your authenticator app, or give it the link below (most apps accept it pasted or as a QR code made from it).</p>
  <dl>
    <dt>Key</dt><dd><code id="totp-secret"></code></dd>
    <dt>Link</dt><dd><code id="totp-uri"></code></dd>
    <dt>Valid until</dt><dd id="totp-expires"></dd>
  </dl>
  <h2>2. Confirm with a code</h2>
  <form id="totp-confirm-form" novalidate>
    <label for="totp-code">Code from the app</label>
    <input id="totp-code" inputmode="numeric" autocomplete="one-time-code" required>
    <button type="submit">Confirm</button>
  </form>
</section>
<section id="totp-done" hidden aria-labelledby="totp-done-title">
  <h2 id="totp-done-title">Recovery codes</h2>
  <p>Each code signs you in once if you lose your app. Store them somewhere safe now: they are not shown again.</p>
  <ul id="recovery-codes"></ul>
  <p><a id="totp-continue" href="/">Continue to my account</a></p>
</section>`,
  },
});

/** The whole HTML of one page: no inline script or style, no external resource. */
export function renderPage(def: PageDef): string {
  const nav = def.page === 'signin' ? '' : NAV;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${def.title} · Tachyon</title>
<link rel="stylesheet" href="/assets/app.css">
<script type="module" src="/assets/app.js"></script>
</head>
<body data-page="${def.page}">
<header><p class="brand">Tachyon</p>${nav}</header>
<main>
<h1>${def.title}</h1>
${MESSAGE}
${def.body}
</main>
</body>
</html>
`;
}

/** Every URL the pages add to the app (`GET` only), for documentation and tests. */
export function pageRoutes(): readonly string[] {
  return [...Object.keys(PAGES), '/assets/app.js', '/assets/app.css'];
}

/**
 * Registers the pages, the script and the style sheet on `app` (GET only; public — they
 * carry no data). Call before the app's route-table hook: these routes are not API routes.
 */
export function registerPages(app: FastifyInstance): void {
  const assets: Record<string, { type: string; body: string }> = {
    '/assets/app.js': { type: 'text/javascript; charset=utf-8', body: readFileSync(new URL('app.js', STATIC_DIR), 'utf8') },
    '/assets/app.css': { type: 'text/css; charset=utf-8', body: readFileSync(new URL('app.css', STATIC_DIR), 'utf8') },
  };
  const csp = (_request: unknown, reply: { header(name: string, value: string): unknown }, payload: unknown, done: (err: null, p: unknown) => void): void => {
    reply.header('content-security-policy', PAGE_CSP);
    done(null, payload);
  };
  for (const [url, def] of Object.entries(PAGES)) {
    const html = renderPage(def);
    app.route({ method: 'GET', url, onSend: csp, handler: (_request, reply) => reply.type('text/html; charset=utf-8').send(html) });
  }
  for (const [url, a] of Object.entries(assets)) {
    app.route({ method: 'GET', url, onSend: csp, handler: (_request, reply) => reply.type(a.type).send(a.body) });
  }
}

/** Where the static files are (for the docs and tests). */
export const PAGES_STATIC_DIR = fileURLToPath(STATIC_DIR);
