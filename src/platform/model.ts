/**
 * The web platform's identity vocabulary: roles, tenants, users, sessions, and the
 * validation of every name a remote party can send. Values that fail validation are
 * `USAGE` errors whose public message names the field, never echoes the value.
 */
import { TachyonError } from '../core/errors.js';

/** The roles, least privilege first. A user holds one or more. */
export const ROLES = ['member', 'auditor', 'tenant_admin'] as const;
export type Role = (typeof ROLES)[number];

export function isRole(v: unknown): v is Role {
  return typeof v === 'string' && (ROLES as readonly string[]).includes(v);
}

export type UserStatus = 'active' | 'disabled';

export interface Tenant {
  readonly id: string;
  readonly slug: string;
  readonly name: string;
  readonly createdAt: string;
}

/** A user as the API shows it (no hash, no counters). */
export interface PlatformUser {
  readonly id: string;
  readonly tenantId: string;
  readonly username: string;
  readonly displayName: string;
  readonly status: UserStatus;
  readonly roles: readonly Role[];
  readonly mustChangePassword: boolean;
  readonly passwordChangedAt: string | null;
  readonly lockedUntil: string | null;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** One of a user's web sessions as the API shows it (never the token). */
export interface SessionInfo {
  readonly id: string;
  readonly createdAt: string;
  readonly lastSeenAt: string;
  readonly expiresAt: string;
  readonly clientAddress: string;
  readonly userAgent: string;
}

/** Tenant slugs: lower-case letters, digits and hyphens, 2–63 characters. */
export const TENANT_SLUG_PATTERN = /^[a-z0-9][a-z0-9-]{1,62}$/;
/** User names: letters, digits and `._@+-`, 1–128 characters, starting with a letter or digit (e-mail addresses fit). */
export const USERNAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;
/** Ids the platform hands out (UUIDs). */
export const ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const MAX_DISPLAY_NAME = 128;
/** The longest password accepted at all (the policy's minimum is at most this). */
export const MAX_PASSWORD_LENGTH = 256;

function bad(field: string, why: string): TachyonError {
  return new TachyonError('USAGE', `${field}: ${why}`, { publicMessage: `Invalid ${field}: ${why}.`, details: { field } });
}

export function validateTenantSlug(v: unknown): string {
  if (typeof v !== 'string' || !TENANT_SLUG_PATTERN.test(v)) throw bad('tenant', 'use 2-63 lower-case letters, digits or hyphens');
  return v;
}

/** User names are compared as given but stored lower-case, so `Alice` and `alice` are one account. */
export function validateUsername(v: unknown): string {
  if (typeof v !== 'string' || !USERNAME_PATTERN.test(v)) throw bad('username', 'use 1-128 letters, digits or . _ @ + -');
  return v.toLowerCase();
}

/** Display names are free text (stored and returned as data, never interpreted) without control characters. */
export function validateDisplayName(v: unknown): string {
  if (typeof v !== 'string') throw bad('displayName', 'must be text');
  const s = v.normalize('NFC');
  if (s.length > MAX_DISPLAY_NAME) throw bad('displayName', `at most ${MAX_DISPLAY_NAME} characters`);
  // eslint-disable-next-line no-control-regex -- refusing control characters is the point
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/.test(s)) throw bad('displayName', 'control characters are not allowed');
  return s;
}

export function validateId(field: string, v: unknown): string {
  if (typeof v !== 'string' || !ID_PATTERN.test(v)) throw bad(field, 'not an id');
  return v;
}

export function validateRoles(v: unknown): Role[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > ROLES.length) throw bad('roles', `one or more of ${ROLES.join(', ')}`);
  const out = new Set<Role>();
  for (const r of v) {
    if (!isRole(r)) throw bad('roles', `one or more of ${ROLES.join(', ')}`);
    out.add(r);
  }
  return ROLES.filter((r) => out.has(r));
}
