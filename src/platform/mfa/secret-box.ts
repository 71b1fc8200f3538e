/**
 * The `SecretBox` seam: seals small secrets (a TOTP shared secret) for storage in the
 * database and opens them again, with associated data that binds each sealed value to
 * its owner, so a value copied into another row does not open.
 *
 * Real adapter: {@link AesGcmSecretBox}, AES-256-GCM under a 32-byte server key that
 * comes from a key file (created 0600 on first use, refused when group or others may
 * read it) or from the environment ({@link MFA_KEY_ENV}); see {@link loadSecretBox}.
 * Tests use the same class with a random key ({@link AesGcmSecretBox.random}). A KMS
 * adapter would implement the same two methods.
 *
 * Sealed form (text, safe for a `text` column): `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`,
 * a fresh 96-bit random nonce per seal and a 128-bit tag. The key id (16 hex digits of a
 * SHA-256 of the key) names the key that sealed it, so that a retired key can still open
 * old values after a new key became current, and a missing key is told apart from a
 * damaged or misplaced value.
 */
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, writeSync, constants as fsc } from 'node:fs';
import path from 'node:path';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { TachyonError } from '../../core/errors.js';

/** Seals and opens small secrets bound to associated data. */
export interface SecretBox {
  /** Encrypts `plaintext`, authenticating `aad` with it; returns the sealed text. */
  seal(plaintext: Uint8Array, aad: Uint8Array): string;
  /**
   * Decrypts a value sealed with the same `aad`.
   *
   * @throws TachyonError `KEY_MISSING` when the key that sealed it is not loaded;
   *   `WRONG_KEY` when the value is malformed, damaged, or sealed for other associated data.
   */
  open(sealed: string, aad: Uint8Array): Buffer;
}

/** The environment variable that may hold the MFA server key (64 hex digits). */
export const MFA_KEY_ENV = 'TACHYON_MFA_KEY';

const VERSION = 'v1';
const NONCE = 12;
const TAG = 16;
const PUBLIC = 'Two-step verification is not available for this account; contact an administrator.';

/** The id of a key: 16 hex digits of SHA-256 over a label and the key (reveals nothing usable). */
export function secretBoxKeyId(key: Uint8Array): string {
  return createHash('sha256').update('tachyon-secret-box-key-id\0').update(key).digest('hex').slice(0, 16);
}

/** AES-256-GCM under a current key (seals and opens) and any retired keys (open only). */
export class AesGcmSecretBox implements SecretBox {
  private readonly currentId: string;
  private readonly keys = new Map<string, Buffer>();

  constructor(current: Uint8Array, retired: readonly Uint8Array[] = []) {
    for (const k of [current, ...retired]) {
      if (k.length !== 32) throw new TachyonError('CONFIG', 'an MFA server key must be 32 bytes');
      this.keys.set(secretBoxKeyId(k), Buffer.from(k));
    }
    this.currentId = secretBoxKeyId(current);
  }

  /** A box under a fresh random key (tests; a key lost with the process). */
  static random(): AesGcmSecretBox {
    return new AesGcmSecretBox(randomBytes(32));
  }

  /** The id of the key new values are sealed under. */
  get keyId(): string {
    return this.currentId;
  }

  seal(plaintext: Uint8Array, aad: Uint8Array): string {
    const key = this.keys.get(this.currentId) as Buffer;
    const nonce = randomBytes(NONCE);
    const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG });
    c.setAAD(aad);
    const body = Buffer.concat([nonce, c.update(plaintext), c.final(), c.getAuthTag()]);
    return `${VERSION}.${this.currentId}.${body.toString('base64url')}`;
  }

  open(sealed: string, aad: Uint8Array): Buffer {
    const m = typeof sealed === 'string' ? /^v1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{38,4096})$/.exec(sealed) : null;
    if (!m) throw new TachyonError('WRONG_KEY', 'a sealed secret is malformed', { publicMessage: PUBLIC, details: { reason: 'malformed' } });
    const id = m[1] as string;
    const key = this.keys.get(id);
    if (key === undefined) {
      throw new TachyonError('KEY_MISSING', `the MFA server key ${id} that sealed this secret is not loaded`, { publicMessage: PUBLIC, details: { keyId: id } });
    }
    const body = Buffer.from(m[2] as string, 'base64url');
    if (body.length < NONCE + TAG) throw new TachyonError('WRONG_KEY', 'a sealed secret is too short', { publicMessage: PUBLIC, details: { reason: 'malformed' } });
    try {
      const d = createDecipheriv('aes-256-gcm', key, body.subarray(0, NONCE), { authTagLength: TAG });
      d.setAAD(aad);
      d.setAuthTag(body.subarray(body.length - TAG));
      return Buffer.concat([d.update(body.subarray(NONCE, body.length - TAG)), d.final()]);
    } catch (err) {
      throw new TachyonError('WRONG_KEY', 'a sealed secret does not open: damaged, or sealed for another owner', {
        cause: err,
        publicMessage: PUBLIC,
        details: { reason: 'authentication', keyId: id },
      });
    }
  }
}

function parseHexKey(text: string, where: string): Buffer {
  const t = text.trim();
  if (!/^[0-9a-fA-F]{64}$/.test(t)) throw new TachyonError('CONFIG', `${where} must hold 64 hex digits (a 32-byte key)`);
  return Buffer.from(t, 'hex');
}

/**
 * Reads the key file (64 hex digits), creating it with a fresh random key (mode 0600,
 * its directory 0700, never following a link) when it does not exist and `create` is
 * not false. Refuses a file that group or others may read.
 *
 * @throws TachyonError `CONFIG` (mode, form), `KEY_MISSING` (absent with `create: false`, unreadable).
 */
export function loadSecretBoxKeyFile(file: string, options: { create?: boolean } = {}): Buffer {
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = openSync(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && options.create !== false) {
        mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
        try {
          const w = openSync(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
          try {
            writeSync(w, `${randomBytes(32).toString('hex')}\n`);
          } finally {
            closeSync(w);
          }
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
            throw new TachyonError('KEY_MISSING', `cannot create the MFA key file ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`, { cause: e });
          }
        }
        continue;
      }
      throw new TachyonError('KEY_MISSING', `cannot read the MFA key file ${file}${code ? ` (${code})` : ''}`, { cause: err });
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new TachyonError('CONFIG', `the MFA key file ${file} is not a regular file`);
      if ((st.mode & 0o077) !== 0) throw new TachyonError('CONFIG', `the MFA key file ${file} is readable by group or others: chmod 600 it`);
      return parseHexKey(readFileSync(fd, 'utf8'), `the MFA key file ${file}`);
    } finally {
      closeSync(fd);
    }
  }
  throw new TachyonError('KEY_MISSING', `cannot create the MFA key file ${file}`);
}

/**
 * The server's secret box: the key from `env[MFA_KEY_ENV]` when set, else from `keyFile`
 * (created on first use). `retiredKeyFiles` are older keys kept to open values sealed
 * before a rotation.
 */
export function loadSecretBox(options: { keyFile?: string; env?: NodeJS.ProcessEnv; retiredKeyFiles?: readonly string[] }): AesGcmSecretBox {
  const retired = (options.retiredKeyFiles ?? []).map((f) => loadSecretBoxKeyFile(f, { create: false }));
  const fromEnv = options.env?.[MFA_KEY_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return new AesGcmSecretBox(parseHexKey(fromEnv, MFA_KEY_ENV), retired);
  if (options.keyFile === undefined) throw new TachyonError('KEY_MISSING', `no MFA server key: set ${MFA_KEY_ENV} or give a key file`);
  return new AesGcmSecretBox(loadSecretBoxKeyFile(options.keyFile), retired);
}
