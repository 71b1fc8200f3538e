/**
 * docs/node-api.openapi.json is what the route schemas say: regenerate it with
 * `npx tsc --build && node scripts/node-api-openapi.mjs` after changing a route.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { openApiDocument } from '../../src/node-api/node.js';
import { repo } from '../helpers/cli.js';

describe('node API OpenAPI description', () => {
  it('the committed docs/node-api.openapi.json matches the routes', async () => {
    const committed = JSON.parse(readFileSync(path.join(repo, 'docs', 'node-api.openapi.json'), 'utf8')) as unknown;
    const generated = JSON.parse(JSON.stringify(await openApiDocument())) as unknown;
    assert.deepEqual(committed, generated, 'docs/node-api.openapi.json is stale: run `npx tsc --build && node scripts/node-api-openapi.mjs`');
  });

  it('describes every operation with its security, parameters and error schema', async () => {
    const doc = (await openApiDocument()) as { paths: Record<string, Record<string, { security: unknown[]; responses: Record<string, unknown> }>> };
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [m, op] of Object.entries(ops)) {
        assert.ok(op.responses.default, `${m} ${p}: error response`);
        if (p !== '/openapi.json') assert.ok(op.security.length > 0, `${m} ${p}: security`);
      }
    }
    assert.deepEqual(doc.paths['/files/browse']?.get?.security, [{ basicAuth: [] }, { bearerAuth: [] }]);
  });
});
