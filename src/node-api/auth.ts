/**
 * Authentication of node API calls.
 *
 * - `Authorization: Basic base64(id:secret)` with an access key: argon2id verification on
 *   every such request (slow on purpose; meant for the token exchange and occasional calls).
 * - `Authorization: Bearer tbt_…`: a short-lived token from `POST /auth/token`. Tokens are
 *   32 random bytes; the node keeps only their SHA-256 (in memory), with the key id, the
 *   secret version they were made from and their expiry. A request with one costs a hash
 *   and a map lookup: no argon2 on the hot path. A token dies at its expiry, when its key
 *   is revoked, or when its key is rotated and the secret it was made from is past its
 *   grace period. Keys are re-read from the database at most every `keyRecheckMs` (so a
 *   revocation made by the CLI in another process takes effect within that time; one made
 *   through the API takes effect at once).
 *
 * Every refusal is `AUTH_FAILED` (401) with one public message whatever the reason; the
 * reason goes to `details.reason` for the audit log. An authenticated caller of the wrong
 * kind (an admin key on a file route, an access key on an admin route) is `PERMISSION`.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { systemClock, type Clock } from '../core/clock.js';
import { TachyonError } from '../core/errors.js';
import type { StorageBackend } from '../storage/index.js';
import { AccessKeyRepository, type AccessKey } from './access-keys.js';
import type { AccessKeyPrincipal, NodeAdminPrincipal, Principal } from './context.js';

/** Makes the storage backend of a key's root URL (`file:///…`, `s3://…`). */
export type StorageFactory = (rootUrl: string) => Promise<StorageBackend>;

export const DEFAULT_TOKEN_TTL_SECONDS = 900;
export const MAX_TOKEN_TTL_SECONDS = 12 * 3600;
export const DEFAULT_KEY_RECHECK_MS = 1000;
/** Bearer sessions held at most (the oldest are dropped beyond). */
export const MAX_SESSIONS = 100_000;

const TOKEN_PATTERN = /^tbt_[A-Za-z0-9_-]{43}$/;

interface Session {
  readonly keyId: string;
  readonly version: number;
  readonly expiresAtMs: number;
}

export interface IssuedToken {
  readonly token: string;
  readonly expiresInSeconds: number;
  readonly expiresAt: string;
}

function authFailed(reason: string, extra: Record<string, unknown> = {}): TachyonError {
  return new TachyonError('AUTH_FAILED', `node API authentication refused: ${reason}`, {
    publicMessage: 'Authentication failed.',
    details: { reason, ...extra },
  });
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export interface AuthenticatorOptions {
  readonly keys: AccessKeyRepository;
  readonly storage: StorageFactory;
  readonly clock?: Clock;
  readonly tokenTtlSeconds?: number;
  readonly keyRecheckMs?: number;
}

/** Parsed `Authorization` header (never logged). */
type Credentials = { kind: 'basic'; id: string; secret: string } | { kind: 'bearer'; token: string };

export class Authenticator {
  private readonly clock: Clock;
  private readonly sessions = new Map<string, Session>();
  private readonly keyCache = new Map<string, { key: AccessKey | undefined; fetchedAtMs: number }>();
  private readonly backends = new Map<string, Promise<StorageBackend>>();
  readonly tokenTtlSeconds: number;
  private readonly recheckMs: number;

  constructor(private readonly o: AuthenticatorOptions) {
    this.clock = o.clock ?? systemClock;
    this.tokenTtlSeconds = o.tokenTtlSeconds ?? DEFAULT_TOKEN_TTL_SECONDS;
    this.recheckMs = o.keyRecheckMs ?? DEFAULT_KEY_RECHECK_MS;
  }

  private credentials(request: FastifyRequest): Credentials {
    const h = request.headers.authorization;
    if (typeof h !== 'string' || h === '') throw authFailed('no-credentials');
    const sp = h.indexOf(' ');
    const scheme = (sp < 0 ? h : h.slice(0, sp)).toLowerCase();
    const value = sp < 0 ? '' : h.slice(sp + 1).trim();
    if (scheme === 'bearer') {
      if (!TOKEN_PATTERN.test(value)) throw authFailed('malformed-bearer');
      return { kind: 'bearer', token: value };
    }
    if (scheme === 'basic') {
      if (!/^[A-Za-z0-9+/]{1,400}={0,2}$/.test(value)) throw authFailed('malformed-basic');
      const text = Buffer.from(value, 'base64').toString('utf8');
      const colon = text.indexOf(':');
      if (colon < 1) throw authFailed('malformed-basic');
      return { kind: 'basic', id: text.slice(0, colon), secret: text.slice(colon + 1) };
    }
    throw authFailed('unsupported-scheme');
  }

  /** The key as recently read from the database (at most `keyRecheckMs` old). */
  private async currentKey(id: string): Promise<AccessKey | undefined> {
    const now = this.clock.now();
    const c = this.keyCache.get(id);
    if (c && now - c.fetchedAtMs < this.recheckMs) return c.key;
    const key = await this.o.keys.find(id);
    this.keyCache.set(id, { key, fetchedAtMs: now });
    return key;
  }

  /** Forgets what is cached about a key and drops its bearer tokens (after revoke or rotate). */
  invalidateKey(id: string, o: { dropTokens: boolean }): void {
    this.keyCache.delete(id);
    if (o.dropTokens) for (const [h, s] of this.sessions) if (s.keyId === id) this.sessions.delete(h);
  }

  /** Checks Basic credentials with argon2id; the key and the secret version they match. */
  async verifyBasic(request: FastifyRequest): Promise<{ key: AccessKey; version: number }> {
    const c = this.credentials(request);
    if (c.kind !== 'basic') throw authFailed('basic-required');
    const r = await this.o.keys.verify(c.id, c.secret);
    if (!r.ok) throw authFailed(r.reason, r.key ? { accessKeyId: r.key.id } : {});
    return { key: r.key, version: r.version };
  }

  /** A new bearer token for a key checked by {@link verifyBasic}. */
  issueToken(key: AccessKey, version: number, ttlSeconds?: number): IssuedToken {
    const ttl = Math.min(ttlSeconds ?? this.tokenTtlSeconds, MAX_TOKEN_TTL_SECONDS);
    const now = this.clock.now();
    this.sweep(now);
    const token = `tbt_${randomBytes(32).toString('base64url')}`;
    this.sessions.set(sha256(token), { keyId: key.id, version, expiresAtMs: now + ttl * 1000 });
    return { token, expiresInSeconds: ttl, expiresAt: new Date(now + ttl * 1000).toISOString() };
  }

  private sweep(now: number): void {
    if (this.sessions.size < MAX_SESSIONS) return;
    for (const [h, s] of this.sessions) if (s.expiresAtMs <= now) this.sessions.delete(h);
    // still full: drop the oldest (Map keeps insertion order)
    for (const h of this.sessions.keys()) {
      if (this.sessions.size < MAX_SESSIONS) break;
      this.sessions.delete(h);
    }
  }

  /** Resolves the request's credentials (Basic or Bearer) to a key. */
  async authenticateKey(request: FastifyRequest): Promise<AccessKey> {
    const c = this.credentials(request);
    if (c.kind === 'basic') {
      const r = await this.o.keys.verify(c.id, c.secret);
      if (!r.ok) throw authFailed(r.reason, r.key ? { accessKeyId: r.key.id } : {});
      return r.key;
    }
    const h = sha256(c.token);
    const s = this.sessions.get(h);
    const now = this.clock.now();
    if (!s) throw authFailed('unknown-token');
    if (s.expiresAtMs <= now) {
      this.sessions.delete(h);
      throw authFailed('expired-token', { accessKeyId: s.keyId });
    }
    const key = await this.currentKey(s.keyId);
    if (!key || !AccessKeyRepository.versionValid(key, s.version, now)) {
      this.sessions.delete(h);
      throw authFailed(key?.revokedAt ? 'revoked' : 'rotated', { accessKeyId: s.keyId });
    }
    return key;
  }

  private async backend(root: string): Promise<StorageBackend> {
    let b = this.backends.get(root);
    if (!b) {
      b = this.o.storage(root);
      this.backends.set(root, b);
      b.catch(() => this.backends.delete(root));
    }
    return b;
  }

  async authenticate(request: FastifyRequest): Promise<Principal> {
    const key = await this.authenticateKey(request);
    if (key.kind === 'admin') return Object.freeze({ kind: 'node-admin', name: key.id }) satisfies NodeAdminPrincipal;
    return this.principalOf(key);
  }

  async principalOf(key: AccessKey): Promise<AccessKeyPrincipal> {
    if (key.storageRoot === null) throw new TachyonError('INTERNAL', `access key ${key.id} has no storage root`);
    return Object.freeze({
      kind: 'access-key',
      accessKeyId: key.id,
      storageRoot: key.storageRoot,
      permissions: key.permissions,
      storage: await this.backend(key.storageRoot),
    });
  }

  async requireAccessKey(request: FastifyRequest): Promise<AccessKeyPrincipal> {
    const p = await this.authenticate(request);
    if (p.kind !== 'access-key') {
      throw new TachyonError('PERMISSION', `admin key ${p.name} used on an access-key route`, { publicMessage: 'This operation needs an access key.', details: { permission: 'access-key' } });
    }
    return p;
  }

  async requireAdmin(request: FastifyRequest): Promise<NodeAdminPrincipal> {
    const p = await this.authenticate(request);
    if (p.kind !== 'node-admin') {
      throw new TachyonError('PERMISSION', `access key ${p.accessKeyId} used on an admin route`, { publicMessage: 'This operation needs a node administrator.', details: { permission: 'node-admin' } });
    }
    return p;
  }
}
