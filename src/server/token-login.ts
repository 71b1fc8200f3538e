/**
 * The shared transfer user (`xfer` by default) that logs in with a transfer token instead
 * of a personal key. A token is checked at authentication (this node's, intact, not
 * expired, its access key still active), and each session derives its account from it:
 * docroot = the token's storage root (a local directory, or an s3:// URL served through
 * the storage backend), permissions = only what its direction needs, and a
 * restriction to the token's paths (checked again, with the expiry, at each file).
 */
import { readFileSync } from 'node:fs';
import type { Clock } from '../core/clock.js';
import { TachyonError, toTachyonError } from '../core/errors.js';
import { POLICIES, type CipherName, type Permission } from '../core/types.js';
import type { Account } from './accounts.js';
import type { TransferTokenClaims, TransferTokenCodec } from './transfer-token.js';
import { fileUrlPath, formatStorageUrl, matchesRoot, parseStorageUrl, type RootPattern } from './users/storage-roots.js';

/** Whether an access key may still be used. `unknown`: no such key (deny). */
export type AccessKeyState = 'active' | 'revoked' | 'unknown';

/**
 * The seam to the access-key table (node API): answers for one key id. The real one
 * reads the node API's access keys (`databaseAccessKeyStatus` in node-api/access-keys.ts);
 * `fileAccessKeyStatus` (a JSON file of active and revoked ids) and `staticAccessKeyStatus`
 * stand in where configured and in tests.
 */
export interface AccessKeyStatus {
  status(accessKeyId: string): Promise<AccessKeyState>;
}

/** A fixed set of key states (tests). `serve` reads the node API's table (`databaseAccessKeyStatus`) or a file. */
export function staticAccessKeyStatus(states: Readonly<Record<string, AccessKeyState>>): AccessKeyStatus {
  return { status: (id) => Promise.resolve(Object.prototype.hasOwnProperty.call(states, id) ? states[id]! : 'unknown') };
}

/**
 * Key states from a JSON file `{"active": ["id", …], "revoked": ["id", …]}`, read at
 * each check (so that a revocation takes effect on the next login and session). A file
 * that cannot be read or parsed answers `unknown` for every key (deny).
 */
export function fileAccessKeyStatus(file: string): AccessKeyStatus {
  return {
    status(id) {
      try {
        const j = JSON.parse(readFileSync(file, 'utf8')) as { active?: unknown; revoked?: unknown };
        if (Array.isArray(j.revoked) && j.revoked.includes(id)) return Promise.resolve('revoked');
        if (Array.isArray(j.active) && j.active.includes(id)) return Promise.resolve('active');
        return Promise.resolve('unknown');
      } catch {
        return Promise.resolve('unknown');
      }
    },
  };
}

/** What the transfer server needs to run a token session. */
export interface TokenSession {
  readonly account: Account;
  readonly claims: TransferTokenClaims;
}

export type TokenCheck = { ok: true; identity: string } | { ok: false; reason: string };

export interface TokenLoginOptions {
  /** The shared transfer user's name. */
  user: string;
  codec: TransferTokenCodec;
  accessKeys: AccessKeyStatus;
  /** Datagram ciphers the server allows (token sessions get these). */
  ciphers: readonly CipherName[];
  /** When set, a token's storage root must match one of these (as users' docroots do). */
  allowedRoots?: readonly RootPattern[];
  clock: Clock;
}

export const UPLOAD_PERMISSIONS: readonly Permission[] = Object.freeze(['write', 'mkdir']);
export const DOWNLOAD_PERMISSIONS: readonly Permission[] = Object.freeze(['read', 'list']);

/** The token user: checks tokens at login and turns a logged-in token into a session's account. */
export class TokenLogin {
  readonly user: string;
  private readonly o: TokenLoginOptions;
  /** tokens accepted at login, by identity (`token:<id>`), until they expire */
  private readonly accepted = new Map<string, TransferTokenClaims>();

  constructor(o: TokenLoginOptions) {
    if (o.user === 'root') throw new TachyonError('CONFIG', 'the transfer-token user may not be root');
    this.user = o.user;
    this.o = o;
  }

  /** Checks a token offered at login; the reason of a refusal is for the audit log. */
  async check(token: string): Promise<TokenCheck> {
    let claims: TransferTokenClaims;
    try {
      claims = this.o.codec.verify(token);
    } catch (err) {
      const te = toTachyonError(err);
      return { ok: false, reason: `token-${String(te.details?.['reason'] ?? 'refused')}` };
    }
    const keyRefusal = await this.accessKeyRefusal(claims);
    if (keyRefusal) return { ok: false, reason: keyRefusal };
    try {
      this.rootOf(claims);
    } catch {
      return { ok: false, reason: 'token-root-not-allowed' };
    }
    this.prune();
    const identity = `token:${claims.id}`;
    this.accepted.set(identity, claims);
    return { ok: true, identity };
  }

  /**
   * The account of a session logged in with a token, checked again now: expired, or its
   * access key revoked since login, gives a refusal (reason for the audit log).
   */
  async session(identity: string): Promise<TokenSession | { refused: string }> {
    const claims = this.accepted.get(identity);
    if (!claims) return { refused: 'token-unknown-session' };
    if (this.o.clock.now() >= claims.expiresAt) return { refused: 'token-expired' };
    const keyRefusal = await this.accessKeyRefusal(claims);
    if (keyRefusal) return { refused: keyRefusal };
    const account: Account = Object.freeze({
      name: this.user,
      ...this.rootOf(claims),
      permissions: claims.direction === 'upload' ? UPLOAD_PERMISSIONS : DOWNLOAD_PERMISSIONS,
      ciphers: this.o.ciphers,
      policies: POLICIES,
      maxRateBps: null,
    });
    return { account, claims };
  }

  private async accessKeyRefusal(claims: TransferTokenClaims): Promise<string | undefined> {
    let state: AccessKeyState;
    try {
      state = await this.o.accessKeys.status(claims.accessKeyId);
    } catch {
      return 'access-key-check-failed';
    }
    return state === 'active' ? undefined : `access-key-${state}`;
  }

  /** The token's root as an account's docroot: a local directory, or an s3:// URL (canonical) with no local root. */
  private rootOf(claims: TransferTokenClaims): { root: string; storage?: string } {
    const url = parseStorageUrl(claims.storageRoot, { field: 'storageRoot' });
    if (this.o.allowedRoots && this.o.allowedRoots.length > 0 && !this.o.allowedRoots.some((p) => matchesRoot(p, url))) {
      throw new TachyonError('PERMISSION', `storage root ${claims.storageRoot} is not among the allowed roots`);
    }
    if (url.scheme === 's3') return { root: '', storage: formatStorageUrl(url) };
    if (url.scheme !== 'file') {
      throw new TachyonError('CONFIG', `storage root ${claims.storageRoot} is not served by this transfer server`, {
        publicMessage: 'This storage is not available on this server.',
      });
    }
    return { root: fileUrlPath(url) };
  }

  private prune(): void {
    if (this.accepted.size < 256) return;
    const now = this.o.clock.now();
    for (const [k, c] of this.accepted) if (now >= c.expiresAt) this.accepted.delete(k);
  }
}
