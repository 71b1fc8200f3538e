/**
 * The DirScanner seam: the native scanner (native/tachyon_dir.c) against the node:fs one
 * on the same real directories — same entries, kinds, sizes and mtimes; names sorted in
 * JavaScript's code-unit order (fuzzed with seeded random Unicode names, including the
 * characters where UTF-8 byte order and UTF-16 order differ); errors with errno codes;
 * LocalStorage over either scanner lists the same pages.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DirListing, ListingCache, LocalStorage, RESERVED_PREFIX, nativeDirScanner, nodeDirScanner, pageEntries, type DirScanner, type ListSort, type ScannedDir, type StorageEntry } from '../../src/storage/index.js';
import { Rng } from '../helpers/rng.js';

const native = nativeDirScanner();
// CI builds the addon (TACHYON_REQUIRE_NATIVE=1); elsewhere these tests say why they skip
const skip = native.scanner ? false : `native scanner unavailable: ${native.reason}`;

function namesOf(s: ScannedDir): string[] {
  return Array.from({ length: s.count }, (_, i) => s.name(i));
}

/** name -> [kind, size, mtime] of the files and directories of a scan. */
function table(s: ScannedDir, withStats: boolean): Map<string, [number, number, number]> {
  const m = new Map<string, [number, number, number]>();
  namesOf(s).forEach((n, i) => {
    const k = s.kinds[i] as number;
    if (k === 1 || k === 2) m.set(n, [k, withStats ? (s.sizes[i] as number) : 0, withStats ? (s.mtimes[i] as number) : 0]);
  });
  return m;
}

const byCodeUnits = (x: string, y: string): number => (x < y ? -1 : x > y ? 1 : 0);

/** A random name of 1..12 characters from ranges that stress code-unit order. */
function randomName(rng: Rng): string {
  const ranges: Array<[number, number]> = [
    [0x30, 0x7a], // ASCII letters and digits
    [0xa0, 0x7ff], // two-byte UTF-8
    [0xe000, 0xfffd], // three-byte, above the surrogates: sorts after supplementary in UTF-16
    [0x10000, 0x1f6ff], // four-byte: surrogate pairs
  ];
  let s = '';
  const len = rng.range(1, 12);
  for (let i = 0; i < len; i++) {
    const [lo, hi] = rng.pick(ranges);
    s += String.fromCodePoint(rng.range(lo, hi));
  }
  return s.replace(/[/\\]/g, 'x');
}

describe('DirScanner', () => {
  it('native and node:fs scanners see the same entries, kinds, sizes and mtimes', { skip }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tachyon-scan-'));
    const rng = new Rng(4242);
    for (let i = 0; i < 500; i++) writeFileSync(join(dir, `f${i}`), 'x'.repeat(rng.int(3000)));
    for (let i = 0; i < 20; i++) mkdirSync(join(dir, `d${i}`));
    utimesSync(join(dir, 'f7'), 1000.5, 1000.123456); // seconds, with microseconds
    symlinkSync('f1', join(dir, 'link'));
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    writeFileSync(join(dir, `${RESERVED_PREFIX}abc`), 'partial');
    const n = native.scanner as DirScanner;
    for (const withStats of [true, false]) {
      const a = await n.scan(dir, withStats);
      const b = await nodeDirScanner().scan(dir, withStats);
      assert.equal(a.sorted, true);
      assert.deepEqual(namesOf(a), namesOf(a).sort(byCodeUnits), 'native names come sorted');
      assert.equal(a.count, 520, 'native: only files and directories');
      assert.deepEqual(table(a, withStats), table(b, withStats), `withStats ${withStats}`);
      assert.ok(!table(a, withStats).has('link') && !table(a, withStats).has('fifo'), 'links and FIFOs are not files');
      assert.ok(!namesOf(a).some((x) => x.startsWith(RESERVED_PREFIX)) && !namesOf(b).some((x) => x.startsWith(RESERVED_PREFIX)), 'no temporary files');
      assert.equal(table(a, withStats).size, 500 + 20);
    }
    assert.equal(table(await n.scan(dir, true), true).get('f7')?.[2], 1_000_123.456, 'mtime computed as Node computes mtimeMs');
    await rm(dir, { recursive: true, force: true });
  });

  it('fuzz: random Unicode names come back in code-unit order, as JavaScript sorts them (seeded)', { skip }, async () => {
    const n = native.scanner as DirScanner;
    for (const seed of [1, 2, 3]) {
      const dir = await mkdtemp(join(tmpdir(), 'tachyon-scan-'));
      const rng = new Rng(seed);
      const names = new Set<string>();
      while (names.size < 300) names.add(randomName(rng));
      // long shared prefixes (the addon sorts by 8-byte prefixes first, then the rest)
      while (names.size < 450) names.add(`${rng.pick(['IMG_2026_11_', 'IMG_2026_1', 'clip-\u{1F3AC}-', 'clip-\uFF21-', 'x'])}${randomName(rng)}`);
      // names sharing a prefix, differing where byte and UTF-16 order disagree
      names.add('p\u{1F600}');
      names.add('p\uFF21');
      names.add('p\uE000');
      names.add('p\uD7FF');
      for (const name of names) writeFileSync(join(dir, name), '');
      const scan = await n.scan(dir, rng.chance(0.5));
      const expected = [...names].sort(byCodeUnits);
      assert.equal(scan.sorted, true, `seed ${seed}`);
      assert.deepEqual(namesOf(scan), expected, `seed ${seed}`);
      const listing = DirListing.fromScan(scan, false);
      assert.deepEqual(Array.from({ length: listing.total }, (_, r) => listing.name(r)), expected);
      const viaNode = DirListing.fromScan(await nodeDirScanner().scan(dir, false), false);
      assert.deepEqual(Array.from({ length: viaNode.total }, (_, r) => viaNode.name(r)), expected, 'the node:fs scanner, sorted in JavaScript');
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('fails with the errno code: missing, not a directory, a link to a directory', { skip }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tachyon-scan-'));
    writeFileSync(join(dir, 'file'), '');
    mkdirSync(join(dir, 'real'));
    symlinkSync('real', join(dir, 'link'));
    const n = native.scanner as DirScanner;
    for (const [p, code] of [
      ['missing', 'ENOENT'],
      ['file', 'ENOTDIR'],
      ['link', 'ENOTDIR'], // O_NOFOLLOW | O_DIRECTORY on a link
    ] as const) {
      await assert.rejects(n.scan(join(dir, p), true), (err: NodeJS.ErrnoException) => [code, 'ELOOP'].includes(err.code ?? ''), p);
    }
    assert.equal((await n.scan(join(dir, 'real'), true)).count, 0, 'an empty directory');
    await rm(dir, { recursive: true, force: true });
  });

  it('LocalStorage pages are the same over either scanner, cached or not, for every sort and order', { skip }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tachyon-scan-'));
    const rng = new Rng(99);
    for (let i = 0; i < 400; i++) {
      const f = join(dir, `${randomName(rng)}-${i}`);
      writeFileSync(f, 'y'.repeat(rng.int(20)));
      utimesSync(f, new Date(1e12 + rng.int(50) * 1000), new Date(1e12 + rng.int(50) * 1000));
    }
    for (let i = 0; i < 10; i++) mkdirSync(join(dir, `dir ${i}`));
    // names the storage API cannot address: not UTF-8, or holding U+FFFD; never listed
    writeFileSync(Buffer.concat([Buffer.from(`${dir}/bad-`), Buffer.from([0xff, 0xfe, 0x41])]), 'zz');
    writeFileSync(join(dir, 'repl-\uFFFD'), 'zz');
    const stores = [
      await LocalStorage.open(dir, { scanner: nodeDirScanner() }),
      await LocalStorage.open(dir, { scanner: native.scanner as DirScanner }),
      await LocalStorage.open(dir, { scanner: native.scanner as DirScanner, listCache: new ListingCache({ minEntries: 0 }) }),
      await LocalStorage.open(dir, { scanner: nodeDirScanner(), listCache: new ListingCache({ minEntries: 0 }) }),
    ];
    for (let k = 0; k < 40; k++) {
      const o = { sort: rng.pick(['name', 'size', 'mtime'] as ListSort[]), order: rng.pick(['asc', 'desc'] as const), offset: rng.int(420), limit: rng.int(150) };
      const pages = await Promise.all(stores.map((s) => s.list('', o)));
      for (const p of pages.slice(1)) assert.deepEqual(p, pages[0], JSON.stringify(o));
      assert.equal(pages[0]?.total, 410);
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('fuzz: DirListing pages equal pageEntries (the other backends\' sort) for random sizes, mtimes and names (seeded)', () => {
    for (const seed of [11, 12, 13, 14, 15, 16]) {
      const rng = new Rng(seed);
      const n = rng.range(0, 700);
      const names = new Set<string>();
      while (names.size < n) names.add(randomName(rng));
      const list = [...names];
      // few distinct values (many ties), huge values, fractions, and (seed 16) negative mtimes
      const pool = [0, 1, 2, 255, 256, 65_536, 2 ** 40 + 3, 2 ** 52, 1.5, 1e12 + 0.25];
      const kinds = new Uint8Array(n);
      const sizes = new Float64Array(n);
      const mtimes = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        kinds[i] = rng.chance(0.1) ? 2 : rng.chance(0.05) ? 0 : 1;
        sizes[i] = kinds[i] === 1 ? (rng.chance(0.5) ? rng.pick(pool) : rng.int(1e9)) : 0;
        mtimes[i] = seed === 16 && rng.chance(0.3) ? -rng.int(1e6) : rng.chance(0.5) ? rng.pick(pool) : 1.7e12 + rng.int(1e6) / 8;
      }
      const scan: ScannedDir = { count: n, name: (i) => list[i] as string, kinds, sizes, mtimes, sorted: false };
      const listing = DirListing.fromScan(scan, true);
      const all: StorageEntry[] = [];
      for (let i = 0; i < n; i++) {
        if (kinds[i] === 0) continue;
        const kind = kinds[i] === 1 ? 'file' : 'directory';
        all.push({ name: list[i] as string, path: `d/${list[i] as string}`, kind, size: sizes[i] as number, mtimeMs: mtimes[i] as number });
      }
      for (let k = 0; k < 30; k++) {
        const o = { sort: rng.pick(['name', 'size', 'mtime'] as ListSort[]), order: rng.pick(['asc', 'desc'] as const), offset: rng.int(n + 20), limit: rng.int(200) };
        const got = listing.page(o).map((r) => listing.entry('d', r));
        assert.deepEqual(got, pageEntries(all, o).entries, `seed ${seed} ${JSON.stringify(o)}`);
      }
      assert.equal(listing.total, all.length);
    }
  });
});
