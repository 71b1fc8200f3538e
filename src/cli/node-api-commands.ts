/**
 * Node API administration on the node itself:
 *
 *   tachyon ca init [--dir DIR] [--name CN] [--days N] [--json]
 *   tachyon cert issue --ca DIR --name HOST [--name HOST]… [--ip ADDR]… [--days N] --out PREFIX [--json]
 *   tachyon access-key create (--root URL [--perm LIST] | --admin) [--description TEXT] [--json]
 *   tachyon access-key list [--all] [--json]
 *   tachyon access-key show ID [--json]
 *   tachyon access-key rotate ID [--grace SECONDS] [--json]
 *   tachyon access-key revoke ID [--json]
 *
 * access-key commands take the store options of `tachyon user` (--config, --db and
 * --allowed-root, or --data). A secret is printed once, by create and rotate; every change
 * goes to the server's audit log (config.change, actor cli:<login>).
 */
import { userInfo } from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { TachyonError } from '../core/errors.js';
import { PERMISSIONS } from '../core/types.js';
import { AccessKeyRepository, DEFAULT_GRACE_SECONDS, type AccessKey } from '../node-api/access-keys.js';
import { keyJson } from '../node-api/access-key-routes.js';
import { initCa, issueServerCert } from '../node-api/pki.js';
import { addStoreOptions, openStore, type StoreOpts } from './user-commands.js';

function repeatable(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

function intOption(text: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) throw new TachyonError('USAGE', `${flag}: expected a whole number from ${min} to ${max}, got '${text.slice(0, 40)}'`);
  return n;
}

function describeKey(k: AccessKey): string[] {
  return [
    `id:          ${k.id}`,
    `kind:        ${k.kind}`,
    ...(k.storageRoot !== null ? [`root:        ${k.storageRoot}`, `permissions: ${k.permissions.join(',') || '(none)'}`] : []),
    ...(k.description ? [`description: ${k.description}`] : []),
    `created:     ${k.createdAt}`,
    `secret:      version ${k.secretVersion}${k.previousSecretValidUntil ? `; the previous one works until ${k.previousSecretValidUntil}` : ''}`,
    ...(k.revokedAt ? [`revoked:     ${k.revokedAt}`] : []),
  ];
}

async function withKeys<T>(o: StoreOpts, fn: (keys: AccessKeyRepository) => Promise<T>): Promise<T> {
  const store = await openStore(o, true);
  const actor = `cli:${userInfo().username}`;
  try {
    const keys = new AccessKeyRepository(store.database, {
      allowedRoots: store.roots,
      onChange: (e) => store.audit?.record({ type: 'config.change', component: 'config', fields: { actor, action: e.action, target: e.id } }),
    });
    return await fn(keys);
  } finally {
    await store.database.close();
    await store.audit?.close();
  }
}

export function registerNodeApiCommands(program: Command): void {
  const ca = program.command('ca').description('the private certificate authority of the node API');
  ca.command('init')
    .description('create a private CA (ECDSA P-256, ~10 years): DIR/ca.crt (give it to clients) and DIR/ca.key (0600)')
    .option('--dir <dir>', 'directory of the CA', path.join('tachyon-data', 'ca'))
    .option('--name <cn>', 'common name of the CA', 'Tachyon node CA')
    .option('--days <n>', 'validity in days', '3652')
    .option('--json', 'print JSON', false)
    .action(async (o: { dir: string; name: string; days: string; json: boolean }) => {
      const info = await initCa({ dir: o.dir, commonName: o.name, days: intOption(o.days, '--days', 1, 10956) ?? 3652 });
      if (o.json) out(JSON.stringify({ cert: info.certFile, key: info.keyFile, subject: info.subject, not_after: info.notAfter.toISOString(), sha256: info.fingerprint }));
      else {
        out(`created the CA ${info.subject}, valid until ${info.notAfter.toISOString()}`);
        out(`  certificate: ${info.certFile} (install it on clients: --cacert / the node API client's caFile)`);
        out(`  private key: ${info.keyFile} (0600; keep it on this machine)`);
        out(`  SHA-256:     ${info.fingerprint}`);
      }
    });

  const cert = program.command('cert').description('server certificates of the node API');
  cert
    .command('issue')
    .description('sign a server certificate with the CA (SAN names and addresses, serverAuth, at most 397 days)')
    .requiredOption('--ca <dir>', 'directory of the CA (ca.crt, ca.key)')
    .option('--name <host>', 'DNS name of the server (repeatable)', repeatable, [])
    .option('--ip <addr>', 'IP address of the server (repeatable)', repeatable, [])
    .option('--days <n>', 'validity in days (at most 397)', '397')
    .requiredOption('--out <prefix>', 'writes PREFIX.crt (certificate and CA) and PREFIX.key (0600)')
    .option('--json', 'print JSON', false)
    .action(async (o: { ca: string; name: string[]; ip: string[]; days: string; out: string; json: boolean }) => {
      const c = await issueServerCert({ caDir: o.ca, dnsNames: o.name, ipAddresses: o.ip, days: intOption(o.days, '--days', 1, 397) ?? 397, outPrefix: o.out });
      if (o.json) {
        out(JSON.stringify({ cert: c.certFile, key: c.keyFile, subject: c.subject, dns: c.dnsNames, ip: c.ipAddresses, not_after: c.notAfter.toISOString(), sha256: c.fingerprint }));
      } else {
        out(`issued ${c.subject} for ${[...c.dnsNames, ...c.ipAddresses].join(', ')}, valid until ${c.notAfter.toISOString()}`);
        out(`  certificate: ${c.certFile}`);
        out(`  private key: ${c.keyFile} (0600)`);
        out(`  SHA-256:     ${c.fingerprint}`);
      }
    });

  const ak = program.command('access-key').description('access keys of the node API (see docs/node-api.md)');
  addStoreOptions(
    ak
      .command('create')
      .description('create an access key bound to a storage root (or, with --admin, a node administrator key); prints the secret once')
      .option('--root <url>', 'storage root: file:///path, a path, or s3://bucket/prefix (inside the allowed roots)')
      .option('--perm <list>', `permissions, comma-separated: ${PERMISSIONS.join(',')} (default list,read)`, repeatable)
      .option('--admin', 'a node administrator key (manages access keys; no storage)', false)
      .option('--description <text>', 'what the key is for')
      .option('--json', 'print JSON', false),
  ).action(async (o: StoreOpts & { root?: string; perm?: string[]; admin: boolean; description?: string; json: boolean }) => {
    if (o.admin && (o.root !== undefined || o.perm !== undefined)) throw new TachyonError('USAGE', '--admin keys have no --root or --perm');
    if (!o.admin && o.root === undefined) throw new TachyonError('USAGE', 'give --root URL (or --admin)');
    const perms = o.perm?.flatMap((p) => p.split(',')).map((p) => p.trim()).filter((p) => p !== '');
    const { key, secret } = await withKeys(o, (keys) =>
      keys.create({ kind: o.admin ? 'admin' : 'access', ...(o.root !== undefined ? { storageRoot: /^[a-z][a-z0-9+.-]*:\/\//i.test(o.root) ? o.root : path.resolve(o.root) } : {}), ...(perms ? { permissions: perms } : {}), ...(o.description !== undefined ? { description: o.description } : {}) }),
    );
    if (o.json) out(JSON.stringify({ ...keyJson(key), secret }));
    else {
      for (const l of describeKey(key)) out(l);
      out(`secret:      ${secret}`);
      out('store the secret now: it is not shown again (rotate the key to get a new one)');
    }
  });

  addStoreOptions(ak.command('list').description('list access keys (never their secrets)').option('--all', 'include revoked keys', false).option('--json', 'print JSON', false)).action(
    async (o: StoreOpts & { all: boolean; json: boolean }) => {
      const { keys } = await withKeys(o, (k) => k.list({ activeOnly: !o.all, limit: 100_000 }));
      if (o.json) out(JSON.stringify(keys.map(keyJson)));
      else if (keys.length === 0) out('no access keys');
      else for (const k of keys) out(`${k.id}  ${k.kind.padEnd(6)}  ${k.storageRoot ?? '-'}  ${k.permissions.join(',') || '-'}${k.revokedAt ? '  (revoked)' : ''}${k.description ? `  ${k.description}` : ''}`);
    },
  );

  addStoreOptions(ak.command('show').description('show an access key').argument('<id>').option('--json', 'print JSON', false)).action(async (id: string, o: StoreOpts & { json: boolean }) => {
    const key = await withKeys(o, (k) => k.get(id));
    if (o.json) out(JSON.stringify(keyJson(key)));
    else for (const l of describeKey(key)) out(l);
  });

  addStoreOptions(
    ak
      .command('rotate')
      .description('give a key a new secret (printed once); the old one works for the grace period')
      .argument('<id>')
      .option('--grace <seconds>', 'how long the old secret keeps working', String(DEFAULT_GRACE_SECONDS))
      .option('--json', 'print JSON', false),
  ).action(async (id: string, o: StoreOpts & { grace: string; json: boolean }) => {
    const grace = intOption(o.grace, '--grace', 0, 30 * 86_400) ?? DEFAULT_GRACE_SECONDS;
    const { key, secret } = await withKeys(o, (k) => k.rotate(id, grace));
    if (o.json) out(JSON.stringify({ ...keyJson(key), secret }));
    else {
      for (const l of describeKey(key)) out(l);
      out(`secret:      ${secret}`);
      out('store the secret now: it is not shown again');
    }
  });

  addStoreOptions(ak.command('revoke').description('revoke a key for good (running nodes refuse it within a second)').argument('<id>').option('--json', 'print JSON', false)).action(
    async (id: string, o: StoreOpts & { json: boolean }) => {
      const key = await withKeys(o, (k) => k.revoke(id));
      if (o.json) out(JSON.stringify(keyJson(key)));
      else out(`revoked ${key.id} at ${key.revokedAt ?? ''}`);
    },
  );
}
