/**
 * `tachyon decrypt FILE… [--out DIR] [--force] [--json]`: restores the plaintext of
 * `.tachyon-enc` files offline (docs/encryption-at-rest.md). The passphrase comes from
 * TACHYON_FILE_PASSPHRASE or a prompt; each file is written under a temporary name and
 * appears under its final name only once every segment authenticated.
 */
import { closeSync, constants as fsc, lstatSync, openSync, readdirSync, readSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { TachyonError, toTachyonError } from '../core/errors.js';
import {
  addKeyToKeyringFile,
  decryptFile,
  ENVELOPE_EXTENSION,
  KekCache,
  keyringFromEnv,
  loadKeyringFile,
  MAGIC,
  rewrapEnvelopeFile,
  type EnvelopeHeader,
  type KeyProvider,
} from '../storage/envelope/index.js';
import { directoryHeaderStore, encryptingContent, type SendContent } from '../transfer/encrypted-content.js';
import type { FileOutcome, OutgoingFile } from '../transfer/roles.js';
import { readPassphrase } from './passphrase.js';

interface DecryptOpts {
  keyring?: string;
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
export function passphraseKeys(master?: KeyProvider): (h: EnvelopeHeader) => Promise<Buffer> {
  let cache: Promise<KekCache> | undefined;
  return async (h) => {
    if (h.slot.kind !== 'passphrase') {
      if (master) return master.key(h.slot.keyId);
      throw new TachyonError('KEY_MISSING', `encrypted by a server with master key '${h.slot.keyId}', not with a passphrase: give the server's --keyring (the server decrypts it on download)`);
    }
    cache ??= readPassphrase({ confirm: false }).then((pw) => new KekCache(pw));
    return (await cache).get(h.slot.kdf);
  };
}

async function runDecrypt(files: string[], o: DecryptOpts): Promise<number> {
  const keys = passphraseKeys(o.keyring !== undefined ? loadKeyringFile(o.keyring) : undefined);
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
    .option('--keyring <file>', "server-side encrypted files: the server's master keyring")
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
          if (f.status !== 'done' || f.local === undefined) continue;
          // NAME.tachyon-enc becomes NAME; a single file received under a name of the user's
          // choosing (DEST without the extension) is decrypted in place, under that name
          const inPlace = !f.local.endsWith(ENVELOPE_EXTENSION);
          if (inPlace && !f.path.endsWith(ENVELOPE_EXTENSION)) continue;
          const out = inPlace ? f.local : f.local.slice(0, -ENVELOPE_EXTENSION.length);
          try {
            const r = await decryptFile(f.local, out, keys, { overwrite: inPlace || o.overwrite !== 'never' });
            if (!inPlace) unlinkSync(f.local);
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

/** The master keys of server-side encryption: a keyring file, else TACHYON_MASTER_KEY. */
function masterKeys(keyring: string | undefined): KeyProvider {
  return keyring !== undefined ? loadKeyringFile(keyring) : keyringFromEnv(process.env.TACHYON_MASTER_KEY);
}

/** Regular files under the given paths (directories walked, symbolic links never followed). */
function* walkFiles(paths: readonly string[]): Generator<string> {
  for (const p of paths) {
    const st = lstatSync(p);
    if (st.isFile()) yield p;
    else if (st.isDirectory()) {
      for (const e of readdirSync(p, { withFileTypes: true })) {
        if (e.isDirectory() || e.isFile()) yield* walkFiles([path.join(p, e.name)]);
      }
    }
  }
}

function startsWithMagic(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch {
    return false;
  }
  try {
    const b = Buffer.alloc(MAGIC.length);
    return readSync(fd, b, 0, b.length, 0) === b.length && b.equals(MAGIC);
  } finally {
    closeSync(fd);
  }
}

async function runRotate(paths: string[], o: { keyring?: string; json: boolean }): Promise<number> {
  const keys = masterKeys(o.keyring);
  const counts = { rewrapped: 0, current: 0, passphrase: 0, failed: 0 };
  for (const file of walkFiles(paths)) {
    if (!startsWithMagic(file)) continue;
    try {
      const r = await rewrapEnvelopeFile(file, keys);
      if (r === 'not-master') counts.passphrase++;
      else counts[r]++;
      if (o.json && r === 'rewrapped') process.stdout.write(JSON.stringify({ event: 'file.rewrapped', path: file, keyId: keys.currentKeyId() }) + '\n');
    } catch (err) {
      counts.failed++;
      const e = toTachyonError(err, 'IO');
      if (o.json) process.stdout.write(JSON.stringify({ event: 'file.error', path: file, code: e.code, message: e.message }) + '\n');
      else process.stderr.write(`tachyon: ${file}: ${e.message}\n`);
    }
  }
  if (o.json) process.stdout.write(JSON.stringify({ event: 'done', ok: counts.failed === 0, keyId: keys.currentKeyId(), ...counts }) + '\n');
  else {
    process.stderr.write(
      `re-wrapped ${counts.rewrapped} file(s) under master key '${keys.currentKeyId()}' (${counts.current} already current, ${counts.passphrase} client-side encrypted left alone, ${counts.failed} failed)\n`,
    );
  }
  return counts.failed === 0 ? 0 : 1;
}

export function registerKeyCommands(program: Command): void {
  const keys = program.command('keys').description('master keys of server-side encryption at rest');
  keys
    .command('new')
    .description('add a fresh random master key to a keyring file (created 0600) and make it the current one')
    .requiredOption('--keyring <file>', 'keyring file: {"current": ID, "keys": {ID: HEX}}')
    .option('--id <id>', 'key id (default: k + the UTC time)')
    .action((o: { keyring: string; id?: string }) => {
      const id = addKeyToKeyringFile(o.keyring, o.id);
      process.stdout.write(`${id}\n`);
    });
  keys
    .command('rotate')
    .description("re-wrap the content keys of server-side encrypted files under the keyring's current master key (headers only; content is not rewritten)")
    .argument('<paths...>', 'files or directories (walked; symbolic links are not followed)')
    .option('--keyring <file>', 'keyring file holding the old and the new keys (default: TACHYON_MASTER_KEY=ID:HEX64)')
    .option('--json', 'one JSON object per re-wrapped file, then "done"', false)
    .action(async (paths: string[], o: { keyring?: string; json: boolean }) => {
      process.exitCode = await runRotate(paths, o);
    });
}
