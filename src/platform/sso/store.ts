/**
 * The server-side memory of SSO: pending transactions (OIDC state/nonce/PKCE verifier,
 * SAML request ids) and consumed assertion ids. Every entry is single use (`take`
 * removes it) and expires. The seam is {@link SsoStore}; {@link MemorySsoStore} serves
 * one process (a database-backed store can implement the same three methods for a
 * cluster).
 */
import type { Clock } from '../../core/clock.js';
import { systemClock } from '../../core/clock.js';
import { TachyonError } from '../../core/errors.js';

export interface SsoStore {
  /**
   * Stores `value` under `key` until `expiresAt` (ms since the epoch). Returns false if the
   * key is already present and unexpired; `BUSY` if the store cannot take more.
   */
  put(key: string, value: string, expiresAt: number): Promise<boolean>;
  /** Removes and returns the value under `key`, or undefined if absent or expired (single use). */
  take(key: string): Promise<string | undefined>;
}

/**
 * An in-process {@link SsoStore} with a size bound. When full (after dropping expired
 * entries) it refuses new entries with `BUSY` rather than evicting live ones: evicting
 * would let a flood of begun sign-ins push remembered assertion ids out and reopen replay.
 */
export class MemorySsoStore implements SsoStore {
  private readonly map = new Map<string, { value: string; expiresAt: number }>();
  private readonly clock: Clock;
  private readonly maxEntries: number;

  constructor(options: { clock?: Clock; maxEntries?: number } = {}) {
    this.clock = options.clock ?? systemClock;
    this.maxEntries = options.maxEntries ?? 100_000;
  }

  put(key: string, value: string, expiresAt: number): Promise<boolean> {
    const now = this.clock.now();
    const cur = this.map.get(key);
    if (cur && cur.expiresAt > now) return Promise.resolve(false);
    this.map.delete(key);
    if (this.map.size >= this.maxEntries) this.sweep(now);
    if (this.map.size >= this.maxEntries) {
      return Promise.reject(new TachyonError('BUSY', 'SSO store full', { details: { entries: this.map.size } }));
    }
    this.map.set(key, { value, expiresAt });
    return Promise.resolve(true);
  }

  take(key: string): Promise<string | undefined> {
    const cur = this.map.get(key);
    if (!cur) return Promise.resolve(undefined);
    this.map.delete(key);
    return Promise.resolve(cur.expiresAt > this.clock.now() ? cur.value : undefined);
  }

  /** Number of stored entries (expired ones included until swept). */
  get size(): number {
    return this.map.size;
  }

  private sweep(now: number): void {
    for (const [k, v] of this.map) if (v.expiresAt <= now) this.map.delete(k);
  }
}
