/**
 * The StorageBackend contract: one suite every backend passes. `storageContract(name,
 * makeBackend)` registers node:test cases; `makeBackend` returns a fresh, empty backend
 * (and optionally a cleanup function) for each case.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { TachyonError } from '../../src/core/errors.js';
import { normalizeStoragePath, readRange, type StorageBackend } from '../../src/storage/index.js';
import { rejectsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';

export interface BackendFixture {
  readonly backend: StorageBackend;
  readonly cleanup?: () => Promise<void>;
}

export type MakeBackend = () => Promise<BackendFixture>;

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function putFile(s: StorageBackend, path: string, data: Uint8Array): Promise<void> {
  const w = await s.createWriter(path, data.length);
  await w.write(0, data);
  await w.commit();
}

async function readAll(s: StorageBackend, path: string): Promise<Buffer> {
  const h = await s.openRead(path);
  try {
    return await h.read(0, h.size);
  } finally {
    await h.close();
  }
}

async function names(s: StorageBackend, dir: string): Promise<string[]> {
  return (await s.list(dir)).entries.map((e) => e.name);
}

/** Splits [0, size) into chunks of random lengths and returns them in a random order. */
function shuffledChunks(rng: Rng, size: number, maxChunk: number): Array<[number, number]> {
  const chunks: Array<[number, number]> = [];
  for (let off = 0; off < size; ) {
    const len = Math.min(size - off, rng.range(1, maxChunk));
    chunks.push([off, len]);
    off += len;
  }
  for (let i = chunks.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [chunks[i], chunks[j]] = [chunks[j] as [number, number], chunks[i] as [number, number]];
  }
  return chunks;
}

const TRAVERSALS = [
  '..',
  '../x',
  'a/../../x',
  '/../etc/passwd',
  'a/./b',
  './a',
  'a/..',
  'a\u0000b',
  '\u0000',
  'a\\..\\b',
  '..\\x',
  'a/\u0007b',
  'a/\u001bb',
  '\ud800x',
  'x\udc00',
  'a/\ufffd',
  `${'x'.repeat(256)}`,
  `${'a/'.repeat(2100)}a`,
  '.tachyon.part.deadbeef',
  'd/.tachyon.part.x',
];

export function storageContract(name: string, makeBackend: MakeBackend): void {
  /** Runs `fn` with a fresh backend and always cleans up. */
  const withBackend = (fn: (s: StorageBackend) => Promise<void>) => async (): Promise<void> => {
    const fx = await makeBackend();
    try {
      await fn(fx.backend);
    } finally {
      await fx.cleanup?.();
    }
  };

  describe(`StorageBackend contract: ${name}`, () => {
    it('declares its capabilities', withBackend(async (s) => {
      assert.equal(typeof s.capabilities.rangedReads, 'boolean');
      assert.equal(typeof s.capabilities.outOfOrderWrites, 'boolean');
      assert.equal(typeof s.capabilities.atomicRename, 'boolean');
    }));

    it('starts empty; the root is a directory', withBackend(async (s) => {
      const root = await s.stat('');
      assert.equal(root.kind, 'directory');
      assert.equal(root.path, '');
      assert.deepEqual(await s.stat('/'), root);
      assert.deepEqual(await s.list(''), { entries: [], total: 0 });
    }));

    it('writes, stats, lists and reads back a file; ranged reads', withBackend(async (s) => {
      const data = new Rng(1).bytes(10_000);
      await s.mkdir('d');
      await putFile(s, 'd/f.bin', data);
      const st = await s.stat('/d/f.bin');
      assert.deepEqual({ name: st.name, path: st.path, kind: st.kind, size: st.size }, {
        name: 'f.bin',
        path: 'd/f.bin',
        kind: 'file',
        size: 10_000,
      });
      assert.ok(Number.isFinite(st.mtimeMs) && st.mtimeMs > 0);
      assert.equal((await s.stat('d')).kind, 'directory');
      assert.deepEqual(await names(s, 'd'), ['f.bin']);
      assert.equal(sha256(await readAll(s, 'd/f.bin')), sha256(data));
      const h = await s.openRead('d//f.bin/');
      try {
        assert.equal(h.size, 10_000);
        assert.deepEqual(await h.read(1234, 100), data.subarray(1234, 1334));
        assert.deepEqual(await h.read(9_990, 100), data.subarray(9_990), 'short read at the end');
        assert.equal((await h.read(20_000, 10)).length, 0, 'read past the end');
        assert.equal((await h.read(5, 0)).length, 0);
        await rejectsCode(h.read(-1, 10), 'USAGE', 'negative offset');
        await rejectsCode(h.read(0, 1.5), 'USAGE', 'fractional length');
      } finally {
        await h.close();
      }
    }));

    it('streams byte ranges through readRange', withBackend(async (s) => {
      const data = new Rng(5).bytes(100_000);
      await putFile(s, 'f', data);
      const h = await s.openRead('f');
      try {
        const collect = async (opts: Parameters<typeof readRange>[1]) => {
          const parts: Buffer[] = [];
          for await (const part of readRange(h, opts)) parts.push(part as Buffer);
          return Buffer.concat(parts);
        };
        assert.equal(sha256(await collect({ chunkBytes: 7_000 })), sha256(data), 'whole file');
        assert.deepEqual(await collect({ offset: 12_345, length: 50_000, chunkBytes: 4096 }), data.subarray(12_345, 62_345));
        assert.deepEqual(await collect({ offset: 99_990, length: 100 }), data.subarray(99_990), 'clipped at the end');
        assert.equal((await collect({ offset: 200_000 })).length, 0, 'past the end');
        assert.throws(() => readRange(h, { offset: -1 }), (e: unknown) => e instanceof TachyonError && e.code === 'USAGE');
        assert.throws(() => readRange(h, { chunkBytes: 0 }), (e: unknown) => e instanceof TachyonError && e.code === 'USAGE');
      } finally {
        await h.close();
      }
    }));

    it('sets the mtime given to createWriter (for -k attrs resume); refuses bad ones', withBackend(async (s) => {
      const mtimeMs = 1_500_000_000_000;
      const w = await s.createWriter('t', 2, { mtimeMs });
      await w.write(0, Buffer.from('ab'));
      await w.commit();
      assert.ok(Math.abs((await s.stat('t')).mtimeMs - mtimeMs) < 1, String((await s.stat('t')).mtimeMs));
      await rejectsCode(s.createWriter('u', 1, { mtimeMs: -1 }), 'USAGE');
      await rejectsCode(s.createWriter('u', 1, { mtimeMs: Number.NaN }), 'USAGE');
    }));

    it('writes an empty file', withBackend(async (s) => {
      const w = await s.createWriter('empty', 0);
      await w.commit();
      assert.equal((await s.stat('empty')).size, 0);
      assert.equal((await readAll(s, 'empty')).length, 0);
    }));

    it('accepts chunks out of order and overlapping; the SHA-256 matches', withBackend(async (s) => {
      const rng = new Rng(42);
      const data = rng.bytes(256 * 1024 + 17);
      const w = await s.createWriter('big.bin', data.length);
      for (const [off, len] of shuffledChunks(rng, data.length, 9000)) {
        await w.write(off, data.subarray(off, off + len));
      }
      await w.write(100, data.subarray(100, 5000)); // a retransmission
      await w.commit();
      assert.equal(sha256(await readAll(s, 'big.bin')), sha256(data));
    }));

    it('accepts concurrent chunk writes', withBackend(async (s) => {
      const rng = new Rng(7);
      const data = rng.bytes(64 * 1024);
      const w = await s.createWriter('c.bin', data.length);
      await Promise.all(shuffledChunks(rng, data.length, 4096).map(([off, len]) => w.write(off, data.subarray(off, off + len))));
      await w.commit();
      assert.equal(sha256(await readAll(s, 'c.bin')), sha256(data));
    }));

    it('commit is atomic: nothing under the final name before commit', withBackend(async (s) => {
      const data = new Rng(3).bytes(5000);
      const w = await s.createWriter('f', data.length);
      await w.write(0, data.subarray(0, 2500));
      await rejectsCode(s.stat('f'), 'NOT_FOUND', 'half written');
      await rejectsCode(s.openRead('f'), 'NOT_FOUND', 'half written, read');
      assert.deepEqual(await s.list(''), { entries: [], total: 0 }, 'temporary data is not listed');
      await w.write(2500, data.subarray(2500));
      await rejectsCode(s.stat('f'), 'NOT_FOUND', 'fully written, not committed');
      await w.commit();
      assert.equal((await s.stat('f')).size, 5000);
      assert.deepEqual(await names(s, ''), ['f']);
    }));

    it('an open reader keeps the old content while an overwrite commits', withBackend(async (s) => {
      await putFile(s, 'f', Buffer.from('old content'));
      const h = await s.openRead('f');
      const w = await s.createWriter('f', 3, { overwrite: true });
      await w.write(0, Buffer.from('new'));
      assert.equal((await readAll(s, 'f')).toString(), 'old content', 'before commit');
      await w.commit();
      assert.equal((await readAll(s, 'f')).toString(), 'new');
      assert.equal((await h.read(0, 100)).toString(), 'old content');
      await h.close();
    }));

    it('refuses to commit an incomplete file and stays usable', withBackend(async (s) => {
      const w = await s.createWriter('f', 10);
      await w.write(0, Buffer.alloc(5));
      await w.write(6, Buffer.alloc(4));
      const e = await rejectsCode(w.commit(), 'IO', 'hole at 5');
      assert.equal(e.details?.reason, 'incomplete');
      await rejectsCode(s.stat('f'), 'NOT_FOUND');
      await w.write(5, Buffer.alloc(1));
      await w.commit();
      assert.equal((await s.stat('f')).size, 10);
    }));

    it('abort leaves nothing behind', withBackend(async (s) => {
      await s.mkdir('d');
      const w = await s.createWriter('d/f', 100);
      await w.write(0, Buffer.alloc(100, 1));
      await w.abort();
      await w.abort(); // idempotent
      await rejectsCode(s.stat('d/f'), 'NOT_FOUND');
      assert.deepEqual(await s.list('d'), { entries: [], total: 0 });
      await s.remove('d'); // empty: nothing hidden inside
      await rejectsCode(w.write(0, Buffer.alloc(1)), 'INTERNAL', 'write after abort');
      await rejectsCode(w.commit(), 'INTERNAL', 'commit after abort');
    }));

    it('abort after commit changes nothing; a committed writer refuses more', withBackend(async (s) => {
      const w = await s.createWriter('f', 1);
      await w.write(0, Buffer.from('x'));
      await w.commit();
      await w.abort();
      assert.equal((await readAll(s, 'f')).toString(), 'x');
      await rejectsCode(w.write(0, Buffer.from('y')), 'INTERNAL');
      await rejectsCode(w.commit(), 'INTERNAL');
    }));

    it('writer errors: bad sizes and chunks outside the file', withBackend(async (s) => {
      await rejectsCode(s.createWriter('f', -1), 'USAGE');
      await rejectsCode(s.createWriter('f', 1.5), 'USAGE');
      await rejectsCode(s.createWriter('f', Number.NaN), 'USAGE');
      const w = await s.createWriter('f', 10);
      await rejectsCode(w.write(8, Buffer.alloc(3)), 'USAGE', 'past the end');
      await rejectsCode(w.write(-1, Buffer.alloc(1)), 'USAGE', 'negative');
      await rejectsCode(w.write(0.5, Buffer.alloc(1)), 'USAGE', 'fractional');
      await w.abort();
      assert.deepEqual(await s.list(''), { entries: [], total: 0 });
    }));

    it('createWriter: existing file, directory, missing parent, root', withBackend(async (s) => {
      await putFile(s, 'f', Buffer.from('1'));
      await s.mkdir('d');
      await rejectsCode(s.createWriter('f', 1), 'EXISTS');
      await rejectsCode(s.createWriter('d', 1), 'IS_DIRECTORY');
      await rejectsCode(s.createWriter('d', 1, { overwrite: true }), 'IS_DIRECTORY');
      await rejectsCode(s.createWriter('missing/f', 1), 'NOT_FOUND');
      await rejectsCode(s.createWriter('f/x', 1), 'NOT_FOUND', 'parent is a file');
      await rejectsCode(s.createWriter('', 1), 'IS_DIRECTORY');
      await rejectsCode(s.createWriter('/', 1), 'IS_DIRECTORY');
    }));

    it('a name taken between createWriter and commit fails the commit and leaves no trace', withBackend(async (s) => {
      const w = await s.createWriter('f', 3);
      await w.write(0, Buffer.from('abc'));
      await putFile(s, 'f', Buffer.from('first'));
      await rejectsCode(w.commit(), 'EXISTS');
      assert.equal((await readAll(s, 'f')).toString(), 'first');
      assert.deepEqual(await names(s, ''), ['f']);
      const w2 = await s.createWriter('g', 1);
      await w2.write(0, Buffer.from('x'));
      await s.mkdir('g');
      await rejectsCode(w2.commit(), 'IS_DIRECTORY');
      assert.deepEqual(await names(s, ''), ['f', 'g']);
      await s.remove('g'); // still empty
    }));

    it('stat, openRead and list errors', withBackend(async (s) => {
      await putFile(s, 'f', Buffer.from('1'));
      await s.mkdir('d');
      await rejectsCode(s.stat('nope'), 'NOT_FOUND');
      await rejectsCode(s.stat('f/x'), 'NOT_FOUND');
      await rejectsCode(s.openRead('nope'), 'NOT_FOUND');
      await rejectsCode(s.openRead('d'), 'IS_DIRECTORY');
      await rejectsCode(s.openRead(''), 'IS_DIRECTORY');
      await rejectsCode(s.list('nope'), 'NOT_FOUND');
      await rejectsCode(s.list('f'), 'NOT_FOUND', 'list of a file');
      await rejectsCode(s.list('', { offset: -1 }), 'USAGE');
      await rejectsCode(s.list('', { limit: 1.5 }), 'USAGE');
      await rejectsCode(s.list('', { limit: 1_000_000 }), 'USAGE');
      await rejectsCode(s.list('', { sort: 'colour' as 'name' }), 'USAGE');
      await rejectsCode(s.list('', { order: 'up' as 'asc' }), 'USAGE');
    }));

    it('lists in pages, sorted by name, size and mtime, with the total', withBackend(async (s) => {
      const rng = new Rng(99);
      await s.mkdir('d');
      const sizes = new Map<string, number>();
      const namesWritten: string[] = [];
      for (let i = 0; i < 57; i++) {
        const n = `f${String(rng.int(100_000)).padStart(5, '0')}-${i}`;
        const size = rng.int(300);
        sizes.set(n, size);
        namesWritten.push(n);
        await putFile(s, `d/${n}`, rng.bytes(size));
      }
      await s.mkdir('d/sub');
      const total = 58;
      const collect = async (opts: { sort?: 'name' | 'size' | 'mtime'; order?: 'asc' | 'desc' }) => {
        const out: string[] = [];
        for (let off = 0; ; off += 10) {
          const page = await s.list('d', { ...opts, offset: off, limit: 10 });
          assert.equal(page.total, total);
          assert.ok(page.entries.length <= 10);
          out.push(...page.entries.map((e) => e.name));
          if (page.entries.length < 10) break;
        }
        return out;
      };
      const byName = [...namesWritten, 'sub'].sort();
      assert.deepEqual(await collect({}), byName);
      assert.deepEqual(await collect({ order: 'desc' }), [...byName].reverse());
      const all = (await s.list('d')).entries;
      const size = (n: string) => all.find((e) => e.name === n)?.size ?? -1;
      const mtime = (n: string) => all.find((e) => e.name === n)?.mtimeMs ?? -1;
      const bySize = await collect({ sort: 'size' });
      assert.equal(bySize.length, total);
      for (let i = 1; i < bySize.length; i++) {
        const a = bySize[i - 1] as string;
        const b = bySize[i] as string;
        assert.ok(size(a) < size(b) || (size(a) === size(b) && a < b), `size order at ${i}`);
      }
      for (const [n, sz] of sizes) assert.equal(size(n), sz);
      const byMtimeDesc = await collect({ sort: 'mtime', order: 'desc' });
      for (let i = 1; i < byMtimeDesc.length; i++) {
        const a = byMtimeDesc[i - 1] as string;
        const b = byMtimeDesc[i] as string;
        assert.ok(mtime(a) > mtime(b) || (mtime(a) === mtime(b) && a > b), `mtime order at ${i}`);
      }
      const past = await s.list('d', { offset: 100, limit: 10 });
      assert.deepEqual(past, { entries: [], total });
      assert.deepEqual((await s.list('d', { limit: 0 })).entries, []);
      const sub = all.find((e) => e.name === 'sub');
      assert.equal(sub?.kind, 'directory');
      assert.equal(sub?.path, 'd/sub');
    }));

    it('mkdir: new, existing, missing parent, recursive', withBackend(async (s) => {
      await s.mkdir('a');
      await rejectsCode(s.mkdir('a'), 'EXISTS');
      await rejectsCode(s.mkdir(''), 'EXISTS');
      await rejectsCode(s.mkdir('x/y/z'), 'NOT_FOUND');
      await s.mkdir('x/y/z', { recursive: true });
      assert.equal((await s.stat('x/y')).kind, 'directory');
      await rejectsCode(s.mkdir('x/y/z', { recursive: true }), 'EXISTS');
      await putFile(s, 'f', Buffer.from('1'));
      await rejectsCode(s.mkdir('f'), 'EXISTS');
      await rejectsCode(s.mkdir('f/sub'), 'NOT_FOUND');
      await rejectsCode(s.mkdir('f/sub', { recursive: true }), 'NOT_FOUND');
    }));

    it('rename: files and directories, refusals', withBackend(async (s) => {
      await s.mkdir('d/e', { recursive: true });
      await putFile(s, 'd/e/f', Buffer.from('hello'));
      await putFile(s, 'g', Buffer.from('other'));
      await s.rename('d/e/f', 'd/f2');
      assert.equal((await readAll(s, 'd/f2')).toString(), 'hello');
      await rejectsCode(s.stat('d/e/f'), 'NOT_FOUND');
      await s.rename('d', 'moved');
      assert.equal((await readAll(s, 'moved/f2')).toString(), 'hello');
      assert.equal((await s.stat('moved/e')).kind, 'directory');
      await rejectsCode(s.stat('d'), 'NOT_FOUND');
      await rejectsCode(s.rename('g', 'moved/f2'), 'EXISTS');
      assert.equal((await readAll(s, 'moved/f2')).toString(), 'hello', 'no clobber');
      await s.rename('g', 'moved/f2', { overwrite: true });
      assert.equal((await readAll(s, 'moved/f2')).toString(), 'other');
      await rejectsCode(s.stat('g'), 'NOT_FOUND');
      await rejectsCode(s.rename('moved/f2', 'moved/e', { overwrite: true }), 'IS_DIRECTORY');
      await rejectsCode(s.rename('moved', 'moved/e/inner'), 'PATH_INVALID');
      await rejectsCode(s.rename('nope', 'x'), 'NOT_FOUND');
      await rejectsCode(s.rename('moved/f2', 'missing/x'), 'NOT_FOUND');
      await rejectsCode(s.rename('', 'x'), 'PERMISSION');
      await rejectsCode(s.rename('moved', ''), 'PERMISSION');
      await s.mkdir('other');
      await rejectsCode(s.rename('moved/e', 'other'), 'IS_DIRECTORY', 'onto an empty directory');
      await s.rename('moved/f2', 'moved/f2'); // no-op
      assert.equal((await readAll(s, 'moved/f2')).toString(), 'other');
    }));

    it('remove: files, empty and non-empty directories, the root', withBackend(async (s) => {
      await s.mkdir('d/e', { recursive: true });
      await putFile(s, 'd/e/f', Buffer.from('x'));
      await putFile(s, 'g', Buffer.from('y'));
      await s.remove('g');
      await rejectsCode(s.stat('g'), 'NOT_FOUND');
      const e = await rejectsCode(s.remove('d'), 'IS_DIRECTORY');
      assert.equal(e.details?.reason, 'not-empty');
      await s.remove('d', { recursive: true });
      await rejectsCode(s.stat('d/e/f'), 'NOT_FOUND');
      await rejectsCode(s.remove('d'), 'NOT_FOUND');
      await rejectsCode(s.remove(''), 'PERMISSION');
      await rejectsCode(s.remove('/'), 'PERMISSION');
      assert.deepEqual(await s.list(''), { entries: [], total: 0 });
    }));

    it('refuses traversal and malformed paths in every operation', withBackend(async (s) => {
      await s.mkdir('a');
      await putFile(s, 'a/f', Buffer.from('x'));
      for (const bad of TRAVERSALS) {
        const what = JSON.stringify(bad.slice(0, 40));
        const ops: Array<[string, () => Promise<unknown>]> = [
          ['stat', () => s.stat(bad)],
          ['list', () => s.list(bad)],
          ['openRead', () => s.openRead(bad)],
          ['createWriter', () => s.createWriter(bad, 1)],
          ['mkdir', () => s.mkdir(bad, { recursive: true })],
          ['rename from', () => s.rename(bad, 'a/g')],
          ['rename to', () => s.rename('a/f', bad)],
          ['remove', () => s.remove(bad, { recursive: true })],
        ];
        for (const [op, run] of ops) {
          const e = await rejectsCode(run(), 'PATH_INVALID', `${op} ${what}`);
          assert.equal(typeof e.details?.reason, 'string', `${op} ${what}: reason`);
        }
      }
      await rejectsCode(s.stat(42 as unknown as string), 'PATH_INVALID', 'not a string');
      assert.deepEqual(await names(s, ''), ['a']);
      assert.deepEqual(await names(s, 'a'), ['f']);
    }));

    it('fuzz: random write orders and chunk sizes always give the same SHA-256 (seeded)', withBackend(async (s) => {
      for (let seed = 1; seed <= 25; seed++) {
        const rng = new Rng(seed * 7919);
        const size = rng.pick([0, 1, rng.range(2, 100), rng.range(100, 70_000)]);
        const data = rng.bytes(size);
        const path = `fuzz-${seed}.bin`;
        const w = await s.createWriter(path, size);
        // at most ~500 chunks per file, so that a disk backend stays fast
        const chunks = shuffledChunks(rng, size, Math.max(rng.pick([1, 7, 1000, 16_384, 100_000]), Math.ceil(size / 500)));
        // some chunks twice (retransmissions), some split differently the second time
        for (const [off, len] of chunks) {
          await w.write(off, data.subarray(off, off + len));
          if (rng.chance(0.1)) await w.write(off, data.subarray(off, off + len));
        }
        if (rng.chance(0.2)) {
          await w.abort();
          await rejectsCode(s.stat(path), 'NOT_FOUND', `seed ${seed}: aborted`);
          continue;
        }
        await w.commit();
        assert.equal(sha256(await readAll(s, path)), sha256(data), `seed ${seed}`);
        await s.remove(path);
      }
      assert.deepEqual(await s.list(''), { entries: [], total: 0 });
    }));

    it('fuzz: random path strings are refused with PATH_INVALID or behave as their normal form (seeded)', withBackend(async (s) => {
      const rng = new Rng(2024);
      const alphabet = ['a', 'b', '/', '/', '.', '..', '\\', '\u0000', '\u001f', '\u007f', 'é', 'e\u0301', '\ud83d\ude00', '\ud800', ' ', '~', '%2e', '.tachyon.part.', 'x'.repeat(120)];
      await s.mkdir('base');
      let accepted = 0;
      let refused = 0;
      for (let i = 0; i < 400; i++) {
        let p = '';
        const n = rng.range(0, 8);
        for (let j = 0; j < n; j++) p += rng.pick(alphabet);
        const full = `base/${p}`;
        let normal: string | undefined;
        try {
          normal = normalizeStoragePath(full);
        } catch (err) {
          assert.ok(err instanceof TachyonError && err.code === 'PATH_INVALID', `normalize ${JSON.stringify(p)}`);
        }
        if (normal === undefined) {
          refused++;
          await rejectsCode(s.stat(full), 'PATH_INVALID', `stat ${JSON.stringify(p)}`);
          await rejectsCode(s.createWriter(full, 1), 'PATH_INVALID', `createWriter ${JSON.stringify(p)}`);
          continue;
        }
        accepted++;
        assert.ok(normal === 'base' || normal.startsWith('base/'), `stays inside: ${JSON.stringify(normal)}`);
        assert.ok(!normal.split('/').some((c) => c === '' || c === '.' || c === '..'), JSON.stringify(normal));
        assert.equal(normalizeStoragePath(normal), normal, 'idempotent');
        // whatever the backend does with an accepted path, it answers with a catalogue code or succeeds
        try {
          await s.mkdir(full, { recursive: true });
          assert.equal((await s.stat(normal)).kind, 'directory');
        } catch (err) {
          assert.ok(err instanceof TachyonError, String(err));
          assert.ok(['EXISTS', 'NOT_FOUND'].includes(err.code), `${err.code} for ${JSON.stringify(p)}`);
        }
      }
      assert.ok(accepted > 20 && refused > 20, `accepted ${accepted}, refused ${refused}`);
      // every directory created is inside base
      assert.deepEqual(await names(s, ''), ['base']);
    }));
  });
}
