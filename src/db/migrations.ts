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
/* eslint-enable @typescript-eslint/no-explicit-any */

/** Every migration, by name. Names sort in the order they apply. */
export const MIGRATIONS: Readonly<Record<string, Migration>> = Object.freeze({
  '0001_transfer_users': m0001,
  '0002_access_keys': m0002,
  '0003_transfers': m0003,
  '0004_user_encryption_policy': m0004,
  '0006_defender': m0006,
});
