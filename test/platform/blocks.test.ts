/**
 * Tenant administrators and the IP defender's blocks (GET /api/v1/blocks, DELETE
 * /api/v1/blocks/:address), over real HTTP on port 0 with sign-in failures from real
 * source addresses (127.0.0.2–127.0.0.4 through `localAddress`) against a real
 * ScoringDefender on the platform's SQLite file. Least privilege: a tenant sees only
 * blocks caused by failures against it, lifts only those caused by nothing else; a block
 * it cannot see is "not blocked" to it; auditors read; members are refused; lifting is
 * audited.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ScoringDefender } from '../../src/defender/index.js';
import { countsForDefender } from '../../src/platform/admin-routes.js';
import { ADMIN_PW, postFrom, seedTenant, signedIn, startPlatform, USER_PW, type Client, type Platform } from './helpers.js';

const post = async (base: string, path: string, body: unknown, localAddress: string): Promise<number> => (await postFrom(base, path, body, localAddress)).status;

interface Block {
  address: string;
  until: string;
  banCount: number;
  failuresHere: number;
  liftable: boolean;
}

describe('tenant administrators and the defender’s blocks', () => {
  let p: Platform;
  let acmeAdmin: Client;
  let globexAdmin: Client;
  const THRESHOLD = 4;

  before(async () => {
    p = await startPlatform({ defender: (database, clock) => ScoringDefender.open({ database, clock, settings: { threshold: THRESHOLD, syncIntervalMs: 60_000 } }) });
    await seedTenant(p, 'acme');
    await seedTenant(p, 'globex');
    acmeAdmin = await signedIn(p, 'acme', 'admin', ADMIN_PW);
    globexAdmin = await signedIn(p, 'globex', 'admin', ADMIN_PW);
    const fail = async (tenant: string, from: string, i: number): Promise<number> => post(p.base, '/api/v1/auth/signin', { tenant, username: `nobody${i}`, password: `wrong password ${i}` }, from);
    // .2 fails only against acme; .3 against acme and globex; .4 only against globex
    for (let i = 0; i < THRESHOLD; i++) assert.equal(await fail('acme', '127.0.0.2', i), 401);
    for (let i = 0; i < THRESHOLD; i++) assert.equal(await fail(i % 2 === 0 ? 'acme' : 'globex', '127.0.0.3', i), 401);
    for (let i = 0; i < THRESHOLD; i++) assert.equal(await fail('globex', '127.0.0.4', i), 401);
    // once blocked, more attempts are refused before any route (consequences, not causes: they do not change the attribution)
    for (const a of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) assert.ok([0, 403].includes(await fail('acme', a, 99)));
    await p.dbAudit.flush();
  });
  after(async () => {
    await p.close();
  });

  async function blocks(c: Client): Promise<Block[]> {
    const r = await c.req('GET', '/api/v1/blocks');
    assert.equal(r.status, 200, r.text);
    return r.body['blocks'] as Block[];
  }

  it('each tenant sees the blocks caused by failures against it, and which it may lift', async () => {
    const acme = await blocks(acmeAdmin);
    assert.deepEqual(acme.map((b) => [b.address, b.liftable]).sort(), [
      ['127.0.0.2', true],
      ['127.0.0.3', false],
    ]);
    assert.equal(acme.find((b) => b.address === '127.0.0.2')?.failuresHere, THRESHOLD);
    assert.ok(acme.every((b) => b.banCount === 1 && Date.parse(b.until) > p.clock.now()));
    const globex = await blocks(globexAdmin);
    assert.deepEqual(globex.map((b) => [b.address, b.liftable]).sort(), [
      ['127.0.0.3', false],
      ['127.0.0.4', true],
    ]);
    // auditors read, members are refused
    assert.equal((await blocks(await signedIn(p, 'acme', 'auditor1', USER_PW))).length, 2);
    const member = await signedIn(p, 'acme', 'member1', USER_PW);
    assert.equal((await member.req('GET', '/api/v1/blocks')).status, 403);
    assert.equal((await member.req('DELETE', '/api/v1/blocks/127.0.0.2')).status, 403);
    const auditor = await signedIn(p, 'acme', 'auditor1', USER_PW);
    assert.equal((await auditor.req('DELETE', '/api/v1/blocks/127.0.0.2')).status, 403);
  });

  it('a tenant administrator lifts only its own blocks; others are refused or not found', async () => {
    const shared = await acmeAdmin.req('DELETE', '/api/v1/blocks/127.0.0.3');
    assert.equal(shared.status, 403);
    assert.match(shared.error?.message ?? '', /only a platform administrator can lift/);
    const others = await acmeAdmin.req('DELETE', '/api/v1/blocks/127.0.0.4');
    assert.equal(others.status, 404, 'another tenant’s block is not blocked, to acme');
    assert.equal(others.error?.message, 'The address is not blocked.');
    for (const bad of ['not-an-ip', '127.0.0.300', encodeURIComponent("1' OR 1=1 --"), '%3Cscript%3E', 'x'.repeat(100), encodeURIComponent('2001:db8::/64')]) {
      const r = await acmeAdmin.req('DELETE', `/api/v1/blocks/${bad}`);
      assert.equal(r.status, 404, `${bad}: ${r.text}`);
      assert.ok(!r.text.includes('script') && !r.text.includes('OR 1=1'));
    }
    assert.equal((await acmeAdmin.req('DELETE', '/api/v1/blocks/127.0.0.2', undefined, { csrf: null })).status, 403, 'CSRF is checked');

    const lifted = await acmeAdmin.req('DELETE', '/api/v1/blocks/127.0.0.2');
    assert.equal(lifted.status, 204, lifted.text);
    assert.equal((await acmeAdmin.req('DELETE', '/api/v1/blocks/127.0.0.2')).status, 404, 'once');
    // the address signs in again; the others stay blocked
    assert.equal(await post(p.base, '/api/v1/auth/signin', { tenant: 'acme', username: 'member1', password: USER_PW }, '127.0.0.2'), 200);
    assert.ok([0, 403].includes(await post(p.base, '/api/v1/auth/signin', { tenant: 'acme', username: 'member1', password: USER_PW }, '127.0.0.3')));
    assert.ok([0, 403].includes(await post(p.base, '/api/v1/auth/signin', { tenant: 'globex', username: 'member1', password: USER_PW }, '127.0.0.4')));
    assert.deepEqual((await blocks(acmeAdmin)).map((b) => b.address), ['127.0.0.3']);
    // globex lifts its own
    assert.equal((await globexAdmin.req('DELETE', '/api/v1/blocks/127.0.0.4')).status, 204);
    assert.equal(await post(p.base, '/api/v1/auth/signin', { tenant: 'globex', username: 'member1', password: USER_PW }, '127.0.0.4'), 200);

    await p.dbAudit.flush();
    const recs = (await p.dbAudit.list({ tenant: 'acme', limit: 10_000 })).map((r) => JSON.parse(r.line) as { type: string; fields: Record<string, unknown> });
    assert.ok(recs.some((r) => r.type === 'web.change' && r.fields['action'] === 'defender.unblock' && r.fields['target'] === '127.0.0.2' && r.fields['actor'] === 'admin'));
  });

  it('only failures the defender scores count as causes', () => {
    assert.equal(countsForDefender('web.signin', { result: 'failure' }), true);
    assert.equal(countsForDefender('web.refusal', { code: 'AUTH_FAILED' }), true);
    assert.equal(countsForDefender('web.refusal', { code: 'PERMISSION', reason: 'address-blocked' }), false);
    assert.equal(countsForDefender('web.refusal', { code: 'NOT_FOUND' }), false);
    assert.equal(countsForDefender('web.change', { action: 'user.self-change.refused' }), false);
  });
});
