/**
 * The transfer-user repository: users and their SSH keys in Tachyon's database (the
 * `Database` seam of src/db, SQLite or PostgreSQL; only portable queries here).
 *
 * Every value is validated when it is set: names (model.ts), docroots against the
 * server's allowed storage roots (storage-roots.ts), ciphers against the server's cipher
 * policy, keys with the authorized_keys parser. A key belongs to at most one user.
 *
 * The SSH server needs only {@link UserDirectory}: `authorizeKey` / `findUserForKey`.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import { systemClock, type Clock } from '../../core/clock.js';
import { TachyonError } from '../../core/errors.js';
import { CIPHERS, POLICIES, type CipherName, type RatePolicy } from '../../core/types.js';
import { fingerprintOf, normalizeFingerprint } from '../../control/hostkeys.js';
import type { Database } from '../../db/database.js';
import type { TachyonSchema, TransferUserTable, UserKeyTable } from '../../db/schema.js';
import {
  DEFAULT_CIPHER_POLICY,
  DEFAULT_PERMISSIONS,
  DEFAULT_POLICIES,
  noSuchUser,
  parsePublicKeys,
  permittedCiphers,
  PERMISSIONS,
  USER_NAME_PATTERN,
  validateCiphers,
  validateMaxRate,
  validatePermissions,
  validatePolicies,
  validateUserName,
  type CipherPolicy,
  type NewUser,
  type TransferUser,
  type UserKey,
  type UserSettings,
} from './model.js';
import { checkDocroot, fieldError, type RootPattern } from './storage-roots.js';

/** Outcome of a key check, with the reason of a refusal (for the audit log, never for the client). */
export type KeyCheck =
  | { readonly ok: true; readonly user: TransferUser; readonly fingerprint: string }
  | {
      readonly ok: false;
      readonly reason: 'unknown-user' | 'unknown-key' | 'key-of-other-user' | 'disabled';
      readonly fingerprint: string;
    };

/** What the SSH server asks of the users: may this key log in as this name? */
export interface UserDirectory {
  /** Checks that `name` exists, is enabled, and owns the key `keyBlob` (SSH wire format). */
  authorizeKey(name: string, keyBlob: Buffer): Promise<KeyCheck>;
  /** The user, only if enabled and the owner of the key; else undefined. */
  findUserForKey(name: string, keyBlob: Buffer): Promise<TransferUser | undefined>;
}

/** A change made through the repository (for the audit log; holds no secret). */
export interface UserChangeEvent {
  readonly type: 'user.add' | 'user.update' | 'user.remove' | 'user.key.add' | 'user.key.remove';
  readonly user: string;
  /** user.update: the fields that changed. */
  readonly fields?: readonly string[];
  /** user.key.*: the key's fingerprint. */
  readonly fingerprint?: string;
}

export interface UserRepositoryOptions {
  /** Patterns a docroot must match when it is set (see storage-roots.ts). */
  readonly allowedRoots: readonly RootPattern[];
  /** The server's cipher policy; a user's cipher list must stay within it. Default: AES-GCM only. */
  readonly cipherPolicy?: CipherPolicy;
  /** For created/updated/added-at timestamps. Default: the system clock. */
  readonly clock?: Clock;
  /** Called after each committed change. */
  readonly onChange?: (e: UserChangeEvent) => void;
}

/** Declared users (e.g. inline in the server configuration) applied by {@link UserRepository.applyDeclared}. */
export interface ApplyResult {
  readonly added: readonly string[];
  readonly updated: readonly string[];
  readonly unchanged: readonly string[];
}

type UserRow = Selectable<TransferUserTable>;
type KeyRow = Selectable<UserKeyTable>;
type Tx = Kysely<TachyonSchema>;

function corrupt(what: string, value: unknown): TachyonError {
  return new TachyonError('INTERNAL', `the database holds an invalid ${what}: ${JSON.stringify(value)?.slice(0, 80)}`);
}

function parseStoredList<T extends string>(text: string, allowed: readonly T[], what: string): T[] {
  const items = text === '' ? [] : text.split(',');
  for (const i of items) if (!(allowed as readonly string[]).includes(i)) throw corrupt(what, text);
  return items as T[];
}

function toKey(r: KeyRow): UserKey {
  return Object.freeze({ type: r.type, blob: Buffer.from(r.blob, 'base64'), fingerprint: r.fingerprint, comment: r.comment, addedAt: r.added_at });
}

function toUser(r: UserRow, keys: readonly KeyRow[]): TransferUser {
  const rate = r.max_rate_bps === null ? null : Number(r.max_rate_bps);
  if (rate !== null && !Number.isFinite(rate)) throw corrupt('transfer_user.max_rate_bps', r.max_rate_bps);
  return Object.freeze({
    name: r.name,
    docroot: r.docroot,
    permissions: Object.freeze(parseStoredList(r.permissions, PERMISSIONS, 'transfer_user.permissions')),
    ciphers: Object.freeze(parseStoredList(r.ciphers, CIPHERS, 'transfer_user.ciphers')),
    policies: Object.freeze(parseStoredList(r.policies, POLICIES, 'transfer_user.policies')),
    maxRateBps: rate,
    enabled: Number(r.enabled) === 1,
    requireEncryptedAtRest: Number(r.require_encrypted_at_rest) === 1,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    keys: Object.freeze(keys.map(toKey)),
  });
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The repository over a {@link Database}. */
export class UserRepository implements UserDirectory {
  private readonly db: Kysely<TachyonSchema>;
  private readonly roots: readonly RootPattern[];
  private readonly cipherPolicy: CipherPolicy;
  private readonly clock: Clock;
  private readonly onChange: ((e: UserChangeEvent) => void) | undefined;

  constructor(database: Database, options: UserRepositoryOptions) {
    this.db = database.db;
    this.roots = options.allowedRoots;
    this.cipherPolicy = options.cipherPolicy ?? DEFAULT_CIPHER_POLICY;
    this.clock = options.clock ?? systemClock;
    this.onChange = options.onChange;
  }

  private now(): string {
    return new Date(Math.floor(this.clock.now())).toISOString();
  }

  private emit(e: UserChangeEvent): void {
    this.onChange?.(Object.freeze(e));
  }

  // -------------------------------------------------------------------------------------
  // reading

  private async load(db: Tx, name: string): Promise<TransferUser | undefined> {
    if (!USER_NAME_PATTERN.test(name)) return undefined;
    const row = await db.selectFrom('transfer_user').selectAll().where('name', '=', name).executeTakeFirst();
    if (row === undefined) return undefined;
    const keys = await db.selectFrom('user_key').selectAll().where('user_name', '=', name).orderBy('added_at').orderBy('fingerprint').execute();
    return toUser(row, keys);
  }

  /** The user called `name`, or undefined. */
  get(name: string): Promise<TransferUser | undefined> {
    return this.load(this.db, name);
  }

  /** The user called `name`; `NOT_FOUND` if there is none. */
  async require(name: string): Promise<TransferUser> {
    const u = await this.get(name);
    if (u === undefined) throw noSuchUser(name);
    return u;
  }

  /** Every user, by name. */
  async list(): Promise<TransferUser[]> {
    const rows = await this.db.selectFrom('transfer_user').selectAll().orderBy('name').execute();
    const keys = await this.db.selectFrom('user_key').selectAll().orderBy('user_name').orderBy('added_at').orderBy('fingerprint').execute();
    const byUser = new Map<string, KeyRow[]>();
    for (const k of keys) {
      const list = byUser.get(k.user_name);
      if (list) list.push(k);
      else byUser.set(k.user_name, [k]);
    }
    return rows.map((r) => toUser(r, byUser.get(r.name) ?? []));
  }

  // -------------------------------------------------------------------------------------
  // authentication

  async authorizeKey(name: string, keyBlob: Buffer): Promise<KeyCheck> {
    const fingerprint = fingerprintOf(keyBlob);
    const user = await this.get(name);
    if (user === undefined) return { ok: false, reason: 'unknown-user', fingerprint };
    const key = user.keys.find((k) => k.fingerprint === fingerprint && k.blob.length === keyBlob.length && timingSafeEqual(k.blob, keyBlob));
    if (key === undefined) {
      const owner = await this.db.selectFrom('user_key').select('user_name').where('fingerprint', '=', fingerprint).executeTakeFirst();
      return { ok: false, reason: owner !== undefined ? 'key-of-other-user' : 'unknown-key', fingerprint };
    }
    if (!user.enabled) return { ok: false, reason: 'disabled', fingerprint };
    return { ok: true, user, fingerprint };
  }

  async findUserForKey(name: string, keyBlob: Buffer): Promise<TransferUser | undefined> {
    const r = await this.authorizeKey(name, keyBlob);
    return r.ok ? r.user : undefined;
  }

  // -------------------------------------------------------------------------------------
  // changing

  /** Validates settings; docroot is checked against the allowed roots (file system access). */
  private async validate(s: UserSettings): Promise<Partial<Omit<UserRow, 'name' | 'created_at' | 'updated_at'>>> {
    const out: Partial<Omit<UserRow, 'name' | 'created_at' | 'updated_at'>> = {};
    if (s.docroot !== undefined) out.docroot = await checkDocroot(s.docroot, this.roots, 'docroot');
    if (s.permissions !== undefined) out.permissions = validatePermissions(s.permissions).join(',');
    if (s.ciphers !== undefined) out.ciphers = validateCiphers(s.ciphers, this.cipherPolicy).join(',');
    if (s.policies !== undefined) out.policies = validatePolicies(s.policies).join(',');
    if (s.maxRateBps !== undefined) out.max_rate_bps = validateMaxRate(s.maxRateBps);
    if (s.enabled !== undefined) {
      if (typeof s.enabled !== 'boolean') throw fieldError('USAGE', 'enabled', 'must be true or false');
      out.enabled = s.enabled ? 1 : 0;
    }
    if (s.requireEncryptedAtRest !== undefined) {
      if (typeof s.requireEncryptedAtRest !== 'boolean') throw fieldError('USAGE', 'requireEncryptedAtRest', 'must be true or false');
      out.require_encrypted_at_rest = s.requireEncryptedAtRest ? 1 : 0;
    }
    return out;
  }

  private async insertKeys(tx: Tx, name: string, text: string, field: string): Promise<UserKey[]> {
    const keys = parsePublicKeys(text, field);
    const owners = await tx
      .selectFrom('user_key')
      .select(['fingerprint', 'user_name'])
      .where(
        'fingerprint',
        'in',
        keys.map((k) => k.fingerprint),
      )
      .execute();
    for (const o of owners) {
      throw new TachyonError(
        'EXISTS',
        o.user_name === name ? `${field}: user '${name}' already has the key ${o.fingerprint}` : `${field}: the key ${o.fingerprint} already belongs to user '${o.user_name}'; a key may belong to one user only`,
        { details: { field, fingerprint: o.fingerprint } },
      );
    }
    const at = this.now();
    const rows: KeyRow[] = keys.map((k) => ({ fingerprint: k.fingerprint, user_name: name, type: k.type, blob: k.blob.toString('base64'), comment: k.comment.slice(0, 1024), added_at: at }));
    await tx.insertInto('user_key').values(rows).execute();
    return rows.map(toKey);
  }

  /**
   * Creates a user.
   *
   * @throws TachyonError `USAGE` (invalid field), `PATH_INVALID` (docroot outside the
   *   allowed roots), `EXISTS` (name taken, or a key that belongs to a user already).
   */
  async add(u: NewUser): Promise<TransferUser> {
    const name = validateUserName(u.name);
    if (u.docroot === undefined) throw fieldError('USAGE', 'docroot', 'a new user needs a docroot');
    const v = await this.validate(u);
    const at = this.now();
    const row: UserRow = {
      name,
      docroot: v.docroot as string,
      permissions: v.permissions ?? DEFAULT_PERMISSIONS.join(','),
      ciphers: v.ciphers ?? permittedCiphers(this.cipherPolicy).join(','),
      policies: v.policies ?? DEFAULT_POLICIES.join(','),
      max_rate_bps: v.max_rate_bps ?? null,
      enabled: v.enabled ?? 1,
      require_encrypted_at_rest: v.require_encrypted_at_rest ?? 0,
      created_at: at,
      updated_at: at,
    };
    if (row.ciphers === '') throw fieldError('USAGE', 'ciphers', "the server's cipher policy permits no cipher");
    const keyText = (u.keys ?? []).join('\n');
    const keys = await this.db.transaction().execute(async (tx) => {
      if ((await tx.selectFrom('transfer_user').select('name').where('name', '=', name).executeTakeFirst()) !== undefined) {
        throw new TachyonError('EXISTS', `name: user '${name}' exists already (change it with 'tachyon user set ${name}')`, { details: { field: 'name' } });
      }
      await tx.insertInto('transfer_user').values(row).execute();
      return keyText.trim() === '' ? [] : this.insertKeys(tx, name, keyText, 'key');
    });
    this.emit({ type: 'user.add', user: name });
    for (const k of keys) this.emit({ type: 'user.key.add', user: name, fingerprint: k.fingerprint });
    return this.require(name);
  }

  /**
   * Changes some settings of a user. Returns the user as stored afterwards.
   *
   * @throws TachyonError `NOT_FOUND`, `USAGE`, `PATH_INVALID` as {@link add}.
   */
  async update(name: string, changes: UserSettings): Promise<TransferUser> {
    const v = await this.validate(changes);
    const fields = Object.keys(v);
    if (fields.length === 0) return this.require(name);
    const n = await this.db.transaction().execute(async (tx) => {
      const r = await tx
        .updateTable('transfer_user')
        .set({ ...v, updated_at: this.now() })
        .where('name', '=', name)
        .executeTakeFirst();
      return Number(r.numUpdatedRows);
    });
    if (n === 0) throw noSuchUser(name);
    this.emit({ type: 'user.update', user: name, fields: fields.map((f) => (f === 'max_rate_bps' ? 'maxRateBps' : f === 'require_encrypted_at_rest' ? 'requireEncryptedAtRest' : f)) });
    return this.require(name);
  }

  /** Removes a user and its keys. @throws TachyonError `NOT_FOUND` */
  async remove(name: string): Promise<void> {
    const n = await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('user_key').where('user_name', '=', name).execute();
      const r = await tx.deleteFrom('transfer_user').where('name', '=', name).executeTakeFirst();
      return Number(r.numDeletedRows);
    });
    if (n === 0) throw noSuchUser(name);
    this.emit({ type: 'user.remove', user: name });
  }

  /**
   * Adds the OpenSSH public keys in `text` (one per line) to a user.
   *
   * @throws TachyonError `NOT_FOUND`; `USAGE` for an unusable key line; `EXISTS` for a key
   *   the user or another user has already.
   */
  async addKeys(name: string, text: string): Promise<UserKey[]> {
    const keys = await this.db.transaction().execute(async (tx) => {
      if ((await tx.selectFrom('transfer_user').select('name').where('name', '=', name).executeTakeFirst()) === undefined) throw noSuchUser(name);
      const added = await this.insertKeys(tx, name, text, 'key');
      await tx.updateTable('transfer_user').set({ updated_at: this.now() }).where('name', '=', name).execute();
      return added;
    });
    for (const k of keys) this.emit({ type: 'user.key.add', user: name, fingerprint: k.fingerprint });
    return keys;
  }

  /**
   * Removes one key (by its `SHA256:…` fingerprint) from a user.
   *
   * @throws TachyonError `USAGE` for a malformed fingerprint; `NOT_FOUND` if the user has no such key.
   */
  async removeKey(name: string, fingerprint: string): Promise<void> {
    const fp = normalizeFingerprint(fingerprint);
    if (fp === undefined) throw fieldError('USAGE', 'fingerprint', `'${fingerprint.slice(0, 80)}' is not a SHA256 fingerprint (as 'tachyon user show' or 'ssh-keygen -lf KEY' print it)`);
    const n = await this.db.transaction().execute(async (tx) => {
      const r = await tx.deleteFrom('user_key').where('user_name', '=', name).where('fingerprint', '=', fp).executeTakeFirst();
      const deleted = Number(r.numDeletedRows);
      if (deleted > 0) await tx.updateTable('transfer_user').set({ updated_at: this.now() }).where('name', '=', name).execute();
      return deleted;
    });
    if (n === 0) {
      if ((await this.get(name)) === undefined) throw noSuchUser(name);
      throw new TachyonError('NOT_FOUND', `user '${name}' has no key ${fp} (see 'tachyon user show ${name}')`, { details: { field: 'fingerprint' } });
    }
    this.emit({ type: 'user.key.remove', user: name, fingerprint: fp });
  }

  /**
   * Makes the database agree with declared users (for example the inline users of the
   * server configuration): creates the missing ones, updates the settings that differ,
   * and makes each declared user's keys exactly the declared ones. Users that are not
   * declared are left alone. A declared field left out keeps the stored value (for a new
   * user, the default).
   */
  async applyDeclared(users: readonly NewUser[]): Promise<ApplyResult> {
    const added: string[] = [];
    const updated: string[] = [];
    const unchanged: string[] = [];
    for (const d of users) {
      const current = await this.get(d.name);
      if (current === undefined) {
        await this.add(d);
        added.push(d.name);
        continue;
      }
      let changed = false;
      const v = await this.validate(d);
      const diff: UserSettings = {};
      if (v.docroot !== undefined && v.docroot !== current.docroot) diff.docroot = v.docroot;
      if (d.permissions !== undefined && !sameList(validatePermissions(d.permissions), current.permissions)) diff.permissions = d.permissions;
      if (d.ciphers !== undefined && !sameList(validateCiphers(d.ciphers, this.cipherPolicy), current.ciphers)) diff.ciphers = d.ciphers as CipherName[];
      if (d.policies !== undefined && !sameList(validatePolicies(d.policies), current.policies)) diff.policies = d.policies as RatePolicy[];
      if (d.maxRateBps !== undefined && d.maxRateBps !== current.maxRateBps) diff.maxRateBps = d.maxRateBps;
      if (d.enabled !== undefined && d.enabled !== current.enabled) diff.enabled = d.enabled;
      if (d.requireEncryptedAtRest !== undefined && d.requireEncryptedAtRest !== current.requireEncryptedAtRest) diff.requireEncryptedAtRest = d.requireEncryptedAtRest;
      if (Object.keys(diff).length > 0) {
        await this.update(d.name, diff);
        changed = true;
      }
      if (d.keys !== undefined) {
        const text = d.keys.join('\n');
        const wanted = text.trim() === '' ? [] : parsePublicKeys(text, 'keys');
        const wantedFps = new Set(wanted.map((k) => k.fingerprint));
        const have = new Set(current.keys.map((k) => k.fingerprint));
        for (const k of current.keys) {
          if (!wantedFps.has(k.fingerprint)) {
            await this.removeKey(d.name, k.fingerprint);
            changed = true;
          }
        }
        const missing = wanted.filter((k) => !have.has(k.fingerprint));
        if (missing.length > 0) {
          await this.addKeys(d.name, missing.map((k) => `${k.type} ${k.blob.toString('base64')} ${k.comment}`).join('\n'));
          changed = true;
        }
      }
      (changed ? updated : unchanged).push(d.name);
    }
    return { added, updated, unchanged };
  }
}

