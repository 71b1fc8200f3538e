/**
 * The transfer server's configuration file (JSON), validated once at start: a wrong file
 * is refused with the field's path and the reason (`config.json: ssh.maxAuthTries:
 * expected a positive integer`), unknown fields included. The result is typed and frozen;
 * relative paths are resolved against the file's directory.
 *
 * ```json
 * {
 *   "listen": "0.0.0.0",
 *   "port": 33001,
 *   "hostKeyFile": "/etc/tachyon/ssh_host_ed25519_key",
 *   "database": "sqlite:///var/lib/tachyon/tachyon.db",
 *   "allowedRoots": ["file:///srv/transfers/*"],
 *   "ciphers": { "allowed": ["aes-128-gcm", "aes-256-gcm"], "minimum": "aes-128-gcm" },
 *   "maxRate": "10g",
 *   "ssh": { "maxAuthTries": 3, "loginGraceSeconds": 30, "idleTimeoutSeconds": 900, "banner": "Authorized use only." },
 *   "auditLog": "/var/log/tachyon/audit.log",
 *   "users": [{ "name": "alice", "docroot": "file:///srv/transfers/alice", "keys": ["ssh-ed25519 AAAA… alice@laptop"] }],
 *   "s3": { "endpoint": "https://s3.eu-west-1.amazonaws.com", "region": "eu-west-1", "forcePathStyle": false },
 *   "platform": { "listen": "127.0.0.1", "port": 9443, "certFile": "tls/web.crt", "keyFile": "tls/web.key" }
 * }
 * ```
 *
 * `s3` says how to reach the object store of s3:// docroots. It holds no credentials, and
 * refuses fields that look like them: the server takes them from its environment
 * (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, or an
 * instance role), through the AWS SDK's default chain.
 *
 * `platform` serves the web platform over HTTPS from the same process (loopback and
 * port 9443 unless set; `mfaKeyFile`, default `mfa.key` next to the file, seals TOTP
 * secrets; docs/platform-identity.md#serving).
 */
import { ABUSE_KINDS, AllowLists, checkWebhookUrl, CidrList, DEFAULT_DEFENDER_SETTINGS, DEFAULT_SCORES, type DefenderSettings } from '../defender/index.js';
import { promises as fs } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { TachyonError } from '../core/errors.js';
import { CIPHERS, type CipherName } from '../core/types.js';
import { parseRate } from '../core/units.js';
import { parseDatabaseUrl, type DatabaseLocation } from '../db/url.js';
import {
  DEFAULT_CIPHER_POLICY,
  parsePublicKeys,
  permittedCiphers,
  validateCiphers,
  validatePermissions,
  validatePolicies,
  validateUserName,
  type CipherPolicy,
  type NewUser,
} from './users/model.js';
import { checkDocroot, parseRootPattern, type RootPattern } from './users/storage-roots.js';

export const DEFAULT_PORT = 33001;
export const DEFAULT_LISTEN = '127.0.0.1';
export const DEFAULT_MAX_RATE_BPS = 10e9;

/** SSH service limits. */
export interface SshLimits {
  /** Public-key attempts allowed per connection. */
  readonly maxAuthTries: number;
  /** Seconds a connection may take to authenticate. */
  readonly loginGraceSeconds: number;
  /** Seconds without control or data traffic after which a session is closed. */
  readonly idleTimeoutSeconds: number;
  /** Text shown to clients before authentication. */
  readonly banner?: string;
}

export const DEFAULT_SSH_LIMITS: SshLimits = Object.freeze({ maxAuthTries: 6, loginGraceSeconds: 30, idleTimeoutSeconds: 900 });

/** The node API (HTTPS, docs/node-api.md) run by the same process, when configured. */
export interface NodeApiConfig {
  readonly listen: string;
  readonly port: number;
  /** PEM certificate (with its chain, or see chainFile), absolute path. */
  readonly certFile: string;
  /** PEM private key, absolute path. */
  readonly keyFile: string;
  readonly chainFile?: string;
  /** Lifetime of bearer tokens from POST /auth/token, seconds. */
  readonly tokenTtlSeconds?: number;
}

export const DEFAULT_NODE_API_PORT = 9092;

/** The web platform (HTTPS, docs/platform-identity.md) run by the same process, when configured. */
export interface PlatformConfig {
  readonly listen: string;
  readonly port: number;
  /** PEM certificate (with its chain, or see chainFile), absolute path. */
  readonly certFile: string;
  /** PEM private key, absolute path. */
  readonly keyFile: string;
  readonly chainFile?: string;
  /** The key that seals TOTP secrets (64 hex digits, mode 0600; created on first start). TACHYON_MFA_KEY overrides it. */
  readonly mfaKeyFile: string;
}

export const DEFAULT_PLATFORM_PORT = 9443;

/** A validated server configuration. */
export interface ServerConfig {
  /** The file it was read from (absolute). */
  readonly file: string;
  readonly listen: string;
  readonly port: number;
  /** Absolute path of the SSH host key (generated if missing). Default: next to the file. */
  readonly hostKeyFile: string;
  /** Default: `tachyon.db` next to the file. */
  readonly database: DatabaseLocation;
  readonly allowedRoots: readonly RootPattern[];
  readonly cipherPolicy: CipherPolicy;
  /** Ceiling on any session's rate, bits/s. */
  readonly maxRateBps: number;
  readonly ssh: SshLimits;
  /** Absolute path of the audit log, if configured. */
  readonly auditLog?: string;
  /** Users declared inline (validated; docroots canonical). */
  readonly users: readonly NewUser[];
  /** How to reach S3 for s3:// docroots (no credentials: those come from the environment). */
  readonly s3?: S3Settings;
  /**
   * Server-side encryption at rest: accounts whose docroot lies under one of `roots`
   * have every file stored as an envelope whose content key is wrapped by a master key
   * (docs/encryption-at-rest.md); absent: off.
   */
  readonly serverSideEncryption?: ServerSideEncryptionSettings;
  /** The node API, if the file has a `nodeApi` section. */
  readonly nodeApi?: NodeApiConfig;
  /** The web platform, if the file has a `platform` section. */
  readonly platform?: PlatformConfig;
  /** The shared transfer user that logs in with transfer tokens (docs/transfer-tokens.md); absent: off. */
  readonly transferTokens?: TransferTokenSettings;
  /** The IP defender (docs/defender.md); on unless `defender.enabled` is false. */
  readonly defender: DefenderConfig;
}

/** `defender` in the configuration file, validated (times in milliseconds). */
export interface DefenderConfig {
  readonly enabled: boolean;
  readonly settings: Partial<DefenderSettings>;
  /** Never scored nor blocked. Default: none. */
  readonly safeList: CidrList;
  readonly allowLists: AllowLists;
  readonly notify: {
    readonly webhook?: { readonly url: string; readonly headers?: Readonly<Record<string, string>> };
    readonly smtp?: {
      readonly host: string;
      readonly port: number;
      readonly secure?: boolean;
      readonly requireTls?: boolean;
      readonly user?: string;
      /** Absolute path of a file holding the SMTP password (read at start; never in the configuration). */
      readonly passwordFile?: string;
      readonly from: string;
      readonly to: readonly string[];
    };
  };
}

/** `transferTokens` in the configuration file. */
export interface TransferTokenSettings {
  /** The shared transfer user's name (default `xfer`). */
  readonly user: string;
  /** This node's id, sealed into every token (default: the host name). */
  readonly nodeId: string;
  /** The 32-byte token key (created 0600 if missing; default `token.key` next to the file). */
  readonly keyFile: string;
  /** How long a rotated-out key is still accepted, seconds (default 3600). */
  readonly keyGraceSeconds: number;
  /** Access-key states from a file (JSON `{"active":[…],"revoked":[…]}`) instead of the node API's access-key table; absent: the table. */
  readonly accessKeysFile?: string;
}

export interface ServerSideEncryptionSettings {
  /** Root patterns (like allowedRoots) whose storage is encrypted. */
  readonly roots: readonly RootPattern[];
  /** The keyring file of master keys; absent: the key in TACHYON_MASTER_KEY. */
  readonly keyringFile?: string;
}

export interface S3Settings {
  readonly endpoint?: string;
  readonly region?: string;
  readonly forcePathStyle?: boolean;
  readonly connectTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly maxAttempts: number;
  /** Multipart part size in bytes. */
  readonly partBytes: number;
  /** Send If-None-Match: * on no-clobber commits (default true; false for stores that reject it). */
  readonly conditionalWrites: boolean;
}

/** A type error's message: `is required` when the field is missing, else `text`. */
const expected = (text: string): { error: (iss: { input?: unknown }) => string } => ({
  error: (iss) => (iss.input === undefined ? 'is required' : text),
});

const posInt = (max: number): z.ZodNumber =>
  z
    .number(expected('expected a positive integer'))
    .int({ error: 'expected a positive integer' })
    .min(1, { error: 'expected a positive integer' })
    .max(max, { error: `expected a positive integer of at most ${max}` });

const cipher = z.enum(CIPHERS, expected(`expected one of ${CIPHERS.join(', ')}`));
const rate = z.union([z.string(), z.number()], expected('expected a rate such as "200m", "1g" or a number of bits/s'));
const nonEmpty = z.string(expected('expected a string')).min(1, { error: 'must not be empty' });
const portNumber = z
  .number(expected('expected a port number (0-65535)'))
  .int({ error: 'expected a port number (0-65535)' })
  .min(0, { error: 'expected a port number (0-65535)' })
  .max(65535, { error: 'expected a port number (0-65535)' });

const UserSchema = z.strictObject({
  name: z.string(expected('expected a string')),
  docroot: z.string(expected('expected a storage URL such as file:///srv/transfers/alice')),
  keys: z.array(z.string(expected('expected an OpenSSH public key line'))).optional(),
  permissions: z.array(z.string()).optional(),
  ciphers: z.array(z.string()).optional(),
  policies: z.array(z.string()).optional(),
  maxRate: rate.nullable().optional(),
  enabled: z.boolean(expected('expected true or false')).optional(),
  requireEncryptedAtRest: z.boolean(expected('expected true or false')).optional(),
});

const seconds = (max: number): z.ZodNumber => posInt(max);
const DefenderSchema = z.strictObject({
  enabled: z.boolean(expected('expected true or false')).optional(),
  threshold: posInt(1_000_000).optional(),
  observationSeconds: seconds(30 * 86400).optional(),
  banSeconds: seconds(365 * 86400).optional(),
  banMultiplier: z.number(expected('expected a number from 1 to 100')).min(1, { error: 'expected a number from 1 to 100' }).max(100, { error: 'expected a number from 1 to 100' }).optional(),
  maxBanSeconds: seconds(365 * 86400).optional(),
  scores: z.partialRecord(z.enum(ABUSE_KINDS), z.number().int().min(0).max(1000)).optional(),
  maxHosts: posInt(10_000_000).optional(),
  safeList: z.array(z.string(expected('expected a CIDR block such as 10.0.0.0/8'))).max(10_000).optional(),
  allowList: z
    .strictObject({
      global: z.array(z.string(expected('expected a CIDR block such as 10.0.0.0/8'))).max(10_000).optional(),
      tenants: z.record(z.string(), z.array(z.string(expected('expected a CIDR block such as 10.0.0.0/8'))).max(10_000)).optional(),
    })
    .optional(),
  notify: z
    .strictObject({
      webhook: z.strictObject({ url: nonEmpty, headers: z.record(z.string(), z.string()).optional() }).optional(),
      smtp: z
        .strictObject({
          host: nonEmpty,
          port: z.number().int().min(1).max(65535),
          secure: z.boolean().optional(),
          requireTls: z.boolean().optional(),
          user: nonEmpty.optional(),
          passwordFile: nonEmpty.optional(),
          from: nonEmpty,
          to: z.array(nonEmpty).min(1, { error: 'name at least one recipient' }),
        })
        .optional(),
    })
    .optional(),
});

const ConfigSchema = z.strictObject({
  listen: nonEmpty.optional(),
  port: portNumber.optional(),
  hostKeyFile: nonEmpty.optional(),
  database: nonEmpty.optional(),
  allowedRoots: z
    .array(z.string(expected('expected a root pattern such as file:///srv/transfers/*')), expected('expected a list of root patterns such as ["file:///srv/transfers/*"]'))
    .min(1, { error: 'list at least one root pattern, such as "file:///srv/transfers/*"' }),
  ciphers: z
    .strictObject({
      allowed: z.array(cipher).min(1, { error: 'allow at least one cipher' }).optional(),
      minimum: cipher.optional(),
    })
    .optional(),
  maxRate: rate.optional(),
  ssh: z
    .strictObject({
      maxAuthTries: posInt(100).optional(),
      loginGraceSeconds: posInt(3600).optional(),
      idleTimeoutSeconds: posInt(7 * 86400).optional(),
      banner: z.string(expected('expected a string')).max(4096, { error: 'at most 4096 characters' }).optional(),
    })
    .optional(),
  auditLog: nonEmpty.optional(),
  users: z.array(UserSchema).max(100_000).optional(),
  serverSideEncryption: z
    .strictObject({
      roots: z.array(nonEmpty).min(1, { error: 'name at least one root pattern' }).max(1000),
      keyringFile: nonEmpty.optional(),
    })
    .optional(),
  s3: z
    .strictObject({
      endpoint: z
        .string(expected('expected an http(s) URL'))
        .regex(/^https?:\/\/[^/?#@\s]+\/?$/u, { error: 'expected an http(s) URL without user, path or query, such as https://s3.eu-west-1.amazonaws.com' })
        .optional(),
      region: z.string(expected('expected a region name')).regex(/^[a-z0-9-]{1,40}$/u, { error: 'expected a region name such as eu-west-1' }).optional(),
      forcePathStyle: z.boolean(expected('expected true or false')).optional(),
      connectTimeoutSeconds: posInt(300).optional(),
      requestTimeoutSeconds: posInt(3600).optional(),
      maxAttempts: posInt(10).optional(),
      conditionalWrites: z.boolean(expected('expected true or false')).optional(),
      partSizeMiB: z.number(expected('expected a number of MiB (5-5120)')).int({ error: 'expected a whole number of MiB' }).min(5, { error: 'at least 5 (S3\'s smallest part)' }).max(5120, { error: 'at most 5120' }).optional(),
    })
    .optional(),
  nodeApi: z
    .strictObject({
      listen: nonEmpty.optional(),
      port: portNumber.optional(),
      certFile: nonEmpty,
      keyFile: nonEmpty,
      chainFile: nonEmpty.optional(),
      tokenTtlSeconds: posInt(12 * 3600).optional(),
    })
    .optional(),
  platform: z
    .strictObject({
      listen: nonEmpty.optional(),
      port: portNumber.optional(),
      certFile: nonEmpty,
      keyFile: nonEmpty,
      chainFile: nonEmpty.optional(),
      mfaKeyFile: nonEmpty.optional(),
    })
    .optional(),
  defender: DefenderSchema.optional(),
  transferTokens: z
    .strictObject({
      user: nonEmpty.optional(),
      nodeId: z.string(expected('expected a string')).min(1, { error: 'must not be empty' }).max(64, { error: 'at most 64 characters' }).optional(),
      keyFile: nonEmpty.optional(),
      keyGraceSeconds: posInt(30 * 86400).optional(),
      accessKeysFile: nonEmpty.optional(),
    })
    .optional(),
});

/** `['users', 0, 'docroot']` → `users[0].docroot` */
function fieldPath(p: readonly PropertyKey[]): string {
  let out = '';
  for (const k of p) out += typeof k === 'number' ? `[${k}]` : `${out === '' ? '' : '.'}${String(k)}`;
  return out;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)?.slice(0, 40)}`;
}

const MAX_REPORTED = 20;

function configError(file: string, problems: string[]): TachyonError {
  const shown = problems.slice(0, MAX_REPORTED).map((p) => `${file}: ${p}`);
  if (problems.length > MAX_REPORTED) shown.push(`${file}: … and ${problems.length - MAX_REPORTED} more`);
  return new TachyonError('CONFIG', shown.join('\n'), { details: { file, problems } });
}

function rateOf(v: string | number, field: string, problems: string[]): number | undefined {
  try {
    if (typeof v === 'number') {
      if (!Number.isSafeInteger(v) || v < 1 || v > 1e12) throw new Error('x');
      return v;
    }
    return parseRate(v);
  } catch {
    problems.push(`${field}: expected a rate such as "200m", "1g" or a whole number of bits/s (1 bit/s to 1 Tbit/s)`);
    return undefined;
  }
}

/** Runs a validator that throws field errors; records its message instead. */
async function collect<T>(problems: string[], fn: () => T | Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof TachyonError) {
      problems.push(err.message);
      return undefined;
    }
    throw err;
  }
}

/**
 * Validates a parsed configuration object. `file` names it in messages; relative paths
 * resolve against `baseDir`.
 *
 * @throws TachyonError `CONFIG` listing every problem as `<file>: <field>: <reason>`.
 */
export async function validateServerConfig(raw: unknown, file: string, baseDir: string): Promise<ServerConfig> {
  const parsed = ConfigSchema.safeParse(raw, {
    error: (iss) => {
      if (iss.code === 'invalid_type') return iss.input === undefined ? 'is required' : `expected ${iss.expected}, got ${describe(iss.input)}`;
      return undefined;
    },
  });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((iss) => {
      if (iss.code === 'unrecognized_keys') {
        const where = fieldPath(iss.path);
        return iss.keys.map((k) => `${where === '' ? '' : `${where}.`}${k}: unknown field`).join('; ');
      }
      const where = fieldPath(iss.path);
      return `${where === '' ? '(top level)' : where}: ${iss.message}`;
    });
    throw configError(file, problems);
  }
  const c = parsed.data;
  const problems: string[] = [];
  const abs = (p: string): string => path.resolve(baseDir, p);

  const listen = c.listen ?? DEFAULT_LISTEN;
  if (isIP(listen) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$/.test(listen)) {
    problems.push(`listen: expected an IP address or host name, got ${JSON.stringify(listen).slice(0, 60)}`);
  }
  const database = await collect(problems, () => {
    try {
      return parseDatabaseUrl(c.database ?? 'tachyon.db', { baseDir, allowPath: true });
    } catch (err) {
      throw new TachyonError('CONFIG', `database: ${((err as TachyonError).details?.reason as string | undefined) ?? (err as Error).message}`);
    }
  });
  const roots: RootPattern[] = [];
  for (const [i, text] of c.allowedRoots.entries()) {
    const r = await collect(problems, () => parseRootPattern(text, `allowedRoots[${i}]`));
    if (r) roots.push(r);
  }
  let serverSideEncryption: ServerSideEncryptionSettings | undefined;
  if (c.serverSideEncryption !== undefined) {
    const sseRoots: RootPattern[] = [];
    for (const [i, text] of c.serverSideEncryption.roots.entries()) {
      const r = await collect(problems, () => parseRootPattern(text, `serverSideEncryption.roots[${i}]`));
      if (r) sseRoots.push(r);
    }
    serverSideEncryption = Object.freeze({
      roots: Object.freeze(sseRoots),
      ...(c.serverSideEncryption.keyringFile !== undefined ? { keyringFile: abs(c.serverSideEncryption.keyringFile) } : {}),
    });
  }
  const cipherPolicy: CipherPolicy = Object.freeze({
    allowed: Object.freeze([...new Set<CipherName>(c.ciphers?.allowed ?? DEFAULT_CIPHER_POLICY.allowed)]),
    ...(c.ciphers?.minimum !== undefined ? { minimum: c.ciphers.minimum } : {}),
  });
  if (permittedCiphers(cipherPolicy).length === 0) {
    problems.push(`ciphers: no allowed cipher (${cipherPolicy.allowed.join(', ')}) is as strong as the minimum ${cipherPolicy.minimum ?? ''}`);
  }
  const maxRateBps = c.maxRate === undefined ? DEFAULT_MAX_RATE_BPS : rateOf(c.maxRate, 'maxRate', problems);
  const ssh: SshLimits = Object.freeze({
    maxAuthTries: c.ssh?.maxAuthTries ?? DEFAULT_SSH_LIMITS.maxAuthTries,
    loginGraceSeconds: c.ssh?.loginGraceSeconds ?? DEFAULT_SSH_LIMITS.loginGraceSeconds,
    idleTimeoutSeconds: c.ssh?.idleTimeoutSeconds ?? DEFAULT_SSH_LIMITS.idleTimeoutSeconds,
    ...(c.ssh?.banner !== undefined ? { banner: c.ssh.banner } : {}),
  });

  const users: NewUser[] = [];
  const names = new Map<string, number>();
  const keyOwners = new Map<string, string>();
  for (const [i, u] of (c.users ?? []).entries()) {
    const at = `users[${i}]`;
    const name = await collect(problems, () => validateUserName(u.name, `${at}.name`));
    if (name !== undefined) {
      const prev = names.get(name);
      if (prev !== undefined) problems.push(`${at}.name: '${name}' is declared twice (also users[${prev}])`);
      names.set(name, i);
    }
    const docroot = roots.length === c.allowedRoots.length ? await collect(problems, () => checkDocroot(u.docroot, roots, `${at}.docroot`)) : undefined;
    const user: NewUser = { name: u.name, docroot: docroot ?? u.docroot };
    if (u.permissions !== undefined) user.permissions = (await collect(problems, () => validatePermissions(u.permissions ?? [], `${at}.permissions`))) ?? [];
    if (u.ciphers !== undefined) user.ciphers = (await collect(problems, () => validateCiphers(u.ciphers ?? [], cipherPolicy, `${at}.ciphers`))) ?? [];
    if (u.policies !== undefined) user.policies = (await collect(problems, () => validatePolicies(u.policies ?? [], `${at}.policies`))) ?? [];
    if (u.maxRate !== undefined) user.maxRateBps = u.maxRate === null ? null : (rateOf(u.maxRate, `${at}.maxRate`, problems) ?? null);
    if (u.enabled !== undefined) user.enabled = u.enabled;
    if (u.requireEncryptedAtRest !== undefined) user.requireEncryptedAtRest = u.requireEncryptedAtRest;
    if (u.keys !== undefined) {
      user.keys = u.keys;
      for (const [j, line] of u.keys.entries()) {
        const keys = await collect(problems, () => parsePublicKeys(line, `${at}.keys[${j}]`));
        for (const k of keys ?? []) {
          const owner = keyOwners.get(k.fingerprint);
          if (owner !== undefined) problems.push(`${at}.keys[${j}]: the key ${k.fingerprint} is also given to ${owner}; a key may belong to one user only`);
          else keyOwners.set(k.fingerprint, `${at} (${u.name})`);
        }
      }
    }
    users.push(Object.freeze(user));
  }

  if (c.nodeApi !== undefined && c.auditLog === undefined) problems.push('nodeApi: needs auditLog (the node API audits every refusal and change)');
  const apiListen = c.nodeApi?.listen ?? DEFAULT_LISTEN;
  if (c.nodeApi !== undefined && isIP(apiListen) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$/.test(apiListen)) {
    problems.push(`nodeApi.listen: expected an IP address or host name, got ${JSON.stringify(apiListen).slice(0, 60)}`);
  }
  const webListen = c.platform?.listen ?? DEFAULT_LISTEN;
  if (c.platform !== undefined && isIP(webListen) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$/.test(webListen)) {
    problems.push(`platform.listen: expected an IP address or host name, got ${JSON.stringify(webListen).slice(0, 60)}`);
  }
  let transferTokens: TransferTokenSettings | undefined;
  if (c.transferTokens !== undefined) {
    const t = c.transferTokens;
    const user = (await collect(problems, () => validateUserName(t.user ?? 'xfer', 'transferTokens.user'))) ?? 'xfer';
    if (names.has(user)) problems.push(`transferTokens.user: '${user}' is also a declared user; the token user must be a name of its own`);
    transferTokens = Object.freeze({
      user,
      nodeId: t.nodeId ?? hostname(),
      keyFile: abs(t.keyFile ?? 'token.key'),
      keyGraceSeconds: t.keyGraceSeconds ?? 3600,
      ...(t.accessKeysFile !== undefined ? { accessKeysFile: abs(t.accessKeysFile) } : {}),
    });
  }

  const d = c.defender ?? {};
  const safeList = (await collect(problems, () => CidrList.parse(d.safeList ?? [], 'defender.safeList'))) ?? new CidrList([]);
  const allowLists = (await collect(problems, () => AllowLists.parse(d.allowList ?? {}, 'defender.allowList'))) ?? new AllowLists();
  if (d.notify?.webhook) await collect(problems, () => checkWebhookUrl(d.notify!.webhook!.url, 'defender.notify.webhook.url'));
  const settings: Partial<DefenderSettings> = {
    ...(d.threshold !== undefined ? { threshold: d.threshold } : {}),
    ...(d.observationSeconds !== undefined ? { observationMs: d.observationSeconds * 1000 } : {}),
    ...(d.banSeconds !== undefined ? { banMs: d.banSeconds * 1000 } : {}),
    ...(d.banMultiplier !== undefined ? { banMultiplier: d.banMultiplier } : {}),
    ...(d.maxBanSeconds !== undefined ? { maxBanMs: d.maxBanSeconds * 1000 } : {}),
    ...(d.maxHosts !== undefined ? { maxHosts: d.maxHosts } : {}),
    ...(d.scores !== undefined ? { scores: { ...DEFAULT_SCORES, ...d.scores } } : {}),
  };
  if ((settings.maxBanMs ?? DEFAULT_DEFENDER_SETTINGS.maxBanMs) < (settings.banMs ?? DEFAULT_DEFENDER_SETTINGS.banMs)) problems.push('defender.maxBanSeconds: must be at least banSeconds');
  const smtp = d.notify?.smtp;
  const defender: DefenderConfig = Object.freeze({
    enabled: d.enabled ?? true,
    settings: Object.freeze(settings),
    safeList,
    allowLists,
    notify: Object.freeze({
      ...(d.notify?.webhook ? { webhook: { url: d.notify.webhook.url, ...(d.notify.webhook.headers ? { headers: d.notify.webhook.headers } : {}) } } : {}),
      ...(smtp
        ? {
            smtp: {
              host: smtp.host,
              port: smtp.port,
              from: smtp.from,
              to: smtp.to,
              ...(smtp.secure !== undefined ? { secure: smtp.secure } : {}),
              ...(smtp.requireTls !== undefined ? { requireTls: smtp.requireTls } : {}),
              ...(smtp.user !== undefined ? { user: smtp.user } : {}),
              ...(smtp.passwordFile !== undefined ? { passwordFile: abs(smtp.passwordFile) } : {}),
            },
          }
        : {}),
    }),
  });

  if (problems.length > 0 || database === undefined || maxRateBps === undefined) throw configError(file, problems);
  return Object.freeze({
    file: path.resolve(file),
    listen,
    port: c.port ?? DEFAULT_PORT,
    hostKeyFile: abs(c.hostKeyFile ?? 'ssh_host_ed25519_key'),
    database,
    allowedRoots: Object.freeze(roots),
    cipherPolicy,
    maxRateBps,
    ssh,
    ...(c.auditLog !== undefined ? { auditLog: abs(c.auditLog) } : {}),
    users: Object.freeze(users),
    ...(serverSideEncryption ? { serverSideEncryption } : {}),
    ...(c.s3 !== undefined
      ? {
          s3: Object.freeze({
            ...(c.s3.endpoint !== undefined ? { endpoint: c.s3.endpoint } : {}),
            ...(c.s3.region !== undefined ? { region: c.s3.region } : {}),
            ...(c.s3.forcePathStyle !== undefined ? { forcePathStyle: c.s3.forcePathStyle } : {}),
            connectTimeoutMs: (c.s3.connectTimeoutSeconds ?? 5) * 1000,
            requestTimeoutMs: (c.s3.requestTimeoutSeconds ?? 30) * 1000,
            maxAttempts: c.s3.maxAttempts ?? 3,
            partBytes: (c.s3.partSizeMiB ?? 8) * 1024 * 1024,
            conditionalWrites: c.s3.conditionalWrites ?? true,
          }),
        }
      : {}),
    ...(c.nodeApi !== undefined
      ? {
          nodeApi: Object.freeze({
            listen: apiListen,
            port: c.nodeApi.port ?? DEFAULT_NODE_API_PORT,
            certFile: abs(c.nodeApi.certFile),
            keyFile: abs(c.nodeApi.keyFile),
            ...(c.nodeApi.chainFile !== undefined ? { chainFile: abs(c.nodeApi.chainFile) } : {}),
            ...(c.nodeApi.tokenTtlSeconds !== undefined ? { tokenTtlSeconds: c.nodeApi.tokenTtlSeconds } : {}),
          }),
        }
      : {}),
    ...(c.platform !== undefined
      ? {
          platform: Object.freeze({
            listen: webListen,
            port: c.platform.port ?? DEFAULT_PLATFORM_PORT,
            certFile: abs(c.platform.certFile),
            keyFile: abs(c.platform.keyFile),
            ...(c.platform.chainFile !== undefined ? { chainFile: abs(c.platform.chainFile) } : {}),
            mfaKeyFile: abs(c.platform.mfaKeyFile ?? 'mfa.key'),
          }),
        }
      : {}),
    ...(transferTokens ? { transferTokens } : {}),
    defender,
  });
}

/**
 * Reads and validates the server configuration file.
 *
 * @throws TachyonError `CONFIG`: `<file>: cannot read …`, `<file>: not valid JSON (line L,
 *   column C): …`, or one line per invalid field (see {@link validateServerConfig}).
 */
export async function loadServerConfig(file: string): Promise<ServerConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'it is a directory' : e.code === 'EACCES' ? 'permission denied' : e.message;
    throw new TachyonError('CONFIG', `${file}: cannot read the configuration file: ${why}`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (err) {
    const msg = (err as Error).message;
    const pos = /position (\d+)/.exec(msg);
    let where = '';
    if (pos) {
      const before = text.slice(0, Number(pos[1]));
      const line = before.split('\n').length;
      where = ` (line ${line}, column ${Number(pos[1]) - before.lastIndexOf('\n')})`;
    }
    throw new TachyonError('CONFIG', `${file}: not valid JSON${where}: ${msg}`, { cause: err });
  }
  return validateServerConfig(raw, file, path.dirname(path.resolve(file)));
}
