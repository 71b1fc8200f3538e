/**
 * Docroot URLs and the allowed storage roots they must lie in.
 *
 * A docroot is a storage URL: `file:///absolute/path` (local disk) or
 * `s3://bucket/prefix` (accepted now, served once the S3 backend exists). Where a person
 * types one, a plain absolute path is taken as `file://`.
 *
 * Parsing is strict and normalising: path segments are %-decoded one by one; a segment
 * that decodes to `..`, or holds a NUL or control character, a `/` or a `\`, is refused
 * (never silently resolved); empty and `.` segments are dropped; a trailing `/` is
 * removed. Query strings and fragments are refused.
 *
 * An allowed root pattern is a storage URL in which a path segment (or the S3 bucket)
 * may be exactly `*`. **Matching** is by whole segments:
 *
 * - `*` matches exactly one segment (any name); every other segment must be equal
 *   (case-sensitive);
 * - a docroot matches a pattern when its first segments match all of the pattern's
 *   segments; any further segments are allowed (a docroot may be *below* what the pattern
 *   names), fewer are not.
 *
 * So `file:///srv/transfers/*` allows `/srv/transfers/alice` and
 * `/srv/transfers/alice/in`, but not `/srv/transfers` itself (the parent of every user's
 * directory) nor `/srv/other`; `file:///srv/shared` allows `/srv/shared` and below;
 * `s3://media/*` allows `s3://media/alice…` but not the whole bucket; `s3://*` allows any
 * bucket. A `*` inside a segment (`user-*`) or `**` is not a pattern and is refused.
 *
 * For `file://`, matching happens after symlinks are resolved: the docroot's longest
 * existing prefix and the pattern's segments before its first `*` go through realpath
 * (so `/srv` → `/data/srv` still matches, and a link from inside a root to `/etc` does
 * not). A docroot that is, or passes through, a dangling symlink is refused, and the
 * docroot stored is the resolved one.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TachyonError, type ErrorCode } from '../../core/errors.js';

/** A parsed, normalised storage URL. */
export type StorageUrl =
  | { readonly scheme: 'file'; readonly segments: readonly string[] }
  | { readonly scheme: 's3'; readonly bucket: string; readonly segments: readonly string[] };

/** The wildcard segment of a {@link RootPattern}. */
export const WILDCARD = Symbol('*');
export type PatternSegment = string | typeof WILDCARD;

/** A parsed allowed-root pattern. */
export interface RootPattern {
  readonly scheme: 'file' | 's3';
  /** s3 only: the bucket, or WILDCARD for any. */
  readonly bucket?: string | typeof WILDCARD;
  readonly segments: readonly PatternSegment[];
  /** The pattern in canonical form, for messages. */
  readonly text: string;
}

export const MAX_URL_PATH_BYTES = 4096;
export const MAX_SEGMENT_BYTES = 255;

/** A refusal of one field's value: `<field>: <reason>`, with field and reason in details. */
export function fieldError(code: ErrorCode, field: string, reason: string, cause?: unknown): TachyonError {
  return new TachyonError(code, `${field}: ${reason}`, { ...(cause !== undefined ? { cause } : {}), details: { field, reason } });
}

function invalid(field: string, text: string, reason: string): TachyonError {
  return fieldError('USAGE', field, `invalid storage URL '${printable(text)}': ${reason}`);
}

/** Shows untrusted text in a message without control characters, and not too long. */
function printable(text: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is replaced
  const t = text.replace(/[\x00-\x1f\x7f]/g, '?');
  return t.length > 200 ? `${t.slice(0, 200)}…` : t;
}

// Characters kept as they are in a formatted path segment (RFC 3986 pchar minus '*' and '%').
const SAFE = /[A-Za-z0-9\-._~!$&'()+,;=:@]/;

function encodeSegment(s: string): string {
  let out = '';
  for (const ch of s) {
    if (SAFE.test(ch)) out += ch;
    else for (const b of Buffer.from(ch, 'utf8')) out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

const BUCKET = /^(?!\d+\.\d+\.\d+\.\d+$)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * Splits and checks the path of a URL (raw: %-decoded per segment) or of a plain path
 * (literal). With `wildcards`, a raw segment that is exactly `*` becomes WILDCARD.
 */
function parseSegments(field: string, text: string, rawPath: string, decode: boolean, wildcards: boolean): PatternSegment[] {
  const out: PatternSegment[] = [];
  let bytes = 0;
  for (const raw of rawPath.split('/')) {
    if (wildcards && raw === '*') {
      out.push(WILDCARD);
      bytes += 2;
      continue;
    }
    if (wildcards && raw.includes('*')) throw invalid(field, text, `'*' must be a whole path segment (as in file:///srv/transfers/*), not part of '${printable(raw)}'`);
    let seg = raw;
    if (decode) {
      try {
        seg = decodeURIComponent(raw);
      } catch {
        throw invalid(field, text, `bad %-escape in '${printable(raw)}'`);
      }
    }
    if (seg === '' || seg === '.') continue;
    if (seg === '..') throw invalid(field, text, "'..' is not allowed");
    // eslint-disable-next-line no-control-regex -- refusing control characters
    if (/[\x00-\x1f\x7f]/.test(seg)) throw invalid(field, text, 'a path segment contains a NUL or control character');
    if (seg.includes('/') || seg.includes('\\')) throw invalid(field, text, "a path segment contains an encoded '/' or a '\\'");
    const n = Buffer.byteLength(seg);
    if (n > MAX_SEGMENT_BYTES) throw invalid(field, text, `a path segment is longer than ${MAX_SEGMENT_BYTES} bytes`);
    bytes += n + 1;
    if (bytes > MAX_URL_PATH_BYTES) throw invalid(field, text, `the path is longer than ${MAX_URL_PATH_BYTES} bytes`);
    out.push(seg);
  }
  return out;
}

interface Parsed {
  scheme: 'file' | 's3';
  bucket?: string | typeof WILDCARD;
  segments: PatternSegment[];
}

function parseAny(field: string, text: string, wildcards: boolean, allowPlainPath: boolean): Parsed {
  if (typeof text !== 'string' || text === '') throw invalid(field, String(text), 'it is empty');
  if (text.length > MAX_URL_PATH_BYTES * 3 + 100) throw invalid(field, text, 'it is too long');
  if (text.startsWith('/')) {
    if (!allowPlainPath) throw invalid(field, text, 'write it as a URL: file:///absolute/path or s3://bucket/prefix');
    return { scheme: 'file', segments: parseSegments(field, text, text, false, wildcards) };
  }
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)([?#].*)?$/s.exec(text);
  if (!m) throw invalid(field, text, 'expected file:///absolute/path or s3://bucket/prefix');
  const scheme = (m[1] ?? '').toLowerCase();
  const authority = m[2] ?? '';
  const rawPath = m[3] ?? '';
  if (m[4] !== undefined) throw invalid(field, text, 'a query (?) or fragment (#) is not allowed; %-encode such characters (%3F, %23)');
  if (scheme === 'file') {
    if (authority !== '' && authority.toLowerCase() !== 'localhost') throw invalid(field, text, `a file URL names no host ('${printable(authority)}'); write file:///absolute/path`);
    return { scheme: 'file', segments: parseSegments(field, text, rawPath, true, wildcards) };
  }
  if (scheme === 's3') {
    let bucket: string | typeof WILDCARD;
    if (wildcards && authority === '*') bucket = WILDCARD;
    else if (BUCKET.test(authority)) bucket = authority;
    else throw invalid(field, text, `'${printable(authority)}' is not an S3 bucket name (3-63 of a-z 0-9 . -)`);
    return { scheme: 's3', bucket, segments: parseSegments(field, text, rawPath, true, wildcards) };
  }
  throw invalid(field, text, `unsupported scheme '${printable(scheme)}' (file or s3)`);
}

/**
 * Parses a docroot URL.
 *
 * @param field the name used in error messages (e.g. `docroot`, `users[0].docroot`)
 * @throws TachyonError `USAGE` `<field>: invalid storage URL …: <reason>`
 */
export function parseStorageUrl(text: string, options: { field?: string; allowPlainPath?: boolean } = {}): StorageUrl {
  const p = parseAny(options.field ?? 'docroot', text, false, options.allowPlainPath ?? false);
  const segments = p.segments as string[];
  return p.scheme === 'file' ? { scheme: 'file', segments } : { scheme: 's3', bucket: p.bucket as string, segments };
}

/** The canonical text of a storage URL (parseStorageUrl(formatStorageUrl(u)) equals u). */
export function formatStorageUrl(u: StorageUrl): string {
  const p = u.segments.map(encodeSegment).join('/');
  return u.scheme === 'file' ? `file:///${p}` : `s3://${u.bucket}${p === '' ? '' : `/${p}`}`;
}

/** The local path of a `file://` URL. */
export function fileUrlPath(u: StorageUrl & { scheme: 'file' }): string {
  return `/${u.segments.join('/')}`;
}

/**
 * Parses an allowed-root pattern (see the module comment for the syntax).
 *
 * @throws TachyonError `USAGE` naming the field and the reason.
 */
export function parseRootPattern(text: string, field = 'allowedRoots'): RootPattern {
  const p = parseAny(field, text, true, true);
  const segs = p.segments.map((s) => (s === WILDCARD ? '*' : encodeSegment(s))).join('/');
  const bucket = p.bucket === WILDCARD ? '*' : p.bucket;
  const canonical = p.scheme === 'file' ? `file:///${segs}` : `s3://${bucket}${segs === '' ? '' : `/${segs}`}`;
  return Object.freeze({ scheme: p.scheme, ...(p.bucket !== undefined ? { bucket: p.bucket } : {}), segments: Object.freeze(p.segments), text: canonical });
}

/** True if `url` is what `pattern` names or lies below it (no symlink resolution here). */
export function matchesRoot(pattern: RootPattern, url: StorageUrl): boolean {
  if (pattern.scheme !== url.scheme) return false;
  if (url.scheme === 's3' && pattern.bucket !== WILDCARD && pattern.bucket !== url.bucket) return false;
  if (url.segments.length < pattern.segments.length) return false;
  return pattern.segments.every((s, i) => s === WILDCARD || s === url.segments[i]);
}

/**
 * Resolves symlinks in a local path: realpath of its longest existing prefix, then the
 * rest appended. Refuses a dangling symlink, a symlink loop and a non-directory on the
 * way (or at the end, with `mustBeDirectory`).
 */
export async function resolveLocalPath(p: string, field: string, mustBeDirectory = true): Promise<string> {
  const segments = p.split('/').filter((s) => s !== '');
  for (let i = segments.length; i >= 0; i--) {
    const prefix = `/${segments.slice(0, i).join('/')}`;
    let real: string;
    try {
      real = await fs.realpath(prefix);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP') throw fieldError('PATH_INVALID', field, `${prefix} is a symlink loop`, err);
      if (code === 'ENOTDIR') throw fieldError('PATH_INVALID', field, `a component of ${prefix} is not a directory`, err);
      if (code === 'ENOENT') {
        // missing, or a dangling symlink? lstat tells
        const isLink = await fs.lstat(prefix).then(
          (st) => st.isSymbolicLink(),
          () => false,
        );
        if (isLink) throw fieldError('PATH_INVALID', field, `${prefix} is a symlink to a missing target`, err);
        continue;
      }
      throw fieldError('PATH_INVALID', field, `cannot resolve ${prefix}: ${(err as Error).message}`, err);
    }
    const rest = segments.slice(i);
    if (rest.length > 0 || mustBeDirectory) {
      const st = await fs.stat(real);
      if (!st.isDirectory()) throw fieldError('PATH_INVALID', field, `${prefix} is not a directory`);
    }
    return path.posix.join(real, ...rest);
  }
  // unreachable: '/' always exists
  return p;
}

/**
 * Checks a docroot against the allowed roots, when it is set: parses it, resolves
 * symlinks (file://), and matches it against every pattern. Returns the canonical URL to
 * store (for file://, the resolved path).
 *
 * @throws TachyonError `USAGE` for a malformed URL; `PATH_INVALID`
 *   (`<field>: … is outside the allowed storage roots (…)`) when no pattern allows it, or
 *   when symlinks lead nowhere.
 */
export async function checkDocroot(text: string, roots: readonly RootPattern[], field = 'docroot'): Promise<string> {
  const url = parseStorageUrl(text, { field, allowPlainPath: true });
  const list = roots.map((r) => r.text).join(', ');
  if (roots.length === 0) {
    throw fieldError('PATH_INVALID', field, `${formatStorageUrl(url)} cannot be used: no allowed storage roots are configured (allowedRoots in the server configuration, or --allowed-root)`);
  }
  let resolved: StorageUrl = url;
  if (url.scheme === 'file') {
    const real = await resolveLocalPath(fileUrlPath(url), field);
    resolved = { scheme: 'file', segments: real.split('/').filter((s) => s !== '') };
  }
  for (const pattern of roots) {
    if (pattern.scheme !== resolved.scheme) continue;
    let p = pattern;
    if (pattern.scheme === 'file') p = await resolvePattern(pattern, field);
    if (matchesRoot(p, resolved)) return formatStorageUrl(resolved);
  }
  const shown = formatStorageUrl(resolved);
  const given = formatStorageUrl(url);
  throw fieldError(
    'PATH_INVALID',
    field,
    `${given}${shown !== given ? ` (resolved: ${shown})` : ''} is outside the allowed storage roots (${list}); choose a docroot under one of them, or add a root to the server configuration`,
  );
}

/** A file:// pattern with the segments before its first `*` resolved through symlinks. */
async function resolvePattern(pattern: RootPattern, field: string): Promise<RootPattern> {
  const firstWild = pattern.segments.findIndex((s) => s === WILDCARD);
  const fixed = (firstWild < 0 ? pattern.segments : pattern.segments.slice(0, firstWild)) as string[];
  let real: string;
  try {
    real = await resolveLocalPath(`/${fixed.join('/')}`, field, false);
  } catch {
    return pattern; // a root whose prefix cannot be resolved is matched as written
  }
  const segments = [...real.split('/').filter((s) => s !== ''), ...(firstWild < 0 ? [] : pattern.segments.slice(firstWild))];
  return { ...pattern, segments };
}
