/**
 * API tokens for scripts: `Authorization: Bearer tach_…` in place of the session cookie.
 * A token has a name, scopes from a small fixed list limited by its owner's roles, and an
 * expiry; it is shown once at creation and stored only as its SHA-256.
 */
import { TachyonError } from '../core/errors.js';
import type { Role } from './model.js';

/** `read`: GET routes only. `admin`: every route the owner's roles allow (tenant administrators only). */
export const TOKEN_SCOPES = ['read', 'admin'] as const;
export type TokenScope = (typeof TOKEN_SCOPES)[number];

/** Prefix of every token (so leaked tokens are recognisable by scanners). */
export const API_TOKEN_PREFIX = 'tach_';
export const MAX_TOKEN_DAYS = 365;
export const DEFAULT_TOKEN_DAYS = 30;
/** Live tokens one user may hold. */
export const MAX_TOKENS_PER_USER = 20;

/** A token as its owner sees it (never the token itself after creation). */
export interface ApiTokenInfo {
  readonly id: string;
  readonly name: string;
  readonly scopes: readonly TokenScope[];
  readonly createdAt: string;
  readonly expiresAt: string;
  readonly lastUsedAt: string | null;
}

function bad(field: string, why: string): TachyonError {
  return new TachyonError('USAGE', `${field}: ${why}`, { publicMessage: `Invalid ${field}: ${why}.`, details: { field } });
}

/** Validates requested scopes against the owner's roles. @throws `USAGE` (unknown scope), `PERMISSION` (scope above the roles). */
export function validateScopes(v: unknown, roles: readonly Role[]): TokenScope[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > TOKEN_SCOPES.length) throw bad('scopes', `one or more of ${TOKEN_SCOPES.join(', ')}`);
  const out = new Set<TokenScope>();
  for (const s of v) {
    if (typeof s !== 'string' || !(TOKEN_SCOPES as readonly string[]).includes(s)) throw bad('scopes', `one or more of ${TOKEN_SCOPES.join(', ')}`);
    out.add(s as TokenScope);
  }
  if (out.has('admin') && !roles.includes('tenant_admin')) {
    throw new TachyonError('PERMISSION', 'admin scope without the tenant_admin role', {
      publicMessage: 'The admin scope is for tenant administrators only.',
      details: { reason: 'scope' },
    });
  }
  return TOKEN_SCOPES.filter((s) => out.has(s));
}

export function validateTokenDays(v: unknown): number {
  if (v === undefined) return DEFAULT_TOKEN_DAYS;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_TOKEN_DAYS) throw bad('expiresInDays', `a whole number from 1 to ${MAX_TOKEN_DAYS}`);
  return v;
}

export function parseScopes(stored: string): TokenScope[] {
  const set = new Set(stored.split(' '));
  return TOKEN_SCOPES.filter((s) => set.has(s));
}

/** Whether a token with `scopes` may call a route with `method` (the roles are checked as for any caller). */
export function scopeAllows(scopes: readonly TokenScope[], method: string): boolean {
  return scopes.includes('admin') || (method === 'GET' && scopes.includes('read'));
}
