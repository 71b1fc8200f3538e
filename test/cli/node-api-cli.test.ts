/**
 * The node API from the command line, with real `tachyon` processes: `ca init`, `cert
 * issue`, `access-key create|list|show|rotate|revoke`, and `tachyon start` serving the node
 * API with its own CA (a client trusting that CA reaches it; the key made by the CLI
 * works; a key revoked by the CLI stops working on the running node).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { clientAgent } from '../../src/node-api/pki.js';
import { runCli, startCli } from '../helpers/cli.js';
import { basic, httpsCall } from '../node-api/helpers.js';

describe('node API CLI', () => {
  let work: string;
  before(() => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-napi-cli-'));
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('ca init and cert issue write a CA and a server certificate; they refuse to overwrite and bad names', async () => {
    const ca = await runCli(['ca', 'init', '--dir', 'myca', '--json'], work);
    assert.equal(ca.code, 0, ca.stderr);
    const j = JSON.parse(ca.stdout) as { cert: string; key: string; sha256: string };
    assert.equal(statSync(path.join(work, 'myca', 'ca.key')).mode & 0o777, 0o600);
    assert.match(j.sha256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    const again = await runCli(['ca', 'init', '--dir', 'myca'], work);
    assert.equal(again.code, 73, again.stderr);
    const c = await runCli(['cert', 'issue', '--ca', 'myca', '--name', 'node1.example', '--ip', '10.0.0.5', '--out', 'tls/node1', '--json'], work);
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual((JSON.parse(c.stdout) as { dns: string[] }).dns, ['node1.example']);
    assert.match(readFileSync(path.join(work, 'tls', 'node1.crt'), 'utf8'), /BEGIN CERTIFICATE[\s\S]+BEGIN CERTIFICATE/);
    const long = await runCli(['cert', 'issue', '--ca', 'myca', '--name', 'x.example', '--days', '800', '--out', 'tls/x'], work);
    assert.equal(long.code, 2, long.stderr);
    const bad = await runCli(['cert', 'issue', '--ca', 'myca', '--name', 'bad name', '--out', 'tls/y'], work);
    assert.equal(bad.code, 2, bad.stderr);
  });

  it('tachyon start serves the node API with its CA; CLI-made keys work, and a CLI revocation reaches the running node', async () => {
    const dir = path.join(work, 'start');
    mkdirSync(path.join(dir, 'tachyon-data', 'files', 'alice'), { recursive: true });
    const s = startCli(['start', '--port', '0', '--api-port', '0', '--web-port', '0'], dir, 60_000);
    let err = '';
    s.child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    let url = '';
    for (let i = 0; i < 200 && url === ''; i++) {
      await sleep(100);
      url = /node API: (https:\/\/127\.0\.0\.1:\d+)/.exec(err)?.[1] ?? '';
    }
    try {
      assert.ok(url, err);
      const port = Number(new URL(url).port);
      const caFile = path.join(dir, 'tachyon-data', 'ca', 'ca.crt');
      const agent = clientAgent({ caFile, keepAlive: false });
      const admin = await runCli(['access-key', 'create', '--admin', '--json'], dir);
      assert.equal(admin.code, 0, admin.stderr);
      const a = JSON.parse(admin.stdout) as { id: string; secret: string };
      const key = await runCli(['access-key', 'create', '--root', 'tachyon-data/files/alice', '--perm', 'list,mkdir', '--description', 'alice app', '--json'], dir);
      assert.equal(key.code, 0, key.stderr);
      const k = JSON.parse(key.stdout) as { id: string; secret: string; storage_root: string };
      assert.equal(k.storage_root, `file://${path.join(dir, 'tachyon-data', 'files', 'alice')}`);
      const list = await runCli(['access-key', 'list'], dir);
      assert.match(list.stdout, new RegExp(k.id));
      assert.ok(!list.stdout.includes(k.secret));
      const show = await runCli(['access-key', 'show', k.id, '--json'], dir);
      assert.ok(!show.stdout.includes(k.secret) && !show.stdout.includes('"secret"'));
      const outside = await runCli(['access-key', 'create', '--root', '/etc'], dir);
      assert.equal(outside.code, 65, outside.stderr);

      assert.equal((await httpsCall(agent, port, 'GET', '/info', { auth: basic(a.id, a.secret) })).status, 200);
      assert.equal((await httpsCall(agent, port, 'POST', '/files/mkdir', { auth: basic(k.id, k.secret), body: { path: 'in' } })).status, 201);
      const tok = (await httpsCall(agent, port, 'POST', '/auth/token', { auth: basic(k.id, k.secret), body: {} })).json as { access_token: string };
      assert.equal((await httpsCall(agent, port, 'GET', '/files/browse', { auth: `Bearer ${tok.access_token}` })).status, 200);

      const rot = await runCli(['access-key', 'rotate', k.id, '--grace', '0', '--json'], dir);
      assert.equal(rot.code, 0, rot.stderr);
      const newSecret = (JSON.parse(rot.stdout) as { secret: string }).secret;
      await sleep(1200); // the node re-reads keys at most every second
      assert.equal((await httpsCall(agent, port, 'GET', '/files/browse', { auth: `Bearer ${tok.access_token}` })).status, 401, 'token of the old secret');
      assert.equal((await httpsCall(agent, port, 'GET', '/files/browse', { auth: basic(k.id, newSecret) })).status, 200);
      const tok2 = (await httpsCall(agent, port, 'POST', '/auth/token', { auth: basic(k.id, newSecret), body: {} })).json as { access_token: string };
      const rev = await runCli(['access-key', 'revoke', k.id], dir);
      assert.equal(rev.code, 0, rev.stderr);
      await sleep(1200);
      assert.equal((await httpsCall(agent, port, 'GET', '/files/browse', { auth: `Bearer ${tok2.access_token}` })).status, 401);
      assert.equal((await httpsCall(agent, port, 'GET', '/files/browse', { auth: basic(k.id, newSecret) })).status, 401);
      agent.destroy();
      const audit = readFileSync(path.join(dir, 'tachyon-data', 'audit.log'), 'utf8');
      for (const secret of [a.secret, k.secret, newSecret, tok.access_token, tok2.access_token]) assert.ok(!audit.includes(secret));
      assert.match(audit, /access-key\.revoke/);
    } finally {
      s.child.kill('SIGTERM');
      await s.done;
    }
  });
});
