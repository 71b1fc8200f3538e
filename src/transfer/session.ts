/**
 * Session setup on both ends: the client's `hello`, the server's `welcome` with fresh
 * per-direction secrets, then the data plane and the file roles for the direction.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, readdirSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';
import type { Clock } from '../core/clock.js';
import { withCorrelationId } from '../core/correlation.js';
import { TachyonError, isErrorCode, toTachyonError, type ErrorCode } from '../core/errors.js';
import type { CipherName, OverwritePolicy, Permission, RatePolicy, ResumeLevel } from '../core/types.js';
import { PROTOCOL_VERSION, type ControlLink, type ControlMessage, type Hello, type Welcome } from '../control/messages.js';
import { createProtection, SECRET_BYTES } from '../transport/crypto/aead.js';
import { createRateController, type FeedbackSample, type RateController } from '../transport/rate/controller.js';
import type { Endpoint } from '../transport/session/endpoint.js';
import { DataReceiver } from '../transport/session/receiver.js';
import { DataSender } from '../transport/session/sender.js';
import type { PeerAddress } from '../transport/socket/types.js';
import { ExcludeSet } from './exclude.js';
import type { SessionRestriction } from './grant.js';
import { clientPathComponents, type Jail } from './jail.js';
import { normalizeStoragePath } from '../storage/backend.js';
import { Spooler, storageListing, type ReceiverStore } from './store-file.js';
import { DEFAULT_POLICY, needsPlan, type TransferPolicy } from './policy.js';
import {
  initialProbeCount,
  runReceiverRole,
  runSenderRole,
  sendProbes,
  type DestinationResolver,
  type FileOutcome,
  type FileStart,
  type OutgoingFile,
  type Progress,
  type ProbesSent,
  type RoleEvents,
  type TransferSummary,
} from './roles.js';
import { partialPath } from './resume.js';
import { listSources, type Listing } from './sources.js';
import { envelopeOnlyUploads, type SendContent } from './encrypted-content.js';
import { ENVELOPE_EXTENSION } from '../storage/envelope/format.js';

/** TACHYON_TRACE=1: set-up milestones on the server (epoch ms, comparable with the client's trace) */
const TRACE = process.env.TACHYON_TRACE === '1';

export const DEFAULT_DATAGRAM_SIZE = 1472; // 1500-byte MTU minus IPv4 and UDP headers

export interface ServerSessionContext {
  endpoint: Endpoint;
  udpPort: number;
  /** The account's local root (every file the session touches goes through it); absent when `store` is set. */
  jail?: Jail;
  /**
   * The account's storage when it is not a local directory (an s3:// docroot): uploads
   * are written into it (StoreSink); downloads are spooled from it with ranged reads.
   */
  store?: ReceiverStore;
  clock: Clock;
  allowedCiphers: readonly CipherName[];
  /** ceiling on any session's rate, bits/s */
  maxRateBps: number;
  /** what the session's account may do (default: everything) */
  permissions?: readonly Permission[];
  /** rate policies the account may choose (default: all) */
  policies?: readonly RatePolicy[];
  /** uploads must be client-side encrypted envelopes (`.tachyon-enc`); plaintext is refused (ENCRYPTION_REQUIRED) */
  requireEncryptedAtRest?: boolean;
  /**
   * A session limited to one direction and some paths until an expiry (a transfer
   * token): checked at session start and before each file and directory.
   */
  restriction?: SessionRestriction;
  /**
   * Called every KEEPALIVE_MS while the session runs: the data moves over UDP, so the SSH
   * connection would otherwise look idle to its idle timer.
   */
  keepAlive?(): void;
  /**
   * A session is refused (cipher, permission, path, protocol): records it and returns
   * the record's id, which the client's sanitized message then quotes as `(ref …)`.
   */
  onRefuse?(e: TachyonError): string | undefined;
  /** each file's outcome, as it settles */
  onFile?(f: FileOutcome, direction: 'upload' | 'download'): void;
  /** a file's data starts to flow */
  onFileStart?(f: FileStart, direction: 'upload' | 'download'): void;
  /** the session's progress with its data-plane counters, sampled by the role's 250 ms watchdog (never per datagram) */
  onProgress?(p: SessionProgress): void;
  /**
   * Aborting it cancels the session: the client is told `CANCELLED` (with a clear message),
   * the role stops as if the link had closed (a receiver keeps or removes its partial
   * files, never publishes one), and `serveSession` rejects with `CANCELLED`.
   */
  signal?: AbortSignal;
  onEvent?(e: { type: string; [k: string]: unknown }): void;
}

/** Data-plane counters of the server's end of a session (cumulative). */
export interface DataPlaneCounters {
  /** datagrams sent (download) or accepted (upload) */
  datagrams: number;
  /** retransmitted datagrams: known on the sending end only (downloads) */
  retransmits?: number;
  /** duplicate datagrams received (uploads) */
  duplicates?: number;
  /** NAK feedback messages sent (uploads) */
  naksSent?: number;
}

export interface SessionProgress extends Progress {
  direction: 'upload' | 'download';
  data: DataPlaneCounters;
}

export const CANCELLED_MESSAGE = 'The transfer was cancelled on the server.';

/**
 * The link a role runs on, with one more way to close: `cancel()` tells the peer
 * `CANCELLED`, then ends the role through its close handlers (as if the link had closed,
 * with a CANCELLED error) and closes the link.
 */
class CancellableLink implements ControlLink {
  private readonly closeHandlers: ((err?: Error) => void)[] = [];
  private cancelled = false;

  constructor(private readonly inner: ControlLink) {}

  send(msg: ControlMessage): void {
    if (!this.cancelled) this.inner.send(msg);
  }

  onMessage(handler: (msg: ControlMessage) => void): void {
    this.inner.onMessage((m) => {
      if (!this.cancelled) handler(m);
    });
  }

  onClose(handler: (err?: Error) => void): void {
    this.closeHandlers.push(handler);
    this.inner.onClose((err) => {
      if (!this.cancelled) handler(err);
    });
  }

  close(): void {
    this.inner.close();
  }

  cancel(): void {
    if (this.cancelled) return;
    try {
      this.inner.send({ t: 'error', code: 'CANCELLED', message: CANCELLED_MESSAGE });
    } catch {
      // the link is already gone
    }
    this.cancelled = true;
    const err = new TachyonError('CANCELLED', 'the transfer was cancelled on the server', { publicMessage: CANCELLED_MESSAGE });
    for (const h of this.closeHandlers.splice(0)) h(err);
    this.inner.close();
  }
}

/** how often a running session reports activity to its SSH connection */
export const KEEPALIVE_MS = 10_000;

function requirePermission(ctx: ServerSessionContext, p: Permission, what: string): void {
  if (ctx.permissions && !ctx.permissions.includes(p)) {
    throw new TachyonError('PERMISSION', `permission '${p}' missing for ${what}`, {
      publicMessage: `Permission denied: your account may not ${what}.`,
      details: { permission: p },
    });
  }
}

/**
 * A control link whose incoming messages are queued until someone takes them: the
 * session set-up awaits its first message with `next()`, and the file role registers its
 * handler afterwards without losing what arrived in between (the server sends `welcome`
 * and its first announcements back to back).
 */
class QueuedLink implements ControlLink {
  private readonly queue: ControlMessage[] = [];
  private handler: ((msg: ControlMessage) => void) | undefined;
  private waiter: ((msg: ControlMessage) => void) | undefined;

  constructor(private readonly inner: ControlLink) {
    inner.onMessage((m) => {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(m);
      } else if (this.handler) this.handler(m);
      else this.queue.push(m);
    });
  }

  /** The next message, or a rejection when the link closes or the time runs out. */
  next(clock: Clock, timeoutMs: number): Promise<ControlMessage> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const cancel = clock.setTimer(timeoutMs, () => {
        this.waiter = undefined;
        reject(new TachyonError('PROTOCOL', 'no answer within the time limit'));
      });
      this.waiter = (m) => {
        cancel();
        resolve(m);
      };
      this.inner.onClose((err) => {
        cancel();
        reject(err ?? new TachyonError('PEER_VANISHED', 'control connection closed'));
      });
    });
  }

  onMessage(handler: (msg: ControlMessage) => void): void {
    this.handler = handler;
    for (const m of this.queue.splice(0)) handler(m);
  }

  send(msg: ControlMessage): void {
    this.inner.send(msg);
  }

  onClose(handler: (err?: Error) => void): void {
    this.inner.onClose(handler);
  }

  close(): void {
    this.inner.close();
  }
}

function newSessionId(endpoint: Endpoint): number {
  for (;;) {
    const id = randomInt(1, 0xffffffff);
    if (!endpoint.has(id)) return id;
  }
}

/** Serves one control session (one `tachyon-v1` channel) on the server. */
export async function serveSession(raw: ControlLink, ctx: ServerSessionContext): Promise<TransferSummary | undefined> {
  const link = new QueuedLink(raw);
  let hello: ControlMessage;
  try {
    hello = await link.next(ctx.clock, 30_000);
  } catch (err) {
    link.close();
    throw err;
  }
  if (TRACE) process.stderr.write(`trace hello t=${ctx.clock.now().toFixed(1)}\n`);
  const refuse = (e: TachyonError): never => {
    // the refusal is recorded first, so that the client's message can name its record
    const ref = ctx.onRefuse?.(e);
    const shown = ref !== undefined ? withCorrelationId(e, ref) : e;
    link.send({ t: 'error', code: shown.code, message: shown.publicMessage });
    link.close();
    throw shown;
  };
  if (hello.t !== 'hello') return refuse(new TachyonError('PROTOCOL', `expected hello, got ${hello.t}`));
  if (hello.v !== PROTOCOL_VERSION) return refuse(new TachyonError('PROTOCOL', `unsupported protocol version ${hello.v}`));
  if (!ctx.allowedCiphers.includes(hello.cipher)) {
    return refuse(
      new TachyonError('CIPHER_REFUSED', `cipher ${hello.cipher} refused`, {
        publicMessage: `The server does not allow cipher ${hello.cipher}; allowed: ${ctx.allowedCiphers.join(', ')}.`,
      }),
    );
  }
  try {
    ctx.restriction?.checkSession(hello.op === 'send' ? 'upload' : 'download');
    requirePermission(ctx, hello.op === 'send' ? 'write' : 'read', hello.op === 'send' ? 'upload files' : 'download files');
    if (ctx.policies && !ctx.policies.includes(hello.policy)) {
      throw new TachyonError('PERMISSION', `rate policy ${hello.policy} not allowed`, {
        publicMessage: `Your account may not use the ${hello.policy} rate policy; allowed: ${ctx.policies.join(', ')}.`,
        details: { permission: 'policy' },
      });
    }
    if (ctx.store) refuseUnsupportedOnStorage(ctx, hello.op === 'send');
  } catch (err) {
    return refuse(toTachyonError(err));
  }
  // send: the client chose the session id and keys, so that its data could leave before
  // this welcome; the endpoint held what arrived for the id (docs/protocol.md: early data)
  const early = hello.op === 'send' ? hello.early : undefined;
  const idInUse = (): boolean => early !== undefined && ctx.endpoint.has(early.sessionId);
  const busy = (): never =>
    refuse(
      new TachyonError('BUSY', `the session id ${early?.sessionId} the client chose is in use`, {
        publicMessage: 'The session id your client chose is already in use on the server (a rare coincidence); try again.',
      }),
    );
  if (idInUse()) return busy();
  const sessionId = early?.sessionId ?? newSessionId(ctx.endpoint);
  const c2s = early ? Buffer.from(early.c2s, 'base64') : randomBytes(SECRET_BYTES);
  const s2c = early ? Buffer.from(early.s2c, 'base64') : randomBytes(SECRET_BYTES);
  const datagramSize = hello.datagramSize;
  const targetBps = Math.min(hello.targetRate, ctx.maxRateBps);
  const welcome: Welcome = {
    t: 'welcome',
    v: PROTOCOL_VERSION,
    sessionId,
    udpPort: ctx.udpPort,
    cipher: hello.cipher,
    datagramSize,
    keys: { c2s: c2s.toString('base64'), s2c: s2c.toString('base64') },
    maxRate: ctx.maxRateBps,
  };
  const seal = createProtection(hello.cipher, s2c);
  const open = createProtection(hello.cipher, c2s);
  const policy = policyOf(hello);
  const planned = sessionPlanned(hello);
  const direction = hello.op === 'send' ? 'upload' : 'download';
  let counters: () => DataPlaneCounters = () => ({ datagrams: 0 });
  const events: RoleEvents = {
    ...(ctx.onFile ? { onFile: (f: FileOutcome) => ctx.onFile?.(f, direction) } : {}),
    ...(ctx.onFileStart ? { onFileStart: (f: FileStart) => ctx.onFileStart?.(f, direction) } : {}),
    ...(ctx.onProgress ? { onProgress: (p: Progress) => ctx.onProgress?.({ ...p, direction, data: counters() }) } : {}),
  };
  const roleLink = new CancellableLink(link);
  const onAbort = (): void => roleLink.cancel();
  ctx.onEvent?.({ type: 'session.start', sessionId, op: hello.op, cipher: hello.cipher, overwrite: policy.overwrite, resume: policy.resume });
  let stopKeepAlive: (() => void) | undefined;
  if (ctx.keepAlive) {
    const tick = (): void => {
      ctx.keepAlive?.();
      stopKeepAlive = ctx.clock.setTimer(KEEPALIVE_MS, tick);
    };
    stopKeepAlive = ctx.clock.setTimer(KEEPALIVE_MS, tick);
  }
  if (ctx.store) {
    try {
      if (hello.op !== 'send') {
        return await serveStorageDownload(link, ctx, ctx.store, hello, {
          sessionId,
          seal,
          open,
          datagramSize,
          targetBps,
          welcome,
          policy,
          planned,
          refuse,
          events,
          roleLink,
          started: (sender) => {
            const ss = sender.stats;
            counters = () => ({ datagrams: ss.packetsSent, retransmits: ss.retransmits });
            watchAbort(ctx.signal, onAbort);
          },
        });
      }
      let resolve: DestinationResolver;
      try {
        const store = ctx.store;
        const restrict = ctx.restriction;
        const inner = await storageUploadResolver(store, hello, (dir, shown) => {
          requirePermission(ctx, 'mkdir', 'create directories');
          restrict?.check('mkdir', dir, shown);
        });
        // each file (and directory) is checked as it starts: path granted, token not expired
        resolve = restrict
          ? (rel, kind) => {
              const target = inner(rel, kind);
              restrict.check(kind === 'dir' ? 'mkdir' : 'write', target, `/${target}`);
              return target;
            }
          : inner;
      } catch (err) {
        return refuse(toTachyonError(err));
      }
      // the storage look-up above awaited: another session may have taken the id meanwhile
      if (idInUse()) return busy();
      const receiver = new DataReceiver({ endpoint: ctx.endpoint, sessionId, clock: ctx.clock, seal, open, datagramSize });
      if (TRACE) process.stderr.write(`trace receiver up t=${ctx.clock.now().toFixed(1)}\n`);
      const rs = receiver.stats;
      counters = () => ({ datagrams: rs.packets, duplicates: rs.duplicates, naksSent: rs.naksSent });
      link.send(welcome);
      watchAbort(ctx.signal, onAbort);
      return await runReceiverRole({ link: roleLink, receiver, clock: ctx.clock, resolve, policy, planned, store: ctx.store, events });
    } finally {
      ctx.signal?.removeEventListener('abort', onAbort);
      stopKeepAlive?.();
      ctx.onEvent?.({ type: 'session.end', sessionId });
      link.close();
    }
  }
  const jailOrNone = ctx.jail;
  if (jailOrNone === undefined) return refuse(new TachyonError('INTERNAL', 'session without a root'));
  const jail: Jail = jailOrNone;
  // every file the server touches goes through the jail (pinned to verified directories)
  const restrict = ctx.restriction;
  const jailFiles = {
    openTemp: (p: string) => jail.createTemp(p),
    openPartial: (p: string) => jail.openForWrite(jail.display(p), { create: false, read: true }).fd,
    openRead: (p: string) => jail.openAbsForRead(p),
    makeDir: () => {
      // the resolver made the directories, through the jail
    },
  };
  try {
    if (hello.op === 'send') {
      // the client uploads: we receive. Check the destination before anything is set up.
      let resolve: DestinationResolver;
      try {
        const makeDest = (abs: string, shown: string): void => {
          requirePermission(ctx, 'mkdir', 'create directories');
          restrict?.check('mkdir', abs, shown);
          jail.ensureDir(abs, shown);
        };
        const inner = uploadResolver(jail, hello, makeDest);
        resolve = (rel, kind) => {
          const target = inner(rel, kind);
          // each file (and directory) is checked as it starts: path granted, token not expired
          restrict?.check(kind === 'dir' ? 'mkdir' : 'write', target, jail.display(target));
          if (kind === 'dir' || !isDir(path.dirname(target))) requirePermission(ctx, 'mkdir', 'create directories');
          // make the directories here, through the jail (each one checked after it is
          // made), so that the role finds them in place
          if (kind === 'dir') return jail.ensureDir(target, rel);
          return path.join(jail.ensureDir(path.dirname(target), rel), path.basename(target));
        };
      } catch (err) {
        return refuse(toTachyonError(err));
      }
      const receiver = new DataReceiver({ endpoint: ctx.endpoint, sessionId, clock: ctx.clock, seal, open, datagramSize });
      if (TRACE) process.stderr.write(`trace receiver up t=${ctx.clock.now().toFixed(1)}\n`);
      const rs = receiver.stats;
      counters = () => ({ datagrams: rs.packets, duplicates: rs.duplicates, naksSent: rs.naksSent });
      link.send(welcome);
      watchAbort(ctx.signal, onAbort);
      const envelopeOnly = ctx.requireEncryptedAtRest ? envelopeOnlyUploads((abs) => jail.display(abs)) : {};
      return await runReceiverRole({ link: roleLink, receiver, clock: ctx.clock, resolve, policy, planned, ...jailFiles, ...envelopeOnly, events });
    }
    // the client downloads: we send
    let listing: Listing;
    try {
      if (restrict) for (const src of hello.sources ?? []) restrict.check('read', jail.resolve(src), src);
      listing = listJailed(jail, hello);
      if (hello.sources?.some((src) => isDir(jail.resolve(src)))) requirePermission(ctx, 'list', 'list directories');
    } catch (err) {
      return refuse(toTachyonError(err));
    }
    welcome.single = isSingle(hello.sources?.length ?? 0, listing);
    const sender = new DataSender({
      endpoint: ctx.endpoint,
      sessionId,
      clock: ctx.clock,
      seal,
      open,
      datagramSize,
      rate: createRateController({ policy: hello.policy, targetBps, minBps: Math.min(hello.minRate, targetBps) }),
    });
    const ss = sender.stats;
    counters = () => ({ datagrams: ss.packetsSent, retransmits: ss.retransmits });
    link.send(welcome);
    watchAbort(ctx.signal, onAbort);
    return await runSenderRole({
      link: roleLink,
      sender,
      clock: ctx.clock,
      files: listing.files,
      dirs: listing.dirs,
      policy,
      planned,
      openSource: (p) => {
        restrict?.check('read', p, jail.display(p));
        return jail.openAbsForRead(p);
      },
      events,
    });
  } finally {
    ctx.signal?.removeEventListener('abort', onAbort);
    stopKeepAlive?.();
    ctx.onEvent?.({ type: 'session.end', sessionId });
    link.close();
  }
}

/** Calls `onAbort` when the signal aborts (at once if it already has). */
function watchAbort(signal: AbortSignal | undefined, onAbort: () => void): void {
  if (!signal) return;
  if (signal.aborted) queueMicrotask(onAbort);
  else signal.addEventListener('abort', onAbort, { once: true });
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** The receiver's policy as the hello states it (absent fields: ascp's defaults). */
export function policyOf(hello: Hello): TransferPolicy {
  return {
    overwrite: hello.overwrite ?? DEFAULT_POLICY.overwrite,
    resume: hello.resume ?? DEFAULT_POLICY.resume,
    preserveTimes: hello.preserveTimes ?? false,
    createDir: hello.createDir ?? false,
  };
}

/** Whether files are probed and planned before they are sent (both ends compute it alike). */
export function sessionPlanned(hello: Hello): boolean {
  return needsPlan(policyOf(hello)) && !(hello.op === 'recv' && hello.fresh === true);
}

/** True when a transfer is exactly one regular file named by itself (DEST may then name the file). */
function isSingle(sourceCount: number, l: Listing): boolean {
  return sourceCount === 1 && l.files.length === 1 && l.dirs.length === 0 && !l.files[0]!.path.includes('/');
}

function missingDir(shown: string): TachyonError {
  return new TachyonError('NOT_FOUND', `destination directory ${shown} does not exist (--create-dir creates it)`, {
    publicMessage: `The destination directory ${shown} does not exist; pass --create-dir to create it.`,
  });
}

function notADir(shown: string): TachyonError {
  return new TachyonError('EXISTS', `destination ${shown} exists and is not a directory`, {
    publicMessage: `The destination ${shown} exists and is not a directory.`,
  });
}

/**
 * Checks a destination before anything is transferred (README: destinations) and
 * returns whether it is a directory. DEST names the file when one regular file is
 * transferred and DEST is not an existing directory and does not end in '/'; then its
 * parent must exist. Otherwise DEST is a directory that must exist. `--create-dir`
 * creates what is missing.
 */
function prepareDestination(
  dest: string,
  shown: string,
  endsInSlash: boolean,
  single: boolean,
  createDir: boolean,
  mkdirp: (abs: string, shown: string) => void,
): boolean {
  const st = statOrUndefined(dest);
  const destIsDir = st?.isDirectory() === true || endsInSlash || !single;
  if (destIsDir) {
    if (!st) {
      if (!createDir) throw missingDir(shown);
      mkdirp(dest, shown);
    } else if (!st.isDirectory()) throw notADir(shown);
  } else {
    const parent = path.dirname(dest);
    const parentShown = path.posix.dirname(shown.replace(/\/+$/, '')) || '/';
    const pst = statOrUndefined(parent);
    if (!pst) {
      if (!createDir) throw missingDir(parentShown);
      mkdirp(parent, parentShown);
    } else if (!pst.isDirectory()) throw notADir(parentShown);
  }
  return destIsDir;
}

const plainMkdirp = (abs: string): void => {
  mkdirSync(abs, { recursive: true });
};

/**
 * Where an upload's files go on the server. `mkdirp` creates a missing destination
 * directory when the client asked for it (`createDir`); the server passes one that checks
 * the account's permission and makes it through the jail.
 */
export function uploadResolver(jail: Jail, hello: Hello, mkdirp: (abs: string, shown: string) => void = plainMkdirp): DestinationResolver {
  const shown = hello.dest ?? '/';
  const dest = jail.resolve(shown);
  const destIsDir = prepareDestination(dest, shown, shown.endsWith('/'), hello.single === true, hello.createDir === true, mkdirp);
  return (rel, kind) => {
    const comps = jail.components(rel);
    if (comps.length === 0) throw new TachyonError('PATH_INVALID', `empty path '${rel}'`, { publicMessage: 'Invalid path.', details: { reason: 'empty-path' } });
    let target: string;
    // one file to a DEST that names it: DEST, except that an envelope keeps its extension
    // (so that `send --encrypt-at-rest f host:/dir/name` stores name.tachyon-enc)
    if (kind === 'file' && !destIsDir) target = rel.endsWith(ENVELOPE_EXTENSION) && !dest.endsWith(ENVELOPE_EXTENSION) ? dest + ENVELOPE_EXTENSION : dest;
    else target = path.join(dest, ...comps);
    jail.checkInside(target, rel);
    return target;
  };
}

/**
 * What a storage-backed account (an s3:// docroot) cannot do yet, refused before anything
 * is set up rather than silently ignored: uploads for an account that requires
 * client-side encryption (the envelope's header is checked in the
 * temporary file before it is published; a storage backend's upload cannot be read
 * before its commit).
 */
function refuseUnsupportedOnStorage(ctx: ServerSessionContext, upload: boolean): void {
  if (upload && ctx.requireEncryptedAtRest) {
    throw new TachyonError('ENCRYPTION_REQUIRED', 'uploads of an account that requires encryption at rest are not supported on storage-backed docroots yet (the envelope cannot be checked before it is published)', {
      publicMessage: 'This account accepts only client-encrypted files, and its storage cannot check them yet: uploads are refused. Ask the administrator.',
      details: { reason: 'storage-not-supported' },
    });
  }
}

/** A download from a storage-backed account: the objects are listed in the backend and spooled before they are sent. */
async function serveStorageDownload(
  link: QueuedLink,
  ctx: ServerSessionContext,
  store: ReceiverStore,
  hello: Hello,
  s: {
    sessionId: number;
    seal: ReturnType<typeof createProtection>;
    open: ReturnType<typeof createProtection>;
    datagramSize: number;
    targetBps: number;
    welcome: Welcome;
    policy: TransferPolicy;
    planned: boolean;
    refuse: (e: TachyonError) => never;
    events: RoleEvents;
    /** the link the role runs on (cancellable by the monitor) */
    roleLink: ControlLink;
    /** the data sender exists and the welcome went out: counters and cancellation can start */
    started: (sender: DataSender) => void;
  },
): Promise<TransferSummary | undefined> {
  let listing: Listing;
  const toStorage = (p: string): string => normalizeStoragePath(clientPathComponents(p).join('/'));
  try {
    const sources = hello.sources ?? [];
    if (sources.length === 0) throw new TachyonError('USAGE', 'no source paths given', { publicMessage: 'No source paths given.' });
    if (ctx.restriction) for (const src of sources) ctx.restriction.check('read', toStorage(src), src);
    listing = await storageListing(store.backend, sources, {
      toStorage,
      exclude: new ExcludeSet(hello.exclude ?? []),
      ...(hello.srcBase !== undefined ? { srcBase: hello.srcBase } : {}),
    });
    if (listing.dirs.length > 0 || listing.files.some((f) => f.path.includes('/'))) requirePermission(ctx, 'list', 'list directories');
  } catch (err) {
    return s.refuse(toTachyonError(err));
  }
  s.welcome.single = isSingle(hello.sources?.length ?? 0, listing);
  const restrict = ctx.restriction;
  const spooler = await Spooler.create(store.backend);
  try {
    const sender = new DataSender({
      endpoint: ctx.endpoint,
      sessionId: s.sessionId,
      clock: ctx.clock,
      seal: s.seal,
      open: s.open,
      datagramSize: s.datagramSize,
      rate: createRateController({ policy: hello.policy, targetBps: s.targetBps, minBps: Math.min(hello.minRate, s.targetBps) }),
    });
    link.send(s.welcome);
    s.started(sender);
    return await runSenderRole({
      link: s.roleLink,
      sender,
      clock: ctx.clock,
      files: listing.files,
      dirs: listing.dirs,
      policy: s.policy,
      planned: s.planned,
      prepare: restrict
        ? async (f) => {
            // each object is checked again before it is read (the token may have expired)
            restrict.check('read', f.abs, `/${f.abs}`);
            await spooler.prepare(f);
          }
        : spooler.prepare,
      release: spooler.release,
      events: s.events,
    });
  } finally {
    await spooler.close();
  }
}

/**
 * Where an upload's files go in a storage backend (an s3:// docroot): the same rules as
 * {@link uploadResolver} (a destination ending in '/', an existing directory or several
 * files: a directory; `createDir` makes a missing one, after `mkdirAllowed(dir, shown)`
 * checked the permission and any restriction). Client paths pass the jail's checks ({@link clientPathComponents}) and then
 * the storage path rules; nothing can name a key outside the account's prefix.
 */
export async function storageUploadResolver(
  store: ReceiverStore,
  hello: Hello,
  mkdirAllowed: (dir: string, shown: string) => void,
): Promise<DestinationResolver> {
  const shown = hello.dest ?? '/';
  const storagePath = (clientPath: string): string => normalizeStoragePath(clientPathComponents(clientPath).join('/'));
  const dest = storagePath(shown);
  const kindOf = async (p: string): Promise<'file' | 'directory' | undefined> => {
    try {
      return (await store.backend.stat(p)).kind;
    } catch (err) {
      if (err instanceof TachyonError && err.code === 'NOT_FOUND') return undefined;
      throw err;
    }
  };
  const kind = await kindOf(dest);
  const destIsDir = kind === 'directory' || shown.endsWith('/') || hello.single !== true;
  const dirToHave = destIsDir ? dest : dest.slice(0, Math.max(0, dest.lastIndexOf('/')));
  const dirShown = destIsDir ? shown : path.posix.dirname(shown.replace(/\/+$/, '')) || '/';
  const dirKind = destIsDir ? kind : await kindOf(dirToHave);
  if (dirKind === undefined) {
    if (hello.createDir !== true) throw missingDir(dirShown);
    mkdirAllowed(dirToHave, dirShown);
    await store.ensureDir(dirToHave);
  } else if (dirKind !== 'directory') throw notADir(dirShown);
  return (rel, k) => {
    const comps = storagePath(rel);
    if (comps === '') throw new TachyonError('PATH_INVALID', `empty path '${rel}'`, { publicMessage: 'Invalid path.', details: { reason: 'empty-path' } });
    // one file to a DEST that names it: DEST, except that an envelope keeps its extension (as uploadResolver)
    if (k === 'file' && !destIsDir) return rel.endsWith(ENVELOPE_EXTENSION) && !dest.endsWith(ENVELOPE_EXTENSION) ? dest + ENVELOPE_EXTENSION : dest;
    return dest === '' ? comps : `${dest}/${comps}`;
  };
}

/** Where a download's files go on the client (`single`: the server sends one file named by itself). */
export function downloadResolver(destDir: string, single: boolean, createDir = false): DestinationResolver {
  const dest = path.resolve(destDir);
  const destIsDir = prepareDestination(dest, destDir, destDir.endsWith('/') || destDir.endsWith(path.sep), single, createDir, plainMkdirp);
  return (rel) => {
    const comps = rel.split('/').filter((c) => c !== '' && c !== '.');
    if (comps.length === 0 || comps.includes('..') || rel.includes('\0') || rel.startsWith('/')) {
      throw new TachyonError('PATH_INVALID', `server sent an unsafe path '${rel.slice(0, 200)}'`);
    }
    if (!destIsDir && comps.length === 1) return dest;
    const target = path.join(dest, ...comps);
    if (!target.startsWith(dest + path.sep)) throw new TachyonError('PATH_INVALID', `server sent an unsafe path '${rel.slice(0, 200)}'`);
    return target;
  };
}

function statOrUndefined(p: string): Stats | undefined {
  try {
    return statSync(p);
  } catch {
    return undefined;
  }
}

/** The files a download sends, from paths (and a source base) inside the jail. */
function listJailed(jail: Jail, hello: Hello): Listing {
  const sources = hello.sources ?? [];
  if (sources.length === 0) throw new TachyonError('USAGE', 'no source paths given', { publicMessage: 'No source paths given.' });
  const exclude = new ExcludeSet(hello.exclude ?? []);
  return listSources(sources, {
    resolve: (p) => jail.resolve(p),
    ...(hello.srcBase !== undefined ? { srcBase: jail.resolve(hello.srcBase) } : {}),
    exclude,
  });
}

/**
 * True when a download's destination holds nothing to plan around: an empty directory,
 * or a path that does not exist and has no partial file of an earlier run beside it.
 */
function isFresh(dest: string): boolean {
  try {
    return readdirSync(dest).length === 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return false;
    return statOrUndefined(partialPath(dest)) === undefined;
  }
}

// ---- client side ---------------------------------------------------------------------

export interface ClientTransferOptions {
  link: ControlLink;
  /** the server's address as connected (its UDP port comes from `welcome`) */
  serverAddress: string;
  /**
   * When `link` was handed over before its SSH set-up finished (`deferredLink`): the
   * address the control connection ended up on. `serverAddress` is then the first TCP
   * connection's, where an upload's data went until `welcome` (a raced connection to
   * another of the host's addresses may have won).
   */
  connectedAddress?: Promise<string>;
  /**
   * send: the server's UDP port as guessed before `welcome` says it (its TCP port: the
   * same number by convention). With it the data leaves right behind `hello`, under a
   * session id and keys the client chooses (docs/protocol.md: early data).
   */
  serverPort?: number;
  openSocket(remote: PeerAddress): Promise<Endpoint>;
  clock: Clock;
  op: 'send' | 'recv';
  cipher: CipherName;
  policy: RatePolicy;
  targetBps: number;
  minBps: number;
  datagramSize: number;
  /** send: local sources; recv: remote sources */
  sources: string[];
  /** send: remote destination; recv: local destination */
  dest: string;
  /** the receiver's overwrite policy (default `diff`) */
  overwrite?: OverwritePolicy;
  /** resume level (default `none`) */
  resume?: ResumeLevel;
  preserveTimes?: boolean;
  createDir?: boolean;
  /** strip this prefix from source paths (send: a local path; recv: a path on the server) */
  srcBase?: string;
  exclude?: string[];
  events?: RoleEvents;
  onWelcome?(w: Welcome): void;
  /** send: what to send for the listed files instead of their bytes (`--encrypt-at-rest`; see encrypted-content.ts) */
  content?(files: readonly OutgoingFile[]): Promise<SendContent>;
}

export async function clientTransfer(o: ClientTransferOptions): Promise<TransferSummary> {
  const hello: Hello = {
    t: 'hello',
    v: PROTOCOL_VERSION,
    op: o.op,
    cipher: o.cipher,
    policy: o.policy,
    targetRate: o.targetBps,
    minRate: o.minBps,
    datagramSize: o.datagramSize,
    overwrite: o.overwrite ?? DEFAULT_POLICY.overwrite,
    resume: o.resume ?? DEFAULT_POLICY.resume,
  };
  if (o.preserveTimes) hello.preserveTimes = true;
  let local: Listing | undefined;
  let content: SendContent | undefined;
  if (o.op === 'send') {
    const exclude = new ExcludeSet(o.exclude ?? []);
    local = listSources(o.sources, { ...(o.srcBase !== undefined ? { srcBase: path.resolve(o.srcBase) } : {}), exclude });
    if (o.content) {
      content = await o.content(local.files);
      local = { ...local, files: local.files.map((f) => content!.announced(f)) };
    }
    hello.dest = o.dest;
    hello.single = isSingle(o.sources.length, local);
    if (o.createDir) hello.createDir = true;
  } else {
    if (o.sources.length > 10_000) throw new TachyonError('USAGE', 'at most 10000 sources per download');
    new ExcludeSet(o.exclude ?? []); // refuse a bad pattern here, before connecting
    hello.sources = o.sources;
    if (o.srcBase !== undefined) hello.srcBase = o.srcBase;
    if (o.exclude?.length) hello.exclude = o.exclude;
    if (isFresh(path.resolve(o.dest))) hello.fresh = true;
  }
  // send: the client chooses the session id and the keys (fresh random, per direction,
  // delivered over the authenticated SSH channel as the server's would be)
  const early = local && o.serverPort !== undefined ? { sessionId: randomInt(1, 0xffffffff), c2s: randomBytes(SECRET_BYTES), s2c: randomBytes(SECRET_BYTES) } : undefined;
  if (early) hello.early = { sessionId: early.sessionId, c2s: early.c2s.toString('base64'), s2c: early.s2c.toString('base64') };
  const planned = sessionPlanned(hello);
  const link = new QueuedLink(o.link);
  link.send(hello);
  // the first probes travel right behind hello: their plan comes back with welcome
  let probed: ProbesSent | undefined;
  if (local && planned) probed = sendProbes(link, local.files, 0, initialProbeCount(local.files.length));
  if (early && local && o.serverPort !== undefined) {
    return sendEarly(o, { hello, early, link, local, planned, port: o.serverPort, ...(probed ? { probed } : {}), ...(content ? { content } : {}) });
  }
  const w = await link.next(o.clock, 30_000);
  if (w.t === 'error') throw new TachyonError(toCode(w.code), w.message, { publicMessage: w.message });
  if (w.t !== 'welcome') throw new TachyonError('PROTOCOL', `expected welcome, got ${w.t}`);
  o.onWelcome?.(w);
  let resolve: DestinationResolver | undefined;
  if (o.op === 'recv') {
    try {
      resolve = downloadResolver(o.dest, w.single === true, o.createDir === true);
    } catch (err) {
      const e = toTachyonError(err);
      link.send({ t: 'error', code: e.code, message: e.publicMessage });
      link.close();
      throw e;
    }
  }
  const policy = policyOf(hello);
  if (o.createDir) policy.createDir = true;
  const peer = { address: o.connectedAddress ? await o.connectedAddress : o.serverAddress, port: w.udpPort };
  const endpoint = await o.openSocket(peer);
  const c2s = Buffer.from(w.keys.c2s, 'base64');
  const s2c = Buffer.from(w.keys.s2c, 'base64');
  const seal = createProtection(w.cipher, c2s);
  const open = createProtection(w.cipher, s2c);
  const events = o.events ? { events: o.events } : {};
  try {
    if (local) {
      const sender = new DataSender({
        endpoint,
        sessionId: w.sessionId,
        clock: o.clock,
        seal,
        open,
        datagramSize: w.datagramSize,
        peer,
        rate: createRateController({ policy: o.policy, targetBps: Math.min(o.targetBps, w.maxRate), minBps: o.minBps }),
      });
      return await runSenderRole({ link, sender, clock: o.clock, files: local.files, dirs: local.dirs, policy, planned, ...(probed ? { probed } : {}), ...(content ? { content } : {}), ...events });
    }
    const receiver = new DataReceiver({ endpoint, sessionId: w.sessionId, clock: o.clock, seal, open, datagramSize: w.datagramSize, peer });
    return await runReceiverRole({ link, receiver, clock: o.clock, resolve: resolve!, policy, planned, ...events });
  } finally {
    await endpoint.socket.close();
  }
}

/** A rate controller under a ceiling that arrives later (the server's `maxRate`, in `welcome`). */
class CappedRate implements RateController {
  cap = Infinity;
  constructor(private readonly inner: RateController) {}
  onFeedback(f: FeedbackSample): void {
    this.inner.onFeedback(f);
  }
  rateBps(): number {
    return Math.min(this.inner.rateBps(), this.cap);
  }
}

/**
 * An upload whose data leaves right behind `hello` (docs/protocol.md: early data): the
 * data plane opens towards the guessed port under the session id and keys the client
 * chose, and the sending role starts at once (a planned session sends its first file
 * speculatively); `welcome` then confirms the id and keys and gives the real port and
 * the server's rate ceiling.
 */
async function sendEarly(
  o: ClientTransferOptions,
  s: {
    hello: Hello;
    early: { sessionId: number; c2s: Buffer; s2c: Buffer };
    link: QueuedLink;
    local: Listing;
    planned: boolean;
    port: number;
    probed?: ProbesSent;
    content?: SendContent;
  },
): Promise<TransferSummary> {
  const { link, early } = s;
  // welcome is the first answer: take it before the role takes the link
  const welcomed = link.next(o.clock, 30_000);
  welcomed.catch(() => {});
  const guess = { address: o.serverAddress, port: s.port };
  const endpoint = await o.openSocket(guess);
  let sender: DataSender | undefined;
  try {
    const rate = new CappedRate(createRateController({ policy: o.policy, targetBps: o.targetBps, minBps: o.minBps }));
    sender = new DataSender({
      endpoint,
      sessionId: early.sessionId,
      clock: o.clock,
      seal: createProtection(o.cipher, early.c2s),
      open: createProtection(o.cipher, early.s2c),
      datagramSize: o.datagramSize,
      peer: guess,
      rate,
    });
    const policy = policyOf(s.hello);
    if (o.createDir) policy.createDir = true;
    const role = runSenderRole({
      link,
      sender,
      clock: o.clock,
      files: s.local.files,
      dirs: s.local.dirs,
      policy,
      planned: s.planned,
      speculate: true,
      ...(s.probed ? { probed: s.probed } : {}),
      ...(s.content ? { content: s.content } : {}),
      ...(o.events ? { events: o.events } : {}),
    });
    role.catch(() => {});
    let w: ControlMessage;
    try {
      w = await welcomed;
      if (w.t === 'error') throw new TachyonError(toCode(w.code), w.message, { publicMessage: w.message });
      if (w.t !== 'welcome') throw new TachyonError('PROTOCOL', `expected welcome, got ${w.t}`);
      const e = s.hello.early!;
      if (w.sessionId !== early.sessionId || w.keys.c2s !== e.c2s || w.keys.s2c !== e.s2c || w.cipher !== o.cipher || w.datagramSize !== o.datagramSize) {
        throw new TachyonError('PROTOCOL', 'the welcome does not confirm the session id, keys, cipher and datagram size the client chose');
      }
    } catch (err) {
      // the role ends with the link (its sender stops); the welcome's error is the one to report
      link.close();
      throw err;
    }
    o.onWelcome?.(w);
    rate.cap = Math.min(o.targetBps, w.maxRate);
    // another data port (or address) than guessed: what went to the guess is lost, and asked for again
    const address = o.connectedAddress ? await o.connectedAddress : guess.address;
    if (w.udpPort !== guess.port || address !== guess.address) sender.redirect({ address, port: w.udpPort });
    return await role;
  } finally {
    sender?.close();
    await endpoint.socket.close();
  }
}

function toCode(code: string): ErrorCode {
  return isErrorCode(code) ? code : 'PROTOCOL';
}
