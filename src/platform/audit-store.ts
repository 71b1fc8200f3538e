/**
 * A database-backed {@link AuditSink}: the platform's audit records in the
 * `platform_audit` table, each stored as the exact JSON line the audit log file would
 * hold (src/audit/line.ts) — same fields, same redaction, same hash chain (each line
 * carries the SHA-256 of the previous one and its own hash, or HMAC with a key) — so
 * `verify()` runs the audit layer's verifier over the rows in order.
 *
 * `record` is synchronous (the seam's contract): it builds and chains the record at
 * once and queues the insert; rows are written in order, one at a time. `flush()` waits
 * until every queued record is stored. A failed insert makes every later `record` throw
 * `IO` (the chain must not fork). One writer per database: the sink continues the chain
 * from the last row at open, and a second concurrent writer would collide on `seq`.
 */
import { createHash } from 'node:crypto';
import { verifyLines, type AuditVerifyOptions, type AuditVerifyResult, type RawLine } from '../audit/index.js';
import type { AuditEvent, AuditSink } from '../audit/index.js';
import { encodeLine, GENESIS, lineMac, type LineMac } from '../audit/line.js';
import { buildRecord } from '../audit/record.js';
import { systemClock, type Clock } from '../core/clock.js';
import { TachyonError, toTachyonError } from '../core/errors.js';
import type { Database } from '../db/database.js';
import type { AuditLogReader } from './audit-view.js';

export interface DatabaseAuditSinkOptions {
  /** HMAC-SHA-256 chain key (as for the file sink); without it, plain SHA-256. */
  readonly key?: Buffer;
  readonly clock?: Clock;
}

/** A stored record, as the audit views will list it. */
export interface StoredAuditRow {
  readonly seq: number;
  readonly id: string;
  readonly ts: string;
  readonly tenant: string;
  readonly type: string;
  readonly severity: string;
  readonly correlationId: string | null;
  /** The record line (JSON). */
  readonly line: string;
}

const sha256 = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

export class DatabaseAuditSink implements AuditSink, AuditLogReader {
  private readonly database: Database;
  private readonly mac: LineMac;
  private readonly key: Buffer | undefined;
  private readonly clock: Clock;
  private seq: number;
  private prev: string;
  private queue: Promise<void> = Promise.resolve();
  private failure: TachyonError | undefined;
  private closed = false;

  private constructor(database: Database, options: DatabaseAuditSinkOptions, seq: number, prev: string) {
    this.database = database;
    this.mac = lineMac(options.key);
    this.key = options.key;
    this.clock = options.clock ?? systemClock;
    this.seq = seq;
    this.prev = prev;
  }

  /** Opens the sink, continuing the chain after the table's last row. */
  static async open(database: Database, options: DatabaseAuditSinkOptions = {}): Promise<DatabaseAuditSink> {
    const last = await database.db.selectFrom('platform_audit').select(['seq', 'line']).orderBy('seq', 'desc').limit(1).executeTakeFirst();
    return new DatabaseAuditSink(database, options, last ? Number(last.seq) : 0, last ? sha256(last.line) : GENESIS);
  }

  record(event: AuditEvent): string {
    if (this.closed) throw new TachyonError('INTERNAL', 'the database audit sink is closed');
    if (this.failure) throw new TachyonError('IO', `audit records can no longer be stored: ${this.failure.message}`, { cause: this.failure });
    const rec = buildRecord(event, this.seq + 1, this.clock.now());
    const { line } = encodeLine(rec, this.prev, this.mac);
    const text = line.toString('utf8');
    this.seq = rec.seq;
    this.prev = sha256(text);
    const tenant = rec.fields['tenant'];
    const row = {
      seq: rec.seq,
      id: rec.id,
      ts: rec.ts,
      tenant: typeof tenant === 'string' ? tenant.slice(0, 128) : '',
      type: rec.type,
      severity: rec.severity,
      correlation_id: rec.correlationId ?? null,
      line: text,
    };
    this.queue = this.queue.then(async () => {
      if (this.failure) return;
      try {
        await this.database.db.insertInto('platform_audit').values(row).execute();
      } catch (err) {
        this.failure = toTachyonError(err, 'IO');
      }
    });
    return rec.id;
  }

  /** Waits until every record so far is stored. @throws TachyonError `IO` (or the db's code) if one could not be. */
  async flush(): Promise<void> {
    await this.queue;
    if (this.failure) throw this.failure;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue;
  }

  /** Stored records in order, optionally of one tenant (slug) and/or type, from `afterSeq`, at most `limit`. */
  async list(filter: { tenant?: string; type?: string; afterSeq?: number; limit?: number } = {}): Promise<StoredAuditRow[]> {
    await this.queue;
    let q = this.database.db.selectFrom('platform_audit').selectAll();
    if (filter.tenant !== undefined) q = q.where('tenant', '=', filter.tenant);
    if (filter.type !== undefined) q = q.where('type', '=', filter.type);
    if (filter.afterSeq !== undefined) q = q.where('seq', '>', filter.afterSeq);
    const rows = await q.orderBy('seq').limit(Math.min(Math.max(filter.limit ?? 1000, 1), 10_000)).execute();
    return rows.map((r) => ({
      seq: Number(r.seq),
      id: r.id,
      ts: r.ts,
      tenant: r.tenant,
      type: r.type,
      severity: r.severity,
      correlationId: r.correlation_id,
      line: r.line,
    }));
  }

  /**
   * The records of one tenant (slug) with `from <= ts <= to` (ISO-8601 UTC with ms, as
   * stored), in order, read in pages of 500 (the audit views: audit-view.ts).
   */
  scan(tenant: string, range: { readonly from?: string; readonly to?: string } = {}): AsyncGenerator<StoredAuditRow> {
    return this.rows(tenant, range);
  }

  /** Every tenant's records (and those naming none) with `from <= ts <= to`, in order. */
  scanAll(range: { readonly from?: string; readonly to?: string } = {}): AsyncGenerator<StoredAuditRow> {
    return this.rows(undefined, range);
  }

  private async *rows(tenant: string | undefined, range: { readonly from?: string; readonly to?: string }): AsyncGenerator<StoredAuditRow> {
    await this.queue;
    let after = 0;
    for (;;) {
      let q = this.database.db.selectFrom('platform_audit').selectAll().where('seq', '>', after);
      if (tenant !== undefined) q = q.where('tenant', '=', tenant);
      if (range.from !== undefined) q = q.where('ts', '>=', range.from);
      if (range.to !== undefined) q = q.where('ts', '<=', range.to);
      const page = await q.orderBy('seq').limit(500).execute();
      for (const r of page) {
        after = Number(r.seq);
        yield { seq: after, id: r.id, ts: r.ts, tenant: r.tenant, type: r.type, severity: r.severity, correlationId: r.correlation_id, line: r.line };
      }
      if (page.length < 500) return;
    }
  }

  /** Verifies the whole chain with the audit layer's verifier (a missing, edited or reordered row fails); with the sink's key unless `options.key`. */
  async verify(options: AuditVerifyOptions = {}): Promise<AuditVerifyResult> {
    await this.queue;
    const db = this.database.db;
    async function* lines(): AsyncGenerator<RawLine> {
      let after = 0;
      let no = 1;
      let offset = 0;
      for (;;) {
        const page = await db.selectFrom('platform_audit').select(['seq', 'line']).where('seq', '>', after).orderBy('seq').limit(500).execute();
        if (page.length === 0) return;
        for (const r of page) {
          const bytes = Buffer.from(r.line, 'utf8');
          yield { no, offset, bytes, length: bytes.length, terminated: true, sha256: sha256(r.line) };
          no++;
          offset += bytes.length + 1;
          after = Number(r.seq);
        }
      }
    }
    // the sink's own chain key unless another is given: the MACs are checked, not only the links
    return verifyLines(lines(), { ...options, ...(options.key ?? this.key ? { key: options.key ?? this.key } : {}) });
  }
}
