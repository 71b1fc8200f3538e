/** What a verified single sign-on yields, and the refusal every SSO failure becomes. */
import { TachyonError } from '../../core/errors.js';
import type { AuditSink } from '../../audit/event.js';
import type { SsoRole } from './config.js';

export type SsoProtocol = 'oidc' | 'saml';

/**
 * A verified identity. The sign-in routes find or create the user by
 * (`tenantId`, `issuer`, `subject`) — or by `email` only when `emailVerified` — give it
 * `roles`, and create the session; the SSO services create no session themselves.
 */
export interface SsoIdentity {
  tenantId: string;
  protocol: SsoProtocol;
  /** The OIDC issuer or the SAML IdP entity id. */
  issuer: string;
  /** The stable subject at the provider (OIDC `sub`, SAML NameID). */
  subject: string;
  email?: string;
  /** True only when the provider asserted it (OIDC `email_verified: true`; SAML: the IdP is trusted for its attributes). */
  emailVerified: boolean;
  name?: string;
  /** Mapped roles, least privileged first; never empty. */
  roles: SsoRole[];
}

/** Where a sign-in came from (for the audit log only). */
export interface SsoRequestContext {
  clientAddress?: string;
}

/**
 * Stable reasons of `SSO_FAILED` (in `details.reason` and the `sso.failure` audit
 * record; never shown to the browser, which sees only "Single sign-on failed.").
 */
export type SsoFailureReason =
  | 'not-configured'
  | 'bad-request'
  | 'state-missing'
  | 'state-unknown'
  | 'redirect-mismatch'
  | 'config-changed'
  | 'provider-error'
  | 'provider-unreachable'
  | 'token-refused'
  | 'nonce-mismatch'
  | 'audience-mismatch'
  | 'issuer-mismatch'
  | 'token-expired'
  | 'token-invalid'
  | 'signature-invalid'
  | 'subject-missing'
  | 'email-unverified'
  | 'email-missing'
  | 'email-domain'
  | 'role-unmapped'
  | 'request-unknown'
  | 'destination-mismatch'
  | 'assertion-expired'
  | 'assertion-replayed'
  | 'response-invalid';

export function ssoFailure(protocol: SsoProtocol, reason: SsoFailureReason, tenantId?: string, upstream?: string): TachyonError {
  return new TachyonError('SSO_FAILED', `${protocol.toUpperCase()} sign-in refused: ${reason}`, {
    details: { protocol, reason, ...(tenantId === undefined ? {} : { tenantId }), ...(upstream === undefined ? {} : { upstream }) },
  });
}

/** Records a successful SSO sign-in (`sso.success`) and returns the identity. */
export function auditSuccess(audit: AuditSink, identity: SsoIdentity, ctx: SsoRequestContext): SsoIdentity {
  audit.record({
    type: 'sso.success',
    component: 'platform.sso',
    fields: {
      tenantId: identity.tenantId,
      protocol: identity.protocol,
      subject: identity.subject,
      ...(identity.email === undefined ? {} : { email: identity.email }),
      roles: identity.roles,
      ...(ctx.clientAddress === undefined ? {} : { clientAddress: ctx.clientAddress }),
    },
  });
  return identity;
}

/**
 * The error an SSO sign-in answers with: an `SSO_FAILED` gains the tenant when it lacks
 * one and is audited; another TachyonError passes unchanged; anything else is translated
 * by the protocol's `translate` and audited.
 */
export function ssoRefusal(
  audit: AuditSink,
  protocol: SsoProtocol,
  err: unknown,
  tenantId: string | undefined,
  ctx: SsoRequestContext,
  subject: string | undefined,
  translate: (err: unknown, tenantId: string | undefined) => TachyonError,
): TachyonError {
  if (err instanceof TachyonError && err.code === 'SSO_FAILED') {
    const d = err.details ?? {};
    const e =
      d.tenantId === undefined && tenantId !== undefined
        ? ssoFailure(protocol, d.reason as SsoFailureReason, tenantId, typeof d.upstream === 'string' ? d.upstream : undefined)
        : err;
    return auditFailure(audit, e, ctx, subject);
  }
  if (err instanceof TachyonError) return err;
  return auditFailure(audit, translate(err, tenantId), ctx, subject);
}

/** Records the refusal (best effort: a failing sink must not turn a refusal into something else) and returns the error to throw. */
export function auditFailure(audit: AuditSink, err: TachyonError, ctx: SsoRequestContext, subject?: string): TachyonError {
  const d = err.details ?? {};
  try {
    audit.record({
      type: 'sso.failure',
      component: 'platform.sso',
      fields: {
        protocol: d.protocol === 'saml' ? 'saml' : 'oidc',
        reason: typeof d.reason === 'string' ? d.reason : 'unknown',
        ...(typeof d.tenantId === 'string' ? { tenantId: d.tenantId } : {}),
        ...(subject === undefined ? {} : { subject }),
        ...(ctx.clientAddress === undefined ? {} : { clientAddress: ctx.clientAddress }),
      },
    });
  } catch {
    // the refusal stands; the sink reports its own failure
  }
  return err;
}
