/**
 * The db layer on real SQLite files (and on PostgreSQL when TACHYON_TEST_PG_URL names a
 * server): creation with safe modes, pragmas, numbered migrations, a database newer than
 * the code, locked / missing / unreadable / foreign files, error translation, and the
 * URL parser (with a seeded fuzz).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { sql, type Kysely, type Migration } from 'kysely';
import { TachyonError } from '../../src/core/errors.js';
import { openDatabase } from '../../src/db/database.js';
import { MIGRATIONS } from '../../src/db/migrations.js';
import { formatDatabaseUrl, parseDatabaseUrl, redactDatabaseUrl } from '../../src/db/url.js';
import { rejectsCode, throwsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';

let dir: string;

before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-db-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function userRow(name: string): {
  name: string;
  docroot: string;
  permissions: string;
  ciphers: string;
  policies: string;
  max_rate_bps: number | null;
  enabled: number;
  created_at: string;
  updated_at: string;
} {
  return { name, docroot: 'file:///srv/x', permissions: 'list', ciphers: 'aes-128-gcm', policies: 'fair', max_rate_bps: 1e12, enabled: 1, created_at: 't', updated_at: 't' };
}

describe('openDatabase (SQLite)', () => {
  it('creates the file 0600 in a new 0700 directory, in WAL mode with foreign keys on, and applies the migrations', async () => {
    const file = path.join(dir, 'new', 'sub', 'tachyon.db');
    const d = await openDatabase({ url: `sqlite://${file}`, busyTimeoutMs: 1234 });
    try {
      assert.equal(d.kind, 'sqlite');
      assert.equal(d.location, file);
      assert.deepEqual(d.migrations, Object.keys(MIGRATIONS).sort());
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.equal(statSync(path.dirname(file)).mode & 0o777, 0o700);
      assert.equal(statSync(path.join(dir, 'new')).mode & 0o777, 0o700);
      const pragma = async (p: string): Promise<unknown> => Object.values((await sql.raw(`pragma ${p}`).execute(d.db)).rows[0] as object)[0];
      assert.equal(await pragma('journal_mode'), 'wal');
      assert.equal(await pragma('foreign_keys'), 1);
      assert.equal(await pragma('busy_timeout'), 1234);
      // the -wal file takes the database's mode
      await d.db.insertInto('transfer_user').values(userRow('a')).execute();
      assert.equal(statSync(`${file}-wal`).mode & 0o777, 0o600);
      // bigint survives (1e12 does not fit 32 bits)
      const row = await d.db.selectFrom('transfer_user').selectAll().executeTakeFirstOrThrow();
      assert.equal(Number(row.max_rate_bps), 1e12);
    } finally {
      await d.close();
    }
    // reopening applies nothing new and keeps the data
    const again = await openDatabase({ url: `sqlite://${file}`, create: false });
    assert.deepEqual(again.migrations, Object.keys(MIGRATIONS).sort());
    assert.equal((await again.db.selectFrom('transfer_user').select('name').execute()).length, 1);
    await again.close();
  });

  it('applies a new numbered migration to an existing database, in order, once', async () => {
    const file = path.join(dir, 'migrate.db');
    await (await openDatabase({ url: `sqlite://${file}` })).close();
    const ran: string[] = [];
    const extra: Record<string, Migration> = {
      ...MIGRATIONS,
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      '0097_test_extra': { up: async (db: Kysely<any>) => void (ran.push('0002'), await db.schema.createTable('extra').addColumn('x', 'text').execute()) },
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      '0098_test_more': { up: async (db: Kysely<any>) => void (ran.push('0003'), await db.schema.alterTable('extra').addColumn('y', 'integer').execute()) },
    };
    const d = await openDatabase({ url: `sqlite://${file}`, migrations: extra });
    assert.deepEqual(ran, ['0002', '0003']);
    assert.deepEqual(d.migrations, [...Object.keys(MIGRATIONS).sort(), '0097_test_extra', '0098_test_more']);
    await d.close();
    const d2 = await openDatabase({ url: `sqlite://${file}`, migrations: extra });
    assert.deepEqual(ran, ['0002', '0003'], 'nothing runs twice');
    await d2.close();
  });

  it('refuses a database newer than the code with a clear CONFIG error, and leaves it alone', async () => {
    const file = path.join(dir, 'newer.db');
    await (await openDatabase({ url: `sqlite://${file}` })).close();
    const raw = new BetterSqlite3(file);
    raw.prepare('insert into tachyon_migration (name, timestamp) values (?, ?)').run('0099_from_the_future', new Date().toISOString());
    raw.close();
    const err = await rejectsCode(openDatabase({ url: `sqlite://${file}` }), 'CONFIG');
    assert.match(err.message, new RegExp(`has schema 0099_from_the_future, newer than this Tachyon knows \\(${Object.keys(MIGRATIONS).sort().at(-1)!}\\): upgrade Tachyon`));
    const check = new BetterSqlite3(file);
    assert.equal((check.prepare('select count(*) as n from tachyon_migration').get() as { n: number }).n, Object.keys(MIGRATIONS).length + 1);
    check.close();
  });

  it('a missing file is DB_UNAVAILABLE when it must exist, with what to do', async () => {
    const file = path.join(dir, 'nope', 'missing.db');
    const err = await rejectsCode(openDatabase({ url: `sqlite://${file}`, create: false }), 'DB_UNAVAILABLE');
    assert.match(err.message, /no database at .*missing\.db: check the path/);
    assert.equal(err.publicMessage, 'The database is unavailable.');
    assert.equal(err.exitCode, 69);
    assert.throws(() => statSync(path.dirname(file)), /ENOENT/, 'nothing was created');
  });

  it('a directory, a file that is not a database, and an unreadable file are DB_UNAVAILABLE', async (t) => {
    const asDir = path.join(dir, 'adir.db');
    mkdirSync(asDir);
    assert.match((await rejectsCode(openDatabase({ url: `sqlite://${asDir}` }), 'DB_UNAVAILABLE')).message, /is a directory/);

    const garbage = path.join(dir, 'garbage.db');
    writeFileSync(garbage, Buffer.alloc(8192, 0x41));
    assert.match((await rejectsCode(openDatabase({ url: `sqlite://${garbage}` }), 'DB_UNAVAILABLE')).message, /is not an SQLite database/);

    const inFile = path.join(garbage, 'x.db'); // parent is a file
    await rejectsCode(openDatabase({ url: `sqlite://${inFile}` }), 'DB_UNAVAILABLE');

    if (process.getuid?.() === 0) {
      t.diagnostic('mode 000 not tested: root reads any file');
      return;
    }
    const locked = path.join(dir, 'unreadable.db');
    await (await openDatabase({ url: `sqlite://${locked}` })).close();
    chmodSync(locked, 0);
    try {
      assert.match((await rejectsCode(openDatabase({ url: `sqlite://${locked}` }), 'DB_UNAVAILABLE')).message, /cannot open the database/);
    } finally {
      chmodSync(locked, 0o600);
    }
  });

  it('a write while another process holds the lock fails with DB_UNAVAILABLE after the busy timeout; reads go on', async () => {
    const file = path.join(dir, 'locked.db');
    const d = await openDatabase({ url: `sqlite://${file}?busy_timeout=150` });
    await d.db.insertInto('transfer_user').values(userRow('a')).execute();
    const other = new BetterSqlite3(file);
    other.exec('begin immediate');
    try {
      const t0 = Date.now();
      const err = await rejectsCode(d.db.insertInto('transfer_user').values(userRow('b')).execute(), 'DB_UNAVAILABLE');
      const waited = Date.now() - t0;
      assert.ok(waited >= 100 && waited < 5000, `waited ${waited} ms`);
      assert.match(err.message, /is locked by another process \(waited 150 ms\)/);
      assert.equal(err.details?.dbCode, 'SQLITE_BUSY');
      // a transaction takes the lock at BEGIN, so it fails the same way (not half-way)
      await rejectsCode(
        d.db.transaction().execute(async (tx) => tx.insertInto('transfer_user').values(userRow('c')).execute()),
        'DB_UNAVAILABLE',
      );
      // WAL: readers do not wait for the writer
      assert.equal((await d.db.selectFrom('transfer_user').select('name').execute()).length, 1);
    } finally {
      other.exec('rollback');
      other.close();
    }
    await d.db.insertInto('transfer_user').values(userRow('b')).execute();
    await d.close();
  });

  it('opening a database that needs migrations while another process holds the lock is DB_UNAVAILABLE', async () => {
    const file = path.join(dir, 'locked-fresh.db');
    const other = new BetterSqlite3(file);
    other.pragma('journal_mode = WAL');
    other.exec('create table unrelated (x)');
    other.exec('begin immediate');
    try {
      await rejectsCode(openDatabase({ url: `sqlite://${file}`, busyTimeoutMs: 100 }), 'DB_UNAVAILABLE');
    } finally {
      other.exec('rollback');
      other.close();
    }
    const d = await openDatabase({ url: `sqlite://${file}` });
    assert.deepEqual(d.migrations, Object.keys(MIGRATIONS).sort());
    await d.close();
  });

  it('translates constraint errors: unique → EXISTS, foreign key → NOT_FOUND', async () => {
    const d = await openDatabase({ url: 'sqlite::memory:' });
    try {
      await d.db.insertInto('transfer_user').values(userRow('a')).execute();
      await rejectsCode(d.db.insertInto('transfer_user').values(userRow('a')).execute(), 'EXISTS');
      await rejectsCode(
        d.db.insertInto('user_key').values({ fingerprint: 'f', user_name: 'ghost', type: 't', blob: 'b', comment: '', added_at: 't' }).execute(),
        'NOT_FOUND',
      );
      // deleting a user deletes its keys (foreign keys are on)
      await d.db.insertInto('user_key').values({ fingerprint: 'f', user_name: 'a', type: 't', blob: 'b', comment: '', added_at: 't' }).execute();
      await d.db.deleteFrom('transfer_user').where('name', '=', 'a').execute();
      assert.equal((await d.db.selectFrom('user_key').selectAll().execute()).length, 0);
      // a query the code got wrong is INTERNAL, still a TachyonError
      await rejectsCode(sql`select * from no_such_table`.execute(d.db), 'INTERNAL');
    } finally {
      await d.close();
    }
  });
});

describe('transactions through the translating driver', () => {
  it('commit, rollback and savepoints work; a failed transaction leaves nothing behind', async () => {
    const d = await openDatabase({ url: 'sqlite::memory:' });
    try {
      const trx = await d.db.startTransaction().execute();
      await trx.insertInto('transfer_user').values(userRow('a')).execute();
      const sp = await trx.savepoint('s1').execute();
      await sp.insertInto('transfer_user').values(userRow('b')).execute();
      await sp.rollbackToSavepoint('s1').execute();
      await trx.commit().execute();
      assert.deepEqual((await d.db.selectFrom('transfer_user').select('name').execute()).map((r) => r.name), ['a']);
      await rejectsCode(
        d.db.transaction().execute(async (tx) => {
          await tx.insertInto('transfer_user').values(userRow('c')).execute();
          await tx.insertInto('transfer_user').values(userRow('a')).execute();
        }),
        'EXISTS',
      );
      assert.deepEqual((await d.db.selectFrom('transfer_user').select('name').execute()).map((r) => r.name), ['a'], 'c rolled back');
    } finally {
      await d.close();
    }
  });
});

describe('database URLs', () => {
  it('parses the accepted forms', () => {
    assert.deepEqual(parseDatabaseUrl('sqlite:///var/lib/tachyon/t.db'), { kind: 'sqlite', file: '/var/lib/tachyon/t.db' });
    assert.deepEqual(parseDatabaseUrl('sqlite://localhost/a%20b/t.db?busy_timeout=250'), { kind: 'sqlite', file: '/a b/t.db', busyTimeoutMs: 250 });
    assert.deepEqual(parseDatabaseUrl('sqlite::memory:'), { kind: 'sqlite-memory' });
    assert.deepEqual(parseDatabaseUrl('postgres://u:p@db.example:5432/tachyon?sslmode=require'), { kind: 'postgres', url: 'postgres://u:p@db.example:5432/tachyon?sslmode=require' });
    assert.equal(parseDatabaseUrl('postgresql://db/x').kind, 'postgres');
    assert.deepEqual(parseDatabaseUrl('data/t.db', { allowPath: true, baseDir: '/srv' }), { kind: 'sqlite', file: '/srv/data/t.db' });
    assert.deepEqual(parseDatabaseUrl('/abs/t.db', { allowPath: true }), { kind: 'sqlite', file: '/abs/t.db' });
  });

  it('refuses malformed ones with CONFIG and the reason', () => {
    const cases: [string, RegExp][] = [
      ['', /empty/],
      ['data/t.db', /expected sqlite:\/\/\/path/],
      ['sqlite://relative/t.db', /has no host/],
      ['sqlite:///a/../t.db', /'\.\.'/],
      ['sqlite:///a/%2e%2e/t.db', /'\.\.'/],
      ['sqlite:///a/dir/', /names a directory/],
      ['sqlite:///a/t.db?mode=ro', /unknown parameter 'mode'/],
      ['sqlite:///a/t.db?busy_timeout=-1', /busy_timeout must be/],
      ['sqlite:///a/%00.db', /NUL/],
      ['mysql://db/x', /unsupported scheme 'mysql'/],
      ['postgres:///x', /needs a host/],
    ];
    for (const [text, re] of cases) {
      throwsCode(() => parseDatabaseUrl(text), 'CONFIG', text);
      assert.throws(() => parseDatabaseUrl(text), re, text);
    }
  });

  it('never repeats a password', () => {
    assert.equal(redactDatabaseUrl('postgres://u:s3cret@h/db'), 'postgres://u:***@h/db');
    assert.equal(redactDatabaseUrl('postgres://h/db?user=u&password=s3cret&x=1'), 'postgres://h/db?user=u&password=***&x=1');
    assert.doesNotMatch((() => {
      try {
        parseDatabaseUrl('postgres://u:s3cret@/db');
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })(), /s3cret/);
  });

  it('fuzz: random text is parsed or refused with CONFIG, never anything else; sqlite URLs round-trip', () => {
    const rng = new Rng(0xdb0001);
    const pieces = ['sqlite:', '//', '/', 'postgres://', 'localhost', '..', '.', '%2e', '%00', '%', '?', 'busy_timeout=', '=', '&', '#', 'a', 'b.db', ' ', '\n', 'é', ':memory:', '100', 'x:y@', '\\'];
    for (let i = 0; i < 3000; i++) {
      let s = '';
      const n = rng.range(0, 8);
      for (let j = 0; j < n; j++) s += rng.chance(0.85) ? rng.pick(pieces) : String.fromCharCode(rng.int(0x80));
      let loc;
      try {
        loc = parseDatabaseUrl(s, { allowPath: rng.chance(0.5), baseDir: '/base' });
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'CONFIG', `input ${JSON.stringify(s)}: ${String(err)}`);
        continue;
      }
      if (loc.kind === 'sqlite') {
        assert.ok(path.isAbsolute(loc.file), JSON.stringify(s));
        assert.ok(!loc.file.split('/').includes('..'), JSON.stringify(s));
        assert.deepEqual(parseDatabaseUrl(formatDatabaseUrl(loc)), loc, `round trip of ${JSON.stringify(s)}`);
      }
    }
  });
});

describe('openDatabase (PostgreSQL)', () => {
  const pgUrl = process.env.TACHYON_TEST_PG_URL;
  it('migrates, stores and translates errors on a real server', { skip: pgUrl ? false : 'set TACHYON_TEST_PG_URL=postgres://… to run against PostgreSQL' }, async () => {
    const url = pgUrl as string;
    const schema = `tachyon_test_${process.pid}_${Date.now()}`;
    const admin = async (statement: string): Promise<void> => {
      const { Client } = (await import('pg')).default;
      const c = new Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(statement);
      } finally {
        await c.end();
      }
    };
    await admin(`create schema ${schema}`);
    const scoped = `${url}${url.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;
    try {
      const d = await openDatabase({ url: scoped });
      assert.equal(d.kind, 'postgres');
      assert.deepEqual(d.migrations, Object.keys(MIGRATIONS).sort());
      await d.db.insertInto('transfer_user').values(userRow('a')).execute();
      assert.equal(Number((await d.db.selectFrom('transfer_user').select('max_rate_bps').executeTakeFirstOrThrow()).max_rate_bps), 1e12);
      await rejectsCode(d.db.insertInto('transfer_user').values(userRow('a')).execute(), 'EXISTS');
      await rejectsCode(
        d.db.insertInto('user_key').values({ fingerprint: 'f', user_name: 'ghost', type: 't', blob: 'b', comment: '', added_at: 't' }).execute(),
        'NOT_FOUND',
      );
      await d.close();
      const again = await openDatabase({ url: scoped });
      assert.deepEqual(again.migrations, Object.keys(MIGRATIONS).sort());
      await again.close();
    } finally {
      await admin(`drop schema ${schema} cascade`);
    }
  });

  it('an unreachable server is DB_UNAVAILABLE and the message holds no password', async () => {
    const err = await rejectsCode(openDatabase({ url: 'postgres://tachyon:s3cret@127.0.0.1:1/tachyon' }), 'DB_UNAVAILABLE');
    assert.doesNotMatch(err.message, /s3cret/);
    assert.match(err.message, /postgres:\/\/tachyon:\*\*\*@127\.0\.0\.1:1\/tachyon/);
  });
});
