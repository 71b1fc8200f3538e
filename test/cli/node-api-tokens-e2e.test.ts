/**
 * The whole chain with real processes: `tachyon serve --config` with a `nodeApi` section
 * (a CA and certificate from `ca init` / `cert issue`) and `transferTokens` (no access-key
 * file: the node API's own table decides); an admin key from the CLI, an access key and a
 * bearer token from the API, `POST /files/upload_setup`, then `tachyon send
 * --transfer-spec` with the returned spec, seen by `GET /ops/transfers`. After the key is revoked through the API, the
 * same spec is refused by the transfer server.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Agent } from 'node:https';
import { clientAgent } from '../../src/node-api/pki.js';
import { runCli, startConfigServer } from '../helpers/cli.js';
import { basic, httpsCall } from '../node-api/helpers.js';

describe('node API + transfer tokens end to end (serve --config with nodeApi and transferTokens)', () => {
  let work: string;
  let files: string;
  let server: ChildProcessWithoutNullStreams;
  let apiPort: number;
  let agent: Agent;
  let cfgFile: string;

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-napi-tok-'));
    files = path.join(work, 'files');
    mkdirSync(path.join(files, 'media'), { recursive: true });
    for (const args of [
      ['ca', 'init', '--dir', 'ca'],
      ['cert', 'issue', '--ca', 'ca', '--name', 'localhost', '--ip', '127.0.0.1', '--out', 'tls/node'],
    ]) {
      const r = await runCli(args, work);
      assert.equal(r.code, 0, r.stderr);
    }
    cfgFile = path.join(work, 'tachyon.json');
    writeFileSync(
      cfgFile,
      JSON.stringify({
        listen: '127.0.0.1',
        port: 0,
        database: 'tachyon.db',
        allowedRoots: [`file://${files}/*`],
        auditLog: 'audit.log',
        transferTokens: { user: 'xfer', nodeId: 'node-api-e2e', keyFile: 'token.key' },
        nodeApi: { port: 0, certFile: 'tls/node.crt', keyFile: 'tls/node.key' },
      }),
    );
    const started = await startConfigServer(cfgFile, work, { until: 'node-api.start', timeoutMs: 30_000 });
    server = started.child;
    apiPort = started.event.port as number;
    agent = clientAgent({ caFile: path.join(work, 'ca', 'ca.crt'), keepAlive: false });
  });

  after(() => {
    agent?.destroy();
    server?.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
  });

  it('an access key made through the API authorizes an upload; once revoked, its spec is refused', async () => {
    const admin = await runCli(['access-key', 'create', '--admin', '--config', cfgFile, '--json'], work);
    assert.equal(admin.code, 0, admin.stderr);
    const a = JSON.parse(admin.stdout) as { id: string; secret: string };
    const call = (method: string, url: string, o: { auth?: string; body?: unknown } = {}) => httpsCall(agent, apiPort, method, url, o);
    const info = await call('GET', '/info', { auth: basic(a.id, a.secret) });
    assert.ok((info.json as { capabilities: string[] }).capabilities.includes('transfer_setup'), info.text);
    const created = await call('POST', '/access_keys', { auth: basic(a.id, a.secret), body: { storage_root: `file://${files}/media`, permissions: ['list', 'read', 'write', 'mkdir'] } });
    assert.equal(created.status, 201, created.text);
    const k = created.json as { id: string; secret: string };
    const tok = ((await call('POST', '/auth/token', { auth: basic(k.id, k.secret), body: {} })).json as { access_token: string }).access_token;

    const local = path.join(work, 'clip.bin');
    writeFileSync(local, randomBytes(200_000));
    const setup = await call('POST', '/files/upload_setup', {
      auth: `Bearer ${tok}`,
      body: { transfer_requests: [{ transfer_request: { paths: [{ source: local, destination: 'clip.bin' }], destination_root: '/incoming' } }] },
    });
    assert.equal(setup.status, 200, setup.text);
    const specFile = path.join(work, 'spec.json');
    writeFileSync(specFile, setup.text);
    mkdirSync(path.join(files, 'media', 'incoming'), { recursive: true });
    const sent = await runCli(['send', '--transfer-spec', specFile], work);
    assert.equal(sent.code, 0, sent.stderr);
    assert.deepEqual(readFileSync(path.join(files, 'media', 'incoming', 'clip.bin')), readFileSync(local));
    // the monitoring routes on the same node API see the transfer, for this key
    const ops = await call('GET', '/ops/transfers', { auth: `Bearer ${tok}` });
    assert.equal(ops.status, 200, ops.text);
    const list = ops.json as { total: number; transfers: { accessKeyId?: string; access_key_id?: string; status: string }[] };
    assert.equal(list.total, 1, ops.text);
    assert.equal((await call('GET', '/metrics', { auth: basic(a.id, a.secret) })).status, 200);

    assert.equal((await call('DELETE', `/access_keys/${k.id}`, { auth: basic(a.id, a.secret) })).status, 204);
    writeFileSync(local, randomBytes(1000));
    rmSync(path.join(files, 'media', 'incoming', 'clip.bin'));
    const refused = await runCli(['send', '--transfer-spec', specFile], work);
    assert.notEqual(refused.code, 0, 'a revoked key’s spec is refused');
    assert.ok(!existsSync(path.join(files, 'media', 'incoming', 'clip.bin')));
    const audit = readFileSync(path.join(work, 'audit.log'), 'utf8');
    assert.match(audit, /access-key-revoked/, 'refused because the key is revoked (audit reason)');
    for (const secret of [a.secret, k.secret, tok]) assert.ok(!audit.includes(secret));
    assert.equal((await call('POST', '/files/upload_setup', { auth: `Bearer ${tok}`, body: { transfer_requests: [{ transfer_request: { paths: [{ source: local, destination: 'x' }] } }] } })).status, 401);
  });
});
