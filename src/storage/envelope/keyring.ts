/**
 * Master keys of server-side encryption, behind the `KeyProvider` seam: which key wraps
 * new files' content keys, and the key of a given id. The adapters here hold the keys
 * themselves (a keyring file, or one key from the environment); a KMS adapter would
 * implement the same interface by having the KMS decrypt a locally stored, KMS-wrapped
 * copy of each master key when first asked (the usual envelope-encryption pattern), so
 * nothing else changes.
 */
import { chmodSync, closeSync, existsSync, fstatSync, openSync, readFileSync, renameSync, writeFileSync, constants as fsc } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { TachyonError } from '../../core/errors.js';

export interface KeyProvider {
  /** the id of the key that wraps the content keys of new files */
  currentKeyId(): string;
  /** the 32-byte master key `id`; KEY_MISSING when this provider does not have it */
  key(id: string): Promise<Buffer>;
}

const ID = /^[A-Za-z0-9._-]{1,32}$/;

function missing(id: string): TachyonError {
  return new TachyonError('KEY_MISSING', `master key '${id}' is not available (not in the keyring or environment)`, { details: { keyId: id } });
}

/** Keys held in memory: the real provider behind the file and environment loaders, and the one tests use. */
export class StaticKeyring implements KeyProvider {
  private readonly keys: ReadonlyMap<string, Buffer>;
  constructor(
    keys: ReadonlyMap<string, Buffer> | Record<string, Buffer>,
    private readonly current: string,
  ) {
    this.keys = keys instanceof Map ? new Map(keys) : new Map(Object.entries(keys));
    for (const [id, k] of this.keys) {
      if (!ID.test(id)) throw new TachyonError('CONFIG', `master key id '${id}': 1-32 of A-Z a-z 0-9 . _ -`);
      if (k.length !== 32) throw new TachyonError('CONFIG', `master key '${id}' must be 32 bytes`);
    }
    if (!this.keys.has(current)) throw missing(current);
  }
  currentKeyId(): string {
    return this.current;
  }
  key(id: string): Promise<Buffer> {
    const k = this.keys.get(id);
    return k ? Promise.resolve(k) : Promise.reject(missing(id));
  }
  ids(): string[] {
    return [...this.keys.keys()];
  }
}

/** The keyring file: `{"current": ID, "keys": {ID: "64 hex digits", …}}`, mode 0600. */
export interface KeyringFile {
  current: string;
  keys: Record<string, string>;
}

/** Reads a keyring file; refuses one that group or others may read (CONFIG), and malformed ones. */
export function loadKeyringFile(file: string): StaticKeyring {
  let text: string;
  try {
    const fd = openSync(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      if ((fstatSync(fd).mode & 0o077) !== 0) throw new TachyonError('CONFIG', `keyring ${file} is readable by group or others: chmod 600 it`);
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    if (err instanceof TachyonError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new TachyonError('KEY_MISSING', `cannot read the keyring ${file}${code ? ` (${code})` : ''}`, { cause: err });
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new TachyonError('CONFIG', `keyring ${file}: not JSON`);
  }
  const o = v as Partial<KeyringFile>;
  if (typeof o !== 'object' || o === null || typeof o.current !== 'string' || typeof o.keys !== 'object' || o.keys === null) {
    throw new TachyonError('CONFIG', `keyring ${file}: expected {"current": ID, "keys": {ID: HEX}}`);
  }
  const keys = new Map<string, Buffer>();
  for (const [id, hex] of Object.entries(o.keys)) {
    if (typeof hex !== 'string' || !/^[0-9a-f]{64}$/i.test(hex)) throw new TachyonError('CONFIG', `keyring ${file}: key '${id}' must be 64 hex digits`);
    keys.set(id, Buffer.from(hex, 'hex'));
  }
  return new StaticKeyring(keys, o.current);
}

/** Adds a fresh random key to a keyring file (created 0600 if missing) and makes it current; returns its id. */
export function addKeyToKeyringFile(file: string, id?: string): string {
  let ring: KeyringFile = { current: '', keys: {} };
  if (existsSync(file)) {
    loadKeyringFile(file); // validates (mode, form)
    ring = JSON.parse(readFileSync(file, 'utf8')) as KeyringFile;
  }
  const newId = id ?? `k${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}`;
  if (!ID.test(newId)) throw new TachyonError('USAGE', `key id '${newId}': 1-32 of A-Z a-z 0-9 . _ -`);
  if (ring.keys[newId] !== undefined) throw new TachyonError('EXISTS', `keyring ${file} already has a key '${newId}'`);
  ring.keys[newId] = randomBytes(32).toString('hex');
  ring.current = newId;
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, JSON.stringify(ring, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
  return newId;
}

/** One master key from the environment: `TACHYON_MASTER_KEY=ID:HEX64`. */
export function keyringFromEnv(value: string | undefined): StaticKeyring {
  if (value === undefined || value === '') throw new TachyonError('KEY_MISSING', 'no master key: set TACHYON_MASTER_KEY=ID:HEX64 or give a keyring file');
  const m = /^([A-Za-z0-9._-]{1,32}):([0-9a-fA-F]{64})$/.exec(value.trim());
  if (!m) throw new TachyonError('CONFIG', 'TACHYON_MASTER_KEY must be ID:HEX64 (a key id, a colon, 64 hex digits)');
  return new StaticKeyring({ [m[1]!]: Buffer.from(m[2]!, 'hex') }, m[1]!);
}
