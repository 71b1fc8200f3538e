/**
 * Per-tenant single sign-on configuration: OpenID Connect and/or SAML 2.0, with the
 * mapping from the identity provider's claims or attributes to Tachyon roles. Validated
 * with zod where it enters ({@link parseTenantSsoConfig}); the OIDC client secret is
 * never logged (see {@link describeSsoConfig}).
 */
import { z } from 'zod';
import { TachyonError } from '../../core/errors.js';

/** The platform roles SSO can grant, least privileged first. */
export const SSO_ROLES = ['member', 'auditor', 'tenant_admin'] as const;
export type SsoRole = (typeof SSO_ROLES)[number];

const roleSchema = z.enum(SSO_ROLES);
const httpUrl = z.url({ protocol: /^https?$/ }).max(2048);
const nameSchema = z.string().min(1).max(256);

/**
 * What to do with a user none of whose claim values maps to a role: `member` grants the
 * least privileged role (the default), `refuse` refuses the sign-in.
 */
const unmappedSchema = z.enum(['member', 'refuse']);

/** Lower-cased domain names (`example.com`); empty = any domain. */
const domainsSchema = z
  .array(
    z
      .string()
      .min(1)
      .max(253)
      .regex(/^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/)
      .transform((d) => d.toLowerCase()),
  )
  .max(100)
  .default([]);

export const oidcConfigSchema = z.strictObject({
  /** Issuer identifier (discovery at `<issuer>/.well-known/openid-configuration`); HTTPS in production. */
  issuer: httpUrl,
  clientId: nameSchema,
  /** Never logged, never in an audit record or an error. */
  clientSecret: z.string().min(1).max(1024),
  /** Where the provider sends the browser back (the sign-in routes' callback). */
  redirectUri: httpUrl,
  scopes: z.array(z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/).max(128)).max(32).default(['openid', 'email', 'profile']),
  /** The claim whose value(s) map to roles (a string or an array of strings), e.g. `groups`. */
  roleClaim: nameSchema.default('groups'),
  /** claim value → role, e.g. `{ "tachyon-admins": "tenant_admin" }`. */
  roleMapping: z.record(nameSchema, roleSchema).default({}),
  unmapped: unmappedSchema.default('member'),
  /** Only e-mail addresses in these domains may sign in (empty: any). */
  allowedEmailDomains: domainsSchema,
  /** Refuse an identity whose `email_verified` is not true (default). */
  requireVerifiedEmail: z.boolean().default(true),
});
export type OidcConfig = z.infer<typeof oidcConfigSchema>;

export const samlConfigSchema = z.strictObject({
  /** The identity provider's entity id (the Issuer of its responses). */
  idpEntityId: nameSchema,
  /** The IdP's single sign-on URL (HTTP-Redirect binding). */
  ssoUrl: httpUrl,
  /** PEM certificate(s) (or their base64 bodies) of the IdP's signing key(s); several during a rollover. */
  idpCertificates: z.array(z.string().min(64).max(16384)).min(1).max(4),
  /** Our service provider entity id (the expected Audience). */
  spEntityId: nameSchema,
  /** Our assertion consumer service URL (the expected Destination / Recipient). */
  acsUrl: httpUrl,
  /** The attribute whose value(s) map to roles. */
  roleAttribute: nameSchema.default('groups'),
  roleMapping: z.record(nameSchema, roleSchema).default({}),
  unmapped: unmappedSchema.default('member'),
  /** The attribute holding the e-mail address (default: the NameID when it is one). */
  emailAttribute: nameSchema.default('email'),
  allowedEmailDomains: domainsSchema,
  /** Tolerated clock difference for NotBefore / NotOnOrAfter, milliseconds (default 60 s, at most 5 min). */
  clockSkewMs: z.number().int().min(0).max(300_000).default(60_000),
});
export type SamlConfig = z.infer<typeof samlConfigSchema>;

export const tenantSsoConfigSchema = z.strictObject({
  tenantId: nameSchema,
  oidc: oidcConfigSchema.optional(),
  saml: samlConfigSchema.optional(),
  /** When true, the tenant's administrators may sign in only through SSO (the local sign-in must refuse them). */
  ssoRequiredForAdmins: z.boolean().default(false),
});
export type TenantSsoConfig = z.infer<typeof tenantSsoConfigSchema>;
export type TenantSsoConfigInput = z.input<typeof tenantSsoConfigSchema>;

/** Validates a tenant's SSO configuration; `CONFIG` with the failing fields' paths (never their values). */
export function parseTenantSsoConfig(input: unknown): TenantSsoConfig {
  const r = tenantSsoConfigSchema.safeParse(input);
  if (!r.success) {
    const fields = r.error.issues.map((i) => i.path.join('.') || '(root)');
    throw new TachyonError('CONFIG', `invalid SSO configuration: ${fields.join(', ')}`, {
      publicMessage: 'The single sign-on configuration is invalid.',
      details: { fields },
    });
  }
  return r.data;
}

/** A loggable summary of a configuration: no secret, no certificate body. */
export function describeSsoConfig(c: TenantSsoConfig): Record<string, unknown> {
  return {
    tenantId: c.tenantId,
    ssoRequiredForAdmins: c.ssoRequiredForAdmins,
    oidc: c.oidc && { issuer: c.oidc.issuer, clientId: c.oidc.clientId, redirectUri: c.oidc.redirectUri, scopes: c.oidc.scopes },
    saml: c.saml && { idpEntityId: c.saml.idpEntityId, ssoUrl: c.saml.ssoUrl, spEntityId: c.saml.spEntityId, certificates: c.saml.idpCertificates.length },
  };
}

/** Where the SSO services read a tenant's configuration (the identity core's tenant table; a map in tests). */
export interface SsoConfigSource {
  get(tenantId: string): Promise<TenantSsoConfig | undefined>;
}

/** An {@link SsoConfigSource} over a map (validated on insert). */
export class MemorySsoConfigSource implements SsoConfigSource {
  private readonly map = new Map<string, TenantSsoConfig>();
  set(input: TenantSsoConfigInput): TenantSsoConfig {
    const c = parseTenantSsoConfig(input);
    this.map.set(c.tenantId, c);
    return c;
  }
  get(tenantId: string): Promise<TenantSsoConfig | undefined> {
    return Promise.resolve(this.map.get(tenantId));
  }
}

/**
 * Maps claim/attribute values to roles: every value that the mapping names contributes
 * its role; none → `member` or refused (`undefined`), as configured. Returned sorted,
 * without duplicates.
 */
export function mapRoles(values: unknown, mapping: Readonly<Record<string, SsoRole>>, unmapped: 'member' | 'refuse'): SsoRole[] | undefined {
  const list = Array.isArray(values) ? values : values === undefined || values === null ? [] : [values];
  const roles = new Set<SsoRole>();
  for (const v of list) {
    if (typeof v !== 'string') continue;
    if (Object.prototype.hasOwnProperty.call(mapping, v)) roles.add(mapping[v]!);
  }
  if (roles.size === 0) return unmapped === 'member' ? ['member'] : undefined;
  return SSO_ROLES.filter((r) => roles.has(r));
}

/** Whether `email`'s domain is in `domains` (empty = any). */
export function emailDomainAllowed(email: string, domains: readonly string[]): boolean {
  if (domains.length === 0) return true;
  const at = email.lastIndexOf('@');
  if (at <= 0) return false;
  const d = email.slice(at + 1).toLowerCase();
  return domains.includes(d);
}
