/**
 * The OpenAPI 3 description of the node API, generated from the route schemas as routes
 * are registered (so it cannot drift from what the server validates). The committed copy,
 * docs/node-api.openapi.json, is checked against it by test/node-api/openapi.test.ts;
 * regenerate it with `node scripts/node-api-openapi.mjs` after changing a route.
 */
import type { FastifySchema } from 'fastify';
import { ERROR_SCHEMA } from './http-errors.js';

/** A route schema with the OpenAPI annotations fastify ignores. */
export interface ApiRouteSchema extends FastifySchema {
  summary?: string;
  description?: string;
  tags?: readonly string[];
  /** Which credentials the route takes: 'key' (Basic or bearer access key), 'basic' only, 'admin', or none. */
  auth?: 'key' | 'basic' | 'admin' | 'any' | 'none';
}

/** Marks a route schema with its OpenAPI annotations (typed for fastify). */
export function apiSchema(s: ApiRouteSchema): FastifySchema {
  return s;
}

interface RouteRecord {
  method: string;
  url: string;
  schema: ApiRouteSchema | undefined;
}

type Json = Record<string, unknown>;

function toParameters(schema: unknown, where: 'query' | 'path'): Json[] {
  const s = schema as { properties?: Record<string, Json>; required?: string[] } | undefined;
  if (!s?.properties) return [];
  return Object.entries(s.properties).map(([name, p]) => ({
    name,
    in: where,
    required: where === 'path' || (s.required ?? []).includes(name),
    schema: p,
    ...(typeof p.description === 'string' ? { description: p.description } : {}),
  }));
}

const SECURITY: Record<string, Json[]> = {
  key: [{ basicAuth: [] }, { bearerAuth: [] }],
  any: [{ basicAuth: [] }, { bearerAuth: [] }],
  admin: [{ basicAuth: [] }, { bearerAuth: [] }],
  basic: [{ basicAuth: [] }],
  none: [],
};

/** Collects routes (fastify's onRoute hook) and renders the document. */
export class OpenApiCollector {
  private readonly routes: RouteRecord[] = [];

  add(method: string | readonly string[], url: string, schema: unknown): void {
    for (const m of Array.isArray(method) ? method : [method]) {
      if (m === 'HEAD') continue;
      this.routes.push({ method: String(m).toLowerCase(), url, schema: schema as ApiRouteSchema | undefined });
    }
  }

  document(info: { version: string }): Json {
    const paths: Record<string, Record<string, Json>> = {};
    const sorted = [...this.routes].sort((a, b) => (a.url === b.url ? a.method.localeCompare(b.method) : a.url.localeCompare(b.url)));
    for (const r of sorted) {
      const url = r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
      const s = r.schema ?? {};
      const responses: Json = {};
      const resp = (s.response ?? {}) as Record<string, unknown>;
      for (const [status, body] of Object.entries(resp)) {
        const b = body as Json;
        responses[status] =
          Object.keys(b).length === 0 || b.type === 'null'
            ? { description: (b.description as string | undefined) ?? 'No content' }
            : { description: (b.description as string | undefined) ?? 'OK', content: { 'application/json': { schema: b } } };
      }
      responses.default = { description: 'An error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
      const op: Json = {
        operationId: `${r.method}${url.replace(/[{}]/g, '').replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
        ...(s.summary ? { summary: s.summary } : {}),
        ...(s.description ? { description: s.description } : {}),
        ...(s.tags ? { tags: s.tags } : {}),
        security: SECURITY[s.auth ?? 'key'] ?? [],
        parameters: [...toParameters(s.params, 'path'), ...toParameters(s.querystring, 'query')],
        ...(s.body ? { requestBody: { required: true, content: { 'application/json': { schema: s.body } } } } : {}),
        responses,
      };
      (paths[url] ??= {})[r.method] = op;
    }
    return {
      openapi: '3.0.3',
      info: {
        title: 'Tachyon node API',
        version: info.version,
        description:
          'The HTTPS API of a Tachyon transfer node (TCP 9092): access keys, files inside a key\'s storage root, transfer set-up and monitoring. Every error is { "error": { "code", "message", "correlation_id" } } and every response carries X-Correlation-Id. Unknown fields are refused.',
      },
      servers: [{ url: 'https://localhost:9092' }],
      components: {
        securitySchemes: {
          basicAuth: { type: 'http', scheme: 'basic', description: 'Access key id and secret (argon2id on the server: use it to get a bearer token).' },
          bearerAuth: { type: 'http', scheme: 'bearer', description: 'A short-lived token from POST /auth/token.' },
        },
        schemas: { Error: ERROR_SCHEMA },
      },
      paths,
    };
  }
}
