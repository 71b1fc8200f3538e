/**
 * The receiver times datagrams by when they arrived, not by when it read them: a native
 * socket reports the kernel's receive time, and a burst read late or in one batch must
 * still show the rate and the delays the path gave it (the sender's start-up train and
 * its queue estimate are measured from these).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SimClock } from '../../src/testkit/simclock.js';
import { createProtection, SECRET_BYTES } from '../../src/transport/crypto/aead.js';
import { Endpoint } from '../../src/transport/session/endpoint.js';
import { DataReceiver, fitSlotMs } from '../../src/transport/session/receiver.js';
import { COMMON_HEADER, DATA_HEADER, FLAG_TRAIN, PacketType, decodeFeedback, writeCommon, writeDataHeader, type Feedback } from '../../src/transport/wire/packet.js';
import { Rng } from '../helpers/rng.js';
import { RecordingSink } from '../helpers/sim-flow.js';
import { TapSocket } from '../helpers/tap-socket.js';

const SESSION = 0x7117;
const SENDER = { address: '10.3.0.1', port: 4000 };
/** 1432-byte blocks at 200 Mbit/s arrive every 57.28 µs */
const GAP_MS = (1432 * 8) / 200e6 * 1000;

function rig() {
  const r = new Rng(5);
  const clock = new SimClock({ startMs: 10_000 });
  const tap = new TapSocket({ address: '10.3.0.2', port: 5000 });
  const keyA = r.bytes(SECRET_BYTES);
  const keyB = r.bytes(SECRET_BYTES);
  const seal = createProtection('aes-128-gcm', keyA);
  const receiver = new DataReceiver({ endpoint: new Endpoint(tap), sessionId: SESSION, clock, seal: createProtection('aes-128-gcm', keyB), open: createProtection('aes-128-gcm', keyA), datagramSize: 1472 });
  receiver.addFile(1, 0, 1432 * 1000, new RecordingSink());
  let pn = 0;
  const data = (ssn: number, sendTsUs: number, flags = 0): Buffer => {
    const pkt = Buffer.alloc(DATA_HEADER + 1432 + seal.overhead);
    const n = pn++;
    writeCommon(pkt, PacketType.DATA, flags, SESSION, n);
    writeDataHeader(pkt, ssn, sendTsUs, 100);
    seal.sealInPlace(pkt, DATA_HEADER, 1432, n);
    return pkt;
  };
  const feedbacks = (): Feedback[] => {
    const open = createProtection('aes-128-gcm', keyB);
    return tap.drain().map((p) => decodeFeedback(open.open(p, COMMON_HEADER, p.readUIntBE(6, 6))));
  };
  return { clock, tap, receiver, data, feedbacks };
}

describe('receiver timing: arrival times', () => {
  it('a train read in one late batch reads at the rate it arrived (kernel times), not as one instant', () => {
    const t = rig();
    // 60 blocks arrived 57 µs apart (200 Mbit/s), all read 30 ms later in one batch
    const first = t.clock.now();
    t.clock.advance(30);
    for (let i = 0; i < 60; i++) t.tap.inject(t.data(i, 0), SENDER, first + i * GAP_MS);
    t.clock.advance(5);
    const [fb] = t.feedbacks().filter((f) => f.intervalPackets > 0);
    assert.ok(fb, 'no feedback');
    const mbps = fb.recvRateKbps / 1000;
    assert.ok(Math.abs(mbps - 200) < 4, `arrival rate ${mbps.toFixed(1)} Mbit/s, the train came at 200`);
    t.receiver.close();
  });

  it('without kernel times (node:dgram, the simulator) the same batch reads over the feedback interval', () => {
    const t = rig();
    t.clock.advance(30);
    for (let i = 0; i < 60; i++) t.tap.inject(t.data(i, 0), SENDER);
    t.clock.advance(5);
    const [fb] = t.feedbacks().filter((f) => f.intervalPackets > 0);
    assert.ok(fb);
    // 60 blocks over the 5 ms interval
    assert.ok(fb.recvRateKbps / 1000 < 150, `${(fb.recvRateKbps / 1000).toFixed(1)} Mbit/s`);
    t.receiver.close();
  });

  it('the initial burst (FLAG_TRAIN) is timed from its first to its last arrival, however late and batched it is read; its losses are counted', () => {
    const t = rig();
    const first = t.clock.now();
    t.clock.advance(300); // held by the endpoint until the session registered, say
    // 80 blocks of the burst 57 µs apart, one lost (ssn 40), then paced blocks at 50 Mbit/s
    for (let i = 0; i < 80; i++) if (i !== 40) t.tap.inject(t.data(i, 0, FLAG_TRAIN), SENDER, first + i * GAP_MS);
    for (let i = 80; i < 120; i++) t.tap.inject(t.data(i, 0), SENDER, first + 79 * GAP_MS + (i - 79) * GAP_MS * 4);
    t.clock.advance(5);
    const fbs = t.feedbacks();
    const train = fbs.find((f) => f.train)?.train;
    assert.ok(train, 'no train in the feedback');
    assert.equal(train.packets, 79);
    assert.equal(train.lost, 1);
    // 78 blocks after the first over 79 gaps: 200 * 78/79 Mbit/s
    const mbps = train.rateKbps / 1000;
    assert.ok(Math.abs(mbps - (200 * 78) / 79) < 1, `train ${mbps.toFixed(1)} Mbit/s`);
    // repeated in the next few feedbacks, then no more
    let copies = 1;
    for (let i = 0; i < 8; i++) {
      t.tap.inject(t.data(120 + i, 0), SENDER);
      t.clock.advance(5);
      copies += t.feedbacks().filter((f) => f.train).length;
    }
    assert.equal(copies, 4);
    t.receiver.close();
  });

  it('a train with a late stretch near its end reads at the rate of its slots, not over its span', () => {
    const t = rig();
    const first = t.clock.now();
    t.clock.advance(300);
    // 218 blocks of the burst 57 µs apart, 10 lost, and after the 200th the emulator lost 1.1 ms
    const lost = new Set([7, 30, 55, 81, 99, 120, 150, 171, 190, 210]);
    for (let i = 0; i < 218; i++) if (!lost.has(i)) t.tap.inject(t.data(i, 0, FLAG_TRAIN), SENDER, first + i * GAP_MS + (i > 200 ? 1.1 : 0));
    for (let i = 218; i < 240; i++) t.tap.inject(t.data(i, 0), SENDER, first + 218 * GAP_MS + 1.1 + (i - 217) * GAP_MS * 4);
    t.clock.advance(5);
    const train = t.feedbacks().find((f) => f.train)?.train;
    assert.ok(train, 'no train in the feedback');
    assert.equal(train.packets, 208);
    assert.equal(train.lost, 10);
    // what arrived of a 200 Mbit/s path: 200 * 208/218; over the span it read 7% lower
    const mbps = train.rateKbps / 1000;
    const want = (200 * 208) / 218;
    assert.ok(Math.abs(mbps - want) < 0.01 * want, `train ${mbps.toFixed(1)} Mbit/s, want ${want.toFixed(1)}`);
    t.receiver.close();
  });

  it('the delay signal: a moment\'s late read is no queue, a receiver that stays behind is; a held datagram\'s wait is neither', () => {
    const tsUs = (ms: number): number => Math.round(ms * 1000) >>> 0;
    /** blocks sent every 0.5 ms, each arriving 50 ms later and handled `lag(i)` ms after that */
    const run = (n: number, lag: (i: number) => number, held = false): Feedback[] => {
      const t = rig();
      const base = t.clock.now();
      const fbs: Feedback[] = [];
      for (let i = 0; i < n; i++) {
        const arrive = base + i * 0.5;
        const handle = arrive + lag(i);
        if (handle > t.clock.now()) {
          t.clock.advanceTo(handle);
          fbs.push(...t.feedbacks());
        }
        const pkt = t.data(i, tsUs(arrive - 50));
        if (held) t.receiver.onPacket(pkt, SENDER, arrive, true);
        else t.tap.inject(pkt, SENDER, arrive);
      }
      t.clock.advance(5);
      fbs.push(...t.feedbacks());
      t.receiver.close();
      return fbs.filter((f) => f.intervalPackets > 0 && f.qdelayUs >= 0);
    };
    // one 25 ms stall at 100 ms: the path shows no queue
    const stall = run(400, (i) => (i >= 200 && i < 250 ? 125 - i * 0.5 : 0));
    assert.ok(Math.max(...stall.map((f) => f.qdelayUs)) < 500, `a stall: queue up to ${Math.max(...stall.map((f) => f.qdelayUs))} µs`);
    // from 50 ms on every block waits 10 ms in the socket: 10 ms of queue once it has lasted 50 ms
    const behind = run(400, (i) => (i >= 100 ? 10 : 0));
    const last = behind.at(-1)!;
    assert.ok(last.qdelayUs >= 9_500 && last.qdelayUs <= 10_500, `a backlog: queue ${last.qdelayUs} µs`);
    // the same waits on held datagrams (early data): their wait is the session's set-up
    const held = run(400, (i) => (i >= 100 ? 10 : 0), true);
    assert.ok(held.at(-1)!.qdelayUs < 500, `held: queue ${held.at(-1)!.qdelayUs} µs`);
  });
});

describe('receiver timing: fitting the train', () => {
  /** n arrivals one `slot` apart (5% of the sequence lost), released in bunches, jittered, late by `stretch` from one on */
  const arrivals = (r: Rng, n: number, slot: number, bunch: number): { ssns: number[]; ats: number[]; span: number } => {
    const stretchAt = r.int(n);
    const stretch = r.chance(0.7) ? r.float() * 20 * slot : 0;
    const ssns: number[] = [];
    const ats: number[] = [];
    for (let i = 0, ssn = 0; i < n; i++, ssn++) {
      if (r.chance(0.05)) ssn++;
      ssns.push(ssn);
      const due = Math.ceil((ssn + 1) / bunch) * bunch * slot;
      ats.push(1000 + due + (ssn >= stretchAt ? stretch : 0) + (r.float() - 0.5) * 0.2 * slot);
    }
    return { ssns, ats, span: (ats[n - 1]! - ats[0]!) / (ssns[n - 1]! - ssns[0]!) };
  };

  it('fitSlotMs finds the time per datagram through jitter, bunching, a late stretch anywhere and gaps in the sequence', () => {
    const r = new Rng(11);
    let spanWorst = 0;
    for (let trial = 0; trial < 300; trial++) {
      // trains as on the 300 ms path (about 210 arrivals), bunches of up to 6
      const slot = 0.02 + r.float() * 0.5;
      const n = 150 + r.int(250);
      const bunch = 1 + r.int(6);
      const { ssns, ats, span } = arrivals(r, n, slot, bunch);
      const fit = fitSlotMs(ssns, ats);
      assert.ok(Math.abs(fit - slot) < 0.04 * slot, `trial ${trial}: n ${n}, bunch ${bunch}, slot ${slot.toFixed(4)}: fitted ${fit.toFixed(4)}`);
      spanWorst = Math.max(spanWorst, Math.abs(span - slot) / slot);
    }
    // the span from the first arrival to the last, as before: up to 10% off
    assert.ok(spanWorst > 0.08, `span worst ${spanWorst}`);
    for (let trial = 0; trial < 100; trial++) {
      // short trains, unbunched
      const slot = 0.02 + r.float() * 0.5;
      const { ssns, ats } = arrivals(r, 20 + r.int(30), slot, 1);
      const fit = fitSlotMs(ssns, ats);
      assert.ok(Math.abs(fit - slot) < 0.03 * slot, `short trial ${trial}: fitted ${fit.toFixed(4)} for ${slot.toFixed(4)}`);
    }
    assert.equal(fitSlotMs([1], [5]), 0);
    assert.equal(fitSlotMs([3, 3], [5, 6]), 0);
  });
});
