/**
 * The transfer monitor: what the transfer server is doing now and what it did. The
 * server reports each session's start, its files (start, settle), its progress (sampled
 * by the file roles' 250 ms watchdog, never per datagram), its end and every refusal;
 * the monitor keeps the active transfers, a bounded history of finished ones (and, with
 * a database, persists each finished transfer in the `transfer` table), cumulative
 * counters for the metrics, and a feed of events for live subscribers. It can cancel a
 * running session.
 *
 * One instance per transfer server (no module state). The node API's ops routes
 * (src/node-api/ops.ts) read it.
 */
import { randomUUID } from 'node:crypto';
import type { Selectable } from 'kysely';
import { systemClock, type Clock } from '../core/clock.js';
import { TachyonError, toTachyonError } from '../core/errors.js';
import type { Database } from '../db/database.js';
import type { TransferTable } from '../db/schema.js';
import type { FileOutcome, FileStart } from '../transfer/roles.js';
import type { SessionProgress } from '../transfer/session.js';

export type TransferDirection = 'upload' | 'download';
export type TransferStatus = 'active' | 'completed' | 'failed' | 'cancelled';
export const TRANSFER_STATUSES: readonly TransferStatus[] = ['active', 'completed', 'failed', 'cancelled'];
export type FileState = 'active' | 'done' | 'skipped' | 'failed';

export interface FileProgress {
  path: string;
  size: number;
  /** resume offset (bytes the receiver already held) */
  offset: number;
  state: FileState;
  /**
   * File bytes carried so far. For a file in flight it is an estimate: the session's
   * carried bytes spread over its files in flight in announcement order (the data
   * flows in that order); exact once the file settles.
   */
  bytes: number;
  /** bits/s: the file's average rate, over its time in flight */
  rateBps: number;
  startedAt: string;
  endedAt?: string;
  code?: string;
  message?: string;
}

export interface TransferRecord {
  id: string;
  /** the SSH connection id: the audit records of the session carry it */
  correlationId: string;
  user: string;
  /** the access key whose transfer token started the session (set by the token layer), else null */
  accessKeyId: string | null;
  direction: TransferDirection;
  status: TransferStatus;
  code?: string;
  message?: string;
  clientAddress: string;
  cipher: string;
  startedAt: string;
  endedAt?: string;
  /** files seen so far (settled and in flight) */
  files: number;
  filesDone: number;
  filesFailed: number;
  filesSkipped: number;
  /** file bytes carried over UDP */
  bytes: number;
  /** bytes of the files announced or probed so far (the session learns its size as it goes) */
  totalBytes: number;
  /** bytes not carried (skipped files, resumed prefixes) */
  skippedBytes: number;
  durationMs: number;
  /** bits/s over the last sample (active) or on average over the session (finished) */
  rateBps: number;
  /** datagrams the server sent (download) or accepted (upload) */
  datagrams: number;
  /** retransmitted datagrams (downloads: the server sends); null where the server receives */
  retransmits: number | null;
}

export interface TransferDetail extends TransferRecord {
  fileList: FileProgress[];
  /** files beyond the per-transfer limit that are counted but not listed */
  filesOmitted: number;
}

export type MonitorEvent =
  | { type: 'transfer.start'; at: string; transfer: TransferRecord }
  | { type: 'transfer.progress'; at: string; transfer: TransferRecord }
  | { type: 'file.start'; at: string; transferId: string; accessKeyId: string | null; file: FileProgress }
  | { type: 'file.end'; at: string; transferId: string; accessKeyId: string | null; file: FileProgress }
  | { type: 'transfer.end'; at: string; transfer: TransferRecord }
  | { type: 'refusal'; at: string; reason: string; user?: string };

export interface TransferQuery {
  status?: TransferStatus;
  user?: string;
  direction?: TransferDirection;
  accessKeyId?: string;
  /** ISO-8601: started at or after */
  since?: string;
  /** ISO-8601: started before */
  until?: string;
  offset: number;
  limit: number;
}

export interface TransferPage {
  total: number;
  items: TransferRecord[];
}

/** Cumulative counters since the monitor was made (for /metrics). */
export interface MonitorTotals {
  /** finished sessions by status */
  sessions: Record<Exclude<TransferStatus, 'active'>, number>;
  bytes: Record<TransferDirection, number>;
  refusals: Record<string, number>;
  /** datagrams the server sent in downloads, and how many of them were retransmissions */
  datagramsSent: number;
  retransmits: number;
  datagramsReceived: number;
  duplicatesReceived: number;
}

export interface SessionStart {
  correlationId: string;
  user: string;
  accessKeyId?: string | null;
  clientAddress: string;
  direction: TransferDirection;
  cipher: string;
  /** stops the session (the server aborts its signal) */
  cancel: () => void;
}

export interface SessionEnd {
  ok: boolean;
  /** the error that ended the session, if one did */
  error?: TachyonError;
  /** carried bytes from the role's summary (settles the estimate) */
  bytes?: number;
}

/** What the transfer server reports about one session. */
export interface MonitoredSession {
  readonly id: string;
  fileStarted(f: FileStart): void;
  fileSettled(f: FileOutcome): void;
  progress(p: SessionProgress): void;
  ended(e: SessionEnd): void;
}

/** What the transfer server needs of a monitor (the seam; {@link TransferMonitor} is the real one). */
export interface TransferReporter {
  begin(s: SessionStart): MonitoredSession;
  /** a refusal, by reason: `auth`, `limit`, `channel`, `cipher`, `permission`, `jail`, or an error code in lower case */
  refused(reason: string, user?: string): void;
}

export interface TransferMonitorOptions {
  /** persist finished transfers (and list past ones from it); default: memory only */
  database?: Database;
  clock?: Clock;
  /** finished transfers kept in memory (default 1000) */
  historySize?: number;
  /** files listed per transfer (default 1000; beyond that they are counted) */
  maxFilesPerTransfer?: number;
  /** progress events per session at most this often (default 250 ms) */
  progressIntervalMs?: number;
  /** a persistence failure (the transfer stays in memory) */
  onError?(err: TachyonError): void;
}

interface Live {
  record: TransferRecord;
  files: FileProgress[];
  /** index in `files` by path, for files in flight */
  inFlight: Map<string, FileProgress>;
  filesOmitted: number;
  cancel: () => void;
  cancelRequested: boolean;
  startedMs: number;
  lastSampleMs: number;
  lastSampleBytes: number;
  lastEventMs: number;
  /** bytes of settled files (carried) */
  settledCarried: number;
  /** bytes of settled files not carried (skipped files, resumed prefixes) */
  settledSkipped: number;
  datagrams: number;
  retransmits: number;
  duplicates: number;
}

type Listener = (e: MonitorEvent) => void;

const iso = (ms: number): string => new Date(ms).toISOString();

export class TransferMonitor implements TransferReporter {
  private readonly clock: Clock;
  private readonly db: Database | undefined;
  private readonly historySize: number;
  private readonly maxFiles: number;
  private readonly progressIntervalMs: number;
  private readonly active = new Map<string, Live>();
  /** finished, newest last; bounded */
  private readonly history = new Map<string, TransferDetail>();
  /** finished and not yet in the database */
  private readonly unsaved = new Map<string, TransferDetail>();
  private readonly listeners = new Set<Listener>();
  private readonly pending = new Set<Promise<void>>();
  readonly totals: MonitorTotals = {
    sessions: { completed: 0, failed: 0, cancelled: 0 },
    bytes: { upload: 0, download: 0 },
    refusals: {},
    datagramsSent: 0,
    retransmits: 0,
    datagramsReceived: 0,
    duplicatesReceived: 0,
  };

  constructor(private readonly o: TransferMonitorOptions = {}) {
    this.clock = o.clock ?? systemClock;
    this.db = o.database;
    this.historySize = o.historySize ?? 1000;
    this.maxFiles = o.maxFilesPerTransfer ?? 1000;
    this.progressIntervalMs = o.progressIntervalMs ?? 250;
  }

  /** Wall-clock milliseconds (timestamps), and the monotonic clock for rates. */
  private wall(): number {
    return Date.now();
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Live subscribers now (event streams). */
  subscriberCount(): number {
    return this.listeners.size;
  }

  private emit(e: MonitorEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  /** A refused login, channel, cipher, permission, path or limit. */
  refused(reason: string, user?: string): void {
    this.totals.refusals[reason] = (this.totals.refusals[reason] ?? 0) + 1;
    this.emit({ type: 'refusal', at: iso(this.wall()), reason, ...(user !== undefined ? { user } : {}) });
  }

  /** Active sessions now. */
  activeCount(): number {
    return this.active.size;
  }

  /** Sum of the active sessions' current rates, bits/s. */
  goodputBps(): number {
    let sum = 0;
    for (const l of this.active.values()) sum += l.record.rateBps;
    return sum;
  }

  begin(s: SessionStart): MonitoredSession {
    const now = this.clock.now();
    const record: TransferRecord = {
      id: randomUUID(),
      correlationId: s.correlationId,
      user: s.user,
      accessKeyId: s.accessKeyId ?? null,
      direction: s.direction,
      status: 'active',
      clientAddress: s.clientAddress,
      cipher: s.cipher,
      startedAt: iso(this.wall()),
      files: 0,
      filesDone: 0,
      filesFailed: 0,
      filesSkipped: 0,
      bytes: 0,
      totalBytes: 0,
      skippedBytes: 0,
      durationMs: 0,
      rateBps: 0,
      datagrams: 0,
      retransmits: s.direction === 'download' ? 0 : null,
    };
    const live: Live = {
      record,
      files: [],
      inFlight: new Map(),
      filesOmitted: 0,
      cancel: s.cancel,
      cancelRequested: false,
      startedMs: now,
      lastSampleMs: now,
      lastSampleBytes: 0,
      lastEventMs: -Infinity,
      settledCarried: 0,
      settledSkipped: 0,
      datagrams: 0,
      retransmits: 0,
      duplicates: 0,
    };
    this.active.set(record.id, live);
    this.emit({ type: 'transfer.start', at: record.startedAt, transfer: { ...record } });
    let ended = false;
    return {
      id: record.id,
      fileStarted: (f) => {
        if (!ended) this.fileStarted(live, f);
      },
      fileSettled: (f) => {
        if (!ended) this.fileSettled(live, f);
      },
      progress: (p) => {
        if (!ended) this.progress(live, p);
      },
      ended: (e) => {
        if (ended) return;
        ended = true;
        this.end(live, e);
      },
    };
  }

  private addFile(live: Live, fp: FileProgress): void {
    if (live.files.length < this.maxFiles) live.files.push(fp);
    else live.filesOmitted++;
  }

  private fileStarted(live: Live, f: FileStart): void {
    const fp: FileProgress = { path: f.path, size: f.size, offset: f.offset, state: 'active', bytes: 0, rateBps: 0, startedAt: iso(this.wall()) };
    live.inFlight.set(f.path, fp);
    this.addFile(live, fp);
    live.record.files++;
    this.emit({ type: 'file.start', at: fp.startedAt, transferId: live.record.id, accessKeyId: live.record.accessKeyId, file: { ...fp } });
  }

  private fileSettled(live: Live, f: FileOutcome): void {
    let fp = live.inFlight.get(f.path);
    if (fp) live.inFlight.delete(f.path);
    else {
      // settled without data flowing (skipped, refused, failed before it started)
      fp = { path: f.path, size: f.size, offset: 0, state: 'active', bytes: 0, rateBps: 0, startedAt: iso(this.wall() - f.elapsedMs) };
      this.addFile(live, fp);
      live.record.files++;
    }
    fp.state = f.status;
    fp.bytes = f.sentBytes;
    fp.endedAt = iso(this.wall());
    fp.rateBps = f.elapsedMs > 0 ? Math.round((f.sentBytes * 8 * 1000) / f.elapsedMs) : 0;
    if (f.code !== undefined) fp.code = f.code;
    if (f.message !== undefined) fp.message = f.message;
    const r = live.record;
    if (f.status === 'done') r.filesDone++;
    else if (f.status === 'skipped') r.filesSkipped++;
    else r.filesFailed++;
    if (f.status === 'done') live.settledCarried += f.sentBytes;
    live.settledSkipped += f.skippedBytes;
    this.emit({ type: 'file.end', at: fp.endedAt, transferId: r.id, accessKeyId: r.accessKeyId, file: { ...fp } });
  }

  private progress(live: Live, p: SessionProgress): void {
    const now = this.clock.now();
    const r = live.record;
    // carried bytes: the role's progress counts skipped bytes too
    const carried = Math.max(r.bytes, p.bytes - live.settledSkipped);
    this.account(live, carried, p);
    r.totalBytes = Math.max(r.totalBytes, p.totalBytes);
    r.durationMs = Math.round(now - live.startedMs);
    const dt = now - live.lastSampleMs;
    if (dt >= 100) {
      r.rateBps = Math.round(((r.bytes - live.lastSampleBytes) * 8 * 1000) / dt);
      live.lastSampleMs = now;
      live.lastSampleBytes = r.bytes;
    }
    // spread what is not settled over the files in flight, in announcement order
    let rest = Math.max(0, r.bytes - live.settledCarried);
    for (const fp of live.inFlight.values()) {
      const want = fp.size - fp.offset;
      fp.bytes = Math.min(want, rest);
      rest -= fp.bytes;
      const age = this.wall() - Date.parse(fp.startedAt);
      fp.rateBps = age > 0 ? Math.round((fp.bytes * 8 * 1000) / age) : 0;
    }
    if (now - live.lastEventMs >= this.progressIntervalMs) {
      live.lastEventMs = now;
      this.emit({ type: 'transfer.progress', at: iso(this.wall()), transfer: { ...r } });
    }
  }

  /** Moves the carried bytes and data-plane counters forward, and the totals with them. */
  private account(live: Live, carried: number, p?: SessionProgress): void {
    const r = live.record;
    if (carried > r.bytes) {
      this.totals.bytes[r.direction] += carried - r.bytes;
      r.bytes = carried;
    }
    if (!p) return;
    const d = p.data;
    if (d.datagrams > live.datagrams) {
      if (r.direction === 'download') this.totals.datagramsSent += d.datagrams - live.datagrams;
      else this.totals.datagramsReceived += d.datagrams - live.datagrams;
      live.datagrams = d.datagrams;
      r.datagrams = d.datagrams;
    }
    if (d.retransmits !== undefined && d.retransmits > live.retransmits) {
      this.totals.retransmits += d.retransmits - live.retransmits;
      live.retransmits = d.retransmits;
      r.retransmits = d.retransmits;
    }
    if (d.duplicates !== undefined && d.duplicates > live.duplicates) {
      this.totals.duplicatesReceived += d.duplicates - live.duplicates;
      live.duplicates = d.duplicates;
    }
  }

  private end(live: Live, e: SessionEnd): void {
    const now = this.clock.now();
    const r = live.record;
    this.active.delete(r.id);
    const settled = Math.max(live.settledCarried, e.bytes ?? 0);
    this.account(live, settled);
    r.skippedBytes = live.settledSkipped;
    r.endedAt = iso(this.wall());
    r.durationMs = Math.round(now - live.startedMs);
    r.rateBps = r.durationMs > 0 ? Math.round((r.bytes * 8 * 1000) / r.durationMs) : 0;
    if (live.cancelRequested || e.error?.code === 'CANCELLED') {
      r.status = 'cancelled';
      r.code = 'CANCELLED';
      r.message = 'The transfer was cancelled.';
    } else if (e.ok && !e.error) r.status = 'completed';
    else {
      r.status = 'failed';
      r.code = e.error?.code ?? 'IO';
      r.message = e.error?.publicMessage ?? 'Some files failed.';
    }
    for (const fp of live.inFlight.values()) {
      fp.state = 'failed';
      fp.endedAt = r.endedAt;
      fp.code = r.code ?? 'IO';
    }
    live.inFlight.clear();
    this.totals.sessions[r.status as Exclude<TransferStatus, 'active'>]++;
    const detail: TransferDetail = { ...r, fileList: live.files, filesOmitted: live.filesOmitted };
    this.history.set(r.id, detail);
    while (this.history.size > this.historySize) this.history.delete(this.history.keys().next().value as string);
    if (this.db) {
      this.unsaved.set(r.id, detail);
      const p = this.persist(detail).finally(() => {
        this.unsaved.delete(r.id);
        this.pending.delete(p);
      });
      this.pending.add(p);
    }
    this.emit({ type: 'transfer.end', at: r.endedAt, transfer: { ...r } });
  }

  private async persist(t: TransferDetail): Promise<void> {
    try {
      await this.db!.db
        .insertInto('transfer')
        .values({
          id: t.id,
          correlation_id: t.correlationId,
          user_name: t.user,
          access_key_id: t.accessKeyId,
          direction: t.direction,
          status: t.status,
          code: t.code ?? null,
          message: t.message ?? null,
          client_address: t.clientAddress,
          cipher: t.cipher,
          started_at: t.startedAt,
          ended_at: t.endedAt ?? t.startedAt,
          files: t.files,
          bytes: t.bytes,
          total_bytes: t.totalBytes,
          skipped_bytes: t.skippedBytes,
          duration_ms: t.durationMs,
          datagrams: t.datagrams,
          retransmits: t.retransmits,
          detail: JSON.stringify({ filesDone: t.filesDone, filesFailed: t.filesFailed, filesSkipped: t.filesSkipped, rateBps: t.rateBps, fileList: t.fileList, filesOmitted: t.filesOmitted }),
        })
        .execute();
    } catch (err) {
      this.o.onError?.(toTachyonError(err, 'DB_UNAVAILABLE'));
    }
  }

  /** Waits for the finished transfers still being written to the database. */
  async flush(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  /** Stops a running session; `NOT_FOUND` for an unknown id, `CONFLICT` for a finished transfer. */
  async cancel(id: string): Promise<TransferRecord> {
    const live = this.active.get(id);
    if (!live) {
      const past = await this.get(id);
      throw new TachyonError('CONFLICT', `transfer ${id} has already ended (${past.status})`, { publicMessage: `The transfer has already ended (${past.status}).` });
    }
    live.cancelRequested = true;
    live.cancel();
    return { ...live.record };
  }

  /** One transfer with its files; `NOT_FOUND` if the monitor never saw it (or forgot it). */
  async get(id: string): Promise<TransferDetail> {
    const live = this.active.get(id);
    if (live) return { ...live.record, fileList: live.files.map((f) => ({ ...f })), filesOmitted: live.filesOmitted };
    const h = this.history.get(id) ?? this.unsaved.get(id);
    if (h) return h;
    if (this.db) {
      const row = await this.db.db.selectFrom('transfer').selectAll().where('id', '=', id).executeTakeFirst();
      if (row) return fromRow(row);
    }
    throw new TachyonError('NOT_FOUND', `no transfer ${id}`, { publicMessage: 'No such transfer.' });
  }

  /** Active transfers first (newest first), then finished ones (newest first). */
  async list(q: TransferQuery): Promise<TransferPage> {
    const match = (r: TransferRecord): boolean =>
      (q.status === undefined || r.status === q.status) &&
      (q.user === undefined || r.user === q.user) &&
      (q.direction === undefined || r.direction === q.direction) &&
      (q.accessKeyId === undefined || r.accessKeyId === q.accessKeyId) &&
      (q.since === undefined || r.startedAt >= q.since) &&
      (q.until === undefined || r.startedAt < q.until);
    // newest first; transfers that started in the same millisecond: the later begun first
    // (the maps keep insertion order), so that paging is stable
    const newestFirst = (list: TransferRecord[]): TransferRecord[] =>
      list
        .map((r, i) => ({ r, i }))
        .sort((a, b) => (a.r.startedAt < b.r.startedAt ? 1 : a.r.startedAt > b.r.startedAt ? -1 : b.i - a.i))
        .map((x) => x.r);
    const active = newestFirst([...this.active.values()].map((l) => ({ ...l.record })).filter(match));
    const strip = (d: TransferDetail): TransferRecord => {
      const { fileList: _f, filesOmitted: _o, ...r } = d;
      return r;
    };
    if (!this.db) {
      const past = newestFirst([...this.history.values()].map(strip).filter(match));
      const all = [...active, ...past];
      return { total: all.length, items: all.slice(q.offset, q.offset + q.limit) };
    }
    // finished and not yet written: listed from memory, before the database's rows
    const unsaved = newestFirst([...this.unsaved.values()].map(strip).filter(match));
    const head = [...active, ...unsaved];
    const ids = new Set(unsaved.map((r) => r.id));
    if (q.status === 'active') return { total: active.length, items: active.slice(q.offset, q.offset + q.limit) };
    let base = this.db.db.selectFrom('transfer');
    if (q.status !== undefined) base = base.where('status', '=', q.status);
    if (q.user !== undefined) base = base.where('user_name', '=', q.user);
    if (q.direction !== undefined) base = base.where('direction', '=', q.direction);
    if (q.accessKeyId !== undefined) base = base.where('access_key_id', '=', q.accessKeyId);
    if (q.since !== undefined) base = base.where('started_at', '>=', q.since);
    if (q.until !== undefined) base = base.where('started_at', '<', q.until);
    const count = await base.select((eb) => eb.fn.countAll<number | string>().as('n')).executeTakeFirstOrThrow();
    const stored = Number(count.n);
    const items = head.slice(q.offset, q.offset + q.limit);
    const want = q.offset + q.limit - head.length;
    if (want > 0) {
      const skip = Math.max(0, q.offset - head.length);
      const rows = await base
        .selectAll()
        .orderBy('started_at', 'desc')
        .orderBy('id', 'asc')
        .limit(Math.min(q.limit, want) + ids.size)
        .offset(skip)
        .execute();
      for (const row of rows) {
        if (items.length >= q.limit) break;
        if (!ids.has(row.id)) items.push(strip(fromRow(row)));
      }
    }
    // unsaved transfers written meanwhile are in both counts: count them once
    let overlap = 0;
    for (const id of ids) if (!this.unsaved.has(id)) overlap++;
    return { total: head.length + stored - overlap, items };
  }
}

function fromRow(row: Selectable<TransferTable>): TransferDetail {
  let extra: { filesDone?: number; filesFailed?: number; filesSkipped?: number; rateBps?: number; fileList?: FileProgress[]; filesOmitted?: number } = {};
  try {
    extra = JSON.parse(row.detail) as typeof extra;
  } catch {
    // a damaged detail column: the summary columns still stand
  }
  const d: TransferDetail = {
    id: row.id,
    correlationId: row.correlation_id,
    user: row.user_name,
    accessKeyId: row.access_key_id,
    direction: row.direction as TransferDirection,
    status: row.status as TransferStatus,
    clientAddress: row.client_address,
    cipher: row.cipher,
    startedAt: row.started_at,
    endedAt: row.ended_at,
    files: row.files,
    filesDone: extra.filesDone ?? 0,
    filesFailed: extra.filesFailed ?? 0,
    filesSkipped: extra.filesSkipped ?? 0,
    bytes: Number(row.bytes),
    totalBytes: Number(row.total_bytes),
    skippedBytes: Number(row.skipped_bytes),
    durationMs: Number(row.duration_ms),
    rateBps: extra.rateBps ?? 0,
    datagrams: Number(row.datagrams),
    retransmits: row.retransmits === null ? null : Number(row.retransmits),
    fileList: extra.fileList ?? [],
    filesOmitted: extra.filesOmitted ?? 0,
  };
  if (row.code !== null) d.code = row.code;
  if (row.message !== null) d.message = row.message;
  return d;
}
