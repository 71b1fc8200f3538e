import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SimClock, SimNetwork, mulberry32, type LinkConfig, type SimEvent } from '../../src/testkit/index.js';
import type { DatagramSocket, PeerAddress } from '../../src/transport/socket/types.js';

const A = '10.0.0.1';
const B = '10.0.0.2';

interface Arrival {
  t: number;
  seq: number;
  from: PeerAddress;
  bytes: Buffer;
}

/** Two sockets A:5000 → B:6000 on a fresh network; packets carry a 4-byte sequence number. */
function pair(cfg: LinkConfig | undefined, seed = 7) {
  const clock = new SimClock();
  const net = new SimNetwork(clock, { seed });
  if (cfg) net.link(A, B, cfg);
  const a = net.socket(A, 5000);
  const b = net.socket(B, 6000);
  const arrivals: Arrival[] = [];
  b.onDatagram((bytes, from) => arrivals.push({ t: clock.now(), seq: bytes.readUInt32BE(0), from, bytes }));
  const packet = (seq: number, size = 1000): Buffer => {
    const p = Buffer.alloc(size);
    p.writeUInt32BE(seq, 0);
    return p;
  };
  return { clock, net, a, b, arrivals, packet };
}

function sendMany(a: DatagramSocket, to: PeerAddress, count: number, packet: (seq: number) => Buffer): void {
  for (let i = 0; i < count; i++) a.send([packet(i)], to);
}

describe('SimNetwork', () => {
  it('delivers after exactly the configured delay, with the sender address', () => {
    const { clock, net, a, b, arrivals, packet } = pair({ delayMs: 25 });
    a.send([packet(1), packet(2)], b.local());
    clock.advance(24.999);
    assert.equal(arrivals.length, 0);
    clock.advance(0.001);
    assert.deepEqual(
      arrivals.map((x) => [x.t, x.seq]),
      [
        [25, 1],
        [25, 2],
      ],
    );
    assert.deepEqual(arrivals[0]?.from, { address: A, port: 5000 });
    const st = net.stats(A, B);
    assert.equal(st.sent, 2);
    assert.equal(st.delivered, 2);
    assert.equal(st.bytesSent, 2000);
    assert.equal(st.bytesDelivered, 2000);
  });

  it('uses 1 ms and no loss for pairs never configured; links are per direction', () => {
    const { clock, net, a, b, arrivals, packet } = pair({ delayMs: 50, loss: 1 });
    const back: number[] = [];
    a.onDatagram(() => back.push(clock.now()));
    b.send([packet(1)], a.local()); // B → A: default link
    a.send([packet(2)], b.local()); // A → B: always lost
    clock.advance(100);
    assert.deepEqual(back, [1]);
    assert.equal(arrivals.length, 0);
    assert.equal(net.stats(A, B).lost, 1);
    assert.equal(net.stats(B, A).delivered, 1);
  });

  it('loses packets at the configured rate (10,000 packets, within 4 standard deviations)', () => {
    const n = 10_000;
    const p = 0.05;
    const { clock, net, a, b, arrivals, packet } = pair({ delayMs: 10, loss: p });
    sendMany(a, b.local(), n, (i) => packet(i, 100));
    clock.advance(20);
    const st = net.stats(A, B);
    const sd = Math.sqrt(n * p * (1 - p));
    assert.ok(Math.abs(st.lost - n * p) < 4 * sd, `lost ${st.lost}, expected ${n * p} ± ${4 * sd}`);
    assert.equal(st.lost + st.delivered, n);
    assert.equal(arrivals.length, st.delivered);
    // without reorder, survivors arrive in order
    for (let i = 1; i < arrivals.length; i++) assert.ok((arrivals[i]?.seq ?? 0) > (arrivals[i - 1]?.seq ?? 0));
  });

  it('a bottleneck paces packets at its rate and queues them', () => {
    // 8 Mbit/s: a 1000-byte packet takes exactly 1 ms to serialise.
    const { clock, net, a, b, arrivals, packet } = pair({ delayMs: 10, rateBps: 8e6 });
    sendMany(a, b.local(), 100, packet);
    const st = net.stats(A, B);
    assert.equal(st.queuedBytes, 99_000);
    clock.advance(200);
    assert.equal(arrivals.length, 100);
    arrivals.forEach((x, i) => assert.ok(Math.abs(x.t - (10 + (i + 1))) < 1e-9, `packet ${i} at ${x.t}`));
    assert.equal(net.stats(A, B).queuedBytes, 0);
    assert.equal(net.stats(A, B).maxQueuedBytes, 99_000);
  });

  it('a bottleneck drops the tail when its queue is full', () => {
    const { clock, net, a, b, arrivals, packet } = pair({ delayMs: 5, rateBps: 8e6, queueBytes: 10_000 });
    sendMany(a, b.local(), 100, packet);
    clock.advance(100);
    // one packet in service plus ten waiting fit; the rest is dropped
    assert.equal(arrivals.length, 11);
    assert.deepEqual(
      arrivals.map((x) => x.seq),
      Array.from({ length: 11 }, (_, i) => i),
    );
    const st = net.stats(A, B);
    assert.equal(st.droppedQueue, 89);
    assert.equal(st.maxQueuedBytes, 10_000);
  });

  it('a bottleneck limits throughput of an over-driven sender to its rate', () => {
    // Offer 20 Mbit/s (one 1250-byte packet every 0.5 ms) into a 10 Mbit/s link for 2 s.
    const { clock, net, a, b, arrivals, packet } = pair({ delayMs: 20, rateBps: 10e6, queueBytes: 50_000 });
    let sent = 0;
    const tick = (): void => {
      a.send([packet(sent++, 1250)], b.local());
      if (sent < 4000) clock.setTimer(0.5, tick);
    };
    tick();
    clock.advance(2100);
    const st = net.stats(A, B);
    const first = arrivals[0]?.t ?? 0;
    const last = arrivals.at(-1)?.t ?? 0;
    const bps = ((arrivals.length - 1) * 1250 * 8 * 1000) / (last - first);
    assert.ok(Math.abs(bps - 10e6) / 10e6 < 0.01, `throughput ${bps}`);
    assert.ok(st.droppedQueue > 1800 && st.droppedQueue < 2100, `dropped ${st.droppedQueue}`);
    assert.ok(st.maxQueuedBytes <= 50_000);
    assert.equal(st.delivered + st.droppedQueue, 4000);
    // a full queue of 40 packets adds 40 ms to the 20 ms path
    const worst = Math.max(...arrivals.map((x) => x.t - x.seq * 0.5));
    assert.ok(worst > 55 && worst <= 61.1, `worst one-way delay ${worst}`);
  });

  it('jitter varies the delay within [delay, delay + jitter] without reordering', () => {
    const { clock, a, b, arrivals, packet } = pair({ delayMs: 30, jitterMs: 10 });
    const sentAt: number[] = [];
    for (let i = 0; i < 500; i++) {
      sentAt.push(clock.now());
      a.send([packet(i)], b.local());
      clock.advance(0.2);
    }
    clock.advance(100);
    assert.equal(arrivals.length, 500);
    const delays = arrivals.map((x) => x.t - (sentAt[x.seq] ?? 0));
    assert.ok(delays.every((d) => d >= 30 && d <= 40 + 1e-9));
    assert.ok(Math.max(...delays) - Math.min(...delays) > 5, 'jitter has some spread');
    arrivals.forEach((x, i) => assert.equal(x.seq, i));
  });

  it('reorders: some packets are overtaken by later ones', () => {
    const { clock, net, a, b, arrivals, packet } = pair({ delayMs: 20, reorder: 0.1 });
    for (let i = 0; i < 1000; i++) {
      a.send([packet(i)], b.local());
      clock.advance(0.1);
    }
    clock.advance(100);
    const st = net.stats(A, B);
    assert.equal(arrivals.length, 1000);
    assert.ok(st.reordered > 60 && st.reordered < 140, `reordered ${st.reordered}`);
    let inversions = 0;
    for (let i = 1; i < arrivals.length; i++) if ((arrivals[i]?.seq ?? 0) < (arrivals[i - 1]?.seq ?? 0)) inversions++;
    assert.ok(inversions > 0.5 * st.reordered, `inversions ${inversions}`);
    assert.deepEqual(
      arrivals.map((x) => x.seq).sort((x, y) => x - y),
      Array.from({ length: 1000 }, (_, i) => i),
    );
  });

  it('duplicates: extra copies arrive, in distinct buffers', () => {
    const { clock, net, a, b, arrivals, packet } = pair({ delayMs: 5, duplicate: 0.2 });
    sendMany(a, b.local(), 1000, packet);
    clock.advance(50);
    const st = net.stats(A, B);
    assert.ok(st.duplicated > 140 && st.duplicated < 260, `duplicated ${st.duplicated}`);
    assert.equal(arrivals.length, 1000 + st.duplicated);
    assert.equal(st.delivered, arrivals.length);
    const bySeq = new Map<number, Buffer[]>();
    for (const x of arrivals) bySeq.set(x.seq, [...(bySeq.get(x.seq) ?? []), x.bytes]);
    const twice = [...bySeq.values()].filter((v) => v.length === 2);
    assert.equal(twice.length, st.duplicated);
    for (const [x, y] of twice) assert.notEqual(x?.buffer === y?.buffer && x?.byteOffset === y?.byteOffset, true);
  });

  it('corrupts one bit of a copy, never the sender buffer', () => {
    const { clock, net, a, b, arrivals } = pair({ delayMs: 5, corrupt: 0.3 });
    const originals: Buffer[] = [];
    for (let i = 0; i < 500; i++) {
      const p = Buffer.alloc(64, 0xa5);
      p.writeUInt32BE(i, 60);
      originals.push(p);
      a.send([p], b.local());
    }
    const pristine = originals.map((p) => Buffer.from(p));
    clock.advance(20);
    const st = net.stats(A, B);
    assert.ok(st.corrupted > 110 && st.corrupted < 190, `corrupted ${st.corrupted}`);
    originals.forEach((p, i) => assert.deepEqual(p, pristine[i], 'sender buffer untouched'));
    let flipped = 0;
    assert.equal(arrivals.length, 500); // no loss, no reorder: arrival i is packet i
    for (const [i, x] of arrivals.entries()) {
      const orig = pristine[i] as Buffer;
      let bits = 0;
      for (let k = 0; k < orig.length; k++) {
        let d = (orig[k] as number) ^ (x.bytes[k] as number);
        while (d) {
          bits += d & 1;
          d >>= 1;
        }
      }
      assert.ok(bits === 0 || bits === 1);
      flipped += bits;
    }
    assert.equal(flipped, st.corrupted);
  });

  it('does not copy uncorrupted packets', () => {
    const { clock, a, b, arrivals } = pair({ delayMs: 1 });
    const p = Buffer.alloc(100, 1);
    a.send([p], b.local());
    clock.advance(1);
    assert.equal(arrivals[0]?.bytes.buffer, p.buffer);
    const u = new Uint8Array(16);
    a.send([u], b.local());
    clock.advance(1);
    assert.equal(arrivals[1]?.bytes.buffer, u.buffer);
    assert.ok(Buffer.isBuffer(arrivals[1]?.bytes));
  });

  it('drops packets to unbound addresses silently; close() unbinds and the port can be rebound', async () => {
    const { clock, net, a, b, arrivals, packet } = pair({ delayMs: 3 });
    a.send([packet(1)], { address: B, port: 9999 });
    a.send([packet(2)], { address: '10.9.9.9', port: 1 });
    clock.advance(10);
    assert.equal(arrivals.length, 0);
    assert.equal(net.stats(A, B).noListener, 1);
    assert.equal(net.stats(A, '10.9.9.9').noListener, 1);

    a.send([packet(3)], b.local()); // in flight while b closes
    await b.close();
    await b.close(); // idempotent
    clock.advance(10);
    assert.equal(arrivals.length, 0);
    assert.equal(net.stats(A, B).noListener, 2);
    assert.throws(() => net.socket(A, 5000), /in use/);
    const b2 = net.socket(B, 6000);
    const got: number[] = [];
    b2.onDatagram((x) => got.push(x.readUInt32BE(0)));
    a.send([packet(4)], b2.local());
    clock.advance(10);
    assert.deepEqual(got, [4]);
    await a.close();
    assert.throws(() => a.send([packet(5)], b2.local()), /closed socket/);
  });

  it('allocates ephemeral ports for port 0 and drops oversize packets', () => {
    const { clock, net, b, arrivals } = pair({ delayMs: 1, mtuBytes: 1200 });
    const s1 = net.socket(A, 0);
    const s2 = net.socket(A, 0);
    assert.ok(s1.local().port >= 49152);
    assert.notEqual(s1.local().port, s2.local().port);
    s1.send([Buffer.alloc(1201), Buffer.alloc(1200)], b.local());
    clock.advance(5);
    assert.equal(arrivals.length, 1);
    assert.equal(net.stats(A, B).oversize, 1);
  });

  it('identical seeds give identical traces; different seeds differ', () => {
    const run = (seed: number): SimEvent[] => {
      const cfg: LinkConfig = {
        delayMs: 15,
        jitterMs: 4,
        rateBps: 50e6,
        queueBytes: 30_000,
        loss: 0.02,
        duplicate: 0.01,
        reorder: 0.02,
        corrupt: 0.01,
      };
      const { clock, net, a, b, packet } = pair(cfg, seed);
      net.link(B, A, { ...cfg, loss: 0.05 });
      b.onDatagram((x, from) => b.send([packet(x.readUInt32BE(0), 64)], from)); // ack every packet
      const rec = net.record();
      let i = 0;
      const tick = (): void => {
        a.send([packet(i++, 1200), packet(i++, 1200)], b.local());
        if (i < 4000) clock.setTimer(0.1, tick);
      };
      tick();
      clock.advance(1000);
      rec.stop();
      return rec.events;
    };
    const t1 = run(99);
    const t2 = run(99);
    const t3 = run(100);
    assert.ok(t1.length > 8000);
    assert.deepEqual(t1, t2);
    assert.notDeepEqual(t1, t3);
    const kinds = new Set(t1.map((e) => e.kind));
    for (const k of ['send', 'deliver', 'lose', 'queue-drop', 'duplicate', 'reorder', 'corrupt'] as const) {
      assert.ok(kinds.has(k), `trace has ${k}`);
    }
  });

  it('reconfiguring a link keeps its counters', () => {
    const { clock, net, a, b, arrivals, packet } = pair({ delayMs: 10 });
    a.send([packet(1)], b.local());
    net.link(A, B, { delayMs: 2 });
    a.send([packet(2)], b.local());
    clock.advance(20);
    assert.deepEqual(
      arrivals.map((x) => [x.seq, x.t]),
      [
        [1, 10],
        [2, 10], // jitter-free in-order delivery: it cannot overtake packet 1
      ],
    );
    assert.equal(net.stats(A, B).delivered, 2);
  });

  it('rejects invalid link settings', () => {
    const net = new SimNetwork(new SimClock());
    assert.throws(() => net.link(A, B, { delayMs: -1 }), RangeError);
    assert.throws(() => net.link(A, B, { delayMs: 1, loss: 1.5 }), RangeError);
    assert.throws(() => net.link(A, B, { delayMs: 1, rateBps: Number.NaN }), RangeError);
  });

  it('mulberry32 is deterministic and roughly uniform', () => {
    const r1 = mulberry32(5);
    const r2 = mulberry32(5);
    const xs = Array.from({ length: 10_000 }, () => r1());
    assert.deepEqual(
      xs.slice(0, 10),
      Array.from({ length: 10 }, () => r2()),
    );
    assert.ok(xs.every((x) => x >= 0 && x < 1));
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    assert.ok(Math.abs(mean - 0.5) < 0.02);
  });
});
