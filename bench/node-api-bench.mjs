#!/usr/bin/env node
/**
 * Node API benchmark: a real `tachyon serve --config` child with `nodeApi` and
 * `transferTokens` (a CA and certificate from `ca init` / `cert issue`, the production
 * argon2id cost), an admin key made by the CLI, an access key and a bearer token made
 * through the API, then
 *   0. autocannon on `POST /files/upload_setup` with the bearer token: the target
 *      (≥ 2,000 req/s, p99 < 50 ms), through the real HTTPS application;
 *   1. autocannon on a bearer-authenticated read (GET /files/stat), no argon2 on it;
 *   2. the same with HTTP Basic (argon2id on every request), for comparison;
 *   3. browsing a directory of N entries (default 100,000) in pages of 1,000, by name, size
 *      and mtime: R rounds (default 5), each sort's first page cold (the listing cache's
 *      2 s age bound has passed) and 9 more pages warm; medians over the rounds.
 * Run `npx tsc --build` first. Usage: node bench/node-api-bench.mjs [--entries N] [--seconds S]
 * [--connections C] [--rounds R] [--browse-only 1] (skip 0-2)
 * autocannon's own TLS client does not verify certificates; that is the load generator,
 * not a Tachyon client.
 */
import { spawn, execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { Buffer } from 'node:buffer';
import { request } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout } from 'node:timers';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(repo, 'bin', 'tachyon.js');
const { clientAgent } = await import(path.join(repo, 'dist/src/node-api/pki.js'));

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const ENTRIES = arg('entries', 100_000);
const SECONDS = arg('seconds', 10);
const CONNECTIONS = arg('connections', 10);
const ROUNDS = arg('rounds', 5);
const BROWSE_ONLY = arg('browse-only', 0) === 1;

const work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-napi-bench-'));
const root = path.join(work, 'tachyon-data', 'files', 'bench');
mkdirSync(path.join(root, 'big'), { recursive: true });
process.stderr.write(`creating ${ENTRIES} files …\n`);
for (let i = 0; i < ENTRIES; i++) closeSync(openSync(path.join(root, 'big', `f${String(i).padStart(7, '0')}`), 'w'));

for (const args of [
  ['ca', 'init', '--dir', 'ca'],
  ['cert', 'issue', '--ca', 'ca', '--name', 'localhost', '--ip', '127.0.0.1', '--out', 'tls/node'],
]) execFileSync(process.execPath, [bin, ...args], { cwd: work, stdio: 'ignore' });
const cfgFile = path.join(work, 'tachyon.json');
writeFileSync(
  cfgFile,
  JSON.stringify({
    listen: '127.0.0.1',
    port: 0,
    database: 'tachyon.db',
    allowedRoots: [`file://${path.join(work, 'tachyon-data', 'files')}/*`],
    auditLog: 'audit.log',
    transferTokens: { user: 'xfer', nodeId: 'bench-node', keyFile: 'token.key' },
    nodeApi: { port: 0, certFile: 'tls/node.crt', keyFile: 'tls/node.key' },
  }),
);
const child = spawn(process.execPath, [bin, 'serve', '--config', cfgFile, '--json'], { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
let out = '';
let err = '';
child.stdout.on('data', (d) => (out += d));
child.stderr.on('data', (d) => (err += d));
let url;
for (let i = 0; i < 300 && !url; i++) {
  await new Promise((r) => setTimeout(r, 100));
  const line = out.split('\n').find((l) => l.includes('"node-api.start"'));
  if (line) url = JSON.parse(line).url;
}
if (!url) throw new Error(`no node API:\n${err}`);
const port = Number(new URL(url).port);
const caFile = path.join(work, 'ca', 'ca.crt');
const agent = clientAgent({ caFile });

function call(method, p, { auth, body } = {}) {
  return new Promise((resolve, reject) => {
    const headers = { ...(auth ? { authorization: auth } : {}), ...(body ? { 'content-type': 'application/json' } : {}) };
    const req = request({ host: '127.0.0.1', port, method, path: p, agent, headers }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, json: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

const admin = JSON.parse(execFileSync(process.execPath, [bin, 'access-key', 'create', '--admin', '--config', cfgFile, '--json'], { cwd: work }).toString());
const adminAuth = `Basic ${Buffer.from(`${admin.id}:${admin.secret}`).toString('base64')}`;
const key = (await call('POST', '/access_keys', { auth: adminAuth, body: { storage_root: `file://${root}`, permissions: ['list', 'read', 'write', 'mkdir'] } })).json;
const basic = `Basic ${Buffer.from(`${key.id}:${key.secret}`).toString('base64')}`;
const token = (await call('POST', '/auth/token', { auth: basic, body: {} })).json.access_token;

async function cannon(title, auth, seconds, o = {}) {
  const r = await autocannon({ url: `${url}${o.path ?? '/files/stat?path=/big'}`, connections: CONNECTIONS, duration: seconds, headers: { authorization: auth, ...(o.body ? { 'content-type': 'application/json' } : {}) }, ...(o.body ? { method: 'POST', body: o.body } : {}) });
  const out = { title, requestsPerSec: Math.round(r.requests.average), p50ms: r.latency.p50, p99ms: r.latency.p99, non2xx: r.non2xx, errors: r.errors, connections: CONNECTIONS, seconds };
  process.stderr.write(`${JSON.stringify(out)}\n`);
  return out;
}

const results = { entries: ENTRIES, cpus: os.cpus().length, loadavg: os.loadavg().map((x) => Number(x.toFixed(2))) };
const setupBody = JSON.stringify({ transfer_requests: [{ transfer_request: { paths: [{ source: '/local/clip.mxf', destination: 'clip.mxf' }], destination_root: '/incoming' } }] });
const probe = await call('POST', '/files/upload_setup', { auth: `Bearer ${token}`, body: JSON.parse(setupBody) });
if (probe.status !== 200) throw new Error(`upload_setup: ${probe.status} ${JSON.stringify(probe.json)}`);
if (!BROWSE_ONLY) results.uploadSetup = await cannon('bearer POST /files/upload_setup', `Bearer ${token}`, SECONDS, { path: '/files/upload_setup', body: setupBody });
if (!BROWSE_ONLY) results.bearer = await cannon('bearer GET /files/stat', `Bearer ${token}`, SECONDS);
if (!BROWSE_ONLY) results.basic = await cannon('basic (argon2id) GET /files/stat', basic, Math.max(3, Math.round(SECONDS / 2)));

async function pages(sort) {
  await new Promise((r) => setTimeout(r, 2200)); // past the listing cache's age bound: cold
  const times = [];
  for (let i = 0; i < 10; i++) {
    const t = performance.now();
    const r = await call('GET', `/files/browse?path=/big&limit=1000&offset=${i * 1000}&sort=${sort}`, { auth: `Bearer ${token}` });
    times.push(Number((performance.now() - t).toFixed(1)));
    if (r.status !== 200 || r.json.entries.length !== Math.min(1000, ENTRIES - i * 1000)) throw new Error(`browse ${sort} page ${i}: ${r.status}`);
    if (i === 0 && Number(r.headers['x-total-count']) !== ENTRIES) throw new Error('X-Total-Count');
  }
  const warm = times.slice(1).sort((a, b) => a - b);
  const out = { sort, firstPageMs: times[0], warmMedianMs: warm[Math.floor(warm.length / 2)], warmMaxMs: warm[warm.length - 1] };
  process.stderr.write(`${JSON.stringify(out)}\n`);
  return out;
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rounds = { name: [], size: [], mtime: [] };
for (let r = 0; r < ROUNDS; r++) for (const sort of ['name', 'size', 'mtime']) rounds[sort].push(await pages(sort));
for (const sort of ['name', 'size', 'mtime']) {
  const rs = rounds[sort];
  results[`browseBy${sort[0].toUpperCase()}${sort.slice(1)}`] = {
    rounds: rs.length,
    firstPageMs: rs.map((x) => x.firstPageMs),
    firstPageMedianMs: median(rs.map((x) => x.firstPageMs)),
    laterPagesMedianMs: median(rs.map((x) => x.warmMedianMs)),
    laterPagesMaxMs: Math.max(...rs.map((x) => x.warmMaxMs)),
  };
}
results.loadavgAfter = os.loadavg().map((x) => Number(x.toFixed(2)));
console.log(JSON.stringify(results, null, 2));
agent.destroy();
child.kill('SIGTERM');
await new Promise((r) => child.once('close', r));
rmSync(work, { recursive: true, force: true });
