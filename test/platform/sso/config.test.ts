/** SSO configuration parsing (with a seeded fuzz), role mapping, the single-use store, the facade, and OIDC callback parsing. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { systemClock, type Clock } from '../../../src/core/clock.js';
import { TachyonError } from '../../../src/core/errors.js';
import { MemoryAuditSink } from '../../../src/audit/memory-sink.js';
import {
  describeSsoConfig,
  emailDomainAllowed,
  mapRoles,
  MemorySsoConfigSource,
  MemorySsoStore,
  parseTenantSsoConfig,
  SsoServices,
} from '../../../src/platform/sso/index.js';
import { rejectsCode, throwsCode } from '../../helpers/errors.js';
import { Rng } from '../../helpers/rng.js';

const CERT = `-----BEGIN CERTIFICATE-----\n${'A'.repeat(64)}\n-----END CERTIFICATE-----`;
const valid = {
  tenantId: 'acme',
  oidc: { issuer: 'https://idp.example', clientId: 'c', clientSecret: 'very-secret-value', redirectUri: 'https://t.example/cb' },
  saml: { idpEntityId: 'https://idp.example/saml', ssoUrl: 'https://idp.example/sso', idpCertificates: [CERT], spEntityId: 'tachyon', acsUrl: 'https://t.example/acs' },
};

describe('platform/sso configuration', () => {
  it('applies least-privilege defaults', () => {
    const c = parseTenantSsoConfig(valid);
    assert.equal(c.ssoRequiredForAdmins, false);
    assert.deepEqual(c.oidc!.scopes, ['openid', 'email', 'profile']);
    assert.equal(c.oidc!.unmapped, 'member');
    assert.equal(c.oidc!.requireVerifiedEmail, true);
    assert.deepEqual(c.oidc!.roleMapping, {});
    assert.equal(c.saml!.clockSkewMs, 60_000);
  });

  it('refuses bad values with CONFIG naming the field, never its value', () => {
    for (const [bad, field] of [
      [{ ...valid, oidc: { ...valid.oidc, issuer: 'ftp://idp' } }, 'oidc.issuer'],
      [{ ...valid, oidc: { ...valid.oidc, clientSecret: '' } }, 'oidc.clientSecret'],
      [{ ...valid, oidc: { ...valid.oidc, roleMapping: { admins: 'root' } } }, 'oidc.roleMapping.admins'],
      [{ ...valid, oidc: { ...valid.oidc, unmapped: 'admin' } }, 'oidc.unmapped'],
      [{ ...valid, oidc: { ...valid.oidc, allowInsecureRequests: true } }, 'oidc'],
      [{ ...valid, saml: { ...valid.saml, idpCertificates: [] } }, 'saml.idpCertificates'],
      [{ ...valid, saml: { ...valid.saml, clockSkewMs: 3_600_000 } }, 'saml.clockSkewMs'],
      [{ ...valid, extra: 1 }, '(root)'],
    ] as const) {
      let err: unknown;
      try {
        parseTenantSsoConfig(bad);
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof TachyonError && err.code === 'CONFIG', field);
      assert.ok((err.details?.fields as string[]).includes(field), `${field}: ${String(err.details?.fields)}`);
      assert.ok(!err.message.includes('very-secret-value'));
    }
  });

  it('describes a configuration without its secret', () => {
    const text = JSON.stringify(describeSsoConfig(parseTenantSsoConfig(valid)));
    assert.ok(!text.includes('very-secret-value'));
    assert.ok(!text.includes('AAAA'));
    assert.ok(text.includes('https://idp.example'));
  });

  it('fuzz: random inputs either parse or are refused with CONFIG', () => {
    const rng = new Rng(0x550);
    const atoms = ['', 'x', 'https://a.example', 'http://127.0.0.1:1/cb', 'javascript:alert(1)', 'member', 'tenant_admin', 'root', CERT, -1, 0, 1e9, true, null];
    const fields = ['tenantId', 'oidc', 'saml', 'ssoRequiredForAdmins', 'issuer', 'clientId', 'clientSecret', 'redirectUri', 'scopes', 'roleMapping', 'unmapped', 'idpEntityId', 'ssoUrl', 'idpCertificates', 'spEntityId', 'acsUrl', 'clockSkewMs', '__proto__', 'constructor'];
    const value = (depth: number): unknown => {
      const k = rng.int(depth > 2 ? 1 : 4);
      if (k === 0) return rng.pick(atoms);
      if (k === 1) return Array.from({ length: rng.int(3) }, () => value(depth + 1));
      const o: Record<string, unknown> = {};
      for (let i = rng.int(6); i > 0; i--) o[rng.pick(fields)] = value(depth + 1);
      return o;
    };
    let parsed = 0;
    for (let i = 0; i < 2000; i++) {
      const input = rng.chance(0.3) ? { ...valid, [rng.pick(['oidc', 'saml'])]: value(1) } : value(0);
      try {
        parseTenantSsoConfig(input);
        parsed++;
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'CONFIG', `input ${i}: ${String(err)}`);
      }
    }
    assert.ok(parsed < 2000);
  });

  it('maps roles: named values only, member or refusal otherwise', () => {
    const m = { admins: 'tenant_admin', audit: 'auditor' } as const;
    assert.deepEqual(mapRoles(['admins', 'audit', 'x'], m, 'member'), ['auditor', 'tenant_admin']);
    assert.deepEqual(mapRoles('audit', m, 'refuse'), ['auditor']);
    assert.deepEqual(mapRoles(['x', 3, null], m, 'member'), ['member']);
    assert.equal(mapRoles(undefined, m, 'refuse'), undefined);
    assert.equal(mapRoles(['__proto__', 'constructor', 'toString'], m, 'refuse'), undefined);
    assert.ok(emailDomainAllowed('a@Example.COM', ['example.com']));
    assert.ok(!emailDomainAllowed('a@example.com.evil', ['example.com']));
    assert.ok(!emailDomainAllowed('example.com', ['example.com']));
    assert.ok(emailDomainAllowed('anything', []));
  });
});

describe('platform/sso store', () => {
  it('takes each entry once, refuses a live duplicate, and forgets expired entries', async () => {
    let t = 1_000_000;
    const clock: Clock = { now: () => t, setTimer: systemClock.setTimer };
    const s = new MemorySsoStore({ clock, maxEntries: 3 });
    assert.equal(await s.put('a', '1', t + 100), true);
    assert.equal(await s.put('a', '2', t + 100), false);
    assert.equal(await s.take('a'), '1');
    assert.equal(await s.take('a'), undefined);
    await s.put('b', '1', t + 100);
    t += 100;
    assert.equal(await s.take('b'), undefined);
    assert.equal(await s.put('b', '3', t + 100), true);
    for (const k of ['c', 'd']) await s.put(k, k, t + 100);
    // full of live entries: refused, nothing evicted
    await rejectsCode(s.put('e', 'e', t + 100), 'BUSY');
    assert.equal(s.size, 3);
    assert.equal(await s.take('b'), '3');
    assert.equal(await s.put('e', 'e', t + 100), true);
    t += 100;
    // full of expired entries: swept
    assert.equal(await s.put('f', 'f', t + 100), true);
    assert.equal(s.size, 1);
  });
});

describe('platform/sso facade', () => {
  it('reports methods, refuses local sign-in of admins when SSO is required, and refuses malformed callbacks', async () => {
    const configs = new MemorySsoConfigSource();
    configs.set({ ...valid, ssoRequiredForAdmins: true });
    configs.set({ tenantId: 'plain' });
    const audit = new MemoryAuditSink();
    const sso = new SsoServices({ configs, store: new MemorySsoStore(), audit });
    assert.deepEqual(await sso.methods('acme'), { oidc: true, saml: true, ssoRequiredForAdmins: true });
    assert.deepEqual(await sso.methods('plain'), { oidc: false, saml: false, ssoRequiredForAdmins: false });
    assert.equal(await sso.localSignInRefused('acme', ['tenant_admin']), true);
    assert.equal(await sso.localSignInRefused('acme', ['member']), false);
    assert.equal(await sso.localSignInRefused('plain', ['tenant_admin']), false);
    throwsCode(() => parseTenantSsoConfig({}), 'CONFIG');

    // fuzz the callback parser: no network is reached, every input is SSO_FAILED
    const rng = new Rng(0xcb);
    const alphabet = 'abcXYZ019-_.~%&=?#/:@ \u0000\u00e9';
    for (let i = 0; i < 300; i++) {
      const junk = Array.from({ length: rng.int(40) }, () => alphabet[rng.int(alphabet.length)]).join('');
      const input = rng.pick([junk, `https://t.example/cb?${junk}`, `https://t.example/cb?state=${junk}&code=x`, `https://t.example/cb?state=${'A'.repeat(rng.range(1, 200))}`]);
      const err = await rejectsCode(sso.completeOidc(input), 'SSO_FAILED', `input ${i}`);
      assert.ok(['bad-request', 'state-missing', 'state-unknown'].includes(String(err.details?.reason)), String(err.details?.reason));
      assert.equal(err.publicMessage, 'Single sign-on failed.');
    }
    assert.equal(audit.ofType('sso.failure').length, 300);
  });
});
