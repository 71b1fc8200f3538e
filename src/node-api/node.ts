/**
 * The node API's composition root: access-key repository, authenticator, storage factory,
 * the built-in plugins (access keys, files) plus any others, and the HTTPS application.
 * `tachyon serve --config` (with a `nodeApi` section) and `tachyon start` call
 * {@link startNodeApiServer}.
 */
import type { Defender } from '../defender/index.js';
import type { AuditSink } from '../audit/index.js';
import type { Clock } from '../core/clock.js';
import type { Database } from '../db/database.js';
import type { RootPattern } from '../server/users/storage-roots.js';
import { accessKeyRoutes } from './access-key-routes.js';
import { AccessKeyRepository, type HashCost } from './access-keys.js';
import { createNodeApi, DEFAULT_NODE_API_LISTEN, DEFAULT_NODE_API_PORT, type NodeApi } from './app.js';
import { TachyonError } from '../core/errors.js';
import { Authenticator, type StorageFactory } from './auth.js';
import type { NodeApiPlugin } from './context.js';
import { filesRoutes } from './files.js';
import { s3Opener, storageFactory, type StorageFactoryOptions } from './storage-factory.js';
import type { S3Backends } from '../storage/s3-backends.js';

export const NODE_API_VERSION = '0.1.0';

export interface NodeApiServerOptions {
  readonly database: Database;
  readonly allowedRoots: readonly RootPattern[];
  readonly audit: AuditSink;
  readonly tls: { readonly cert: string; readonly key: string };
  readonly listen?: string;
  readonly port?: number;
  /** Plugins beyond the built-in ones (transfer set-up, monitoring …). */
  readonly plugins?: readonly NodeApiPlugin[];
  /** IP defence (blocked and not allowed addresses get 403; failed authentications are reported). */
  readonly defender?: Defender;
  readonly capabilities?: readonly string[];
  readonly storage?: StorageFactory;
  /** Backends of s3:// roots (owned by the caller, who closes them); without it, access keys with s3:// roots are refused. Ignored when `storage` is given. */
  readonly s3?: S3Backends;
  /** Server-side encryption at rest of the roots under these patterns. Ignored when `storage` is given. */
  readonly encryption?: StorageFactoryOptions['encryption'];
  readonly clock?: Clock;
  readonly hashCost?: HashCost;
  readonly tokenTtlSeconds?: number;
  readonly keyRecheckMs?: number;
  readonly bodyLimit?: number;
  /** argon2id verifications at once and waiting (see AccessKeyRepositoryOptions). */
  readonly maxConcurrentVerifications?: number;
  readonly maxQueuedVerifications?: number;
}

export interface NodeApiServer {
  readonly api: NodeApi;
  readonly keys: AccessKeyRepository;
  readonly authenticator: Authenticator;
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Builds the node API without listening (tests, the OpenAPI generator). */
export async function buildNodeApi(o: NodeApiServerOptions): Promise<Omit<NodeApiServer, 'address' | 'port' | 'close'>> {
  const keys = new AccessKeyRepository(o.database, {
    allowedRoots: o.allowedRoots,
    ...(o.clock ? { clock: o.clock } : {}),
    ...(o.hashCost ? { hashCost: o.hashCost } : {}),
    ...(o.maxConcurrentVerifications !== undefined ? { maxConcurrentVerifications: o.maxConcurrentVerifications } : {}),
    ...(o.maxQueuedVerifications !== undefined ? { maxQueuedVerifications: o.maxQueuedVerifications } : {}),
  });
  const authenticator = new Authenticator({
    keys,
    storage: o.storage ?? storageFactory({ ...(o.s3 ? { s3: s3Opener(o.s3) } : {}), ...(o.encryption ? { encryption: o.encryption } : {}) }),
    ...(o.clock ? { clock: o.clock } : {}),
    ...(o.tokenTtlSeconds !== undefined ? { tokenTtlSeconds: o.tokenTtlSeconds } : {}),
    ...(o.keyRecheckMs !== undefined ? { keyRecheckMs: o.keyRecheckMs } : {}),
  });
  const api = await createNodeApi({
    tls: o.tls,
    ...(o.listen !== undefined ? { listen: o.listen } : {}),
    ...(o.port !== undefined ? { port: o.port } : {}),
    ...(o.bodyLimit !== undefined ? { bodyLimit: o.bodyLimit } : {}),
    ...(o.defender !== undefined ? { defender: o.defender } : {}),
    audit: o.audit,
    authenticator,
    info: { version: NODE_API_VERSION, storageRootKinds: [...new Set(o.allowedRoots.map((r) => r.scheme))].sort(), ...(o.capabilities ? { capabilities: o.capabilities } : {}) },
    plugins: [accessKeyRoutes({ keys, authenticator }), filesRoutes(), ...(o.plugins ?? [])],
  });
  return { api, keys, authenticator };
}

/** Builds and starts the node API. */
export async function startNodeApiServer(o: NodeApiServerOptions): Promise<NodeApiServer> {
  const built = await buildNodeApi(o);
  let bound: { address: string; port: number };
  try {
    bound = await built.api.listen();
  } catch (err) {
    await built.api.close();
    const code = (err as NodeJS.ErrnoException).code;
    const where = `${o.listen ?? DEFAULT_NODE_API_LISTEN}:${o.port ?? DEFAULT_NODE_API_PORT}`;
    if (code === 'EADDRINUSE') throw new TachyonError('CONFIG', `the node API cannot listen on ${where}: the port is in use (choose another: --api-port, or nodeApi.port in the configuration)`, { cause: err });
    if (code === 'EACCES' || code === 'EADDRNOTAVAIL') throw new TachyonError('CONFIG', `the node API cannot listen on ${where}: ${code}`, { cause: err });
    throw err;
  }
  return { ...built, address: bound.address, port: bound.port, close: () => built.api.close() };
}

/**
 * The OpenAPI document of the node API with the built-in routes and `plugins`, built on
 * throwaway TLS material and an in-memory database (for docs/node-api.openapi.json: see
 * scripts/node-api-openapi.mjs and its test).
 */
export async function openApiDocument(extra: readonly NodeApiPlugin[] = []): Promise<Record<string, unknown>> {
  const { randomBytes } = await import('node:crypto');
  const { systemClock } = await import('../core/clock.js');
  const { TransferTokenCodec, tokenKeyOf } = await import('../server/transfer-token.js');
  const { transferSetupPlugin } = await import('./transfer-setup.js');
  const { opsRoutes } = await import('./ops.js');
  const { TransferMonitor } = await import('../server/monitor.js');
  const { defenderRoutes } = await import('./defender-routes.js');
  const { disabledDefender } = await import('../defender/index.js');
  // every route group the node can serve (transfer set-up with a throwaway key, monitoring of an idle monitor)
  const plugins = [
    opsRoutes({ monitor: new TransferMonitor() }),
    transferSetupPlugin({
      codec: new TransferTokenCodec({ nodeId: 'openapi', keys: { current: tokenKeyOf(randomBytes(32)) }, clock: systemClock }),
      host: 'node.example',
      sshPort: 33001,
      udpPort: 33001,
      user: 'xfer',
      hostKeyFingerprint: 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
    }),
    defenderRoutes(disabledDefender),
    ...extra,
  ];
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const path = await import('node:path');
  const { MemoryAuditSink } = await import('../audit/index.js');
  const { openDatabase } = await import('../db/database.js');
  const { initCa, issueServerCert, loadServerTls } = await import('./pki.js');
  const { parseRootPattern } = await import('../server/users/storage-roots.js');
  const dir = await mkdtemp(path.join(tmpdir(), 'tachyon-openapi-'));
  const database = await openDatabase({ url: 'sqlite::memory:' });
  try {
    await initCa({ dir: path.join(dir, 'ca') });
    const c = await issueServerCert({ caDir: path.join(dir, 'ca'), dnsNames: ['localhost'], outPrefix: path.join(dir, 'node') });
    const built = await buildNodeApi({
      database,
      allowedRoots: [parseRootPattern('file:///srv/*'), parseRootPattern('s3://*')],
      audit: new MemoryAuditSink(),
      tls: loadServerTls({ certFile: c.certFile, keyFile: c.keyFile }),
      plugins,
    });
    const doc = built.api.openApi();
    await built.api.close();
    return doc;
  } finally {
    await database.close();
    await rm(dir, { recursive: true, force: true });
  }
}
