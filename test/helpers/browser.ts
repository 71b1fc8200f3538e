/**
 * What the browser tests share: Debian's chromium, launched to trust exactly one server
 * certificate (by the SHA-256 of its public key: no switch that skips verification), and
 * a server certificate issued by a private test CA.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { initCa, issueServerCert } from '../../src/node-api/pki.js';

export const CHROMIUM = '/usr/bin/chromium';

/** base64 SHA-256 of a certificate's SubjectPublicKeyInfo, as chromium's SPKI list takes it. */
export function spkiHash(certPem: string | Buffer): string {
  const der = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

/** A private CA in `dir/ca` and a localhost/127.0.0.1 server certificate signed by it. */
export async function issueTestCert(dir: string, name: string): Promise<{ certPem: string; keyPem: string; spki: string }> {
  const caDir = path.join(dir, 'ca');
  await initCa({ dir: caDir, commonName: `Tachyon ${name} test CA` });
  const cert = await issueServerCert({ caDir, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], days: 2, outPrefix: path.join(dir, 'server') });
  const certPem = readFileSync(cert.certFile, 'utf8');
  return { certPem, keyPem: readFileSync(cert.keyFile, 'utf8'), spki: spkiHash(certPem) };
}

/** Headless chromium that trusts the server whose key hashes to `spki`. */
export function launchChromium(spki: string): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', `--ignore-certificate-errors-spki-list=${spki}`],
  });
}

/**
 * A page in a fresh browser context on `baseURL` (the context is pushed on `contexts` for
 * closing). Script errors and console errors, CSP violations among them, collect in
 * `problems`; failed loads answered 4xx are expected by the scenarios and left out.
 */
export async function openPage(browser: Browser, baseURL: string, contexts: BrowserContext[]): Promise<{ context: BrowserContext; page: Page; problems: string[] }> {
  const context = await browser.newContext({ ignoreHTTPSErrors: false, baseURL });
  contexts.push(context);
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) problems.push(m.text());
  });
  return { context, page, problems };
}
