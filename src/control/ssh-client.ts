/**
 * The control-channel SSH client: connects, verifies the server's host key against a
 * pinned fingerprint or a known_hosts file (never trust-on-first-use), authenticates with
 * a private key, and opens the `tachyon-v1` subsystem.
 */
import { promises as fs } from 'node:fs';
import net from 'node:net';
import ssh2 from 'ssh2';
import type { Duplex } from 'node:stream';
import type { ParsedKey } from 'ssh2';
import { TachyonError } from '../core/errors.js';
import { linkFromStream } from './framing.js';
import type { StreamControlLink } from './framing.js';
import { blobKeyType, checkKnownHosts, fingerprintOf, knownHostsName, normalizeFingerprint } from './hostkeys.js';
import type { KnownHostsResult } from './hostkeys.js';
import { SUBSYSTEM } from './messages.js';
import { guessKeyExchange, guardFlight, pipelineClient } from './ssh-pipeline.js';
import type { ClientPipeline, KexGuess } from './ssh-pipeline.js';
import type { ControlLink } from './messages.js';
import { SSH_IDENT, controlAlgorithms } from './ssh-server.js';
import { coalesceFlights } from './flights.js';
import type { Flights } from './flights.js';

const { Client, utils } = ssh2;

/** How the server's host key is trusted. At least one field is required. */
export interface HostKeyPin {
  /** Expected `SHA256:…` fingerprint (as `ssh-keygen -l` prints it). */
  fingerprint?: string;
  /** An OpenSSH known_hosts file to look the server up in (`[host]:port` when port is not 22). */
  knownHostsFile?: string;
}

/** Options for {@link connectControl}. */
export interface ConnectOptions {
  host: string;
  port: number;
  user: string;
  /** Private key, OpenSSH or PEM format (or give `token`). */
  privateKey?: Buffer;
  /**
   * A transfer token instead of a key: sent with the SSH `password` method (inside the
   * encrypted SSH connection, after the host key was verified), for the token user.
   */
  token?: string;
  /** Passphrase for an encrypted private key. */
  passphrase?: string;
  hostKey: HostKeyPin;
  /** Limit for TCP connect + SSH handshake + authentication + opening the subsystem. Default 15000 ms. */
  timeoutMs?: number;
  /**
   * A TCP connection to host:port already under way (`net.connect`), so that the caller
   * can do other work while the handshake travels; several race (see `race`). Default:
   * connect here.
   */
  socket?: net.Socket | readonly net.Socket[];
  /**
   * Open this many TCP connections at once (when `socket` is not given; given sockets race
   * instead) and go on with the first whose key exchange completes; the others are closed
   * before they authenticate (see {@link connectControl}). Default 1.
   */
  race?: number;
  /**
   * Resolve as soon as the first control messages can be written, before the server has
   * accepted the credential, so that they travel in the authentication flight (one round
   * trip less; ssh-pipeline.ts). A refused credential then ends the link with the
   * `AUTH_FAILED` error. Default: resolve once authenticated.
   */
  early?: boolean;
  /** false: one round trip per SSH step, as stock clients do (default: pipelined, see ssh-pipeline.ts). */
  pipeline?: boolean;
  /** Receives ssh2's protocol trace (one line per SSH message; never key material). For `TACHYON_TRACE`. */
  trace?: (line: string) => void;
}

/** An open control connection. */
export interface ControlConnection {
  /** The message link over the `tachyon-v1` channel. Closing it also ends the SSH connection. */
  link: ControlLink;
  /** The server's IP address as connected (DNS resolved). */
  remoteAddress: string;
  /** The verified `SHA256:…` fingerprint of the server's host key. */
  hostKeyFingerprint: string;
  /**
   * How the set-up after the key exchange went (ssh-pipeline.ts): `one-flight` (one round
   * trip, a `Tachyon_2` or later server), `two-flights` (other servers), `no` (one per step, six).
   */
  readonly pipelined: 'one-flight' | 'two-flights' | 'no';
  /**
   * The key exchange (ssh-pipeline.ts, `guessKeyExchange`): `right` when the server used
   * the client's guessed share (one round trip saved), `wrong` when it ignored it, `no`
   * when the client did not guess (`pipeline: false`).
   */
  readonly kexGuess: 'right' | 'wrong' | 'no';
  /** Closes the link and the SSH connection. */
  close(): void;
}

interface Ssh2Error extends Error {
  level?: string;
}

function parseClientKey(privateKey: Buffer, passphrase: string | undefined): ParsedKey {
  const parsed = utils.parseKey(privateKey, passphrase);
  if (parsed instanceof Error) {
    if (/encrypted/i.test(parsed.message) && passphrase === undefined) {
      throw new TachyonError('CONFIG', 'The private key is encrypted; a passphrase is needed', { cause: parsed });
    }
    if (/passphrase|decrypt|bad/i.test(parsed.message) && passphrase !== undefined) {
      throw new TachyonError('CONFIG', `Cannot decrypt the private key: ${parsed.message}`, { cause: parsed });
    }
    throw new TachyonError('CONFIG', `Cannot parse the private key: ${parsed.message}`, { cause: parsed });
  }
  const key = Array.isArray(parsed) ? (parsed as ParsedKey[])[0] : parsed;
  if (key === undefined || !key.isPrivateKey()) {
    throw new TachyonError('CONFIG', 'The key given for authentication is not a private key');
  }
  return key;
}

async function readKnownHosts(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return undefined;
    throw new TachyonError('CONFIG', `Cannot read known_hosts file ${file}: ${e.message}`, { cause: err });
  }
}

/**
 * Connects to a Tachyon control server over SSH and opens the `tachyon-v1` subsystem.
 *
 * The host key must match `hostKey.fingerprint` or have a matching known_hosts entry;
 * there is no way to skip this.
 *
 * @throws TachyonError `USAGE` (bad options), `CONFIG` (unusable key or known_hosts file),
 *   `HOST_KEY_UNKNOWN` / `HOST_KEY_MISMATCH` (message shows the server's fingerprint and how
 *   to pin it), `AUTH_FAILED`, `CONNECT` (unreachable, refused, timed out), or `PROTOCOL`
 *   (SSH handshake failure, subsystem refused).
 */
export async function connectControl(opts: ConnectOptions): Promise<ControlConnection> {
  const { host, port, user } = opts;
  if (typeof host !== 'string' || host.length === 0) throw new TachyonError('USAGE', 'No server host given');
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TachyonError('USAGE', `Invalid server port ${String(port)}`);
  }
  if (typeof user !== 'string' || user.length === 0) throw new TachyonError('USAGE', 'No user name given');
  const pin = opts.hostKey;
  if (pin.fingerprint === undefined && pin.knownHostsFile === undefined) {
    throw new TachyonError(
      'USAGE',
      'The server host key must be pinned: give --host-key-fingerprint SHA256:… or a known_hosts file',
    );
  }
  let pinnedFingerprint: string | undefined;
  if (pin.fingerprint !== undefined) {
    pinnedFingerprint = normalizeFingerprint(pin.fingerprint);
    if (pinnedFingerprint === undefined) {
      throw new TachyonError(
        'USAGE',
        'The host key fingerprint must look like SHA256:<43 base64 characters> (as printed by ssh-keygen -l)',
      );
    }
  }
  if ((opts.privateKey === undefined) === (opts.token === undefined)) throw new TachyonError('USAGE', 'Give either a private key or a transfer token');
  const clientKey = opts.privateKey !== undefined ? parseClientKey(opts.privateKey, opts.passphrase) : undefined;
  const knownHostsText = pin.knownHostsFile !== undefined ? await readKnownHosts(pin.knownHostsFile) : undefined;
  const timeoutMs = opts.timeoutMs ?? 15_000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new TachyonError('USAGE', `Invalid connect timeout ${String(opts.timeoutMs)} ms`);
  }
  const target = port === 22 ? host : `${host}:${port}`;
  const given = opts.socket;
  const sockets: readonly (net.Socket | undefined)[] = Array.isArray(given) ? given : [given as net.Socket | undefined];
  if (sockets.length === 0) throw new TachyonError('USAGE', 'No connection given');
  const race = Array.isArray(given) ? given.length : (opts.race ?? 1);
  if (!Number.isInteger(race) || race < 1 || race > 8) throw new TachyonError('USAGE', `Invalid connection race ${String(opts.race)} (1..8)`);
  const prepared: Prepared = { opts, target, pinnedFingerprint, clientKey, knownHostsText, timeoutMs };
  if (race === 1) return connectOne(prepared, sockets[0]);
  return raceConnections(prepared, Array.from({ length: race }, (_, i) => sockets[i]));
}

/** What {@link connectControl} checked and read before connecting. */
interface Prepared {
  opts: ConnectOptions;
  target: string;
  pinnedFingerprint: string | undefined;
  clientKey: ParsedKey | undefined;
  knownHostsText: string | undefined;
  timeoutMs: number;
}

/** One attempt in a race: asks whether it may go on once its key exchange is done, and can be called off. */
interface RaceSlot {
  /** true: this attempt is the one (the first to ask); false: another already is */
  claim(): boolean;
  /** The coordinator calls the attempt off through the function given here. */
  onCancel(cancel: () => void): void;
  /** prefix for this attempt's trace lines */
  tag: string;
}

/**
 * Races connection attempts (`race` in {@link ConnectOptions}). On a lossy long path one
 * lost segment in the set-up costs a retransmission timeout: a lost SYN or SYN-ACK 1 s, a
 * lost flight of the key exchange 0.6–0.9 s at 300 ms RTT, against 0.6 s for the whole
 * set-up. Several attempts at once lose independently, and the first to finish its key
 * exchange goes on to authenticate; the others are closed at that moment, so the server
 * sees one authentication and, for each other attempt, a connection that ended before
 * authenticating. Nothing after the key exchange is sent twice (a second `hello` would
 * start a second session under the same keys).
 *
 * An error that another attempt cannot fix (the host key, the protocol) ends the race at
 * once; connection errors end it when every attempt has failed.
 */
async function raceConnections(p: Prepared, sockets: readonly (net.Socket | undefined)[]): Promise<ControlConnection> {
  let winner: number | undefined;
  const cancels: ((() => void) | undefined)[] = [];
  const cancelOthers = (keep: number | undefined): void => {
    cancels.forEach((cancel, j) => {
      if (j !== keep) cancel?.();
    });
  };
  return new Promise<ControlConnection>((resolve, reject) => {
    let failed = 0;
    let firstError: unknown;
    let done = false;
    sockets.forEach((socket, i) => {
      const slot: RaceSlot = {
        claim: () => {
          if (winner !== undefined) return winner === i;
          winner = i;
          p.opts.trace?.(`connection #${i + 1} won the set-up race`);
          cancelOthers(i);
          return true;
        },
        onCancel: (cancel) => {
          cancels[i] = cancel;
        },
        tag: `#${i + 1} `,
      };
      connectOne(p, socket, slot).then(
        (conn) => {
          if (winner === i && !done) {
            done = true;
            resolve(conn);
          } else conn.close();
        },
        (err: unknown) => {
          if (done) return;
          if (winner === i || (err instanceof TachyonError && err.code !== 'CONNECT' && winner === undefined)) {
            done = true;
            cancelOthers(undefined);
            reject(err);
            return;
          }
          if (winner !== undefined) return; // called off
          failed++;
          firstError ??= err;
          if (failed === sockets.length) {
            done = true;
            reject(firstError);
          }
        },
      );
    });
  });
}

function connectOne(p: Prepared, given: net.Socket | undefined, race?: RaceSlot): Promise<ControlConnection> {
  const { opts, target, pinnedFingerprint, clientKey, knownHostsText, timeoutMs } = p;
  const { host, port, user } = opts;
  const pin = opts.hostKey;
  const trace = opts.trace !== undefined && race !== undefined ? (line: string): void => opts.trace!(race.tag + line) : opts.trace;
  return new Promise<ControlConnection>((resolve, reject) => {
    const client = new Client();
    const socket = given ?? new net.Socket();
    let settled = false;
    let phase = 'connecting';
    let verifyError: TachyonError | undefined;
    let serverFingerprint: string | undefined;
    let link: StreamControlLink | undefined;
    let channel: Duplex | undefined;
    let pipeline: ClientPipeline | undefined;
    let kexGuess: KexGuess | undefined;
    let flights: Flights | undefined;

    const fail = (err: TachyonError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        client.end();
      } catch {
        /* not connected */
      }
      socket.destroy();
      reject(err);
    };

    const timer = setTimeout(() => {
      fail(new TachyonError('CONNECT', `Timed out after ${timeoutMs} ms ${phase} (${target})`));
    }, timeoutMs);

    const hostVerifier = (key: Buffer): boolean => {
      const fp = fingerprintOf(key);
      serverFingerprint = fp;
      if (pinnedFingerprint !== undefined && fp === pinnedFingerprint) return true;
      let known: KnownHostsResult = 'unknown';
      if (knownHostsText !== undefined) known = checkKnownHosts(knownHostsText, host, port, key);
      if (known === 'match') return true;
      verifyError = hostKeyError({
        host,
        port,
        keyType: blobKeyType(key) ?? 'unknown',
        fingerprint: fp,
        pinnedFingerprint,
        knownHostsFile: pin.knownHostsFile,
        knownHostsMissing: pin.knownHostsFile !== undefined && knownHostsText === undefined,
        known,
      });
      return false;
    };

    const mapError = (err: Ssh2Error): TachyonError => {
      if (verifyError) return verifyError;
      switch (err.level) {
        case 'client-authentication':
          if (clientKey === undefined) {
            return new TachyonError(
              'AUTH_FAILED',
              `The server ${target} refused the transfer token for "${user}": it has expired, was altered, was issued by another node, ` +
                "or its access key was revoked (the server's audit log records which); ask for a new transfer spec",
              { cause: err },
            );
          }
          return new TachyonError(
            'AUTH_FAILED',
            `The server ${target} refused public key authentication as "${user}" with key ` +
              `${fingerprintOf(clientKey.getPublicSSH())} (is the public key in the server's authorized keys? ` +
              'root logins are always refused)',
            { cause: err },
          );
        case 'client-socket':
        case 'client-dns':
          return new TachyonError('CONNECT', `Cannot connect to ${target}: ${err.message}`, { cause: err });
        case 'client-timeout':
          return new TachyonError('CONNECT', `Timed out ${phase} (${target}): ${err.message}`, { cause: err });
        default:
          return phase === 'authenticating'
            ? new TachyonError('AUTH_FAILED', `The server ${target} ended the connection during authentication: ${err.message}`, {
                cause: err,
              })
            : new TachyonError('PROTOCOL', `SSH ${phase} with ${target} failed: ${err.message}`, { cause: err });
      }
    };

    socket.on('error', (err: Error) => {
      if (!settled) fail(new TachyonError('CONNECT', `Cannot connect to ${target}: ${err.message}`, { cause: err }));
    });

    client.on('error', (err: Ssh2Error) => {
      if (!settled) {
        fail(mapError(err));
        return;
      }
      link?.abort(new TachyonError('PEER_VANISHED', `The SSH connection to ${target} failed: ${err.message}`, { cause: err }));
    });

    client.on('close', () => {
      if (!settled) {
        fail(verifyError ?? new TachyonError(phase === 'authenticating' ? 'AUTH_FAILED' : 'CONNECT',
          `The server ${target} closed the connection while ${phase}`));
        return;
      }
      link?.abort(new TachyonError('PEER_VANISHED', `The SSH connection to ${target} closed`));
    });

    client.on('handshake', () => {
      // (emitted before ssh2 sends its service request: a lost race sends nothing more)
      if (race !== undefined && !race.claim()) {
        fail(new TachyonError('CONNECT', `Superseded by a faster connection to ${target}`));
        return;
      }
      if (phase === 'in the SSH handshake') phase = 'authenticating';
    });
    race?.onCancel(() => {
      if (!settled) fail(new TachyonError('CONNECT', `Superseded by a faster connection to ${target}`));
    });

    let authenticated = false;
    let heldStream: Duplex | undefined;
    /** Builds the link on the subsystem channel and hands the connection to the caller. */
    const linkUp = (ch: Duplex): void => {
      if (settled || link !== undefined) return;
      if (!authenticated && opts.early !== true) {
        // the caller learns of the connection once the server has accepted the credential
        heldStream = ch;
        return;
      }
      channel = ch;
      channel.on('error', () => {});
      const theLink = linkFromStream(channel);
      link = theLink;
      theLink.onClose(() => shutdown());
      settled = true;
      clearTimeout(timer);
      if (!authenticated && pipeline !== undefined) guardAuthFlight();
      resolve({
        link: theLink,
        remoteAddress: socket.remoteAddress ?? host,
        hostKeyFingerprint: serverFingerprint ?? '',
        get pipelined() {
          return pipeline === undefined ? 'no' : pipeline.earlyChannel() ? 'one-flight' : 'two-flights';
        },
        get kexGuess() {
          const o = kexGuess?.outcome();
          return o === 'right' || o === 'wrong' ? o : 'no';
        },
        close: () => {
          theLink.close();
          shutdown();
        },
      });
    };

    let subsystemOpened = false;
    const openSubsystem = (): void => {
      if (settled || subsystemOpened) return;
      subsystemOpened = true;
      phase = `opening the ${SUBSYSTEM} subsystem`;
      client.subsys(SUBSYSTEM, (err, ch) => {
        if (err && !authenticated && !settled) {
          // A server that refuses a channel opened before authentication has succeeded
          // (an older Tachyon, see ssh-pipeline.ts): open it again once it has.
          subsystemOpened = false;
          return;
        }
        if (err) {
          const refused = new TachyonError(
            'PROTOCOL',
            `The server ${target} refused the ${SUBSYSTEM} subsystem (is it a Tachyon server?): ${err.message}`,
            { cause: err },
          );
          // With the first messages already sent (see ssh-pipeline.ts), the link carries the refusal.
          if (link !== undefined) link.abort(refused);
          else fail(refused);
          return;
        }
        if (settled && link === undefined) {
          ch.destroy();
          return;
        }
        linkUp(ch);
      });
    };

    client.on('ready', () => {
      authenticated = true;
      if (heldStream !== undefined) linkUp(heldStream);
      if (!settled) openSubsystem();
    });

    let shuttingDown = false;
    /** Ends the SSH connection once the channel is closed (or after a grace period). */
    const shutdown = (): void => {
      if (shuttingDown) return;
      shuttingDown = true;
      const end = (): void => {
        try {
          client.end();
        } catch {
          /* already gone */
        }
        setTimeout(() => socket.destroy(), 1000).unref();
      };
      const ch = channel;
      if (ch === undefined || socket.destroyed) {
        end();
        return;
      }
      const fallback = setTimeout(end, 1000);
      fallback.unref();
      ch.once('close', () => {
        clearTimeout(fallback);
        end();
      });
    };

    /** The authentication flight (with `hello`, written by the caller as soon as it has the link) gets a guard segment (guardFlight). */
    const guardAuthFlight = (): void => {
      if (flights !== undefined) guardFlight(client, flights, socket, () => trace?.('sent IGNORE behind the authentication flight'));
    };

    const onConnected = (): void => {
      trace?.('TCP connected');
      if (settled) return;
      socket.setNoDelay(true);
      // each flight in one segment (flights.ts): the version with the key exchange guess,
      // then authentication, channel, subsystem, hello and probe
      flights = opts.pipeline !== false ? coalesceFlights(socket) : undefined;
      phase = 'in the SSH handshake';
      try {
        client.connect({
          sock: socket,
          username: user,
          ...(opts.privateKey !== undefined ? { privateKey: opts.privateKey } : { password: opts.token }),
          ...(opts.passphrase !== undefined ? { passphrase: opts.passphrase } : {}),
          hostVerifier,
          algorithms: controlAlgorithms({ nistKex: true }),
          authHandler: opts.privateKey !== undefined ? ['publickey'] : ['password'],
          readyTimeout: 0,
          keepaliveInterval: 15_000,
          keepaliveCountMax: 3,
          ident: SSH_IDENT,
          ...(trace !== undefined ? { debug: trace } : {}),
        });
      } catch (err) {
        fail(new TachyonError('CONFIG', `Cannot start the SSH client: ${(err as Error).message}`, { cause: err }));
        return;
      }
      if (opts.pipeline === false) return;
      // One round trip less: KEXINIT and our key share go with the version string.
      kexGuess = guessKeyExchange(client);
      // ssh2 writes that flight at once (a resolved promise's callback); send it then, not
      // after the flights' quiet time: the server, which corks its version string for as
      // long, then answers both in one segment (one chance less to lose the flight)
      setImmediate(() => flights?.flush());
      // Fewer round trips (ssh-pipeline.ts): the first control messages ride with the
      // subsystem request, and authentication and the channel open with the service request.
      pipeline = pipelineClient(client, {
        user,
        credential: clientKey !== undefined ? { key: clientKey } : { password: opts.token ?? '' },
        subsystem: SUBSYSTEM,
        onAuthFailure: () => {
          const e: Ssh2Error = new Error('All configured authentication methods failed');
          e.level = 'client-authentication';
          // with `early`, the caller may already hold the link: it ends with the refusal
          if (link !== undefined) link.abort(mapError(e));
          else fail(mapError(e));
        },
        openChannel: openSubsystem,
        onStream: linkUp,
      });
    };
    if (given === undefined) {
      socket.once('connect', onConnected);
      socket.connect({ host, port });
    } else if (given.errored) {
      fail(new TachyonError('CONNECT', `Cannot connect to ${target}: ${given.errored.message}`, { cause: given.errored }));
    } else if (given.destroyed) {
      fail(new TachyonError('CONNECT', `Cannot connect to ${target}: the connection closed`));
    } else if (given.readyState === 'open') {
      onConnected();
    } else {
      socket.once('connect', onConnected);
    }
  });
}

interface HostKeyProblem {
  host: string;
  port: number;
  keyType: string;
  fingerprint: string;
  pinnedFingerprint: string | undefined;
  knownHostsFile: string | undefined;
  knownHostsMissing: boolean;
  known: KnownHostsResult;
}

/** Builds the HOST_KEY_UNKNOWN / HOST_KEY_MISMATCH error, with instructions to pin the key. */
function hostKeyError(p: HostKeyProblem): TachyonError {
  const name = knownHostsName(p.host, p.port);
  const mismatch = p.pinnedFingerprint !== undefined || p.known === 'mismatch';
  const howToPin =
    `If you have verified out of band that ${p.fingerprint} is the server's key (on the server: ` +
    '`ssh-keygen -lf <host key>.pub`), pin it with ' +
    `--host-key-fingerprint ${p.fingerprint}, or add the server's public key to a known_hosts file as ` +
    `"${name} ${p.keyType} <base64 key>".`;
  const details = {
    host: p.host,
    port: p.port,
    keyType: p.keyType,
    fingerprint: p.fingerprint,
    ...(p.pinnedFingerprint !== undefined ? { expectedFingerprint: p.pinnedFingerprint } : {}),
  };
  if (mismatch) {
    const expected =
      p.pinnedFingerprint !== undefined
        ? `the pinned fingerprint ${p.pinnedFingerprint}`
        : `the key recorded for ${name} in ${p.knownHostsFile ?? 'known_hosts'}`;
    return new TachyonError(
      'HOST_KEY_MISMATCH',
      `HOST KEY MISMATCH for ${name}: the server presented a ${p.keyType} key with fingerprint ` +
        `${p.fingerprint}, which does not match ${expected}. Someone may be intercepting the connection, ` +
        `or the server's host key was replaced. ${howToPin}`,
      { details },
    );
  }
  const where =
    p.knownHostsFile === undefined
      ? ''
      : p.knownHostsMissing
        ? ` (known_hosts file ${p.knownHostsFile} does not exist)`
        : ` (no entry for ${name} in ${p.knownHostsFile})`;
  return new TachyonError(
    'HOST_KEY_UNKNOWN',
    `The host key of ${name} is not known${where}: the server presented a ${p.keyType} key with ` +
      `fingerprint ${p.fingerprint}. Tachyon never trusts a key on first use. ${howToPin}`,
    { details },
  );
}
