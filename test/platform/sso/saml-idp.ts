/**
 * A minimal but real SAML 2.0 identity provider for the SSO tests: an HTTP server on
 * 127.0.0.1 (port 0) that takes the SP's AuthnRequest by HTTP-Redirect (inflates and reads
 * it), and answers with the HTML auto-submit form of the HTTP-POST binding carrying a
 * Response signed with xml-crypto (RSA-SHA256, exclusive c14n) by a key and self-signed
 * certificate generated at start (@peculiar/x509). Options of the next response let a
 * test ask for what a broken or hostile IdP would send.
 */
import { createServer, type Server } from 'node:http';
import { inflateRawSync } from 'node:zlib';
import { KeyObject, randomBytes, webcrypto } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { SignedXml } from 'xml-crypto';

type X509Crypto = Parameters<typeof x509.X509CertificateGenerator.create>[1];
type KeyPair = Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['keys'];

export interface SigningIdentity {
  certPem: string;
  keyPem: string;
}

/** A fresh RSA key and a self-signed certificate for it. */
export async function makeSigningIdentity(cn: string): Promise<SigningIdentity> {
  const alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]) };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as unknown as KeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomBytes(8).toString('hex'),
      name: `CN=${cn}`,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      signingAlgorithm: alg,
      keys,
    },
    webcrypto as unknown as X509Crypto,
  );
  const keyPem = KeyObject.from(keys.privateKey as unknown as webcrypto.CryptoKey).export({ type: 'pkcs8', format: 'pem' }) as string;
  return { certPem: cert.toString('pem'), keyPem };
}

export interface ResponseOptions {
  requestId: string | undefined;
  acsUrl: string;
  audience: string;
  issuer: string;
  nameId: string;
  attributes: Record<string, string[]>;
  /** What is signed: the whole response, the assertion, both, or nothing. */
  sign: 'response' | 'assertion' | 'both' | 'none';
  /** Sign with this identity instead of the IdP's own. */
  signer?: SigningIdentity;
  /** Shift all timestamps (ms; negative = in the past). */
  timeShiftMs?: number;
  /** Lifetime of the assertion (ms, default 5 min). */
  lifetimeMs?: number;
  /** Put no InResponseTo into the bearer SubjectConfirmationData. */
  omitSubjectInResponseTo?: boolean;
  assertionId?: string;
  /** Recipient of the bearer confirmation (default: acsUrl). */
  recipient?: string;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export function buildAssertion(o: ResponseOptions): { id: string; xml: string } {
  const now = Date.now() + (o.timeShiftMs ?? 0);
  const iso = (ms: number) => new Date(ms).toISOString();
  const id = o.assertionId ?? `_a${randomBytes(16).toString('hex')}`;
  const until = iso(now + (o.lifetimeMs ?? 5 * 60_000));
  const irt = o.requestId !== undefined && !o.omitSubjectInResponseTo ? ` InResponseTo="${esc(o.requestId)}"` : '';
  const attrs = Object.entries(o.attributes)
    .map(([k, vs]) => `<saml:Attribute Name="${esc(k)}">${vs.map((v) => `<saml:AttributeValue>${esc(v)}</saml:AttributeValue>`).join('')}</saml:Attribute>`)
    .join('');
  const xml =
    `<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${id}" Version="2.0" IssueInstant="${iso(now)}">` +
    `<saml:Issuer>${esc(o.issuer)}</saml:Issuer>` +
    `<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">${esc(o.nameId)}</saml:NameID>` +
    `<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData${irt} NotOnOrAfter="${until}" Recipient="${esc(o.recipient ?? o.acsUrl)}"/></saml:SubjectConfirmation></saml:Subject>` +
    `<saml:Conditions NotBefore="${iso(now - 5_000)}" NotOnOrAfter="${until}"><saml:AudienceRestriction><saml:Audience>${esc(o.audience)}</saml:Audience></saml:AudienceRestriction></saml:Conditions>` +
    `<saml:AuthnStatement AuthnInstant="${iso(now)}" SessionIndex="_s${randomBytes(8).toString('hex')}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>` +
    (attrs === '' ? '' : `<saml:AttributeStatement>${attrs}</saml:AttributeStatement>`) +
    `</saml:Assertion>`;
  return { id, xml };
}

/** Wraps an assertion (signed or not) in a Response, optionally signing the Response. */
export function wrapResponse(o: Pick<ResponseOptions, 'requestId' | 'acsUrl' | 'issuer' | 'timeShiftMs'> & { signer?: SigningIdentity; sign: boolean }, assertionXml: string): string {
  const now = Date.now() + (o.timeShiftMs ?? 0);
  const irt = o.requestId === undefined ? '' : ` InResponseTo="${esc(o.requestId)}"`;
  const xml =
    `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r${randomBytes(16).toString('hex')}" Version="2.0" IssueInstant="${new Date(now).toISOString()}" Destination="${esc(o.acsUrl)}"${irt}>` +
    `<saml:Issuer>${esc(o.issuer)}</saml:Issuer>` +
    `<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>` +
    assertionXml +
    `</samlp:Response>`;
  return o.sign && o.signer ? signElement(xml, 'Response', o.signer) : xml;
}

/** Signs the (first) element named `local` with an enveloped signature placed after its Issuer. */
export function signElement(xml: string, local: 'Response' | 'Assertion', signer: SigningIdentity): string {
  const sig = new SignedXml({
    privateKey: signer.keyPem,
    publicCert: signer.certPem,
    canonicalizationAlgorithm: 'http://www.w3.org/2001/10/xml-exc-c14n#',
    signatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
  });
  sig.addReference({
    xpath: `//*[local-name(.)='${local}']`,
    transforms: ['http://www.w3.org/2000/09/xmldsig#enveloped-signature', 'http://www.w3.org/2001/10/xml-exc-c14n#'],
    digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256',
  });
  sig.computeSignature(xml, { location: { reference: `//*[local-name(.)='${local}']/*[local-name(.)='Issuer']`, action: 'after' } });
  return sig.getSignedXml();
}

/** A complete Response as base64 (the SAMLResponse form field). */
export function buildResponse(o: ResponseOptions, own: SigningIdentity): { samlResponse: string; assertionId: string; assertionXml: string } {
  const signer = o.signer ?? own;
  const a = buildAssertion(o);
  const assertionXml = o.sign === 'assertion' || o.sign === 'both' ? signElement(a.xml, 'Assertion', signer) : a.xml;
  const xml = wrapResponse({ ...o, signer, sign: o.sign === 'response' || o.sign === 'both' }, assertionXml);
  return { samlResponse: Buffer.from(xml).toString('base64'), assertionId: a.id, assertionXml };
}

export interface TestSamlIdp {
  entityId: string;
  ssoUrl: string;
  identity: SigningIdentity;
  /** Options for the next response (merged over the defaults the request implies). */
  next: Partial<ResponseOptions> & { nameId: string; attributes: Record<string, string[]> };
  /** SP entity id expected as the audience (what the IdP has registered for this SP). */
  audience: string;
  close(): Promise<void>;
}

/** The fields of the HTTP-POST binding's auto-submit form. */
export interface PostForm {
  action: string;
  SAMLResponse: string;
  RelayState: string;
}

export async function startSamlIdp(audience: string): Promise<TestSamlIdp> {
  const identity = await makeSigningIdentity('Tachyon test IdP');
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const idp: TestSamlIdp = {
    entityId: `${base}/metadata`,
    ssoUrl: `${base}/sso`,
    identity,
    audience,
    next: { nameId: 'alice@example.com', attributes: {} },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  server.on('request', (req, res) => {
    const url = new URL(req.url ?? '/', base);
    const encoded = url.searchParams.get('SAMLRequest');
    if (url.pathname !== '/sso' || encoded === null) {
      res.statusCode = 400;
      res.end('bad request');
      return;
    }
    const request = inflateRawSync(Buffer.from(encoded, 'base64')).toString('utf8');
    const requestId = /\sID="([^"]+)"/.exec(request)?.[1];
    const acsUrl = /AssertionConsumerServiceURL="([^"]+)"/.exec(request)?.[1];
    if (requestId === undefined || acsUrl === undefined) {
      res.statusCode = 400;
      res.end('no request id or ACS URL');
      return;
    }
    const { samlResponse } = buildResponse({ requestId, acsUrl, audience: idp.audience, issuer: idp.entityId, sign: 'both', ...idp.next }, identity);
    const relay = url.searchParams.get('RelayState') ?? '';
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(
      `<!doctype html><html><body onload="document.forms[0].submit()"><form method="post" action="${esc(acsUrl)}">` +
        `<input type="hidden" name="SAMLResponse" value="${esc(samlResponse)}"><input type="hidden" name="RelayState" value="${esc(relay)}">` +
        `</form></body></html>`,
    );
  });
  return idp;
}

/** Plays the browser: follows the SP's redirect to the IdP and reads the auto-submit form it returns. */
export async function fetchPostForm(redirectUrl: string): Promise<PostForm> {
  const res = await fetch(redirectUrl, { redirect: 'manual' });
  const html = await res.text();
  if (res.status !== 200) throw new Error(`IdP answered ${res.status}: ${html}`);
  const field = (name: string) => new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1] ?? '';
  const unesc = (s: string) => s.replace(/&quot;/g, '"').replace(/&gt;/g, '>').replace(/&lt;/g, '<').replace(/&amp;/g, '&');
  return { action: unesc(/action="([^"]*)"/.exec(html)?.[1] ?? ''), SAMLResponse: unesc(field('SAMLResponse')), RelayState: unesc(field('RelayState')) };
}
