/**
 * The identity service: local sign-in with the tenant's policy (argon2id, common-password
 * check, failed-attempt lockout, optional expiry), web sessions (random 256-bit tokens of
 * which only the SHA-256 is stored, idle and absolute timeouts, a new token at every
 * sign-in), CSRF tokens bound to the session, self-service and administrator password
 * changes, users and the policy. Every change and every sign-in attempt is audited.
 *
 * Callers (the HTTP routes) have already checked the caller's role; the service always
 * takes the tenant from the authenticated principal, never from the request.
 */
import { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { AuditEvent, AuditSink } from '../audit/index.js';
import { systemClock, type Clock } from '../core/clock.js';
import { TachyonError } from '../core/errors.js';
import type { Database } from '../db/database.js';
import { addressKey } from '../defender/index.js';
import {
  MAX_PASSWORD_LENGTH,
  TENANT_SLUG_PATTERN,
  USERNAME_PATTERN,
  validateDisplayName,
  validateRoles,
  validateTenantSlug,
  validateUsername,
  type PlatformUser,
  type Role,
  type SessionInfo,
  type Tenant,
  type UserStatus,
} from './model.js';
import {
  API_TOKEN_PREFIX,
  MAX_TOKENS_PER_USER,
  parseScopes,
  validateScopes,
  validateTokenDays,
  type ApiTokenInfo,
  type TokenScope,
} from './api-tokens.js';
import type { SsoConfigStore, SsoConfigView, SsoIdentity, SsoProtocol, SsoServices } from './sso/index.js';
import type { MfaService, MfaVerified, TotpEnrolment } from './mfa/service.js';
import { argon2idHasher, checkNewPassword, loadCommonPasswords, type PasswordHasher } from './passwords.js';
import { applyPolicyUpdate, type IdentityPolicy } from './policy.js';
import { IdentityRepository, noSuchUser } from './repository.js';
import type { TenantAddressGate } from './allow-list-store.js';

/** Who is asking, as the HTTP edge saw it. */
export interface RequestMeta {
  readonly clientAddress: string;
  readonly userAgent: string;
  /** The request's correlation id (a ULID), carried by its audit records and error replies. */
  readonly correlationId: string;
}

/**
 * How far a session got: `full`; `mfa` (password right, a TOTP or recovery code still
 * due — may only call the second-step route); `enrol` (an account that must have TOTP
 * and has none — may only enrol).
 */
export type SessionStage = 'full' | 'mfa' | 'enrol';

/** Lifetime of a pending (`mfa`/`enrol`) session. */
export const PENDING_SESSION_SECONDS = 300;

/** An authenticated caller. */
export interface Principal {
  readonly tenant: Tenant;
  readonly user: PlatformUser;
  /** The public id of the session (not the token). */
  readonly sessionId: string;
  /** The password must be changed before anything else (admin reset, or expiry). */
  readonly passwordChangeRequired: boolean;
  readonly stage: SessionStage;
  /**
   * When the session's user last proved who they are (ISO): sign-in with a password, the
   * TOTP step, an SSO sign-in, or POST /api/v1/auth/reauth. Unset for API-token callers.
   */
  readonly authenticatedAt?: string;
  /** Set when the caller authenticated with an API token (then `sessionId` is `token:<id>`). */
  readonly apiToken?: { readonly id: string; readonly scopes: readonly TokenScope[] };
}

export interface SignInResult {
  /** The new session token: goes into the cookie only. */
  readonly token: string;
  readonly csrfToken: string;
  readonly principal: Principal;
  readonly session: SessionInfo;
}

export interface IdentityServiceOptions {
  readonly database: Database;
  readonly audit: AuditSink;
  readonly clock?: Clock;
  /** Default: argon2id with DEFAULT_ARGON2. */
  readonly hasher?: PasswordHasher;
  /** Default: the shipped list (data/common-passwords.txt). */
  readonly commonPasswords?: ReadonlySet<string>;
  /**
   * The TOTP service. With it, tenant administrators of local accounts, every account of
   * a tenant whose policy says `requireTotp`, and every enrolled account sign in with a
   * second factor. Without it, no second factor exists and `requireTotp` cannot be set.
   */
  readonly mfa?: MfaService;
  /**
   * The single sign-on services: with them, the SSO routes sign people in, and a tenant
   * whose SSO configuration says `ssoRequiredForAdmins` refuses its administrators' password sign-in.
   */
  readonly sso?: SsoServices;
  /**
   * Where tenant administrators read and change their tenant's SSO configuration (the
   * `/api/v1/sso` routes; the same store the SSO services read in the served platform).
   * Without it those routes answer `CONFLICT`.
   */
  readonly ssoConfigs?: SsoConfigStore;
  /**
   * The tenants' IP allow-lists (allow-list-store.ts): a sign-in from an address outside
   * the tenant's list fails like any other (`address-not-allowed` in the audit record),
   * before the password counts against the account.
   */
  readonly addressGate?: TenantAddressGate;
}

export interface NewUserInput {
  readonly username: unknown;
  readonly displayName?: unknown;
  readonly roles?: unknown;
  readonly password?: unknown;
}

export interface UserPatchInput {
  readonly displayName?: unknown;
  readonly status?: unknown;
  readonly roles?: unknown;
}

/** The one answer to every failed sign-in, whatever the reason (no account enumeration). */
export function signInFailed(reason: string): TachyonError {
  return new TachyonError('AUTH_FAILED', `sign-in refused: ${reason}`, {
    publicMessage: 'Sign-in failed: the credentials are wrong, or the account is locked or disabled.',
    details: { reason, audited: true },
  });
}

function notSignedIn(reason: string): TachyonError {
  return new TachyonError('AUTH_FAILED', `no valid session: ${reason}`, { publicMessage: 'Not signed in, or the session has ended.', details: { reason } });
}

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

/** The CSRF token of a session: HMAC-SHA-256 keyed by the session token (so bound to it, and computable only by whoever holds it). */
/** A group as the API shows it. */
export interface GroupView {
  readonly id: string;
  readonly name: string;
  readonly createdAt: string;
  /** user ids, sorted */
  readonly members: readonly string[];
}

/** Group names: 1–64 characters, no control characters, trimmed. @throws `USAGE` */
export function validateGroupName(name: string): string {
  const clean = name.trim();
  // eslint-disable-next-line no-control-regex
  if (clean.length < 1 || clean.length > 64 || /[\u0000-\u001f\u007f]/.test(clean)) {
    throw new TachyonError('USAGE', 'bad group name', { publicMessage: 'Invalid group name: 1 to 64 printable characters.', details: { field: 'name' } });
  }
  return clean;
}

export function csrfTokenFor(token: string): string {
  return createHmac('sha256', token).update('tachyon-csrf-v1').digest('base64url');
}

export class IdentityService {
  readonly repo: IdentityRepository;
  private readonly audit: AuditSink;
  private readonly clock: Clock;
  private readonly hasher: PasswordHasher;
  private readonly common: ReadonlySet<string>;
  private readonly mfa: MfaService | undefined;
  readonly sso: SsoServices | undefined;
  private readonly ssoConfigs: SsoConfigStore | undefined;
  private readonly database: Database;
  private readonly addressGate: TenantAddressGate | undefined;
  private dummyHash: Promise<string> | undefined;

  constructor(options: IdentityServiceOptions) {
    this.repo = new IdentityRepository(options.database);
    this.audit = options.audit;
    this.clock = options.clock ?? systemClock;
    this.hasher = options.hasher ?? argon2idHasher();
    this.common = options.commonPasswords ?? loadCommonPasswords();
    this.mfa = options.mfa;
    this.sso = options.sso;
    this.ssoConfigs = options.ssoConfigs;
    this.database = options.database;
    this.addressGate = options.addressGate;
  }

  private nowMs(): number {
    return this.clock.now();
  }

  private iso(ms: number = this.nowMs()): string {
    return new Date(ms).toISOString();
  }

  private record(event: AuditEvent): string {
    return this.audit.record(event);
  }

  /** Records a refused sign-in or re-authentication (`web.signin`, result `failure`). */
  private recordSigninFailure(meta: RequestMeta, tenant: string, user: string, method: string, reason: string): void {
    this.record({
      type: 'web.signin',
      component: 'web',
      severity: 'warning',
      correlationId: meta.correlationId,
      fields: { clientAddress: meta.clientAddress, tenant, user, result: 'failure', method, reason },
    });
  }

  /** Records a refused web request (the HTTP edge calls this for every error it answers that the service has not recorded). */
  recordRefusal(meta: RequestMeta, fields: { route: string; status: number; code: string; reason?: string; principal?: Principal }): void {
    const { principal, ...rest } = fields;
    this.record({
      type: 'web.refusal',
      component: 'web',
      severity: fields.status >= 500 ? 'error' : 'warning',
      correlationId: meta.correlationId,
      fields: {
        clientAddress: meta.clientAddress,
        ...(principal ? { tenant: principal.tenant.slug, user: principal.user.username } : {}),
        ...rest,
      },
    });
  }

  /** A hash of a random password with the same parameters, verified when there is no real one (same work either way). */
  private dummy(): Promise<string> {
    this.dummyHash ??= this.hasher.hash(randomBytes(24).toString('base64url'));
    return this.dummyHash;
  }

  // -- provisioning (operators, tests; no principal) -------------------------------------

  async createTenant(slug: unknown, name: string): Promise<Tenant> {
    return this.repo.createTenant(validateTenantSlug(slug), validateDisplayName(name), this.iso());
  }

  /** Creates a user directly (the first administrator of a tenant). The password is checked against the tenant's policy. */
  async provisionUser(tenantId: string, input: NewUserInput & { mustChangePassword?: boolean }): Promise<PlatformUser> {
    const policy = await this.repo.policy(tenantId);
    const username = validateUsername(input.username);
    const hash = input.password === undefined ? null : await this.hasher.hash(checkNewPassword(input.password, policy, this.common, username));
    return this.repo.createUser(
      tenantId,
      {
        username,
        displayName: input.displayName === undefined ? '' : validateDisplayName(input.displayName),
        roles: input.roles === undefined ? ['member'] : validateRoles(input.roles),
        passwordHash: hash,
        mustChangePassword: input.mustChangePassword ?? false,
      },
      this.iso(),
    );
  }

  // -- sign-in, sessions -------------------------------------------------------------------

  /**
   * Signs in with a password. Every failure is the same `AUTH_FAILED` (see
   * {@link signInFailed}) after the same argon2 work; the reason goes to the audit log.
   * The session token the request carried, if any, is ended: a sign-in always yields a
   * new token (no fixation).
   */
  async signIn(
    input: { tenant: unknown; username: unknown; password: unknown; acceptDisclaimer?: unknown },
    meta: RequestMeta,
    presentedToken?: string,
  ): Promise<SignInResult> {
    const password = input.password;
    if (typeof password !== 'string' || password.length === 0 || password.length > MAX_PASSWORD_LENGTH * 4) {
      throw new TachyonError('USAGE', 'sign-in without a usable password field', { publicMessage: 'Invalid request: tenant, username and password are required.' });
    }
    if (typeof input.tenant !== 'string' || typeof input.username !== 'string') {
      throw new TachyonError('USAGE', 'sign-in without tenant or username', { publicMessage: 'Invalid request: tenant, username and password are required.' });
    }
    const shownUser = input.username.slice(0, 128);
    const shownTenant = input.tenant.slice(0, 64);
    const tenant = TENANT_SLUG_PATTERN.test(input.tenant) ? await this.repo.tenantBySlug(input.tenant) : undefined;
    // the disclaimer is checked before the password (it is public: refusing here tells nothing about the account)
    const disclaimer = tenant ? (await this.repo.policy(tenant.id)).disclaimer : '';
    if (disclaimer !== '' && input.acceptDisclaimer !== true) {
      throw new TachyonError('USAGE', 'sign-in without accepting the disclaimer', {
        publicMessage: 'Invalid request: accept the disclaimer (acceptDisclaimer: true) to sign in.',
        details: { field: 'acceptDisclaimer', reason: 'disclaimer-not-accepted' },
      });
    }
    const username = USERNAME_PATTERN.test(input.username) ? input.username.toLowerCase() : undefined;
    const creds = tenant && username !== undefined ? await this.repo.credentials(tenant.id, username) : undefined;
    const ok = await this.hasher.verify(creds?.passwordHash ?? (await this.dummy()), password);
    const now = this.nowMs();
    const fail = (reason: string): never => {
      this.recordSigninFailure(meta, shownTenant, shownUser, 'password', reason);
      throw signInFailed(reason);
    };
    if (!tenant) return fail('unknown-tenant');
    if (!creds) return fail('unknown-user');
    if (this.addressGate && !(await this.addressGate.admits(tenant, meta.clientAddress))) return fail('address-not-allowed');
    const policy = await this.repo.policy(tenant.id);
    const user = creds.user;
    // an account lock holds whatever the scope (it may predate a change of scope, or come from a wrong current password)
    if (user.lockedUntil !== null && Date.parse(user.lockedUntil) > now) return fail('locked');
    const byAddress = policy.lockoutScope === 'address';
    const address = addressKey(meta.clientAddress);
    if (byAddress && (await this.addressLocked(tenant.id, user.id, address, now))) return fail('address-locked');
    if (creds.passwordHash === null) return fail('no-local-password');
    if (!ok) {
      await this.countFailure(tenant, user, policy, now, meta);
      return fail('bad-credentials');
    }
    // a burst of concurrent failures may have locked the account while this one verified
    const lockedNow = await this.repo.lockedUntil(tenant.id, user.id);
    if (lockedNow !== null && lockedNow !== undefined && Date.parse(lockedNow) > now) return fail('locked');
    if (byAddress && (await this.addressLocked(tenant.id, user.id, address, now))) return fail('address-locked');
    if (user.status !== 'active') return fail('disabled');
    if (await this.ssoRequiredFor(tenant.id, user.roles)) return fail('sso-required');
    await this.repo.clearFailures(tenant.id, user.id);
    if (byAddress) await this.repo.clearAddressFailures(tenant.id, user.id, address, this.iso(now), this.iso(now - policy.failureWindowSeconds * 1000));
    if (presentedToken !== undefined) await this.endByToken(presentedToken, meta, 'superseded');
    const stage = await this.stageAfterPassword(tenant.id, user, policy);
    const r = await this.openSession(tenant, user, policy, stage, meta, now);
    this.record({
      type: 'web.signin',
      component: 'web',
      correlationId: meta.correlationId,
      fields: {
        clientAddress: meta.clientAddress,
        tenant: tenant.slug,
        user: user.username,
        result: stage === 'full' ? 'success' : 'pending',
        method: 'password',
        ...(stage === 'full' ? {} : { pending: stage === 'mfa' ? 'totp' : 'totp-enrolment' }),
        ...(disclaimer !== '' ? { disclaimerAccepted: sha256(disclaimer).slice(0, 16) } : {}),
        changeRequired: r.principal.passwordChangeRequired,
      },
    });
    return r;
  }

  /** Which stage a correct password leads to (see the MFA doc's sign-in flow). */
  private async stageAfterPassword(tenantId: string, user: PlatformUser, policy: IdentityPolicy): Promise<SessionStage> {
    if (!this.mfa) return 'full';
    const enrolled = await this.mfa.isEnrolled(tenantId, user.id);
    if (enrolled) return 'mfa';
    // local administrators always; everyone when the tenant says so
    return user.roles.includes('tenant_admin') || policy.requireTotp ? 'enrol' : 'full';
  }

  /** Creates a session (a new random token) at `stage`; a pending one lives {@link PENDING_SESSION_SECONDS} at most. */
  private async openSession(tenant: Tenant, user: PlatformUser, policy: IdentityPolicy, stage: SessionStage, meta: RequestMeta, now: number): Promise<SignInResult> {
    const changeRequired = user.mustChangePassword || this.passwordExpired(user, policy, now);
    const token = randomBytes(32).toString('base64url');
    const life = stage === 'full' ? policy.sessionAbsoluteSeconds : Math.min(PENDING_SESSION_SECONDS, policy.sessionAbsoluteSeconds);
    const row = {
      id: randomUUID(),
      token_sha256: sha256(token),
      tenant_id: tenant.id,
      user_id: user.id,
      created_at: this.iso(now),
      last_seen_at: this.iso(now),
      expires_at: this.iso(now + life * 1000),
      client_address: meta.clientAddress.slice(0, 64),
      user_agent: meta.userAgent.slice(0, 256),
      stage,
      authenticated_at: this.iso(now),
    };
    await this.repo.createSession(row);
    const fresh = (await this.repo.userById(tenant.id, user.id)) ?? user;
    return {
      token,
      csrfToken: csrfTokenFor(token),
      principal: { tenant, user: fresh, sessionId: row.id, passwordChangeRequired: changeRequired, stage, authenticatedAt: row.authenticated_at },
      session: {
        id: row.id,
        createdAt: row.created_at,
        lastSeenAt: row.last_seen_at,
        expiresAt: row.expires_at,
        clientAddress: row.client_address,
        userAgent: row.user_agent,
      },
    };
  }

  private requireMfa(): MfaService {
    if (!this.mfa) {
      throw new TachyonError('CONFLICT', 'no TOTP service configured', { publicMessage: 'A second factor is not available on this server.' });
    }
    return this.mfa;
  }

  private mfaCtx(principal: Principal, meta: RequestMeta) {
    return { clientAddress: meta.clientAddress, correlationId: meta.correlationId, tenantLabel: principal.tenant.slug, userLabel: principal.user.username };
  }

  /**
   * Checks a TOTP `code` (or else the `recoveryCode`) of the principal's user. A wrong or
   * locked one is audited as a failed `web.signin` with `method` and rethrown marked as
   * audited (`MFA_INVALID` / `MFA_LOCKED`).
   */
  private async verifySecondFactor(
    mfa: MfaService,
    principal: Principal,
    input: { code?: string | undefined; recoveryCode?: string | undefined },
    ctx: ReturnType<IdentityService['mfaCtx']>,
    method: string,
    meta: RequestMeta,
  ): Promise<MfaVerified> {
    const { tenant, user } = principal;
    try {
      return input.code !== undefined
        ? await mfa.verify(tenant.id, user.id, input.code, ctx)
        : await mfa.verifyRecoveryCode(tenant.id, user.id, input.recoveryCode as string, ctx);
    } catch (err) {
      if (err instanceof TachyonError && (err.code === 'MFA_INVALID' || err.code === 'MFA_LOCKED')) {
        const reason = err.code === 'MFA_LOCKED' ? 'mfa-locked' : String(err.details?.['reason'] ?? 'mfa-invalid');
        this.recordSigninFailure(meta, tenant.slug, user.username, method, reason);
        throw new TachyonError(err.code, err.message, { cause: err, publicMessage: err.publicMessage, details: { ...err.details, reason, audited: true } });
      }
      throw err;
    }
  }

  /**
   * The second sign-in step: a TOTP `code` or a `recoveryCode` for a session at stage
   * `mfa`. Success ends the pending session and opens a full one (a new token);
   * failure is audited as a failed sign-in and answered `MFA_INVALID` / `MFA_LOCKED`.
   */
  async completeSecondFactor(
    principal: Principal,
    input: { code?: string | undefined; recoveryCode?: string | undefined },
    meta: RequestMeta,
  ): Promise<SignInResult & { readonly recoveryCodesLeft?: number }> {
    const mfa = this.requireMfa();
    if (principal.stage !== 'mfa') throw new TachyonError('PERMISSION', 'no second step pending', { publicMessage: 'Permission denied.', details: { reason: 'stage' } });
    if ((input.code === undefined) === (input.recoveryCode === undefined)) {
      throw new TachyonError('USAGE', 'second step needs exactly one of code, recoveryCode', { publicMessage: 'Invalid request: send code or recoveryCode.' });
    }
    const ctx = this.mfaCtx(principal, meta);
    const method = input.code !== undefined ? 'password+totp' : 'password+recovery';
    const verified = await this.verifySecondFactor(mfa, principal, input, ctx, method, meta);
    await this.repo.deleteSession(principal.tenant.id, principal.user.id, principal.sessionId);
    const policy = await this.repo.policy(principal.tenant.id);
    const r = await this.openSession(principal.tenant, principal.user, policy, 'full', meta, this.nowMs());
    this.record({
      type: 'web.signin',
      component: 'web',
      correlationId: meta.correlationId,
      fields: {
        clientAddress: meta.clientAddress,
        tenant: principal.tenant.slug,
        user: principal.user.username,
        result: 'success',
        method,
        changeRequired: r.principal.passwordChangeRequired,
        ...(verified.method === 'recovery' ? { recoveryCodesLeft: verified.remaining } : {}),
      },
    });
    return verified.method === 'recovery' ? { ...r, recoveryCodesLeft: verified.remaining } : r;
  }

  /** The tenant's sign-in disclaimer, or null (unknown tenants too: the answer tells nothing about which tenants exist). */
  async disclaimer(slug: unknown): Promise<string | null> {
    const tenant = typeof slug === 'string' && TENANT_SLUG_PATTERN.test(slug) ? await this.repo.tenantBySlug(slug) : undefined;
    if (!tenant) return null;
    const text = (await this.repo.policy(tenant.id)).disclaimer;
    return text === '' ? null : text;
  }

  // -- API tokens ------------------------------------------------------------------------------

  /**
   * Creates an API token for the caller: shown once (the answer's `token`), stored as its
   * SHA-256. Scopes are limited by the caller's roles; audited (never the token).
   */
  async createApiToken(principal: Principal, input: { name?: unknown; scopes?: unknown; expiresInDays?: unknown }, meta: RequestMeta): Promise<ApiTokenInfo & { readonly token: string }> {
    const name = input.name === undefined ? '' : validateDisplayName(input.name);
    const scopes = validateScopes(input.scopes, principal.user.roles);
    const days = validateTokenDays(input.expiresInDays);
    const now = this.nowMs();
    const db = this.database.db;
    const live = await db
      .selectFrom('platform_api_token')
      .select((eb) => eb.fn.countAll<number | string>().as('n'))
      .where('tenant_id', '=', principal.tenant.id)
      .where('user_id', '=', principal.user.id)
      .where('expires_at', '>', this.iso(now))
      .executeTakeFirst();
    if (Number(live?.n ?? 0) >= MAX_TOKENS_PER_USER) {
      throw new TachyonError('CONFLICT', 'too many API tokens', { publicMessage: `At most ${MAX_TOKENS_PER_USER} API tokens: delete one first.` });
    }
    const token = API_TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const row = {
      id: randomUUID(),
      token_sha256: sha256(token),
      tenant_id: principal.tenant.id,
      user_id: principal.user.id,
      name,
      scopes: scopes.join(' '),
      created_at: this.iso(now),
      expires_at: this.iso(now + days * 86_400_000),
      last_used_at: null,
    };
    await db.insertInto('platform_api_token').values(row).execute();
    this.changed(principal, meta, 'token.create', row.id, scopes.map((sc) => `scope:${sc}`));
    return { token, id: row.id, name, scopes, createdAt: row.created_at, expiresAt: row.expires_at, lastUsedAt: null };
  }

  async listApiTokens(principal: Principal): Promise<ApiTokenInfo[]> {
    const rows = await this.database.db
      .selectFrom('platform_api_token')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .where('user_id', '=', principal.user.id)
      .orderBy('created_at')
      .execute();
    return rows.map((r) => ({ id: r.id, name: r.name, scopes: parseScopes(r.scopes), createdAt: r.created_at, expiresAt: r.expires_at, lastUsedAt: r.last_used_at }));
  }

  /** Deletes one of the caller's own tokens. @throws `NOT_FOUND` for any other id. */
  async revokeApiToken(principal: Principal, id: string, meta: RequestMeta): Promise<void> {
    const r = await this.database.db
      .deleteFrom('platform_api_token')
      .where('tenant_id', '=', principal.tenant.id)
      .where('user_id', '=', principal.user.id)
      .where('id', '=', id)
      .executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) throw new TachyonError('NOT_FOUND', 'no such token of this user', { publicMessage: 'No such token.' });
    this.changed(principal, meta, 'token.revoke', id);
  }

  /**
   * Resolves `Authorization: Bearer` to its principal (a full one, scopes attached).
   * @throws `AUTH_FAILED` for an unknown, expired or malformed token, or a disabled owner.
   */
  async authenticateBearer(token: string, meta: RequestMeta): Promise<Principal> {
    if (!token.startsWith(API_TOKEN_PREFIX) || token.length > 128) throw notSignedIn('bad-token');
    const db = this.database.db;
    const row = await db.selectFrom('platform_api_token').selectAll().where('token_sha256', '=', sha256(token)).executeTakeFirst();
    if (!row) throw notSignedIn('unknown-token');
    const now = this.nowMs();
    if (now >= Date.parse(row.expires_at)) throw notSignedIn('token-expired');
    const tenant = await this.repo.tenantById(row.tenant_id);
    const user = await this.repo.userById(row.tenant_id, row.user_id);
    if (!tenant || !user || user.status !== 'active') throw notSignedIn('account-disabled');
    await db.updateTable('platform_api_token').set({ last_used_at: this.iso(now) }).where('id', '=', row.id).execute();
    const policy = await this.repo.policy(row.tenant_id);
    void meta;
    return {
      tenant,
      user,
      sessionId: `token:${row.id}`,
      passwordChangeRequired: user.mustChangePassword || this.passwordExpired(user, policy, now),
      stage: 'full',
      apiToken: { id: row.id, scopes: parseScopes(row.scopes) },
    };
  }

  // -- single sign-on -----------------------------------------------------------------------

  private requireSso(protocol: SsoProtocol): SsoServices {
    if (!this.sso) {
      throw new TachyonError('SSO_FAILED', 'no SSO services configured', { details: { reason: 'not-configured', protocol } });
    }
    return this.sso;
  }

  /** The identity provider's URL for a sign-in at the tenant `slug` (`SSO_FAILED` when the tenant has none). */
  async beginSso(protocol: SsoProtocol, slug: unknown, meta: RequestMeta): Promise<string> {
    const sso = this.requireSso(protocol);
    const tenant = typeof slug === 'string' && TENANT_SLUG_PATTERN.test(slug) ? await this.repo.tenantBySlug(slug) : undefined;
    if (!tenant) throw new TachyonError('SSO_FAILED', 'SSO start for an unknown tenant', { details: { reason: 'not-configured', protocol } });
    const ctx = { clientAddress: meta.clientAddress };
    return protocol === 'oidc' ? (await sso.beginOidc(tenant.id, ctx)).redirectUrl : (await sso.beginSaml(tenant.id, ctx)).redirectUrl;
  }

  /** Completes an OIDC sign-in from the callback URL the browser requested; a new full session. */
  async completeOidcSignIn(callbackUrl: URL, meta: RequestMeta, presentedToken?: string): Promise<SignInResult> {
    const id = await this.requireSso('oidc').completeOidc(callbackUrl, { clientAddress: meta.clientAddress });
    return this.ssoSignIn(id, meta, presentedToken);
  }

  /** Completes a SAML sign-in from the posted form; a new full session. */
  async completeSamlSignIn(samlResponse: unknown, relayState: unknown, meta: RequestMeta, presentedToken?: string): Promise<SignInResult> {
    const id = await this.requireSso('saml').completeSaml(samlResponse, relayState, { clientAddress: meta.clientAddress });
    return this.ssoSignIn(id, meta, presentedToken);
  }

  /**
   * Signs in a verified SSO identity: the user linked to (tenant, issuer, subject), or —
   * at the first sign-in, when the policy allows just-in-time provisioning — a new user
   * (no local password; named by the e-mail address when it is verified, free and a
   * valid user name, else `<protocol>-<hash of issuer and subject>`). The user's roles
   * become the mapped roles at every sign-in. Never links to an existing local account.
   * The identity provider is trusted for the second factor: the session is full.
   */
  private async ssoSignIn(id: SsoIdentity, meta: RequestMeta, presentedToken?: string): Promise<SignInResult> {
    const tenant = await this.repo.tenantById(id.tenantId);
    const refuse = (reason: string, who: string): never => {
      this.recordSigninFailure(meta, tenant?.slug ?? id.tenantId, who.slice(0, 128), id.protocol, reason);
      throw new TachyonError('SSO_FAILED', `SSO sign-in refused: ${reason}`, { details: { reason, audited: true } });
    };
    if (!tenant) return refuse('unknown-tenant', id.subject);
    const db = this.database.db;
    const link = await db
      .selectFrom('platform_sso_link')
      .select('user_id')
      .where('tenant_id', '=', tenant.id)
      .where('issuer', '=', id.issuer)
      .where('subject', '=', id.subject)
      .executeTakeFirst();
    const policy = await this.repo.policy(tenant.id);
    const now = this.nowMs();
    let user: PlatformUser | undefined;
    if (link) {
      user = await this.repo.userById(tenant.id, link.user_id);
      if (!user) return refuse('linked-user-missing', id.subject);
      if (user.status !== 'active') return refuse('disabled', user.username);
      if (user.roles.join(',') !== id.roles.join(',')) user = await this.repo.updateUser(tenant.id, user.id, { roles: [...id.roles] }, this.iso(now));
    } else {
      if (!policy.ssoJustInTime) return refuse('not-provisioned', id.email ?? id.subject);
      const byEmail = id.email !== undefined && id.emailVerified && USERNAME_PATTERN.test(id.email) ? id.email.toLowerCase() : undefined;
      const free = byEmail !== undefined && (await this.repo.credentials(tenant.id, byEmail)) === undefined;
      const username = free && byEmail !== undefined ? byEmail : `${id.protocol}-${sha256(`${id.issuer}\n${id.subject}`).slice(0, 20)}`;
      let displayName = '';
      try {
        displayName = id.name === undefined ? '' : validateDisplayName(id.name);
      } catch {
        displayName = '';
      }
      user = await this.repo.createUser(tenant.id, { username, displayName, roles: [...id.roles], passwordHash: null, mustChangePassword: false }, this.iso(now));
      await db.insertInto('platform_sso_link').values({ tenant_id: tenant.id, issuer: id.issuer, subject: id.subject, user_id: user.id, created_at: this.iso(now) }).execute();
      this.record({
        type: 'web.change',
        component: 'web',
        correlationId: meta.correlationId,
        fields: { clientAddress: meta.clientAddress, tenant: tenant.slug, actor: `sso:${id.protocol}`, action: 'user.provision', target: user.id, changed: ['username', 'roles'] },
      });
    }
    if (presentedToken !== undefined) await this.endByToken(presentedToken, meta, 'superseded');
    const r = await this.openSession(tenant, user, policy, 'full', meta, now);
    this.record({
      type: 'web.signin',
      component: 'web',
      correlationId: meta.correlationId,
      fields: { clientAddress: meta.clientAddress, tenant: tenant.slug, user: user.username, result: 'success', method: id.protocol },
    });
    return r;
  }

  /** Starts (or restarts) the caller's own TOTP enrolment. */
  beginTotpEnrolment(principal: Principal, meta: RequestMeta): Promise<TotpEnrolment> {
    return this.requireMfa().beginEnrolment(principal.tenant.id, principal.user.id, `${principal.user.username}@${principal.tenant.slug}`, this.mfaCtx(principal, meta));
  }

  /**
   * Confirms the caller's enrolment with a code; returns the recovery codes (shown once).
   * A session at stage `enrol` is then replaced by a full one (`session` set).
   */
  async confirmTotpEnrolment(principal: Principal, code: string, meta: RequestMeta): Promise<{ recoveryCodes: string[]; session?: SignInResult }> {
    const recoveryCodes = await this.requireMfa().confirmEnrolment(principal.tenant.id, principal.user.id, code, this.mfaCtx(principal, meta));
    if (principal.stage !== 'enrol') return { recoveryCodes };
    await this.repo.deleteSession(principal.tenant.id, principal.user.id, principal.sessionId);
    const policy = await this.repo.policy(principal.tenant.id);
    const session = await this.openSession(principal.tenant, principal.user, policy, 'full', meta, this.nowMs());
    this.record({
      type: 'web.signin',
      component: 'web',
      correlationId: meta.correlationId,
      fields: { clientAddress: meta.clientAddress, tenant: principal.tenant.slug, user: principal.user.username, result: 'success', method: 'password+totp-enrolment' },
    });
    return { recoveryCodes, session };
  }

  /** Whether the account is locked for sign-ins from `address` (lockoutScope 'address'). */
  private async addressLocked(tenantId: string, userId: string, address: string, now: number): Promise<boolean> {
    const until = await this.repo.addressLockedUntil(tenantId, userId, address);
    return until !== null && Date.parse(until) > now;
  }

  /**
   * Counts a wrong password (at sign-in, or as the current password of a change) and
   * locks when the policy's threshold is reached: the account (`lockoutScope: 'account'`),
   * or the account for the request's source address only (`'address'`). Returns whether
   * it is now locked. The `web.lockout` record says which `scope`.
   */
  private async countFailure(tenant: Tenant, user: PlatformUser, policy: IdentityPolicy, now: number, meta: RequestMeta): Promise<boolean> {
    const cutoff = this.iso(now - policy.failureWindowSeconds * 1000);
    const scope = policy.lockoutScope;
    const address = addressKey(meta.clientAddress);
    const count =
      scope === 'address'
        ? await this.repo.recordAddressFailure(tenant.id, user.id, address, this.iso(now), cutoff)
        : await this.repo.recordFailure(tenant.id, user.id, this.iso(now), cutoff);
    if (count < policy.maxFailedAttempts) return false;
    const until = this.iso(now + policy.lockoutSeconds * 1000);
    const locked =
      scope === 'address'
        ? await this.repo.lockAddress(tenant.id, user.id, address, this.iso(now), until)
        : await this.repo.lock(tenant.id, user.id, this.iso(now), until);
    if (locked) {
      this.record({
        type: 'web.lockout',
        component: 'web',
        correlationId: meta.correlationId,
        fields: {
          clientAddress: meta.clientAddress,
          tenant: tenant.slug,
          user: user.username,
          failures: count,
          lockedUntil: until,
          scope,
          ...(scope === 'address' ? { lockedAddress: address } : {}),
        },
      });
    }
    return true;
  }

  private passwordExpired(user: PlatformUser, policy: IdentityPolicy, now: number): boolean {
    if (policy.passwordExpiryDays <= 0 || user.passwordChangedAt === null) return false;
    return now - Date.parse(user.passwordChangedAt) >= policy.passwordExpiryDays * 86_400_000;
  }

  private async endByToken(token: string, meta: RequestMeta, reason: string): Promise<void> {
    const row = await this.repo.sessionByTokenHash(sha256(token));
    if (!row) return;
    await this.repo.deleteSession(row.tenant_id, row.user_id, row.id);
    const tenant = await this.repo.tenantById(row.tenant_id);
    const user = await this.repo.userById(row.tenant_id, row.user_id);
    this.record({
      type: 'web.signout',
      component: 'web',
      correlationId: meta.correlationId,
      fields: { clientAddress: meta.clientAddress, tenant: tenant?.slug ?? row.tenant_id, user: user?.username ?? row.user_id, reason, sessionId: row.id },
    });
  }

  /**
   * Resolves a session token to its principal, enforcing the absolute and idle timeouts
   * (an ended session is deleted and audited), and records the use.
   * @throws TachyonError `AUTH_FAILED` for a missing, unknown or ended session.
   */
  async authenticate(token: string | undefined, meta: RequestMeta): Promise<Principal> {
    if (token === undefined || token.length === 0 || token.length > 128) throw notSignedIn('no-session');
    const row = await this.repo.sessionByTokenHash(sha256(token));
    if (!row) throw notSignedIn('unknown-session');
    const now = this.nowMs();
    const policy = await this.repo.policy(row.tenant_id);
    let ended: string | undefined;
    if (now >= Date.parse(row.expires_at)) ended = 'expired';
    else if (now - Date.parse(row.last_seen_at) >= policy.sessionIdleSeconds * 1000) ended = 'idle';
    const tenant = await this.repo.tenantById(row.tenant_id);
    const user = await this.repo.userById(row.tenant_id, row.user_id);
    if (ended === undefined && (!tenant || !user || user.status !== 'active')) ended = 'account-disabled';
    if (ended !== undefined || !tenant || !user) {
      await this.endByToken(token, meta, ended ?? 'account-disabled');
      throw notSignedIn(ended ?? 'account-disabled');
    }
    await this.repo.touchSession(row.tenant_id, row.id, this.iso(now));
    return {
      tenant,
      user,
      sessionId: row.id,
      passwordChangeRequired: user.mustChangePassword || this.passwordExpired(user, policy, now),
      stage: row.stage === 'mfa' || row.stage === 'enrol' ? row.stage : 'full',
      authenticatedAt: row.authenticated_at ?? row.created_at,
    };
  }

  // -- re-authentication ---------------------------------------------------------------------

  /**
   * Refuses (`REAUTH_REQUIRED`) a session whose last proof of identity is older than the
   * tenant's `reauthWindowSeconds`. `when: 'when-enrolled'` asks only of a user who has a
   * second factor (re-enrolling replaces it). API-token callers pass: the token is
   * presented with every request, was created after a re-authentication, and its `admin`
   * scope was chosen then. A pending session (stage `mfa`/`enrol`) has just proved its
   * password and passes too (the stage rules limit it to the second-factor routes).
   */
  async requireRecentProof(principal: Principal, when: 'always' | 'when-enrolled'): Promise<void> {
    if (principal.apiToken !== undefined || principal.stage !== 'full') return;
    if (when === 'when-enrolled' && !(this.mfa && (await this.mfa.isEnrolled(principal.tenant.id, principal.user.id)))) return;
    const policy = await this.repo.policy(principal.tenant.id);
    const at = principal.authenticatedAt === undefined ? Number.NaN : Date.parse(principal.authenticatedAt);
    const age = this.nowMs() - at;
    if (Number.isFinite(age) && age < policy.reauthWindowSeconds * 1000) return;
    throw new TachyonError('REAUTH_REQUIRED', 'the session’s last proof of identity is older than the re-authentication window', {
      publicMessage: 'Confirm your identity again (re-authenticate) to do this.',
      details: { reason: 'reauth-required' },
    });
  }

  /**
   * How the caller re-authenticates: `password` (+ `totp` when a second factor is
   * enrolled), or `sso` for an account without a local password (sign in again through
   * the organisation's identity provider: a new session, with a fresh proof).
   */
  async reauthMethod(principal: Principal): Promise<'password' | 'password+totp' | 'sso'> {
    const creds = await this.repo.credentials(principal.tenant.id, principal.user.username);
    if (!creds || creds.passwordHash === null) return 'sso';
    return this.mfa && (await this.mfa.isEnrolled(principal.tenant.id, principal.user.id)) ? 'password+totp' : 'password';
  }

  /**
   * Re-authentication in a signed-in session: the current password, and a TOTP `code`
   * (or a `recoveryCode`) when the user has a second factor. Success records the proof in
   * the session (its token and CSRF token stay). A wrong password counts against the
   * account (or the account from this address) exactly like a failed sign-in, and at the
   * policy's threshold locks it and ends its sessions; every attempt is audited as
   * `web.signin` with `method: 'reauth'`. An account without a local password (SSO only)
   * gets `CONFLICT`: it re-authenticates by signing in through SSO again.
   * @throws `AUTH_FAILED` (wrong password, locked), `MFA_INVALID`/`MFA_LOCKED`, `CONFLICT`.
   */
  async reauthenticate(principal: Principal, input: { password: unknown; code?: string | undefined; recoveryCode?: string | undefined }, meta: RequestMeta): Promise<{ authenticatedAt: string }> {
    const password = input.password;
    if (typeof password !== 'string' || password.length === 0 || password.length > MAX_PASSWORD_LENGTH * 4) {
      throw new TachyonError('USAGE', 'reauth without a usable password', { publicMessage: 'Invalid request: password is required.' });
    }
    const { tenant, user } = principal;
    const creds = await this.repo.credentials(tenant.id, user.username);
    const ok = await this.hasher.verify(creds?.passwordHash ?? (await this.dummy()), password);
    const now = this.nowMs();
    const fail = (reason: string, method = 'reauth'): never => {
      this.recordSigninFailure(meta, tenant.slug, user.username, method, reason);
      throw new TachyonError('AUTH_FAILED', `re-authentication refused: ${reason}`, {
        publicMessage: 'Re-authentication failed: the password is wrong, or the account is locked.',
        details: { reason, audited: true },
      });
    };
    if (!creds) return fail('user-vanished');
    if (creds.passwordHash === null) {
      this.recordSigninFailure(meta, tenant.slug, user.username, 'reauth', 'no-local-password');
      throw new TachyonError('CONFLICT', 'reauth by password of an SSO-only account', {
        publicMessage: 'This account signs in through single sign-on: sign in again through your organisation to confirm your identity.',
        details: { reason: 'no-local-password', audited: true },
      });
    }
    const policy = await this.repo.policy(tenant.id);
    if (user.lockedUntil !== null && Date.parse(user.lockedUntil) > now) return fail('locked');
    const byAddress = policy.lockoutScope === 'address';
    if (byAddress && (await this.addressLocked(tenant.id, user.id, addressKey(meta.clientAddress), now))) return fail('address-locked');
    if (!ok) {
      // a stolen session must not become a way around the lockout: wrong passwords count
      const locked = await this.countFailure(tenant, user, policy, now, meta);
      if (locked) await this.repo.deleteUserSessions(tenant.id, user.id);
      return fail(locked ? 'bad-credentials-locked' : 'bad-credentials');
    }
    let method = 'reauth';
    if (this.mfa && (await this.mfa.isEnrolled(tenant.id, user.id))) {
      if ((input.code === undefined) === (input.recoveryCode === undefined)) {
        throw new TachyonError('USAGE', 'reauth without exactly one of code, recoveryCode', {
          publicMessage: 'Invalid request: send the code from your authenticator app (code) or a recovery code (recoveryCode) with the password.',
          details: { field: 'code', reason: 'code-missing' },
        });
      }
      method = input.code !== undefined ? 'reauth+totp' : 'reauth+recovery';
      await this.verifySecondFactor(this.mfa, principal, input, this.mfaCtx(principal, meta), method, meta);
    }
    await this.repo.clearFailures(tenant.id, user.id);
    const at = this.iso(now);
    await this.repo.markSessionAuthenticated(tenant.id, principal.sessionId, at);
    this.record({
      type: 'web.signin',
      component: 'web',
      correlationId: meta.correlationId,
      fields: { clientAddress: meta.clientAddress, tenant: tenant.slug, user: user.username, result: 'success', method },
    });
    return { authenticatedAt: at };
  }

  /**
   * The single sign-on methods a tenant offers on its sign-in page (`oidc`, `saml`): the
   * same answer shape for a tenant without SSO and for no such tenant (an empty list), so
   * it tells nothing about which tenants exist.
   */
  async ssoMethods(slug: unknown): Promise<SsoProtocol[]> {
    if (!this.sso || !this.ssoConfigs) return [];
    const tenant = typeof slug === 'string' && TENANT_SLUG_PATTERN.test(slug) ? await this.repo.tenantBySlug(slug) : undefined;
    if (!tenant) return [];
    const view = await this.ssoConfigs.view(tenant.id);
    const out: SsoProtocol[] = [];
    if (view?.oidc) out.push('oidc');
    if (view?.saml) out.push('saml');
    return out;
  }

  /** The CSRF token of the session `token`. */
  csrfFor(token: string): string {
    return csrfTokenFor(token);
  }

  /** Whether `presented` is the CSRF token of the session `token` (constant time). */
  checkCsrf(token: string, presented: string | undefined): boolean {
    if (presented === undefined) return false;
    const want = Buffer.from(csrfTokenFor(token));
    const got = Buffer.from(presented);
    return got.length === want.length && timingSafeEqual(got, want);
  }

  async signOut(principal: Principal, meta: RequestMeta): Promise<void> {
    await this.repo.deleteSession(principal.tenant.id, principal.user.id, principal.sessionId);
    this.record({
      type: 'web.signout',
      component: 'web',
      correlationId: meta.correlationId,
      fields: { clientAddress: meta.clientAddress, tenant: principal.tenant.slug, user: principal.user.username, reason: 'signout', sessionId: principal.sessionId },
    });
  }

  listOwnSessions(principal: Principal): Promise<SessionInfo[]> {
    return this.repo.listSessions(principal.tenant.id, principal.user.id);
  }

  /** Ends one of the caller's own sessions. @throws `NOT_FOUND` for any other id (another user's, another tenant's, unknown). */
  async endOwnSession(principal: Principal, sessionId: string, meta: RequestMeta): Promise<void> {
    const done = await this.repo.deleteSession(principal.tenant.id, principal.user.id, sessionId);
    if (!done) throw new TachyonError('NOT_FOUND', 'no such session of this user', { publicMessage: 'No such session.' });
    this.record({
      type: 'web.signout',
      component: 'web',
      correlationId: meta.correlationId,
      fields: { clientAddress: meta.clientAddress, tenant: principal.tenant.slug, user: principal.user.username, reason: 'ended-by-user', sessionId },
    });
  }

  // -- passwords -----------------------------------------------------------------------------

  /**
   * Self-service change: requires the current password; the new one must pass the
   * policy. Ends the user's other sessions.
   * @throws `AUTH_FAILED` for a wrong current password (counted like a failed sign-in: at
   *   the policy's threshold the account is locked and its sessions end), `USAGE` for a refused new one.
   */
  async changeOwnPassword(principal: Principal, current: unknown, next: unknown, meta: RequestMeta): Promise<void> {
    if (typeof current !== 'string' || current.length > MAX_PASSWORD_LENGTH * 4) {
      throw new TachyonError('USAGE', 'no current password', { publicMessage: 'Invalid request: currentPassword and newPassword are required.' });
    }
    const creds = await this.repo.credentials(principal.tenant.id, principal.user.username);
    if (!creds) throw notSignedIn('user-vanished');
    const ok = await this.hasher.verify(creds.passwordHash ?? (await this.dummy()), current);
    if (!ok || creds.passwordHash === null) {
      // a stolen session must not become a way around the lockout: wrong current passwords count
      const now = this.nowMs();
      const locked = await this.countFailure(principal.tenant, principal.user, await this.repo.policy(principal.tenant.id), now, meta);
      if (locked) await this.repo.deleteUserSessions(principal.tenant.id, principal.user.id);
      this.record({
        type: 'web.change',
        component: 'web',
        severity: 'warning',
        correlationId: meta.correlationId,
        fields: { clientAddress: meta.clientAddress, tenant: principal.tenant.slug, actor: principal.user.username, action: 'user.self-change.refused', target: principal.user.id },
      });
      throw new TachyonError('AUTH_FAILED', 'wrong current password', { publicMessage: 'The current password is wrong.', details: { audited: true } });
    }
    const policy = await this.repo.policy(principal.tenant.id);
    const pw = checkNewPassword(next, policy, this.common, principal.user.username);
    if (pw === current) {
      throw new TachyonError('USAGE', 'new password equals the current one', {
        publicMessage: 'The new password must differ from the current one.',
        details: { field: 'newPassword', reason: 'unchanged' },
      });
    }
    await this.repo.setPassword(principal.tenant.id, principal.user.id, await this.hasher.hash(pw), false, this.iso());
    const ended = await this.repo.deleteUserSessions(principal.tenant.id, principal.user.id, principal.sessionId);
    this.changed(principal, meta, 'user.self-change', principal.user.id, ['credential', ...(ended > 0 ? ['other-sessions-ended'] : [])]);
  }

  /** An administrator sets a temporary password: the user must change it at next sign-in; their sessions end. */
  async adminResetPassword(principal: Principal, userId: string, next: unknown, meta: RequestMeta): Promise<PlatformUser> {
    const target = await this.repo.userById(principal.tenant.id, userId);
    if (!target) throw noSuchUser();
    const policy = await this.repo.policy(principal.tenant.id);
    const pw = checkNewPassword(next, policy, this.common, target.username);
    await this.repo.setPassword(principal.tenant.id, userId, await this.hasher.hash(pw), true, this.iso());
    await this.repo.deleteUserSessions(principal.tenant.id, userId, userId === principal.user.id ? principal.sessionId : undefined);
    this.changed(principal, meta, 'user.reset', userId, ['credential', 'change-required']);
    return (await this.repo.userById(principal.tenant.id, userId)) ?? target;
  }

  // -- administration ----------------------------------------------------------------------

  private changed(principal: Principal, meta: RequestMeta, action: string, target: string, changed?: readonly string[]): void {
    this.record({
      type: 'web.change',
      component: 'web',
      correlationId: meta.correlationId,
      fields: {
        clientAddress: meta.clientAddress,
        tenant: principal.tenant.slug,
        actor: principal.user.username,
        action,
        target,
        ...(changed ? { changed } : {}),
      },
    });
  }

  /** Records an administrator's or auditor's action taken outside this service (audit export, allow-list, blocks: admin-routes.ts). */
  recordAdminAction(principal: Principal, meta: RequestMeta, action: string, target: string, changed?: readonly string[]): void {
    this.changed(principal, meta, action, target, changed);
  }

  // -- groups (tenant administrators change them; auditors read) -------------------------------

  /** The tenant's groups with their members' user ids. */
  async listGroups(principal: Principal): Promise<GroupView[]> {
    const tenantId = principal.tenant.id;
    const [groups, members] = await Promise.all([this.repo.listGroups(tenantId), this.repo.allGroupMembers(tenantId)]);
    return groups.map((g) => ({ id: g.id, name: g.name, createdAt: g.createdAt, members: members.get(g.id) ?? [] }));
  }

  /** @throws `USAGE` for a bad name, `CONFLICT` if the tenant has a group of that name. */
  async createGroup(principal: Principal, name: string, meta: RequestMeta): Promise<GroupView> {
    const clean = validateGroupName(name);
    const tenantId = principal.tenant.id;
    if ((await this.repo.listGroups(tenantId)).some((g) => g.name === clean)) {
      throw new TachyonError('CONFLICT', 'group name taken', { publicMessage: 'A group with this name exists.' });
    }
    const g = await this.repo.createGroup(tenantId, clean, this.iso());
    this.changed(principal, meta, 'group.create', g.id, ['name']);
    return { id: g.id, name: g.name, createdAt: g.createdAt, members: [] };
  }

  async deleteGroup(principal: Principal, groupId: string, meta: RequestMeta): Promise<void> {
    await this.repo.deleteGroup(principal.tenant.id, groupId);
    this.changed(principal, meta, 'group.delete', groupId);
  }

  /** @throws `NOT_FOUND` if the group or the user is not the tenant's, `CONFLICT` if already a member. */
  async addGroupMember(principal: Principal, groupId: string, userId: string, meta: RequestMeta): Promise<void> {
    const tenantId = principal.tenant.id;
    if ((await this.repo.groupMembers(tenantId, groupId)).includes(userId)) {
      throw new TachyonError('CONFLICT', 'already a member', { publicMessage: 'The user is already in this group.' });
    }
    await this.repo.addGroupMember(tenantId, groupId, userId);
    this.changed(principal, meta, 'group.member.add', groupId, [`user:${userId}`]);
  }

  async removeGroupMember(principal: Principal, groupId: string, userId: string, meta: RequestMeta): Promise<void> {
    await this.repo.removeGroupMember(principal.tenant.id, groupId, userId);
    this.changed(principal, meta, 'group.member.remove', groupId, [`user:${userId}`]);
  }

  listUsers(principal: Principal): Promise<PlatformUser[]> {
    return this.repo.listUsers(principal.tenant.id);
  }

  /** An administrator creates a user with a temporary password (changed at first sign-in). */
  async createUser(principal: Principal, input: NewUserInput, meta: RequestMeta): Promise<PlatformUser> {
    if (input.password === undefined) {
      throw new TachyonError('USAGE', 'no initial password', { publicMessage: 'Invalid request: password is required.', details: { field: 'password' } });
    }
    const user = await this.provisionUser(principal.tenant.id, { ...input, mustChangePassword: true });
    this.changed(principal, meta, 'user.create', user.id, ['username', 'roles', ...(user.displayName !== '' ? ['displayName'] : [])]);
    return user;
  }

  /**
   * Changes a user's display name, status or roles. An administrator cannot disable
   * themself or drop their own tenant_admin role (`CONFLICT`), so a tenant keeps one.
   * Disabling ends the user's sessions.
   */
  async updateUser(principal: Principal, userId: string, input: UserPatchInput, meta: RequestMeta): Promise<PlatformUser> {
    const patch: { displayName?: string; status?: UserStatus; roles?: Role[] } = {};
    if (input.displayName !== undefined) patch.displayName = validateDisplayName(input.displayName);
    if (input.status !== undefined) {
      if (input.status !== 'active' && input.status !== 'disabled') {
        throw new TachyonError('USAGE', 'bad status', { publicMessage: 'Invalid status: active or disabled.', details: { field: 'status' } });
      }
      patch.status = input.status;
    }
    if (input.roles !== undefined) patch.roles = validateRoles(input.roles);
    if (Object.keys(patch).length === 0) throw new TachyonError('USAGE', 'empty patch', { publicMessage: 'Invalid request: nothing to change.' });
    if (userId === principal.user.id && (patch.status === 'disabled' || (patch.roles && !patch.roles.includes('tenant_admin')))) {
      throw new TachyonError('CONFLICT', 'administrator would lock themself out', {
        publicMessage: 'You cannot disable yourself or remove your own administrator role.',
      });
    }
    const user = await this.repo.updateUser(principal.tenant.id, userId, patch, this.iso());
    if (patch.status === 'disabled') await this.repo.deleteUserSessions(principal.tenant.id, userId);
    this.changed(principal, meta, patch.roles ? 'user.roles' : 'user.update', userId, Object.keys(patch));
    return user;
  }

  policy(principal: Principal): Promise<IdentityPolicy> {
    return this.repo.policy(principal.tenant.id);
  }

  async setPolicy(principal: Principal, update: unknown, meta: RequestMeta): Promise<IdentityPolicy> {
    const base = await this.repo.policy(principal.tenant.id);
    const next = applyPolicyUpdate(base, update);
    if (next.requireTotp && !this.mfa) this.requireMfa();
    await this.repo.setPolicy(principal.tenant.id, next, this.iso());
    const changed = (Object.keys(next) as (keyof IdentityPolicy)[]).filter((k) => next[k] !== base[k]);
    this.changed(principal, meta, 'policy.update', principal.tenant.id, changed);
    return next;
  }
  // -- single sign-on configuration (tenant administrators) ---------------------------------

  /** Whether the tenant's SSO configuration refuses a password sign-in to someone holding `roles` (`ssoRequiredForAdmins`). */
  private async ssoRequiredFor(tenantId: string, roles: readonly string[]): Promise<boolean> {
    if (this.sso) return this.sso.localSignInRefused(tenantId, roles);
    if (!this.ssoConfigs || !roles.includes('tenant_admin')) return false;
    return (await this.ssoConfigs.get(tenantId))?.ssoRequiredForAdmins ?? false;
  }

  private requireSsoConfigs(): SsoConfigStore {
    if (!this.ssoConfigs) {
      throw new TachyonError('CONFLICT', 'no SSO configuration store', { publicMessage: 'Single sign-on cannot be configured on this server.' });
    }
    return this.ssoConfigs;
  }

  /** The caller's tenant's SSO configuration, the OIDC client secret replaced by `clientSecretSet` (null when none). */
  async ssoConfig(principal: Principal): Promise<SsoConfigView | null> {
    return (await this.requireSsoConfigs().view(principal.tenant.id)) ?? null;
  }

  /**
   * Replaces the caller's tenant's SSO configuration (see SsoConfigStore.put: an OIDC
   * section without `clientSecret` keeps the stored one). Audited as `sso.update` with the
   * names of the changed sections, never a value.
   */
  async setSsoConfig(principal: Principal, input: unknown, meta: RequestMeta): Promise<SsoConfigView> {
    const store = this.requireSsoConfigs();
    const { changed } = await store.put(principal.tenant.id, input).catch((err: unknown) => {
      // an administrator's invalid configuration is a bad request (400) naming the fields, never their values
      if (!(err instanceof TachyonError) || err.code !== 'CONFIG') throw err;
      const fields = Array.isArray(err.details?.['fields']) ? (err.details['fields'] as unknown[]).map(String) : [];
      throw new TachyonError('USAGE', err.message, {
        cause: err,
        publicMessage: `Invalid single sign-on configuration: ${fields.join(', ').slice(0, 200) || 'body'}.`,
        details: { fields },
      });
    });
    this.changed(principal, meta, 'sso.update', principal.tenant.id, changed);
    return (await store.view(principal.tenant.id)) as SsoConfigView;
  }

  /** Removes the caller's tenant's SSO configuration (idempotent; audited as `sso.clear` when there was one). */
  async clearSsoConfig(principal: Principal, meta: RequestMeta): Promise<void> {
    if (await this.requireSsoConfigs().delete(principal.tenant.id)) this.changed(principal, meta, 'sso.clear', principal.tenant.id);
  }
}
