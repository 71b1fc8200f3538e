/**
 * Routes of credentials: `POST /auth/token` (an access key's Basic credentials → a
 * short-lived bearer token) and the node administrator's access-key management:
 * `POST /access_keys`, `GET /access_keys`, `GET /access_keys/{id}`,
 * `POST /access_keys/{id}/rotate`, `DELETE /access_keys/{id}`. A secret appears in exactly
 * two responses: the creation and the rotation of its key. Every change is audited
 * (`config.change`, actor `admin:<id>`).
 */
import { PERMISSIONS } from '../core/types.js';
import type { AccessKeyRepository} from './access-keys.js';
import { DEFAULT_GRACE_SECONDS, MAX_GRACE_SECONDS, type AccessKey } from './access-keys.js';
import { MAX_TOKEN_TTL_SECONDS, type Authenticator } from './auth.js';
import type { NodeApiPlugin } from './context.js';
import { apiSchema } from './openapi.js';

const KEY_ID = { type: 'string', pattern: '^AK[0-9A-Z]{24}$', description: 'Access key id.' } as const;

const KEY_SCHEMA = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    kind: { type: 'string', enum: ['access', 'admin'] },
    storage_root: { type: ['string', 'null'] },
    permissions: { type: 'array', items: { type: 'string' } },
    description: { type: 'string' },
    secret_version: { type: 'integer' },
    created_at: { type: 'string' },
    updated_at: { type: 'string' },
    previous_secret_valid_until: { type: ['string', 'null'] },
    revoked_at: { type: ['string', 'null'] },
  },
} as const;

const KEY_WITH_SECRET_SCHEMA = {
  ...KEY_SCHEMA,
  properties: { ...KEY_SCHEMA.properties, secret: { type: 'string', description: 'Shown once: store it now.' } },
} as const;

export function keyJson(k: AccessKey): Record<string, unknown> {
  return {
    id: k.id,
    kind: k.kind,
    storage_root: k.storageRoot,
    permissions: [...k.permissions],
    description: k.description,
    secret_version: k.secretVersion,
    created_at: k.createdAt,
    updated_at: k.updatedAt,
    previous_secret_valid_until: k.previousSecretValidUntil,
    revoked_at: k.revokedAt,
  };
}

export function accessKeyRoutes(o: { keys: AccessKeyRepository; authenticator: Authenticator }): NodeApiPlugin {
  return (app, ctx) => {
    const change = (actor: string, action: string, target: string, clientAddress: string, correlationId: string): void => {
      try {
        ctx.audit.record({ type: 'config.change', component: 'api', correlationId, fields: { actor: `admin:${actor}`, action, target, clientAddress } });
      } catch {
        // the change is made; a failing audit sink is reported by the sink itself
      }
    };

    app.post(
      '/auth/token',
      {
        schema: apiSchema({
          summary: 'Exchange access key credentials (HTTP Basic) for a short-lived bearer token',
          tags: ['auth'],
          auth: 'basic',
          body: {
            type: 'object',
            additionalProperties: false,
            properties: { expires_in: { type: 'integer', minimum: 60, maximum: MAX_TOKEN_TTL_SECONDS, description: 'Seconds (default 900).' } },
          },
          response: {
            200: {
              type: 'object',
              properties: { access_token: { type: 'string' }, token_type: { type: 'string' }, expires_in: { type: 'integer' }, expires_at: { type: 'string' } },
            },
          },
        }),
      },
      async (request) => {
        const body = (request.body ?? {}) as { expires_in?: number };
        const { key, version } = await o.authenticator.verifyBasic(request);
        const t = o.authenticator.issueToken(key, version, body.expires_in);
        return { access_token: t.token, token_type: 'Bearer', expires_in: t.expiresInSeconds, expires_at: t.expiresAt };
      },
    );

    app.post(
      '/access_keys',
      {
        schema: apiSchema({
          summary: 'Create an access key (the secret is in this response only)',
          tags: ['access keys'],
          auth: 'admin',
          body: {
            type: 'object',
            additionalProperties: false,
            required: ['storage_root'],
            properties: {
              storage_root: { type: 'string', minLength: 1, maxLength: 4200, description: 'file:///path or s3://bucket/prefix, inside the allowed storage roots.' },
              permissions: { type: 'array', maxItems: 16, items: { type: 'string', enum: [...PERMISSIONS] }, description: 'Default: list, read.' },
              description: { type: 'string', maxLength: 256 },
            },
          },
          response: { 201: KEY_WITH_SECRET_SCHEMA },
        }),
      },
      async (request, reply) => {
        const admin = await ctx.requireAdmin(request);
        const b = request.body as { storage_root: string; permissions?: string[]; description?: string };
        const { key, secret } = await o.keys.create({ kind: 'access', storageRoot: b.storage_root, ...(b.permissions ? { permissions: b.permissions } : {}), ...(b.description !== undefined ? { description: b.description } : {}) });
        change(admin.name, 'access-key.create', key.id, request.ip, request.id);
        return reply.code(201).send({ ...keyJson(key), secret });
      },
    );

    app.get(
      '/access_keys',
      {
        schema: apiSchema({
          summary: 'List access keys (never their secrets)',
          tags: ['access keys'],
          auth: 'admin',
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              offset: { type: 'integer', minimum: 0, maximum: 1_000_000, default: 0 },
              limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
              active: { type: 'boolean', default: false, description: 'Only keys that are not revoked.' },
            },
          },
          response: { 200: { type: 'object', properties: { access_keys: { type: 'array', items: KEY_SCHEMA }, total: { type: 'integer' } } } },
        }),
      },
      async (request, reply) => {
        await ctx.requireAdmin(request);
        const q = request.query as { offset: number; limit: number; active: boolean };
        const { keys, total } = await o.keys.list({ offset: q.offset, limit: q.limit, activeOnly: q.active });
        reply.header('x-total-count', String(total));
        return { access_keys: keys.map(keyJson), total };
      },
    );

    app.get(
      '/access_keys/:id',
      {
        schema: apiSchema({
          summary: 'Show an access key',
          tags: ['access keys'],
          auth: 'admin',
          params: { type: 'object', additionalProperties: false, required: ['id'], properties: { id: KEY_ID } },
          response: { 200: KEY_SCHEMA },
        }),
      },
      async (request) => {
        await ctx.requireAdmin(request);
        return keyJson(await o.keys.get((request.params as { id: string }).id));
      },
    );

    app.post(
      '/access_keys/:id/rotate',
      {
        schema: apiSchema({
          summary: 'Give an access key a new secret; the old one works for the grace period',
          tags: ['access keys'],
          auth: 'admin',
          params: { type: 'object', additionalProperties: false, required: ['id'], properties: { id: KEY_ID } },
          body: {
            type: 'object',
            additionalProperties: false,
            properties: { grace_seconds: { type: 'integer', minimum: 0, maximum: MAX_GRACE_SECONDS, description: `Default ${DEFAULT_GRACE_SECONDS}.` } },
          },
          response: { 200: KEY_WITH_SECRET_SCHEMA },
        }),
      },
      async (request) => {
        const admin = await ctx.requireAdmin(request);
        const id = (request.params as { id: string }).id;
        const body = (request.body ?? {}) as { grace_seconds?: number };
        const { key, secret } = await o.keys.rotate(id, body.grace_seconds ?? DEFAULT_GRACE_SECONDS);
        // tokens from the old secret live on within the grace period (checked per request)
        o.authenticator.invalidateKey(id, { dropTokens: (body.grace_seconds ?? DEFAULT_GRACE_SECONDS) === 0 });
        change(admin.name, 'access-key.rotate', id, request.ip, request.id);
        return { ...keyJson(key), secret };
      },
    );

    app.delete(
      '/access_keys/:id',
      {
        schema: apiSchema({
          summary: 'Revoke an access key (final; its bearer tokens die at once)',
          tags: ['access keys'],
          auth: 'admin',
          params: { type: 'object', additionalProperties: false, required: ['id'], properties: { id: KEY_ID } },
          response: { 204: { type: 'null', description: 'Revoked' } },
        }),
      },
      async (request, reply) => {
        const admin = await ctx.requireAdmin(request);
        const id = (request.params as { id: string }).id;
        await o.keys.revoke(id);
        o.authenticator.invalidateKey(id, { dropTokens: true });
        change(admin.name, 'access-key.revoke', id, request.ip, request.id);
        return reply.code(204).send();
      },
    );
  };
}
