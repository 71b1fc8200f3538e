/**
 * Monitoring end to end: a real transfer server in this process with a TransferMonitor
 * over a real database (a SQLite file, or PostgreSQL when TACHYON_TEST_PG_URL is set),
 * real `tachyon send`/`recv` child processes, and the ops routes plugin mounted on a
 * real fastify instance on port 0 (plain HTTP, with a minimal NodeApiContext: the HTTPS
 * application and its credentials are the node API's own business), read by real HTTP
 * clients: the list, one transfer's files, the server-sent event feed, cancel, /metrics.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { MemoryAuditSink } from '../../src/audit/index.js';
import { parseAuthorizedKeys } from '../../src/control/hostkeys.js';
import { ERROR_CODES, TachyonError } from '../../src/core/errors.js';
import { CIPHERS } from '../../src/core/types.js';
import { openDatabase, type Database } from '../../src/db/database.js';
import type { AccessKeyPrincipal, NodeAdminPrincipal, NodeApiContext } from '../../src/node-api/context.js';
import { opsRoutes } from '../../src/node-api/ops.js';
import { buildTransferSpec } from '../../src/node-api/transfer-setup.js';
import { singleUserAccounts } from '../../src/server/accounts.js';
import { staticAccessKeyStatus, TokenLogin } from '../../src/server/token-login.js';
import { loadTokenKeyring, TransferTokenCodec } from '../../src/server/transfer-token.js';
import { systemClock } from '../../src/core/clock.js';
import { TransferMonitor, type MonitorEvent, type TransferDetail, type TransferRecord } from '../../src/server/monitor.js';
import { startTransferServer, type TransferServer } from '../../src/server/transfer-server.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import { startCli } from '../helpers/cli.js';

const ADMIN = 'Bearer admin-token';
// an access key id of this run (a PostgreSQL database may hold earlier runs' transfers)
const AK = `AK${randomBytes(4).toString('hex')}`;
const KEY = `Bearer key-${AK}`;

/** The HTTP status the node API gives each code (the application's mapping; docs/architecture.md). */
const STATUS: Partial<Record<keyof typeof ERROR_CODES, number>> = { USAGE: 400, PATH_INVALID: 400, AUTH_FAILED: 401, PERMISSION: 403, NOT_FOUND: 404, CONFLICT: 409, EXISTS: 409 };

function testContext(): NodeApiContext {
  const audit = new MemoryAuditSink();
  const admin: NodeAdminPrincipal = { kind: 'node-admin', name: 'root' };
  const key: AccessKeyPrincipal = { kind: 'access-key', accessKeyId: AK, storageRoot: 'file:///nowhere', permissions: ['read'], storage: new MemoryStorage() };
  return {
    audit,
    requireAdmin: (r: FastifyRequest) => {
      if (r.headers.authorization === ADMIN) return Promise.resolve(admin);
      if (r.headers.authorization === KEY) return Promise.reject(new TachyonError('PERMISSION', 'not an administrator'));
      return Promise.reject(new TachyonError('AUTH_FAILED', 'no credentials'));
    },
    requireAccessKey: (r: FastifyRequest) => (r.headers.authorization === KEY ? Promise.resolve(key) : Promise.reject(new TachyonError('AUTH_FAILED', 'no credentials'))),
  };
}

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: () => any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

function request(port: number, method: string, url: string, auth: string | null = ADMIN): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: url, headers: auth ? { authorization: auth } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A server-sent event stream read by a real HTTP client. */
function openEvents(port: number, auth = ADMIN): Promise<{ events: { event: string; data: MonitorEvent }[]; comments: string[]; status: number; close: () => void }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/ops/transfers/events', headers: { authorization: auth, accept: 'text/event-stream' } }, (res) => {
      const out = { events: [] as { event: string; data: MonitorEvent }[], comments: [] as string[], status: res.statusCode ?? 0, close: () => req.destroy() };
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let event = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) out.comments.push(line);
            else if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (data) out.events.push({ event, data: JSON.parse(data) as MonitorEvent });
        }
      });
      res.on('error', () => {});
      resolve(out);
    });
    req.on('error', reject);
  });
}

async function until<T>(what: string, f: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Parses Prometheus text exposition into `name{labels}` → value; fails on any malformed line. */
function parseMetrics(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const r = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$/.exec(line);
    assert.ok(r, `a malformed metrics line: ${line}`);
    m.set(r[1]! + (r[2] ?? ''), Number(r[3]));
  }
  return m;
}

const pgUrl = process.env.TACHYON_TEST_PG_URL;

describe('transfer monitoring through the ops routes', { timeout: 120_000 }, () => {
  let work: string;
  let root: string;
  let key: string;
  let database: Database;
  let monitor: TransferMonitor;
  let server: TransferServer;
  let app: FastifyInstance;
  let api: number;
  // a user name of this run (a PostgreSQL database may hold earlier runs' transfers)
  const user = `u${randomBytes(4).toString('hex')}`;
  let common: string[];
  let firstId: string;
  let codec: TransferTokenCodec;

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-ops-'));
    root = path.join(work, 'root');
    mkdirSync(root);
    key = path.join(work, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(work, 'stranger')]);
    database = await openDatabase({ url: pgUrl ?? `sqlite://${path.join(work, 'db', 'tachyon.db')}` });
    monitor = new TransferMonitor({ database });
    codec = new TransferTokenCodec({ nodeId: 'node-ops', keys: loadTokenKeyring(path.join(work, 'token.key')), clock: systemClock });
    server = await startTransferServer({
      tokens: new TokenLogin({ user: 'xfer', codec, accessKeys: staticAccessKeyStatus({ [AK]: 'active' }), ciphers: CIPHERS, clock: systemClock }),
      accounts: singleUserAccounts({ user, root, keys: parseAuthorizedKeys(readFileSync(`${key}.pub`, 'utf8')).keys, ciphers: CIPHERS }),
      hostKeyFile: path.join(work, 'host_key'),
      listen: '127.0.0.1',
      port: 0,
      allowedCiphers: CIPHERS,
      maxRateBps: 10e9,
      monitor,
    });
    common = ['-P', String(server.port), '-i', key, '--host-key-fingerprint', server.hostKeyFingerprint];
    app = Fastify();
    app.setErrorHandler((err, _req, reply) => {
      const te = err instanceof TachyonError ? err : new TachyonError('INTERNAL', String(err));
      void reply.code(STATUS[te.code] ?? 500).send({ code: te.code, message: te.publicMessage });
    });
    await app.register(async (scope) => opsRoutes({ monitor, heartbeatMs: 200 })(scope, testContext()));
    await app.listen({ host: '127.0.0.1', port: 0 });
    api = (app.server.address() as { port: number }).port;
  });

  after(async () => {
    await app?.close();
    await server?.close();
    await monitor?.flush();
    await database?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('lists an upload while it runs (bytes growing, files in flight), then as completed with its files; the event feed delivers its progress', async () => {
    const src = path.join(work, 'up');
    mkdirSync(src);
    writeFileSync(path.join(src, 'a.bin'), randomBytes(2_500_000));
    writeFileSync(path.join(src, 'b.bin'), randomBytes(2_500_000));
    const feed = await openEvents(api);
    assert.equal(feed.status, 200);
    await until('the stream subscribed', () => (monitor.subscriberCount() === 1 ? true : undefined));
    const client = startCli(['send', ...common, '-l', '16m', path.join(src, 'a.bin'), path.join(src, 'b.bin'), `${user}@127.0.0.1:/`], work);
    const first = await until('an active transfer', async () => {
      const r = await request(api, 'GET', `/ops/transfers?status=active&user=${user}`);
      assert.equal(r.status, 200, r.text);
      const t = (r.json().transfers as TransferRecord[])[0];
      return t && t.bytes > 0 ? t : undefined;
    });
    assert.equal(first.direction, 'upload');
    assert.equal(first.user, user);
    assert.equal(first.status, 'active');
    firstId = first.id;
    const later = await until('bytes growing', async () => {
      const t = (await request(api, 'GET', `/ops/transfers/${first.id}`)).json() as TransferDetail;
      return t.bytes > first.bytes && t.fileList.some((f) => f.state === 'active' && f.bytes > 0) ? t : undefined;
    });
    assert.ok(later.rateBps > 0, 'a current rate');
    const r = await client.done;
    assert.equal(r.code, 0, r.stderr);
    const done = await until('the finished transfer', async () => {
      const res = await request(api, 'GET', `/ops/transfers?user=${user}&status=completed`);
      assert.equal(res.headers['x-total-count'], String(res.json().total));
      return (res.json().transfers as TransferRecord[]).find((t) => t.id === first.id);
    });
    assert.equal(done.bytes, 5_000_000);
    assert.equal(done.filesDone, 2);
    assert.ok(done.endedAt);
    const detail = (await request(api, 'GET', `/ops/transfers/${first.id}`)).json() as TransferDetail;
    assert.deepEqual(detail.fileList.map((f) => [f.path, f.state, f.bytes]).sort(), [['a.bin', 'done', 2_500_000], ['b.bin', 'done', 2_500_000]]);
    for (const f of detail.fileList) assert.ok(f.rateBps > 1e6 && f.rateBps < 40e6, `a file rate near the 16 Mbit/s cap: ${f.rateBps}`);
    // the feed: start, progress with growing bytes, each file, end; heartbeats meanwhile
    await until('the end event', () => (feed.events.some((e) => e.event === 'transfer.end') ? true : undefined));
    const mine = feed.events.filter((e) => ('transfer' in e.data ? e.data.transfer.id : 'transferId' in e.data ? e.data.transferId : '') === first.id);
    assert.equal(mine[0]!.event, 'transfer.start');
    const progress = mine.filter((e) => e.event === 'transfer.progress').map((e) => (e.data as { transfer: TransferRecord }).transfer.bytes);
    assert.ok(progress.length >= 3, `progress events: ${progress.length}`);
    assert.ok(progress.length < 40, `sampled, not per datagram: ${progress.length}`);
    assert.ok(progress.at(-1)! > progress[0]!, 'bytes grow');
    assert.deepEqual(mine.filter((e) => e.event === 'file.end').length, 2);
    assert.equal(mine.at(-1)!.event, 'transfer.end');
    assert.ok(feed.comments.some((c) => c.startsWith(': heartbeat')), 'heartbeats');
    feed.close();
    await until('the stream cleaned up', () => (monitor.subscriberCount() === 0 ? true : undefined));
    // persisted: another monitor on the same database sees it, files included
    await monitor.flush();
    const fresh = new TransferMonitor({ database });
    const stored = await fresh.get(first.id);
    assert.equal(stored.status, 'completed');
    assert.equal(stored.bytes, 5_000_000);
    assert.equal(stored.fileList.length, 2);
    const page = await fresh.list({ offset: 0, limit: 10, user });
    assert.equal(page.total, 1);
  });

  it('cancels a running upload: the client exits nonzero with a clear message, nothing appears under the final name, the server keeps serving', async () => {
    const src = path.join(work, 'slow.bin');
    writeFileSync(src, randomBytes(6_000_000));
    const client = startCli(['send', ...common, '-l', '8m', src, `${user}@127.0.0.1:/slow.bin`], work);
    const t = await until('the slow transfer', async () => {
      const r = await request(api, 'GET', `/ops/transfers?status=active&user=${user}`);
      const x = (r.json().transfers as TransferRecord[])[0];
      return x && x.bytes > 0 ? x : undefined;
    });
    const c = await request(api, 'POST', `/ops/transfers/${t.id}/cancel`);
    assert.equal(c.status, 202, c.text);
    const r = await client.done;
    assert.equal(r.code, ERROR_CODES.CANCELLED.exit, r.stderr);
    assert.match(r.stderr, /tachyon: The transfer was cancelled on the server/);
    assert.equal(existsSync(path.join(root, 'slow.bin')), false, 'no file under the final name');
    // without resume (-k) the partial file is removed too
    await until('the partial file removed', () => (readdirSync(root).some((n) => n.includes('slow')) ? undefined : true), 5_000);
    const after = await until('the cancelled record', async () => {
      const x = (await request(api, 'GET', `/ops/transfers/${t.id}`)).json() as TransferDetail;
      return x.status === 'cancelled' ? x : undefined;
    });
    assert.equal(after.code, 'CANCELLED');
    assert.ok(after.bytes < 6_000_000);
    const again = await request(api, 'POST', `/ops/transfers/${t.id}/cancel`);
    assert.equal(again.status, 409);
    assert.equal(again.json().code, 'CONFLICT');
    const listed = await request(api, 'GET', `/ops/transfers?user=${user}&status=cancelled`);
    assert.equal(listed.headers['x-total-count'], '1');
    // a download cancelled the same way: the client keeps nothing under the final name
    const dlDir = path.join(work, 'dl');
    mkdirSync(dlDir);
    const down = startCli(['recv', ...common, '-l', '4m', `${user}@127.0.0.1:/a.bin`, dlDir], work);
    const d = await until('the slow download', async () => {
      const x = ((await request(api, 'GET', `/ops/transfers?status=active&direction=download&user=${user}`)).json().transfers as TransferRecord[])[0];
      return x && x.bytes > 0 ? x : undefined;
    });
    assert.equal((await request(api, 'POST', `/ops/transfers/${d.id}/cancel`)).status, 202);
    const dr = await down.done;
    assert.equal(dr.code, ERROR_CODES.CANCELLED.exit, dr.stderr);
    assert.match(dr.stderr, /cancelled on the server/);
    assert.equal(existsSync(path.join(dlDir, 'a.bin')), false);
    assert.equal(((await request(api, 'GET', `/ops/transfers/${d.id}`)).json() as TransferDetail).status, 'cancelled');
    // the server goes on serving
    const small = path.join(work, 'small.bin');
    writeFileSync(small, randomBytes(10_000));
    const ok = await startCli(['send', ...common, small, `${user}@127.0.0.1:/`], work).done;
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(readFileSync(path.join(root, 'small.bin')).length, 10_000);
  });

  it('/metrics: Prometheus text for administrators only; its counters follow a download and a refused login', async () => {
    assert.equal((await request(api, 'GET', '/metrics', null)).status, 401);
    assert.equal((await request(api, 'GET', '/metrics', KEY)).status, 403);
    const before = await request(api, 'GET', '/metrics');
    assert.equal(before.status, 200);
    assert.match(String(before.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const m0 = parseMetrics(before.text);
    const out = path.join(work, 'down.bin');
    const r = await startCli(['recv', ...common, `${user}@127.0.0.1:/a.bin`, out], work).done;
    assert.equal(r.code, 0, r.stderr);
    const stranger = await startCli(['send', '-P', String(server.port), '-i', path.join(work, 'stranger'), '--host-key-fingerprint', server.hostKeyFingerprint, out, `${user}@127.0.0.1:/`], work).done;
    assert.notEqual(stranger.code, 0);
    const m1 = await until('the download counted', async () => {
      const m = parseMetrics((await request(api, 'GET', '/metrics')).text);
      return (m.get('tachyon_transfer_sessions_total{outcome="completed"}') ?? 0) > (m0.get('tachyon_transfer_sessions_total{outcome="completed"}') ?? 0) &&
        (m.get('tachyon_transfer_refusals_total{reason="auth"}') ?? 0) > 0
        ? m
        : undefined;
    });
    const d = (k: string): number => (m1.get(k) ?? 0) - (m0.get(k) ?? 0);
    assert.equal(d('tachyon_transfer_bytes_total{direction="download"}'), 2_500_000);
    const cancelledDownload = m0.get('tachyon_transfer_bytes_total{direction="download"}')!;
    assert.ok(cancelledDownload > 0 && cancelledDownload < 2_500_000, `the cancelled download's bytes: ${cancelledDownload}`);
    assert.equal(d('tachyon_transfer_bytes_total{direction="upload"}'), 0);
    assert.equal(d('tachyon_transfer_sessions_total{outcome="completed"}'), 1);
    assert.ok(d('tachyon_transfer_datagrams_sent_total') >= Math.ceil(2_500_000 / 1472), 'datagrams sent');
    assert.ok(d('tachyon_transfer_refusals_total{reason="auth"}') >= 1);
    // the totals match what the earlier tests did: 5 MB + part of the cancelled + 10 kB uploaded
    const up = m1.get('tachyon_transfer_bytes_total{direction="upload"}')!;
    assert.ok(up >= 5_010_000 && up < 11_010_000, `upload bytes ${up}`);
    assert.equal(m1.get('tachyon_transfer_sessions_total{outcome="cancelled"}'), 2);
    assert.equal(m1.get('tachyon_transfer_sessions_active'), 0);
    const ratio = m1.get('tachyon_transfer_retransmission_ratio')!;
    assert.ok(ratio >= 0 && ratio < 1);
    assert.equal(ratio, m1.get('tachyon_transfer_retransmits_total')! / m1.get('tachyon_transfer_datagrams_sent_total')!);
    assert.ok(m1.has('tachyon_transfer_goodput_bits_per_second'));
    assert.ok(m1.has('process_cpu_user_seconds_total') && m1.has('nodejs_heap_size_total_bytes'), 'process metrics');
    // a second instance has a registry of its own: the global default stays empty
    const { register } = await import('prom-client');
    assert.equal((await register.metrics()).trim(), '');
  });

  it('bad input: unknown ids are 404, bad paging and filters 400, no credentials 401', async () => {
    assert.equal((await request(api, 'GET', `/ops/transfers/${randomUUID()}`)).status, 404);
    assert.equal((await request(api, 'GET', '/ops/transfers/not-an-id')).status, 404);
    assert.equal((await request(api, 'GET', '/ops/transfers/..%2F..%2Fetc')).status, 404);
    assert.equal((await request(api, 'POST', `/ops/transfers/${randomUUID()}/cancel`)).status, 404);
    for (const q of ['limit=0', 'limit=1001', 'limit=abc', 'offset=-1', 'offset=1.5', 'limit=', 'status=done', 'direction=sideways', 'since=yesterday', 'until=2026-13-45', 'bogus=1', 'limit=1&limit=2', 'user=']) {
      const r = await request(api, 'GET', `/ops/transfers?${q}`);
      assert.equal(r.status, 400, `${q}: ${r.text}`);
      assert.equal(r.json().code, 'USAGE');
    }
    assert.equal((await request(api, 'GET', '/ops/transfers', null)).status, 401);
    assert.equal((await request(api, 'GET', '/ops/transfers/events?x=1')).status, 400);
    // paging: offset/limit over this run's transfers, the total in X-Total-Count
    const all = await request(api, 'GET', `/ops/transfers?user=${user}&limit=1000`);
    const total = Number(all.headers['x-total-count']);
    assert.ok(total >= 5, `total ${total}`);
    const ids: string[] = [];
    for (let off = 0; off < total; off += 2) {
      const p = await request(api, 'GET', `/ops/transfers?user=${user}&offset=${off}&limit=2`);
      assert.equal(p.headers['x-total-count'], String(total));
      ids.push(...(p.json().transfers as TransferRecord[]).map((t) => t.id));
    }
    assert.deepEqual(ids, (all.json().transfers as TransferRecord[]).map((t) => t.id));
    assert.equal(new Set(ids).size, total);
    // time range: everything started before now, nothing after
    const now = new Date().toISOString();
    assert.equal((await request(api, 'GET', `/ops/transfers?user=${user}&until=${now}`)).headers['x-total-count'], String(total));
    assert.equal((await request(api, 'GET', `/ops/transfers?user=${user}&since=${now}`)).headers['x-total-count'], '0');
    assert.equal((await request(api, 'GET', `/ops/transfers?user=${user}&direction=download`)).headers['x-total-count'], '2');
  });

  it('an application with open event streams still closes (the streams end)', async () => {
    const other = Fastify();
    await other.register(async (scope) => opsRoutes({ monitor, heartbeatMs: 60_000 })(scope, testContext()));
    await other.listen({ host: '127.0.0.1', port: 0 });
    const feed = await openEvents((other.server.address() as { port: number }).port);
    assert.equal(feed.status, 200);
    const n = monitor.subscriberCount();
    assert.ok(n >= 1);
    try {
      const closed = await Promise.race([other.close().then(() => true), new Promise((r) => setTimeout(() => r(false), 5_000))]);
      assert.equal(closed, true, 'close() returned');
      assert.equal(monitor.subscriberCount(), n - 1);
    } finally {
      feed.close();
    }
  });

  it('an access key sees and cancels only the transfers made with its tokens', async () => {
    // sessions of SSH-key users have no access key: invisible to the key
    const r = await request(api, 'GET', '/ops/transfers', KEY);
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-total-count'], '0');
    assert.equal((await request(api, 'GET', `/ops/transfers/${firstId}`, KEY)).status, 404);
    assert.equal((await request(api, 'POST', `/ops/transfers/${firstId}/cancel`, KEY)).status, 404);
    // a download with a transfer spec whose token the key's setup issued: attributed to the key
    const { spec } = buildTransferSpec(
      { codec, host: '127.0.0.1', sshPort: server.port, udpPort: server.port, user: 'xfer', hostKeyFingerprint: server.hostKeyFingerprint },
      { accessKeyId: AK, storageRoot: `file://${root}`, permissions: ['read', 'list'] },
      'download',
      { paths: [{ source: 'small.bin' }] },
    );
    const specFile = path.join(work, 'spec.json');
    writeFileSync(specFile, JSON.stringify({ transfer_spec: spec }));
    const got = path.join(work, 'got');
    mkdirSync(got);
    const dl = await startCli(['recv', '--transfer-spec', specFile, got], work).done;
    assert.equal(dl.code, 0, dl.stderr);
    const byToken = await until('the token transfer', async () => {
      const x = (await request(api, 'GET', '/ops/transfers', KEY)).json() as { total: number; transfers: TransferRecord[] };
      return x.total === 1 && x.transfers[0]!.status === 'completed' ? x.transfers[0]! : undefined;
    });
    assert.equal(byToken.accessKeyId, AK);
    assert.equal(byToken.user, 'xfer');
    assert.equal(byToken.bytes, 10_000);
    assert.equal(((await request(api, 'GET', `/ops/transfers/${byToken.id}`, KEY)).json() as TransferDetail).fileList[0]!.path, 'small.bin');
    // a running session of the key (reported directly to the monitor) can be cancelled by it
    let cancelled = false;
    const s = monitor.begin({ correlationId: 'c1', user, accessKeyId: AK, clientAddress: '127.0.0.1', direction: 'download', cipher: 'aes-128-gcm', cancel: () => (cancelled = true) });
    const mine = await request(api, 'GET', '/ops/transfers', KEY);
    assert.equal(mine.headers['x-total-count'], '2');
    assert.equal(mine.json().transfers[0].id, s.id);
    assert.equal(mine.json().transfers[0].accessKeyId, AK);
    assert.equal((await request(api, 'POST', `/ops/transfers/${s.id}/cancel`, KEY)).status, 202);
    assert.ok(cancelled);
    s.ended({ ok: false, error: new TachyonError('CANCELLED', 'cancelled') });
    assert.equal(((await request(api, 'GET', `/ops/transfers/${s.id}`, KEY)).json() as TransferRecord).status, 'cancelled');
  });
});
