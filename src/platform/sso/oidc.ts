/**
 * OpenID Connect sign-in (authorization code flow with PKCE, state and nonce) through
 * openid-client v6. `begin` returns the provider's authorization URL and stores the
 * transaction server-side (single use, expiring); `complete` takes the callback URL,
 * consumes the transaction, redeems the code, verifies the ID token (issuer, audience,
 * nonce, expiry, signature) and maps the claims to an {@link SsoIdentity}.
 */
import * as client from 'openid-client';
import type { Clock } from '../../core/clock.js';
import { systemClock } from '../../core/clock.js';
import { TachyonError } from '../../core/errors.js';
import type { AuditSink } from '../../audit/event.js';
import { emailDomainAllowed, mapRoles, type OidcConfig, type SsoConfigSource } from './config.js';
import { auditSuccess, ssoFailure, ssoRefusal, type SsoFailureReason, type SsoIdentity, type SsoRequestContext } from './identity.js';
import type { SsoStore } from './store.js';

/**
 * How a tenant's OIDC configuration becomes an openid-client `Configuration` (discovery).
 * The real adapter is {@link discoverOidcProvider}; tests supply their own (for example
 * one that allows plain HTTP to a provider on 127.0.0.1). Not a user setting.
 */
export type OidcDiscover = (config: OidcConfig) => Promise<client.Configuration>;

/** Discovery over HTTPS only, client_secret_basic, ID token signatures checked against the provider's JWKS. */
export const discoverOidcProvider: OidcDiscover = async (c) => {
  const cfg = await client.discovery(new URL(c.issuer), c.clientId, undefined, client.ClientSecretBasic(c.clientSecret), { timeout: 10 });
  client.enableNonRepudiationChecks(cfg);
  return cfg;
};

/** What `beginOidc` returns: where to send the browser. */
export interface OidcBegin {
  redirectUrl: string;
  /** The transaction's state (also in `redirectUrl`); the routes may bind it to the pre-sign-in cookie. */
  state: string;
  /** When the transaction expires (ms since the epoch). */
  expiresAt: number;
}

interface OidcTransaction {
  tenantId: string;
  issuer: string;
  clientId: string;
  nonce: string;
  verifier: string;
}

export interface OidcServiceOptions {
  configs: SsoConfigSource;
  store: SsoStore;
  audit: AuditSink;
  discover?: OidcDiscover;
  clock?: Clock;
  /** How long a begun sign-in stays valid (default 10 minutes). */
  transactionTtlMs?: number;
  /** How long a discovered provider configuration is reused (default 10 minutes). */
  discoveryTtlMs?: number;
}

const STATE_RE = /^[A-Za-z0-9_-]{16,128}$/;

export class OidcService {
  private readonly configs: SsoConfigSource;
  private readonly store: SsoStore;
  private readonly audit: AuditSink;
  private readonly discover: OidcDiscover;
  private readonly clock: Clock;
  private readonly ttl: number;
  private readonly discoveryTtl: number;
  private readonly discovered = new Map<string, { source: OidcConfig; at: number; cfg: Promise<client.Configuration> }>();

  constructor(options: OidcServiceOptions) {
    this.configs = options.configs;
    this.store = options.store;
    this.audit = options.audit;
    this.discover = options.discover ?? discoverOidcProvider;
    this.clock = options.clock ?? systemClock;
    this.ttl = options.transactionTtlMs ?? 10 * 60_000;
    this.discoveryTtl = options.discoveryTtlMs ?? 10 * 60_000;
  }

  /** Starts a sign-in for `tenantId`: the URL to redirect the browser to. `SSO_FAILED` (not-configured, provider-unreachable). */
  async begin(tenantId: string, ctx: SsoRequestContext = {}): Promise<OidcBegin> {
    try {
      const c = await this.tenantConfig(tenantId);
      const cfg = await this.configuration(tenantId, c);
      const state = client.randomState();
      const nonce = client.randomNonce();
      const verifier = client.randomPKCECodeVerifier();
      const challenge = await client.calculatePKCECodeChallenge(verifier);
      const expiresAt = this.clock.now() + this.ttl;
      const tx: OidcTransaction = { tenantId, issuer: c.issuer, clientId: c.clientId, nonce, verifier };
      if (!(await this.store.put(`oidc:${state}`, JSON.stringify(tx), expiresAt))) {
        throw new TachyonError('INTERNAL', 'OIDC state collision');
      }
      const url = client.buildAuthorizationUrl(cfg, {
        redirect_uri: c.redirectUri,
        scope: c.scopes.join(' '),
        response_type: 'code',
        state,
        nonce,
        code_challenge: challenge,
        code_challenge_method: 'S256',
      });
      this.audit.record({
        type: 'sso.start',
        component: 'platform.sso',
        fields: { tenantId, protocol: 'oidc', ...(ctx.clientAddress === undefined ? {} : { clientAddress: ctx.clientAddress }) },
      });
      return { redirectUrl: url.href, state, expiresAt };
    } catch (err) {
      throw this.refuse(err, tenantId, ctx);
    }
  }

  /**
   * Completes a sign-in from the full callback URL the provider redirected the browser to.
   * Every refusal is `SSO_FAILED` with `details.reason` and an `sso.failure` audit record.
   */
  async complete(callbackUrl: string | URL, ctx: SsoRequestContext = {}): Promise<SsoIdentity> {
    let tenantId: string | undefined;
    let subject: string | undefined;
    try {
      let url: URL;
      try {
        url = new URL(callbackUrl);
      } catch {
        throw ssoFailure('oidc', 'bad-request');
      }
      const state = url.searchParams.get('state');
      if (state === null || state === '') throw ssoFailure('oidc', 'state-missing');
      if (!STATE_RE.test(state)) throw ssoFailure('oidc', 'state-unknown');
      const raw = await this.store.take(`oidc:${state}`);
      if (raw === undefined) throw ssoFailure('oidc', 'state-unknown');
      const tx = JSON.parse(raw) as OidcTransaction;
      tenantId = tx.tenantId;
      const c = await this.tenantConfig(tx.tenantId);
      if (c.issuer !== tx.issuer || c.clientId !== tx.clientId) throw ssoFailure('oidc', 'config-changed', tenantId);
      const expected = new URL(c.redirectUri);
      if (url.origin !== expected.origin || url.pathname !== expected.pathname) throw ssoFailure('oidc', 'redirect-mismatch', tenantId);
      // the redirect_uri sent to the token endpoint is the configured one, with the provider's parameters
      const current = new URL(expected.href);
      current.search = url.search;
      current.hash = '';
      const cfg = await this.configuration(tx.tenantId, c);
      let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
      try {
        tokens = await client.authorizationCodeGrant(cfg, current, {
          pkceCodeVerifier: tx.verifier,
          expectedState: state,
          expectedNonce: tx.nonce,
          idTokenExpected: true,
        });
      } catch (err) {
        throw translateOidcError(err, tenantId);
      }
      const idClaims = tokens.claims();
      if (idClaims === undefined || typeof idClaims.sub !== 'string' || idClaims.sub === '') throw ssoFailure('oidc', 'subject-missing', tenantId);
      subject = idClaims.sub;
      let claims: Record<string, unknown> = { ...idClaims };
      if (cfg.serverMetadata().userinfo_endpoint !== undefined && tokens.access_token) {
        try {
          const info = await client.fetchUserInfo(cfg, tokens.access_token, idClaims.sub);
          claims = { ...info, ...idClaims };
        } catch (err) {
          throw translateOidcError(err, tenantId);
        }
      }
      const identity = claimsToIdentity(tx.tenantId, c, claims);
      return auditSuccess(this.audit, identity, ctx);
    } catch (err) {
      throw this.refuse(err, tenantId, ctx, subject);
    }
  }

  private refuse(err: unknown, tenantId: string | undefined, ctx: SsoRequestContext, subject?: string): TachyonError {
    return ssoRefusal(this.audit, 'oidc', err, tenantId, ctx, subject, translateOidcError);
  }

  private async tenantConfig(tenantId: string): Promise<OidcConfig> {
    const t = await this.configs.get(tenantId);
    if (t?.oidc === undefined) throw ssoFailure('oidc', 'not-configured', tenantId);
    return t.oidc;
  }

  private configuration(tenantId: string, c: OidcConfig): Promise<client.Configuration> {
    const now = this.clock.now();
    const hit = this.discovered.get(tenantId);
    if (hit && hit.source === c && now - hit.at < this.discoveryTtl) return hit.cfg;
    const cfg = this.discover(c).catch((err: unknown) => {
      this.discovered.delete(tenantId);
      throw translateOidcError(err, tenantId, 'provider-unreachable');
    });
    this.discovered.set(tenantId, { source: c, at: now, cfg });
    return cfg;
  }
}

/** Turns verified claims into an identity, applying the e-mail and role rules of the tenant. */
export function claimsToIdentity(tenantId: string, c: OidcConfig, claims: Record<string, unknown>): SsoIdentity {
  const sub = claims.sub;
  if (typeof sub !== 'string' || sub === '') throw ssoFailure('oidc', 'subject-missing', tenantId);
  const email = typeof claims.email === 'string' && claims.email !== '' ? claims.email : undefined;
  const emailVerified = email !== undefined && claims.email_verified === true;
  if (email !== undefined && c.requireVerifiedEmail && !emailVerified) throw ssoFailure('oidc', 'email-unverified', tenantId);
  if (c.allowedEmailDomains.length > 0) {
    if (email === undefined || !emailVerified) throw ssoFailure('oidc', 'email-missing', tenantId);
    if (!emailDomainAllowed(email, c.allowedEmailDomains)) throw ssoFailure('oidc', 'email-domain', tenantId);
  }
  const roles = mapRoles(claims[c.roleClaim], c.roleMapping, c.unmapped);
  if (roles === undefined) throw ssoFailure('oidc', 'role-unmapped', tenantId);
  const name = typeof claims.name === 'string' && claims.name !== '' ? claims.name : undefined;
  return {
    tenantId,
    protocol: 'oidc',
    issuer: c.issuer,
    subject: sub,
    ...(email === undefined ? {} : { email }),
    emailVerified,
    ...(name === undefined ? {} : { name }),
    roles,
  };
}

/** Translates an openid-client / oauth4webapi error into `SSO_FAILED` with a stable reason (no token, nonce or claim value). */
export function translateOidcError(err: unknown, tenantId: string | undefined, fallback: SsoFailureReason = 'token-invalid'): TachyonError {
  if (err instanceof TachyonError) return err;
  type Nested = { code?: unknown; error?: unknown; name?: unknown; claim?: unknown; cause?: Nested };
  const e = err as Nested | undefined;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  let reason: SsoFailureReason = fallback;
  let upstream = code;
  if (err instanceof client.AuthorizationResponseError) {
    reason = 'provider-error';
    upstream = typeof e?.error === 'string' ? e.error.slice(0, 64) : code;
  } else if (err instanceof client.ResponseBodyError) {
    reason = 'token-refused';
    upstream = typeof e?.error === 'string' ? e.error.slice(0, 64) : code;
  } else if (code === 'OAUTH_JWT_CLAIM_COMPARISON_FAILED' || code === 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED') {
    // openid-client wraps oauth4webapi's OperationProcessingError, whose cause names the claim
    const claim = e?.cause?.claim ?? e?.cause?.cause?.claim;
    if (claim === 'nonce') reason = 'nonce-mismatch';
    else if (claim === 'aud' || claim === 'azp') reason = 'audience-mismatch';
    else if (claim === 'iss') reason = 'issuer-mismatch';
    else if (claim === 'state') reason = 'state-unknown';
    else reason = 'token-invalid';
    if (typeof claim === 'string') upstream = `${code}:${claim.slice(0, 32)}`;
  } else if (code === 'OAUTH_JWT_TIMESTAMP_CHECK_FAILED') {
    reason = 'token-expired';
  } else if (code === 'OAUTH_INVALID_RESPONSE' && /signature/i.test(`${(err as Error).message} ${(e?.cause as Error | undefined)?.message ?? ''}`)) {
    reason = 'signature-invalid';
  } else if (code === 'OAUTH_KEY_SELECTION_FAILED') {
    reason = 'signature-invalid';
  } else if (code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' || code === 'ERR_JWS_INVALID') {
    reason = 'signature-invalid';
  } else if (err instanceof TypeError || (typeof e?.name === 'string' && /Fetch|Abort|Timeout/.test(e.name))) {
    reason = fallback === 'token-invalid' ? 'provider-unreachable' : fallback;
  }
  return ssoFailure('oidc', reason, tenantId, upstream);
}
