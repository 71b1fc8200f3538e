/**
 * Where the running platform keeps each tenant's single sign-on configuration: the
 * `platform_sso_config` table (migration 0011). {@link DatabaseSsoConfigSource} is the
 * real adapter of both seams — {@link SsoConfigSource} (what the OIDC and SAML services
 * read) and {@link SsoConfigStore} (what the admin routes and `tachyon tenant sso-*`
 * change); {@link MemorySsoConfigSource} stays the test adapter of the first.
 *
 * The OIDC client secret never reaches the JSON column: it is sealed by the platform's
 * {@link SecretBox} (the key that seals TOTP secrets) with associated data naming the
 * tenant, so a sealed value copied to another tenant's row does not open. The admin view
 * ({@link SsoConfigView}) replaces it with `clientSecretSet: true`; describeSsoConfig
 * gives what may be logged or audited.
 *
 * Reads go to the database every time (a change made by the CLI while the server runs
 * takes effect at the next sign-in) but the decoded configuration is cached by the row's
 * `revision`, so an unchanged row yields the same object (the OIDC service reuses its
 * discovery for the same object).
 */
import { randomUUID } from 'node:crypto';
import { systemClock, type Clock } from '../../core/clock.js';
import { TachyonError } from '../../core/errors.js';
import type { Database } from '../../db/database.js';
import type { SecretBox } from '../mfa/secret-box.js';
import { parseTenantSsoConfig, type OidcConfig, type SsoConfigSource, type TenantSsoConfig } from './config.js';

/** A configuration as administrators see it: everything but the OIDC client secret, which is a flag. */
export type SsoConfigView = Omit<TenantSsoConfig, 'oidc'> & {
  readonly oidc?: Omit<OidcConfig, 'clientSecret'> & { readonly clientSecretSet: true };
  readonly updatedAt: string;
};

/** The admin seam: read (without the secret), replace, remove a tenant's configuration. */
export interface SsoConfigStore extends SsoConfigSource {
  /** The tenant's configuration without the secret, or undefined. */
  view(tenantId: string): Promise<SsoConfigView | undefined>;
  /**
   * Validates and stores `input` as the tenant's whole configuration (the tenant id is
   * `tenantId`, whatever the input says). An `oidc` section without `clientSecret` keeps
   * the stored secret (so a configuration read through {@link view} can be sent back
   * changed); `CONFIG` when there is none. `CONFIG` also when `ssoRequiredForAdmins` is
   * set without any SSO method (it would lock the administrators out).
   *
   * @returns the stored configuration and the names of the top-level fields it changed
   *   (`oidc.clientSecret` when the secret changed; never a value).
   */
  put(tenantId: string, input: unknown): Promise<{ config: TenantSsoConfig; changed: string[] }>;
  /** Removes the configuration; whether there was one. */
  delete(tenantId: string): Promise<boolean>;
}

/** The associated data that binds a sealed OIDC client secret to its tenant. */
function secretAad(tenantId: string): Buffer {
  return Buffer.from(`tachyon-sso-oidc-client-secret\0${tenantId}`, 'utf8');
}

function configError(message: string, fields: string[]): TachyonError {
  return new TachyonError('CONFIG', message, { publicMessage: 'The single sign-on configuration is invalid.', details: { fields } });
}

/** The top-level sections of a configuration, for the "changed" list of an audit record. */
const SECTIONS = ['oidc', 'saml', 'ssoRequiredForAdmins'] as const;

export class DatabaseSsoConfigSource implements SsoConfigStore {
  private readonly database: Database;
  private readonly box: SecretBox;
  private readonly clock: Clock;
  private readonly cache = new Map<string, { revision: string; config: TenantSsoConfig }>();

  constructor(o: { database: Database; box: SecretBox; clock?: Clock }) {
    this.database = o.database;
    this.box = o.box;
    this.clock = o.clock ?? systemClock;
  }

  private row(tenantId: string) {
    return this.database.db.selectFrom('platform_sso_config').selectAll().where('tenant_id', '=', tenantId).executeTakeFirst();
  }

  async get(tenantId: string): Promise<TenantSsoConfig | undefined> {
    const row = await this.row(tenantId);
    if (!row) {
      this.cache.delete(tenantId);
      return undefined;
    }
    const hit = this.cache.get(tenantId);
    if (hit && hit.revision === row.revision) return hit.config;
    const stored = JSON.parse(row.config) as Record<string, unknown> & { oidc?: Record<string, unknown> };
    if (stored.oidc !== undefined) {
      if (row.oidc_secret_sealed === null) throw new TachyonError('INTERNAL', `the SSO configuration of tenant ${tenantId} has OIDC without a client secret`);
      let secret: Buffer;
      try {
        secret = this.box.open(row.oidc_secret_sealed, secretAad(tenantId));
      } catch (err) {
        const code = err instanceof TachyonError ? err.code : 'INTERNAL';
        throw new TachyonError(code, `the OIDC client secret of tenant ${tenantId} does not open (${err instanceof TachyonError ? err.message : 'error'})`, {
          cause: err,
          publicMessage: 'Single sign-on is not available; contact an administrator.',
        });
      }
      stored.oidc = { ...stored.oidc, clientSecret: secret.toString('utf8') };
    }
    const config = parseTenantSsoConfig({ ...stored, tenantId });
    this.cache.set(tenantId, { revision: row.revision, config });
    return config;
  }

  async view(tenantId: string): Promise<SsoConfigView | undefined> {
    const row = await this.row(tenantId);
    if (!row) return undefined;
    const stored = JSON.parse(row.config) as Omit<TenantSsoConfig, 'tenantId'>;
    const { oidc, ...rest } = stored;
    return {
      ...rest,
      tenantId,
      ...(oidc ? { oidc: { ...(oidc as Omit<OidcConfig, 'clientSecret'>), clientSecretSet: true as const } } : {}),
      updatedAt: row.updated_at,
    };
  }

  async put(tenantId: string, input: unknown): Promise<{ config: TenantSsoConfig; changed: string[] }> {
    if (typeof input !== 'object' || input === null || Array.isArray(input)) throw configError('an SSO configuration must be a JSON object', ['(root)']);
    const body: Record<string, unknown> = { ...(input as Record<string, unknown>), tenantId };
    const before = await this.get(tenantId).catch(() => undefined);
    const oidcIn = body['oidc'];
    if (typeof oidcIn === 'object' && oidcIn !== null && !Array.isArray(oidcIn)) {
      const o = { ...(oidcIn as Record<string, unknown>) };
      // the view's flag may come back: it is not part of the configuration
      if (o['clientSecretSet'] === true) delete o['clientSecretSet'];
      if (o['clientSecret'] === undefined) {
        if (before?.oidc === undefined) throw configError('the OIDC section needs clientSecret (none is stored)', ['oidc.clientSecret']);
        o['clientSecret'] = before.oidc.clientSecret;
      }
      body['oidc'] = o;
    }
    // the view's timestamp may come back too
    delete body['updatedAt'];
    const config = parseTenantSsoConfig(body);
    if (config.ssoRequiredForAdmins && config.oidc === undefined && config.saml === undefined) {
      throw configError('ssoRequiredForAdmins needs an OIDC or SAML section (the administrators could not sign in)', ['ssoRequiredForAdmins']);
    }
    const { tenantId: _t, oidc, ...rest } = config;
    const json = JSON.stringify({ ...rest, ...(oidc ? { oidc: { ...oidc, clientSecret: undefined } } : {}) });
    const sealed = oidc ? this.box.seal(Buffer.from(oidc.clientSecret, 'utf8'), secretAad(tenantId)) : null;
    const now = new Date(this.clock.now()).toISOString();
    const revision = randomUUID();
    await this.database.db.transaction().execute(async (tx) => {
      const done = await tx
        .updateTable('platform_sso_config')
        .set({ config: json, oidc_secret_sealed: sealed, revision, updated_at: now })
        .where('tenant_id', '=', tenantId)
        .executeTakeFirst();
      if (Number(done.numUpdatedRows) === 0) {
        await tx.insertInto('platform_sso_config').values({ tenant_id: tenantId, config: json, oidc_secret_sealed: sealed, revision, updated_at: now }).execute();
      }
    });
    this.cache.set(tenantId, { revision, config });
    const prev: Partial<TenantSsoConfig> = before ?? { ssoRequiredForAdmins: false };
    const changed: string[] = SECTIONS.filter((k) => JSON.stringify(config[k]) !== JSON.stringify(prev[k]));
    if (before?.oidc?.clientSecret !== oidc?.clientSecret) changed.push('oidc.clientSecret');
    return { config, changed };
  }

  async delete(tenantId: string): Promise<boolean> {
    const r = await this.database.db.deleteFrom('platform_sso_config').where('tenant_id', '=', tenantId).executeTakeFirst();
    this.cache.delete(tenantId);
    return Number(r.numDeletedRows) > 0;
  }
}
