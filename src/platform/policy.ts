/**
 * A tenant's identity policy: passwords (minimum length, common-password check, optional
 * expiry), failed sign-ins and lockout, and session timeouts. Stored as JSON per tenant
 * (platform_policy); a tenant without a row has {@link DEFAULT_POLICY}.
 */
import { z } from 'zod';
import { TachyonError } from '../core/errors.js';
import { MAX_PASSWORD_LENGTH } from './model.js';

export interface IdentityPolicy {
  /** Shortest password accepted (8–{@link MAX_PASSWORD_LENGTH}); default 12. Passwords up to MAX_PASSWORD_LENGTH are always accepted. */
  readonly minPasswordLength: number;
  /** Refuse passwords found in the shipped list of common and breached passwords. Default true. */
  readonly rejectCommonPasswords: boolean;
  /** Failed sign-ins within `failureWindowSeconds` that lock the account (1–100); default 5. */
  readonly maxFailedAttempts: number;
  /** Default 900 (15 minutes). */
  readonly failureWindowSeconds: number;
  /** How long a locked account stays locked; default 900 (15 minutes). */
  readonly lockoutSeconds: number;
  /**
   * What failed sign-ins are counted against and what the lockout locks:
   * `account` (default) — the account, whatever address the attempts come from (an
   * attacker can lock the owner out); `address` — the account *from one source address*
   * (IPv4, or an IPv6 /64): a guesser locks only its own address's attempts on the
   * account while the owner keeps signing in from another one.
   */
  readonly lockoutScope: LockoutScope;
  /** Days after which a password must be changed; 0 = never (default). */
  readonly passwordExpiryDays: number;
  /** A session unused this long ends; default 1800 (30 minutes). */
  readonly sessionIdleSeconds: number;
  /** A session ends this long after sign-in whatever happens; default 43200 (12 hours). */
  readonly sessionAbsoluteSeconds: number;
  /**
   * Every local account signs in with a TOTP code after the password (default false).
   * Tenant administrators of local accounts need one whatever this says.
   */
  readonly requireTotp: boolean;
  /**
   * Create the user at their first single sign-on, with the mapped roles (just-in-time
   * provisioning; default true). When false, only users already linked may sign in by SSO.
   */
  readonly ssoJustInTime: boolean;
  /**
   * Text shown before sign-in that must be accepted (`acceptDisclaimer: true`) to sign in
   * with a password; '' (default) = none. Plain text, at most {@link MAX_DISCLAIMER} characters.
   */
  readonly disclaimer: string;
  /**
   * How long a proof of identity (password sign-in, TOTP step, SSO sign-in, or
   * POST /api/v1/auth/reauth) lets a session make sensitive changes (routes flagged
   * `reauth` in routes.ts); older, they answer REAUTH_REQUIRED. 60–86400; default 600.
   */
  readonly reauthWindowSeconds: number;
}

export const MAX_DISCLAIMER = 4000;

export const LOCKOUT_SCOPES = ['account', 'address'] as const;
export type LockoutScope = (typeof LOCKOUT_SCOPES)[number];

export const DEFAULT_POLICY: IdentityPolicy = Object.freeze({
  minPasswordLength: 12,
  rejectCommonPasswords: true,
  maxFailedAttempts: 5,
  failureWindowSeconds: 900,
  lockoutSeconds: 900,
  lockoutScope: 'account',
  passwordExpiryDays: 0,
  sessionIdleSeconds: 1800,
  sessionAbsoluteSeconds: 43200,
  requireTotp: false,
  ssoJustInTime: true,
  disclaimer: '',
  reauthWindowSeconds: 600,
});

const int = (lo: number, hi: number) => z.number().int().min(lo).max(hi);

/** The policy as an administrator sends it: every field optional (unset fields keep their value), unknown fields refused. */
export const POLICY_UPDATE_SCHEMA = z
  .object({
    minPasswordLength: int(8, MAX_PASSWORD_LENGTH),
    rejectCommonPasswords: z.boolean(),
    maxFailedAttempts: int(1, 100),
    failureWindowSeconds: int(60, 7 * 86400),
    lockoutSeconds: int(60, 7 * 86400),
    lockoutScope: z.enum(LOCKOUT_SCOPES),
    passwordExpiryDays: int(0, 3650),
    sessionIdleSeconds: int(60, 86400),
    sessionAbsoluteSeconds: int(300, 30 * 86400),
    requireTotp: z.boolean(),
    ssoJustInTime: z.boolean(),
    reauthWindowSeconds: int(60, 86400),
    // plain text: tabs and line breaks allowed, no other control characters
    // eslint-disable-next-line no-control-regex -- refusing control characters is the point
    disclaimer: z.string().max(MAX_DISCLAIMER).regex(/^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$/),
  })
  .partial()
  .strict();

/** Applies an update to a policy. @throws TachyonError `USAGE` naming the first bad field. */
export function applyPolicyUpdate(base: IdentityPolicy, update: unknown): IdentityPolicy {
  const r = POLICY_UPDATE_SCHEMA.safeParse(update);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = issue?.path.join('.') || (issue?.code === 'unrecognized_keys' ? issue.keys.join(',') : 'policy');
    throw new TachyonError('USAGE', `policy: ${field}: ${issue?.message ?? 'invalid'}`, {
      publicMessage: `Invalid policy field ${field.slice(0, 64)}.`,
      details: { field },
    });
  }
  const next = { ...base, ...r.data };
  if (next.sessionIdleSeconds > next.sessionAbsoluteSeconds) {
    throw new TachyonError('USAGE', 'policy: sessionIdleSeconds exceeds sessionAbsoluteSeconds', {
      publicMessage: 'Invalid policy: the idle timeout must not exceed the absolute timeout.',
    });
  }
  return Object.freeze(next);
}

/** Reads a stored policy (defaults for anything missing, so new fields need no migration). */
export function parseStoredPolicy(json: string | undefined): IdentityPolicy {
  if (json === undefined) return DEFAULT_POLICY;
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw new TachyonError('INTERNAL', 'stored tenant policy is not JSON', { cause: err });
  }
  const known = Object.fromEntries(Object.entries(raw as Record<string, unknown>).filter(([k]) => k in DEFAULT_POLICY));
  return applyPolicyUpdate(DEFAULT_POLICY, known);
}
