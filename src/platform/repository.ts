/**
 * The identity repository: tenants, users, roles, groups, sessions and policies in
 * Tachyon's database (the `Database` seam; portable queries only).
 *
 * Tenant isolation is enforced here, at every query: each method that touches a
 * tenant's rows takes the tenant id and filters by it (`where tenant_id = ?`), so an id
 * of another tenant's row behaves exactly like an id that does not exist. The two
 * lookups that *find* a tenant are by its slug (sign-in) and by a session token's hash
 * (the token is the credential that names its tenant).
 */
import { randomUUID } from 'node:crypto';
import type { ExpressionBuilder, Kysely, Selectable, Transaction } from 'kysely';
import { TachyonError } from '../core/errors.js';
import type { Database } from '../db/database.js';
import type { PlatformSessionTable, PlatformUserTable, TachyonSchema } from '../db/schema.js';
import { ROLES, type PlatformUser, type Role, type SessionInfo, type Tenant, type UserStatus } from './model.js';
import { parseStoredPolicy, type IdentityPolicy } from './policy.js';

type Db = Kysely<TachyonSchema> | Transaction<TachyonSchema>;

/** What sign-in needs of an account (never leaves the platform layer). */
export interface Credentials {
  readonly user: PlatformUser;
  readonly passwordHash: string | null;
  readonly failedCount: number;
  readonly failedWindowStart: string | null;
}

export interface NewUserRow {
  readonly username: string;
  readonly displayName: string;
  readonly roles: readonly Role[];
  readonly passwordHash: string | null;
  readonly mustChangePassword: boolean;
}

export interface UserPatch {
  readonly displayName?: string;
  readonly status?: UserStatus;
  readonly roles?: readonly Role[];
}

export type SessionRow = Selectable<PlatformSessionTable>;

/**
 * The SET clause that counts one failed sign-in in a table with `failed_count` and
 * `failed_window_start` (users, and per-address lockouts): the count restarts at 1 when
 * the window began before `windowCutoffIso`, else grows by one, in one statement.
 */
function countFailure<T extends 'platform_user' | 'platform_address_lockout'>(
  eb: ExpressionBuilder<TachyonSchema, T>,
  nowIso: string,
  windowCutoffIso: string,
) {
  // both tables have the two columns; kysely's typing cannot see through the union
  const e = eb as unknown as ExpressionBuilder<TachyonSchema, 'platform_user'>;
  const windowOver = e.or([e('failed_window_start', 'is', null), e('failed_window_start', '<', windowCutoffIso)]);
  return {
    failed_count: e.case().when(windowOver).then(1).else(e('failed_count', '+', 1)).end(),
    failed_window_start: e.case().when(windowOver).then(nowIso).else(e.ref('failed_window_start')).end(),
  };
}

export interface Group {
  readonly id: string;
  readonly tenantId: string;
  readonly name: string;
  readonly createdAt: string;
}

function toUser(row: Selectable<PlatformUserTable>, roles: readonly string[]): PlatformUser {
  return Object.freeze({
    id: row.id,
    tenantId: row.tenant_id,
    username: row.username,
    displayName: row.display_name,
    status: row.status === 'active' ? 'active' : 'disabled',
    roles: Object.freeze(ROLES.filter((r) => roles.includes(r))),
    mustChangePassword: Number(row.must_change_password) === 1,
    passwordChangedAt: row.password_changed_at,
    lockedUntil: row.locked_until,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  });
}

function toSession(row: SessionRow): SessionInfo {
  return Object.freeze({
    id: row.id,
    createdAt: row.created_at,
    lastSeenAt: row.last_seen_at,
    expiresAt: row.expires_at,
    clientAddress: row.client_address,
    userAgent: row.user_agent,
  });
}

export class IdentityRepository {
  private readonly db: Kysely<TachyonSchema>;

  constructor(database: Database) {
    this.db = database.db;
  }

  // -- tenants and policies ------------------------------------------------------------

  async createTenant(slug: string, name: string, nowIso: string): Promise<Tenant> {
    const t: Tenant = Object.freeze({ id: randomUUID(), slug, name, createdAt: nowIso });
    await this.db.insertInto('platform_tenant').values({ id: t.id, slug, name, created_at: nowIso }).execute();
    return t;
  }

  async tenantBySlug(slug: string): Promise<Tenant | undefined> {
    const r = await this.db.selectFrom('platform_tenant').selectAll().where('slug', '=', slug).executeTakeFirst();
    return r && Object.freeze({ id: r.id, slug: r.slug, name: r.name, createdAt: r.created_at });
  }

  async tenantById(tenantId: string): Promise<Tenant | undefined> {
    const r = await this.db.selectFrom('platform_tenant').selectAll().where('id', '=', tenantId).executeTakeFirst();
    return r && Object.freeze({ id: r.id, slug: r.slug, name: r.name, createdAt: r.created_at });
  }

  async policy(tenantId: string): Promise<IdentityPolicy> {
    const r = await this.db.selectFrom('platform_policy').select('policy').where('tenant_id', '=', tenantId).executeTakeFirst();
    return parseStoredPolicy(r?.policy);
  }

  async setPolicy(tenantId: string, policy: IdentityPolicy, nowIso: string): Promise<void> {
    const json = JSON.stringify(policy);
    await this.db.transaction().execute(async (tx) => {
      const done = await tx.updateTable('platform_policy').set({ policy: json, updated_at: nowIso }).where('tenant_id', '=', tenantId).executeTakeFirst();
      if (Number(done.numUpdatedRows) === 0) {
        await tx.insertInto('platform_policy').values({ tenant_id: tenantId, policy: json, updated_at: nowIso }).execute();
      }
    });
  }

  // -- users -----------------------------------------------------------------------------

  private async rolesOf(db: Db, tenantId: string, userIds: readonly string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    if (userIds.length === 0) return out;
    const rows = await db
      .selectFrom('platform_user_role')
      .select(['user_id', 'role'])
      .where('tenant_id', '=', tenantId)
      .where('user_id', 'in', [...userIds])
      .execute();
    for (const r of rows) out.set(r.user_id, [...(out.get(r.user_id) ?? []), r.role]);
    return out;
  }

  /** @throws TachyonError `EXISTS` if the tenant already has this user name. */
  async createUser(tenantId: string, u: NewUserRow, nowIso: string): Promise<PlatformUser> {
    const id = randomUUID();
    await this.db.transaction().execute(async (tx) => {
      await tx
        .insertInto('platform_user')
        .values({
          id,
          tenant_id: tenantId,
          username: u.username,
          display_name: u.displayName,
          status: 'active',
          password_hash: u.passwordHash,
          must_change_password: u.mustChangePassword ? 1 : 0,
          password_changed_at: u.passwordHash === null ? null : nowIso,
          failed_count: 0,
          failed_window_start: null,
          locked_until: null,
          created_at: nowIso,
          updated_at: nowIso,
        })
        .execute();
      await tx
        .insertInto('platform_user_role')
        .values(u.roles.map((role) => ({ tenant_id: tenantId, user_id: id, role })))
        .execute();
    });
    const user = await this.userById(tenantId, id);
    if (!user) throw new TachyonError('INTERNAL', 'created user vanished');
    return user;
  }

  async userById(tenantId: string, userId: string, db: Db = this.db): Promise<PlatformUser | undefined> {
    const row = await db.selectFrom('platform_user').selectAll().where('tenant_id', '=', tenantId).where('id', '=', userId).executeTakeFirst();
    if (!row) return undefined;
    return toUser(row, (await this.rolesOf(db, tenantId, [row.id])).get(row.id) ?? []);
  }

  async credentials(tenantId: string, username: string): Promise<Credentials | undefined> {
    const row = await this.db
      .selectFrom('platform_user')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('username', '=', username)
      .executeTakeFirst();
    if (!row) return undefined;
    const user = toUser(row, (await this.rolesOf(this.db, tenantId, [row.id])).get(row.id) ?? []);
    return { user, passwordHash: row.password_hash, failedCount: Number(row.failed_count), failedWindowStart: row.failed_window_start };
  }

  async listUsers(tenantId: string): Promise<PlatformUser[]> {
    const rows = await this.db.selectFrom('platform_user').selectAll().where('tenant_id', '=', tenantId).orderBy('username').execute();
    const roles = await this.rolesOf(this.db, tenantId, rows.map((r) => r.id));
    return rows.map((r) => toUser(r, roles.get(r.id) ?? []));
  }

  /** @throws TachyonError `NOT_FOUND` if the tenant has no such user. */
  async updateUser(tenantId: string, userId: string, patch: UserPatch, nowIso: string): Promise<PlatformUser> {
    return this.db.transaction().execute(async (tx) => {
      const set: Partial<Record<'display_name' | 'status' | 'updated_at', string>> = { updated_at: nowIso };
      if (patch.displayName !== undefined) set.display_name = patch.displayName;
      if (patch.status !== undefined) set.status = patch.status;
      const r = await tx.updateTable('platform_user').set(set).where('tenant_id', '=', tenantId).where('id', '=', userId).executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) throw noSuchUser();
      if (patch.roles !== undefined) {
        await tx.deleteFrom('platform_user_role').where('tenant_id', '=', tenantId).where('user_id', '=', userId).execute();
        await tx
          .insertInto('platform_user_role')
          .values(patch.roles.map((role) => ({ tenant_id: tenantId, user_id: userId, role })))
          .execute();
      }
      const user = await this.userById(tenantId, userId, tx);
      if (!user) throw noSuchUser();
      return user;
    });
  }

  /** Sets a new password hash, clears failures and locks (the account's and every address's). @throws `NOT_FOUND`. */
  async setPassword(tenantId: string, userId: string, hash: string, mustChange: boolean, nowIso: string): Promise<void> {
    const r = await this.db
      .updateTable('platform_user')
      .set({
        password_hash: hash,
        must_change_password: mustChange ? 1 : 0,
        password_changed_at: nowIso,
        failed_count: 0,
        failed_window_start: null,
        locked_until: null,
        updated_at: nowIso,
      })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', userId)
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) throw noSuchUser();
    // and the per-address counters and locks (lockoutScope 'address')
    await this.db.deleteFrom('platform_address_lockout').where('tenant_id', '=', tenantId).where('user_id', '=', userId).execute();
  }

  /**
   * Counts one failed sign-in atomically (concurrent failures are all counted): the count
   * restarts at 1 when the current window began before `windowCutoffIso`. Returns the
   * count after this failure.
   */
  async recordFailure(tenantId: string, userId: string, nowIso: string, windowCutoffIso: string): Promise<number> {
    const row = await this.db
      .updateTable('platform_user')
      .set((eb) => countFailure(eb, nowIso, windowCutoffIso))
      .where('tenant_id', '=', tenantId)
      .where('id', '=', userId)
      .returning('failed_count')
      .executeTakeFirst();
    return Number(row?.failed_count ?? 0);
  }

  /**
   * Locks the account until `untilIso` and restarts the count, unless it is already
   * locked at `nowIso`. Returns whether this call locked it (so a burst of failures
   * yields one lockout).
   */
  async lock(tenantId: string, userId: string, nowIso: string, untilIso: string): Promise<boolean> {
    const r = await this.db
      .updateTable('platform_user')
      .set({ locked_until: untilIso, failed_count: 0, failed_window_start: null })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', userId)
      .where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<=', nowIso)]))
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** When the account is locked until (ISO), or null; undefined if the tenant has no such user. */
  async lockedUntil(tenantId: string, userId: string): Promise<string | null | undefined> {
    const r = await this.db
      .selectFrom('platform_user')
      .select('locked_until')
      .where('tenant_id', '=', tenantId)
      .where('id', '=', userId)
      .executeTakeFirst();
    return r === undefined ? undefined : r.locked_until;
  }

  async clearFailures(tenantId: string, userId: string): Promise<void> {
    await this.db
      .updateTable('platform_user')
      .set({ failed_count: 0, failed_window_start: null, locked_until: null })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', userId)
      .execute();
  }

  // -- failures per source address (lockoutScope 'address') --------------------------------

  /**
   * Counts one failed sign-in of the account from `address` (an address key) atomically,
   * like {@link recordFailure}; returns the count after this failure.
   */
  async recordAddressFailure(tenantId: string, userId: string, address: string, nowIso: string, windowCutoffIso: string): Promise<number> {
    await this.db
      .insertInto('platform_address_lockout')
      .values({ tenant_id: tenantId, user_id: userId, address, failed_count: 0, failed_window_start: null, locked_until: null })
      .onConflict((oc) => oc.columns(['tenant_id', 'user_id', 'address']).doNothing())
      .execute();
    const row = await this.db
      .updateTable('platform_address_lockout')
      .set((eb) => countFailure(eb, nowIso, windowCutoffIso))
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .where('address', '=', address)
      .returning('failed_count')
      .executeTakeFirst();
    return Number(row?.failed_count ?? 0);
  }

  /** Locks the account for `address` until `untilIso`, unless already locked at `nowIso`; whether this call locked it. */
  async lockAddress(tenantId: string, userId: string, address: string, nowIso: string, untilIso: string): Promise<boolean> {
    const r = await this.db
      .updateTable('platform_address_lockout')
      .set({ locked_until: untilIso, failed_count: 0, failed_window_start: null })
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .where('address', '=', address)
      .where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<=', nowIso)]))
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** Until when the account is locked for `address` (ISO), or null. */
  async addressLockedUntil(tenantId: string, userId: string, address: string): Promise<string | null> {
    const r = await this.db
      .selectFrom('platform_address_lockout')
      .select('locked_until')
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .where('address', '=', address)
      .executeTakeFirst();
    return r?.locked_until ?? null;
  }

  /**
   * After a successful sign-in from `address`: forgets that address's failures, and the
   * rows of the account whose window began before `windowCutoffIso` and whose lock has
   * ended (so the table holds only live counters and locks).
   */
  async clearAddressFailures(tenantId: string, userId: string, address: string, nowIso: string, windowCutoffIso: string): Promise<void> {
    await this.db
      .deleteFrom('platform_address_lockout')
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .where((eb) =>
        eb.or([
          eb('address', '=', address),
          eb.and([
            eb.or([eb('locked_until', 'is', null), eb('locked_until', '<=', nowIso)]),
            eb.or([eb('failed_window_start', 'is', null), eb('failed_window_start', '<', windowCutoffIso)]),
          ]),
        ]),
      )
      .execute();
  }

  // -- groups ------------------------------------------------------------------------------

  async createGroup(tenantId: string, name: string, nowIso: string): Promise<Group> {
    const g: Group = Object.freeze({ id: randomUUID(), tenantId, name, createdAt: nowIso });
    await this.db.insertInto('platform_group').values({ id: g.id, tenant_id: tenantId, name, created_at: nowIso }).execute();
    return g;
  }

  async listGroups(tenantId: string): Promise<Group[]> {
    const rows = await this.db.selectFrom('platform_group').selectAll().where('tenant_id', '=', tenantId).orderBy('name').execute();
    return rows.map((r) => Object.freeze({ id: r.id, tenantId: r.tenant_id, name: r.name, createdAt: r.created_at }));
  }

  /** Adds a user of the tenant to a group of the tenant. @throws `NOT_FOUND` if either is not the tenant's. */
  async addGroupMember(tenantId: string, groupId: string, userId: string): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const g = await tx.selectFrom('platform_group').select('id').where('tenant_id', '=', tenantId).where('id', '=', groupId).executeTakeFirst();
      const u = await tx.selectFrom('platform_user').select('id').where('tenant_id', '=', tenantId).where('id', '=', userId).executeTakeFirst();
      if (!g || !u) throw new TachyonError('NOT_FOUND', 'no such group or user in this tenant', { publicMessage: 'No such group or user.' });
      await tx.insertInto('platform_group_member').values({ tenant_id: tenantId, group_id: groupId, user_id: userId }).execute();
    });
  }

  /** Removes a user from a group of the tenant (no-op if not a member). @throws `NOT_FOUND` if the group is not the tenant's. */
  async removeGroupMember(tenantId: string, groupId: string, userId: string): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      const g = await tx.selectFrom('platform_group').select('id').where('tenant_id', '=', tenantId).where('id', '=', groupId).executeTakeFirst();
      if (!g) throw new TachyonError('NOT_FOUND', 'no such group in this tenant', { publicMessage: 'No such group or user.' });
      await tx.deleteFrom('platform_group_member').where('tenant_id', '=', tenantId).where('group_id', '=', groupId).where('user_id', '=', userId).execute();
    });
  }

  /** Deletes a group of the tenant and its memberships. @throws `NOT_FOUND` if it is not the tenant's. */
  async deleteGroup(tenantId: string, groupId: string): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('platform_group_member').where('tenant_id', '=', tenantId).where('group_id', '=', groupId).execute();
      const r = await tx.deleteFrom('platform_group').where('tenant_id', '=', tenantId).where('id', '=', groupId).executeTakeFirst();
      if (Number(r.numDeletedRows) === 0) throw new TachyonError('NOT_FOUND', 'no such group in this tenant', { publicMessage: 'No such group.' });
    });
  }

  /** Every member of every group of the tenant: group id -> user ids (sorted). */
  async allGroupMembers(tenantId: string): Promise<Map<string, string[]>> {
    const rows = await this.db.selectFrom('platform_group_member').select(['group_id', 'user_id']).where('tenant_id', '=', tenantId).orderBy('user_id').execute();
    const m = new Map<string, string[]>();
    for (const r of rows) m.set(r.group_id, [...(m.get(r.group_id) ?? []), r.user_id]);
    return m;
  }

  async groupMembers(tenantId: string, groupId: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('platform_group_member')
      .select('user_id')
      .where('tenant_id', '=', tenantId)
      .where('group_id', '=', groupId)
      .execute();
    return rows.map((r) => r.user_id).sort();
  }

  // -- sessions ------------------------------------------------------------------------------

  async createSession(row: SessionRow): Promise<void> {
    await this.db.insertInto('platform_session').values(row).execute();
  }

  /** The session whose token hashes to `tokenSha256` (the token names its tenant). */
  async sessionByTokenHash(tokenSha256: string): Promise<SessionRow | undefined> {
    return this.db.selectFrom('platform_session').selectAll().where('token_sha256', '=', tokenSha256).executeTakeFirst();
  }

  async touchSession(tenantId: string, sessionId: string, nowIso: string): Promise<void> {
    await this.db.updateTable('platform_session').set({ last_seen_at: nowIso }).where('tenant_id', '=', tenantId).where('id', '=', sessionId).execute();
  }

  /** Records a new proof of identity in one session (re-authentication). */
  async markSessionAuthenticated(tenantId: string, sessionId: string, nowIso: string): Promise<void> {
    await this.db.updateTable('platform_session').set({ authenticated_at: nowIso }).where('tenant_id', '=', tenantId).where('id', '=', sessionId).execute();
  }

  async listSessions(tenantId: string, userId: string): Promise<SessionInfo[]> {
    const rows = await this.db
      .selectFrom('platform_session')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .orderBy('created_at')
      .execute();
    return rows.map(toSession);
  }

  /** Ends one of a user's sessions; false if the user (in this tenant) has no such session. */
  async deleteSession(tenantId: string, userId: string, sessionId: string): Promise<boolean> {
    const r = await this.db
      .deleteFrom('platform_session')
      .where('tenant_id', '=', tenantId)
      .where('user_id', '=', userId)
      .where('id', '=', sessionId)
      .executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  /** Ends every session of a user but `keepSessionId`; returns how many ended. */
  async deleteUserSessions(tenantId: string, userId: string, keepSessionId?: string): Promise<number> {
    let q = this.db.deleteFrom('platform_session').where('tenant_id', '=', tenantId).where('user_id', '=', userId);
    if (keepSessionId !== undefined) q = q.where('id', '!=', keepSessionId);
    const r = await q.executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}

export function noSuchUser(): TachyonError {
  return new TachyonError('NOT_FOUND', 'no such user in this tenant', { publicMessage: 'No such user.' });
}
