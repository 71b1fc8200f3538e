/**
 * SAML single sign-on against a real (minimal) IdP started by the test: AuthnRequest by
 * HTTP-Redirect, a Response signed with the IdP's freshly generated key, posted back to
 * the service; and each forged, tampered, expired or replayed response the issue names.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryAuditSink } from '../../../src/audit/memory-sink.js';
import { MemorySsoConfigSource } from '../../../src/platform/sso/config.js';
import { SamlService } from '../../../src/platform/sso/saml.js';
import { MemorySsoStore } from '../../../src/platform/sso/store.js';
import { TachyonError } from '../../../src/core/errors.js';
import { rejectsCode } from '../../helpers/errors.js';
import { Rng } from '../../helpers/rng.js';
import {
  buildResponse,
  fetchPostForm,
  makeSigningIdentity,
  startSamlIdp,
  wrapResponse,
  type ResponseOptions,
  type SigningIdentity,
  type TestSamlIdp,
} from './saml-idp.js';

const SP = 'https://tachyon.example/sso/saml/acme';
const ACS = 'https://tachyon.example/sso/saml/acs';

describe('platform/sso SAML against a test IdP', () => {
  let idp: TestSamlIdp;
  let other: SigningIdentity;
  let svc: SamlService;
  let audit: MemoryAuditSink;
  let configs: MemorySsoConfigSource;

  before(async () => {
    idp = await startSamlIdp(SP);
    other = await makeSigningIdentity('Another IdP');
    configs = new MemorySsoConfigSource();
    const saml = {
      idpEntityId: idp.entityId,
      ssoUrl: idp.ssoUrl,
      idpCertificates: [idp.identity.certPem],
      spEntityId: SP,
      acsUrl: ACS,
      roleMapping: { 'tachyon-admins': 'tenant_admin' as const, 'tachyon-auditors': 'auditor' as const },
    };
    configs.set({ tenantId: 'acme', saml, ssoRequiredForAdmins: true });
    configs.set({ tenantId: 'strict', saml: { ...saml, unmapped: 'refuse', allowedEmailDomains: ['example.com'] } });
    audit = new MemoryAuditSink();
    svc = new SamlService({ configs, store: new MemorySsoStore(), audit });
  });
  after(async () => {
    await idp.close();
  });

  /** begin → the IdP over HTTP → the posted form. */
  async function viaIdp(tenant: string, next: TestSamlIdp['next']): Promise<{ SAMLResponse: string; RelayState: string }> {
    idp.next = next;
    const b = await svc.begin(tenant, { clientAddress: '203.0.113.9' });
    const form = await fetchPostForm(b.redirectUrl);
    assert.equal(form.action, ACS);
    assert.equal(form.RelayState, b.relayState);
    return form;
  }

  /** begin, then a response built here with `opts` (for cases the HTTP IdP would not send). */
  async function direct(tenant: string, opts: Partial<ResponseOptions>): Promise<{ relayState: string; requestId: string; samlResponse: string; assertionXml: string }> {
    const b = await svc.begin(tenant);
    const r = buildResponse(
      { requestId: b.requestId, acsUrl: ACS, audience: SP, issuer: idp.entityId, nameId: 'alice@example.com', attributes: { groups: ['staff'] }, sign: 'both', ...opts },
      idp.identity,
    );
    return { relayState: b.relayState, requestId: b.requestId, samlResponse: r.samlResponse, assertionXml: r.assertionXml };
  }

  const reason = async (p: Promise<unknown>): Promise<unknown> => (await rejectsCode(p, 'SSO_FAILED')).details?.reason;

  it('signs in with a valid signed response and maps attributes to roles', async () => {
    const form = await viaIdp('acme', { nameId: 'alice@example.com', attributes: { email: ['alice@example.com'], groups: ['tachyon-admins', 'staff'] } });
    const id = await svc.complete(form.SAMLResponse, form.RelayState, { clientAddress: '203.0.113.9' });
    assert.deepEqual(
      { ...id },
      { tenantId: 'acme', protocol: 'saml', issuer: idp.entityId, subject: 'alice@example.com', email: 'alice@example.com', emailVerified: true, roles: ['tenant_admin'] },
    );
    const bob = await viaIdp('acme', { nameId: 'bob@example.com', attributes: { groups: ['staff'] } });
    assert.deepEqual((await svc.complete(bob.SAMLResponse, bob.RelayState)).roles, ['member']);
    const ok = audit.ofType('sso.success');
    assert.equal(ok.length, 2);
    assert.deepEqual(ok[0]!.fields, { tenantId: 'acme', protocol: 'saml', subject: 'alice@example.com', email: 'alice@example.com', roles: ['tenant_admin'], clientAddress: '203.0.113.9' });
    assert.ok(!JSON.stringify(audit.records).includes(form.SAMLResponse.slice(0, 40)), 'the response is not in the audit log');
  });

  it('accepts a signature on the response only, or on the assertion only', async () => {
    for (const sign of ['response', 'assertion'] as const) {
      const r = await direct('acme', { sign });
      assert.equal((await svc.complete(r.samlResponse, r.relayState)).subject, 'alice@example.com', sign);
    }
  });

  it('refuses an unsigned response', async () => {
    const r = await direct('acme', { sign: 'none' });
    assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'signature-invalid');
    assert.equal(audit.ofType('sso.failure').at(-1)!.fields.reason, 'signature-invalid');
  });

  it('refuses a response signed by another key', async () => {
    for (const sign of ['both', 'response', 'assertion'] as const) {
      const r = await direct('acme', { sign, signer: other });
      assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'signature-invalid', sign);
    }
  });

  it('refuses an attribute tampered with after signing', async () => {
    for (const sign of ['both', 'response', 'assertion'] as const) {
      const r = await direct('acme', { sign });
      const xml = Buffer.from(r.samlResponse, 'base64').toString('utf8');
      const forged = xml.replace('<saml:AttributeValue>staff</saml:AttributeValue>', '<saml:AttributeValue>tachyon-admins</saml:AttributeValue>');
      assert.notEqual(forged, xml);
      assert.equal(await reason(svc.complete(Buffer.from(forged).toString('base64'), r.relayState)), 'signature-invalid', sign);
    }
  });

  it('refuses a wrong audience, a wrong recipient and another issuer', async () => {
    let r = await direct('acme', { audience: 'https://other-sp.example' });
    assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'audience-mismatch');
    r = await direct('acme', { acsUrl: 'https://evil.example/acs' });
    assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'destination-mismatch');
    // right Destination, signed assertion meant for another service's ACS
    r = await direct('acme', { recipient: 'https://evil.example/acs' });
    assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'destination-mismatch');
    r = await direct('acme', { issuer: 'https://other-idp.example' });
    assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'issuer-mismatch');
  });

  it('refuses an expired assertion and one not yet valid (beyond the skew)', async () => {
    let r = await direct('acme', { timeShiftMs: -60 * 60_000 });
    assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'assertion-expired');
    r = await direct('acme', { timeShiftMs: 10 * 60_000 });
    assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'assertion-expired');
    // within the 60 s skew: accepted
    r = await direct('acme', { timeShiftMs: 30_000 });
    assert.equal((await svc.complete(r.samlResponse, r.relayState)).subject, 'alice@example.com');
  });

  it('refuses a replayed response and a replayed assertion in a new response', async () => {
    const form = await viaIdp('acme', { nameId: 'bob@example.com', attributes: {} });
    await svc.complete(form.SAMLResponse, form.RelayState);
    assert.equal(await reason(svc.complete(form.SAMLResponse, form.RelayState)), 'state-unknown');
    // an IdP that signs only the assertion and leaves InResponseTo out of it: the assertion,
    // captured, is wrapped into a fresh response for a new transaction of the attacker's
    const first = await direct('acme', { sign: 'assertion', omitSubjectInResponseTo: true });
    await svc.complete(first.samlResponse, first.relayState);
    const b = await svc.begin('acme');
    const replay = wrapResponse({ requestId: b.requestId, acsUrl: ACS, issuer: idp.entityId, sign: false }, first.assertionXml);
    assert.equal(await reason(svc.complete(Buffer.from(replay).toString('base64'), b.relayState)), 'assertion-replayed');
  });

  it('refuses an unknown InResponseTo, an unknown relay state and IdP-initiated responses', async () => {
    let r = await direct('acme', { requestId: '_0123456789abcdef0123456789abcdef01234567' });
    assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'request-unknown');
    r = await direct('acme', { requestId: undefined });
    assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'request-unknown');
    r = await direct('acme', {});
    assert.equal(await reason(svc.complete(r.samlResponse, 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')), 'state-unknown');
    assert.equal(await reason(svc.complete(r.samlResponse, '')), 'state-missing');
    assert.equal(await reason(svc.complete('not base64!', r.relayState)), 'bad-request');
  });

  it('applies the e-mail domain and unmapped-role rules', async () => {
    let r = await direct('strict', { nameId: 'mallory@elsewhere.org', attributes: { groups: ['tachyon-admins'] } });
    assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'email-domain');
    r = await direct('strict', { attributes: { groups: ['staff'] } });
    assert.equal(await reason(svc.complete(r.samlResponse, r.relayState)), 'role-unmapped');
    r = await direct('strict', { attributes: { groups: ['tachyon-auditors'] } });
    assert.deepEqual((await svc.complete(r.samlResponse, r.relayState)).roles, ['auditor']);
    assert.equal(await reason(svc.begin('nobody')), 'not-configured');
  });

  it('fuzz: randomly mutated signed responses are refused with SSO_FAILED or yield the signed identity', async () => {
    const rng = new Rng(0x5a41);
    let refused = 0;
    for (let i = 0; i < 60; i++) {
      const r = await direct('acme', { sign: rng.pick(['both', 'response', 'assertion'] as const) });
      const xml = Buffer.from(r.samlResponse, 'base64');
      const n = rng.range(1, 4);
      for (let k = 0; k < n; k++) xml[rng.int(xml.length)] = rng.range(0x20, 0x7e);
      const input = rng.chance(0.1) ? xml.toString('utf8').slice(0, rng.int(xml.length)) : xml.toString('utf8');
      try {
        const id = await svc.complete(Buffer.from(input).toString('base64'), r.relayState);
        assert.equal(id.subject, 'alice@example.com');
        assert.deepEqual(id.roles, ['member']);
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'SSO_FAILED', `iteration ${i}: ${String(err)}`);
        refused++;
      }
    }
    assert.ok(refused > 40, `refused ${refused}`);
  });
});
