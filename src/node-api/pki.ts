/**
 * The node API's certificates: a private certificate authority (`tachyon ca init`), server
 * certificates signed by it (`tachyon cert issue`), loading an operator's own
 * certificate/key/chain files, and the client side: TLS options and an https Agent that
 * trust ONLY the CA the operator names (plus, when asked, the system store), with chain,
 * hostname and expiry checked by Node's TLS stack. There is no option to turn
 * verification off, and no trust on first use: the CA file is installed explicitly.
 *
 * Keys are ECDSA P-256 (signatures ECDSA with SHA-256), generated with Node's WebCrypto
 * and encoded with @peculiar/x509 (the WebCrypto provider is passed to every call, never
 * registered globally). Private keys are PKCS#8 PEM files created with mode 0600 and
 * never overwritten (O_EXCL).
 */
import { createHash, createPrivateKey, randomBytes, webcrypto, X509Certificate as NodeX509 } from 'node:crypto';
import { constants, promises as fs, readFileSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import { isIP } from 'node:net';
import path from 'node:path';
import { rootCertificates, type ConnectionOptions } from 'node:tls';
// @peculiar/x509 (through tsyringe) needs the Reflect metadata API before it loads
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { TachyonError } from '../core/errors.js';

type X509Crypto = Parameters<typeof x509.X509CertificateGenerator.create>[1];
const provider = webcrypto as unknown as X509Crypto;
const subtle = webcrypto.subtle;
type KeyPair = Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['keys'];
type SigningKey = Extract<Parameters<typeof x509.X509CertificateGenerator.create>[0], { signingKey: unknown }>['signingKey'];

const EC_KEY = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** Longest validity of a server certificate (the CA/Browser Forum's limit). */
export const MAX_SERVER_CERT_DAYS = 397;
export const DEFAULT_SERVER_CERT_DAYS = 397;
export const DEFAULT_CA_DAYS = 3652;
const DAY_MS = 86_400_000;

/** The files of a CA directory. */
export function caFiles(dir: string): { cert: string; key: string } {
  return { cert: path.join(dir, 'ca.crt'), key: path.join(dir, 'ca.key') };
}

export interface CaInfo {
  readonly certFile: string;
  readonly keyFile: string;
  readonly subject: string;
  readonly notAfter: Date;
  /** SHA-256 of the certificate's DER, `AA:BB:…`. */
  readonly fingerprint: string;
}

export interface IssuedCert {
  readonly certFile: string;
  readonly keyFile: string;
  readonly subject: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly fingerprint: string;
}

function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] as number) & 0x7f; // positive
  if (b[0] === 0) b[0] = 1;
  return b.toString('hex');
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function fingerprintOf(der: ArrayBuffer | Buffer): string {
  return createHash('sha256')
    .update(Buffer.from(der as ArrayBuffer))
    .digest('hex')
    .toUpperCase()
    .replace(/(..)(?!$)/g, '$1:');
}

/** Writes a new file (never replaces one): EXISTS if something is there. */
async function writeNew(file: string, text: string, mode: number): Promise<void> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0), mode);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new TachyonError('EXISTS', `${file} exists; refusing to overwrite it`, { cause: err });
    throw new TachyonError(code === 'EACCES' ? 'PERMISSION' : 'IO', `cannot create ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    await fh.writeFile(text);
    await fh.chmod(mode);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new TachyonError(code === 'ENOENT' ? 'NOT_FOUND' : 'CONFIG', `cannot read the ${what} ${file}: ${(err as Error).message}`, { cause: err });
  }
}

function pemBody(text: string, label: string, file: string): Buffer {
  const m = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(text);
  if (!m) throw new TachyonError('CONFIG', `${file} holds no ${label} block`);
  return Buffer.from((m[1] ?? '').replace(/\s+/g, ''), 'base64');
}

/** A certificate name: letters, digits, spaces and a few punctuation marks only. */
function checkCommonName(cn: string): string {
  if (!/^[A-Za-z0-9 ._-]{1,64}$/.test(cn)) throw new TachyonError('USAGE', `invalid common name '${cn.slice(0, 80)}' (1-64 of A-Z a-z 0-9 space . _ -)`);
  return cn;
}

/** A DNS name for a SAN: labels of letters, digits and hyphens (a leading `*.` allowed). */
export function checkDnsName(name: string): string {
  const n = name.toLowerCase();
  const label = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
  const labels = n.startsWith('*.') ? n.slice(2).split('.') : n.split('.');
  if (n.length > 253 || labels.length === 0 || !labels.every((l) => label.test(l)) || isIP(n) !== 0) {
    throw new TachyonError('USAGE', `invalid host name '${name.slice(0, 80)}' (use --ip for addresses)`);
  }
  return n;
}

export interface InitCaOptions {
  readonly dir: string;
  readonly commonName?: string;
  readonly days?: number;
  /** Creation time (tests). Default now. */
  readonly now?: Date;
}

/**
 * Creates a private CA in `dir` (created 0700 if missing): `ca.key` (PKCS#8, 0600) and
 * `ca.crt` (self-signed; basicConstraints CA with path length 0, keyUsage keyCertSign and
 * cRLSign, both critical; ~10 years).
 *
 * @throws TachyonError `EXISTS` if the directory already holds a CA key or certificate.
 */
export async function initCa(o: InitCaOptions): Promise<CaInfo> {
  const days = o.days ?? DEFAULT_CA_DAYS;
  if (!Number.isInteger(days) || days < 1 || days > 3652 * 3) throw new TachyonError('USAGE', `invalid CA validity ${days} days (1-10956)`);
  const cn = checkCommonName(o.commonName ?? 'Tachyon node CA');
  await fs.mkdir(o.dir, { recursive: true, mode: 0o700 });
  const files = caFiles(o.dir);
  for (const f of [files.key, files.cert]) {
    if (await fs.lstat(f).then(() => true, () => false)) throw new TachyonError('EXISTS', `${f} exists: ${o.dir} already holds a CA`);
  }
  const now = o.now ?? new Date();
  const keys = (await subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as unknown as KeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serial(),
      name: `CN=${cn}`,
      notBefore: new Date(now.getTime() - 60_000),
      notAfter: new Date(now.getTime() + days * DAY_MS),
      signingAlgorithm: SIGNING,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, provider),
      ],
    },
    provider,
  );
  const pkcs8 = await subtle.exportKey('pkcs8', keys.privateKey as unknown as webcrypto.CryptoKey);
  await writeNew(files.key, pem('PRIVATE KEY', pkcs8), 0o600);
  await writeNew(files.cert, cert.toString('pem') + '\n', 0o644);
  return { certFile: files.cert, keyFile: files.key, subject: cert.subject, notAfter: cert.notAfter, fingerprint: fingerprintOf(cert.rawData) };
}

export interface IssueCertOptions {
  /** The CA directory (ca.crt, ca.key). */
  readonly caDir: string;
  /** DNS names; the first is the subject's CN. At least one name or address. */
  readonly dnsNames: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly days?: number;
  /** Writes PREFIX.crt (the certificate, then the CA's) and PREFIX.key (0600). */
  readonly outPrefix: string;
  /** Issue time (tests make expired certificates with it). Default now. */
  readonly now?: Date;
}

/**
 * Signs a server certificate with the CA of `caDir`: SAN DNS and IP names, EKU serverAuth,
 * keyUsage digitalSignature, not a CA, at most {@link MAX_SERVER_CERT_DAYS} days.
 *
 * @throws TachyonError `USAGE` (bad names, days), `NOT_FOUND`/`CONFIG` (CA files),
 *   `EXISTS` (output files present).
 */
export async function issueServerCert(o: IssueCertOptions): Promise<IssuedCert> {
  const days = o.days ?? DEFAULT_SERVER_CERT_DAYS;
  if (!Number.isInteger(days) || days < 1 || days > MAX_SERVER_CERT_DAYS) {
    throw new TachyonError('USAGE', `invalid validity ${days} days (1-${MAX_SERVER_CERT_DAYS})`);
  }
  const dnsNames = [...new Set(o.dnsNames.map(checkDnsName))];
  const ips = [...new Set((o.ipAddresses ?? []).map((ip) => {
    if (isIP(ip) === 0) throw new TachyonError('USAGE', `invalid IP address '${ip.slice(0, 80)}'`);
    return ip;
  }))];
  if (dnsNames.length === 0 && ips.length === 0) throw new TachyonError('USAGE', 'name the server: give --name HOST and/or --ip ADDRESS');
  const files = caFiles(o.caDir);
  const caPem = await readText(files.cert, 'CA certificate');
  const caKeyPem = await readText(files.key, 'CA key');
  const caCert = new x509.X509Certificate(pemBody(caPem, 'CERTIFICATE', files.cert));
  const caKey = await subtle.importKey('pkcs8', pemBody(caKeyPem, 'PRIVATE KEY', files.key), EC_KEY, false, ['sign']).catch((err: unknown) => {
    throw new TachyonError('CONFIG', `${files.key} is not an ECDSA P-256 PKCS#8 key: ${(err as Error).message}`, { cause: err });
  });
  const now = o.now ?? new Date();
  const keys = (await subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as unknown as KeyPair;
  const notBefore = new Date(now.getTime() - 60_000);
  const notAfter = new Date(now.getTime() + days * DAY_MS);
  if (notAfter > caCert.notAfter) throw new TachyonError('USAGE', `the certificate would outlive its CA (CA valid until ${caCert.notAfter.toISOString()}); give fewer --days`);
  const cn = dnsNames[0] ?? ips[0] ?? 'tachyon';
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial(),
      subject: `CN=${cn}`,
      issuer: caCert.subject,
      notBefore,
      notAfter,
      signingAlgorithm: SIGNING,
      publicKey: keys.publicKey,
      signingKey: caKey as unknown as SigningKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
        new x509.SubjectAlternativeNameExtension([...dnsNames.map((value) => ({ type: 'dns' as const, value })), ...ips.map((value) => ({ type: 'ip' as const, value }))], false),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, provider),
        await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey, false, provider),
      ],
    },
    provider,
  );
  const pkcs8 = await subtle.exportKey('pkcs8', keys.privateKey as unknown as webcrypto.CryptoKey);
  const certFile = `${o.outPrefix}.crt`;
  const keyFile = `${o.outPrefix}.key`;
  await fs.mkdir(path.dirname(path.resolve(certFile)), { recursive: true, mode: 0o700 });
  await writeNew(keyFile, pem('PRIVATE KEY', pkcs8), 0o600);
  await writeNew(certFile, cert.toString('pem') + '\n' + caCert.toString('pem') + '\n', 0o644);
  return { certFile, keyFile, subject: cert.subject, dnsNames, ipAddresses: ips, notBefore, notAfter, fingerprint: fingerprintOf(cert.rawData) };
}

/** What a TLS server needs, read from PEM files. */
export interface ServerTlsMaterial {
  readonly cert: string;
  readonly key: string;
  /** Where the certificate came from (messages). */
  readonly certFile: string;
  readonly notAfter: Date;
  readonly fingerprint: string;
}

/**
 * Reads an operator's (or `cert issue`'s) certificate, key and optional chain files. The
 * certificate must parse and match the key; an expired one is refused (`CONFIG`).
 */
export function loadServerTls(o: { certFile: string; keyFile: string; chainFile?: string; now?: Date; /** who uses it, in messages (default `node API`) */ service?: string }): ServerTlsMaterial {
  const service = o.service ?? 'node API';
  const read = (f: string, what: string): string => {
    try {
      return readFileSync(f, 'utf8');
    } catch (err) {
      throw new TachyonError('CONFIG', `cannot read the ${service} ${what} ${f}: ${(err as Error).message}`, { cause: err });
    }
  };
  let cert = read(o.certFile, 'certificate');
  const key = read(o.keyFile, 'private key');
  if (o.chainFile !== undefined) cert = `${cert.trimEnd()}\n${read(o.chainFile, 'certificate chain')}`;
  let leaf: NodeX509;
  try {
    leaf = new NodeX509(cert);
  } catch (err) {
    throw new TachyonError('CONFIG', `${o.certFile} is not a PEM certificate: ${(err as Error).message}`, { cause: err });
  }
  let matches = false;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw new TachyonError('CONFIG', `${o.keyFile} is not a PEM private key: ${(err as Error).message}`, { cause: err });
  }
  if (!matches) throw new TachyonError('CONFIG', `${o.keyFile} is not the key of the certificate ${o.certFile}`);
  const notAfter = new Date(leaf.validTo);
  if (notAfter.getTime() <= (o.now ?? new Date()).getTime()) throw new TachyonError('CONFIG', `the ${service} certificate ${o.certFile} expired on ${notAfter.toISOString()}`);
  return { cert, key, certFile: o.certFile, notAfter, fingerprint: leaf.fingerprint256 };
}

/** TLS versions and suites the node API speaks (server and clients alike). */
export const TLS_MIN_VERSION = 'TLSv1.2' as const;
/**
 * TLS 1.2 suites: ECDHE key exchange with an AEAD cipher only (no CBC, no RSA key
 * exchange, no static DH). TLS 1.3's suites are all AEAD and are kept as OpenSSL orders them.
 */
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-CHACHA20-POLY1305',
] as const;
export const TLS13_CIPHERS = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'] as const;
/** The OpenSSL cipher string for `ciphers`: TLS 1.3 suites, then the TLS 1.2 ones. */
export const TLS_CIPHER_STRING = [...TLS13_CIPHERS, ...TLS12_CIPHERS].join(':');

export interface ClientTrust {
  /** PEM file of the CA that signs the node's certificate (for example tachyon-data/ca/ca.crt). */
  readonly caFile: string;
  /** Also trust the system's CA store (for nodes with a public certificate). Default false. */
  readonly systemStore?: boolean;
}

/**
 * TLS options for a Tachyon client of a node API: trusts only `caFile` (and the system
 * store when asked), requires TLS 1.2+, verifies chain, expiry and host name (Node's
 * defaults, made explicit; there is deliberately no way to switch them off).
 */
export function clientTlsOptions(trust: ClientTrust): ConnectionOptions {
  const text = readFileSync(trust.caFile, 'utf8');
  const cas = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (cas.length === 0) throw new TachyonError('CONFIG', `${trust.caFile} holds no PEM certificate`);
  return {
    ca: trust.systemStore === true ? [...rootCertificates, ...cas] : cas,
    rejectUnauthorized: true,
    minVersion: TLS_MIN_VERSION,
    ciphers: TLS_CIPHER_STRING,
  };
}

/** An https Agent for a node API client (see {@link clientTlsOptions}). */
export function clientAgent(trust: ClientTrust & { keepAlive?: boolean }): HttpsAgent {
  return new HttpsAgent({ ...clientTlsOptions(trust), keepAlive: trust.keepAlive ?? true });
}

/**
 * What `tachyon start` does on every start: a CA in `caDir` if there is none, and a
 * certificate for localhost, 127.0.0.1 and ::1 at `prefix` (.crt/.key) if there is none or
 * it expires within `renewDays` (the old files are kept under `<file>.old-<time>`).
 */
export async function ensureLocalCertificate(o: { caDir: string; prefix: string; renewDays?: number; now?: Date }): Promise<{ caFile: string; certFile: string; keyFile: string; created: string[] }> {
  const created: string[] = [];
  const ca = caFiles(o.caDir);
  const exists = (f: string): Promise<boolean> => fs.lstat(f).then(() => true, () => false);
  if (!(await exists(ca.cert)) && !(await exists(ca.key))) {
    await initCa({ dir: o.caDir, ...(o.now ? { now: o.now } : {}) });
    created.push(ca.cert);
  }
  const certFile = `${o.prefix}.crt`;
  const keyFile = `${o.prefix}.key`;
  const now = o.now ?? new Date();
  let renew = !(await exists(certFile)) || !(await exists(keyFile));
  if (!renew) {
    const leaf = new NodeX509(await fs.readFile(certFile));
    renew = Date.parse(leaf.validTo) - now.getTime() < (o.renewDays ?? 30) * DAY_MS;
    if (renew) {
      const stamp = now.toISOString().replace(/[:.]/g, '-');
      for (const f of [certFile, keyFile]) await fs.rename(f, `${f}.old-${stamp}`).catch(() => undefined);
    }
  }
  if (renew) {
    await issueServerCert({ caDir: o.caDir, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'], outPrefix: o.prefix, ...(o.now ? { now: o.now } : {}) });
    created.push(certFile);
  }
  return { caFile: ca.cert, certFile, keyFile, created };
}
