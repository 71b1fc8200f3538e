/**
 * The storage side of transfers: StoreSink (a BlockSink over a ChunkWriter, digest before
 * commit) and storageUploadResolver (client paths into backend paths), over MemoryStorage.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import type { Hello } from '../../src/control/messages.js';
import { MemoryStorage } from '../../src/storage/index.js';
import { storageUploadResolver } from '../../src/transfer/session.js';
import { Spooler, StoreSink, hashStoredRanges, storageListing } from '../../src/transfer/store-file.js';
import { ExcludeSet } from '../../src/transfer/exclude.js';
import type { OutgoingFile } from '../../src/transfer/roles.js';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { rejectsCode, throwsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';
import { readAll, storeOf } from '../helpers/memory-store.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');


describe('StoreSink', () => {
  it('takes blocks out of order (reused buffer), gives the SHA-256, and publishes only on commit with the mtime', async () => {
    const backend = new MemoryStorage();
    const rng = new Rng(11);
    const data = rng.bytes(300_000);
    const sink = new StoreSink(storeOf(backend), 'in/f.bin', data.length, 1_234_567);
    const blocks: number[] = [];
    for (let off = 0; off < data.length; off += 1400) blocks.push(off);
    for (let i = blocks.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [blocks[i], blocks[j]] = [blocks[j] as number, blocks[i] as number];
    }
    const scratch = Buffer.alloc(1400);
    for (const off of blocks) {
      const len = Math.min(1400, data.length - off);
      data.copy(scratch, 0, off, off + len);
      sink.write(off, scratch.subarray(0, len));
      scratch.fill(0); // the receiver reuses its buffer
    }
    assert.equal(await sink.finish(), sha(data));
    await rejectsCode(backend.stat('in/f.bin'), 'NOT_FOUND', 'not visible before commit');
    await sink.commit();
    assert.equal(sha(await readAll(backend, 'in/f.bin')), sha(data));
    assert.equal((await backend.stat('in/f.bin')).mtimeMs, 1_234_567);
  });

  it('an empty file commits; abort leaves nothing', async () => {
    const backend = new MemoryStorage();
    const empty = new StoreSink(storeOf(backend), 'e', 0, undefined);
    assert.equal(await empty.finish(), sha(Buffer.alloc(0)));
    await empty.commit();
    assert.equal((await backend.stat('e')).size, 0);
    const s = new StoreSink(storeOf(backend), 'x', 10, undefined);
    s.write(0, Buffer.alloc(5, 1));
    await s.abort();
    await s.abort();
    await rejectsCode(backend.stat('x'), 'NOT_FOUND');
    s.write(5, Buffer.alloc(5, 1)); // ignored after abort
  });

  it('a missing tail fails finish (IO incomplete); too much held out of order is DISK_FULL', async () => {
    const backend = new MemoryStorage();
    const s = new StoreSink(storeOf(backend), 'f', 10, undefined);
    s.write(0, Buffer.alloc(5));
    const e = await rejectsCode(s.finish(), 'IO');
    assert.equal(e.details?.reason, 'incomplete');
    await s.abort();
    const h = new StoreSink(storeOf(backend), 'g', 100, undefined, 30);
    h.write(50, Buffer.alloc(20));
    throwsCode(() => h.write(80, Buffer.alloc(20)), 'DISK_FULL', 'beyond the hold limit');
    throwsCode(() => h.write(0, Buffer.alloc(10)), 'DISK_FULL', 'the error sticks');
    await h.abort();
    throwsCode(() => new StoreSink(storeOf(backend), 'k', 10, undefined).write(8, Buffer.alloc(5)), 'PROTOCOL', 'outside the file');
  });

  it('a writer that cannot be created (parent is a file) fails the next write and finish', async () => {
    const backend = new MemoryStorage();
    const w = await backend.createWriter('p', 1);
    await w.write(0, Buffer.from('x'));
    await w.commit();
    const s = new StoreSink({ backend, ensureDir: async () => undefined }, 'p/child', 4, undefined);
    s.write(0, Buffer.alloc(2));
    await rejectsCode(s.finish(), 'NOT_FOUND');
    throwsCode(() => s.write(2, Buffer.alloc(2)), 'NOT_FOUND');
  });

  it('hashStoredRanges digests ranges of a stored file', async () => {
    const backend = new MemoryStorage();
    const data = new Rng(3).bytes(3_000_000);
    const w = await backend.createWriter('f', data.length);
    await w.write(0, data);
    await w.commit();
    const sums = await hashStoredRanges(backend, 'f', [{ at: 0, len: 10 }, { at: 1_000_000, len: 1_500_000 }]);
    assert.deepEqual(sums, [
      { at: 0, len: 10, sha256: sha(data.subarray(0, 10)) },
      { at: 1_000_000, len: 1_500_000, sha256: sha(data.subarray(1_000_000, 2_500_000)) },
    ]);
    await rejectsCode(hashStoredRanges(backend, 'f', [{ at: 2_999_000, len: 2000 }]), 'IO', 'beyond the end');
  });
});

describe('storageUploadResolver', () => {
  const hello = (h: Partial<Hello>): Hello => ({ dest: '/', ...h }) as Hello;

  it('maps client paths under the destination directory and refuses traversal', async () => {
    const backend = new MemoryStorage();
    await backend.mkdir('in');
    const r = await storageUploadResolver(storeOf(backend), hello({ dest: '/in/' }), () => undefined);
    assert.equal(r('a/b.bin', 'file'), 'in/a/b.bin');
    assert.equal(r('x/../y', 'file'), 'in/y', 'dot-dot inside the tree is folded like the jail');
    for (const bad of ['../x', '/../../etc/passwd', 'a\u0000b', '.tachyon.part.1', 'a/\u202ebad']) {
      throwsCode(() => r(bad, 'file'), 'PATH_INVALID', JSON.stringify(bad));
    }
    throwsCode(() => r('', 'file'), 'PATH_INVALID', 'empty');
  });

  it('a single file to a new name; a missing directory needs createDir and the mkdir permission', async () => {
    const backend = new MemoryStorage();
    const one = await storageUploadResolver(storeOf(backend), hello({ dest: '/name.bin', single: true }), () => undefined);
    assert.equal(one('whatever.bin', 'file'), 'name.bin');
    await rejectsCode(storageUploadResolver(storeOf(backend), hello({ dest: '/new/' }), () => undefined), 'NOT_FOUND');
    let asked = 0;
    const made = await storageUploadResolver(storeOf(backend), hello({ dest: '/new/', createDir: true }), () => asked++);
    assert.equal(asked, 1);
    assert.equal((await backend.stat('new')).kind, 'directory');
    assert.equal(made('f', 'file'), 'new/f');
    const w = await backend.createWriter('file', 1);
    await w.write(0, Buffer.from('x'));
    await w.commit();
    await rejectsCode(storageUploadResolver(storeOf(backend), hello({ dest: '/file/' }), () => undefined), 'EXISTS', 'not a directory');
    await rejectsCode(storageUploadResolver(storeOf(backend), hello({ dest: '/../x/' }), () => undefined), 'PATH_INVALID');
  });
});

async function put(s: MemoryStorage, p: string, data: Uint8Array, mtimeMs?: number): Promise<void> {
  const w = await s.createWriter(p, data.length, mtimeMs !== undefined ? { mtimeMs } : {});
  await w.write(0, data);
  await w.commit();
}

describe('downloads from a storage backend', () => {
  it('storageListing: files and empty directories with their relative paths, source base, excludes, missing sources', async () => {
    const b = new MemoryStorage();
    await b.mkdir('data/tree/sub/empty', { recursive: true });
    await put(b, 'data/tree/a.txt', Buffer.from('a'), 5_000);
    await put(b, 'data/tree/sub/b.bin', Buffer.from('bb'));
    await put(b, 'data/tree/sub/skip.tmp', Buffer.from('x'));
    await put(b, 'data/one.txt', Buffer.from('1'));
    const toStorage = (p: string): string => p.replace(/^\/+/, '');
    const l = await storageListing(b, ['/data/tree', '/data/one.txt'], { toStorage, exclude: new ExcludeSet(['*.tmp']) });
    assert.deepEqual(
      l.files.map((f) => [f.path, f.abs, f.size]),
      [['tree/a.txt', 'data/tree/a.txt', 1], ['tree/sub/b.bin', 'data/tree/sub/b.bin', 2], ['one.txt', 'data/one.txt', 1]],
    );
    assert.equal(l.files[0]?.mtimeMs, 5_000);
    assert.deepEqual(l.dirs, ['tree/sub/empty']);
    const based = await storageListing(b, ['/data/tree/sub'], { toStorage, srcBase: '/data' });
    assert.deepEqual(based.files.map((f) => f.path), ['tree/sub/b.bin', 'tree/sub/skip.tmp']);
    await rejectsCode(storageListing(b, ['/data/one.txt'], { toStorage, srcBase: '/data/tree' }), 'USAGE', 'not below the base');
    await rejectsCode(storageListing(b, ['/nope'], { toStorage }), 'NOT_FOUND');
  });

  it('Spooler: fetches each object once into a private file, rewrites abs, removes it on release and everything on close', async () => {
    const b = new MemoryStorage();
    const data = new Rng(9).bytes(20 * 1024 * 1024 + 5); // three ranged reads
    await put(b, 'big.bin', data);
    await put(b, 'small', Buffer.from('hello'));
    const parent = mkdtempSync(path.join(os.tmpdir(), 'tachyon-spooltest-'));
    try {
      const sp = await Spooler.create(b, parent);
      assert.equal(path.dirname(sp.dir), parent);
      assert.equal(statSync(sp.dir).mode & 0o777, 0o700);
      const big: OutgoingFile = { path: 'big.bin', abs: 'big.bin', size: data.length, mtimeMs: 0 };
      const small: OutgoingFile = { path: 'small', abs: 'small', size: 5, mtimeMs: 0 };
      await Promise.all([sp.prepare(big), sp.prepare(small), sp.prepare(big)]);
      assert.ok(big.abs.startsWith(sp.dir), big.abs);
      assert.equal(statSync(big.abs).mode & 0o777, 0o600);
      assert.equal(sha(readFileSync(big.abs)), sha(data));
      assert.equal(readFileSync(small.abs, 'utf8'), 'hello');
      sp.release(small);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(readdirSync(sp.dir).length, 1);
      const changed: OutgoingFile = { path: 'small', abs: 'small', size: 6, mtimeMs: 0 };
      await rejectsCode(sp.prepare(changed), 'IO', 'size changed since listing');
      await sp.close();
      assert.deepEqual(readdirSync(parent), []);
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });
});
