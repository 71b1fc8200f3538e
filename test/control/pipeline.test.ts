/**
 * Pipelined SSH set-up (src/control/ssh-pipeline.ts): how many times the client waits for
 * the server before its first control message is answered, counted on a path with a
 * fixed delay, and what the server does with requests that arrive early.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import ssh2 from 'ssh2';
import { TachyonError } from '../../src/core/errors.js';
import { findAuthorizedKey, loadOrCreateHostKey, parseAuthorizedKeys } from '../../src/control/hostkeys.js';
import type { AuthorizedKey, HostKeyInfo } from '../../src/control/hostkeys.js';
import { encodeFrame } from '../../src/control/framing.js';
import type { ControlMessage } from '../../src/control/messages.js';
import { connectControl } from '../../src/control/ssh-client.js';
import type { ConnectOptions } from '../../src/control/ssh-client.js';
import { startControlServer } from '../../src/control/ssh-server.js';
import type { ControlServer, ControlServerEvent } from '../../src/control/ssh-server.js';
import { echoSession, sleep, sshKeygen, tempDir } from './helpers.js';

const ONE_WAY_MS = 40;

/**
 * A TCP relay that holds every chunk ONE_WAY_MS in each direction and counts the client's
 * flights: a flight is client data that follows data delivered to the client, i.e. each
 * time the client had to wait for the server before it could go on.
 */
async function delayProxy(target: number): Promise<{ port: number; flights: () => number; close: () => Promise<void> }> {
  let flights = 0;
  let lastDir: 'c2s' | 's2c' | undefined;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      sockets.add(s);
      s.on('error', () => {});
    }
    const relay = (from: net.Socket, to: net.Socket, dir: 'c2s' | 's2c'): void => {
      from.on('data', (chunk: Buffer) => {
        setTimeout(() => {
          if (dir === 'c2s' && lastDir !== 'c2s') flights++;
          lastDir = dir;
          if (!to.destroyed) to.write(chunk);
        }, ONE_WAY_MS);
      });
      from.on('close', () => setTimeout(() => to.destroy(), ONE_WAY_MS));
    };
    relay(client, upstream, 'c2s');
    relay(upstream, client, 's2c');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    flights: () => flights,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('pipelined SSH set-up', () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => {};
  let hostKey: HostKeyInfo;
  let aliceKey: Buffer;
  let otherKey: Buffer;
  let authorized: AuthorizedKey[] = [];
  let server: ControlServer;
  const events: ControlServerEvent[] = [];

  before(async () => {
    ({ dir, cleanup } = await tempDir('pipe'));
    hostKey = await loadOrCreateHostKey(join(dir, 'host_key'));
    const [alice, other] = await Promise.all([sshKeygen(dir, 'alice'), sshKeygen(dir, 'other')]);
    aliceKey = await readFile(alice);
    otherKey = await readFile(other);
    authorized = parseAuthorizedKeys(await readFile(`${alice}.pub`, 'utf8')).keys;
    server = await startControlServer({
      listen: '127.0.0.1',
      port: 0,
      hostKey: hostKey.privateKey,
      // decided a little later, as a database lookup would be: the early CHANNEL_OPEN must wait
      authorize: async (user, _algo, blob) => {
        await sleep(5);
        return user === 'alice' && findAuthorizedKey(authorized, blob) !== undefined;
      },
      onSession: (link) => echoSession(link),
      onEvent: (e) => events.push(e),
    });
  });

  after(async () => {
    await server.close();
    await cleanup();
  });

  function opts(port: number, over: Partial<ConnectOptions> = {}): ConnectOptions {
    return { host: '127.0.0.1', port, user: 'alice', privateKey: aliceKey, hostKey: { fingerprint: hostKey.fingerprint }, timeoutMs: 10_000, ...over };
  }

  /** Connects through a delaying relay and waits for the answer to the first message. */
  async function firstAnswer(pipeline: boolean): Promise<{ flights: number; ms: number; pipelined: boolean }> {
    const proxy = await delayProxy(server.port);
    try {
      const t0 = performance.now();
      const conn = await connectControl(opts(proxy.port, { pipeline }));
      const answered = new Promise<ControlMessage>((resolve, reject) => {
        conn.link.onMessage(resolve);
        conn.link.onClose((err) => reject(err ?? new Error('closed before the answer')));
      });
      conn.link.send({ t: 'bye' });
      const m = await answered;
      assert.equal(m.t, 'bye');
      const result = { flights: proxy.flights(), ms: performance.now() - t0, pipelined: conn.pipelined };
      conn.close();
      return result;
    } finally {
      await proxy.close();
    }
  }

  it('answers the first control message four round trips sooner than a stock client', async () => {
    const stock = await firstAnswer(false);
    const fast = await firstAnswer(true);
    const rtt = 2 * ONE_WAY_MS;
    console.log(
      `stock: ${stock.flights} flights, ${stock.ms.toFixed(0)} ms; pipelined: ${fast.flights} flights, ${fast.ms.toFixed(0)} ms (RTT ${rtt} ms)`,
    );
    assert.equal(stock.pipelined, false);
    assert.equal(fast.pipelined, true, 'ssh2 internals changed: the pipelined path is off (see src/control/ssh-pipeline.ts)');
    // after the key exchange: service, key query, signature, channel, subsystem, first message
    // (6 waits) become service+signature+channel, subsystem+first message (2 waits)
    assert.equal(stock.flights - fast.flights, 4, `stock ${stock.flights} flights, pipelined ${fast.flights}`);
    assert.ok(stock.ms - fast.ms > 3 * rtt, `saved ${(stock.ms - fast.ms).toFixed(0)} ms`);
  });

  it('refuses a channel pipelined behind a refused key: no session starts', async () => {
    const before = events.length;
    await assert.rejects(connectControl(opts(server.port, { privateKey: otherKey })), (e: unknown) => {
      assert.ok(e instanceof TachyonError);
      assert.equal(e.code, 'AUTH_FAILED', e.message);
      return true;
    });
    await sleep(50);
    const since = events.slice(before);
    assert.ok(since.some((e) => e.type === 'auth' && e.outcome === 'refused'), JSON.stringify(since));
    assert.ok(!since.some((e) => e.type === 'session-start'), JSON.stringify(since));
  });

  it('reports a refused subsystem on the link when the first message was already sent', async () => {
    // a plain SSH server: accepts the key, refuses every subsystem
    const plain = new ssh2.Server({ hostKeys: [hostKey.privateKey] }, (client) => {
      client.on('error', () => {});
      client.on('authentication', (ctx) => ctx.accept());
      client.on('session', (accept) => accept().on('subsystem', (_a, reject) => reject()));
    });
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    try {
      const conn = await connectControl(opts((plain.address() as AddressInfo).port));
      const closed = new Promise<Error | undefined>((resolve) => conn.link.onClose(resolve));
      conn.link.send({ t: 'bye' });
      const err = await closed;
      assert.ok(err instanceof TachyonError, String(err));
      assert.equal(err.code, 'PROTOCOL');
      assert.match(err.message, /refused the tachyon-v1 subsystem/);
      conn.close();
    } finally {
      await new Promise<void>((r) => plain.close(() => r()));
    }
  });

  it('falls back to opening the channel after authentication when a server refuses it earlier', async () => {
    // stock ssh2 refuses a CHANNEL_OPEN that arrives before its (here slow) authentication decision
    let opens = 0;
    const plain = new ssh2.Server({ hostKeys: [hostKey.privateKey] }, (client) => {
      client.on('error', () => {});
      client.on('authentication', (ctx) => setTimeout(() => ctx.accept(), 20));
      client.on('session', (accept) => {
        opens++;
        accept().on('subsystem', (acceptSub) => {
          const ch = acceptSub();
          ch.on('data', () => ch.write(encodeFrame({ t: 'bye' })));
        });
      });
    });
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    try {
      const conn = await connectControl(opts((plain.address() as AddressInfo).port));
      const answer = new Promise<ControlMessage>((resolve, reject) => {
        conn.link.onMessage(resolve);
        conn.link.onClose((err) => reject(err ?? new Error('closed')));
      });
      conn.link.send({ t: 'bye' });
      assert.equal((await answer).t, 'bye');
      assert.equal(opens, 1, 'the early channel was refused, the second one served');
      conn.close();
    } finally {
      await new Promise<void>((r) => plain.close(() => r()));
    }
  });

  it('takes a TCP connection already under way, connected or failed', async () => {
    const connected = net.connect(server.port, '127.0.0.1');
    connected.on('error', () => {});
    await new Promise((r) => connected.once('connect', r));
    const conn = await connectControl(opts(server.port, { socket: connected }));
    assert.equal(conn.pipelined, true);
    conn.close();
    // a port nobody listens on: the connection has failed before connectControl sees it
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const deadPort = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const refused = net.connect(deadPort, '127.0.0.1');
    refused.on('error', () => {});
    await new Promise((r) => refused.once('close', r));
    const t0 = performance.now();
    await assert.rejects(connectControl(opts(deadPort, { socket: refused })), (e: unknown) => {
      assert.ok(e instanceof TachyonError);
      assert.equal(e.code, 'CONNECT', e.message);
      assert.match(e.message, /ECONNREFUSED/);
      return true;
    });
    assert.ok(performance.now() - t0 < 1000, 'reported at once, not after the timeout');
  });
});
