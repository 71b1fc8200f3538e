/**
 * The pieces behind overwrite, resume, exclude and file lists, without a network: the
 * receiver's decision table (every overwrite policy, every resume level), sampled
 * ranges, the resume record parser, the exclude-pattern compiler and matcher, the file
 * list parser (each parser also against seeded random input), resumed sinks and
 * sources whose digest still covers the whole file, and prefix hashing.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { constants, lstatSync, openSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { TachyonError } from '../../src/core/errors.js';
import { OVERWRITE_POLICIES, RESUME_LEVELS } from '../../src/core/types.js';
import { compilePattern, ExcludeSet } from '../../src/transfer/exclude.js';
import { LocalFileSink, LocalFileSource } from '../../src/transfer/local-file.js';
import { checkRanges, decide, needsPlan, sampleRanges, SPARSE_SAMPLE_BYTES, type DestState } from '../../src/transfer/policy.js';
import { formatRecord, hashRanges, parseRecord, readRecord, recordPath, writeRecord } from '../../src/transfer/resume.js';
import { parseFileList } from '../../src/transfer/sources.js';
import { rejectsCode, throwsCode } from '../helpers/errors.js';
import { removeDir, tempDir } from '../helpers/loopback.js';
import { Rng } from '../helpers/rng.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const T = 1_700_000_000_000.25; // a source modification time (ms, with a fraction)

describe('the receiver decision table', () => {
  const src = { size: 1000, mtimeMs: T };
  const same: DestState = { final: { size: 1000, mtimeMs: T } };
  const older: DestState = { final: { size: 1000, mtimeMs: T - 60_000 } };
  const newer: DestState = { final: { size: 1000, mtimeMs: T + 60_000 } };
  const resized: DestState = { final: { size: 999, mtimeMs: T } };
  const olderResized: DestState = { final: { size: 999, mtimeMs: T - 60_000 } };

  it('no destination: every policy sends; only a plan-free policy skips the probe', () => {
    for (const overwrite of OVERWRITE_POLICIES) {
      for (const resume of RESUME_LEVELS) {
        assert.deepEqual(decide({ overwrite, resume }, src, {}), { do: 'send' }, `${overwrite} ${resume}`);
        assert.equal(needsPlan({ overwrite, resume }), !(overwrite === 'always' && resume === 'none'));
      }
    }
  });

  it('--overwrite never skips any existing file (reason exists)', () => {
    for (const d of [same, older, newer, resized]) assert.deepEqual(decide({ overwrite: 'never', resume: 'none' }, src, d), { do: 'skip', reason: 'exists' });
  });

  it('--overwrite always replaces any existing file', () => {
    for (const d of [same, older, newer, resized]) assert.deepEqual(decide({ overwrite: 'always', resume: 'none' }, src, d), { do: 'send' });
  });

  it('--overwrite older replaces only a destination older than the source', () => {
    assert.deepEqual(decide({ overwrite: 'older', resume: 'none' }, src, older), { do: 'send' });
    assert.deepEqual(decide({ overwrite: 'older', resume: 'none' }, src, olderResized), { do: 'send' });
    for (const d of [same, newer, resized]) assert.deepEqual(decide({ overwrite: 'older', resume: 'none' }, src, d), { do: 'skip', reason: 'newer' });
  });

  it('--overwrite diff: size and time with -k none/attrs, digests with sparse/full', () => {
    for (const resume of ['none', 'attrs'] as const) {
      const p = { overwrite: 'diff' as const, resume };
      assert.deepEqual(decide(p, src, same), { do: 'skip', reason: 'same' });
      assert.deepEqual(decide(p, src, { final: { size: 1000, mtimeMs: T + 0.5 } }), { do: 'skip', reason: 'same' }, 'within the time tolerance');
      assert.deepEqual(decide(p, src, older), { do: 'send' });
      assert.deepEqual(decide(p, src, newer), { do: 'send' });
      assert.deepEqual(decide(p, src, resized), { do: 'send' });
    }
    for (const resume of ['sparse', 'full'] as const) {
      const p = { overwrite: 'diff' as const, resume };
      for (const d of [same, older, newer]) assert.deepEqual(decide(p, src, d), { do: 'compare', mode: resume, length: 1000 });
      assert.deepEqual(decide(p, src, resized), { do: 'send' }, 'a different size needs no digest');
      assert.deepEqual(decide(p, { size: 0, mtimeMs: T }, { final: { size: 0, mtimeMs: 0 } }), { do: 'skip', reason: 'same' });
    }
  });

  it('--overwrite diff+older: only older and different', () => {
    const p = { overwrite: 'diff+older' as const, resume: 'none' as const };
    assert.deepEqual(decide(p, src, newer), { do: 'skip', reason: 'newer' });
    assert.deepEqual(decide(p, src, same), { do: 'skip', reason: 'newer' }, 'the same time is not older');
    assert.deepEqual(decide(p, src, older), { do: 'send' });
    assert.deepEqual(decide({ overwrite: 'diff+older', resume: 'full' }, src, older), { do: 'compare', mode: 'full', length: 1000 });
    assert.deepEqual(decide({ overwrite: 'diff+older', resume: 'full' }, src, olderResized), { do: 'send' });
  });

  it('-k none restarts a partial file; attrs, sparse and full resume it when the record matches', () => {
    const partial: DestState = { partial: { size: 600, record: { size: 1000, mtimeMs: T, verified: 500 } } };
    assert.deepEqual(decide({ overwrite: 'diff', resume: 'none' }, src, partial), { do: 'send' });
    assert.deepEqual(decide({ overwrite: 'diff', resume: 'attrs' }, src, partial), { do: 'resume', offset: 500, verify: 'none' });
    assert.deepEqual(decide({ overwrite: 'diff', resume: 'sparse' }, src, partial), { do: 'resume', offset: 500, verify: 'sparse' });
    assert.deepEqual(decide({ overwrite: 'diff', resume: 'full' }, src, partial), { do: 'resume', offset: 500, verify: 'full' });
    // the offset never passes what is on disk
    assert.deepEqual(decide({ overwrite: 'diff', resume: 'attrs' }, src, { partial: { size: 300, record: { size: 1000, mtimeMs: T, verified: 500 } } }), {
      do: 'resume',
      offset: 300,
      verify: 'none',
    });
  });

  it('-k restarts when the source changed, the record is missing, or nothing was kept', () => {
    for (const resume of ['attrs', 'sparse', 'full'] as const) {
      const p = { overwrite: 'diff' as const, resume };
      assert.deepEqual(decide(p, src, { partial: { size: 600, record: { size: 1001, mtimeMs: T, verified: 500 } } }), { do: 'send' }, 'size changed');
      assert.deepEqual(decide(p, src, { partial: { size: 600, record: { size: 1000, mtimeMs: T + 5, verified: 500 } } }), { do: 'send' }, 'time changed');
      assert.deepEqual(decide(p, src, { partial: { size: 600 } }), { do: 'send' }, 'no record');
      assert.deepEqual(decide(p, src, { partial: { size: 600, record: { size: 1000, mtimeMs: T, verified: 0 } } }), { do: 'send' }, 'nothing verified');
      assert.deepEqual(decide(p, { size: 1000, mtimeMs: undefined }, { partial: { size: 600, record: { size: 1000, mtimeMs: T, verified: 500 } } }), { do: 'send' }, 'no source time');
    }
  });

  it('a destination the policy keeps is skipped even when a partial file exists; one it replaces resumes', () => {
    const both: DestState = { final: { size: 1000, mtimeMs: T }, partial: { size: 600, record: { size: 1000, mtimeMs: T, verified: 500 } } };
    assert.deepEqual(decide({ overwrite: 'never', resume: 'attrs' }, src, both), { do: 'skip', reason: 'exists' });
    assert.deepEqual(decide({ overwrite: 'always', resume: 'attrs' }, src, both), { do: 'resume', offset: 500, verify: 'none' });
  });
});

describe('sampled ranges', () => {
  it('cover a small prefix whole, and 16 spread ranges (first and last included) of a large one', () => {
    assert.deepEqual(sampleRanges(0), []);
    assert.deepEqual(sampleRanges(5000), [{ at: 0, len: 5000 }]);
    const n = 100 * 1024 * 1024 + 7;
    const r = sampleRanges(n);
    assert.equal(r.length, 16);
    assert.deepEqual(r[0], { at: 0, len: SPARSE_SAMPLE_BYTES });
    assert.equal(r.at(-1)!.at + r.at(-1)!.len, n);
    assert.equal(checkRanges(r, n, n), undefined);
  });

  it('checkRanges refuses overlapping, unsorted, empty and out-of-bounds ranges', () => {
    assert.match(checkRanges([{ at: 0, len: 10 }, { at: 5, len: 10 }], 100, 100)!, /overlap/);
    assert.match(checkRanges([{ at: 50, len: 10 }, { at: 0, len: 10 }], 100, 100)!, /overlap|sorted/);
    assert.match(checkRanges([{ at: 0, len: 0 }], 100, 100)!, /empty/);
    assert.match(checkRanges([{ at: 95, len: 10 }], 100, 100)!, /beyond/);
    assert.match(checkRanges([], 200, 100)!, /beyond the file size/);
    assert.equal(checkRanges([{ at: 0, len: 100 }], 100, 100), undefined);
  });
});

describe('resume records', () => {
  it('round-trip, and anything malformed is ignored', () => {
    const r = { size: 10_000, mtimeMs: T, verified: 4096 };
    assert.deepEqual(parseRecord(formatRecord(r)), r);
    for (const bad of [
      '',
      'null',
      '[]',
      '{}',
      '{"v":2,"size":1,"mtimeMs":1,"verified":0}',
      '{"v":1,"size":1,"mtimeMs":1,"verified":2}',
      '{"v":1,"size":-1,"mtimeMs":1,"verified":0}',
      '{"v":1,"size":1.5,"mtimeMs":1,"verified":0}',
      '{"v":1,"size":1,"mtimeMs":"x","verified":0}',
      '{"v":1,"size":1,"mtimeMs":1,"verified":0,"x":1}',
      `{"v":1,"size":1,"mtimeMs":1,"verified":0}${' '.repeat(2000)}`,
    ]) {
      assert.equal(parseRecord(bad), undefined, bad.slice(0, 60));
    }
  });

  it('never throw on seeded random text (fuzz)', () => {
    const rng = new Rng(0x5eed01);
    const good = formatRecord({ size: 123456, mtimeMs: T, verified: 1000 });
    for (let i = 0; i < 3000; i++) {
      let text: string;
      switch (rng.int(3)) {
        case 0:
          text = rng.bytes(rng.int(80)).toString('latin1');
          break;
        case 1: {
          // mutate a valid record
          const chars = [...good];
          for (let k = rng.range(1, 4); k > 0; k--) chars[rng.int(chars.length)] = String.fromCharCode(rng.range(32, 126));
          text = chars.join('');
          break;
        }
        default:
          text = JSON.stringify({ v: rng.pick([1, 2, '1']), size: rng.pick([0, 5, -1, 1e20, 'x', 2.5]), mtimeMs: rng.pick([0, T, -5, NaN]), verified: rng.pick([0, 3, 6, null]) });
      }
      const r = parseRecord(text);
      if (r !== undefined) {
        assert.ok(Number.isSafeInteger(r.size) && r.size >= 0 && Number.isSafeInteger(r.verified) && r.verified <= r.size && r.mtimeMs >= 0, text);
      }
    }
  });

  it('are written mode 0600 beside the final name, and never read or written through a symbolic link', () => {
    const dir = tempDir('record');
    try {
      const final = path.join(dir, 'f.bin');
      assert.ok(writeRecord(final, { size: 5, mtimeMs: 1, verified: 2 }));
      assert.deepEqual(readRecord(final), { size: 5, mtimeMs: 1, verified: 2 });
      assert.equal(path.basename(recordPath(final)), '.f.bin.tachyon-partial.json');
      const other = path.join(dir, 'other.bin');
      const target = path.join(dir, 'target.txt');
      writeFileSync(target, formatRecord({ size: 5, mtimeMs: 1, verified: 5 }));
      symlinkSync(target, recordPath(other));
      assert.equal(readRecord(other), undefined, 'a symlinked record is not read');
      assert.ok(writeRecord(other, { size: 9, mtimeMs: 9, verified: 9 }), 'writing replaces the link...');
      assert.equal(readFileSync(target, 'utf8'), formatRecord({ size: 5, mtimeMs: 1, verified: 5 }), '...and never writes through it');
      assert.ok(lstatSync(recordPath(other)).isFile());
      assert.equal(lstatSync(recordPath(other)).mode & 0o777, 0o600);
    } finally {
      removeDir(dir);
    }
  });
});

/** A reference glob matcher (backtracking, simple) for the fuzz comparison. */
function refMatch(p: string, s: string): boolean {
  if (p === '') return s === '';
  if (p.startsWith('**/')) return refMatch(p.slice(3), s) || [...s].some((c, i) => c === '/' && refMatch(p.slice(3), s.slice(i + 1)));
  if (p.startsWith('**')) {
    for (let i = 0; i <= s.length; i++) if (refMatch(p.slice(2), s.slice(i))) return true;
    return false;
  }
  if (p[0] === '*') {
    for (let i = 0; i <= s.length; i++) {
      if (refMatch(p.slice(1), s.slice(i))) return true;
      if (s[i] === '/') break;
    }
    return false;
  }
  if (s === '') return false;
  if (p[0] === '?') return s[0] !== '/' && refMatch(p.slice(1), s.slice(1));
  return p[0] === s[0] && refMatch(p.slice(1), s.slice(1));
}

describe('exclude patterns', () => {
  const x = (pats: string[], rel: string, dir = false): boolean => new ExcludeSet(pats).excludes(rel, dir);

  it('a name pattern matches at any depth; a path pattern from the top', () => {
    assert.ok(x(['*.tmp'], 'a.tmp'));
    assert.ok(x(['*.tmp'], 'tree/deep/a.tmp'));
    assert.ok(!x(['*.tmp'], 'tree/a.tmpx'));
    assert.ok(x(['node_modules'], 'app/node_modules', true));
    assert.ok(x(['node_modules'], 'app/node_modules/x/y.js'), 'below an excluded directory');
    assert.ok(x(['tree/logs/*.log'], 'tree/logs/a.log'));
    assert.ok(!x(['tree/logs/*.log'], 'other/tree/logs/a.log'));
    assert.ok(!x(['tree/*.log'], 'tree/logs/a.log'), '* does not cross /');
    assert.ok(x(['tree/**/*.log'], 'tree/a.log'), '**/ may match nothing');
    assert.ok(x(['tree/**/*.log'], 'tree/x/y/a.log'));
    assert.ok(x(['/build'], 'build', true));
    assert.ok(!x(['/build'], 'src/build', true), 'a leading / anchors');
    assert.ok(x(['cache/'], 'a/cache', true));
    assert.ok(!x(['cache/'], 'a/cache', false), 'a trailing / matches directories only');
    assert.ok(x(['f?.bin'], 'f1.bin') && !x(['f?.bin'], 'f10.bin'));
    assert.ok(x(['[a-c]*'], 'b.txt') && !x(['[a-c]*'], 'd.txt'));
    assert.ok(x(['[!a-c]*'], 'd.txt') && !x(['[!a-c]*'], 'a.txt'));
    assert.ok(x(['\\*.txt'], '*.txt') && !x(['\\*.txt'], 'a.txt'), 'backslash escapes');
    assert.ok(x(['[]]x'], ']x'), '] first in a class is literal');
    assert.ok(x(['ü*'], 'übung.txt') && x(['?.txt'], '文.txt'), 'characters, not bytes');
  });

  it('refuses empty, unterminated and over-long patterns with USAGE', () => {
    for (const p of ['', '/', '//', '[abc', 'a\\', '[z-a]', 'x'.repeat(1025), 'a\0b']) throwsCode(() => compilePattern(p), 'USAGE', JSON.stringify(p.slice(0, 20)));
    throwsCode(() => new ExcludeSet(Array.from({ length: 257 }, () => 'a')), 'USAGE');
  });

  it('agree with a reference matcher on seeded random patterns and paths (fuzz)', () => {
    const rng = new Rng(0xe7c1);
    const alphabet = ['a', 'b', '/', '*', '?', '**', '**/', '.'];
    const pathChars = ['a', 'b', '/', '.'];
    for (let i = 0; i < 4000; i++) {
      let p = '';
      for (let k = rng.range(1, 6); k > 0; k--) p += rng.pick(alphabet);
      let s = '';
      for (let k = rng.int(9); k > 0; k--) s += rng.pick(pathChars);
      let c;
      try {
        c = compilePattern(p);
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'USAGE', `${p}: ${String(err)}`);
        continue;
      }
      // compare the anchored form on the whole string
      const body = p.replace(/\/+$/, '').replace(/^\/+/, '');
      if (!c.anchored || body === '' || p.endsWith('/')) continue;
      const got = new ExcludeSet([p]).matchesEntry(s, false);
      // a run of three or more stars is `**`
      assert.equal(got, refMatch(body.replace(/\*{3,}/g, '**'), s), `pattern ${JSON.stringify(p)} on ${JSON.stringify(s)}`);
    }
  });

  it('match in time linear in the input even for hostile patterns', () => {
    const evil = new ExcludeSet(['*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b', '**a**a**a**a**a**a**a**a**a**a**b']);
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) assert.ok(!evil.excludes('a'.repeat(4000), false));
    assert.ok(performance.now() - t0 < 2000, `took ${performance.now() - t0} ms`);
  });

  it('never throw when matching seeded random paths (fuzz)', () => {
    const rng = new Rng(0xe7c2);
    const set = new ExcludeSet(['*.tmp', 'a/**/b', '[!x]?', '/top/', '\\[lit\\]']);
    for (let i = 0; i < 3000; i++) {
      const s = rng.bytes(rng.int(40)).toString('utf8');
      assert.equal(typeof set.excludes(s, rng.chance(0.5)), 'boolean');
    }
  });
});

describe('file lists', () => {
  it('one path per line, CRLF and a BOM accepted, empty lines ignored, nothing else interpreted', () => {
    assert.deepEqual(parseFileList(Buffer.from('\ufeffa.txt\r\n\r\n  spaced name  \n#not a comment\nlast')), ['a.txt', '  spaced name  ', '#not a comment', 'last']);
    throwsCode(() => parseFileList(Buffer.from('a\0b\n')), 'USAGE');
    throwsCode(() => parseFileList(Buffer.from([0x61, 0xff, 0x0a])), 'USAGE');
  });

  it('never throw anything but USAGE on seeded random bytes (fuzz)', () => {
    const rng = new Rng(0xf11e5);
    for (let i = 0; i < 2000; i++) {
      const b = rng.chance(0.5) ? rng.bytes(rng.int(200)) : Buffer.from(Array.from({ length: rng.int(30) }, () => rng.pick(['a', '\n', '\r', ' ', 'é', '/'])).join(''));
      try {
        for (const line of parseFileList(b)) assert.ok(line.length > 0 && !line.includes('\n'));
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'USAGE', String(err));
      }
    }
  });
});

describe('resumed sinks and sources, and prefix hashing', () => {
  it('a sink resumed at an offset keeps the prefix, drops the rest, and digests the whole file', async () => {
    const dir = tempDir('resume-sink');
    try {
      const rng = new Rng(0x51c);
      const data = rng.bytes(3 * 1024 * 1024 + 17);
      const temp = path.join(dir, 'p');
      const offset = 1024 * 1024 + 5;
      // a partial file: the prefix, then garbage that must not survive
      writeFileSync(temp, Buffer.concat([data.subarray(0, offset), rng.bytes(5000)]));
      const h = await hashRanges(temp, offset, [], true);
      const sink = new LocalFileSink(temp, data.length, (p) => openSync(p, constants.O_RDWR | constants.O_NOFOLLOW), { offset, hash: h.prefix! });
      assert.equal(sink.writtenPrefix(), offset);
      for (let o = offset; o < data.length; o += 1400) sink.write(o, data.subarray(o, Math.min(o + 1400, data.length)));
      assert.equal(await sink.finish(), sha(data));
      sink.close();
      assert.ok(readFileSync(temp).equals(data));
    } finally {
      removeDir(dir);
    }
  });

  it('a source resumed at an offset reads from there and its digest covers the whole file', async () => {
    const dir = tempDir('resume-src');
    try {
      const data = new Rng(0x5c).bytes(2 * 1024 * 1024 + 3);
      const file = path.join(dir, 's');
      writeFileSync(file, data);
      for (const offset of [0, 1, 1024 * 1024, data.length]) {
        const h = await hashRanges(file, offset, [], true);
        const src = new LocalFileSource(file, data.length);
        src.resumeAt(offset, h.prefix!);
        const out = Buffer.alloc(1400);
        for (let o = offset; o < data.length; o += 1400) {
          const n = Math.min(1400, data.length - o);
          src.read(o, n, out, 0);
          assert.ok(out.subarray(0, n).equals(data.subarray(o, o + n)));
        }
        assert.equal(src.digest(), sha(data), `offset ${offset}`);
        src.close();
      }
    } finally {
      removeDir(dir);
    }
  });

  it('hashRanges: prefix state and range digests from one pass, ranges alone by positioned reads; short files and symlinks refused', async () => {
    const dir = tempDir('hash-ranges');
    try {
      const data = new Rng(0x4a5).bytes(5 * 1024 * 1024 + 11);
      const file = path.join(dir, 'f');
      writeFileSync(file, data);
      const end = 4 * 1024 * 1024 + 3;
      const ranges = sampleRanges(end);
      for (const prefix of [true, false]) {
        const h = await hashRanges(file, end, ranges, prefix);
        assert.deepEqual(
          h.sums.map((s) => s.sha256),
          ranges.map((r) => sha(data.subarray(r.at, r.at + r.len))),
        );
        if (prefix) assert.equal(h.prefix!.digest('hex'), sha(data.subarray(0, end)));
        else assert.equal(h.prefix, undefined);
      }
      await rejectsCode(hashRanges(file, data.length + 1, [], true), 'IO', 'beyond the end');
      const link = path.join(dir, 'link');
      symlinkSync(file, link);
      await rejectsCode(hashRanges(link, 10, [], true), 'IO', 'through a symlink');
    } finally {
      removeDir(dir);
    }
  });
});
