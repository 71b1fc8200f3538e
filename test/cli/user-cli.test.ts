/**
 * `tachyon user …` end to end: real child processes of bin/tachyon.js against a real
 * SQLite file in a temporary directory. Covers every subcommand, --json, the embedded
 * defaults (./tachyon-data, as `tachyon start`), --config / --db / --allowed-root, and
 * the refusals with their messages and exit codes (usage 2, path 65, not found 66,
 * exists 73, database unavailable 69, config 78).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { fingerprintOf } from '../../src/control/hostkeys.js';
import { startCli, type RunResult } from '../helpers/cli.js';
import { generateSshKeyPair } from '../helpers/keys.js';


let work: string;

/** Runs `tachyon ARGS` in the work directory, with `stdin` as its standard input. */
function tachyon(args: string[], stdin?: string): Promise<RunResult> {
  const { child, done } = startCli(args, work, 30_000);
  child.stdin.end(stdin ?? '');
  return done;
}

async function ok(args: string[], stdin?: string): Promise<string> {
  const r = await tachyon(args, stdin);
  assert.equal(r.code, 0, `tachyon ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
  return r.stdout;
}

async function fails(args: string[], code: number, message: RegExp, stdin?: string): Promise<RunResult> {
  const r = await tachyon(args, stdin);
  assert.equal(r.code, code, `tachyon ${args.join(' ')}: exit ${r.code}, expected ${code}\n${r.stderr}`);
  assert.match(r.stderr, message, `tachyon ${args.join(' ')}`);
  return r;
}

function keyPair(name: string, comment: string): { priv: string; pub: string; line: string; fingerprint: string } {
  const pair = generateSshKeyPair('ed25519', comment);
  const priv = path.join(work, name);
  writeFileSync(priv, pair.private, { mode: 0o600 });
  writeFileSync(`${priv}.pub`, `${pair.public}\n`);
  const line = pair.public.trim();
  return { priv, pub: `${priv}.pub`, line, fingerprint: fingerprintOf(Buffer.from(line.split(' ')[1] as string, 'base64')) };
}

describe('tachyon user (embedded defaults: ./tachyon-data)', () => {
  let k1: ReturnType<typeof keyPair>;
  let k2: ReturnType<typeof keyPair>;
  let k3: ReturnType<typeof keyPair>;
  let data: string;

  before(() => {
    work = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'tachyon-user-cli-')));
    data = path.join(work, 'tachyon-data');
    k1 = keyPair('k1', 'alice@laptop');
    k2 = keyPair('k2', 'bob@host');
    k3 = keyPair('k3', 'alice@phone');
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('before any user: list says the database is missing and what to do (exit 69)', async () => {
    await fails(['user', 'list'], 69, /tachyon: no database at .*tachyon-data\/tachyon\.db: .*create it with 'tachyon user add'/);
    assert.throws(() => statSync(data), /ENOENT/, 'a read-only command creates nothing');
  });

  it('add: creates the database (0600) and the user; the docroot must be under tachyon-data/files/*', async () => {
    const out = await ok(['user', 'add', 'alice', '--docroot', 'tachyon-data/files/alice', '--key', k1.pub]);
    assert.match(out, new RegExp(`added user alice: docroot file://${data}/files/alice, permissions list,read,write,mkdir, 1 key\\(s\\)`));
    assert.ok(out.includes(k1.fingerprint));
    assert.match(out, /note: the docroot .*alice does not exist yet/);
    assert.equal(statSync(path.join(data, 'tachyon.db')).mode & 0o777, 0o600);
    assert.equal(statSync(data).mode & 0o777, 0o700);

    await fails(['user', 'add', 'bob', '--docroot', '/etc', '--key-text', k2.line], 65, new RegExp(`tachyon: --docroot: file:///etc is outside the allowed storage roots \\(file://${data}/files/\\*\\)`));
    await fails(['user', 'add', 'bob', '--docroot', 'tachyon-data/files', '--key-text', k2.line], 65, /outside the allowed storage roots/);
    await fails(['user', 'add', 'root', '--docroot', 'tachyon-data/files/root'], 2, /tachyon: name: 'root' is reserved for the system/);
    await fails(['user', 'add', 'Bob', '--docroot', 'tachyon-data/files/bob'], 2, /not a valid user name/);
    await fails(['user', 'add', 'bob', '--docroot', 'tachyon-data/files/bob', '--key', k1.pub], 73, /--key: the key SHA256:\S+ already belongs to user 'alice'; a key may belong to one user only/);
    await fails(['user', 'add', 'bob', '--docroot', 'tachyon-data/files/bob', '--key', k2.priv], 2, /k2 holds a private key: give the public key instead \(.*k2\.pub\)/);
    await fails(['user', 'add', 'bob', '--docroot', 'tachyon-data/files/bob', '--key', 'nope.pub'], 2, /cannot read the key file nope\.pub: ENOENT/);
    await fails(['user', 'add', 'bob', '--docroot', 'tachyon-data/files/bob', '--perm', 'list,sudo'], 2, /--perm: unknown permission 'sudo'/);
    await fails(['user', 'add', 'bob', '--docroot', 'tachyon-data/files/bob', '--cipher', 'none'], 2, /--cipher: none is not allowed by the server's cipher policy/);
    await fails(['user', 'add', 'bob', '--docroot', 'tachyon-data/files/bob', '--max-rate', 'fast'], 2, /--max-rate: invalid rate 'fast'/);
    await fails(['user', 'add', 'alice', '--docroot', 'tachyon-data/files/alice'], 73, /user 'alice' exists already/);
    await fails(['user', 'add', 'bob'], 2, /required option '--docroot <url>' not specified/);

    mkdirSync(path.join(data, 'files', 'bob'), { recursive: true, mode: 0o700 });
    const bob = await ok([
      'user', 'add', 'bob', '--docroot', `file://${data}/files/bob`, '--key-text', k2.line,
      '--perm', 'list,read', '--perm', 'delete', '--cipher', 'aes-256-gcm', '--max-rate', '100m', '--policy', 'fair,low', '--disable',
    ]);
    assert.match(bob, /added user bob/);
    assert.doesNotMatch(bob, /does not exist yet/);
    assert.match(bob, /note: bob is disabled/);
  });

  it('list and show, as text and as JSON', async () => {
    const list = await ok(['user', 'list']);
    assert.match(list, /^NAME\s+ENABLED\s+KEYS\s+PERMISSIONS\s+DOCROOT$/m);
    assert.match(list, /^alice\s+yes\s+1\s+list,read,write,mkdir\s+file:\/\//m);
    assert.match(list, /^bob\s+no\s+1\s+list,read,delete\s+/m);
    const json = JSON.parse(await ok(['user', 'list', '--json'])) as { name: string }[];
    assert.deepEqual(json.map((u) => u.name), ['alice', 'bob']);

    const bob = JSON.parse(await ok(['user', 'show', 'bob', '--json'])) as Record<string, unknown>;
    assert.equal(bob.docroot, `file://${data}/files/bob`);
    assert.equal(bob.enabled, false);
    assert.deepEqual(bob.permissions, ['list', 'read', 'delete']);
    assert.deepEqual(bob.ciphers, ['aes-256-gcm']);
    assert.deepEqual(bob.policies, ['fair', 'low']);
    assert.equal(bob.maxRateBps, 100e6);
    assert.deepEqual((bob.keys as { fingerprint: string; publicKey: string }[]).map((k) => [k.fingerprint, k.publicKey]), [[k2.fingerprint, k2.line]]);

    const text = await ok(['user', 'show', 'alice']);
    assert.match(text, /^enabled:\s+yes$/m);
    assert.match(text, /^max rate:\s+server ceiling$/m);
    assert.ok(text.includes(`${k1.fingerprint}  ssh-ed25519  alice@laptop`));

    await fails(['user', 'show', 'nobody'], 66, /no transfer user 'nobody' \(see 'tachyon user list'\)/);
    const r = await tachyon(['user', 'show', 'nobody', '--json']);
    assert.equal(r.code, 66);
    assert.deepEqual(JSON.parse(r.stdout), { event: 'error', code: 'NOT_FOUND', message: "no transfer user 'nobody' (see 'tachyon user list')" });
  });

  it('set, disable: change what is given; refuse nothing-to-change, contradictions and a docroot outside the roots', async () => {
    assert.match(await ok(['user', 'set', 'bob', '--enable', '--max-rate', 'none', '--policy', 'high']), /updated user bob: policies, maxRateBps, enabled/);
    const bob = JSON.parse(await ok(['user', 'show', 'bob', '--json'])) as Record<string, unknown>;
    assert.equal(bob.enabled, true);
    assert.equal(bob.maxRateBps, null);
    assert.deepEqual(bob.policies, ['high']);
    assert.deepEqual(bob.permissions, ['list', 'read', 'delete'], 'untouched');

    await fails(['user', 'set', 'bob'], 2, /nothing to change: give at least one of --docroot/);
    await fails(['user', 'set', 'bob', '--enable', '--disable'], 2, /give --enable or --disable, not both/);
    await fails(['user', 'set', 'bob', '--docroot', os.tmpdir()], 65, /--docroot: .* is outside the allowed storage roots/);
    await fails(['user', 'set', 'ghost', '--disable'], 66, /no transfer user 'ghost'/);

    assert.match(await ok(['user', 'disable', 'bob']), /disabled user bob/);
    assert.equal((JSON.parse(await ok(['user', 'show', 'bob', '--json'])) as { enabled: boolean }).enabled, false);
    await fails(['user', 'disable', 'ghost'], 66, /no transfer user 'ghost'/);
  });

  it('key add (file or stdin) and key remove by fingerprint', async () => {
    assert.match(await ok(['user', 'key', 'add', 'alice', '-'], `${k3.line}\n`), new RegExp(`added key ${k3.fingerprint.replace(/[+/]/g, '\\$&')} ssh-ed25519 alice@phone to alice`));
    await fails(['user', 'key', 'add', 'alice', k3.pub], 73, /user 'alice' already has the key/);
    await fails(['user', 'key', 'add', 'alice', k2.pub], 73, /already belongs to user 'bob'/);
    await fails(['user', 'key', 'add', 'alice', '-'], 2, /tachyon: standard input: line 1: /, 'garbage\n');
    await fails(['user', 'key', 'add', 'alice', path.join(work, 'k1')], 2, /k1 holds a private key/);
    writeFileSync(path.join(work, 'comments.pub'), '# only a comment\n');
    await fails(['user', 'key', 'add', 'alice', 'comments.pub'], 2, /tachyon: comments\.pub: no public key found/);
    await fails(['user', 'key', 'add', 'ghost', k3.pub], 66, /no transfer user 'ghost'/);
    assert.equal((JSON.parse(await ok(['user', 'show', 'alice', '--json'])) as { keys: unknown[] }).keys.length, 2);

    assert.match(await ok(['user', 'key', 'remove', 'alice', k3.fingerprint]), /removed key SHA256:\S+ from alice/);
    await fails(['user', 'key', 'remove', 'alice', k3.fingerprint], 66, /user 'alice' has no key/);
    await fails(['user', 'key', 'remove', 'alice', 'SHA256:nope'], 2, /fingerprint: 'SHA256:nope' is not a SHA256 fingerprint/);
    const out = await ok(['user', 'key', 'remove', 'alice', k1.fingerprint]);
    assert.match(out, /note: alice has no key and cannot log in/);
  });

  it('remove: the user goes, its files stay', async () => {
    mkdirSync(path.join(data, 'files', 'alice'), { recursive: true });
    writeFileSync(path.join(data, 'files', 'alice', 'keep.txt'), 'x');
    assert.match(await ok(['user', 'remove', 'alice']), /removed user alice and 0 key\(s\); files under .* are untouched/);
    assert.ok(statSync(path.join(data, 'files', 'alice', 'keep.txt')).isFile());
    await fails(['user', 'remove', 'alice'], 66, /no transfer user 'alice'/);
    assert.deepEqual((JSON.parse(await ok(['user', 'list', '--json'])) as { name: string }[]).map((u) => u.name), ['bob']);
  });
});

describe('tachyon user with --config, --db and --allowed-root', () => {
  let dir: string;
  let k: ReturnType<typeof keyPair>;

  before(() => {
    work = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'tachyon-user-cli2-')));
    dir = work;
    mkdirSync(path.join(dir, 'srv', 'transfers'), { recursive: true });
    k = keyPair('k', 'carol@host');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('--config gives the database, the allowed roots and the cipher policy', async () => {
    const cfg = path.join(dir, 'server.json');
    writeFileSync(cfg, JSON.stringify({ database: 'state/t.db', allowedRoots: [`file://${dir}/srv/transfers/*`], ciphers: { allowed: ['aes-256-gcm', 'none'] } }));
    await ok(['user', 'add', 'carol', '--config', cfg, '--docroot', `${dir}/srv/transfers/carol`, '--key', k.pub, '--cipher', 'none,aes-256-gcm']);
    assert.ok(statSync(path.join(dir, 'state', 't.db')).isFile(), 'database path relative to the config file');
    const carol = JSON.parse(await ok(['user', 'show', 'carol', '--config', cfg, '--json'])) as Record<string, unknown>;
    assert.deepEqual(carol.ciphers, ['aes-256-gcm', 'none']);
    await fails(['user', 'add', 'dan', '--config', cfg, '--docroot', `${dir}/elsewhere`], 65, /outside the allowed storage roots \(file:\/\/.*\/srv\/transfers\/\*\)/);
    await fails(['user', 'add', 'dan', '--config', cfg, '--docroot', `${dir}/srv/transfers/dan`, '--cipher', 'aes-128-gcm'], 2, /--cipher: aes-128-gcm is not allowed by the server's cipher policy \(allowed: aes-256-gcm, none\)/);
    await fails(['user', 'list', '--config', cfg, '--db', 'x.db'], 2, /--config gives the database and the allowed roots: leave out --db/);

    const bad = path.join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ allowedRoots: [`file://${dir}/srv/*`], ssh: { maxAuthTries: 0 }, colour: 'blue' }));
    const r = await fails(['user', 'list', '--config', bad], 78, /bad\.json: ssh\.maxAuthTries: expected a positive integer/);
    assert.match(r.stderr, /bad\.json: colour: unknown field/);
    await fails(['user', 'list', '--config', path.join(dir, 'missing.json')], 78, /missing\.json: cannot read the configuration file: no such file/);
  });

  it('--db and --allowed-root (repeatable)', async () => {
    const db = `sqlite://${dir}/other.db`;
    const roots = ['--allowed-root', `file://${dir}/srv/transfers/*`, '--allowed-root', 's3://media/*'];
    await ok(['user', 'add', 'erin', '--db', db, ...roots, '--docroot', 's3://media/erin']);
    await ok(['user', 'add', 'fay', '--db', db, ...roots, '--docroot', `${dir}/srv/transfers/fay`]);
    const list = JSON.parse(await ok(['user', 'list', '--db', db, '--json'])) as { name: string; docroot: string }[];
    assert.deepEqual(list.map((u) => [u.name, u.docroot]), [['erin', 's3://media/erin'], ['fay', `file://${dir}/srv/transfers/fay`]]);
    await fails(['user', 'add', 'gil', '--db', db, '--allowed-root', 'file:///srv/user-*', '--docroot', '/srv/user-gil'], 2, /--allowed-root: invalid storage URL .* '\*' must be a whole path segment/);
    await fails(['user', 'list', '--db', 'mysql://x/y'], 2, /--db: unsupported scheme 'mysql'/);
  });

  it('a locked, a foreign and a newer database get clear refusals (exit 69, 69, 78)', async () => {
    const file = path.join(dir, 'locked.db');
    await ok(['user', 'add', 'hal', '--db', file, '--allowed-root', `${dir}/srv/transfers/*`, '--docroot', `${dir}/srv/transfers/hal`]);
    const other = new BetterSqlite3(file);
    other.exec('begin immediate');
    try {
      await fails(
        ['user', 'set', 'hal', '--disable', '--db', `sqlite://${file}?busy_timeout=200`],
        69,
        /tachyon: the database .*locked\.db is locked by another process \(waited 200 ms\); try again, or stop the process that holds it/,
      );
      // reading still works while another process writes (WAL)
      assert.match(await ok(['user', 'show', 'hal', '--db', file]), /^enabled:\s+yes$/m);
    } finally {
      other.exec('rollback');
      other.close();
    }
    const garbage = path.join(dir, 'garbage.db');
    writeFileSync(garbage, 'this is not a database'.repeat(200));
    await fails(['user', 'list', '--db', garbage], 69, /garbage\.db is not an SQLite database/);

    const raw = new BetterSqlite3(file);
    raw.prepare('insert into tachyon_migration (name, timestamp) values (?, ?)').run('0999_future', new Date().toISOString());
    raw.close();
    await fails(['user', 'list', '--db', file], 78, /has schema 0999_future, newer than this Tachyon knows .*: upgrade Tachyon/);
  });
});
