/**
 * The server configuration file: a full valid file, defaults, and every kind of wrong
 * file refused at start with the file, the field path and the reason — corrupt JSON,
 * wrong types, unknown fields, a docroot outside the allowed roots, bad keys — plus a
 * seeded fuzz that mutates a valid file.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TachyonError } from '../../src/core/errors.js';
import { DEFAULT_SSH_LIMITS, loadServerConfig, validateServerConfig } from '../../src/server/config.js';
import { rejectsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';
import { generateSshKeyPair } from '../helpers/keys.js';

let dir: string;
const key1 = generateSshKeyPair('ed25519', 'alice@laptop').public.trim();
const key2 = generateSshKeyPair('ed25519', 'bob@host').public.trim();

before(() => {
  dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'tachyon-config-')));
  mkdirSync(path.join(dir, 'transfers', 'alice'), { recursive: true });
});
after(() => rmSync(dir, { recursive: true, force: true }));

function valid(): Record<string, unknown> {
  return {
    listen: '0.0.0.0',
    port: 33001,
    hostKeyFile: 'keys/host_key',
    database: 'sqlite:///var/lib/tachyon/tachyon.db',
    allowedRoots: [`file://${dir}/transfers/*`, 's3://media/*'],
    ciphers: { allowed: ['aes-128-gcm', 'aes-256-gcm', 'none'], minimum: 'aes-128-gcm' },
    maxRate: '2g',
    ssh: { maxAuthTries: 3, loginGraceSeconds: 20, idleTimeoutSeconds: 600, banner: 'Authorized use only.' },
    auditLog: 'audit/audit.log',
    users: [
      { name: 'alice', docroot: `file://${dir}/transfers/alice`, keys: [key1], permissions: ['list', 'read'], ciphers: ['aes-256-gcm'], policies: ['fair'], maxRate: '100m', enabled: true },
      { name: 'bob', docroot: 's3://media/bob', keys: [key2], maxRate: 5e6 },
    ],
  };
}

function write(name: string, content: unknown): string {
  const file = path.join(dir, name);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return file;
}

async function problems(content: unknown, name = 'config.json'): Promise<string> {
  const file = write(name, content);
  const err = await rejectsCode(loadServerConfig(file), 'CONFIG', JSON.stringify(content).slice(0, 120));
  assert.equal(err.exitCode, 78);
  // messages name the file as it was given (here an absolute path); compare by its name
  return err.message.replaceAll(`${dir}/${name}: `, `${name}: `);
}

describe('loadServerConfig', () => {
  it('loads a full file: typed, frozen, relative paths next to the file', async () => {
    const file = write('full.json', valid());
    const c = await loadServerConfig(file);
    assert.equal(c.file, file);
    assert.equal(c.listen, '0.0.0.0');
    assert.equal(c.port, 33001);
    assert.equal(c.hostKeyFile, path.join(dir, 'keys/host_key'));
    assert.deepEqual(c.database, { kind: 'sqlite', file: '/var/lib/tachyon/tachyon.db' });
    assert.deepEqual(c.allowedRoots.map((r) => r.text), [`file://${dir}/transfers/*`, 's3://media/*']);
    assert.deepEqual(c.cipherPolicy, { allowed: ['aes-128-gcm', 'aes-256-gcm', 'none'], minimum: 'aes-128-gcm' });
    assert.equal(c.maxRateBps, 2e9);
    assert.deepEqual(c.ssh, { maxAuthTries: 3, loginGraceSeconds: 20, idleTimeoutSeconds: 600, banner: 'Authorized use only.' });
    assert.equal(c.auditLog, path.join(dir, 'audit/audit.log'));
    assert.equal(c.users.length, 2);
    assert.deepEqual(c.users[0], {
      name: 'alice',
      docroot: `file://${dir}/transfers/alice`,
      keys: [key1],
      permissions: ['list', 'read'],
      ciphers: ['aes-256-gcm'],
      policies: ['fair'],
      maxRateBps: 100e6,
      enabled: true,
    });
    assert.equal(c.users[1]?.maxRateBps, 5e6);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.users) && Object.isFrozen(c.ssh));
  });

  it('fills defaults for a minimal file', async () => {
    const c = await loadServerConfig(write('min.json', { allowedRoots: [`${dir}/transfers/*`] }));
    assert.equal(c.listen, '127.0.0.1');
    assert.equal(c.port, 33001);
    assert.deepEqual(c.database, { kind: 'sqlite', file: path.join(dir, 'tachyon.db') });
    assert.equal(c.hostKeyFile, path.join(dir, 'ssh_host_ed25519_key'));
    assert.deepEqual(c.cipherPolicy.allowed, ['aes-128-gcm', 'aes-192-gcm', 'aes-256-gcm'], 'none is forbidden by default');
    assert.deepEqual(c.ssh, DEFAULT_SSH_LIMITS);
    assert.equal(c.maxRateBps, 10e9);
    assert.equal(c.auditLog, undefined);
    assert.deepEqual(c.users, []);
  });

  it('a missing file, a directory, and corrupt JSON (with line and column)', async () => {
    const missing = path.join(dir, 'nope.json');
    assert.match((await rejectsCode(loadServerConfig(missing), 'CONFIG')).message, /nope\.json: cannot read the configuration file: no such file/);
    assert.match((await rejectsCode(loadServerConfig(dir), 'CONFIG')).message, /cannot read the configuration file: it is a directory/);
    const msg = await problems('{\n  "port": 33001,\n  "listen": "0.0.0.0",,\n}', 'corrupt.json');
    assert.match(msg, /corrupt\.json: not valid JSON \(line 3, column 23\)/);
    assert.match(await problems('', 'empty.json'), /empty\.json: not valid JSON/);
    assert.match(await problems('[1, 2]', 'list.json'), /list\.json: \(top level\): expected object, got a list/);
  });

  it('wrong types: the file, the field path and the reason', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ ssh: { maxAuthTries: 0 } }, 'config.json: ssh.maxAuthTries: expected a positive integer'],
      [{ ssh: { maxAuthTries: '3' } }, 'config.json: ssh.maxAuthTries: expected a positive integer'],
      [{ ssh: { maxAuthTries: 2.5 } }, 'config.json: ssh.maxAuthTries: expected a positive integer'],
      [{ ssh: { loginGraceSeconds: 99999 } }, 'config.json: ssh.loginGraceSeconds: expected a positive integer of at most 3600'],
      [{ port: '33001' }, 'config.json: port: expected a port number (0-65535)'],
      [{ port: 70000 }, 'config.json: port: expected a port number (0-65535)'],
      [{ listen: 'not an address!' }, 'config.json: listen: expected an IP address or host name'],
      [{ allowedRoots: 'file:///srv/*' }, 'config.json: allowedRoots: expected a list of root patterns'],
      [{ allowedRoots: [] }, 'config.json: allowedRoots: list at least one root pattern'],
      [{ allowedRoots: ['file:///srv/user-*'] }, "config.json: allowedRoots[0]: invalid storage URL 'file:///srv/user-*': '*' must be a whole path segment"],
      [{ ciphers: { allowed: ['rot13'] } }, 'config.json: ciphers.allowed[0]: expected one of aes-128-gcm, aes-192-gcm, aes-256-gcm, none'],
      [{ ciphers: { allowed: ['aes-128-gcm'], minimum: 'aes-256-gcm' } }, 'config.json: ciphers: no allowed cipher (aes-128-gcm) is as strong as the minimum aes-256-gcm'],
      [{ maxRate: 'fast' }, 'config.json: maxRate: expected a rate such as "200m"'],
      [{ database: 'mysql://db/x' }, "config.json: database: unsupported scheme 'mysql'"],
      [{ database: 42 }, 'config.json: database: expected a string'],
      [{ ssh: { banner: 'x'.repeat(5000) } }, 'config.json: ssh.banner: at most 4096 characters'],
      [{ users: [{ name: 'alice' }] }, 'config.json: users[0].docroot: is required'],
      [{ users: [{ name: 'alice', docroot: `${dir}/transfers/alice`, enabled: 'yes' }] }, 'config.json: users[0].enabled: expected true or false'],
    ];
    for (const [patch, expected] of cases) {
      const content = { ...valid(), ...patch };
      const msg = await problems(content);
      assert.ok(msg.includes(expected), `expected ${JSON.stringify(expected)} in:\n${msg}`);
    }
    // a required field missing
    const { allowedRoots: _a, ...noRoots } = valid();
    assert.match(await problems({ ...noRoots, users: [] }), /config\.json: allowedRoots: is required/);
  });

  it('unknown fields are refused, at the top and nested', async () => {
    assert.match(await problems({ ...valid(), lsiten: '0.0.0.0' }), /config\.json: lsiten: unknown field/);
    assert.match(await problems({ ...valid(), ssh: { maxAuthTries: 3, PasswordAuthentication: true } }), /config\.json: ssh\.PasswordAuthentication: unknown field/);
    const users = [{ name: 'alice', docroot: `${dir}/transfers/alice`, password: 'hunter2' }];
    const msg = await problems({ ...valid(), users });
    assert.match(msg, /config\.json: users\[0\]\.password: unknown field/);
    assert.doesNotMatch(msg, /hunter2/, 'values of unknown fields are not repeated');
  });

  it('s3: endpoint, region and path style with defaults; credentials and bad values refused', async () => {
    const c = await validateServerConfig({ ...valid(), s3: { endpoint: 'http://127.0.0.1:4568', region: 'eu-west-1', forcePathStyle: true, partSizeMiB: 16 } }, 'config.json', dir);
    assert.deepEqual(c.s3, { endpoint: 'http://127.0.0.1:4568', region: 'eu-west-1', forcePathStyle: true, connectTimeoutMs: 5000, requestTimeoutMs: 30000, maxAttempts: 3, partBytes: 16 * 1024 * 1024, conditionalWrites: true });
    assert.equal((await validateServerConfig(valid(), 'config.json', dir)).s3, undefined);
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
    const msg = await problems({ ...valid(), s3: { endpoint: 'https://s3.amazonaws.com', secretAccessKey: secret, accessKeyId: 'AKIA' } });
    assert.match(msg, /config\.json: s3\.secretAccessKey: unknown field/);
    assert.doesNotMatch(msg, /wJalrXUtnFEMI/, 'a credential put in the file is not repeated');
    assert.match(await problems({ ...valid(), s3: { endpoint: 'https://user:pw@s3.example.com' } }), /s3\.endpoint: expected an http\(s\) URL/);
    assert.match(await problems({ ...valid(), s3: { endpoint: 'ftp://s3.example.com' } }), /s3\.endpoint/);
    assert.match(await problems({ ...valid(), s3: { partSizeMiB: 4 } }), /s3\.partSizeMiB: at least 5/);
    assert.match(await problems({ ...valid(), s3: { region: 'EU WEST' } }), /s3\.region/);
  });

  it('nodeApi: paths next to the file, defaults 127.0.0.1:9092; needs auditLog; unknown fields and bad ports refused', async () => {
    const cfg = await loadServerConfig(write('api.json', { ...valid(), nodeApi: { certFile: 'tls/node.crt', keyFile: 'tls/node.key', tokenTtlSeconds: 600 } }));
    assert.deepEqual(cfg.nodeApi, { listen: '127.0.0.1', port: 9092, certFile: path.join(dir, 'tls/node.crt'), keyFile: path.join(dir, 'tls/node.key'), tokenTtlSeconds: 600 });
    assert.equal((await loadServerConfig(write('noapi.json', valid()))).nodeApi, undefined);
    const { auditLog: _omit, ...noAudit } = valid();
    assert.match(await problems({ ...noAudit, nodeApi: { certFile: 'a', keyFile: 'b' } }), /nodeApi: needs auditLog/);
    assert.match(await problems({ ...valid(), nodeApi: { certFile: 'a', keyFile: 'b', insecure: true } }), /nodeApi\.insecure: unknown field/);
    assert.match(await problems({ ...valid(), nodeApi: { certFile: 'a', keyFile: 'b', port: 70000 } }), /nodeApi\.port: expected a port number/);
    assert.match(await problems({ ...valid(), nodeApi: { keyFile: 'b' } }), /nodeApi\.certFile: is required/);
  });

  it('inline users: docroot outside the allowed roots, bad names, duplicate names and keys, bad keys, forbidden ciphers', async () => {
    const user = (u: Record<string, unknown>): Record<string, unknown> => ({ ...valid(), users: [u] });
    const cases: [Record<string, unknown>, RegExp][] = [
      [user({ name: 'alice', docroot: '/etc' }), /config\.json: users\[0\]\.docroot: file:\/\/\/etc is outside the allowed storage roots \(file:\/\/.*\/transfers\/\*, s3:\/\/media\/\*\)/],
      [user({ name: 'alice', docroot: `${dir}/transfers` }), /users\[0\]\.docroot: .* is outside the allowed storage roots/],
      [user({ name: 'alice', docroot: `file://${dir}/transfers/%2e%2e/x` }), /users\[0\]\.docroot: invalid storage URL .*'\.\.' is not allowed/],
      [user({ name: 'root', docroot: `${dir}/transfers/r` }), /users\[0\]\.name: 'root' is reserved/],
      [user({ name: 'Bad Name', docroot: `${dir}/transfers/r` }), /users\[0\]\.name: "Bad Name" is not a valid user name/],
      [user({ name: 'alice', docroot: `${dir}/transfers/alice`, keys: ['ssh-ed25519 AAAAnope'] }), /users\[0\]\.keys\[0\]: line 1: key data/],
      [user({ name: 'alice', docroot: `${dir}/transfers/alice`, permissions: ['sudo'] }), /users\[0\]\.permissions: unknown permission 'sudo'/],
      [user({ name: 'alice', docroot: `${dir}/transfers/alice`, ciphers: ['aes-192-gcm'] }), /users\[0\]\.ciphers: aes-192-gcm is not allowed by the server's cipher policy/],
      [user({ name: 'alice', docroot: `${dir}/transfers/alice`, maxRate: 0 }), /users\[0\]\.maxRate: expected a rate/],
      [
        { ...valid(), users: [{ name: 'alice', docroot: `${dir}/transfers/a` }, { name: 'alice', docroot: `${dir}/transfers/b` }] },
        /users\[1\]\.name: 'alice' is declared twice \(also users\[0\]\)/,
      ],
      [
        { ...valid(), users: [{ name: 'alice', docroot: `${dir}/transfers/a`, keys: [key1] }, { name: 'bob', docroot: `${dir}/transfers/b`, keys: [key1] }] },
        /users\[1\]\.keys\[0\]: the key SHA256:\S+ is also given to users\[0\] \(alice\); a key may belong to one user only/,
      ],
    ];
    for (const [content, re] of cases) assert.match(await problems(content), re);
  });

  it('reports every problem, one line each', async () => {
    const msg = await problems({ ...valid(), port: -1, ssh: { maxAuthTries: 0, idleTimeoutSeconds: 'x' } });
    const lines = msg.split('\n');
    assert.equal(lines.length, 3, msg);
    assert.ok(lines.every((l) => l.startsWith('config.json: ')));
  });

  it('fuzz: a valid file with random mutations loads or is refused with CONFIG, never anything else', async () => {
    const rng = new Rng(0xc0ff1);
    const values: unknown[] = [null, true, 0, -1, 1.5, Number.MAX_VALUE, '', 'x', '/etc', '*', [], {}, ['x'], { a: 1 }, 'aes-128-gcm', 'file:///srv/*', 33001, '10g'];
    const keys = ['listen', 'port', 'hostKeyFile', 'database', 'allowedRoots', 'ciphers', 'maxRate', 'ssh', 'auditLog', 'users', 'extra'];
    let loaded = 0;
    for (let i = 0; i < 300; i++) {
      const c = valid() as Record<string, unknown>;
      for (let m = rng.range(0, 3); m > 0; m--) {
        const k = rng.pick(keys);
        if (rng.chance(0.2)) delete c[k];
        else c[k] = rng.pick(values);
      }
      if (rng.chance(0.3)) {
        const users = c.users;
        if (Array.isArray(users) && users.length > 0) (users[0] as Record<string, unknown>)[rng.pick(['name', 'docroot', 'keys', 'ciphers', 'maxRate', 'other'])] = rng.pick(values);
      }
      try {
        await validateServerConfig(c, 'fuzz.json', dir);
        loaded++;
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'CONFIG', `${JSON.stringify(c).slice(0, 300)}: ${String(err)}`);
        assert.ok(err.message.split('\n').every((l) => l.startsWith('fuzz.json: ')), err.message);
      }
    }
    assert.ok(loaded > 10, `${loaded} loaded`);
  });
});
