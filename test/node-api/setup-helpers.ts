/**
 * A minimal node API for plugin tests: a real fastify instance on 127.0.0.1:0 (plain
 * HTTP), one fixed access key (Bearer secret), TachyonErrors mapped to HTTP statuses with
 * `{ code, message }` as the real application does. The real application (TLS, access
 * keys in the database, bearer sessions) lives in src/node-api/app.ts.
 */
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { TachyonError, type ErrorCode } from '../../src/core/errors.js';
import type { Permission } from '../../src/core/types.js';
import type { AuditSink } from '../../src/audit/index.js';
import { MemoryStorage } from '../../src/storage/index.js';
import type { AccessKeyPrincipal, NodeApiContext, NodeApiPlugin } from '../../src/node-api/context.js';

export const TEST_KEY_ID = 'ak-test';
export const TEST_SECRET = 'test-secret-0123456789';

const STATUS: Partial<Record<ErrorCode, number>> = { USAGE: 400, PATH_INVALID: 400, AUTH_FAILED: 401, PERMISSION: 403, NOT_FOUND: 404, EXISTS: 409, IS_DIRECTORY: 409, DISK_FULL: 507 };

export interface TestKey {
  id: string;
  secret: string;
  storageRoot: string;
  permissions: readonly Permission[];
}

export async function startPluginApp(plugin: NodeApiPlugin, audit: AuditSink, keys: readonly TestKey[]): Promise<{ app: FastifyInstance; url: string }> {
  const app = Fastify({ logger: false });
  const context: NodeApiContext = {
    audit,
    requireAccessKey: (request: FastifyRequest): Promise<AccessKeyPrincipal> => {
      const h = request.headers.authorization ?? '';
      const k = keys.find((x) => h === `Bearer ${x.secret}`);
      if (!k) return Promise.reject(new TachyonError('AUTH_FAILED', 'no or unknown access key'));
      return Promise.resolve({ kind: 'access-key', accessKeyId: k.id, storageRoot: k.storageRoot, permissions: k.permissions, storage: new MemoryStorage() });
    },
    requireAdmin: () => Promise.reject(new TachyonError('PERMISSION', 'no admins here')),
  };
  app.setErrorHandler((err, _request, reply) => {
    if (err instanceof TachyonError) {
      void reply.status(STATUS[err.code] ?? 500).send({ code: err.code, message: err.publicMessage });
      return;
    }
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    void reply.status(status >= 400 && status < 600 ? status : 500).send({ code: status === 413 ? 'USAGE' : status < 500 ? 'USAGE' : 'INTERNAL', message: status === 413 ? 'The request body is too large.' : status < 500 ? 'The request is invalid.' : 'An internal error occurred.' });
  });
  await plugin(app, context);
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, url: address };
}
