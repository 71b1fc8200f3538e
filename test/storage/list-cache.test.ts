/**
 * LocalStorage with a ListingCache: the whole storage contract (with minEntries 0 so that
 * every listing goes through the cache), invalidation when a directory changes, the age
 * bound for in-place changes, pages equal to an uncached backend's for every sort and
 * order, and the memory bound.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListingCache, LocalStorage, type ListSort } from '../../src/storage/index.js';
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
});
