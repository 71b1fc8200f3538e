/**
 * Per-tenant IP allow-lists of the web platform, kept in the `platform_allow_list` table
 * (migration 0009) and parsed with the defender's CIDR parser (src/defender/address.ts).
 *
 * A tenant without a list (no row, or an empty one) admits every address; a tenant with
 * one admits only addresses inside it — for its sign-ins (refused as an ordinary failed
 * sign-in, so the answer says nothing about the account or the list) and for every request
 * of its sessions and API tokens (403 "Access denied."). Other tenants are unaffected. The
 * defender's own per-tenant lists from the configuration (`allowList.tenants`, keyed by
 * tenant slug) apply as well: an address must pass both.
 *
 * Lists are cached per tenant for {@link CACHE_MS} so that a request costs no query; a
 * change made through this store applies at once in this process, and within the cache
 * time in others on the same database.
 */
import type { Clock } from '../core/clock.js';
import { TachyonError } from '../core/errors.js';
import type { Database } from '../db/database.js';
import { CidrList, parseCidr, type Defender } from '../defender/index.js';
import type { Tenant } from './model.js';

/** How long a tenant's list is reused before it is read again (ms). */
export const CACHE_MS = 2000;
/** Most blocks in one tenant's list. */
export const MAX_ALLOW_ENTRIES = 256;

/** The seam the sign-in and the session checks use. */
export interface TenantAddressGate {
  /** Whether `address` may sign in to / use a session of `tenant`. */
  admits(tenant: Tenant, address: string): Promise<boolean>;
}

export interface TenantAllowList {
  /** Normalized blocks (`10.0.0.0/8`); empty: no list. */
  readonly cidrs: readonly string[];
  readonly updatedAt: string | null;
  readonly updatedBy: string | null;
}

/**
 * Validates a list as sent by an administrator: an array of at most
 * {@link MAX_ALLOW_ENTRIES} CIDR strings; returns the normalized, de-duplicated blocks.
 * @throws TachyonError `USAGE` naming the bad entry by index (`cidrs[3]`) and why.
 */
export function validateAllowList(input: unknown): string[] {
  if (!Array.isArray(input)) throw new TachyonError('USAGE', 'cidrs is not an array', { publicMessage: 'Invalid request: cidrs must be a list of address blocks.', details: { field: 'cidrs' } });
  if (input.length > MAX_ALLOW_ENTRIES) {
    throw new TachyonError('USAGE', 'too many allow-list entries', { publicMessage: `Invalid request: at most ${MAX_ALLOW_ENTRIES} address blocks.`, details: { field: 'cidrs' } });
  }
  const out: string[] = [];
  input.forEach((v, i) => {
    if (typeof v !== 'string') throw new TachyonError('USAGE', `cidrs[${i}] is not a string`, { publicMessage: `Invalid request: cidrs[${i}] is not an address block.`, details: { field: `cidrs[${i}]` } });
    let text: string;
    try {
      text = parseCidr(v).text;
    } catch (err) {
      const why = err instanceof TachyonError && typeof err.details?.['why'] === 'string' ? err.details['why'] : 'not an address block';
      throw new TachyonError('USAGE', `cidrs[${i}]: ${why}`, { cause: err, publicMessage: `Invalid request: cidrs[${i}]: ${why}.`, details: { field: `cidrs[${i}]` } });
    }
    if (!out.includes(text)) out.push(text);
  });
  return out;
}

export class TenantAllowLists implements TenantAddressGate {
  private readonly cache = new Map<string, { list: CidrList; at: number }>();

  constructor(
    private readonly database: Database,
    private readonly clock: Clock,
    /** The defender whose configured per-tenant lists (by slug) and global list also apply. */
    private readonly defender?: Defender,
  ) {}

  /** The tenant's list as stored. */
  async get(tenantId: string): Promise<TenantAllowList> {
    const row = await this.database.db.selectFrom('platform_allow_list').selectAll().where('tenant_id', '=', tenantId).executeTakeFirst();
    if (!row) return { cidrs: [], updatedAt: null, updatedBy: null };
    return { cidrs: parseStored(row.cidrs), updatedAt: row.updated_at, updatedBy: row.updated_by };
  }

  /** Stores the tenant's list (already validated: {@link validateAllowList}); an empty one removes it. */
  async set(tenantId: string, cidrs: readonly string[], actor: string): Promise<TenantAllowList> {
    const now = new Date(this.clock.now()).toISOString();
    const row = { tenant_id: tenantId, cidrs: JSON.stringify(cidrs), updated_at: now, updated_by: actor.slice(0, 128) };
    await this.database.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('platform_allow_list').where('tenant_id', '=', tenantId).execute();
      await tx.insertInto('platform_allow_list').values(row).execute();
    });
    this.cache.set(tenantId, { list: CidrList.parse(cidrs), at: this.clock.now() });
    return { cidrs: [...cidrs], updatedAt: now, updatedBy: row.updated_by };
  }

  private async list(tenantId: string): Promise<CidrList> {
    const hit = this.cache.get(tenantId);
    const now = this.clock.now();
    if (hit && now - hit.at < CACHE_MS && now >= hit.at) return hit.list;
    const list = CidrList.parse((await this.get(tenantId)).cidrs);
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(tenantId, { list, at: now });
    return list;
  }

  /** Whether `cidrs` (validated) admit `address`: an empty list admits everyone. */
  static listAdmits(cidrs: readonly string[], address: string): boolean {
    return cidrs.length === 0 || CidrList.parse(cidrs).contains(address);
  }

  async admits(tenant: Tenant, address: string): Promise<boolean> {
    if (this.defender !== undefined && !this.defender.allowed(address, tenant.slug)) return false;
    const list = await this.list(tenant.id);
    return list.size === 0 || list.contains(address);
  }
}

function parseStored(text: string): string[] {
  try {
    const v = JSON.parse(text) as unknown;
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  } catch {
    // fall through
  }
  // a corrupt row must not open the tenant to every address: fail closed
  throw new TachyonError('INTERNAL', 'stored allow-list does not parse');
}
