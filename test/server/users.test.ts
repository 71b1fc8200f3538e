/**
 * The transfer-user repository on a real SQLite file (and on PostgreSQL when
 * TACHYON_TEST_PG_URL is set): every field validated when set, docroots against the
 * allowed roots, the cipher policy, key ownership, the SSH lookup (unknown user, disabled
 * user, a key of another user), declared users, change events, and a locked database.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { TachyonError } from '../../src/core/errors.js';
import { fingerprintOf } from '../../src/control/hostkeys.js';
import { openDatabase, type Database } from '../../src/db/database.js';
import { effectiveCiphers, permittedCiphers, validateUserName, USER_NAME_PATTERN } from '../../src/server/users/model.js';
import { UserRepository, type UserChangeEvent } from '../../src/server/users/repository.js';
import { parseRootPattern } from '../../src/server/users/storage-roots.js';
import { rejectsCode, throwsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';
import { generateSshKeyPair } from '../helpers/keys.js';

interface Key {
  line: string;
  blob: Buffer;
  fingerprint: string;
}

function makeKey(comment: string, type: 'ed25519' | 'ecdsa' = 'ed25519'): Key {
  const pair = generateSshKeyPair(type, comment);
  const line = pair.public.trim();
  const blob = Buffer.from(line.split(' ')[1] as string, 'base64');
  return { line, blob, fingerprint: fingerprintOf(blob) };
}

let base: string;
let files: string;
const k1 = makeKey('alice@laptop');
const k2 = makeKey('alice@desk', 'ecdsa');
const k3 = makeKey('bob@host');

before(() => {
  base = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'tachyon-users-')));
  files = path.join(base, 'files');
  mkdirSync(path.join(files, 'alice'), { recursive: true });
  mkdirSync(path.join(base, 'elsewhere'), { recursive: true });
});
after(() => rmSync(base, { recursive: true, force: true }));

function repositorySuite(name: string, open: () => Promise<Database>, skip: string | false, cleanup?: () => Promise<void>): void {
  describe(`UserRepository (${name})`, { skip }, () => {
    let database: Database;
    let repo: UserRepository;
    const events: UserChangeEvent[] = [];
    let now = Date.parse('2025-01-02T03:04:05Z');

    before(async () => {
      database = await open();
      repo = new UserRepository(database, {
        allowedRoots: [parseRootPattern(`file://${files}/*`), parseRootPattern('s3://media/*')],
        cipherPolicy: { allowed: ['aes-128-gcm', 'aes-192-gcm', 'aes-256-gcm'], minimum: 'aes-192-gcm' },
        clock: { now: () => now, setTimer: () => () => undefined },
        onChange: (e) => events.push(e),
      });
    });
    after(async () => {
      await database?.close();
      await cleanup?.();
    });

    it('adds a user with defaults and keys; get, require and list return it', async () => {
      const u = await repo.add({ name: 'alice', docroot: `file://${files}/alice`, keys: [`${k1.line}\n# comment line\n\n${k2.line}`] });
      assert.equal(u.name, 'alice');
      assert.equal(u.docroot, `file://${files}/alice`);
      assert.deepEqual(u.permissions, ['list', 'read', 'write', 'mkdir']);
      assert.deepEqual(u.ciphers, ['aes-192-gcm', 'aes-256-gcm'], 'default ciphers: what the policy permits');
      assert.deepEqual(u.policies, ['fixed', 'high', 'fair', 'low']);
      assert.equal(u.maxRateBps, null);
      assert.equal(u.enabled, true);
      assert.equal(u.createdAt, '2025-01-02T03:04:05.000Z');
      assert.equal(u.updatedAt, u.createdAt);
      assert.deepEqual(
        u.keys.map((k) => [k.type, k.fingerprint, k.comment]),
        [
          ['ssh-ed25519', k1.fingerprint, 'alice@laptop'],
          ['ecdsa-sha2-nistp256', k2.fingerprint, 'alice@desk'],
        ].sort((a, b) => (a[1]! < b[1]! ? -1 : 1)),
      );
      assert.ok(u.keys.every((k) => k.addedAt === '2025-01-02T03:04:05.000Z'));
      assert.deepEqual((await repo.get('alice'))?.keys.map((k) => k.blob.toString('base64')).sort(), [k1.blob, k2.blob].map((b) => b.toString('base64')).sort());
      assert.equal(await repo.get('nobody'), undefined);
      assert.equal(await repo.get('NOT A NAME'), undefined);
      await rejectsCode(repo.require('nobody'), 'NOT_FOUND');
      assert.deepEqual((await repo.list()).map((x) => x.name), ['alice']);
      assert.deepEqual(events.splice(0).map((e) => e.type), ['user.add', 'user.key.add', 'user.key.add']);
    });

    it('stores every field: permissions, ciphers, policies, a rate cap beyond 32 bits, disabled; an s3 docroot', async () => {
      const u = await repo.add({
        name: 'bob.smith-2',
        docroot: 's3://media/bob',
        permissions: ['delete', 'read', 'list', 'read'],
        ciphers: ['aes-256-gcm'],
        policies: ['low', 'fair'],
        maxRateBps: 400e9,
        enabled: false,
        keys: [k3.line],
      });
      assert.deepEqual(u.permissions, ['list', 'read', 'delete'], 'catalogue order, no duplicates');
      assert.deepEqual(u.ciphers, ['aes-256-gcm']);
      assert.deepEqual(u.policies, ['fair', 'low']);
      assert.equal(u.maxRateBps, 400e9);
      assert.equal(u.enabled, false);
      assert.equal(u.docroot, 's3://media/bob');
      assert.deepEqual((await repo.list()).map((x) => x.name), ['alice', 'bob.smith-2']);
      events.splice(0);
    });

    it('refuses invalid fields with the field and the reason, and stores nothing', async () => {
      const bad: [Parameters<UserRepository['add']>[0], 'USAGE' | 'PATH_INVALID' | 'EXISTS', RegExp][] = [
        [{ name: 'root', docroot: `${files}/r` }, 'USAGE', /^name: 'root' is reserved/],
        [{ name: 'systemd-x', docroot: `${files}/r` }, 'USAGE', /reserved/],
        [{ name: 'Alice', docroot: `${files}/r` }, 'USAGE', /^name: "Alice" is not a valid user name/],
        [{ name: 'a'.repeat(33), docroot: `${files}/r` }, 'USAGE', /not a valid user name/],
        [{ name: '-x', docroot: `${files}/r` }, 'USAGE', /not a valid user name/],
        [{ name: 'carol', docroot: `${base}/elsewhere` }, 'PATH_INVALID', /^docroot: file:\/\/.*\/elsewhere is outside the allowed storage roots/],
        [{ name: 'carol', docroot: `${files}` }, 'PATH_INVALID', /outside the allowed storage roots/],
        [{ name: 'carol', docroot: `file://${files}/../elsewhere` }, 'USAGE', /'\.\.' is not allowed/],
        [{ name: 'carol', docroot: 's3://other/carol' }, 'PATH_INVALID', /outside/],
        [{ name: 'carol', docroot: `${files}/c`, permissions: ['read', 'execute'] as never }, 'USAGE', /^permissions: unknown permission 'execute'/],
        [{ name: 'carol', docroot: `${files}/c`, ciphers: ['none'] }, 'USAGE', /^ciphers: none is not allowed by the server's cipher policy/],
        [{ name: 'carol', docroot: `${files}/c`, ciphers: ['aes-128-gcm'] }, 'USAGE', /^ciphers: aes-128-gcm is weaker than the server's minimum aes-192-gcm/],
        [{ name: 'carol', docroot: `${files}/c`, ciphers: [] }, 'USAGE', /^ciphers: give at least one cipher/],
        [{ name: 'carol', docroot: `${files}/c`, policies: ['greedy'] as never }, 'USAGE', /^policies: unknown policy 'greedy'/],
        [{ name: 'carol', docroot: `${files}/c`, maxRateBps: 0 }, 'USAGE', /^maxRate: /],
        [{ name: 'carol', docroot: `${files}/c`, maxRateBps: 1.5 }, 'USAGE', /^maxRate: /],
        [{ name: 'carol', docroot: `${files}/c`, keys: ['ssh-ed25519 AAAA'] }, 'USAGE', /^key: line 1: /],
        [{ name: 'carol', docroot: `${files}/c`, keys: [`from="10.0.0.0/8" ${makeKey('x').line}`] }, 'USAGE', /key options \(from\) are not supported/],
        [{ name: 'carol', docroot: `${files}/c`, keys: [`${k3.line}`] }, 'EXISTS', /^key: the key SHA256:\S+ already belongs to user 'bob\.smith-2'; a key may belong to one user only/],
        [{ name: 'carol', docroot: `${files}/c`, keys: [`${makeKey('dup').line}\n${makeKey('dup2').line}`, k1.line] }, 'EXISTS', /already belongs to user 'alice'/],
        [{ name: 'alice', docroot: `${files}/alice` }, 'EXISTS', /^name: user 'alice' exists already/],
      ];
      for (const [input, code, re] of bad) {
        const err = await rejectsCode(repo.add(input), code, JSON.stringify(input).slice(0, 100));
        assert.match(err.message, re);
      }
      assert.deepEqual((await repo.list()).map((x) => x.name), ['alice', 'bob.smith-2'], 'nothing stored');
      assert.equal(events.length, 0);
    });

    it('update: changes only what is given, validates it (docroot when it is set), bumps updatedAt', async () => {
      now += 60_000;
      const u = await repo.update('alice', { permissions: ['list', 'read'], maxRateBps: 100e6, policies: ['fair'] });
      assert.deepEqual(u.permissions, ['list', 'read']);
      assert.equal(u.maxRateBps, 100e6);
      assert.deepEqual(u.policies, ['fair']);
      assert.equal(u.docroot, `file://${files}/alice`);
      assert.equal(u.updatedAt, '2025-01-02T03:05:05.000Z');
      assert.equal(u.createdAt, '2025-01-02T03:04:05.000Z');
      assert.deepEqual(events.splice(0), [{ type: 'user.update', user: 'alice', fields: ['permissions', 'policies', 'maxRateBps'] }]);

      const err = await rejectsCode(repo.update('alice', { docroot: `${base}/elsewhere`, permissions: [] }), 'PATH_INVALID');
      assert.match(err.message, /^docroot: .* is outside the allowed storage roots/);
      assert.deepEqual((await repo.require('alice')).permissions, ['list', 'read'], 'a refused update changes nothing');

      assert.equal((await repo.update('alice', { maxRateBps: null })).maxRateBps, null);
      assert.equal((await repo.update('alice', { docroot: `file://${files}/alice2` })).docroot, `file://${files}/alice2`);
      assert.equal((await repo.update('alice', { docroot: `file://${files}/alice` })).docroot, `file://${files}/alice`);
      await rejectsCode(repo.update('ghost', { enabled: false }), 'NOT_FOUND');
      events.splice(0);
    });

    it('findUserForKey / authorizeKey: only the enabled owner of the key', async () => {
      const ok = await repo.authorizeKey('alice', k1.blob);
      assert.ok(ok.ok);
      assert.equal(ok.user.name, 'alice');
      assert.equal(ok.fingerprint, k1.fingerprint);
      assert.equal((await repo.findUserForKey('alice', k2.blob))?.name, 'alice');

      const stranger = makeKey('stranger');
      assert.deepEqual(await repo.authorizeKey('alice', stranger.blob), { ok: false, reason: 'unknown-key', fingerprint: stranger.fingerprint });
      assert.deepEqual(await repo.authorizeKey('carol', k1.blob), { ok: false, reason: 'unknown-user', fingerprint: k1.fingerprint });
      assert.deepEqual(await repo.authorizeKey('root', k1.blob), { ok: false, reason: 'unknown-user', fingerprint: k1.fingerprint });
      assert.deepEqual(await repo.authorizeKey('../x', k1.blob), { ok: false, reason: 'unknown-user', fingerprint: k1.fingerprint });
      // a key valid for another user
      assert.deepEqual(await repo.authorizeKey('alice', k3.blob), { ok: false, reason: 'key-of-other-user', fingerprint: k3.fingerprint });
      assert.equal(await repo.findUserForKey('alice', k3.blob), undefined);
      // bob is disabled: his own key is refused
      assert.deepEqual(await repo.authorizeKey('bob.smith-2', k3.blob), { ok: false, reason: 'disabled', fingerprint: k3.fingerprint });
      assert.equal(await repo.findUserForKey('bob.smith-2', k3.blob), undefined);
      await repo.update('bob.smith-2', { enabled: true });
      assert.equal((await repo.findUserForKey('bob.smith-2', k3.blob))?.name, 'bob.smith-2');
      await repo.update('alice', { enabled: false });
      assert.equal(await repo.findUserForKey('alice', k1.blob), undefined);
      await repo.update('alice', { enabled: true });
      // garbage blobs are simply unknown keys
      assert.equal((await repo.authorizeKey('alice', Buffer.alloc(0))).ok, false);
      events.splice(0);
    });

    it('keys: add (file text), refuse one that exists, remove by fingerprint; the key stops working at once', async () => {
      const k4 = makeKey('alice@phone');
      const added = await repo.addKeys('alice', `${k4.line}\n`);
      assert.deepEqual(added.map((k) => k.fingerprint), [k4.fingerprint]);
      assert.equal((await repo.findUserForKey('alice', k4.blob))?.name, 'alice');
      assert.match((await rejectsCode(repo.addKeys('alice', k4.line), 'EXISTS')).message, /user 'alice' already has the key/);
      assert.match((await rejectsCode(repo.addKeys('alice', k3.line), 'EXISTS')).message, /already belongs to user 'bob\.smith-2'/);
      await rejectsCode(repo.addKeys('ghost', makeKey('g').line), 'NOT_FOUND');
      await rejectsCode(repo.addKeys('alice', 'not a key'), 'USAGE');

      await repo.removeKey('alice', k4.fingerprint.replace('SHA256:', 'sha256:'));
      assert.equal(await repo.findUserForKey('alice', k4.blob), undefined);
      assert.match((await rejectsCode(repo.removeKey('alice', k4.fingerprint), 'NOT_FOUND')).message, /has no key/);
      await rejectsCode(repo.removeKey('alice', k3.fingerprint), 'NOT_FOUND', "another user's key");
      assert.ok(await repo.findUserForKey('bob.smith-2', k3.blob), "bob's key was not touched");
      await rejectsCode(repo.removeKey('ghost', k1.fingerprint), 'NOT_FOUND');
      assert.match((await rejectsCode(repo.removeKey('alice', 'SHA256:short'), 'USAGE')).message, /^fingerprint: /);
      assert.deepEqual(events.splice(0), [
        { type: 'user.key.add', user: 'alice', fingerprint: k4.fingerprint },
        { type: 'user.key.remove', user: 'alice', fingerprint: k4.fingerprint },
      ]);
    });

    it('applyDeclared: adds, updates only what differs, makes keys exactly the declared ones, leaves others alone', async () => {
      const k5 = makeKey('dave');
      const first = await repo.applyDeclared([
        { name: 'dave', docroot: `${files}/dave`, keys: [k5.line], permissions: ['read'] },
        { name: 'alice', docroot: `file://${files}/alice`, keys: [k1.line] },
      ]);
      assert.deepEqual(first, { added: ['dave'], updated: ['alice'], unchanged: [] });
      assert.deepEqual((await repo.require('alice')).keys.map((k) => k.fingerprint), [k1.fingerprint], 'k2 removed');
      const again = await repo.applyDeclared([
        { name: 'dave', docroot: `${files}/dave`, keys: [k5.line], permissions: ['read'] },
        { name: 'alice', docroot: `file://${files}/alice`, keys: [k1.line] },
      ]);
      assert.deepEqual(again, { added: [], updated: [], unchanged: ['dave', 'alice'] });
      const third = await repo.applyDeclared([{ name: 'dave', docroot: `${files}/dave`, permissions: ['read', 'write'] }]);
      assert.deepEqual(third.updated, ['dave']);
      assert.deepEqual((await repo.require('dave')).keys.length, 1, 'keys left out are kept');
      assert.ok(await repo.get('bob.smith-2'), 'undeclared users stay');
      await rejectsCode(repo.applyDeclared([{ name: 'erin', docroot: `${base}/elsewhere` }]), 'PATH_INVALID');
      events.splice(0);
    });

    it('remove: the user and its keys go; its key can be given to someone else', async () => {
      await repo.remove('bob.smith-2');
      assert.equal(await repo.get('bob.smith-2'), undefined);
      assert.deepEqual(await repo.authorizeKey('bob.smith-2', k3.blob), { ok: false, reason: 'unknown-user', fingerprint: k3.fingerprint });
      await rejectsCode(repo.remove('bob.smith-2'), 'NOT_FOUND');
      await repo.addKeys('dave', k3.line);
      assert.equal((await repo.findUserForKey('dave', k3.blob))?.name, 'dave');
      assert.deepEqual(events.splice(0).map((e) => e.type), ['user.remove', 'user.key.add']);
    });
  });
}

repositorySuite('SQLite file', () => openDatabase({ url: `sqlite://${base}/users.db` }), false);

const pgUrl = process.env.TACHYON_TEST_PG_URL;
const pgSchema = `tachyon_users_${process.pid}_${Date.now()}`;
async function pgAdmin(statement: string): Promise<void> {
  const { Client } = (await import('pg')).default;
  const c = new Client({ connectionString: pgUrl });
  await c.connect();
  try {
    await c.query(statement);
  } finally {
    await c.end();
  }
}
repositorySuite(
  'PostgreSQL',
  async () => {
    await pgAdmin(`create schema ${pgSchema}`);
    const url = pgUrl as string;
    return openDatabase({ url: `${url}${url.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${pgSchema}`)}` });
  },
  pgUrl ? false : 'set TACHYON_TEST_PG_URL=postgres://… to run against PostgreSQL',
  () => pgAdmin(`drop schema if exists ${pgSchema} cascade`),
);

describe('UserRepository on a locked database', () => {
  it('a change while another process holds the write lock fails with DB_UNAVAILABLE; lookups still answer', async () => {
    const file = path.join(base, 'locked-users.db');
    const database = await openDatabase({ url: `sqlite://${file}`, busyTimeoutMs: 100 });
    const repo = new UserRepository(database, { allowedRoots: [parseRootPattern(`${files}/*`)] });
    const key = makeKey('z');
    await repo.add({ name: 'zed', docroot: `${files}/zed`, keys: [key.line] });
    const other = new BetterSqlite3(file);
    other.exec('begin immediate');
    try {
      const err = await rejectsCode(repo.add({ name: 'yan', docroot: `${files}/yan` }), 'DB_UNAVAILABLE');
      assert.match(err.message, /locked by another process/);
      await rejectsCode(repo.update('zed', { enabled: false }), 'DB_UNAVAILABLE');
      assert.equal((await repo.findUserForKey('zed', key.blob))?.name, 'zed', 'logins keep working');
    } finally {
      other.exec('rollback');
      other.close();
      await database.close();
    }
  });
});

describe('model', () => {
  it('cipher policy: permitted and effective ciphers', () => {
    assert.deepEqual(permittedCiphers({ allowed: ['none', 'aes-128-gcm', 'aes-256-gcm'] }), ['aes-128-gcm', 'aes-256-gcm', 'none']);
    assert.deepEqual(permittedCiphers({ allowed: ['none', 'aes-128-gcm', 'aes-256-gcm'], minimum: 'aes-128-gcm' }), ['aes-128-gcm', 'aes-256-gcm']);
    assert.deepEqual(permittedCiphers({ allowed: ['aes-128-gcm'], minimum: 'aes-256-gcm' }), []);
    // the server's policy applies on top of a user's list stored earlier
    assert.deepEqual(effectiveCiphers({ ciphers: ['none', 'aes-128-gcm', 'aes-256-gcm'] }, { allowed: ['aes-128-gcm', 'aes-256-gcm'], minimum: 'aes-192-gcm' }), ['aes-256-gcm']);
  });

  it('fuzz: validateUserName accepts exactly the pattern minus reserved names, and throws only USAGE', () => {
    const rng = new Rng(0x05e75);
    const alphabet = 'abcxyz_.-09AZ /é\0\n';
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      let s = '';
      if (rng.chance(0.1)) s = rng.pick(['root', 'nobody', 'www-data', 'systemd-net', 'daemon', '_apt']);
      else for (let j = rng.range(0, 34); j > 0; j--) s += rng.chance(0.8) ? alphabet[rng.int(6)] : alphabet[rng.int(alphabet.length)];
      try {
        assert.equal(validateUserName(s), s);
        assert.ok(USER_NAME_PATTERN.test(s), JSON.stringify(s));
        accepted++;
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'USAGE', `${JSON.stringify(s)}: ${String(err)}`);
      }
    }
    assert.ok(accepted > 50, `${accepted} accepted`);
    for (const reserved of ['root', 'nobody', 'sshd', 'systemd-timesync', '_apt']) throwsCode(() => validateUserName(reserved), 'USAGE', reserved);
    for (const fine of ['_svc', 'a', 'alice.b-2', 'x'.repeat(32)]) assert.equal(validateUserName(fine), fine);
  });
});
