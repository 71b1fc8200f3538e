/**
 * Groups: a tenant administrator creates groups, adds and removes members and deletes
 * groups; an auditor reads them; every change is audited. (Who may call which route, and
 * that no tenant reaches another's groups, is in authz-matrix.test.ts.)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { seedTenant, signedIn, startPlatform, USER_PW, type Client, type Platform, type SeededTenant } from './helpers.js';

describe('platform groups', () => {
  let p: Platform;
  let A: SeededTenant;
  let admin: Client;
  let auditor: Client;

  before(async () => {
    p = await startPlatform();
    A = await seedTenant(p, 'groups-a');
    admin = await signedIn(p, A.slug, 'admin', 'violet-harbour-engine-47');
    auditor = await signedIn(p, A.slug, 'auditor1', USER_PW);
  });
  after(async () => {
    await p.close();
  });

  it('create, add and remove members, list (auditor), delete; each change audited', async () => {
    const made = await admin.req('POST', '/api/v1/groups', { name: '  Media team ' });
    assert.equal(made.status, 201, made.text);
    const g = made.body['group'] as { id: string; name: string; members: string[] };
    assert.equal(g.name, 'Media team', 'the name is trimmed');
    assert.deepEqual(g.members, []);
    assert.equal((await admin.req('POST', `/api/v1/groups/${g.id}/members`, { userId: A.users.member })).status, 204);
    assert.equal((await admin.req('POST', `/api/v1/groups/${g.id}/members`, { userId: A.users.auditor })).status, 204);
    const again = await admin.req('POST', `/api/v1/groups/${g.id}/members`, { userId: A.users.member });
    assert.equal(again.status, 409, 'already a member');
    const listed = await auditor.req('GET', '/api/v1/groups');
    assert.equal(listed.status, 200);
    const one = (listed.body['groups'] as { id: string; members: string[] }[]).find((x) => x.id === g.id);
    assert.deepEqual(one?.members, [A.users.member, A.users.auditor].sort());
    assert.equal((await admin.req('DELETE', `/api/v1/groups/${g.id}/members/${A.users.member}`)).status, 204);
    const after1 = (await admin.req('GET', '/api/v1/groups')).body['groups'] as { id: string; members: string[] }[];
    assert.deepEqual(after1.find((x) => x.id === g.id)?.members, [A.users.auditor]);
    assert.equal((await admin.req('DELETE', `/api/v1/groups/${g.id}`)).status, 204);
    assert.equal((await admin.req('DELETE', `/api/v1/groups/${g.id}`)).status, 404, 'deleted: gone');
    const gone = (await admin.req('GET', '/api/v1/groups')).body['groups'] as { id: string }[];
    assert.ok(!gone.some((x) => x.id === g.id));
    const actions = readFileSync(p.auditFile, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { type: string; fields: { action?: string; target?: string } })
      .filter((e) => e.type === 'web.change' && e.fields.target === g.id)
      .map((e) => e.fields.action);
    assert.deepEqual(actions, ['group.create', 'group.member.add', 'group.member.add', 'group.member.remove', 'group.delete']);
  });

  it('bad input: a taken name (409), empty, over-long or control-character names, unknown fields, malformed or unknown ids (400/404), nothing changed', async () => {
    assert.equal((await admin.req('POST', '/api/v1/groups', { name: 'ops' })).status, 201);
    assert.equal((await admin.req('POST', '/api/v1/groups', { name: 'ops' })).status, 409);
    for (const name of ['', '   ', 'x'.repeat(65), 'tab\there', 'nul\u0000']) {
      const r = await admin.req('POST', '/api/v1/groups', { name });
      assert.equal(r.status, 400, `${JSON.stringify(name)}: ${r.text}`);
      assert.ok(!r.text.includes(name.trim() || '\u0000'.repeat(9)), 'the bad value is not echoed');
    }
    assert.equal((await admin.req('POST', '/api/v1/groups', { name: 'x', admin: true })).status, 400, 'unknown field');
    const ops = ((await admin.req('GET', '/api/v1/groups')).body['groups'] as { id: string; name: string }[]).find((g) => g.name === 'ops')!;
    assert.equal((await admin.req('POST', `/api/v1/groups/${ops.id}/members`, { userId: "1' OR '1'='1" })).status, 404);
    assert.equal((await admin.req('POST', `/api/v1/groups/${ops.id}/members`, { userId: '00000000-0000-4000-8000-000000000000' })).status, 404);
    assert.equal((await admin.req('POST', '/api/v1/groups/not-an-id/members', { userId: A.users.member })).status, 404);
    assert.equal((await admin.req('DELETE', `/api/v1/groups/${ops.id}/members/..%2F..`)).status, 404);
    const names = ((await admin.req('GET', '/api/v1/groups')).body['groups'] as { name: string; members: string[] }[]).map((g) => `${g.name}:${g.members.length}`);
    assert.deepEqual(names, ['ops:0']);
  });
});
