/**
 * A real node API for tests: a CA and a server certificate (localhost, 127.0.0.1) made by
 * the PKI module in a temporary directory, a SQLite database file, a hash-chained audit
 * log file, an admin key and the HTTPS server on 127.0.0.1 port 0; requests go through
 * node:https with an Agent that trusts only that CA.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpsRequest, type Agent } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { FileAuditSink } from '../../src/audit/index.js';
import { openDatabase, type Database } from '../../src/db/database.js';
import type { NodeApiPlugin } from '../../src/node-api/context.js';
import { startNodeApiServer, type NodeApiServer } from '../../src/node-api/node.js';
import { clientAgent, initCa, issueServerCert, loadServerTls } from '../../src/node-api/pki.js';
import { parseRootPattern } from '../../src/server/users/storage-roots.js';
import type { S3Backends } from '../../src/storage/s3-backends.js';

/** Cheap argon2id for tests (the production default is 19 MiB, 2 passes). */
export const TEST_HASH_COST = { memoryCost: 4096, timeCost: 1, parallelism: 1 } as const;

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: unknown;
}

export interface TestNode {
  work: string;
  caDir: string;
  caFile: string;
  files: string;
  auditFile: string;
  server: NodeApiServer;
  database: Database;
  agent: Agent;
  adminId: string;
  adminSecret: string;
  /** Authorization header of the admin key. */
  admin: string;
  request(method: string, url: string, o?: { body?: unknown; rawBody?: string | Buffer; auth?: string; headers?: Record<string, string> }): Promise<Response>;
  /** Creates an access key on `root` (relative to `files`) with permissions; returns id, secret, Basic header. */
  createKey(root: string, permissions: string[]): Promise<{ id: string; secret: string; basic: string }>;
  auditText(): string;
  auditRecords(): { type: string; correlationId?: string; fields: Record<string, unknown> }[];
  close(): Promise<void>;
}

export const basic = (id: string, secret: string): string => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;

export function httpsCall(
  agent: Agent,
  port: number,
  method: string,
  url: string,
  o: { body?: unknown; rawBody?: string | Buffer; auth?: string; headers?: Record<string, string>; host?: string } = {},
): Promise<Response> {
  return new Promise((resolve, reject) => {
    const payload = o.rawBody !== undefined ? o.rawBody : o.body !== undefined ? JSON.stringify(o.body) : undefined;
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    if (payload !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json';
    if (o.auth !== undefined) headers.authorization = o.auth;
    const req = httpsRequest({ host: o.host ?? '127.0.0.1', port, method, path: url, agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = text === '' ? undefined : JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (payload !== undefined) req.end(payload);
    else req.end();
  });
}

/** A cookie-keeping HTTPS client of the web platform (the way a browser holds the session cookie and CSRF token). */
export class WebClient {
  cookie: string | undefined;
  csrf: string | undefined;
  constructor(
    readonly agent: Agent,
    /** the server's port, or a getter (a server restarted on another port) */
    readonly port: number | (() => number),
  ) {}

  async req(method: string, url: string, body?: unknown): Promise<Response & { body: Record<string, unknown> }> {
    const headers: Record<string, string> = {};
    if (this.cookie !== undefined) headers['cookie'] = this.cookie;
    if (this.csrf !== undefined) headers['x-csrf-token'] = this.csrf;
    const port = typeof this.port === 'number' ? this.port : this.port();
    const r = await httpsCall(this.agent, port, method, url, { ...(body !== undefined ? { body } : {}), headers });
    const set = r.headers['set-cookie'];
    const first = Array.isArray(set) ? set[0] : set;
    const m = first !== undefined ? /^__Host-tachyon-session=([^;]*)/.exec(first) : null;
    if (m) this.cookie = m[1] === '' ? undefined : `__Host-tachyon-session=${m[1]}`;
    const json = (r.json ?? {}) as Record<string, unknown>;
    if (typeof json['csrfToken'] === 'string') this.csrf = json['csrfToken'];
    return { ...r, body: json };
  }
}

export async function makePki(work: string): Promise<{ caDir: string; caFile: string; certFile: string; keyFile: string }> {
  const caDir = path.join(work, 'ca');
  const ca = await initCa({ dir: caDir });
  const cert = await issueServerCert({ caDir, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], outPrefix: path.join(work, 'tls', 'node') });
  return { caDir, caFile: ca.certFile, certFile: cert.certFile, keyFile: cert.keyFile };
}

export async function startTestNode(
  o: {
    plugins?: NodeApiPlugin[];
    tokenTtlSeconds?: number;
    keyRecheckMs?: number;
    bodyLimit?: number;
    maxConcurrentVerifications?: number;
    maxQueuedVerifications?: number;
    /** more allowed root patterns (e.g. `s3://bucket/keys/*`) */
    extraRoots?: string[];
    /** backends of s3:// roots */
    s3?: S3Backends;
  } = {},
): Promise<TestNode> {
  const work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-nodeapi-'));
  const files = path.join(work, 'files');
  mkdirSync(files, { recursive: true });
  const pki = await makePki(work);
  const tls = loadServerTls({ certFile: pki.certFile, keyFile: pki.keyFile });
  const database = await openDatabase({ url: `sqlite://${path.join(work, 'tachyon.db')}` });
  const auditFile = path.join(work, 'audit.log');
  const audit = new FileAuditSink(auditFile);
  const server = await startNodeApiServer({
    database,
    allowedRoots: [parseRootPattern(`file://${files}/*`), ...(o.extraRoots ?? []).map((r) => parseRootPattern(r))],
    ...(o.s3 ? { s3: o.s3 } : {}),
    audit,
    tls,
    listen: '127.0.0.1',
    port: 0,
    hashCost: TEST_HASH_COST,
    ...(o.plugins ? { plugins: o.plugins } : {}),
    ...(o.tokenTtlSeconds !== undefined ? { tokenTtlSeconds: o.tokenTtlSeconds } : {}),
    ...(o.keyRecheckMs !== undefined ? { keyRecheckMs: o.keyRecheckMs } : {}),
    ...(o.bodyLimit !== undefined ? { bodyLimit: o.bodyLimit } : {}),
    ...(o.maxConcurrentVerifications !== undefined ? { maxConcurrentVerifications: o.maxConcurrentVerifications } : {}),
    ...(o.maxQueuedVerifications !== undefined ? { maxQueuedVerifications: o.maxQueuedVerifications } : {}),
  });
  const adminKey = await server.keys.create({ kind: 'admin', description: 'test admin' });
  const agent = clientAgent({ caFile: pki.caFile });
  const admin = basic(adminKey.key.id, adminKey.secret);
  const node: TestNode = {
    work,
    caDir: pki.caDir,
    caFile: pki.caFile,
    files,
    auditFile,
    server,
    database,
    agent,
    adminId: adminKey.key.id,
    adminSecret: adminKey.secret,
    admin,
    request: (method, url, ro = {}) => httpsCall(agent, server.port, method, url, ro),
    async createKey(root, permissions) {
      mkdirSync(path.join(files, root), { recursive: true });
      const r = await node.request('POST', '/access_keys', { auth: admin, body: { storage_root: `file://${path.join(files, root)}`, permissions } });
      if (r.status !== 201) throw new Error(`createKey: ${r.status} ${r.text}`);
      const j = r.json as { id: string; secret: string };
      return { id: j.id, secret: j.secret, basic: basic(j.id, j.secret) };
    },
    auditText: () => readFileSync(auditFile, 'utf8'),
    auditRecords: () =>
      readFileSync(auditFile, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as { type: string; correlationId?: string; fields: Record<string, unknown> }),
    async close() {
      agent.destroy();
      await server.close();
      await database.close();
      await audit.close();
      rmSync(work, { recursive: true, force: true });
    },
  };
  return node;
}
