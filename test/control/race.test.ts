/**
 * Racing connection attempts (`race` in src/control/ssh-client.ts): on a lossy long path a
 * lost SYN or handshake segment costs a retransmission timeout, so the client may open
 * several connections and go on with the first through its key exchange. These tests use
 * a real control server and real TCP connections: a black hole (accepts, never answers)
 * stands for a connection whose segments were lost, a delaying relay for a slow one.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { TachyonError } from '../../src/core/errors.js';
import type { HostKeyInfo } from '../../src/control/hostkeys.js';
import type { ControlMessage } from '../../src/control/messages.js';
import { connectControl } from '../../src/control/ssh-client.js';
import type { ConnectOptions, ControlConnection } from '../../src/control/ssh-client.js';
import type { ControlServer, ControlServerEvent } from '../../src/control/ssh-server.js';
import { echoServer, sleep } from './helpers.js';
import { slowRelay } from '../helpers/relay.js';
import type { EchoServerFixture } from './helpers.js';

/** A TCP server that accepts and never sends a byte; `closed` counts connections the client ended. */
async function blackHole(): Promise<{ port: number; accepted: () => number; closed: () => number; close: () => Promise<void> }> {
  let accepted = 0;
  let closed = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    accepted++;
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => closed++);
    s.resume();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    accepted: () => accepted,
    closed: () => closed,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function connectTo(port: number): net.Socket {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  return s;
}

async function echoOnce(conn: ControlConnection): Promise<void> {
  const answered = new Promise<ControlMessage>((resolve, reject) => {
    conn.link.onMessage(resolve);
    conn.link.onClose((err) => reject(err ?? new Error('closed before the answer')));
  });
  conn.link.send({ t: 'bye' });
  assert.equal((await answered).t, 'bye');
}

describe('racing connection attempts', () => {
  let fixture: EchoServerFixture;
  let hostKey: HostKeyInfo;
  let aliceKey: Buffer;
  let otherKey: Buffer;
  let server: ControlServer;
  let events: ControlServerEvent[];

  before(async () => {
    fixture = await echoServer('race');
    ({ hostKey, aliceKey, otherKey, server, events } = fixture);
  });

  after(async () => {
    await fixture.close();
  });

  function opts(over: Partial<ConnectOptions> = {}): ConnectOptions {
    return { host: '127.0.0.1', port: server.port, user: 'alice', privateKey: aliceKey, hostKey: { fingerprint: hostKey.fingerprint }, timeoutMs: 5_000, ...over };
  }

  /** The server's events once its connections have settled: how many connected, authenticated, ended without a user. */
  async function serverSaw(): Promise<{ connects: number; accepted: number; sessions: number; anonymousDisconnects: number }> {
    await sleep(150);
    return {
      connects: events.filter((e) => e.type === 'connect').length,
      accepted: events.filter((e) => e.type === 'auth' && e.outcome === 'accepted').length,
      sessions: events.filter((e) => e.type === 'session-start').length,
      anonymousDisconnects: events.filter((e) => e.type === 'disconnect' && e.user === undefined).length,
    };
  }

  it('goes on with the attempt that answers while the other hangs, and closes the hanging one', async () => {
    for (const order of ['hole first', 'hole second'] as const) {
      const hole = await blackHole();
      try {
        const sockets = order === 'hole first' ? [connectTo(hole.port), connectTo(server.port)] : [connectTo(server.port), connectTo(hole.port)];
        const t0 = performance.now();
        const conn = await connectControl(opts({ socket: sockets, early: true }));
        await echoOnce(conn);
        const ms = performance.now() - t0;
        conn.close();
        await sleep(50);
        assert.equal(hole.accepted(), 1);
        assert.equal(hole.closed(), 1, `${order}: the hanging attempt is closed once the other won`);
        assert.ok(ms < 2_000, `${order}: connected in ${ms.toFixed(0)} ms`);
      } finally {
        await hole.close();
      }
    }
    // the same hanging connection alone: the attempt waits for its timeout
    const hole = await blackHole();
    try {
      await assert.rejects(connectControl(opts({ socket: connectTo(hole.port), timeoutMs: 400 })), (e: unknown) => {
        assert.ok(e instanceof TachyonError);
        assert.equal(e.code, 'CONNECT', e.message);
        assert.match(e.message, /Timed out after 400 ms in the SSH handshake/);
        return true;
      });
    } finally {
      await hole.close();
    }
  });

  it('authenticates once: the slower attempt ends before authenticating, and the server counts no failure', async () => {
    events.length = 0;
    const relay = await slowRelay(server.port, 60);
    try {
      const conn = await connectControl(opts({ socket: [connectTo(relay.port), connectTo(server.port)], early: true }));
      await echoOnce(conn);
      conn.close();
      await sleep(300);
      const saw = await serverSaw();
      assert.equal(saw.connects, 2, JSON.stringify(events));
      assert.equal(saw.accepted, 1, JSON.stringify(events));
      assert.equal(saw.sessions, 1, JSON.stringify(events));
      assert.equal(saw.anonymousDisconnects, 1, JSON.stringify(events));
      assert.ok(!events.some((e) => e.type === 'auth' && e.outcome !== 'accepted'), JSON.stringify(events));
    } finally {
      await relay.close();
    }
  });

  it('opens `race` connections itself when none are given', async () => {
    events.length = 0;
    const conn = await connectControl(opts({ race: 3 }));
    await echoOnce(conn);
    conn.close();
    const saw = await serverSaw();
    assert.equal(saw.connects, 3, JSON.stringify(events));
    assert.equal(saw.accepted, 1, JSON.stringify(events));
    assert.equal(saw.anonymousDisconnects, 2, JSON.stringify(events));
  });

  it('ends at once on a host key mismatch, and on a refused key, with the error a single attempt gives', async () => {
    const wrong = 'SHA256:' + Buffer.alloc(32, 7).toString('base64').replace(/=+$/, '');
    const t0 = performance.now();
    await assert.rejects(connectControl(opts({ race: 2, hostKey: { fingerprint: wrong } })), (e: unknown) => {
      assert.ok(e instanceof TachyonError);
      assert.equal(e.code, 'HOST_KEY_MISMATCH', e.message);
      return true;
    });
    assert.ok(performance.now() - t0 < 2_000);
    await assert.rejects(connectControl(opts({ race: 2, privateKey: otherKey })), (e: unknown) => {
      assert.ok(e instanceof TachyonError);
      assert.equal(e.code, 'AUTH_FAILED', e.message);
      return true;
    });
  });

  it('reports a connection error when every attempt fails, and refuses a bad race size', async () => {
    const hole = await blackHole();
    const port = hole.port;
    await hole.close(); // nothing listens there now
    await assert.rejects(connectControl(opts({ port, race: 2 })), (e: unknown) => {
      assert.ok(e instanceof TachyonError);
      assert.equal(e.code, 'CONNECT', e.message);
      assert.match(e.message, /ECONNREFUSED/);
      return true;
    });
    for (const race of [0, 9, 1.5]) {
      await assert.rejects(connectControl(opts({ race })), (e: unknown) => e instanceof TachyonError && e.code === 'USAGE');
    }
  });
});
