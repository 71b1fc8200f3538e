/**
 * Rate control. The sender asks the controller how fast to send; every receiver
 * feedback updates it. Adaptive policies are driven by queueing delay (how far the
 * path's one-way delay has risen above its measured base), never by loss: random loss
 * on a long path says nothing about congestion.
 *
 * The adaptive law is a rate form of FAST TCP's: each flow aims to keep `alpha` bytes
 * of its own in the bottleneck queue. With queueing delay q and rate x a flow holds
 * x*q bytes there, so the update x += gain * (alpha - x*q) / rtt converges to
 * x*q = alpha: flows with the same alpha share a bottleneck evenly (fair), a flow
 * with twice the alpha takes about twice the share (high), and one with a small alpha
 * yields (low). While the queue is empty the rate grows multiplicatively so that a
 * long fat path fills within a few round trips.
 */
import type { RatePolicy } from '../../core/types.js';

export interface FeedbackSample {
  /** ms, sender clock */
  now: number;
  /** queueing delay in ms, or undefined when the interval had no sample */
  qdelayMs: number | undefined;
  /** smoothed round-trip time, ms */
  rttMs: number;
  /** delivery rate measured over the last few tens of ms, bits/s */
  recvRateBps: number;
  /**
   * the receiver's arrival rate over its last feedback interval (a few ms), bits/s; 0 or
   * absent when the feedback did not carry one
   */
  intervalRateBps?: number;
  /** datagrams that arrived in that interval, and gaps it found (datagrams lost on the way) */
  intervalPackets?: number;
  intervalLost?: number;
  /**
   * the initial burst's arrival rate as the receiver timed it from its first to its last
   * datagram, bits/s, and the share of it lost on the way; absent until the burst is over
   */
  trainRateBps?: number;
  trainLoss?: number;
}

export interface RateController {
  onFeedback(f: FeedbackSample): void;
  /** current sending rate, bits per second */
  rateBps(): number;
}

export interface RateOptions {
  policy: RatePolicy;
  /** target (ceiling) rate, bits/s */
  targetBps: number;
  /** floor, bits/s */
  minBps: number;
  /** start rate for adaptive policies, bits/s */
  initialBps?: number;
}

/** Bytes a flow aims to keep queued at the bottleneck, per policy. */
export const POLICY_ALPHA_BYTES: Record<Exclude<RatePolicy, 'fixed'>, number> = {
  high: 500_000,
  fair: 250_000,
  low: 60_000,
};

/**
 * Start-up ends once the smoothed queue reaches this depth (ms): end-host scheduling
 * noise shows up as a few ms that vanish at the next samples.
 */
const STARTUP_EXIT_QUEUE_MS = 5;

/**
 * Start-up jumps to the rate at which the initial window arrived once that is at least
 * this many times the sending rate (see {@link DelayBasedRateController.onFeedback}).
 */
const TRAIN_JUMP_MIN = 1.5;

/** The jump never goes above this multiple of the current rate (a receiver's read hiccup bunches arrivals). */
const TRAIN_JUMP_MAX = 8;

/**
 * The train is measured over the feedback intervals of this long after the first
 * feedback (ms): the initial window (50 ms at the start rate) crosses a bottleneck four
 * times faster in 12.5 ms; what arrives later is paced traffic, and a burst of arrivals
 * then is a receiver's hiccup, not the path.
 */
const TRAIN_WINDOW_MS = 40;

/**
 * The train's arrival rate is what the path delivered; datagrams lost after the
 * bottleneck (random loss) took their share of it too, so the sending rate that fills
 * it is the arrival rate / (1 - the train's loss). Loss counted up to this share only:
 * a train that overflowed a small buffer lost its datagrams before the bottleneck.
 */
const TRAIN_LOSS_MAX = 0.1;

/**
 * A queue this deep (ms) while holding a train's rate means the train overestimated the
 * path: drain it. Below it the delay law takes over from the held rate.
 */
const HOLD_HANDOVER_QUEUE_MS = 20;
/** ... and the path must deliver at least this share of the held rate */
const HOLD_HANDOVER_DELIVERED = 0.93;
/** ... which start-up waits to see for up to this many round trips since the jump (then drains) */
const HOLD_DECIDE_RTTS = 2;

/** Shortest feedback interval (ms) whose arrival rate counts towards the train. */
const TRAIN_MIN_INTERVAL_MS = 4;

/**
 * The delivery rate is the median of the receiver's reports over a quarter of a round
 * trip, within these bounds (ms), and of at least DELIVERY_MIN_SAMPLES reports.
 */
const DELIVERY_WINDOW_MIN_MS = 20;
const DELIVERY_WINDOW_MAX_MS = 100;
const DELIVERY_MIN_SAMPLES = 5;

/** largest re-probe step per round trip (it starts at 5% and doubles every two round trips) */
const PROBE_MAX_STEP = 0.25;

/**
 * when a re-probe meets a queue, the rate returns to this share of the delivery rate
 * (0.95 emptied the queue for seconds on a 300 ms path, where the delay law adds only
 * GAIN * alpha per round trip)
 */
const PROBE_BACKOFF = 0.98;

/** with the queue empty after a cut, the rate returns at once to this share of the rate the path delivered when it was last full ... */
const FULL_RETURN = 0.99;
/** ... at most this many round trips ago */
const FULL_MEMORY_RTTS = 8;

/** weight of the queue's trend over one round trip in the delay law (its damping) */
const TREND_GAIN = 2;

/**
 * gain of the delay law per round trip. With the trend term the loop is damped (without
 * it, a gain of 0.4 swung the rate ±15% around capacity with a period of about ten
 * round trips, emptying the queue on every swing); a smaller gain then keeps the queue
 * near its set point: on the simulated 200 Mbit/s, 100 ms path the median queue stays
 * at 10 ms and goodput rose 2% (4% for two flows).
 */
const GAIN = 0.25;

/** shortest control time scale, ms (the law is applied as if the RTT were at least this) */
const MIN_CONTROL_MS = 40;

export class FixedRateController implements RateController {
  constructor(private readonly bps: number) {}
  onFeedback(): void {}
  rateBps(): number {
    return this.bps;
  }
}

export class DelayBasedRateController implements RateController {
  private rate: number;
  private lastUpdate: number | undefined;
  private readonly alpha: number;
  /** queueing delay (ms) under which the path counts as empty */
  private readonly emptyQueueMs = 1.0;
  /** fast multiplicative start-up until the first queue is seen (like slow start) */
  private startup = true;
  /** how long the queue has been continuously empty, ms */
  private emptyFor = 0;
  /** draining the queue built during start-up */
  private draining = false;
  /** draining ends by then (ms) even if the queue stays */
  private drainUntil = 0;
  private capacityBps = 0;
  /** the rate start-up sent at when it ended in a drain (what the path can have delivered since) */
  private drainFromBps = 0;
  /** the delivery rate when the path was last full (a queue of STARTUP_EXIT_QUEUE_MS or more), bits/s (0: none to return to), and when (ms) */
  private fullBps = 0;
  private fullAt = -Infinity;
  /** when the first feedback arrived (ms): the initial window's train is measured from there */
  private trainFrom: number | undefined;
  /** arrival rates over the feedback intervals (≥ TRAIN_MIN_INTERVAL_MS) since then, bits/s */
  private readonly trainRates: { bps: number; packets: number; lost: number }[] = [];
  /** start-up has decided on the train (jumped, or found none) */
  private trainDecided = false;
  /** since when start-up holds that rate with the queue empty (ms; undefined: not holding) */
  private holdSince: number | undefined;
  /** when the hold began (ms) */
  private holdFrom = 0;
  /** the path showed no queue when the hold began (no other flow's standing queue) */
  private holdOnEmpty = false;
  /** smoothed queueing delay, ms */
  private qAvg = 0;
  /** recent queueing-delay samples: a real queue persists, a receiver hiccup does not */
  private readonly recentQ: number[] = [];
  /** (time, filtered queueing delay) over the last round trip: the queue's trend */
  private readonly qHist: { t: number; q: number }[] = [];
  /** (time, delivery rate) over the last DELIVERY_WINDOW: one sample is noisy */
  private readonly recvHist: { t: number; bps: number }[] = [];
  /** the delivery reports of the last round trip (start-up's exit reads the path from them too) */
  private readonly recvHistRtt: { t: number; bps: number }[] = [];

  constructor(private readonly opts: RateOptions & { policy: Exclude<RatePolicy, 'fixed'> }) {
    this.alpha = POLICY_ALPHA_BYTES[opts.policy];
    this.rate = clamp(opts.initialBps ?? Math.min(opts.targetBps, 50e6), opts.minBps, opts.targetBps);
  }

  onFeedback(f: FeedbackSample): void {
    const last = this.lastUpdate;
    this.lastUpdate = f.now;
    // the first feedback's interval started at the receiver's timer, not at the train
    this.trainFrom ??= f.now;
    if (last === undefined || f.qdelayMs === undefined) return;
    this.recentQ.push(Math.max(0, f.qdelayMs));
    if (this.recentQ.length > 3) this.recentQ.shift();
    const qMs = Math.min(...this.recentQ);
    // on very short paths end-host hiccups (GC, disk flushes) dominate the delay signal:
    // react on a time scale of at least MIN_CONTROL_MS rather than the RTT
    const rtt = Math.max(f.rttMs, MIN_CONTROL_MS);
    const dt = Math.max(0, f.now - last);
    // fraction of a round trip since the last update: the law is stated per RTT
    const frac = Math.min(1, dt / rtt);
    const x = this.rate / 8; // bytes per second
    const q = qMs / 1000;
    // a smoothed queue (time constant: the RTT, at most 100 ms) to tell a standing queue
    // or a standing empty path from end-host noise
    const tau = Math.min(rtt, 100);
    this.qHist.push({ t: f.now, q: qMs });
    while (this.qHist.length > 2 && f.now - this.qHist[1]!.t >= rtt) this.qHist.shift();
    const oldest = this.qHist[0]!;
    const span = f.now - oldest.t;
    const slope = span >= rtt / 2 ? (qMs - oldest.q) / span : 0;
    this.qAvg += Math.min(1, dt / tau) * (qMs - this.qAvg);
    if (f.recvRateBps > 0) this.recvHist.push({ t: f.now, bps: f.recvRateBps });
    const window = Math.min(DELIVERY_WINDOW_MAX_MS, Math.max(DELIVERY_WINDOW_MIN_MS, rtt / 4));
    while (this.recvHist.length > DELIVERY_MIN_SAMPLES && f.now - this.recvHist[0]!.t > window) this.recvHist.shift();
    if (this.startup) {
      if (f.recvRateBps > 0) this.recvHistRtt.push({ t: f.now, bps: f.recvRateBps });
      while (this.recvHistRtt.length > DELIVERY_MIN_SAMPLES && f.now - this.recvHistRtt[0]!.t > rtt) this.recvHistRtt.shift();
    }
    const undecided =
      this.holdSince !== undefined &&
      this.holdOnEmpty &&
      qMs < HOLD_HANDOVER_QUEUE_MS &&
      this.deliveryRate() < HOLD_HANDOVER_DELIVERED * this.rate &&
      f.now - this.holdFrom < HOLD_DECIDE_RTTS * rtt;
    if (this.startup && qMs >= STARTUP_EXIT_QUEUE_MS && this.qAvg >= STARTUP_EXIT_QUEUE_MS / 2 && !undecided) {
      // the path is full: what arrives is its capacity. Growing for the round trip the
      // signal took has built a queue: drain it at 3/4 of the capacity, then hold the
      // capacity and let the delay law take over.
      // (Holding a train's rate, a small queue with a delivery rate still under it is not
      // decided yet: the delivery reports lag the jump, and a stall of the sender's own
      // loop followed by its catch-up burst leaves a step of queue that stays while the
      // rate is the capacity. On the 300 ms path one such exit read 139 of 191 delivered,
      // drained at 101 and took 12 s back. An overestimating train's queue grows on to
      // HOLD_HANDOVER_QUEUE_MS; a step's stays, and the reports catch up. Not when the
      // path had a queue at the jump: that is another flow's, and this train measured
      // more than its share.)
      this.startup = false;
      const delivered = this.exitDeliveryRate();
      if (this.holdSince !== undefined && qMs < HOLD_HANDOVER_QUEUE_MS && delivered >= HOLD_HANDOVER_DELIVERED * this.rate) {
        // holding the rate a train measured, and the path delivers about that: a few ms of
        // queue is what the delay law keeps anyway (alpha / rate: 10.5 ms for `fair` at
        // 190 Mbit/s). Draining at 3/4 here cost 0.3 s of a 200 Mbit/s, 300 ms path in
        // most runs, and the law then crept back to where the train had been. A train
        // that overestimated shows as a delivery rate well under the rate: drain that.
        if (delivered > 0) this.capacityBps = delivered;
        return;
      }
      if (delivered > 0) {
        this.capacityBps = delivered;
        this.drainFromBps = this.rate;
        this.draining = true;
        // at 3/4 of the capacity a queue of q ms drains in about 4q ms. It may not: the
        // queue can be another flow's standing one (its delay law keeps it), and a drain
        // that waited for it to vanish held this flow at a fixed rate for good (two fair
        // flows started 200–500 ms apart split 76/24 for seconds)
        this.drainUntil = f.now + rtt + 4 * qMs;
        this.rate = clamp(Math.min(this.rate, delivered * 0.75), this.opts.minBps, this.opts.targetBps);
        return;
      }
    }
    if (this.startup && !this.trainDecided && (f.trainRateBps ?? 0) > 0) {
      // the receiver timed the initial burst itself (kernel receive times, whichever
      // feedback intervals or read batches it fell in): the path's rate without the
      // intervals' noise and without waiting TRAIN_WINDOW_MS for them
      this.trainDecided = true;
      const train = f.trainRateBps! / (1 - Math.min(TRAIN_LOSS_MAX, f.trainLoss ?? 0));
      if (train > TRAIN_JUMP_MIN * this.rate) {
        if (train <= TRAIN_JUMP_MAX * this.rate) {
          this.holdSince = this.holdFrom = f.now;
          this.holdOnEmpty = qMs < this.emptyQueueMs;
        }
        this.rate = clamp(Math.min(train, TRAIN_JUMP_MAX * this.rate), this.opts.minBps, this.opts.targetBps);
        return;
      }
    }
    if (this.startup && !this.trainDecided && this.trainFrom !== undefined) {
      // The initial window left as one burst and the bottleneck spaced it out at its own
      // rate: arrivals faster than we send, in the first feedback intervals, measure the
      // path (a packet train). Start-up jumps there instead of doubling towards it for
      // several round trips and overshooting by the round trip the queue signal takes; a
      // queue then ends start-up as usual. The estimate is the median of the intervals of
      // at least TRAIN_MIN_INTERVAL_MS (shorter ones count too few datagrams: a 3 ms
      // interval read 270 on a 200 Mbit/s path) that outran the sending rate by
      // TRAIN_JUMP_MIN: the train's own intervals. Not the fastest of them: one bunched
      // interval read 291 on the 200 Mbit/s, 300 ms path, the jump built a 180 ms queue
      // and the run lost 0.6 s getting back. Of two, the faster: the slower is often the
      // partial one the train began in (108 and 176 on that path; holding 108 cost two
      // seconds of re-probing), and a queue soon corrects an overestimate. Past
      // TRAIN_JUMP_MAX it may be a receiver's read hiccup: jump that far and go on
      // doubling.
      if (dt >= TRAIN_MIN_INTERVAL_MS && (f.intervalRateBps ?? 0) > 0) {
        this.trainRates.push({ bps: f.intervalRateBps!, packets: f.intervalPackets ?? 0, lost: f.intervalLost ?? 0 });
      }
      if (f.now - this.trainFrom >= TRAIN_WINDOW_MS) {
        this.trainDecided = true;
        const fast = this.trainRates.filter((r) => r.bps > TRAIN_JUMP_MIN * this.rate);
        let packets = 0;
        let lost = 0;
        for (const r of fast) {
          packets += r.packets;
          lost += r.lost;
        }
        const loss = packets + lost > 0 ? Math.min(TRAIN_LOSS_MAX, lost / (packets + lost)) : 0;
        const train = median(
          fast.map((r) => r.bps),
          'upper',
        ) / (1 - loss);
        if (train > 0) {
          if (train <= TRAIN_JUMP_MAX * this.rate) {
            this.holdSince = this.holdFrom = f.now;
            this.holdOnEmpty = qMs < this.emptyQueueMs;
          }
          this.rate = clamp(Math.min(train, TRAIN_JUMP_MAX * this.rate), this.opts.minBps, this.opts.targetBps);
          return;
        }
      }
    }
    if (this.startup && this.holdSince !== undefined) {
      // hold the measured rate; if no queue shows for two round trips it was an
      // underestimate (the train met other traffic, or arrived in pieces): leave start-up
      // and let the gentle re-probe find the rest. A small queue that neither grows to
      // end start-up nor vanishes (the rate is about right, or another flow's queue)
      // hands over to the delay law after four round trips.
      const empty = this.queueEmpty();
      if (!empty) this.holdSince = f.now;
      if (f.now - this.holdSince > 2 * rtt || f.now - this.holdFrom > 4 * rtt) this.startup = false;
      this.emptyFor = empty ? this.emptyFor + dt : 0;
      return;
    }
    if (this.draining) {
      // While the queue drains, the path is full: what it delivers now is its capacity. The
      // reading start-up ended on may have been low: on the 300 ms path a 20 ms emulator
      // stall just before the exit read 159 of 190 delivered, the drain returned to 161
      // and the delay law took 2 s to creep back (0.44 s of a 512 MiB run). Never above
      // what start-up sent at: the path cannot have delivered more.
      if (qMs >= STARTUP_EXIT_QUEUE_MS) {
        const delivered = Math.min(this.deliveryRate(), this.drainFromBps);
        if (delivered > this.capacityBps) this.capacityBps = delivered;
      }
      if (qMs < STARTUP_EXIT_QUEUE_MS || f.now >= this.drainUntil) {
        this.draining = false;
        this.rate = clamp(this.capacityBps, this.opts.minBps, this.opts.targetBps);
      }
      return;
    }
    if (this.queueEmpty()) this.emptyFor += dt;
    else this.emptyFor = 0;
    // While the path is full (a queue of STARTUP_EXIT_QUEUE_MS or more), what it delivers
    // to this flow is what the flow can have. When the delay law has cut for a queue and
    // the queue is then gone, the law adds back only GAIN * alpha per round trip
    // (1.7 Mbit/s at 300 ms for `fair`), and the queue stays empty long enough to start a
    // re-probe, which overshoots: on the 200 Mbit/s, 300 ms path the rate cycled 180–210
    // every 2–3 s and averaged 185 of 190 after each re-probe, and after the emulator
    // stalled for a quarter of a second (50 ms of queue at capacity) the law cut to 173 and
    // crept back for six seconds. So once the queue has been empty for a round trip,
    // within FULL_MEMORY_RTTS of the path's last being full, the rate returns at once to
    // just under what it delivered then (once). It is the flow's share as last measured:
    // with another flow on the path, that share, not the whole path.
    if (!this.startup && qMs >= STARTUP_EXIT_QUEUE_MS) {
      const delivered = this.deliveryRate();
      if (delivered > 0) {
        this.fullBps = delivered;
        this.fullAt = f.now;
      }
    }
    const belowFull = this.fullBps > 0 && f.now - this.fullAt < FULL_MEMORY_RTTS * rtt && this.rate < FULL_RETURN * this.fullBps;
    // (fullBps is measured only after start-up, and a drain returned above)
    if (belowFull && this.emptyFor >= rtt) {
      this.rate = clamp(FULL_RETURN * this.fullBps, this.opts.minBps, this.opts.targetBps);
      this.fullBps = 0;
      this.emptyFor = 0;
      this.wasProbing = false;
      return;
    }
    // after start-up, an empty queue for several round trips means capacity was freed
    // (another flow ended): probe multiplicatively again
    const probing = this.startup || this.emptyFor > 3 * rtt;
    let next: number;
    if (probing) {
      // start-up doubles the rate every round trip. A re-probe starts gently (5% per round
      // trip: the queue it builds shows only a round trip later, and on a long path a
      // bold probe overflows the bottleneck before it is seen) and doubles its step
      // every two round trips the queue stays empty, up to 25%: freed capacity is found
      // in a few round trips, a full path is hardly disturbed.
      const step = this.startup ? 1.0 : Math.min(PROBE_MAX_STEP, 0.05 * 2 ** Math.floor((this.emptyFor - 3 * rtt) / (2 * rtt)));
      next = x * (1 + step * frac);
      const recv = f.recvRateBps / 8;
      if (recv > 0) next = Math.min(next, Math.max(x, recv * (1 + Math.max(step, 0.1))));
    } else {
      // the delay law; gain GAIN per round trip: feedback lags a round trip behind a
      // rate change and pacing has no ack clock, so a smaller gain avoids a limit cycle
      // the queue a round trip from now if it keeps its trend: acting on it damps the
      // oscillation the round trip of feedback delay otherwise causes
      const qPred = Math.max(0, q + (TREND_GAIN * slope * rtt) / 1000);
      const err = this.alpha - x * qPred; // bytes
      next = x + GAIN * frac * (err / (rtt / 1000));
      // never cut by more than half in one round trip
      next = Math.max(next, x * (1 - 0.5 * frac));
      // a re-probe that found the path full: back to just under what the path
      // delivers at once (the queue it built shows a round trip late; waiting for the
      // law to undo a round trip of growth overshoots, then undershoots)
      const recv = this.deliveryRate() / 8;
      if (this.wasProbing && recv > 0) next = Math.min(next, recv * PROBE_BACKOFF);
    }
    this.wasProbing = probing && !this.startup;
    this.rate = clamp(next * 8, this.opts.minBps, this.opts.targetBps);
  }

  /**
   * The path's queue is empty: the median queueing delay over the last round trip is
   * under emptyQueueMs. Not a smoothed value: below capacity on the 300 ms path, bursts
   * of 2–7 ms lasting 50 ms came every few hundred ms, kept a smoothed queue above 1 ms
   * and the re-probe from starting, and the delay law alone crept up by 5 Mbit/s a second
   * (seconds at 85% of the path).
   */
  private queueEmpty(): boolean {
    return median(this.qHist.map((h) => h.q), 'upper') < this.emptyQueueMs;
  }

  /**
   * What the path delivers: the median of the delivery rates over the last
   * DELIVERY_WINDOW (0 when there is none). A single sample is noisy: one read 234 on a
   * 200 Mbit/s path, start-up took it for the capacity and held 20% too much.
   */
  private deliveryRate(): number {
    return median(this.recvHist.map((s) => s.bps), 'lower');
  }

  /**
   * What the path delivers, as start-up's exit reads it: the usual short-window median, or
   * the median over the last round trip when that is higher. The emulator's stalls on the
   * 300 ms path left 50–70 ms of reports at 146–148 of 190 half a second after the jump,
   * just when the held rate's (183.5) first 6 ms of queue showed: the short median read
   * 163, start-up drained, came back to 163 and the delay law crept back for 1.5 s
   * (0.27 s of a 512 MiB run). Over the round trip before, the reports' median was about
   * 175: such a dip is a minority there. Not the longer window alone: right after the jump the
   * older reports still show the start rate, and only the short window has left them.
   */
  private exitDeliveryRate(): number {
    return Math.max(this.deliveryRate(), median(this.recvHistRtt.map((s) => s.bps), 'lower'));
  }

  /** the last update was a re-probe (not start-up) */
  private wasProbing = false;

  rateBps(): number {
    return this.rate;
  }
}

export function createRateController(opts: RateOptions): RateController {
  if (opts.policy === 'fixed') return new FixedRateController(opts.targetBps);
  return new DelayBasedRateController({ ...opts, policy: opts.policy });
}

/** The median of `xs`, of an even count the lower or the upper middle one (0 when empty). */
function median(xs: number[], even: 'lower' | 'upper'): number {
  if (xs.length === 0) return 0;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[even === 'lower' ? Math.floor((sorted.length - 1) / 2) : Math.floor(sorted.length / 2)]!;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}
