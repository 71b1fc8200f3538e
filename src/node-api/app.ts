/**
 * The node API application: fastify over HTTPS (TLS 1.2 and 1.3 only, ECDHE + AEAD
 * suites), security headers on every response, a correlation id per request (a ULID the
 * server makes; a client-sent one is ignored), body limit, schema validation with unknown
 * fields refused, and one error edge: every failure becomes `{ "error": { "code",
 * "message", "correlation_id" } }` with the status of {@link HTTP_STATUS}, and is audited
 * (auth.failure, refusal.permission, refusal.jail or api.error) with the same correlation id.
 *
 * Routes come from plugins ({@link NodeApiPlugin}) that receive the {@link NodeApiContext}.
 * Built in: `GET /info`, `GET /openapi.json`, `POST /auth/token` and the access-key
 * administration routes (access-key-routes.ts).
 */
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { AuditEvent, AuditSink } from '../audit/index.js';
import { refuseBarred, type Defender } from '../defender/index.js';
import { newCorrelationId } from '../core/correlation.js';
import { TachyonError, toTachyonError } from '../core/errors.js';
import type { Authenticator } from './auth.js';
import type { NodeApiContext, NodeApiPlugin, Principal } from './context.js';
import { errorBody, httpStatusOf } from './http-errors.js';
import { apiSchema, OpenApiCollector } from './openapi.js';
import { TLS_CIPHER_STRING, TLS_MIN_VERSION } from './pki.js';

export const DEFAULT_NODE_API_PORT = 9092;
export const DEFAULT_NODE_API_LISTEN = '127.0.0.1';
export const DEFAULT_BODY_LIMIT = 64 * 1024;

/** Headers on every response. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-resource-policy': 'same-origin',
});

/** What `GET /info` says about the node (never a credential or a path). */
export interface NodeInfo {
  readonly version: string;
  /** Storage kinds access keys may be bound to (from the allowed storage roots): 'file', 's3'. */
  readonly storageRootKinds: readonly string[];
  /** Extra capabilities (transfer set-up, monitoring …), added to the built-in ones. */
  readonly capabilities?: readonly string[];
}

export interface NodeApiOptions {
  readonly tls: { readonly cert: string; readonly key: string };
  /** Default 127.0.0.1. */
  readonly listen?: string;
  /** Default 9092; 0 for any free port. */
  readonly port?: number;
  readonly audit: AuditSink;
  readonly authenticator: Authenticator;
  readonly info: NodeInfo;
  readonly plugins?: readonly NodeApiPlugin[];
  /**
   * IP defence: requests from a blocked or not allowed address are refused with 403
   * before anything else; failed authentications are reported to it.
   */
  readonly defender?: Defender;
  /** Largest request body in bytes. Default 64 KiB. */
  readonly bodyLimit?: number;
}

export interface NodeApi {
  readonly app: FastifyInstance;
  /** Starts listening; resolves with the bound address and port. */
  listen(): Promise<{ address: string; port: number }>;
  /** The OpenAPI document of every registered route. */
  openApi(): Record<string, unknown>;
  close(): Promise<void>;
}

/** Printable, bounded text from a request for messages. */
function clip(s: string, n = 64): string {
  // eslint-disable-next-line no-control-regex -- control characters are replaced
  return s.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, n);
}

/** Translates fastify's own errors (parsing, validation, limits) into catalogue errors. */
function translateFrameworkError(err: FastifyError): TachyonError {
  if (err.validation) {
    const v = err.validation[0];
    const where = err.validationContext ?? 'request';
    let what = v?.message ?? 'is invalid';
    const extra = (v?.params as { additionalProperty?: unknown } | undefined)?.additionalProperty;
    if (typeof extra === 'string') what = `has an unknown field '${clip(extra)}'`;
    const field = `${where}${v?.instancePath ? v.instancePath.replace(/\//g, '.') : ''}`;
    return new TachyonError('USAGE', `validation: ${field} ${what}`, { publicMessage: `Invalid request: ${clip(field, 100)} ${clip(what, 120)}.`, details: { reason: 'validation' } });
  }
  const status = err.statusCode ?? 500;
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || status === 413) return new TachyonError('TOO_LARGE', err.message, { details: { reason: 'body-too-large' } });
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || status === 415) {
    return new TachyonError('USAGE', err.message, { publicMessage: 'Unsupported content type: send application/json.', details: { reason: 'media-type' } });
  }
  if (status >= 400 && status < 500) {
    const json = typeof err.code === 'string' && err.code.startsWith('FST_ERR_CTP') ? 'The request body is not valid JSON.' : 'The request is malformed.';
    return new TachyonError('USAGE', err.message, { publicMessage: json, details: { reason: err.code ?? 'bad-request' } });
  }
  return toTachyonError(err);
}

/**
 * Builds the node API (not yet listening).
 */
export async function createNodeApi(o: NodeApiOptions): Promise<NodeApi> {
  const principals = new WeakMap<FastifyRequest, Principal>();
  const openapi = new OpenApiCollector();
  const app = Fastify({
    https: {
      cert: o.tls.cert,
      key: o.tls.key,
      minVersion: TLS_MIN_VERSION,
      maxVersion: 'TLSv1.3',
      ciphers: TLS_CIPHER_STRING,
      honorCipherOrder: true,
      ecdhCurve: 'X25519:prime256v1:secp384r1',
    },
    logger: false,
    bodyLimit: o.bodyLimit ?? DEFAULT_BODY_LIMIT,
    genReqId: () => newCorrelationId(),
    requestIdHeader: false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
    connectionTimeout: 60_000,
    requestTimeout: 30_000,
    keepAliveTimeout: 30_000,
    routerOptions: { maxParamLength: 200 },
    ajv: { customOptions: { removeAdditional: false, allErrors: false, coerceTypes: 'array', useDefaults: true } },
  });

  app.addHook('onRoute', (route) => openapi.add(route.method, route.url, route.schema));

  app.addHook('onRequest', async (request, reply) => {
    reply.headers(SECURITY_HEADERS);
    reply.header('x-correlation-id', request.id);
    if (o.defender !== undefined) refuseBarred(o.defender, request.ip);
  });

  const audit = (request: FastifyRequest, event: AuditEvent): void => {
    try {
      o.audit.record({ ...event, correlationId: request.id });
    } catch {
      // an audit sink that fails must not turn a refusal into something else
    }
  };

  const peer = (request: FastifyRequest): { clientAddress: string; clientPort?: number } => ({
    clientAddress: request.ip,
    ...(request.socket.remotePort !== undefined ? { clientPort: request.socket.remotePort } : {}),
  });

  const principalName = (p: Principal | undefined): string | undefined => (p === undefined ? undefined : p.kind === 'access-key' ? p.accessKeyId : `admin:${p.name}`);

  const auditError = (request: FastifyRequest, err: TachyonError, status: number): void => {
    const route = request.routeOptions.url ?? '(no route)';
    const principal = principalName(principals.get(request));
    const reason = typeof err.details?.reason === 'string' ? err.details.reason : undefined;
    const base = peer(request);
    if (err.code === 'PERMISSION' && (reason === 'address-blocked' || reason === 'address-not-allowed')) {
      audit(request, { type: 'refusal.address', component: 'api', fields: { ...base, reason: reason === 'address-blocked' ? 'blocked' : 'not-allowed', service: 'node-api' } });
    } else if (err.code === 'AUTH_FAILED') {
      if (reason !== 'no-credentials') o.defender?.report(request.ip, 'auth-failed');
      const keyId = typeof err.details?.accessKeyId === 'string' ? err.details.accessKeyId : '(unknown)';
      audit(request, { type: 'auth.failure', component: 'api', fields: { ...base, user: keyId, method: String(err.details?.method ?? request.headers.authorization?.split(' ')[0]?.toLowerCase() ?? 'none').slice(0, 16), reason: reason ?? 'refused' } });
    } else if (err.code === 'PERMISSION' && typeof err.details?.permission === 'string') {
      audit(request, { type: 'refusal.permission', component: 'api', fields: { ...base, user: principal ?? '(unknown)', permission: err.details.permission, op: `${request.method} ${route}`, ...(typeof err.details.path === 'string' ? { path: err.details.path } : {}) } });
    } else if (err.code === 'PATH_INVALID') {
      audit(request, { type: 'refusal.jail', component: 'api', fields: { ...base, user: principal ?? '(unknown)', path: typeof err.details?.path === 'string' ? err.details.path : '(request)', reason: reason ?? 'invalid', op: `${request.method} ${route}` } });
    } else {
      audit(request, { type: 'api.error', component: 'api', severity: status >= 500 ? 'error' : 'warning', fields: { ...base, method: request.method, route, status, code: err.code, ...(principal ? { principal } : {}), ...(reason ? { reason } : {}) } });
    }
  };

  const sendError = (request: FastifyRequest, reply: FastifyReply, err: TachyonError): FastifyReply => {
    const status = httpStatusOf(err.code);
    auditError(request, err, status);
    if (status === 401) reply.header('www-authenticate', 'Basic realm="tachyon-node", charset="UTF-8", Bearer realm="tachyon-node"');
    if (status === 503) reply.header('retry-after', '1');
    return reply.code(status).type('application/json; charset=utf-8').send(errorBody(err, request.id));
  };

  app.setErrorHandler((error: FastifyError | TachyonError | Error, request, reply) => {
    const err = error instanceof TachyonError ? error : 'statusCode' in error || 'validation' in error || 'code' in error ? translateFrameworkError(error as FastifyError) : toTachyonError(error);
    return sendError(request, reply, err);
  });

  app.setNotFoundHandler((request, reply) => sendError(request, reply, new TachyonError('NOT_FOUND', `no route ${request.method} ${clip(request.url, 200)}`, { publicMessage: 'No such endpoint.', details: { reason: 'no-route' } })));

  const authenticate = async (request: FastifyRequest): Promise<Principal> => {
    const p = await o.authenticator.authenticate(request);
    principals.set(request, p);
    return p;
  };
  const context: NodeApiContext = {
    audit: o.audit,
    requireAccessKey: async (request) => {
      const p = await o.authenticator.requireAccessKey(request);
      principals.set(request, p);
      return p;
    },
    requireAdmin: async (request) => {
      const p = await o.authenticator.requireAdmin(request);
      principals.set(request, p);
      return p;
    },
    authenticate,
  };

  // --- built-in routes ---------------------------------------------------------------
  const capabilities = [...new Set(['access_keys', 'bearer_tokens', 'files', ...(o.info.capabilities ?? [])])].sort();
  app.get(
    '/info',
    {
      schema: apiSchema({
        summary: 'Describe the node',
        tags: ['node'],
        auth: 'any',
        response: {
          200: {
            type: 'object',
            properties: {
              product: { type: 'string' },
              version: { type: 'string' },
              api_version: { type: 'integer' },
              capabilities: { type: 'array', items: { type: 'string' } },
              storage_root_kinds: { type: 'array', items: { type: 'string' } },
              caller: {
                type: 'object',
                properties: { kind: { type: 'string' }, id: { type: 'string' }, permissions: { type: 'array', items: { type: 'string' } }, storage_kind: { type: 'string' } },
              },
            },
          },
        },
      }),
    },
    async (request) => {
      const p = await authenticate(request);
      return {
        product: 'tachyon',
        version: o.info.version,
        api_version: 1,
        capabilities,
        storage_root_kinds: [...o.info.storageRootKinds],
        caller: p.kind === 'access-key' ? { kind: 'access-key', id: p.accessKeyId, permissions: [...p.permissions], storage_kind: p.storageRoot.split(':')[0] } : { kind: 'node-admin', id: p.name },
      };
    },
  );

  for (const plugin of o.plugins ?? []) await plugin(app, context);

  // served last so that it describes every route, itself included
  app.get('/openapi.json', { schema: apiSchema({ summary: 'This API as an OpenAPI 3 document', tags: ['node'], auth: 'none' }) }, async (_request, reply) => {
    return reply.type('application/json; charset=utf-8').send(JSON.stringify(document()));
  });
  let cached: Record<string, unknown> | undefined;
  const document = (): Record<string, unknown> => (cached ??= openapi.document({ version: o.info.version }));

  await app.ready();
  return {
    app,
    openApi: document,
    async listen() {
      await app.listen({ host: o.listen ?? DEFAULT_NODE_API_LISTEN, port: o.port ?? DEFAULT_NODE_API_PORT });
      const a = app.server.address() as AddressInfo;
      return { address: a.address, port: a.port };
    },
    async close() {
      await app.close();
    },
  };
}
