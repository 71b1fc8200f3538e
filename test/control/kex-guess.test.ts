/**
 * The client's key exchange guess (src/control/ssh-pipeline.ts, `guessKeyExchange`): its
 * KEXINIT and curve25519 share go with its version string. Checked against the servers
 * that decide differently: OpenSSH's sshd (RFC 4253 §7.1: both first choices must agree),
 * our control server (the same rule, `honourKexGuess`), and a stock ssh2 server (skips
 * every guessed packet). A right guess must be used, a wrong one sent again: either
 * mistake leaves the handshake hanging or broken, so each case ends with a message that
 * went through the channel and came back.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import ssh2 from 'ssh2';
import { findAuthorizedKey, fingerprintOf, loadOrCreateHostKey, parseAuthorizedKeys } from '../../src/control/hostkeys.js';
import type { AuthorizedKey } from '../../src/control/hostkeys.js';
import { encodeFrame } from '../../src/control/framing.js';
import type { ControlMessage } from '../../src/control/messages.js';
import { connectControl } from '../../src/control/ssh-client.js';
import type { ConnectOptions, ControlConnection } from '../../src/control/ssh-client.js';
import { startControlServer } from '../../src/control/ssh-server.js';
import { echoSession, sshKeygen, tempDir } from './helpers.js';

const SSHD = '/usr/sbin/sshd';

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Sends `bye` on the link and waits for it to come back. */
async function roundTrip(conn: ControlConnection): Promise<void> {
  const answer = new Promise<ControlMessage>((resolve, reject) => {
    conn.link.onMessage(resolve);
    conn.link.onClose((err) => reject(err ?? new Error('closed before the answer')));
  });
  conn.link.send({ t: 'bye' });
  assert.equal((await answer).t, 'bye');
}

/** Connects, sends a message through and back, and says what the key exchange guess came to. */
async function guessOutcome(o: ConnectOptions): Promise<{ kexGuess: string; pipelined: string }> {
  const conn = await connectControl(o);
  try {
    await roundTrip(conn);
    return { kexGuess: conn.kexGuess, pipelined: conn.pipelined };
  } finally {
    conn.close();
  }
}

const canRunSshd = await (async (): Promise<string | undefined> => {
  if (process.getuid?.() !== 0) return 'sshd needs root here';
  try {
    await access(SSHD);
  } catch {
    return `${SSHD} is not installed`;
  }
  return undefined;
})();

describe('key exchange guess', () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => {};
  let clientKey: Buffer;
  let authorized: AuthorizedKey[] = [];
  const stop: (() => Promise<void>)[] = [];

  before(async () => {
    ({ dir, cleanup } = await tempDir('kexguess'));
    const alice = await sshKeygen(dir, 'alice');
    clientKey = await readFile(alice);
    authorized = parseAuthorizedKeys(await readFile(`${alice}.pub`, 'utf8')).keys;
  });

  after(async () => {
    for (const s of stop.splice(0)) await s();
    await cleanup();
  });

  function opts(port: number, user: string, fingerprint: string): ConnectOptions {
    return { host: '127.0.0.1', port, user, privateKey: clientKey, hostKey: { fingerprint }, timeoutMs: 8000 };
  }

  /** sshd on a free port whose `tachyon-v1` subsystem is `cat` (every message comes back). */
  async function startSshd(name: string, kex: string): Promise<{ port: number; fingerprint: string }> {
    const hostKey = await sshKeygen(dir, `${name}_host`);
    const fingerprint = fingerprintOf(
      Buffer.from((await readFile(`${hostKey}.pub`, 'utf8')).split(' ')[1] ?? '', 'base64'),
    );
    await writeFile(join(dir, 'authorized_keys'), await readFile(join(dir, 'alice.pub')));
    await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
    const port = await freePort();
    const config = join(dir, `${name}.conf`);
    await writeFile(
      config,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'PidFile none',
        `KexAlgorithms ${kex}`,
        'HostKeyAlgorithms ssh-ed25519',
        'Subsystem tachyon-v1 /bin/cat',
        '',
      ].join('\n'),
    );
    const child: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`sshd did not start: ${log}`)), 5000);
      child.stderr!.on('data', (c: Buffer) => {
        log += c.toString('utf8');
        if (log.includes('Server listening')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`sshd exited (${code}): ${log}`));
      });
    });
    stop.push(async () => {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    });
    return { port, fingerprint };
  }

  /** Our control server with the host key in `keyFile` (created if missing), for alice. */
  async function withControlServer(keyFile: string, fn: (port: number, fingerprint: string) => Promise<void>): Promise<void> {
    const hostKey = await loadOrCreateHostKey(keyFile);
    const server = await startControlServer({
      listen: '127.0.0.1',
      port: 0,
      hostKey: hostKey.privateKey,
      authorize: async (user, _algo, blob) => user === 'alice' && findAuthorizedKey(authorized, blob) !== undefined,
      onSession: (link) => echoSession(link),
    });
    try {
      await fn(server.port, hostKey.fingerprint);
    } finally {
      await server.close();
    }
  }

  it('OpenSSH with the same first choices uses the guessed share', { skip: canRunSshd }, async () => {
    const sshd = await startSshd('same', 'curve25519-sha256,ecdh-sha2-nistp256');
    assert.equal((await guessOutcome(opts(sshd.port, 'root', sshd.fingerprint))).kexGuess, 'right');
  });

  it('OpenSSH preferring another key exchange skips the guess, and the client sends its share again', { skip: canRunSshd }, async () => {
    // curve25519 is still negotiated (the client's first choice the server supports), but
    // the server's first choice differs: by RFC 4253 the guess was wrong
    const sshd = await startSshd('other', 'ecdh-sha2-nistp256,curve25519-sha256');
    assert.equal((await guessOutcome(opts(sshd.port, 'root', sshd.fingerprint))).kexGuess, 'wrong');
  });

  for (const [type, expected] of [
    ['ed25519', 'right'],
    ['rsa', 'wrong'], // the server's first host key algorithm is rsa-sha2-512, the client's ssh-ed25519
  ] as const) {
    it(`our control server with an ${type} host key: the guess is ${expected}`, async () => {
      const keyFile = type === 'ed25519' ? join(dir, 'tachyon_host') : await sshKeygen(dir, 'tachyon_rsa_host', 'rsa', ['-b', '3072']);
      await withControlServer(keyFile, async (port, fingerprint) => {
        assert.deepEqual(await guessOutcome(opts(port, 'alice', fingerprint)), { kexGuess: expected, pipelined: 'one-flight' });
      });
    });
  }

  it('a stock ssh2 server skips every guessed packet: the client sends its share again', async () => {
    const hostKey = await loadOrCreateHostKey(join(dir, 'plain_host'));
    const plain = new ssh2.Server({ hostKeys: [hostKey.privateKey] }, (client) => {
      client.on('error', () => {});
      client.on('authentication', (ctx) => ctx.accept());
      client.on('session', (accept) =>
        accept().on('subsystem', (acceptSub) => {
          const ch = acceptSub();
          ch.on('data', () => ch.write(encodeFrame({ t: 'bye' })));
        }),
      );
    });
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    try {
      const port = (plain.address() as AddressInfo).port;
      assert.equal((await guessOutcome(opts(port, 'alice', hostKey.fingerprint))).kexGuess, 'wrong');
    } finally {
      await new Promise<void>((r) => plain.close(() => r()));
    }
  });

  it('without pipelining the client does not guess', async () => {
    await withControlServer(join(dir, 'tachyon_host'), async (port, fingerprint) => {
      assert.equal((await guessOutcome({ ...opts(port, 'alice', fingerprint), pipeline: false })).kexGuess, 'no');
    });
  });
});
