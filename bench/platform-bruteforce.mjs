#!/usr/bin/env node
/**
 * Brute force against the web platform's sign-in endpoint (issue #6, first target).
 *
 * A child process serves the platform the way production does — a SQLite file, the
 * audit records in the database (DatabaseAuditSink), argon2id at its production cost
 * (19 MiB, t=2, p=1), a real ScoringDefender, HTTPS with a certificate from a private CA
 * (`--http` for plain HTTP) — with one tenant whose policy has the chosen `lockoutScope`,
 * an `owner` account and N users. The parent then
 *   0. baseline: the N users sign in for a few seconds, each from its own address
 *      (127.0.0.2 …), with the right password, `--legit-rate` sign-ins a second in all
 *      (open loop: each user on a fixed period, whether or not the last one answered);
 *   1. attack: 10,000 wrong-password sign-ins on `owner` from 127.0.0.1, 50 in flight,
 *      while the N users keep signing in as in 0;
 *   2. the owner signs in with the right password from a clean address (127.0.0.200).
 * and reports the attempts that reached the password check (the `web.signin` records of
 * 127.0.0.1 in the audit table), refusals by status, the legitimate sign-ins and their
 * p50/p95/p99 latency in both phases, and the owner's answer.
 *
 * Run `npx tsc --build` first. Usage:
 *   node bench/platform-bruteforce.mjs [--scope address|account|both] [--attempts 10000]
 *     [--in-flight 50] [--users 8] [--legit-rate 8] [--threshold 15] [--baseline-seconds 10]
 *     [--attacker-nice 10] [--threadpool N] [--http] [--json]
 * The attacker runs in its own process at `nice` 10 (`--attacker-nice 0`: same priority):
 * on one machine the load generator's CPU competes with the server's, which a remote
 * attacker's would not.
 * BENCH_SERVER_PROFILE=DIR writes a V8 CPU profile of the server process into DIR.
 * (Linux: every 127/8 address is local, so `localAddress` picks the source address.)
 */
import { Buffer } from 'node:buffer';
import { fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { setTimeout } from 'node:timers';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => path.join(repo, 'dist', 'src', p);

const USER_PW = 'quiet lantern over 9 hills';
const OWNER_PW = 'violet-harbour-engine-47';
const TENANT = 'bench';

// --------------------------------------------------------------------------------------
// child: the platform server
// --------------------------------------------------------------------------------------

async function serve() {
  const cfg = JSON.parse(process.env.BENCH_CONFIG ?? '{}');
  const { openDatabase } = await import(dist('db/database.js'));
  const { ScoringDefender } = await import(dist('defender/index.js'));
  const { createPlatformApp } = await import(dist('platform/app.js'));
  const { IdentityService } = await import(dist('platform/service.js'));
  const { DatabaseAuditSink } = await import(dist('platform/audit-store.js'));
  const { applyPolicyUpdate, DEFAULT_POLICY } = await import(dist('platform/policy.js'));
  const { ensureLocalCertificate } = await import(dist('node-api/pki.js'));

  const dir = cfg.dir;
  const database = await openDatabase({ url: `sqlite://${path.join(dir, 'platform.db')}` });
  const audit = await DatabaseAuditSink.open(database);
  const identity = new IdentityService({ database, audit });
  const defender = await ScoringDefender.open({ database, audit, settings: { threshold: cfg.threshold } });
  let https;
  if (!cfg.http) {
    const tls = await ensureLocalCertificate({ caDir: path.join(dir, 'ca'), prefix: path.join(dir, 'tls', 'platform') });
    https = { key: readFileSync(tls.keyFile), cert: readFileSync(tls.certFile) };
    cfg.caFile = tls.caFile;
  }
  const web = createPlatformApp({ identity, defender, ...(https ? { https } : { insecureHttp: true }) });

  const tenant = await identity.createTenant(TENANT, 'Bench Ltd');
  await identity.repo.setPolicy(tenant.id, applyPolicyUpdate(DEFAULT_POLICY, { lockoutScope: cfg.scope }), new Date().toISOString());
  await identity.provisionUser(tenant.id, { username: 'owner', password: OWNER_PW });
  for (let i = 0; i < cfg.users; i++) await identity.provisionUser(tenant.id, { username: `user${i}`, password: USER_PW });

  await web.app.listen({ host: '127.0.0.1', port: 0 });
  const port = web.app.server.address().port;
  process.send({ ready: true, port, caFile: cfg.caFile ?? null, threadpool: process.env.UV_THREADPOOL_SIZE ?? '4 (default)' });

  const loop = monitorEventLoopDelay({ resolution: 10 });
  let cpu0 = process.cpuUsage();
  let wall0 = performance.now();
  // CPU and event-loop delay since the last mark
  const interval = () => {
    const cpu = process.cpuUsage(cpu0);
    const wall = performance.now() - wall0;
    const r = {
      cpuPercent: Math.round(((cpu.user + cpu.system) / 1000 / wall) * 100),
      eventLoopDelayP99Ms: Math.round(loop.percentile(99) / 1e4) / 100,
      eventLoopDelayMaxMs: Math.round(loop.max / 1e4) / 100,
    };
    cpu0 = process.cpuUsage();
    wall0 = performance.now();
    loop.reset();
    loop.enable();
    return r;
  };
  process.on('message', async (m) => {
    if (m === 'mark') {
      // the start of a phase: returns the last phase's figures
      process.send({ marked: interval() });
    } else if (m === 'stats') {
      const server = interval();
      loop.disable();
      await audit.flush();
      await defender.settled();
      const rows = await database.db.selectFrom('platform_audit').select(['type', 'line']).where('type', 'in', ['web.signin', 'web.lockout', 'web.refusal', 'defender.block']).execute();
      const stats = { checksByAddress: {}, reasonsFromAttacker: {}, lockouts: [], refusalRecords: 0, blocks: [] };
      for (const r of rows) {
        const f = JSON.parse(r.line).fields ?? {};
        if (r.type === 'web.signin') {
          stats.checksByAddress[f.clientAddress] = (stats.checksByAddress[f.clientAddress] ?? 0) + 1;
          if (f.clientAddress === '127.0.0.1') stats.reasonsFromAttacker[f.reason] = (stats.reasonsFromAttacker[f.reason] ?? 0) + 1;
        } else if (r.type === 'web.lockout') {
          stats.lockouts.push({ user: f.user, scope: f.scope, lockedAddress: f.lockedAddress ?? null, failures: f.failures });
        } else if (r.type === 'web.refusal') {
          stats.refusalRecords++;
        } else {
          stats.blocks.push({ address: f.clientAddress, score: f.score });
        }
      }
      stats.blocked = { '127.0.0.1': defender.isBlocked('127.0.0.1') };
      stats.server = server;
      process.send({ stats });
    } else if (m === 'close') {
      await web.app.close();
      await defender.close();
      await audit.close();
      await database.close();
      process.exit(0);
    }
  });
}

// --------------------------------------------------------------------------------------
// parent: the load
// --------------------------------------------------------------------------------------

function opt(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = process.argv[i + 1];
  return typeof def === 'number' ? Number(v) : v;
}
const flag = (name) => process.argv.includes(`--${name}`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function summary(latencies) {
  const s = [...latencies].sort((a, b) => a - b);
  const r = (v) => (v === null ? null : Math.round(v * 10) / 10);
  return { count: s.length, p50: r(percentile(s, 50)), p95: r(percentile(s, 95)), p99: r(percentile(s, 99)), max: r(s.at(-1) ?? null) };
}

/** A sign-in client: one keep-alive agent per source address. */
function makeClient({ http, port, ca, inFlight }) {
  const agents = new Map();
  const agentFor = (localAddress) => {
    let a = agents.get(localAddress);
    if (!a) {
      const maxSockets = localAddress === '127.0.0.1' ? inFlight : 4;
      a = http ? new HttpAgent({ keepAlive: true, localAddress, maxSockets }) : new HttpsAgent({ keepAlive: true, localAddress, maxSockets, ca, servername: 'localhost' });
      agents.set(localAddress, a);
    }
    return a;
  };
  const signIn = (from, username, password) =>
    new Promise((resolve, reject) => {
      const data = JSON.stringify({ tenant: TENANT, username, password });
      const t0 = performance.now();
      const req = (http ? httpRequest : httpsRequest)(
        {
          host: '127.0.0.1',
          port,
          path: '/api/v1/auth/signin',
          method: 'POST',
          agent: agentFor(from),
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0 }));
        },
      );
      // a blocked address's new connections are closed at accept: counted as 'reset'
      req.on('error', (err) => (['ECONNRESET', 'EPIPE'].includes(err.code) ? resolve({ status: 'reset', ms: performance.now() - t0 }) : reject(err)));
      req.end(data);
    });
  return { signIn, close: () => agents.forEach((a) => a.destroy()) };
}

/** The attacker, in its own process: `attempts` wrong passwords on `owner` from 127.0.0.1, `inFlight` at a time. */
async function attack() {
  const cfg = JSON.parse(process.env.BENCH_ATTACK ?? '{}');
  const client = makeClient({ ...cfg, ca: cfg.caFile ? readFileSync(cfg.caFile) : undefined });
  const statuses = {};
  let sent = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: cfg.inFlight }, async () => {
      while (sent < cfg.attempts) {
        const i = sent++;
        const r = await client.signIn('127.0.0.1', 'owner', `wrong-guess-${i}-qwertyuiop`);
        statuses[r.status] = (statuses[r.status] ?? 0) + 1;
      }
    }),
  );
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  client.close();
  process.send({ done: true, statuses, ms, cpuPercent: Math.round(((cpu.user + cpu.system) / 1000 / ms) * 100) });
  process.disconnect();
}

function startServer(config) {
  const child = fork(fileURLToPath(import.meta.url), ['--serve'], {
    execArgv: process.env.BENCH_SERVER_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_SERVER_PROFILE}`] : [],
    env: { ...process.env, BENCH_CONFIG: JSON.stringify(config), ...(config.threadpool ? { UV_THREADPOOL_SIZE: String(config.threadpool) } : {}) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const next = (key) =>
    new Promise((resolve, reject) => {
      const onMsg = (m) => {
        if (m && m[key] !== undefined) {
          child.off('message', onMsg);
          resolve(m);
        }
      };
      child.on('message', onMsg);
      child.once('exit', (code) => reject(new Error(`server exited (${code})`)));
    });
  return { child, next };
}

async function run(scope, o) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-bruteforce-'));
  const { child, next } = startServer({ dir, scope, users: o.users, threshold: o.threshold, http: o.http, threadpool: o.threadpool });
  try {
    const ready = await next('ready');
    const ca = ready.caFile ? readFileSync(ready.caFile) : undefined;
    const client = makeClient({ http: o.http, port: ready.port, ca, inFlight: o.inFlight });
    const signIn = client.signIn;

    // open loop: each user signs in every `users / legitRate` seconds (staggered), whether or not the previous one has answered
    const legitimate = (isDone) => {
      const latencies = [];
      const statuses = {};
      const periodMs = (o.users / o.legitRate) * 1000;
      const workers = Array.from({ length: o.users }, async (_, i) => {
        const from = `127.0.0.${2 + i}`;
        const pending = [];
        await sleep((periodMs / o.users) * i);
        while (!isDone()) {
          pending.push(
            signIn(from, `user${i}`, USER_PW).then((r) => {
              latencies.push(r.ms);
              statuses[r.status] = (statuses[r.status] ?? 0) + 1;
            }),
          );
          await sleep(periodMs);
        }
        await Promise.all(pending);
      });
      return Promise.all(workers).then(() => ({ ...summary(latencies), statuses }));
    };

    const loadBefore = os.loadavg()[0];
    // 0. baseline
    child.send('mark');
    await next('marked');
    const baseEnd = performance.now() + o.baselineSeconds * 1000;
    const baseline = await legitimate(() => performance.now() >= baseEnd);

    // 1. attack, with the users signing in meanwhile
    child.send('mark');
    const serverBaseline = (await next('marked')).marked;
    let attackDone = false;
    const during = legitimate(() => attackDone);
    // the attacker in its own process, at `--attacker-nice` (default 10): on one machine the load
    // generator's CPU competes with the server's, which a remote attacker's does not
    const attacker = fork(fileURLToPath(import.meta.url), ['--attack'], {
      ...(o.attackerNice > 0 ? { execPath: 'nice', execArgv: ['-n', String(o.attackerNice), process.execPath] } : {}),
      env: { ...process.env, BENCH_ATTACK: JSON.stringify({ http: o.http, port: ready.port, caFile: ready.caFile, attempts: o.attempts, inFlight: o.inFlight }) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const attackResult = await new Promise((resolve, reject) => {
      attacker.once('message', resolve);
      attacker.once('exit', (code) => reject(new Error(`attacker exited (${code})`)));
    });
    attackDone = true;
    const legit = await during;
    const attackMs = attackResult.ms;
    const statuses = attackResult.statuses;

    // 2. the owner from a clean address
    const owner = await signIn('127.0.0.200', 'owner', OWNER_PW);

    child.send('stats');
    const { stats } = await next('stats');
    client.close();
    return {
      scope,
      transport: o.http ? 'http' : 'https',
      threadpool: ready.threadpool,
      defenderThreshold: o.threshold,
      attack: {
        attempts: o.attempts,
        inFlight: o.inFlight,
        seconds: Math.round(attackMs) / 1000,
        attackerCpuPercent: attackResult.cpuPercent,
        attackerNice: o.attackerNice,
        perSecond: Math.round(o.attempts / (attackMs / 1000)),
        reachedPasswordCheck: stats.checksByAddress['127.0.0.1'] ?? 0,
        reasons: stats.reasonsFromAttacker,
        statuses,
        refused: o.attempts - (statuses[401] ?? 0),
        blocked: stats.blocked['127.0.0.1'],
      },
      legitimate: { users: o.users, signInsPerSecond: o.legitRate, baseline, duringAttack: legit },
      loadAverage1m: { before: Math.round(loadBefore * 100) / 100, after: Math.round(os.loadavg()[0] * 100) / 100, cpus: os.cpus().length },
      lockouts: stats.lockouts,
      ownerFromCleanAddress: owner.status === 200 ? 'signed in (200)' : `refused (${owner.status})`,
      ownerStatus: owner.status,
      refusalAuditRecords: stats.refusalRecords,
      serverBaseline,
      serverDuringAttack: stats.server,
    };
  } finally {
    child.send('close');
    await new Promise((r) => child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

function table(r) {
  const l = r.legitimate;
  const lat = (s) => `${s.count} sign-ins, p50 ${s.p50} ms, p95 ${s.p95} ms, p99 ${s.p99} ms, max ${s.max} ms (statuses ${JSON.stringify(s.statuses)})`;
  return [
    `lockoutScope ${r.scope} · ${r.transport} · defender threshold ${r.defenderThreshold} · UV_THREADPOOL_SIZE ${r.threadpool} · load average ${r.loadAverage1m.before} → ${r.loadAverage1m.after} on ${r.loadAverage1m.cpus} CPUs`,
    `  attack            ${r.attack.attempts} wrong passwords from 127.0.0.1, ${r.attack.inFlight} in flight, ${r.attack.seconds} s (${r.attack.perSecond}/s; attacker process at nice ${r.attack.attackerNice}, ${r.attack.attackerCpuPercent}% CPU)`,
    `  reached the check ${r.attack.reachedPasswordCheck} (${Object.entries(r.attack.reasons).map(([k, v]) => `${k} ${v}`).join(', ')})`,
    `  refused           ${r.attack.refused} (statuses ${JSON.stringify(r.attack.statuses)}); 127.0.0.1 blocked: ${r.attack.blocked}`,
    `  lockouts          ${r.lockouts.map((x) => `${x.user} scope=${x.scope}${x.lockedAddress ? ` address=${x.lockedAddress}` : ''}`).join('; ') || 'none'}`,
    `  legit baseline    ${lat(l.baseline)}`,
    `  legit under attack ${lat(l.duringAttack)}`,
    `                    [${l.users} users from 127.0.0.2–127.0.0.${1 + l.users}, ${l.signInsPerSecond} sign-ins/s in all, open loop]`,
    `  server baseline   CPU ${r.serverBaseline.cpuPercent}% (main thread + argon2 threads), event-loop delay p99 ${r.serverBaseline.eventLoopDelayP99Ms} ms, max ${r.serverBaseline.eventLoopDelayMaxMs} ms`,
    `  server (attack)   CPU ${r.serverDuringAttack.cpuPercent}%, event-loop delay p99 ${r.serverDuringAttack.eventLoopDelayP99Ms} ms, max ${r.serverDuringAttack.eventLoopDelayMaxMs} ms; web.refusal records ${r.refusalAuditRecords}`,
    `  owner from 127.0.0.200 with the right password: ${r.ownerFromCleanAddress}`,
  ].join('\n');
}

if (process.argv[2] === '--serve' || process.argv[2] === '--attack') {
  // a child ends with its parent
  process.on('disconnect', () => process.exit(process.argv[2] === '--attack' ? 0 : 1));
  await (process.argv[2] === '--serve' ? serve() : attack());
} else {
  const o = {
    attempts: opt('attempts', 10_000),
    inFlight: opt('in-flight', 50),
    users: opt('users', 8),
    threshold: opt('threshold', 15),
    baselineSeconds: opt('baseline-seconds', 10),
    legitRate: opt('legit-rate', 8),
    attackerNice: opt('attacker-nice', 10),
    threadpool: opt('threadpool', 0),
    http: flag('http'),
  };
  if (o.users < 1 || o.users > 100) throw new Error('--users: 1–100');
  if (!(o.legitRate > 0)) throw new Error('--legit-rate: sign-ins per second, > 0');
  const which = opt('scope', 'address');
  const scopes = which === 'both' ? ['address', 'account'] : [which];
  const results = [];
  for (const scope of scopes) {
    if (scope !== 'address' && scope !== 'account') throw new Error('--scope: address, account or both');
    results.push(await run(scope, o));
    if (!flag('json')) process.stdout.write(`${table(results.at(-1))}\n\n`);
  }
  if (flag('json')) process.stdout.write(`${JSON.stringify(results.length === 1 ? results[0] : results, null, 2)}\n`);
}
