/** Time as the transport sees it. Real adapter below; the simulated one lives in testkit. */
export interface Clock {
  /**
   * Milliseconds (fractional allowed), monotonic within a process. The system clock
   * counts from the Unix epoch so that two processes' timestamps are comparable.
   */
  now(): number;
  /** Runs fn once after ms; returns a cancel function. */
  setTimer(ms: number, fn: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
  setTimer(ms, fn) {
    if (ms <= 0) {
      // setTimeout(0) waits at least 1 ms in Node; "as soon as possible" must not
      const i = setImmediate(fn);
      return () => clearImmediate(i);
    }
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};
