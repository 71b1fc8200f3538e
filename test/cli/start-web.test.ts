/**
 * `tachyon start` serves the web platform, end to end with real processes: a child
 * process of `bin/tachyon.js start --json` in a temporary directory (every port 0), the
 * bootstrap through `tachyon tenant create` / `tenant admin-add` (a one-time temporary
 * password), then over real HTTPS with node:https trusting only the generated CA
 * (`tachyon-data/ca/ca.crt`; verification is on, and a client that does not trust that CA
 * is refused): sign-in, TOTP enrolment that the service demands of administrators, the
 * forced password change, the audit records in the database; one Debian chromium that
 * loads /signin and signs in; the defender shared with the node API (failed web
 * sign-ins block the address for the node API too); `--no-web` does not listen;
 * `serve --config` with a `platform` section; the section's validation.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { type Browser } from 'playwright-core';
import { openDatabase } from '../../src/db/database.js';
import { clientAgent, ensureLocalCertificate } from '../../src/node-api/pki.js';
import { TachyonError } from '../../src/core/errors.js';
import { validateServerConfig } from '../../src/server/config.js';
import { Rng } from '../helpers/rng.js';
import { bin, jsonLines, runCli, startConfigServer } from '../helpers/cli.js';
import { httpsCall, WebClient } from '../node-api/helpers.js';
import { CHROMIUM, launchChromium, spkiHash } from '../helpers/browser.js';
import { codeAt } from '../helpers/totp.js';


interface Started {
  child: ChildProcessWithoutNullStreams;
  events: Record<string, unknown>[];
  stderr(): string;
  /** Sends SIGTERM and resolves with the exit code and signal (`0 null`: a clean exit). */
  stop(): Promise<string>;
}

/** Starts `tachyon start --json …` in `cwd`; resolves once its log shows `server.start` and, unless `web` is false, `web.start`. */
function startTachyon(cwd: string, args: string[], web = true): Promise<Started> {
  const child = spawn(process.execPath, [bin, 'start', '--json', ...args], { cwd, env: { ...process.env, HOME: cwd } });
  const events: Record<string, unknown>[] = [];
  let err = '';
  let buf = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<string>((resolve) => child.on('exit', (c, sig) => resolve(`${c} ${sig}`)));
  return new Promise<Started>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tachyon start did not start: ${err}`)), 30_000);
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const cut = buf.lastIndexOf('\n');
      if (cut < 0) return;
      events.push(...jsonLines(buf.slice(0, cut)));
      buf = buf.slice(cut + 1);
      const types = new Set(events.map((e) => e.type));
      if (types.has('server.start') && (!web || types.has('web.start'))) {
        clearTimeout(t);
        resolve({
          child,
          events,
          stderr: () => err,
          stop: async () => {
            child.kill('SIGTERM');
            return exited;
          },
        });
      }
    });
    void exited.then((c) => reject(new Error(`tachyon start exited with ${c}: ${err}`)));
  });
}

/** A TCP port nothing listens on (bound and released). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

describe('tachyon start serves the web platform', () => {
  let work: string;
  let data: string;
  let server: Started;
  let web: Record<string, unknown>;
  let api: Record<string, unknown>;
  let webPort: number;
  let agent: HttpsAgent;
  let alicePassword = '';

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-start-web-'));
    data = path.join(work, 'tachyon-data');
    server = await startTachyon(work, ['--port', '0', '--api-port', '0', '--web-port', '0']);
    web = server.events.find((e) => e.type === 'web.start')!;
    api = server.events.find((e) => e.type === 'node-api.start')!;
    webPort = web.port as number;
    agent = clientAgent({ caFile: path.join(data, 'ca', 'ca.crt'), keepAlive: false });
  });
  after(async () => {
    const code = await server?.stop();
    assert.equal(code, '0 null', `start ends cleanly on SIGTERM: ${server?.stderr()}`);
    rmSync(work, { recursive: true, force: true });
  });

  it('announces the HTTPS URL on loopback, with a certificate from the node API CA', () => {
    assert.equal(web.listen, '127.0.0.1');
    assert.equal(web.url, `https://127.0.0.1:${webPort}`);
    assert.equal(web.signin, `https://127.0.0.1:${webPort}/signin`);
    assert.equal(web.caFile, path.join(data, 'ca', 'ca.crt'));
    assert.notEqual(webPort, api.port);
    const ca = new X509Certificate(readFileSync(path.join(data, 'ca', 'ca.crt')));
    const leaf = new X509Certificate(readFileSync(path.join(data, 'tls', 'web.crt')));
    assert.ok(leaf.verify(ca.publicKey), 'the web certificate is signed by the CA the node API uses');
    assert.ok(existsSync(path.join(data, 'mfa.key')), 'the MFA key file is made on first start');
    assert.equal(statSync(path.join(data, 'mfa.key')).mode & 0o077, 0, 'readable by the owner only');
  });

  it('bootstraps a tenant and its administrator from the command line; bad input is refused with its exit code', async () => {
    const created = await runCli(['tenant', 'create', 'acme', '--name', 'Acme Ltd', '--json'], work);
    assert.equal(created.code, 0, created.stderr);
    const t = JSON.parse(created.stdout) as Record<string, unknown>;
    assert.equal(t.slug, 'acme');
    assert.equal(t.name, 'Acme Ltd');

    const added = await runCli(['tenant', 'admin-add', 'acme', 'alice', '--json'], work);
    assert.equal(added.code, 0, added.stderr);
    const a = JSON.parse(added.stdout) as Record<string, unknown>;
    assert.deepEqual(a.roles, ['tenant_admin']);
    assert.equal(a.mustChangePassword, true);
    alicePassword = String(a.temporaryPassword);
    assert.ok(alicePassword.length >= 24, 'a long random temporary password');

    const text = await runCli(['tenant', 'admin-add', 'acme', 'bob', '--display-name', 'Bob B'], work);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /temporary password \(shown once; must be changed at the first sign-in/);

    const list = await runCli(['tenant', 'list', '--json'], work);
    assert.deepEqual((JSON.parse(list.stdout) as { tenants: { slug: string }[] }).tenants.map((x) => x.slug), ['acme']);

    const bad: [string[], number, RegExp][] = [
      [['tenant', 'create', 'acme'], 73, /tenant 'acme' already exists/],
      [['tenant', 'create', 'Not A Slug'], 2, /tenant/],
      [['tenant', 'create', "x'; DROP TABLE platform_tenant; --"], 2, /tenant/],
      [['tenant', 'admin-add', 'nope', 'carol'], 66, /no tenant 'nope'/],
      [['tenant', 'admin-add', 'acme', 'alice'], 73, /already has a user 'alice'/],
      [['tenant', 'admin-add', 'acme', '<script>'], 2, /user/i],
      [['tenant', 'reset-password', 'acme', 'nobody'], 66, /no user 'nobody'/],
    ];
    for (const [args, code, message] of bad) {
      const r = await runCli(args, work);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
    }
    // the operator's changes are in the audit log file; the passwords nowhere in it
    const audit = readFileSync(path.join(data, 'audit.log'), 'utf8');
    const changes = jsonLines(audit).filter((e) => e.type === 'config.change').map((e) => (e.fields as Record<string, unknown>).action);
    assert.deepEqual(changes, ['tenant.create', 'tenant.admin-add', 'tenant.admin-add']);
    assert.ok(!audit.includes(alicePassword), 'no password in the audit log');
    assert.ok(!server.stderr().includes(alicePassword), 'nor in the server output');
  });

  it('over HTTPS trusting only the CA: the administrator signs in, must enrol TOTP and change the temporary password, then administers', async () => {
    // a client that does not trust the CA is refused by TLS (verification is on)
    await assert.rejects(httpsCall(new HttpsAgent({ keepAlive: false }), webPort, 'GET', '/signin'), /self.signed|unable to verify|certificate/i);
    const page = await httpsCall(agent, webPort, 'GET', '/signin');
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(String(page.headers['strict-transport-security']), /max-age=/);

    const c = new WebClient(agent, webPort);
    const wrong = await c.req('POST', '/api/v1/auth/signin', { tenant: 'acme', username: 'alice', password: 'not the password at all' });
    assert.equal(wrong.status, 401);
    const r = await c.req('POST', '/api/v1/auth/signin', { tenant: 'acme', username: 'alice', password: alicePassword });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body['passwordChangeRequired'], true);
    assert.equal(r.body['secondFactor'], 'enrol', 'a local administrator enrols TOTP first');
    assert.match(String(r.headers['set-cookie']), /Secure; HttpOnly; SameSite=Strict/);
    assert.equal((await c.req('GET', '/api/v1/users')).status, 403, 'nothing else before enrolment');

    const e = await c.req('POST', '/api/v1/me/totp/enrol');
    assert.equal(e.status, 200, e.text);
    const ok = await c.req('POST', '/api/v1/me/totp/confirm', { code: codeAt(String(e.body['secret']), Date.now()) });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body['secondFactor'], null);
    assert.equal((await c.req('GET', '/api/v1/users')).status, 403, 'the temporary password must be changed first');
    const NEW = 'copper lighthouse at 7 bells';
    const ch = await c.req('POST', '/api/v1/me/password', { currentPassword: alicePassword, newPassword: NEW });
    assert.equal(ch.status, 204, ch.text);
    const users = await c.req('GET', '/api/v1/users');
    assert.equal(users.status, 200, users.text);
    assert.deepEqual((users.body['users'] as { username: string }[]).map((u) => u.username).sort(), ['alice', 'bob']);
    // the audit views, the allow-list and the blocks are served by the started server (docs/platform-admin.md)
    const audit = await c.req('GET', '/api/v1/audit?action=web.signin');
    assert.equal(audit.status, 200, audit.text);
    assert.deepEqual((audit.body['entries'] as { outcome: string }[]).map((x) => x.outcome), ['failure', 'pending', 'success']);
    const exported = await c.req('GET', '/api/v1/audit/export?format=jsonl');
    assert.equal(exported.status, 200, exported.text);
    assert.equal(exported.headers['x-audit-chain'], 'ok');
    assert.match(exported.text.trim().split('\n').at(-1) ?? '', /"type":"audit\.export".*"chain":"ok"/);
    assert.equal((await c.req('GET', '/api/v1/allow-list')).status, 200);
    assert.equal((await c.req('GET', '/api/v1/blocks')).status, 200);

    // the web records are in the same database (platform_audit), with the audit log's chain
    const db = await openDatabase({ url: `sqlite://${path.join(data, 'tachyon.db')}` });
    try {
      const rows = await db.db.selectFrom('platform_audit').select(['type', 'line']).where('tenant', '=', 'acme').orderBy('seq').execute();
      const signins = rows.filter((x) => x.type === 'web.signin').map((x) => (JSON.parse(x.line) as { fields: Record<string, unknown> }).fields['result']);
      assert.deepEqual(signins, ['failure', 'pending', 'success'], 'wrong password, the password, the enrolment that completes the sign-in');
      assert.ok(rows.some((x) => x.type === 'web.change'), 'the password change is audited');
      assert.ok(rows.every((x) => !x.line.includes(alicePassword) && !x.line.includes(NEW)), 'no password in the records');
    } finally {
      await db.close();
    }
  });

  it('chromium loads /signin over HTTPS from the started server and signs in (the Secure cookie is kept)', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent` }, async () => {
    const reset = await runCli(['tenant', 'reset-password', 'acme', 'bob', '--json'], work);
    assert.equal(reset.code, 0, reset.stderr);
    const bobPassword = String((JSON.parse(reset.stdout) as Record<string, unknown>).temporaryPassword);
    const spki = spkiHash(readFileSync(path.join(data, 'tls', 'web.crt')));
    let browser: Browser | undefined;
    try {
      browser = await launchChromium(spki);
      const context = await browser.newContext({ ignoreHTTPSErrors: false, baseURL: String(web.url) });
      const page = await context.newPage();
      const problems: string[] = [];
      page.on('pageerror', (x) => problems.push(x.message));
      await page.goto('/signin');
      await page.waitForSelector('body[data-ready="true"]', { timeout: 10_000 });
      assert.equal(new URL(page.url()).protocol, 'https:');
      await page.getByLabel('Organisation').fill('acme');
      await page.getByLabel('User name').fill('bob');
      await page.getByLabel('Password').fill(bobPassword);
      await page.getByRole('button', { name: 'Sign in' }).click();
      // a tenant administrator of a local account must enrol TOTP before anything else (the
      // pending session may not even change the password): the sign-in page sends bob there
      await page.waitForURL(`${String(web.url)}/totp?required=1`, { timeout: 10_000 });
      const session = (await context.cookies()).find((x) => x.name === '__Host-tachyon-session');
      assert.ok(session, 'the session cookie is stored');
      assert.equal(session.secure, true);
      assert.deepEqual(problems, []);
    } finally {
      await browser?.close();
    }
  });

  it('one defender: failed web sign-ins block the address for the web app and the node API alike', async () => {
    const c = new WebClient(agent, webPort);
    // the web app closes a blocked address's connection after its last answer and its new
    // connections at accept (status 0 here); a request already on an open one gets 403
    const statusOf = async (call: Promise<{ status: number; text?: string }>): Promise<{ status: number; text: string }> => {
      try {
        const r = await call;
        return { status: r.status, text: r.text ?? '' };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ECONNRESET' || (err as NodeJS.ErrnoException).code === 'EPIPE') return { status: 0, text: '' };
        throw err;
      }
    };
    let blockedAt = 0;
    for (let i = 1; i <= 40; i++) {
      const r = await statusOf(c.req('POST', '/api/v1/auth/signin', { tenant: 'acme', username: 'mallory', password: `wrong password ${i}` }));
      if (r.status === 403 || r.status === 0) {
        blockedAt = i;
        break;
      }
      assert.equal(r.status, 401, r.text);
    }
    assert.ok(blockedAt > 1, 'the address is blocked within the threshold');
    assert.ok([0, 403].includes((await statusOf(httpsCall(agent, webPort, 'GET', '/signin'))).status));
    const nodeApi = await httpsCall(agent, api.port as number, 'GET', '/info');
    assert.equal(nodeApi.status, 403, nodeApi.text);
    const list = await runCli(['defender', 'list', '--json', '--data', data], work);
    assert.match(list.stdout, /127\.0\.0\.1/, list.stderr);
  });
});

describe('tachyon start --no-web', () => {
  it('does not listen on the web port, makes no web certificate and prints no web URL', async () => {
    const work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-start-noweb-'));
    let s: Started | undefined;
    try {
      const port = await freePort();
      s = await startTachyon(work, ['--port', '0', '--no-api', '--no-web', '--web-port', String(port)], false);
      assert.equal(s.events.some((e) => e.type === 'web.start'), false);
      assert.equal(await connects(port), false, 'nothing listens on the web port');
      assert.equal(existsSync(path.join(work, 'tachyon-data', 'tls', 'web.crt')), false);
      assert.doesNotMatch(s.stderr(), /web app/);
    } finally {
      const code = String(await s?.stop());
      assert.equal(code, '0 null', s?.stderr() ?? '');
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('tachyon start without --json', () => {
  it('prints the sign-in URL and the bootstrap commands on stderr', async () => {
    const work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-start-text-'));
    const child = spawn(process.execPath, [bin, 'start', '--port', '0', '--no-api', '--web-port', '0'], { cwd: work, env: { ...process.env, HOME: work } });
    try {
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      await new Promise<void>((resolve, reject) => {
        const t = setInterval(() => {
          if (/tenant admin-add/.test(err)) {
            clearInterval(t);
            resolve();
          }
        }, 20);
        child.on('exit', (c) => reject(new Error(`exited with ${c}: ${err}`)));
      });
      assert.match(err, /^web app: https:\/\/127\.0\.0\.1:\d+\/signin \(browsers trust the CA .*tachyon-data\/ca\/ca\.crt\)$/m);
      assert.match(err, /npx tachyon tenant create acme && npx tachyon tenant admin-add acme alice/);
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('serve --config with a platform section', () => {
  it('serves the web platform on the configured port with the configured certificate', async () => {
    const work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-serve-web-'));
    try {
      const pki = await ensureLocalCertificate({ caDir: path.join(work, 'ca'), prefix: path.join(work, 'web') });
      const cfg = path.join(work, 'tachyon.json');
      writeFileSync(cfg, JSON.stringify({ port: 0, allowedRoots: [`file://${work}/files/*`], platform: { port: 0, certFile: 'web.crt', keyFile: 'web.key' } }));
      const s = await startConfigServer(cfg, work, { until: 'web.start' });
      try {
        const ev = s.event;
        assert.equal(ev.listen, '127.0.0.1', 'loopback unless configured');
        const r = await httpsCall(clientAgent({ caFile: pki.caFile, keepAlive: false }), ev.port as number, 'GET', '/signin');
        assert.equal(r.status, 200);
        assert.ok(existsSync(path.join(work, 'mfa.key')), 'the MFA key next to the configuration');
      } finally {
        const exited = new Promise((resolve) => s.child.once('exit', resolve));
        s.child.kill('SIGTERM');
        await exited;
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('a missing certificate or a port in use stops the server with CONFIG and a message that names the web platform', async () => {
    const work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-serve-web-bad-'));
    const busy = net.createServer();
    try {
      await ensureLocalCertificate({ caDir: path.join(work, 'ca'), prefix: path.join(work, 'web') });
      await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
      const busyPort = (busy.address() as net.AddressInfo).port;
      const cfg = (platform: Record<string, unknown>): string => {
        const f = path.join(work, 'tachyon.json');
        writeFileSync(f, JSON.stringify({ port: 0, allowedRoots: [`file://${work}/files/*`], platform }));
        return f;
      };
      const missing = await runCli(['serve', '--config', cfg({ port: 0, certFile: 'nope.crt', keyFile: 'web.key' })], work);
      assert.equal(missing.code, 78, missing.stderr);
      assert.match(missing.stderr, /cannot read the web platform certificate .*nope\.crt/);
      const inUse = await runCli(['serve', '--config', cfg({ port: busyPort, certFile: 'web.crt', keyFile: 'web.key' })], work);
      assert.equal(inUse.code, 78, inUse.stderr);
      assert.match(inUse.stderr, new RegExp(`the web platform cannot listen on 127\\.0\\.0\\.1:${busyPort}: the port is in use`));
    } finally {
      busy.close();
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('validates the section: unknown fields, ports, addresses, missing certificate', async () => {
    const base = { allowedRoots: ['file:///srv/x/*'] };
    const ok = await validateServerConfig({ ...base, platform: { certFile: 'a.crt', keyFile: 'a.key' } }, 'c.json', '/etc/t');
    assert.deepEqual(ok.platform, { listen: '127.0.0.1', port: 9443, certFile: '/etc/t/a.crt', keyFile: '/etc/t/a.key', mfaKeyFile: '/etc/t/mfa.key' });
    const cases: [unknown, RegExp][] = [
      [{ certFile: 'a', keyFile: 'b', password: 'x' }, /platform\.password: unknown field/],
      [{ certFile: 'a', keyFile: 'b', port: 70000 }, /platform\.port: expected a port number/],
      [{ certFile: 'a', keyFile: 'b', port: '9443' }, /platform\.port/],
      [{ certFile: 'a', keyFile: 'b', listen: 'not an address!' }, /platform\.listen: expected an IP address or host name/],
      [{ keyFile: 'b' }, /platform\.certFile: is required/],
      [[], /platform/],
    ];
    for (const [platform, message] of cases) {
      await assert.rejects(validateServerConfig({ ...base, platform }, 'c.json', '/etc/t'), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'CONFIG');
        assert.match(err.message, message);
        return true;
      });
    }
  });

  it('fuzz: a valid platform section with random mutations is accepted or refused with CONFIG naming the file, never anything else', async () => {
    const rng = new Rng(0x9443);
    const values: unknown[] = [null, true, 0, -1, 1.5, 65536, 9443, '', 'x', 'a.crt', '0.0.0.0', '::1', 'bad host!', '127.0.0.1', [], {}, ['x'], { a: 1 }, '\u0000', 'é'.repeat(300)];
    const keys = ['listen', 'port', 'certFile', 'keyFile', 'chainFile', 'mfaKeyFile', 'extra'];
    let accepted = 0;
    for (let i = 0; i < 300; i++) {
      const platform: Record<string, unknown> = { certFile: 'web.crt', keyFile: 'web.key' };
      for (let m = rng.range(1, 3); m > 0; m--) {
        const k = rng.pick(keys);
        if (rng.chance(0.2)) delete platform[k];
        else platform[k] = rng.pick(values);
      }
      try {
        const cfg = await validateServerConfig({ allowedRoots: ['file:///srv/x/*'], platform: rng.chance(0.05) ? rng.pick(values) : platform }, 'fuzz.json', '/etc/t');
        const p = cfg.platform;
        if (p === undefined) continue;
        accepted++;
        assert.ok(Number.isInteger(p.port) && p.port >= 0 && p.port <= 65535, JSON.stringify(platform));
        assert.ok([p.certFile, p.keyFile, p.mfaKeyFile].every((f) => path.isAbsolute(f)), JSON.stringify(platform));
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'CONFIG', `${JSON.stringify(platform).slice(0, 200)}: ${String(err)}`);
        assert.ok(err.message.split('\n').every((l) => l.startsWith('fuzz.json: ')), err.message);
      }
    }
    assert.ok(accepted > 10, `${accepted} accepted`);
  });
});
