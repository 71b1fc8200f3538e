/**
 * Docroot URLs and allowed storage roots: parsing (strict, normalising), the matching
 * rule (a `*` is one whole segment; a docroot may be what a pattern names or below it),
 * symlink resolution on real directories, and a seeded fuzz of the parser and matcher.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TachyonError } from '../../src/core/errors.js';
import {
  checkDocroot,
  formatStorageUrl,
  matchesRoot,
  parseRootPattern,
  parseStorageUrl,
  WILDCARD,
  type StorageUrl,
} from '../../src/server/users/storage-roots.js';
import { rejectsCode, throwsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';

describe('storage URLs', () => {
  it('parses and normalises file:// and s3:// URLs, and plain absolute paths where allowed', () => {
    assert.deepEqual(parseStorageUrl('file:///srv/transfers/alice'), { scheme: 'file', segments: ['srv', 'transfers', 'alice'] });
    assert.deepEqual(parseStorageUrl('file://localhost/srv//./transfers/alice/'), { scheme: 'file', segments: ['srv', 'transfers', 'alice'] });
    assert.deepEqual(parseStorageUrl('FILE:///a%20b/%C3%A9'), { scheme: 'file', segments: ['a b', 'é'] });
    assert.deepEqual(parseStorageUrl('s3://media-bucket/tenants/alice/'), { scheme: 's3', bucket: 'media-bucket', segments: ['tenants', 'alice'] });
    assert.deepEqual(parseStorageUrl('s3://media-bucket'), { scheme: 's3', bucket: 'media-bucket', segments: [] });
    assert.deepEqual(parseStorageUrl('/srv/x y', { allowPlainPath: true }), { scheme: 'file', segments: ['srv', 'x y'] });
    assert.equal(formatStorageUrl(parseStorageUrl('file:///a%20b/%2A/%C3%A9')), 'file:///a%20b/%2A/%C3%A9');
    assert.equal(formatStorageUrl(parseStorageUrl('/srv/50%', { allowPlainPath: true })), 'file:///srv/50%25');
    assert.equal(formatStorageUrl({ scheme: 's3', bucket: 'b-1', segments: [] }), 's3://b-1');
  });

  it('refuses every trick with USAGE, the field and the reason', () => {
    const cases: [string, RegExp][] = [
      ['file:///srv/transfers/../../etc', /'\.\.' is not allowed/],
      ['file:///srv/transfers/%2e%2E/etc', /'\.\.' is not allowed/],
      ['file:///srv/a%2Fb', /encoded '\/'/],
      ['file:///srv/a%5Cb', /or a '\\'/],
      ['file:///srv/a%00b', /NUL or control/],
      ['file:///srv/a%0Ab', /NUL or control/],
      ['file:///srv/a%zz', /bad %-escape/],
      ['file:///srv/a?x=1', /query/],
      ['file:///srv/a#frag', /fragment/],
      ['file://otherhost/srv', /names no host/],
      ['file:srv', /expected file:\/\/\/absolute\/path/],
      ['/srv/x', /write it as a URL/],
      ['srv/x', /expected file:/],
      ['http://example.com/x', /unsupported scheme 'http'/],
      ['s3://UPPER/x', /not an S3 bucket name/],
      ['s3://a/x', /not an S3 bucket name/],
      ['s3://bad..bucket/x', /not an S3 bucket name/],
      ['s3://192.168.0.1/x', /not an S3 bucket name/],
      ['s3://*/x', /not an S3 bucket name/],
      [`file:///${'a'.repeat(256)}`, /longer than 255 bytes/],
      [`file:///${'abcdefgh/'.repeat(600)}`, /longer than 4096 bytes/],
      ['', /empty/],
    ];
    for (const [text, re] of cases) {
      throwsCode(() => parseStorageUrl(text, { field: 'users[2].docroot' }), 'USAGE', text);
      assert.throws(() => parseStorageUrl(text, { field: 'users[2].docroot' }), (e: TachyonError) => {
        assert.match(e.message, /^users\[2\]\.docroot: invalid storage URL/);
        assert.match(e.message, re, text);
        assert.equal(e.details?.field, 'users[2].docroot');
        return true;
      });
    }
  });
});

describe('allowed root patterns', () => {
  it('parses * as a whole segment (or a whole S3 bucket) and refuses partial globs', () => {
    const p = parseRootPattern('file:///srv/transfers/*');
    assert.deepEqual(p.segments, ['srv', 'transfers', WILDCARD]);
    assert.equal(p.text, 'file:///srv/transfers/*');
    assert.equal(parseRootPattern('/srv/*/in').text, 'file:///srv/*/in');
    assert.equal(parseRootPattern('s3://*').bucket, WILDCARD);
    assert.equal(parseRootPattern('s3://media/*').text, 's3://media/*');
    for (const bad of ['file:///srv/user-*', 'file:///srv/**', 'file:///srv/*x', 's3://med*/x', 'file:///srv/../*']) {
      throwsCode(() => parseRootPattern(bad), 'USAGE', bad);
    }
  });

  const url = (t: string): StorageUrl => parseStorageUrl(t);
  const table: [string, string, boolean][] = [
    ['file:///srv/transfers/*', 'file:///srv/transfers/alice', true],
    ['file:///srv/transfers/*', 'file:///srv/transfers/alice/inbox/2024', true],
    ['file:///srv/transfers/*', 'file:///srv/transfers', false],
    ['file:///srv/transfers/*', 'file:///srv/transfersX/alice', false],
    ['file:///srv/transfers/*', 'file:///srv/other/alice', false],
    ['file:///srv/transfers/*', 'file:///', false],
    ['file:///srv/shared', 'file:///srv/shared', true],
    ['file:///srv/shared', 'file:///srv/shared/team', true],
    ['file:///srv/shared', 'file:///srv/sharedX', false],
    ['file:///srv/shared', 'file:///srv', false],
    ['file:///home/*/transfers', 'file:///home/alice/transfers', true],
    ['file:///home/*/transfers', 'file:///home/alice/transfers/x', true],
    ['file:///home/*/transfers', 'file:///home/alice/other', false],
    ['file:///home/*/transfers', 'file:///home/alice', false],
    ['file:///Srv/*', 'file:///srv/a', false],
    ['file:///srv/transfers/*', 's3://srv/transfers/a', false],
    ['s3://media/*', 's3://media/alice', true],
    ['s3://media/*', 's3://media', false],
    ['s3://media/*', 's3://other/alice', false],
    ['s3://*', 's3://any-bucket', true],
    ['s3://*', 's3://any-bucket/x/y', true],
    ['s3://*', 'file:///any', false],
    ['s3://media', 's3://media', true],
  ];
  for (const [pattern, docroot, expected] of table) {
    it(`${pattern} ${expected ? 'allows' : 'refuses'} ${docroot}`, () => {
      assert.equal(matchesRoot(parseRootPattern(pattern), url(docroot)), expected);
    });
  }
});

describe('checkDocroot on real directories (symlinks resolved)', () => {
  let base: string;
  let roots: ReturnType<typeof parseRootPattern>[];

  before(() => {
    base = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'tachyon-roots-')));
    mkdirSync(path.join(base, 'transfers', 'alice'), { recursive: true });
    mkdirSync(path.join(base, 'outside', 'secret'), { recursive: true });
    writeFileSync(path.join(base, 'transfers', 'file'), 'x');
    // a link inside the root that leads out of it
    symlinkSync(path.join(base, 'outside'), path.join(base, 'transfers', 'escape'));
    // a link to another user's directory, inside the root
    symlinkSync(path.join(base, 'transfers', 'alice'), path.join(base, 'transfers', 'alias'));
    // dangling links
    symlinkSync(path.join(base, 'outside', 'later'), path.join(base, 'transfers', 'dangling'));
    symlinkSync('loop', path.join(base, 'transfers', 'loop'));
    // the root reached through a symlinked prefix
    symlinkSync(path.join(base, 'transfers'), path.join(base, 'via'));
    roots = [parseRootPattern(`file://${base}/transfers/*`)];
  });
  after(() => rmSync(base, { recursive: true, force: true }));

  it('accepts a docroot inside the root, existing or not, and returns the canonical URL', async () => {
    assert.equal(await checkDocroot(`file://${base}/transfers/alice`, roots), `file://${base}/transfers/alice`);
    assert.equal(await checkDocroot(`${base}/transfers/bob/inbox`, roots), `file://${base}/transfers/bob/inbox`);
  });

  it('stores the resolved path: a link to another directory inside the root resolves to it', async () => {
    assert.equal(await checkDocroot(`file://${base}/transfers/alias`, roots), `file://${base}/transfers/alice`);
    assert.equal(await checkDocroot(`file://${base}/via/alice`, roots), `file://${base}/transfers/alice`);
  });

  it('matches against the resolved pattern too (a root given through a symlink)', async () => {
    const viaRoots = [parseRootPattern(`file://${base}/via/*`)];
    assert.equal(await checkDocroot(`file://${base}/transfers/alice`, viaRoots), `file://${base}/transfers/alice`);
  });

  it('refuses, with PATH_INVALID, the field and the reason: outside, the root itself, a link out, dangling links, loops, files', async () => {
    const cases: [string, RegExp][] = [
      [`file://${base}/outside/secret`, /is outside the allowed storage roots \(file:\/\/.*\/transfers\/\*\)/],
      [`file://${base}/transfers`, /is outside the allowed storage roots/],
      [`file://${base}/transfers/escape/secret`, /\(resolved: file:\/\/.*\/outside\/secret\) is outside/],
      [`file://${base}/transfers/escape`, /is outside/],
      [`file://${base}/transfers/dangling`, /symlink to a missing target/],
      [`file://${base}/transfers/dangling/x`, /symlink to a missing target/],
      [`file://${base}/transfers/loop`, /symlink loop/],
      [`file://${base}/transfers/file`, /is not a directory/],
      [`file://${base}/transfers/file/x`, /not a directory/],
      ['s3://media/alice', /is outside the allowed storage roots/],
    ];
    for (const [text, re] of cases) {
      const err = await rejectsCode(checkDocroot(text, roots, 'docroot'), 'PATH_INVALID', text);
      assert.match(err.message, /^docroot: /);
      assert.match(err.message, re, text);
      assert.equal(err.details?.field, 'docroot');
    }
    await rejectsCode(checkDocroot(`file://${base}/transfers/a/../../outside`, roots), 'USAGE');
    const none = await rejectsCode(checkDocroot(`file://${base}/transfers/alice`, []), 'PATH_INVALID');
    assert.match(none.message, /no allowed storage roots are configured/);
  });

  it('accepts an s3:// docroot inside an s3 root (served once the S3 backend exists)', async () => {
    assert.equal(await checkDocroot('s3://media/alice/in', [...roots, parseRootPattern('s3://media/*')]), 's3://media/alice/in');
  });
});

describe('fuzz', () => {
  const pieces = ['file://', 's3://', '/', '//', '.', '..', '%2e', '%2E%2e', '%2F', '%00', '%', '%41', '*', '?', '#', 'srv', 'transfers', 'alice', 'media', 'localhost', '\\', ' ', 'é', '\n'];
  function randomText(rng: Rng): string {
    let s = rng.chance(0.6) ? rng.pick(['file:///', 's3://media/', '/']) : '';
    const n = rng.range(0, 10);
    for (let j = 0; j < n; j++) s += rng.chance(0.9) ? rng.pick(pieces) : String.fromCharCode(rng.int(0x100));
    return s;
  }

  it('parseStorageUrl: refuses with USAGE or returns a URL without .. or control characters that round-trips', () => {
    const rng = new Rng(0x5702a6e);
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      const s = randomText(rng);
      let u: StorageUrl;
      try {
        u = parseStorageUrl(s, { allowPlainPath: rng.chance(0.5) });
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'USAGE', `${JSON.stringify(s)}: ${String(err)}`);
        continue;
      }
      accepted++;
      for (const seg of u.segments) {
        assert.ok(seg !== '' && seg !== '.' && seg !== '..', JSON.stringify(s));
        // eslint-disable-next-line no-control-regex
        assert.doesNotMatch(seg, /[\x00-\x1f\x7f/\\]/, JSON.stringify(s));
      }
      assert.deepEqual(parseStorageUrl(formatStorageUrl(u)), u, `round trip of ${JSON.stringify(s)}`);
    }
    assert.ok(accepted > 1000, `only ${accepted} accepted: the fuzz does not reach the success path`);
  });

  it('matchesRoot: a match always lies at or below the pattern, with every literal segment equal', () => {
    const rng = new Rng(0x600d);
    const names = ['srv', 'transfers', 'alice', 'bob', '*'];
    for (let i = 0; i < 3000; i++) {
      const pSegs = Array.from({ length: rng.range(0, 4) }, () => rng.pick(names));
      const uSegs = Array.from({ length: rng.range(0, 5) }, () => rng.pick(names.slice(0, 4)));
      const p = parseRootPattern(`file:///${pSegs.join('/')}`);
      const u: StorageUrl = { scheme: 'file', segments: uSegs };
      const m = matchesRoot(p, u);
      const expected = uSegs.length >= pSegs.length && pSegs.every((s, k) => s === '*' || s === uSegs[k]);
      assert.equal(m, expected, `${p.text} vs ${formatStorageUrl(u)}`);
    }
  });
});
