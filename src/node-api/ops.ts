/**
 * Monitoring routes of the node API (a NodeApiPlugin): transfers active and past, one
 * transfer with its files, cancel, a live feed of events (server-sent events) and the
 * Prometheus metrics. Endpoints, event format and metric names: docs/monitoring.md.
 *
 * Authorization: a node administrator sees and cancels every transfer and reads
 * /metrics. An access key sees, follows and cancels only the transfers whose
 * `accessKeyId` is its own (set when a transfer token of that key started the session);
 * another transfer is `NOT_FOUND` to it, as if it did not exist. /metrics is for
 * administrators only.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import { TachyonError } from '../core/errors.js';
import { TRANSFER_STATUSES, type MonitorEvent, type TransferDirection, type TransferMonitor, type TransferQuery, type TransferStatus } from '../server/monitor.js';
import type { NodeApiContext, NodeApiPlugin, Principal } from './context.js';
import { createTransferMetrics } from './metrics.js';

export const DEFAULT_PAGE_LIMIT = 100;
export const MAX_PAGE_LIMIT = 1000;
/** comment lines on an idle event stream, so that proxies and clients see it alive */
export const DEFAULT_HEARTBEAT_MS = 15_000;
/** an event stream whose client reads slower than this much backlog is closed */
const MAX_STREAM_BACKLOG = 1 << 20;

export interface OpsRoutesOptions {
  monitor: TransferMonitor;
  /** the metrics registry (default: one made for this monitor, with Node's process metrics) */
  metrics?: Registry;
  heartbeatMs?: number;
}

const usage = (message: string): TachyonError => new TachyonError('USAGE', message, { publicMessage: message });

const QUERY_KEYS = new Set(['offset', 'limit', 'status', 'user', 'direction', 'since', 'until']);

function intParam(v: string | undefined, name: string, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  if (!/^[0-9]{1,10}$/.test(v)) throw usage(`${name} must be an integer from ${min} to ${max}.`);
  const n = Number(v);
  if (n < min || n > max) throw usage(`${name} must be an integer from ${min} to ${max}.`);
  return n;
}

function timeParam(v: string | undefined, name: string): string | undefined {
  if (v === undefined) return undefined;
  // ISO-8601 date or date-time (UTC or with an offset); normalized to UTC text
  if (v.length > 40 || !/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2}))?$/.test(v)) {
    throw usage(`${name} must be an ISO-8601 date or date-time such as 2026-01-31T12:00:00Z.`);
  }
  // Date.parse rolls over (February 30 becomes March 2): check every field's range first
  const [y, mo, d, h = 0, mi = 0, se = 0] = v.split(/[-T:.Z+]/).slice(0, 6).map(Number) as number[];
  const day = new Date(Date.UTC(y!, mo! - 1, d!));
  const ms = Date.parse(v);
  if (day.getUTCFullYear() !== y || day.getUTCMonth() !== mo! - 1 || day.getUTCDate() !== d || h > 23 || mi > 59 || se > 59 || !Number.isFinite(ms)) {
    throw usage(`${name} is not a valid date.`);
  }
  return new Date(ms).toISOString();
}

/**
 * Parses the query string of `GET /ops/transfers` (fastify's parsed object): unknown or
 * repeated parameters, bad numbers, statuses, directions and dates are `USAGE` (400).
 */
export function parseTransferQuery(raw: unknown): TransferQuery {
  const q: Record<string, string> = {};
  if (raw !== undefined && raw !== null) {
    if (typeof raw !== 'object') throw usage('Invalid query.');
    for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
      if (!QUERY_KEYS.has(k)) throw usage(`Unknown query parameter '${k.slice(0, 40)}'.`);
      if (typeof v !== 'string') throw usage(`Query parameter '${k}' may appear once.`);
      q[k] = v;
    }
  }
  const out: TransferQuery = {
    offset: intParam(q['offset'], 'offset', 0, 0, 1_000_000_000),
    limit: intParam(q['limit'], 'limit', DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT),
  };
  const status = q['status'];
  if (status !== undefined) {
    if (!(TRANSFER_STATUSES as readonly string[]).includes(status)) throw usage(`status must be one of ${TRANSFER_STATUSES.join(', ')}.`);
    out.status = status as TransferStatus;
  }
  const direction = q['direction'];
  if (direction !== undefined) {
    if (direction !== 'upload' && direction !== 'download') throw usage('direction must be upload or download.');
    out.direction = direction as TransferDirection;
  }
  const user = q['user'];
  if (user !== undefined) {
    if (user.length === 0 || user.length > 256) throw usage('user must be 1 to 256 characters.');
    out.user = user;
  }
  const since = timeParam(q['since'], 'since');
  const until = timeParam(q['until'], 'until');
  if (since !== undefined) out.since = since;
  if (until !== undefined) out.until = until;
  return out;
}

const ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function transferId(params: unknown): string {
  const id = (params as Record<string, unknown> | undefined)?.['id'];
  // not an id the monitor makes: it cannot exist
  if (typeof id !== 'string' || !ID.test(id)) throw new TachyonError('NOT_FOUND', 'no such transfer id', { publicMessage: 'No such transfer.' });
  return id;
}

/** The caller: a node administrator, else an access key; the administrator's refusal when neither. */
async function principalOf(context: NodeApiContext, request: FastifyRequest): Promise<Principal> {
  try {
    return await context.requireAdmin(request);
  } catch (adminError) {
    try {
      return await context.requireAccessKey(request);
    } catch {
      throw adminError;
    }
  }
}

/** The access key a caller is limited to (undefined: an administrator, unlimited). */
const scopeOf = (p: Principal): string | undefined => (p.kind === 'access-key' ? p.accessKeyId : undefined);

export function opsRoutes(o: OpsRoutesOptions): NodeApiPlugin {
  const metrics = o.metrics ?? createTransferMetrics(o.monitor);
  const heartbeatMs = o.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  return (app, context) => {
    /** open event streams: ended when the application closes (they would hold its server open) */
    const streams = new Set<() => void>();
    app.addHook('preClose', (done) => {
      for (const close of [...streams]) close();
      done();
    });
    const visible = async (request: FastifyRequest): Promise<{ scope: string | undefined; id: string }> => {
      const scope = scopeOf(await principalOf(context, request));
      return { scope, id: transferId(request.params) };
    };
    const hidden = (): TachyonError => new TachyonError('NOT_FOUND', 'transfer of another access key', { publicMessage: 'No such transfer.' });

    app.get('/ops/transfers', async (request, reply) => {
      const scope = scopeOf(await principalOf(context, request));
      const q = parseTransferQuery(request.query);
      if (scope !== undefined) q.accessKeyId = scope;
      const page = await o.monitor.list(q);
      void reply.header('X-Total-Count', String(page.total));
      return { total: page.total, offset: q.offset, limit: q.limit, transfers: page.items };
    });

    app.get('/ops/transfers/events', async (request, reply) => {
      const scope = scopeOf(await principalOf(context, request));
      if (request.query && Object.keys(request.query).length > 0) throw usage('This endpoint takes no query parameters.');
      stream(reply, scope);
    });

    app.get('/ops/transfers/:id', async (request) => {
      const { scope, id } = await visible(request);
      const t = await o.monitor.get(id);
      if (scope !== undefined && t.accessKeyId !== scope) throw hidden();
      return t;
    });

    app.post('/ops/transfers/:id/cancel', async (request, reply) => {
      const { scope, id } = await visible(request);
      if (scope !== undefined) {
        const t = await o.monitor.get(id);
        if (t.accessKeyId !== scope) throw hidden();
      }
      const t = await o.monitor.cancel(id);
      void reply.code(202);
      return { id: t.id, status: 'cancelling' };
    });

    app.get('/metrics', async (request, reply) => {
      await context.requireAdmin(request);
      const text = await metrics.metrics();
      void reply.header('Content-Type', metrics.contentType);
      return text;
    });

    /** Server-sent events: one `event:`/`data:` block per monitor event, heartbeats, gone with the client. */
    const stream = (reply: FastifyReply, scope: string | undefined): void => {
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'Content-Type': 'text/event-stream; charset=utf-8',
        'Cache-Control': 'no-store',
        Connection: 'keep-alive',
        'X-Content-Type-Options': 'nosniff',
      });
      let seq = 0;
      let closed = false;
      const write = (chunk: string): void => {
        if (closed) return;
        if (res.writableLength > MAX_STREAM_BACKLOG) {
          close();
          return;
        }
        res.write(chunk);
      };
      const relevant = (e: MonitorEvent): boolean => {
        if (scope === undefined) return true;
        if (e.type === 'refusal') return false;
        const key = 'transfer' in e ? e.transfer.accessKeyId : e.accessKeyId;
        return key === scope;
      };
      const unsubscribe = o.monitor.subscribe((e) => {
        if (relevant(e)) write(`id: ${++seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
      });
      const heartbeat = setInterval(() => write(`: heartbeat ${new Date().toISOString()}\n\n`), heartbeatMs);
      const close = (): void => {
        if (closed) return;
        closed = true;
        streams.delete(close);
        clearInterval(heartbeat);
        unsubscribe();
        res.end();
      };
      streams.add(close);
      // the response closes when the client goes away (the request's own 'close' fires once its body is read)
      res.on('close', close);
      write(`retry: 2000\n: connected\n\n`);
    };
  };
}
