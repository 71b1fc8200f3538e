/**
 * Single sign-on for the platform's sign-in routes: OIDC and SAML services behind one
 * small facade. The routes call `begin*` to get the redirect, `complete*` with what the
 * provider sent back, and create the session themselves from the returned
 * {@link SsoIdentity}. See docs/platform-sso.md.
 */
import type { Clock } from '../../core/clock.js';
import type { AuditSink } from '../../audit/event.js';
import type { SsoConfigSource } from './config.js';
import type { SsoIdentity, SsoRequestContext } from './identity.js';
import { OidcService, type OidcBegin, type OidcDiscover } from './oidc.js';
import { SamlService, type SamlBegin } from './saml.js';
import type { SsoStore } from './store.js';

export * from './config.js';
export * from './identity.js';
export { OidcService, discoverOidcProvider, translateOidcError, claimsToIdentity, type OidcBegin, type OidcDiscover, type OidcServiceOptions } from './oidc.js';
export { SamlService, MAX_SAML_RESPONSE, translateSamlError, type SamlBegin, type SamlServiceOptions } from './saml.js';
export { MemorySsoStore, type SsoStore } from './store.js';
export { DatabaseSsoConfigSource, type SsoConfigStore, type SsoConfigView } from './config-store.js';

export interface SsoServicesOptions {
  configs: SsoConfigSource;
  store: SsoStore;
  audit: AuditSink;
  clock?: Clock;
  /** OIDC discovery seam (default: HTTPS discovery; tests pass their own). */
  oidcDiscover?: OidcDiscover;
  /** Lifetime of a begun sign-in (default 10 minutes). */
  transactionTtlMs?: number;
}

/** The interface the sign-in routes use. */
export class SsoServices {
  readonly oidc: OidcService;
  readonly saml: SamlService;
  private readonly configs: SsoConfigSource;

  constructor(o: SsoServicesOptions) {
    this.configs = o.configs;
    const common = { configs: o.configs, store: o.store, audit: o.audit, ...(o.clock ? { clock: o.clock } : {}), ...(o.transactionTtlMs ? { transactionTtlMs: o.transactionTtlMs } : {}) };
    this.oidc = new OidcService({ ...common, ...(o.oidcDiscover ? { discover: o.oidcDiscover } : {}) });
    this.saml = new SamlService(common);
  }

  /** Which SSO methods a tenant offers, and whether its administrators must use them (for the sign-in page and the local sign-in check). */
  async methods(tenantId: string): Promise<{ oidc: boolean; saml: boolean; ssoRequiredForAdmins: boolean }> {
    const c = await this.configs.get(tenantId);
    return { oidc: c?.oidc !== undefined, saml: c?.saml !== undefined, ssoRequiredForAdmins: c?.ssoRequiredForAdmins ?? false };
  }

  /**
   * Whether a local (password) sign-in of a user holding `roles` must be refused because
   * the tenant requires SSO for its administrators. The local sign-in route calls this
   * after verifying the password and before creating a session.
   */
  async localSignInRefused(tenantId: string, roles: readonly string[]): Promise<boolean> {
    // only administrators are concerned: others never depend on the configuration being readable
    if (!roles.includes('tenant_admin')) return false;
    const c = await this.configs.get(tenantId);
    return c?.ssoRequiredForAdmins ?? false;
  }

  beginOidc(tenantId: string, ctx?: SsoRequestContext): Promise<OidcBegin> {
    return this.oidc.begin(tenantId, ctx);
  }

  completeOidc(callbackUrl: string | URL, ctx?: SsoRequestContext): Promise<SsoIdentity> {
    return this.oidc.complete(callbackUrl, ctx);
  }

  beginSaml(tenantId: string, ctx?: SsoRequestContext): Promise<SamlBegin> {
    return this.saml.begin(tenantId, ctx);
  }

  completeSaml(samlResponseBase64: unknown, relayState: unknown, ctx?: SsoRequestContext): Promise<SsoIdentity> {
    return this.saml.complete(samlResponseBase64, relayState, ctx);
  }
}
