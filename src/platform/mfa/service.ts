/**
 * `MfaService`: the TOTP second factor (RFC 6238: HMAC-SHA-1, 6 digits, 30 s steps, as
 * authenticator apps expect) with single-use recovery codes, for the web platform's
 * users, keyed by (tenant id, user id) as the identity layer names them. The sign-in
 * flow calls it after the password (see docs/platform-mfa.md); it does not know users,
 * roles or sessions itself.
 *
 * - The shared secret is stored sealed by a {@link SecretBox} (AES-256-GCM under the
 *   server key) with associated data naming tenant and user: a row copied to another
 *   account does not open.
 * - A code is accepted for the current step and one step either side; the step accepted
 *   last is stored, and a code of that step or an earlier one is refused (replay), with
 *   the check-and-set done by one conditional UPDATE so two concurrent uses of one code
 *   cannot both pass.
 * - Wrong codes are rate limited per account: each attempt is counted *before* its code is
 *   checked (a conditional UPDATE), so a concurrent burst gets at most `maxFailures`
 *   checks per window; then codes are refused (`MFA_LOCKED`) until `lockMs` has passed.
 *   A success resets the count.
 * - Recovery codes (80 random bits each) are stored as salted SHA-256 hashes bound to
 *   tenant and user, and each works once.
 *
 * All time comes from the injected {@link Clock}. Every refusal is a TachyonError:
 * `MFA_INVALID` (details.reason: wrong-code, malformed, replay, used, not-enrolled,
 * expired-enrolment), `MFA_LOCKED` (details.lockedUntil), `CONFLICT`, `USAGE`, and the
 * SecretBox's `KEY_MISSING`/`WRONG_KEY` when a secret cannot be opened. Audit events
 * (`mfa.*`) never hold a code or a secret.
 */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely, type Transaction } from 'kysely';
import { HOTP, Secret, TOTP } from 'otpauth';
import type { Clock } from '../../core/clock.js';
import { TachyonError } from '../../core/errors.js';
import type { AuditEvent, AuditSink } from '../../audit/index.js';
import type { Database } from '../../db/database.js';
import type { TachyonSchema } from '../../db/schema.js';
import { generateRecoveryCode, hashRecoveryCode, newRecoverySalt, parseRecoveryCode, parseTotpCode, sameBytes, TOTP_DIGITS } from './codes.js';
import type { SecretBox } from './secret-box.js';

/** The TOTP parameters every enrolment uses (what authenticator apps expect). */
export const TOTP_ALGORITHM = 'SHA1';
export const TOTP_PERIOD_S = 30;
/** Steps accepted either side of the current one. */
export const TOTP_WINDOW = 1;
/** Bytes of a new shared secret (160 bits, RFC 4226's recommendation). */
export const TOTP_SECRET_BYTES = 20;

/** Who and where, for the audit records of one call. All optional. */
export interface MfaContext {
  clientAddress?: string;
  correlationId?: string;
  /** How audit records name the tenant (e.g. its slug); default the tenant id. */
  tenantLabel?: string;
  /** How audit records name the user (e.g. the user name); default the user id. */
  userLabel?: string;
  /** Who acts, when not the user (an administrator disabling another's second factor). */
  actor?: string;
}

export interface MfaServiceOptions {
  database: Database;
  box: SecretBox;
  audit: AuditSink;
  clock: Clock;
  /** Shown by authenticator apps above the account label. Default `Tachyon`. */
  issuer?: string;
  /** Wrong codes allowed per window before codes are refused. Default 5. */
  maxFailures?: number;
  /** The window wrong codes are counted in. Default 5 minutes. */
  failureWindowMs?: number;
  /** How long codes are refused after `maxFailures`. Default 15 minutes. */
  lockMs?: number;
  /** How long a begun enrolment waits for its confirming code. Default 1 hour. */
  pendingTtlMs?: number;
  /** Recovery codes per set. Default 10. */
  recoveryCodeCount?: number;
}

/** What {@link MfaService.beginEnrolment} returns: shown once, to the user enrolling. */
export interface TotpEnrolment {
  /** The `otpauth://totp/…` URI; a QR code of it is what authenticator apps scan. */
  uri: string;
  /** The shared secret in base32 (RFC 4648, no padding), for typing in by hand. */
  secret: string;
  /** The same in groups of four, easier to read and type. */
  secretGrouped: string;
  issuer: string;
  accountLabel: string;
  algorithm: typeof TOTP_ALGORITHM;
  digits: number;
  periodSeconds: number;
  /** Confirm with a code before this (ISO-8601 UTC), or begin again. */
  expiresAt: string;
}

/** The state of an account's second factor. */
export interface MfaStatus {
  state: 'none' | 'pending' | 'confirmed';
  confirmedAt?: string;
  /** Unused recovery codes. */
  recoveryCodesLeft: number;
  /** Codes refused until then, if locked now. */
  lockedUntil?: string;
}

export type MfaVerified = { method: 'totp'; step: number } | { method: 'recovery'; remaining: number };

type Row = {
  status: string;
  secret_sealed: string;
  last_step: number | string | null;
  failed_count: number;
  locked_until: string | null;
  created_at: string;
  confirmed_at: string | null;
};

const MAX_ID = 200;
const MAX_LABEL = 128;

function checkId(what: string, v: unknown): string {
  // eslint-disable-next-line no-control-regex -- control characters are refused
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_ID || /[\0-\x1f\x7f]/.test(v)) {
    throw new TachyonError('USAGE', `${what} must be a non-empty string of at most ${MAX_ID} characters without control characters`);
  }
  return v;
}

function checkLabel(what: string, v: unknown): string {
  // eslint-disable-next-line no-control-regex -- control characters are refused
  if (typeof v !== 'string' || v.trim().length === 0 || v.length > MAX_LABEL || /[\0-\x1f\x7f-\x9f:]/.test(v)) {
    throw new TachyonError('USAGE', `${what} must be 1-${MAX_LABEL} characters, without a colon or control characters`);
  }
  return v;
}

/** The associated data a secret is sealed with: binds it to its tenant and user. */
export function totpSecretAad(tenantId: string, userId: string): Buffer {
  return Buffer.from(JSON.stringify(['tachyon-mfa-totp-v1', tenantId, userId]), 'utf8');
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

export class MfaService {
  private readonly db: Kysely<TachyonSchema>;
  private readonly box: SecretBox;
  private readonly audit: AuditSink;
  private readonly clock: Clock;
  private readonly issuer: string;
  private readonly maxFailures: number;
  private readonly failureWindowMs: number;
  private readonly lockMs: number;
  private readonly pendingTtlMs: number;
  private readonly recoveryCodeCount: number;

  constructor(options: MfaServiceOptions) {
    this.db = options.database.db;
    this.box = options.box;
    this.audit = options.audit;
    this.clock = options.clock;
    this.issuer = checkLabel('the issuer', options.issuer ?? 'Tachyon');
    const positive = (name: string, v: number | undefined, def: number): number => {
      const x = v ?? def;
      if (!Number.isSafeInteger(x) || x < 1) throw new TachyonError('CONFIG', `MFA ${name} must be a positive integer`);
      return x;
    };
    this.maxFailures = positive('maxFailures', options.maxFailures, 5);
    this.failureWindowMs = positive('failureWindowMs', options.failureWindowMs, 5 * 60_000);
    this.lockMs = positive('lockMs', options.lockMs, 15 * 60_000);
    this.pendingTtlMs = positive('pendingTtlMs', options.pendingTtlMs, 60 * 60_000);
    this.recoveryCodeCount = positive('recoveryCodeCount', options.recoveryCodeCount, 10);
  }

  /** The 30 s time step at a clock time (ms since the epoch). */
  static stepAt(ms: number): number {
    return Math.floor(ms / 1000 / TOTP_PERIOD_S);
  }

  /**
   * Begins (or restarts) an enrolment: a fresh secret, stored sealed as `pending`. The
   * caller shows the URI as a QR code and the secret for typing, once; nothing changes
   * for sign-in until {@link confirmEnrolment}.
   *
   * @throws TachyonError `CONFLICT` when a confirmed second factor exists (disable it first); `USAGE` for bad ids or label.
   */
  async beginEnrolment(tenantId: string, userId: string, accountLabel: string, ctx: MfaContext = {}): Promise<TotpEnrolment> {
    checkId('the tenant id', tenantId);
    checkId('the user id', userId);
    const label = checkLabel('the account label', accountLabel);
    const secret = new Secret({ size: TOTP_SECRET_BYTES });
    const now = this.clock.now();
    const sealed = this.box.seal(secret.bytes, totpSecretAad(tenantId, userId));
    const nowIso = iso(now);
    await this.db.transaction().execute(async (trx) => {
      const row = await this.row(trx, tenantId, userId);
      if (row?.status === 'confirmed') {
        throw new TachyonError('CONFLICT', 'a confirmed second factor exists; disable it (after re-authentication) before enrolling again', {
          publicMessage: 'Two-step verification is already set up for this account.',
        });
      }
      if (row !== undefined) await trx.deleteFrom('mfa_totp').where('tenant_id', '=', tenantId).where('user_id', '=', userId).where('status', '=', 'pending').execute();
      await trx
        .insertInto('mfa_totp')
        .values({
          tenant_id: tenantId,
          user_id: userId,
          status: 'pending',
          secret_sealed: sealed,
          last_step: null,
          failed_count: 0,
          failed_window_start: null,
          locked_until: null,
          created_at: nowIso,
          confirmed_at: null,
          updated_at: nowIso,
        })
        .execute();
    });
    this.record(ctx, tenantId, userId, 'mfa.enrol', { method: 'totp' });
    const totp = new TOTP({ issuer: this.issuer, label, secret, algorithm: TOTP_ALGORITHM, digits: TOTP_DIGITS, period: TOTP_PERIOD_S });
    const b32 = secret.base32;
    return {
      uri: totp.toString(),
      secret: b32,
      secretGrouped: b32.match(/.{1,4}/g)?.join(' ') ?? b32,
      issuer: this.issuer,
      accountLabel: label,
      algorithm: TOTP_ALGORITHM,
      digits: TOTP_DIGITS,
      periodSeconds: TOTP_PERIOD_S,
      expiresAt: iso(now + this.pendingTtlMs),
    };
  }

  /**
   * Confirms a pending enrolment with a code from the authenticator; from then on the
   * account has a second factor. Returns a fresh set of recovery codes, to be shown once
   * (only their hashes are kept).
   *
   * @throws TachyonError `MFA_INVALID` (wrong-code, malformed, replay, not-enrolled: no
   *   pending enrolment, expired-enrolment), `MFA_LOCKED`.
   */
  async confirmEnrolment(tenantId: string, userId: string, code: string, ctx: MfaContext = {}): Promise<string[]> {
    checkId('the tenant id', tenantId);
    checkId('the user id', userId);
    const now = this.clock.now();
    const row = await this.row(this.db, tenantId, userId);
    if (row === undefined || row.status !== 'pending') {
      this.record(ctx, tenantId, userId, 'mfa.failure', { method: 'totp', reason: 'not-enrolled' });
      throw invalid('not-enrolled', 'there is no enrolment waiting for confirmation', 'There is no enrolment to confirm; start again.');
    }
    if (Date.parse(row.created_at) + this.pendingTtlMs <= now) {
      this.record(ctx, tenantId, userId, 'mfa.failure', { method: 'totp', reason: 'expired-enrolment' });
      throw invalid('expired-enrolment', 'the enrolment expired before it was confirmed', 'The enrolment has expired; start again.');
    }
    const step = await this.checkTotp(tenantId, userId, row, code, now, ctx);
    const codes = Array.from({ length: this.recoveryCodeCount }, () => generateRecoveryCode());
    const nowIso = iso(now);
    const ok = await this.db.transaction().execute(async (trx) => {
      const r = await trx
        .updateTable('mfa_totp')
        .set({ status: 'confirmed', confirmed_at: nowIso, updated_at: nowIso, last_step: step, failed_count: 0, failed_window_start: null })
        .where('tenant_id', '=', tenantId)
        .where('user_id', '=', userId)
        .where('status', '=', 'pending')
        .where('secret_sealed', '=', row.secret_sealed)
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return false;
      await this.replaceRecoveryCodes(trx, tenantId, userId, codes, nowIso);
      return true;
    });
    if (!ok) {
      this.record(ctx, tenantId, userId, 'mfa.failure', { method: 'totp', reason: 'not-enrolled' });
      throw invalid('not-enrolled', 'the enrolment changed while it was being confirmed', 'There is no enrolment to confirm; start again.');
    }
    this.record(ctx, tenantId, userId, 'mfa.confirm', { method: 'totp', recoveryCodes: codes.length });
    return codes;
  }

  /**
   * Checks a TOTP code at sign-in (or before a sensitive change). Resolves when it is
   * valid for the current step ±1 and newer than the last accepted step, which it
   * becomes.
   *
   * @throws TachyonError `MFA_INVALID` (reason wrong-code, malformed, replay,
   *   not-enrolled), `MFA_LOCKED` (too many wrong codes: the attempt that reached the limit
   *   and every one until `details.lockedUntil`), `KEY_MISSING`/`WRONG_KEY` (the stored
   *   secret cannot be opened).
   */
  async verify(tenantId: string, userId: string, code: string, ctx: MfaContext = {}): Promise<MfaVerified> {
    checkId('the tenant id', tenantId);
    checkId('the user id', userId);
    const now = this.clock.now();
    const row = await this.confirmedRow(tenantId, userId, 'totp', ctx);
    const step = await this.checkTotp(tenantId, userId, row, code, now, ctx);
    const r = await this.db
      .updateTable('mfa_totp')
      .set({ last_step: step, failed_count: 0, failed_window_start: null, updated_at: iso(now) })
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .where('status', '=', 'confirmed')
      .where((eb) => eb.or([eb('last_step', 'is', null), eb('last_step', '<', step)]))
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) {
      // another request accepted this step (or a later one) since we read the row
      const last = await this.row(this.db, tenantId, userId);
      await this.refuseReplay(tenantId, userId, step, Number(last?.last_step ?? step), now, ctx);
    }
    return { method: 'totp', step };
  }

  /**
   * Checks a recovery code (instead of a TOTP code, when the authenticator is lost).
   * Each code works once. Counts towards the same wrong-code limit as TOTP codes.
   *
   * @throws TachyonError `MFA_INVALID` (reason wrong-code, malformed, used, not-enrolled), `MFA_LOCKED`.
   */
  async verifyRecoveryCode(tenantId: string, userId: string, code: string, ctx: MfaContext = {}): Promise<MfaVerified> {
    checkId('the tenant id', tenantId);
    checkId('the user id', userId);
    const now = this.clock.now();
    await this.confirmedRow(tenantId, userId, 'recovery', ctx);
    await this.reserveAttempt(tenantId, userId, now, 'recovery', ctx);
    const canonical = parseRecoveryCode(code);
    if (canonical === undefined) return this.fail(tenantId, userId, now, 'recovery', 'malformed', ctx);
    const rows = await this.db
      .selectFrom('mfa_recovery_code')
      .select(['id', 'salt', 'code_hash', 'used_at'])
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .execute();
    let match: { id: string; used_at: string | null } | undefined;
    for (const r of rows) {
      const h = hashRecoveryCode(canonical, Buffer.from(r.salt, 'base64'), tenantId, userId);
      if (sameBytes(h, Buffer.from(r.code_hash, 'hex')) && match === undefined) match = r;
    }
    if (match === undefined) return this.fail(tenantId, userId, now, 'recovery', 'wrong-code', ctx);
    if (match.used_at !== null) return this.fail(tenantId, userId, now, 'recovery', 'used', ctx);
    const nowIso = iso(now);
    const used = await this.db.updateTable('mfa_recovery_code').set({ used_at: nowIso }).where('id', '=', match.id).where('used_at', 'is', null).executeTakeFirst();
    if (Number(used.numUpdatedRows) !== 1) return this.fail(tenantId, userId, now, 'recovery', 'used', ctx);
    await this.db
      .updateTable('mfa_totp')
      .set({ failed_count: 0, failed_window_start: null, updated_at: nowIso })
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .execute();
    const remaining = await this.unusedRecoveryCodes(tenantId, userId);
    this.record(ctx, tenantId, userId, 'mfa.recovery', { action: 'used', remaining });
    return { method: 'recovery', remaining };
  }

  /**
   * Replaces the recovery codes with a fresh set (the old ones stop working) and returns
   * it, to be shown once. The caller re-authenticates the user first.
   *
   * @throws TachyonError `MFA_INVALID` (not-enrolled).
   */
  async regenerateRecoveryCodes(tenantId: string, userId: string, ctx: MfaContext = {}): Promise<string[]> {
    checkId('the tenant id', tenantId);
    checkId('the user id', userId);
    await this.confirmedRow(tenantId, userId, 'recovery', ctx);
    const codes = Array.from({ length: this.recoveryCodeCount }, () => generateRecoveryCode());
    const nowIso = iso(this.clock.now());
    await this.db.transaction().execute((trx) => this.replaceRecoveryCodes(trx, tenantId, userId, codes, nowIso));
    this.record(ctx, tenantId, userId, 'mfa.recovery', { action: 'regenerated', remaining: codes.length });
    return codes;
  }

  /**
   * Removes the second factor (enrolment, pending or confirmed, and recovery codes).
   * Resolves true when there was one. **The caller must have re-authenticated the user
   * (password and a current code) or checked that an administrator may do it**; this
   * method does not.
   */
  async disable(tenantId: string, userId: string, ctx: MfaContext = {}): Promise<boolean> {
    checkId('the tenant id', tenantId);
    checkId('the user id', userId);
    const removed = await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('mfa_recovery_code').where('tenant_id', '=', tenantId).where('user_id', '=', userId).execute();
      const r = await trx.deleteFrom('mfa_totp').where('tenant_id', '=', tenantId).where('user_id', '=', userId).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    });
    if (removed) this.record(ctx, tenantId, userId, 'mfa.disable', { method: 'totp', ...(ctx.actor !== undefined ? { actor: ctx.actor } : {}) });
    return removed;
  }

  /** Whether the account has a confirmed second factor (sign-in must then ask for a code). */
  async isEnrolled(tenantId: string, userId: string): Promise<boolean> {
    checkId('the tenant id', tenantId);
    checkId('the user id', userId);
    return (await this.row(this.db, tenantId, userId))?.status === 'confirmed';
  }

  /** The account's second-factor state, for its settings page. */
  async status(tenantId: string, userId: string): Promise<MfaStatus> {
    checkId('the tenant id', tenantId);
    checkId('the user id', userId);
    const row = await this.row(this.db, tenantId, userId);
    if (row === undefined) return { state: 'none', recoveryCodesLeft: 0 };
    const now = this.clock.now();
    const locked = row.locked_until !== null && Date.parse(row.locked_until) > now;
    return {
      state: row.status === 'confirmed' ? 'confirmed' : 'pending',
      ...(row.confirmed_at !== null ? { confirmedAt: row.confirmed_at } : {}),
      recoveryCodesLeft: row.status === 'confirmed' ? await this.unusedRecoveryCodes(tenantId, userId) : 0,
      ...(locked ? { lockedUntil: row.locked_until as string } : {}),
    };
  }

  // -------------------------------------------------------------------------------------

  private async row(db: Kysely<TachyonSchema> | Transaction<TachyonSchema>, tenantId: string, userId: string): Promise<Row | undefined> {
    return db
      .selectFrom('mfa_totp')
      .select(['status', 'secret_sealed', 'last_step', 'failed_count', 'locked_until', 'created_at', 'confirmed_at'])
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .executeTakeFirst();
  }

  private async confirmedRow(tenantId: string, userId: string, method: 'totp' | 'recovery', ctx: MfaContext): Promise<Row> {
    const row = await this.row(this.db, tenantId, userId);
    if (row === undefined || row.status !== 'confirmed') {
      this.record(ctx, tenantId, userId, 'mfa.failure', { method, reason: 'not-enrolled' });
      throw invalid('not-enrolled', 'the account has no confirmed second factor');
    }
    return row;
  }

  private async unusedRecoveryCodes(tenantId: string, userId: string): Promise<number> {
    const r = await this.db
      .selectFrom('mfa_recovery_code')
      .select((eb) => eb.fn.countAll().as('n'))
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .where('used_at', 'is', null)
      .executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  private async replaceRecoveryCodes(trx: Transaction<TachyonSchema>, tenantId: string, userId: string, codes: readonly string[], nowIso: string): Promise<void> {
    await trx.deleteFrom('mfa_recovery_code').where('tenant_id', '=', tenantId).where('user_id', '=', userId).execute();
    await trx
      .insertInto('mfa_recovery_code')
      .values(
        codes.map((c) => {
          const salt = newRecoverySalt();
          return {
            id: randomUUID(),
            tenant_id: tenantId,
            user_id: userId,
            salt: salt.toString('base64'),
            code_hash: hashRecoveryCode(parseRecoveryCode(c) as string, salt, tenantId, userId).toString('hex'),
            created_at: nowIso,
            used_at: null,
          };
        }),
      )
      .execute();
  }

  /**
   * Counts an attempt, then checks `code` against the row's secret for the steps around
   * `now`. Returns the matching step, newer than the last accepted one; refuses
   * otherwise (counted as a failure).
   */
  private async checkTotp(tenantId: string, userId: string, row: Row, code: string, now: number, ctx: MfaContext): Promise<number> {
    await this.reserveAttempt(tenantId, userId, now, 'totp', ctx);
    const digits = parseTotpCode(code);
    if (digits === undefined) return this.fail(tenantId, userId, now, 'totp', 'malformed', ctx);
    let secretBytes: Buffer;
    try {
      secretBytes = this.box.open(row.secret_sealed, totpSecretAad(tenantId, userId));
    } catch (err) {
      this.record(ctx, tenantId, userId, 'mfa.failure', { method: 'totp', reason: 'secret-unreadable' }, 'error');
      throw err;
    }
    const secret = new Secret({ buffer: new Uint8Array(secretBytes).buffer });
    secretBytes.fill(0);
    const current = MfaService.stepAt(now);
    const last = row.last_step === null ? -1 : Number(row.last_step);
    const given = Buffer.from(digits, 'latin1');
    let accepted = -1;
    let replayed = -1;
    for (let s = current - TOTP_WINDOW; s <= current + TOTP_WINDOW; s++) {
      const expected = Buffer.from(HOTP.generate({ secret, algorithm: TOTP_ALGORITHM, digits: TOTP_DIGITS, counter: s }), 'latin1');
      if (!sameBytes(expected, given)) continue;
      if (s > last) accepted = Math.max(accepted, s);
      else replayed = s;
    }
    secret.bytes.fill(0);
    if (accepted >= 0) return accepted;
    if (replayed >= 0) return this.refuseReplay(tenantId, userId, replayed, last, now, ctx);
    return this.fail(tenantId, userId, now, 'totp', 'wrong-code', ctx);
  }

  private async refuseReplay(tenantId: string, userId: string, step: number, lastStep: number, now: number, ctx: MfaContext): Promise<never> {
    this.record(ctx, tenantId, userId, 'mfa.replay', { step, lastStep });
    return this.fail(tenantId, userId, now, 'totp', 'replay', ctx, false);
  }

  /**
   * Counts one attempt before its code is checked. Refuses (`MFA_LOCKED`) while the
   * account is locked, or when `maxFailures` attempts are already counted in the
   * current window (a concurrent burst). A window that has passed, or a lock that has
   * expired, starts a new count.
   */
  private async reserveAttempt(tenantId: string, userId: string, now: number, method: 'totp' | 'recovery', ctx: MfaContext): Promise<number> {
    const nowIso = iso(now);
    const floor = iso(now - this.failureWindowMs);
    const fresh = sql<boolean>`(failed_window_start is null or failed_window_start <= ${floor} or (locked_until is not null and locked_until <= ${nowIso}))`;
    const r = await this.db
      .updateTable('mfa_totp')
      .set({
        failed_count: sql<number>`case when ${fresh} then 1 else failed_count + 1 end`,
        failed_window_start: sql<string>`case when ${fresh} then ${nowIso} else failed_window_start end`,
        locked_until: sql<string | null>`case when ${fresh} then null else locked_until end`,
      })
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .where(sql<boolean>`(locked_until is null or locked_until <= ${nowIso})`)
      .where(sql<boolean>`(${fresh} or failed_count < ${this.maxFailures})`)
      .returning(['failed_count'])
      .executeTakeFirst();
    if (r !== undefined) return Number(r.failed_count);
    const row = await this.row(this.db, tenantId, userId);
    const until = row?.locked_until ?? iso(now + this.lockMs);
    this.record(ctx, tenantId, userId, 'mfa.failure', { method, reason: 'locked', failures: row?.failed_count ?? this.maxFailures });
    throw locked(until, now);
  }

  /** Refuses an attempt already counted; the one that reaches the limit starts the lock. */
  private async fail(
    tenantId: string,
    userId: string,
    now: number,
    method: 'totp' | 'recovery',
    reason: 'wrong-code' | 'malformed' | 'replay' | 'used',
    ctx: MfaContext,
    audit = true,
  ): Promise<never> {
    const row = await this.row(this.db, tenantId, userId);
    const failures = row?.failed_count ?? 0;
    if (audit) this.record(ctx, tenantId, userId, 'mfa.failure', { method, reason, failures });
    if (failures >= this.maxFailures) {
      const until = iso(now + this.lockMs);
      const nowIso = iso(now);
      const r = await this.db
        .updateTable('mfa_totp')
        .set({ locked_until: until, updated_at: nowIso })
        .where('tenant_id', '=', tenantId)
        .where('user_id', '=', userId)
        .where('failed_count', '>=', this.maxFailures)
        .where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<=', nowIso)]))
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) === 1) this.record(ctx, tenantId, userId, 'mfa.lockout', { failures, lockedUntil: until });
      const after = await this.row(this.db, tenantId, userId);
      throw locked(after?.locked_until ?? until, now, reason);
    }
    throw invalid(reason, `second-factor code refused: ${reason}`);
  }

  private record(
    ctx: MfaContext,
    tenantId: string,
    userId: string,
    type: 'mfa.enrol' | 'mfa.confirm' | 'mfa.failure' | 'mfa.replay' | 'mfa.lockout' | 'mfa.recovery' | 'mfa.disable',
    fields: Record<string, unknown>,
    severity?: 'error',
  ): void {
    const event = {
      type,
      component: 'web',
      ...(ctx.correlationId !== undefined ? { correlationId: ctx.correlationId } : {}),
      ...(severity !== undefined ? { severity } : {}),
      fields: {
        ...(ctx.clientAddress !== undefined ? { clientAddress: ctx.clientAddress } : {}),
        tenant: ctx.tenantLabel ?? tenantId,
        user: ctx.userLabel ?? userId,
        ...fields,
      },
    } as AuditEvent;
    this.audit.record(event);
  }
}

function invalid(reason: string, message: string, publicMessage?: string): TachyonError {
  return new TachyonError('MFA_INVALID', message, { details: { reason }, ...(publicMessage !== undefined ? { publicMessage } : {}) });
}

function locked(until: string, now: number, reason?: string): TachyonError {
  const retryAfterSeconds = Math.max(1, Math.ceil((Date.parse(until) - now) / 1000));
  return new TachyonError('MFA_LOCKED', `too many wrong second-factor codes: refused until ${until}`, {
    details: { lockedUntil: until, retryAfterSeconds, ...(reason !== undefined ? { reason } : {}) },
  });
}
