/**
 * The sign-in gate: password checks (argon2id, the expensive part of a sign-in) from one
 * source address run at most `concurrency` at a time (default 1); the others wait their
 * turn in order, a bounded number of them. Two things follow:
 *
 * - the IP defender sees every failure before the next attempt from that address starts,
 *   so an address at its threshold is refused before its next password check — a
 *   guesser with 50 requests in flight still reaches exactly `threshold` checks (with
 *   concurrency c: at most threshold + c − 1);
 * - one address can occupy at most `concurrency` of libuv's threadpool threads (where
 *   argon2 runs), so a flood from one address queues behind itself instead of in front
 *   of everyone else's sign-ins.
 *
 * Addresses are keyed like the defender's (IPv4, IPv6 /64). A request beyond `maxWaiting`
 * for its address, or from a new address beyond `maxAddresses` in the gate, is refused
 * at once with `BUSY` (503). No timers, no state beyond the waiting requests: an address
 * leaves the map when its last check ends.
 */
import { TachyonError } from '../core/errors.js';
import { addressKey } from '../defender/index.js';

export interface SignInGateOptions {
  /** Password checks from one address at the same time (1–64). Default 1. */
  readonly concurrency?: number;
  /** Requests from one address waiting for their turn (0–10000); beyond it `BUSY`. Default 64. */
  readonly maxWaiting?: number;
  /** Addresses with a check running or waiting (1–1000000); beyond it `BUSY`. Default 10000. */
  readonly maxAddresses?: number;
}

export const DEFAULT_SIGN_IN_GATE: Required<SignInGateOptions> = Object.freeze({ concurrency: 1, maxWaiting: 64, maxAddresses: 10_000 });

interface Lane {
  running: number;
  readonly waiting: Array<() => void>;
}

function busy(reason: string): TachyonError {
  return new TachyonError('BUSY', `sign-in gate full: ${reason}`, { publicMessage: 'Too many sign-in attempts at once; try again later.', details: { reason } });
}

function bounded(name: string, v: number, lo: number, hi: number): number {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new TachyonError('CONFIG', `sign-in gate: ${name} must be an integer in ${lo}–${hi}`);
  return v;
}

export class SignInGate {
  readonly concurrency: number;
  readonly maxWaiting: number;
  readonly maxAddresses: number;
  private readonly lanes = new Map<string, Lane>();

  constructor(options: SignInGateOptions = {}) {
    const o = { ...DEFAULT_SIGN_IN_GATE, ...options };
    this.concurrency = bounded('concurrency', o.concurrency, 1, 64);
    this.maxWaiting = bounded('maxWaiting', o.maxWaiting, 0, 10_000);
    this.maxAddresses = bounded('maxAddresses', o.maxAddresses, 1, 1_000_000);
  }

  /** Addresses with a check running or waiting (for tests and metrics). */
  get size(): number {
    return this.lanes.size;
  }

  /** Requests waiting for `address` (for tests and metrics). */
  waiting(address: string): number {
    return this.lanes.get(addressKey(address))?.waiting.length ?? 0;
  }

  /**
   * Runs `fn` when it is `address`'s turn; its result or error is passed through.
   * @throws TachyonError `BUSY` when the address already has `maxWaiting` requests waiting,
   *   or the gate holds `maxAddresses` other addresses.
   */
  async run<T>(address: string, fn: () => Promise<T>): Promise<T> {
    const key = addressKey(address);
    let lane = this.lanes.get(key);
    if (lane === undefined) {
      if (this.lanes.size >= this.maxAddresses) throw busy('addresses');
      lane = { running: 0, waiting: [] };
      this.lanes.set(key, lane);
    }
    if (lane.running < this.concurrency) {
      lane.running++;
    } else {
      if (lane.waiting.length >= this.maxWaiting) throw busy('waiting');
      const l = lane;
      // the slot is handed over by release(): `running` already counts this request
      await new Promise<void>((resolve) => l.waiting.push(resolve));
    }
    try {
      return await fn();
    } finally {
      this.release(key, lane);
    }
  }

  private release(key: string, lane: Lane): void {
    const next = lane.waiting.shift();
    if (next !== undefined) {
      next();
      return;
    }
    lane.running--;
    if (lane.running === 0) this.lanes.delete(key);
  }
}
