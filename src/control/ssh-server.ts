/**
 * The control-channel SSH server: public-key authentication only, a single subsystem
 * (`tachyon-v1`), and nothing else — no shell, exec, pty, agent/X11 or TCP forwarding.
 */
import { createRequire } from 'node:module';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import type {
  Algorithms,
  AuthContext,
  CipherAlgorithm,
  ClientInfo,
  Connection,
  KexAlgorithm,
  MacAlgorithm,
  ParsedKey,
  PublicKeyAuthContext,
  ServerHostKeyAlgorithm,
  ServerChannel,
  Session,
} from 'ssh2';
import { TachyonError, toTachyonError } from '../core/errors.js';
import { linkFromStream } from './framing.js';
import type { StreamControlLink } from './framing.js';
import { fingerprintOf } from './hostkeys.js';
import { SUBSYSTEM } from './messages.js';
import type { ControlLink } from './messages.js';

const { utils } = ssh2;

// ---------------------------------------------------------------------------------------
// Algorithms (shared with the client)

const KEX: readonly KexAlgorithm[] = ['curve25519-sha256', 'curve25519-sha256@libssh.org'];
/**
 * NIST-curve ECDH: not broken, but tools like ssh-audit flag it as weak. Off by default on
 * the server (opt in with `allowNistKex` for FIPS-mode clients without curve25519); always
 * offered, after curve25519, by the client.
 */
const NIST_KEX: readonly KexAlgorithm[] = ['ecdh-sha2-nistp256', 'ecdh-sha2-nistp384', 'ecdh-sha2-nistp521'];
const HOST_KEY_ALGOS: readonly ServerHostKeyAlgorithm[] = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
];
const CIPHERS: readonly CipherAlgorithm[] = [
  'aes128-gcm@openssh.com',
  'aes256-gcm@openssh.com',
  'chacha20-poly1305@openssh.com',
];
/** Only used if an AEAD cipher were not negotiated (never, with the cipher list above). */
const MACS: readonly MacAlgorithm[] = ['hmac-sha2-256-etm@openssh.com', 'hmac-sha2-512-etm@openssh.com'];

interface Ssh2Constants {
  SUPPORTED_KEX?: string[];
  SUPPORTED_CIPHER?: string[];
  SUPPORTED_MAC?: string[];
  SUPPORTED_SERVER_HOST_KEY?: string[];
}

/** What this ssh2 build supports (chacha20 needs ssh2's optional native binding). */
let supportedCache: Ssh2Constants | undefined;
function ssh2Supported(): Ssh2Constants {
  if (supportedCache === undefined) {
    try {
      supportedCache = createRequire(import.meta.url)('ssh2/lib/protocol/constants.js') as Ssh2Constants;
    } catch {
      supportedCache = {};
    }
  }
  return supportedCache;
}

function keepSupported<T extends string>(wanted: readonly T[], supported: string[] | undefined): T[] {
  if (supported === undefined) return [...wanted];
  const kept = wanted.filter((a) => supported.includes(a));
  return kept.length > 0 ? kept : [...wanted];
}

/**
 * The SSH algorithms the control channel allows: curve25519 key exchange (plus NIST ECDH
 * when `nistKex` is set), ed25519/ECDSA/RSA-SHA2 host keys, AES-GCM and (if this ssh2 build
 * has it) chacha20-poly1305 ciphers, SHA-2 ETM MACs; no CBC, no SHA-1, no compression.
 */
export function controlAlgorithms(options: { nistKex?: boolean } = {}): Algorithms {
  const s = ssh2Supported();
  return {
    kex: keepSupported(options.nistKex === true ? [...KEX, ...NIST_KEX] : KEX, s.SUPPORTED_KEX),
    serverHostKey: keepSupported(HOST_KEY_ALGOS, s.SUPPORTED_SERVER_HOST_KEY),
    cipher: keepSupported(CIPHERS, s.SUPPORTED_CIPHER),
    hmac: keepSupported(MACS, s.SUPPORTED_MAC),
    compress: ['none'],
  };
}

/** The SSH software version string the control server and client announce. */
export const SSH_IDENT = 'Tachyon_1';

// ---------------------------------------------------------------------------------------
// Public types

/** Who is on the other end of a control session. */
export interface SessionInfo {
  /** The authenticated SSH user name. */
  user: string;
  clientAddress: string;
  clientPort: number;
  /** `SHA256:…` fingerprint of the public key the client authenticated with. */
  keyFingerprint: string;
  /** The local address the client connected to (useful to pick the UDP address to offer). */
  localAddress: string;
}

/**
 * An audit-style event. Types:
 * - `connect` {clientAddress, clientPort, localAddress}
 * - `auth` {user, method, outcome: 'accepted' | 'key-ok' | 'refused', reason?, keyType?, keyFingerprint?, clientAddress, clientPort, failures?}
 * - `refused` {what: 'session' | 'shell' | 'exec' | 'pty' | 'env' | 'x11' | 'auth-agent' | 'signal' | 'subsystem' | 'direct-tcpip' | 'streamlocal' | 'global-request', detail?, user?, clientAddress, clientPort}
 * - `session-start` / `session-end` {user, keyFingerprint, clientAddress, clientPort, code? (error code on abnormal end)}
 * - `disconnect` {reason, user?, clientAddress, clientPort}
 * - `client-error` {message, level?, clientAddress, clientPort}
 *
 * Events never contain secrets (no passwords, exec commands or environment values).
 */
export interface ControlServerEvent {
  type: string;
  [k: string]: unknown;
}

/** A handler for an additional SSH subsystem (hook for e.g. `sftp`; none are registered by default). */
export type SubsystemHandler = (channel: Duplex, info: SessionInfo) => void;

/** Options for {@link startControlServer}. */
export interface ControlServerOptions {
  /** Address to listen on, e.g. '127.0.0.1' or '0.0.0.0'. */
  listen: string;
  /** TCP port; 0 = ephemeral. */
  port: number;
  /** OpenSSH (or PEM) private host key, unencrypted. */
  hostKey: Buffer;
  /**
   * Decides whether `user` may log in with this public key (`keyAlgo` e.g. `ssh-ed25519`,
   * `keyBlob` in SSH wire format). Return false to refuse. It is asked before the client
   * proves possession of the key, and the signature is verified afterwards. `root` is
   * refused before this is asked. Throwing (or rejecting) counts as a refusal.
   */
  authorize(user: string, keyAlgo: string, keyBlob: Buffer): boolean | Promise<boolean>;
  /** Text shown to clients before authentication. */
  banner?: string;
  /** Failed authentication attempts allowed per connection before disconnecting. Default 6. */
  maxAuthTries?: number;
  /** Time allowed from TCP accept to successful authentication. Default 30000 ms. */
  loginGraceMs?: number;
  /**
   * Disconnect after this long without control-channel traffic. Default 0 = never (a
   * transfer may be quiet on TCP while the UDP data plane runs). SSH keepalives do not count.
   */
  idleTimeoutMs?: number;
  /** Called for each opened `tachyon-v1` subsystem channel. Throwing aborts that session. */
  onSession(link: ControlLink, info: SessionInfo): void;
  /** Audit events; see {@link ControlServerEvent}. Exceptions thrown here are ignored. */
  onEvent?(e: ControlServerEvent): void;
  /** Session channels a connection may have open at once. Default 10 (as OpenSSH's MaxSessions). */
  maxSessions?: number;
  /**
   * Also offer NIST-curve ECDH key exchange (ecdh-sha2-nistp256/384/521), for FIPS-mode
   * clients that lack curve25519. Default false: ssh-audit rates these curves as weak.
   */
  allowNistKex?: boolean;
  /** Additional subsystems by name (hook; `tachyon-v1` cannot be overridden). */
  extraSubsystems?: Readonly<Record<string, SubsystemHandler>>;
}

/** A running control server. */
export interface ControlServer {
  /** The bound address. */
  address: string;
  /** The bound port (the real one when 0 was asked). */
  port: number;
  /** Stops listening, ends all connections (their links end with `CANCELLED`) and resolves when done. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------
// Implementation

const MAX_USER_LENGTH = 256;

interface ConnRecord {
  socket: net.Socket;
  clientAddress: string;
  clientPort: number;
  localAddress: string;
  conn: Connection | undefined;
  user: string | undefined;
  keyFingerprint: string | undefined;
  failures: number;
  /** Open session channels. */
  sessions: number;
  graceTimer: NodeJS.Timeout | undefined;
  idleTimer: NodeJS.Timeout | undefined;
  links: Set<StreamControlLink>;
  hungUp: boolean;
}

function hasControlChars(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

function clip(text: string, max = 64): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

function parseHostKey(hostKey: Buffer): ParsedKey {
  const parsed = utils.parseKey(hostKey);
  if (parsed instanceof Error) {
    throw new TachyonError('CONFIG', `Cannot use the host key: ${parsed.message}`, { cause: parsed });
  }
  const key = Array.isArray(parsed) ? (parsed as ParsedKey[])[0] : parsed;
  if (key === undefined || !key.isPrivateKey()) {
    throw new TachyonError('CONFIG', 'The host key is not a private key');
  }
  return key;
}

function checkOptions(opts: ControlServerOptions): void {
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new TachyonError('CONFIG', `Invalid control port ${String(opts.port)}`);
  }
  const positiveInt = (v: number | undefined, name: string, min: number): void => {
    if (v !== undefined && (!Number.isFinite(v) || v < min)) {
      throw new TachyonError('CONFIG', `${name} must be a number >= ${min}, got ${String(v)}`);
    }
  };
  positiveInt(opts.maxAuthTries, 'maxAuthTries', 1);
  positiveInt(opts.loginGraceMs, 'loginGraceMs', 1);
  positiveInt(opts.idleTimeoutMs, 'idleTimeoutMs', 0);
  positiveInt(opts.maxSessions, 'maxSessions', 1);
}

/**
 * Starts the SSH control server and resolves once it listens.
 * @throws TachyonError `CONFIG` for a bad host key or option, or if the address cannot be
 *   bound; `PERMISSION` if binding is not permitted.
 */
export async function startControlServer(opts: ControlServerOptions): Promise<ControlServer> {
  checkOptions(opts);
  const hostKey = parseHostKey(opts.hostKey);
  const maxAuthTries = opts.maxAuthTries ?? 6;
  const loginGraceMs = opts.loginGraceMs ?? 30_000;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 0;
  const maxSessions = opts.maxSessions ?? 10;
  const extraSubsystems = opts.extraSubsystems ?? {};

  const emit = (e: ControlServerEvent): void => {
    try {
      opts.onEvent?.(e);
    } catch {
      /* an audit sink must not break the server */
    }
  };

  const sshServer = new ssh2.Server({
    hostKeys: [opts.hostKey],
    algorithms: {
      ...controlAlgorithms({ nistKex: opts.allowNistKex === true }),
      // Offer only algorithms usable with the key we have.
      serverHostKey: hostKeyAlgorithmsFor(hostKey.type),
    },
    ident: SSH_IDENT,
    ...(opts.banner !== undefined ? { banner: opts.banner } : {}),
  });
  sshServer.on('error', () => {
    /* the internal net server is never used */
  });

  const records = new Map<string, ConnRecord>();
  const recordKey = (address: string | undefined, port: number | undefined): string => `${address ?? ''}|${port ?? 0}`;
  let closing = false;

  const where = (rec: ConnRecord): { clientAddress: string; clientPort: number } => ({
    clientAddress: rec.clientAddress,
    clientPort: rec.clientPort,
  });

  /** Ends an SSH connection: disconnect message, then destroy if the client lingers. */
  const hangUp = (rec: ConnRecord, reason: string, linkError: TachyonError | undefined, graceMs = 1000): void => {
    if (rec.hungUp) return;
    rec.hungUp = true;
    emit({ type: 'disconnect', reason, user: rec.user, ...where(rec) });
    if (linkError) for (const link of rec.links) link.abort(linkError);
    clearTimers(rec);
    try {
      rec.conn?.end();
    } catch {
      /* socket already gone */
    }
    if (rec.conn === undefined) rec.socket.end();
    setTimeout(() => rec.socket.destroy(), graceMs).unref();
  };

  const clearTimers = (rec: ConnRecord): void => {
    if (rec.graceTimer) clearTimeout(rec.graceTimer);
    if (rec.idleTimer) clearTimeout(rec.idleTimer);
    rec.graceTimer = undefined;
    rec.idleTimer = undefined;
  };

  const touch = (rec: ConnRecord): void => {
    rec.idleTimer?.refresh();
  };

  const tcp = net.createServer((socket) => {
    socket.on('error', () => {
      /* reported through the ssh2 connection */
    });
    if (closing) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const rec: ConnRecord = {
      socket,
      clientAddress: socket.remoteAddress ?? '',
      clientPort: socket.remotePort ?? 0,
      localAddress: socket.localAddress ?? '',
      conn: undefined,
      user: undefined,
      keyFingerprint: undefined,
      failures: 0,
      sessions: 0,
      graceTimer: undefined,
      idleTimer: undefined,
      links: new Set(),
      hungUp: false,
    };
    const key = recordKey(socket.remoteAddress, socket.remotePort);
    records.set(key, rec);
    emit({ type: 'connect', ...where(rec), localAddress: rec.localAddress });
    rec.graceTimer = setTimeout(() => {
      hangUp(rec, 'login-grace-timeout', undefined);
    }, loginGraceMs);
    rec.graceTimer.unref();
    socket.once('close', () => {
      clearTimers(rec);
      records.delete(key);
      const vanished = new TachyonError('PEER_VANISHED', 'The SSH connection closed');
      for (const link of rec.links) link.abort(vanished);
      if (!rec.hungUp) emit({ type: 'disconnect', reason: 'closed', user: rec.user, ...where(rec) });
    });
    sshServer.injectSocket(socket);
  });

  sshServer.on('connection', (conn: Connection, info: ClientInfo) => {
    const rec = records.get(recordKey(info.ip, info.port));
    if (rec === undefined || rec.hungUp) {
      conn.on('error', () => {});
      conn.end();
      return;
    }
    rec.conn = conn;
    conn.on('error', (err: Error & { level?: string }) => {
      emit({ type: 'client-error', message: clip(err.message, 200), level: err.level, ...where(rec) });
    });
    conn.on('authentication', (ctx: AuthContext) => {
      handleAuth(rec, ctx).catch((err: unknown) => {
        emit({ type: 'client-error', message: clip(String(err), 200), ...where(rec) });
        hangUp(rec, 'internal-error', undefined);
      });
    });
    conn.on('ready', () => {
      if (rec.graceTimer) clearTimeout(rec.graceTimer);
      rec.graceTimer = undefined;
      if (idleTimeoutMs > 0) {
        rec.idleTimer = setTimeout(() => {
          const msg = `Idle timeout: no control traffic for ${idleTimeoutMs} ms`;
          hangUp(rec, 'idle-timeout', new TachyonError('PEER_VANISHED', msg, { publicMessage: msg }));
        }, idleTimeoutMs);
        rec.idleTimer.unref();
      }
    });
    conn.on('session', (accept, reject) => {
      if (rec.user === undefined || rec.hungUp) {
        reject();
        return;
      }
      if (rec.sessions >= maxSessions) {
        reject();
        emit({ type: 'refused', what: 'session', detail: `more than ${maxSessions} sessions`, user: rec.user, ...where(rec) });
        return;
      }
      rec.sessions++;
      const session = accept();
      session.once('close', () => rec.sessions--);
      wireSession(rec, session);
    });
    conn.on('tcpip', (_accept, reject, tinfo) => {
      reject();
      emit({
        type: 'refused',
        what: 'direct-tcpip',
        detail: `${clip(String(tinfo.destIP))}:${tinfo.destPort}`,
        user: rec.user,
        ...where(rec),
      });
    });
    conn.on('openssh.streamlocal', (_accept, reject) => {
      reject();
      emit({ type: 'refused', what: 'streamlocal', user: rec.user, ...where(rec) });
    });
    conn.on('request', (_accept: unknown, reject: (() => void) | undefined, name: string) => {
      reject?.();
      emit({ type: 'refused', what: 'global-request', detail: clip(String(name)), user: rec.user, ...where(rec) });
    });
  });

  const refuseAuth = (rec: ConnRecord, ctx: AuthContext, event: Record<string, unknown>, reason: string): void => {
    rec.failures++;
    emit({ type: 'auth', outcome: 'refused', reason, failures: rec.failures, ...event });
    ctx.reject(['publickey']);
    if (rec.failures >= maxAuthTries) hangUp(rec, 'max-auth-tries', undefined);
  };

  const handleAuth = async (rec: ConnRecord, ctx: AuthContext): Promise<void> => {
    if (rec.hungUp) return;
    const user = ctx.username;
    const event: Record<string, unknown> = { user: clip(user), method: ctx.method, ...where(rec) };
    if (ctx.method === 'none') {
      // Clients ask which methods exist this way; it is not an attempt.
      ctx.reject(['publickey']);
      return;
    }
    if (ctx.method !== 'publickey') {
      refuseAuth(rec, ctx, event, 'method-not-allowed');
      return;
    }
    const pk: PublicKeyAuthContext = ctx;
    const blob = pk.key.data;
    event['keyType'] = clip(pk.key.algo);
    event['keyFingerprint'] = fingerprintOf(blob);
    if (user === 'root') return refuseAuth(rec, ctx, event, 'root-refused');
    if (user.length === 0 || user.length > MAX_USER_LENGTH || hasControlChars(user)) {
      return refuseAuth(rec, ctx, event, 'invalid-user');
    }
    const parsed = utils.parseKey(blob);
    const key = parsed instanceof Error ? undefined : Array.isArray(parsed) ? (parsed as ParsedKey[])[0] : parsed;
    if (key === undefined || key.type !== pk.key.algo) return refuseAuth(rec, ctx, event, 'unusable-key');
    if (key.type === 'ssh-rsa' && pk.hashAlgo === undefined) {
      return refuseAuth(rec, ctx, event, 'rsa-sha1-signature');
    }
    let allowed = false;
    try {
      allowed = (await opts.authorize(user, pk.key.algo, blob)) === true;
    } catch {
      return refuseAuth(rec, ctx, event, 'authorize-error');
    }
    if (rec.hungUp) return;
    if (!allowed) return refuseAuth(rec, ctx, event, 'not-authorized');
    if (pk.signature === undefined || pk.blob === undefined) {
      // The client only asks whether this key would be acceptable.
      emit({ type: 'auth', outcome: 'key-ok', ...event });
      ctx.accept();
      return;
    }
    let verified = false;
    try {
      verified = key.verify(pk.blob, pk.signature, pk.hashAlgo) === true;
    } catch {
      verified = false;
    }
    if (!verified) return refuseAuth(rec, ctx, event, 'bad-signature');
    rec.user = user;
    rec.keyFingerprint = fingerprintOf(blob);
    emit({ type: 'auth', outcome: 'accepted', ...event });
    ctx.accept();
  };

  const wireSession = (rec: ConnRecord, session: Session): void => {
    const refuse =
      (what: string, detail?: (info: unknown) => string) =>
      (_accept: unknown, reject: (() => void) | undefined, info?: unknown): void => {
        reject?.();
        emit({
          type: 'refused',
          what,
          ...(detail ? { detail: detail(info) } : {}),
          user: rec.user,
          ...where(rec),
        });
      };
    session.on('pty', refuse('pty'));
    session.on('x11', refuse('x11'));
    // The variable name only: values may be secrets.
    session.on('env', refuse('env', (i) => clip(String((i as { key?: unknown } | undefined)?.key ?? ''))));
    session.on('auth-agent', refuse('auth-agent'));
    session.on('signal', refuse('signal'));
    session.on('window-change', refuse('window-change'));
    session.on('shell', refuse('shell'));
    // Not the command: it may contain secrets.
    session.on('exec', refuse('exec'));
    session.on('error', () => {});
    session.on('subsystem', (accept, reject: (() => void) | undefined, info: { name: string }) => {
      const name = String(info.name);
      const sessionInfo: SessionInfo = {
        user: rec.user ?? '',
        clientAddress: rec.clientAddress,
        clientPort: rec.clientPort,
        keyFingerprint: rec.keyFingerprint ?? '',
        localAddress: rec.localAddress,
      };
      if (name === SUBSYSTEM) {
        startLink(rec, accept(), sessionInfo);
        return;
      }
      const hook = Object.prototype.hasOwnProperty.call(extraSubsystems, name) ? extraSubsystems[name] : undefined;
      if (hook !== undefined) {
        const channel = accept();
        channel.on('error', () => {});
        emit({ type: 'subsystem-start', name: clip(name), ...sessionInfo });
        try {
          hook(channel, sessionInfo);
        } catch {
          channel.destroy();
        }
        return;
      }
      reject?.();
      emit({ type: 'refused', what: 'subsystem', detail: clip(name), user: rec.user, ...where(rec) });
    });
  };

  const startLink = (rec: ConnRecord, channel: Duplex, info: SessionInfo): void => {
    channel.on('error', () => {});
    const link = linkFromStream(channel, { onActivity: () => touch(rec) });
    rec.links.add(link);
    touch(rec);
    const base = {
      user: info.user,
      keyFingerprint: info.keyFingerprint,
      clientAddress: info.clientAddress,
      clientPort: info.clientPort,
    };
    emit({ type: 'session-start', ...base });
    link.onClose((err?: Error) => {
      rec.links.delete(link);
      // Runs before the link ends the channel. OpenSSH's client reports 255 when a session
      // closes without an exit status; send 0, or the error's exit code.
      try {
        (channel as ServerChannel).exit(err === undefined ? 0 : toTachyonError(err).exitCode);
      } catch {
        /* channel already gone */
      }
      emit({ type: 'session-end', ...base, ...(err ? { code: toTachyonError(err).code } : {}) });
    });
    try {
      opts.onSession(link, info);
    } catch (err) {
      link.abort(toTachyonError(err, 'INTERNAL'));
    }
  };

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const code = err.code === 'EACCES' || err.code === 'EPERM' ? 'PERMISSION' : 'CONFIG';
      reject(new TachyonError(code, `Cannot listen on ${opts.listen}:${opts.port}: ${err.message}`, { cause: err }));
    };
    tcp.once('error', onError);
    tcp.listen({ host: opts.listen, port: opts.port }, () => {
      tcp.off('error', onError);
      resolve();
    });
  });
  tcp.on('error', (err: Error) => {
    emit({ type: 'server-error', message: clip(err.message, 200) });
  });

  const bound = tcp.address() as AddressInfo;
  let closed: Promise<void> | undefined;
  return {
    address: bound.address,
    port: bound.port,
    close(): Promise<void> {
      if (closed) return closed;
      closing = true;
      closed = new Promise<void>((resolve) => {
        tcp.close(() => resolve());
        const msg = 'The control server is shutting down';
        const shutdown = new TachyonError('CANCELLED', msg, { publicMessage: msg });
        for (const rec of records.values()) hangUp(rec, 'server-close', shutdown, 250);
      });
      return closed;
    },
  };
}

/** Host key signature algorithms to offer for a host key of type `type`. */
function hostKeyAlgorithmsFor(type: string): ServerHostKeyAlgorithm[] {
  const all = controlAlgorithms().serverHostKey as ServerHostKeyAlgorithm[];
  if (type === 'ssh-rsa') return all.filter((a) => a === 'rsa-sha2-512' || a === 'rsa-sha2-256');
  return all.filter((a) => a === type);
}
