/**
 * The defender on the node API: a flood of bad credentials over real HTTPS from 127.0.0.1
 * is blocked (403, sanitized body with a correlation id) while 127.0.0.2 keeps working;
 * administrators list and lift blocks through `GET/DELETE /defender/blocks` and through
 * `tachyon defender list|unblock` (a real child process on the same SQLite file);
 * notifications reach a real webhook receiver.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { request as httpsRequest, type Agent } from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { FileAuditSink } from '../../src/audit/index.js';
import { openDatabase, type Database } from '../../src/db/database.js';
import { AllowLists, ScoringDefender, WebhookNotifier } from '../../src/defender/index.js';
import { defenderRoutes } from '../../src/node-api/defender-routes.js';
import { startNodeApiServer, type NodeApiServer } from '../../src/node-api/node.js';
import { clientAgent, loadServerTls } from '../../src/node-api/pki.js';
import { parseRootPattern } from '../../src/server/users/storage-roots.js';
import { runCli } from '../helpers/cli.js';
import { basic, makePki, TEST_HASH_COST } from '../node-api/helpers.js';

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: unknown;
}

function call(agent: Agent, port: number, method: string, url: string, auth: string | undefined, localAddress: string): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, method, path: url, agent, localAddress, headers: auth ? { authorization: auth } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json: text === '' ? undefined : JSON.parse(text) });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('defender on the node API', () => {
  let work: string;
  let database: Database;
  let audit: FileAuditSink;
  let defender: ScoringDefender;
  let node: NodeApiServer;
  let agent: Agent;
  let admin: string;
  let hook: Server;
  const hooks: Array<{ event: string; address: string }> = [];

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-defender-api-'));
    hook = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        hooks.push(JSON.parse(body) as { event: string; address: string });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    const pki = await makePki(work);
    database = await openDatabase({ url: `sqlite://${path.join(work, 'tachyon.db')}` });
    audit = new FileAuditSink(path.join(work, 'audit.log'));
    defender = await ScoringDefender.open({
      database,
      audit,
      settings: { threshold: 10, syncIntervalMs: 200 },
      notifier: new WebhookNotifier({ url: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/` }),
    });
    node = await startNodeApiServer({
      database,
      allowedRoots: [parseRootPattern(`file://${work}/*`)],
      audit,
      tls: loadServerTls({ certFile: pki.certFile, keyFile: pki.keyFile }),
      listen: '127.0.0.1',
      port: 0,
      hashCost: TEST_HASH_COST,
      defender,
      plugins: [defenderRoutes(defender)],
    });
    const k = await node.keys.create({ kind: 'admin', description: 'test admin' });
    admin = basic(k.key.id, k.secret);
    agent = clientAgent({ caFile: pki.caFile });
  });

  after(async () => {
    await node?.api.close();
    await defender?.close();
    await database?.close();
    await audit?.close();
    await new Promise<void>((r) => hook.close(() => r()));
    rmSync(work, { recursive: true, force: true });
  });

  const records = (): Array<{ type: string; correlationId?: string; fields: Record<string, unknown> }> =>
    readFileSync(path.join(work, 'audit.log'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { type: string; correlationId?: string; fields: Record<string, unknown> });

  it('blocks a flood of bad credentials from one address while another keeps working', async () => {
    const bad = basic('AKnobody', 'wrong-secret');
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) statuses.push((await call(agent, node.port, 'GET', '/info', bad, '127.0.0.1')).status);
    // ten 401s, then 403s
    assert.deepEqual(statuses.slice(0, 10), Array<number>(10).fill(401));
    assert.deepEqual(statuses.slice(10), Array<number>(30).fill(403));
    // even the administrator's valid key is refused from the blocked address, with a sanitized body
    const r = await call(agent, node.port, 'GET', '/info', admin, '127.0.0.1');
    assert.equal(r.status, 403);
    const body = r.json as { error: { code: string; message: string; correlation_id: string } };
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'correlation_id', 'message']);
    assert.equal(body.error.code, 'PERMISSION');
    assert.equal(body.error.message, 'Access denied.');
    assert.equal(r.headers['x-correlation-id'], body.error.correlation_id);
    assert.ok(records().some((x) => x.type === 'refusal.address' && x.correlationId === body.error.correlation_id && x.fields.reason === 'blocked' && x.fields.service === 'node-api'));
    // another address is not affected
    const other = await call(agent, node.port, 'GET', '/info', admin, '127.0.0.2');
    assert.equal(other.status, 200);
    // requests without credentials score nothing
    for (let i = 0; i < 20; i++) assert.equal((await call(agent, node.port, 'GET', '/info', undefined, '127.0.0.3')).status, 401);
    assert.equal(defender.isBlocked('127.0.0.3'), false);
  });

  it('lists and lifts blocks through the API (administrators only)', async () => {
    const denied = await call(agent, node.port, 'GET', '/defender/blocks', undefined, '127.0.0.2');
    assert.equal(denied.status, 401);
    const list = await call(agent, node.port, 'GET', '/defender/blocks', admin, '127.0.0.2');
    assert.equal(list.status, 200);
    const blocks = (list.json as { blocks: Array<{ address: string; score: number; until: string; ban_count: number }> }).blocks;
    assert.equal(blocks.length, 1);
    assert.equal(blocks[0]!.address, '127.0.0.1');
    assert.equal(blocks[0]!.score, 10);
    assert.equal(blocks[0]!.ban_count, 1);
    assert.ok(Date.parse(blocks[0]!.until) > Date.now() + 25 * 60_000);
    const del = await call(agent, node.port, 'DELETE', '/defender/blocks/127.0.0.1', admin, '127.0.0.2');
    assert.equal(del.status, 204);
    assert.equal((await call(agent, node.port, 'DELETE', '/defender/blocks/127.0.0.1', admin, '127.0.0.2')).status, 404);
    assert.equal((await call(agent, node.port, 'GET', '/info', admin, '127.0.0.1')).status, 200, 'free again');
    await defender.settled();
    assert.deepEqual(
      hooks.map((h) => [h.event, h.address]),
      [
        ['blocked', '127.0.0.1'],
        ['unblocked', '127.0.0.1'],
      ],
    );
    // an IPv6 /64, URL-encoded
    for (let i = 0; i < 10; i++) defender.report('2001:db8:1:2::7', 'auth-failed');
    const v6 = await call(agent, node.port, 'GET', '/defender/blocks', admin, '127.0.0.2');
    assert.deepEqual((v6.json as { blocks: Array<{ address: string }> }).blocks.map((b) => b.address), ['2001:db8:1:2::/64']);
    assert.equal((await call(agent, node.port, 'DELETE', `/defender/blocks/${encodeURIComponent('2001:db8:1:2::/64')}`, admin, '127.0.0.2')).status, 204);
    assert.equal(defender.isBlocked('2001:db8:1:2::7'), false);
    await defender.settled();
    hooks.length = 0;
    const un = records().filter((x) => x.type === 'defender.unblock' && x.fields.clientAddress === '127.0.0.1');
    assert.equal(un.length, 1);
    assert.equal(un[0]!.fields.clientAddress, '127.0.0.1');
    assert.match(String(un[0]!.fields.actor), /^admin:/);
  });

  it('tachyon defender list|unblock work on the same database, and the running node follows', async () => {
    const bad = basic('AKnobody', 'wrong-secret');
    for (let i = 0; i < 10; i++) await call(agent, node.port, 'GET', '/info', bad, '127.0.0.4');
    assert.equal(defender.isBlocked('127.0.0.4'), true);
    await defender.settled();
    const db = ['--db', `sqlite://${path.join(work, 'tachyon.db')}`];
    const list = await runCli(['defender', 'list', ...db, '--json'], work);
    assert.equal(list.code, 0, list.stderr);
    const listed = JSON.parse(list.stdout) as { blocks: Array<{ address: string; banCount: number }> };
    assert.deepEqual(listed.blocks.map((b) => [b.address, b.banCount]), [['127.0.0.4', 1]]);
    const text = await runCli(['defender', 'list', ...db], work);
    assert.match(text.stdout, /^ADDRESS\s+SCORE\s+BANS\s+UNTIL\n127\.0\.0\.4\s+10\s+1\s+\d{4}-/);
    const un = await runCli(['defender', 'unblock', '127.0.0.4', ...db, '--json'], work);
    assert.equal(un.code, 0, un.stderr);
    assert.deepEqual(JSON.parse(un.stdout), { event: 'unblocked', address: '127.0.0.4' });
    const again = await runCli(['defender', 'unblock', '127.0.0.4', ...db], work);
    assert.equal(again.code, 66, 'NOT_FOUND');
    assert.match(again.stderr, /127\.0\.0\.4 is not blocked/);
    const bogus = await runCli(['defender', 'unblock', '127.0.0.4', '--db', 'mysql://nope'], work);
    assert.notEqual(bogus.code, 0);
    // the node re-reads the table within its sync interval
    const t0 = Date.now();
    while (defender.isBlocked('127.0.0.4') && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 50));
    assert.equal(defender.isBlocked('127.0.0.4'), false);
    assert.equal((await call(agent, node.port, 'GET', '/info', admin, '127.0.0.4')).status, 200);
  });
});

describe('allow-list on the node API', () => {
  it('refuses addresses outside the global allow-list with 403, admits those in it', async () => {
    const work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-defender-allow-'));
    const pki = await makePki(work);
    const database = await openDatabase({ url: `sqlite://${path.join(work, 'tachyon.db')}` });
    const audit = new FileAuditSink(path.join(work, 'audit.log'));
    const defender = await ScoringDefender.open({ database, audit, allowLists: AllowLists.parse({ global: ['127.0.0.2/32', '10.0.0.0/8'] }) });
    const node = await startNodeApiServer({
      database,
      allowedRoots: [parseRootPattern(`file://${work}/*`)],
      audit,
      tls: loadServerTls({ certFile: pki.certFile, keyFile: pki.keyFile }),
      listen: '127.0.0.1',
      port: 0,
      hashCost: TEST_HASH_COST,
      defender,
    });
    try {
      const k = await node.keys.create({ kind: 'admin', description: 'test admin' });
      const admin = basic(k.key.id, k.secret);
      const agent = clientAgent({ caFile: pki.caFile });
      const refused = await call(agent, node.port, 'GET', '/info', admin, '127.0.0.1');
      assert.equal(refused.status, 403);
      assert.equal((refused.json as { error: { message: string } }).error.message, 'Access denied.');
      assert.equal((await call(agent, node.port, 'GET', '/info', admin, '127.0.0.2')).status, 200);
      await audit.close();
      const recs = readFileSync(path.join(work, 'audit.log'), 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as { type: string; fields: Record<string, unknown> });
      assert.ok(recs.some((r) => r.type === 'refusal.address' && r.fields.reason === 'not-allowed' && r.fields.clientAddress === '127.0.0.1'));
    } finally {
      await node.api.close();
      await defender.close();
      await database.close();
      rmSync(work, { recursive: true, force: true });
    }
  });
});
