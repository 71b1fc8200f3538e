/**
 * The web platform as a server: what `tachyon start` and `tachyon serve --config` (with
 * a `platform` section) run next to the transfer server and the node API, in the same
 * process. It composes, over the caller's database and IP defender:
 *  - the audit: a {@link DatabaseAuditSink} (the `platform_audit` table of the same
 *    database: the audit log's line format and hash chain, read by the audit views);
 *  - the second factor: an {@link MfaService} whose TOTP secrets are sealed by the given
 *    {@link SecretBox} (the server key file, or TACHYON_MFA_KEY) — so local tenant
 *    administrators must enrol TOTP;
 *  - the identity service (argon2id with the production parameters unless a hasher is
 *    given, the shipped common-password list);
 *  - the tenants' IP allow-lists ({@link TenantAllowLists}: the `platform_allow_list`
 *    table and the defender's configured lists), for sign-ins and sessions;
 *  - single sign-on: {@link SsoServices} over a {@link DatabaseSsoConfigSource} (the
 *    `platform_sso_config` table, OIDC client secrets sealed by the same SecretBox), so a
 *    tenant whose administrators configured SSO (PUT /api/v1/sso, `tachyon tenant sso-set`)
 *    offers it at /api/v1/auth/sso/… and may refuse its administrators' password sign-in;
 *  - the HTTPS application of the route table (createPlatformApp), with the shared
 *    defender, the audit views over the same sink, the allow-lists and the blocks.
 *
 * The database and the defender belong to the caller, who closes them after this server.
 */
import type { AddressInfo } from 'node:net';
import { systemClock, type Clock } from '../core/clock.js';
import { TachyonError } from '../core/errors.js';
import type { Database } from '../db/database.js';
import type { Defender } from '../defender/index.js';
import { createPlatformApp } from './app.js';
import { DatabaseAuditSink } from './audit-store.js';
import { TenantAllowLists } from './allow-list-store.js';
import { MfaService, type SecretBox } from './mfa/index.js';
import type { PasswordHasher } from './passwords.js';
import { IdentityService } from './service.js';
import { DatabaseSsoConfigSource, MemorySsoStore, SsoServices, type OidcDiscover } from './sso/index.js';

/** Where the platform listens by default (loopback; `tachyon start --web-port`, `platform.port`). */
export const DEFAULT_PLATFORM_LISTEN = '127.0.0.1';

export interface PlatformServerOptions {
  readonly database: Database;
  /** TLS key and certificate chain (PEM). The platform serves HTTPS only. */
  readonly tls: { readonly key: string; readonly cert: string };
  /** Seals TOTP secrets (src/platform/mfa/secret-box.ts). */
  readonly mfaBox: SecretBox;
  /** The process's one defender, shared with SSH and the node API. Absent: no IP defence (the defender is off). */
  readonly defender?: Defender;
  readonly listen?: string;
  /** TCP port; 0 picks a free one. */
  readonly port: number;
  /** HMAC key of the audit chain (as for the audit file); without it, plain SHA-256. */
  readonly auditKey?: Buffer;
  readonly hasher?: PasswordHasher;
  readonly clock?: Clock;
  /** OIDC discovery (default: HTTPS only; tests pass one that reaches a provider on 127.0.0.1 over HTTP). */
  readonly oidcDiscover?: OidcDiscover;
}

export interface PlatformServer {
  readonly address: string;
  readonly port: number;
  /** `https://host:port` (IPv6 in brackets). */
  readonly url: string;
  readonly identity: IdentityService;
  readonly audit: DatabaseAuditSink;
  /** The tenants' SSO configurations (the table the SSO services read). */
  readonly ssoConfigs: DatabaseSsoConfigSource;
  /** Stops listening, then stores the queued audit records. */
  close(): Promise<void>;
}

/** The URL of a listening HTTPS server. */
export function httpsUrl(address: string, port: number): string {
  return `https://${address.includes(':') ? `[${address}]` : address}:${port}`;
}

/**
 * Starts the platform on `listen:port` over HTTPS.
 *
 * @throws TachyonError `CONFIG` when the port is in use or the address is not available.
 */
export async function startPlatformServer(o: PlatformServerOptions): Promise<PlatformServer> {
  const clock = o.clock ?? systemClock;
  const audit = await DatabaseAuditSink.open(o.database, { clock, ...(o.auditKey ? { key: o.auditKey } : {}) });
  const mfa = new MfaService({ database: o.database, box: o.mfaBox, audit, clock });
  const ssoConfigs = new DatabaseSsoConfigSource({ database: o.database, box: o.mfaBox, clock });
  const sso = new SsoServices({ configs: ssoConfigs, store: new MemorySsoStore({ clock }), audit, clock, ...(o.oidcDiscover ? { oidcDiscover: o.oidcDiscover } : {}) });
  // tenants' IP allow-lists (and the defender's configured ones) for sign-ins and sessions
  const allowLists = new TenantAllowLists(o.database, clock, o.defender);
  const identity = new IdentityService({ database: o.database, audit, clock, mfa, sso, ssoConfigs, addressGate: allowLists, ...(o.hasher ? { hasher: o.hasher } : {}) });
  const web = createPlatformApp({
    identity,
    https: { key: o.tls.key, cert: o.tls.cert },
    auditLog: audit,
    allowLists,
    now: () => clock.now(),
    ...(o.defender ? { defender: o.defender } : {}),
  });
  const listen = o.listen ?? DEFAULT_PLATFORM_LISTEN;
  try {
    await web.app.listen({ host: listen, port: o.port });
  } catch (err) {
    await web.app.close().catch(() => undefined);
    await audit.close().catch(() => undefined);
    const code = (err as NodeJS.ErrnoException).code;
    const where = `${listen}:${o.port}`;
    if (code === 'EADDRINUSE') throw new TachyonError('CONFIG', `the web platform cannot listen on ${where}: the port is in use (choose another: --web-port, or platform.port in the configuration)`, { cause: err });
    if (code === 'EACCES' || code === 'EADDRNOTAVAIL') throw new TachyonError('CONFIG', `the web platform cannot listen on ${where}: ${code}`, { cause: err });
    throw err;
  }
  const bound = web.app.server.address() as AddressInfo;
  return {
    address: bound.address,
    port: bound.port,
    url: httpsUrl(bound.address, bound.port),
    identity,
    audit,
    ssoConfigs,
    async close() {
      await web.app.close();
      await audit.close();
    },
  };
}
