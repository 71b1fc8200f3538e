/**
 * Pipelined SSH set-up (src/control/ssh-pipeline.ts): how many times the client waits for
 * the server before its first control message is answered, counted on a path with a
 * fixed delay, and what the server does with requests that arrive early.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import ssh2 from 'ssh2';
import { TachyonError } from '../../src/core/errors.js';
import type { HostKeyInfo } from '../../src/control/hostkeys.js';
import { encodeFrame } from '../../src/control/framing.js';
import type { ControlMessage } from '../../src/control/messages.js';
import { connectControl } from '../../src/control/ssh-client.js';
import { holdConnectionMessagesDuringAuth } from '../../src/control/ssh-pipeline.js';
import type { ConnectOptions } from '../../src/control/ssh-client.js';
import type { ControlServer, ControlServerEvent } from '../../src/control/ssh-server.js';
import { echoServer, sleep } from './helpers.js';
import type { EchoServerFixture } from './helpers.js';

const ONE_WAY_MS = 40;

/**
 * A TCP relay that holds every chunk ONE_WAY_MS in each direction and counts the client's
 * flights: a flight is client data that follows data delivered to the client, i.e. each
 * time the client had to wait for the server before it could go on.
 */
async function delayProxy(
  target: number,
): Promise<{ port: number; flights: () => number; upstreamPorts: () => number[]; chunks: () => { dir: 'c2s' | 's2c'; at: number; bytes: number }[]; close: () => Promise<void> }> {
  let flights = 0;
  const chunks: { dir: 'c2s' | 's2c'; at: number; bytes: number }[] = [];
  const upstreamPorts: number[] = [];
  let lastDir: 'c2s' | 's2c' | undefined;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    upstream.once('connect', () => upstreamPorts.push(upstream.localPort ?? 0));
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      sockets.add(s);
      s.on('error', () => {});
    }
    const relay = (from: net.Socket, to: net.Socket, dir: 'c2s' | 's2c'): void => {
      from.on('data', (chunk: Buffer) => {
        chunks.push({ dir, at: performance.now(), bytes: chunk.length });
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
    upstreamPorts: () => [...upstreamPorts],
    chunks: () => [...chunks],
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('pipelined SSH set-up', () => {
  let fixture: EchoServerFixture;
  let hostKey: HostKeyInfo;
  let aliceKey: Buffer;
  let otherKey: Buffer;
  let server: ControlServer;
  let events: ControlServerEvent[];

  before(async () => {
    // the key check answers 5 ms later, as a database lookup would: the early CHANNEL_OPEN must wait
    fixture = await echoServer('pipe', { authorizeDelayMs: 5 });
    ({ hostKey, aliceKey, otherKey, server, events } = fixture);
  });

  after(async () => {
    await fixture.close();
  });

  function opts(port: number, over: Partial<ConnectOptions> = {}): ConnectOptions {
    return { host: '127.0.0.1', port, user: 'alice', privateKey: aliceKey, hostKey: { fingerprint: hostKey.fingerprint }, timeoutMs: 10_000, ...over };
  }

  /** Connects through a delaying relay and waits for the answer to the first message. */
  /**
   * TCP segments with data that the server has sent on its connections from these local
   * ports of the relay, as the kernel counts them (`ss`, data_segs_out).
   */
  function serverSegments(relayPorts: number[]): number {
    let total = 0;
    for (const port of relayPorts) {
      const out = execFileSync('ss', ['-tinH', 'state', 'established', `( sport = :${server.port} and dport = :${port} )`], { encoding: 'utf8' });
      const m = /data_segs_out:(\d+)/.exec(out);
      assert.ok(m, `ss shows no data_segs_out for the server's connection from port ${port}: ${out}`);
      total += Number(m[1]);
    }
    return total;
  }

  async function firstAnswer(pipeline: boolean): Promise<{ flights: number; ms: number; pipelined: string; kexGuess: string; segments: number }> {
    const proxy = await delayProxy(server.port);
    try {
      const t0 = performance.now();
      const conn = await connectControl(opts(proxy.port, { pipeline, early: true }));
      const answered = new Promise<ControlMessage>((resolve, reject) => {
        conn.link.onMessage(resolve);
        conn.link.onClose((err) => reject(err ?? new Error('closed before the answer')));
      });
      conn.link.send({ t: 'bye' });
      const m = await answered;
      assert.equal(m.t, 'bye');
      const segments = serverSegments(proxy.upstreamPorts());
      const result = { flights: proxy.flights(), ms: performance.now() - t0, pipelined: conn.pipelined, kexGuess: conn.kexGuess, segments };
      conn.close();
      return result;
    } finally {
      await proxy.close();
    }
  }

  it('a small segment (SSH IGNORE) follows the authentication flight and the answer to it, so that their loss shows a round trip later', async () => {
    const proxy = await delayProxy(server.port);
    try {
      const lines: string[] = [];
      const conn = await connectControl(opts(proxy.port, { early: true, trace: (l) => lines.push(l) }));
      const answered = new Promise<ControlMessage>((resolve, reject) => {
        conn.link.onMessage(resolve);
        conn.link.onClose((err) => reject(err ?? new Error('closed before the answer')));
      });
      // answered without closing (a bye would end the connection before the guard arrives)
      conn.link.send({ t: 'digests', files: [{ id: 1, sha256: 'a'.repeat(64) }] });
      assert.equal((await answered).t, 'results');
      await sleep(ONE_WAY_MS + 40);
      conn.close();
      // the server's guard, behind its answer
      assert.equal(lines.filter((l) => l.includes('Received IGNORE')).length, 1, lines.join('\n'));
      // the client's chunks after the key exchange reply (the server's second chunk) and
      // before the answer: the authentication flight, then the guard a few ms later
      const log = proxy.chunks();
      const s2c = log.map((c, i) => (c.dir === 's2c' ? i : -1)).filter((i) => i >= 0);
      const between = log.slice(s2c[1]! + 1, s2c[2]).filter((c) => c.dir === 'c2s');
      assert.equal(between.length, 2, `client chunks between the key exchange reply and the answer: ${JSON.stringify(between)}`);
      const [flight, guard] = between as [(typeof log)[0], (typeof log)[0]];
      assert.ok(flight.bytes > 300, `the authentication flight is ${flight.bytes} bytes`);
      assert.ok(guard.bytes < 64, `the guard is ${guard.bytes} bytes`);
      const gap = guard.at - flight.at;
      assert.ok(gap >= 2 && gap < 40, `the guard left ${gap.toFixed(1)} ms after the flight`);
    } finally {
      await proxy.close();
    }
  });

  it('answers the first control message at least six round trips sooner than a stock client', async () => {
    const stock = await firstAnswer(false);
    const fast = await firstAnswer(true);
    const rtt = 2 * ONE_WAY_MS;
    console.log(
      `stock: ${stock.flights} flights, ${stock.ms.toFixed(0)} ms; pipelined: ${fast.flights} flights, ${fast.ms.toFixed(0)} ms (RTT ${rtt} ms); server data segments: stock ${stock.segments}, pipelined ${fast.segments}`,
    );
    assert.equal(stock.pipelined, 'no');
    assert.equal(fast.pipelined, 'one-flight', 'ssh2 internals changed: the pipelined path is off (see src/control/ssh-pipeline.ts)');
    assert.equal(stock.kexGuess, 'no');
    assert.equal(fast.kexGuess, 'right', 'ssh2 internals changed: the key exchange guess is off (see src/control/ssh-pipeline.ts)');
    // the key exchange share goes with the version string (one wait less), and after the
    // key exchange: service, key query, signature, channel, subsystem, first message (6
    // waits) become one flight (1 wait)
    // (the relay counts 8 or 9 for the stock client since the server gathers each flight
    // for 5 ms: how the stock client's writes interleave with the server's varies)
    assert.ok(stock.flights - fast.flights >= 6, `stock ${stock.flights} flights, pipelined ${fast.flights}`);
    assert.equal(fast.flights, 2, 'version + KEXINIT + key share, then the authentication flight');
    assert.ok(stock.ms - fast.ms > 5 * rtt, `saved ${(stock.ms - fast.ms).toFixed(0)} ms`);
    // each flight in one segment (src/control/flights.ts): the version, the key exchange
    // reply, the answer to the authentication flight (with the echo of the first message),
    // the guard behind it (ssh-pipeline.ts, guardFlight), and at most one more for a flight
    // split by the relay's timing. Each write of its own made 13, each a chance to lose a
    // flight's tail on a lossy path.
    assert.ok(fast.segments <= 5, `the server sent ${fast.segments} data segments`);
  });

  it('refuses a channel pipelined behind a refused key: no session starts, the link ends with AUTH_FAILED', async () => {
    const before = events.length;
    const conn = await connectControl(opts(server.port, { privateKey: otherKey, early: true }));
    const closed = new Promise<Error | undefined>((resolve) => conn.link.onClose(resolve));
    conn.link.send({ t: 'bye' });
    const err = await closed;
    assert.ok(err instanceof TachyonError, String(err));
    assert.equal(err.code, 'AUTH_FAILED', err.message);
    assert.match(err.message, /refused public key authentication as "alice"/);
    conn.close();
    // without `early`, connectControl itself reports it
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
      assert.equal(conn.pipelined, 'two-flights', 'not a Tachyon_2 server: the subsystem request waits for the channel');
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
    assert.equal(conn.pipelined, 'one-flight');
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

  it('first messages larger than what may go ahead of the channel wait for it, in order', async () => {
    const conn = await connectControl(opts(server.port));
    assert.equal(conn.pipelined, 'one-flight');
    const answers: ControlMessage[] = [];
    const done = new Promise<void>((resolve, reject) => {
      conn.link.onMessage((m) => {
        answers.push(m);
        if (m.t === 'bye') resolve();
      });
      conn.link.onClose((err) => reject(err ?? new Error('closed')));
    });
    // ~60 KB of digests: more than goes ahead of the channel confirmation (16 KiB)
    const files = Array.from({ length: 700 }, (_, id) => ({ id, sha256: id.toString(16).padStart(64, '0') }));
    conn.link.send({ t: 'digests', files });
    conn.link.send({ t: 'bye' });
    await done;
    assert.deepEqual(answers.map((m) => m.t), ['results', 'bye']);
    const results = answers[0]!;
    assert.ok(results.t === 'results');
    assert.deepEqual(results.files.map((f) => f.id), files.map((f) => f.id));
    conn.close();
  });
});

describe('holdConnectionMessagesDuringAuth', () => {
  const NAMES = ['CHANNEL_OPEN', 'CHANNEL_OPEN_CONFIRMATION', 'CHANNEL_OPEN_FAILURE', 'CHANNEL_REQUEST', 'CHANNEL_SUCCESS', 'CHANNEL_FAILURE', 'CHANNEL_DATA', 'CHANNEL_EXTENDED_DATA', 'CHANNEL_WINDOW_ADJUST', 'CHANNEL_EOF', 'CHANNEL_CLOSE', 'GLOBAL_REQUEST'];
  function fakeConnection(): { conn: object; calls: string[]; handlers: Record<string, (...a: unknown[]) => void> } {
    const calls: string[] = [];
    const handlers: Record<string, (...a: unknown[]) => void> = {};
    for (const n of NAMES) handlers[n] = (_p: unknown, recipient: unknown) => calls.push(`${n}:${String(recipient)}`);
    return { conn: { _protocol: { _handlers: handlers } }, calls, handlers };
  }

  it('holds connection messages while a decision is pending and replays them in order after it', () => {
    const { conn, calls, handlers } = fakeConnection();
    let pending = false;
    const release = holdConnectionMessagesDuringAuth(conn, () => pending)!;
    assert.ok(release);
    handlers['CHANNEL_OPEN']!(undefined, 0);
    assert.deepEqual(calls, ['CHANNEL_OPEN:0'], 'nothing pending: handled at once');
    pending = true;
    handlers['CHANNEL_OPEN']!(undefined, 1);
    handlers['CHANNEL_REQUEST']!(undefined, 1);
    handlers['CHANNEL_DATA']!(undefined, 1, Buffer.alloc(10));
    release();
    assert.deepEqual(calls, ['CHANNEL_OPEN:0'], 'still pending: release does nothing');
    pending = false;
    handlers['CHANNEL_EOF']!(undefined, 1); // behind the held ones, not ahead of them
    assert.deepEqual(calls, ['CHANNEL_OPEN:0']);
    release();
    assert.deepEqual(calls, ['CHANNEL_OPEN:0', 'CHANNEL_OPEN:1', 'CHANNEL_REQUEST:1', 'CHANNEL_DATA:1', 'CHANNEL_EOF:1']);
    handlers['CHANNEL_CLOSE']!(undefined, 1);
    assert.equal(calls.at(-1), 'CHANNEL_CLOSE:1');
  });

  it('holds at most maxHeld messages and maxBytes of data: past that, all are handled at once', () => {
    const a = fakeConnection();
    holdConnectionMessagesDuringAuth(a.conn, () => true, { maxHeld: 3, maxBytes: 1000 });
    for (let i = 0; i < 3; i++) a.handlers['GLOBAL_REQUEST']!(undefined, i);
    assert.deepEqual(a.calls, []);
    a.handlers['GLOBAL_REQUEST']!(undefined, 3);
    assert.deepEqual(a.calls, ['GLOBAL_REQUEST:0', 'GLOBAL_REQUEST:1', 'GLOBAL_REQUEST:2', 'GLOBAL_REQUEST:3']);
    const b = fakeConnection();
    holdConnectionMessagesDuringAuth(b.conn, () => true, { maxHeld: 100, maxBytes: 1000 });
    b.handlers['CHANNEL_DATA']!(undefined, 0, Buffer.alloc(600));
    assert.deepEqual(b.calls, []);
    b.handlers['CHANNEL_DATA']!(undefined, 0, Buffer.alloc(600));
    assert.deepEqual(b.calls, ['CHANNEL_DATA:0', 'CHANNEL_DATA:0']);
  });

  it('changes nothing when ssh2 does not look as expected', () => {
    assert.equal(holdConnectionMessagesDuringAuth({}, () => true), undefined);
    assert.equal(holdConnectionMessagesDuringAuth({ _protocol: { _handlers: { CHANNEL_OPEN: () => {} } } }, () => true), undefined);
  });
});
