/**
 * The files routes over HTTPS with real access keys on a real directory: browse (paged,
 * sorted, X-Total-Count), stat, mkdir, rename, delete; permissions (deny by default);
 * traversal in every path parameter; every change audited; and a seeded fuzz of request
 * parsing (random bodies, query strings and paths never give a 5xx).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Rng } from '../helpers/rng.js';
import { startTestNode, type TestNode } from './helpers.js';

describe('node API files', () => {
  let node: TestNode;
  let rw: { id: string; secret: string; basic: string };
  let ro: { id: string; secret: string; basic: string };
  let root: string;
  let bearer: string;

  before(async () => {
    node = await startTestNode();
    rw = await node.createKey('alice', ['list', 'read', 'write', 'mkdir', 'rename', 'delete']);
    ro = await node.createKey('alice', ['list', 'read']);
    root = path.join(node.files, 'alice');
    mkdirSync(path.join(root, 'docs'));
    for (const [i, n] of ['b.txt', 'a.txt', 'c.txt'].entries()) {
      writeFileSync(path.join(root, 'docs', n), 'x'.repeat((3 - i) * 10));
      utimesSync(path.join(root, 'docs', n), 1_000_000 + i * 100, 1_000_000 + i * 100);
    }
    writeFileSync(path.join(node.files, 'secret.txt'), 'outside the key root');
    bearer = `Bearer ${((await node.request('POST', '/auth/token', { auth: rw.basic, body: {} })).json as { access_token: string }).access_token}`;
  });
  after(async () => {
    await node?.close();
  });

  it('browses a directory: sorted, paged, with X-Total-Count', async () => {
    const r = await node.request('GET', '/files/browse?path=/docs&limit=2', { auth: bearer });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-total-count'], '3');
    const j = r.json as { total: number; entries: { name: string; path: string; type: string; size: number }[] };
    assert.deepEqual(j.entries.map((e) => e.name), ['a.txt', 'b.txt']);
    assert.equal(j.entries[0]?.path, '/docs/a.txt');
    const p2 = (await node.request('GET', '/files/browse?path=docs&limit=2&offset=2', { auth: bearer })).json as { entries: { name: string }[] };
    assert.deepEqual(p2.entries.map((e) => e.name), ['c.txt']);
    const bySize = (await node.request('GET', '/files/browse?path=docs&sort=size&order=desc', { auth: bearer })).json as { entries: { name: string }[] };
    assert.deepEqual(bySize.entries.map((e) => e.name), ['b.txt', 'a.txt', 'c.txt']);
    const byMtime = (await node.request('GET', '/files/browse?path=docs&sort=mtime', { auth: bearer })).json as { entries: { name: string }[] };
    assert.deepEqual(byMtime.entries.map((e) => e.name), ['b.txt', 'a.txt', 'c.txt']);
    const top = (await node.request('GET', '/files/browse', { auth: ro.basic })).json as { entries: { name: string }[] };
    assert.deepEqual(top.entries.map((e) => e.name), ['docs'], 'the root of the key, nothing of its parent');
    assert.equal((await node.request('GET', '/files/browse?limit=1001', { auth: bearer })).status, 400);
    assert.equal((await node.request('GET', '/files/browse?sort=owner', { auth: bearer })).status, 400);
  });

  it('stat, mkdir, rename, delete inside the root, each change audited', async () => {
    const st = await node.request('GET', '/files/stat?path=/docs/a.txt', { auth: bearer });
    assert.deepEqual({ ...(st.json as object), mtime: undefined }, { name: 'a.txt', path: '/docs/a.txt', type: 'file', size: 20, mtime: undefined });
    const mk = await node.request('POST', '/files/mkdir', { auth: bearer, body: { path: '/new/deep', recursive: true } });
    assert.equal(mk.status, 201, mk.text);
    assert.ok(existsSync(path.join(root, 'new', 'deep')));
    assert.equal((await node.request('POST', '/files/mkdir', { auth: bearer, body: { path: '/new/deep' } })).status, 409);
    const mv = await node.request('POST', '/files/rename', { auth: bearer, body: { from: '/docs/c.txt', to: '/new/c.txt' } });
    assert.equal(mv.status, 200, mv.text);
    assert.ok(existsSync(path.join(root, 'new', 'c.txt')) && !existsSync(path.join(root, 'docs', 'c.txt')));
    assert.equal((await node.request('POST', '/files/delete', { auth: bearer, body: { path: '/new' } })).status, 409, 'not empty');
    assert.equal((await node.request('POST', '/files/delete', { auth: bearer, body: { path: '/new', recursive: true } })).status, 204);
    assert.ok(!existsSync(path.join(root, 'new')));
    assert.equal((await node.request('GET', '/files/stat?path=/nothing', { auth: bearer })).status, 404);
    const ops = node.auditRecords().filter((r) => r.type === 'file.operation');
    assert.deepEqual(
      ops.map((r) => [r.fields.op, r.fields.status, r.fields.user]),
      [
        ['mkdir', 'ok', rw.id],
        ['mkdir', 'failed', rw.id],
        ['rename', 'ok', rw.id],
        ['delete', 'failed', rw.id],
        ['delete', 'ok', rw.id],
      ],
    );
    assert.equal(ops[2]?.fields.target, 'new/c.txt');
  });

  it('refuses what the key does not grant (403, refusal.permission audited), and leaves the disk alone', async () => {
    const before = readdirSync(root).sort();
    for (const [url, body, perm] of [
      ['/files/mkdir', { path: '/x' }, 'mkdir'],
      ['/files/rename', { from: '/docs/a.txt', to: '/a.txt' }, 'rename'],
      ['/files/delete', { path: '/docs/a.txt' }, 'delete'],
    ] as const) {
      const r = await node.request('POST', url, { auth: ro.basic, body });
      assert.equal(r.status, 403, r.text);
      const id = (r.json as { error: { correlation_id: string } }).error.correlation_id;
      const rec = node.auditRecords().find((x) => x.correlationId === id);
      assert.equal(rec?.type, 'refusal.permission');
      assert.equal(rec?.fields.permission, perm);
    }
    assert.deepEqual(readdirSync(root).sort(), before);
    const none = await node.createKey('alice', []);
    assert.equal((await node.request('GET', '/files/browse', { auth: none.basic })).status, 403);
    assert.equal((await node.request('GET', '/files/stat?path=docs', { auth: none.basic })).status, 403);
  });

  it('refuses traversal in every path parameter: .., %2e%2e, NUL, backslash; absolute paths stay inside the root', async () => {
    const bad = ['..', '../secret.txt', '/../secret.txt', 'docs/../../secret.txt', '%2e%2e/secret.txt', '%2E%2E', '.%2e/secret.txt', 'docs%2f..%2f..%2fsecret.txt', 'a%00b', '..%5csecret.txt', 'docs\\..\\..\\secret.txt', '.', './docs', 'docs/./a.txt', '.tachyon.part.x'];
    const decoded = (s: string): string => decodeURIComponent(s);
    const calls: [string, string, (p: string) => { url: string; body?: unknown }][] = [
      ['GET', 'browse', (p) => ({ url: `/files/browse?path=${p}` })],
      ['GET', 'stat', (p) => ({ url: `/files/stat?path=${p}` })],
      ['POST', 'mkdir', (p) => ({ url: '/files/mkdir', body: { path: decoded(p) } })],
      ['POST', 'rename from', (p) => ({ url: '/files/rename', body: { from: decoded(p), to: 'moved' } })],
      ['POST', 'rename to', (p) => ({ url: '/files/rename', body: { from: 'docs/a.txt', to: decoded(p) } })],
      ['POST', 'delete', (p) => ({ url: '/files/delete', body: { path: decoded(p) } })],
    ];
    for (const p of bad) {
      for (const [method, what, make] of calls) {
        const c = make(p);
        const r = await node.request(method, c.url, { auth: rw.basic, ...(c.body !== undefined ? { body: c.body } : {}) });
        assert.equal(r.status, 400, `${what} ${p}: ${r.status} ${r.text}`);
        const body = r.json as { error: { code: string; message: string; correlation_id: string } };
        assert.equal(body.error.code, 'PATH_INVALID', `${what} ${p}`);
        assert.ok(!r.text.includes(node.files), 'no server path in the reply');
        const rec = node.auditRecords().find((x) => x.correlationId === body.error.correlation_id);
        assert.equal(rec?.type, 'refusal.jail', `${what} ${p}`);
      }
    }
    assert.ok(existsSync(path.join(node.files, 'secret.txt')));
    assert.ok(existsSync(path.join(root, 'docs', 'a.txt')));
    // an "absolute" path names the key's root, never the server's /
    const abs = await node.request('GET', `/files/stat?path=${encodeURIComponent(path.join(node.files, 'secret.txt'))}`, { auth: rw.basic });
    assert.equal(abs.status, 404);
    const etc = await node.request('GET', '/files/browse?path=/etc', { auth: rw.basic });
    assert.equal(etc.status, 404);
  });

  it('fuzz: random query strings, bodies and paths never give a 5xx, and every error is the sanitized shape', async () => {
    const rng = new Rng(0x5eed4);
    const alphabet = ['a', '/', '.', '..', '%', '%2e', '%00', '\\', '?', '&', '=', '#', '"', '{', '}', '[', ']', ':', ',', 'path', 'limit', 'offset', 'sort', '-1', '1e9', 'null', 'true', '\u00e9', '\ud800', '\u202e', ' ', '+', '%ff'];
    const word = (n: number): string => Array.from({ length: rng.int(n) }, () => rng.pick(alphabet)).join('');
    const urls = ['/files/browse', '/files/stat', '/files/mkdir', '/files/rename', '/files/delete', '/access_keys', '/auth/token', '/info'];
    for (let i = 0; i < 300; i++) {
      const url = rng.pick(urls);
      const method = rng.pick(['GET', 'POST', 'DELETE', 'PUT']);
      const q = rng.chance(0.7) ? `?${word(8)}` : '';
      const body = rng.chance(0.5) ? word(20) : JSON.stringify({ [rng.pick(['path', 'from', 'to', 'recursive', 'x'])]: rng.chance(0.5) ? word(6) : rng.int(5), ...(rng.chance(0.3) ? { to: word(4) } : {}) });
      let target = `${url}${q}`;
      try {
        new URL(target, 'https://x');
      } catch {
        target = url;
      }
      const r = await node.request(method, target.replace(/[^\x21-\x7e]/gu, (c) => [...Buffer.from(c, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')), {
        auth: rng.pick([rw.basic, bearer, node.admin, 'Basic x']),
        ...(method === 'POST' || method === 'PUT' ? { rawBody: body } : {}),
      });
      assert.ok(r.status < 500, `#${i} ${method} ${target} ${body} → ${r.status} ${r.text}`);
      if (r.status >= 400) {
        const e = r.json as { error: { code: string; message: string; correlation_id: string } };
        assert.equal(typeof e.error.code, 'string', r.text);
        assert.equal(r.headers['x-correlation-id'], e.error.correlation_id);
      }
    }
  });
});
