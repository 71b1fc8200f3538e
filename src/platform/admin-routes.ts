/**
 * The handlers of the administrators' and auditors' routes — the audit log and its
 * export, the tenant's IP allow-list, the defender's blocks that concern the tenant (see
 * routes.ts for who may call each; docs/platform-admin.md). Kept apart from app.ts, which
 * checks session, CSRF, stage, password change, address and role before any of these
 * runs. The tenant is always the principal's.
 */
import { Readable } from 'node:stream';
import { z } from 'zod';
import { TachyonError } from '../core/errors.js';
import type { Ctx, Handler } from './app.js';
import { addressKey, parseIp, type Defender } from '../defender/index.js';
import { chainSummary, entryOf, exportAudit, parseAuditQuery, parseExportFormat, queryAudit, type AuditLogReader } from './audit-view.js';
import type { IdentityService, Principal } from './service.js';
import { TenantAllowLists, validateAllowList } from './allow-list-store.js';

const ALLOW_LIST_BODY = z.object({ cidrs: z.array(z.unknown()).max(4096), confirmLockout: z.boolean().optional() }).strict();

/** Parses a body with a strict schema; a failure names the first bad field (never its value). */
function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = issue?.code === 'unrecognized_keys' ? `unknown field ${issue.keys.join(',').slice(0, 64)}` : `field ${issue?.path.join('.').slice(0, 64) || 'body'}`;
  throw new TachyonError('USAGE', field, { publicMessage: `Invalid request: ${field}.` });
}

/** The route names this module serves. */
export type AdminRouteName = 'auditList' | 'auditExport' | 'getAllowList' | 'setAllowList' | 'listBlocks' | 'liftBlock';

/**
 * How far back the audit records are read to attribute a block to tenants (ms): the
 * defender's longest default ban (24 h) — the failures that caused a live block are at most that old.
 */
export const BLOCK_ATTRIBUTION_MS = 24 * 3600_000;

/** Failures per address key in the attribution window: against the caller's tenant, and anything else. */
interface Attribution {
  own: number;
  others: number;
}

export interface AdminRouteOptions {
  readonly identity: IdentityService;
  /** Where the audit views read records (the DatabaseAuditSink the identity service writes to). */
  readonly auditLog?: AuditLogReader | undefined;
  /** The IP defender whose blocks tenant administrators see and lift (see {@link adminHandlers}). */
  readonly defender?: Defender | undefined;
  /** The tenants' IP allow-lists. */
  readonly allowLists?: TenantAllowLists | undefined;
  /** Current time (for the export's summary). */
  readonly now: () => number;
}

/** Codes of refusals the platform reports to the defender (app.ts's error handler). */
const SCORED_CODES = new Set(['AUTH_FAILED', 'MFA_INVALID', 'SSO_FAILED']);

/**
 * Whether a failure record is one the defender scored (a cause of a block): failed
 * sign-ins (password, second factor, SSO) and refusals with a scored code. Refusals of an
 * address already blocked or outside a list are consequences, not causes.
 */
export function countsForDefender(type: string, fields: Record<string, unknown>): boolean {
  if (type === 'web.signin' || type === 'sso.failure') return true;
  return type === 'web.refusal' && typeof fields['code'] === 'string' && SCORED_CODES.has(fields['code']);
}

function must(p: Principal | undefined): Principal {
  if (p === undefined) throw new TachyonError('INTERNAL', 'route without principal');
  return p;
}

export function adminHandlers(options: AdminRouteOptions): Record<AdminRouteName, Handler> {
  const log = (): AuditLogReader => {
    if (options.auditLog === undefined) {
      throw new TachyonError('CONFLICT', 'no audit log reader configured', { publicMessage: 'The audit log cannot be viewed on this server.' });
    }
    return options.auditLog;
  };
  const defender = (): Defender => {
    if (options.defender === undefined) {
      throw new TachyonError('CONFLICT', 'no defender configured', { publicMessage: 'The IP defender is not enabled on this server.' });
    }
    return options.defender;
  };
  /**
   * Which blocked addresses concern the tenant: failures the defender scores (see
   * {@link countsForDefender}) from the address against the tenant in the platform audit of the last
   * {@link BLOCK_ATTRIBUTION_MS}, and failures from it against anyone else (another
   * tenant, or no tenant named).
   */
  const attribute = async (slug: string): Promise<Map<string, Attribution>> => {
    const from = new Date(options.now() - BLOCK_ATTRIBUTION_MS).toISOString();
    const out = new Map<string, Attribution>();
    for await (const row of log().scanAll({ from })) {
      const e = entryOf(row);
      if (e.outcome !== 'failure' || !countsForDefender(e.type, e.fields) || parseIp(e.clientAddress) === undefined) continue;
      const key = addressKey(e.clientAddress);
      const a = out.get(key) ?? { own: 0, others: 0 };
      if (row.tenant === slug) a.own++;
      else a.others++;
      out.set(key, a);
    }
    return out;
  };
  const lists = (): TenantAllowLists => {
    if (options.allowLists === undefined) {
      throw new TachyonError('CONFLICT', 'no allow-list store configured', { publicMessage: 'IP allow-lists are not available on this server.' });
    }
    return options.allowLists;
  };
  return {
    getAllowList: async ({ meta, principal }: Ctx) => {
      const p = must(principal);
      const list = await lists().get(p.tenant.id);
      return { ...list, yourAddress: meta.clientAddress, youAreAdmitted: TenantAllowLists.listAdmits(list.cidrs, meta.clientAddress) };
    },
    setAllowList: async ({ request, meta, principal }: Ctx) => {
      const p = must(principal);
      const body = parseBody(ALLOW_LIST_BODY, request.body);
      const cidrs = validateAllowList(body.cidrs);
      const admitted = TenantAllowLists.listAdmits(cidrs, meta.clientAddress);
      // an administrator does not lock themself out by mistake
      if (!admitted && body.confirmLockout !== true) {
        throw new TachyonError('CONFLICT', 'allow-list without the caller’s address', {
          publicMessage: 'The list does not include your current address, so you would lose access: add it, or confirm with confirmLockout: true.',
          details: { reason: 'would-lock-out' },
        });
      }
      const saved = await lists().set(p.tenant.id, cidrs, p.user.username);
      options.identity.recordAdminAction(p, meta, 'allow-list.update', p.tenant.id, ['cidrs', ...(cidrs.length === 0 ? ['removed'] : []), ...(admitted ? [] : ['lockout-confirmed'])]);
      return { ...saved, yourAddress: meta.clientAddress, youAreAdmitted: admitted };
    },
    listBlocks: async ({ principal }: Ctx) => {
      const p = must(principal);
      const blocks = await defender().list();
      const attribution = await attribute(p.tenant.slug);
      return {
        blocks: blocks
          .filter((b) => (attribution.get(b.address)?.own ?? 0) > 0)
          .map((b) => {
            const a = attribution.get(b.address) as Attribution;
            return { address: b.address, until: b.until, banCount: b.banCount, score: b.score, failuresHere: a.own, liftable: a.others === 0 };
          }),
      };
    },
    liftBlock: async ({ request, reply, meta, principal }: Ctx) => {
      const p = must(principal);
      const raw = (request.params as Record<string, unknown>)['address'];
      const notBlocked = (): TachyonError => new TachyonError('NOT_FOUND', 'no such block of this tenant', { publicMessage: 'The address is not blocked.', details: { reason: 'not-blocked' } });
      if (typeof raw !== 'string' || raw.length > 64) throw notBlocked();
      const text = raw.endsWith('/64') ? raw.slice(0, -3) : raw;
      if (parseIp(text) === undefined) throw notBlocked();
      const key = addressKey(text);
      const d = defender();
      const a = (await attribute(p.tenant.slug)).get(key);
      // a block this tenant cannot see does not exist for it
      if (a === undefined || a.own === 0 || !(await d.list()).some((b) => b.address === key)) throw notBlocked();
      if (a.others > 0) {
        throw new TachyonError('PERMISSION', 'block also caused by failures against others', {
          publicMessage: 'This address also failed against other organisations or services: only a platform administrator can lift its block.',
          details: { reason: 'block-not-own' },
        });
      }
      if (!(await d.unblock(key, `web:${p.tenant.slug}/${p.user.username}`))) throw notBlocked();
      options.identity.recordAdminAction(p, meta, 'defender.unblock', key);
      void reply.code(204);
      return undefined;
    },
    auditList: async ({ request, reply, principal }: Ctx) => {
      const q = parseAuditQuery(request.query);
      const r = await queryAudit(log(), must(principal).tenant.slug, q);
      void reply.header('x-total-count', String(r.total));
      return { total: r.total, offset: q.offset, limit: q.limit, entries: r.entries };
    },
    auditExport: async ({ request, reply, meta, principal }: Ctx) => {
      const p = must(principal);
      const reader = log();
      const { offset: _o, limit: _l, ...filters } = parseAuditQuery(request.query);
      const format = parseExportFormat(request.query);
      // verified before the first byte, so that the header can carry the result
      const summary = chainSummary(await reader.verify());
      options.identity.recordAdminAction(p, meta, 'audit.export', p.tenant.id, [format, ...Object.keys(filters)]);
      const stamp = new Date(options.now()).toISOString();
      void reply
        .header('x-audit-chain', summary.chain)
        .header('content-disposition', `attachment; filename="audit-${p.tenant.slug}-${stamp.slice(0, 10)}.${format}"`)
        .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson; charset=utf-8');
      return Readable.from(exportAudit(reader, p.tenant.slug, filters, format, summary, stamp));
    },
  };
}
