import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ClientChannel } from 'ssh2';
import { TachyonError } from '../../src/core/errors.js';
import { loadOrCreateHostKey, parseAuthorizedKeys, findAuthorizedKey } from '../../src/control/hostkeys.js';
import type { AuthorizedKey, HostKeyInfo } from '../../src/control/hostkeys.js';
import type { ControlLink, ControlMessage } from '../../src/control/messages.js';
import { connectControl } from '../../src/control/ssh-client.js';
import type { ConnectOptions } from '../../src/control/ssh-client.js';
import { startControlServer } from '../../src/control/ssh-server.js';
import type { ControlServer, ControlServerEvent, ControlServerOptions, SessionInfo } from '../../src/control/ssh-server.js';
import { echoSession, run, sleep, sshKeygen, tempDir } from './helpers.js';

function isCode(code: string, pattern?: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof TachyonError, `expected TachyonError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

describe('SSH control channel (ssh2 client <-> server)', () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => {};
  let hostKey: HostKeyInfo;
  let aliceKey: Buffer;
  let rootKeyFile = '';
  let otherKey: Buffer;
  let rsaKey: Buffer;
  let authorized: AuthorizedKey[] = [];
  const servers: ControlServer[] = [];
  const events: (ControlServerEvent & Record<string, unknown>)[] = [];
  const sessions: { link: ControlLink; info: SessionInfo }[] = [];
  let server: ControlServer;

  async function start(extra: Partial<ControlServerOptions> = {}): Promise<ControlServer> {
    const s = await startControlServer({
      listen: '127.0.0.1',
      port: 0,
      hostKey: hostKey.privateKey,
      authorize: (user, _algo, blob) => (user === 'alice' || user === 'root') && findAuthorizedKey(authorized, blob) !== undefined,
      onSession: (link, info) => {
        sessions.push({ link, info });
        echoSession(link);
      },
      onEvent: (e) => events.push(e as ControlServerEvent & Record<string, unknown>),
      ...extra,
    });
    servers.push(s);
    return s;
  }

  function opts(over: Partial<ConnectOptions> = {}): ConnectOptions {
    return {
      host: '127.0.0.1',
      port: server.port,
      user: 'alice',
      privateKey: aliceKey,
      hostKey: { fingerprint: hostKey.fingerprint },
      timeoutMs: 5000,
      ...over,
    };
  }

  before(async () => {
    ({ dir, cleanup } = await tempDir('ssh'));
    hostKey = await loadOrCreateHostKey(join(dir, 'host_key'));
    const [alice, root, other, rsa] = await Promise.all([
      sshKeygen(dir, 'alice'),
      sshKeygen(dir, 'root'),
      sshKeygen(dir, 'other'),
      sshKeygen(dir, 'rsa', 'rsa', ['-b', '2048', '-m', 'PEM']),
    ]);
    rootKeyFile = root;
    aliceKey = await readFile(alice);
    otherKey = await readFile(other);
    rsaKey = await readFile(rsa);
    const text = (await Promise.all([alice, root, rsa].map((f) => readFile(`${f}.pub`, 'utf8')))).join('');
    authorized = parseAuthorizedKeys(text).keys;
    assert.equal(authorized.length, 3);
    server = await start();
  });

  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await cleanup();
  });

  it('round-trips messages and reports session info and audit events', async () => {
    const conn = await connectControl(opts());
    assert.equal(conn.remoteAddress, '127.0.0.1');
    assert.equal(conn.hostKeyFingerprint, hostKey.fingerprint);
    const got: ControlMessage[] = [];
    const closed = new Promise<Error | undefined>((r) => conn.link.onClose(r));
    conn.link.onMessage((m) => got.push(m));
    for (let id = 0; id < 50; id++) conn.link.send({ t: 'digests', files: [{ id, sha256: 'c'.repeat(64) }] });
    conn.link.send({ t: 'bye' });
    assert.equal(await closed, undefined);
    assert.equal(got.length, 51);
    assert.deepEqual(got[7], { t: 'results', files: [{ id: 7, ok: true }] });
    assert.deepEqual(got[50], { t: 'bye' });
    conn.close();

    const s = sessions.at(-1);
    assert.ok(s);
    assert.equal(s.info.user, 'alice');
    assert.equal(s.info.clientAddress, '127.0.0.1');
    assert.equal(s.info.localAddress, '127.0.0.1');
    assert.equal(s.info.keyFingerprint, authorized[0]?.fingerprint);
    await sleep(50);
    const auth = events.filter((e) => e.type === 'auth' && e['outcome'] === 'accepted');
    assert.ok(auth.some((e) => e['user'] === 'alice' && e['keyFingerprint'] === authorized[0]?.fingerprint));
    assert.ok(events.some((e) => e.type === 'session-start'));
    assert.ok(events.some((e) => e.type === 'session-end' && e['code'] === undefined));
    // Never a secret in an event: no private key material.
    assert.ok(!JSON.stringify(events).includes('PRIVATE'));
  });

  it('carries a large frame (close to MAX_FRAME_BYTES) across the SSH window', async () => {
    const big = await start({
      onSession: (link) => link.onMessage((m) => link.send(m)),
    });
    const conn = await connectControl(opts({ port: big.port }));
    const sources = Array.from({ length: 240 }, (_, i) => `${i}/`.padEnd(4000, 'x'));
    const msg: ControlMessage = {
      t: 'hello', v: 1, op: 'recv', cipher: 'aes-256-gcm', policy: 'high',
      targetRate: 1e9, minRate: 0, datagramSize: 9000, sources,
    };
    const echoed = new Promise<ControlMessage>((r) => conn.link.onMessage(r));
    conn.link.send(msg);
    assert.deepEqual(await echoed, msg);
    conn.close();
  });

  it('accepts an RSA (PEM) client key with rsa-sha2 signatures', async () => {
    const conn = await connectControl(opts({ privateKey: rsaKey }));
    const reply = new Promise<ControlMessage>((r) => conn.link.onMessage(r));
    conn.link.send({ t: 'digests', files: [{ id: 9, sha256: 'c'.repeat(64) }] });
    assert.deepEqual(await reply, { t: 'results', files: [{ id: 9, ok: true }] });
    conn.close();
  });

  it('refuses an unknown host key, showing its fingerprint and how to pin it', async () => {
    const empty = join(dir, 'empty_known_hosts');
    await writeFile(empty, '# nothing\n');
    await assert.rejects(
      connectControl(opts({ hostKey: { knownHostsFile: empty } })),
      isCode('HOST_KEY_UNKNOWN', new RegExp(`${hostKey.fingerprint.replace(/[+/]/g, '\\$&')}.*--host-key-fingerprint ${hostKey.fingerprint.replace(/[+/]/g, '\\$&')}`)),
    );
    await assert.rejects(
      connectControl(opts({ hostKey: { knownHostsFile: join(dir, 'missing_known_hosts') } })),
      isCode('HOST_KEY_UNKNOWN', /does not exist/),
    );
  });

  it('refuses a host key that does not match the pinned fingerprint or known_hosts', async () => {
    const wrong = `SHA256:${'x'.repeat(43)}`;
    await assert.rejects(connectControl(opts({ hostKey: { fingerprint: wrong } })), (e: unknown) => {
      isCode('HOST_KEY_MISMATCH')(e);
      const te = e as TachyonError;
      assert.ok(te.message.includes(hostKey.fingerprint), te.message);
      assert.ok(te.message.includes(wrong));
      assert.equal(te.details?.['fingerprint'], hostKey.fingerprint);
      return true;
    });
    const other = await loadOrCreateHostKey(join(dir, 'other_host_key'));
    const kh = join(dir, 'known_hosts_mismatch');
    await writeFile(kh, `[127.0.0.1]:${server.port} ${other.publicKeyLine}\n`);
    await assert.rejects(connectControl(opts({ hostKey: { knownHostsFile: kh } })), isCode('HOST_KEY_MISMATCH', /HOST KEY MISMATCH/));
  });

  it('accepts known_hosts entries as [host]:port and hashed, and not a plain host entry for port != 22', async () => {
    const kh = join(dir, 'known_hosts_ok');
    await writeFile(kh, `[127.0.0.1]:${server.port} ${hostKey.publicKeyLine}\n`);
    const c1 = await connectControl(opts({ hostKey: { knownHostsFile: kh } }));
    c1.close();

    const hashedFile = join(dir, 'known_hosts_hashed');
    await writeFile(hashedFile, `[127.0.0.1]:${server.port} ${hostKey.publicKeyLine}\n`);
    assert.equal((await run('ssh-keygen', ['-H', '-f', hashedFile])).code, 0);
    assert.ok(!(await readFile(hashedFile, 'utf8')).includes('127.0.0.1'));
    const c2 = await connectControl(opts({ hostKey: { knownHostsFile: hashedFile } }));
    c2.close();

    const plainFile = join(dir, 'known_hosts_plain');
    await writeFile(plainFile, `127.0.0.1 ${hostKey.publicKeyLine}\n`);
    await assert.rejects(connectControl(opts({ hostKey: { knownHostsFile: plainFile } })), isCode('HOST_KEY_UNKNOWN'));
  });

  it('requires a pin and a valid fingerprint format', async () => {
    await assert.rejects(connectControl(opts({ hostKey: {} })), isCode('USAGE', /must be pinned/));
    await assert.rejects(connectControl(opts({ hostKey: { fingerprint: 'MD5:00:11' } })), isCode('USAGE'));
  });

  it('refuses a client key that is not authorized (AUTH_FAILED)', async () => {
    await assert.rejects(connectControl(opts({ privateKey: otherKey })), isCode('AUTH_FAILED', /alice/));
    await sleep(20);
    assert.ok(events.some((e) => e.type === 'auth' && e['outcome'] === 'refused' && e['reason'] === 'not-authorized'));
  });

  it('refuses root even with an authorized key', async () => {
    const rootKey = await readFile(rootKeyFile);
    await assert.rejects(connectControl(opts({ user: 'root', privateKey: rootKey })), isCode('AUTH_FAILED'));
    await sleep(20);
    assert.ok(events.some((e) => e.type === 'auth' && e['user'] === 'root' && e['reason'] === 'root-refused'));
  });

  it('reports an unreachable server as CONNECT', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    await assert.rejects(connectControl(opts({ port })), isCode('CONNECT', /ECONNREFUSED/));
  });

  it('times out a server that never speaks SSH (CONNECT) and enforces the login grace time', async () => {
    const silent = net.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as net.AddressInfo).port;
    await assert.rejects(connectControl(opts({ port, timeoutMs: 300 })), isCode('CONNECT', /Timed out/));
    silent.close();

    const strict = await start({ loginGraceMs: 200 });
    const sock = net.connect(strict.port, '127.0.0.1');
    const closedAt = await new Promise<number>((r) => {
      sock.on('error', () => {});
      sock.resume();
      sock.on('close', () => r(Date.now()));
    });
    assert.ok(closedAt > 0);
    await sleep(10);
    assert.ok(events.some((e) => e.type === 'disconnect' && e['reason'] === 'login-grace-timeout'));
  });

  it('survives garbage from non-SSH clients', async () => {
    for (const junk of [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), Buffer.from('SSH-2.0-x\r\n' + '\u0000'.repeat(64)), Buffer.alloc(70_000, 0xff)]) {
      const sock = net.connect(server.port, '127.0.0.1');
      sock.on('error', () => {});
      sock.resume();
      await new Promise<void>((r) => sock.on('connect', () => r()));
      sock.write(junk);
      await new Promise<void>((r) => {
        sock.on('close', () => r());
        setTimeout(() => {
          sock.destroy();
          r();
        }, 300);
      });
    }
    const conn = await connectControl(opts());
    conn.close();
  });

  it('allows at most maxSessions session channels per connection', async () => {
    const s = await start({ maxSessions: 2, onSession: () => {} });
    const { Client } = (await import('ssh2')).default;
    const client = new Client();
    client.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      client.on('ready', () => resolve());
      client.on('error', reject);
      client.connect({ host: '127.0.0.1', port: s.port, username: 'alice', privateKey: aliceKey });
    });
    const open = (): Promise<boolean> =>
      new Promise((r) => client.subsys('tachyon-v1', (err) => r(err === undefined || err === null)));
    assert.deepEqual([await open(), await open(), await open()], [true, true, false]);
    client.end();
    assert.ok(events.some((e) => e.type === 'refused' && e['what'] === 'session'));
  });

  it('disconnects after maxAuthTries failures', async () => {
    const strict = await start({ maxAuthTries: 1 });
    await assert.rejects(connectControl(opts({ port: strict.port, privateKey: otherKey })), isCode('AUTH_FAILED'));
    await sleep(20);
    assert.ok(events.some((e) => e.type === 'disconnect' && e['reason'] === 'max-auth-tries'));
  });

  it('ends sessions with CANCELLED when the server closes, and tells the client why', async () => {
    let serverLink: ControlLink | undefined;
    const s = await start({ onSession: (link) => (serverLink = link) });
    const conn = await connectControl(opts({ port: s.port }));
    await sleep(20);
    assert.ok(serverLink);
    const serverClosed = new Promise<Error | undefined>((r) => serverLink?.onClose(r));
    const clientClosed = new Promise<Error | undefined>((r) => conn.link.onClose(r));
    const received: ControlMessage[] = [];
    conn.link.onMessage((m) => received.push(m));
    await s.close();
    const se = await serverClosed;
    assert.ok(se instanceof TachyonError && se.code === 'CANCELLED');
    const ce = await clientClosed;
    assert.ok(ce instanceof TachyonError && ce.code === 'CANCELLED', String(ce));
    assert.match(ce.message, /shutting down/);
    assert.deepEqual(received, [{ t: 'error', code: 'CANCELLED', message: 'The control server is shutting down' }]);
  });

  it('closes idle connections when idleTimeoutMs is set', async () => {
    const s = await start({ idleTimeoutMs: 150, onSession: () => {} });
    const conn = await connectControl(opts({ port: s.port }));
    conn.link.onMessage(() => {});
    const err = await new Promise<Error | undefined>((r) => conn.link.onClose(r));
    assert.ok(err instanceof TachyonError && err.code === 'PEER_VANISHED', String(err));
    assert.match(err.message, /Idle timeout/);
    assert.ok(events.some((e) => e.type === 'disconnect' && e['reason'] === 'idle-timeout'));
  });

  it('enforces the login grace time on a client that sends its version string and stalls', async () => {
    const strict = await start({ loginGraceMs: 300 });
    const sock = net.connect(strict.port, '127.0.0.1');
    sock.on('error', () => {});
    let got = '';
    const opened = Date.now();
    sock.on('data', (c: Buffer) => {
      if (got === '') sock.write('SSH-2.0-Stalling_1.0\r\n');
      got += c.toString('latin1');
    });
    const closedAt = await new Promise<number>((r) => sock.on('close', () => r(Date.now())));
    assert.match(got, /^SSH-2\.0-Tachyon_3/, 'the server spoke first');
    const elapsed = closedAt - opened;
    assert.ok(elapsed >= 280 && elapsed < 3000, `closed after ${elapsed} ms`);
    await sleep(10);
    assert.ok(events.some((e) => e.type === 'disconnect' && e['reason'] === 'login-grace-timeout'));
  });

  it('limits unauthenticated connections per source address and in all', async () => {
    const open = async (port: number): Promise<{ sock: net.Socket; ident: Promise<string> }> => {
      const sock = net.connect(port, '127.0.0.1');
      sock.on('error', () => {});
      const ident = new Promise<string>((r) => {
        let got = '';
        sock.on('data', (c: Buffer) => (got += c.toString('latin1')));
        sock.on('close', () => r(got));
        setTimeout(() => r(got), 400);
      });
      await new Promise<void>((r) => sock.on('connect', () => r()));
      return { sock, ident };
    };
    for (const [limits, detail] of [
      [{ maxUnauthenticatedPerSource: 2 }, 'per-source'],
      [{ maxUnauthenticatedPerSource: 0, maxUnauthenticated: 2 }, 'max-startups'],
    ] as const) {
      const s = await start(limits);
      const a = await open(s.port);
      const b = await open(s.port);
      const c = await open(s.port);
      assert.match(await a.ident, /^SSH-2\.0-Tachyon_3/);
      assert.match(await b.ident, /^SSH-2\.0-Tachyon_3/);
      assert.equal(await c.ident, '', `${detail}: the third connection is dropped before the version exchange`);
      assert.ok(events.some((e) => e.type === 'refused' && e['what'] === 'connection' && e['detail'] === detail));
      // A closed connection frees its place, and so does one that authenticates.
      a.sock.destroy();
      await sleep(50);
      const conn = await connectControl(opts({ port: s.port }));
      const d = await open(s.port);
      assert.match(await d.ident, /^SSH-2\.0-Tachyon_3/, `${detail}: a place freed up`);
      conn.close();
      for (const x of [b, c, d]) x.sock.destroy();
    }
  });

  it('authenticated connections do not count against the unauthenticated limit', async () => {
    const s = await start({ maxUnauthenticatedPerSource: 1 });
    const conns = [];
    for (let i = 0; i < 3; i++) conns.push(await connectControl(opts({ port: s.port })));
    for (const c of conns) c.close();
  });

  it('keepAlive() and data on a plugged-in subsystem keep a connection from idling out', async () => {
    let keepAliveTimer: NodeJS.Timeout | undefined;
    const s = await start({
      idleTimeoutMs: 300,
      onSession: (_link, _info, control) => {
        keepAliveTimer = setInterval(() => control.keepAlive(), 100);
      },
      extraSubsystems: { echo: (channel) => channel.pipe(channel) },
    });
    try {
      const conn = await connectControl(opts({ port: s.port }));
      const state: { closedWith: Error | undefined | 'open' } = { closedWith: 'open' };
      conn.link.onClose((e) => (state.closedWith = e));
      await sleep(900);
      assert.equal(state.closedWith, 'open', 'keepAlive() every 100 ms holds a 300 ms idle timeout off');
      clearInterval(keepAliveTimer);
      await sleep(700);
      const closedWith = state.closedWith as Error | undefined | 'open';
      assert.ok(closedWith instanceof TachyonError && closedWith.code === 'PEER_VANISHED', String(closedWith));

      const { Client } = (await import('ssh2')).default;
      const client = new Client();
      client.on('error', () => {});
      await new Promise<void>((resolve, reject) => {
        client.on('ready', () => resolve());
        client.on('error', reject);
        client.connect({ host: '127.0.0.1', port: s.port, username: 'alice', privateKey: aliceKey });
      });
      const channel = await new Promise<ClientChannel>((resolve, reject) =>
        client.subsys('echo', (err, ch) => (err ? reject(err) : resolve(ch))),
      );
      let echoed = '';
      channel.on('data', (c: Buffer) => (echoed += c.toString()));
      const ended = new Promise<number>((r) => client.on('close', () => r(Date.now())));
      let quietFrom = 0;
      for (let i = 0; i < 8; i++) {
        channel.write(`${i}`);
        quietFrom = Date.now();
        await sleep(100);
      }
      assert.equal(echoed, '01234567', 'the subsystem ran 800 ms past a 300 ms idle timeout while data flowed');
      const at = await ended;
      assert.ok(at - quietFrom >= 250 && at - quietFrom < 3000, `idle close ${at - quietFrom} ms after the data stopped`);
    } finally {
      clearInterval(keepAliveTimer);
    }
  });

  it('validates host keys, banner and subsystem names', async () => {
    const ecdsa = await readFile(await sshKeygen(dir, 'ecdsa_host', 'ecdsa', ['-b', '256']));
    const rsa1024 = await readFile(await sshKeygen(dir, 'rsa1024_host', 'rsa', ['-b', '1024']));
    const rsa2048 = await readFile(await sshKeygen(dir, 'rsa2048_host', 'rsa', ['-b', '2048']));
    const bad: [Partial<ControlServerOptions>, RegExp][] = [
      [{ hostKey: ecdsa }, /ecdsa-sha2-nistp256: only ed25519 and RSA/],
      [{ hostKey: rsa1024 }, /1024 bits; at least 2048/],
      [{ hostKey: [hostKey.privateKey, hostKey.privateKey] }, /Two host keys of the same type/],
      [{ hostKey: [] }, /No host key/],
      [{ hostKey: Buffer.from('not a key') }, /Cannot use host key 1/],
      [{ banner: 'hello\u001b[2Jworld' }, /control characters/],
      [{ banner: 'x'.repeat(5000) }, /at most 4096/],
      [{ extraSubsystems: { 'tachyon-v1': () => {} } }, /Invalid extra subsystem name/],
      [{ maxUnauthenticatedPerSource: -1 }, /maxUnauthenticatedPerSource/],
      [{ idleTimeoutMs: Number.NaN }, /idleTimeoutMs/],
    ];
    for (const [over, pattern] of bad) {
      await assert.rejects(start(over), isCode('CONFIG', pattern), pattern.source);
    }
    const ok = await start({ hostKey: [rsa2048, hostKey.privateKey], banner: 'Line one\r\nLine\ttwo\n' });
    assert.deepEqual(ok.hostKeys.map((k) => k.type), ['ssh-ed25519', 'ssh-rsa']);
    assert.deepEqual(ok.algorithms.serverHostKey, ['ssh-ed25519', 'rsa-sha2-512', 'rsa-sha2-256']);
    assert.deepEqual(ok.algorithms.kex, ['curve25519-sha256', 'curve25519-sha256@libssh.org']);
    assert.ok(!ok.algorithms.mac.some((m) => !m.endsWith('-etm@openssh.com')));
    const conn = await connectControl(opts({ port: ok.port }));
    conn.close();
  });
});
