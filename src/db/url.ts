/**
 * Database locations. Tachyon names its database with a URL:
 *
 * - `sqlite:///absolute/path/tachyon.db` — the embedded default (better-sqlite3);
 *   `?busy_timeout=MS` sets how long a write waits for another process's lock.
 * - `sqlite::memory:` — a private in-memory database (tests).
 * - `postgres://user:password@host:5432/name` (or `postgresql://…`) — PostgreSQL; the
 *   query string is passed to the pg driver (e.g. `?sslmode=require`).
 *
 * A plain path (no scheme) is accepted where a person types a location and means an
 * SQLite file; a relative one is resolved against `baseDir`.
 */
import path from 'node:path';
import { TachyonError } from '../core/errors.js';

/** Where the database lives, parsed. */
export type DatabaseLocation =
  | { readonly kind: 'sqlite'; readonly file: string; readonly busyTimeoutMs?: number }
  | { readonly kind: 'sqlite-memory' }
  | { readonly kind: 'postgres'; readonly url: string };

/** How long an SQLite write waits for a lock held by another connection, by default. */
export const DEFAULT_BUSY_TIMEOUT_MS = 5000;

const MAX_BUSY_TIMEOUT_MS = 600_000;

function bad(text: string, reason: string): TachyonError {
  return new TachyonError('CONFIG', `invalid database URL '${redactDatabaseUrl(text)}': ${reason}`, {
    details: { field: 'database', reason },
  });
}

/**
 * Parses a database URL (or, with `allowPath`, a plain SQLite file path).
 *
 * @throws TachyonError `CONFIG` naming what is wrong (the password of a PostgreSQL URL is
 *   never repeated in the message).
 */
export function parseDatabaseUrl(text: string, options: { baseDir?: string; allowPath?: boolean } = {}): DatabaseLocation {
  const t = text.trim();
  if (t === '') throw bad(text, 'it is empty');
  if (/[\0\r\n]/.test(t)) throw bad(text, 'it contains a control character');
  if (t === 'sqlite::memory:') return { kind: 'sqlite-memory' };
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(t)?.[1]?.toLowerCase();
  if (scheme === undefined || (scheme.length === 1 && /^[a-zA-Z]:[\\/]/.test(t))) {
    if (options.allowPath !== true) throw bad(text, 'expected sqlite:///path/to/file.db or postgres://host/name');
    const file = path.resolve(options.baseDir ?? process.cwd(), t);
    if (t.endsWith('/') || file === '/') throw bad(text, 'the path names a directory, not a database file');
    return { kind: 'sqlite', file };
  }
  if (scheme === 'postgres' || scheme === 'postgresql') {
    let u: URL;
    try {
      u = new URL(t);
    } catch {
      throw bad(text, 'it is not a valid URL');
    }
    if (u.hostname === '' && !u.searchParams.has('host')) throw bad(text, 'a PostgreSQL URL needs a host (postgres://user@host/name)');
    return { kind: 'postgres', url: t };
  }
  if (scheme !== 'sqlite') throw bad(text, `unsupported scheme '${scheme}' (use sqlite:///path or postgres://host/name)`);
  const m = /^sqlite:\/\/([^/?#]*)(\/[^?#]*)(\?[^#]*)?$/i.exec(t);
  if (!m) throw bad(text, 'expected sqlite:///absolute/path/to/file.db');
  const [, host, rawPath, query] = m;
  if (host !== '' && host?.toLowerCase() !== 'localhost') throw bad(text, `an SQLite URL has no host ('${host}'); write sqlite:///absolute/path`);
  let file: string;
  try {
    file = decodeURIComponent(rawPath ?? '');
  } catch {
    throw bad(text, 'the path has an invalid %-escape');
  }
  if (file.includes('\0')) throw bad(text, 'the path contains a NUL byte');
  if (file.split('/').includes('..')) throw bad(text, "the path may not contain '..'");
  if (file.endsWith('/')) throw bad(text, 'the path names a directory, not a database file');
  let busyTimeoutMs: number | undefined;
  if (query !== undefined && query !== '?') {
    const params = new URLSearchParams(query.slice(1));
    for (const [k, v] of params) {
      if (k !== 'busy_timeout') throw bad(text, `unknown parameter '${k}' (SQLite URLs accept busy_timeout=MS)`);
      if (!/^\d{1,7}$/.test(v) || Number(v) > MAX_BUSY_TIMEOUT_MS) throw bad(text, `busy_timeout must be a number of milliseconds (0..${MAX_BUSY_TIMEOUT_MS})`);
      busyTimeoutMs = Number(v);
    }
  }
  return { kind: 'sqlite', file: path.posix.normalize(file), ...(busyTimeoutMs !== undefined ? { busyTimeoutMs } : {}) };
}

/** The canonical URL of a location (for PostgreSQL, as given: it may hold a password). */
export function formatDatabaseUrl(loc: DatabaseLocation): string {
  switch (loc.kind) {
    case 'sqlite-memory':
      return 'sqlite::memory:';
    case 'postgres':
      return loc.url;
    case 'sqlite': {
      const p = loc.file.split('/').map(encodeURIComponent).join('/');
      return `sqlite://${p}${loc.busyTimeoutMs !== undefined ? `?busy_timeout=${loc.busyTimeoutMs}` : ''}`;
    }
  }
}

/** A database URL with any password replaced by `***`, safe to print and log. */
export function redactDatabaseUrl(text: string): string {
  return text.replace(/^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/@:?#]*):[^@/?#]*@/, '$1:***@').replace(/([?&]password=)[^&#]*/gi, '$1***');
}

/** Where a location is, for messages: the file path, or the redacted URL. */
export function describeLocation(loc: DatabaseLocation): string {
  switch (loc.kind) {
    case 'sqlite':
      return loc.file;
    case 'sqlite-memory':
      return 'sqlite::memory:';
    case 'postgres':
      return redactDatabaseUrl(loc.url);
  }
}
