/**
 * `tachyon tenant sso-set / sso-show / sso-clear` as child processes of bin/tachyon.js on
 * a data directory (the embedded defaults of `tachyon start`): the configuration is stored
 * with its OIDC client secret sealed under DIR/mfa.key (created 0600, the key the server
 * opens it with), the secret is never printed, nor in the audit log, nor in an error about
 * the file; an invalid configuration names its field; sso-clear removes it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDatabase } from '../../src/db/database.js';
import { loadSecretBox } from '../../src/platform/mfa/index.js';
import { DatabaseSsoConfigSource } from '../../src/platform/sso/index.js';
import { jsonLines, runCli } from '../helpers/cli.js';

const SECRET = 'cli-client-secret-0b8e6f2a91';
const CONFIG = {
  oidc: { issuer: 'https://idp.example', clientId: 'tachyon', clientSecret: SECRET, redirectUri: 'https://tachyon.example:9443/api/v1/auth/sso/oidc/callback', roleMapping: { admins: 'tenant_admin' } },
  ssoRequiredForAdmins: true,
};

describe('tachyon tenant sso-set / sso-show / sso-clear (child processes)', () => {
  let work: string;
  let data: string;
  // no key from the environment: the commands take DIR/mfa.key as `tachyon start` does
  const env = { TACHYON_MFA_KEY: '' };
  const cli = (...args: string[]) => runCli(['tenant', ...args, '--data', data], work, 60_000, env);

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-sso-cli-'));
    data = path.join(work, 'tachyon-data');
    const r = await cli('create', 'acme');
    assert.equal(r.code, 0, r.stderr);
    writeFileSync(path.join(work, 'sso.json'), JSON.stringify(CONFIG));
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('sso-set stores it sealed under the data directory’s key, prints no secret; sso-show shows it as set; the server’s key opens it', async () => {
    const r = await cli('sso-set', 'acme', '--file', path.join(work, 'sso.json'), '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes(SECRET) && !r.stderr.includes(SECRET), 'the secret is never printed');
    const [ev] = jsonLines(r.stdout);
    assert.equal(ev!['event'], 'tenant.sso-set');
    const sso = ev!['sso'] as { oidc: Record<string, unknown>; ssoRequiredForAdmins: boolean };
    assert.equal(sso.oidc['clientSecretSet'], true);
    assert.equal(sso.ssoRequiredForAdmins, true);
    assert.deepEqual(ev!['changed'], ['oidc', 'ssoRequiredForAdmins', 'oidc.clientSecret']);
    const keyFile = path.join(data, 'mfa.key');
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);

    const show = await cli('sso-show', 'acme');
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /oidc: issuer https:\/\/idp\.example, client tachyon, client secret set/);
    assert.match(show.stdout, /ssoRequiredForAdmins: true/);
    assert.ok(!show.stdout.includes(SECRET));

    const db = await openDatabase({ url: `sqlite://${path.join(data, 'tachyon.db')}` });
    try {
      const tenant = await db.db.selectFrom('platform_tenant').select('id').where('slug', '=', 'acme').executeTakeFirstOrThrow();
      const got = await new DatabaseSsoConfigSource({ database: db, box: loadSecretBox({ keyFile, env: {} }) }).get(tenant.id);
      assert.equal(got?.oidc?.clientSecret, SECRET, 'the platform key opens what the CLI sealed');
    } finally {
      await db.close();
    }
    const audit = readFileSync(path.join(data, 'audit.log'), 'utf8');
    assert.ok(!audit.includes(SECRET), 'no secret in the audit log');
    const change = jsonLines(audit).find((e) => (e['fields'] as Record<string, unknown>)['action'] === 'tenant.sso-set');
    assert.ok(change, 'the change is audited');
  });

  it('a file that is not JSON, or an invalid configuration, is refused without quoting the secret', async () => {
    writeFileSync(path.join(work, 'broken.json'), `{"oidc": {"clientSecret": "${SECRET}",`);
    const broken = await cli('sso-set', 'acme', '--file', path.join(work, 'broken.json'));
    assert.notEqual(broken.code, 0);
    assert.match(broken.stderr, /not valid JSON/);
    assert.ok(!broken.stderr.includes(SECRET) && !broken.stdout.includes(SECRET));
    writeFileSync(path.join(work, 'bad.json'), JSON.stringify({ oidc: { ...CONFIG.oidc, redirectUri: 'ftp://x' } }));
    const bad = await cli('sso-set', 'acme', '--file', path.join(work, 'bad.json'));
    assert.equal(bad.code, 78, bad.stderr);
    assert.match(bad.stderr, /oidc\.redirectUri/);
    assert.ok(!bad.stderr.includes(SECRET));
    const missing = await cli('sso-set', 'nosuch', '--file', path.join(work, 'sso.json'));
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /no tenant 'nosuch'/);
  });

  it('sso-clear removes it (and says so when there is none)', async () => {
    const r = await cli('sso-clear', 'acme', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(jsonLines(r.stdout)[0]!['removed'], true);
    const again = await cli('sso-clear', 'acme');
    assert.equal(again.code, 0);
    assert.match(again.stdout, /had no single sign-on configuration/);
    const show = await cli('sso-show', 'acme', '--json');
    assert.equal(jsonLines(show.stdout)[0]!['sso'], null);
  });
});
