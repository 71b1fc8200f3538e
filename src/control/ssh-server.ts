/**
 * The control-channel SSH server: public-key authentication only (except the users of
 * `credentialLogin`, e.g. the transfer-token user, who use `password` and nothing else), the `tachyon-v1`
 * subsystem (plus the subsystems a caller plugs in, e.g. `sftp`), and nothing else — no
 * shell, exec, pty, agent/X11 or TCP forwarding; only strong algorithms; limits on
 * authentication attempts, login grace time, idle time and unauthenticated connections.
 * See docs/ssh-hardening.md.
 */
import { createPublicKey } from 'node:crypto';
import { createRequire } from 'node:module';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
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
import { newCorrelationId } from '../core/correlation.js';
import { TachyonError, toTachyonError } from '../core/errors.js';
import { linkFromStream } from './framing.js';
import type { StreamControlLink } from './framing.js';
import { fingerprintOf, MIN_RSA_BITS } from './hostkeys.js';
import { guardFlight, holdConnectionMessagesDuringAuth, honourKexGuess } from './ssh-pipeline.js';
import { coalesceFlights } from './flights.js';
import type { Flights } from './flights.js';
import { SUBSYSTEM } from './messages.js';
import type { ControlLink } from './messages.js';
import { systemClock } from '../core/clock.js';

/** TACHYON_TRACE=1: when connections, key exchanges and authentication requests arrive and complete (epoch ms, comparable with the client's trace) */
const TRACE = process.env.TACHYON_TRACE === '1';

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
export const SSH_IDENT = 'Tachyon_3';

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
  /** Id of the SSH connection (a ULID), shared by all its events: use it as the audit correlation id. */
  connectionId: string;
}

/** What a session handler may do to its connection. */
export interface SessionControl {
  /**
   * Marks the connection as active (restarts its idle timer). Frames on `tachyon-v1` and
   * data arriving on a subsystem channel count by themselves; call this for activity the
   * SSH server cannot see, such as progress of the UDP data plane during a long transfer.
   */
  keepAlive(): void;
}

/** Where an event's connection comes from. */
export type EventPeer = { clientAddress: string; clientPort: number; connectionId: string };

/** Why an authentication attempt was refused. */
export type AuthRefusalReason =
  | 'method-not-allowed'
  | 'root-refused'
  | 'invalid-user'
  | 'unusable-key'
  | 'rsa-sha1-signature'
  | 'authorize-error'
  | 'not-authorized'
  | 'bad-signature'
  | 'credential-refused';

/** What was refused: a channel, a request on a session, or the connection itself. */
export type RefusedWhat =
  | 'connection'
  | 'session'
  | 'shell'
  | 'exec'
  | 'pty'
  | 'env'
  | 'x11'
  | 'auth-agent'
  | 'signal'
  | 'window-change'
  | 'subsystem'
  | 'direct-tcpip'
  | 'streamlocal'
  | 'global-request';

/** Why the server ended a connection (`closed`: the client went away). */
export type DisconnectReason =
  | 'closed'
  | 'login-grace-timeout'
  | 'max-auth-tries'
  | 'idle-timeout'
  | 'server-close'
  | 'internal-error';

/**
 * What the control server reports, for the audit log. Every event of one connection
 * carries its `connectionId`. Events never contain secrets: no signatures, no exec
 * commands, no environment values (only their names), no key material (only
 * fingerprints).
 */
export type ControlServerEvent =
  | ({ type: 'connect'; localAddress: string } & EventPeer)
  /**
   * One authentication attempt: `accepted` (the client proved possession of an authorized
   * key), `key-ok` (an authorized key was offered; the signed attempt follows) or `refused`
   * (with `reason` and the number of `failures` so far on this connection).
   */
  | ({
      type: 'auth';
      outcome: 'accepted' | 'key-ok' | 'refused';
      user: string;
      method: string;
      reason?: AuthRefusalReason;
      keyType?: string;
      keyFingerprint?: string;
      failures?: number;
      /** For a refused credential (`credential-refused`): the checker's reason, e.g. `expired`. Never the credential. */
      detail?: string;
    } & EventPeer)
  /**
   * A channel, request or connection was refused. `detail` is a name only: the subsystem,
   * the environment variable's name, the forwarding target, the global request, or the
   * limit that refused a connection (`per-source`, `max-startups`).
   */
  | ({ type: 'refused'; what: RefusedWhat; detail?: string; user?: string } & EventPeer)
  /** A session channel started (`subsystem`: `tachyon-v1`, or a caller-provided one such as `sftp`). */
  | ({ type: 'session-start'; user: string; keyFingerprint: string; subsystem: string } & EventPeer)
  /** A session channel ended; `code` is the error code of an abnormal end. */
  | ({ type: 'session-end'; user: string; keyFingerprint: string; subsystem: string; durationMs: number; code?: string } & EventPeer)
  | ({ type: 'disconnect'; reason: DisconnectReason; user?: string } & EventPeer)
  | ({ type: 'client-error'; message: string; level?: string } & EventPeer)
  | { type: 'server-error'; message: string };

/**
 * A handler for an additional SSH subsystem, e.g. `sftp`. It gets the accepted channel (a
 * duplex byte stream; `exit(status)` sends the exit status before ending it), the
 * authenticated user's session info, and {@link SessionControl}. Throwing destroys the
 * channel. The control server ends the channel when the connection ends.
 */
export type SubsystemHandler = (channel: ServerChannel, info: SessionInfo, control: SessionControl) => void;

/** Options for {@link startControlServer}. */
export interface ControlServerOptions {
  /** Address to listen on, e.g. '127.0.0.1' or '0.0.0.0'. */
  listen: string;
  /** TCP port; 0 = ephemeral. */
  port: number;
  /**
   * Host key(s): unencrypted OpenSSH or PEM private keys, at most one per type. Allowed:
   * ed25519 (offered first) and RSA of at least 2048 bits (3072 recommended), which is
   * offered with rsa-sha2-512 and rsa-sha2-256 signatures only, never ssh-rsa (SHA-1).
   * ECDSA and DSA keys are refused.
   */
  hostKey: Buffer | readonly Buffer[];
  /**
   * Decides whether `user` may log in with this public key (`keyAlgo` e.g. `ssh-ed25519`,
   * `keyBlob` in SSH wire format). Return false to refuse. It is asked before the client
   * proves possession of the key, and the signature is verified afterwards. `root` is
   * refused before this is asked. Throwing (or rejecting) counts as a refusal.
   */
  authorize(user: string, keyAlgo: string, keyBlob: Buffer): boolean | Promise<boolean>;
  /**
   * Users who log in with a credential other than a key (the transfer-token user): for
   * them, and only them, the `password` method is offered instead of `publickey`. The
   * checker returns the session's identity (e.g. `token:<id>`, shown as the session's
   * `keyFingerprint`; never the credential itself) or a refusal reason for the audit log.
   */
  credentialLogin?: {
    users(user: string): boolean;
    check(user: string, credential: string): Promise<{ ok: true; identity: string } | { ok: false; reason: string }>;
  };
  /** Text shown to clients before authentication (at most 4096 characters, no control characters but tab and newline). */
  banner?: string;
  /** Failed authentication attempts allowed per connection; the connection is closed at the last one. Default 6. */
  maxAuthTries?: number;
  /** Time allowed from TCP accept to successful authentication. Default 30000 ms. */
  loginGraceMs?: number;
  /**
   * Close an authenticated connection after this long without channel traffic (frames on
   * `tachyon-v1`, data arriving on a subsystem channel) or {@link SessionControl.keepAlive}.
   * SSH-level keepalives do not count. Default 600000 (10 minutes); 0 = never.
   * A transfer whose control channel is quiet while the UDP data plane runs must call
   * `keepAlive` (or the server must pass 0).
   */
  idleTimeoutMs?: number;
  /** Connections from one address that may be open and not yet authenticated. Default 10; 0 = no limit. */
  maxUnauthenticatedPerSource?: number;
  /** Connections in all that may be open and not yet authenticated (as OpenSSH's MaxStartups). Default 100; 0 = no limit. */
  maxUnauthenticated?: number;
  /**
   * Asked right after TCP accept, before any SSH byte is sent: return a reason (e.g.
   * `blocked`) to refuse the connection (it is closed at once and reported as a `refused`
   * connection event with that reason as `detail`), undefined to go on. Must be fast (it is
   * on the accept path); throwing counts as undefined.
   */
  admit?(clientAddress: string): string | undefined;
  /** Called for each opened `tachyon-v1` subsystem channel. Throwing aborts that session. */
  onSession(link: ControlLink, info: SessionInfo, control: SessionControl): void;
  /** Audit events; see {@link ControlServerEvent}. Exceptions thrown here are ignored. */
  onEvent?(e: ControlServerEvent): void;
  /** Session channels a connection may have open at once. Default 10 (as OpenSSH's MaxSessions). */
  maxSessions?: number;
  /**
   * Also offer NIST-curve ECDH key exchange (ecdh-sha2-nistp256/384/521), for FIPS-mode
   * clients that lack curve25519. Default false: ssh-audit rates these curves as weak.
   */
  allowNistKex?: boolean;
  /**
   * Additional subsystems by name, e.g. `{ sftp: handler }` (`tachyon-v1` cannot be
   * overridden). A subsystem not listed is refused.
   */
  extraSubsystems?: Readonly<Record<string, SubsystemHandler>>;
}

/** A host key the server offers. */
export interface OfferedHostKey {
  /** Key type: `ssh-ed25519` or `ssh-rsa`. */
  type: string;
  /** Signature algorithms offered for it. */
  algorithms: string[];
  /** `SHA256:…`, as clients pin it. */
  fingerprint: string;
  /** RSA modulus size. */
  bits?: number;
}

/** A running control server. */
export interface ControlServer {
  /** The bound address. */
  address: string;
  /** The bound port (the real one when 0 was asked). */
  port: number;
  /** The host keys offered, in order. */
  hostKeys: OfferedHostKey[];
  /** The algorithms offered in key exchange. */
  algorithms: { kex: string[]; serverHostKey: string[]; cipher: string[]; mac: string[] };
  /**
   * Whether `address` has a TCP connection to this server now (authenticated or not): the
   * data endpoint holds early datagrams only from such addresses.
   */
  hasConnectionFrom(address: string): boolean;
  /** Stops listening, ends all connections (their links end with `CANCELLED`) and resolves when done. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------
// Implementation

const MAX_USER_LENGTH = 256;
const MAX_BANNER_LENGTH = 4096;

interface ConnRecord {
  id: string;
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
  /** Counted in the unauthenticated totals (until authenticated or closed). */
  unauthenticated: boolean;
  graceTimer: NodeJS.Timeout | undefined;
  idleTimer: NodeJS.Timeout | undefined;
  links: Set<StreamControlLink>;
  channels: Set<ServerChannel>;
  hungUp: boolean;
  /** Writes coalesced into one segment per flight (flights.ts); stopped for other subsystems such as `sftp`. */
  flights: Flights;
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

/** `::ffff:192.0.2.1` → `192.0.2.1`, so that one client counts once per address. */
function normalizeAddress(address: string | undefined): string {
  const a = address ?? '';
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

interface LoadedHostKey {
  key: ParsedKey;
  offered: OfferedHostKey;
}

/** RSA host keys are offered with SHA-2 signatures only. */
const RSA_HOST_KEY_ALGOS: readonly ServerHostKeyAlgorithm[] = ['rsa-sha2-512', 'rsa-sha2-256'];

function loadHostKeys(input: Buffer | readonly Buffer[]): LoadedHostKey[] {
  const list: readonly Buffer[] = Buffer.isBuffer(input) ? [input] : input;
  if (list.length === 0) throw new TachyonError('CONFIG', 'No host key given');
  const out: LoadedHostKey[] = [];
  for (const [i, data] of list.entries()) {
    if (!Buffer.isBuffer(data)) throw new TachyonError('CONFIG', `Host key ${i + 1} is not a Buffer`);
    const parsed = utils.parseKey(data);
    if (parsed instanceof Error) {
      throw new TachyonError('CONFIG', `Cannot use host key ${i + 1}: ${parsed.message}`, { cause: parsed });
    }
    const key = Array.isArray(parsed) ? (parsed as ParsedKey[])[0] : parsed;
    if (key === undefined || !key.isPrivateKey()) throw new TachyonError('CONFIG', `Host key ${i + 1} is not a private key`);
    const fingerprint = fingerprintOf(key.getPublicSSH());
    if (key.type === 'ssh-ed25519') {
      out.push({ key, offered: { type: key.type, algorithms: ['ssh-ed25519'], fingerprint } });
    } else if (key.type === 'ssh-rsa') {
      const bits = createPublicKey(key.getPublicPEM()).asymmetricKeyDetails?.modulusLength ?? 0;
      if (bits < MIN_RSA_BITS) {
        throw new TachyonError('CONFIG', `RSA host key ${i + 1} has ${bits} bits; at least ${MIN_RSA_BITS} are required (3072 recommended)`);
      }
      out.push({ key, offered: { type: key.type, algorithms: [...RSA_HOST_KEY_ALGOS], fingerprint, bits } });
    } else {
      throw new TachyonError(
        'CONFIG',
        `Host key ${i + 1} is ${key.type}: only ed25519 and RSA host keys are offered (ssh-audit rates ECDSA's NIST curves weak, DSA is broken)`,
      );
    }
  }
  const types = out.map((k) => k.offered.type);
  if (new Set(types).size !== types.length) throw new TachyonError('CONFIG', `Two host keys of the same type (${types.join(', ')})`);
  // ed25519 first: clients that know it prefer it anyway, but the order is the server's offer.
  return out.sort((a, b) => (a.offered.type === 'ssh-ed25519' ? -1 : 0) - (b.offered.type === 'ssh-ed25519' ? -1 : 0));
}

/**
 * The host keys as handed to ssh2. ssh2 offers an RSA key under `ssh-rsa` (SHA-1
 * signatures) whatever `algorithms.serverHostKey` says (ssh2 1.17, lib/server.js); so each
 * RSA key is handed over twice, as views whose `type` is `rsa-sha2-512` and
 * `rsa-sha2-256`, which ssh2 then offers as those names only and signs with SHA-512 and
 * SHA-256. Checked by the ssh-audit and `HostKeyAlgorithms=ssh-rsa` tests.
 */
function ssh2HostKeys(keys: readonly LoadedHostKey[]): { key: ParsedKey }[] {
  const out: { key: ParsedKey }[] = [];
  for (const { key, offered } of keys) {
    if (offered.type !== 'ssh-rsa') {
      out.push({ key });
      continue;
    }
    for (const algo of RSA_HOST_KEY_ALGOS) {
      out.push({ key: Object.create(key, { type: { value: algo, enumerable: true } }) as ParsedKey });
    }
  }
  return out;
}

function checkOptions(opts: ControlServerOptions): void {
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new TachyonError('CONFIG', `Invalid control port ${String(opts.port)}`);
  }
  const atLeast = (v: number | undefined, name: string, min: number): void => {
    if (v !== undefined && (!Number.isFinite(v) || v < min)) {
      throw new TachyonError('CONFIG', `${name} must be a number >= ${min}, got ${String(v)}`);
    }
  };
  atLeast(opts.maxAuthTries, 'maxAuthTries', 1);
  atLeast(opts.loginGraceMs, 'loginGraceMs', 1);
  atLeast(opts.idleTimeoutMs, 'idleTimeoutMs', 0);
  atLeast(opts.maxSessions, 'maxSessions', 1);
  atLeast(opts.maxUnauthenticatedPerSource, 'maxUnauthenticatedPerSource', 0);
  atLeast(opts.maxUnauthenticated, 'maxUnauthenticated', 0);
  if (opts.banner !== undefined) {
    if (typeof opts.banner !== 'string' || opts.banner.length > MAX_BANNER_LENGTH) {
      throw new TachyonError('CONFIG', `The banner must be a string of at most ${MAX_BANNER_LENGTH} characters`);
    }
    if (hasControlChars(opts.banner.replace(/[\t\n]|\r\n/g, ''))) {
      throw new TachyonError('CONFIG', 'The banner may not hold control characters (other than tab and newline)');
    }
  }
  for (const name of Object.keys(opts.extraSubsystems ?? {})) {
    if (name === SUBSYSTEM || name.length === 0 || name.length > 64 || hasControlChars(name)) {
      throw new TachyonError('CONFIG', `Invalid extra subsystem name ${JSON.stringify(clip(name))}`);
    }
  }
}

/**
 * Starts the SSH control server and resolves once it listens.
 * @throws TachyonError `CONFIG` for a bad host key or option, or if the address cannot be
 *   bound; `PERMISSION` if binding is not permitted.
 */
export async function startControlServer(opts: ControlServerOptions): Promise<ControlServer> {
  checkOptions(opts);
  const hostKeys = loadHostKeys(opts.hostKey);
  const maxAuthTries = opts.maxAuthTries ?? 6;
  const loginGraceMs = opts.loginGraceMs ?? 30_000;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 600_000;
  const maxSessions = opts.maxSessions ?? 10;
  const maxPerSource = opts.maxUnauthenticatedPerSource ?? 10;
  const maxUnauthenticated = opts.maxUnauthenticated ?? 100;
  const extraSubsystems = opts.extraSubsystems ?? {};

  const emit = (e: ControlServerEvent): void => {
    try {
      opts.onEvent?.(e);
    } catch {
      /* an audit sink must not break the server */
    }
  };

  const base = controlAlgorithms({ nistKex: opts.allowNistKex === true });
  const serverHostKey = hostKeys.flatMap((k) => k.offered.algorithms) as ServerHostKeyAlgorithm[];
  const sshServer = new ssh2.Server({
    hostKeys: ssh2HostKeys(hostKeys),
    algorithms: { ...base, serverHostKey },
    ident: SSH_IDENT,
    ...(opts.banner !== undefined && opts.banner !== '' ? { banner: opts.banner } : {}),
  });
  sshServer.on('error', () => {
    /* the internal net server is never used */
  });

  const records = new Map<string, ConnRecord>();
  const recordKey = (address: string | undefined, port: number | undefined): string => `${address ?? ''}|${port ?? 0}`;
  const unauthBySource = new Map<string, number>();
  /** open connections per client address */
  const connsBySource = new Map<string, number>();
  let unauthTotal = 0;
  let closing = false;

  const where = (rec: ConnRecord): EventPeer => ({
    clientAddress: rec.clientAddress,
    clientPort: rec.clientPort,
    connectionId: rec.id,
  });

  /** Takes `rec` out of the unauthenticated counts (on authentication or close). */
  const releaseUnauthenticated = (rec: ConnRecord): void => {
    if (!rec.unauthenticated) return;
    rec.unauthenticated = false;
    unauthTotal--;
    const n = (unauthBySource.get(rec.clientAddress) ?? 1) - 1;
    if (n <= 0) unauthBySource.delete(rec.clientAddress);
    else unauthBySource.set(rec.clientAddress, n);
  };

  const clearTimers = (rec: ConnRecord): void => {
    if (rec.graceTimer) clearTimeout(rec.graceTimer);
    if (rec.idleTimer) clearTimeout(rec.idleTimer);
    rec.graceTimer = undefined;
    rec.idleTimer = undefined;
  };

  /** Ends an SSH connection: disconnect message, then destroy if the client lingers. */
  const hangUp = (rec: ConnRecord, reason: DisconnectReason, linkError: TachyonError | undefined, graceMs = 1000): void => {
    if (rec.hungUp) return;
    rec.hungUp = true;
    emit({ type: 'disconnect', reason, ...(rec.user !== undefined ? { user: rec.user } : {}), ...where(rec) });
    if (linkError) for (const link of rec.links) link.abort(linkError);
    for (const ch of rec.channels) ch.destroy();
    clearTimers(rec);
    try {
      rec.conn?.end();
    } catch {
      /* socket already gone */
    }
    if (rec.conn === undefined) rec.socket.end();
    setTimeout(() => rec.socket.destroy(), graceMs).unref();
  };

  const touch = (rec: ConnRecord): void => {
    rec.idleTimer?.refresh();
  };

  const control = (rec: ConnRecord): SessionControl => ({ keepAlive: () => touch(rec) });

  const tcp = net.createServer((socket) => {
    socket.on('error', () => {
      /* reported through the ssh2 connection */
    });
    if (closing) {
      socket.destroy();
      return;
    }
    const clientAddress = normalizeAddress(socket.remoteAddress);
    const clientPort = socket.remotePort ?? 0;
    const id = newCorrelationId();
    let refusal: string | undefined;
    try {
      refusal = opts.admit?.(clientAddress);
    } catch {
      refusal = undefined;
    }
    if (refusal !== undefined) {
      emit({ type: 'refused', what: 'connection', detail: clip(refusal), clientAddress, clientPort, connectionId: id });
      socket.destroy();
      return;
    }
    // Limits on connections that have not authenticated yet (before any SSH byte is sent).
    const fromSource = unauthBySource.get(clientAddress) ?? 0;
    const limit = maxPerSource > 0 && fromSource >= maxPerSource ? 'per-source' : maxUnauthenticated > 0 && unauthTotal >= maxUnauthenticated ? 'max-startups' : undefined;
    if (limit !== undefined) {
      emit({ type: 'refused', what: 'connection', detail: limit, clientAddress, clientPort, connectionId: id });
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const rec: ConnRecord = {
      flights: coalesceFlights(socket),
      id,
      socket,
      clientAddress,
      clientPort,
      localAddress: normalizeAddress(socket.localAddress),
      conn: undefined,
      user: undefined,
      keyFingerprint: undefined,
      failures: 0,
      sessions: 0,
      unauthenticated: true,
      graceTimer: undefined,
      idleTimer: undefined,
      links: new Set(),
      channels: new Set(),
      hungUp: false,
    };
    unauthTotal++;
    unauthBySource.set(clientAddress, fromSource + 1);
    connsBySource.set(clientAddress, (connsBySource.get(clientAddress) ?? 0) + 1);
    const key = recordKey(socket.remoteAddress, socket.remotePort);
    records.set(key, rec);
    emit({ type: 'connect', ...where(rec), localAddress: rec.localAddress });
    if (TRACE) process.stderr.write(`trace tcp accepted t=${systemClock.now().toFixed(1)}\n`);
    rec.graceTimer = setTimeout(() => {
      hangUp(rec, 'login-grace-timeout', undefined);
    }, loginGraceMs);
    rec.graceTimer.unref();
    socket.once('close', () => {
      clearTimers(rec);
      releaseUnauthenticated(rec);
      const open = (connsBySource.get(clientAddress) ?? 1) - 1;
      if (open <= 0) connsBySource.delete(clientAddress);
      else connsBySource.set(clientAddress, open);
      records.delete(key);
      const vanished = new TachyonError('PEER_VANISHED', 'The SSH connection closed');
      for (const link of rec.links) link.abort(vanished);
      for (const ch of rec.channels) ch.destroy();
      if (!rec.hungUp) emit({ type: 'disconnect', reason: 'closed', ...(rec.user !== undefined ? { user: rec.user } : {}), ...where(rec) });
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
      emit({ type: 'client-error', message: clip(err.message, 200), ...(err.level !== undefined ? { level: err.level } : {}), ...where(rec) });
    });
    // A client may send its channel open, subsystem request and first messages right behind
    // its signed request (ssh-pipeline.ts): they wait for the decision on that request
    // instead of being refused or dropped while we check the key.
    let deciding = 0;
    const release = holdConnectionMessagesDuringAuth(conn, () => deciding > 0);
    // A client's key share sent with its KEXINIT (a right guess) is used, not skipped.
    honourKexGuess(conn);
    if (TRACE) conn.once('handshake', () => process.stderr.write(`trace kex done t=${systemClock.now().toFixed(1)}\n`));
    conn.on('authentication', (ctx: AuthContext) => {
      if (TRACE) process.stderr.write(`trace auth ${ctx.method} t=${systemClock.now().toFixed(1)}\n`);
      deciding++;
      handleAuth(rec, ctx)
        .catch((err: unknown) => {
          emit({ type: 'client-error', message: clip(String(err), 200), ...where(rec) });
          hangUp(rec, 'internal-error', undefined);
        })
        .finally(() => {
          deciding--;
          release?.();
        });
    });
    conn.on('ready', () => {
      if (rec.graceTimer) clearTimeout(rec.graceTimer);
      rec.graceTimer = undefined;
      releaseUnauthenticated(rec);
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
        ...(rec.user !== undefined ? { user: rec.user } : {}),
        ...where(rec),
      });
    });
    conn.on('openssh.streamlocal', (_accept, reject) => {
      reject();
      emit({ type: 'refused', what: 'streamlocal', ...(rec.user !== undefined ? { user: rec.user } : {}), ...where(rec) });
    });
    conn.on('request', (_accept: unknown, reject: (() => void) | undefined, name: string) => {
      reject?.();
      emit({ type: 'refused', what: 'global-request', detail: clip(String(name)), ...(rec.user !== undefined ? { user: rec.user } : {}), ...where(rec) });
    });
  });

  const methodsFor = (user: string): Array<'publickey' | 'password'> => (opts.credentialLogin?.users(user) === true ? ['password'] : ['publickey']);

  const refuseAuth = (rec: ConnRecord, ctx: AuthContext, event: AuthFields, reason: AuthRefusalReason, detail?: string): void => {
    rec.failures++;
    emit({ type: 'auth', outcome: 'refused', reason, failures: rec.failures, ...event, ...(detail !== undefined ? { detail: clip(detail) } : {}) });
    ctx.reject(methodsFor(ctx.username));
    if (rec.failures >= maxAuthTries) hangUp(rec, 'max-auth-tries', undefined);
  };

  type AuthFields = EventPeer & { user: string; method: string; keyType?: string; keyFingerprint?: string };

  const handleAuth = async (rec: ConnRecord, ctx: AuthContext): Promise<void> => {
    if (rec.hungUp) return;
    const user = ctx.username;
    const event: AuthFields = { user: clip(user), method: clip(String(ctx.method)), ...where(rec) };
    if (ctx.method === 'none') {
      // Clients ask which methods exist this way; it is not an attempt.
      ctx.reject(methodsFor(user));
      return;
    }
    if (opts.credentialLogin?.users(user) === true) {
      // this user logs in with a credential (a transfer token), never with a key
      if (ctx.method !== 'password') return refuseAuth(rec, ctx, event, 'method-not-allowed');
      let r: { ok: true; identity: string } | { ok: false; reason: string };
      try {
        r = await opts.credentialLogin.check(user, ctx.password);
      } catch {
        r = { ok: false, reason: 'authorize-error' };
      }
      if (rec.hungUp) return;
      if (!r.ok) return refuseAuth(rec, ctx, event, 'credential-refused', r.reason);
      rec.user = user;
      rec.keyFingerprint = r.identity;
      event.keyFingerprint = r.identity;
      emit({ type: 'auth', outcome: 'accepted', ...event });
      ctx.accept();
      return;
    }
    if (ctx.method !== 'publickey') {
      refuseAuth(rec, ctx, event, 'method-not-allowed');
      return;
    }
    const pk: PublicKeyAuthContext = ctx;
    const blob = pk.key.data;
    event.keyType = clip(pk.key.algo);
    event.keyFingerprint = fingerprintOf(blob);
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
    if (TRACE) process.stderr.write(`trace auth accepted t=${systemClock.now().toFixed(1)}\n`);
  };

  const wireSession = (rec: ConnRecord, session: Session): void => {
    const refuse =
      (what: RefusedWhat, detail?: (info: unknown) => string) =>
      (_accept: unknown, reject: (() => void) | undefined, info?: unknown): void => {
        reject?.();
        emit({
          type: 'refused',
          what,
          ...(detail ? { detail: detail(info) } : {}),
          ...(rec.user !== undefined ? { user: rec.user } : {}),
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
        connectionId: rec.id,
      };
      if (name === SUBSYSTEM) {
        startLink(rec, accept(), sessionInfo);
        return;
      }
      const hook = Object.prototype.hasOwnProperty.call(extraSubsystems, name) ? extraSubsystems[name] : undefined;
      if (hook !== undefined) {
        // an interactive protocol (sftp): its answers go out at once
        rec.flights.stop();
        startSubsystem(rec, accept(), sessionInfo, name, hook);
        return;
      }
      reject?.();
      emit({ type: 'refused', what: 'subsystem', detail: clip(name), ...(rec.user !== undefined ? { user: rec.user } : {}), ...where(rec) });
    });
  };

  const sessionBase = (rec: ConnRecord, info: SessionInfo, subsystem: string) => ({
    user: info.user,
    keyFingerprint: info.keyFingerprint,
    subsystem,
    ...where(rec),
  });

  const startSubsystem = (rec: ConnRecord, channel: ServerChannel, info: SessionInfo, name: string, hook: SubsystemHandler): void => {
    channel.on('error', () => {});
    rec.channels.add(channel);
    // Data arriving from the client is activity. ssh2 delivers it with push(); a 'data'
    // listener here would take the stream out of the handler's hands.
    const push = channel.push.bind(channel);
    channel.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
      if (chunk !== null) touch(rec);
      return push(chunk, encoding);
    };
    touch(rec);
    const started = performance.now();
    const ev = sessionBase(rec, info, clip(name));
    emit({ type: 'session-start', ...ev });
    channel.once('close', () => {
      rec.channels.delete(channel);
      emit({ type: 'session-end', ...ev, durationMs: Math.round(performance.now() - started) });
    });
    try {
      hook(channel, info, control(rec));
    } catch {
      channel.destroy();
    }
  };

  const startLink = (rec: ConnRecord, channel: ServerChannel, info: SessionInfo): void => {
    channel.on('error', () => {});
    // the answer to the authentication flight (with welcome) gets a guard segment behind it (guardFlight)
    const conn = rec.conn;
    const link = linkFromStream(channel, { onActivity: () => touch(rec), ...(conn !== undefined ? { onFirstSend: () => guardFlight(conn, rec.flights, rec.socket) } : {}) });
    rec.links.add(link);
    touch(rec);
    const started = performance.now();
    const ev = sessionBase(rec, info, SUBSYSTEM);
    emit({ type: 'session-start', ...ev });
    link.onClose((err?: Error) => {
      rec.links.delete(link);
      // Runs before the link ends the channel. OpenSSH's client reports 255 when a session
      // closes without an exit status; send 0, or the error's exit code.
      try {
        channel.exit(err === undefined ? 0 : toTachyonError(err).exitCode);
      } catch {
        /* channel already gone */
      }
      emit({
        type: 'session-end',
        ...ev,
        durationMs: Math.round(performance.now() - started),
        ...(err ? { code: toTachyonError(err).code } : {}),
      });
    });
    try {
      opts.onSession(link, info, control(rec));
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
    hostKeys: hostKeys.map((k) => ({ ...k.offered, algorithms: [...k.offered.algorithms] })),
    algorithms: {
      kex: [...(base.kex as string[])],
      serverHostKey: [...serverHostKey],
      cipher: [...(base.cipher as string[])],
      mac: [...(base.hmac as string[])],
    },
    hasConnectionFrom: (address: string) => connsBySource.has(address),
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
