/**
 * A real platform for tests: a SQLite file through openDatabase, the hash-chained file
 * audit sink, a virtual clock, fast argon2id parameters, the shipped common-password
 * list, and the HTTP application on a real loopback port (plain HTTP; cookies stay Secure).
 */
import type { Defender } from '../../src/defender/index.js';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { request, type Agent } from 'node:http';
import { FileAuditSink, type AuditEvent, type AuditSink } from '../../src/audit/index.js';
import { DatabaseAuditSink } from '../../src/platform/audit-store.js';
import { TenantAllowLists } from '../../src/platform/allow-list-store.js';
import { openDatabase, type Database } from '../../src/db/database.js';
import { createPlatformApp, type PlatformApp } from '../../src/platform/app.js';
import type { Role } from '../../src/platform/model.js';
import { argon2idHasher } from '../../src/platform/passwords.js';
import { IdentityService } from '../../src/platform/service.js';
import { AesGcmSecretBox, MfaService } from '../../src/platform/mfa/index.js';
import { DatabaseSsoConfigSource, type SsoServices } from '../../src/platform/sso/index.js';
import { SimClock } from '../../src/testkit/simclock.js';

/** Cheap argon2id parameters for tests (the real defaults cost ~50 ms a hash). */
export const TEST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 } as const;

export const T0 = Date.parse('2026-01-05T09:00:00.000Z');

export interface Platform {
  readonly dir: string;
  readonly db: Database;
  readonly audit: FileAuditSink;
  readonly auditFile: string;
  /** The same records in the database (what the audit views read). */
  readonly dbAudit: DatabaseAuditSink;
  readonly clock: SimClock;
  readonly identity: IdentityService;
  /** Set when started with `mfa: true` (then local administrators must have TOTP). */
  readonly mfa: MfaService | undefined;
  readonly web: PlatformApp;
  /** The `/api/v1/sso` store (the table, secrets sealed under a random key). */
  readonly ssoConfigs: DatabaseSsoConfigSource;
  readonly base: string;
  close(): Promise<void>;
}

/** PostgreSQL for the suites that also run there (CI sets it; they skip without it). */
export const PG_URL = process.env['TACHYON_TEST_PG_URL'];

/** Records every event in two sinks (the file the tests read, and the database the audit views read). */
export class TeeAuditSink implements AuditSink {
  constructor(
    private readonly first: AuditSink,
    private readonly second: AuditSink,
  ) {}

  record(event: AuditEvent): string {
    const id = this.first.record(event);
    this.second.record(event);
    return id;
  }

  async close(): Promise<void> {
    await this.first.close();
    await this.second.close();
  }
}

/** Starts a platform on a fresh SQLite file, or on `url` (PostgreSQL: use unique tenant slugs, the database outlives the test). */
export async function startPlatform(options: { url?: string; mfa?: boolean; sso?: SsoServices; defender?: (db: Database, clock: SimClock) => Promise<Defender> } = {}): Promise<Platform> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-platform-'));
  const db = await openDatabase({ url: options.url ?? `sqlite://${path.join(dir, 'platform.db')}` });
  const clock = new SimClock({ startMs: T0 });
  const auditFile = path.join(dir, 'audit.log');
  const fileAudit = new FileAuditSink(auditFile, { clock, fsync: 'never' });
  const dbAudit = await DatabaseAuditSink.open(db, { clock });
  const audit = new TeeAuditSink(fileAudit, dbAudit);
  const mfa = options.mfa === true ? new MfaService({ database: db, box: AesGcmSecretBox.random(), audit, clock }) : undefined;
  const ssoConfigs = new DatabaseSsoConfigSource({ database: db, box: AesGcmSecretBox.random(), clock });
  const defender = options.defender ? await options.defender(db, clock) : undefined;
  const allowLists = new TenantAllowLists(db, clock, defender);
  const identity = new IdentityService({
    database: db,
    audit,
    clock,
    hasher: argon2idHasher(TEST_ARGON2),
    addressGate: allowLists,
    ssoConfigs,
    ...(mfa ? { mfa } : {}),
    ...(options.sso ? { sso: options.sso } : {}),
  });
  const web = createPlatformApp({ identity, insecureHttp: true, auditLog: dbAudit, allowLists, now: () => clock.now(), ...(defender ? { defender } : {}) });
  await web.app.listen({ host: '127.0.0.1', port: 0 });
  const port = (web.app.server.address() as AddressInfo).port;
  return {
    dir,
    db,
    audit: fileAudit,
    auditFile,
    dbAudit,
    clock,
    identity,
    mfa,
    web,
    ssoConfigs,
    base: `http://127.0.0.1:${port}`,
    async close() {
      await web.app.close();
      await defender?.close();
      await fileAudit.close();
      await dbAudit.close();
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The error body every refusal has (the node API's shape). */
export interface ErrorBody {
  code: string;
  message: string;
  correlation_id: string;
}

export interface Res {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
  /** `body.error` of an error answer. */
  error: ErrorBody | undefined;
  text: string;
}

/** An answer read as text; `status` 0: the connection was closed without one (a blocked address's new connection ends at accept). */
export interface RawRes {
  status: number;
  body: string;
}

/** POSTs JSON over plain HTTP from a given local address (127/8 all routes to lo), optionally through `agent`. */
export function postFrom(base: string, path: string, body: unknown, localAddress: string, agent?: Agent): Promise<RawRes> {
  const url = new URL(path, base);
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', localAddress, ...(agent ? { agent } : {}), headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? resolve({ status: 0, body: '' }) : reject(err)));
    req.end(data);
  });
}

/** A minimal cookie-keeping client, the way a browser holds the session cookie. */
export class Client {
  cookie: string | undefined;
  csrf: string | undefined;

  constructor(readonly base: string) {}

  async req(method: string, url: string, body?: unknown, opts: { csrf?: string | null; headers?: Record<string, string> } = {}): Promise<Res> {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json';
    if (this.cookie !== undefined) headers['cookie'] = this.cookie;
    const csrf = opts.csrf === undefined ? this.csrf : opts.csrf;
    if (csrf !== null && csrf !== undefined) headers['x-csrf-token'] = csrf;
    const r = await fetch(this.base + url, {
      method,
      headers,
      ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    });
    const setCookie = r.headers.get('set-cookie');
    if (setCookie !== null) {
      const m = /^__Host-tachyon-session=([^;]*)/.exec(setCookie);
      if (m) this.cookie = m[1] === '' ? undefined : `__Host-tachyon-session=${m[1]}`;
    }
    const text = await r.text();
    let parsed: Record<string, unknown> = {};
    if (text !== '' && /json/.test(r.headers.get('content-type') ?? '') && !/ndjson/.test(r.headers.get('content-type') ?? '')) parsed = JSON.parse(text) as Record<string, unknown>;
    return { status: r.status, headers: r.headers, body: parsed, error: parsed['error'] as ErrorBody | undefined, text };
  }

  async signIn(tenant: string, username: string, password: string): Promise<Res> {
    const r = await this.req('POST', '/api/v1/auth/signin', { tenant, username, password });
    if (r.status === 200) this.csrf = r.body['csrfToken'] as string;
    return r;
  }
}

export const ADMIN_PW = 'violet-harbour-engine-47';
export const USER_PW = 'quiet lantern over 9 hills';

export interface SeededTenant {
  readonly id: string;
  readonly slug: string;
  /** user ids by role name (one user holding exactly that role), password USER_PW; admin has ADMIN_PW. */
  readonly users: Record<Role, string>;
}

/** A tenant with one user per role (`admin`, `member1`, `auditor1`). */
export async function seedTenant(p: Platform, slug: string): Promise<SeededTenant> {
  const t = await p.identity.createTenant(slug, `${slug} Ltd`);
  const admin = await p.identity.provisionUser(t.id, { username: 'admin', roles: ['tenant_admin'], password: ADMIN_PW });
  const member = await p.identity.provisionUser(t.id, { username: 'member1', roles: ['member'], password: USER_PW });
  const auditor = await p.identity.provisionUser(t.id, { username: 'auditor1', roles: ['auditor'], password: USER_PW });
  return { id: t.id, slug, users: { tenant_admin: admin.id, member: member.id, auditor: auditor.id } };
}

export async function signedIn(p: Platform, tenant: string, username: string, password: string): Promise<Client> {
  const c = new Client(p.base);
  const r = await c.signIn(tenant, username, password);
  assert.equal(r.status, 200, `sign-in of ${username}@${tenant}: ${r.text}`);
  return c;
}
