/**
 * The redaction guard: every event's fields pass through {@link sanitizeFields} before a
 * sink stores them. It
 *
 * - replaces the value of any field whose *name* looks like a secret (password,
 *   passphrase, secret, token, private…, credential, cookie, authorization, signature,
 *   salt, seed, otp, and any name whose last word is `key`/`keys` such as `key`, `apiKey`,
 *   `hostKey` or `session_keys`) by {@link REDACTED}, at any depth;
 * - replaces any string *value* that carries key material (a PEM or OpenSSH private key
 *   block, an `Authorization:` header, a `Bearer` token) and any binary value (Buffer,
 *   typed array) by {@link REDACTED};
 * - bounds what is stored: strings are clipped to {@link MAX_STRING} characters, arrays to
 *   {@link MAX_ARRAY} items, objects to {@link MAX_KEYS} keys and {@link MAX_DEPTH}
 *   levels; non-finite numbers become null; functions, symbols and bigints become strings
 *   or are dropped; `undefined` fields are dropped.
 *
 * Names such as `keyFingerprint`, `keyType` or `keyId` are not secrets (their last word is
 * not `key`) and pass. The guard is a safety net, not a licence: callers must not put
 * secrets into events in the first place, and the paths it redacted are listed in the
 * record (`redacted`) so that such a call site shows up.
 */
import type { AuditValue } from './event.js';

export const REDACTED = '[redacted]';
export const MAX_STRING = 2048;
export const MAX_ARRAY = 100;
export const MAX_KEYS = 64;
export const MAX_DEPTH = 4;
export const MAX_KEY_NAME = 64;

/** Words that make a field name secret wherever they appear in it. */
const SECRET_WORDS = new Set([
  'password',
  'passwd',
  'passphrase',
  'pass',
  'pwd',
  'secret',
  'secrets',
  'token',
  'tokens',
  'private',
  'privkey',
  'credential',
  'credentials',
  'cookie',
  'cookies',
  'authorization',
  'bearer',
  'signature',
  'salt',
  'seed',
  'otp',
  'totp',
  'apikey',
  'secretkey',
  'accesskey',
  'hostkey',
  'sessionkey',
]);

/** Words that make a field name secret when they are its last word (`apiKey`, `key`, `keys`). */
const SECRET_LAST_WORDS = new Set(['key', 'keys', 'pem', 'der']);

/** Splits a field name into lower-case words: camelCase, snake_case, kebab-case, dotted. */
export function nameWords(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w.length > 0);
}

/** Whether a field called `name` must never have its value stored. */
export function isSecretName(name: string): boolean {
  const words = nameWords(name);
  if (words.length === 0) return false;
  if (words.some((w) => SECRET_WORDS.has(w))) return true;
  return SECRET_LAST_WORDS.has(words[words.length - 1] as string);
}

const KEY_BLOCK = /-----BEGIN [A-Z0-9 ]*(?:PRIVATE KEY|ENCRYPTED|SECRET)[A-Z ]*-----/;
const AUTH_HEADER = /\bauthorization\s*[:=]\s*\S+|\bbearer\s+[A-Za-z0-9._~+/-]{16,}/i;

/** Whether a string value carries key material or a credential whatever its field is called. */
export function isSecretValue(value: string): boolean {
  return KEY_BLOCK.test(value) || AUTH_HEADER.test(value);
}

function clipString(s: string): string {
  return s.length <= MAX_STRING ? s : `${s.slice(0, MAX_STRING)}…[${s.length - MAX_STRING} more]`;
}

/** What {@link sanitizeFields} returns. */
export interface SanitizedFields {
  fields: Record<string, AuditValue>;
  /** Dotted paths of the fields whose values were replaced by {@link REDACTED}. */
  redacted: string[];
}

/**
 * Applies the redaction guard and the size bounds to an event's fields (see the module
 * comment). Never throws; anything that is not JSON-like is turned into a string or dropped.
 */
export function sanitizeFields(fields: unknown): SanitizedFields {
  const redacted: string[] = [];

  const walk = (value: unknown, path: string, depth: number): AuditValue | undefined => {
    if (value === null) return null;
    switch (typeof value) {
      case 'string':
        if (isSecretValue(value)) {
          redacted.push(path);
          return REDACTED;
        }
        return clipString(value);
      case 'number':
        return Number.isFinite(value) ? value : null;
      case 'boolean':
        return value;
      case 'bigint':
        return value.toString();
      case 'undefined':
      case 'function':
      case 'symbol':
        return undefined;
      default:
        break;
    }
    if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
      redacted.push(path);
      return REDACTED;
    }
    if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
    if (depth >= MAX_DEPTH) return '[too deep]';
    if (Array.isArray(value)) {
      const out: AuditValue[] = [];
      for (let i = 0; i < value.length && i < MAX_ARRAY; i++) {
        const v = walk(value[i], `${path}[${i}]`, depth + 1);
        out.push(v === undefined ? null : v);
      }
      if (value.length > MAX_ARRAY) out.push(`…[${value.length - MAX_ARRAY} more]`);
      return out;
    }
    return walkObject(value as Record<string, unknown>, path, depth);
  };

  const walkObject = (obj: Record<string, unknown>, path: string, depth: number): Record<string, AuditValue> => {
    const out: Record<string, AuditValue> = {};
    let n = 0;
    for (const rawKey of Object.keys(obj)) {
      if (n >= MAX_KEYS) {
        out['…'] = `[${Object.keys(obj).length - MAX_KEYS} more fields]`;
        break;
      }
      const key = rawKey.length <= MAX_KEY_NAME ? rawKey : rawKey.slice(0, MAX_KEY_NAME);
      const childPath = path === '' ? key : `${path}.${key}`;
      const raw = obj[rawKey];
      if (raw === undefined) continue;
      n++;
      if (isSecretName(rawKey)) {
        redacted.push(childPath);
        out[key] = REDACTED;
        continue;
      }
      const v = walk(raw, childPath, depth + 1);
      if (v !== undefined) out[key] = v;
    }
    return out;
  };

  if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) return { fields: {}, redacted };
  return { fields: walkObject(fields as Record<string, unknown>, '', 0), redacted };
}
