/**
 * The IP defender: scores abuse per source address (failed authentications, protocol
 * violations, rate limits …) within an observation window, blocks an address whose score
 * reaches the threshold for a ban time that grows with each repeated ban, and answers
 * {@link Defender.isBlocked} from memory (a map lookup: the hot path of every accepted
 * connection and API request). Blocks are written to the `defender_block` table and
 * re-read every `syncIntervalMs`, so they survive a restart and are shared by every
 * process on the same database (the CLI's `tachyon defender unblock` included).
 *
 * Addresses pass {@link addressKey} (IPv4-mapped IPv6 → IPv4, IPv6 → its /64). Addresses
 * in the safe list are never scored nor blocked. Memory is bounded: at most `maxHosts`
 * addresses are scored and at most `maxHosts` blocks are held (oldest evicted first).
 */
import { systemClock, type Clock } from '../core/clock.js';
import { TachyonError, toTachyonError } from '../core/errors.js';
import type { AuditEvent, AuditSink } from '../audit/index.js';
import type { Database } from '../db/database.js';
import { addressKey, CidrList } from './address.js';
import { AllowLists } from './allow-list.js';
import type { DefenderNotice, Notifier } from './notifier.js';

/** What an abuse event was. */
export const ABUSE_KINDS = ['auth-failed', 'auth-failed-unknown-user', 'no-auth', 'protocol-violation', 'rate-limited', 'refused-limit'] as const;
export type AbuseKind = (typeof ABUSE_KINDS)[number];

export const DEFAULT_SCORES: Readonly<Record<AbuseKind, number>> = Object.freeze({
  'auth-failed': 1,
  'auth-failed-unknown-user': 2,
  'no-auth': 0,
  'protocol-violation': 3,
  'rate-limited': 1,
  'refused-limit': 1,
});

/** Settings of the defender (all times in milliseconds). */
export interface DefenderSettings {
  /** Score at which an address is blocked. Default 15. */
  readonly threshold: number;
  /** Window in which events add up. Default 30 minutes. */
  readonly observationMs: number;
  /** First ban. Default 30 minutes. */
  readonly banMs: number;
  /** Each further ban is this many times the previous one. Default 2. */
  readonly banMultiplier: number;
  /** Longest ban. Default 24 hours. */
  readonly maxBanMs: number;
  /** A ban count is forgotten this long after the last ban ended. Default 7 days. */
  readonly forgetMs: number;
  /** Score per event kind. */
  readonly scores: Readonly<Record<AbuseKind, number>>;
  /** Addresses scored (and blocks held) at most. Default 10000. */
  readonly maxHosts: number;
  /** How often blocks are re-read from the database. Default 2000. */
  readonly syncIntervalMs: number;
}

export const DEFAULT_DEFENDER_SETTINGS: DefenderSettings = Object.freeze({
  threshold: 15,
  observationMs: 30 * 60_000,
  banMs: 30 * 60_000,
  banMultiplier: 2,
  maxBanMs: 24 * 3600_000,
  forgetMs: 7 * 24 * 3600_000,
  scores: DEFAULT_SCORES,
  maxHosts: 10_000,
  syncIntervalMs: 2000,
});

/** One blocked address as administrators see it. */
export interface BlockEntry {
  /** The address key (IPv4, or an IPv6 /64). */
  readonly address: string;
  readonly score: number;
  /** ISO-8601 UTC. */
  readonly until: string;
  readonly banCount: number;
}

/** The seam every entry point (SSH, node API, web platform) uses. */
export interface Defender {
  /** Whether the address is blocked now (a map lookup; never throws, never waits). */
  isBlocked(address: string): boolean;
  /** Whether the allow-lists admit the address (global, and the tenant's if given). */
  allowed(address: string, tenant?: string): boolean;
  /** Records an abuse event; blocks the address when its score reaches the threshold. */
  report(address: string, kind: AbuseKind): void;
  /** Active blocks, longest first. */
  list(): Promise<BlockEntry[]>;
  /** Lifts the block of an address (and forgets its score and ban count); false if it was not blocked. */
  unblock(address: string, actor: string): Promise<boolean>;
  close(): Promise<void>;
}

export interface ScoringDefenderOptions {
  readonly database: Database;
  readonly settings?: Partial<DefenderSettings>;
  /** Never scored nor blocked (CIDR). */
  readonly safeList?: CidrList;
  readonly allowLists?: AllowLists;
  readonly clock?: Clock;
  readonly audit?: AuditSink;
  readonly notifier?: Notifier;
  /** Errors of background work (database writes, notifications). */
  readonly onError?: (err: TachyonError) => void;
}

interface Host {
  /** Event times and scores within the window (oldest first; at most 256 kept). */
  events: Array<{ at: number; score: number }>;
  total: number;
}

interface Block {
  untilMs: number;
  banCount: number;
  score: number;
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** Why an address may not use a service at all (outside the allow-lists, or blocked); undefined when it may. */
export function barred(defender: Defender, address: string, tenant?: string): 'not-allowed' | 'blocked' | undefined {
  if (!defender.allowed(address, tenant)) return 'not-allowed';
  return defender.isBlocked(address) ? 'blocked' : undefined;
}

/**
 * Throws the sanitized refusal of a barred address at an HTTP edge: PERMISSION (403),
 * public message "Access denied.", `details.reason` `address-not-allowed` or
 * `address-blocked` (for the audit record).
 */
export function refuseBarred(defender: Defender, address: string): void {
  const why = barred(defender, address);
  if (why !== undefined) {
    throw new TachyonError('PERMISSION', `request from ${address} refused: address-${why}`, { publicMessage: 'Access denied.', details: { reason: `address-${why}` } });
  }
}

/** The real defender: in memory, kept in step with the `defender_block` table. */
export class ScoringDefender implements Defender {
  readonly settings: DefenderSettings;
  private readonly clock: Clock;
  private readonly hosts = new Map<string, Host>();
  /** Active (and recently ended, for their ban count) blocks by address key. */
  private readonly blocks = new Map<string, Block>();
  private readonly safe: CidrList;
  private readonly lists: AllowLists;
  /** Database work, in order. */
  private chain: Promise<void> = Promise.resolve();
  private cancelSync: (() => void) | undefined;
  private closed = false;

  private constructor(private readonly o: ScoringDefenderOptions) {
    this.settings = Object.freeze({ ...DEFAULT_DEFENDER_SETTINGS, ...o.settings, scores: Object.freeze({ ...DEFAULT_SCORES, ...o.settings?.scores }) });
    const s = this.settings;
    if (!(s.threshold > 0) || !(s.banMs > 0) || !(s.banMultiplier >= 1) || !(s.maxBanMs >= s.banMs) || !(s.observationMs > 0) || !(s.maxHosts >= 1)) {
      throw new TachyonError('CONFIG', 'defender: threshold, ban time and observation time must be positive, the multiplier at least 1 and the maximum ban at least the ban time');
    }
    this.clock = o.clock ?? systemClock;
    this.safe = o.safeList ?? new CidrList([]);
    this.lists = o.allowLists ?? new AllowLists();
  }

  /** Makes a defender and loads the blocks recorded in the database. */
  static async open(o: ScoringDefenderOptions): Promise<ScoringDefender> {
    const d = new ScoringDefender(o);
    await d.sync();
    d.scheduleSync();
    return d;
  }

  private scheduleSync(): void {
    if (this.closed || this.settings.syncIntervalMs <= 0) return;
    this.cancelSync = this.clock.setTimer(this.settings.syncIntervalMs, () => {
      this.sync().then(
        () => this.scheduleSync(),
        (err: unknown) => {
          this.fail(err);
          this.scheduleSync();
        },
      );
    });
  }

  private fail(err: unknown): void {
    try {
      this.o.onError?.(toTachyonError(err, 'DB_UNAVAILABLE'));
    } catch {
      /* a broken error handler must not break the defender */
    }
  }

  private enqueue(work: () => Promise<void>): Promise<void> {
    const next = this.chain.then(work);
    this.chain = next.catch((err: unknown) => this.fail(err));
    return next;
  }

  /** Replaces the in-memory blocks by the table's (after this process's pending writes). */
  sync(): Promise<void> {
    return this.enqueue(async () => {
      const now = this.clock.now();
      const rows = await this.o.database.db
        .selectFrom('defender_block')
        .select(['address', 'score', 'ban_count', 'blocked_until'])
        .where('blocked_until', '>', iso(now - this.settings.forgetMs))
        .orderBy('blocked_until', 'desc')
        .limit(this.settings.maxHosts)
        .execute();
      this.blocks.clear();
      for (const r of rows.reverse()) this.blocks.set(r.address, { untilMs: Date.parse(r.blocked_until), banCount: Number(r.ban_count), score: Number(r.score) });
    });
  }

  isBlocked(address: string): boolean {
    const b = this.blocks.get(addressKey(address));
    return b !== undefined && b.untilMs > this.clock.now() && !this.safe.contains(address);
  }

  allowed(address: string, tenant?: string): boolean {
    return this.lists.allowed(address, tenant);
  }

  report(address: string, kind: AbuseKind): void {
    if (this.closed) return;
    const score = this.settings.scores[kind] ?? 0;
    if (score <= 0 || this.safe.contains(address)) return;
    const key = addressKey(address);
    const now = this.clock.now();
    if (this.isBlocked(address)) return;
    let h = this.hosts.get(key);
    if (h === undefined) {
      h = { events: [], total: 0 };
      while (this.hosts.size >= this.settings.maxHosts) this.hosts.delete(this.hosts.keys().next().value as string);
    } else {
      this.hosts.delete(key); // re-inserted below: most recently seen last
    }
    this.hosts.set(key, h);
    const since = now - this.settings.observationMs;
    while (h.events.length > 0 && (h.events[0]!.at <= since || h.events.length >= 256)) h.total -= h.events.shift()!.score;
    h.events.push({ at: now, score });
    h.total += score;
    if (h.total >= this.settings.threshold) {
      this.hosts.delete(key);
      this.block(key, h.total, now);
    }
  }

  /** The ban of the n-th block (1-based). */
  banMsFor(banCount: number): number {
    const s = this.settings;
    return Math.min(s.maxBanMs, s.banMs * s.banMultiplier ** Math.max(0, banCount - 1));
  }

  private block(key: string, score: number, now: number): void {
    const prev = this.blocks.get(key);
    const banCount = (prev !== undefined && prev.untilMs > now - this.settings.forgetMs ? prev.banCount : 0) + 1;
    const untilMs = now + this.banMsFor(banCount);
    this.blocks.delete(key);
    while (this.blocks.size >= this.settings.maxHosts) this.blocks.delete(this.blocks.keys().next().value as string);
    this.blocks.set(key, { untilMs, banCount, score });
    const until = iso(untilMs);
    this.record({ type: 'defender.block', component: 'defender', fields: { clientAddress: key, score, banCount, until, banSeconds: Math.round((untilMs - now) / 1000) } });
    this.notify({ event: 'blocked', address: key, score, banCount, until, at: iso(now) });
    void this.enqueue(async () => {
      const row = { score, ban_count: banCount, blocked_until: until, updated_at: iso(now) };
      await this.o.database.db
        .insertInto('defender_block')
        .values({ address: key, ...row })
        .onConflict((oc) => oc.column('address').doUpdateSet(row))
        .execute();
    }).catch(() => {
      /* reported by enqueue */
    });
  }

  async list(): Promise<BlockEntry[]> {
    await this.sync();
    const now = this.clock.now();
    const out: BlockEntry[] = [];
    for (const [address, b] of this.blocks) if (b.untilMs > now) out.push({ address, score: b.score, until: iso(b.untilMs), banCount: b.banCount });
    return out.sort((a, b) => (a.until < b.until ? 1 : a.until > b.until ? -1 : a.address.localeCompare(b.address)));
  }

  async unblock(address: string, actor: string): Promise<boolean> {
    const key = addressKey(address);
    let was = false;
    await this.enqueue(async () => {
      const now = this.clock.now();
      const row = await this.o.database.db.selectFrom('defender_block').select('blocked_until').where('address', '=', key).executeTakeFirst();
      await this.o.database.db.deleteFrom('defender_block').where('address', '=', key).execute();
      was = row !== undefined && Date.parse(row.blocked_until) > now;
      this.blocks.delete(key);
      this.hosts.delete(key);
    });
    if (was) {
      this.record({ type: 'defender.unblock', component: 'defender', fields: { clientAddress: key, actor: actor.slice(0, 128) } });
      this.notify({ event: 'unblocked', address: key, actor: actor.slice(0, 128), at: iso(this.clock.now()) });
    }
    return was;
  }

  /** Waits for pending database writes and notifications (tests, shutdown). */
  async settled(): Promise<void> {
    await this.chain;
    await Promise.allSettled([...this.notices]);
  }

  private readonly notices = new Set<Promise<void>>();

  private notify(n: DefenderNotice): void {
    const notifier = this.o.notifier;
    if (notifier === undefined) return;
    const p = notifier.notify(n).catch((err: unknown) => this.fail(toTachyonError(err, 'IO')));
    this.notices.add(p);
    void p.finally(() => this.notices.delete(p));
  }

  private record(e: AuditEvent): void {
    try {
      this.o.audit?.record(e);
    } catch (err) {
      this.fail(err);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cancelSync?.();
    await this.settled();
    await this.o.notifier?.close?.();
  }
}

/** A defender that never blocks and admits every address (the defender turned off). */
export const disabledDefender: Defender = Object.freeze({
  isBlocked: () => false,
  allowed: () => true,
  report: () => {},
  list: () => Promise.resolve([]),
  unblock: () => Promise.resolve(false),
  close: () => Promise.resolve(),
});
