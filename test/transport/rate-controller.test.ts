/**
 * Start-up of the delay-based rate controller (src/transport/rate/controller.ts), fed
 * feedback by hand: the jump to the initial window's arrival rate (a packet train), its
 * cap, and what follows it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DelayBasedRateController } from '../../src/transport/rate/controller.js';

const RTT = 300;
const START = 50e6;

function controller(): DelayBasedRateController {
  return new DelayBasedRateController({ policy: 'fair', targetBps: 10e9, minBps: 1e6 });
}

/**
 * The first feedbacks: at 300 ms (the first, whose interval is partial), then every 5 ms
 * the initial window arriving at `train` bits/s for two intervals, then paced arrivals at
 * the start rate until the train window (40 ms) has passed. Returns the time of the last.
 */
function firstRtt(c: DelayBasedRateController, train: number): number {
  c.onFeedback({ now: 300, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 0 });
  let t = 305;
  for (const r of [train, train]) {
    c.onFeedback({ now: t, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: r });
    t += 5;
  }
  for (; t <= 345; t += 5) c.onFeedback({ now: t, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: START });
  return t - 5;
}

/** Feedback every 5 ms from `from` to `to` (ms) with an empty queue, delivering `recv` bits/s. */
function quiet(c: DelayBasedRateController, from: number, to: number, recv: number): void {
  for (let t = from; t <= to; t += 5) c.onFeedback({ now: t, qdelayMs: 0, rttMs: RTT, recvRateBps: recv, intervalRateBps: recv });
}

describe('rate control: start-up from a packet train', () => {
  it('arrivals faster than the sending rate set the rate, which then holds while the queue stays empty', () => {
    const c = controller();
    assert.equal(c.rateBps(), START);
    const t = firstRtt(c, 190e6);
    assert.equal(c.rateBps(), 190e6);
    quiet(c, t + 5, 300 + 2 * RTT, 190e6);
    assert.equal(c.rateBps(), 190e6, 'held for two round trips');
    // still no queue: it was an underestimate; a gentle re-probe (≤ 25% per round trip) follows
    quiet(c, 300 + 2 * RTT + 5, 300 + 6 * RTT, 190e6);
    const r = c.rateBps();
    assert.ok(r > 190e6, `rate ${r}`);
    assert.ok(r < 190e6 * 1.25 ** 3, `rate ${r}: faster than a re-probe`);
  });

  it('fast arrivals after the train window, or over intervals shorter than 4 ms, are no train', () => {
    const c = controller();
    c.onFeedback({ now: 300, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 0 });
    // a 3 ms interval that reads 270 on a 200 Mbit/s path: too few datagrams to tell
    c.onFeedback({ now: 303, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 270e6 });
    quiet(c, 308, 345, START);
    // a receiver hiccup much later: a burst of reads, not the path
    c.onFeedback({ now: 500, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 300e6 });
    assert.ok(c.rateBps() < 2 * START, `rate ${c.rateBps()}: jumped`);
  });

  it('arrivals below 1.5 times the sending rate are no train: start-up doubles as before', () => {
    const c = controller();
    const t = firstRtt(c, 70e6);
    // start-up's own doubling over the 45 ms since the first feedback, no jump
    assert.ok(c.rateBps() < 1.2 * START, `rate ${c.rateBps()}`);
    quiet(c, t + 5, 300 + RTT, 1e9);
    assert.ok(c.rateBps() > 1.8 * START, `rate ${c.rateBps()} after one round trip of doubling`);
  });

  it('a train measured above 8 times the sending rate (a receiver read hiccup?) jumps 8 times and keeps doubling', () => {
    const c = controller();
    const t = firstRtt(c, 5e9);
    // 8 times the rate start-up had reached by then (a little over START)
    assert.ok(c.rateBps() >= 8 * START && c.rateBps() <= 8 * 1.2 * START, `rate ${c.rateBps()}`);
    quiet(c, t + 5, t + RTT, 10e9);
    assert.ok(c.rateBps() > 1.8 * 8 * START, `rate ${c.rateBps()}: start-up goes on`);
  });

  it('a queue after the jump ends start-up: the rate drains below the delivery rate, then holds it', () => {
    const c = controller();
    const t0 = firstRtt(c, 250e6);
    assert.equal(c.rateBps(), 250e6);
    // the path carries 190: a queue builds
    for (let t = t0 + 5, q = 0; t <= 700; t += 5, q += 1) c.onFeedback({ now: t, qdelayMs: q, rttMs: RTT, recvRateBps: 190e6, intervalRateBps: 190e6 });
    assert.ok(c.rateBps() <= 0.76 * 190e6, `draining at ${c.rateBps()}`);
    for (let t = 705; t <= 800; t += 5) c.onFeedback({ now: t, qdelayMs: 0, rttMs: RTT, recvRateBps: 190e6, intervalRateBps: 190e6 });
    // back at the capacity measured when start-up ended, the delay law creeping from there
    assert.ok(Math.abs(c.rateBps() - 190e6) < 0.01 * 190e6, `rate ${c.rateBps()}`);
  });

  it('the receiver\'s own train measurement sets the rate at the first feedback that carries it, corrected for the train\'s losses', () => {
    const c = controller();
    c.onFeedback({ now: 300, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 0 });
    // 5% of the burst lost after the bottleneck: 181.4 arrived of a 190.9 path
    c.onFeedback({ now: 305, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 60e6, trainRateBps: 181.4e6, trainLoss: 0.05 });
    assert.ok(Math.abs(c.rateBps() - 190.9e6) < 0.2e6, `rate ${c.rateBps()}`);
    // later interval readings no longer move it
    c.onFeedback({ now: 345, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 300e6 });
    assert.ok(Math.abs(c.rateBps() - 190.9e6) < 0.2e6);
  });

  it('a few ms of queue while holding an accurate train hand over to the delay law; no drain', () => {
    const c = controller();
    const t0 = firstRtt(c, 191e6);
    // the path delivers 188: the queue creeps to 6 ms
    for (let t = t0 + 5, q = 0; t <= 900; t += 5, q = Math.min(6, q + 0.1)) c.onFeedback({ now: t, qdelayMs: q, rttMs: RTT, recvRateBps: 188e6, intervalRateBps: 188e6 });
    // before: start-up ended in a drain at 3/4 of the delivery rate (141 Mbit/s)
    assert.ok(c.rateBps() >= 0.97 * 188e6, `rate ${c.rateBps()}`);
  });

  it('a step of queue soon after the jump, with delivery reports that still lag it, hands over instead of draining', () => {
    // as on the real 300 ms path: the sender's loop stalled 21 ms after the jump and caught
    // up in one burst, which left an 18 ms step of queue at the capacity; the delivery
    // reports still read the start rate's arrivals when the step showed
    const c = controller();
    c.onFeedback({ now: 300, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 0 });
    c.onFeedback({ now: 305, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 60e6, trainRateBps: 191e6 });
    assert.equal(c.rateBps(), 191e6);
    let lowest = Infinity;
    for (let t = 310; t <= 1500; t += 5) {
      const q = t < 600 ? 0 : Math.min(18, (t - 600) * 0.3);
      const recv = t < 680 ? START + (t > 600 ? (t - 600) * 1.2e6 : 0) : 189e6;
      c.onFeedback({ now: t, qdelayMs: q, rttMs: RTT, recvRateBps: recv, intervalRateBps: recv });
      lowest = Math.min(lowest, c.rateBps());
    }
    // before: start-up ended at 5 ms of queue in a drain at 3/4 of the lagging delivery rate (about 60 Mbit/s)
    assert.ok(lowest >= 0.9 * 191e6, `rate fell to ${(lowest / 1e6).toFixed(1)} Mbit/s`);
  });

  it('a queue that goes on growing after the jump is still drained once the reports catch up', () => {
    const c = controller();
    c.onFeedback({ now: 300, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 0 });
    c.onFeedback({ now: 305, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 60e6, trainRateBps: 250e6 });
    // the path carries 190 and the reports lag for 100 ms: the queue grows 1 ms per 5 ms
    for (let t = 310, q = 0; t <= 800; t += 5, q += t > 600 ? 1 : 0) {
      const recv = t < 700 ? START : 190e6;
      c.onFeedback({ now: t, qdelayMs: q, rttMs: RTT, recvRateBps: recv, intervalRateBps: recv });
    }
    assert.ok(c.rateBps() <= 0.76 * 190e6, `draining at ${c.rateBps()}`);
  });

  it('a drain after a stall that read the delivery low returns to what the path delivered while it drained', () => {
    // as on the real 300 ms path: holding an accurate train with 3 ms of queue, the
    // emulator stalled; the delivery reports read 150 for a round trip when the queue it
    // left ended start-up, and the drain then showed the path's 189
    const c = controller();
    c.onFeedback({ now: 300, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 0 });
    c.onFeedback({ now: 305, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 60e6, trainRateBps: 191.9e6 });
    for (let t = 310; t <= 1000; t += 5) {
      const recv = t < 620 ? START : 188e6;
      c.onFeedback({ now: t, qdelayMs: t < 400 ? 0 : 3, rttMs: RTT, recvRateBps: recv, intervalRateBps: recv });
    }
    assert.equal(c.rateBps(), 191.9e6, 'holding the train');
    let drained = Infinity;
    for (let t = 1005; t <= 1340; t += 5) c.onFeedback({ now: t, qdelayMs: t < 1300 ? 3 : 9, rttMs: RTT, recvRateBps: 150e6, intervalRateBps: 150e6 });
    for (let t = 1345; t <= 1650; t += 5) {
      c.onFeedback({ now: t, qdelayMs: 12, rttMs: RTT, recvRateBps: 189e6, intervalRateBps: 189e6 });
      drained = Math.min(drained, c.rateBps());
    }
    assert.ok(drained <= 0.76 * 150e6, `draining at ${(drained / 1e6).toFixed(1)}`);
    c.onFeedback({ now: 1655, qdelayMs: 0, rttMs: RTT, recvRateBps: 189e6, intervalRateBps: 189e6 });
    // before: back to the 150 the stall read, then the delay law's creep
    assert.ok(Math.abs(c.rateBps() - 189e6) < 0.01 * 189e6, `rate ${(c.rateBps() / 1e6).toFixed(1)}`);
  });

  it('a dip in the delivery reports when the first queue shows does not end start-up in a drain', () => {
    // as on the real 300 ms path: holding a train's 183.5 with the path delivering about
    // 178, an emulator stall left 60 ms of reports at 146 just as the queue reached 6 ms
    const c = controller();
    c.onFeedback({ now: 300, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 0 });
    c.onFeedback({ now: 305, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 60e6, trainRateBps: 183.5e6 });
    let lowest = Infinity;
    for (let t = 310; t <= 1500; t += 5) {
      const recv = t < 620 ? START : t >= 1190 && t < 1250 ? 146e6 : 178e6;
      const q = t < 1100 ? 1 + (t % 20 === 0 ? 1 : 0) : Math.min(6.5, 1 + (t - 1100) * 0.035);
      c.onFeedback({ now: t, qdelayMs: q, rttMs: RTT, recvRateBps: recv, intervalRateBps: recv });
      lowest = Math.min(lowest, c.rateBps());
    }
    // before: start-up ended on the dip (a short median of 146 < 0.93 x 183.5) in a drain at 110
    assert.ok(lowest >= 0.9 * 178e6, `rate fell to ${(lowest / 1e6).toFixed(1)} Mbit/s`);
  });

  it("one bunched interval in the train does not set the rate, nor does the partial one it began in", () => {
    const jump = (intervals: number[]): number => {
      const c = controller();
      c.onFeedback({ now: 300, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 0 });
      let t = 305;
      for (const r of intervals) {
        c.onFeedback({ now: t, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: r });
        t += 5;
      }
      quiet(c, t, 345, START);
      return c.rateBps();
    };
    // as on the real 200 Mbit/s, 300 ms path: one full interval read 291
    assert.equal(jump([291e6, 178e6, 173e6]), 178e6);
    // the train began late in the first interval, which read 108
    assert.equal(jump([108e6, 176e6]), 176e6);
  });

  it('a noisy delivery report when start-up ends is not taken for the capacity', () => {
    // the path carries 180 and a queue builds; `noisyAt` (when ≥ 0) names the report that
    // reads 234 instead. Returns the index of the report that ended start-up.
    const run = (noisyAt: number): { c: DelayBasedRateController; exit: number; end: number } => {
      const c = controller();
      let t = firstRtt(c, 250e6) + 5;
      let exit = -1;
      for (let i = 0; exit < 0 && i < 200; i++, t += 5) {
        const recv = i === noisyAt ? 234e6 : 180e6;
        c.onFeedback({ now: t, qdelayMs: i, rttMs: RTT, recvRateBps: recv, intervalRateBps: recv });
        if (c.rateBps() < 250e6) exit = i;
      }
      return { c, exit, end: t };
    };
    const { exit } = run(-1);
    assert.ok(exit > 0, 'start-up ends on the queue');
    const { c, end } = run(exit);
    assert.ok(c.rateBps() <= 0.76 * 180e6, `draining at ${c.rateBps()}`);
    quiet(c, end, end + 2 * RTT, 180e6);
    assert.ok(c.rateBps() < 1.02 * 180e6, `rate ${c.rateBps()}: held a capacity the path does not have`);
  });

  it('below capacity, short bursts of queue do not stop the re-probe: the path fills in seconds', () => {
    // a fluid path of 196 Mbit/s whose queue, while not full, still shows 6 ms bursts of
    // 50 ms every 300 ms (as on the real 300 ms path at 85% of it)
    const C = 196e6;
    const c = controller();
    let t = firstRtt(c, 165e6) + 5;
    let q = 0;
    const step = (until: number): void => {
      for (; t <= until; t += 5) {
        const rate = c.rateBps();
        q = Math.max(0, q + ((rate - C) / C) * 5);
        const burst = t % 300 < 50 ? 6 : 0.15;
        c.onFeedback({ now: t, qdelayMs: Math.max(q, burst), rttMs: RTT + q, recvRateBps: Math.min(rate, C), intervalRateBps: Math.min(rate, C) });
      }
    };
    step(3_500);
    assert.ok(c.rateBps() >= 0.95 * C, `rate ${(c.rateBps() / 1e6).toFixed(1)} Mbit/s after 3.5 s on a 196 Mbit/s path`);
    step(8_000);
    assert.ok(q < 60, `queue ${q.toFixed(0)} ms: the re-probe overran the path`);
  });
});

describe('rate control: after a re-probe', () => {
  /** Feedback every 5 ms from `from` to `to`: queue q(t) ms, delivering `cap` while there is a queue, else min(rate, cap) (recorded rates in `seen`). */
  function feed(c: DelayBasedRateController, from: number, to: number, q: (t: number) => number, cap: number, seen?: number[]): void {
    for (let t = from; t <= to; t += 5) {
      const recv = q(t) > 0 ? cap : Math.min(c.rateBps(), cap);
      c.onFeedback({ now: t, qdelayMs: q(t), rttMs: RTT, recvRateBps: recv, intervalRateBps: recv });
      seen?.push(c.rateBps());
    }
  }

  /** A flow held at 175 after its train, then a re-probe on a 190 Mbit/s path that found it full at `end` (ms). */
  function probedOnto190(): { c: DelayBasedRateController; end: number } {
    const c = controller();
    c.onFeedback({ now: 300, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 0 });
    c.onFeedback({ now: 305, qdelayMs: 0, rttMs: RTT, recvRateBps: START, intervalRateBps: 60e6, trainRateBps: 175e6 });
    // held for two round trips without a queue, then three more empty: the re-probe starts
    let t = 310;
    for (; c.rateBps() <= 190e6 && t < 10_000; t += 5) feed(c, t, t, () => 0, 190e6);
    assert.ok(t < 10_000, 'a re-probe began');
    // the queue shows a round trip late, growing while the re-probe goes on
    const q0 = t;
    for (; c.rateBps() > 190e6 && t < q0 + 2000; t += 5) feed(c, t, t, (u) => (u - q0) / 10, 190e6);
    assert.ok(c.rateBps() <= 0.981 * 190e6, `backed off to ${c.rateBps()}`);
    return { c, end: t };
  }

  it('once the queue it built is gone, the rate returns at once to just under what the path delivered', () => {
    const { c, end } = probedOnto190();
    // the queue the re-probe left: the delay law cuts while it drains over 600 ms
    const seen: number[] = [];
    feed(c, end, end + 600, (u) => Math.max(0, 30 - ((u - end) / 600) * 30), 190e6, seen);
    const cut = Math.min(...seen);
    assert.ok(cut < 0.97 * 190e6, `the law cut to ${(cut / 1e6).toFixed(1)} only`);
    // empty for two round trips (the queue counts as empty once its median over a round trip is)
    feed(c, end + 605, end + 605 + 2 * RTT, () => 0, 190e6);
    // before: the law crept up by 1.7 Mbit/s per round trip from the cut, and the next
    // re-probe overshot again
    assert.ok(c.rateBps() >= 0.985 * 190e6, `rate ${(c.rateBps() / 1e6).toFixed(1)}, cut to ${(cut / 1e6).toFixed(1)}`);
  });

  it('after any cut for a queue that then drains, the rate returns to what the path delivered while it was full', () => {
    // as on the real 300 ms path: at capacity with its standing queue, the emulator
    // stalled a quarter of a second and left 50 ms of queue; the delay law cut to 173
    // and crept back for six seconds
    const { c, end } = probedOnto190();
    feed(c, end, end + 10 * RTT, () => 10, 190e6);
    const t0 = end + 10 * RTT + 5;
    const seen: number[] = [];
    feed(c, t0, t0 + 400, () => 50, 190e6, seen);
    feed(c, t0 + 405, t0 + 700, (u) => Math.max(0, 50 - ((u - t0 - 400) / 300) * 50), 190e6, seen);
    const cut = Math.min(...seen);
    assert.ok(cut < 0.97 * 190e6, `the law cut to ${(cut / 1e6).toFixed(1)} only`);
    feed(c, t0 + 705, t0 + 705 + 2 * RTT, () => 0, 190e6);
    assert.ok(c.rateBps() >= 0.985 * 190e6, `rate ${(c.rateBps() / 1e6).toFixed(1)}, cut to ${(cut / 1e6).toFixed(1)}`);
  });

  it('returns only within eight round trips of the last full path, and never above the share it was last delivered', () => {
    const { c, end } = probedOnto190();
    // a standing queue (another flow) for 12 round trips: the law gives way
    feed(c, end, end + 12 * RTT, () => 30, 100e6);
    const shared = c.rateBps();
    assert.ok(shared < 0.9 * 190e6, `rate ${shared}`);
    // then the queue is empty: creeping, no return to 190
    feed(c, end + 12 * RTT + 5, end + 14 * RTT, () => 0, 190e6);
    assert.ok(c.rateBps() < 0.95 * 190e6, `rate ${(c.rateBps() / 1e6).toFixed(1)} returned to a stale measurement`);
  });
});
