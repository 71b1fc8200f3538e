/**
 * The transfer server's composition root: the SSH control service on TCP PORT and the
 * shared UDP data endpoint on UDP PORT. Accounts come from an `AccountSource` (the user
 * database, or the single user of `serve --root`); each session is confined to its
 * account's docroot (transfer's jail) with its permissions, ciphers, policies and rate
 * cap. Everything that happens is recorded in the audit sink, when there is one.
 */
import { readFileSync } from 'node:fs';
import { systemClock, type Clock } from '../core/clock.js';
import { TachyonError, toTachyonError } from '../core/errors.js';
import type { CipherName } from '../core/types.js';
import type { AuditEvent, AuditSink } from '../audit/index.js';
import { barred, type Defender } from '../defender/index.js';
import { fingerprintOf, loadOrCreateHostKey, parseAuthorizedKeys, type AuthorizedKey } from '../control/hostkeys.js';
import { startControlServer, type ControlServer, type ControlServerEvent, type SessionInfo, type SubsystemHandler } from '../control/ssh-server.js';
import { Endpoint } from '../transport/session/endpoint.js';
import { openUdpSocket } from '../transport/socket/udp.js';
import type { DatagramSocket } from '../transport/socket/types.js';
import { pathGrant, storageGrant, type SessionRestriction } from '../transfer/grant.js';
import { Jail } from '../transfer/jail.js';
import type { FileOutcome } from '../transfer/roles.js';
import { serveSession } from '../transfer/session.js';
import type { Account, AccountSource } from './accounts.js';
// the AWS SDK is loaded (dynamic import) when an s3:// account starts a session
import { lazyS3Backends, type S3BackendsOptions } from '../storage/s3-backends.js';
import type { ReceiverStore } from '../transfer/store-file.js';
import type { MonitoredSession, TransferReporter } from './monitor.js';
import type { TokenLogin, TokenSession } from './token-login.js';
import { EncryptedStorage, LocalStorage, type StorageBackend } from '../storage/index.js';
import type { KeyProvider } from '../storage/envelope/keyring.js';
import { matchesRoot, parseStorageUrl, type RootPattern } from './users/storage-roots.js';

export interface SshServiceLimits {
  maxAuthTries?: number;
  loginGraceMs?: number;
  idleTimeoutMs?: number;
  banner?: string;
}

export interface TransferServerOptions {
  accounts: AccountSource;
  hostKeyFile: string;
  listen: string;
  port: number;
  /** ciphers the server allows at all (accounts narrow this further) */
  allowedCiphers: readonly CipherName[];
  /** ceiling on any session's rate, bits/s */
  maxRateBps: number;
  ssh?: SshServiceLimits;
  audit?: AuditSink;
  /**
   * The shared transfer user that logs in with transfer tokens (password method, that
   * user only); its sessions are confined to the token's root, direction and paths.
   */
  tokens?: TokenLogin;
  /**
   * Extra SSH subsystems given the account of the session (e.g. `sftp`): built by the
   * caller, so that the server layer does not depend on how SFTP is served.
   */
  subsystems?: Readonly<Record<string, (account: Account, jail: Jail, info: SessionInfo) => SubsystemHandler>>;
  clock?: Clock;
  /** Binds the shared UDP data socket (the datagram-socket seam; default: the real one, native when built). */
  openUdp?: (address: string, port: number) => Promise<DatagramSocket>;
  /**
   * IP defence: a blocked or not allowed address is refused right after TCP accept (before
   * the SSH handshake); refused authentications are reported to it.
   */
  defender?: Defender;
  /**
   * Object storage for accounts whose docroot is an s3:// URL (endpoint, region, path
   * style, timeouts; credentials from the server's environment). The AWS SDK is loaded
   * only when such an account starts a session.
   */
  s3?: S3ServiceOptions;
  /** reports sessions, files, progress and refusals (the transfer monitor), and may cancel a session */
  monitor?: TransferReporter;
  /**
   * Server-side encryption at rest: an account whose docroot lies under one of `roots`
   * stores every file as an envelope (storage/encrypted.ts) whose content key `keys`
   * wraps; its transfers go through the storage path, and SFTP and transfer tokens are
   * refused for it (they write through the jail, in plaintext).
   */
  encryption?: { readonly roots: readonly RootPattern[]; readonly keys: KeyProvider };
  onEvent?(e: { type: string; [k: string]: unknown }): void;
}

/** How the transfer server reaches S3 for s3:// docroots. */
export type S3ServiceOptions = S3BackendsOptions;

export interface TransferServer {
  address: string;
  /** TCP (SSH) port */
  port: number;
  /** UDP (data) port */
  udpPort: number;
  hostKeyFingerprint: string;
  endpoint: Endpoint;
  close(): Promise<void>;
}

/** Reads an OpenSSH authorized_keys file; unusable lines come back as warnings. */
export function loadAuthorizedKeys(file: string): { keys: AuthorizedKey[]; warnings: string[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TachyonError('CONFIG', `cannot read authorized keys file ${file}`, { cause: err });
  }
  const parsed = parseAuthorizedKeys(text);
  return { keys: parsed.keys, warnings: parsed.errors.map((e) => `${file}:${e.line}: ${e.message}`) };
}

/** The audit record of an SSH service event (undefined: not worth a record); `refusalReason` refines a refused login's reason. */
export function auditOfControlEvent(e: ControlServerEvent, refusalReason?: string): AuditEvent | undefined {
  if (e.type === 'server-error') return undefined;
  const peer = { clientAddress: e.clientAddress, clientPort: e.clientPort };
  const correlationId = e.connectionId;
  switch (e.type) {
    case 'auth':
      if (e.outcome === 'accepted') {
        return { type: 'auth.success', component: 'ssh', correlationId, fields: { ...peer, user: e.user, method: e.method, keyFingerprint: e.keyFingerprint ?? '', ...(e.keyType ? { keyType: e.keyType } : {}) } };
      }
      if (e.outcome === 'refused') {
        return {
          type: 'auth.failure',
          component: 'ssh',
          correlationId,
          fields: {
            ...peer,
            user: e.user,
            method: e.method,
            reason: refusalReason ?? e.detail ?? e.reason ?? 'refused',
            ...(e.keyType ? { keyType: e.keyType } : {}),
            ...(e.keyFingerprint ? { keyFingerprint: e.keyFingerprint } : {}),
            ...(e.failures !== undefined ? { failures: e.failures } : {}),
          },
        };
      }
      return undefined; // key-ok: the signed attempt follows and is recorded
    case 'refused':
      if (e.what === 'connection' && (e.detail === 'blocked' || e.detail === 'not-allowed')) {
        // the IP defender refused it before SSH began
        return { type: 'refusal.address', component: 'ssh', correlationId, fields: { ...peer, reason: e.detail, service: 'ssh' } };
      }
      if (e.what === 'connection') {
        // a connection limit (per-source, max-startups) refused it before SSH began
        return { type: 'refusal.limit', component: 'ssh', correlationId, fields: { ...peer, limit: e.detail ?? 'connection', ...(e.user ? { user: e.user } : {}) } };
      }
      return { type: 'refusal.channel', component: 'ssh', correlationId, fields: { ...peer, what: e.what, ...(e.detail ? { detail: e.detail } : {}), ...(e.user ? { user: e.user } : {}) } };
    case 'session-start':
      return { type: 'session.start', component: 'ssh', correlationId, fields: { ...peer, user: e.user, keyFingerprint: e.keyFingerprint, subsystem: e.subsystem } };
    case 'session-end':
      return {
        type: 'session.end',
        component: 'ssh',
        correlationId,
        fields: { ...peer, user: e.user, keyFingerprint: e.keyFingerprint, subsystem: e.subsystem, durationMs: e.durationMs, ...(e.code ? { code: e.code } : {}) },
      };
    case 'disconnect':
      if (e.reason === 'login-grace-timeout' || e.reason === 'max-auth-tries' || e.reason === 'idle-timeout') {
        return { type: 'refusal.limit', component: 'ssh', correlationId, fields: { ...peer, limit: e.reason, ...(e.user ? { user: e.user } : {}) } };
      }
      return { type: 'connection.close', component: 'ssh', correlationId, fields: { ...peer, reason: e.reason, ...(e.user ? { user: e.user } : {}) } };
    default:
      return undefined;
  }
}

/** The monitor's refusal reason of an audit event (undefined: not a refusal). */
export function refusalReason(e: AuditEvent): string | undefined {
  if (e.type === 'auth.failure') return 'auth';
  if (e.type.startsWith('refusal.')) return e.type.slice('refusal.'.length);
  const code = (e.fields as Record<string, unknown>)['code'];
  if (e.type === 'session.end' && e.component === 'transfer' && e.severity === 'warning' && typeof code === 'string' && code !== 'CANCELLED') return code.toLowerCase();
  return undefined;
}

export async function startTransferServer(o: TransferServerOptions): Promise<TransferServer> {
  const clock = o.clock ?? systemClock;
  const hostKey = await loadOrCreateHostKey(o.hostKeyFile);
  const record = (e: AuditEvent): string | undefined => {
    const refusal = refusalReason(e);
    if (refusal !== undefined) {
      const user = (e.fields as Record<string, unknown>)['user'];
      o.monitor?.refused(refusal, typeof user === 'string' ? user : undefined);
    }
    try {
      return o.audit?.record(e);
    } catch (err) {
      o.onEvent?.({ type: 'audit.error', message: (err as Error).message });
      return undefined;
    }
  };
  const jails = new Map<string, Jail>();
  const jailFor = (root: string): Jail => {
    let j = jails.get(root);
    if (!j) {
      j = new Jail(root);
      jails.set(root, j);
    }
    return j;
  };
  // storage of s3:// accounts: one client per server and one backend per docroot, made on
  // first use; the store a session sees is its own (its account's permissions, its own
  // cache of directories made)
  const s3 = lazyS3Backends(o.s3 ?? { connection: {} });
  /** whether the account's storage is encrypted by the server */
  const encrypted = (account: { root: string; storage?: string }): boolean => {
    const enc = o.encryption;
    if (!enc) return false;
    const url = parseStorageUrl(account.storage ?? `file://${account.root}`, { field: 'docroot' });
    return enc.roots.some((r) => matchesRoot(r, url));
  };
  const refuseEncrypted = (account: Account, what: string): never => {
    throw new TachyonError('PERMISSION', `account ${account.name}: ${what} refused on server-side encrypted storage`, {
      publicMessage: `${what} cannot be used with this account's storage (it is encrypted by the server); use tachyon send/recv.`,
      details: { permission: 'encrypted-storage' },
    });
  };
  const storeFor = async (account: Account, url: string | undefined): Promise<ReceiverStore> => {
    let backend: StorageBackend = url !== undefined ? await s3.open(url) : await LocalStorage.open(account.root);
    if (o.encryption && encrypted(account)) backend = new EncryptedStorage(backend, o.encryption.keys);
    const made = new Set<string>(['']);
    return {
      backend,
      async ensureDir(dir: string): Promise<void> {
        if (made.has(dir)) return;
        try {
          const e = await backend.stat(dir);
          if (e.kind !== 'directory') throw new TachyonError('EXISTS', `${dir} exists and is not a directory`, { publicMessage: 'A destination directory exists as a file.' });
        } catch (err) {
          if (!(err instanceof TachyonError && err.code === 'NOT_FOUND')) throw err;
          if (!account.permissions.includes('mkdir')) {
            throw new TachyonError('PERMISSION', "permission 'mkdir' missing for create directories", {
              publicMessage: 'Permission denied: your account may not create directories.',
              details: { permission: 'mkdir' },
            });
          }
          await backend.mkdir(dir, { recursive: true }).catch((e2: unknown) => {
            if (!(e2 instanceof TachyonError && e2.code === 'EXISTS')) throw e2;
          });
        }
        made.add(dir);
      },
    };
  };
  const tokens = o.tokens;
  const isTokenSession = (info: SessionInfo): boolean => tokens !== undefined && info.user === tokens.user;
  /** the account and claims of a token session, checked again now, or a refusal (audited) */
  const tokenSession = async (login: TokenLogin, info: SessionInfo): Promise<TokenSession> => {
    let s: Awaited<ReturnType<TokenLogin['session']>>;
    try {
      s = await login.session(info.keyFingerprint);
    } catch (err) {
      const te = toTachyonError(err, 'INTERNAL');
      o.onEvent?.({ type: 'session.error', user: info.user, code: te.code, message: te.message });
      throw te;
    }
    if ('refused' in s) {
      record({ type: 'auth.failure', component: 'ssh', correlationId: info.connectionId, fields: { clientAddress: info.clientAddress, clientPort: info.clientPort, user: info.user, method: 'password', reason: s.refused, keyFingerprint: info.keyFingerprint } });
      throw new TachyonError('AUTH_FAILED', `token session ${info.keyFingerprint} refused: ${s.refused}`);
    }
    if (encrypted(s.account)) refuseEncrypted(s.account, 'Transfer tokens');
    return s;
  };
  /** a token session on a local root: its jail and a path grant */
  const tokenJail = (s: TokenSession, info: SessionInfo): { account: Account; jail: Jail; restriction: SessionRestriction; accessKeyId: string } => {
    if (s.account.storage !== undefined) throw new TachyonError('USAGE', `token session ${info.keyFingerprint}: no local root (storage ${s.account.storage.replace(/^(s3:\/\/[^/]+).*$/, '$1/…')})`);
    const jail = jailFor(s.account.root);
    const restriction = pathGrant({ jail, direction: s.claims.direction, paths: s.claims.paths, expiresAt: s.claims.expiresAt, clock, label: info.keyFingerprint });
    return { account: s.account, jail, restriction, accessKeyId: s.claims.accessKeyId };
  };
  /** the account and jail of an authenticated session, or a refusal (audited) */
  const sessionAccount = async (info: SessionInfo): Promise<{ account: Account; jail: Jail; restriction?: SessionRestriction; accessKeyId?: string }> => {
    if (tokens !== undefined && info.user === tokens.user) return tokenJail(await tokenSession(tokens, info), info);
    let account: Account | undefined;
    try {
      account = await o.accounts.account(info.user, info.keyFingerprint);
    } catch (err) {
      const te = toTachyonError(err, 'INTERNAL');
      o.onEvent?.({ type: 'session.error', user: info.user, code: te.code, message: te.message });
      throw te;
    }
    if (!account) {
      record({ type: 'auth.failure', component: 'ssh', correlationId: info.connectionId, fields: { clientAddress: info.clientAddress, clientPort: info.clientPort, user: info.user, method: 'publickey', reason: 'account-changed', keyFingerprint: info.keyFingerprint } });
      throw new TachyonError('AUTH_FAILED', `account ${info.user} is no longer allowed this key`);
    }
    if (account.storage !== undefined) throw new TachyonError('USAGE', `account ${info.user}: no local root (storage ${account.storage.replace(/^(s3:\/\/[^/]+).*$/, '$1/…')})`);
    if (encrypted(account)) refuseEncrypted(account, 'SFTP');
    return { account, jail: jailFor(account.root) };
  };
  /** as sessionAccount, but an account with an s3:// docroot gets its store instead of a jail */
  const transferAccount = async (
    info: SessionInfo,
  ): Promise<{ account: Account; jail?: Jail; store?: ReceiverStore; restriction?: SessionRestriction; accessKeyId?: string }> => {
    // token sessions: a file:// root gets a jail and a path grant; an s3:// root its store
    // and a storage grant (the same rules, on storage paths)
    if (tokens !== undefined && isTokenSession(info)) {
      const s = await tokenSession(tokens, info);
      if (s.account.storage === undefined) return tokenJail(s, info);
      const restriction = storageGrant({ direction: s.claims.direction, paths: s.claims.paths, expiresAt: s.claims.expiresAt, clock, label: info.keyFingerprint });
      return { account: s.account, store: await storeFor(s.account, s.account.storage), restriction, accessKeyId: s.claims.accessKeyId };
    }
    let account: Account | undefined;
    try {
      account = await o.accounts.account(info.user, info.keyFingerprint);
    } catch (err) {
      const te = toTachyonError(err, 'INTERNAL');
      o.onEvent?.({ type: 'session.error', user: info.user, code: te.code, message: te.message });
      throw te;
    }
    if (!account) return sessionAccount(info); // records the refusal
    if (account.storage !== undefined || encrypted(account)) return { account, store: await storeFor(account, account.storage) };
    return { account, jail: jailFor(account.root) };
  };

  let control: ControlServer | undefined;
  // the UDP side binds after TCP (port 0 picks the TCP port; UDP takes the same number)
  const data: { endpoint?: Endpoint; udpPort: number } = { udpPort: 0 };
  /** why the account source refused a key, until the SSH layer reports the refusal */
  const refusals = new Map<string, string>();
  const subsystems: Record<string, SubsystemHandler> = {};
  for (const [name, make] of Object.entries(o.subsystems ?? {})) {
    subsystems[name] = (channel, info, ctl) => {
      if (isTokenSession(info)) {
        // a token grants transfers of its paths only: no SFTP (or other subsystem) session
        record({ type: 'refusal.channel', component: 'ssh', correlationId: info.connectionId, fields: { clientAddress: info.clientAddress, clientPort: info.clientPort, user: info.user, what: 'subsystem', detail: name } });
        channel.destroy();
        return;
      }
      sessionAccount(info).then(
        ({ account, jail }) => make(account, jail, info)(channel, info, ctl),
        () => channel.destroy(),
      );
    };
  }
  const controlOptions: Parameters<typeof startControlServer>[0] = {
    listen: o.listen,
    port: o.port,
    hostKey: hostKey.privateKey,
    ...(tokens
      ? {
          credentialLogin: {
            users: (user: string) => user === tokens.user,
            check: (_user: string, token: string) => tokens.check(token),
          },
        }
      : {}),
    authorize: async (user, _algo, blob) => {
      const r = await o.accounts.check(user, blob);
      if (!r.ok) {
        // the SSH layer reports the refusal; the account source knows why (for the audit)
        if (refusals.size > 1000) refusals.clear();
        refusals.set(`${user}|${fingerprintOf(blob)}`, r.reason);
      }
      return r.ok;
    },
    ...(o.ssh?.banner ? { banner: o.ssh.banner } : {}),
    ...(o.ssh?.maxAuthTries !== undefined ? { maxAuthTries: o.ssh.maxAuthTries } : {}),
    ...(o.ssh?.loginGraceMs !== undefined ? { loginGraceMs: o.ssh.loginGraceMs } : {}),
    ...(o.ssh?.idleTimeoutMs !== undefined ? { idleTimeoutMs: o.ssh.idleTimeoutMs } : {}),
    extraSubsystems: subsystems,
    ...(o.defender
      ? {
          admit: (address: string) => barred(o.defender!, address),
        }
      : {}),
    onSession: (link, info, ctl) => {
      const peer = { clientAddress: info.clientAddress, clientPort: info.clientPort };
      const correlationId = info.connectionId;
      let cipher: CipherName | undefined;
      const started = clock.now();
      void (async () => {
        let account: Account;
        let jail: Jail | undefined;
        let store: ReceiverStore | undefined;
        let restriction: SessionRestriction | undefined;
        let accessKeyId: string | undefined;
        try {
          ({ account, jail, store, restriction, accessKeyId } = await transferAccount(info));
        } catch {
          link.close();
          return;
        }
        const allowed = o.allowedCiphers.filter((c) => account.ciphers.includes(c));
        const maxRateBps = Math.min(o.maxRateBps, account.maxRateBps ?? Infinity);
        const abort = new AbortController();
        let monitored: MonitoredSession | undefined;
        try {
          const summary = await serveSession(link, {
            endpoint: data.endpoint!,
            udpPort: data.udpPort,
            ...(jail ? { jail } : {}),
            ...(store ? { store } : {}),
            clock,
            allowedCiphers: allowed,
            maxRateBps,
            permissions: account.permissions,
            policies: account.policies,
            ...(restriction ? { restriction } : {}),
            ...(account.requireEncryptedAtRest ? { requireEncryptedAtRest: true } : {}),
            keepAlive: () => ctl.keepAlive(),
            signal: abort.signal,
            onFileStart: (f) => monitored?.fileStarted(f),
            onProgress: (p) => monitored?.progress(p),
            onRefuse: (te) => {
              const details = (te.details ?? {}) as Record<string, unknown>;
              if (te.code === 'PERMISSION' && details['permission'] === 'token') {
                return record({ type: 'refusal.permission', component: 'transfer', correlationId, fields: { ...peer, user: account.name, permission: 'token', op: String(details['reason'] ?? 'token'), path: String(details['path'] ?? ''), ...(restriction ? { grant: restriction.label } : {}) } });
              }
              if (te.code === 'CIPHER_REFUSED') {
                return record({ type: 'refusal.cipher', component: 'transfer', correlationId, fields: { ...peer, user: account.name, cipher: String(details['cipher'] ?? te.message.replace(/^cipher (\S+).*$/, '$1')), allowed } });
              }
              if (te.code === 'PERMISSION') {
                return record({ type: 'refusal.permission', component: 'transfer', correlationId, fields: { ...peer, user: account.name, permission: String(details['permission'] ?? 'unknown'), op: 'session' } });
              }
              if (te.code === 'PATH_INVALID') {
                return record({ type: 'refusal.jail', component: 'transfer', correlationId, fields: { ...peer, user: account.name, path: String(details['path'] ?? ''), reason: String(details['reason'] ?? te.message) } });
              }
              return record({ type: 'session.end', component: 'transfer', correlationId, severity: 'warning', fields: { ...peer, user: account.name, code: te.code, reason: te.message } });
            },
            onFile: (f: FileOutcome, direction) => {
              monitored?.fileSettled(f);
              const seconds = (f.elapsedMs > 0 ? f.elapsedMs : clock.now() - started) / 1000;
              record({
                type: 'file.transfer',
                component: 'transfer',
                correlationId,
                fields: {
                  ...peer,
                  user: account.name,
                  serverAddress: info.localAddress,
                  direction,
                  source: direction === 'upload' ? `client:${f.path}` : f.path,
                  destination: direction === 'upload' ? f.path : `client:${f.path}`,
                  bytes: f.sentBytes,
                  ...(f.skippedBytes > 0 ? { skippedBytes: f.skippedBytes } : {}),
                  durationMs: Math.round(seconds * 1000),
                  rateBps: f.sentBytes > 0 && seconds > 0 ? Math.round((f.sentBytes * 8) / seconds) : 0,
                  cipher: cipher ?? 'unknown',
                  status: f.status === 'skipped' ? 'skipped' : f.ok ? 'ok' : 'failed',
                  ...(f.reason ? { reason: f.reason } : {}),
                  ...(f.code ? { code: f.code } : {}),
                  ...(f.sha256 ? { sha256: f.sha256 } : {}),
                },
              });
              if (f.code === 'PATH_INVALID') record({ type: 'refusal.jail', component: 'transfer', correlationId, fields: { ...peer, user: account.name, path: f.path, reason: f.message ?? 'invalid path', op: direction } });
              if (f.code === 'ENCRYPTION_REQUIRED') record({ type: 'refusal.permission', component: 'transfer', correlationId, fields: { ...peer, user: account.name, permission: 'plaintext-upload', path: f.path, op: direction } });
              if (f.code === 'PERMISSION') record({ type: 'refusal.permission', component: 'transfer', correlationId, fields: { ...peer, user: account.name, permission: restriction ? 'token' : 'mkdir', path: f.path, op: direction, ...(restriction ? { grant: restriction.label, reason: f.message ?? '' } : {}) } });
            },
            onEvent: (e) => {
              if (e.type === 'session.start') {
                cipher = e.cipher as CipherName;
                monitored = o.monitor?.begin({
                  correlationId,
                  user: account.name,
                  ...(accessKeyId !== undefined ? { accessKeyId } : {}),
                  clientAddress: info.clientAddress,
                  direction: e.op === 'send' ? 'upload' : 'download',
                  cipher,
                  cancel: () => abort.abort(),
                });
              }
              o.onEvent?.({ ...e, user: account.name, client: info.clientAddress });
            },
          });
          monitored?.ended({ ok: summary?.ok ?? false, ...(summary ? { bytes: summary.bytes } : {}) });
          o.onEvent?.({
            type: 'transfer.end',
            user: account.name,
            client: info.clientAddress,
            ok: summary?.ok ?? false,
            bytes: summary?.bytes ?? 0,
            files: summary?.files.length ?? 0,
            seconds: (summary?.elapsedMs ?? 0) / 1000,
          });
        } catch (err) {
          const te = toTachyonError(err, 'INTERNAL');
          monitored?.ended({ ok: false, error: te });
          if (te.code === 'CANCELLED') record({ type: 'session.end', component: 'transfer', correlationId, severity: 'warning', fields: { ...peer, user: account.name, code: te.code, reason: 'cancelled by an operator' } });
          o.onEvent?.({ type: 'transfer.error', user: account.name, client: info.clientAddress, code: te.code, message: te.message });
        }
      })();
    },
    onEvent: (e) => {
      let why: string | undefined;
      if (e.type === 'auth' && e.outcome === 'refused' && e.keyFingerprint) {
        const k = `${e.user}|${e.keyFingerprint}`;
        why = refusals.get(k);
        refusals.delete(k);
      }
      if (o.defender) {
        if (e.type === 'auth' && e.outcome === 'refused') {
          o.defender.report(e.clientAddress, why === 'unknown-user' || e.reason === 'invalid-user' || e.reason === 'root-refused' ? 'auth-failed-unknown-user' : 'auth-failed');
        } else if (e.type === 'refused' && e.what === 'connection' && e.detail === 'per-source') {
          // too many unauthenticated connections from this address (max-startups is global: not scored)
          o.defender.report(e.clientAddress, 'refused-limit');
        } else if (e.type === 'client-error' && (e.level === undefined || e.level === 'protocol')) {
          // malformed SSH (bad packet, bad length …); socket errors, timeouts and algorithm mismatches ('handshake') are not scored
          o.defender.report(e.clientAddress, 'protocol-violation');
        }
      }
      const a = auditOfControlEvent(e, why);
      if (a) record(a);
      o.onEvent?.(e as unknown as { type: string; [k: string]: unknown });
    },
  };
  control = await startControlServer(controlOptions);
  let socket;
  for (let attempt = 1; ; attempt++) {
    try {
      socket = await (o.openUdp ?? ((address, port) => openUdpSocket({ address, port })))(o.listen, control.port);
      break;
    } catch (err) {
      await control.close();
      // port 0: the kernel chose a free TCP port, but another process may hold the same
      // UDP port; choose again rather than fail
      const inUse = (err as { cause?: { code?: string } }).cause?.code === 'EADDRINUSE';
      if (o.port !== 0 || !inUse || attempt >= 5) throw err;
      control = await startControlServer(controlOptions);
    }
  }
  // early data: datagrams for a session not set up yet are held only from an address with an SSH connection here
  const endpoint = new Endpoint(socket, { clock, holdFrom: (address) => control?.hasConnectionFrom(address) === true });
  data.endpoint = endpoint;
  const udpPort = socket.local().port;
  data.udpPort = udpPort;
  record({ type: 'server.start', component: 'server', fields: { listen: o.listen, port: control.port, hostKeyFingerprints: [hostKey.fingerprint] } });
  return {
    address: control.address,
    port: control.port,
    udpPort,
    hostKeyFingerprint: hostKey.fingerprint,
    endpoint,
    async close() {
      record({ type: 'server.stop', component: 'server', fields: { reason: 'shutdown' } });
      await control?.close();
      control = undefined;
      await socket.close();
      await s3.close();
    },
  };
}
