/**
 * Bad input against the platform's HTTP API: SQL and script injection strings in every
 * field of sign-in and user creation (refused, or stored inert and returned as JSON
 * data), malformed, oversized and mistyped bodies, hostile ids in paths, a seeded fuzz
 * of sign-in bodies — every refusal a sanitized `{ code, message, ref }`, never a 500 —
 * and the HTTPS mode (TLS, HSTS) with a certificate made by openssl.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createPlatformApp } from '../../src/platform/app.js';
import { throwsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';
import { ADMIN_PW, Client, seedTenant, signedIn, startPlatform, USER_PW, type Platform, type Res, type SeededTenant } from './helpers.js';

const INJECTIONS = [
  "' OR '1'='1",
  "admin'--",
  "'; DROP TABLE platform_user; --",
  '" OR ""="',
  '1; SELECT * FROM platform_session',
  "x' UNION SELECT password_hash FROM platform_user --",
  '<script>alert(1)</script>',
  '"><img src=x onerror=alert(1)>',
  'javascript:alert(1)',
  '{{7*7}}${7*7}',
  '../../etc/passwd',
  '%00%27%22',
  'Robert\'); DELETE FROM platform_tenant;--',
];

let platform: Platform | undefined;

/** The audit records of the running platform, by correlation id. */
function auditByRef(): Map<string, { type: string; fields: Record<string, unknown> }> {
  const out = new Map<string, { type: string; fields: Record<string, unknown> }>();
  for (const l of readFileSync((platform as Platform).auditFile, 'utf8').split('\n')) {
    if (l === '') continue;
    const rec = JSON.parse(l) as { type: string; correlationId?: string; fields: Record<string, unknown> };
    if (rec.correlationId !== undefined) out.set(rec.correlationId, rec);
  }
  return out;
}

/** A sanitized error body whose ref names an audit record of the refusal. */
function sanitized(r: Res, what: string): void {
  assert.ok(r.status >= 400 && r.status < 500, `${what}: ${r.status} ${r.text.slice(0, 200)}`);
  assert.deepEqual(Object.keys(r.body), ['error'], `${what}: ${r.text.slice(0, 200)}`);
  assert.deepEqual(Object.keys(r.error ?? {}).sort(), ['code', 'correlation_id', 'message'], `${what}: ${r.text.slice(0, 200)}`);
  assert.match(String(r.error?.correlation_id), /^[0-9A-Z]{26}$/);
  assert.ok(!/at .*\.js|SQLITE|kysely|select |stack/i.test(r.text), `${what} leaks internals: ${r.text}`);
  const rec = auditByRef().get(String(r.error?.correlation_id));
  assert.ok(rec, `${what}: no audit record for ref ${String(r.error?.correlation_id)}`);
  assert.ok(['web.refusal', 'web.signin'].includes(rec.type), `${what}: ${rec.type}`);
  if (rec.type === 'web.refusal') assert.equal(rec.fields['status'], r.status);
}

async function tableCounts(p: Platform): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of ['platform_tenant', 'platform_user', 'platform_role', 'platform_user_role', 'platform_session', 'platform_policy'] as const) {
    const r = await p.db.db.selectFrom(t).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    out[t] = Number(r.n);
  }
  return out;
}

describe('platform bad input', () => {
  let p: Platform;
  let acme: SeededTenant;
  let admin: Client;

  before(async () => {
    p = await startPlatform();
    platform = p;
    acme = await seedTenant(p, 'acme');
    admin = await signedIn(p, 'acme', 'admin', ADMIN_PW);
  });
  after(async () => {
    await p.close();
  });

  it('sign-in: injection strings in every field are refused with the generic answer; the tables are intact', async () => {
    const before = await tableCounts(p);
    const fields = ['tenant', 'username', 'password'] as const;
    for (const inj of INJECTIONS) {
      for (const f of fields) {
        const body: Record<string, string> = { tenant: 'acme', username: 'admin', password: 'definitely wrong 1' };
        body[f] = inj;
        const r = await new Client(p.base).req('POST', '/api/v1/auth/signin', body);
        sanitized(r, `${f}=${inj}`);
        assert.equal(r.status, 401, `${f}=${inj}`);
        assert.equal(r.error?.code, 'AUTH_FAILED');
      }
    }
    // the failures counted towards admin's lockout: clear it for the next tests
    await p.identity.repo.clearFailures(acme.id, acme.users.tenant_admin);
    const after = await tableCounts(p);
    assert.deepEqual({ ...after, platform_session: 0 }, { ...before, platform_session: 0 });
    assert.equal(after.platform_session, before.platform_session, 'no session was created');
  });

  it('user creation: injection in the user name or roles is refused; in the display name and password it is stored inert', async () => {
    for (const inj of INJECTIONS) {
      const r = await admin.req('POST', '/api/v1/users', { username: inj, password: 'initial passphrase 404' });
      sanitized(r, `username=${inj}`);
      assert.equal(r.status, 400);
      const roles = await admin.req('POST', '/api/v1/users', { username: 'rolefuzz', roles: [inj], password: 'initial passphrase 404' });
      assert.equal(roles.status, 400, `roles=${inj}`);
    }
    let i = 0;
    for (const inj of INJECTIONS) {
      i++;
      const pw = `${inj} padding to twelve`;
      const r = await admin.req('POST', '/api/v1/users', { username: `inert${i}`, displayName: inj, password: pw });
      assert.equal(r.status, 201, `${inj}: ${r.text}`);
      assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
      assert.match(r.headers.get('content-security-policy') ?? '', /default-src 'none'/);
      assert.equal((r.body['user'] as Record<string, unknown>)['displayName'], inj, 'returned exactly, as JSON data');
      const c = new Client(p.base);
      const s = await c.signIn('acme', `inert${i}`, pw);
      assert.equal(s.status, 200, `the password ${JSON.stringify(pw)} works exactly as given`);
      assert.equal((await new Client(p.base).signIn('acme', `inert${i}`, "' OR '1'='1")).status, 401);
    }
    const list = await admin.req('GET', '/api/v1/users');
    const names = (list.body['users'] as { displayName: string }[]).map((u) => u.displayName);
    for (const inj of INJECTIONS) assert.ok(names.includes(inj));
    const counts = await tableCounts(p);
    assert.equal(counts.platform_tenant, 1);
    assert.equal(counts.platform_role, 3);
  });

  it('malformed, mistyped, oversized and non-JSON bodies; unknown fields; hostile path ids', async () => {
    const cases: [string, string, unknown, Record<string, string> | undefined, number][] = [
      ['POST', '/api/v1/auth/signin', '{"tenant":', undefined, 400],
      ['POST', '/api/v1/auth/signin', '', undefined, 400],
      ['POST', '/api/v1/auth/signin', { tenant: 'acme', username: 'admin' }, undefined, 400],
      ['POST', '/api/v1/auth/signin', { tenant: 'acme', username: ['admin'], password: ADMIN_PW }, undefined, 400],
      ['POST', '/api/v1/auth/signin', { tenant: 'acme', username: 'admin', password: ADMIN_PW, role: 'tenant_admin' }, undefined, 400],
      ['POST', '/api/v1/auth/signin', { tenant: 'acme', username: 'admin', password: 'x'.repeat(20_000) }, undefined, 413],
      ['POST', '/api/v1/auth/signin', 'tenant=acme&username=admin', { 'content-type': 'application/x-www-form-urlencoded' }, 415],
      ['POST', '/api/v1/auth/signin', 'tenant=acme', { 'content-type': 'text/plain' }, 415],
      ['POST', '/api/v1/users', { username: 'typed', password: 12345678901234 }, undefined, 400],
      ['POST', '/api/v1/users', { username: 'typed', password: 'initial passphrase 404', isAdmin: true }, undefined, 400],
      ['PATCH', `/api/v1/users/${acme.users.member}`, { status: 'root' }, undefined, 400],
      ['PATCH', `/api/v1/users/${acme.users.member}`, {}, undefined, 400],
      ['PATCH', `/api/v1/users/${acme.users.tenant_admin}`, { roles: ['member'] }, undefined, 409],
      ['PUT', '/api/v1/policy', { minPasswordLength: 4 }, undefined, 400],
      ['PUT', '/api/v1/policy', { minPasswordLength: 12, superuser: true }, undefined, 400],
      ['POST', "/api/v1/users/1' OR '1'='1/reset-password", { password: 'temporary passphrase 808' }, undefined, 404],
      ['PATCH', '/api/v1/users/%3Cscript%3E', { status: 'disabled' }, undefined, 404],
      ['PATCH', `/api/v1/users/${'9'.repeat(300)}`, { status: 'disabled' }, undefined, 404],
      ['DELETE', "/api/v1/me/sessions/' OR 1=1 --", undefined, undefined, 404],
      ['GET', '/api/v1/nothing-here', undefined, undefined, 404],
      ['PATCH', '/api/v1/users/%E0%A4%A', { status: 'disabled' }, undefined, 400],
      ['GET', '/api/v1/users/../policy', undefined, undefined, 200],
    ];
    for (const [method, url, body, headers, want] of cases) {
      const r = await admin.req(method, url, body, headers ? { headers } : {});
      assert.equal(r.status, want, `${method} ${url} ${JSON.stringify(body)?.slice(0, 80)}: ${r.text.slice(0, 200)}`);
      if (want >= 400) sanitized(r, `${method} ${url}`);
    }
    // no CORS: a cross-site preflight gets no permission
    const pre = await fetch(`${p.base}/api/v1/auth/signin`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    assert.equal(pre.headers.get('access-control-allow-origin'), null);
    assert.ok(pre.status >= 400, `preflight ${pre.status}`);
    assert.equal((await admin.req('GET', '/api/v1/me')).status, 200, 'the admin is still fine');
  });

  it('fuzz: 300 seeded random sign-in bodies get only 400 or 401, never a session or a 500', async () => {
    const r = new Rng(0x51a9);
    const atoms = ['acme', 'admin', ADMIN_PW, USER_PW, ...INJECTIONS, '', ' ', '\u0000', 'é'.repeat(300), '😀'];
    const value = (): unknown => r.pick([r.pick(atoms), r.int(1e9), null, true, [r.pick(atoms)], { a: r.pick(atoms) }]);
    const before = await tableCounts(p);
    for (let i = 0; i < 300; i++) {
      const body: Record<string, unknown> = {};
      for (const k of ['tenant', 'username', 'password', 'extra']) if (r.chance(0.8)) body[k] = value();
      // never the real combination
      if (body['tenant'] === 'acme' && body['username'] === 'admin' && body['password'] === ADMIN_PW) body['password'] = 'nope nope nope';
      const raw = r.chance(0.1) ? JSON.stringify(body).slice(0, r.int(40)) : body;
      const res = await new Client(p.base).req('POST', '/api/v1/auth/signin', raw);
      assert.ok(res.status === 400 || res.status === 401, `${JSON.stringify(raw).slice(0, 200)} → ${res.status} ${res.text.slice(0, 200)}`);
      sanitized(res, 'fuzz');
    }
    await p.identity.repo.clearFailures(acme.id, acme.users.tenant_admin);
    assert.equal((await tableCounts(p)).platform_session, before.platform_session);
  });

  it('refuses to start without TLS unless told to; serves HTTPS with HSTS when given a certificate', async () => {
    throwsCode(() => createPlatformApp({ identity: p.identity }), 'CONFIG');
    const key = path.join(p.dir, 'tls.key');
    const cert = path.join(p.dir, 'tls.crt');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const web = createPlatformApp({ identity: p.identity, https: { key: readFileSync(key), cert: readFileSync(cert) } });
    await web.app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const port = (web.app.server.address() as AddressInfo).port;
      const res = await new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
        const req = https.request(
          { host: '127.0.0.1', port, method: 'POST', path: '/api/v1/auth/signin', ca: readFileSync(cert), headers: { 'content-type': 'application/json' } },
          (r) => {
            let body = '';
            r.on('data', (d: Buffer) => (body += d.toString()));
            r.on('end', () => resolve({ status: r.statusCode ?? 0, headers: r.headers, body }));
          },
        );
        req.on('error', reject);
        req.end(JSON.stringify({ tenant: 'acme', username: 'member1', password: USER_PW }));
      });
      assert.equal(res.status, 200, res.body);
      assert.match(String(res.headers['strict-transport-security']), /max-age=\d+/);
      assert.match(String(res.headers['set-cookie']), /^__Host-tachyon-session=.*; Secure; HttpOnly; SameSite=Strict$/);
    } finally {
      await web.app.close();
    }
  });
});
