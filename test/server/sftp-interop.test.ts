/**
 * The SFTP server with the clients people have: OpenSSH's `sftp` in batch mode and
 * rclone's sftp backend (host keys checked by both), against the minimal ssh2 test server
 * and against the control server's `extraSubsystems` hook.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MemoryAuditSink } from '../../src/audit/index.js';
import { fingerprintOf, parseAuthorizedKeys } from '../../src/control/hostkeys.js';
import type { Account, AccountSource } from '../../src/server/accounts.js';
import { sftpForAccounts } from '../../src/server/sftp.js';
import { startTransferServer } from '../../src/server/transfer-server.js';
import { Jail } from '../../src/transfer/jail.js';
import { ALL_PERMISSIONS, permissionSet } from '../../src/transfer/permissions.js';
import { sshKeygen, tempDir } from '../control/helpers.js';
import { Rng } from '../helpers/rng.js';
import { hasProgram, runProgram, sha256File, startSftpTestServer, writeKnownHosts, type RunResult, type SftpTestServer } from './sftp-harness.js';

const BIG = 2 * 1024 * 1024 + 512 * 1024 + 17; // 2.5 MiB and a bit, not a multiple of any block size

interface Fixture {
  dir: string;
  root: string;
  outside: string;
  local: string;
  big: string;
  knownHosts: string;
  server: SftpTestServer;
  cleanup(): Promise<void>;
}

async function fixture(via: 'ssh2' | 'control-server'): Promise<Fixture> {
  const t = await tempDir(`sftp-${via}`);
  const dir = realpathSync(t.dir);
  const root = path.join(dir, 'root');
  const outside = path.join(dir, 'outside');
  const local = path.join(dir, 'local');
  for (const d of [root, outside, local]) mkdirSync(d);
  writeFileSync(path.join(outside, 'secret.txt'), 'secret');
  writeFileSync(path.join(root, 'hello.txt'), 'hello');
  mkdirSync(path.join(root, 'pub'));
  writeFileSync(path.join(root, 'pub', 'readme.txt'), 'readme');
  symlinkSync(outside, path.join(root, 'link-out'));
  symlinkSync(path.join(outside, 'secret.txt'), path.join(root, 'link-out-file'));
  symlinkSync('pub', path.join(root, 'link-in'));
  const big = path.join(local, 'big.bin');
  writeFileSync(big, new Rng(0x5f7b + BIG).bytes(BIG));
  utimesSync(big, new Date(1_600_000_000_000), new Date(1_600_000_000_000));
  const server = await startSftpTestServer({
    dir,
    jail: new Jail(root),
    via,
    users: {
      full: ALL_PERMISSIONS,
      reader: permissionSet(['list', 'read']),
      writer: permissionSet(['list', 'read', 'write', 'mkdir']),
      blind: permissionSet(['read', 'write']),
    },
  });
  const knownHosts = writeKnownHosts(path.join(dir, 'known_hosts'), server.knownHostsLine);
  return {
    dir,
    root,
    outside,
    local,
    big,
    knownHosts,
    server,
    cleanup: async () => {
      await server.close();
      await t.cleanup();
    },
  };
}

function assertOutsideUntouched(f: Fixture): void {
  assert.deepEqual(readdirSync(f.outside), ['secret.txt']);
  assert.equal(readFileSync(path.join(f.outside, 'secret.txt'), 'utf8'), 'secret');
}

// ---- OpenSSH sftp ----------------------------------------------------------------------------

function sftpBatch(f: Fixture, user: string, lines: string[]): Promise<RunResult> {
  const batch = path.join(f.dir, `batch-${user}-${Date.now()}`);
  writeFileSync(batch, lines.join('\n') + '\n');
  return runProgram('sftp', [
    '-b', batch,
    '-F', '/dev/null',
    '-i', f.server.keyFile,
    '-o', 'IdentitiesOnly=yes',
    '-o', 'IdentityAgent=none',
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', `UserKnownHostsFile=${f.knownHosts}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'ConnectTimeout=5',
    '-P', String(f.server.port),
    `${user}@127.0.0.1`,
  ]);
}

for (const via of ['ssh2', 'control-server'] as const) {
  describe(`SFTP vs OpenSSH sftp (${via} server)`, { skip: hasProgram('sftp') ? false : 'OpenSSH sftp is not installed' }, () => {
    let f: Fixture;
    before(async () => {
      f = await fixture(via);
    });
    after(async () => {
      await f.cleanup();
    });

    it('ls, put, mkdir, rename, get, rm within the root; a 2.5 MiB file comes back with the same SHA-256', async () => {
      const back = path.join(f.local, 'back.bin');
      const r = await sftpBatch(f, 'full', [
        'pwd',
        'ls -1',
        `put ${f.big} big.bin`,
        'mkdir d',
        'rename big.bin d/moved.bin',
        'ls -l d',
        `get d/moved.bin ${back}`,
        'put -p ' + f.big + ' d/kept-times.bin',
        'rm d/moved.bin',
        'ls -1 d',
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Remote working directory: \/\n/);
      // the listing shows links inside the root, not those that lead out
      const firstLs = r.stdout.split('sftp> ls -1\n')[1]?.split('sftp>')[0] ?? '';
      assert.deepEqual(firstLs.trim().split(/\s+/).sort(), ['hello.txt', 'link-in', 'pub']);
      assert.match(r.stdout, /moved\.bin/);
      assert.equal(sha256File(back), sha256File(f.big));
      assert.ok(!existsSync(path.join(f.root, 'd', 'moved.bin')));
      assert.equal(statSync(path.join(f.root, 'd', 'kept-times.bin')).mtimeMs, 1_600_000_000_000);
      assert.equal(sha256File(path.join(f.root, 'd', 'kept-times.bin')), sha256File(f.big));
      const writes = f.server.events.filter((e) => e.op === 'write' && e.user === 'full');
      assert.ok(writes.some((e) => e.path === '/big.bin' && e.bytes === BIG && e.outcome === 'ok'), JSON.stringify(writes));
      assert.ok(f.server.events.some((e) => e.op === 'read' && e.bytes === BIG && e.outcome === 'ok'));
    });

    it('refuses every escape: cd .., get ../../etc/passwd, links that lead out, ln -s', async () => {
      const stolen = ['pw', 's1', 's2', 's3'].map((n) => path.join(f.local, n));
      const r = await sftpBatch(f, 'full', [
        '-cd ..',
        'pwd',
        '-cd /../..',
        `-get ../../etc/passwd ${stolen[0]}`,
        `-get /../../../etc/passwd ${stolen[0]}`,
        `-get link-out/secret.txt ${stolen[1]}`,
        `-get link-out-file ${stolen[2]}`,
        `-get link-in/../../outside/secret.txt ${stolen[3]}`,
        `-put ${f.big} link-out/planted.bin`,
        `-put ${f.big} link-out-file`,
        '-mkdir link-out/newdir',
        '-rename hello.txt link-out/hello.txt',
        '-ln -s /etc/passwd pw-link',
        '-symlink /etc/passwd pw-link2',
        '-cd link-out',
        'pwd',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const pwds = r.stdout.match(/Remote working directory: (.*)/g) ?? [];
      assert.deepEqual(pwds, ['Remote working directory: /', 'Remote working directory: /']);
      assert.match(r.stderr, /leaves the root/);
      assert.match(r.stderr, /symbolic link that leads outside the root/);
      assert.match(r.stderr, /Permission denied/);
      assert.match(r.stderr, /Operation unsupported/);
      for (const s of stolen) assert.ok(!existsSync(s), `${s} was not downloaded`);
      assertOutsideUntouched(f);
      assert.ok(existsSync(path.join(f.root, 'hello.txt')));
      assert.ok(!existsSync(path.join(f.root, 'pw-link')) && !existsSync(path.join(f.root, 'pw-link2')));
      const reasons = new Set(f.server.events.filter((e) => e.outcome === 'refused').map((e) => e.reason));
      for (const reason of ['above-root', 'symlink-escape', 'final-symlink', 'unsupported']) assert.ok(reasons.has(reason), `audit reason ${reason} in ${[...reasons].join(',')}`);
      assert.ok(!f.server.events.some((e) => e.op === 'symlink' && e.outcome === 'ok'));
    });

    it('applies the permissions: a reader cannot put or rm, a writer cannot rm, a user without list cannot ls', { skip: via === 'control-server' ? 'covered on the ssh2 server' : false }, async () => {
      const reader = await sftpBatch(f, 'reader', [`-put ${f.big} r.bin`, '-rm hello.txt', '-mkdir rd', 'get hello.txt ' + path.join(f.local, 'r-hello.txt')]);
      assert.equal(reader.code, 0, reader.stderr);
      assert.match(reader.stderr, /Permission denied/);
      assert.ok(!existsSync(path.join(f.root, 'r.bin')) && !existsSync(path.join(f.root, 'rd')));
      assert.equal(readFileSync(path.join(f.local, 'r-hello.txt'), 'utf8'), 'hello');

      const writer = await sftpBatch(f, 'writer', [`put ${f.big} w.bin`, '-rm w.bin', '-rename w.bin w2.bin']);
      assert.equal(writer.code, 0, writer.stderr);
      assert.match(writer.stderr, /remote delete \/w\.bin: Permission denied/);
      assert.match(writer.stderr, /remote rename .*: Permission denied/);
      assert.ok(existsSync(path.join(f.root, 'w.bin')));

      const blind = await sftpBatch(f, 'blind', ['ls']);
      assert.match(blind.stderr, /Permission denied/);
      assert.doesNotMatch(blind.stdout, /hello\.txt/);
      const blindGet = await sftpBatch(f, 'blind', ['get pub/readme.txt ' + path.join(f.local, 'b-readme.txt')]);
      assert.equal(blindGet.code, 0, blindGet.stderr);
      assert.equal(readFileSync(path.join(f.local, 'b-readme.txt'), 'utf8'), 'readme');

      const denied = f.server.events.filter((e) => e.outcome === 'denied');
      assert.deepEqual([...new Set(denied.map((e) => `${e.user}:${e.permission}`))].sort(), [
        'blind:list',
        'reader:delete',
        'reader:mkdir',
        'reader:write',
        'writer:delete',
        'writer:rename',
      ]);
    });

    it('refuses a client whose known_hosts pins another key (the host key is checked)', async () => {
      const other = await sshKeygen(f.dir, `other-${via}`);
      const line = `[127.0.0.1]:${f.server.port} ${readFileSync(`${other}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}`;
      const wrong = writeKnownHosts(path.join(f.dir, 'wrong_known_hosts'), line);
      const r = await sftpBatch({ ...f, knownHosts: wrong }, 'full', ['ls']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
    });
  });
}

// ---- rclone ---------------------------------------------------------------------------------

function rclone(f: Fixture, user: string, args: string[], knownHosts = f.knownHosts): Promise<RunResult> {
  const config = path.join(f.dir, 'rclone.conf');
  if (!existsSync(config)) writeFileSync(config, '');
  return runProgram('rclone', [...args, '--retries', '1', '--low-level-retries', '1', '--contimeout', '5s'], {
    env: {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      HOME: f.dir,
      RCLONE_CONFIG: config,
      RCLONE_CONFIG_T_TYPE: 'sftp',
      RCLONE_CONFIG_T_HOST: '127.0.0.1',
      RCLONE_CONFIG_T_PORT: String(f.server.port),
      RCLONE_CONFIG_T_USER: user,
      RCLONE_CONFIG_T_KEY_FILE: f.server.keyFile,
      // host keys are checked against this file (rclone skips the check without it)
      RCLONE_CONFIG_T_KNOWN_HOSTS_FILE: knownHosts,
      // no shell: rclone would try `exec` for hashes and shell detection, which the server refuses
      RCLONE_CONFIG_T_SHELL_TYPE: 'none',
      RCLONE_CONFIG_T_DISABLE_HASHCHECK: 'true',
    },
    timeoutMs: 30_000,
  });
}

for (const via of ['ssh2', 'control-server'] as const) {
  describe(`SFTP vs rclone (${via} server)`, { skip: hasProgram('rclone') ? false : 'rclone is not installed (apt-get install rclone)' }, () => {
    let f: Fixture;
    before(async () => {
      f = await fixture(via);
    });
    after(async () => {
      await f.cleanup();
    });

    it('lists, puts and gets within the root; a 2.5 MiB file keeps its SHA-256 and time', async () => {
      const ls = await rclone(f, 'full', ['lsjson', 'T:']);
      assert.equal(ls.code, 0, ls.stderr);
      const names = (JSON.parse(ls.stdout) as { Name: string; IsDir: boolean }[]).map((e) => e.Name).sort();
      assert.deepEqual(names, ['hello.txt', 'link-in', 'pub']);
      const put = await rclone(f, 'full', ['copyto', f.big, 'T:up/big.bin']);
      assert.equal(put.code, 0, put.stderr);
      assert.equal(sha256File(path.join(f.root, 'up', 'big.bin')), sha256File(f.big));
      assert.equal(statSync(path.join(f.root, 'up', 'big.bin')).mtimeMs, 1_600_000_000_000);
      const back = path.join(f.local, 'rclone-back.bin');
      const get = await rclone(f, 'full', ['copyto', 'T:up/big.bin', back]);
      assert.equal(get.code, 0, get.stderr);
      assert.equal(sha256File(back), sha256File(f.big));
      const sub = await rclone(f, 'full', ['lsjson', 'T:up']);
      assert.equal(sub.code, 0, sub.stderr);
      assert.deepEqual(JSON.parse(sub.stdout).map((e: { Name: string; Size: number }) => [e.Name, e.Size]), [['big.bin', BIG]]);
      const del = await rclone(f, 'full', ['deletefile', 'T:up/big.bin']);
      assert.equal(del.code, 0, del.stderr);
      assert.ok(!existsSync(path.join(f.root, 'up', 'big.bin')));
      assert.ok(f.server.events.some((e) => e.op === 'write' && e.bytes === BIG && e.outcome === 'ok'));
    });

    it('applies the permissions: no put without write, no delete without delete, no listing without list', { skip: via === 'control-server' ? 'covered on the ssh2 server' : false }, async () => {
      const put = await rclone(f, 'reader', ['copyto', f.big, 'T:reader.bin']);
      assert.notEqual(put.code, 0);
      assert.match(put.stderr, /permission denied/i);
      assert.ok(!existsSync(path.join(f.root, 'reader.bin')));

      const wput = await rclone(f, 'writer', ['copyto', f.big, 'T:w/writer.bin']);
      assert.equal(wput.code, 0, wput.stderr);
      const wdel = await rclone(f, 'writer', ['deletefile', 'T:w/writer.bin']);
      assert.notEqual(wdel.code, 0);
      assert.match(wdel.stderr, /permission denied/i);
      assert.ok(existsSync(path.join(f.root, 'w', 'writer.bin')));

      const bls = await rclone(f, 'blind', ['lsjson', 'T:']);
      assert.notEqual(bls.code, 0);
      assert.match(bls.stderr, /permission denied/i);
      const bget = await rclone(f, 'blind', ['copyto', 'T:pub/readme.txt', path.join(f.local, 'rb.txt')]);
      assert.equal(bget.code, 0, bget.stderr);
      assert.equal(readFileSync(path.join(f.local, 'rb.txt'), 'utf8'), 'readme');
    });

    it('cannot reach outside the root', async () => {
      const ls = await rclone(f, 'full', ['lsjson', 'T:link-out']);
      assert.notEqual(ls.code, 0);
      const get = await rclone(f, 'full', ['copyto', 'T:link-out-file', path.join(f.local, 'stolen.txt')]);
      assert.notEqual(get.code, 0);
      assert.ok(!existsSync(path.join(f.local, 'stolen.txt')));
      const put = await rclone(f, 'full', ['copyto', f.big, 'T:link-out/planted.bin']);
      assert.notEqual(put.code, 0);
      assertOutsideUntouched(f);
      assert.ok(f.server.events.some((e) => e.outcome === 'refused' && e.reason === 'symlink-escape'));
    });

    it('checks the host key: a known_hosts with another key is refused before any SFTP', async () => {
      const other = await sshKeygen(f.dir, `rclone-other-${via}`);
      const line = `[127.0.0.1]:${f.server.port} ${readFileSync(`${other}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}`;
      const wrong = writeKnownHosts(path.join(f.dir, 'rclone_wrong_known_hosts'), line);
      const before = f.server.events.filter((e) => e.op === 'session-start').length;
      const r = await rclone(f, 'full', ['lsjson', 'T:'], wrong);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /knownhosts: key mismatch/);
      assert.equal(f.server.events.filter((e) => e.op === 'session-start').length, before);
    });
  });
}

// ---- the transfer server's `subsystems` option, with the audit log --------------------------

describe('SFTP in the transfer server (accounts, audit log) vs OpenSSH sftp', { skip: hasProgram('sftp') ? false : 'OpenSSH sftp is not installed' }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => {};
  const audit = new MemoryAuditSink();
  let close: () => Promise<void> = async () => {};
  let f: Fixture;

  before(async () => {
    const t = await tempDir('sftp-accounts');
    dir = realpathSync(t.dir);
    cleanup = t.cleanup;
    const root = path.join(dir, 'root');
    const outside = path.join(dir, 'outside');
    const local = path.join(dir, 'local');
    for (const d of [root, outside, local]) mkdirSync(d);
    writeFileSync(path.join(outside, 'secret.txt'), 'secret');
    writeFileSync(path.join(root, 'hello.txt'), 'hello');
    symlinkSync(outside, path.join(root, 'link-out'));
    const big = path.join(local, 'big.bin');
    writeFileSync(big, new Rng(0xacc).bytes(BIG));
    const keyFile = await sshKeygen(dir, 'acct');
    const keys = parseAuthorizedKeys(readFileSync(`${keyFile}.pub`, 'utf8')).keys;
    const fingerprint = fingerprintOf(keys[0]!.blob);
    const accounts: Record<string, Account> = {
      alice: { name: 'alice', root, permissions: ['list', 'read', 'write', 'mkdir', 'rename', 'delete'], ciphers: ['aes-128-gcm'], policies: ['fair'], maxRateBps: null },
      bob: { name: 'bob', root, permissions: ['list', 'read'], ciphers: ['aes-128-gcm'], policies: ['fair'], maxRateBps: null },
    };
    const source: AccountSource = {
      check: async (user, blob) => (Object.hasOwn(accounts, user) && fingerprintOf(blob) === fingerprint ? { ok: true } : { ok: false, reason: 'not-authorized' }),
      account: async (user, fp) => (fp === fingerprint ? accounts[user] : undefined),
    };
    const server = await startTransferServer({
      accounts: source,
      hostKeyFile: path.join(dir, 'host_key'),
      listen: '127.0.0.1',
      port: 0,
      allowedCiphers: ['aes-128-gcm'],
      maxRateBps: 1e9,
      audit,
      subsystems: { sftp: sftpForAccounts({ audit }) },
    });
    close = () => server.close();
    const hostPub = readFileSync(path.join(dir, 'host_key.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
    const knownHosts = writeKnownHosts(path.join(dir, 'known_hosts'), `[127.0.0.1]:${server.port} ${hostPub}`);
    f = {
      dir,
      root,
      outside,
      local,
      big,
      knownHosts,
      server: { port: server.port, knownHostsLine: '', keyFile, events: [], sessions: [], close: async () => {} },
      cleanup: async () => {},
    };
  });

  after(async () => {
    await close();
    await cleanup();
  });

  it('serves each account its root and permissions, and records transfers and refusals in the audit log', async () => {
    const back = path.join(f.local, 'back.bin');
    const a = await sftpBatch(f, 'alice', [`put ${f.big} up.bin`, `get up.bin ${back}`, '-get link-out/secret.txt ' + path.join(f.local, 'stolen'), '-cd ..']);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(sha256File(back), sha256File(f.big));
    const b = await sftpBatch(f, 'bob', [`-put ${f.big} bob.bin`, '-rm up.bin', 'ls']);
    assert.equal(b.code, 0, b.stderr);
    assert.match(b.stderr, /Permission denied/);
    assert.ok(existsSync(path.join(f.root, 'up.bin')) && !existsSync(path.join(f.root, 'bob.bin')));
    assertOutsideUntouched(f);

    const transfers = audit.ofType('file.transfer').filter((r) => r.component === 'sftp');
    assert.deepEqual(
      transfers.map((r) => [r.fields['user'], r.fields['direction'], r.fields['bytes'], r.fields['status']]),
      [
        ['alice', 'upload', BIG, 'ok'],
        ['alice', 'download', BIG, 'ok'],
      ],
    );
    const jail = audit.ofType('refusal.jail');
    assert.ok(jail.some((r) => r.fields['user'] === 'alice' && r.fields['reason'] === 'symlink-escape'), JSON.stringify(jail));
    assert.ok(jail.some((r) => r.fields['user'] === 'alice' && r.fields['reason'] === 'above-root'));
    const perm = audit.ofType('refusal.permission');
    assert.deepEqual([...new Set(perm.map((r) => `${String(r.fields['user'])}:${String(r.fields['permission'])}`))].sort(), ['bob:delete', 'bob:write']);
    // every SFTP record carries its connection's id, as the SSH session records do
    const starts = audit.ofType('session.start').filter((r) => r.fields['subsystem'] === 'sftp');
    assert.equal(starts.length, 2);
    const ids = new Set(starts.map((r) => r.correlationId));
    for (const r of audit.records.filter((x) => x.component === 'sftp')) assert.ok(ids.has(r.correlationId), `${r.type} correlation id`);
  });
});
