/**
 * The authorization matrix, generated from the route table (src/platform/routes.ts):
 * every route × every role (and anonymous) × own/other tenant, over real HTTP. The
 * expected answer of each cell is derived from the route's rule; the application can
 * register no route without a rule, and this file must know how to call every route in
 * the table — so a new endpoint without a rule (or without a case here) fails.
 *
 * "Other tenant": routes with an id are called with the id of tenant B's row (expected:
 * 404, the same as a missing id); routes without one are called with B's id in the query
 * (expected: the caller's own tenant is served). Tenant B's rows are compared before and
 * after, and no response may mention any of B's ids.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createPlatformApp } from '../../src/platform/app.js';
import { ROLES, type Role } from '../../src/platform/model.js';
import { allowed, ROUTE_TABLE, routeRules, type RouteName } from '../../src/platform/routes.js';
import { TachyonError } from '../../src/core/errors.js';
import { Client, PG_URL, seedTenant, signedIn, startPlatform, USER_PW, type Platform, type SeededTenant } from './helpers.js';

type Side = 'own' | 'other';
type Caller = Role | 'anonymous';
const CALLERS: readonly Caller[] = ['anonymous', ...ROLES];

interface Call {
  method: string;
  url: string;
  body?: unknown;
}

interface CaseCtx {
  side: Side;
  caller: Client;
  callerName: string;
  A: SeededTenant;
  B: SeededTenant;
  /** A fresh user of tenant A (a target that may be changed). */
  victimA(): Promise<string>;
  /** Another session of the caller (anonymous: someone else's in A). */
  ownOtherSession(): Promise<string>;
  /** An API token of the caller (anonymous: someone else's in A). */
  ownToken(): Promise<string>;
  /** A fresh group of tenant A with one member (a target that may be changed). */
  groupA(): Promise<{ id: string; member: string }>;
}

/** How to call each route. Typed by RouteName: a route added to the table without a case here does not compile. */
const CASES: Record<RouteName, (c: CaseCtx) => Promise<Call>> = {
  signIn: async (c) => ({
    method: 'POST',
    url: '/api/v1/auth/signin',
    body: { tenant: c.side === 'own' ? c.A.slug : c.B.slug, username: 'only-in-a', password: USER_PW },
  }),
  disclaimer: async (c) => ({ method: 'GET', url: `/api/v1/auth/disclaimer/${c.side === 'own' ? c.A.slug : c.B.slug}` }),
  ssoMethods: async (c) => ({ method: 'GET', url: `/api/v1/auth/sso/${c.side === 'own' ? c.A.slug : c.B.slug}/methods` }),
  reauth: async (c) => ({ method: 'POST', url: `/api/v1/auth/reauth${q(c)}`, body: { password: USER_PW } }),
  ssoOidcStart: async (c) => ({ method: 'GET', url: `/api/v1/auth/sso/${c.side === 'own' ? c.A.slug : c.B.slug}/oidc/start` }),
  ssoOidcCallback: async (c) => ({ method: 'GET', url: `/api/v1/auth/sso/oidc/callback?state=x&code=y${c.side === 'other' ? `&tenant=${B_ID}` : ''}` }),
  ssoSamlStart: async (c) => ({ method: 'GET', url: `/api/v1/auth/sso/${c.side === 'own' ? c.A.slug : c.B.slug}/saml/start` }),
  ssoSamlAcs: async (c) => ({ method: 'POST', url: `/api/v1/auth/sso/saml/acs${q(c)}`, body: { SAMLResponse: 'PHNhbWw+', RelayState: 'x' } }),
  signInTotp: async (c) => ({ method: 'POST', url: `/api/v1/auth/totp${q(c)}`, body: { code: '123456' } }),
  enrolTotp: async (c) => ({ method: 'POST', url: `/api/v1/me/totp/enrol${q(c)}` }),
  confirmTotp: async (c) => ({ method: 'POST', url: `/api/v1/me/totp/confirm${q(c)}`, body: { code: '123456' } }),
  signOut: async (c) => ({ method: 'POST', url: `/api/v1/auth/signout${q(c)}` }),
  me: async (c) => ({ method: 'GET', url: `/api/v1/me${q(c)}` }),
  changePassword: async (c) => ({
    method: 'POST',
    url: `/api/v1/me/password${q(c)}`,
    body: { currentPassword: USER_PW, newPassword: `renewed passphrase ${c.side} 2027` },
  }),
  listSessions: async (c) => ({ method: 'GET', url: `/api/v1/me/sessions${q(c)}` }),
  endSession: async (c) => ({ method: 'DELETE', url: `/api/v1/me/sessions/${c.side === 'own' ? await c.ownOtherSession() : B_SESSION.id}` }),
  createToken: async (c) => ({ method: 'POST', url: `/api/v1/me/tokens${q(c)}`, body: { name: 'script', scopes: ['read'], expiresInDays: 7 } }),
  listTokens: async (c) => ({ method: 'GET', url: `/api/v1/me/tokens${q(c)}` }),
  deleteToken: async (c) => ({ method: 'DELETE', url: `/api/v1/me/tokens/${c.side === 'own' ? await c.ownToken() : B_TOKEN.id}` }),
  listUsers: async (c) => ({ method: 'GET', url: `/api/v1/users${q(c)}` }),
  createUser: async (c) => ({ method: 'POST', url: `/api/v1/users${q(c)}`, body: { username: `made-by-${c.callerName}-${c.side}`, password: 'initial passphrase 404' } }),
  resetPassword: async (c) => ({
    method: 'POST',
    url: `/api/v1/users/${c.side === 'own' ? await c.victimA() : c.B.users.member}/reset-password`,
    body: { password: 'temporary passphrase 808' },
  }),
  updateUser: async (c) => ({ method: 'PATCH', url: `/api/v1/users/${c.side === 'own' ? await c.victimA() : c.B.users.member}`, body: { status: 'disabled' } }),
  listGroups: async (c) => ({ method: 'GET', url: `/api/v1/groups${q(c)}` }),
  createGroup: async (c) => ({ method: 'POST', url: `/api/v1/groups${q(c)}`, body: { name: `group of ${c.callerName} ${c.side}` } }),
  deleteGroup: async (c) => ({ method: 'DELETE', url: `/api/v1/groups/${c.side === 'own' ? (await c.groupA()).id : B_GROUP.id}` }),
  addGroupMember: async (c) =>
    c.side === 'own'
      ? { method: 'POST', url: `/api/v1/groups/${(await c.groupA()).id}/members`, body: { userId: await c.victimA() } }
      : { method: 'POST', url: `/api/v1/groups/${B_GROUP.id}/members`, body: { userId: c.B.users.tenant_admin } },
  removeGroupMember: async (c) => {
    if (c.side === 'other') return { method: 'DELETE', url: `/api/v1/groups/${B_GROUP.id}/members/${c.B.users.member}` };
    const g = await c.groupA();
    return { method: 'DELETE', url: `/api/v1/groups/${g.id}/members/${g.member}` };
  },
  getPolicy: async (c) => ({ method: 'GET', url: `/api/v1/policy${q(c)}` }),
  setPolicy: async (c) => ({ method: 'PUT', url: `/api/v1/policy${q(c)}`, body: { minPasswordLength: 14 } }),
  auditList: async (c) => ({ method: 'GET', url: `/api/v1/audit${q(c)}` }),
  getAllowList: async (c) => ({ method: 'GET', url: `/api/v1/allow-list${q(c)}` }),
  setAllowList: async (c) => ({ method: 'PUT', url: `/api/v1/allow-list${q(c)}`, body: { cidrs: ['127.0.0.0/8', '10.0.0.0/8'] } }),
  listBlocks: async (c) => ({ method: 'GET', url: `/api/v1/blocks${q(c)}` }),
  liftBlock: async (c) => ({ method: 'DELETE', url: `/api/v1/blocks/${c.side === 'own' ? '192.0.2.1' : '192.0.2.2'}${q(c)}` }),
  auditExport: async (c) => ({ method: 'GET', url: `/api/v1/audit/export${c.side === 'other' ? `${q(c)}&format=csv` : ''}` }),
  getSso: async (c) => ({ method: 'GET', url: `/api/v1/sso${q(c)}` }),
  setSso: async (c) => ({ method: 'PUT', url: `/api/v1/sso${q(c)}`, body: { ...(c.side === 'other' ? { tenantId: B_ID } : {}), oidc: MATRIX_OIDC } }),
  clearSso: async (c) => ({ method: 'DELETE', url: `/api/v1/sso${q(c)}` }),
};

/** A valid OIDC section (nothing signs in through it here: the matrix checks who may change it). */
const MATRIX_OIDC = { issuer: 'https://idp.example', clientId: 'tachyon', clientSecret: 'matrix-secret-0123456789', redirectUri: 'https://tachyon.example/api/v1/auth/sso/oidc/callback' };

const B_SESSION = { id: '' };
const B_GROUP = { id: '' };
const B_TOKEN = { id: '' };
let B_ID = '';
function q(c: CaseCtx): string {
  return c.side === 'other' ? `?tenant=${B_ID}&tenantId=${B_ID}&tenant_id=${B_ID}` : '';
}

/** The answer a cell must get, from the route's rule alone. */
function expected(name: RouteName, caller: Caller, side: Side): number[] {
  const rule = ROUTE_TABLE[name];
  // this platform has no SSO services: every SSO route refuses (SSO_FAILED, 401), whoever
  // calls; test/platform/signin-sso.test.ts runs them against real identity providers
  // (which SSO methods a tenant offers is public, and this platform offers none: 200, an empty list)
  if (name === 'ssoMethods') return [200];
  if (name.startsWith('sso')) return [401];
  // public and tenant-named: answers for any tenant (B's disclaimer is public by design)
  if (name === 'disclaimer') return [200];
  if (rule.access === 'public') return side === 'own' ? [200] : [401];
  if (caller === 'anonymous') return [401];
  if (!allowed(rule.access, [caller])) return [403];
  // every caller here holds a full session: a route for pending sessions only is refused
  if ('stages' in rule && !(rule.stages as readonly string[]).includes('full')) return [403];
  // this platform has no TOTP service (its administrators sign in with a password only):
  // enrolment answers 409; test/platform/signin-totp.test.ts runs these routes with one
  if (name === 'enrolTotp' || name === 'confirmTotp') return [409];
  // nor an IP defender: its blocks cannot be listed or lifted (409); test/platform/blocks.test.ts runs them with one
  if (name === 'listBlocks' || name === 'liftBlock') return [409];
  if (side === 'other' && rule.url.includes(':id')) return [404];
  return [200, 201, 204];
}

async function snapshotB(p: Platform, tenantId: string): Promise<unknown> {
  const d = p.db.db;
  return {
    users: await d.selectFrom('platform_user').selectAll().where('tenant_id', '=', tenantId).orderBy('id').execute(),
    roles: await d.selectFrom('platform_user_role').selectAll().where('tenant_id', '=', tenantId).orderBy('user_id').orderBy('role').execute(),
    sessions: await d.selectFrom('platform_session').select(['id', 'user_id', 'expires_at']).where('tenant_id', '=', tenantId).orderBy('id').execute(),
    policy: await d.selectFrom('platform_policy').selectAll().where('tenant_id', '=', tenantId).execute(),
    tokens: await d.selectFrom('platform_api_token').select(['id', 'user_id', 'scopes']).where('tenant_id', '=', tenantId).orderBy('id').execute(),
    allowList: await d.selectFrom('platform_allow_list').selectAll().where('tenant_id', '=', tenantId).execute(),
    sso: await d.selectFrom('platform_sso_config').selectAll().where('tenant_id', '=', tenantId).execute(),
    groups: await d.selectFrom('platform_group').selectAll().where('tenant_id', '=', tenantId).orderBy('id').execute(),
    members: await d.selectFrom('platform_group_member').selectAll().where('tenant_id', '=', tenantId).orderBy('group_id').orderBy('user_id').execute(),
  };
}

for (const [engine, url] of [
  ['SQLite', undefined],
  ['PostgreSQL', PG_URL],
] as const) {
describe(`platform authorization matrix (generated from the route table) on ${engine}`, { skip: engine === 'PostgreSQL' && !url ? 'set TACHYON_TEST_PG_URL=postgres://… to run against PostgreSQL' : false }, () => {
  let p: Platform;
  let A: SeededTenant;
  let B: SeededTenant;
  // PostgreSQL keeps earlier runs' tenants: slugs of this run
  const run = randomBytes(3).toString('hex');

  before(async () => {
    p = await startPlatform(url ? { url } : {});
    A = await seedTenant(p, `tenant-a-${run}`);
    B = await seedTenant(p, `tenant-b-${run}`);
    B_ID = B.id;
    await p.identity.provisionUser(A.id, { username: 'only-in-a', password: USER_PW });
    const bAdmin = await signedIn(p, B.slug, 'admin', 'violet-harbour-engine-47');
    assert.equal((await bAdmin.req('PUT', '/api/v1/policy', { minPasswordLength: 20 })).status, 200);
    // B has an SSO configuration: no other tenant's PUT or DELETE may reach it
    assert.equal((await bAdmin.req('PUT', '/api/v1/sso', { oidc: { ...MATRIX_OIDC, clientId: 'tenant-b-client' } })).status, 200);
    // B has a group with its member in it: no other tenant may delete it or change who is in it
    const bGroup = await bAdmin.req('POST', '/api/v1/groups', { name: 'b-team' });
    assert.equal(bGroup.status, 201, bGroup.text);
    B_GROUP.id = (bGroup.body['group'] as Record<string, string>)['id']!;
    assert.equal((await bAdmin.req('POST', `/api/v1/groups/${B_GROUP.id}/members`, { userId: B.users.member })).status, 204);
    const bMember = await signedIn(p, B.slug, 'member1', USER_PW);
    B_SESSION.id = (await bMember.req('GET', '/api/v1/me')).body['sessionId'] as string;
    const bToken = await bMember.req('POST', '/api/v1/me/tokens', { name: 'b', scopes: ['read'] });
    assert.equal(bToken.status, 201, bToken.text);
    B_TOKEN.id = (bToken.body['token'] as Record<string, string>)['id']!;
  });
  after(async () => {
    await p.close();
  });

  it('the application holds exactly the routes of the table, and refuses a route without a rule', async () => {
    const table = routeRules().map((r) => `${r.method} ${r.url}`).sort();
    assert.deepEqual([...p.web.registeredRoutes()].sort(), table);
    assert.deepEqual(Object.keys(CASES).sort(), Object.keys(ROUTE_TABLE).sort(), 'a case for every route');
    for (const r of routeRules()) {
      assert.ok(r.access === 'public' || r.access.length > 0, `${r.name} names its roles`);
    }
    const web = createPlatformApp({ identity: p.identity, insecureHttp: true });
    assert.throws(
      () => web.app.get('/api/v1/unruled', () => 'x'),
      (e: unknown) => e instanceof TachyonError && /has no rule/.test(e.message),
    );
    await web.app.close();
  });

  it('least privilege: only sign-in (password and SSO) is public; members and auditors change nothing but their own account', () => {
    for (const r of routeRules()) {
      if (r.access === 'public') {
        assert.ok(r.name === 'signIn' || r.name === 'disclaimer' || (r.name.startsWith('sso') && r.url.startsWith('/api/v1/auth/sso/')), `${r.name} is public`);
        continue;
      }
      const own = r.url.startsWith('/api/v1/me') || r.url.startsWith('/api/v1/auth/');
      if (r.method !== 'GET' && !own) assert.deepEqual([...r.access], ['tenant_admin'], `${r.name} is for administrators only`);
      if (!own) assert.ok(!r.access.includes('member'), `${r.name} is not for members`);
    }
  });

  it('every route × every role × own/other tenant answers as its rule says, and tenant B is untouched', async () => {
    const before = JSON.stringify(await snapshotB(p, B.id));
    const bIds = [B.id, ...Object.values(B.users), B_SESSION.id, B_TOKEN.id, B_GROUP.id];
    const aAdmin = await signedIn(p, A.slug, 'admin', 'violet-harbour-engine-47');
    const rows: string[] = [];
    const refs: string[] = [];
    let n = 0;
    for (const rule of routeRules()) {
      for (const caller of CALLERS) {
        for (const side of ['own', 'other'] as const) {
          n++;
          const name = `u${n}-${caller.replace('_', '-')}`;
          let client = new Client(p.base);
          if (caller !== 'anonymous') {
            await p.identity.provisionUser(A.id, { username: name, roles: [caller], password: USER_PW });
            client = await signedIn(p, A.slug, name, USER_PW);
          }
          const ctx: CaseCtx = {
            side,
            caller: client,
            callerName: name,
            A,
            B,
            victimA: async () => (await p.identity.provisionUser(A.id, { username: `${name}-victim`, password: USER_PW })).id,
            ownOtherSession: async () => {
              const who = caller === 'anonymous' ? 'only-in-a' : name;
              const second = await signedIn(p, A.slug, who, USER_PW);
              return (await second.req('GET', '/api/v1/me')).body['sessionId'] as string;
            },
            groupA: async () => {
              const g = await aAdmin.req('POST', '/api/v1/groups', { name: `g-${name}-${side}` });
              assert.equal(g.status, 201, g.text);
              const id = (g.body['group'] as Record<string, string>)['id']!;
              const member = (await p.identity.provisionUser(A.id, { username: `${name}-gm`, password: USER_PW })).id;
              assert.equal((await aAdmin.req('POST', `/api/v1/groups/${id}/members`, { userId: member })).status, 204);
              return { id, member };
            },
            ownToken: async () => {
              const owner = caller === 'anonymous' ? await signedIn(p, A.slug, 'only-in-a', USER_PW) : client;
              const t = await owner.req('POST', '/api/v1/me/tokens', { scopes: ['read'] });
              assert.equal(t.status, 201, t.text);
              return (t.body['token'] as Record<string, string>)['id']!;
            },
          };
          const call = await CASES[rule.name](ctx);
          const res = await client.req(call.method, call.url, call.body);
          const want = expected(rule.name, caller, side);
          rows.push(`${rule.method} ${rule.url} ${caller} ${side} → ${res.status}`);
          assert.ok(want.includes(res.status), `${rule.method} ${rule.url} as ${caller}, ${side} tenant: got ${res.status}, want ${want.join("/")}: ${res.text.slice(0, 300)}`);
          if (res.status >= 400) {
            assert.deepEqual(Object.keys(res.body), ['error'], 'sanitized error body');
            assert.deepEqual(Object.keys(res.error ?? {}).sort(), ['code', 'correlation_id', 'message'], 'sanitized error body');
            refs.push(String(res.error?.correlation_id));
          }
          if (side === 'other') {
            for (const id of bIds) assert.ok(!res.text.includes(id), `${rule.name} as ${caller} leaks tenant B's id ${id}`);
            assert.ok(!res.text.includes(B.slug), `${rule.name} as ${caller} names tenant B`);
          }
        }
      }
    }
    assert.equal(rows.length, routeRules().length * CALLERS.length * 2);
    // every refusal has its audit record, under the ref the caller was given
    const audited = new Set(
      readFileSync(p.auditFile, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => (JSON.parse(l) as { correlationId?: string }).correlationId),
    );
    assert.ok(refs.length > 20);
    for (const ref of refs) assert.ok(audited.has(ref), `no audit record for ref ${ref}`);
    assert.equal(JSON.stringify(await snapshotB(p, B.id)), before, 'tenant B rows are unchanged');
    // the other-tenant writes that succeeded landed in tenant A
    const aPolicy = await p.identity.repo.policy(A.id);
    assert.equal(aPolicy.minPasswordLength, 14);
    assert.equal((await p.identity.repo.policy(B.id)).minPasswordLength, 20);
    assert.ok((await p.identity.repo.listUsers(A.id)).some((u) => u.username.startsWith('made-by-') && u.username.endsWith('-tenant-admin-other')));
  });

  it('repository: every query is tenant-scoped (tenant B’s ids through tenant A are as missing)', async () => {
    const r = p.identity.repo;
    const bMember = B.users.member;
    assert.equal(await r.userById(A.id, bMember), undefined);
    assert.equal(await r.credentials(A.id, 'member1').then((c) => c?.user.tenantId), A.id);
    await assert.rejects(r.updateUser(A.id, bMember, { status: 'disabled' }, new Date().toISOString()), (e: unknown) => e instanceof TachyonError && e.code === 'NOT_FOUND');
    await assert.rejects(r.setPassword(A.id, bMember, '$argon2id$x', false, new Date().toISOString()), (e: unknown) => e instanceof TachyonError && e.code === 'NOT_FOUND');
    assert.equal(await r.recordFailure(A.id, bMember, '2026-01-05T09:00:00.000Z', '2026-01-05T08:45:00.000Z'), 0);
    assert.equal(await r.lock(A.id, bMember, '2026-01-05T09:00:00.000Z', '2999-01-01T00:00:00.000Z'), false);
    assert.equal(await r.lockedUntil(A.id, bMember), undefined);
    await r.clearFailures(A.id, bMember);
    assert.equal(await r.deleteSession(A.id, bMember, B_SESSION.id), false);
    assert.equal(await r.deleteUserSessions(A.id, bMember), 0);
    await r.touchSession(A.id, B_SESSION.id, '1999-01-01T00:00:00.000Z');
    assert.deepEqual(await r.listSessions(A.id, bMember), []);
    assert.ok((await r.listUsers(A.id)).every((u) => u.tenantId === A.id));
    const gB = await r.createGroup(B.id, 'ops', new Date().toISOString());
    const gA = await r.createGroup(A.id, 'ops', new Date().toISOString());
    await assert.rejects(r.addGroupMember(A.id, gB.id, A.users.member), (e: unknown) => e instanceof TachyonError && e.code === 'NOT_FOUND');
    await assert.rejects(r.addGroupMember(A.id, gA.id, bMember), (e: unknown) => e instanceof TachyonError && e.code === 'NOT_FOUND');
    await r.addGroupMember(A.id, gA.id, A.users.member);
    assert.deepEqual(await r.groupMembers(A.id, gA.id), [A.users.member]);
    assert.deepEqual(await r.groupMembers(A.id, gB.id), []);
    const groupsA = await r.listGroups(A.id);
    assert.ok(groupsA.some((g) => g.id === gA.id) && groupsA.every((g) => g.tenantId === A.id && g.id !== gB.id));
    await r.addGroupMember(B.id, gB.id, bMember);
    await assert.rejects(r.removeGroupMember(A.id, gB.id, bMember), (e: unknown) => e instanceof TachyonError && e.code === 'NOT_FOUND');
    await assert.rejects(r.deleteGroup(A.id, gB.id), (e: unknown) => e instanceof TachyonError && e.code === 'NOT_FOUND');
    assert.equal((await r.allGroupMembers(A.id)).has(gB.id), false);
    assert.deepEqual(await r.groupMembers(B.id, gB.id), [bMember], 'B’s group and its member are untouched');
    const bRow = await p.db.db.selectFrom('platform_user').selectAll().where('id', '=', bMember).executeTakeFirstOrThrow();
    assert.equal(bRow.status, 'active');
    assert.equal(bRow.failed_count, 0);
    assert.equal(bRow.locked_until, null);
    const bSess = await p.db.db.selectFrom('platform_session').selectAll().where('id', '=', B_SESSION.id).executeTakeFirstOrThrow();
    assert.notEqual(bSess.last_seen_at, '1999-01-01T00:00:00.000Z');
  });
});
}
