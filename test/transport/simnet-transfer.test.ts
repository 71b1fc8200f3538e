/**
 * Deterministic protocol tests of the data plane (DataSender + DataReceiver) on the
 * simulated network: integrity under loss, reordering, duplication, corruption and
 * long delays, and rate control against a drop-tail bottleneck. No control link: the
 * test wires assign → addFile → start itself (see test/helpers/sim-flow.ts).
 *
 * Every figure the rate-control tests measure is printed as a test diagnostic (run
 * with --test-reporter=spec to see them).
 */
import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { LinkConfig, LinkStats } from '../../src/testkit/index.js';
import type { CipherName, RatePolicy } from '../../src/core/types.js';
import { createRateController, type FeedbackSample, type RateController } from '../../src/transport/rate/controller.js';
import {
  DATAGRAM,
  HOST_A,
  HOST_B,
  contentFor,
  createFlow,
  every,
  mbps,
  payloadPerDatagram,
  runToCompletion,
  simPath,
  type Flow,
} from '../helpers/sim-flow.js';

const MiB = 1 << 20;

/** A fixed-rate controller that shows `watch` every feedback sample the sender gives it. */
function fixedRateWatching(bps: number, watch: (f: FeedbackSample) => void): RateController {
  const inner = createRateController({ policy: 'fixed', targetBps: bps, minBps: 1e6 });
  return {
    onFeedback: (f) => {
      watch(f);
      inner.onFeedback(f);
    },
    rateBps: () => inner.rateBps(),
  };
}
const SENDER = { address: HOST_A, port: 5000 };
const RECEIVER = { address: HOST_B, port: 6000 };
/** size of a STATUS datagram with a 16-byte tag; every DATA datagram in these tests is larger */
const STATUS_BYTES = 12 + 10 + 16;

interface Scenario {
  seed?: number;
  forward: LinkConfig;
  reverse?: LinkConfig;
  sizes: number[];
  cipher?: CipherName;
  policy?: RatePolicy;
  targetBps?: number;
  /** virtual time limit */
  maxMs: number;
}

interface Outcome {
  flow: Flow;
  completed: boolean;
  /** ms of virtual time from start to the last file's completion */
  elapsedMs: number;
  /** true when the sender saw every block acknowledged (within 5 s after completion) */
  allAcked: boolean;
  fwd: LinkStats;
  rev: LinkStats;
  /** DATA datagrams lost on the forward link (told apart from STATUS by size) */
  lostData: number;
  /** corrupted datagrams that were delivered (not still in flight when the run stopped) */
  corruptDelivered: { fwd: number; rev: number };
  /** extra copies (beyond the first) that were delivered */
  dupDelivered: { fwd: number; rev: number };
}

/** Runs one flow through a scenario and closes it; the flow's counters stay readable. */
async function transfer(s: Scenario): Promise<Outcome> {
  const { clock, net } = simPath(s.seed ?? 1, s.forward, s.reverse ?? { delayMs: s.forward.delayMs });
  const flow = createFlow({
    net,
    clock,
    sender: SENDER,
    receiver: RECEIVER,
    files: s.sizes.map((n, i) => contentFor(n, 1000 + i)),
    ...(s.cipher ? { cipher: s.cipher } : {}),
    policy: s.policy ?? 'fair',
    targetBps: s.targetBps ?? 100e6,
  });
  let lostData = 0;
  const corrupted = new Set<number>();
  const corruptDelivered = { fwd: 0, rev: 0 };
  const delivered = new Set<number>();
  const dupDelivered = { fwd: 0, rev: 0 };
  net.observe((e) => {
    const dir = e.from.address === HOST_A ? 'fwd' : 'rev';
    if (e.kind === 'lose' && dir === 'fwd' && e.size > STATUS_BYTES) lostData++;
    if (e.kind === 'corrupt') corrupted.add(e.id);
    if (e.kind === 'deliver') {
      if (corrupted.has(e.id)) corruptDelivered[dir]++;
      // a duplicate keeps its original's id
      if (delivered.has(e.id)) dupDelivered[dir]++;
      else delivered.add(e.id);
    }
  });
  try {
    flow.start();
    const completed = runToCompletion(clock, [flow], s.maxMs);
    const elapsedMs = (flow.completedAt ?? clock.now()) - flow.startedAt;
    const allAcked = completed && clock.runUntil(() => flow.sender.allAcked, 5_000);
    return {
      flow,
      completed,
      elapsedMs,
      allAcked,
      lostData,
      corruptDelivered,
      dupDelivered,
      fwd: { ...net.stats(HOST_A, HOST_B) },
      rev: { ...net.stats(HOST_B, HOST_A) },
    };
  } finally {
    await flow.close();
  }
}

/**
 * Every file arrived complete and exact, each block was written exactly once (the
 * receiver de-duplicates), no write was wrong, and no write failed.
 */
function assertIntact(o: Pick<Outcome, 'flow' | 'completed'>): void {
  const { flow } = o;
  assert.ok(o.completed, `transfer did not complete within the time limit (${flow.files.map((f) => f.sink.bytes).join('/')} bytes written)`);
  assert.deepEqual(flow.writeErrors, []);
  for (const f of flow.files) {
    assert.equal(f.sink.bad, 0, `wrong bytes reached the sink of file ${f.id}: ${f.sink.firstBad}`);
    assert.ok(f.sink.out.equals(f.data), `file ${f.id} differs from its source`);
    const blocks = Math.ceil(f.data.length / flow.sender.payloadSize);
    assert.equal(f.sink.writes, blocks, `file ${f.id}: ${f.sink.writes} writes for ${blocks} blocks`);
  }
}

function describeOutcome(o: Outcome): string {
  const s = o.flow.sender.stats;
  const r = o.flow.receiver.stats;
  return (
    `${o.elapsedMs.toFixed(0)} ms; sent ${s.packetsSent} (${s.retransmits} retransmits), ` +
    `lost fwd ${o.fwd.lost} rev ${o.rev.lost}; receiver rejected ${r.rejected}, duplicates ${r.duplicates}`
  );
}

describe('data plane on a simulated network: integrity', () => {
  it('clean path: exact bytes, no retransmission, nothing rejected', async (t: TestContext) => {
    const o = await transfer({ forward: { delayMs: 10 }, sizes: [4 * MiB + 123], maxMs: 5_000 });
    t.diagnostic(describeOutcome(o));
    assertIntact(o);
    assert.equal(o.flow.sender.stats.retransmits, 0);
    // no loss seen, so no tail parity
    assert.equal(o.flow.sender.stats.parityPackets, 0);
    assert.equal(o.flow.receiver.stats.rejected, 0);
    assert.equal(o.flow.receiver.stats.duplicates, 0);
    assert.equal(o.flow.sender.stats.badPackets, 0);
    assert.ok(o.allAcked, 'the sender saw every block acknowledged');
  });

  it('a file started while the sender idles leaves at once, not at its next idle tick', async () => {
    const { clock, net } = simPath(7, { delayMs: 50 });
    const flow = createFlow({ net, clock, sender: SENDER, receiver: RECEIVER, files: [contentFor(1 << 20, 1)] });
    try {
      // the sender has nothing to send: it idles on a 50 ms timer
      clock.advance(20);
      assert.equal(flow.sender.stats.packetsSent, 0);
      flow.start();
      clock.advance(1);
      assert.ok(flow.sender.stats.packetsSent > 0, 'no datagram within 1 ms of start()');
      assert.equal(flow.sender.stats.firstSendAt, flow.startedAt);
      // the initial window: one burst allowance (50 ms at the 50 Mbit/s start rate) at once,
      // so the first delay samples come sooner (fewer queue drops when start-up ends)
      const window = Math.floor((50e6 / 8) * 0.05 / DATAGRAM);
      assert.ok(flow.sender.stats.packetsSent >= 0.9 * window, `${flow.sender.stats.packetsSent} datagrams in the first ms (window ${window})`);
    } finally {
      await flow.close();
    }
  });

  it('the initial window is one burst, then pacing: also on a clock that starts at 0', async () => {
    // the window was once keyed on "first send time is 0": at virtual time 0 every tick
    // refilled it, and the whole file left at once
    const { clock, net } = simPath(7, { delayMs: 50 });
    assert.equal(clock.now(), 0);
    const flow = createFlow({ net, clock, sender: SENDER, receiver: RECEIVER, files: [contentFor(32 << 20, 1)] });
    try {
      flow.start();
      clock.advance(40); // before any feedback (RTT 100 ms)
      const window = (50e6 / 8) * 0.05 / DATAGRAM;
      const paced = (50e6 / 8) * 0.04 / DATAGRAM;
      const sent = flow.sender.stats.packetsSent;
      assert.ok(sent >= 0.9 * window, `${sent} datagrams, window ${window.toFixed(0)}`);
      assert.ok(sent <= 1.1 * (window + paced), `${sent} datagrams in 40 ms: more than the window plus 40 ms at 50 Mbit/s (${(window + paced).toFixed(0)})`);
    } finally {
      await flow.close();
    }
  });

  it('blocks that arrive before their file is announced are held and written, not asked for again', async (t: TestContext) => {
    // the `files` message comes over TCP: a lost segment delays it by a retransmission
    // timeout while the datagrams are already arriving (they used to be dropped and resent)
    const { clock, net } = simPath(9, { delayMs: 50 });
    const flow = createFlow({ net, clock, sender: SENDER, receiver: RECEIVER, files: [contentFor(8 * MiB, 4)], announceDelayMs: 200 });
    try {
      flow.start();
      const completed = runToCompletion(clock, [flow], 10_000);
      t.diagnostic(`${flow.sender.stats.packetsSent} datagrams, ${flow.sender.stats.retransmits} retransmits`);
      assertIntact({ flow, completed });
      assert.equal(flow.sender.stats.retransmits, 0, 'no block was asked for twice');
    } finally {
      await flow.close();
    }
  });

  it('past 32 MiB held before the announcement, further blocks are asked for again (and still count as arrivals): the file still arrives intact', async () => {
    const { clock, net } = simPath(9, { delayMs: 5 });
    // the arrival rates the receiver reports between 0.5 s and the announcement at 2 s
    const arrivals: number[] = [];
    const rate = fixedRateWatching(400e6, (f) => {
      if (f.now > 500 && f.now < 1_900 && f.intervalRateBps) arrivals.push(f.intervalRateBps);
    });
    const flow = createFlow({ net, clock, sender: SENDER, receiver: RECEIVER, files: [contentFor(64 * MiB, 5)], announceDelayMs: 2_000, rate });
    try {
      flow.start();
      assertIntact({ flow, completed: runToCompletion(clock, [flow], 20_000) });
      assert.ok(flow.sender.stats.retransmits > 0, 'blocks past the bound were asked for again');
      // the 32 MiB are held within 0.7 s; the path carries 400 Mbit/s throughout
      arrivals.sort((a, b) => a - b);
      const median = arrivals[Math.floor(arrivals.length / 2)] ?? 0;
      assert.ok(median > 300e6, `median arrival rate reported while the hold was full: ${(median / 1e6).toFixed(0)} Mbit/s`);
    } finally {
      await flow.close();
    }
  });

  it('several files back to back, with sizes on and off block boundaries', async () => {
    const p = payloadPerDatagram(DATAGRAM);
    const o = await transfer({ forward: { delayMs: 5, loss: 0.05 }, reverse: { delayMs: 5, loss: 0.05 }, sizes: [1, p, p + 1, 3 * p - 1, 200_000], maxMs: 10_000 });
    assertIntact(o);
  });

  for (const loss of [0.01, 0.1, 0.3]) {
    // loss in both directions: data, feedback (NAKs) and STATUS packets are all lost
    // a lost block should cost about one round trip (40 ms) per loss, not a timeout
    const maxMs = loss < 0.3 ? 3_000 : 5_000;
    it(`random loss ${loss * 100}% each way: exact bytes, every lost block resent`, async (t: TestContext) => {
      const o = await transfer({
        seed: 11,
        forward: { delayMs: 20, loss },
        reverse: { delayMs: 20, loss },
        sizes: [4 * MiB],
        maxMs,
      });
      t.diagnostic(describeOutcome(o));
      assertIntact(o);
      assert.ok(o.fwd.lost > 0, 'the link lost packets');
      assert.ok(o.allAcked, 'the sender saw every block acknowledged');
      // every lost data packet had to be sent again, and every block arrived once
      const blocks = Math.ceil((4 * MiB) / o.flow.sender.payloadSize);
      const st = o.flow.sender.stats;
      // every lost data packet is made up for by a retransmission or a tail duplicate
      assert.ok(
        st.retransmits + st.tailDuplicates >= o.lostData,
        `${st.retransmits} retransmits + ${st.tailDuplicates} tail duplicates for ${o.lostData} lost data packets`,
      );
      assert.ok(st.packetsSent - o.lostData >= blocks);
    });
  }

  it('reordering: exact bytes, late packets are not counted as data twice', async (t: TestContext) => {
    const o = await transfer({
      seed: 5,
      forward: { delayMs: 20, reorder: 0.05, reorderDelayMs: 4 },
      reverse: { delayMs: 20, reorder: 0.05, reorderDelayMs: 4 },
      sizes: [4 * MiB],
      maxMs: 10_000,
    });
    t.diagnostic(describeOutcome(o));
    assertIntact(o);
    assert.ok(o.fwd.reordered > 100, `only ${o.fwd.reordered} packets reordered`);
  });

  it('duplication: every copy is refused by the replay window, exact bytes', async (t: TestContext) => {
    const o = await transfer({
      seed: 6,
      forward: { delayMs: 20, duplicate: 0.05, jitterMs: 2 },
      reverse: { delayMs: 20, duplicate: 0.05, jitterMs: 2 },
      sizes: [4 * MiB],
      maxMs: 10_000,
    });
    t.diagnostic(describeOutcome(o));
    assertIntact(o);
    assert.ok(o.fwd.duplicated > 100);
    // a copy carries its original's packet number, so it is a replay
    assert.equal(o.flow.receiver.stats.replayed, o.dupDelivered.fwd);
    assert.equal(o.flow.sender.stats.badPackets, o.dupDelivered.rev);
    assert.equal(o.flow.sender.stats.retransmits, 0, 'duplicates must not cause retransmissions');
  });

  it('corruption: every corrupted datagram is rejected, no wrong byte is ever written', async (t: TestContext) => {
    const o = await transfer({
      seed: 7,
      forward: { delayMs: 20, corrupt: 0.02 },
      reverse: { delayMs: 20, corrupt: 0.02 },
      sizes: [4 * MiB],
      maxMs: 10_000,
    });
    t.diagnostic(`${describeOutcome(o)}; corrupted fwd ${o.fwd.corrupted} rev ${o.rev.corrupted}`);
    assertIntact(o);
    assert.ok(o.fwd.corrupted > 20 && o.rev.corrupted > 0, 'the links corrupted packets');
    // a flipped bit either breaks the header, changes the session id (unknown session),
    // or fails authentication; each corrupted datagram is counted exactly once
    const ep = o.flow.receiverEndpoint.stats;
    assert.equal(o.flow.receiver.stats.rejected + ep.unknownSession + ep.malformed, o.corruptDelivered.fwd);
    const sep = o.flow.senderEndpoint.stats;
    assert.equal(o.flow.sender.stats.badPackets + sep.unknownSession + sep.malformed, o.corruptDelivered.rev);
  });

  it('long delay: 500 ms each way with 30 ms jitter and 1% loss', async (t: TestContext) => {
    const o = await transfer({
      seed: 8,
      forward: { delayMs: 500, jitterMs: 30, loss: 0.01 },
      reverse: { delayMs: 500, jitterMs: 30, loss: 0.01 },
      sizes: [4 * MiB],
      maxMs: 30_000,
    });
    t.diagnostic(describeOutcome(o));
    assertIntact(o);
    assert.ok(o.flow.sender.stats.minRttMs >= 1000, `min RTT ${o.flow.sender.stats.minRttMs} ms below the 1 s path`);
  });

  for (const cipher of ['aes-256-gcm', 'none'] as const) {
    it(`cipher ${cipher}: exact bytes over a lossy path`, async () => {
      const o = await transfer({ seed: 9, cipher, forward: { delayMs: 10, loss: 0.02 }, reverse: { delayMs: 10, loss: 0.02 }, sizes: [MiB + 5], maxMs: 10_000 });
      assertIntact(o);
    });
  }
});

// ---- rate control -----------------------------------------------------------------------

const BOTTLENECK_BPS = 200e6;
/** payload bits per second a 200 Mbit/s link carries with full-size datagrams */
const PAYLOAD_CAPACITY = (BOTTLENECK_BPS * payloadPerDatagram(DATAGRAM)) / DATAGRAM;
/** a 200 Mbit/s bottleneck, 50 ms each way (100 ms RTT), drop-tail queue of one BDP (100 ms) */
const BOTTLENECK: LinkConfig = { delayMs: 50, rateBps: BOTTLENECK_BPS, queueBytes: 2_500_000 };

interface RateRun {
  /** whole transfer, start-up included, payload bits/s */
  goodputBps: number;
  /** payload bits/s between 20% and 90% of the file (after start-up, before the tail) */
  steadyBps: number;
  /** average and largest queueing delay at the bottleneck in that window, ms */
  avgQueueMs: number;
  maxQueueMs: number;
  queueDrops: number;
  retransmits: number;
  /** sender rate samples (every 100 ms) inside the steady window, bits/s */
  steadyRates: number[];
  elapsedMs: number;
  /** bits/s put on the wire (headers and tags included) in the steady window */
  steadyWireBps: number;
  /** share of the steady window's queue samples (1 per ms) with less than 1 ms of queue: the link idles */
  emptyShare: number;
}

/** Runs one flow to completion, sampling the bottleneck queue every ms and the sender rate every 100 ms. */
async function rateRun(o: { forward: LinkConfig; reverse?: LinkConfig; size: number; policy: RatePolicy; targetBps: number; seed?: number }): Promise<RateRun> {
  const { clock, net } = simPath(o.seed ?? 1, o.forward, o.reverse ?? { delayMs: o.forward.delayMs });
  const flow = createFlow({ net, clock, sender: SENDER, receiver: RECEIVER, files: [contentFor(o.size, 77)], policy: o.policy, targetBps: o.targetBps });
  const queue: number[] = []; // queued bytes at t = 1, 2, 3 … ms after start
  const rates: { t: number; bps: number; wireBytes: number }[] = [];
  const stopQ = every(clock, 1, () => queue.push(net.stats(HOST_A, HOST_B).queuedBytes));
  const stopR = every(clock, 100, () => rates.push({ t: clock.now(), bps: flow.sender.stats.rateBps, wireBytes: flow.sender.stats.bytesSent }));
  try {
    flow.start();
    const done = runToCompletion(clock, [flow], 120_000);
    assert.ok(done, 'transfer did not complete');
    assertIntact({ flow, completed: done });
  } finally {
    stopQ();
    stopR();
    await flow.close();
  }
  const m = flow.sink.marks;
  const t20 = m[20]!;
  const t90 = m[90]!;
  const rate = o.forward.rateBps ?? 0;
  const window = queue.slice(Math.ceil(t20), Math.floor(t90));
  const toMs = (bytes: number): number => (rate > 0 ? (bytes * 8 * 1000) / rate : 0);
  const inWindow = rates.filter((r) => r.t >= t20 && r.t <= t90);
  const first = inWindow[0];
  const last = inWindow[inWindow.length - 1];
  const elapsedMs = flow.completedAt! - flow.startedAt;
  return {
    goodputBps: (o.size * 8 * 1000) / elapsedMs,
    steadyBps: (0.7 * o.size * 8 * 1000) / (t90 - t20),
    avgQueueMs: toMs(window.reduce((a, b) => a + b, 0) / Math.max(1, window.length)),
    maxQueueMs: toMs(Math.max(0, ...window)),
    queueDrops: net.stats(HOST_A, HOST_B).droppedQueue,
    retransmits: flow.sender.stats.retransmits,
    steadyRates: inWindow.map((r) => r.bps),
    elapsedMs,
    emptyShare: window.filter((b) => toMs(b) < 1).length / Math.max(1, window.length),
    steadyWireBps: first && last && last.t > first.t ? ((last.wireBytes - first.wireBytes) * 8 * 1000) / (last.t - first.t) : Number.NaN,
  };
}

function pct(x: number): string {
  return `${(x * 100).toFixed(1)}%`;
}

/** The 64 MiB fair-policy run is shared by several tests (it is the costly one). */
let fairRun: Promise<RateRun> | undefined;
function fairBottleneck(): Promise<RateRun> {
  fairRun ??= rateRun({ forward: BOTTLENECK, size: 64 * MiB, policy: 'fair', targetBps: 1e9 });
  return fairRun;
}

function reportFair(t: TestContext, r: RateRun): void {
  t.diagnostic(
    `fair, 64 MiB over 200 Mbit/s / 100 ms RTT: whole ${mbps(r.goodputBps)} (${pct(r.goodputBps / PAYLOAD_CAPACITY)} of ${mbps(PAYLOAD_CAPACITY)} payload capacity), ` +
      `steady ${mbps(r.steadyBps)} (${pct(r.steadyBps / PAYLOAD_CAPACITY)}), queue delay avg ${r.avgQueueMs.toFixed(1)} ms max ${r.maxQueueMs.toFixed(1)} ms, ` +
      `queue under 1 ms in ${pct(r.emptyShare)} of samples, ${r.queueDrops} queue drops, ${r.retransmits} retransmits, ${r.elapsedMs.toFixed(0)} ms`,
  );
}

describe('data plane on a simulated network: rate control', () => {
  it('fair policy fills a 200 Mbit/s, 100 ms RTT bottleneck after start-up (≥ 85% of payload capacity)', async (t: TestContext) => {
    const r = await fairBottleneck();
    reportFair(t, r);
    assert.ok(r.steadyBps >= 0.85 * PAYLOAD_CAPACITY, `steady goodput ${mbps(r.steadyBps)} < 85% of ${mbps(PAYLOAD_CAPACITY)}`);
  });

  it(
    'fair policy: a whole 64 MiB transfer, start-up included, averages ≥ 85% of payload capacity',
    async (t: TestContext) => {
      const r = await fairBottleneck();
      reportFair(t, r);
      assert.ok(r.goodputBps >= 0.85 * PAYLOAD_CAPACITY, `goodput ${mbps(r.goodputBps)} = ${pct(r.goodputBps / PAYLOAD_CAPACITY)} of capacity`);
    },
  );

  it('the delay law is damped: after start-up the queue seldom runs empty (< 15% of samples) and steady goodput is ≥ 98% of payload capacity', async (t: TestContext) => {
    // an undamped law (gain 0.4, no trend term) swings ±15% around capacity every ten
    // round trips and empties the queue on each swing: 39% of samples, 96.0% of capacity
    // (damped: 9.5%, 98.9%)
    const r = await fairBottleneck();
    reportFair(t, r);
    assert.ok(r.emptyShare < 0.15, `queue under 1 ms in ${pct(r.emptyShare)} of samples`);
    assert.ok(r.steadyBps >= 0.98 * PAYLOAD_CAPACITY, `steady goodput ${mbps(r.steadyBps)} = ${pct(r.steadyBps / PAYLOAD_CAPACITY)} of capacity`);
  });

  it(
    'fair policy keeps the standing queue small (average queueing delay < 25 ms after start-up)',
    async (t: TestContext) => {
      const r = await fairBottleneck();
      reportFair(t, r);
      // the fair policy aims at 125 kB of its own in the queue: 5 ms at 200 Mbit/s
      assert.ok(r.avgQueueMs < 25, `average queueing delay ${r.avgQueueMs.toFixed(1)} ms`);
    },
  );

  it('start-up measures the initial window as a packet train: one RTT after the first feedback the rate is at the path\'s, with no queue drops (300 ms, 200 Mbit/s)', async (t: TestContext) => {
    // doubling from 50 Mbit/s instead reached the path's rate after three round trips and
    // overshot to ~380 Mbit/s before the queue showed: hundreds of queue drops
    const path: LinkConfig = { delayMs: 150, rateBps: BOTTLENECK_BPS, queueBytes: 7_500_000 };
    const { clock, net } = simPath(5, path, { delayMs: 150 });
    const flow = createFlow({ net, clock, sender: SENDER, receiver: RECEIVER, files: [contentFor(24 * MiB, 3)], policy: 'fair', targetBps: 1e9 });
    const rates: number[] = [];
    const stop = every(clock, 100, () => rates.push(flow.sender.stats.rateBps));
    try {
      flow.start();
      clock.advanceTo(600); // the first feedback arrives at 300 ms
      const at600 = flow.sender.stats.rateBps;
      assert.ok(runToCompletion(clock, [flow], 30_000));
      const drops = net.stats(HOST_A, HOST_B).droppedQueue;
      const peak = Math.max(...rates);
      t.diagnostic(`rate at 600 ms ${mbps(at600)}, peak ${mbps(peak)}, ${drops} queue drops, whole ${mbps((24 * MiB * 8 * 1000) / (flow.completedAt! - flow.startedAt))}`);
      assert.ok(at600 >= 0.9 * PAYLOAD_CAPACITY && at600 <= 1.1 * BOTTLENECK_BPS, `rate at 600 ms: ${mbps(at600)}`);
      assert.ok(peak <= 1.1 * BOTTLENECK_BPS, `peak rate ${mbps(peak)}`);
      assert.equal(drops, 0);
    } finally {
      stop();
      await flow.close();
    }
  });

  it('the train counts what random loss took after the bottleneck: at 5% loss the jump lands at the path\'s sending capacity, not 5% under it', async (t: TestContext) => {
    // the arrival rate of a train through a 200 Mbit/s bottleneck followed by 5% loss is
    // 95% of the payload capacity; jumping there left the link 5% idle until the delay
    // law crept up (182 → 191 Mbit/s over 3 s on the real 300 ms path)
    const at: number[] = [];
    for (const seed of [1, 2, 3]) {
      const { clock, net } = simPath(seed, { delayMs: 150, rateBps: BOTTLENECK_BPS, queueBytes: 7_500_000, loss: 0.05 }, { delayMs: 150, loss: 0.05 });
      const flow = createFlow({ net, clock, sender: SENDER, receiver: RECEIVER, files: [contentFor(8 * MiB, seed)], policy: 'fair', targetBps: 1e9 });
      try {
        flow.start();
        clock.advanceTo(450); // the first feedback arrives at 300 ms
        at.push(flow.sender.stats.rateBps);
      } finally {
        await flow.close();
      }
    }
    t.diagnostic(`rates after the train: ${at.map(mbps).join(', ')} (payload capacity ${mbps(PAYLOAD_CAPACITY)})`);
    // without the loss correction: 180.7, 173.7 and 187.6 on these seeds; with it, from
    // the median of the feedback intervals: 190.3, 188.5 and 200.6; the receiver timing
    // the marked burst itself: 194.5 each
    for (const r of at) assert.ok(r >= 0.97 * PAYLOAD_CAPACITY && r <= 1.03 * PAYLOAD_CAPACITY, `rate after the train ${mbps(r)}`);
  });

  it('a receiver whose one-way delays read high (a drifting clock) does not show the sender a queue the round trip does not have', async () => {
    // the receiver's clock runs 1% fast: every one-way delay reads a little higher than
    // the last, above the base the receiver took at the start. Seen on the real 300 ms
    // path (cause unknown): 4.3 ms of "queue" for a whole transfer held it at 56% of the
    // path. The round trip, all on the sender's clock, shows none.
    const { clock, net } = simPath(6, { delayMs: 50, rateBps: BOTTLENECK_BPS, queueBytes: 2_500_000 }, { delayMs: 50 });
    const receiverClock = { now: () => clock.now() * 1.01, setTimer: (ms: number, fn: () => void) => clock.setTimer(ms / 1.01, fn) };
    const seen: number[] = [];
    const rate = fixedRateWatching(100e6, (f) => {
      if (f.qdelayMs !== undefined && f.now > 400) seen.push(f.qdelayMs);
    });
    const flow = createFlow({ net, clock, sender: SENDER, receiver: RECEIVER, files: [contentFor(8 * MiB, 6)], rate, receiverClock });
    try {
      flow.start();
      assert.ok(runToCompletion(clock, [flow], 10_000));
      seen.sort((a, b) => a - b);
      const median = seen[Math.floor(seen.length / 2)]!;
      // half the path's rate: no queue at all
      assert.ok(seen.length > 50 && median < 1, `median queueing delay ${median.toFixed(2)} ms over ${seen.length} feedbacks`);
    } finally {
      await flow.close();
    }
  });

  it('the tail on 300 ms, 5% loss each way: done within 2 RTT of the last new block always, and with tail parity within ~half an RTT in most runs', async (t: TestContext) => {
    // Without repeated NAKs and extra copies near the end, a block whose NAK or whose
    // retransmission is lost in the last round trips finishes one re-NAK interval
    // (1.25 RTT) after everything else: tails of 2.7 to 3 RTT on these seeds. Without
    // tail parity, a block lost in the last round trip waits for its NAK's round trip:
    // tails of 468, 462 and 490 ms on these seeds.
    const tails: number[] = [];
    const notes: string[] = [];
    for (const seed of [1, 2, 3]) {
      const { clock, net } = simPath(seed, { delayMs: 150, rateBps: 200e6, queueBytes: 7_500_000, loss: 0.05 }, { delayMs: 150, loss: 0.05 });
      const flow = createFlow({ net, clock, sender: SENDER, receiver: RECEIVER, files: [contentFor(96 * MiB, seed)], policy: 'fair', targetBps: 1e9 });
      flow.start();
      runToCompletion(clock, [flow], 120_000);
      assert.ok(flow.completedAt !== undefined, 'transfer did not complete');
      assert.equal(flow.sink.bad, 0, flow.sink.firstBad);
      const st = flow.sender.stats;
      tails.push(flow.completedAt - st.allSentAt);
      notes.push(`${st.parityPackets} parity of ${st.packetsSent} datagrams, ${flow.receiver.stats.rebuilt} blocks rebuilt`);
      assert.ok(flow.receiver.stats.rebuilt > 100, notes.at(-1));
      // parity covers one round trip of the stream: a few percent of a 96 MiB transfer
      assert.ok(st.parityPackets < 0.025 * st.packetsSent, notes.at(-1));
      await flow.close();
    }
    t.diagnostic(`tails after the last new block: ${tails.map((x) => x.toFixed(0)).join(', ')} ms; ${notes.join('; ')}`);
    for (const tail of tails) assert.ok(tail <= 600, `tail ${tail.toFixed(0)} ms > 2 RTT`);
    // seed 3 loses all three copies of one retransmission sent just before the parity starts
    const median = [...tails].sort((x, y) => x - y)[1]!;
    assert.ok(median <= 200, `median tail ${median.toFixed(0)} ms: the last round trip's losses waited for NAKs`);
  });

  it('fixed policy at 50 Mbit/s on a 200 Mbit/s bottleneck delivers 50 Mbit/s ± 5%', async (t: TestContext) => {
    const r = await rateRun({ forward: BOTTLENECK, size: 16 * MiB, policy: 'fixed', targetBps: 50e6 });
    t.diagnostic(`fixed 50 Mbit/s: payload ${mbps(r.steadyBps)}, wire ${mbps(r.steadyWireBps)}, max queue ${r.maxQueueMs.toFixed(2)} ms`);
    assert.ok(Math.abs(r.steadyBps - 50e6) <= 0.05 * 50e6, `payload goodput ${mbps(r.steadyBps)}`);
    assert.ok(Math.abs(r.steadyWireBps - 50e6) <= 0.05 * 50e6, `wire rate ${mbps(r.steadyWireBps)}`);
    assert.ok(r.maxQueueMs < 1, 'a 50 Mbit/s flow builds no queue at a 200 Mbit/s link');
    assert.equal(r.retransmits, 0);
  });

  it('random loss is not congestion: 1% loss each way, no queue, the fair rate holds ≥ 85% of a 100 Mbit/s ceiling', async (t: TestContext) => {
    const path: LinkConfig = { delayMs: 50, loss: 0.01 };
    const r = await rateRun({ forward: path, reverse: path, size: 32 * MiB, policy: 'fair', targetBps: 100e6 });
    const minRate = Math.min(...r.steadyRates);
    t.diagnostic(`1% loss, fair, ceiling 100 Mbit/s: whole ${mbps(r.goodputBps)}, steady ${mbps(r.steadyBps)}, lowest sender rate ${mbps(minRate)}, ${r.retransmits} retransmits`);
    assert.ok(r.steadyRates.length >= 5);
    assert.ok(minRate >= 85e6, `the sender rate fell to ${mbps(minRate)}`);
    assert.ok(r.steadyBps >= 0.85 * 100e6, `steady goodput ${mbps(r.steadyBps)}`);
  });

  /** Two fair flows through one bottleneck; shares are measured from `measureFrom` ms after the first start until one finishes. */
  async function share(
    staggerMs: number,
    measureFrom: number,
    policies: readonly [RatePolicy, RatePolicy] = ['fair', 'fair'],
  ): Promise<{ a: number; b: number; totalBps: number }> {
    const { clock, net } = simPath(3, BOTTLENECK);
    const mk = (port: number, sessionId: number): Flow =>
      createFlow({
        net,
        clock,
        sender: { address: HOST_A, port },
        receiver: { address: HOST_B, port: port + 1000 },
        sessionId,
        keySeed: sessionId,
        files: [contentFor(64 * MiB, sessionId)],
        policy: policies[sessionId - 1]!,
        targetBps: 1e9,
      });
    const a = mk(5000, 1);
    const b = mk(5001, 2);
    try {
      a.start();
      clock.advance(staggerMs);
      b.start();
      clock.advanceTo(measureFrom);
      const a0 = a.sink.bytes;
      const b0 = b.sink.bytes;
      const t0 = clock.now();
      clock.runUntil(() => a.completedAt !== undefined || b.completedAt !== undefined, 60_000);
      const da = a.sink.bytes - a0;
      const db = b.sink.bytes - b0;
      assert.ok(clock.now() - t0 > 1000, 'measurement window too short');
      return { a: da / (da + db), b: db / (da + db), totalBps: ((da + db) * 8 * 1000) / (clock.now() - t0) };
    } finally {
      await a.close();
      await b.close();
    }
  }

  it('a high flow takes more than a fair one (alpha 500 kB vs 250 kB: about 2:1)', async (t: TestContext) => {
    const s = await share(0, 2000, ['high', 'fair']);
    t.diagnostic(`high ${pct(s.a)} / fair ${pct(s.b)}, together ${mbps(s.totalBps)}`);
    assert.ok(s.a >= 0.55 && s.a <= 0.8, `high share ${pct(s.a)}`);
    assert.ok(s.totalBps >= 0.85 * PAYLOAD_CAPACITY, 'together they keep the bottleneck busy');
  });

  it('a low flow yields to a fair one (alpha 60 kB vs 250 kB)', async (t: TestContext) => {
    const s = await share(0, 2000, ['low', 'fair']);
    t.diagnostic(`low ${pct(s.a)} / fair ${pct(s.b)}, together ${mbps(s.totalBps)}`);
    assert.ok(s.a <= 0.4, `low share ${pct(s.a)}`);
    assert.ok(s.totalBps >= 0.85 * PAYLOAD_CAPACITY, 'together they keep the bottleneck busy');
  });

  it('two fair flows starting together share a bottleneck evenly (each 40–60%)', async (t: TestContext) => {
    const s = await share(0, 1000);
    t.diagnostic(`shares ${pct(s.a)} / ${pct(s.b)}, together ${mbps(s.totalBps)} (${pct(s.totalBps / PAYLOAD_CAPACITY)} of capacity)`);
    for (const x of [s.a, s.b]) assert.ok(x >= 0.4 && x <= 0.6, `share ${pct(x)}`);
    assert.ok(s.totalBps >= 0.85 * PAYLOAD_CAPACITY, 'together they keep the bottleneck busy');
  });

  for (const stagger of [200, 500]) {
    it(`a fair flow joining ${stagger} ms later, while the first is still leaving start-up, gets an even share (40–60%)`, async (t: TestContext) => {
      // the first flow's start-up drain once waited for the queue to vanish, which the
      // other flow's delay law never lets happen: it stayed at a fixed rate (76/24 at
      // 200 ms with the packet-train start, 81/19 at 500 ms before it)
      const s = await share(stagger, 3000);
      t.diagnostic(`shares ${pct(s.a)} (first) / ${pct(s.b)} (late), together ${mbps(s.totalBps)}`);
      for (const x of [s.a, s.b]) assert.ok(x >= 0.4 && x <= 0.6, `share ${pct(x)}`);
    });
  }

  it(
    'a fair flow joining 1 s later gets an even share too (each 40–60%, measured from 1 s after it joined)',
    async (t: TestContext) => {
      const s = await share(1000, 2000);
      t.diagnostic(`shares ${pct(s.a)} (first) / ${pct(s.b)} (late), together ${mbps(s.totalBps)}`);
      for (const x of [s.a, s.b]) assert.ok(x >= 0.4 && x <= 0.6, `share ${pct(x)}`);
    },
  );
});

// ---- determinism ------------------------------------------------------------------------

describe('data plane on a simulated network: determinism', () => {
  /** Everything observable about one lossy run, including a digest of the whole packet trace. */
  async function fingerprint(seed: number): Promise<Record<string, unknown>> {
    const { clock, net } = simPath(seed, { delayMs: 20, loss: 0.1, jitterMs: 3, reorder: 0.02 }, { delayMs: 20, loss: 0.1 });
    const trace = net.record();
    const flow = createFlow({ net, clock, sender: SENDER, receiver: RECEIVER, files: [contentFor(2 * MiB, 1)] });
    try {
      flow.start();
      assert.ok(runToCompletion(clock, [flow], 10_000));
    } finally {
      trace.stop();
      await flow.close();
    }
    let h = 0;
    for (const e of trace.events) h = (Math.imul(h, 31) + e.id * 7 + e.kind.length + Math.round(e.t * 1000)) | 0;
    return {
      completedAt: flow.completedAt,
      sender: { ...flow.sender.stats },
      receiver: { ...flow.receiver.stats },
      fwd: { ...net.stats(HOST_A, HOST_B) },
      rev: { ...net.stats(HOST_B, HOST_A) },
      events: trace.events.length,
      traceHash: h,
    };
  }

  it('identical seeds give identical packet counts and traces; another seed does not', async () => {
    const a = await fingerprint(42);
    const b = await fingerprint(42);
    assert.deepEqual(a, b);
    const c = await fingerprint(43);
    assert.notDeepEqual(a, c);
  });
});
