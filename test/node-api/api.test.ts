/**
 * The node API over real HTTPS (port 0, a CA made by the PKI module, a client that trusts
 * only it): security headers, the error edge (status, sanitized body, correlation id,
 * audit record), validation (invalid JSON, oversized body, unknown fields), access keys
 * (create, list, rotate with grace, revoke; Basic and bearer; secrets never leak), /info
 * and /openapi.json.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { verifyAuditLog } from '../../src/audit/index.js';
import { SECURITY_HEADERS } from '../../src/node-api/app.js';
import { Rng } from '../helpers/rng.js';
import { basic, startTestNode, type Response, type TestNode } from './helpers.js';

const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** Asserts the error edge: status, code, sanitized body with the correlation id of the header, and an audit record with it. */
function assertError(node: TestNode, r: Response, status: number, code: string, auditType?: string): string {
  assert.equal(r.status, status, `status of ${r.text}`);
  const body = r.json as { error: { code: string; message: string; correlation_id: string } };
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'correlation_id', 'message']);
  assert.equal(body.error.code, code);
  assert.match(body.error.correlation_id, ULID);
  assert.equal(r.headers['x-correlation-id'], body.error.correlation_id);
  assert.doesNotMatch(body.error.message, /\/tmp|tachyon-nodeapi|at .*\.js|Error:/, 'no local paths or stacks');
  const recs = node.auditRecords().filter((x) => x.correlationId === body.error.correlation_id);
  assert.equal(recs.length, 1, `one audit record for ${body.error.correlation_id}`);
  if (auditType) assert.equal(recs[0]?.type, auditType);
  return body.error.correlation_id;
}

describe('node API over HTTPS', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode({ keyRecheckMs: 0 });
  });
  after(async () => {
    await node?.close();
  });

  it('sets the security headers and a correlation id on every response, success or error, and no server banner', async () => {
    const ok = await node.request('GET', '/info', { auth: node.admin });
    const err = await node.request('GET', '/nope');
    const bad = await node.request('POST', '/auth/token', { rawBody: '{', auth: node.admin });
    for (const r of [ok, err, bad]) {
      for (const [h, v] of Object.entries(SECURITY_HEADERS)) assert.equal(r.headers[h], v, h);
      assert.match(String(r.headers['x-correlation-id']), ULID);
      assert.equal(r.headers['x-powered-by'], undefined);
      assert.equal(r.headers.server, undefined);
    }
    assert.equal(ok.status, 200);
    assertError(node, err, 404, 'NOT_FOUND', 'api.error');
  });

  it('ignores a correlation id sent by the client', async () => {
    const r = await node.request('GET', '/info', { auth: node.admin, headers: { 'x-correlation-id': 'ABCDEFGHJK', 'request-id': 'x' } });
    assert.notEqual(r.headers['x-correlation-id'], 'ABCDEFGHJK');
  });

  it('GET /info describes the node without credentials or paths', async () => {
    const key = await node.createKey('info', ['list']);
    const r = await node.request('GET', '/info', { auth: key.basic });
    assert.equal(r.status, 200);
    const j = r.json as Record<string, unknown>;
    assert.equal(j.product, 'tachyon');
    assert.deepEqual(j.storage_root_kinds, ['file']);
    assert.ok((j.capabilities as string[]).includes('files'));
    assert.deepEqual(j.caller, { kind: 'access-key', id: key.id, permissions: ['list'], storage_kind: 'file' });
    assert.doesNotMatch(r.text, new RegExp(node.work.replace(/[/.]/g, '\\$&')));
    assert.ok(!r.text.includes(key.secret));
    assertError(node, await node.request('GET', '/info'), 401, 'AUTH_FAILED', 'auth.failure');
  });

  it('invalid JSON, a wrong content type, an empty body where one is required → 400 USAGE', async () => {
    for (const raw of ['{', '{"storage_root":', 'nul', '[1,2', '{"a":1}}', '\u0000']) {
      const r = await node.request('POST', '/access_keys', { auth: node.admin, rawBody: raw });
      assertError(node, r, 400, 'USAGE');
    }
    const r = await node.request('POST', '/access_keys', { auth: node.admin, rawBody: 'storage_root=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assertError(node, r, 400, 'USAGE');
    const proto = await node.request('POST', '/access_keys', { auth: node.admin, rawBody: '{"__proto__":{"x":1},"storage_root":"file:///x"}' });
    assertError(node, proto, 400, 'USAGE');
  });

  it('an oversized body → 413 TOO_LARGE, audited', async () => {
    const r = await node.request('POST', '/access_keys', { auth: node.admin, rawBody: JSON.stringify({ description: 'x'.repeat(70_000) }) });
    assertError(node, r, 413, 'TOO_LARGE', 'api.error');
  });

  it('unknown fields in bodies and query strings are refused (400), not dropped', async () => {
    const r = await node.request('POST', '/access_keys', { auth: node.admin, body: { storage_root: `file://${node.files}/a`, permissions: ['list'], admin: true } });
    assertError(node, r, 400, 'USAGE');
    assert.match((r.json as { error: { message: string } }).error.message, /unknown field 'admin'/);
    const q = await node.request('GET', '/access_keys?offset=0&evil=1', { auth: node.admin });
    assertError(node, q, 400, 'USAGE');
    const wrongType = await node.request('POST', '/access_keys', { auth: node.admin, body: { storage_root: 5 } });
    assertError(node, wrongType, 400, 'USAGE');
    const badPerm = await node.request('POST', '/access_keys', { auth: node.admin, body: { storage_root: `file://${node.files}/a`, permissions: ['root'] } });
    assertError(node, badPerm, 400, 'USAGE');
  });

  it('access keys: created with the secret once, listed and shown without it; a root outside the allowed roots is refused', async () => {
    const k = await node.createKey('alice', ['list', 'read', 'mkdir']);
    assert.match(k.id, /^AK[0-9A-Z]{24}$/);
    assert.match(k.secret, /^tsk_/);
    const list = await node.request('GET', '/access_keys', { auth: node.admin });
    assert.equal(list.status, 200);
    assert.ok(Number(list.headers['x-total-count']) >= 2);
    assert.ok(!list.text.includes(k.secret) && !list.text.includes('argon2'));
    const show = await node.request('GET', `/access_keys/${k.id}`, { auth: node.admin });
    assert.equal((show.json as { permissions: string[] }).permissions.join(','), 'list,read,mkdir');
    assert.ok(!show.text.includes(k.secret) && !('secret' in (show.json as object)));
    const outside = await node.request('POST', '/access_keys', { auth: node.admin, body: { storage_root: 'file:///etc' } });
    assertError(node, outside, 400, 'PATH_INVALID');
    assert.doesNotMatch(outside.text, /allowed storage roots \(/, 'the allowed roots are not disclosed');
    const trav = await node.request('POST', '/access_keys', { auth: node.admin, body: { storage_root: `file://${node.files}/a/../../../etc` } });
    assert.equal(trav.status, 400);
    const missing = await node.request('GET', '/access_keys/AK000000000000000000000000', { auth: node.admin });
    assertError(node, missing, 404, 'NOT_FOUND');
    const badId = await node.request('GET', '/access_keys/..%2f..%2fetc', { auth: node.admin });
    assertError(node, badId, 400, 'USAGE');
  });

  it('only administrators manage keys; an access key on an admin route is 403, an admin key on a file route is 403', async () => {
    const k = await node.createKey('bob', ['list', 'read', 'write', 'mkdir', 'rename', 'delete']);
    assertError(node, await node.request('GET', '/access_keys', { auth: k.basic }), 403, 'PERMISSION', 'refusal.permission');
    assertError(node, await node.request('POST', '/access_keys', { auth: k.basic, body: { storage_root: `file://${node.files}/bob` } }), 403, 'PERMISSION');
    assertError(node, await node.request('GET', '/files/browse?path=/', { auth: node.admin }), 403, 'PERMISSION');
  });

  it('bad Basic and bearer credentials → 401 with WWW-Authenticate, one public message, an auth.failure record', async () => {
    const k = await node.createKey('carol', ['list']);
    const cases = [
      // the secret with its last character changed (to another one, whatever it was)
      basic(k.id, `${k.secret.slice(0, -1)}${k.secret.endsWith('A') ? 'B' : 'A'}`),
      basic(k.id, 'short'),
      basic('AK000000000000000000000000', k.secret),
      basic('', ''),
      'Basic !!!',
      'Basic',
      'Bearer tbt_0000000000000000000000000000000000000000000',
      'Bearer x',
      'Digest username="x"',
      `Bearer ${k.secret}`,
    ];
    const messages = new Set<string>();
    for (const auth of cases) {
      const r = await node.request('GET', '/files/browse?path=/', { auth });
      assertError(node, r, 401, 'AUTH_FAILED', 'auth.failure');
      assert.match(String(r.headers['www-authenticate']), /Basic realm="tachyon-node".*Bearer/);
      messages.add((r.json as { error: { message: string } }).error.message);
    }
    assert.equal(messages.size, 1, 'the reason is not disclosed');
  });

  it('fuzz: random Authorization headers are 401 (or 400/403), never a 5xx, never accepted', async () => {
    const rng = new Rng(0xa17);
    const k = await node.createKey('fuzzauth', ['list']);
    const pieces = ['Basic ', 'Bearer ', 'basic ', 'BEARER ', 'tbt_', 'tsk_', k.id, ':', '=', '==', 'A', 'z', '+', '/', '-', '_', ' ', '\t', '\u00e9', k.secret.slice(0, 10)];
    for (let i = 0; i < 150; i++) {
      let h = Array.from({ length: rng.range(1, 8) }, () => rng.pick(pieces)).join('');
      if (rng.chance(0.3)) h = `Basic ${Buffer.from(Array.from({ length: rng.range(0, 6) }, () => rng.pick(pieces)).join('')).toString('base64')}`;
      h = h.replace(/[^\t\x20-\x7e]/g, '');
      const r = await node.request('GET', '/files/browse', { auth: h });
      assert.ok([400, 401, 403].includes(r.status), `${JSON.stringify(h)} → ${r.status} ${r.text}`);
      assert.equal((r.json as { error: { correlation_id: string } }).error.correlation_id, r.headers['x-correlation-id']);
    }
  });

  it('bearer tokens: POST /auth/token exchanges a key for a token that works until it expires; Basic is required to get one', async () => {
    const k = await node.createKey('dave', ['list']);
    const t = await node.request('POST', '/auth/token', { auth: k.basic, body: {} });
    assert.equal(t.status, 200);
    const tok = t.json as { access_token: string; token_type: string; expires_in: number };
    assert.equal(tok.token_type, 'Bearer');
    assert.equal(tok.expires_in, 900);
    const ok = await node.request('GET', '/files/browse?path=/', { auth: `Bearer ${tok.access_token}` });
    assert.equal(ok.status, 200, ok.text);
    // a bearer token cannot mint another
    assertError(node, await node.request('POST', '/auth/token', { auth: `Bearer ${tok.access_token}`, body: {} }), 401, 'AUTH_FAILED');
    const short = await node.request('POST', '/auth/token', { auth: k.basic, body: { expires_in: 5 } });
    assertError(node, short, 400, 'USAGE');
  });

  it('revocation kills the key and its bearer tokens at once', async () => {
    const k = await node.createKey('erin', ['list']);
    const tok = ((await node.request('POST', '/auth/token', { auth: k.basic, body: {} })).json as { access_token: string }).access_token;
    assert.equal((await node.request('DELETE', `/access_keys/${k.id}`, { auth: node.admin })).status, 204);
    assertError(node, await node.request('GET', '/files/browse', { auth: k.basic }), 401, 'AUTH_FAILED', 'auth.failure');
    assertError(node, await node.request('GET', '/files/browse', { auth: `Bearer ${tok}` }), 401, 'AUTH_FAILED');
    assertError(node, await node.request('POST', '/auth/token', { auth: k.basic, body: {} }), 401, 'AUTH_FAILED');
    const shown = (await node.request('GET', `/access_keys/${k.id}`, { auth: node.admin })).json as { revoked_at: string | null };
    assert.ok(shown.revoked_at);
    // rotating a revoked key is refused
    assertError(node, await node.request('POST', `/access_keys/${k.id}/rotate`, { auth: node.admin, body: {} }), 403, 'PERMISSION');
  });

  it('rotation: the new secret works, the old one works during the grace period and dies after it, with its tokens', async () => {
    const k = await node.createKey('frank', ['list']);
    const oldTok = ((await node.request('POST', '/auth/token', { auth: k.basic, body: {} })).json as { access_token: string }).access_token;
    const rot = await node.request('POST', `/access_keys/${k.id}/rotate`, { auth: node.admin, body: { grace_seconds: 2 } });
    assert.equal(rot.status, 200, rot.text);
    const j = rot.json as { secret: string; secret_version: number; previous_secret_valid_until: string };
    assert.notEqual(j.secret, k.secret);
    assert.equal(j.secret_version, 2);
    const newBasic = basic(k.id, j.secret);
    assert.equal((await node.request('GET', '/files/browse', { auth: newBasic })).status, 200);
    assert.equal((await node.request('GET', '/files/browse', { auth: k.basic })).status, 200, 'old secret within grace');
    assert.equal((await node.request('GET', '/files/browse', { auth: `Bearer ${oldTok}` })).status, 200, 'old token within grace');
    await sleep(Date.parse(j.previous_secret_valid_until) - Date.now() + 50);
    assertError(node, await node.request('GET', '/files/browse', { auth: k.basic }), 401, 'AUTH_FAILED', 'auth.failure');
    assertError(node, await node.request('GET', '/files/browse', { auth: `Bearer ${oldTok}` }), 401, 'AUTH_FAILED');
    assert.equal((await node.request('GET', '/files/browse', { auth: newBasic })).status, 200);
    // grace 0: the old secret dies at once
    const rot2 = (await node.request('POST', `/access_keys/${k.id}/rotate`, { auth: node.admin, body: { grace_seconds: 0 } })).json as { secret: string };
    assertError(node, await node.request('GET', '/files/browse', { auth: newBasic }), 401, 'AUTH_FAILED');
    assert.equal((await node.request('GET', '/files/browse', { auth: basic(k.id, rot2.secret) })).status, 200);
  });

  it('never writes a secret or a token into the audit log, which verifies', async () => {
    const k = await node.createKey('gina', ['list']);
    const tok = ((await node.request('POST', '/auth/token', { auth: k.basic, body: {} })).json as { access_token: string }).access_token;
    await node.request('GET', '/files/browse', { auth: basic(k.id, `${k.secret}x`) });
    await node.request('GET', '/files/browse', { auth: `Bearer ${tok}x` });
    const text = node.auditText();
    assert.ok(!text.includes(k.secret), 'secret');
    assert.ok(!text.includes(tok), 'token');
    assert.ok(!text.includes(node.adminSecret), 'admin secret');
    assert.ok(!text.includes(k.secret.slice(4, 20)), 'no piece of the secret');
    assert.ok(text.includes(k.id), 'the key id is recorded');
    const v = await verifyAuditLog(node.auditFile);
    assert.equal(v.ok, true, JSON.stringify(v));
  });

  it('serves its OpenAPI description without credentials', async () => {
    const r = await node.request('GET', '/openapi.json');
    assert.equal(r.status, 200);
    const doc = r.json as { openapi: string; paths: Record<string, Record<string, unknown>> };
    assert.equal(doc.openapi, '3.0.3');
    for (const p of ['/info', '/auth/token', '/access_keys', '/access_keys/{id}', '/access_keys/{id}/rotate', '/files/browse', '/files/stat', '/files/mkdir', '/files/rename', '/files/delete']) {
      assert.ok(doc.paths[p], p);
    }
  });
});

describe('node API under a flood of Basic attempts', () => {
  it('bounds argon2id verifications: beyond the queue, 503 BUSY (sanitized, audited), never a 500; bearer requests still pass', async () => {
    const node = await startTestNode({ maxConcurrentVerifications: 1, maxQueuedVerifications: 2 });
    try {
      const k = await node.createKey('flood', ['list']);
      const tok = ((await node.request('POST', '/auth/token', { auth: k.basic, body: {} })).json as { access_token: string }).access_token;
      const bad = basic(k.id, `tsk_${'A'.repeat(43)}`);
      const rs = await Promise.all(Array.from({ length: 24 }, () => node.request('GET', '/files/browse', { auth: bad })));
      const statuses = rs.map((r) => r.status);
      assert.ok(statuses.every((s) => s === 401 || s === 503), statuses.join(','));
      assert.ok(statuses.includes(503) && statuses.includes(401), statuses.join(','));
      const busy = rs.find((r) => r.status === 503) as Response;
      assertError(node, busy, 503, 'BUSY', 'api.error');
      assert.equal((await node.request('GET', '/files/browse', { auth: `Bearer ${tok}` })).status, 200);
    } finally {
      await node.close();
    }
  });
});
