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
 * Before that, the client guesses the key exchange ({@link guessKeyExchange}): its KEXINIT
 * and curve25519 share go with its version string, one round trip less again.
 *
 * ssh2 has no public hook for this, so these functions reach into its `_protocol` and
 * `_chanMgr` (version 1.17, pinned by package-lock). Each checks the shapes it needs
 * first and returns false when they are not there: the caller then takes the ordinary
 * path, one round trip per step. `test/control/pipeline.test.ts` counts the round trips,
 * so an ssh2 upgrade that silently disables this fails a test instead of slowing every
 * transfer.
 */
import { generateKeyPairSync, randomFillSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { ClientChannel, ParsedKey } from 'ssh2';
import type { Flights } from './flights.js';

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

/** The key exchanges the client may guess (its first choice): curve25519, by either name. */
const GUESSABLE_KEX = ['curve25519-sha256', 'curve25519-sha256@libssh.org'];
const MSG_KEXINIT = 20;
const MSG_KEX_ECDH_INIT = 30;

/** The parts of ssh2's Protocol object the key-exchange guess uses (ssh2 1.17). */
interface KexInternals {
  start: (() => void) | undefined;
  _server: boolean;
  _onWrite(data: Buffer): void;
  _offer: { totalSize: number; copyAllTo(buf: Buffer, offset: number): void; lists: { kex: { array: string[] }; serverHostKey: { array: string[] } } };
  /** ssh2's NullCipher until NEWKEYS: `allocPacket` frames a payload (length, padding) */
  _cipher: { outSeqno: number; allocPacket(payloadLen: number): Buffer; encrypt(packet: Buffer): void };
  _kexinit: Buffer | undefined;
  _kex: { type?: unknown; negotiated?: { kex?: unknown }; _remoteKexinit?: unknown; _keys?: unknown } | undefined;
}

function kexInternals(client: object): KexInternals | undefined {
  const p = (client as { _protocol?: Partial<KexInternals> })._protocol;
  if (p === undefined || p._server !== false || typeof p.start !== 'function' || typeof p._onWrite !== 'function') return undefined;
  const offer = p._offer;
  if (offer === undefined || typeof offer.totalSize !== 'number' || typeof offer.copyAllTo !== 'function') return undefined;
  if (!Array.isArray(offer.lists?.kex?.array) || !Array.isArray(offer.lists?.serverHostKey?.array)) return undefined;
  const cipher = p._cipher;
  if (cipher === undefined || typeof cipher.encrypt !== 'function' || typeof cipher.allocPacket !== 'function' || typeof cipher.outSeqno !== 'number' || cipher.outSeqno !== 0) return undefined;
  return p as KexInternals;
}

/** The first `count` name-lists of a KEXINIT payload, each as its first name ('' if empty or malformed). */
function firstNames(kexinit: Buffer, count: number): string[] {
  const out: string[] = [];
  let pos = 17;
  for (let i = 0; i < count; i++) {
    if (pos + 4 > kexinit.length) return out;
    const len = kexinit.readUInt32BE(pos);
    pos += 4;
    if (pos + len > kexinit.length) return out;
    out.push(kexinit.toString('latin1', pos, pos + len).split(',')[0] ?? '');
    pos += len;
  }
  return out;
}

/** The first version of our server that uses a right guess (see {@link honourKexGuess}). */
const KEX_GUESS_VERSION = 3;

/** Whether a KEXINIT's first key exchange and host key algorithms are `kex` and `hostKey` (RFC 4253 §7.1: a right guess). */
function firstChoicesAre(kexinit: unknown, kex: string, hostKey: string | undefined): boolean {
  if (!Buffer.isBuffer(kexinit) || hostKey === undefined) return false;
  const [k, h] = firstNames(kexinit, 2);
  return k === kex && h === hostKey;
}

/**
 * Whether the server used our guessed KEX_ECDH_INIT. RFC 4253 §7.1 (OpenSSH, and our
 * server since `Tachyon_3`): the guess is right when both sides' first key exchange and
 * first host key algorithms are the same. A stock ssh2 server (`ssh2js`, and ours before
 * `Tachyon_3`) skips every guessed packet (lib/protocol/kex.js compares the negotiated
 * name with a character of it), so the client sends its own again. Sending it again when
 * the server used the first, or not when it skipped it, would break the exchange.
 */
function guessUsed(p: KexInternals, guessed: string, software: unknown): boolean {
  const kex = p._kex;
  if (kex === undefined || kex.negotiated?.kex !== guessed || kex.type !== '25519' || !('_keys' in kex)) return false;
  const sw = typeof software === 'string' ? software : '';
  if (sw.startsWith('ssh2js')) return false;
  const tachyon = tachyonVersion(sw);
  if (sw.startsWith('Tachyon_') && tachyon < KEX_GUESS_VERSION) return false;
  return firstChoicesAre(kex._remoteKexinit, guessed, p._offer.lists.serverHostKey.array[0]);
}

/**
 * Server side: use a client's right guess (RFC 4253 §7.1). ssh2 1.17's server marks every
 * packet that follows a KEXINIT with `first_kex_packet_follows` for skipping, right guess
 * or not (it compares the negotiated name with its first character); the client would
 * then wait for an answer to a key share the server threw away. When the key exchange is
 * set up (ssh2 assigns `_kex`), this clears that mark if the client's first key exchange
 * and host key algorithms are the server's first ones. Call on the `connection` event,
 * before the client's KEXINIT is parsed. Returns false, changing nothing, when ssh2's
 * internals are not as expected (guessed packets are then skipped, as stock ssh2 does).
 */
export function honourKexGuess(conn: object): boolean {
  const p = (conn as { _protocol?: Record<string, unknown> })._protocol;
  if (p === undefined || p._server !== true || !('_kex' in p) || typeof p._skipNextInboundPacket !== 'boolean') return false;
  let kex: unknown = p._kex;
  Object.defineProperty(p, '_kex', {
    configurable: true,
    enumerable: true,
    get: () => kex,
    set: (v: unknown) => {
      kex = v;
      if (p._skipNextInboundPacket !== true || v === null || typeof v !== 'object') return;
      const ex = v as { _remoteKexinit?: unknown; _kexinit?: unknown; negotiated?: { kex?: unknown } };
      if (!Buffer.isBuffer(ex._kexinit) || typeof ex.negotiated?.kex !== 'string') return;
      const [kexName, hostKey] = firstNames(ex._kexinit, 2);
      if (kexName === ex.negotiated.kex && firstChoicesAre(ex._remoteKexinit, kexName, hostKey)) p._skipNextInboundPacket = false;
    },
  });
  return true;
}

/** What {@link guessKeyExchange} installed. */
export interface KexGuess {
  /** `right`: the server used the guessed packet (one round trip saved); `wrong`: it ignored it; `pending`: not known yet. */
  readonly outcome: () => 'right' | 'wrong' | 'pending';
}

/**
 * One round trip less before the key exchange completes: the client sends its KEXINIT and
 * its curve25519 share (KEX_ECDH_INIT, with `first_kex_packet_follows` set) right behind
 * its version string, instead of waiting for the server's version and KEXINIT (RFC 4253
 * §7: each side may guess the other's method). The server answers all three at once with
 * its reply and NEWKEYS, so the authentication flight leaves after two round trips of
 * TCP data instead of three.
 *
 * ssh2's client never guesses, so this writes the two packets itself, then takes the
 * place of ssh2's own: its KEXINIT is not written (ours stands in the exchange hash), and
 * its KEX_ECDH_INIT is not written when the server used ours (our key pair is handed to
 * its key exchange); when the server ignored ours (another method, or another first
 * choice), ssh2's goes out as usual. Packet sequence numbers count what went on the wire.
 * Call right after `client.connect()` (before ssh2 writes its version string). Returns
 * undefined, changing nothing, when ssh2's internals are not as expected or the client's
 * first choice is not curve25519.
 */
export function guessKeyExchange(client: object): KexGuess | undefined {
  const p = kexInternals(client);
  const guessed = p?._offer.lists.kex.array[0];
  if (p === undefined || guessed === undefined || !GUESSABLE_KEX.includes(guessed)) return undefined;
  const start = p.start!;
  const cipher = p._cipher;
  const encrypt = cipher.encrypt.bind(cipher);

  const kexinit = Buffer.alloc(1 + 16 + p._offer.totalSize + 1 + 4);
  kexinit[0] = MSG_KEXINIT;
  randomFillSync(kexinit, 1, 16);
  p._offer.copyAllTo(kexinit, 17);
  kexinit[kexinit.length - 5] = 1; // first_kex_packet_follows; reserved uint32 stays 0
  const keys: { publicKey: KeyObject; privateKey: KeyObject } = generateKeyPairSync('x25519');
  const share = keys.publicKey.export({ type: 'spki', format: 'der' }).subarray(-32);
  const ecdhInit = Buffer.alloc(1 + 4 + share.length);
  ecdhInit[0] = MSG_KEX_ECDH_INIT;
  ecdhInit.writeUInt32BE(share.length, 1);
  share.copy(ecdhInit, 5);

  let outcome: 'right' | 'wrong' | 'pending' = 'pending';
  let step: 'kexinit' | 'ecdh' | 'done' = 'kexinit';
  p.start = (): void => {
    start();
    // framed as ssh2 frames every packet before NEWKEYS (length, padding), not counted:
    // ssh2's own KEXINIT and share take these sequence numbers below
    for (const payload of [kexinit, ecdhInit]) {
      const packet = cipher.allocPacket(payload.length);
      payload.copy(packet, 5);
      p._onWrite(packet);
    }
  };
  cipher.encrypt = (packet: Buffer): void => {
    const type = packet[5];
    if (step === 'kexinit' && type === MSG_KEXINIT) {
      // ours went first: it is the one the exchange hash covers
      step = 'ecdh';
      p._kexinit = kexinit;
      cipher.outSeqno = (cipher.outSeqno + 1) >>> 0;
      return;
    }
    if (step === 'ecdh' && type === MSG_KEX_ECDH_INIT) {
      step = 'done';
      cipher.outSeqno = (cipher.outSeqno + 1) >>> 0; // our guessed packet
      if (guessUsed(p, guessed, (client as { _remoteVer?: unknown })._remoteVer)) {
        outcome = 'right';
        p._kex!._keys = keys;
        return;
      }
      outcome = 'wrong';
    }
    encrypt(packet);
  };
  return { outcome: () => outcome };
}

/** The parts of ssh2's Protocol object that writing one message needs (ssh2 1.17). */
interface WriteInternals {
  _packetRW: { write: { allocStart: number; alloc(payloadLen: number): Buffer; finalize(packet: Buffer): Buffer } };
  _cipher: { encrypt(packet: Buffer): void };
  _kexinit: unknown;
}

const MSG_IGNORE = 2;

/**
 * Sends SSH_MSG_IGNORE with empty data (RFC 4253 §11.2: every implementation must accept
 * and ignore it) on an ssh2 Client or server Connection. Returns false, sending nothing,
 * when a key exchange is under way or ssh2's internals are not as expected.
 */
export function sendIgnore(ssh: object): boolean {
  const p = (ssh as { _protocol?: Partial<WriteInternals> })._protocol;
  const w = p?._packetRW?.write;
  if (p === undefined || w === undefined || typeof w.alloc !== 'function' || typeof w.finalize !== 'function' || typeof w.allocStart !== 'number') return false;
  if (typeof p._cipher?.encrypt !== 'function' || p._kexinit !== undefined) return false;
  const start = w.allocStart;
  const packet = w.alloc(5);
  packet[start] = MSG_IGNORE;
  packet.writeUInt32BE(0, start + 1);
  p._cipher.encrypt(w.finalize(packet));
  return true;
}

/** how long after a guarded flight has been written its guard leaves (ms) */
const GUARD_GAP_MS = 10;

/**
 * Sends a guard segment (an SSH IGNORE) a moment after the flight `flights` is gathering
 * now has been written. A set-up flight is one TCP segment and often the only one in
 * flight: lost, it waits for a tail-loss probe, which with one segment outstanding comes
 * at 2 RTT + 200 ms (0.8 s on a 300 ms path). With a segment behind it, its loss shows a
 * round trip later, by the acknowledgement of what followed (RACK). The client guards its
 * authentication flight (with `hello`), the server its answer (with `welcome`).
 */
export function guardFlight(ssh: object, flights: Flights, socket: Socket, onSent?: () => void): void {
  flights.afterFlight(() => {
    setTimeout(() => {
      if (socket.destroyed) return;
      if (sendIgnore(ssh)) {
        flights.flush();
        onSent?.();
      }
    }, GUARD_GAP_MS).unref();
  });
}
