/**
 * Transfer users: the types, and the validation of every field a user can be given
 * (name, permissions, ciphers, policies, rate cap, public keys). The repository
 * (repository.ts) stores them; docroots are checked by storage-roots.ts.
 */
import { TachyonError } from '../../core/errors.js';
import { CIPHERS, PERMISSIONS, POLICIES, type CipherName, type Permission, type RatePolicy } from '../../core/types.js';
import { parseAuthorizedKeys, type AuthorizedKey } from '../../control/hostkeys.js';
import { fieldError } from './storage-roots.js';

export { PERMISSIONS, type Permission };

/** An SSH public key of a user. */
export interface UserKey {
  /** e.g. `ssh-ed25519` */
  readonly type: string;
  /** The public key blob (SSH wire format). */
  readonly blob: Buffer;
  /** `SHA256:…`, as `ssh-keygen -l` prints it. */
  readonly fingerprint: string;
  readonly comment: string;
  /** ISO-8601 UTC. */
  readonly addedAt: string;
}

/** A transfer user as stored. */
export interface TransferUser {
  readonly name: string;
  /** Canonical storage URL (`file:///…` resolved through symlinks when set, or `s3://…`). */
  readonly docroot: string;
  readonly permissions: readonly Permission[];
  /** Datagram ciphers the user may choose (the server's cipher policy applies on top). */
  readonly ciphers: readonly CipherName[];
  /** Rate policies the user may choose. */
  readonly policies: readonly RatePolicy[];
  /** Rate cap in bits/s; null: only the server's ceiling applies. */
  readonly maxRateBps: number | null;
  readonly enabled: boolean;
  /** Uploads must be client-side encrypted (`send --encrypt-at-rest`); plaintext is refused. */
  readonly requireEncryptedAtRest: boolean;
  /** ISO-8601 UTC. */
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly keys: readonly UserKey[];
}

/** The settable fields of a user (what `user add` and `user set` take). */
export interface UserSettings {
  /** Storage URL or absolute path; checked against the allowed roots. */
  docroot?: string;
  permissions?: readonly Permission[];
  ciphers?: readonly CipherName[];
  policies?: readonly RatePolicy[];
  /** bits/s; null removes the cap. */
  maxRateBps?: number | null;
  enabled?: boolean;
  requireEncryptedAtRest?: boolean;
}

/** A user to create. */
export interface NewUser extends UserSettings {
  name: string;
  docroot: string;
  /** OpenSSH public keys, one per line (`ssh-ed25519 AAAA… comment`). */
  keys?: readonly string[];
}

/** Permissions a new user gets unless told otherwise: transfers both ways, nothing destructive. */
export const DEFAULT_PERMISSIONS: readonly Permission[] = Object.freeze(['list', 'read', 'write', 'mkdir']);
/** Policies a new user may choose unless told otherwise. */
export const DEFAULT_POLICIES: readonly RatePolicy[] = Object.freeze([...POLICIES]);

// ---------------------------------------------------------------------------------------
// Server-wide cipher policy

/** Relative strength of the datagram ciphers (key bits; `none` is 0). */
export const CIPHER_STRENGTH: Readonly<Record<CipherName, number>> = Object.freeze({
  none: 0,
  'aes-128-gcm': 128,
  'aes-192-gcm': 192,
  'aes-256-gcm': 256,
});

/** What the server allows whatever a user's own list says. */
export interface CipherPolicy {
  /** Ciphers the server allows at all (`none` is forbidden unless listed). */
  readonly allowed: readonly CipherName[];
  /** The weakest cipher accepted (by {@link CIPHER_STRENGTH}); none: no minimum. */
  readonly minimum?: CipherName;
}

/** The server's default: the three AES-GCM ciphers, `none` forbidden. */
export const DEFAULT_CIPHER_POLICY: CipherPolicy = Object.freeze({ allowed: Object.freeze(['aes-128-gcm', 'aes-192-gcm', 'aes-256-gcm'] as CipherName[]) });

/** The ciphers a policy permits, in catalogue order. */
export function permittedCiphers(policy: CipherPolicy): CipherName[] {
  const min = policy.minimum === undefined ? 0 : CIPHER_STRENGTH[policy.minimum];
  return CIPHERS.filter((c) => policy.allowed.includes(c) && CIPHER_STRENGTH[c] >= min);
}

/** Why a policy refuses a cipher, or undefined if it permits it. */
export function cipherRefusal(policy: CipherPolicy, c: CipherName): string | undefined {
  if (!policy.allowed.includes(c)) return `${c} is not allowed by the server's cipher policy (allowed: ${policy.allowed.join(', ') || 'none'})`;
  if (policy.minimum !== undefined && CIPHER_STRENGTH[c] < CIPHER_STRENGTH[policy.minimum]) return `${c} is weaker than the server's minimum ${policy.minimum}`;
  return undefined;
}

/** The ciphers a user may actually use now: the user's list within the server's policy. */
export function effectiveCiphers(user: Pick<TransferUser, 'ciphers'>, policy: CipherPolicy): CipherName[] {
  return user.ciphers.filter((c) => cipherRefusal(policy, c) === undefined);
}

// ---------------------------------------------------------------------------------------
// Field validation

/** Login names: lower-case letters, digits, `_ . -`, starting with a letter or `_`, at most 32. */
export const USER_NAME_PATTERN = /^[a-z_][a-z0-9_.-]{0,31}$/;

/** Account names of the system (and of services) that a transfer user may not take. */
export const RESERVED_USER_NAMES: ReadonlySet<string> = new Set([
  'root', 'toor', 'admin', 'administrator', 'daemon', 'bin', 'sys', 'sync', 'games', 'man', 'lp', 'mail', 'news',
  'uucp', 'proxy', 'www-data', 'backup', 'list', 'irc', 'gnats', 'nobody', 'nogroup', 'operator', 'adm', 'wheel',
  'shutdown', 'halt', 'sshd', 'messagebus', 'postfix', 'postgres', 'mysql', 'ftp', 'tty', 'disk', 'kmem', 'dialout',
  'sudo', 'staff', 'users', 'utmp', 'syslog', '_apt', 'tachyon',
]);

/**
 * Checks a user name.
 *
 * @throws TachyonError `USAGE` `name: …` for a malformed or reserved name.
 */
export function validateUserName(name: string, field = 'name'): string {
  if (typeof name !== 'string' || !USER_NAME_PATTERN.test(name)) {
    const shown = typeof name === 'string' ? JSON.stringify(name.slice(0, 40)) : String(name);
    throw fieldError('USAGE', field, `${shown} is not a valid user name: 1-32 of a-z 0-9 _ . -, starting with a letter or _`);
  }
  if (RESERVED_USER_NAMES.has(name) || name.startsWith('systemd-')) {
    throw fieldError('USAGE', field, `'${name}' is reserved for the system; choose another name`);
  }
  return name;
}

function checkList<T extends string>(field: string, values: readonly string[], allowed: readonly T[], what: string, allowEmpty: boolean): T[] {
  const out: T[] = [];
  for (const v of values) {
    if (!(allowed as readonly string[]).includes(v)) {
      throw fieldError('USAGE', field, `unknown ${what} '${String(v).slice(0, 40)}' (one of: ${allowed.join(', ')})`);
    }
    if (!out.includes(v as T)) out.push(v as T);
  }
  if (!allowEmpty && out.length === 0) throw fieldError('USAGE', field, `give at least one ${what} (${allowed.join(', ')})`);
  // catalogue order, so that stored and shown lists are stable
  return allowed.filter((a) => out.includes(a));
}

/** Checks a permission list (may be empty: a user who can do nothing). */
export function validatePermissions(values: readonly string[], field = 'permissions'): Permission[] {
  return checkList(field, values, PERMISSIONS, 'permission', true);
}

/** Checks a user's cipher list against the server's policy. */
export function validateCiphers(values: readonly string[], policy: CipherPolicy, field = 'ciphers'): CipherName[] {
  const list = checkList(field, values, CIPHERS, 'cipher', false);
  for (const c of list) {
    const why = cipherRefusal(policy, c);
    if (why !== undefined) throw fieldError('USAGE', field, why);
  }
  return list;
}

/** Checks a rate policy list. */
export function validatePolicies(values: readonly string[], field = 'policies'): RatePolicy[] {
  return checkList(field, values, POLICIES, 'policy', false);
}

/** Largest rate cap accepted (1 Tbit/s, as the CLI's rates). */
export const MAX_RATE_BPS = 1e12;

/** Checks a rate cap in bits/s (null: none). */
export function validateMaxRate(value: number | null, field = 'maxRate'): number | null {
  if (value === null) return null;
  if (!Number.isSafeInteger(value) || value < 1 || value > MAX_RATE_BPS) throw fieldError('USAGE', field, 'must be a whole number of bits/s between 1 and 1e12');
  return value;
}

/**
 * Parses OpenSSH public keys (one per line, `#` comments and blank lines skipped) with
 * the authorized_keys parser. Lines with options (`from="…" ssh-ed25519 …`) are refused:
 * options are not stored, and silently dropping a `from=` would widen access.
 *
 * @throws TachyonError `USAGE` `<field>: line N: <reason>`, or when no key is found.
 */
export function parsePublicKeys(text: string, field = 'key'): AuthorizedKey[] {
  const parsed = parseAuthorizedKeys(text);
  const first = parsed.errors[0];
  if (first !== undefined) throw fieldError('USAGE', field, `line ${first.line}: ${first.message}`);
  const withOptions = parsed.keys.find((k) => k.options.length > 0);
  if (withOptions !== undefined) {
    throw fieldError('USAGE', field, `line ${withOptions.line}: key options (${withOptions.options.map((o) => o.name).join(', ')}) are not supported; give the bare key (type, base64, comment)`);
  }
  if (parsed.keys.length === 0) throw fieldError('USAGE', field, 'no public key found (expected a line like: ssh-ed25519 AAAA… comment)');
  const seen = new Set<string>();
  for (const k of parsed.keys) {
    if (seen.has(k.fingerprint)) throw fieldError('USAGE', field, `line ${k.line}: the key ${k.fingerprint} is given twice`);
    seen.add(k.fingerprint);
  }
  return parsed.keys;
}

/** The `.pub` line of a stored key. */
export function publicKeyLine(k: UserKey): string {
  return `${k.type} ${k.blob.toString('base64')}${k.comment ? ` ${k.comment}` : ''}`;
}

/** Thrown when a named user does not exist. */
export function noSuchUser(name: string): TachyonError {
  return new TachyonError('NOT_FOUND', `no transfer user '${name}' (see 'tachyon user list')`, { publicMessage: 'No such user.', details: { field: 'name' } });
}
