/**
 * The node API's files routes on an access key whose storage root is `s3://bucket/prefix`
 * (S3Storage through lazyS3Backends and the storage factory) against a real s3rver:
 * browse, stat, mkdir, rename, delete land in the bucket under the key's prefix only;
 * traversal stays inside the prefix; an s3:// key on a node without S3 backends is a
 * sanitized error that names neither the bucket nor the prefix.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { S3Client } from '@aws-sdk/client-s3';
import { S3Storage } from '../../src/storage/s3.js';
import { lazyS3Backends, type S3Backends } from '../../src/storage/s3-backends.js';
import { startS3rver, type S3rverFixture } from '../helpers/s3rver.js';
import { basic, startTestNode, type TestNode } from './helpers.js';

const BUCKET = 'tachyon-api';

describe('node API files on an s3:// access key (s3rver)', () => {
  let s3: S3rverFixture;
  let client: S3Client;
  let backends: S3Backends;
  let node: TestNode;
  let plain: TestNode;
  let keyRoot: S3Storage;
  let other: S3Storage;
  let auth: string;

  const put = async (store: S3Storage, p: string, data: string): Promise<void> => {
    const w = await store.createWriter(p, Buffer.byteLength(data), { overwrite: true });
    await w.write(0, Buffer.from(data));
    await w.commit();
  };

  before(async () => {
    s3 = await startS3rver([BUCKET]);
    client = s3.client();
    backends = lazyS3Backends({ connection: s3.connection });
    node = await startTestNode({ extraRoots: [`s3://${BUCKET}/keys/*`], s3: backends });
    plain = await startTestNode({ extraRoots: [`s3://${BUCKET}/keys/*`] });
    keyRoot = new S3Storage({ client, location: `s3://${BUCKET}/keys/k1` });
    other = new S3Storage({ client, location: `s3://${BUCKET}/keys/k2` });
    await keyRoot.mkdir('docs', { recursive: true });
    await put(keyRoot, 'docs/b.txt', 'bb');
    await put(keyRoot, 'docs/a.txt', 'a');
    await put(other, 'secret.txt', 'not yours');
    const r = await node.request('POST', '/access_keys', { auth: node.admin, body: { storage_root: `s3://${BUCKET}/keys/k1`, permissions: ['list', 'read', 'write', 'mkdir', 'rename', 'delete'] } });
    assert.equal(r.status, 201, r.text);
    const j = r.json as { id: string; secret: string };
    auth = basic(j.id, j.secret);
  });

  after(async () => {
    await node?.close();
    await plain?.close();
    await backends?.close();
    client?.destroy();
    await s3?.close();
  });

  it('browses and stats objects under the key prefix', async () => {
    const top = await node.request('GET', '/files/browse', { auth });
    assert.equal(top.status, 200, top.text);
    assert.deepEqual((top.json as { entries: { name: string }[] }).entries.map((e) => e.name), ['docs']);
    const docs = await node.request('GET', '/files/browse?path=/docs', { auth });
    assert.equal(docs.headers['x-total-count'], '2');
    assert.deepEqual((docs.json as { entries: { name: string; size: number }[] }).entries.map((e) => [e.name, e.size]), [
      ['a.txt', 1],
      ['b.txt', 2],
    ]);
    const st = await node.request('GET', '/files/stat?path=/docs/b.txt', { auth });
    assert.equal(st.status, 200, st.text);
    assert.equal((st.json as { size: number; type: string }).size, 2);
    assert.equal((await node.request('GET', '/files/stat?path=/nothing', { auth })).status, 404);
  });

  it('mkdir, rename and delete change the bucket under the prefix only; traversal stays inside', async () => {
    assert.equal((await node.request('POST', '/files/mkdir', { auth, body: { path: '/new/deep', recursive: true } })).status, 201);
    assert.equal((await keyRoot.stat('new/deep')).kind, 'directory');
    const mv = await node.request('POST', '/files/rename', { auth, body: { from: '/docs/a.txt', to: '/new/a.txt' } });
    assert.equal(mv.status, 200, mv.text);
    assert.equal((await keyRoot.stat('new/a.txt')).size, 1);
    await assert.rejects(keyRoot.stat('docs/a.txt'), (e: unknown) => (e as { code?: string }).code === 'NOT_FOUND');
    assert.equal((await node.request('POST', '/files/delete', { auth, body: { path: '/new', recursive: true } })).status, 204);
    await assert.rejects(keyRoot.stat('new'), (e: unknown) => (e as { code?: string }).code === 'NOT_FOUND');
    for (const p of ['/../k2/secret.txt', '/%2e%2e/k2/secret.txt', '/docs/..%5c..%5ck2']) {
      const r = await node.request('GET', `/files/stat?path=${p}`, { auth });
      assert.ok(r.status === 400 || r.status === 404, `${p}: ${r.status} ${r.text}`);
      assert.ok(!r.text.includes(BUCKET) && !r.text.includes('not yours'), r.text);
    }
    const del = await node.request('POST', '/files/delete', { auth, body: { path: '/../k2/secret.txt' } });
    assert.ok(del.status === 400 || del.status === 404, del.text);
    assert.equal((await other.stat('secret.txt')).size, 9, 'the other prefix is untouched');
  });

  it('a node without S3 backends refuses an s3:// key with a sanitized error', async () => {
    const r = await plain.request('POST', '/access_keys', { auth: plain.admin, body: { storage_root: `s3://${BUCKET}/keys/k1`, permissions: ['list'] } });
    assert.equal(r.status, 201, r.text);
    const j = r.json as { id: string; secret: string };
    const b = await plain.request('GET', '/files/browse', { auth: basic(j.id, j.secret) });
    assert.ok(b.status >= 500, `${b.status} ${b.text}`);
    assert.ok(!b.text.includes(BUCKET) && !b.text.includes('keys/k1'), b.text);
  });
});
