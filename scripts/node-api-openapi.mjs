#!/usr/bin/env node
// Writes docs/node-api.openapi.json from the node API's route schemas (run `npx tsc --build` first).
// test/node-api/openapi.test.ts fails when the committed file differs from what this writes.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { openApiDocument } = await import(path.join(repo, 'dist/src/node-api/node.js'));
const file = path.join(repo, 'docs', 'node-api.openapi.json');
writeFileSync(file, `${JSON.stringify(await openApiDocument(), null, 2)}\n`);
console.log(`wrote ${path.relative(process.cwd(), file)}`);
