/**
 * The handlers of the administrators' and auditors' routes (audit log; see routes.ts for
 * who may call each): kept apart from app.ts, which checks session, CSRF, stage, password
 * change and role before any of these runs. The tenant is always the principal's.
 */
import { Readable } from 'node:stream';
import { TachyonError } from '../core/errors.js';
import type { Ctx, Handler } from './app.js';
import { chainSummary, exportAudit, parseAuditQuery, parseExportFormat, queryAudit, type AuditLogReader } from './audit-view.js';
import type { IdentityService, Principal } from './service.js';

/** The route names this module serves. */
export type AdminRouteName = 'auditList' | 'auditExport';

export interface AdminRouteOptions {
  readonly identity: IdentityService;
  /** Where the audit views read records (the DatabaseAuditSink the identity service writes to). */
  readonly auditLog?: AuditLogReader | undefined;
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
  return {
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
