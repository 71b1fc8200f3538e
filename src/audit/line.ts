/**
 * The on-disk form of one audit record: a line of JSON ending in `\n`, whose keys come in
 * this order:
 *
 *     {"v":1,"seq":7,"ts":"2025-01-31T12:00:00.000Z","severity":"warning","component":"ssh",
 *      "type":"auth.failure","id":"01J…","correlationId":"01J…","fields":{…},"redacted":[…],
 *      "alg":"sha256","prev":"<64 hex>","hash":"<64 hex>"}
 *
 * (`correlationId` and `redacted` only when present; one line in the file.)
 *
 * - `prev` is the SHA-256 of the previous line's exact bytes (without its `\n`); the first
 *   record of a file has `seq` 1 and `prev` {@link GENESIS}.
 * - `hash` authenticates the line's *body*: the line's bytes up to (not including)
 *   `,"hash":"…"}`, followed by `}`. With `alg` `sha256` it is the body's SHA-256 (detects
 *   accidents and edits by someone who does not recompute the chain); with `hmac-sha256`
 *   it is HMAC-SHA-256 under a key the writer holds (someone who can write the file but
 *   does not have the key cannot forge or re-chain lines).
 *
 * Verification works on the bytes as stored, never on a re-serialization.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { AUDIT_SEVERITIES, isAuditName } from './event.js';
import type { AuditRecord, AuditSeverity, AuditValue } from './event.js';

export const FORMAT_VERSION = 1;
/** `prev` of the first record of a file. */
export const GENESIS = '0'.repeat(64);
/** Longest line a reader accepts (the writer stays far below: see redact.ts bounds). */
export const MAX_LINE_BYTES = 1 << 20;

export type ChainAlg = 'sha256' | 'hmac-sha256';

/** Computes the `hash` of a line body. */
export interface LineMac {
  readonly alg: ChainAlg;
  mac(body: Buffer): string;
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The line MAC for `key` (HMAC-SHA-256), or plain SHA-256 without a key. */
export function lineMac(key?: Buffer): LineMac {
  if (key === undefined) return { alg: 'sha256', mac: (body) => sha256Hex(body) };
  const k = Buffer.from(key);
  return { alg: 'hmac-sha256', mac: (body) => createHmac('sha256', k).update(body).digest('hex') };
}

/** A record as stored in a file: the record plus its chain fields. */
export interface StoredRecord extends AuditRecord {
  v: number;
  alg: ChainAlg;
  prev: string;
  hash: string;
}

/** Encodes `rec` as a line (without the trailing newline), chained to `prev`. */
export function encodeLine(rec: AuditRecord, prev: string, mac: LineMac): { line: Buffer; hash: string } {
  const body: Record<string, unknown> = {
    v: FORMAT_VERSION,
    seq: rec.seq,
    ts: rec.ts,
    severity: rec.severity,
    component: rec.component,
    type: rec.type,
    id: rec.id,
  };
  if (rec.correlationId !== undefined) body['correlationId'] = rec.correlationId;
  body['fields'] = rec.fields;
  if (rec.redacted !== undefined && rec.redacted.length > 0) body['redacted'] = rec.redacted;
  body['alg'] = mac.alg;
  body['prev'] = prev;
  const json = JSON.stringify(body);
  const hash = mac.mac(Buffer.from(json, 'utf8'));
  return { line: Buffer.from(`${json.slice(0, -1)},"hash":"${hash}"}`, 'utf8'), hash };
}

const HASH_SUFFIX = /,"hash":"([0-9a-f]{64})"\}$/;
/** Length of `,"hash":"` + 64 hex + `"}`. */
const SUFFIX_BYTES = 9 + 64 + 2;
const HEX64 = /^[0-9a-f]{64}$/;
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const ID = /^[0-9A-Z]{8,64}$/;
const KEYS = new Set(['v', 'seq', 'ts', 'severity', 'component', 'type', 'id', 'correlationId', 'fields', 'redacted', 'alg', 'prev', 'hash']);

/** A line that parsed. `body` is what its `hash` covers. */
export interface DecodedLine {
  record: StoredRecord;
  body: Buffer;
}

export type DecodeResult = { ok: true; line: DecodedLine } | { ok: false; reason: string };

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Parses one line (without its newline) and checks its shape. Does not check the hash or
 * the chain (see {@link checkHash}). Never throws.
 */
export function decodeLine(bytes: Buffer): DecodeResult {
  if (bytes.length === 0) return { ok: false, reason: 'empty line' };
  if (bytes.length > MAX_LINE_BYTES) return { ok: false, reason: `line longer than ${MAX_LINE_BYTES} bytes` };
  if (bytes.length < SUFFIX_BYTES + 2) return { ok: false, reason: 'line too short to be a record' };
  const tail = bytes.subarray(bytes.length - SUFFIX_BYTES).toString('latin1');
  const m = HASH_SUFFIX.exec(tail);
  if (m === null) return { ok: false, reason: 'line does not end with a "hash" field' };
  const text = bytes.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(bytes)) return { ok: false, reason: 'line is not valid UTF-8' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'line is not valid JSON' };
  }
  if (!isPlainObject(parsed)) return { ok: false, reason: 'line is not a JSON object' };
  for (const k of Object.keys(parsed)) if (!KEYS.has(k)) return { ok: false, reason: `unknown key ${JSON.stringify(k.slice(0, 40))}` };
  const r = parsed;
  if (r['v'] !== FORMAT_VERSION) return { ok: false, reason: `unsupported format version ${JSON.stringify(r['v'])}` };
  const seq = r['seq'];
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) return { ok: false, reason: 'bad "seq"' };
  const ts = r['ts'];
  if (typeof ts !== 'string' || !ISO_MS.test(ts) || Number.isNaN(Date.parse(ts))) return { ok: false, reason: 'bad "ts"' };
  const severity = r['severity'];
  if (typeof severity !== 'string' || !(AUDIT_SEVERITIES as readonly string[]).includes(severity)) {
    return { ok: false, reason: 'bad "severity"' };
  }
  if (!isAuditName(r['component'])) return { ok: false, reason: 'bad "component"' };
  if (!isAuditName(r['type'])) return { ok: false, reason: 'bad "type"' };
  const id = r['id'];
  if (typeof id !== 'string' || !ID.test(id)) return { ok: false, reason: 'bad "id"' };
  const correlationId = r['correlationId'];
  if (correlationId !== undefined && (typeof correlationId !== 'string' || !ID.test(correlationId))) {
    return { ok: false, reason: 'bad "correlationId"' };
  }
  const fields = r['fields'];
  if (!isPlainObject(fields)) return { ok: false, reason: 'bad "fields"' };
  const redacted = r['redacted'];
  if (redacted !== undefined && (!Array.isArray(redacted) || !redacted.every((x) => typeof x === 'string'))) {
    return { ok: false, reason: 'bad "redacted"' };
  }
  const alg = r['alg'];
  if (alg !== 'sha256' && alg !== 'hmac-sha256') return { ok: false, reason: 'bad "alg"' };
  const prev = r['prev'];
  if (typeof prev !== 'string' || !HEX64.test(prev)) return { ok: false, reason: 'bad "prev"' };
  const hash = m[1] as string;
  if (r['hash'] !== hash) return { ok: false, reason: 'bad "hash"' };
  const body = Buffer.concat([bytes.subarray(0, bytes.length - SUFFIX_BYTES), Buffer.from('}')]);
  const record: StoredRecord = {
    v: FORMAT_VERSION,
    seq,
    ts,
    severity: severity as AuditSeverity,
    component: r['component'] as string,
    type: r['type'] as string,
    id,
    ...(correlationId !== undefined ? { correlationId: correlationId as string } : {}),
    fields: fields as Record<string, AuditValue>,
    ...(redacted !== undefined ? { redacted: redacted as string[] } : {}),
    alg,
    prev,
    hash,
  };
  return { ok: true, line: { record, body } };
}

/** Whether the line's `hash` is right for its body under `mac` (whose alg must match the line's). */
export function checkHash(line: DecodedLine, mac: LineMac): boolean {
  if (line.record.alg !== mac.alg) return false;
  const want = Buffer.from(mac.mac(line.body), 'hex');
  const got = Buffer.from(line.record.hash, 'hex');
  return want.length === got.length && timingSafeEqual(want, got);
}
