/**
 * `tachyon start` serves single sign-on from the configuration `tachyon tenant sso-set`
 * stored, end to end with real processes: a child process of `bin/tachyon.js start
 * --json` (every port 0), the CLI on the same data directory (its key file is the one the
 * server seals with), then over HTTPS trusting only the generated CA: the SAML start
 * redirects to the configured IdP, the OIDC start reaches for the configured provider
 * (SSO_FAILED because it is unreachable — not KEY_MISSING: the server opened the secret
 * the CLI sealed), `ssoRequiredForAdmins` refuses the administrator's password sign-in,
 * and after `sso-clear` the SSO routes refuse and the password sign-in proceeds.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Agent as HttpsAgent } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { clientAgent } from '../../src/node-api/pki.js';
import { bin, jsonLines, runCli } from '../helpers/cli.js';
import { httpsCall } from '../node-api/helpers.js';

describe('tachyon start serves SSO from tachyon tenant sso-set', () => {
  let work: string;
  let data: string;
  let child: ChildProcessWithoutNullStreams;
  let port: number;
  let agent: HttpsAgent;
  let stderr = '';
  const env = { TACHYON_MFA_KEY: '' };

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-start-sso-'));
    data = path.join(work, 'tachyon-data');
    child = spawn(process.execPath, [bin, 'start', '--json', '--port', '0', '--api-port', '0', '--web-port', '0'], { cwd: work, env: { ...process.env, ...env, HOME: work } });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const web = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`tachyon start did not start: ${stderr}`)), 30_000);
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const ev = jsonLines(out.slice(0, out.lastIndexOf('\n') + 1)).find((e) => e['type'] === 'web.start');
        if (ev) {
          clearTimeout(t);
          resolve(ev);
        }
      });
      child.on('exit', (c) => reject(new Error(`tachyon start exited with ${c}: ${stderr}`)));
    });
    port = web['port'] as number;
    agent = clientAgent({ caFile: path.join(data, 'ca', 'ca.crt'), keepAlive: false });
  });
  after(async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(work, { recursive: true, force: true });
  });

  it('the configuration stored by the CLI is served; ssoRequiredForAdmins is enforced; sso-clear removes it', async () => {
    assert.equal((await runCli(['tenant', 'create', 'acme'], work, 60_000, env)).code, 0);
    const added = await runCli(['tenant', 'admin-add', 'acme', 'alice', '--json'], work, 60_000, env);
    assert.equal(added.code, 0, added.stderr);
    const password = String((JSON.parse(added.stdout) as Record<string, unknown>)['temporaryPassword']);
    const base = `https://127.0.0.1:${port}`;
    const sso = {
      oidc: { issuer: 'https://127.0.0.1:1', clientId: 'tachyon', clientSecret: 'start-sso-secret-51c2', redirectUri: `${base}/api/v1/auth/sso/oidc/callback` },
      saml: {
        idpEntityId: 'https://idp.example/saml',
        ssoUrl: 'https://idp.example/saml/sso',
        // any certificate will do to start a sign-in: the CA's
        idpCertificates: [readFileSync(path.join(data, 'ca', 'ca.crt'), 'utf8')],
        spEntityId: 'https://tachyon.example/sp',
        acsUrl: `${base}/api/v1/auth/sso/saml/acs`,
      },
      ssoRequiredForAdmins: true,
    };
    writeFileSync(path.join(work, 'sso.json'), JSON.stringify(sso));
    const set = await runCli(['tenant', 'sso-set', 'acme', '--file', path.join(work, 'sso.json')], work, 60_000, env);
    assert.equal(set.code, 0, set.stderr);
    assert.ok(!set.stdout.includes('start-sso-secret-51c2'));

    const samlStart = await httpsCall(agent, port, 'GET', '/api/v1/auth/sso/acme/saml/start');
    assert.equal(samlStart.status, 303, samlStart.text);
    const to = new URL(String(samlStart.headers['location']));
    assert.equal(`${to.origin}${to.pathname}`, 'https://idp.example/saml/sso');
    assert.ok(to.searchParams.get('SAMLRequest'), 'an AuthnRequest');
    const oidcStart = await httpsCall(agent, port, 'GET', '/api/v1/auth/sso/acme/oidc/start');
    assert.equal(oidcStart.status, 401, `the provider is unreachable; the secret opened (not 503 KEY_MISSING): ${oidcStart.text}`);
    assert.equal((oidcStart.json as { error: { code: string } }).error.code, 'SSO_FAILED');

    const signin = (): ReturnType<typeof httpsCall> => httpsCall(agent, port, 'POST', '/api/v1/auth/signin', { body: { tenant: 'acme', username: 'alice', password } });
    assert.equal((await signin()).status, 401, 'SSO is mandatory for administrators');

    const cleared = await runCli(['tenant', 'sso-clear', 'acme'], work, 60_000, env);
    assert.equal(cleared.code, 0, cleared.stderr);
    assert.equal((await httpsCall(agent, port, 'GET', '/api/v1/auth/sso/acme/saml/start')).status, 401);
    const after = await signin();
    assert.equal(after.status, 200, after.text);
    assert.equal((after.json as Record<string, unknown>)['secondFactor'], 'enrol');
  });
});
