/**
 * A virtual clock for deterministic tests. Time only moves when the test calls
 * {@link SimClock.advance}, {@link SimClock.runUntil} or their async variants; timers run
 * synchronously, in time order, inside those calls.
 *
 * Ordering guarantees:
 * - timers run in order of their due time;
 * - timers due at the same time run in the order they were scheduled (insertion order);
 * - a timer scheduled from inside a callback for the current time (`setTimer(0, …)`) runs
 *   after the callback that scheduled it, within the same `advance`.
 */
import type { Clock } from '../core/clock.js';

/** Options for {@link SimClock}. */
export interface SimClockOptions {
  /** Initial value of `now()` in milliseconds (default 0). */
  startMs?: number;
  /**
   * Upper bound on the number of timer callbacks one `advance`/`runUntil` call may run
   * before it throws: a guard against code that reschedules itself at 0 ms forever.
   * Default 10,000,000.
   */
  maxTimersPerRun?: number;
}

interface TimerEntry {
  readonly at: number;
  readonly seq: number;
  fn: (() => void) | undefined;
}

/** Resolves after the event loop has drained pending microtasks (and one macrotask turn). */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A {@link Clock} whose time is controlled by the test. Timers are kept in a binary
 * heap keyed by (due time, insertion sequence); cancelled timers are removed lazily.
 *
 * Exceptions thrown by a timer callback propagate out of the `advance`/`runUntil` call
 * that ran it; the clock stays consistent (`now()` is the failed timer's due time) and
 * may be advanced further.
 */
export class SimClock implements Clock {
  private current: number;
  private seq = 0;
  private live = 0;
  private readonly heap: TimerEntry[] = [];
  private readonly maxTimersPerRun: number;

  constructor(options: SimClockOptions = {}) {
    this.current = options.startMs ?? 0;
    this.maxTimersPerRun = options.maxTimersPerRun ?? 10_000_000;
    if (!Number.isFinite(this.current)) throw new RangeError(`SimClock: startMs must be finite, got ${this.current}`);
  }

  /** Current virtual time in milliseconds. */
  now(): number {
    return this.current;
  }

  /**
   * Schedules `fn` to run `ms` milliseconds from now (negative values count as 0).
   * Returns a cancel function; cancelling twice or after the timer ran does nothing.
   */
  setTimer(ms: number, fn: () => void): () => void {
    if (Number.isNaN(ms) || ms === Infinity) throw new RangeError(`SimClock.setTimer: invalid delay ${ms}`);
    return this.setTimerAt(this.current + Math.max(0, ms), fn);
  }

  /**
   * Schedules `fn` at the absolute virtual time `t` (times in the past count as now).
   * Unlike `setTimer(t - now(), fn)` this is exact: two timers given the same `t` are due
   * at the same instant even when scheduled at different times, so insertion order holds.
   */
  setTimerAt(t: number, fn: () => void): () => void {
    if (Number.isNaN(t) || t === Infinity) throw new RangeError(`SimClock.setTimerAt: invalid time ${t}`);
    const entry: TimerEntry = { at: Math.max(this.current, t), seq: this.seq++, fn };
    this.push(entry);
    this.live++;
    return () => {
      if (entry.fn !== undefined) {
        entry.fn = undefined;
        this.live--;
      }
    };
  }

  /** Number of timers scheduled and not yet run or cancelled. */
  get pendingTimers(): number {
    return this.live;
  }

  /** Due time of the next live timer, or undefined when none is pending. */
  nextTimerAt(): number | undefined {
    this.dropCancelledTop();
    return this.heap[0]?.at;
  }

  /**
   * Moves time forward by `ms`, running every timer due up to and including the new time
   * (timers scheduled while running are included when they fall inside the window).
   * Afterwards `now()` equals the old time plus `ms`.
   */
  advance(ms: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) throw new RangeError(`SimClock.advance: invalid duration ${ms}`);
    const target = this.current + ms;
    let budget = this.maxTimersPerRun;
    while (this.runNext(target)) {
      if (--budget <= 0) throw this.runawayError();
    }
    this.current = target;
  }

  /** Moves time forward to the absolute time `t` (no-op when `t` is not in the future). */
  advanceTo(t: number): void {
    this.advance(Math.max(0, t - this.current));
  }

  /**
   * Runs timers in order until `predicate()` is true (checked before the first timer and
   * after each one) or until `maxMs` of virtual time have passed. Returns true when the
   * predicate became true (time stays at the last timer that ran), false otherwise (time
   * is then exactly `maxMs` later).
   */
  runUntil(predicate: () => boolean, maxMs: number): boolean {
    if (!(maxMs >= 0) || !Number.isFinite(maxMs)) throw new RangeError(`SimClock.runUntil: invalid maxMs ${maxMs}`);
    const limit = this.current + maxMs;
    let budget = this.maxTimersPerRun;
    while (!predicate()) {
      if (!this.runNext(limit)) {
        this.current = limit;
        return predicate();
      }
      if (--budget <= 0) throw this.runawayError();
    }
    return true;
  }

  /**
   * Like {@link advance}, but lets the event loop turn (draining promise continuations)
   * before the first timer and after each one, so async code driven by the timers can
   * make progress. Slower than `advance`; use it when the code under test awaits.
   */
  async advanceAsync(ms: number): Promise<void> {
    if (!(ms >= 0) || !Number.isFinite(ms)) throw new RangeError(`SimClock.advanceAsync: invalid duration ${ms}`);
    const target = this.current + ms;
    let budget = this.maxTimersPerRun;
    await nextTurn();
    while (this.runNext(target)) {
      if (--budget <= 0) throw this.runawayError();
      await nextTurn();
    }
    this.current = target;
    await nextTurn();
  }

  /**
   * Async variant of {@link runUntil}: lets the event loop turn before each predicate
   * check, so promise-based code can settle between timers.
   */
  async runUntilAsync(predicate: () => boolean, maxMs: number): Promise<boolean> {
    if (!(maxMs >= 0) || !Number.isFinite(maxMs)) throw new RangeError(`SimClock.runUntilAsync: invalid maxMs ${maxMs}`);
    const limit = this.current + maxMs;
    let budget = this.maxTimersPerRun;
    await nextTurn();
    while (!predicate()) {
      if (!this.runNext(limit)) {
        this.current = limit;
        await nextTurn();
        return predicate();
      }
      if (--budget <= 0) throw this.runawayError();
      await nextTurn();
    }
    return true;
  }

  /** Runs the earliest live timer due at or before `limit`; returns false when there is none. */
  private runNext(limit: number): boolean {
    this.dropCancelledTop();
    const top = this.heap[0];
    if (top === undefined || top.at > limit) return false;
    this.pop();
    const fn = top.fn;
    top.fn = undefined;
    this.live--;
    if (top.at > this.current) this.current = top.at;
    fn?.();
    return true;
  }

  private runawayError(): Error {
    return new Error(
      `SimClock: more than ${this.maxTimersPerRun} timers ran in one call (at t=${this.current} ms); ` +
        'is something rescheduling itself with a zero delay?',
    );
  }

  private dropCancelledTop(): void {
    while (this.heap.length > 0 && this.heap[0]?.fn === undefined) this.pop();
  }

  private static before(a: TimerEntry, b: TimerEntry): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(e: TimerEntry): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p] as TimerEntry;
      if (!SimClock.before(e, parent)) break;
      h[i] = parent;
      i = p;
    }
    h[i] = e;
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop();
    if (last === undefined || h.length === 0) return;
    let i = 0;
    const n = h.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      let c = l;
      if (r < n && SimClock.before(h[r] as TimerEntry, h[l] as TimerEntry)) c = r;
      const child = h[c] as TimerEntry;
      if (!SimClock.before(child, last)) break;
      h[i] = child;
      i = c;
    }
    h[i] = last;
  }
}
