/**
 * A session restricted to a direction, a set of paths and an expiry (what a transfer
 * token grants). A granted path is a file or a directory: the session may touch that
 * path and anything under it, and (uploads only) create the directories above it.
 * Paths are compared after the jail resolved them to physical paths, so that a symbolic
 * link inside a granted directory cannot lead to an ungranted place.
 */
import path from 'node:path';
import type { Clock } from '../core/clock.js';
import { TachyonError } from '../core/errors.js';
import { normalizeStoragePath } from '../storage/backend.js';
import type { Jail } from './jail.js';

/** Why a restricted session refused something (`details.reason`, for the audit log). */
export type GrantRefusal = 'direction' | 'path-not-granted' | 'expired';

/** What a restricted session checks before it touches a path. */
export interface SessionRestriction {
  readonly direction: 'upload' | 'download';
  /** A name for audit records (e.g. `token:<id>`), never a secret. */
  readonly label: string;
  /**
   * `op`: `read` (a download source or file), `write` (an upload's file), `mkdir` (a
   * directory an upload makes). `abs`: a local absolute path ({@link pathGrant}) or a
   * normalized storage path ({@link storageGrant}). Throws PERMISSION.
   */
  check(op: 'read' | 'write' | 'mkdir', abs: string, shown: string): void;
  /** Throws PERMISSION (`direction`) when the session runs the other way, or (`expired`) after the expiry. */
  checkSession(direction: 'upload' | 'download'): void;
}

export function grantRefusal(reason: GrantRefusal, message: string, shown?: string): TachyonError {
  const publicMessage =
    reason === 'direction'
      ? 'The transfer token does not allow this direction.'
      : reason === 'expired'
        ? 'The transfer token has expired.'
        : `The transfer token does not cover ${shown ?? 'this path'}.`;
  return new TachyonError('PERMISSION', message, { publicMessage, details: { permission: 'token', reason, ...(shown !== undefined ? { path: shown } : {}) } });
}

/**
 * The restriction of a session to `paths` (client paths inside the jail, `/a/b`), one
 * direction and an expiry (ms, on `clock`).
 */
export function pathGrant(o: { jail: Jail; direction: 'upload' | 'download'; paths: readonly string[]; expiresAt: number; clock: Clock; label: string }): SessionRestriction {
  const { jail } = o;
  /** the granted paths, physical, resolved now and again at each check (uploads create them) */
  const granted = (): string[] => {
    const out: string[] = [];
    for (const p of o.paths) {
      try {
        out.push(jail.resolve(p));
      } catch {
        // a granted path that cannot be resolved grants nothing
      }
    }
    return out;
  };
  const under = (abs: string, g: string): boolean => abs === g || abs.startsWith(g + path.sep);
  const checkExpiry = (): void => {
    if (o.clock.now() >= o.expiresAt) throw grantRefusal('expired', `${o.label} expired at ${new Date(o.expiresAt).toISOString()}`);
  };
  return {
    direction: o.direction,
    label: o.label,
    checkSession(direction) {
      if (direction !== o.direction) throw grantRefusal('direction', `${o.label} is for ${o.direction}, the session asked to ${direction}`);
      checkExpiry();
    },
    check(op, abs, shown) {
      checkExpiry();
      if ((op === 'read') !== (o.direction === 'download')) throw grantRefusal('direction', `${o.label} is for ${o.direction}, not ${op}`, shown);
      // physical: a link inside a granted directory that leads elsewhere is not granted
      const real = jail.resolve(jail.display(path.resolve(abs)));
      const gs = granted();
      if (gs.some((g) => under(real, g))) return;
      // an upload may create the directories that lead to a granted path
      if (op === 'mkdir' && gs.some((g) => under(g, real))) return;
      throw grantRefusal('path-not-granted', `${o.label} does not cover ${shown} (${jail.display(real)})`, shown);
    },
  };
}

/**
 * The restriction of a session on a storage backend (an s3:// root) to `paths` (client
 * paths, `/a/b`), one direction and an expiry. `check` takes normalized storage paths
 * (`a/b`, '' for the root; see storage/backend.ts `normalizeStoragePath`). Object storage
 * has no symbolic links, so a path is compared by name: it is granted when it is a granted
 * path or lies under one on a '/' boundary (`a/bc` is not under `a/b`); an upload may
 * also create the directories that lead to a granted path. A path that does not
 * normalize (`..`, NUL, control characters, …) is never granted, and neither is a
 * granted path that does not normalize.
 */
export function storageGrant(o: { direction: 'upload' | 'download'; paths: readonly string[]; expiresAt: number; clock: Clock; label: string }): SessionRestriction {
  const granted: string[] = [];
  for (const p of o.paths) {
    try {
      granted.push(normalizeStoragePath(p));
    } catch {
      // a granted path that cannot be normalized grants nothing
    }
  }
  const under = (p: string, g: string): boolean => g === '' || p === g || p.startsWith(g + '/');
  const checkExpiry = (): void => {
    if (o.clock.now() >= o.expiresAt) throw grantRefusal('expired', `${o.label} expired at ${new Date(o.expiresAt).toISOString()}`);
  };
  return {
    direction: o.direction,
    label: o.label,
    checkSession(direction) {
      if (direction !== o.direction) throw grantRefusal('direction', `${o.label} is for ${o.direction}, the session asked to ${direction}`);
      checkExpiry();
    },
    check(op, storagePath, shown) {
      checkExpiry();
      if ((op === 'read') !== (o.direction === 'download')) throw grantRefusal('direction', `${o.label} is for ${o.direction}, not ${op}`, shown);
      let p: string;
      try {
        p = normalizeStoragePath(storagePath);
      } catch {
        throw grantRefusal('path-not-granted', `${o.label} does not cover ${shown} (not a storage path)`, shown);
      }
      if (granted.some((g) => under(p, g))) return;
      if (op === 'mkdir' && granted.some((g) => under(g, p))) return;
      throw grantRefusal('path-not-granted', `${o.label} does not cover ${shown} (/${p})`, shown);
    },
  };
}
