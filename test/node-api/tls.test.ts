/**
 * The node API's TLS with real clients: the PKI module's certificates (CA constraints,
 * SANs, EKU, key file modes), protocol versions and cipher suites the server accepts and
 * refuses, and the client side: no CA, a wrong host name and an expired certificate all
 * fail; the CA-only agent succeeds.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { Agent } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { connect, type ConnectionOptions } from 'node:tls';
import { MemoryAuditSink } from '../../src/audit/index.js';
import { openDatabase, type Database } from '../../src/db/database.js';
import { startNodeApiServer, type NodeApiServer } from '../../src/node-api/node.js';
import { clientAgent, clientTlsOptions, ensureLocalCertificate, initCa, issueServerCert, loadServerTls, MAX_SERVER_CERT_DAYS } from '../../src/node-api/pki.js';
import { parseRootPattern } from '../../src/server/users/storage-roots.js';
import { rejectsCode, throwsCode } from '../helpers/errors.js';
import { httpsCall, TEST_HASH_COST } from './helpers.js';

/** Result of a raw TLS handshake with the given client options. */
function handshake(port: number, o: ConnectionOptions): Promise<{ ok: true; protocol: string | null; cipher: string } | { ok: false; code: string; message: string }> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, ...o });
    s.once('secureConnect', () => {
      const r = { ok: true as const, protocol: s.getProtocol(), cipher: s.getCipher().name };
      s.end();
      resolve(r);
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      s.destroy();
      resolve({ ok: false, code: err.code ?? '', message: err.message });
    });
  });
}

describe('node API TLS', () => {
  let work: string;
  let caDir: string;
  let caFile: string;
  let database: Database;
  const servers: NodeApiServer[] = [];
  let port: number;
  let expiredPort: number;

  const start = async (cert: string, key: string): Promise<number> => {
    const s = await startNodeApiServer({ database, allowedRoots: [parseRootPattern('file:///srv/*')], audit: new MemoryAuditSink(), tls: { cert, key }, listen: '127.0.0.1', port: 0, hashCost: TEST_HASH_COST });
    servers.push(s);
    return s.port;
  };

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-tls-'));
    caDir = path.join(work, 'ca');
    caFile = (await initCa({ dir: caDir })).certFile;
    const c = await issueServerCert({ caDir, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], outPrefix: path.join(work, 'node') });
    database = await openDatabase({ url: 'sqlite::memory:' });
    const tls = loadServerTls({ certFile: c.certFile, keyFile: c.keyFile });
    port = await start(tls.cert, tls.key);
    const old = await issueServerCert({ caDir, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], days: 1, outPrefix: path.join(work, 'expired'), now: new Date(Date.now() - 3 * 86_400_000) });
    expiredPort = await start(readFileSync(old.certFile, 'utf8'), readFileSync(old.keyFile, 'utf8'));
  });

  after(async () => {
    for (const s of servers) await s.close();
    await database?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('the CA is a CA (critical basicConstraints, keyCertSign/cRLSign, ~10 years) with a 0600 key, never overwritten', async () => {
    const ca = new X509Certificate(readFileSync(caFile));
    assert.equal(ca.ca, true);
    assert.equal(ca.verify(ca.publicKey), true);
    const years = (Date.parse(ca.validTo) - Date.now()) / (365.25 * 86_400_000);
    assert.ok(years > 9.9 && years < 10.1, `${years}`);
    assert.equal(statSync(path.join(caDir, 'ca.key')).mode & 0o777, 0o600);
    assert.equal(ca.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    await rejectsCode(initCa({ dir: caDir }), 'EXISTS');
  });

  it('server certificates: signed by the CA, SAN names, serverAuth, not a CA, at most 397 days', async () => {
    const leafPem = readFileSync(path.join(work, 'node.crt'), 'utf8');
    const leaf = new X509Certificate(leafPem);
    const ca = new X509Certificate(readFileSync(caFile));
    assert.equal(leaf.ca, false);
    assert.equal(leaf.verify(ca.publicKey), true);
    assert.equal(leaf.checkIssued(ca), true);
    assert.match(String(leaf.subjectAltName), /DNS:localhost/);
    assert.match(String(leaf.subjectAltName), /IP Address:127\.0\.0\.1/);
    assert.deepEqual(leaf.keyUsage, ['1.3.6.1.5.5.7.3.1']);
    assert.ok(Date.parse(leaf.validTo) - Date.now() <= MAX_SERVER_CERT_DAYS * 86_400_000 + 60_000);
    assert.equal(statSync(path.join(work, 'node.key')).mode & 0o777, 0o600);
    await rejectsCode(issueServerCert({ caDir, dnsNames: ['x.example'], days: 398, outPrefix: path.join(work, 'long') }), 'USAGE');
    await rejectsCode(issueServerCert({ caDir, dnsNames: ['bad_name!'], outPrefix: path.join(work, 'bad') }), 'USAGE');
    await rejectsCode(issueServerCert({ caDir, dnsNames: [], ipAddresses: ['999.1.1.1'], outPrefix: path.join(work, 'bad') }), 'USAGE');
    await rejectsCode(issueServerCert({ caDir, dnsNames: ['localhost'], outPrefix: path.join(work, 'node') }), 'EXISTS');
    throwsCode(() => loadServerTls({ certFile: path.join(work, 'expired.crt'), keyFile: path.join(work, 'expired.key') }), 'CONFIG');
    throwsCode(() => loadServerTls({ certFile: path.join(work, 'node.crt'), keyFile: path.join(work, 'expired.key') }), 'CONFIG');
  });

  it('accepts TLS 1.3 and TLS 1.2 with ECDHE + AEAD suites', async () => {
    const trust = clientTlsOptions({ caFile });
    const t13 = await handshake(port, { ...trust, servername: 'localhost' });
    assert.equal(t13.ok, true, JSON.stringify(t13));
    if (t13.ok) assert.equal(t13.protocol, 'TLSv1.3');
    for (const cipher of ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305']) {
      const r = await handshake(port, { ...trust, servername: 'localhost', maxVersion: 'TLSv1.2', ciphers: cipher });
      assert.equal(r.ok, true, `${cipher}: ${JSON.stringify(r)}`);
      if (r.ok) {
        assert.equal(r.protocol, 'TLSv1.2');
        assert.equal(r.cipher, cipher);
      }
    }
  });

  it('refuses TLS 1.0 and 1.1 (the server answers with a protocol_version alert)', async () => {
    for (const v of ['TLSv1', 'TLSv1.1'] as const) {
      const r = await handshake(port, { ca: readFileSync(caFile), servername: 'localhost', minVersion: v, maxVersion: v, ciphers: 'DEFAULT@SECLEVEL=0' });
      assert.equal(r.ok, false, v);
      if (!r.ok) assert.match(`${r.code} ${r.message}`, /PROTOCOL_VERSION|protocol version/i, `${v}: ${r.code} ${r.message}`);
    }
  });

  it('refuses weak TLS 1.2 suites (CBC, SHA-1 MACs, no forward secrecy) with a handshake failure from the server', async () => {
    for (const cipher of ['ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA384', 'ECDHE-ECDSA-AES128-SHA256', 'AES128-GCM-SHA256', 'AES256-SHA']) {
      const r = await handshake(port, { ca: readFileSync(caFile), servername: 'localhost', maxVersion: 'TLSv1.2', ciphers: `${cipher}@SECLEVEL=0` });
      assert.equal(r.ok, false, cipher);
      if (!r.ok) assert.match(`${r.code} ${r.message}`, /HANDSHAKE_FAILURE|handshake failure|NO_SHARED_CIPHER|no shared cipher/i, `${cipher}: ${r.code} ${r.message}`);
    }
  });

  it('a client without the CA fails (self-signed chain), one with it succeeds', async () => {
    const noCa = new Agent({ keepAlive: false });
    await assert.rejects(httpsCall(noCa, port, 'GET', '/openapi.json'), (err: NodeJS.ErrnoException) => /SELF_SIGNED|UNABLE_TO_GET_ISSUER|unable to verify/i.test(`${err.code} ${err.message}`));
    noCa.destroy();
    const other = await initCa({ dir: path.join(work, 'other-ca') });
    const wrongCa = clientAgent({ caFile: other.certFile, keepAlive: false });
    await assert.rejects(httpsCall(wrongCa, port, 'GET', '/openapi.json'), (err: NodeJS.ErrnoException) => /UNABLE_TO_GET_ISSUER|unable to verify|SELF_SIGNED/i.test(`${err.code} ${err.message}`));
    wrongCa.destroy();
    const good = clientAgent({ caFile, keepAlive: false });
    assert.equal((await httpsCall(good, port, 'GET', '/openapi.json')).status, 200);
    assert.equal((await httpsCall(good, port, 'GET', '/openapi.json', { host: 'localhost' })).status, 200);
    good.destroy();
  });

  it('a wrong host name fails', async () => {
    const r = await handshake(port, { ...clientTlsOptions({ caFile }), servername: 'node.example' });
    assert.equal(r.ok, false);
    if (!r.ok) assert.match(`${r.code} ${r.message}`, /ERR_TLS_CERT_ALTNAME_INVALID|altnames/i);
  });

  it('an expired certificate fails', async () => {
    const a = clientAgent({ caFile, keepAlive: false });
    await assert.rejects(httpsCall(a, expiredPort, 'GET', '/openapi.json'), (err: NodeJS.ErrnoException) => err.code === 'CERT_HAS_EXPIRED');
    a.destroy();
  });

  it('ensureLocalCertificate (tachyon start): makes CA and certificate once, keeps them, renews a certificate close to expiry', async () => {
    const caDir2 = path.join(work, 'start-ca');
    const prefix = path.join(work, 'start-tls', 'node');
    const first = await ensureLocalCertificate({ caDir: caDir2, prefix });
    assert.equal(first.created.length, 2);
    const fp = new X509Certificate(readFileSync(first.certFile)).fingerprint256;
    const again = await ensureLocalCertificate({ caDir: caDir2, prefix });
    assert.deepEqual(again.created, []);
    assert.equal(new X509Certificate(readFileSync(again.certFile)).fingerprint256, fp);
    const later = await ensureLocalCertificate({ caDir: caDir2, prefix, now: new Date(Date.now() + 380 * 86_400_000) });
    assert.deepEqual(later.created, [`${prefix}.crt`]);
    const renewed = new X509Certificate(readFileSync(later.certFile));
    assert.notEqual(renewed.fingerprint256, fp);
    assert.match(String(renewed.subjectAltName), /IP Address:::1|IP Address:0:0:0:0:0:0:0:1/);
  });

  it('a port in use is a CONFIG error that says what to do', async () => {
    const tls = loadServerTls({ certFile: path.join(work, 'node.crt'), keyFile: path.join(work, 'node.key') });
    const err = await rejectsCode(startNodeApiServer({ database, allowedRoots: [], audit: new MemoryAuditSink(), tls, listen: '127.0.0.1', port }), 'CONFIG');
    assert.match(err.message, /port is in use/);
  });

  it('the client trusts only the given CA unless the system store is asked for', () => {
    const only = clientTlsOptions({ caFile });
    assert.equal((only.ca as string[]).length, 1);
    assert.equal(only.rejectUnauthorized, true);
    const both = clientTlsOptions({ caFile, systemStore: true });
    assert.ok((both.ca as string[]).length > 1);
  });
});
