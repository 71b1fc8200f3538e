/**
 * The `Database` seam: Tachyon's schema behind one kysely query builder, over the
 * embedded SQLite file (better-sqlite3, the default) or PostgreSQL (pg, loaded only when
 * a `postgres://` URL is opened). Opening applies the numbered migrations; every error
 * that leaves a query is a TachyonError (see {@link translateDbError}).
 *
 * Real adapter: `openDatabase({ url: 'sqlite:///…' | 'postgres://…' })`. Test adapter:
 * the same code on `sqlite::memory:` (a private in-memory database).
 */
import { closeSync, existsSync, mkdirSync, openSync, statSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import type { Pool as PgPool } from 'pg';
import {
  CompiledQuery,
  Kysely,
  Migrator,
  PostgresDialect,
  sql,
  SqliteDialect,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Migration,
  type QueryCompiler,
  type QueryResult,
  type TransactionSettings,
} from 'kysely';
import { TachyonError } from '../core/errors.js';
import { MIGRATION_LOCK_TABLE, MIGRATION_TABLE, MIGRATIONS } from './migrations.js';
import type { TachyonSchema } from './schema.js';
import { DEFAULT_BUSY_TIMEOUT_MS, describeLocation, parseDatabaseUrl, type DatabaseLocation } from './url.js';

/** An open database with Tachyon's schema at the version this code knows. */
export interface Database {
  /** The engine behind it. */
  readonly kind: 'sqlite' | 'postgres';
  /** Where it is, safe to print (a file path, or the URL without its password). */
  readonly location: string;
  /**
   * The query builder. Queries and transactions on it reject with TachyonErrors only:
   * `DB_UNAVAILABLE` (locked, unreachable, not a database), `EXISTS` (unique key),
   * `NOT_FOUND` (foreign key), `DISK_FULL`, `IO`, else `INTERNAL`.
   */
  readonly db: Kysely<TachyonSchema>;
  /** Names of the migrations applied, in order (the schema version is the last). */
  readonly migrations: readonly string[];
  /** Closes the connection(s). The object is unusable afterwards. */
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** `sqlite:///path/file.db`, `sqlite::memory:`, `postgres://…` (see url.ts), or a parsed location. */
  url: string | DatabaseLocation;
  /**
   * Create the SQLite file (mode 0600, its directory 0700) if it does not exist. When
   * false, a missing file is `DB_UNAVAILABLE`. Default true. PostgreSQL databases must
   * exist either way.
   */
  create?: boolean;
  /**
   * How long a write waits for a lock held by another connection before failing with
   * `DB_UNAVAILABLE` (SQLite busy_timeout; PostgreSQL lock_timeout). Default: the URL's
   * `busy_timeout`, else {@link DEFAULT_BUSY_TIMEOUT_MS}.
   */
  busyTimeoutMs?: number;
  /** The migrations to apply (default: Tachyon's). For tests and tools. */
  migrations?: Readonly<Record<string, Migration>>;
}

/**
 * Opens (and, for SQLite, by default creates) the database and brings its schema up to
 * date.
 *
 * @throws TachyonError `CONFIG` for a malformed URL or a database whose schema is newer
 *   than this code; `DB_UNAVAILABLE` when it is missing (with `create: false`), unreadable,
 *   not a database, locked beyond the busy timeout, or unreachable.
 */
export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  const loc = typeof options.url === 'string' ? parseDatabaseUrl(options.url) : options.url;
  const where = describeLocation(loc);
  const busyTimeoutMs = options.busyTimeoutMs ?? (loc.kind === 'sqlite' ? loc.busyTimeoutMs : undefined) ?? DEFAULT_BUSY_TIMEOUT_MS;
  const ctx: ErrorContext = { where, kind: loc.kind === 'postgres' ? 'postgres' : 'sqlite', busyTimeoutMs };
  let inner: Dialect;
  if (loc.kind === 'postgres') {
    inner = await postgresDialect(loc.url, busyTimeoutMs);
  } else {
    const sqlite = openSqlite(loc.kind === 'sqlite' ? loc.file : ':memory:', options.create ?? true, busyTimeoutMs, ctx);
    inner = new SqliteDialect({ database: sqlite });
  }
  const db = new Kysely<TachyonSchema>({ dialect: new TranslatingDialect(inner, ctx) });
  try {
    if (loc.kind === 'postgres') await db.executeQuery(CompiledQuery.raw('select 1'));
    const applied = await migrate(db, ctx.kind, options.migrations ?? MIGRATIONS, where);
    return Object.freeze({
      kind: ctx.kind,
      location: where,
      db,
      migrations: Object.freeze(applied),
      close: () => db.destroy(),
    });
  } catch (err) {
    await db.destroy().catch(() => undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------
// SQLite

function unavailable(ctx: ErrorContext, message: string, cause?: unknown): TachyonError {
  return new TachyonError('DB_UNAVAILABLE', message, { ...(cause !== undefined ? { cause } : {}), details: { database: ctx.where } });
}

function openSqlite(file: string, create: boolean, busyTimeoutMs: number, ctx: ErrorContext): BetterSqlite3.Database {
  if (file !== ':memory:') {
    if (!existsSync(file)) {
      if (!create) {
        throw unavailable(ctx, `no database at ${file}: check the path (--db or the config's "database"), or create it with 'tachyon user add'`);
      }
      try {
        mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
        closeSync(openSync(file, 'wx', 0o600));
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code !== 'EEXIST') throw unavailable(ctx, `cannot create the database ${file}: ${e.message}`, err);
      }
    } else if (statSync(file).isDirectory()) {
      throw unavailable(ctx, `the database path ${file} is a directory, not a database file`);
    }
  }
  let sqlite: BetterSqlite3.Database | undefined;
  try {
    sqlite = new BetterSqlite3(file, { fileMustExist: file !== ':memory:', timeout: busyTimeoutMs });
    // WAL: readers never wait for the writer; the -wal and -shm files take the database
    // file's permissions. NORMAL sync is durable across process crashes in WAL mode.
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
    return sqlite;
  } catch (err) {
    sqlite?.close();
    throw translateDbError(err, ctx);
  }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

async function postgresDialect(url: string, busyTimeoutMs: number): Promise<Dialect> {
  let Pool: typeof PgPool;
  try {
    ({ Pool } = (await import('pg')).default);
  } catch (err) {
    throw new TachyonError('CONFIG', `PostgreSQL support needs the 'pg' package (npm install pg): ${(err as Error).message}`, { cause: err });
  }
  const pool = new Pool({
    connectionString: url,
    max: 10,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    lock_timeout: busyTimeoutMs,
  });
  // An idle connection that breaks emits 'error' on the pool; without a listener that
  // would end the process. The next query reports the failure (DB_UNAVAILABLE).
  pool.on('error', () => undefined);
  return new PostgresDialect({ pool });
}

// ---------------------------------------------------------------------------------------
// Migrations

/**
 * The PostgreSQL schema the tables live in (the first on the search_path); undefined for
 * SQLite. Migrations are recorded there, so that two Tachyon databases in two schemas of
 * one PostgreSQL database stay apart.
 */
async function currentSchema(db: Kysely<TachyonSchema>, kind: 'sqlite' | 'postgres'): Promise<string | undefined> {
  if (kind !== 'postgres') return undefined;
  const r = await sql<{ s: string | null }>`select current_schema() as s`.execute(db);
  const s = r.rows[0]?.s;
  if (!s) throw new TachyonError('CONFIG', 'the PostgreSQL search_path names no existing schema; create the schema or fix search_path');
  return s;
}

async function appliedMigrations(db: Kysely<TachyonSchema>, schema: string | undefined): Promise<string[]> {
  const exists =
    schema === undefined
      ? (await sql<{ n: number }>`select count(*) as n from sqlite_master where type = 'table' and name = ${MIGRATION_TABLE}`.execute(db)).rows[0]?.n
      : (await sql<{ n: number }>`select count(*)::int as n from information_schema.tables where table_schema = ${schema} and table_name = ${MIGRATION_TABLE}`.execute(db)).rows[0]?.n;
  if (Number(exists) === 0) return [];
  const table = schema === undefined ? sql.table(MIGRATION_TABLE) : sql.table(`${schema}.${MIGRATION_TABLE}`);
  const rows = await sql<{ name: string }>`select name from ${table} order by name`.execute(db);
  return rows.rows.map((r) => r.name);
}

async function migrate(db: Kysely<TachyonSchema>, kind: 'sqlite' | 'postgres', migrations: Readonly<Record<string, Migration>>, where: string): Promise<string[]> {
  const known = Object.keys(migrations).sort();
  const schema = await currentSchema(db, kind);
  const applied = await appliedMigrations(db, schema);
  const unknown = applied.filter((n) => !known.includes(n));
  if (unknown.length > 0) {
    throw new TachyonError(
      'CONFIG',
      `the database ${where} has schema ${applied[applied.length - 1] ?? unknown[0]}, newer than this Tachyon knows (${known[known.length - 1] ?? 'none'}): upgrade Tachyon, or point it at another database`,
      { details: { database: where, unknownMigrations: unknown } },
    );
  }
  if (known.every((n) => applied.includes(n))) return applied;
  const migrator = new Migrator({
    db,
    provider: { getMigrations: () => Promise.resolve({ ...migrations }) },
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: MIGRATION_LOCK_TABLE,
    // numbers are taken by parallel work (0006 may land before 0005): each migration is independent
    allowUnorderedMigrations: true,
    ...(schema !== undefined ? { migrationTableSchema: schema } : {}),
  });
  const result = await migrator.migrateToLatest();
  if (result.error !== undefined) {
    if (result.error instanceof TachyonError) throw result.error;
    const failed = result.results?.find((r) => r.status === 'Error')?.migrationName;
    throw new TachyonError('INTERNAL', `cannot bring the database ${where} up to date${failed ? ` (migration ${failed})` : ''}: ${String((result.error as Error)?.message ?? result.error)}`, {
      cause: result.error,
    });
  }
  return appliedMigrations(db, schema);
}

// ---------------------------------------------------------------------------------------
// Error translation

interface ErrorContext {
  readonly where: string;
  readonly kind: 'sqlite' | 'postgres';
  readonly busyTimeoutMs: number;
}

const NET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

/**
 * Turns an error from better-sqlite3 or pg into a TachyonError: locks and timeouts,
 * unreachable servers, missing or foreign files → `DB_UNAVAILABLE`; unique violations →
 * `EXISTS`; foreign-key violations → `NOT_FOUND`; a full disk → `DISK_FULL`; I/O → `IO`;
 * anything else (a query the code got wrong) → `INTERNAL`. The message names the
 * database (never a password); the public message stays the code's summary.
 */
export function translateDbError(err: unknown, ctx: ErrorContext): TachyonError {
  if (err instanceof TachyonError) return err;
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const code = typeof e?.code === 'string' ? e.code : '';
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  const opts = { cause: err, details: { database: ctx.where, dbCode: code } };
  const make = (c: 'DB_UNAVAILABLE' | 'EXISTS' | 'NOT_FOUND' | 'DISK_FULL' | 'IO' | 'INTERNAL', text: string): TachyonError => new TachyonError(c, text, opts);
  if (ctx.kind === 'sqlite' || code.startsWith('SQLITE_')) {
    if (/^SQLITE_(BUSY|LOCKED)/.test(code)) {
      return make('DB_UNAVAILABLE', `the database ${ctx.where} is locked by another process (waited ${ctx.busyTimeoutMs} ms); try again, or stop the process that holds it`);
    }
    if (code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE') return make('EXISTS', `already exists: ${msg}`);
    if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') return make('NOT_FOUND', `refers to a record that does not exist: ${msg}`);
    if (code === 'SQLITE_NOTADB') return make('DB_UNAVAILABLE', `${ctx.where} is not an SQLite database (${msg}); check the path`);
    if (code.startsWith('SQLITE_CORRUPT')) return make('DB_UNAVAILABLE', `the database ${ctx.where} is corrupt (${msg}); restore it from a backup`);
    if (/^SQLITE_(CANTOPEN|PERM|READONLY|AUTH)/.test(code)) {
      return make('DB_UNAVAILABLE', `cannot open the database ${ctx.where} for reading and writing (${msg}); check the path and its permissions`);
    }
    if (code === 'SQLITE_FULL') return make('DISK_FULL', `the disk holding ${ctx.where} is full`);
    if (code.startsWith('SQLITE_IOERR')) return make('IO', `I/O error on the database ${ctx.where}: ${msg}`);
    return make('INTERNAL', `database error on ${ctx.where}: ${msg}`);
  }
  // PostgreSQL: SQLSTATE classes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
  if (code === '23505') return make('EXISTS', `already exists: ${msg}`);
  if (code === '23503') return make('NOT_FOUND', `refers to a record that does not exist: ${msg}`);
  if (code === '55P03' || code === '40001' || code === '40P01' || code === '57014') {
    return make('DB_UNAVAILABLE', `the database ${ctx.where} is busy (${msg}); try again`);
  }
  if (code === '53100') return make('DISK_FULL', `the disk of the database server ${ctx.where} is full`);
  if (/^(08|28|3D|53|57P)/.test(code) || NET_CODES.has(code) || /connection terminated|timeout exceeded when trying to connect|Connection ended/i.test(msg)) {
    return make('DB_UNAVAILABLE', `cannot use the database ${ctx.where}: ${msg}`);
  }
  return make('INTERNAL', `database error on ${ctx.where}: ${msg}`);
}

/** A dialect whose driver translates every error into a TachyonError. */
class TranslatingDialect implements Dialect {
  constructor(
    private readonly inner: Dialect,
    private readonly ctx: ErrorContext,
  ) {}

  createDriver(): Driver {
    return new TranslatingDriver(this.inner.createDriver(), this.ctx);
  }
  createQueryCompiler(): QueryCompiler {
    return this.inner.createQueryCompiler();
  }
  createAdapter(): ReturnType<Dialect['createAdapter']> {
    return this.inner.createAdapter();
  }
  createIntrospector(db: Kysely<unknown>): ReturnType<Dialect['createIntrospector']> {
    return this.inner.createIntrospector(db);
  }
}

class TranslatingConnection implements DatabaseConnection {
  constructor(
    readonly inner: DatabaseConnection,
    private readonly ctx: ErrorContext,
  ) {}

  async executeQuery<R>(q: CompiledQuery): Promise<QueryResult<R>> {
    try {
      return await this.inner.executeQuery<R>(q);
    } catch (err) {
      throw translateDbError(err, this.ctx);
    }
  }

  async *streamQuery<R>(q: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    try {
      yield* this.inner.streamQuery<R>(q, chunkSize);
    } catch (err) {
      throw translateDbError(err, this.ctx);
    }
  }
}

function unwrap(c: DatabaseConnection): DatabaseConnection {
  return c instanceof TranslatingConnection ? c.inner : c;
}

class TranslatingDriver implements Driver {
  constructor(
    private readonly inner: Driver,
    private readonly ctx: ErrorContext,
  ) {}

  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw translateDbError(err, this.ctx);
    }
  }

  init(): Promise<void> {
    return this.guard(() => this.inner.init());
  }
  async acquireConnection(): Promise<DatabaseConnection> {
    return new TranslatingConnection(await this.guard(() => this.inner.acquireConnection()), this.ctx);
  }
  beginTransaction(c: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    // SQLite: take the write lock at BEGIN (IMMEDIATE), so that a transaction waits for
    // another writer within the busy timeout instead of failing when it first writes.
    if (this.ctx.kind === 'sqlite') return this.guard(() => unwrap(c).executeQuery(CompiledQuery.raw('begin immediate')).then(() => undefined));
    return this.guard(() => this.inner.beginTransaction(unwrap(c), settings));
  }
  commitTransaction(c: DatabaseConnection): Promise<void> {
    return this.guard(() => this.inner.commitTransaction(unwrap(c)));
  }
  rollbackTransaction(c: DatabaseConnection): Promise<void> {
    return this.guard(() => this.inner.rollbackTransaction(unwrap(c)));
  }
  savepoint(c: DatabaseConnection, name: string, compile: QueryCompiler['compileQuery']): Promise<void> {
    return this.guard(async () => {
      if (!this.inner.savepoint) throw new Error('the driver does not support savepoints');
      await this.inner.savepoint(unwrap(c), name, compile);
    });
  }
  rollbackToSavepoint(c: DatabaseConnection, name: string, compile: QueryCompiler['compileQuery']): Promise<void> {
    return this.guard(async () => {
      if (!this.inner.rollbackToSavepoint) throw new Error('the driver does not support savepoints');
      await this.inner.rollbackToSavepoint(unwrap(c), name, compile);
    });
  }
  releaseSavepoint(c: DatabaseConnection, name: string, compile: QueryCompiler['compileQuery']): Promise<void> {
    return this.guard(async () => {
      if (!this.inner.releaseSavepoint) throw new Error('the driver does not support savepoints');
      await this.inner.releaseSavepoint(unwrap(c), name, compile);
    });
  }
  releaseConnection(c: DatabaseConnection): Promise<void> {
    return this.inner.releaseConnection(unwrap(c));
  }
  destroy(): Promise<void> {
    return this.inner.destroy();
  }
}
