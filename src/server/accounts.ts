/**
 * Who may log in to the transfer server, and what a logged-in session may do: the
 * `AccountSource` seam. Two adapters: the user database (`tachyon serve --config`,
 * `tachyon start`) and the single user of `tachyon serve --root --authorized-keys`.
 */
import { TachyonError } from '../core/errors.js';
import type { CipherName, Permission, RatePolicy } from '../core/types.js';
import { PERMISSIONS, POLICIES } from '../core/types.js';
import { findAuthorizedKey, fingerprintOf, type AuthorizedKey } from '../control/hostkeys.js';
import { effectiveCiphers, type CipherPolicy, type TransferUser } from './users/model.js';
import type { KeyCheck } from './users/repository.js';
import { fileUrlPath, formatStorageUrl, parseStorageUrl } from './users/storage-roots.js';

/** What one authenticated session may do. */
export interface Account {
  readonly name: string;
  /** Absolute local directory the session sees as `/` ('' when `storage` is set). */
  readonly root: string;
  /** The docroot when it is not a local directory: a canonical `s3://bucket/prefix` URL. */
  readonly storage?: string;
  readonly permissions: readonly Permission[];
  /** Datagram ciphers this account may use (server policy applied). */
  readonly ciphers: readonly CipherName[];
  readonly policies: readonly RatePolicy[];
  /** Rate cap in bits/s; null: only the server's ceiling applies. */
  readonly maxRateBps: number | null;
  /** Uploads must be client-side encrypted envelopes (`.tachyon-enc`); absent: any file. */
  readonly requireEncryptedAtRest?: boolean;
}

/** The outcome of a key check; `reason` is for the audit log, never for the client. */
export type AccountKeyCheck = { ok: true } | { ok: false; reason: string };

export interface AccountSource {
  /** May `user` log in with this public key (SSH wire format)? */
  check(user: string, keyBlob: Buffer): Promise<AccountKeyCheck>;
  /**
   * The account of an authenticated session, read again at session start: a user
   * disabled, removed or stripped of that key since login gets nothing.
   */
  account(user: string, keyFingerprint: string): Promise<Account | undefined>;
}

/** The single transfer user of `tachyon serve --root DIR --authorized-keys FILE`: every permission. */
export function singleUserAccounts(o: { user: string; root: string; keys: readonly AuthorizedKey[]; ciphers: readonly CipherName[] }): AccountSource {
  const fingerprints = new Set(o.keys.map((k) => fingerprintOf(k.blob)));
  const account: Account = Object.freeze({
    name: o.user,
    root: o.root,
    permissions: PERMISSIONS,
    ciphers: o.ciphers,
    policies: POLICIES,
    maxRateBps: null,
  });
  return {
    check(user, blob) {
      if (user !== o.user) return Promise.resolve({ ok: false, reason: 'unknown-user' });
      if (findAuthorizedKey(o.keys, blob) === undefined) return Promise.resolve({ ok: false, reason: 'unknown-key' });
      return Promise.resolve({ ok: true });
    },
    account(user, fp) {
      return Promise.resolve(user === o.user && fingerprints.has(fp) ? account : undefined);
    },
  };
}

/** What the database adapter needs of the user repository. */
export interface UserLookup {
  authorizeKey(name: string, keyBlob: Buffer): Promise<KeyCheck>;
  get(name: string): Promise<TransferUser | undefined>;
}

/** Accounts from the user database, within the server's cipher policy. */
export function databaseAccounts(users: UserLookup, cipherPolicy: CipherPolicy): AccountSource {
  return {
    async check(user, blob) {
      const r = await users.authorizeKey(user, blob);
      return r.ok ? { ok: true } : { ok: false, reason: r.reason };
    },
    async account(name, fp) {
      const u = await users.get(name);
      if (!u || !u.enabled || !u.keys.some((k) => k.fingerprint === fp)) return undefined;
      return Object.freeze({
        name: u.name,
        ...docrootOf(u),
        permissions: u.permissions,
        ciphers: effectiveCiphers(u, cipherPolicy),
        policies: u.policies,
        maxRateBps: u.maxRateBps,
        requireEncryptedAtRest: u.requireEncryptedAtRest,
      });
    },
  };
}

function docrootOf(u: TransferUser): { root: string; storage?: string } {
  const url = parseStorageUrl(u.docroot, { field: 'docroot', allowPlainPath: true });
  if (url.scheme === 's3') return { root: '', storage: formatStorageUrl(url) };
  if (url.scheme !== 'file') {
    throw new TachyonError('CONFIG', `user ${u.name}: docroot ${u.docroot} is not served by this transfer server`, {
      publicMessage: 'Your storage is not available on this server.',
    });
  }
  return { root: fileUrlPath(url) };
}
