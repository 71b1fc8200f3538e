/**
 * `tachyon user …`: administration of transfer users in the server's database.
 *
 *   tachyon user add NAME --docroot URL [--key FILE|-]… [--key-text 'ssh-ed25519 …']… [--perm LIST]
 *                    [--cipher LIST] [--max-rate RATE] [--policy LIST] [--disable]
 *   tachyon user list [--json]
 *   tachyon user show NAME [--json]
 *   tachyon user set NAME [--docroot URL] [--perm LIST] [--cipher LIST] [--max-rate RATE|none]
 *                    [--policy LIST] [--enable|--disable]
 *   tachyon user disable NAME
 *   tachyon user remove NAME
 *   tachyon user key add NAME FILE|-
 *   tachyon user key remove NAME FINGERPRINT
 *
 * Every command takes `--config FILE` (the server configuration: database and allowed
 * roots) or `--db URL` and `--allowed-root PATTERN` (repeatable), or `--data DIR`: the
 * embedded defaults of `tachyon start` (database DIR/tachyon.db, docroots under
 * DIR/files/*; DIR defaults to ./tachyon-data).
 */
import { readFileSync, existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { FileAuditSink } from '../audit/index.js';
import { TachyonError } from '../core/errors.js';
import { CIPHERS, PERMISSIONS, POLICIES, type CipherName, type Permission, type RatePolicy } from '../core/types.js';
import { formatRate, parseRate } from '../core/units.js';
import { openDatabase, type Database } from '../db/database.js';
import { parseDatabaseUrl, type DatabaseLocation } from '../db/url.js';
import { loadServerConfig } from '../server/config.js';
import { DEFAULT_CIPHER_POLICY, effectiveCiphers, publicKeyLine, type CipherPolicy, type TransferUser, type UserSettings } from '../server/users/model.js';
import { UserRepository } from '../server/users/repository.js';
import { parseRootPattern, parseStorageUrl, fileUrlPath, type RootPattern } from '../server/users/storage-roots.js';

/** The data directory of `tachyon start` (keep in step with runStart in main.ts). */
const DEFAULT_DATA_DIR = 'tachyon-data';

export interface StoreOpts {
  config?: string;
  db?: string;
  allowedRoot: string[];
  data?: string;
}

interface SettingOpts {
  docroot?: string;
  perm?: string[];
  cipher?: string[];
  policy?: string[];
  maxRate?: string;
  enable?: boolean;
  disable?: boolean;
  requireEncryptedAtRest?: string;
}

interface AddOpts extends StoreOpts, SettingOpts {
  key: string[];
  keyText: string[];
}

interface JsonOpts extends StoreOpts {
  json: boolean;
}

/** Which command-line option sets each repository field (for messages). */
const FLAG_OF: Record<string, string> = {
  docroot: '--docroot',
  permissions: '--perm',
  ciphers: '--cipher',
  policies: '--policy',
  maxRate: '--max-rate',
  key: '--key',
};

function repeatable(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Splits repeated, comma-separated list options: `--perm list,read --perm write`. */
function listOf(values: string[] | undefined): string[] | undefined {
  if (values === undefined) return undefined;
  return values
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

export function addStoreOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'server configuration file (gives the database and the allowed storage roots)')
    .option('--db <url>', 'database: sqlite:///path/file.db, postgres://…, or a file path')
    .option('--allowed-root <pattern>', 'storage root a docroot must lie in, e.g. file:///srv/transfers/* (repeatable)', repeatable, [])
    .option('--data <dir>', `data directory of 'tachyon start' (database DIR/tachyon.db, docroots under DIR/files/*)`);
}

function addSettingOptions(cmd: Command, forSet: boolean): Command {
  return cmd
    .option('--perm <list>', `permissions, comma-separated: ${PERMISSIONS.join(',')} (default for a new user: list,read,write,mkdir)`, repeatable)
    .option('--cipher <list>', `ciphers the user may choose: ${CIPHERS.join(',')} (default: all the server allows)`, repeatable)
    .option('--policy <list>', `rate policies the user may choose: ${POLICIES.join(',')} (default: all)`, repeatable)
    .option('--max-rate <rate>', forSet ? "rate cap, e.g. 100m, 1g; 'none' removes it" : 'rate cap, e.g. 100m, 1g (default: only the server ceiling)')
    .option('--require-encrypted-at-rest <yes|no>', 'accept only client-side encrypted uploads (send --encrypt-at-rest, NAME.tachyon-enc); plaintext is refused' + (forSet ? '' : ' (default: no)'));
}

export interface Store {
  repo: UserRepository;
  database: Database;
  /** the server's audit log, when there is one: every change is recorded there */
  audit: FileAuditSink | undefined;
  roots: readonly RootPattern[];
  policy: CipherPolicy;
}

export async function openStore(o: StoreOpts, create: boolean): Promise<Store> {
  let location: DatabaseLocation;
  let roots: RootPattern[];
  let policy: CipherPolicy = DEFAULT_CIPHER_POLICY;
  let auditLog: string | undefined;
  const cwd = process.cwd();
  if (o.config !== undefined) {
    if (o.db !== undefined || o.allowedRoot.length > 0 || o.data !== undefined) {
      throw new TachyonError('USAGE', '--config gives the database and the allowed roots: leave out --db, --allowed-root and --data');
    }
    const cfg = await loadServerConfig(o.config);
    auditLog = cfg.auditLog;
    location = cfg.database;
    roots = [...cfg.allowedRoots];
    policy = cfg.cipherPolicy;
  } else {
    if (o.data !== undefined && (o.db !== undefined || o.allowedRoot.length > 0)) {
      throw new TachyonError('USAGE', '--data sets the database and the allowed root: leave out --db and --allowed-root, or --data');
    }
    const data = path.resolve(cwd, o.data ?? DEFAULT_DATA_DIR);
    // the audit log of `tachyon start` on the same data directory
    if (o.db === undefined) auditLog = path.join(data, 'audit.log');
    try {
      location = parseDatabaseUrl(o.db ?? path.join(data, 'tachyon.db'), { allowPath: true, baseDir: cwd });
    } catch (err) {
      throw new TachyonError('USAGE', `--db: ${((err as TachyonError).details?.reason as string | undefined) ?? (err as Error).message}`, { cause: err });
    }
    const patterns = o.allowedRoot.length > 0 ? o.allowedRoot : [`${path.join(data, 'files')}/*`];
    roots = patterns.map((p) => parseRootPattern(p, '--allowed-root'));
  }
  const database = await openDatabase({ url: location, create });
  let audit: FileAuditSink | undefined;
  try {
    audit = auditLog !== undefined && (existsSync(auditLog) || create) ? new FileAuditSink(auditLog) : undefined;
  } catch (err) {
    await database.close();
    throw err;
  }
  const actor = `cli:${userInfo().username}`;
  const repo = new UserRepository(database, {
    allowedRoots: roots,
    cipherPolicy: policy,
    onChange: (e) =>
      audit?.record({ type: 'config.change', component: 'config', fields: { actor, action: e.type, target: e.user, ...(e.fields ? { changed: e.fields } : {}), ...(e.fingerprint ? { changed: [e.fingerprint] } : {}) } }),
  });
  return { repo, database, audit, roots, policy };
}

/** Runs fn with an open store; closes it; names command-line flags in field errors. */
async function withStore<T>(o: StoreOpts, create: boolean, fn: (s: Store) => Promise<T>, flags: Record<string, string> = FLAG_OF): Promise<T> {
  const store = await openStore(o, create);
  try {
    return await fn(store);
  } catch (err) {
    if (err instanceof TachyonError) {
      const field = typeof err.details?.field === 'string' ? err.details.field : '';
      const flag = flags[field];
      if (flag !== undefined && err.message.startsWith(`${field}: `)) {
        throw new TachyonError(err.code, `${flag}: ${err.message.slice(field.length + 2)}`, { cause: err, publicMessage: err.publicMessage, ...(err.details ? { details: err.details } : {}) });
      }
    }
    throw err;
  } finally {
    await store.database.close();
    await store.audit?.close();
  }
}

function readKeyFile(file: string): string {
  let text: string;
  try {
    text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (err) {
    throw new TachyonError('USAGE', `cannot read the key file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  if (/PRIVATE KEY-----/.test(text)) {
    throw new TachyonError('USAGE', `${file === '-' ? 'standard input' : file} holds a private key: give the public key instead (${file === '-' ? 'the .pub file' : `${file}.pub`})`);
  }
  return text;
}

function parseMaxRate(text: string | undefined, allowNone: boolean): number | null | undefined {
  if (text === undefined) return undefined;
  if (allowNone && /^(none|0)$/i.test(text.trim())) return null;
  try {
    return parseRate(text);
  } catch (err) {
    throw new TachyonError('USAGE', `--max-rate: ${(err as Error).message}${allowNone ? " (or 'none' to remove the cap)" : ''}`, { cause: err });
  }
}

function settingsFrom(o: SettingOpts, allowNone: boolean): UserSettings {
  if (o.enable === true && o.disable === true) throw new TachyonError('USAGE', 'give --enable or --disable, not both');
  const s: UserSettings = {};
  // a relative path is relative to the current directory (a URL or an absolute path is taken as it is)
  if (o.docroot !== undefined) s.docroot = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(o.docroot) || o.docroot === '' ? o.docroot : path.resolve(o.docroot);
  const perms = listOf(o.perm);
  if (perms !== undefined) s.permissions = perms as Permission[];
  const ciphers = listOf(o.cipher);
  if (ciphers !== undefined) s.ciphers = ciphers as CipherName[];
  const policies = listOf(o.policy);
  if (policies !== undefined) s.policies = policies as RatePolicy[];
  const rate = parseMaxRate(o.maxRate, allowNone);
  if (rate !== undefined) s.maxRateBps = rate;
  if (o.enable === true) s.enabled = true;
  if (o.disable === true) s.enabled = false;
  if (o.requireEncryptedAtRest !== undefined) {
    const v = o.requireEncryptedAtRest.trim().toLowerCase();
    if (!['yes', 'no', 'true', 'false'].includes(v)) throw new TachyonError('USAGE', `--require-encrypted-at-rest: yes or no, not '${o.requireEncryptedAtRest}'`);
    s.requireEncryptedAtRest = v === 'yes' || v === 'true';
  }
  return s;
}

function userJson(u: TransferUser, policy: CipherPolicy): Record<string, unknown> {
  return {
    name: u.name,
    enabled: u.enabled,
    docroot: u.docroot,
    permissions: u.permissions,
    ciphers: u.ciphers,
    effectiveCiphers: effectiveCiphers(u, policy),
    policies: u.policies,
    maxRateBps: u.maxRateBps,
    requireEncryptedAtRest: u.requireEncryptedAtRest,
    createdAt: u.createdAt,
    updatedAt: u.updatedAt,
    keys: u.keys.map((k) => ({ type: k.type, fingerprint: k.fingerprint, comment: k.comment, addedAt: k.addedAt, publicKey: publicKeyLine(k) })),
  };
}

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Notes the operator should see after a change: missing docroot, no key, disabled. */
function notes(u: TransferUser): void {
  const url = parseStorageUrl(u.docroot);
  if (url.scheme === 'file') {
    const dir = fileUrlPath(url);
    if (!existsSync(dir)) out(`note: the docroot ${dir} does not exist yet; create it (mkdir -p '${dir}') before ${u.name} logs in`);
  }
  if (u.keys.length === 0) out(`note: ${u.name} has no key and cannot log in; add one with: tachyon user key add ${u.name} ~/.ssh/id_ed25519.pub`);
  if (!u.enabled) out(`note: ${u.name} is disabled; enable with: tachyon user set ${u.name} --enable`);
}

function describeUser(u: TransferUser, policy: CipherPolicy): string[] {
  const eff = effectiveCiphers(u, policy);
  const lines = [
    `name:         ${u.name}`,
    `enabled:      ${u.enabled ? 'yes' : 'no'}`,
    `docroot:      ${u.docroot}`,
    `permissions:  ${u.permissions.join(', ') || '(none)'}`,
    `ciphers:      ${u.ciphers.join(', ')}${eff.length !== u.ciphers.length ? `  (the server's policy leaves: ${eff.join(', ') || 'none'})` : ''}`,
    `policies:     ${u.policies.join(', ')}`,
    `max rate:     ${u.maxRateBps === null ? 'server ceiling' : formatRate(u.maxRateBps)}`,
    `encryption:   ${u.requireEncryptedAtRest ? 'uploads must be client-side encrypted (.tachyon-enc)' : 'any file'}`,
    `created:      ${u.createdAt}`,
    `updated:      ${u.updatedAt}`,
    `keys:         ${u.keys.length === 0 ? '(none)' : ''}`,
  ];
  for (const k of u.keys) lines.push(`  ${k.fingerprint}  ${k.type}${k.comment ? `  ${k.comment}` : ''}  (added ${k.addedAt})`);
  return lines;
}

/** Registers `tachyon user …` on the program. */
export function registerUserCommands(program: Command): void {
  const user = program
    .command('user')
    .description('manage transfer users (database: --config FILE, --db URL, or ./tachyon-data/tachyon.db)');

  addSettingOptions(
    addStoreOptions(
      user
        .command('add')
        .description('create a transfer user')
        .argument('<name>', 'login name (a-z 0-9 _ . -, at most 32)')
        .requiredOption('--docroot <url>', 'the user\'s root: file:///abs/path (or an absolute path) or s3://bucket/prefix, inside an allowed root')
        .option('--key <file>', "OpenSSH public key file ('-' reads standard input); repeatable", repeatable, [])
        .option('--key-text <key>', "an OpenSSH public key, e.g. 'ssh-ed25519 AAAA… me@host'; repeatable", repeatable, [])
        .option('--disable', 'create the user disabled'),
    ),
    false,
  ).action(async (name: string, o: AddOpts) => {
    const settings = settingsFrom(o, false);
    const keys = [...o.key.map(readKeyFile), ...o.keyText];
    await withStore(o, true, async ({ repo }) => {
      const u = await repo.add({ ...settings, name, docroot: settings.docroot as string, keys });
      out(`added user ${u.name}: docroot ${u.docroot}, permissions ${u.permissions.join(',') || '(none)'}, ${u.keys.length} key(s)`);
      for (const k of u.keys) out(`  key ${k.fingerprint} ${k.type}${k.comment ? ` ${k.comment}` : ''}`);
      notes(u);
    });
  });

  addStoreOptions(user.command('list').description('list transfer users'))
    .option('--json', 'print a JSON array', false)
    .action(async (o: JsonOpts) => {
      await withStore(o, false, async ({ repo, policy }) => {
        const users = await repo.list();
        if (o.json) {
          out(JSON.stringify(users.map((u) => userJson(u, policy))));
          return;
        }
        if (users.length === 0) {
          out("no transfer users yet; add one with: tachyon user add NAME --docroot URL --key FILE");
          return;
        }
        const w = Math.max(4, ...users.map((u) => u.name.length));
        out(`${'NAME'.padEnd(w)}  ENABLED  KEYS  PERMISSIONS                     DOCROOT`);
        for (const u of users) {
          out(`${u.name.padEnd(w)}  ${(u.enabled ? 'yes' : 'no').padEnd(7)}  ${String(u.keys.length).padStart(4)}  ${(u.permissions.join(',') || '(none)').padEnd(30)}  ${u.docroot}`);
        }
      });
    });

  addStoreOptions(user.command('show').description('show a transfer user and its keys').argument('<name>'))
    .option('--json', 'print a JSON object', false)
    .action(async (name: string, o: JsonOpts) => {
      await withStore(o, false, async ({ repo, policy }) => {
        const u = await repo.require(name);
        if (o.json) out(JSON.stringify(userJson(u, policy)));
        else for (const l of describeUser(u, policy)) out(l);
      });
    });

  addSettingOptions(
    addStoreOptions(
      user
        .command('set')
        .description('change settings of a transfer user')
        .argument('<name>')
        .option('--docroot <url>', 'new root: file:///abs/path or s3://bucket/prefix, inside an allowed root')
        .option('--enable', 'allow the user to log in')
        .option('--disable', 'refuse the user\'s logins'),
    ),
    true,
  ).action(async (name: string, o: StoreOpts & SettingOpts) => {
    const settings = settingsFrom(o, true);
    if (Object.keys(settings).length === 0) {
      throw new TachyonError('USAGE', `nothing to change: give at least one of --docroot, --perm, --cipher, --policy, --max-rate, --enable, --disable (see 'tachyon user set --help')`);
    }
    await withStore(o, false, async ({ repo }) => {
      const u = await repo.update(name, settings);
      out(`updated user ${u.name}: ${Object.keys(settings).join(', ')}`);
      notes(u);
    });
  });

  addStoreOptions(user.command('disable').description("refuse a transfer user's logins (keeps the user and its keys)").argument('<name>')).action(
    async (name: string, o: StoreOpts) => {
      await withStore(o, false, async ({ repo }) => {
        await repo.update(name, { enabled: false });
        out(`disabled user ${name}`);
      });
    },
  );

  addStoreOptions(user.command('remove').description('delete a transfer user and its keys (its files are left alone)').argument('<name>')).action(
    async (name: string, o: StoreOpts) => {
      await withStore(o, false, async ({ repo }) => {
        const u = await repo.require(name);
        await repo.remove(name);
        out(`removed user ${name} and ${u.keys.length} key(s); files under ${u.docroot} are untouched`);
      });
    },
  );

  const key = user.command('key').description("manage a transfer user's SSH public keys");

  addStoreOptions(
    key
      .command('add')
      .description("add OpenSSH public keys (one per line) to a user")
      .argument('<name>')
      .argument('<file>', "public key file, e.g. ~/.ssh/id_ed25519.pub; '-' reads standard input"),
  ).action(async (name: string, file: string, o: StoreOpts) => {
    const text = readKeyFile(file);
    await withStore(
      o,
      false,
      async ({ repo }) => {
        const keys = await repo.addKeys(name, text);
        for (const k of keys) out(`added key ${k.fingerprint} ${k.type}${k.comment ? ` ${k.comment}` : ''} to ${name}`);
      },
      { key: file === '-' ? 'standard input' : file },
    );
  });

  addStoreOptions(
    key
      .command('remove')
      .description('remove a key from a user')
      .argument('<name>')
      .argument('<fingerprint>', "SHA256:… as 'tachyon user show NAME' prints it"),
  ).action(async (name: string, fingerprint: string, o: StoreOpts) => {
    await withStore(o, false, async ({ repo }) => {
      await repo.removeKey(name, fingerprint);
      const u = await repo.require(name);
      out(`removed key ${fingerprint} from ${name}`);
      notes(u);
    });
  });
}
