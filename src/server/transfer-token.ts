/**
 * Transfer tokens: what the node API hands an application so that one shared transfer
 * user (`xfer`) may move exactly the named paths, in one direction, until an expiry —
 * without the application holding any storage or SSH credential.
 *
 * Text form: `tkn1.<base64url>` of
 *
 * ```
 *   header: version (1 byte, 1) | key id (8 bytes) | node id length (1 byte) | node id (UTF-8)
 *   nonce (12 bytes) | AES-256-GCM ciphertext of the JSON claims | tag (16 bytes)
 * ```
 *
 * The header travels in the clear and is authenticated as additional data, so that a
 * verifier can tell "issued by another node" and "sealed under a key this node no longer
 * accepts" from "tampered" before it decrypts. The claims (node id again, access key id,
 * storage root, direction, paths, issued-at, expiry, a random id) are only readable with
 * the node's token key. See docs/transfer-tokens.md.
 *
 * The token key is 32 random bytes in a file created 0600 on first use; rotation moves it
 * to `<file>.previous` (still accepted for a grace period) and makes a new one.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { closeSync, constants as fsc, linkSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import type { Clock } from '../core/clock.js';
import { TachyonError } from '../core/errors.js';

export const TOKEN_PREFIX = 'tkn1.';
const VERSION = 1;
const KEY_BYTES = 32;
const KEY_ID_BYTES = 8;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** Longest token text accepted (SSH carries it as a password; also bounds the work). */
export const MAX_TOKEN_CHARS = 16_384;
/** Most paths one token names. */
export const MAX_TOKEN_PATHS = 256;
export const MAX_NODE_ID_BYTES = 64;
/** Default lifetime of a token. */
export const DEFAULT_TOKEN_TTL_MS = 5 * 60_000;
/** How long a rotated-out key is still accepted, by default (the longest lifetime a token may have). */
export const DEFAULT_KEY_GRACE_MS = 60 * 60_000;
/** Clock skew tolerated on `iat` (a token issued "in the future"). */
const SKEW_MS = 60_000;

export type TransferDirection = 'upload' | 'download';

/** What a token grants (all of it authenticated and secret). */
export interface TransferTokenClaims {
  readonly nodeId: string;
  readonly accessKeyId: string;
  /** The access key's storage root, e.g. `file:///srv/x` or `s3://bucket/prefix`. */
  readonly storageRoot: string;
  readonly direction: TransferDirection;
  /** Normalized paths under the root, each `/a/b`: the file or directory (and what is under it) the session may touch. */
  readonly paths: readonly string[];
  /** Milliseconds since the epoch. */
  readonly issuedAt: number;
  readonly expiresAt: number;
  /** Random id (base64url of 16 bytes): names the token in audit records, never the token itself. */
  readonly id: string;
}

/** Why a token was refused (for the audit log; the remote party sees one public message). */
export type TokenRefusal = 'malformed' | 'unknown-version' | 'wrong-node' | 'unknown-key' | 'tampered' | 'expired' | 'not-yet-valid';

/** The one message a remote party sees for any refused token. */
export const TOKEN_PUBLIC_MESSAGE = 'The transfer token is not valid.';

export function tokenError(reason: TokenRefusal, message: string): TachyonError {
  return new TachyonError('AUTH_FAILED', `transfer token refused (${reason}): ${message}`, {
    publicMessage: TOKEN_PUBLIC_MESSAGE,
    details: { reason },
  });
}

/** One token key. */
export interface TokenKey {
  /** 8 bytes derived from the key (SHA-256), shown in hex. */
  readonly id: string;
  readonly key: Buffer;
}

/** The keys of one node: the current one seals; the previous one is still accepted until `previousUntil`. */
export interface TokenKeyring {
  readonly current: TokenKey;
  readonly previous?: TokenKey & { readonly acceptUntil: number };
}

export function tokenKeyOf(key: Buffer): TokenKey {
  if (key.length !== KEY_BYTES) throw new TachyonError('CONFIG', `a token key is ${KEY_BYTES} bytes, got ${key.length}`);
  const id = createHash('sha256').update('tachyon transfer token key id\0').update(key).digest().subarray(0, KEY_ID_BYTES).toString('hex');
  return Object.freeze({ id, key: Buffer.from(key) });
}

function readKeyFile(file: string): Buffer | undefined {
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TachyonError('CONFIG', `cannot read the token key file ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (process.platform !== 'win32' && (statSync(file).mode & 0o077) !== 0) {
    throw new TachyonError('CONFIG', `the token key file ${file} is accessible by others (chmod 600 ${file})`);
  }
  if (data.length !== KEY_BYTES) throw new TachyonError('CONFIG', `the token key file ${file} does not hold ${KEY_BYTES} bytes`);
  return data;
}

/** Writes a new key under a temporary name and links it into place (no clobber: a concurrent creator wins). */
function createKeyFile(file: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
  try {
    writeSync(fd, randomBytes(KEY_BYTES));
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new TachyonError('CONFIG', `cannot create the token key file ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    unlinkSync(tmp);
  }
}

/**
 * The node's token keys from `file` (created, 0600, if missing) and `<file>.previous`
 * (accepted for `graceMs` after it was rotated out, judged by its modification time).
 */
export function loadTokenKeyring(file: string, o: { clock?: Clock; graceMs?: number } = {}): TokenKeyring {
  let data = readKeyFile(file);
  if (data === undefined) {
    createKeyFile(file);
    data = readKeyFile(file)!;
  }
  const current = tokenKeyOf(data);
  const prevFile = `${file}.previous`;
  const prev = readKeyFile(prevFile);
  if (prev === undefined) return Object.freeze({ current });
  const acceptUntil = statSync(prevFile).mtimeMs + (o.graceMs ?? DEFAULT_KEY_GRACE_MS);
  return Object.freeze({ current, previous: Object.freeze({ ...tokenKeyOf(prev), acceptUntil }) });
}

/** Where a codec gets its keys: a fixed keyring, or one that follows a key file. */
export interface TokenKeySource {
  keyring(): TokenKeyring;
}

/**
 * The keyring of a key file, reloaded when the file or its `.previous` changes (checked
 * at most once a second), so that a rotation reaches running servers and node APIs
 * without a restart.
 */
export function fileTokenKeys(file: string, o: { clock?: Clock; graceMs?: number; checkEveryMs?: number } = {}): TokenKeySource {
  const stamp = (): string => {
    const one = (f: string): string => {
      try {
        const st = statSync(f);
        return `${st.ino}:${st.mtimeMs}:${st.size}`;
      } catch {
        return '-';
      }
    };
    return `${one(file)}|${one(`${file}.previous`)}`;
  };
  let ring = loadTokenKeyring(file, o);
  let seen = stamp();
  let checkedAt = Date.now();
  const every = o.checkEveryMs ?? 1000;
  return {
    keyring() {
      const now = Date.now();
      if (now - checkedAt >= every) {
        checkedAt = now;
        const st = stamp();
        if (st !== seen) {
          ring = loadTokenKeyring(file, o);
          seen = stamp();
        }
      }
      return ring;
    },
  };
}

/** Rotates the token key: the current one becomes `<file>.previous`, a new one is made. */
export function rotateTokenKey(file: string): TokenKeyring {
  if (readKeyFile(file) === undefined) return loadTokenKeyring(file);
  renameSync(file, `${file}.previous`);
  // the grace period runs from the rotation, not from the key's creation
  const now = new Date();
  utimesSync(`${file}.previous`, now, now);
  return loadTokenKeyring(file);
}

// ---- codec --------------------------------------------------------------------------------

const ClaimsSchema = z.strictObject({
  n: z.string().min(1).max(MAX_NODE_ID_BYTES),
  a: z.string().min(1).max(256),
  r: z.string().min(1).max(4096),
  d: z.enum(['u', 'd']),
  p: z.array(z.string().min(1).max(4096)).min(1).max(MAX_TOKEN_PATHS),
  iat: z.number().int().nonnegative(),
  exp: z.number().int().nonnegative(),
  j: z.string().regex(/^[A-Za-z0-9_-]{22}$/),
});

/**
 * Random bytes from a pooled CSPRNG buffer: one `randomBytes` call per 4 KiB instead of
 * two per token (what Node's randomUUID does too); issuing is on a hot path.
 */
class RandomPool {
  private pool = Buffer.alloc(0);
  private at = 0;
  take(n: number): Buffer {
    if (this.at + n > this.pool.length) {
      this.pool = randomBytes(4096);
      this.at = 0;
    }
    const out = Buffer.from(this.pool.subarray(this.at, this.at + n));
    // not kept in the pool once handed out
    this.pool.fill(0, this.at, this.at + n);
    this.at += n;
    return out;
  }
}

function header(keyId: string, nodeId: string): Buffer {
  const node = Buffer.from(nodeId, 'utf8');
  if (node.length === 0 || node.length > MAX_NODE_ID_BYTES) throw new TachyonError('CONFIG', `a node id is 1 to ${MAX_NODE_ID_BYTES} bytes`);
  return Buffer.concat([Buffer.from([VERSION]), Buffer.from(keyId, 'hex'), Buffer.from([node.length]), node]);
}

export interface TokenCodecOptions {
  nodeId: string;
  keys: TokenKeyring | TokenKeySource;
  clock: Clock;
}

/** Seals and opens the transfer tokens of one node. */
export class TransferTokenCodec {
  private readonly nodeId: string;
  private readonly source: TokenKeySource;
  /** the header and additional data of tokens sealed under the current key (the same for all) */
  private sealing: { keyId: string; head: Buffer; aad: Buffer } | undefined;
  private readonly clock: Clock;
  private readonly aadPrefix = Buffer.from('tachyon transfer token\0', 'utf8');
  private readonly random = new RandomPool();

  constructor(o: TokenCodecOptions) {
    this.source = 'keyring' in o.keys ? o.keys : { keyring: () => o.keys as TokenKeyring };
    header(this.source.keyring().current.id, o.nodeId); // validates the node id
    this.nodeId = o.nodeId;
    this.clock = o.clock;
  }

  /** Issues a token for these grants (`ttlMs` from now). */
  issue(g: { accessKeyId: string; storageRoot: string; direction: TransferDirection; paths: readonly string[]; ttlMs?: number }): { token: string; claims: TransferTokenClaims } {
    const now = Math.floor(this.clock.now());
    const claims: TransferTokenClaims = Object.freeze({
      nodeId: this.nodeId,
      accessKeyId: g.accessKeyId,
      storageRoot: g.storageRoot,
      direction: g.direction,
      paths: Object.freeze([...g.paths]),
      issuedAt: now,
      expiresAt: now + Math.round(g.ttlMs ?? DEFAULT_TOKEN_TTL_MS),
      id: this.random.take(16).toString('base64url'),
    });
    // what verify's schema checks, checked by hand (cheaper on this hot path)
    const bad =
      g.accessKeyId.length === 0 || g.accessKeyId.length > 256 || g.storageRoot.length === 0 || g.storageRoot.length > 4096 ||
      g.paths.length === 0 || g.paths.length > MAX_TOKEN_PATHS || g.paths.some((p) => p.length === 0 || p.length > 4096) ||
      !(claims.expiresAt > claims.issuedAt);
    if (bad) throw new TachyonError('USAGE', 'cannot issue a token for these grants (no, too many or too long paths, or a bad lifetime)', { publicMessage: 'The transfer request cannot be expressed as a token (too many or too long paths).' });
    const wire = { n: claims.nodeId, a: claims.accessKeyId, r: claims.storageRoot, d: claims.direction === 'upload' ? 'u' : 'd', p: claims.paths, iat: claims.issuedAt, exp: claims.expiresAt, j: claims.id };
    const nonce = this.random.take(NONCE_BYTES);
    const current = this.source.keyring().current;
    if (this.sealing?.keyId !== current.id) {
      const head = header(current.id, this.nodeId);
      this.sealing = { keyId: current.id, head, aad: Buffer.concat([this.aadPrefix, head]) };
    }
    const cipher = createCipheriv('aes-256-gcm', current.key, nonce);
    cipher.setAAD(this.sealing.aad);
    const body = Buffer.concat([cipher.update(JSON.stringify(wire), 'utf8'), cipher.final()]);
    const token = TOKEN_PREFIX + Buffer.concat([this.sealing.head, nonce, body, cipher.getAuthTag()]).toString('base64url');
    if (token.length > MAX_TOKEN_CHARS) throw new TachyonError('USAGE', `token of ${token.length} characters exceeds ${MAX_TOKEN_CHARS}`, { publicMessage: 'The transfer request names too many or too long paths.' });
    return { token, claims };
  }

  /**
   * Opens and checks a token: this node's, sealed under a key it accepts, intact,
   * issued and not expired now.
   * @throws TachyonError `AUTH_FAILED` with `details.reason` (a {@link TokenRefusal}) and
   *   the one public message {@link TOKEN_PUBLIC_MESSAGE}.
   */
  verify(token: unknown): TransferTokenClaims {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_CHARS) throw tokenError('malformed', 'not a string of acceptable length');
    if (!token.startsWith('tkn')) throw tokenError('malformed', 'no token prefix');
    const dot = token.indexOf('.');
    if (dot < 0) throw tokenError('malformed', 'no token prefix');
    if (token.slice(0, dot + 1) !== TOKEN_PREFIX) throw tokenError('unknown-version', `prefix ${JSON.stringify(token.slice(0, Math.min(dot + 1, 16)))}`);
    const text = token.slice(dot + 1);
    if (!/^[A-Za-z0-9_-]+$/.test(text)) throw tokenError('malformed', 'not base64url');
    const raw = Buffer.from(text, 'base64url');
    if (raw.length < 1 + KEY_ID_BYTES + 1 + 1 + NONCE_BYTES + TAG_BYTES + 2) throw tokenError('malformed', 'too short');
    if (raw[0] !== VERSION) throw tokenError('unknown-version', `version ${raw[0]}`);
    const keyId = raw.subarray(1, 1 + KEY_ID_BYTES).toString('hex');
    const nodeLen = raw[1 + KEY_ID_BYTES]!;
    const headLen = 2 + KEY_ID_BYTES + nodeLen;
    if (nodeLen === 0 || nodeLen > MAX_NODE_ID_BYTES || raw.length < headLen + NONCE_BYTES + TAG_BYTES + 2) throw tokenError('malformed', 'bad node id length');
    const nodeId = raw.subarray(2 + KEY_ID_BYTES, headLen).toString('utf8');
    if (nodeId !== this.nodeId) throw tokenError('wrong-node', `issued by node ${JSON.stringify(nodeId.slice(0, 64))}`);
    const now = this.clock.now();
    let key: TokenKey | undefined;
    const keys = this.source.keyring();
    if (keyId === keys.current.id) key = keys.current;
    else if (keys.previous && keyId === keys.previous.id && now <= keys.previous.acceptUntil) key = keys.previous;
    if (!key) throw tokenError('unknown-key', `key ${keyId} is not accepted`);
    const head = raw.subarray(0, headLen);
    const nonce = raw.subarray(headLen, headLen + NONCE_BYTES);
    const body = raw.subarray(headLen + NONCE_BYTES, raw.length - TAG_BYTES);
    const tag = raw.subarray(raw.length - TAG_BYTES);
    let plain: Buffer;
    try {
      const d = createDecipheriv('aes-256-gcm', key.key, nonce, { authTagLength: TAG_BYTES });
      d.setAAD(Buffer.concat([this.aadPrefix, head]));
      d.setAuthTag(tag);
      plain = Buffer.concat([d.update(body), d.final()]);
    } catch {
      throw tokenError('tampered', 'authentication failed');
    }
    let json: unknown;
    try {
      json = JSON.parse(plain.toString('utf8'));
    } catch {
      // authentic but unreadable: only a buggy issuer with our key makes this
      throw tokenError('malformed', 'claims are not JSON');
    }
    const parsed = ClaimsSchema.safeParse(json);
    if (!parsed.success) throw tokenError('malformed', 'claims do not match the schema');
    const c = parsed.data;
    if (c.n !== nodeId) throw tokenError('tampered', 'node id of header and claims differ');
    if (c.exp <= c.iat) throw tokenError('malformed', 'expiry before issue');
    if (c.iat > now + SKEW_MS) throw tokenError('not-yet-valid', 'issued in the future');
    if (now >= c.exp) throw tokenError('expired', `expired at ${new Date(c.exp).toISOString()}`);
    return Object.freeze({
      nodeId: c.n,
      accessKeyId: c.a,
      storageRoot: c.r,
      direction: c.d === 'u' ? 'upload' : 'download',
      paths: Object.freeze([...c.p]),
      issuedAt: c.iat,
      expiresAt: c.exp,
      id: c.j,
    });
  }
}
