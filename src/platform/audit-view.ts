/**
 * The audit log as administrators and auditors see it (GET /api/v1/audit and
 * /api/v1/audit/export): a tenant's records from the database audit sink
 * (audit-store.ts), filtered, paged and exported, with the result of verifying the hash
 * chain.
 *
 * - A record belongs to the tenant its `fields.tenant` names (the slug the sink stores in
 *   the `tenant` column); the tenant always comes from the caller's principal, never from
 *   the request.
 * - Filters: `from`/`to` (ISO-8601 date or date-time, inclusive), `action` (the record
 *   type, e.g. `web.signin`, or its `fields.action`, e.g. `user.create`), `actor`
 *   (`fields.actor`, else `fields.user`), `outcome` (`success`, `failure`, `pending`; see
 *   {@link outcomeOf}); `offset`/`limit` (at most {@link MAX_PAGE}). Unknown query
 *   parameters are ignored (a `tenant=` parameter changes nothing).
 * - The export streams every matching record: JSON lines (each the stored record line,
 *   verbatim, with its hash) ending with one `audit.export` summary line, or CSV (one row a
 *   record, cells that a spreadsheet would take for a formula prefixed with `'`) ending
 *   with a summary row. The chain verification result is also in the
 *   `X-Audit-Chain` header (`ok`, or `broken`).
 */
import type { AuditVerifyResult } from '../audit/index.js';
import { TachyonError } from '../core/errors.js';
import type { StoredAuditRow } from './audit-store.js';

/** The seam: where a tenant's audit records are read from. Real: DatabaseAuditSink. */
export interface AuditLogReader {
  /** The records naming `tenant` (slug), in chain order, with `from <= ts <= to` (ISO-8601, ms). */
  scan(tenant: string, range: { readonly from?: string; readonly to?: string }): AsyncIterable<StoredAuditRow>;
  /** Every record (any tenant, or none) with `from <= ts <= to`, in chain order: for attributing blocks (admin-routes.ts). */
  scanAll(range: { readonly from?: string; readonly to?: string }): AsyncIterable<StoredAuditRow>;
  /** Verifies the whole chain (every tenant's records: there is one chain). */
  verify(): Promise<AuditVerifyResult>;
}

export const OUTCOMES = ['success', 'failure', 'pending'] as const;
export type AuditOutcome = (typeof OUTCOMES)[number];
export const DEFAULT_PAGE = 50;
export const MAX_PAGE = 500;
const MAX_OFFSET = 1_000_000;

export interface AuditQuery {
  readonly from?: string;
  readonly to?: string;
  readonly action?: string;
  readonly actor?: string;
  readonly outcome?: AuditOutcome;
  readonly offset: number;
  readonly limit: number;
}

export type ExportFormat = 'jsonl' | 'csv';

/** One record as the API shows it. */
export interface AuditEntry {
  readonly seq: number;
  readonly id: string;
  readonly ts: string;
  readonly type: string;
  readonly severity: string;
  readonly correlationId: string | null;
  readonly actor: string;
  readonly action: string;
  readonly outcome: AuditOutcome;
  readonly clientAddress: string;
  readonly fields: Record<string, unknown>;
}

function bad(field: string): TachyonError {
  return new TachyonError('USAGE', `bad audit query parameter ${field}`, {
    publicMessage: `Invalid request: query parameter ${field}.`,
    details: { field },
  });
}

const ACTION = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?(?:Z|[+-]\d{2}:\d{2})$/;
// eslint-disable-next-line no-control-regex -- control characters are what it refuses
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

function one(query: Record<string, unknown>, key: string): string | undefined {
  const v = query[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw bad(key);
  return v;
}

/** A time bound: `YYYY-MM-DD` (the day's start for `from`, its last millisecond for `to`) or a date-time with a zone. */
function timeBound(query: Record<string, unknown>, key: 'from' | 'to'): string | undefined {
  const v = one(query, key);
  if (v === undefined || v === '') return undefined;
  if (v.length > 40 || !(DATE_ONLY.test(v) || DATE_TIME.test(v))) throw bad(key);
  let ms = Date.parse(DATE_ONLY.test(v) ? `${v}T00:00:00.000Z` : v);
  if (!Number.isFinite(ms)) throw bad(key);
  if (DATE_ONLY.test(v) && key === 'to') ms += 86_400_000 - 1;
  if (ms < 0 || ms > Date.parse('9999-12-31T23:59:59.999Z')) throw bad(key);
  return new Date(ms).toISOString();
}

function integer(query: Record<string, unknown>, key: string, lo: number, hi: number, dflt: number): number {
  const v = one(query, key);
  if (v === undefined || v === '') return dflt;
  if (!/^\d{1,7}$/.test(v)) throw bad(key);
  const n = Number(v);
  if (n < lo || n > hi) throw bad(key);
  return n;
}

/**
 * Parses the query string of GET /api/v1/audit (fastify's parsed object).
 * @throws TachyonError `USAGE` naming the bad parameter (never its value).
 */
export function parseAuditQuery(raw: unknown): AuditQuery {
  const query = (raw !== null && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
  const from = timeBound(query, 'from');
  const to = timeBound(query, 'to');
  if (from !== undefined && to !== undefined && from > to) throw bad('from');
  const action = one(query, 'action');
  if (action !== undefined && action !== '' && !ACTION.test(action)) throw bad('action');
  const actor = one(query, 'actor');
  if (actor !== undefined && (actor.length > 128 || CONTROL.test(actor))) throw bad('actor');
  const outcome = one(query, 'outcome');
  if (outcome !== undefined && outcome !== '' && !(OUTCOMES as readonly string[]).includes(outcome)) throw bad('outcome');
  return {
    ...(from !== undefined ? { from } : {}),
    ...(to !== undefined ? { to } : {}),
    ...(action !== undefined && action !== '' ? { action } : {}),
    ...(actor !== undefined && actor !== '' ? { actor } : {}),
    ...(outcome !== undefined && outcome !== '' ? { outcome: outcome as AuditOutcome } : {}),
    offset: integer(query, 'offset', 0, MAX_OFFSET, 0),
    limit: integer(query, 'limit', 1, MAX_PAGE, DEFAULT_PAGE),
  };
}

/** Parses `format` of the export (default jsonl). @throws TachyonError `USAGE`. */
export function parseExportFormat(raw: unknown): ExportFormat {
  const query = (raw !== null && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
  const f = one(query, 'format');
  if (f === undefined || f === '' || f === 'jsonl') return 'jsonl';
  if (f === 'csv') return 'csv';
  throw bad('format');
}

const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/**
 * The outcome of a record: its `result` field when it has one (sign-ins); `failure` for
 * refusals, lockouts and refused changes (`*.refused`); `success` otherwise.
 */
export function outcomeOf(type: string, fields: Record<string, unknown>): AuditOutcome {
  const r = fields['result'];
  if (r === 'success' || r === 'failure' || r === 'pending') return r;
  if (type === 'web.refusal' || type === 'web.lockout' || type.startsWith('refusal.') || type.endsWith('.failure')) return 'failure';
  if (str(fields['action']).endsWith('.refused')) return 'failure';
  return 'success';
}

/** The API's view of a stored row. */
export function entryOf(row: StoredAuditRow): AuditEntry {
  let fields: Record<string, unknown> = {};
  try {
    const parsed = JSON.parse(row.line) as { fields?: unknown };
    if (parsed.fields !== null && typeof parsed.fields === 'object' && !Array.isArray(parsed.fields)) fields = parsed.fields as Record<string, unknown>;
  } catch {
    // a row that does not parse still shows its columns; verification reports it
  }
  return {
    seq: row.seq,
    id: row.id,
    ts: row.ts,
    type: row.type,
    severity: row.severity,
    correlationId: row.correlationId,
    actor: str(fields['actor']) || str(fields['user']),
    action: str(fields['action']) || row.type,
    outcome: outcomeOf(row.type, fields),
    clientAddress: str(fields['clientAddress']),
    fields,
  };
}

function matches(e: AuditEntry, q: Omit<AuditQuery, 'offset' | 'limit'>): boolean {
  if (q.action !== undefined && e.type !== q.action && e.action !== q.action) return false;
  if (q.actor !== undefined && e.actor !== q.actor) return false;
  if (q.outcome !== undefined && e.outcome !== q.outcome) return false;
  return true;
}

/** One page of the tenant's matching records (oldest first) and how many match in all. */
export async function queryAudit(reader: AuditLogReader, tenant: string, q: AuditQuery): Promise<{ total: number; entries: AuditEntry[] }> {
  const entries: AuditEntry[] = [];
  let total = 0;
  for await (const row of reader.scan(tenant, { ...(q.from ? { from: q.from } : {}), ...(q.to ? { to: q.to } : {}) })) {
    const e = entryOf(row);
    if (!matches(e, q)) continue;
    if (total >= q.offset && entries.length < q.limit) entries.push(e);
    total++;
  }
  return { total, entries };
}

/** The verification summary an export carries (never another tenant's records or positions). */
export interface ChainSummary {
  readonly chain: 'ok' | 'broken';
  /** Records of the whole chain that verified. */
  readonly recordsVerified: number;
  /** Whether the records' HMACs were checked (a keyed chain verified with its key), not only the links. */
  readonly macsChecked: boolean;
  /** The first problem's reason (e.g. hash-mismatch), when broken. */
  readonly reason?: string;
}

export function chainSummary(r: AuditVerifyResult): ChainSummary {
  return { chain: r.ok ? 'ok' : 'broken', recordsVerified: r.records, macsChecked: r.macsChecked, ...(r.failure ? { reason: r.failure.reason } : {}) };
}

const CSV_COLUMNS = ['seq', 'ts', 'type', 'severity', 'actor', 'action', 'outcome', 'clientAddress', 'correlationId', 'id', 'fields'] as const;

/** One CSV cell: quoted when needed; a leading = + - @ tab or CR (a formula to a spreadsheet) gets a `'` first. */
export function csvCell(v: string): string {
  const safe = /^[=+\-@\t\r]/.test(v) ? `'${v}` : v;
  return /[",\r\n]/.test(safe) || safe !== safe.trim() ? `"${safe.replace(/"/g, '""')}"` : safe;
}

function csvRow(cells: readonly string[]): string {
  return `${cells.map(csvCell).join(',')}\r\n`;
}

/**
 * The export of a tenant's matching records (filters as {@link queryAudit}, no paging),
 * as text chunks; the last chunk is the summary (`audit.export`: tenant, records exported,
 * chain verification).
 */
export async function* exportAudit(
  reader: AuditLogReader,
  tenant: string,
  q: Omit<AuditQuery, 'offset' | 'limit'>,
  format: ExportFormat,
  summary: ChainSummary,
  nowIso: string,
): AsyncGenerator<string> {
  if (format === 'csv') yield csvRow(CSV_COLUMNS);
  let n = 0;
  let batch = '';
  for await (const row of reader.scan(tenant, { ...(q.from ? { from: q.from } : {}), ...(q.to ? { to: q.to } : {}) })) {
    const e = entryOf(row);
    if (!matches(e, q)) continue;
    n++;
    batch +=
      format === 'jsonl'
        ? `${row.line}\n`
        : csvRow([String(e.seq), e.ts, e.type, e.severity, e.actor, e.action, e.outcome, e.clientAddress, e.correlationId ?? '', e.id, JSON.stringify(e.fields)]);
    if (batch.length >= 64 * 1024) {
      yield batch;
      batch = '';
    }
  }
  if (batch !== '') yield batch;
  const end = { type: 'audit.export', tenant, exportedAt: nowIso, records: n, ...summary };
  if (format === 'jsonl') yield `${JSON.stringify(end)}\n`;
  else yield csvRow(['', nowIso, 'audit.export', '', '', 'export', summary.chain === 'ok' ? 'success' : 'failure', '', '', '', JSON.stringify(end)]);
}
