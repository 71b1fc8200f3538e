/** An in-memory {@link AuditSink} for tests: same validation and redaction as the file sink. */
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import { TachyonError } from '../core/errors.js';
import type { AuditEvent, AuditRecord, AuditSink } from './event.js';
import { buildRecord } from './record.js';

export class MemoryAuditSink implements AuditSink {
  /** Every record, in order. */
  readonly records: AuditRecord[] = [];
  private closed = false;
  private readonly clock: Clock;

  constructor(options: { clock?: Clock } = {}) {
    this.clock = options.clock ?? systemClock;
  }

  record(event: AuditEvent): string {
    if (this.closed) throw new TachyonError('INTERNAL', 'audit sink is closed');
    const rec = buildRecord(event, this.records.length + 1, this.clock.now());
    this.records.push(rec);
    return rec.id;
  }

  /** The records of one type. */
  ofType(type: string): AuditRecord[] {
    return this.records.filter((r) => r.type === type);
  }

  /** The record with this id. */
  byId(id: string): AuditRecord | undefined {
    return this.records.find((r) => r.id === id);
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}
