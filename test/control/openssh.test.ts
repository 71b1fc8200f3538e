/**
 * Interop and hardening checks of the control server against OpenSSH's own client (and
 * ssh-audit when installed).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { access, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FrameDecoder, encodeFrame } from '../../src/control/framing.js';
import { findAuthorizedKey, loadOrCreateHostKey, parseAuthorizedKeys } from '../../src/control/hostkeys.js';
import type { AuthorizedKey } from '../../src/control/hostkeys.js';
import { startControlServer } from '../../src/control/ssh-server.js';
import type { ControlServer, ControlServerEvent, SessionInfo } from '../../src/control/ssh-server.js';
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

/** spawnRun with extra environment variables. */
function spawnRunEnv(file: string, args: string[], env: Record<string, string>, timeoutMs = 8000): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
    child.stdin.on('error', () => {});
    child.stdin.end();
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

/**
 * Asks a SOCKS5 proxy on 127.0.0.1:`port` to connect to host:destPort; resolves with the
 * proxy's reply to the CONNECT (possibly empty if it closed), or undefined if nothing listens.
 */
function socks5Connect(port: number, host: string, destPort: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let stage = 0;
    let buf = Buffer.alloc(0);
    const done = (v: Buffer | undefined): void => {
      s.destroy();
      resolve(v);
    };
    s.on('error', () => done(stage === 0 ? undefined : buf));
    s.setTimeout(5000, () => done(buf));
    s.on('connect', () => {
      stage = 1;
      s.write(Buffer.from([5, 1, 0]));
    });
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (stage === 1 && buf.length >= 2) {
        stage = 2;
        buf = Buffer.alloc(0);
        const addr = host.split('.').map(Number);
        const req = Buffer.from([5, 1, 0, 1, ...addr, destPort >> 8, destPort & 0xff]);
        s.write(req);
      } else if (stage === 2 && buf.length >= 2) {
        done(buf);
      }
    });
    s.on('close', () => done(stage === 0 ? undefined : buf));
  });
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
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
  const events: (ControlServerEvent & Record<string, unknown>)[] = [];

  const BANNER = 'Authorized use only. Activity is recorded.\nTachyon transfer service';
  let rsaHostKey = '';
  let rsaKnownHostsLine = '';
  const sshArgs = (...rest: string[]): string[] => sshArgsFor(server.port, ...rest);
  const sshArgsFor = (port: number, ...rest: string[]): string[] => [
    '-F', '/dev/null',
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', `UserKnownHostsFile=${knownHosts}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'IdentitiesOnly=yes',
    '-o', 'IdentityAgent=none',
    '-o', 'ConnectTimeout=5',
    '-i', keyFile,
    '-p', String(port),
    ...rest,
  ];

  before(async () => {
    ({ dir, cleanup } = await tempDir('openssh'));
    const hostKey = await loadOrCreateHostKey(join(dir, 'host_key'));
    keyFile = await sshKeygen(dir, 'client');
    authorized = parseAuthorizedKeys(await readFile(`${keyFile}.pub`, 'utf8')).keys;
    rsaHostKey = await sshKeygen(dir, 'host_rsa', 'rsa', ['-b', '3072']);
    rsaKnownHostsLine = (await readFile(`${rsaHostKey}.pub`, 'utf8')).split(' ').slice(0, 2).join(' ');
    server = await startControlServer({
      listen: '127.0.0.1',
      port: 0,
      hostKey: [hostKey.privateKey, await readFile(rsaHostKey)],
      banner: BANNER,
      authorize: (user, _algo, blob) => user === 'alice' && findAuthorizedKey(authorized, blob) !== undefined,
      onSession: (link) => echoSession(link),
      onEvent: (e) => events.push(e as ControlServerEvent & Record<string, unknown>),
    });
    knownHosts = join(dir, 'known_hosts');
    await writeFile(knownHosts, `[127.0.0.1]:${server.port} ${hostKey.publicKeyLine}\n[127.0.0.1]:${server.port} ${rsaKnownHostsLine}\n`);
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
      'HostKeyAlgorithms=ecdsa-sha2-nistp256',
      'HostKeyAlgorithms=ssh-dss',
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

  it('offers the RSA host key with rsa-sha2-512 and rsa-sha2-256 signatures that OpenSSH verifies', async () => {
    for (const algo of ['rsa-sha2-512', 'rsa-sha2-256']) {
      const input = Buffer.concat([encodeFrame({ t: 'digests', files: [{ id: 1, sha256: 'c'.repeat(64) }] }), encodeFrame({ t: 'bye' })]);
      const r = await spawnRun('ssh', sshArgs('-v', '-o', `HostKeyAlgorithms=${algo}`, '-s', 'alice@127.0.0.1', 'tachyon-v1'), input);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`kex: host key algorithm: ${algo}`));
      assert.deepEqual(new FrameDecoder().push(r.stdout), [{ t: 'results', files: [{ id: 1, ok: true }] }, { t: 'bye' }]);
    }
    assert.deepEqual(server.hostKeys.map((k) => [k.type, k.algorithms.join(','), k.bits]), [
      ['ssh-ed25519', 'ssh-ed25519', undefined],
      ['ssh-rsa', 'rsa-sha2-512,rsa-sha2-256', 3072],
    ]);
  });

  it('shows the banner before authentication', async () => {
    const r = await spawnRun('ssh', sshArgs('-s', 'mallory@127.0.0.1', 'tachyon-v1'));
    assert.equal(r.code, 255);
    assert.ok(r.stderr.includes('Authorized use only. Activity is recorded.'), r.stderr);
    assert.ok(r.stderr.includes('Tachyon transfer service'), r.stderr);
    assert.ok(r.stderr.indexOf('Authorized use only') < r.stderr.indexOf('Permission denied'), r.stderr);
  });

  it('refuses agent forwarding (-A) and X11 forwarding (-X)', async () => {
    const before = events.length;
    // A real agent to forward (ssh only asks to forward one that exists), killed by its pid.
    const sock = join(dir, 'agent.sock');
    const agentProc = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 50 && !(await exists(sock)); i++) await sleep(20);
      // IdentityAgent=none would also turn forwarding off: use the (empty) agent instead.
      const args = sshArgs('-A', '-T', 'alice@127.0.0.1').filter((a, i, all) => a !== 'IdentityAgent=none' && !(a === '-o' && all[i + 1] === 'IdentityAgent=none'));
      const agent = await spawnRunEnv('ssh', args, { SSH_AUTH_SOCK: sock });
      assert.equal(agent.code, 255);
      await sleep(20);
      assert.ok(events.slice(before).some((e) => e.type === 'refused' && e['what'] === 'auth-agent'), JSON.stringify(events.slice(before)));
    } finally {
      agentProc.kill('SIGTERM');
    }
    const x11 = await spawnRunEnv('ssh', sshArgs('-X', '-T', 'alice@127.0.0.1'), { DISPLAY: '127.0.0.1:99', XAUTHORITY: join(dir, 'no-xauthority') });
    assert.equal(x11.code, 255);
    assert.match(x11.stderr, /X11 forwarding request failed/);
    assert.ok(events.some((e) => e.type === 'refused' && e['what'] === 'x11'));
  });

  it('refuses environment variables and never records their values', async () => {
    const r = await spawnRun('ssh', sshArgs('-o', 'SetEnv=TACHYON_PROBE=s3cr3t-value', '-T', 'alice@127.0.0.1'));
    assert.equal(r.code, 255);
    await sleep(20);
    const ev = events.find((e) => e.type === 'refused' && e['what'] === 'env');
    assert.ok(ev);
    assert.equal(ev['detail'], 'TACHYON_PROBE');
    assert.ok(!JSON.stringify(events).includes('s3cr3t-value'));
  });

  it('refuses dynamic (-D, SOCKS) forwarding', async () => {
    const port = await freePort();
    const child = spawn('ssh', sshArgs('-N', '-D', `127.0.0.1:${port}`, 'alice@127.0.0.1'), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    try {
      let reply: Buffer | undefined;
      for (let i = 0; i < 50 && reply === undefined; i++) {
        reply = await socks5Connect(port, '127.0.0.1', 9);
        if (reply === undefined) await sleep(100);
      }
      assert.ok(reply, `ssh -D never listened: ${stderr}`);
      // SOCKS5 reply: version 5, REP != 0 (failure), or the connection closed without a reply.
      assert.ok(reply.length < 2 || reply[1] !== 0, `SOCKS reply ${reply.toString('hex')}`);
      await sleep(50);
      assert.ok(events.some((e) => e.type === 'refused' && e['what'] === 'direct-tcpip' && e['detail'] === '127.0.0.1:9'));
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('disconnects a client after 6 failed authentication attempts (8 wrong keys offered)', async () => {
    const keys = await Promise.all(Array.from({ length: 8 }, (_, i) => sshKeygen(dir, `wrong${i}`)));
    const before = events.length;
    const args = sshArgs('-s', 'alice@127.0.0.1', 'tachyon-v1').filter((a, i, all) => a !== keyFile && !(a === '-i' && all[i + 1] === keyFile));
    const r = await spawnRun('ssh', [...keys.flatMap((k) => ['-i', k]), ...args]);
    assert.equal(r.code, 255);
    await sleep(50);
    // This connection's events (a previous test's connection may still be closing).
    const firstRefusal = events.slice(before).find((e) => e.type === 'auth' && e['outcome'] === 'refused');
    assert.ok(firstRefusal);
    const mine = events.slice(before).filter((e) => e['connectionId'] === firstRefusal['connectionId']);
    const refused = mine.filter((e) => e.type === 'auth' && e['outcome'] === 'refused');
    assert.equal(refused.length, 6, JSON.stringify(mine));
    assert.deepEqual(refused.map((e) => e['failures']), [1, 2, 3, 4, 5, 6]);
    assert.ok(refused.every((e) => e['reason'] === 'not-authorized' && typeof e['keyFingerprint'] === 'string'));
    assert.ok(mine.some((e) => e.type === 'disconnect' && e['reason'] === 'max-auth-tries'));
    assert.deepEqual(mine.map((e) => e.type), ['connect', ...Array<string>(6).fill('auth'), 'disconnect'], 'one connection id for all its events');
    assert.doesNotMatch(r.stderr, /Permission denied/, 'cut off before the client ran out of keys');
  });

  it('closes an authenticated connection that stays idle, even while OpenSSH sends keepalives', async () => {
    const idle = await startControlServer({
      listen: '127.0.0.1',
      port: 0,
      hostKey: (await loadOrCreateHostKey(join(dir, 'host_key'))).privateKey,
      idleTimeoutMs: 1500,
      authorize: (user, _algo, blob) => user === 'alice' && findAuthorizedKey(authorized, blob) !== undefined,
      onSession: () => {},
      onEvent: (e) => events.push(e as ControlServerEvent & Record<string, unknown>),
    });
    try {
      await writeFile(knownHosts, `[127.0.0.1]:${idle.port} ${(await loadOrCreateHostKey(join(dir, 'host_key'))).publicKeyLine}\n`, { flag: 'a' });
      const child = spawn('ssh', sshArgsFor(idle.port, '-o', 'ServerAliveInterval=1', '-s', 'alice@127.0.0.1', 'tachyon-v1'), {
        stdio: ['pipe', 'ignore', 'pipe'],
      });
      child.stderr.on('data', () => {});
      const started = Date.now();
      const code = await new Promise<number | null>((resolve) => {
        const t = setTimeout(() => child.kill('SIGKILL'), 8000);
        child.on('close', (c) => {
          clearTimeout(t);
          resolve(c);
        });
      });
      const elapsed = Date.now() - started;
      assert.notEqual(code, null, 'killed by the test timer: the idle connection was not closed');
      assert.ok(elapsed >= 1400 && elapsed < 6000, `closed after ${elapsed} ms`);
      assert.ok(events.some((e) => e.type === 'disconnect' && e['reason'] === 'idle-timeout'));
      child.stdin.destroy();
    } finally {
      await idle.close();
    }
  });

  it('hands a plugged-in subsystem (sftp) the channel and the authenticated user', async () => {
    const seen: SessionInfo[] = [];
    const hooked = await startControlServer({
      listen: '127.0.0.1',
      port: 0,
      hostKey: (await loadOrCreateHostKey(join(dir, 'host_key'))).privateKey,
      authorize: (user, _algo, blob) => user === 'alice' && findAuthorizedKey(authorized, blob) !== undefined,
      onSession: () => {},
      onEvent: (e) => events.push(e as ControlServerEvent & Record<string, unknown>),
      extraSubsystems: {
        sftp: (channel, info) => {
          seen.push(info);
          let got = '';
          channel.on('data', (c: Buffer) => (got += c.toString()));
          channel.on('end', () => {
            channel.write(`${info.user}:${got.toUpperCase()}`);
            channel.exit(0);
            channel.end();
          });
        },
      },
    });
    try {
      await writeFile(knownHosts, `[127.0.0.1]:${hooked.port} ${(await loadOrCreateHostKey(join(dir, 'host_key'))).publicKeyLine}\n`, { flag: 'a' });
      const r = await spawnRun('ssh', sshArgsFor(hooked.port, '-s', 'alice@127.0.0.1', 'sftp'), Buffer.from('hello'));
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), 'alice:HELLO');
      assert.equal(seen.length, 1);
      assert.equal(seen[0]?.user, 'alice');
      assert.equal(seen[0]?.keyFingerprint, authorized[0]?.fingerprint);
      assert.match(seen[0]?.connectionId ?? '', /^[0-9A-Z]{26}$/);
      await sleep(50);
      const start = events.find((e) => e.type === 'session-start' && e['subsystem'] === 'sftp');
      const end = events.find((e) => e.type === 'session-end' && e['subsystem'] === 'sftp');
      assert.ok(start && end);
      assert.equal(start['connectionId'], seen[0]?.connectionId);
      // Other subsystems are still refused there.
      const other = await spawnRun('ssh', sshArgsFor(hooked.port, '-s', 'alice@127.0.0.1', 'netconf'));
      assert.equal(other.code, 255);
      assert.match(other.stderr, /subsystem request failed/);
    } finally {
      await hooked.close();
    }
  });

  it('passes ssh-audit: no [fail], no [warn] but for the strict-KEX marker older ssh-audit does not know; ed25519 and RSA-SHA2 only', { skip: hasProgram('ssh-audit') ? false : 'ssh-audit is not installed (Debian package ssh-audit)' }, async () => {
    const r = await spawnRun('ssh-audit', ['-n', '-p', String(server.port), '127.0.0.1'], Buffer.alloc(0), 15_000);
    const text = r.stdout.toString('utf8');
    assert.match(text, /\(kex\) curve25519-sha256 /, text);
    assert.match(text, /\(key\) ssh-ed25519 /, text);
    assert.match(text, /\(key\) rsa-sha2-512 \(3072-bit\)/, text);
    assert.match(text, /\(key\) rsa-sha2-256 \(3072-bit\)/, text);
    assert.match(text, /\(enc\) aes256-gcm@openssh.com/, text);
    assert.match(text, /\(mac\) hmac-sha2-256-etm@openssh.com/, text);
    const fails = text.split('\n').filter((l) => /\[fail\]/.test(l));
    assert.deepEqual(fails, [], text);
    // kex-strict-s-v00@openssh.com is the Terrapin (CVE-2023-48795) countermeasure, not an
    // algorithm; ssh-audit before 3.1 lists it as an unknown algorithm.
    const warns = text.split('\n').filter((l) => /\[warn\]/.test(l) && !/kex-strict-s-v00@openssh\.com +-- \[warn\] unknown algorithm/.test(l));
    assert.deepEqual(warns, [], text);
    // No CBC, SHA-1, NIST curves, ssh-rsa or DSA offered at all.
    assert.doesNotMatch(text, /-cbc|hmac-sha1|diffie-hellman|ecdh-sha2|ecdsa-sha2|\(key\) ssh-rsa|ssh-dss|hmac-sha2-256 |umac/);
  });

});
