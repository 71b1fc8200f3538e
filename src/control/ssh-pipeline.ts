/**
 * Fewer round trips before the first control message: pipelined SSH set-up.
 *
 * A stock SSH client waits for an answer at every step after the key exchange: the
 * `ssh-userauth` service, "would this key do?", the signature, the channel, the
 * subsystem, and then the first message on the channel. That is six round trips, 0.6 s on
 * a 100 ms path and more on a lossy one, before a single byte of the file moves. Every
 * step may be sent without waiting (RFC 4253 §10, RFC 4252 §7: a server handles messages
 * in order, and a signed request needs no prior query), so our client sends them all in
 * one flight:
 *
 *   SERVICE_REQUEST + USERAUTH_REQUEST (signed, or the token) + CHANNEL_OPEN
 *     + CHANNEL_REQUEST (subsystem) + the first control messages (hello, probes)
 *
 * The last two name the server's channel number, which the client only learns from the
 * CHANNEL_OPEN_CONFIRMATION: a Tachyon server that announces `Tachyon_2` or later in its
 * version string numbers the first channel of a connection 0 and holds every
 * connection-layer message that arrives while it decides on an authentication request
 * (see {@link holdConnectionMessagesDuringAuth}), so the client sends them at once. With
 * another server it waits for the confirmation (one more round trip), and if the server
 * refuses a channel opened before authentication succeeded, opens it again afterwards.
 *
 * The server still decides each step in order and refuses what it always refused: the
 * held messages are handled only after the decision, as if they had arrived then, so a
 * channel is served only to an authenticated client; data on a channel whose subsystem
 * is refused is discarded with the channel.
 *
 * ssh2 has no public hook for this, so these functions reach into its `_protocol` and
 * `_chanMgr` (version 1.17, pinned by package-lock). Each checks the shapes it needs
 * first and returns false when they are not there: the caller then takes the ordinary
 * path, one round trip per step. `test/control/pipeline.test.ts` counts the round trips,
 * so an ssh2 upgrade that silently disables this fails a test instead of slowing every
 * transfer.
 */
import { Duplex } from 'node:stream';
import type { ClientChannel, ParsedKey } from 'ssh2';

/** The first version of our server that numbers channels from 0 and holds early connection messages. */
const EARLY_CHANNEL_VERSION = 2;

/** The parts of ssh2's Protocol object used here. */
interface ProtocolInternals {
  service(name: string): void;
  authPK(user: string, key: ParsedKey, keyAlgo: string | undefined, sign: (data: Buffer, cb: (sig: Buffer) => void) => void): void;
  authPassword(user: string, password: string): void;
  subsystem(recipient: number, name: string, wantReply: boolean): void;
  channelData(recipient: number, data: Buffer): void;
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
  if (typeof proto.subsystem !== 'function' || typeof proto.channelData !== 'function' || typeof proto._handlers !== 'object' || proto._handlers === null) return undefined;
  const h = proto._handlers;
  if (typeof h.SERVICE_ACCEPT !== 'function' || typeof h.USERAUTH_FAILURE !== 'function') return undefined;
  return { proto: proto as ProtocolInternals, chanMgr: chanMgr as ChannelManagerInternals };
}

/** How the pipelined client authenticates. */
export type PipelinedCredential = { key: ParsedKey } | { password: string };

export interface ClientPipelineOptions {
  user: string;
  credential: PipelinedCredential;
  subsystem: string;
  /** The server refused the credential (the error ssh2 would report: level `client-authentication`). */
  onAuthFailure(): void;
  /** Called right after the authentication request is written: open the channel here (`client.subsys`). */
  openChannel(): void;
  /**
   * The first control messages may be written now, on `stream`: the subsystem channel, or
   * (with a `Tachyon_2` server) a stand-in that sends them ahead of the channel's confirmation
   * and carries the channel once it exists.
   */
  onStream(stream: Duplex): void;
}

/** What {@link pipelineClient} installed. */
export interface ClientPipeline {
  /** Whether the subsystem request and the first messages went in the authentication flight. */
  readonly earlyChannel: () => boolean;
}

/** The version number in a `Tachyon_N` software version, or 0. */
function tachyonVersion(software: unknown): number {
  const m = typeof software === 'string' ? /^Tachyon_(\d+)/.exec(software) : null;
  return m ? Number(m[1]) : 0;
}

function findChannel(chanMgr: ChannelManagerInternals, recipient: number): ClientChannel | undefined {
  for (const ch of Object.values(chanMgr._channels)) {
    const c = ch as Partial<ClientChannel> & { outgoing?: { id?: number; state?: string } };
    if (c !== null && typeof c === 'object' && c.outgoing?.id === recipient && c.outgoing.state === 'open' && typeof c.write === 'function') {
      return c as ClientChannel;
    }
  }
  return undefined;
}

/**
 * Makes a freshly `connect()`ed ssh2 Client send its authentication request signed at once
 * (no "is this key acceptable?" round trip) together with the service request, open the
 * channel in the same flight and write the first control messages with the subsystem
 * request (see the module comment). Returns undefined, changing nothing, if ssh2's
 * internals are not as expected.
 */
export function pipelineClient(client: object, o: ClientPipelineOptions): ClientPipeline | undefined {
  const internals = clientInternals(client);
  if (internals === undefined) return undefined;
  const { proto, chanMgr } = internals;
  const service = proto.service.bind(proto);
  const request = proto.subsystem.bind(proto);
  const handlers = proto._handlers;
  let early: EarlyChannelStream | undefined;
  let handedOver = false;
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
    o.openChannel();
    if (tachyonVersion((client as { _remoteVer?: unknown })._remoteVer) >= EARLY_CHANNEL_VERSION) {
      // the server's first channel is number 0, and it holds these until it has decided
      request(0, o.subsystem, true);
      early = new EarlyChannelStream((chunk) => proto.channelData(0, chunk));
      handedOver = true;
      o.onStream(early);
    }
  };
  // ssh2 asks for the subsystem once the channel is confirmed
  proto.subsystem = (recipient: number, name: string, wantReply: boolean): void => {
    if (name !== o.subsystem || (handedOver && early === undefined)) {
      request(recipient, name, wantReply);
      return;
    }
    const ch = findChannel(chanMgr, recipient);
    if (early !== undefined) {
      // already requested in the first flight: the answer to that request is this one's
      if (recipient !== 0) request(recipient, name, wantReply);
      if (ch === undefined) early.destroy(new Error('the subsystem channel is not open'));
      else if (recipient !== 0) early.destroy(new Error(`the server numbered the channel ${recipient}, not 0: the first messages were lost`));
      else early.attach(ch);
      return;
    }
    request(recipient, name, wantReply);
    if (!handedOver && ch !== undefined) {
      handedOver = true;
      o.onStream(ch);
    }
  };
  // The request is already on its way: ssh2 would otherwise start its own attempts here.
  handlers.SERVICE_ACCEPT = () => {};
  // ssh2's handler expects an attempt of its own in progress; there is none to retry.
  handlers.USERAUTH_FAILURE = () => o.onAuthFailure();
  return { earlyChannel: () => early !== undefined };
}

/** Most bytes written ahead of the channel's confirmation (the server's smallest packet limit is larger). */
const EARLY_BYTES = 16 * 1024;

/**
 * The subsystem channel before it exists: what is written goes out at once as channel
 * data for channel 0 (up to {@link EARLY_BYTES}; more waits), and once ssh2 has the channel
 * (`attach`), everything goes through it, with its flow control, in both directions.
 */
class EarlyChannelStream extends Duplex {
  private channel: ClientChannel | undefined;
  private earlyBytes = 0;
  private readonly waiting: { chunk: Buffer; cb: (err?: Error | null) => void }[] = [];
  private ended = false;

  constructor(private readonly raw: (chunk: Buffer) => void) {
    super();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.channel !== undefined) {
      this.toChannel(this.channel, chunk, cb);
      return;
    }
    if (this.waiting.length === 0 && this.earlyBytes + chunk.length <= EARLY_BYTES) {
      this.earlyBytes += chunk.length;
      this.raw(chunk);
      cb();
      return;
    }
    this.waiting.push({ chunk, cb });
  }

  private toChannel(ch: ClientChannel, chunk: Buffer, cb: (err?: Error | null) => void): void {
    if (ch.write(chunk)) cb();
    else ch.once('drain', () => cb());
  }

  override _read(): void {
    this.channel?.resume();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.channel !== undefined) this.channel.end();
    else this.ended = true;
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.channel?.destroy();
    for (const w of this.waiting.splice(0)) w.cb(err ?? new Error('closed'));
    cb(err);
  }

  /** The channel is confirmed: carry it from now on. */
  attach(ch: ClientChannel): void {
    if (this.destroyed) {
      ch.destroy();
      return;
    }
    this.channel = ch;
    // the server's window already holds what was sent ahead
    const out = (ch as { outgoing?: { window?: unknown } }).outgoing;
    if (out !== undefined && typeof out.window === 'number') out.window -= this.earlyBytes;
    ch.on('data', (d: Buffer) => {
      if (!this.push(d)) ch.pause();
    });
    ch.on('end', () => this.push(null));
    ch.on('close', () => this.destroy());
    ch.on('error', (e: Error) => this.destroy(e));
    for (const w of this.waiting.splice(0)) this.toChannel(ch, w.chunk, w.cb);
    if (this.ended) ch.end();
  }
}

/** Connection-layer messages a server holds while it decides on an authentication request. */
const HELD_MESSAGES = [
  'CHANNEL_OPEN',
  'CHANNEL_OPEN_CONFIRMATION',
  'CHANNEL_OPEN_FAILURE',
  'CHANNEL_REQUEST',
  'CHANNEL_SUCCESS',
  'CHANNEL_FAILURE',
  'CHANNEL_DATA',
  'CHANNEL_EXTENDED_DATA',
  'CHANNEL_WINDOW_ADJUST',
  'CHANNEL_EOF',
  'CHANNEL_CLOSE',
  'GLOBAL_REQUEST',
] as const;

/**
 * Server side: connection-layer messages (channel open, requests, data …) that arrive
 * while an authentication request is being decided (a client pipelined them behind its
 * signed request) wait for that decision, in order, instead of being refused or dropped
 * at once; they are then handled as if they had just arrived: served after a success,
 * refused as before after a failure. At most `maxHeld` messages and `maxBytes` of channel
 * data wait per connection; past that, what waits is handled at once (unauthenticated:
 * refused or ignored, as ssh2 does). Returns `release()` (call after each decision), or
 * undefined when ssh2's internals are not as expected (early messages are then refused or
 * ignored, as ssh2 does by default).
 */
export function holdConnectionMessagesDuringAuth(
  conn: object,
  authPending: () => boolean,
  limits: { maxHeld: number; maxBytes: number } = { maxHeld: 16, maxBytes: 64 * 1024 },
): (() => void) | undefined {
  const proto = (conn as { _protocol?: { _handlers?: Record<string, ((...args: unknown[]) => void) | undefined> } })._protocol;
  const handlers = proto?._handlers;
  if (handlers === undefined || HELD_MESSAGES.some((m) => typeof handlers[m] !== 'function')) return undefined;
  const held: { run: () => void }[] = [];
  let heldBytes = 0;
  const drain = (): void => {
    heldBytes = 0;
    for (const h of held.splice(0)) h.run();
  };
  for (const name of HELD_MESSAGES) {
    const handle = handlers[name]!;
    handlers[name] = (...args: unknown[]): void => {
      if (!authPending() && held.length === 0) {
        handle(...args);
        return;
      }
      const data = args[2];
      heldBytes += Buffer.isBuffer(data) ? data.length : 0;
      held.push({ run: () => handle(...args) });
      if (held.length > limits.maxHeld || heldBytes > limits.maxBytes) drain();
    };
  }
  return () => {
    if (!authPending()) drain();
  };
}
