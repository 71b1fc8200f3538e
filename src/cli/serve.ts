/**
 * `tachyon serve` and `tachyon start`: the transfer server in its two forms.
 *  - multi-user: `serve --config FILE` (users in the database, audit log, SSH limits)
 *    and `start` (the same on embedded defaults under ./tachyon-data);
 *  - single-user: `serve --root DIR --authorized-keys FILE [--user xfer]` (one transfer
 *    user from an OpenSSH authorized_keys file, every permission; what the benchmarks use).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { TachyonError } from '../core/errors.js';
import type { CipherName } from '../core/types.js';
import { parseRate } from '../core/units.js';
import { FileAuditSink, type AuditSink } from '../audit/index.js';
import { openDatabase, type Database } from '../db/database.js';
import { databaseAccounts, singleUserAccounts, type AccountSource } from '../server/accounts.js';
import { loadServerConfig, validateServerConfig, type ServerConfig } from '../server/config.js';
import { loadAuthorizedKeys, startTransferServer, type TransferServer } from '../server/transfer-server.js';
import { UserRepository } from '../server/users/repository.js';
import { keyringFromEnv, loadKeyringFile } from '../storage/envelope/keyring.js';
import { sftpForAccounts } from '../server/sftp.js';
import { permittedCiphers } from '../server/users/model.js';
import { fileAccessKeyStatus, TokenLogin } from '../server/token-login.js';
import { fileTokenKeys, TransferTokenCodec } from '../server/transfer-token.js';
import { systemClock } from '../core/clock.js';
import { startNodeApiServer, type NodeApiServer } from '../node-api/node.js';
import { AccessKeyRepository, databaseAccessKeyStatus } from '../node-api/access-keys.js';
import { transferSetupPlugin } from '../node-api/transfer-setup.js';
import { opsRoutes } from '../node-api/ops.js';
import { TransferMonitor } from '../server/monitor.js';
import { lazyS3Backends, type S3Backends } from '../storage/s3-backends.js';
import { ensureLocalCertificate, loadServerTls } from '../node-api/pki.js';
import { defenderRoutes } from '../node-api/defender-routes.js';
import { openConfiguredDefender } from './defender-commands.js';
import { ScoringDefender, type Defender } from '../defender/index.js';
import { loadSecretBox } from '../platform/mfa/index.js';
import { startPlatformServer, type PlatformServer } from '../platform/server.js';

export interface ServeOpts {
  config?: string;
  root?: string;
  authorizedKeys?: string;
  user: string;
  hostKey: string;
  listen: string;
  port: string;
  allowCipher: CipherName[];
  maxRate: string;
  json: boolean;
}

export { defaultHostKeyPath } from './defaults.js';

type Log = (e: Record<string, unknown>) => void;

function logger(json: boolean): Log {
  return (e) => {
    if (json) process.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n');
    else if (e.type === 'config.warning') process.stderr.write(`warning: ${String(e.message)}\n`);
    else if (e.type === 'transfer.end' || e.type === 'transfer.error' || e.type === 'audit.error') process.stderr.write(`${new Date().toISOString()} ${JSON.stringify(e)}\n`);
  };
}

async function untilSignal(): Promise<void> {
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

function announce(server: TransferServer, o: { json: boolean; log: Log; users: string; root?: string; audit?: string }): void {
  const msg = {
    type: 'server.start',
    listen: server.address,
    tcpPort: server.port,
    udpPort: server.udpPort,
    users: o.users,
    ...(o.root ? { root: o.root } : {}),
    ...(o.audit ? { auditLog: o.audit } : {}),
    fingerprint: server.hostKeyFingerprint,
  };
  if (o.json) o.log(msg);
  else {
    process.stderr.write(`Tachyon transfer server: SSH on TCP ${server.address}:${server.port}, data on UDP ${server.udpPort}; users: ${o.users}${o.root ? `, root ${o.root}` : ''}\n`);
    if (o.audit) process.stderr.write(`audit log: ${o.audit} (check it with: tachyon audit verify ${o.audit})\n`);
    process.stderr.write(`host key fingerprint: ${server.hostKeyFingerprint}\n`);
    process.stderr.write(`clients pin it with: --host-key-fingerprint ${server.hostKeyFingerprint}\n`);
  }
}

function announceApi(api: NodeApiServer, o: { json: boolean; log: Log; caFile?: string }): void {
  const host = api.address.includes(':') ? `[${api.address}]` : api.address;
  const url = `https://${host}:${api.port}`;
  if (o.json) o.log({ type: 'node-api.start', url, listen: api.address, port: api.port, ...(o.caFile ? { caFile: o.caFile } : {}) });
  else {
    process.stderr.write(`node API: ${url}${o.caFile ? ` (clients trust the CA ${o.caFile}, e.g. curl --cacert ${o.caFile})` : ''}\n`);
  }
}

function announceWeb(web: PlatformServer, o: { json: boolean; log: Log; caFile?: string }): void {
  const signin = `${web.url}/signin`;
  if (o.json) o.log({ type: 'web.start', url: web.url, signin, listen: web.address, port: web.port, ...(o.caFile ? { caFile: o.caFile } : {}) });
  else process.stderr.write(`web app: ${signin}${o.caFile ? ` (browsers trust the CA ${o.caFile})` : ''}\n`);
}

function parsePort(text: string): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TachyonError('USAGE', `invalid port '${text}'`);
  return port;
}

/** Runs the multi-user server of a validated configuration until SIGINT/SIGTERM. */
export async function runConfigured(cfg: ServerConfig, json: boolean, hint?: (users: number) => void, caFile?: string): Promise<number> {
  const log = logger(json);
  let database: Database | undefined;
  let audit: AuditSink | undefined;
  let server: TransferServer | undefined;
  let api: NodeApiServer | undefined;
  let web: PlatformServer | undefined;
  let defender: Defender | undefined;
  let apiS3: S3Backends | undefined;
  try {
    audit = cfg.auditLog ? new FileAuditSink(cfg.auditLog) : undefined;
    database = await openDatabase({ url: cfg.database, create: true });
    const repo = new UserRepository(database, {
      allowedRoots: cfg.allowedRoots,
      cipherPolicy: cfg.cipherPolicy,
      onChange: (e) => audit?.record({ type: 'config.change', component: 'config', fields: { actor: 'config-file', action: e.type, target: e.user, ...(e.fields ? { changed: e.fields } : {}) } }),
    });
    if (cfg.users.length > 0) {
      const applied = await repo.applyDeclared(cfg.users);
      log({ type: 'config.users', ...applied });
    }
    const accounts: AccountSource = databaseAccounts(repo, cfg.cipherPolicy);
    // IP defence for SSH and the node API (on unless the configuration turns it off)
    defender = cfg.defender.enabled ? await openConfiguredDefender(cfg, database, audit, (e) => log({ type: 'defender.error', code: e.code, message: e.message })) : undefined;
    // server-side encryption at rest: the master keys (refused at start when missing)
    const sse = cfg.serverSideEncryption;
    const encryption = sse
      ? { roots: sse.roots, keys: sse.keyringFile !== undefined ? loadKeyringFile(sse.keyringFile) : keyringFromEnv(process.env.TACHYON_MASTER_KEY) }
      : undefined;
    const tt = cfg.transferTokens;
    const codec = tt ? new TransferTokenCodec({ nodeId: tt.nodeId, keys: fileTokenKeys(tt.keyFile, { graceMs: tt.keyGraceSeconds * 1000 }), clock: systemClock }) : undefined;
    const tokens = tt && codec
      ? new TokenLogin({
          user: tt.user,
          codec,
          // the node API's access keys (table access_key), unless a file of states is configured
          accessKeys: tt.accessKeysFile !== undefined ? fileAccessKeyStatus(tt.accessKeysFile) : databaseAccessKeyStatus(new AccessKeyRepository(database, { allowedRoots: cfg.allowedRoots })),
          ciphers: permittedCiphers(cfg.cipherPolicy),
          allowedRoots: cfg.allowedRoots,
          clock: systemClock,
        })
      : undefined;
    // active and past transfers, for the node API's monitoring routes (when it runs)
    const monitor = cfg.nodeApi ? new TransferMonitor({ database, onError: (e) => log({ type: 'monitor.error', code: e.code, message: e.message }) }) : undefined;
    server = await startTransferServer({
      ...(tokens ? { tokens } : {}),
      ...(monitor ? { monitor } : {}),
      accounts,
      hostKeyFile: cfg.hostKeyFile,
      listen: cfg.listen,
      port: cfg.port,
      allowedCiphers: permittedCiphers(cfg.cipherPolicy),
      maxRateBps: cfg.maxRateBps,
      ssh: {
        maxAuthTries: cfg.ssh.maxAuthTries,
        loginGraceMs: cfg.ssh.loginGraceSeconds * 1000,
        idleTimeoutMs: cfg.ssh.idleTimeoutSeconds * 1000,
        ...(cfg.ssh.banner ? { banner: cfg.ssh.banner } : {}),
      },
      ...(audit ? { audit } : {}),
      ...(defender ? { defender } : {}),
      // SFTP on the same accounts, jail, permissions and audit log, for the tools people have
      subsystems: { sftp: sftpForAccounts(audit ? { audit } : {}) },
      ...(cfg.s3 ? { s3: { connection: cfg.s3, partBytes: cfg.s3.partBytes, conditionalWrites: cfg.s3.conditionalWrites } } : {}),
      ...(encryption ? { encryption } : {}),
      onEvent: log,
    });
    if (cfg.nodeApi && audit) {
      const n = cfg.nodeApi;
      // access keys with s3:// roots: the same s3 section (the SDK loads when such a key is first used)
      apiS3 = cfg.s3 ? lazyS3Backends({ connection: cfg.s3, partBytes: cfg.s3.partBytes, conditionalWrites: cfg.s3.conditionalWrites }) : undefined;
      api = await startNodeApiServer({
        database,
        allowedRoots: cfg.allowedRoots,
        audit,
        tls: loadServerTls({ certFile: n.certFile, keyFile: n.keyFile, ...(n.chainFile ? { chainFile: n.chainFile } : {}) }),
        listen: n.listen,
        port: n.port,
        ...(apiS3 ? { s3: apiS3 } : {}),
        ...(encryption ? { encryption } : {}),
        ...(n.tokenTtlSeconds !== undefined ? { tokenTtlSeconds: n.tokenTtlSeconds } : {}),
        ...(defender ? { defender } : {}),
        capabilities: [...(tt ? ['transfer_setup'] : []), ...(monitor ? ['monitoring'] : []), ...(defender ? ['defender'] : [])],
        plugins: [
          ...(defender ? [defenderRoutes(defender)] : []),
          ...(monitor ? [opsRoutes({ monitor })] : []),
          ...(tt && codec
            ? [
                transferSetupPlugin({
                  codec,
                  // what clients connect to: the SSH listen address, or this host's name when it listens on every address
                  host: cfg.listen === '0.0.0.0' || cfg.listen === '::' ? hostname() : cfg.listen,
                  sshPort: server.port,
                  udpPort: server.udpPort,
                  user: tt.user,
                  hostKeyFingerprint: server.hostKeyFingerprint,
                }),
              ]
            : []),
        ],
      });
    }
    if (cfg.platform) {
      // the web platform: same database (its tables and its audit table), same defender
      const p = cfg.platform;
      web = await startPlatformServer({
        database,
        tls: loadServerTls({ certFile: p.certFile, keyFile: p.keyFile, ...(p.chainFile ? { chainFile: p.chainFile } : {}), service: 'web platform' }),
        mfaBox: loadSecretBox({ keyFile: p.mfaKeyFile, env: process.env }),
        listen: p.listen,
        port: p.port,
        ...(defender ? { defender } : {}),
      });
    }
    const count = (await repo.list()).length;
    // the signal handlers first: whoever reads the start event may stop the server at once
    const stopped = untilSignal();
    announce(server, { json, log, users: `${count} in ${database.location}`, ...(cfg.auditLog ? { audit: cfg.auditLog } : {}) });
    if (api) announceApi(api, { json, log, ...(caFile ? { caFile } : {}) });
    if (web) announceWeb(web, { json, log, ...(caFile ? { caFile } : {}) });
    hint?.(count);
    await stopped;
    return 0;
  } finally {
    await web?.close();
    await api?.close();
    await apiS3?.close();
    await server?.close();
    await defender?.close();
    await database?.close();
    await audit?.close();
  }
}

export async function runServe(o: ServeOpts): Promise<number> {
  if (o.config !== undefined) {
    if (o.root !== undefined || o.authorizedKeys !== undefined) {
      throw new TachyonError('USAGE', '--config names the users (in the database): leave out --root and --authorized-keys');
    }
    return runConfigured(await loadServerConfig(o.config), o.json);
  }
  if (o.root === undefined || o.authorizedKeys === undefined) {
    throw new TachyonError('USAGE', 'give --config FILE (users in the database), or --root DIR and --authorized-keys FILE (one transfer user)');
  }
  const port = parsePort(o.port);
  const log = logger(o.json);
  if (o.user === 'root') throw new TachyonError('CONFIG', 'the transfer user may not be root');
  if (!existsSync(o.root)) throw new TachyonError('CONFIG', `root directory ${o.root} does not exist`);
  const { keys, warnings } = loadAuthorizedKeys(o.authorizedKeys);
  for (const w of warnings) log({ type: 'config.warning', message: w });
  if (keys.length === 0) log({ type: 'config.warning', message: `${o.authorizedKeys} holds no usable key: nobody can log in` });
  const root = path.resolve(o.root);
  // IP defence with the default settings; no database here, so blocks live in memory (lost at restart)
  const memory = await openDatabase({ url: 'sqlite::memory:' });
  const defender = await ScoringDefender.open({ database: memory, onError: (e) => log({ type: 'defender.error', code: e.code, message: e.message }) });
  const server = await startTransferServer({
    defender,
    accounts: singleUserAccounts({ user: o.user, root, keys, ciphers: o.allowCipher }),
    hostKeyFile: o.hostKey,
    listen: o.listen,
    port,
    allowedCiphers: o.allowCipher,
    maxRateBps: parseRate(o.maxRate),
    // one user whose transfers may run for hours with a quiet control channel
    ssh: { idleTimeoutMs: 0 },
    subsystems: { sftp: sftpForAccounts() },
    onEvent: log,
  });
  const stopped = untilSignal();
  announce(server, { json: o.json, log, users: `${o.user} (${keys.length} key${keys.length === 1 ? '' : 's'})`, root });
  await stopped;
  await server.close();
  await defender.close();
  await memory.close();
  return 0;
}

export interface StartOpts {
  data: string;
  listen: string;
  port: string;
  apiPort: string;
  api: boolean;
  webPort: string;
  web: boolean;
  json: boolean;
}

/** `tachyon start`: the multi-user server on embedded defaults (SQLite, local disk, audit log) under DIR. */
export async function runStart(o: StartOpts): Promise<number> {
  const data = path.resolve(o.data);
  const files = path.join(data, 'files');
  mkdirSync(files, { recursive: true, mode: 0o700 });
  // the node API's private CA and a localhost certificate, made on first start
  const pki = o.api ? await ensureLocalCertificate({ caDir: path.join(data, 'ca'), prefix: path.join(data, 'tls', 'node') }) : undefined;
  // the web platform's certificate, from the same CA
  const webPki = o.web ? await ensureLocalCertificate({ caDir: path.join(data, 'ca'), prefix: path.join(data, 'tls', 'web') }) : undefined;
  const cfg = await validateServerConfig(
    {
      listen: o.listen,
      port: parsePort(o.port),
      hostKeyFile: path.join(data, 'ssh_host_ed25519_key'),
      database: path.join(data, 'tachyon.db'),
      allowedRoots: [`file://${files}/*`],
      auditLog: path.join(data, 'audit.log'),
      ...(pki
        ? {
            nodeApi: { listen: o.listen, port: parsePort(o.apiPort), certFile: pki.certFile, keyFile: pki.keyFile },
            // applications get transfer specs from the node API: the shared token user
            transferTokens: { keyFile: path.join(data, 'token.key') },
          }
        : {}),
      ...(webPki
        ? { platform: { listen: o.listen, port: parsePort(o.webPort), certFile: webPki.certFile, keyFile: webPki.keyFile, mfaKeyFile: path.join(data, 'mfa.key') } }
        : {}),
    },
    '(embedded defaults)',
    data,
  );
  process.stderr.write(`Tachyon on embedded defaults: data in ${data}\n`);
  for (const f of [...(pki?.created ?? []), ...(webPki?.created ?? [])]) process.stderr.write(`created ${f}\n`);
  const dataOpt = o.data === 'tachyon-data' ? '' : ` --data ${o.data}`;
  return runConfigured(
    cfg,
    o.json,
    (users) => {
      const rel = path.relative(process.cwd(), files) || files;
      if (users === 0) {
        process.stderr.write(`no transfer users yet; add one (docroots live under ${rel}/):\n`);
        process.stderr.write(`  mkdir -p ${rel}/alice && npx tachyon user add alice --docroot ${rel}/alice --key ~/.ssh/id_ed25519.pub\n`);
      }
      if (pki) process.stderr.write(`node API administrator key (shown once): npx tachyon access-key create --admin${dataOpt}\n`);
      if (webPki) process.stderr.write(`web app organisation and its first administrator: npx tachyon tenant create acme${dataOpt} && npx tachyon tenant admin-add acme alice${dataOpt}\n`);
    },
    pki?.caFile ?? webPki?.caFile,
  );
}
