/**
 * The node API's edge for errors: one table from catalogue code to HTTP status, and the
 * one body shape every error has, `{ "error": { "code", "message", "correlation_id" } }`,
 * where `message` is the code's public message and nothing else (never the local message,
 * details, a stack or a path the server resolved).
 */
import type { TachyonError} from '../core/errors.js';
import { ERROR_CODES, type ErrorCode } from '../core/errors.js';

/**
 * Status per code. Every catalogue code has a row (test/node-api/http-errors.test.ts
 * fails on a code without one); a code missing at run time would get 503 when it is
 * retryable and 500 otherwise.
 */
export const HTTP_STATUS: Readonly<Partial<Record<ErrorCode, number>>> = Object.freeze({
  USAGE: 400,
  PATH_INVALID: 400,
  CIPHER_REFUSED: 400,
  DIGEST_MISMATCH: 400,
  PROTOCOL: 400,
  AUTH_FAILED: 401,
  MFA_INVALID: 401,
  MFA_LOCKED: 429,
  SSO_FAILED: 401,
  HOST_KEY_UNKNOWN: 401,
  HOST_KEY_MISMATCH: 401,
  PERMISSION: 403,
  REAUTH_REQUIRED: 403,
  ENCRYPTION_REQUIRED: 403,
  NOT_FOUND: 404,
  EXISTS: 409,
  IS_DIRECTORY: 409,
  TOO_LARGE: 413,
  CANCELLED: 409,
  CONFLICT: 409,
  DISK_FULL: 507,
  IO: 503,
  STORAGE_UNAVAILABLE: 503,
  KEY_MISSING: 503,
  DB_UNAVAILABLE: 503,
  BUSY: 503,
  CONNECT: 502,
  PEER_VANISHED: 502,
  CONFIG: 500,
  // stored data that does not decrypt: the server's problem, not the caller's
  ENVELOPE_INVALID: 500,
  WRONG_KEY: 500,
  AUDIT_TAMPERED: 500,
  INTERNAL: 500,
});

export interface ErrorBody {
  readonly error: { readonly code: ErrorCode; readonly message: string; readonly correlation_id: string };
}

export function httpStatusOf(code: ErrorCode): number {
  return HTTP_STATUS[code] ?? (ERROR_CODES[code]?.retryable ? 503 : 500);
}

/** The sanitized body of an error. INTERNAL (and anything not a TachyonError) says only the summary. */
export function errorBody(err: TachyonError, correlationId: string): ErrorBody {
  const message = err.code === 'INTERNAL' || err.code === 'CONFIG' || err.code === 'AUDIT_TAMPERED' ? ERROR_CODES.INTERNAL.summary : err.publicMessage;
  return { error: { code: err.code === 'CONFIG' || err.code === 'AUDIT_TAMPERED' ? 'INTERNAL' : err.code, message, correlation_id: correlationId } };
}

/** JSON schema of the error body (OpenAPI). */
export const ERROR_SCHEMA = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message', 'correlation_id'],
      properties: {
        code: { type: 'string', description: 'A stable code of the error catalogue (src/core/errors.ts).' },
        message: { type: 'string', description: 'A public message; never internal details.' },
        correlation_id: { type: 'string', description: 'Quote it to the node operator: it finds the audit record.' },
      },
    },
  },
} as const;
