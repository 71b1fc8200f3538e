import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SimClock } from '../../src/testkit/index.js';

describe('SimClock', () => {
  it('runs timers in due-time order regardless of scheduling order, with now() at each due time', () => {
    const clock = new SimClock();
    const seen: Array<[string, number]> = [];
    clock.setTimer(30, () => seen.push(['c', clock.now()]));
    clock.setTimer(10, () => seen.push(['a', clock.now()]));
    clock.setTimer(20, () => seen.push(['b', clock.now()]));
    clock.setTimer(25.5, () => seen.push(['b2', clock.now()]));
    clock.advance(29);
    assert.deepEqual(seen, [['a', 10], ['b', 20], ['b2', 25.5]]);
    assert.equal(clock.now(), 29);
    clock.advance(1);
    assert.deepEqual(seen.at(-1), ['c', 30]);
    assert.equal(clock.pendingTimers, 0);
  });

  it('runs timers due at the same time in insertion order', () => {
    const clock = new SimClock();
    const seen: number[] = [];
    for (let i = 0; i < 50; i++) clock.setTimer(5, () => seen.push(i));
    clock.advance(5);
    assert.deepEqual(seen, Array.from({ length: 50 }, (_, i) => i));
  });

  it('runs a same-time timer scheduled from a callback after that callback, in the same advance', () => {
    const clock = new SimClock();
    const seen: string[] = [];
    clock.setTimer(10, () => {
      seen.push('first');
      clock.setTimer(0, () => seen.push('nested-0'));
      clock.setTimer(3, () => seen.push('nested-3'));
      seen.push('first-end');
    });
    clock.setTimer(10, () => seen.push('second'));
    clock.setTimer(12, () => seen.push('at-12'));
    clock.advance(20);
    assert.deepEqual(seen, ['first', 'first-end', 'second', 'nested-0', 'at-12', 'nested-3']);
  });

  it('setTimerAt schedules at an exact absolute time, keeping insertion order for equal times', () => {
    const clock = new SimClock();
    const seen: string[] = [];
    const at = 0.1 + 0.2; // not representable exactly: at - now + now may differ from at
    clock.advance(0.07);
    clock.setTimerAt(at, () => seen.push('first'));
    clock.advance(0.11);
    clock.setTimerAt(at, () => seen.push('second'));
    clock.setTimerAt(-5, () => seen.push('past-runs-now'));
    clock.advance(1);
    assert.deepEqual(seen, ['past-runs-now', 'first', 'second']);
  });

  it('cancels timers; cancelling twice or after firing is harmless', () => {
    const clock = new SimClock();
    const seen: string[] = [];
    const cancelA = clock.setTimer(5, () => seen.push('a'));
    const cancelB = clock.setTimer(6, () => seen.push('b'));
    assert.equal(clock.pendingTimers, 2);
    cancelA();
    cancelA();
    assert.equal(clock.pendingTimers, 1);
    assert.equal(clock.nextTimerAt(), 6);
    clock.advance(10);
    cancelB();
    assert.deepEqual(seen, ['b']);
    assert.equal(clock.pendingTimers, 0);
    assert.equal(clock.nextTimerAt(), undefined);
  });

  it('treats negative delays as zero and rejects NaN or infinite ones', () => {
    const clock = new SimClock({ startMs: 100 });
    let at = -1;
    clock.setTimer(-50, () => (at = clock.now()));
    clock.advance(0);
    assert.equal(at, 100);
    assert.throws(() => clock.setTimer(Number.NaN, () => undefined), RangeError);
    assert.throws(() => clock.setTimer(Infinity, () => undefined), RangeError);
    assert.throws(() => clock.advance(-1), RangeError);
  });

  it('runUntil stops as soon as the predicate holds, or at the time limit', () => {
    const clock = new SimClock();
    let ticks = 0;
    const tick = (): void => {
      ticks++;
      clock.setTimer(10, tick);
    };
    clock.setTimer(10, tick);
    assert.equal(
      clock.runUntil(() => ticks === 3, 1000),
      true,
    );
    assert.equal(clock.now(), 30);
    assert.equal(
      clock.runUntil(() => ticks === 1000, 55),
      false,
    );
    assert.equal(clock.now(), 85);
    assert.equal(ticks, 8);
    // a predicate that already holds runs nothing
    assert.equal(
      clock.runUntil(() => true, 1000),
      true,
    );
    assert.equal(clock.now(), 85);
  });

  it('keeps a large random schedule sorted (heap property)', () => {
    const clock = new SimClock();
    const fired: Array<[number, number]> = [];
    let x = 12345;
    const cancels: Array<() => void> = [];
    for (let i = 0; i < 5000; i++) {
      x = (x * 1103515245 + 12345) % 2147483648;
      const due = x % 1000;
      cancels.push(clock.setTimer(due, () => fired.push([due, i])));
    }
    for (let i = 0; i < 5000; i += 7) cancels[i]?.();
    clock.advance(1000);
    assert.equal(fired.length, 5000 - Math.ceil(5000 / 7));
    for (let i = 1; i < fired.length; i++) {
      const [pd, pi] = fired[i - 1] as [number, number];
      const [d, j] = fired[i] as [number, number];
      assert.ok(pd < d || (pd === d && pi < j), `out of order at ${i}`);
    }
  });

  it('throws on a timer that reschedules itself at zero delay forever', () => {
    const clock = new SimClock({ maxTimersPerRun: 1000 });
    const loop = (): void => {
      clock.setTimer(0, loop);
    };
    clock.setTimer(0, loop);
    assert.throws(() => clock.advance(1), /rescheduling itself/);
  });

  it('propagates a callback exception and stays usable', () => {
    const clock = new SimClock();
    const seen: number[] = [];
    clock.setTimer(1, () => {
      throw new Error('boom');
    });
    clock.setTimer(2, () => seen.push(2));
    assert.throws(() => clock.advance(5), /boom/);
    assert.equal(clock.now(), 1);
    clock.advance(4);
    assert.deepEqual(seen, [2]);
    assert.equal(clock.now(), 5);
  });

  it('advanceAsync lets promise continuations run between timers', async () => {
    const clock = new SimClock();
    const sleep = (ms: number): Promise<void> => new Promise((r) => clock.setTimer(ms, r));
    const log: number[] = [];
    const task = (async () => {
      for (let i = 0; i < 5; i++) {
        await sleep(10);
        log.push(clock.now());
      }
    })();
    await clock.advanceAsync(100);
    await task;
    assert.deepEqual(log, [10, 20, 30, 40, 50]);
    assert.equal(clock.now(), 100);

    let done = false;
    void sleep(7).then(async () => {
      await sleep(7);
      done = true;
    });
    assert.equal(await clock.runUntilAsync(() => done, 1000), true);
    assert.equal(clock.now(), 114);
  });
});
