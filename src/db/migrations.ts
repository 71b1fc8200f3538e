/**
 * Numbered schema migrations, applied in order when a database is opened. Names are
 * `NNNN_what`; a new migration takes the next number and is never edited once released
 * (a database records the names it has applied in `tachyon_migration`). Each migration
 * uses only portable DDL so that SQLite and PostgreSQL end up with the same tables.
 */
import { sql, type Kysely, type Migration } from 'kysely';

/** The table where applied migrations are recorded (and its lock table). */
export const MIGRATION_TABLE = 'tachyon_migration';
export const MIGRATION_LOCK_TABLE = 'tachyon_migration_lock';

/* eslint-disable @typescript-eslint/no-explicit-any -- migrations run against the schema as it was, not TachyonSchema */
const m0001: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('transfer_user')
      .addColumn('name', 'text', (c) => c.primaryKey())
      .addColumn('docroot', 'text', (c) => c.notNull())
      .addColumn('permissions', 'text', (c) => c.notNull())
      .addColumn('ciphers', 'text', (c) => c.notNull())
      .addColumn('policies', 'text', (c) => c.notNull())
      .addColumn('max_rate_bps', 'bigint')
      .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('user_key')
      .addColumn('fingerprint', 'text', (c) => c.primaryKey())
      .addColumn('user_name', 'text', (c) => c.notNull().references('transfer_user.name').onDelete('cascade'))
      .addColumn('type', 'text', (c) => c.notNull())
      .addColumn('blob', 'text', (c) => c.notNull())
      .addColumn('comment', 'text', (c) => c.notNull().defaultTo(sql.lit('')))
      .addColumn('added_at', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('user_key_user_name').on('user_key').column('user_name').execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('user_key').execute();
    await db.schema.dropTable('transfer_user').execute();
  },
};

/** Access keys of the node API (src/node-api/access-keys.ts); secrets only as argon2id hashes. */
const m0002: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('access_key')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('kind', 'text', (c) => c.notNull())
      .addColumn('storage_root', 'text')
      .addColumn('permissions', 'text', (c) => c.notNull())
      .addColumn('description', 'text', (c) => c.notNull().defaultTo(sql.lit('')))
      .addColumn('secret_hash', 'text', (c) => c.notNull())
      .addColumn('secret_version', 'integer', (c) => c.notNull())
      .addColumn('previous_secret_hash', 'text')
      .addColumn('previous_valid_until', 'text')
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .addColumn('revoked_at', 'text')
      .execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('access_key').execute();
  },
};

/** Finished transfers, as the transfer monitor (src/server/monitor.ts) records them. */
const m0003: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('transfer')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('correlation_id', 'text', (c) => c.notNull())
      .addColumn('user_name', 'text', (c) => c.notNull())
      .addColumn('access_key_id', 'text')
      .addColumn('direction', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('code', 'text')
      .addColumn('message', 'text')
      .addColumn('client_address', 'text', (c) => c.notNull())
      .addColumn('cipher', 'text', (c) => c.notNull())
      .addColumn('started_at', 'text', (c) => c.notNull())
      .addColumn('ended_at', 'text', (c) => c.notNull())
      .addColumn('files', 'integer', (c) => c.notNull())
      .addColumn('bytes', 'bigint', (c) => c.notNull())
      .addColumn('total_bytes', 'bigint', (c) => c.notNull())
      .addColumn('skipped_bytes', 'bigint', (c) => c.notNull())
      .addColumn('duration_ms', 'bigint', (c) => c.notNull())
      .addColumn('datagrams', 'bigint', (c) => c.notNull())
      .addColumn('retransmits', 'bigint')
      .addColumn('detail', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('transfer_started_at').on('transfer').column('started_at').execute();
    await db.schema.createIndex('transfer_user_name').on('transfer').column('user_name').execute();
    await db.schema.createIndex('transfer_access_key_id').on('transfer').column('access_key_id').execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('transfer').execute();
  },
};

/** A transfer user may be required to upload only client-side encrypted files (issue #5). */
const m0004: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .alterTable('transfer_user')
      .addColumn('require_encrypted_at_rest', 'integer', (c) => c.notNull().defaultTo(0))
      .execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.alterTable('transfer_user').dropColumn('require_encrypted_at_rest').execute();
  },
};

/**
 * The web platform's identity (src/platform): tenants, their users, groups and roles,
 * web sessions (only the SHA-256 of a session token is stored), each tenant's password
 * and session policy, and the platform's hash-chained audit records (one JSON line each,
 * the audit log's format). Every row but a role's carries its tenant.
 */
const m0005: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('platform_tenant')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('slug', 'text', (c) => c.notNull().unique())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('platform_user')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('tenant_id', 'text', (c) => c.notNull().references('platform_tenant.id').onDelete('cascade'))
      .addColumn('username', 'text', (c) => c.notNull())
      .addColumn('display_name', 'text', (c) => c.notNull().defaultTo(sql.lit('')))
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('password_hash', 'text')
      .addColumn('must_change_password', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('password_changed_at', 'text')
      .addColumn('failed_count', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('failed_window_start', 'text')
      .addColumn('locked_until', 'text')
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .addUniqueConstraint('platform_user_tenant_username', ['tenant_id', 'username'])
      .execute();
    await db.schema
      .createTable('platform_role')
      .addColumn('name', 'text', (c) => c.primaryKey())
      .addColumn('description', 'text', (c) => c.notNull())
      .execute();
    await db
      .insertInto('platform_role')
      .values([
        { name: 'tenant_admin', description: 'Manages the tenant: users, roles, policies; reads its audit log.' },
        { name: 'member', description: 'Uses the platform; manages only its own account and sessions.' },
        { name: 'auditor', description: 'Reads users, policies and the audit log; changes nothing.' },
      ])
      .execute();
    await db.schema
      .createTable('platform_user_role')
      .addColumn('tenant_id', 'text', (c) => c.notNull().references('platform_tenant.id').onDelete('cascade'))
      .addColumn('user_id', 'text', (c) => c.notNull().references('platform_user.id').onDelete('cascade'))
      .addColumn('role', 'text', (c) => c.notNull().references('platform_role.name'))
      .addPrimaryKeyConstraint('platform_user_role_pk', ['user_id', 'role'])
      .execute();
    await db.schema
      .createTable('platform_group')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('tenant_id', 'text', (c) => c.notNull().references('platform_tenant.id').onDelete('cascade'))
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addUniqueConstraint('platform_group_tenant_name', ['tenant_id', 'name'])
      .execute();
    await db.schema
      .createTable('platform_group_member')
      .addColumn('tenant_id', 'text', (c) => c.notNull().references('platform_tenant.id').onDelete('cascade'))
      .addColumn('group_id', 'text', (c) => c.notNull().references('platform_group.id').onDelete('cascade'))
      .addColumn('user_id', 'text', (c) => c.notNull().references('platform_user.id').onDelete('cascade'))
      .addPrimaryKeyConstraint('platform_group_member_pk', ['group_id', 'user_id'])
      .execute();
    await db.schema
      .createTable('platform_session')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('token_sha256', 'text', (c) => c.notNull().unique())
      .addColumn('tenant_id', 'text', (c) => c.notNull().references('platform_tenant.id').onDelete('cascade'))
      .addColumn('user_id', 'text', (c) => c.notNull().references('platform_user.id').onDelete('cascade'))
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('last_seen_at', 'text', (c) => c.notNull())
      .addColumn('expires_at', 'text', (c) => c.notNull())
      .addColumn('client_address', 'text', (c) => c.notNull())
      .addColumn('user_agent', 'text', (c) => c.notNull().defaultTo(sql.lit('')))
      .execute();
    await db.schema.createIndex('platform_session_user').on('platform_session').columns(['tenant_id', 'user_id']).execute();
    await db.schema
      .createTable('platform_audit')
      .addColumn('seq', 'bigint', (c) => c.primaryKey())
      .addColumn('id', 'text', (c) => c.notNull().unique())
      .addColumn('ts', 'text', (c) => c.notNull())
      .addColumn('tenant', 'text', (c) => c.notNull().defaultTo(sql.lit('')))
      .addColumn('type', 'text', (c) => c.notNull())
      .addColumn('severity', 'text', (c) => c.notNull())
      .addColumn('correlation_id', 'text')
      .addColumn('line', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('platform_audit_tenant').on('platform_audit').columns(['tenant', 'seq']).execute();
    await db.schema
      .createTable('platform_policy')
      .addColumn('tenant_id', 'text', (c) => c.primaryKey().references('platform_tenant.id').onDelete('cascade'))
      .addColumn('policy', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .execute();
  },
  async down(db: Kysely<any>) {
    for (const t of ['platform_policy', 'platform_audit', 'platform_session', 'platform_group_member', 'platform_group', 'platform_user_role', 'platform_role', 'platform_user', 'platform_tenant']) {
      await db.schema.dropTable(t).execute();
    }
  },
};
/**
 * The web platform's second factor (src/platform/mfa): one TOTP enrolment per (tenant,
 * user) — pending until a first code confirms it — with its shared secret sealed by the
 * server key (AES-256-GCM, bound to tenant and user), the last time step accepted
 * (replay protection) and the wrong-code counter; and the recovery codes, only as salted
 * SHA-256 hashes. Keyed by the identity's ids as text, without foreign keys, so the
 * module stands on its own.
 */
const m0007: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('mfa_totp')
      .addColumn('tenant_id', 'text', (c) => c.notNull())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('secret_sealed', 'text', (c) => c.notNull())
      .addColumn('last_step', 'bigint')
      .addColumn('failed_count', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('failed_window_start', 'text')
      .addColumn('locked_until', 'text')
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('confirmed_at', 'text')
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('mfa_totp_pk', ['tenant_id', 'user_id'])
      .execute();
    await db.schema
      .createTable('mfa_recovery_code')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('tenant_id', 'text', (c) => c.notNull())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('salt', 'text', (c) => c.notNull())
      .addColumn('code_hash', 'text', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('used_at', 'text')
      .execute();
    await db.schema.createIndex('mfa_recovery_code_owner').on('mfa_recovery_code').columns(['tenant_id', 'user_id']).execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('mfa_recovery_code').execute();
    await db.schema.dropTable('mfa_totp').execute();
  },
};
/** Blocked source addresses of the IP defender (src/defender), shared by every process on the database. */
const m0006: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('defender_block')
      .addColumn('address', 'text', (c) => c.primaryKey())
      .addColumn('score', 'integer', (c) => c.notNull())
      .addColumn('ban_count', 'integer', (c) => c.notNull())
      .addColumn('blocked_until', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('defender_block_until').on('defender_block').column('blocked_until').execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('defender_block').execute();
  },
};

/**
 * Sign-in with a second factor: each web session has a stage — `full`, `mfa` (the
 * password was right, a TOTP or recovery code is still due) or `enrol` (an account that
 * must have TOTP and has none may only enrol). Existing sessions are full. (The tenant's
 * `requireTotp` and `ssoJustInTime` live in the policy's JSON, which needs no column.)
 * The link of a single sign-on identity — (tenant, issuer, subject) — to its user. And
 * API tokens for scripts: only the token's SHA-256 is stored, with its scopes and expiry.
 */
const m0008: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.alterTable('platform_session').addColumn('stage', 'text', (c) => c.notNull().defaultTo('full')).execute();
    await db.schema
      .createTable('platform_sso_link')
      .addColumn('tenant_id', 'text', (c) => c.notNull())
      .addColumn('issuer', 'text', (c) => c.notNull())
      .addColumn('subject', 'text', (c) => c.notNull())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('platform_sso_link_pk', ['tenant_id', 'issuer', 'subject'])
      .execute();
    await db.schema
      .createTable('platform_api_token')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('token_sha256', 'text', (c) => c.notNull().unique())
      .addColumn('tenant_id', 'text', (c) => c.notNull())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('scopes', 'text', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('expires_at', 'text', (c) => c.notNull())
      .addColumn('last_used_at', 'text')
      .execute();
    await db.schema.createIndex('platform_api_token_owner').on('platform_api_token').columns(['tenant_id', 'user_id']).execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('platform_api_token').execute();
    await db.schema.dropTable('platform_sso_link').execute();
    await db.schema.alterTable('platform_session').dropColumn('stage').execute();
  },
};
/**
 * The web platform's per-tenant IP allow-list (src/platform/allow-list-store.ts): the
 * tenant's CIDR blocks as a JSON array; no row (or an empty array) means no list.
 */
const m0009: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('platform_allow_list')
      .addColumn('tenant_id', 'text', (c) => c.primaryKey())
      .addColumn('cidrs', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .addColumn('updated_by', 'text', (c) => c.notNull().defaultTo(sql.lit('')))
      .execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('platform_allow_list').execute();
  },
};
/**
 * Failed sign-ins counted per (tenant, user, source address) for tenants whose policy
 * says `lockoutScope: 'address'` (src/platform/policy.ts): the same counter, window and
 * lock as the account's own columns, but one per address key (IPv4, or IPv6 /64).
 */
const m0010: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('platform_address_lockout')
      .addColumn('tenant_id', 'text', (c) => c.notNull())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('address', 'text', (c) => c.notNull())
      .addColumn('failed_count', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('failed_window_start', 'text')
      .addColumn('locked_until', 'text')
      .addPrimaryKeyConstraint('platform_address_lockout_pk', ['tenant_id', 'user_id', 'address'])
      .execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('platform_address_lockout').execute();
  },
};
/**
 * Per-tenant single sign-on configuration (src/platform/sso/config-store.ts): the
 * validated configuration as JSON without the OIDC client secret, which is kept sealed
 * by the platform's SecretBox (bound to the tenant) in its own column. `revision` changes
 * at every write (readers cache by it).
 */
const m0011: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable('platform_sso_config')
      .addColumn('tenant_id', 'text', (c) => c.primaryKey())
      .addColumn('config', 'text', (c) => c.notNull())
      .addColumn('oidc_secret_sealed', 'text')
      .addColumn('revision', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.dropTable('platform_sso_config').execute();
  },
};
/**
 * When each web session's user last proved who they are (password sign-in, TOTP step,
 * SSO, or re-authentication): sensitive changes need a recent proof
 * (src/platform/routes.ts `reauth`). Null on sessions from before: their `created_at`.
 */
const m0012: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.alterTable('platform_session').addColumn('authenticated_at', 'text').execute();
  },
  async down(db: Kysely<any>) {
    await db.schema.alterTable('platform_session').dropColumn('authenticated_at').execute();
  },
};
/* eslint-enable @typescript-eslint/no-explicit-any */

/** Every migration, by name. Names sort in the order they apply. */
export const MIGRATIONS: Readonly<Record<string, Migration>> = Object.freeze({
  '0001_transfer_users': m0001,
  '0002_access_keys': m0002,
  '0003_transfers': m0003,
  '0004_user_encryption_policy': m0004,
  '0005_platform_identity': m0005,
  '0006_defender': m0006,
  '0007_mfa': m0007,
  '0008_platform_signin': m0008,
  '0009_platform_allow_list': m0009,
  '0010_platform_address_lockout': m0010,
  '0011_platform_sso_config': m0011,
  '0012_platform_session_reauth': m0012,
});
