/**
 * The transfer-setup plugin in a real fastify instance on port 0: specs with Aspera's
 * field names and a token bound to the key, direction and exact paths; every bad input
 * refused with a 4xx and a sanitized body.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { systemClock } from '../../src/core/clock.js';
import { MemoryAuditSink } from '../../src/audit/index.js';
import { tokenKeyOf, TransferTokenCodec } from '../../src/server/transfer-token.js';
import { transferSetupPlugin, type TransferSpec } from '../../src/node-api/transfer-setup.js';
import { Rng } from '../helpers/rng.js';
import { startPluginApp, TEST_KEY_ID, TEST_SECRET } from './setup-helpers.js';

const FP = 'SHA256:' + 'A'.repeat(43);

describe('POST /files/upload_setup and /files/download_setup', () => {
  const audit = new MemoryAuditSink();
  const codec = new TransferTokenCodec({ nodeId: 'node-t', keys: { current: tokenKeyOf(Buffer.alloc(32, 7)) }, clock: systemClock });
  let app: FastifyInstance;
  let url: string;

  before(async () => {
    ({ app, url } = await startPluginApp(
      transferSetupPlugin({ codec, host: 'files.example.net', sshPort: 33001, udpPort: 33001, user: 'xfer', hostKeyFingerprint: FP, ttlMs: 120_000 }),
      audit,
      [
        { id: TEST_KEY_ID, secret: TEST_SECRET, storageRoot: 'file:///srv/media', permissions: ['list', 'read', 'write', 'mkdir'] },
        { id: 'ak-readonly', secret: 'ro-secret', storageRoot: 'file:///srv/media', permissions: ['list', 'read'] },
      ],
    ));
  });
  after(async () => {
    await app.close();
  });

  const post = async (route: string, body: unknown, o: { secret?: string | null; raw?: string; type?: string } = {}): Promise<{ status: number; json: Record<string, unknown> }> => {
    const headers: Record<string, string> = { 'content-type': o.type ?? 'application/json' };
    if (o.secret !== null) headers.authorization = `Bearer ${o.secret ?? TEST_SECRET}`;
    const res = await fetch(`${url}${route}`, { method: 'POST', headers, body: o.raw ?? JSON.stringify(body) });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  };
  const specOf = (j: Record<string, unknown>, i = 0): TransferSpec => (j.transfer_specs as { transfer_spec: TransferSpec }[])[i]!.transfer_spec;

  it('upload_setup returns an Aspera-like spec whose token grants exactly the destination paths', async () => {
    const body = { transfer_requests: [{ transfer_request: { paths: [{ source: '/home/me/a.mov', destination: 'a.mov' }, { source: 'clips/' }], destination_root: '/incoming/' } }] };
    const { status, json } = await post('/files/upload_setup', body);
    assert.equal(status, 200, JSON.stringify(json));
    const spec = specOf(json);
    assert.equal(spec.remote_host, 'files.example.net');
    assert.equal(spec.remote_user, 'xfer');
    assert.equal(spec.ssh_port, 33001);
    assert.equal(spec.fasp_port, 33001);
    assert.equal(spec.direction, 'send');
    assert.equal(spec.host_key_fingerprint, FP);
    assert.equal(spec.destination_root, '/incoming');
    assert.equal(spec.cipher, 'aes-128-gcm');
    assert.equal(spec.rate_policy, 'fair');
    assert.equal(typeof spec.target_rate_kbps, 'number');
    assert.equal(spec.min_rate_kbps, 0);
    assert.deepEqual(spec.paths, body.transfer_requests[0]!.transfer_request.paths);
    const claims = codec.verify(spec.token);
    assert.equal(claims.accessKeyId, TEST_KEY_ID);
    assert.equal(claims.storageRoot, 'file:///srv/media');
    assert.equal(claims.direction, 'upload');
    assert.deepEqual(claims.paths, ['/incoming/a.mov', '/incoming/clips']);
    assert.ok(claims.expiresAt - claims.issuedAt === 120_000);
    // audited with the token's id, never the token
    const rec = audit.records.find((r) => r.type === 'transfer.authorize' && r.fields['grantId'] === claims.id);
    assert.ok(rec, 'an audit record names the grant');
    assert.ok(!JSON.stringify(audit.records).includes(spec.token));
  });

  it('download_setup: direction receive, paths under source_root, one spec per request', async () => {
    const body = {
      transfer_requests: [
        { transfer_request: { paths: [{ source: 'out/report.pdf' }], source_root: '/projects' } },
        { transfer_request: { paths: [{ source: '/shared/dir' }], cipher: 'aes-256-gcm', rate_policy: 'high', target_rate_kbps: 50000, min_rate_kbps: 1000 } },
      ],
    };
    const { status, json } = await post('/files/download_setup', body);
    assert.equal(status, 200, JSON.stringify(json));
    const a = specOf(json, 0);
    const b = specOf(json, 1);
    assert.equal(a.direction, 'receive');
    assert.deepEqual(codec.verify(a.token).paths, ['/projects/out/report.pdf']);
    assert.equal(codec.verify(a.token).direction, 'download');
    assert.deepEqual(codec.verify(b.token).paths, ['/shared/dir']);
    assert.equal(b.cipher, 'aes-256-gcm');
    assert.equal(b.rate_policy, 'high');
    assert.equal(b.target_rate_kbps, 50000);
    assert.equal(b.min_rate_kbps, 1000);
  });

  it('refuses missing or wrong credentials (401) and a key without the permission (403)', async () => {
    const body = { transfer_requests: [{ transfer_request: { paths: [{ source: 'a' }] } }] };
    assert.equal((await post('/files/upload_setup', body, { secret: null })).status, 401);
    assert.equal((await post('/files/upload_setup', body, { secret: 'nope' })).status, 401);
    const ro = await post('/files/upload_setup', body, { secret: 'ro-secret' });
    assert.equal(ro.status, 403);
    assert.equal(ro.json.code, 'PERMISSION');
    assert.equal((await post('/files/download_setup', body, { secret: 'ro-secret' })).status, 200);
  });

  it('refuses invalid JSON, unknown fields, wrong types, empty lists and oversized bodies (400/413), sanitized', async () => {
    const cases: [string, unknown, { raw?: string }?][] = [
      ['invalid json', undefined, { raw: '{"transfer_requests": [' }],
      ['unknown top-level field', { transfer_requests: [{ transfer_request: { paths: [{ source: 'a' }] } }], extra: 1 }],
      ['unknown request field', { transfer_requests: [{ transfer_request: { paths: [{ source: 'a' }], tags: {} } }] }],
      ['unknown path field', { transfer_requests: [{ transfer_request: { paths: [{ source: 'a', mode: 'x' }] } }] }],
      ['wrong type', { transfer_requests: [{ transfer_request: { paths: 'a' } }] }],
      ['no paths', { transfer_requests: [{ transfer_request: { paths: [] } }] }],
      ['no requests', { transfer_requests: [] }],
      ['not an object', [1, 2, 3]],
      ['bad cipher', { transfer_requests: [{ transfer_request: { paths: [{ source: 'a' }], cipher: 'rot13' } }] }],
      ['no source for a download', { transfer_requests: [{ transfer_request: { paths: [{ destination: 'a' }] } }] }],
    ];
    for (const [what, body, o] of cases) {
      const r = await post('/files/download_setup', body, o ?? {});
      assert.equal(r.status, 400, `${what}: ${JSON.stringify(r.json)}`);
      assert.equal(typeof r.json.message, 'string', what);
      assert.ok(!String(r.json.message).includes('at '), `${what}: no stack in ${String(r.json.message)}`);
    }
    const huge = { transfer_requests: [{ transfer_request: { paths: [{ source: 'x'.repeat(600_000) }] } }] };
    assert.equal((await post('/files/download_setup', huge)).status, 413);
  });

  it('refuses path traversal and odd characters in every path parameter', async () => {
    const bad = ['../etc/passwd', 'a/../../b', 'a/./b', 'a\\..\\b', 'a\u0000b', 'a\u0007b', '.tachyon.part.x'];
    for (const p of bad) {
      const down = await post('/files/download_setup', { transfer_requests: [{ transfer_request: { paths: [{ source: p }] } }] });
      assert.equal(down.status, 400, `source ${JSON.stringify(p)}`);
      assert.equal(down.json.code, 'PATH_INVALID');
      const root = await post('/files/download_setup', { transfer_requests: [{ transfer_request: { paths: [{ source: 'ok' }], source_root: p } }] });
      assert.equal(root.status, 400, `source_root ${JSON.stringify(p)}`);
      const up = await post('/files/upload_setup', { transfer_requests: [{ transfer_request: { paths: [{ source: 'x', destination: p }] } }] });
      assert.equal(up.status, 400, `destination ${JSON.stringify(p)}`);
      const droot = await post('/files/upload_setup', { transfer_requests: [{ transfer_request: { paths: [{ source: 'x' }], destination_root: p } }] });
      assert.equal(droot.status, 400, `destination_root ${JSON.stringify(p)}`);
    }
  });

  it('fuzz: mutated bodies only ever get 200 with valid tokens or a 4xx with a code and message, never a 5xx', async () => {
    const seed = 0x5e7a9;
    const r = new Rng(seed);
    const strings = ['a', '', '..', '../x', 'a/b', '/abs', 'x'.repeat(300), '\u0000', 'é', '.tachyon.part.1', 'a//b', ' '];
    const good = ['a', 'a/b', '/in', 'clip.mov', 'dir/'];
    const values = (): unknown => r.pick<unknown>([r.pick(strings), r.int(1e6), -1, 1.5, null, true, [], {}, [r.pick(strings)], { source: r.pick(strings) }]);
    const base = (): Record<string, unknown> => ({
      transfer_requests: [{ transfer_request: { paths: [{ source: r.pick(good), destination: r.pick(good) }], destination_root: r.pick(good), source_root: r.pick(good) } }],
    });
    const keys = ['transfer_requests', 'transfer_request', 'paths', 'source', 'destination', 'destination_root', 'source_root', 'cipher', 'rate_policy', 'target_rate_kbps', 'min_rate_kbps', 'extra'];
    const mutateDeep = (v: unknown, depth: number): unknown => {
      if (depth > 4 || v === null || typeof v !== 'object') return r.chance(0.3) ? values() : v;
      if (Array.isArray(v)) return r.chance(0.1) ? [] : v.map((x) => mutateDeep(x, depth + 1));
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) if (!r.chance(0.1)) o[k] = mutateDeep(x, depth + 1);
      if (r.chance(0.15)) o[r.pick(keys)] = values();
      return o;
    };
    let ok = 0;
    for (let i = 0; i < 400; i++) {
      const route = r.chance(0.5) ? '/files/upload_setup' : '/files/download_setup';
      const body = mutateDeep(base(), 0);
      const res = await app.inject({ method: 'POST', url: route, headers: { authorization: `Bearer ${TEST_SECRET}`, 'content-type': 'application/json' }, payload: JSON.stringify(body) });
      assert.ok(res.statusCode === 200 || (res.statusCode >= 400 && res.statusCode < 500), `seed ${seed} case ${i}: ${res.statusCode} ${res.body} for ${JSON.stringify(body)}`);
      const j = JSON.parse(res.body) as Record<string, unknown>;
      if (res.statusCode === 200) {
        ok++;
        for (const { transfer_spec } of j.transfer_specs as { transfer_spec: TransferSpec }[]) {
          const c = codec.verify(transfer_spec.token);
          for (const p of c.paths) assert.ok(p.startsWith('/') && !p.split('/').includes('..') && !p.includes('\0'), `seed ${seed} case ${i}: granted ${p}`);
        }
      } else {
        assert.equal(typeof j.code, 'string');
        assert.equal(typeof j.message, 'string');
      }
    }
    assert.ok(ok > 40, `some valid bodies got through (${ok})`);
  });
});
