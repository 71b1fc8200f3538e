/**
 * `tachyon tenant …`: bootstrap the web platform without a browser — organisations
 * (tenants) and their first administrators, in the server's database.
 *
 *   tachyon tenant create SLUG [--name NAME] [--json]
 *   tachyon tenant list [--json]
 *   tachyon tenant admin-add TENANT USERNAME [--display-name NAME] [--json]
 *   tachyon tenant reset-password TENANT USERNAME [--json]
 *   tachyon tenant sso-set TENANT --file sso.json [--key-file FILE] [--json]
 *   tachyon tenant sso-show TENANT [--json]
 *   tachyon tenant sso-clear TENANT [--json]
 *   tachyon tenant allow-list TENANT [--clear] [--json]
 *
 * `sso-set` stores the tenant's single sign-on configuration (OIDC and/or SAML, role
 * mapping, `ssoRequiredForAdmins`; docs/platform-sso.md) from a JSON file, replacing any
 * earlier one; an `oidc` section without `clientSecret` keeps the stored secret. The
 * secret is sealed with the platform's key (the MFA key: TACHYON_MFA_KEY, `--key-file`,
 * the configuration's `platform.mfaKeyFile`, or DIR/mfa.key of `--data`) — the key the
 * running server opens it with — and is never printed: `sso-show` prints the
 * configuration with `clientSecretSet: true` in its place. A running server uses the
 * change at the next sign-in.
 *
 * `admin-add` and `reset-password` print a one-time temporary password (random, 24
 * characters or the tenant's minimum length, checked against the tenant's policy): it is
 * shown once, stored only as an argon2id hash, and must be changed at the first sign-in;
 * a local administrator also enrols TOTP then (the identity service enforces both).
 * `reset-password` also ends the account's sessions and lifts its lockout.
 * `allow-list` shows the tenant's IP allow-list; `--clear` removes it — the recovery when
 * the tenant's administrators locked themselves out (a running server sees it within 2 s).
 *
 * Every command takes `--config FILE`, `--db URL` or `--data DIR` (the embedded defaults
 * of `tachyon start`: DIR/tachyon.db, DIR defaulting to ./tachyon-data), and records what
 * it changed in the server's audit log file (never the password) as `config.change`.
 * The running server's `platform_audit` table has a single writer (the server), so the
 * command does not write there.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { userInfo } from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { TachyonError } from '../core/errors.js';
import { validateDisplayName, validateTenantSlug, validateUsername } from '../platform/model.js';
import { MemoryAuditSink } from '../audit/index.js';
import { argon2idHasher, checkNewPassword, loadCommonPasswords, type PasswordHasher } from '../platform/passwords.js';
import { IdentityService } from '../platform/service.js';
import { TenantAllowLists } from '../platform/allow-list-store.js';
import { systemClock } from '../core/clock.js';
import type { Tenant } from '../platform/model.js';
import { openStore, type Store } from './user-commands.js';
import { AesGcmSecretBox, loadSecretBox, type SecretBox } from '../platform/mfa/index.js';
import { DatabaseSsoConfigSource, type SsoConfigView } from '../platform/sso/index.js';
import { loadServerConfig } from '../server/config.js';

interface StoreOpts {
  config?: string;
  db?: string;
  data?: string;
}

interface JsonOpts extends StoreOpts {
  json: boolean;
}

function addOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'server configuration file (gives the database and the audit log)')
    .option('--db <url>', 'database: sqlite:///path/file.db, postgres://…, or a file path')
    .option('--data <dir>', `data directory of 'tachyon start' (database DIR/tachyon.db, audit log DIR/audit.log)`)
    .option('--json', 'print the result as one JSON object', false);
}

interface Ctx {
  readonly store: Store;
  readonly identity: IdentityService;
  readonly hasher: PasswordHasher;
  readonly common: ReadonlySet<string>;
}

async function withStore<T>(o: StoreOpts, create: boolean, fn: (c: Ctx) => Promise<T>): Promise<T> {
  const store = await openStore({ ...o, allowedRoot: [] }, create);
  try {
    const hasher = argon2idHasher();
    const common = loadCommonPasswords();
    // provisioning records nothing itself; the commands record their changes in the audit log file
    const identity = new IdentityService({ database: store.database, audit: store.audit ?? new MemoryAuditSink(), hasher, commonPasswords: common });
    return await fn({ store, identity, hasher, common });
  } finally {
    await store.database.close();
    await store.audit?.close();
  }
}

function actor(): string {
  return `cli:${userInfo().username}`;
}

async function tenantOf(identity: IdentityService, slug: string): Promise<Tenant> {
  const t = await identity.repo.tenantBySlug(validateTenantSlug(slug));
  if (!t) throw new TachyonError('NOT_FOUND', `no tenant '${slug}' (create it with: tachyon tenant create ${slug})`);
  return t;
}

/** A random password that the tenant's policy accepts for `username` (shown once). */
async function temporaryPassword(c: Ctx, tenantId: string, username: string): Promise<string> {
  const policy = await c.identity.repo.policy(tenantId);
  const length = Math.max(24, policy.minPasswordLength);
  for (let i = 0; i < 16; i++) {
    const candidate = randomBytes(length).toString('base64url').slice(0, length);
    try {
      return checkNewPassword(candidate, policy, c.common, username);
    } catch {
      // e.g. it happens to contain the user name: draw again
    }
  }
  throw new TachyonError('INTERNAL', 'could not make a temporary password the policy accepts');
}

/** The database's EXISTS (a unique key) with a message that names what exists; other errors unchanged. */
function exists(err: unknown, message: string): unknown {
  return err instanceof TachyonError && err.code === 'EXISTS' ? new TachyonError('EXISTS', message, { cause: err }) : err;
}

function print(json: boolean, value: Record<string, unknown>, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : text);
}

/** Largest SSO configuration file read by `sso-set`. */
const MAX_SSO_FILE = 256 * 1024;

/** The platform's secret box, from where `tachyon start` / `serve --config` take it. */
async function platformBox(o: StoreOpts & { keyFile?: string }): Promise<SecretBox> {
  let keyFile = o.keyFile;
  if (keyFile === undefined && o.config !== undefined) {
    const cfg = await loadServerConfig(o.config);
    keyFile = cfg.platform?.mfaKeyFile;
    if (keyFile === undefined && !process.env['TACHYON_MFA_KEY']) {
      throw new TachyonError('USAGE', `${o.config} has no platform section: give --key-file (the key that seals secrets for the web platform)`);
    }
  }
  if (keyFile === undefined && o.db === undefined) keyFile = path.join(path.resolve(o.data ?? 'tachyon-data'), 'mfa.key');
  if (keyFile === undefined && !process.env['TACHYON_MFA_KEY']) {
    throw new TachyonError('USAGE', 'with --db, give --key-file (or TACHYON_MFA_KEY): the key the web platform seals secrets with');
  }
  return loadSecretBox({ ...(keyFile !== undefined ? { keyFile } : {}), env: process.env });
}

function readSsoFile(file: string): unknown {
  let text: string;
  try {
    if (statSync(file).size > MAX_SSO_FILE) throw new TachyonError('USAGE', `${file} is larger than ${MAX_SSO_FILE} bytes`);
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof TachyonError) throw err;
    throw new TachyonError('USAGE', `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // the file holds a secret: never quote it
    throw new TachyonError('USAGE', `${file} is not valid JSON`);
  }
}

function ssoSummary(v: SsoConfigView | undefined): string {
  if (!v) return 'no single sign-on configuration\n';
  const lines = [`ssoRequiredForAdmins: ${v.ssoRequiredForAdmins}`];
  if (v.oidc) lines.push(`oidc: issuer ${v.oidc.issuer}, client ${v.oidc.clientId}, client secret set, redirect URI ${v.oidc.redirectUri}`);
  if (v.saml) lines.push(`saml: IdP ${v.saml.idpEntityId} (${v.saml.ssoUrl}), SP ${v.saml.spEntityId}, ACS ${v.saml.acsUrl}, ${v.saml.idpCertificates.length} certificate(s)`);
  lines.push(`updated ${v.updatedAt}`);
  return `${lines.join('\n')}\n`;
}

const FIRST_SIGN_IN = 'must be changed at the first sign-in; an administrator then enrols TOTP';

export function registerTenantCommands(program: Command): void {
  const tenant = program.command('tenant').description('organisations of the web platform and their administrators');

  addOptions(tenant.command('create').description('create an organisation (tenant): SLUG is what people type at sign-in').argument('<slug>'))
    .option('--name <name>', 'display name (default: the slug)')
    .action(async (slug: string, o: JsonOpts & { name?: string }) => {
      await withStore(o, true, async ({ store, identity }) => {
        const t = await identity.createTenant(validateTenantSlug(slug), validateDisplayName(o.name ?? slug)).catch((err: unknown) => {
          throw exists(err, `tenant '${slug}' already exists`);
        });
        store.audit?.record({ type: 'config.change', component: 'config', fields: { actor: actor(), action: 'tenant.create', target: t.slug } });
        print(o.json, { event: 'tenant.created', id: t.id, slug: t.slug, name: t.name }, `created tenant ${t.slug} (${t.name}); add its first administrator: tachyon tenant admin-add ${t.slug} USERNAME\n`);
      });
    });

  addOptions(tenant.command('list').description('list the organisations')).action(async (o: JsonOpts) => {
    await withStore(o, false, async ({ store }) => {
      const rows = await store.database.db.selectFrom('platform_tenant').select(['id', 'slug', 'name', 'created_at']).orderBy('slug').execute();
      const tenants = rows.map((r) => ({ id: r.id, slug: r.slug, name: r.name, createdAt: r.created_at }));
      print(o.json, { tenants }, tenants.length === 0 ? 'no tenants yet (tachyon tenant create SLUG)\n' : tenants.map((t) => `${t.slug}\t${t.name}\t${t.createdAt}\n`).join(''));
    });
  });

  addOptions(tenant.command('admin-add').description("add a tenant administrator with a one-time temporary password").argument('<tenant>').argument('<username>'))
    .option('--display-name <name>', 'the name shown for the account')
    .action(async (slug: string, name: string, o: JsonOpts & { displayName?: string }) => {
      await withStore(o, false, async (c) => {
        const { store, identity } = c;
        const t = await tenantOf(identity, slug);
        const username = validateUsername(name);
        const password = await temporaryPassword(c, t.id, username);
        const user = await identity
          .provisionUser(t.id, {
            username,
            roles: ['tenant_admin'],
            password,
            mustChangePassword: true,
            ...(o.displayName !== undefined ? { displayName: o.displayName } : {}),
          })
          .catch((err: unknown) => {
            throw exists(err, `tenant ${t.slug} already has a user '${username}' (a new temporary password: tachyon tenant reset-password ${t.slug} ${username})`);
          });
        store.audit?.record({ type: 'config.change', component: 'config', fields: { actor: actor(), action: 'tenant.admin-add', target: `${user.username}@${t.slug}`, changed: ['roles', 'credential', 'change-required'] } });
        print(
          o.json,
          { event: 'tenant.admin-added', tenant: t.slug, id: user.id, username: user.username, roles: user.roles, temporaryPassword: password, mustChangePassword: true },
          `added administrator ${user.username} to ${t.slug}\ntemporary password (shown once; ${FIRST_SIGN_IN}):\n${password}\n`,
        );
      });
    });

  addOptions(tenant.command('allow-list').description("show a tenant's IP allow-list; --clear removes it (when its administrators locked themselves out)").argument('<tenant>'))
    .option('--clear', 'remove the list: every address may sign in again', false)
    .action(async (slug: string, o: JsonOpts & { clear: boolean }) => {
      await withStore(o, false, async ({ store, identity }) => {
        const t = await tenantOf(identity, slug);
        const lists = new TenantAllowLists(store.database, systemClock);
        if (o.clear) {
          await lists.set(t.id, [], actor());
          store.audit?.record({ type: 'config.change', component: 'config', fields: { actor: actor(), action: 'tenant.allow-list-clear', target: t.slug } });
        }
        const l = await lists.get(t.id);
        print(
          o.json,
          { event: o.clear ? 'tenant.allow-list-cleared' : 'tenant.allow-list', tenant: t.slug, cidrs: l.cidrs, updatedAt: l.updatedAt, updatedBy: l.updatedBy },
          l.cidrs.length === 0 ? `${t.slug}: no allow-list (every address may sign in)\n` : `${t.slug}: ${l.cidrs.join(' ')}\n`,
        );
      });
    });

  addOptions(tenant.command('reset-password').description("give an account a new one-time temporary password (ends its sessions, lifts its lockout)").argument('<tenant>').argument('<username>')).action(
    async (slug: string, name: string, o: JsonOpts) => {
      await withStore(o, false, async (c) => {
        const { store, identity } = c;
        const t = await tenantOf(identity, slug);
        const username = validateUsername(name);
        const creds = await identity.repo.credentials(t.id, username);
        if (!creds) throw new TachyonError('NOT_FOUND', `no user '${username}' in tenant ${t.slug}`);
        const password = await temporaryPassword(c, t.id, username);
        const hash = await c.hasher.hash(password);
        const now = new Date().toISOString();
        await identity.repo.setPassword(t.id, creds.user.id, hash, true, now);
        await identity.repo.clearFailures(t.id, creds.user.id);
        await identity.repo.deleteUserSessions(t.id, creds.user.id);
        store.audit?.record({ type: 'config.change', component: 'config', fields: { actor: actor(), action: 'tenant.reset-password', target: `${username}@${t.slug}`, changed: ['credential', 'change-required'] } });
        print(
          o.json,
          { event: 'tenant.password-reset', tenant: t.slug, id: creds.user.id, username, temporaryPassword: password, mustChangePassword: true },
          `reset the password of ${username} in ${t.slug}\ntemporary password (shown once; must be changed at the first sign-in):\n${password}\n`,
        );
      });
    },
  );

  addOptions(tenant.command('sso-set').description('store the tenant’s single sign-on configuration (OIDC/SAML) from a JSON file; the client secret is sealed, never printed').argument('<tenant>'))
    .requiredOption('--file <file>', 'the configuration (JSON: oidc, saml, ssoRequiredForAdmins; see docs/platform-sso.md)')
    .option('--key-file <file>', 'the platform key file that seals the secret (default: the MFA key of the configuration or data directory)')
    .action(async (slug: string, o: JsonOpts & { file: string; keyFile?: string }) => {
      const input = readSsoFile(o.file);
      const box = await platformBox(o);
      await withStore(o, false, async ({ store, identity }) => {
        const t = await tenantOf(identity, slug);
        const configs = new DatabaseSsoConfigSource({ database: store.database, box });
        const { config, changed } = await configs.put(t.id, input);
        store.audit?.record({ type: 'config.change', component: 'config', fields: { actor: actor(), action: 'tenant.sso-set', target: t.slug, changed } });
        const view = await configs.view(t.id);
        print(o.json, { event: 'tenant.sso-set', tenant: t.slug, changed, sso: view ?? null }, `stored the single sign-on configuration of ${t.slug} (${[config.oidc ? 'OIDC' : '', config.saml ? 'SAML' : ''].filter((x) => x !== '').join(' and ') || 'no method'})\n${ssoSummary(view)}`);
      });
    });

  addOptions(tenant.command('sso-show').description('show the tenant’s single sign-on configuration (the client secret only as set)').argument('<tenant>')).action(async (slug: string, o: JsonOpts) => {
    await withStore(o, false, async ({ store, identity }) => {
      const t = await tenantOf(identity, slug);
      // reading the view opens no secret: any key will do
      const view = await new DatabaseSsoConfigSource({ database: store.database, box: AesGcmSecretBox.random() }).view(t.id);
      print(o.json, { tenant: t.slug, sso: view ?? null }, ssoSummary(view));
    });
  });

  addOptions(tenant.command('sso-clear').description('remove the tenant’s single sign-on configuration (password sign-in only afterwards)').argument('<tenant>')).action(async (slug: string, o: JsonOpts) => {
    await withStore(o, false, async ({ store, identity }) => {
      const t = await tenantOf(identity, slug);
      const removed = await new DatabaseSsoConfigSource({ database: store.database, box: AesGcmSecretBox.random() }).delete(t.id);
      if (removed) store.audit?.record({ type: 'config.change', component: 'config', fields: { actor: actor(), action: 'tenant.sso-clear', target: t.slug } });
      print(o.json, { event: 'tenant.sso-cleared', tenant: t.slug, removed }, removed ? `removed the single sign-on configuration of ${t.slug}\n` : `${t.slug} had no single sign-on configuration\n`);
    });
  });
}
