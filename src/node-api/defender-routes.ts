/**
 * Administration of the IP defender through the node API (node administrators only):
 *
 *   GET    /defender/blocks            the active blocks (address, score, until, ban count)
 *   DELETE /defender/blocks/{address}  lifts a block (IPv4 address, IPv6 address or /64; URL-encoded)
 *
 * Every lifted block is audited (`defender.unblock`, actor `admin:<name>`) by the defender.
 */
import type { Defender } from '../defender/index.js';
import { TachyonError } from '../core/errors.js';
import type { NodeApiPlugin } from './context.js';
import { apiSchema } from './openapi.js';

const BLOCK = {
  type: 'object',
  properties: { address: { type: 'string' }, score: { type: 'integer' }, until: { type: 'string' }, ban_count: { type: 'integer' } },
};

export function defenderRoutes(defender: Defender): NodeApiPlugin {
  return (app, context) => {
    app.get(
      '/defender/blocks',
      {
        schema: apiSchema({
          summary: 'List the addresses the IP defender blocks',
          tags: ['defender'],
          auth: 'admin',
          response: { 200: { type: 'object', properties: { blocks: { type: 'array', items: BLOCK } } } },
        }),
      },
      async (request) => {
        await context.requireAdmin(request);
        const blocks = await defender.list();
        return { blocks: blocks.map((b) => ({ address: b.address, score: b.score, until: b.until, ban_count: b.banCount })) };
      },
    );
    app.delete<{ Params: { address: string } }>(
      '/defender/blocks/:address',
      {
        schema: apiSchema({
          summary: 'Lift the block of an address',
          tags: ['defender'],
          auth: 'admin',
          params: { type: 'object', required: ['address'], properties: { address: { type: 'string', minLength: 1, maxLength: 64 } } },
          response: { 204: { type: 'null' } },
        }),
      },
      async (request, reply) => {
        const admin = await context.requireAdmin(request);
        const lifted = await defender.unblock(request.params.address, `admin:${admin.name}`);
        if (!lifted) throw new TachyonError('NOT_FOUND', 'no such block', { publicMessage: 'The address is not blocked.', details: { reason: 'not-blocked' } });
        return reply.code(204).send();
      },
    );
  };
}
