/**
 * `tachyon decrypt FILE… [--out DIR] [--force] [--json]`: restores the plaintext of
 * `.tachyon-enc` files offline (docs/encryption-at-rest.md). The passphrase comes from
 * TACHYON_FILE_PASSPHRASE or a prompt; each file is written under a temporary name and
 * appears under its final name only once every segment authenticated.
 */
import { unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { TachyonError, toTachyonError } from '../core/errors.js';
import { decryptFile, ENVELOPE_EXTENSION, KekCache, type EnvelopeHeader } from '../storage/envelope/index.js';
import { directoryHeaderStore, encryptingContent, type SendContent } from '../transfer/encrypted-content.js';
import type { FileOutcome, OutgoingFile } from '../transfer/roles.js';
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

/** Where a sender remembers the headers of files it encrypts, so that `-k` can resume them. */
export function headerStateDir(): string {
  const explicit = process.env.TACHYON_STATE_DIR;
  if (explicit) return path.join(explicit, 'at-rest-headers');
  const xdg = process.env.XDG_STATE_HOME;
  return path.join(xdg ? xdg : path.join(os.homedir(), '.local', 'state'), 'tachyon', 'at-rest-headers');
}

/** The encryption-at-rest part of a `send` or `recv`, prepared before connecting (the passphrase is asked first). */
export interface AtRestPlan {
  content?: (files: readonly OutgoingFile[]) => Promise<SendContent>;
  /** recv --decrypt: decrypts what was received; returns how many files failed */
  afterReceive?: (files: readonly FileOutcome[], json: boolean) => Promise<number>;
}

export async function prepareAtRest(
  op: 'send' | 'recv',
  o: { encryptAtRest?: boolean; decrypt?: boolean; resume: string; overwrite: string },
  scope: string,
): Promise<AtRestPlan> {
  if (o.encryptAtRest && op !== 'send') throw new TachyonError('USAGE', '--encrypt-at-rest is an option of send (recv takes --decrypt)');
  if (o.decrypt && op !== 'recv') throw new TachyonError('USAGE', '--decrypt is an option of recv (send takes --encrypt-at-rest)');
  if (o.encryptAtRest) {
    const passphrase = await readPassphrase({ confirm: true });
    const headers = o.resume !== 'none' ? directoryHeaderStore(headerStateDir()) : undefined;
    return { content: (files) => encryptingContent(files, { passphrase, scope, ...(headers ? { headers } : {}) }) };
  }
  if (o.decrypt) {
    const pw = await readPassphrase({ confirm: false });
    const keks = new KekCache(pw);
    const keys = async (h: EnvelopeHeader): Promise<Buffer> => {
      if (h.slot.kind !== 'passphrase') throw new TachyonError('KEY_MISSING', `encrypted with the server's master key '${h.slot.keyId}', not a passphrase`);
      return keks.get(h.slot.kdf);
    };
    return {
      afterReceive: async (files, json) => {
        let failed = 0;
        for (const f of files) {
          if (f.status !== 'done' || f.local === undefined || !f.local.endsWith(ENVELOPE_EXTENSION)) continue;
          const out = f.local.slice(0, -ENVELOPE_EXTENSION.length);
          try {
            const r = await decryptFile(f.local, out, keys, { overwrite: o.overwrite !== 'never' });
            unlinkSync(f.local);
            if (json) process.stdout.write(JSON.stringify({ event: 'file.decrypted', path: f.path, out, bytes: r.bytes }) + '\n');
          } catch (err) {
            failed++;
            const e = toTachyonError(err, 'IO');
            const reason = typeof e.details?.reason === 'string' ? e.details.reason : undefined;
            if (json) process.stdout.write(JSON.stringify({ event: 'file.error', stage: 'decrypt', path: f.path, code: e.code, ...(reason ? { reason } : {}), message: e.message }) + '\n');
            else process.stderr.write(`tachyon: ${f.path}: received, but not decrypted (kept as ${f.local}): ${e.message}\n`);
          }
        }
        return failed;
      },
    };
  }
  return {};
}
