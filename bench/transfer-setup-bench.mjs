#!/usr/bin/env node
/**
 * POST /files/upload_setup on loopback with autocannon (target: >= 2,000 requests/s,
 * p99 < 50 ms). The plugin runs in a plain-HTTP fastify with the test context (one fixed
 * access key checked by string comparison, as a bearer session would be: no hashing) and
 * a real file audit sink (one record per token), in a child process of its own so that
 * autocannon does not take its CPU. Run after `npx tsc --build`:
 *
 *   node bench/transfer-setup-bench.mjs [--seconds 10] [--connections 20]
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { systemClock } from '../dist/src/core/clock.js';
import { FileAuditSink } from '../dist/src/audit/index.js';
import { loadTokenKeyring, TransferTokenCodec } from '../dist/src/server/transfer-token.js';
import { transferSetupPlugin } from '../dist/src/node-api/transfer-setup.js';
import { startPluginApp, TEST_KEY_ID, TEST_SECRET } from '../dist/test/node-api/setup-helpers.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '10' }, connections: { type: 'string', default: '20' }, serve: { type: 'boolean', default: false } } });

if (values.serve) {
  // the server side, in its own process
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-setup-bench-'));
  const audit = new FileAuditSink(path.join(dir, 'audit.log'));
  const codec = new TransferTokenCodec({ nodeId: 'bench-node', keys: loadTokenKeyring(path.join(dir, 'token.key')), clock: systemClock });
  const { app, url } = await startPluginApp(
    transferSetupPlugin({ codec, host: '127.0.0.1', sshPort: 33001, udpPort: 33001, user: 'xfer', hostKeyFingerprint: 'SHA256:' + 'A'.repeat(43) }),
    audit,
    [{ id: TEST_KEY_ID, secret: TEST_SECRET, storageRoot: 'file:///srv/media', permissions: ['list', 'read', 'write', 'mkdir'] }],
  );
  process.send({ url });
  process.once('message', async () => {
    await app.close();
    await audit.close();
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  });
  await new Promise(() => {});
}

const server = fork(new URL(import.meta.url).pathname, ['--serve']);
const url = await new Promise((resolve) => server.once('message', (m) => resolve(m.url)));
const body = JSON.stringify({ transfer_requests: [{ transfer_request: { paths: [{ source: 'footage/a.mov', destination: 'a.mov' }, { source: 'footage/b.mov' }], destination_root: '/incoming' } }] });
const result = await autocannon({
  url: `${url}/files/upload_setup`,
  method: 'POST',
  headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_SECRET}` },
  body,
  connections: Number(values.connections),
  duration: Number(values.seconds),
});
server.send('stop');
await new Promise((resolve) => server.once('exit', resolve));
const out = {
  requestsPerSecond: Math.round(result.requests.average),
  latencyMs: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max },
  non2xx: result.non2xx,
  errors: result.errors,
  connections: Number(values.connections),
  seconds: Number(values.seconds),
  cpus: os.cpus().length,
};
process.stdout.write(JSON.stringify(out) + '\n');
process.stdout.write(`upload_setup: ${out.requestsPerSecond} req/s, p99 ${out.latencyMs.p99} ms (target >= 2000 req/s, p99 < 50 ms): ${out.requestsPerSecond >= 2000 && out.latencyMs.p99 < 50 && out.non2xx === 0 ? 'met' : 'NOT met'}\n`);
