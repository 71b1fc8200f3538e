/**
 * Fewer round trips before the first control message: pipelined SSH set-up.
 *
 * A stock SSH client waits for an answer at every step after the key exchange: the
 * `ssh-userauth` service, "would this key do?", the signature, the channel, the
 * subsystem, and then the first message on the channel. That is six round trips, 0.6 s on
 * a 100 ms path and more on a lossy one, before a single byte of the file moves. Every
 * step is allowed to be sent without waiting (RFC 4253 §10, RFC 4252 §7 and §5: a server
 * handles messages in order, and a signed request needs no prior query), so our client
 * sends them in two flights:
 *
 *   1. SERVICE_REQUEST + USERAUTH_REQUEST (signed, or the token) + CHANNEL_OPEN
 *   2. CHANNEL_REQUEST (subsystem) + the first control messages (hello, probes)
 *
 * The server still decides each step in order and refuses what it always refused: a
 * CHANNEL_OPEN is served only once authentication has succeeded (it waits while the
 * server checks the key, see {@link holdChannelOpensDuringAuth}); data on a channel
 * whose subsystem is refused is discarded with the channel.
 *
 * ssh2 has no public hook for this, so these functions reach into its `_protocol`
 * (version 1.17, pinned by package-lock). Each checks the shapes it needs first and
 * returns false when they are not there: the caller then takes the ordinary path, one
 * round trip per step. `test/control/pipeline.test.ts` counts the round trips, so an
 * ssh2 upgrade that silently disables this fails a test instead of slowing every transfer.
 */
import type { ClientChannel, ParsedKey } from 'ssh2';

/** The parts of ssh2's Protocol object used here. */
interface ProtocolInternals {
  service(name: string): void;
  authPK(user: string, key: ParsedKey, keyAlgo: string | undefined, sign: (data: Buffer, cb: (sig: Buffer) => void) => void): void;
  authPassword(user: string, password: string): void;
  subsystem(recipient: number, name: string, wantReply: boolean): void;
  _handlers: Record<string, ((...args: unknown[]) => void) | undefined>;
}

interface ChannelManagerInternals {
  _channels: Record<string, unknown>;
}

function clientInternals(client: object): { proto: ProtocolInternals; chanMgr: ChannelManagerInternals } | undefined {
  const c = client as { _protocol?: Partial<ProtocolInternals>; _chanMgr?: Partial<ChannelManagerInternals> };
  const proto = c._protocol;
  const chanMgr = c._chanMgr;
  if (proto === undefined || chanMgr === undefined || typeof chanMgr._channels !== 'object') return undefined;
  if (typeof proto.service !== 'function' || typeof proto.authPK !== 'function' || typeof proto.authPassword !== 'function') return undefined;
  if (typeof proto.subsystem !== 'function' || typeof proto._handlers !== 'object' || proto._handlers === null) return undefined;
  const h = proto._handlers;
  if (typeof h.SERVICE_ACCEPT !== 'function' || typeof h.USERAUTH_FAILURE !== 'function') return undefined;
  return { proto: proto as ProtocolInternals, chanMgr: chanMgr as ChannelManagerInternals };
}

/** How the pipelined client authenticates. */
export type PipelinedCredential = { key: ParsedKey } | { password: string };

export interface ClientPipelineOptions {
  user: string;
  credential: PipelinedCredential;
  /** The server refused the credential (the error ssh2 would report: level `client-authentication`). */
  onAuthFailure(): void;
  /** Called right after the authentication request is written: open the channel here. */
  afterAuth(): void;
}

/**
 * Makes a freshly `connect()`ed ssh2 Client send its authentication request together
 * with the service request, signed at once (no "is this key acceptable?" round trip).
 * Returns false, changing nothing, if ssh2's internals are not as expected.
 */
export function pipelineClientAuth(client: object, o: ClientPipelineOptions): boolean {
  const internals = clientInternals(client);
  if (internals === undefined) return false;
  const { proto } = internals;
  const service = proto.service.bind(proto);
  const handlers = proto._handlers;
  proto.service = (name: string): void => {
    service(name);
    if (name !== 'ssh-userauth') return;
    if ('password' in o.credential) {
      proto.authPassword(o.user, o.credential.password);
    } else {
      const key = o.credential.key;
      // Our server offers rsa-sha2-512 (never SHA-1); other key types have one algorithm.
      const [algo, hash] = key.type === 'ssh-rsa' ? ['rsa-sha2-512', 'sha512'] : [undefined, undefined];
      proto.authPK(o.user, key, algo, (data, cb) => {
        const sig: Buffer | Error = key.sign(data, hash);
        if (sig instanceof Error) {
          o.onAuthFailure();
          return;
        }
        cb(sig);
      });
    }
    o.afterAuth();
  };
  // The request is already on its way: ssh2 would otherwise start its own attempts here.
  handlers.SERVICE_ACCEPT = () => {};
  // ssh2's handler expects an attempt of its own in progress; there is none to retry.
  handlers.USERAUTH_FAILURE = () => o.onAuthFailure();
  return true;
}

/**
 * Calls `onSent(channel)` once the CHANNEL_REQUEST for `subsystem` has been written, so
 * the caller can write on the channel without waiting for the server's answer (which
 * still arrives through the ordinary `subsys()` callback). Returns false, changing
 * nothing, if ssh2's internals are not as expected.
 */
export function onSubsystemRequested(client: object, subsystem: string, onSent: (channel: ClientChannel) => void): boolean {
  const internals = clientInternals(client);
  if (internals === undefined) return false;
  const { proto, chanMgr } = internals;
  const request = proto.subsystem.bind(proto);
  let done = false;
  proto.subsystem = (recipient: number, name: string, wantReply: boolean): void => {
    request(recipient, name, wantReply);
    if (done || name !== subsystem) return;
    for (const ch of Object.values(chanMgr._channels)) {
      const c = ch as Partial<ClientChannel> & { outgoing?: { id?: number; state?: string } };
      if (c !== null && typeof c === 'object' && c.outgoing?.id === recipient && c.outgoing.state === 'open' && typeof c.write === 'function') {
        done = true;
        onSent(c as ClientChannel);
        return;
      }
    }
  };
  return true;
}

/**
 * Server side: a CHANNEL_OPEN that arrives while an authentication attempt is being
 * decided (the client pipelined it behind its signed request) waits for that decision
 * instead of being refused at once; it is then served, or refused as before when the
 * attempt failed. At most `maxHeld` wait per connection; more are refused at once.
 * Returns `release()` (call after each decision), or undefined when ssh2's internals are
 * not as expected (every early CHANNEL_OPEN is then refused, as ssh2 does by default).
 */
export function holdChannelOpensDuringAuth(conn: object, authPending: () => boolean, maxHeld = 2): (() => void) | undefined {
  const proto = (conn as { _protocol?: { _handlers?: Record<string, ((...args: unknown[]) => void) | undefined> } })._protocol;
  const handlers = proto?._handlers;
  const open = handlers?.CHANNEL_OPEN;
  if (handlers === undefined || typeof open !== 'function') return undefined;
  const held: unknown[][] = [];
  handlers.CHANNEL_OPEN = (...args: unknown[]): void => {
    if (authPending() && held.length < maxHeld) held.push(args);
    else open(...args);
  };
  return () => {
    if (authPending()) return;
    for (const args of held.splice(0)) open(...args);
  };
}
