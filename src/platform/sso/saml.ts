/**
 * SAML 2.0 sign-in (SP-initiated, HTTP-Redirect AuthnRequest, HTTP-POST Response) through
 * @node-saml/node-saml v5. `begin` returns the IdP URL with a fresh AuthnRequest whose id
 * is stored server-side under a random RelayState (single use, expiring); `complete`
 * consumes that transaction and accepts the Response only if: a signature by one of the
 * tenant's IdP certificates covers the response or the assertion; the issuer is the IdP;
 * the audience is our SP entity id; the Destination (when present) and the bearer
 * Recipient are our ACS URL; InResponseTo is the stored request id; NotBefore /
 * NotOnOrAfter hold within the configured skew; and the assertion id was not seen before
 * (remembered until the assertion expires). IdP-initiated responses are refused.
 */
import { randomBytes } from 'node:crypto';
import { SAML, ValidateInResponseTo, type CacheProvider, type Profile } from '@node-saml/node-saml';
import { parseDomFromString, xpath } from '@node-saml/node-saml/lib/xml.js';
import type { Clock } from '../../core/clock.js';
import { systemClock } from '../../core/clock.js';
import { TachyonError } from '../../core/errors.js';
import type { AuditSink } from '../../audit/event.js';
import { emailDomainAllowed, mapRoles, type SamlConfig, type SsoConfigSource } from './config.js';
import { auditSuccess, ssoFailure, ssoRefusal, type SsoFailureReason, type SsoIdentity, type SsoRequestContext } from './identity.js';
import type { SsoStore } from './store.js';

/** What `beginSaml` returns: where to send the browser. */
export interface SamlBegin {
  redirectUrl: string;
  /** The RelayState the IdP posts back with the response. */
  relayState: string;
  /** The AuthnRequest's ID (the expected InResponseTo). */
  requestId: string;
  expiresAt: number;
}

interface SamlTransaction {
  tenantId: string;
  requestId: string;
  idpEntityId: string;
  spEntityId: string;
}

export interface SamlServiceOptions {
  configs: SsoConfigSource;
  store: SsoStore;
  audit: AuditSink;
  clock?: Clock;
  /** How long a begun sign-in stays valid (default 10 minutes). */
  transactionTtlMs?: number;
  /** Upper bound on how long an assertion id is remembered when the assertion names no expiry (default 1 hour). */
  assertionMemoryMs?: number;
}

/** Largest accepted SAMLResponse (base64 characters). */
export const MAX_SAML_RESPONSE = 256 * 1024;
const RELAY_RE = /^[A-Za-z0-9_-]{16,128}$/;
const B64_RE = /^[A-Za-z0-9+/=\r\n]+$/;

export class SamlService {
  private readonly configs: SsoConfigSource;
  private readonly store: SsoStore;
  private readonly audit: AuditSink;
  private readonly clock: Clock;
  private readonly ttl: number;
  private readonly assertionMemory: number;

  constructor(options: SamlServiceOptions) {
    this.configs = options.configs;
    this.store = options.store;
    this.audit = options.audit;
    this.clock = options.clock ?? systemClock;
    this.ttl = options.transactionTtlMs ?? 10 * 60_000;
    this.assertionMemory = options.assertionMemoryMs ?? 60 * 60_000;
  }

  /** Starts a sign-in for `tenantId`: the IdP URL carrying a fresh AuthnRequest. `SSO_FAILED` (not-configured). */
  async begin(tenantId: string, ctx: SsoRequestContext = {}): Promise<SamlBegin> {
    try {
      const c = await this.tenantConfig(tenantId);
      const requestId = `_${randomBytes(20).toString('hex')}`;
      const relayState = randomBytes(24).toString('base64url');
      const expiresAt = this.clock.now() + this.ttl;
      const tx: SamlTransaction = { tenantId, requestId, idpEntityId: c.idpEntityId, spEntityId: c.spEntityId };
      if (!(await this.store.put(`saml:${relayState}`, JSON.stringify(tx), expiresAt))) throw new TachyonError('INTERNAL', 'SAML relay state collision');
      const saml = this.instance(c, requestId, () => requestId);
      let redirectUrl: string;
      try {
        redirectUrl = await saml.getAuthorizeUrlAsync(relayState, undefined, {});
      } catch (err) {
        throw new TachyonError('CONFIG', 'cannot build the SAML AuthnRequest', { cause: err, details: { tenantId } });
      }
      this.audit.record({
        type: 'sso.start',
        component: 'platform.sso',
        fields: { tenantId, protocol: 'saml', ...(ctx.clientAddress === undefined ? {} : { clientAddress: ctx.clientAddress }) },
      });
      return { redirectUrl, relayState, requestId, expiresAt };
    } catch (err) {
      throw this.refuse(err, tenantId, ctx);
    }
  }

  /**
   * Completes a sign-in from the IdP's HTTP-POST form fields (`SAMLResponse`, base64, and
   * `RelayState`). Every refusal is `SSO_FAILED` with `details.reason` and an
   * `sso.failure` audit record; nothing of the response is logged.
   */
  async complete(samlResponse: unknown, relayState: unknown, ctx: SsoRequestContext = {}): Promise<SsoIdentity> {
    let tenantId: string | undefined;
    let subject: string | undefined;
    try {
      if (typeof samlResponse !== 'string' || samlResponse.length === 0 || samlResponse.length > MAX_SAML_RESPONSE || !B64_RE.test(samlResponse)) {
        throw ssoFailure('saml', 'bad-request');
      }
      if (typeof relayState !== 'string' || relayState === '') throw ssoFailure('saml', 'state-missing');
      if (!RELAY_RE.test(relayState)) throw ssoFailure('saml', 'state-unknown');
      const raw = await this.store.take(`saml:${relayState}`);
      if (raw === undefined) throw ssoFailure('saml', 'state-unknown');
      const tx = JSON.parse(raw) as SamlTransaction;
      tenantId = tx.tenantId;
      const c = await this.tenantConfig(tx.tenantId);
      if (c.idpEntityId !== tx.idpEntityId || c.spEntityId !== tx.spEntityId) throw ssoFailure('saml', 'config-changed', tenantId);

      const saml = this.instance(c, tx.requestId);
      let profile: Profile | null;
      try {
        const result = await saml.validatePostResponseAsync({ SAMLResponse: samlResponse, RelayState: relayState });
        profile = result.loggedOut ? null : result.profile;
      } catch (err) {
        throw translateSamlError(err, tenantId);
      }
      if (profile === null) throw ssoFailure('saml', 'response-invalid', tenantId);

      // the assertion's Issuer (node-saml checks idpIssuer only on logout messages)
      if (profile.issuer !== c.idpEntityId) throw ssoFailure('saml', 'issuer-mismatch', tenantId);

      // Destination and Issuer of the response, when present (node-saml does not check them)
      const doc = await parseDomFromString(Buffer.from(samlResponse, 'base64').toString('utf8')).catch(() => {
        throw ssoFailure('saml', 'response-invalid', tenantId);
      });
      const dest = xpath.selectAttributes(doc, "/*[local-name()='Response']/@Destination");
      if (dest.length > 0 && dest[0]!.nodeValue !== c.acsUrl) throw ssoFailure('saml', 'destination-mismatch', tenantId);
      const responseIssuer = xpath.selectElements(doc, "/*[local-name()='Response']/*[local-name()='Issuer']");
      if (responseIssuer.some((e) => (e.textContent ?? '').trim() !== c.idpEntityId)) throw ssoFailure('saml', 'issuer-mismatch', tenantId);

      // the verified assertion: its id, bearer Recipient and expiry
      const assertion = (profile.getAssertion?.() as { Assertion?: XmlNode } | undefined)?.Assertion;
      if (assertion === undefined) throw ssoFailure('saml', 'response-invalid', tenantId);
      const assertionId = attr(assertion, 'ID');
      if (assertionId === undefined || assertionId.length > 256) throw ssoFailure('saml', 'response-invalid', tenantId);
      const confirmations = children(children(assertion, 'Subject')[0], 'SubjectConfirmation');
      const bearer = confirmations
        .filter((sc) => attr(sc, 'Method') === 'urn:oasis:names:tc:SAML:2.0:cm:bearer')
        .map((sc) => children(sc, 'SubjectConfirmationData')[0]);
      if (!bearer.some((d) => d !== undefined && attr(d, 'Recipient') === c.acsUrl)) throw ssoFailure('saml', 'destination-mismatch', tenantId);

      subject = typeof profile.nameID === 'string' && profile.nameID !== '' ? profile.nameID : undefined;
      if (subject === undefined) throw ssoFailure('saml', 'subject-missing', tenantId);

      // replay: remember the assertion id until it expires (plus the skew)
      const expiries = [attr(children(assertion, 'Conditions')[0], 'NotOnOrAfter'), ...bearer.map((d) => attr(d, 'NotOnOrAfter'))]
        .map((s) => (s === undefined ? NaN : Date.parse(s)))
        .filter((n) => Number.isFinite(n));
      const now = this.clock.now();
      const until = Math.min(expiries.length > 0 ? Math.max(...expiries) : now + this.assertionMemory, now + this.assertionMemory) + c.clockSkewMs;
      if (!(await this.store.put(`saml-assertion:${c.idpEntityId}\n${assertionId}`, tx.tenantId, Math.max(until, now + c.clockSkewMs + 1)))) {
        throw ssoFailure('saml', 'assertion-replayed', tenantId);
      }

      const identity = profileToIdentity(tx.tenantId, c, profile, subject);
      return auditSuccess(this.audit, identity, ctx);
    } catch (err) {
      throw this.refuse(err, tenantId, ctx, subject);
    }
  }

  private refuse(err: unknown, tenantId: string | undefined, ctx: SsoRequestContext, subject?: string): TachyonError {
    return ssoRefusal(this.audit, 'saml', err, tenantId, ctx, subject, translateSamlError);
  }

  private async tenantConfig(tenantId: string): Promise<SamlConfig> {
    const t = await this.configs.get(tenantId);
    if (t?.saml === undefined) throw ssoFailure('saml', 'not-configured', tenantId);
    return t.saml;
  }

  /** A node-saml instance for one transaction: it knows exactly one request id. */
  private instance(c: SamlConfig, requestId: string, generateUniqueId?: () => string): SAML {
    const cache: CacheProvider = {
      saveAsync: (key, value) => Promise.resolve(key === requestId ? { value, createdAt: this.clock.now() } : null),
      getAsync: (key) => Promise.resolve(key === requestId ? new Date(this.clock.now()).toISOString() : null),
      removeAsync: (key) => Promise.resolve(key),
    };
    return new SAML({
      entryPoint: c.ssoUrl,
      issuer: c.spEntityId,
      callbackUrl: c.acsUrl,
      audience: c.spEntityId,
      idpIssuer: c.idpEntityId,
      idpCert: c.idpCertificates,
      // a signature is required on the response or on the assertion (node-saml: an unsigned response needs a signed assertion)
      wantAuthnResponseSigned: false,
      wantAssertionsSigned: false,
      acceptedClockSkewMs: c.clockSkewMs,
      validateInResponseTo: ValidateInResponseTo.always,
      requestIdExpirationPeriodMs: this.ttl,
      cacheProvider: cache,
      identifierFormat: null,
      disableRequestedAuthnContext: true,
      ...(generateUniqueId === undefined ? {} : { generateUniqueId }),
    });
  }
}

type XmlNode = { $?: Record<string, string>; [k: string]: unknown };

function attr(node: XmlNode | undefined, name: string): string | undefined {
  const v = node?.$?.[name];
  return typeof v === 'string' ? v : undefined;
}

function children(node: XmlNode | undefined, name: string): XmlNode[] {
  const v = node?.[name];
  return Array.isArray(v) ? (v.filter((x) => typeof x === 'object' && x !== null) as XmlNode[]) : [];
}

/** Turns a verified profile into an identity, applying the e-mail and role rules of the tenant. */
function profileToIdentity(tenantId: string, c: SamlConfig, profile: Profile, subject: string): SsoIdentity {
  const attributes = (profile.attributes ?? {}) as Record<string, unknown>;
  const fromAttr = attributes[c.emailAttribute];
  const emailAttr = Array.isArray(fromAttr) ? fromAttr[0] : fromAttr;
  const email =
    typeof emailAttr === 'string' && emailAttr !== ''
      ? emailAttr
      : profile.nameIDFormat === 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress' && subject.includes('@')
        ? subject
        : undefined;
  if (c.allowedEmailDomains.length > 0) {
    if (email === undefined) throw ssoFailure('saml', 'email-missing', tenantId);
    if (!emailDomainAllowed(email, c.allowedEmailDomains)) throw ssoFailure('saml', 'email-domain', tenantId);
  }
  const roles = mapRoles(attributes[c.roleAttribute], c.roleMapping, c.unmapped);
  if (roles === undefined) throw ssoFailure('saml', 'role-unmapped', tenantId);
  return {
    tenantId,
    protocol: 'saml',
    issuer: c.idpEntityId,
    subject,
    ...(email === undefined ? {} : { email }),
    // the IdP vouches for its attributes; the signature covers them
    emailVerified: email !== undefined,
    roles,
  };
}

/** Translates node-saml's plain errors (by message) into `SSO_FAILED` with a stable reason. */
export function translateSamlError(err: unknown, tenantId: string | undefined): TachyonError {
  if (err instanceof TachyonError) return err;
  const m = err instanceof Error ? err.message : String(err);
  let reason: SsoFailureReason = 'response-invalid';
  if (err instanceof Error && err.name === 'SamlStatusError') reason = 'provider-error';
  else if (/signature/i.test(m)) reason = 'signature-invalid';
  else if (/InResponseTo/i.test(m)) reason = 'request-unknown';
  // node-saml: "No valid subject confirmation found …" = no bearer confirmation whose time window holds
  else if (/expired|not yet valid|too old|No valid subject confirmation/i.test(m)) reason = 'assertion-expired';
  else if (/audience/i.test(m)) reason = 'audience-mismatch';
  else if (/issuer/i.test(m)) reason = 'issuer-mismatch';
  // the upstream note is node-saml's fixed text up to the first variable part, never response content
  return ssoFailure('saml', reason, tenantId, m.split(/[.:]/)[0]!.slice(0, 80));
}
