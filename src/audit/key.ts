/**
 * The chain key of a keyed audit log (HMAC-SHA-256). A key file holds at least 32 bytes;
 * surrounding whitespace is trimmed and the remaining bytes are the key as they are.
 * `tachyon audit keygen` writes 64 hexadecimal characters (256 random bits) and a newline.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, writeSync } from 'node:fs';
import { TachyonError, toTachyonError } from '../core/errors.js';

export const MIN_KEY_BYTES = 32;

/**
 * Reads an audit chain key. With `strict` (the default, for writers) a key file that
 * group or others may read is refused, as OpenSSH refuses such private keys.
 * @throws TachyonError `CONFIG` for a short or exposed key, `NOT_FOUND`/`PERMISSION` if unreadable.
 */
export function loadAuditKey(file: string, options: { strict?: boolean } = {}): Buffer {
  let raw: Buffer;
  let mode: number;
  try {
    const fd = openSync(file, 'r');
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new TachyonError('CONFIG', `audit key ${file} is not a regular file`);
      mode = st.mode;
      raw = readFileSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    if (err instanceof TachyonError) throw err;
    const e = toTachyonError(err, 'CONFIG');
    throw new TachyonError(e.code, `cannot read audit key ${file}: ${e.message}`, { cause: err });
  }
  if ((options.strict ?? true) && process.platform !== 'win32' && (mode & 0o077) !== 0) {
    throw new TachyonError('CONFIG', `audit key ${file} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
  }
  const text = raw.toString('latin1');
  const start = text.length - text.trimStart().length;
  const key = raw.subarray(start, start + text.trim().length);
  if (key.length < MIN_KEY_BYTES) {
    throw new TachyonError('CONFIG', `audit key ${file} is too short (${key.length} bytes; at least ${MIN_KEY_BYTES})`);
  }
  return Buffer.from(key);
}

/**
 * Creates a new key file (mode 0600; refuses to overwrite an existing file).
 * @throws TachyonError `EXISTS` if the file exists.
 */
export function generateAuditKeyFile(file: string): void {
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600);
  } catch (err) {
    const e = toTachyonError(err, 'IO');
    throw new TachyonError(e.code, `cannot create audit key ${file}: ${e.message}`, { cause: err });
  }
  try {
    writeSync(fd, `${randomBytes(32).toString('hex')}\n`);
  } finally {
    closeSync(fd);
  }
}
