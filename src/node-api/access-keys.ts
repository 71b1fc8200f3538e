/**
 * Access keys of the node API: an id (`AK…`, public) and a secret (`tsk_…`, shown once at
 * creation or rotation, stored only as an argon2id hash), bound to one storage root (a
 * `file:///…` or `s3://bucket/prefix` URL inside the server's allowed storage roots) and
 * a set of permissions. Node administrators hold keys of kind `admin`: no storage, no
 * file permissions; they manage access keys. Admin keys are made on the node itself
 * (`tachyon access-key create --admin`), never through the API, so that an API caller
 * can never mint an administrator.
 *
 * Rotation makes a new secret; the previous one keeps working until the end of a grace
 * period (`previous_valid_until`), then dies. Revocation is final.
 */
import { randomBytes } from 'node:crypto';
import argon2 from 'argon2';
import type { Selectable } from 'kysely';
import { systemClock, type Clock } from '../core/clock.js';
import { TachyonError } from '../core/errors.js';
import { PERMISSIONS, type Permission } from '../core/types.js';
import type { Database } from '../db/database.js';
import type { AccessKeyTable } from '../db/schema.js';
import type { AccessKeyStatus } from '../server/token-login.js';
import { checkDocroot, type RootPattern } from '../server/users/storage-roots.js';

export type AccessKeyKind = 'access' | 'admin';

/** An access key as callers see it: never its secret or hash. */
export interface AccessKey {
  readonly id: string;
  readonly kind: AccessKeyKind;
  /** Canonical storage URL (access keys); null for admin keys. */
  readonly storageRoot: string | null;
  readonly permissions: readonly Permission[];
  readonly description: string;
  readonly secretVersion: number;
  readonly createdAt: string;
  readonly updatedAt: string;
  /** Until when the secret before the last rotation still works, if it does. */
  readonly previousSecretValidUntil: string | null;
  readonly revokedAt: string | null;
}

/** A key with its secret, returned once by create and rotate. */
export interface KeyWithSecret {
  readonly key: AccessKey;
  readonly secret: string;
}

/** The outcome of a secret check (the reason is for the audit log, never for the caller). */
export type SecretCheck =
  | { readonly ok: true; readonly key: AccessKey; readonly version: number }
  | { readonly ok: false; readonly reason: 'unknown-key' | 'revoked' | 'bad-secret' | 'malformed'; readonly key?: AccessKey };

/** argon2id cost. OWASP's minimum (19 MiB, 2 passes, 1 lane) by default. */
export interface HashCost {
  readonly memoryCost: number;
  readonly timeCost: number;
  readonly parallelism: number;
}
export const DEFAULT_HASH_COST: HashCost = Object.freeze({ memoryCost: 19_456, timeCost: 2, parallelism: 1 });

export const ACCESS_KEY_ID_PATTERN = /^AK[0-9A-Z]{24}$/;
export const SECRET_PATTERN = /^tsk_[A-Za-z0-9_-]{43}$/;
/** Longest grace period a rotation may give the old secret. */
export const MAX_GRACE_SECONDS = 30 * 86_400;
export const DEFAULT_GRACE_SECONDS = 86_400;

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

function newKeyId(): string {
  const b = randomBytes(24);
  let out = 'AK';
  for (const x of b) out += CROCKFORD[x & 31] as string;
  return out;
}

function newSecret(): string {
  return `tsk_${randomBytes(32).toString('base64url')}`;
}

export interface NewAccessKey {
  readonly kind?: AccessKeyKind;
  /** Required for access keys; refused for admin keys. */
  readonly storageRoot?: string;
  /** Default for access keys: list, read. Admin keys: none. */
  readonly permissions?: readonly string[];
  readonly description?: string;
}

export interface AccessKeyRepositoryOptions {
  readonly allowedRoots: readonly RootPattern[];
  /**
   * argon2id verifications run at once (default 2), so that a flood of Basic attempts
   * leaves libuv's thread pool to file I/O; at most `maxQueuedVerifications` (default 64)
   * wait, beyond that a verification is refused with `BUSY` (503).
   */
  readonly maxConcurrentVerifications?: number;
  readonly maxQueuedVerifications?: number;
  readonly clock?: Clock;
  readonly hashCost?: HashCost;
  /** Called after each committed change (for the audit log; never holds a secret). */
  readonly onChange?: (e: { readonly action: 'access-key.create' | 'access-key.rotate' | 'access-key.revoke'; readonly id: string }) => void;
}

function validatePermissions(list: readonly string[], field = 'permissions'): Permission[] {
  const out = new Set<Permission>();
  for (const p of list) {
    if (!(PERMISSIONS as readonly string[]).includes(p)) {
      throw new TachyonError('USAGE', `${field}: unknown permission '${String(p).slice(0, 40)}' (${PERMISSIONS.join(', ')})`, {
        publicMessage: `Unknown permission; use ${PERMISSIONS.join(', ')}.`,
        details: { field },
      });
    }
    out.add(p as Permission);
  }
  return PERMISSIONS.filter((p) => out.has(p));
}

function description(text: string | undefined): string {
  const d = text ?? '';
  // eslint-disable-next-line no-control-regex -- control characters are refused
  if (d.length > 256 || /[\x00-\x1f\x7f]/.test(d)) {
    throw new TachyonError('USAGE', 'description: at most 256 characters, no control characters', { publicMessage: 'The description is too long or holds control characters.' });
  }
  return d;
}

function toKey(row: Selectable<AccessKeyTable>): AccessKey {
  return Object.freeze({
    id: row.id,
    kind: row.kind === 'admin' ? 'admin' : 'access',
    storageRoot: row.storage_root,
    permissions: Object.freeze(row.permissions === '' ? [] : (row.permissions.split(',') as Permission[])),
    description: row.description,
    secretVersion: Number(row.secret_version),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    previousSecretValidUntil: row.previous_valid_until,
    revokedAt: row.revoked_at,
  });
}

function noSuchKey(id: string): TachyonError {
  return new TachyonError('NOT_FOUND', `no access key ${id.slice(0, 40)}`, { publicMessage: 'No such access key.' });
}

export class AccessKeyRepository {
  private readonly clock: Clock;
  private readonly cost: HashCost;
  /** A hash to verify against when the key is unknown, so that timing does not tell. */
  private dummyHash: Promise<string> | undefined;
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly database: Database,
    private readonly options: AccessKeyRepositoryOptions,
  ) {
    this.clock = options.clock ?? systemClock;
    this.cost = options.hashCost ?? DEFAULT_HASH_COST;
  }

  private nowIso(): string {
    return new Date(this.clock.now()).toISOString();
  }

  private hash(secret: string): Promise<string> {
    return argon2.hash(secret, { type: argon2.argon2id, ...this.cost });
  }

  /** Runs one argon2 verification within the concurrency limit. */
  private async limited(hash: string, secret: string): Promise<boolean> {
    const max = this.options.maxConcurrentVerifications ?? 2;
    if (this.running >= max) {
      if (this.waiting.length >= (this.options.maxQueuedVerifications ?? 64)) {
        throw new TachyonError('BUSY', 'too many credential verifications waiting', { details: { reason: 'verification-queue-full' } });
      }
      // the finishing verification hands its slot over: `running` stays counted
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    try {
      return await argon2.verify(hash, secret).catch(() => false);
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }

  /**
   * Creates a key and returns it with its secret (the only time the secret is shown).
   * @throws TachyonError `USAGE` (bad permissions, missing root), `PATH_INVALID` (root outside the allowed roots).
   */
  async create(n: NewAccessKey): Promise<KeyWithSecret> {
    const kind = n.kind ?? 'access';
    let root: string | null = null;
    let perms: Permission[] = [];
    if (kind === 'access') {
      if (n.storageRoot === undefined) throw new TachyonError('USAGE', 'storage_root: required for an access key', { publicMessage: 'An access key needs a storage root.' });
      root = await checkDocroot(n.storageRoot, this.options.allowedRoots, 'storage_root').catch((err: unknown) => {
        if (err instanceof TachyonError) {
          throw new TachyonError(err.code, err.message, { cause: err, publicMessage: 'The storage root is invalid or outside the allowed storage roots.', ...(err.details ? { details: err.details } : {}) });
        }
        throw err;
      });
      perms = validatePermissions(n.permissions ?? ['list', 'read']);
    } else {
      if (n.storageRoot !== undefined) throw new TachyonError('USAGE', 'an admin key has no storage root');
      if ((n.permissions ?? []).length > 0) throw new TachyonError('USAGE', 'an admin key has no file permissions');
    }
    const desc = description(n.description);
    const secret = newSecret();
    const id = newKeyId();
    const now = this.nowIso();
    const row: AccessKeyTable = {
      id,
      kind,
      storage_root: root,
      permissions: perms.join(','),
      description: desc,
      secret_hash: await this.hash(secret),
      secret_version: 1,
      previous_secret_hash: null,
      previous_valid_until: null,
      created_at: now,
      updated_at: now,
      revoked_at: null,
    };
    await this.database.db.insertInto('access_key').values(row).execute();
    this.options.onChange?.({ action: 'access-key.create', id });
    return { key: toKey(row), secret };
  }

  /** Keys, oldest first (revoked ones included unless `activeOnly`). */
  async list(o: { activeOnly?: boolean; offset?: number; limit?: number } = {}): Promise<{ keys: AccessKey[]; total: number }> {
    let q = this.database.db.selectFrom('access_key');
    if (o.activeOnly === true) q = q.where('revoked_at', 'is', null);
    const count = await q.select((eb) => eb.fn.countAll<number | string>().as('n')).executeTakeFirst();
    const rows = await q
      .selectAll()
      .orderBy('created_at')
      .orderBy('id')
      .limit(o.limit ?? 1000)
      .offset(o.offset ?? 0)
      .execute();
    return { keys: rows.map(toKey), total: Number(count?.n ?? 0) };
  }

  /** The key, or undefined. */
  async find(id: string): Promise<AccessKey | undefined> {
    if (!ACCESS_KEY_ID_PATTERN.test(id)) return undefined;
    const row = await this.database.db.selectFrom('access_key').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toKey(row) : undefined;
  }

  /** @throws TachyonError `NOT_FOUND` */
  async get(id: string): Promise<AccessKey> {
    const k = await this.find(id);
    if (!k) throw noSuchKey(id);
    return k;
  }

  /**
   * A new secret; the old one keeps working for `graceSeconds` (0: dies now).
   * @throws TachyonError `NOT_FOUND`, `USAGE` (grace out of range), `PERMISSION` (revoked key).
   */
  async rotate(id: string, graceSeconds: number = DEFAULT_GRACE_SECONDS): Promise<KeyWithSecret> {
    if (!Number.isSafeInteger(graceSeconds) || graceSeconds < 0 || graceSeconds > MAX_GRACE_SECONDS) {
      throw new TachyonError('USAGE', `grace period ${graceSeconds} s out of range (0-${MAX_GRACE_SECONDS})`, { publicMessage: `The grace period must be 0 to ${MAX_GRACE_SECONDS} seconds.` });
    }
    const row = await this.database.db.selectFrom('access_key').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw noSuchKey(id);
    if (row.revoked_at !== null) throw new TachyonError('PERMISSION', `access key ${id} is revoked`, { publicMessage: 'The access key is revoked.' });
    const secret = newSecret();
    const hash = await this.hash(secret);
    const nowMs = this.clock.now();
    const update = {
      secret_hash: hash,
      secret_version: Number(row.secret_version) + 1,
      previous_secret_hash: graceSeconds > 0 ? row.secret_hash : null,
      previous_valid_until: graceSeconds > 0 ? new Date(nowMs + graceSeconds * 1000).toISOString() : null,
      updated_at: new Date(nowMs).toISOString(),
    };
    const res = await this.database.db
      .updateTable('access_key')
      .set(update)
      .where('id', '=', id)
      .where('secret_version', '=', row.secret_version)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    if (Number(res.numUpdatedRows) !== 1) throw new TachyonError('EXISTS', `access key ${id} changed meanwhile`, { publicMessage: 'The access key changed meanwhile; try again.' });
    this.options.onChange?.({ action: 'access-key.rotate', id });
    return { key: toKey({ ...row, ...update }), secret };
  }

  /** Revokes a key for good (a second revoke is a no-op). @throws TachyonError `NOT_FOUND` */
  async revoke(id: string): Promise<AccessKey> {
    const k = await this.get(id);
    if (k.revokedAt !== null) return k;
    const now = this.nowIso();
    await this.database.db
      .updateTable('access_key')
      .set({ revoked_at: now, updated_at: now, previous_secret_hash: null, previous_valid_until: null })
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .execute();
    this.options.onChange?.({ action: 'access-key.revoke', id });
    return this.get(id);
  }

  /**
   * Checks a secret: the current one, or the previous one within its grace period. Takes
   * an argon2 verification even for an unknown id (no timing oracle for ids).
   */
  async verify(id: string, secret: string): Promise<SecretCheck> {
    if (!SECRET_PATTERN.test(secret)) return { ok: false, reason: 'malformed' };
    const row = ACCESS_KEY_ID_PATTERN.test(id) ? await this.database.db.selectFrom('access_key').selectAll().where('id', '=', id).executeTakeFirst() : undefined;
    if (!row) {
      this.dummyHash ??= this.hash(newSecret());
      await this.limited(await this.dummyHash, secret);
      return { ok: false, reason: 'unknown-key' };
    }
    const key = toKey(row);
    if (await this.limited(row.secret_hash, secret)) {
      return row.revoked_at !== null ? { ok: false, reason: 'revoked', key } : { ok: true, key, version: key.secretVersion };
    }
    if (row.previous_secret_hash !== null && row.previous_valid_until !== null && Date.parse(row.previous_valid_until) > this.clock.now()) {
      if (await this.limited(row.previous_secret_hash, secret)) {
        return row.revoked_at !== null ? { ok: false, reason: 'revoked', key } : { ok: true, key, version: key.secretVersion - 1 };
      }
    }
    return { ok: false, reason: row.revoked_at !== null ? 'revoked' : 'bad-secret', key };
  }

  /**
   * Whether credentials made from secret `version` of key `key` are still good at `nowMs`:
   * not revoked, and the current secret, or the previous one within its grace period.
   */
  static versionValid(key: AccessKey, version: number, nowMs: number): boolean {
    if (key.revokedAt !== null) return false;
    if (version === key.secretVersion) return true;
    return version === key.secretVersion - 1 && key.previousSecretValidUntil !== null && Date.parse(key.previousSecretValidUntil) > nowMs;
  }
}

/**
 * The transfer server's view of access keys (`AccessKeyStatus` of server/token-login.ts)
 * from this table: `active` unless revoked, `unknown` for ids it does not hold. Read at
 * each check, so a revocation stops new token logins and sessions at once.
 */
export function databaseAccessKeyStatus(keys: AccessKeyRepository): AccessKeyStatus {
  return {
    async status(id) {
      const k = await keys.find(id);
      if (!k || k.kind !== 'access') return 'unknown';
      return k.revokedAt === null ? 'active' : 'revoked';
    },
  };
}
