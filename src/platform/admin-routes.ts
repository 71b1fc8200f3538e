/**
 * The handlers of the administrators' and auditors' routes (audit log; see routes.ts for
 * who may call each): kept apart from app.ts, which checks session, CSRF, stage, password
 * change and role before any of these runs. The tenant is always the principal's.
 */
import { Readable } from 'node:stream';
import { z } from 'zod';
import { TachyonError } from '../core/errors.js';
import type { Ctx, Handler } from './app.js';
import { chainSummary, exportAudit, parseAuditQuery, parseExportFormat, queryAudit, type AuditLogReader } from './audit-view.js';
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
export type AdminRouteName = 'auditList' | 'auditExport' | 'getAllowList' | 'setAllowList';

export interface AdminRouteOptions {
  readonly identity: IdentityService;
  /** Where the audit views read records (the DatabaseAuditSink the identity service writes to). */
  readonly auditLog?: AuditLogReader | undefined;
  /** The tenants' IP allow-lists. */
  readonly allowLists?: TenantAllowLists | undefined;
  /** Current time (for the export's summary). */
  readonly now: () => number;
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
