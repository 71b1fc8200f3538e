/**
 * The token user's pieces without processes: the `transferTokens` configuration, the
 * TokenLogin checks (access key states, roots, expiry at session start) and the path
 * grant (files, directories, ancestors for uploads, symbolic links, expiry, direction).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import os from 'node:os';
import path from 'node:path';
import type { Clock } from '../../src/core/clock.js';
import { TachyonError } from '../../src/core/errors.js';
import { validateServerConfig } from '../../src/server/config.js';
import { DOWNLOAD_PERMISSIONS, fileAccessKeyStatus, staticAccessKeyStatus, TokenLogin, UPLOAD_PERMISSIONS } from '../../src/server/token-login.js';
import { tokenKeyOf, TransferTokenCodec } from '../../src/server/transfer-token.js';
import { parseRootPattern } from '../../src/server/users/storage-roots.js';
import { pathGrant, storageGrant } from '../../src/transfer/grant.js';
import { Rng } from '../helpers/rng.js';
import { Jail } from '../../src/transfer/jail.js';
import { rejectsCode } from '../helpers/errors.js';

let dir: string;
let root: string;
before(() => {
  dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'tachyon-tknlogin-')));
  root = path.join(dir, 'files', 'media');
  mkdirSync(path.join(root, 'out', 'dir'), { recursive: true });
  writeFileSync(path.join(root, 'out', 'a.txt'), 'a');
  writeFileSync(path.join(root, 'out', 'secret.txt'), 's');
  writeFileSync(path.join(root, 'out', 'dir', 'b.txt'), 'b');
  symlinkSync(path.join(root, 'out', 'secret.txt'), path.join(root, 'out', 'dir', 'link.txt'));
  symlinkSync(path.join(root, 'out'), path.join(root, 'out', 'dir', 'up'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const clockAt = (t: number): Clock & { t: number } => {
  const c = { t, now: () => c.t, setTimer: () => () => {} };
  return c;
};

describe('transferTokens configuration', () => {
  const base = (): Record<string, unknown> => ({ allowedRoots: [`file://${dir}/files/*`] });

  it('is off by default; defaults to user xfer, the host name, token.key next to the file', async () => {
    assert.equal((await validateServerConfig(base(), 'c.json', dir)).transferTokens, undefined);
    const c = await validateServerConfig({ ...base(), transferTokens: {} }, 'c.json', dir);
    assert.deepEqual(c.transferTokens, { user: 'xfer', nodeId: hostname(), keyFile: path.join(dir, 'token.key'), keyGraceSeconds: 3600 });
    const d = await validateServerConfig({ ...base(), transferTokens: { user: 'drop', nodeId: 'n1', keyFile: 'k/t.key', keyGraceSeconds: 60, accessKeysFile: 'ak.json' } }, 'c.json', dir);
    assert.deepEqual(d.transferTokens, { user: 'drop', nodeId: 'n1', keyFile: path.join(dir, 'k/t.key'), keyGraceSeconds: 60, accessKeysFile: path.join(dir, 'ak.json') });
  });

  it('refuses unknown fields, root, a name shared with a declared user, and bad values', async () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ transferTokens: { ttl: 5 } }, /transferTokens\.ttl: unknown field/],
      [{ transferTokens: { user: 'root' } }, /transferTokens\.user/],
      [{ transferTokens: { nodeId: '' } }, /transferTokens\.nodeId: must not be empty/],
      [{ transferTokens: { keyGraceSeconds: -1 } }, /transferTokens\.keyGraceSeconds/],
      [{ transferTokens: {}, users: [{ name: 'xfer', docroot: `file://${dir}/files/media` }] }, /transferTokens\.user: 'xfer' is also a declared user/],
    ];
    for (const [extra, re] of bad) {
      const err = await rejectsCode(validateServerConfig({ ...base(), ...extra }, 'c.json', dir), 'CONFIG', JSON.stringify(extra));
      assert.match(err.message, re);
    }
  });
});

describe('TokenLogin', () => {
  const clock = clockAt(1_800_000_000_000);
  const codec = new TransferTokenCodec({ nodeId: 'n', keys: { current: tokenKeyOf(Buffer.alloc(32, 9)) }, clock });
  const make = (o: { roots?: string[]; states?: Record<string, 'active' | 'revoked'> } = {}): TokenLogin =>
    new TokenLogin({
      user: 'xfer',
      codec,
      accessKeys: staticAccessKeyStatus(o.states ?? { ak: 'active', old: 'revoked' }),
      ciphers: ['aes-128-gcm'],
      ...(o.roots ? { allowedRoots: o.roots.map((r) => parseRootPattern(r)) } : {}),
      clock,
    });

  it('accepts a good token and derives a least-privilege account; re-checks expiry and the key at session start', async () => {
    const login = make();
    const { token, claims } = codec.issue({ accessKeyId: 'ak', storageRoot: `file://${root}`, direction: 'upload', paths: ['/in/x'], ttlMs: 60_000 });
    const r = await login.check(token);
    assert.deepEqual(r, { ok: true, identity: `token:${claims.id}` });
    const s = await login.session(`token:${claims.id}`);
    assert.ok(!('refused' in s));
    assert.equal(s.account.root, root);
    assert.deepEqual(s.account.permissions, UPLOAD_PERMISSIONS);
    assert.equal(s.account.name, 'xfer');
    const d = codec.issue({ accessKeyId: 'ak', storageRoot: `file://${root}`, direction: 'download', paths: ['/out'] });
    assert.ok((await login.check(d.token)).ok);
    const ds = await login.session(`token:${d.claims.id}`);
    assert.ok(!('refused' in ds) && ds.account.permissions === DOWNLOAD_PERMISSIONS);
    assert.deepEqual(await login.session('token:unknown'), { refused: 'token-unknown-session' });
    clock.t += 61_000;
    assert.deepEqual(await login.session(`token:${claims.id}`), { refused: 'token-expired' });
    clock.t -= 61_000;
  });

  it('refuses revoked and unknown access keys, roots outside the allowed ones, non-file roots, and bad tokens', async () => {
    const login = make({ roots: [`file://${dir}/files/*`] });
    const issue = (accessKeyId: string, storageRoot = `file://${root}`): string => codec.issue({ accessKeyId, storageRoot, direction: 'download', paths: ['/out'] }).token;
    assert.deepEqual(await login.check(issue('old')), { ok: false, reason: 'access-key-revoked' });
    assert.deepEqual(await login.check(issue('nobody')), { ok: false, reason: 'access-key-unknown' });
    assert.deepEqual(await login.check(issue('ak', 'file:///etc')), { ok: false, reason: 'token-root-not-allowed' });
    assert.deepEqual(await login.check(issue('ak', 's3://bucket/x')), { ok: false, reason: 'token-root-not-allowed' }, 's3 root outside the allowed roots');
    assert.deepEqual(await login.check('tkn1.AAAA'), { ok: false, reason: 'token-malformed' });
    const broken = new TokenLogin({ user: 'xfer', codec, accessKeys: { status: () => Promise.reject(new Error('db down')) }, ciphers: [], clock });
    assert.deepEqual(await broken.check(issue('ak')), { ok: false, reason: 'access-key-check-failed' });
    assert.throws(() => new TokenLogin({ user: 'root', codec, accessKeys: staticAccessKeyStatus({}), ciphers: [], clock }), (e: unknown) => e instanceof TachyonError && e.code === 'CONFIG');
  });

  it('accepts an s3:// root among the allowed roots: the account has no local root, its storage is the canonical URL', async () => {
    const login = make({ roots: ['s3://media/*'] });
    const ok = codec.issue({ accessKeyId: 'ak', storageRoot: 's3://media/tenant1/', direction: 'upload', paths: ['/in'] });
    const r = await login.check(ok.token);
    assert.ok(r.ok);
    const s = await login.session(`token:${ok.claims.id}`);
    assert.ok(!('refused' in s));
    assert.equal(s.account.root, '');
    assert.equal(s.account.storage, 's3://media/tenant1');
    assert.deepEqual(s.account.permissions, UPLOAD_PERMISSIONS);
    const other = codec.issue({ accessKeyId: 'ak', storageRoot: 's3://other/tenant1', direction: 'upload', paths: ['/in'] });
    assert.deepEqual(await login.check(other.token), { ok: false, reason: 'token-root-not-allowed' });
    const gcs = codec.issue({ accessKeyId: 'ak', storageRoot: 'gs://media/tenant1', direction: 'upload', paths: ['/in'] });
    assert.deepEqual(await make().check(gcs.token), { ok: false, reason: 'token-root-not-allowed' });
  });

  it('fileAccessKeyStatus reads the file at each check and denies when it is missing or broken', async () => {
    const f = path.join(dir, 'ak.json');
    const s = fileAccessKeyStatus(f);
    assert.equal(await s.status('a'), 'unknown');
    writeFileSync(f, JSON.stringify({ active: ['a'], revoked: ['b'] }));
    assert.equal(await s.status('a'), 'active');
    assert.equal(await s.status('b'), 'revoked');
    writeFileSync(f, JSON.stringify({ active: ['a'], revoked: ['a'] }));
    assert.equal(await s.status('a'), 'revoked', 'revoked wins');
    writeFileSync(f, '{ not json');
    assert.equal(await s.status('a'), 'unknown');
  });
});

describe('path grant', () => {
  const reason = (fn: () => void): string => {
    try {
      fn();
    } catch (err) {
      assert.ok(err instanceof TachyonError);
      assert.equal(err.code, 'PERMISSION');
      return String(err.details?.['reason']);
    }
    return 'allowed';
  };

  it('download: the granted file, and a granted directory with what is under it, nothing else (links resolved)', () => {
    const jail = new Jail(root);
    const clock = clockAt(0);
    const g = pathGrant({ jail, direction: 'download', paths: ['/out/a.txt', '/out/dir'], expiresAt: 1000, clock, label: 't' });
    const at = (p: string): string => path.join(root, p);
    assert.equal(reason(() => g.check('read', at('out/a.txt'), '/out/a.txt')), 'allowed');
    assert.equal(reason(() => g.check('read', at('out/dir'), '/out/dir')), 'allowed');
    assert.equal(reason(() => g.check('read', at('out/dir/b.txt'), '/out/dir/b.txt')), 'allowed');
    assert.equal(reason(() => g.check('read', at('out/secret.txt'), '/out/secret.txt')), 'path-not-granted');
    assert.equal(reason(() => g.check('read', at('out'), '/out')), 'path-not-granted');
    assert.equal(reason(() => g.check('read', at('out/a.txt.bak'), '/out/a.txt.bak')), 'path-not-granted');
    // a link inside the granted directory that leads out of it
    assert.equal(reason(() => g.check('read', at('out/dir/link.txt'), '/out/dir/link.txt')), 'path-not-granted');
    assert.equal(reason(() => g.check('read', at('out/dir/up/secret.txt'), '/out/dir/up/secret.txt')), 'path-not-granted');
    // the other direction, and after the expiry
    assert.equal(reason(() => g.check('write', at('out/a.txt'), '/out/a.txt')), 'direction');
    assert.equal(reason(() => g.checkSession('upload')), 'direction');
    assert.equal(reason(() => g.checkSession('download')), 'allowed');
    clock.t = 1000;
    assert.equal(reason(() => g.check('read', at('out/a.txt'), '/out/a.txt')), 'expired');
    assert.equal(reason(() => g.checkSession('download')), 'expired');
  });

  it('upload: writes under the granted paths, directories only on the way to them', () => {
    const jail = new Jail(root);
    const g = pathGrant({ jail, direction: 'upload', paths: ['/in/day1/clip.mov', '/in/batch'], expiresAt: 1000, clock: clockAt(0), label: 't' });
    const at = (p: string): string => path.join(root, p);
    assert.equal(reason(() => g.check('write', at('in/day1/clip.mov'), '/in/day1/clip.mov')), 'allowed');
    assert.equal(reason(() => g.check('write', at('in/batch/x/y.bin'), '/in/batch/x/y.bin')), 'allowed');
    assert.equal(reason(() => g.check('mkdir', at('in'), '/in')), 'allowed');
    assert.equal(reason(() => g.check('mkdir', at('in/day1'), '/in/day1')), 'allowed');
    assert.equal(reason(() => g.check('mkdir', at('in/batch/x'), '/in/batch/x')), 'allowed');
    assert.equal(reason(() => g.check('write', at('in/day1/other.mov'), '/in/day1/other.mov')), 'path-not-granted');
    assert.equal(reason(() => g.check('write', at('in/day1'), '/in/day1')), 'path-not-granted');
    assert.equal(reason(() => g.check('mkdir', at('in/day2'), '/in/day2')), 'path-not-granted');
    assert.equal(reason(() => g.check('read', at('in/batch/x'), '/in/batch/x')), 'direction');
  });
});

describe('storage grant (s3:// roots: storage paths, compared by name)', () => {
  const reason = (fn: () => void): string => {
    try {
      fn();
    } catch (err) {
      assert.ok(err instanceof TachyonError);
      assert.equal(err.code, 'PERMISSION');
      assert.equal(err.details?.['permission'], 'token');
      return String(err.details?.['reason']);
    }
    return 'allowed';
  };

  it('download: the granted object, and a granted prefix with what is under it on a / boundary, nothing else', () => {
    const clock = clockAt(0);
    const g = storageGrant({ direction: 'download', paths: ['/out/a.txt', '/out/dir/', '//a//b'], expiresAt: 1000, clock, label: 't' });
    const r = (p: string): string => reason(() => g.check('read', p, `/${p}`));
    assert.equal(r('out/a.txt'), 'allowed');
    assert.equal(r('out/dir'), 'allowed');
    assert.equal(r('out/dir/b.txt'), 'allowed');
    assert.equal(r('out/dir/x/y/z'), 'allowed');
    assert.equal(r('a/b/c'), 'allowed', 'granted paths are normalized');
    assert.equal(r('out/secret.txt'), 'path-not-granted');
    assert.equal(r('out'), 'path-not-granted');
    assert.equal(r(''), 'path-not-granted', 'the root');
    // prefix tricks: a name that only starts like a granted one
    assert.equal(r('a/bc'), 'path-not-granted');
    assert.equal(r('out/a.txt.bak'), 'path-not-granted');
    assert.equal(r('out/dirt/b.txt'), 'path-not-granted');
    assert.equal(r('out/di'), 'path-not-granted');
    // traversal and odd names never pass (they do not normalize)
    assert.equal(r('out/dir/../secret.txt'), 'path-not-granted');
    assert.equal(r('out/dir/./b.txt'), 'path-not-granted');
    assert.equal(r('out\\dir\\b.txt'), 'path-not-granted');
    assert.equal(r('out/dir/b\0.txt'), 'path-not-granted');
    assert.equal(r('out/dir/\u0001'), 'path-not-granted');
    // leading and doubled slashes are the same storage path
    assert.equal(r('/out//dir/b.txt'), 'allowed');
    // the other direction, and after the expiry
    assert.equal(reason(() => g.check('write', 'out/a.txt', '/out/a.txt')), 'direction');
    assert.equal(reason(() => g.check('mkdir', 'out/dir', '/out/dir')), 'direction');
    assert.equal(reason(() => g.checkSession('upload')), 'direction');
    assert.equal(reason(() => g.checkSession('download')), 'allowed');
    clock.t = 1000;
    assert.equal(r('out/a.txt'), 'expired');
    assert.equal(reason(() => g.checkSession('download')), 'expired');
  });

  it('upload: writes under the granted paths, directories only on the way to them', () => {
    const g = storageGrant({ direction: 'upload', paths: ['/in/day1/clip.mov', '/in/batch'], expiresAt: 1000, clock: clockAt(0), label: 't' });
    const c = (op: 'read' | 'write' | 'mkdir', p: string): string => reason(() => g.check(op, p, `/${p}`));
    assert.equal(c('write', 'in/day1/clip.mov'), 'allowed');
    assert.equal(c('write', 'in/batch/x/y.bin'), 'allowed');
    assert.equal(c('mkdir', ''), 'allowed', 'the root leads to every granted path');
    assert.equal(c('mkdir', 'in'), 'allowed');
    assert.equal(c('mkdir', 'in/day1'), 'allowed');
    assert.equal(c('mkdir', 'in/batch/x'), 'allowed');
    assert.equal(c('write', 'in/day1/other.mov'), 'path-not-granted');
    assert.equal(c('write', 'in/day1'), 'path-not-granted');
    assert.equal(c('write', 'in/batchx/y.bin'), 'path-not-granted');
    assert.equal(c('mkdir', 'in/day2'), 'path-not-granted');
    assert.equal(c('mkdir', 'in/day'), 'path-not-granted', 'a prefix of a granted directory name is not on the way to it');
    assert.equal(c('write', 'in/batch/../x.bin'), 'path-not-granted');
    assert.equal(c('read', 'in/batch/x'), 'direction');
  });

  it('granted paths that do not normalize grant nothing; a grant of / covers the whole root', () => {
    const bad = storageGrant({ direction: 'download', paths: ['/../etc', '/a/./b', 'x\0y'], expiresAt: 1000, clock: clockAt(0), label: 't' });
    for (const p of ['', 'etc', 'a/b', 'x', 'a']) assert.equal(reason(() => bad.check('read', p, `/${p}`)), 'path-not-granted', p);
    const all = storageGrant({ direction: 'download', paths: ['/'], expiresAt: 1000, clock: clockAt(0), label: 't' });
    for (const p of ['', 'etc', 'a/b']) assert.equal(reason(() => all.check('read', p, `/${p}`)), 'allowed', p);
  });

  it('fuzz: a checked path is granted exactly when its normalized name is a granted one or under it on a / boundary', () => {
    const rng = new Rng(0x5e3);
    const alphabet = ['a', 'b', 'ab', '/', '/', '.', '..', '\\', '\0', 'é', ' '];
    const pick = (n: number): string => Array.from({ length: n }, () => alphabet[rng.int(alphabet.length)]!).join('');
    for (let i = 0; i < 2000; i++) {
      const grants = [pick(1 + rng.int(5)), pick(1 + rng.int(5))];
      const p = pick(rng.int(8));
      const g = storageGrant({ direction: 'download', paths: grants, expiresAt: 1000, clock: clockAt(0), label: 't' });
      const got = reason(() => g.check('read', p, p));
      // the model: split on '/', drop empty parts, refuse '.', '..', NUL and backslashes
      const norm = (s: string): string | undefined => {
        if (s.includes('\0') || s.includes('\\')) return undefined;
        const parts = s.split('/').filter((x) => x !== '');
        return parts.some((x) => x === '.' || x === '..') ? undefined : parts.join('/');
      };
      const np = norm(p);
      const ok = np !== undefined && grants.map(norm).some((gr) => gr !== undefined && (gr === '' || np === gr || np.startsWith(`${gr}/`)));
      assert.equal(got, ok ? 'allowed' : 'path-not-granted', `grants ${JSON.stringify(grants)} path ${JSON.stringify(p)}`);
    }
  });
});
