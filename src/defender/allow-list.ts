/**
 * Allow-lists: a global CIDR list and one per tenant (a tenant id is an opaque string
 * here). Deny by default once a list is configured: an address must be in the global
 * list (if there is one) and in the tenant's list (if the tenant has one). With no list
 * configured, every address is allowed.
 */
import { TachyonError } from '../core/errors.js';
import { CidrList } from './address.js';

export interface AllowListConfig {
  /** Global blocks (CIDR); absent or empty: no global list. */
  readonly global?: readonly string[];
  /** Per-tenant blocks (CIDR). */
  readonly tenants?: Readonly<Record<string, readonly string[]>>;
}

export class AllowLists {
  private readonly global: CidrList | undefined;
  private readonly tenants: ReadonlyMap<string, CidrList>;

  constructor(global?: CidrList, tenants?: ReadonlyMap<string, CidrList>) {
    this.global = global !== undefined && global.size > 0 ? global : undefined;
    this.tenants = tenants ?? new Map();
  }

  /**
   * Parses a configuration.
   * @throws TachyonError `CONFIG` naming the bad entry (`allowList.global[2]: invalid address block …`).
   */
  static parse(c: AllowListConfig, where = 'allowList'): AllowLists {
    const tenants = new Map<string, CidrList>();
    for (const [tenant, list] of Object.entries(c.tenants ?? {})) {
      if (tenant === '' || tenant.length > 128) throw new TachyonError('CONFIG', `${where}.tenants: a tenant id must be 1 to 128 characters`);
      tenants.set(tenant, CidrList.parse(list, `${where}.tenants.${tenant}`));
    }
    return new AllowLists(c.global !== undefined ? CidrList.parse(c.global, `${where}.global`) : undefined, tenants);
  }

  /** Whether any list is configured. */
  get configured(): boolean {
    return this.global !== undefined || this.tenants.size > 0;
  }

  /** Whether the address may connect (for the tenant, if given). */
  allowed(address: string, tenant?: string): boolean {
    if (this.global !== undefined && !this.global.contains(address)) return false;
    if (tenant !== undefined) {
      const t = this.tenants.get(tenant);
      if (t !== undefined && !t.contains(address)) return false;
    }
    return true;
  }
}
