/**
 * `tachyon decrypt FILE… [--out DIR] [--force] [--json]`: restores the plaintext of
 * `.tachyon-enc` files offline (docs/encryption-at-rest.md). The passphrase comes from
 * TACHYON_FILE_PASSPHRASE or a prompt; each file is written under a temporary name and
 * appears under its final name only once every segment authenticated.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { TachyonError, toTachyonError } from '../core/errors.js';
import { decryptFile, ENVELOPE_EXTENSION, KekCache, type EnvelopeHeader } from '../storage/envelope/index.js';
import { readPassphrase } from './passphrase.js';

interface DecryptOpts {
  out?: string;
  force: boolean;
  json: boolean;
}

/** The plaintext name of an envelope file: the name without `.tachyon-enc`. */
export function decryptedName(file: string): string {
  const base = path.basename(file);
  if (!base.endsWith(ENVELOPE_EXTENSION) || base.length === ENVELOPE_EXTENSION.length) {
    throw new TachyonError('USAGE', `${file}: not a ${ENVELOPE_EXTENSION} file name`);
  }
  return base.slice(0, -ENVELOPE_EXTENSION.length);
}

/** Resolves key-encryption keys for headers, asking for the passphrase once, when first needed. */
export function passphraseKeys(): (h: EnvelopeHeader) => Promise<Buffer> {
  let cache: Promise<KekCache> | undefined;
  return async (h) => {
    if (h.slot.kind !== 'passphrase') {
      throw new TachyonError('KEY_MISSING', `encrypted by a server with master key '${h.slot.keyId}', not with a passphrase: the server decrypts it on download`);
    }
    cache ??= readPassphrase({ confirm: false }).then((pw) => new KekCache(pw));
    return (await cache).get(h.slot.kdf);
  };
}

async function runDecrypt(files: string[], o: DecryptOpts): Promise<number> {
  const keys = passphraseKeys();
  let failed = 0;
  let lastExit = 0;
  let bytes = 0;
  const t0 = performance.now();
  for (const file of files) {
    const started = performance.now();
    try {
      const dest = path.join(o.out ?? path.dirname(file), decryptedName(file));
      const r = await decryptFile(file, dest, keys, { overwrite: o.force });
      bytes += r.bytes;
      const s = (performance.now() - started) / 1000;
      const rate = Math.round(r.bytes / 1e6 / Math.max(s, 1e-6));
      if (o.json) process.stdout.write(JSON.stringify({ event: 'file.done', path: file, out: dest, bytes: r.bytes, seconds: Math.round(s * 1000) / 1000, rateMBps: rate }) + '\n');
      else process.stderr.write(`decrypted ${file} -> ${dest} (${r.bytes} bytes, ${rate} MB/s)\n`);
    } catch (err) {
      const e = toTachyonError(err, 'IO');
      if (e.code === 'USAGE' || e.code === 'CANCELLED') throw e; // no passphrase: nothing else can work
      failed++;
      lastExit = e.exitCode;
      const reason = typeof e.details?.reason === 'string' ? e.details.reason : undefined;
      if (o.json) process.stdout.write(JSON.stringify({ event: 'file.error', path: file, code: e.code, ...(reason ? { reason } : {}), message: e.message }) + '\n');
      else process.stderr.write(`tachyon: ${file}: ${e.message}\n`);
    }
  }
  const s = (performance.now() - t0) / 1000;
  if (o.json) {
    process.stdout.write(JSON.stringify({ event: 'done', ok: failed === 0, files: files.length, failed, bytes, seconds: Math.round(s * 1000) / 1000, rateMBps: Math.round(bytes / 1e6 / Math.max(s, 1e-6)) }) + '\n');
  }
  if (failed === 0) return 0;
  return files.length === 1 ? lastExit : 1;
}

export function registerAtRestCommands(program: Command): void {
  program
    .command('decrypt')
    .description(`decrypt ${ENVELOPE_EXTENSION} files offline (passphrase from TACHYON_FILE_PASSPHRASE or a prompt)`)
    .argument('<files...>', `${ENVELOPE_EXTENSION} files`)
    .option('--out <dir>', 'write the plaintext files into DIR (default: beside each file)')
    .option('--force', 'replace an existing plaintext file', false)
    .option('--json', 'print one JSON object per file, then a final "done"', false)
    .action(async (files: string[], o: DecryptOpts) => {
      process.exitCode = await runDecrypt(files, o);
    });
}
