/**
 * SSH key handling for the control channel: the server's host key (load or create),
 * OpenSSH fingerprints, authorized_keys parsing and known_hosts checking.
 */
import { createHash, createHmac, createPublicKey, randomBytes, timingSafeEqual } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';
import { TachyonError } from '../core/errors.js';

const { utils } = ssh2;

/** Public key types accepted in authorized_keys (and for host keys). */
export const SUPPORTED_KEY_TYPES = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'ssh-rsa',
] as const;
export type SupportedKeyType = (typeof SUPPORTED_KEY_TYPES)[number];

/** Smallest RSA modulus accepted in authorized_keys. */
export const MIN_RSA_BITS = 2048;

/**
 * The OpenSSH SHA-256 fingerprint of a public key blob (the wire format, i.e. the base64
 * part of a `.pub` line decoded): `SHA256:` + unpadded base64, as `ssh-keygen -l` prints it.
 */
export function fingerprintOf(publicKeyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(publicKeyBlob).digest('base64').replace(/=+$/, '')}`;
}

/** Pattern of a well-formed fingerprint as produced by {@link fingerprintOf}. */
export const FINGERPRINT_PATTERN = /^SHA256:[A-Za-z0-9+/]{43}$/;

/**
 * Normalizes a user-supplied fingerprint (`SHA256:…`, optional `=` padding, surrounding
 * blanks). Returns undefined if it is not a SHA-256 fingerprint.
 */
export function normalizeFingerprint(text: string): string | undefined {
  const t = text.trim().replace(/=+$/, '');
  const withPrefix = /^sha256:/i.test(t) ? `SHA256:${t.slice(7)}` : `SHA256:${t}`;
  return FINGERPRINT_PATTERN.test(withPrefix) ? withPrefix : undefined;
}

/** Reads the key type name embedded at the start of an SSH public key blob. */
export function blobKeyType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const len = blob.readUInt32BE(0);
  if (len === 0 || len > 64 || 4 + len > blob.length) return undefined;
  const name = blob.toString('latin1', 4, 4 + len);
  return /^[\x21-\x7e]+$/.test(name) ? name : undefined;
}

function decodeBase64Strict(text: string): Buffer | undefined {
  if (text.length === 0 || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return undefined;
  return Buffer.from(text, 'base64');
}

/** A host key loaded (or created) by {@link loadOrCreateHostKey}. */
export interface HostKeyInfo {
  /** The private key file contents (OpenSSH format), to pass to the SSH server. */
  privateKey: Buffer;
  /** The parsed key (private, but exposes the public half). */
  publicKey: ParsedKey;
  /** The public key in SSH wire format. */
  publicKeyBlob: Buffer;
  /** The public key as one `.pub` / known_hosts style line: `<type> <base64>`. */
  publicKeyLine: string;
  /** Key type, e.g. `ssh-ed25519`. */
  type: string;
  /** `SHA256:…` fingerprint of the public key. */
  fingerprint: string;
  /** True if the key file did not exist and was generated now. */
  created: boolean;
}

function parsePrivateKey(data: Buffer, file: string): ParsedKey {
  const parsed = utils.parseKey(data);
  if (parsed instanceof Error) {
    throw new TachyonError('CONFIG', `Cannot use host key file ${file}: ${parsed.message}`, { cause: parsed });
  }
  const key = Array.isArray(parsed) ? (parsed as ParsedKey[])[0] : parsed;
  if (key === undefined || !key.isPrivateKey()) {
    throw new TachyonError('CONFIG', `Host key file ${file} does not contain a private key`);
  }
  return key;
}

function describeHostKey(privateKey: Buffer, key: ParsedKey, created: boolean): HostKeyInfo {
  const blob = key.getPublicSSH();
  return {
    privateKey,
    publicKey: key,
    publicKeyBlob: blob,
    publicKeyLine: `${key.type} ${blob.toString('base64')}`,
    type: key.type,
    fingerprint: fingerprintOf(blob),
    created,
  };
}

/**
 * Loads the SSH host key from `file` (an unencrypted OpenSSH or PEM private key). If the
 * file does not exist, generates an ed25519 key, writes it with mode 0600 (creating the
 * directory with mode 0700 if needed) and its public half to `<file>.pub`, and returns it.
 *
 * @throws TachyonError `CONFIG` if the file cannot be parsed, is encrypted, holds no private
 *   key, or (on POSIX) is readable by group or others; `IO`/`PERMISSION` on I/O failures.
 */
export async function loadOrCreateHostKey(file: string): Promise<HostKeyInfo> {
  let data: Buffer | undefined;
  try {
    data = await fs.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(err, `read host key ${file}`);
  }
  if (data !== undefined) {
    if (process.platform !== 'win32') {
      const st = await fs.stat(file);
      if ((st.mode & 0o077) !== 0) {
        const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
        throw new TachyonError(
          'CONFIG',
          `Permissions ${mode} for host key ${file} are too open; it must not be accessible by others (chmod 600 ${file})`,
        );
      }
    }
    return describeHostKey(data, parsePrivateKey(data, file), false);
  }

  // ssh2's generator drops a leading zero byte of the ed25519 public key (about 1 key in
  // 220 comes out 31 bytes long and its own parser refuses it: "Malformed OpenSSH private
  // key"); such a key is never written: generate again
  let pair = utils.generateKeyPairSync('ed25519', { comment: `tachyon-host@${hostname()}` });
  for (let i = 0; i < 64 && utils.parseKey(pair.private) instanceof Error; i++) {
    pair = utils.generateKeyPairSync('ed25519', { comment: `tachyon-host@${hostname()}` });
  }
  const privateKey = Buffer.from(pair.private, 'utf8');
  // written in full under a temporary name, then linked into place: a process that
  // starts at the same moment sees either no key or a complete one, never a partial file
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await fs.mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const handle = await fs.open(tmp, 'wx', 0o600);
    try {
      await handle.writeFile(privateKey);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.link(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      // Another process created it in the meantime: use that one.
      await fs.rm(tmp, { force: true });
      return loadOrCreateHostKey(file);
    }
    await fs.rm(tmp, { force: true });
    throw ioError(err, `create host key ${file}`);
  }
  await fs.rm(tmp, { force: true });
  try {
    await fs.writeFile(`${file}.pub`, `${pair.public}\n`, { mode: 0o644 });
  } catch (err) {
    throw ioError(err, `write ${file}.pub`);
  }
  return describeHostKey(privateKey, parsePrivateKey(privateKey, file), true);
}

function ioError(err: unknown, what: string): TachyonError {
  const e = err as NodeJS.ErrnoException;
  const code = e.code === 'EACCES' || e.code === 'EPERM' ? 'PERMISSION' : 'IO';
  return new TachyonError(code, `Cannot ${what}: ${e.message}`, { cause: err });
}

// ---------------------------------------------------------------------------------------
// authorized_keys

/** One option from the options prefix of an authorized_keys line, e.g. `from="10.0.0.0/8"`. */
export interface AuthorizedKeyOption {
  name: string;
  /** The unquoted value, if the option has one. */
  value?: string;
}

/** A usable key from an authorized_keys file. */
export interface AuthorizedKey {
  /** 1-based line number. */
  line: number;
  type: SupportedKeyType;
  /** The public key in SSH wire format. */
  blob: Buffer;
  fingerprint: string;
  comment: string;
  /**
   * Options given before the key. They are parsed but NOT enforced here; callers that
   * honour some (e.g. `from=`) must do so themselves.
   */
  options: AuthorizedKeyOption[];
}

/** A line of authorized_keys that could not be used. */
export interface AuthorizedKeysIssue {
  /** 1-based line number. */
  line: number;
  message: string;
}

/** Result of {@link parseAuthorizedKeys}. */
export interface AuthorizedKeys {
  keys: AuthorizedKey[];
  errors: AuthorizedKeysIssue[];
}

const KEY_TYPE_LIKE = /^(ssh-|ecdsa-|sk-|rsa-)[A-Za-z0-9@.-]+$/;

function isSupportedType(t: string): t is SupportedKeyType {
  return (SUPPORTED_KEY_TYPES as readonly string[]).includes(t);
}

/**
 * Splits the options prefix off an authorized_keys line: returns the raw options text and
 * the rest, or an error message (unterminated quote).
 */
function splitOptions(line: string): { options: string; rest: string } | { error: string } {
  let inQuote = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (inQuote) {
      if (c === '\\' && i + 1 < line.length) i++;
      else if (c === '"') inQuote = false;
    } else if (c === '"') {
      inQuote = true;
    } else if (c === ' ' || c === '\t') {
      return { options: line.slice(0, i), rest: line.slice(i).trimStart() };
    }
  }
  return inQuote ? { error: 'unterminated quote in options' } : { error: 'options are not followed by a key' };
}

function parseOptionList(text: string): AuthorizedKeyOption[] | string {
  const out: AuthorizedKeyOption[] = [];
  let i = 0;
  while (i < text.length) {
    const m = /^[A-Za-z0-9-]+/.exec(text.slice(i));
    if (!m) return `malformed option near column ${i + 1}`;
    const name = m[0].toLowerCase();
    i += m[0].length;
    if (text[i] === '=') {
      i++;
      if (text[i] !== '"') return `option ${name} needs a quoted value`;
      i++;
      let value = '';
      for (;;) {
        if (i >= text.length) return `unterminated value of option ${name}`;
        const c = text[i] as string;
        if (c === '\\' && text[i + 1] === '"') {
          value += '"';
          i += 2;
        } else if (c === '"') {
          i++;
          break;
        } else {
          value += c;
          i++;
        }
      }
      out.push({ name, value });
    } else {
      out.push({ name });
    }
    if (i < text.length) {
      if (text[i] !== ',') return `expected ',' after option ${name}`;
      i++;
    }
  }
  return out;
}

/**
 * Checks `<type> <base64>` and returns the blob, or an error message. Verifies the
 * base64, that the blob's embedded type matches, that ssh2 can parse the key, and the
 * RSA size.
 */
function checkPublicKey(type: string, b64: string | undefined): Buffer | string {
  if (b64 === undefined) return `missing base64 key data after ${type}`;
  const blob = decodeBase64Strict(b64);
  if (blob === undefined) return 'key data is not valid base64';
  const inner = blobKeyType(blob);
  if (inner !== type) return `key data is a ${inner === undefined ? 'malformed key' : inner} key, not ${type}`;
  const parsed = utils.parseKey(blob);
  if (parsed instanceof Error) return `key data cannot be parsed: ${parsed.message}`;
  const key = Array.isArray(parsed) ? (parsed as ParsedKey[])[0] : parsed;
  if (key === undefined || key.type !== type) return 'key data cannot be parsed';
  if (type === 'ssh-rsa') {
    const bits = createPublicKey(key.getPublicPEM()).asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) return `RSA key has ${bits} bits; at least ${MIN_RSA_BITS} are required`;
  }
  return blob;
}

/**
 * Parses an OpenSSH authorized_keys file. Blank lines and `#` comments are skipped. Lines
 * may start with an options prefix (`from="…",no-pty ssh-ed25519 AAAA… comment`). Key types:
 * ssh-ed25519, ecdsa-sha2-nistp256/384/521 and ssh-rsa (at least {@link MIN_RSA_BITS} bits).
 * Lines that cannot be used are reported in `errors` with their line number; parsing
 * never throws.
 */
export function parseAuthorizedKeys(text: string): AuthorizedKeys {
  const keys: AuthorizedKey[] = [];
  const errors: AuthorizedKeysIssue[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, idx) => {
    const lineNo = idx + 1;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    let tokens = line.split(/[ \t]+/);
    let options: AuthorizedKeyOption[] = [];
    let rest = line;
    if (!isSupportedType(tokens[0] as string)) {
      const first = tokens[0] as string;
      if (KEY_TYPE_LIKE.test(first) && tokens.length >= 2 && decodeBase64Strict(tokens[1] as string)) {
        errors.push({ line: lineNo, message: `unsupported key type ${first.slice(0, 64)}` });
        return;
      }
      const split = splitOptions(line);
      if ('error' in split) {
        errors.push({ line: lineNo, message: split.error });
        return;
      }
      const parsedOptions = parseOptionList(split.options);
      if (typeof parsedOptions === 'string') {
        errors.push({ line: lineNo, message: parsedOptions });
        return;
      }
      options = parsedOptions;
      rest = split.rest;
      tokens = rest.split(/[ \t]+/);
      const type = tokens[0] as string;
      if (!isSupportedType(type)) {
        errors.push({
          line: lineNo,
          message: KEY_TYPE_LIKE.test(type)
            ? `unsupported key type ${type.slice(0, 64)}`
            : 'no key type found (expected e.g. ssh-ed25519)',
        });
        return;
      }
    }
    const type = tokens[0] as SupportedKeyType;
    const blob = checkPublicKey(type, tokens[1]);
    if (typeof blob === 'string') {
      errors.push({ line: lineNo, message: blob });
      return;
    }
    const comment = tokens.slice(2).join(' ');
    keys.push({ line: lineNo, type, blob, fingerprint: fingerprintOf(blob), comment, options });
  });
  return { keys, errors };
}

/** Finds the authorized key whose blob equals `blob`. */
export function findAuthorizedKey(keys: readonly AuthorizedKey[], blob: Buffer): AuthorizedKey | undefined {
  return keys.find((k) => k.blob.length === blob.length && timingSafeEqual(k.blob, blob));
}

// ---------------------------------------------------------------------------------------
// known_hosts

/** Outcome of {@link checkKnownHosts}. */
export type KnownHostsResult = 'match' | 'mismatch' | 'unknown';

/** The name OpenSSH looks up in known_hosts: `host` on port 22, else `[host]:port`. */
export function knownHostsName(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

function globToRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`, 'i');
}

function hashedHostMatches(entry: string, name: string): boolean {
  // |1|base64(salt)|base64(HMAC-SHA1(salt, name))
  const parts = entry.split('|');
  if (parts.length !== 4 || parts[0] !== '' || parts[1] !== '1') return false;
  const salt = decodeBase64Strict(parts[2] as string);
  const hash = decodeBase64Strict(parts[3] as string);
  if (salt === undefined || hash === undefined || hash.length !== 20) return false;
  const mac = createHmac('sha1', salt).update(name).digest();
  return timingSafeEqual(mac, hash);
}

function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith('|')) return hashedHostMatches(field, name);
  let positive = false;
  for (const pattern of field.split(',')) {
    if (pattern === '') continue;
    const negated = pattern.startsWith('!');
    const p = negated ? pattern.slice(1) : pattern;
    const hit = /[*?]/.test(p) ? globToRegExp(p).test(name) : p.toLowerCase() === name;
    if (hit && negated) return false;
    if (hit) positive = true;
  }
  return positive;
}

/**
 * Looks up a server's host key in the text of an OpenSSH known_hosts file.
 *
 * Supports plain names, comma lists, `[host]:port` entries (used when `port` is not 22),
 * `*`/`?` wildcards, `!negation`, and hashed `|1|salt|hash` entries. `@cert-authority` lines
 * are ignored; a matching `@revoked` line makes the result `mismatch`.
 *
 * @returns `match` if an entry for the host has exactly this key; `mismatch` if the host
 *   has entries but none with this key (including a different key type); `unknown` if
 *   there is no entry for the host.
 */
export function checkKnownHosts(text: string, host: string, port: number, keyBlob: Buffer): KnownHostsResult {
  const name = knownHostsName(host, port);
  let matched = false;
  let other = false;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const tokens = line.split(/[ \t]+/);
    let marker: string | undefined;
    if (tokens[0]?.startsWith('@')) marker = tokens.shift();
    if (marker === '@cert-authority') continue;
    if (marker !== undefined && marker !== '@revoked') continue;
    const [hosts, type, b64] = tokens;
    if (hosts === undefined || type === undefined || b64 === undefined) continue;
    const blob = decodeBase64Strict(b64);
    if (blob === undefined) continue;
    if (!hostFieldMatches(hosts, name)) continue;
    const same = blob.equals(keyBlob);
    if (marker === '@revoked') {
      if (same) return 'mismatch';
      continue;
    }
    if (same) matched = true;
    else other = true;
  }
  if (matched) return 'match';
  return other ? 'mismatch' : 'unknown';
}
