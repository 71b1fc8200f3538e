/** Turning an {@link AuditEvent} into an {@link AuditRecord}: what every sink does first. */
import { CORRELATION_ID_PATTERN, newCorrelationId } from '../core/correlation.js';
import { TachyonError } from '../core/errors.js';
import { AUDIT_SEVERITIES, DEFAULT_SEVERITY, isAuditName } from './event.js';
import type { AuditEvent, AuditRecord, AuditSeverity } from './event.js';
import { sanitizeFields } from './redact.js';

/**
 * Validates `event` and builds its record: time from `nowMs` (UTC ISO with ms), a new id,
 * the default severity of its type if it has none, fields through the redaction guard.
 * @throws TachyonError `INTERNAL` for a malformed type, component, severity or
 *   correlation id (a programming error, not something a remote party can cause).
 */
export function buildRecord(event: AuditEvent, seq: number, nowMs: number): AuditRecord {
  const e = event as { type: unknown; component: unknown; severity?: unknown; correlationId?: unknown; fields?: unknown };
  if (!isAuditName(e.type)) throw new TachyonError('INTERNAL', `audit: bad event type ${JSON.stringify(String(e.type).slice(0, 80))}`);
  if (!isAuditName(e.component)) {
    throw new TachyonError('INTERNAL', `audit: bad component ${JSON.stringify(String(e.component).slice(0, 80))}`);
  }
  let severity: AuditSeverity;
  if (e.severity === undefined) {
    severity = (DEFAULT_SEVERITY as Record<string, AuditSeverity>)[e.type] ?? 'info';
  } else if (typeof e.severity === 'string' && (AUDIT_SEVERITIES as readonly string[]).includes(e.severity)) {
    severity = e.severity as AuditSeverity;
  } else {
    throw new TachyonError('INTERNAL', `audit: bad severity ${JSON.stringify(String(e.severity).slice(0, 40))}`);
  }
  if (e.correlationId !== undefined && (typeof e.correlationId !== 'string' || !CORRELATION_ID_PATTERN.test(e.correlationId))) {
    throw new TachyonError('INTERNAL', 'audit: bad correlation id');
  }
  const { fields, redacted } = sanitizeFields(e.fields);
  const ms = Number.isFinite(nowMs) ? nowMs : Date.now();
  return {
    seq,
    ts: new Date(ms).toISOString(),
    id: newCorrelationId(ms),
    severity,
    component: e.component,
    type: e.type,
    ...(e.correlationId !== undefined ? { correlationId: e.correlationId as string } : {}),
    fields,
    ...(redacted.length > 0 ? { redacted } : {}),
  };
}
