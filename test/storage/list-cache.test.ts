/**
 * LocalStorage with a ListingCache: the whole storage contract (with minEntries 0 so that
 * every listing goes through the cache), invalidation when a directory changes, the age
 * bound for in-place changes, pages equal to an uncached backend's for every sort and
 * order, and the memory bound.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListingCache, LocalStorage, nodeDirScanner, type DirScanner, type ListOptions, type ListSort, type StorageBackend } from '../../src/storage/index.js';
import { rejectsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';
import { storageContract } from './contract.js';

storageContract('local+list-cache', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tachyon-lc-'));
  return { backend: await LocalStorage.open(dir, { listCache: new ListingCache({ minEntries: 0 }) }), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describe('ListingCache with LocalStorage', () => {
  it('pages equal the uncached ones for every sort, order, offset and limit', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tachyon-lc-'));
    const rng = new Rng(77);
    for (let i = 0; i < 300; i++) await writeFile(join(dir, `f${rng.int(1000)}-${i}`), 'x'.repeat(rng.int(50)));
    const plain = await LocalStorage.open(dir);
    const cached = await LocalStorage.open(dir, { listCache: new ListingCache({ minEntries: 0 }) });
    for (let k = 0; k < 60; k++) {
      const o = { sort: rng.pick(['name', 'size', 'mtime'] as ListSort[]), order: rng.pick(['asc', 'desc'] as const), offset: rng.int(320), limit: rng.int(120) };
      const a = await plain.list('', o);
      const b = await cached.list('', o);
      assert.deepEqual(b, a, JSON.stringify(o));
    }
    await rejectsCode(cached.list('', { limit: -1 }), 'USAGE');
    await rejectsCode(cached.list('', { sort: 'owner' as ListSort }), 'USAGE');
    await rm(dir, { recursive: true, force: true });
  });

  it('a directory that changes is listed afresh; in-place changes show once the listing is older than maxAgeMs', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tachyon-lc-'));
    let now = 1000;
    const s = await LocalStorage.open(dir, { listCache: new ListingCache({ minEntries: 0, maxAgeMs: 500, now: () => now }) });
    await writeFile(join(dir, 'a'), 'x');
    assert.equal((await s.list('', { sort: 'size' })).total, 1);
    await writeFile(join(dir, 'b'), 'xy');
    const after = await s.list('', { sort: 'size' });
    assert.deepEqual(after.entries.map((e) => e.name), ['a', 'b'], 'new entry seen at once');
    await writeFile(join(dir, 'a'), 'xyz'); // in place: the directory does not change
    now += 100;
    const stale = await s.list('', { sort: 'size' });
    assert.equal(stale.entries.find((e) => e.name === 'a')?.size, 1, 'within maxAgeMs: the cached size');
    now += 500;
    const fresh = await s.list('', { sort: 'size' });
    assert.equal(fresh.entries.find((e) => e.name === 'a')?.size, 3, 'after maxAgeMs: fresh');
    await rm(dir, { recursive: true, force: true });
  });

  it('holds at most maxEntries entries', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tachyon-lc-'));
    for (const d of ['d1', 'd2']) {
      await rm(join(dir, d), { recursive: true, force: true });
      const { mkdir } = await import('node:fs/promises');
      await mkdir(join(dir, d));
      for (let i = 0; i < 30; i++) await writeFile(join(dir, d, `f${i}`), '');
    }
    const cache = new ListingCache({ minEntries: 0, maxEntries: 40 });
    const s = await LocalStorage.open(dir, { listCache: cache });
    assert.equal((await s.list('d1', { sort: 'size' })).total, 30);
    assert.equal((await s.list('d2', { sort: 'size' })).total, 30);
    assert.equal((await s.list('d1', { sort: 'size' })).total, 30, 'evicted and read again');
    assert.ok((cache as unknown as { held: number }).held <= 40);
    await rm(dir, { recursive: true, force: true });
  });

  it('sorted paging across writes through the storage: a file added to or removed from a subdirectory moves it in mtime order at once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tachyon-lc-'));
    await mkdir(join(dir, 'sub'));
    for (let i = 0; i < 25; i++) {
      await writeFile(join(dir, `f${String(i).padStart(2, '0')}`), 'x'.repeat(i));
      await utimes(join(dir, `f${String(i).padStart(2, '0')}`), 1_000_000_000 + i, 1_000_000_000 + i);
    }
    await utimes(join(dir, 'sub'), 900_000_000, 900_000_000); // the oldest entry
    // only a change of the directory's stamp or an invalidation can refresh a listing here
    const s = await LocalStorage.open(dir, { listCache: new ListingCache({ minEntries: 0, maxAgeMs: 3_600_000, now: () => 5 }) });
    const fresh = async (o: ListOptions): Promise<unknown> => (await LocalStorage.open(dir)).list('', o);
    const o = (offset: number, order: 'asc' | 'desc' = 'asc'): ListOptions => ({ sort: 'mtime', order, offset, limit: 10 });
    const put = async (b: StorageBackend, p: string, text: string): Promise<void> => {
      const w = await b.createWriter(p, text.length);
      await w.write(0, Buffer.from(text));
      await w.commit();
    };
    assert.equal((await s.list('', o(0))).entries[0]?.name, 'sub', 'page 1: sub is the oldest');
    await put(s, 'sub/new', 'abc'); // sub's mtime changes; its parent's does not
    const page3 = await s.list('', o(20));
    assert.deepEqual(page3, await fresh(o(20)), 'page 3 after a file was added to sub');
    assert.equal(page3.entries.at(-1)?.name, 'sub', 'sub is now the newest');
    assert.deepEqual(await s.list('', o(0)), await fresh(o(0)), 'page 1 again');
    await s.remove('sub/new'); // and again
    assert.deepEqual(await s.list('', o(10, 'desc')), await fresh(o(10, 'desc')), 'page 2 (desc) after the file was removed');
    // entries added to and removed from the directory itself
    await put(s, 'g-new', 'zz');
    await s.remove('f03');
    await s.rename('f04', 'sub/f04');
    for (const off of [0, 10, 20]) assert.deepEqual(await s.list('', o(off)), await fresh(o(off)), `page at ${off} after add, remove, rename`);
    assert.equal((await s.list('', o(0))).total, 25);
    await rm(dir, { recursive: true, force: true });
  });

  it('a listing read while a write changes the directory is not kept', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tachyon-lc-'));
    await mkdir(join(dir, 'sub'));
    for (let i = 0; i < 5; i++) await writeFile(join(dir, `f${i}`), '');
    await utimes(join(dir, 'sub'), 900_000_000, 900_000_000);
    let during: (() => Promise<void>) | undefined;
    const inner = nodeDirScanner();
    // the test adapter of the DirScanner seam: a write lands after the directory was read
    const slow: DirScanner = {
      kind: 'test',
      async scan(d, withStats) {
        const r = await inner.scan(d, withStats);
        const f = during;
        during = undefined;
        if (f) await f();
        return r;
      },
    };
    const s = await LocalStorage.open(dir, { scanner: slow, listCache: new ListingCache({ minEntries: 0, maxAgeMs: 3_600_000, now: () => 5 }) });
    during = async () => {
      const w = await s.createWriter('sub/x', 0);
      await w.commit();
    };
    const stale = await s.list('', { sort: 'mtime' });
    assert.equal(stale.entries[0]?.mtimeMs, 900_000_000_000, 'read before the write');
    const after = await s.list('', { sort: 'mtime' });
    assert.equal(after.entries.at(-1)?.name, 'sub', 'the listing read during the write was not cached');
    assert.ok((after.entries.at(-1)?.mtimeMs ?? 0) > 900_000_000_000);
    await rm(dir, { recursive: true, force: true });
  });
});
