/**
 * The files routes: browse, stat, mkdir, rename and delete inside the access key's
 * storage root, through the `StorageBackend` seam (whose path rules refuse `..`, NUL,
 * control characters, backslashes and the reserved temporary names: PATH_INVALID, 400).
 * Paths are relative to the key's root; a leading `/` names the root itself, so an
 * "absolute" path never leaves it. Each route checks the key's permission first (deny by
 * default: `list` for browse and stat, `mkdir`, `rename`, `delete`), and every change is
 * audited (`file.operation`, ok or failed).
 */
import type { FastifyRequest } from 'fastify';
import { TachyonError } from '../core/errors.js';
import type { Permission } from '../core/types.js';
import { normalizeStoragePath, type ListSort, type StorageEntry } from '../storage/index.js';
import type { AccessKeyPrincipal, NodeApiContext, NodeApiPlugin } from './context.js';
import { apiSchema } from './openapi.js';

export const MAX_BROWSE_LIMIT = 1000;
export const DEFAULT_BROWSE_LIMIT = 100;

const PATH = { type: 'string', maxLength: 4096, description: "A path inside the key's storage root ('/' or '' is the root)." } as const;

const ENTRY_SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    path: { type: 'string' },
    type: { type: 'string', enum: ['file', 'directory'] },
    size: { type: 'integer' },
    mtime: { type: 'string', description: 'ISO 8601' },
  },
} as const;

function entryJson(e: StorageEntry): Record<string, unknown> {
  return { name: e.name, path: `/${e.path}`, type: e.kind, size: e.size, mtime: new Date(e.mtimeMs).toISOString() };
}

/** The path as it may appear in an audit record: printable, bounded. */
function shown(p: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are replaced
  return p.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 512);
}

/** Checks a path up front so that refusals carry it (for the audit record). */
function checkPath(p: string): string {
  try {
    return normalizeStoragePath(p);
  } catch (err) {
    if (err instanceof TachyonError) {
      throw new TachyonError(err.code, err.message, { cause: err, publicMessage: err.publicMessage, details: { ...(err.details ?? {}), path: shown(p) } });
    }
    throw err;
  }
}

function require(p: AccessKeyPrincipal, permission: Permission, path: string): void {
  if (!p.permissions.includes(permission)) {
    throw new TachyonError('PERMISSION', `access key ${p.accessKeyId} lacks '${permission}'`, {
      publicMessage: `The access key does not grant '${permission}'.`,
      details: { permission, path: shown(path) },
    });
  }
}

export function filesRoutes(): NodeApiPlugin {
  return (app, ctx: NodeApiContext) => {
    const operation = async (request: FastifyRequest, p: AccessKeyPrincipal, op: string, path: string, target: string | undefined, fn: () => Promise<void>): Promise<void> => {
      const record = (status: 'ok' | 'failed', code?: string): void => {
        try {
          ctx.audit.record({
            type: 'file.operation',
            component: 'api',
            correlationId: request.id,
            fields: { clientAddress: request.ip, user: p.accessKeyId, op, path: shown(path), ...(target !== undefined ? { target: shown(target) } : {}), status, ...(code ? { code } : {}) },
          });
        } catch {
          // reported by the sink
        }
      };
      try {
        await fn();
      } catch (err) {
        if (err instanceof TachyonError && err.code !== 'PATH_INVALID' && err.code !== 'PERMISSION') record('failed', err.code);
        throw err;
      }
      record('ok');
    };

    app.get(
      '/files/browse',
      {
        schema: apiSchema({
          summary: 'One sorted page of a directory (X-Total-Count: entries in all)',
          tags: ['files'],
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              path: { ...PATH, default: '/' },
              offset: { type: 'integer', minimum: 0, maximum: 100_000_000, default: 0 },
              limit: { type: 'integer', minimum: 1, maximum: MAX_BROWSE_LIMIT, default: DEFAULT_BROWSE_LIMIT },
              sort: { type: 'string', enum: ['name', 'size', 'mtime'], default: 'name' },
              order: { type: 'string', enum: ['asc', 'desc'], default: 'asc' },
            },
          },
          response: {
            200: { type: 'object', properties: { path: { type: 'string' }, total: { type: 'integer' }, offset: { type: 'integer' }, entries: { type: 'array', items: ENTRY_SCHEMA } } },
          },
        }),
      },
      async (request, reply) => {
        const p = await ctx.requireAccessKey(request);
        const q = request.query as { path: string; offset: number; limit: number; sort: ListSort; order: 'asc' | 'desc' };
        require(p, 'list', q.path);
        const dir = checkPath(q.path);
        const page = await p.storage.list(dir, { offset: q.offset, limit: q.limit, sort: q.sort, order: q.order });
        reply.header('x-total-count', String(page.total));
        return { path: `/${dir}`, total: page.total, offset: q.offset, entries: page.entries.map(entryJson) };
      },
    );

    app.get(
      '/files/stat',
      {
        schema: apiSchema({
          summary: 'Describe one file or directory',
          tags: ['files'],
          querystring: { type: 'object', additionalProperties: false, required: ['path'], properties: { path: PATH } },
          response: { 200: ENTRY_SCHEMA },
        }),
      },
      async (request) => {
        const p = await ctx.requireAccessKey(request);
        const q = request.query as { path: string };
        require(p, 'list', q.path);
        return entryJson(await p.storage.stat(checkPath(q.path)));
      },
    );

    app.post(
      '/files/mkdir',
      {
        schema: apiSchema({
          summary: 'Create a directory',
          tags: ['files'],
          body: { type: 'object', additionalProperties: false, required: ['path'], properties: { path: PATH, recursive: { type: 'boolean', default: false } } },
          response: { 201: ENTRY_SCHEMA },
        }),
      },
      async (request, reply) => {
        const p = await ctx.requireAccessKey(request);
        const b = request.body as { path: string; recursive: boolean };
        require(p, 'mkdir', b.path);
        const path = checkPath(b.path);
        if (path === '') throw new TachyonError('EXISTS', 'mkdir of the root', { details: { path: '/' } });
        await operation(request, p, 'mkdir', path, undefined, () => p.storage.mkdir(path, { recursive: b.recursive }));
        return reply.code(201).send(entryJson(await p.storage.stat(path)));
      },
    );

    app.post(
      '/files/rename',
      {
        schema: apiSchema({
          summary: 'Move or rename a file or directory',
          tags: ['files'],
          body: { type: 'object', additionalProperties: false, required: ['from', 'to'], properties: { from: PATH, to: PATH, overwrite: { type: 'boolean', default: false } } },
          response: { 200: ENTRY_SCHEMA },
        }),
      },
      async (request) => {
        const p = await ctx.requireAccessKey(request);
        const b = request.body as { from: string; to: string; overwrite: boolean };
        require(p, 'rename', b.from);
        const from = checkPath(b.from);
        const to = checkPath(b.to);
        await operation(request, p, 'rename', from, to, () => p.storage.rename(from, to, { overwrite: b.overwrite }));
        return entryJson(await p.storage.stat(to));
      },
    );

    app.post(
      '/files/delete',
      {
        schema: apiSchema({
          summary: 'Remove a file or a directory (recursive: with its contents)',
          tags: ['files'],
          body: { type: 'object', additionalProperties: false, required: ['path'], properties: { path: PATH, recursive: { type: 'boolean', default: false } } },
          response: { 204: { type: 'null', description: 'Removed' } },
        }),
      },
      async (request, reply) => {
        const p = await ctx.requireAccessKey(request);
        const b = request.body as { path: string; recursive: boolean };
        require(p, 'delete', b.path);
        const path = checkPath(b.path);
        await operation(request, p, 'delete', path, undefined, () => p.storage.remove(path, { recursive: b.recursive }));
        return reply.code(204).send();
      },
    );
  };
}
