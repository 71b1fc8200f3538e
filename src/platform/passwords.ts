/**
 * Passwords: argon2id hashing (the PHC string carries its own random 16-byte salt and
 * parameters, so each password has its own salt and old hashes keep verifying after the
 * parameters change), and the policy check of a new password.
 *
 * The list of common passwords is `data/common-passwords.txt` (one a line, lower case):
 * the 10,000 most frequent passwords of the list that zxcvbn 4.4.2 (MIT, Dropbox) ships,
 * itself drawn from public password breach corpora; see docs/platform-identity.md.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import argon2 from 'argon2';
import { TachyonError } from '../core/errors.js';
import { MAX_PASSWORD_LENGTH } from './model.js';
import type { IdentityPolicy } from './policy.js';

/** The seam for password hashing. */
export interface PasswordHasher {
  hash(password: string): Promise<string>;
  /** False for a wrong password or a malformed hash; never throws for those. */
  verify(hash: string, password: string): Promise<boolean>;
}

/** argon2id parameters. Defaults: OWASP's recommended minimum (19 MiB, 2 passes, 1 lane). */
export interface Argon2Params {
  readonly memoryCost: number;
  readonly timeCost: number;
  readonly parallelism: number;
}

export const DEFAULT_ARGON2: Argon2Params = Object.freeze({ memoryCost: 19456, timeCost: 2, parallelism: 1 });

/** The real hasher: argon2id with a random salt per password. */
export function argon2idHasher(params: Argon2Params = DEFAULT_ARGON2): PasswordHasher {
  return {
    async hash(password) {
      try {
        return await argon2.hash(password, { type: argon2.argon2id, ...params });
      } catch (err) {
        throw new TachyonError('INTERNAL', 'password hashing failed', { cause: err });
      }
    },
    async verify(hash, password) {
      if (!hash.startsWith('$argon2id$')) return false;
      try {
        return await argon2.verify(hash, password);
      } catch {
        return false;
      }
    },
  };
}

/** The shipped list, resolved from this module (dist/src/platform → data/). */
export const COMMON_PASSWORDS_FILE = fileURLToPath(new URL('../../../data/common-passwords.txt', import.meta.url));

/** Reads a list of common passwords (one a line; `#` comments and blank lines skipped), lower-cased. */
export function loadCommonPasswords(file: string = COMMON_PASSWORDS_FILE): ReadonlySet<string> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TachyonError('CONFIG', `cannot read the common-password list ${file}`, { cause: err });
  }
  const set = new Set<string>();
  for (const line of text.split('\n')) {
    const w = line.trim().toLowerCase();
    if (w !== '' && !w.startsWith('#')) set.add(w);
  }
  if (set.size === 0) throw new TachyonError('CONFIG', `the common-password list ${file} is empty`);
  return set;
}

/**
 * Whether `password` is, or is built from, a common password: the whole (lower-cased),
 * the whole without leading or trailing digits and symbols (`Dragon2024!`), or one word
 * repeated (`passwordpassword`), when that core has 4 or more characters.
 */
export function isCommonPassword(password: string, common: ReadonlySet<string>): boolean {
  const p = password.toLowerCase();
  const cores = new Set<string>([p]);
  const stripped = p.replace(/^[\d\W_]+/u, '').replace(/[\d\W_]+$/u, '');
  cores.add(stripped);
  for (const s of [p, stripped]) {
    const rep = /^(.+?)\1+$/u.exec(s);
    if (rep?.[1] !== undefined) cores.add(rep[1]);
  }
  for (const c of cores) if (c.length >= 4 && common.has(c)) return true;
  return common.has(p);
}

function refused(reason: string, publicMessage: string): TachyonError {
  return new TachyonError('USAGE', `password refused: ${reason}`, { publicMessage, details: { field: 'newPassword', reason } });
}

/**
 * Checks a new password against the tenant's policy.
 * @throws TachyonError `USAGE` (`details.reason`: too-short, too-long, common, contains-username, control-characters).
 */
export function checkNewPassword(password: unknown, policy: IdentityPolicy, common: ReadonlySet<string>, username: string): string {
  if (typeof password !== 'string') throw refused('type', 'The new password must be text.');
  const length = [...password].length;
  if (length < policy.minPasswordLength) {
    throw refused('too-short', `The new password must have at least ${policy.minPasswordLength} characters.`);
  }
  if (length > MAX_PASSWORD_LENGTH) throw refused('too-long', `The new password must have at most ${MAX_PASSWORD_LENGTH} characters.`);
  // eslint-disable-next-line no-control-regex -- refusing control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(password)) throw refused('control-characters', 'The new password must not contain control characters.');
  if (policy.rejectCommonPasswords && isCommonPassword(password, common)) {
    throw refused('common', 'The new password is too common (it appears in lists of breached passwords); choose another.');
  }
  if (username.length >= 3 && password.toLowerCase().includes(username.toLowerCase())) {
    throw refused('contains-username', 'The new password must not contain the user name.');
  }
  return password;
}
