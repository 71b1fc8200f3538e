/**
 * DatabaseSsoConfigSource over a real SQLite file: the configuration round-trips with
 * its secret sealed (bound to the tenant: a sealed value copied to another tenant's row
 * does not open; another key does not open it either, with a sanitized public message);
 * a second instance over the same file (the CLI while the server runs) sees changes;
 * and a fuzz run of seeded random configurations only ever stores a valid one or refuses
 * with CONFIG, never echoing the secret.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TachyonError } from '../../../src/core/errors.js';
import { openDatabase, type Database } from '../../../src/db/database.js';
import { AesGcmSecretBox } from '../../../src/platform/mfa/index.js';
import { DatabaseSsoConfigSource, parseTenantSsoConfig } from '../../../src/platform/sso/index.js';
import { Rng } from '../../helpers/rng.js';

const SECRET = 'sealed-client-secret-9d41c0b7';
const OIDC = { issuer: 'https://idp.example', clientId: 'tachyon', clientSecret: SECRET, redirectUri: 'https://tachyon.example/api/v1/auth/sso/oidc/callback' };
const SAML = {
  idpEntityId: 'https://idp.example/saml',
  ssoUrl: 'https://idp.example/saml/sso',
  idpCertificates: ['MII' + 'A'.repeat(120)],
  spEntityId: 'https://tachyon.example/sp',
  acsUrl: 'https://tachyon.example/api/v1/auth/sso/saml/acs',
};

function isCode(code: string) {
  return (e: unknown) => e instanceof TachyonError && e.code === code;
}

describe('DatabaseSsoConfigSource (SQLite file)', () => {
  let dir: string;
  let db: Database;
  const box = AesGcmSecretBox.random();
  let store: DatabaseSsoConfigSource;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-sso-store-'));
    db = await openDatabase({ url: `sqlite://${path.join(dir, 'p.db')}` });
    store = new DatabaseSsoConfigSource({ database: db, box });
  });
  after(async () => {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('round-trips a configuration; the view flags the secret; an unchanged row gives the same object, a change by another instance a new one', async () => {
    assert.equal(await store.get('t1'), undefined);
    const { config, changed } = await store.put('t1', { tenantId: 'ignored', oidc: OIDC, saml: SAML, ssoRequiredForAdmins: true });
    assert.equal(config.tenantId, 't1', 'the tenant is the caller’s, not the input’s');
    assert.deepEqual(changed, ['oidc', 'saml', 'ssoRequiredForAdmins', 'oidc.clientSecret']);
    const got = await store.get('t1');
    assert.deepEqual(got, parseTenantSsoConfig({ tenantId: 't1', oidc: OIDC, saml: SAML, ssoRequiredForAdmins: true }));
    assert.equal(await store.get('t1'), got, 'cached by revision');
    const view = await store.view('t1');
    assert.ok(view && view.oidc);
    assert.equal(view.oidc.clientSecretSet, true);
    assert.ok(!JSON.stringify(view).includes(SECRET));
    // another process (the CLI) changes the row: the next read sees it
    const other = new DatabaseSsoConfigSource({ database: db, box });
    await other.put('t1', { oidc: { ...OIDC, clientSecret: undefined, clientId: 'renamed' } });
    const fresh = await store.get('t1');
    assert.notEqual(fresh, got);
    assert.equal(fresh?.oidc?.clientId, 'renamed');
    assert.equal(fresh?.oidc?.clientSecret, SECRET, 'the secret was kept');
    assert.equal(fresh?.saml, undefined, 'a put replaces the whole configuration');
    assert.equal(await other.delete('t1'), true);
    assert.equal(await store.get('t1'), undefined);
    assert.equal(await store.delete('t1'), false);
  });

  it('a sealed secret copied to another tenant’s row does not open; another key does not open it; neither message holds the secret', async () => {
    await store.put('t2', { oidc: OIDC });
    await store.put('t3', { oidc: { ...OIDC, clientSecret: 'the-other-tenants-secret' } });
    const sealed = (await db.db.selectFrom('platform_sso_config').select('oidc_secret_sealed').where('tenant_id', '=', 't2').executeTakeFirstOrThrow()).oidc_secret_sealed;
    await db.db.updateTable('platform_sso_config').set({ oidc_secret_sealed: sealed, revision: 'copied' }).where('tenant_id', '=', 't3').execute();
    await assert.rejects(store.get('t3'), (e: unknown) => {
      assert.ok(isCode('WRONG_KEY')(e), String(e));
      assert.ok(!(e as TachyonError).message.includes(SECRET));
      assert.equal((e as TachyonError).publicMessage, 'Single sign-on is not available; contact an administrator.');
      return true;
    });
    const stranger = new DatabaseSsoConfigSource({ database: db, box: AesGcmSecretBox.random() });
    await assert.rejects(stranger.get('t2'), isCode('KEY_MISSING'));
    // without the key the stored secret cannot be kept: a new one is required
    await assert.rejects(stranger.put('t2', { oidc: { ...OIDC, clientSecret: undefined } }), isCode('CONFIG'));
  });

  it('fuzz: 1500 seeded random configurations are stored valid or refused with CONFIG, never echoing the secret', async () => {
    const rng = new Rng(0x55c0f1);
    const junk = (): unknown =>
      rng.pick<() => unknown>([
        () => null,
        () => rng.int(1e6) - 5e5,
        () => rng.chance(0.5),
        () => 'x'.repeat(rng.int(3000)),
        () => `https://h${rng.int(99)}.example/${'p'.repeat(rng.int(10))}`,
        () => "'; drop table platform_sso_config; --",
        () => '<script>alert(1)</script>',
        () => [],
        () => ({}),
        () => ['tachyon-admins', rng.int(5)],
        () => ({ admins: rng.pick(['tenant_admin', 'root', 'member']) }),
      ])();
    let stored = 0;
    let refused = 0;
    for (let i = 0; i < 1500; i++) {
      const input: Record<string, unknown> = {};
      if (rng.chance(0.7)) input['oidc'] = { ...OIDC };
      if (rng.chance(0.4)) input['saml'] = { ...SAML, idpCertificates: [...SAML.idpCertificates] };
      if (rng.chance(0.3)) input['ssoRequiredForAdmins'] = rng.chance(0.5) ? true : junk();
      const mutations = rng.int(3);
      for (let m = 0; m < mutations; m++) {
        const section = rng.pick(['oidc', 'saml', 'root']);
        const t = section === 'root' ? input : input[section];
        if (typeof t !== 'object' || t === null || Array.isArray(t)) continue;
        const target = t as Record<string, unknown>;
        const keys = [...Object.keys(target), 'unknownField', 'scopes', 'roleMapping', 'clockSkewMs', 'allowedEmailDomains'];
        const key = rng.pick(keys);
        if (rng.chance(0.2)) delete target[key];
        else target[key] = junk();
      }
      const body: unknown = rng.chance(0.03) ? junk() : input;
      const tenant = `f${i % 7}`;
      try {
        const { config } = await store.put(tenant, body);
        stored++;
        assert.deepEqual(await store.get(tenant), config);
        assert.ok(!JSON.stringify(await store.view(tenant)).includes(SECRET));
      } catch (e) {
        refused++;
        assert.ok(isCode('CONFIG')(e), `input ${i}: ${String(e)}`);
        assert.ok(!(e as TachyonError).message.includes(SECRET), `input ${i} echoes the secret`);
      }
    }
    assert.ok(stored > 100 && refused > 100, `both outcomes exercised (${stored} stored, ${refused} refused)`);
  });
});
