/**
 * Interop and hardening checks of the control server against OpenSSH's own client (and
 * ssh-audit when installed).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FrameDecoder, encodeFrame } from '../../src/control/framing.js';
import { findAuthorizedKey, loadOrCreateHostKey, parseAuthorizedKeys } from '../../src/control/hostkeys.js';
import type { AuthorizedKey } from '../../src/control/hostkeys.js';
import { startControlServer } from '../../src/control/ssh-server.js';
import type { ControlServer, ControlServerEvent } from '../../src/control/ssh-server.js';
import { echoSession, sleep, sshKeygen, tempDir } from './helpers.js';

interface Result {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program with binary stdin; kills it (by its own pid) after timeoutMs. */
function spawnRun(file: string, args: string[], input: Buffer = Buffer.alloc(0), timeoutMs = 8000): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
    child.stdin.on('error', () => {});
    child.stdin.end(input);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
  });
}

function hasProgram(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('control server vs OpenSSH ssh', { skip: hasProgram('ssh') ? false : 'OpenSSH ssh is not installed' }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => {};
  let server: ControlServer;
  let keyFile = '';
  let knownHosts = '';
  let authorized: AuthorizedKey[] = [];
  const events: ControlServerEvent[] = [];

  const sshArgs = (...rest: string[]): string[] => [
    '-F', '/dev/null',
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', `UserKnownHostsFile=${knownHosts}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'IdentitiesOnly=yes',
    '-o', 'IdentityAgent=none',
    '-o', 'ConnectTimeout=5',
    '-i', keyFile,
    '-p', String(server.port),
    ...rest,
  ];

  before(async () => {
    ({ dir, cleanup } = await tempDir('openssh'));
    const hostKey = await loadOrCreateHostKey(join(dir, 'host_key'));
    keyFile = await sshKeygen(dir, 'client');
    authorized = parseAuthorizedKeys(await readFile(`${keyFile}.pub`, 'utf8')).keys;
    server = await startControlServer({
      listen: '127.0.0.1',
      port: 0,
      hostKey: hostKey.privateKey,
      authorize: (user, _algo, blob) => user === 'alice' && findAuthorizedKey(authorized, blob) !== undefined,
      onSession: (link) => echoSession(link),
      onEvent: (e) => events.push(e),
    });
    knownHosts = join(dir, 'known_hosts');
    await writeFile(knownHosts, `[127.0.0.1]:${server.port} ${hostKey.publicKeyLine}\n`);
  });

  after(async () => {
    await server.close();
    await cleanup();
  });

  it('speaks the tachyon-v1 subsystem with OpenSSH (ssh -s)', async () => {
    const input = Buffer.concat([encodeFrame({ t: 'digests', files: [{ id: 3, sha256: 'c'.repeat(64) }] }), encodeFrame({ t: 'bye' })]);
    const r = await spawnRun('ssh', sshArgs('-s', 'alice@127.0.0.1', 'tachyon-v1'), input);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(new FrameDecoder().push(r.stdout), [{ t: 'results', files: [{ id: 3, ok: true }] }, { t: 'bye' }]);
  });

  it('ends a session that sends a malformed frame with a PROTOCOL error and exit status 76', async () => {
    const junk = Buffer.from('{"t":"nope"}');
    const header = Buffer.alloc(4);
    header.writeUInt32BE(junk.length, 0);
    const r = await spawnRun('ssh', sshArgs('-s', 'alice@127.0.0.1', 'tachyon-v1'), Buffer.concat([header, junk]));
    assert.equal(r.code, 76, r.stderr);
    const reply = new FrameDecoder().push(r.stdout);
    assert.equal(reply.length, 1);
    assert.equal(reply[0]?.t, 'error');
    assert.match(reply[0]?.t === 'error' ? reply[0].message : '', /t="nope"/);
    await sleep(20);
    assert.ok(events.some((e) => e.type === 'session-end' && e['code'] === 'PROTOCOL'));
  });

  it('refuses weak algorithms', async () => {
    for (const opt of [
      'KexAlgorithms=diffie-hellman-group14-sha1',
      'KexAlgorithms=diffie-hellman-group14-sha256',
      'KexAlgorithms=ecdh-sha2-nistp256',
      'Ciphers=aes128-cbc',
      'Ciphers=aes256-ctr',
      'HostKeyAlgorithms=ssh-rsa',
    ]) {
      const r = await spawnRun('ssh', sshArgs('-o', opt, '-s', 'alice@127.0.0.1', 'tachyon-v1'));
      assert.equal(r.code, 255, opt);
      assert.match(r.stderr, /no matching/, `${opt}: ${r.stderr}`);
    }
  });

  it('refuses a shell', async () => {
    const r = await spawnRun('ssh', sshArgs('-T', 'alice@127.0.0.1'));
    assert.equal(r.code, 255);
    assert.match(r.stderr, /shell request failed/);
    assert.ok(events.some((e) => e.type === 'refused' && e['what'] === 'shell'));
  });

  it('refuses a pty and a shell with -tt', async () => {
    const r = await spawnRun('ssh', sshArgs('-tt', 'alice@127.0.0.1'));
    assert.equal(r.code, 255);
    assert.match(r.stderr, /PTY allocation request failed|shell request failed/);
    assert.ok(events.some((e) => e.type === 'refused' && e['what'] === 'pty'));
  });

  it('refuses exec of a command', async () => {
    const r = await spawnRun('ssh', sshArgs('alice@127.0.0.1', 'echo', 'pwned'));
    assert.equal(r.code, 255);
    assert.match(r.stderr, /exec request failed/);
    assert.ok(!r.stdout.toString().includes('pwned'));
    const ev = events.find((e) => e.type === 'refused' && e['what'] === 'exec');
    assert.ok(ev);
    assert.ok(!JSON.stringify(ev).includes('pwned'), 'the command must not be logged');
  });

  it('refuses the sftp subsystem', async () => {
    const r = await spawnRun('ssh', sshArgs('-s', 'alice@127.0.0.1', 'sftp'));
    assert.equal(r.code, 255);
    assert.match(r.stderr, /subsystem request failed/);
    assert.ok(events.some((e) => e.type === 'refused' && e['what'] === 'subsystem' && e['detail'] === 'sftp'));
  });

  it('refuses remote (-R) forwarding', async () => {
    const r = await spawnRun('ssh', sshArgs('-N', '-o', 'ExitOnForwardFailure=yes', '-R', '127.0.0.1:0:127.0.0.1:9', 'alice@127.0.0.1'));
    assert.equal(r.code, 255);
    assert.match(r.stderr, /remote port forwarding failed/);
    assert.ok(events.some((e) => e.type === 'refused' && e['what'] === 'global-request' && e['detail'] === 'tcpip-forward'));
  });

  it('refuses local (-L) forwarding and stdio forwarding (-W)', async () => {
    const w = await spawnRun('ssh', sshArgs('-W', '127.0.0.1:9', 'alice@127.0.0.1'));
    assert.equal(w.code, 255);
    assert.match(w.stderr, /open failed|administratively prohibited/);

    // -L opens the direct-tcpip channel only when a connection arrives on the local port.
    const port = await freePort();
    const child = spawn('ssh', sshArgs('-N', '-o', 'ExitOnForwardFailure=yes', '-L', `127.0.0.1:${port}:127.0.0.1:9`, 'alice@127.0.0.1'), {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    try {
      let got: { data: string; closed: boolean } | undefined;
      for (let i = 0; i < 50 && got === undefined; i++) {
        got = await new Promise<{ data: string; closed: boolean } | undefined>((resolve) => {
          const s = net.connect(port, '127.0.0.1');
          let data = '';
          s.on('data', (c: Buffer) => (data += c.toString()));
          s.on('error', () => resolve(undefined));
          s.on('connect', () => s.on('close', () => resolve({ data, closed: true })));
        });
        if (got === undefined) await sleep(100);
      }
      assert.ok(got, `ssh -L never listened: ${stderr}`);
      assert.equal(got.data, '');
      await sleep(50);
      assert.match(stderr, /open failed|administratively prohibited/);
      assert.ok(events.some((e) => e.type === 'refused' && e['what'] === 'direct-tcpip'));
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('does not offer password or keyboard-interactive authentication', async () => {
    for (const method of ['password', 'keyboard-interactive']) {
      const r = await spawnRun('ssh', sshArgs('-o', `PreferredAuthentications=${method}`, 'alice@127.0.0.1', 'true'));
      assert.equal(r.code, 255);
      assert.match(r.stderr, /Permission denied \(publickey\)/, method);
    }
  });

  it('refuses root with OpenSSH too', async () => {
    const r = await spawnRun('ssh', sshArgs('-s', 'root@127.0.0.1', 'tachyon-v1'));
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Permission denied \(publickey\)/);
  });

  it('passes ssh-audit without [fail] findings', { skip: hasProgram('ssh-audit') ? false : 'ssh-audit is not installed' }, async () => {
    const r = await spawnRun('ssh-audit', ['-n', '-p', String(server.port), '127.0.0.1'], Buffer.alloc(0), 15_000);
    const text = r.stdout.toString('utf8');
    assert.match(text, /curve25519-sha256/, text);
    const fails = text.split('\n').filter((l) => /\[fail\]/.test(l));
    assert.deepEqual(fails, [], text);
    // No CBC, SHA-1 or weak algorithms offered at all.
    assert.doesNotMatch(text, /-cbc|hmac-sha1|diffie-hellman-group1-|ssh-rsa |ssh-dss/);
  });
});
