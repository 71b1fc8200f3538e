/**
 * Session setup on both ends: the client's `hello`, the server's `welcome` with fresh
 * per-direction secrets, then the data plane and the file roles for the direction.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { lstatSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Clock } from '../core/clock.js';
import { TachyonError, isErrorCode, toTachyonError, type ErrorCode } from '../core/errors.js';
import type { CipherName, Permission, RatePolicy } from '../core/types.js';
import { PROTOCOL_VERSION, type ControlLink, type ControlMessage, type Hello, type Welcome } from '../control/messages.js';
import { createProtection, SECRET_BYTES } from '../transport/crypto/aead.js';
import { createRateController } from '../transport/rate/controller.js';
import type { Endpoint } from '../transport/session/endpoint.js';
import { DataReceiver } from '../transport/session/receiver.js';
import { DataSender } from '../transport/session/sender.js';
import type { PeerAddress } from '../transport/socket/types.js';
import type { Jail } from './jail.js';
import { runReceiverRole, runSenderRole, type FileOutcome, type OutgoingFile, type RoleEvents, type TransferSummary } from './roles.js';

export const DEFAULT_DATAGRAM_SIZE = 1472; // 1500-byte MTU minus IPv4 and UDP headers

export interface ServerSessionContext {
  endpoint: Endpoint;
  udpPort: number;
  jail: Jail;
  clock: Clock;
  allowedCiphers: readonly CipherName[];
  /** ceiling on any session's rate, bits/s */
  maxRateBps: number;
  /** what the session's account may do (default: everything) */
  permissions?: readonly Permission[];
  /** rate policies the account may choose (default: all) */
  policies?: readonly RatePolicy[];
  /**
   * Called every KEEPALIVE_MS while the session runs: the data moves over UDP, so the SSH
   * connection would otherwise look idle to its idle timer.
   */
  keepAlive?(): void;
  /** each file's outcome, as it settles */
  onFile?(f: FileOutcome, direction: 'upload' | 'download'): void;
  onEvent?(e: { type: string; [k: string]: unknown }): void;
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
  const refuse = (e: TachyonError): never => {
    link.send({ t: 'error', code: e.code, message: e.publicMessage });
    link.close();
    throw e;
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
    requirePermission(ctx, hello.op === 'send' ? 'write' : 'read', hello.op === 'send' ? 'upload files' : 'download files');
    if (ctx.policies && !ctx.policies.includes(hello.policy)) {
      throw new TachyonError('PERMISSION', `rate policy ${hello.policy} not allowed`, {
        publicMessage: `Your account may not use the ${hello.policy} rate policy; allowed: ${ctx.policies.join(', ')}.`,
        details: { permission: 'policy' },
      });
    }
  } catch (err) {
    return refuse(toTachyonError(err));
  }
  const sessionId = newSessionId(ctx.endpoint);
  const c2s = randomBytes(SECRET_BYTES);
  const s2c = randomBytes(SECRET_BYTES);
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
  ctx.onEvent?.({ type: 'session.start', sessionId, op: hello.op, cipher: hello.cipher });
  let stopKeepAlive: (() => void) | undefined;
  if (ctx.keepAlive) {
    const tick = (): void => {
      ctx.keepAlive?.();
      stopKeepAlive = ctx.clock.setTimer(KEEPALIVE_MS, tick);
    };
    stopKeepAlive = ctx.clock.setTimer(KEEPALIVE_MS, tick);
  }
  const direction = hello.op === 'send' ? 'upload' : 'download';
  const events = ctx.onFile ? { onFile: (f: FileOutcome) => ctx.onFile?.(f, direction) } : undefined;
  try {
    if (hello.op === 'send') {
      // the client uploads: we receive. Check the destination before anything is set up.
      let resolve: (rel: string, kind: 'file' | 'dir') => string;
      try {
        const inner = uploadResolver(ctx.jail, hello);
        resolve = (rel, kind) => {
          const target = inner(rel, kind);
          if (kind === 'dir' || !isDir(path.dirname(target))) requirePermission(ctx, 'mkdir', 'create directories');
          // make the directories here, through the jail (each one checked after it is
          // made), so that the role's own `mkdir -p` finds them in place
          if (kind === 'dir') return ctx.jail.ensureDir(target, rel);
          return path.join(ctx.jail.ensureDir(path.dirname(target), rel), path.basename(target));
        };
      } catch (err) {
        return refuse(toTachyonError(err));
      }
      const receiver = new DataReceiver({ endpoint: ctx.endpoint, sessionId, clock: ctx.clock, seal, open, datagramSize });
      link.send(welcome);
      return await runReceiverRole({ link, receiver, clock: ctx.clock, resolve, openTemp: (p) => ctx.jail.createTemp(p), ...(events ? { events } : {}) });
    }
    // the client downloads: we send
    let listing: { files: OutgoingFile[]; dirs: string[] };
    try {
      listing = listSources(ctx.jail, hello.sources ?? []);
      if (hello.sources?.some((src) => isDir(ctx.jail.resolve(src)))) requirePermission(ctx, 'list', 'list directories');
    } catch (err) {
      return refuse(toTachyonError(err));
    }
    const sender = new DataSender({
      endpoint: ctx.endpoint,
      sessionId,
      clock: ctx.clock,
      seal,
      open,
      datagramSize,
      rate: createRateController({ policy: hello.policy, targetBps, minBps: Math.min(hello.minRate, targetBps) }),
    });
    link.send(welcome);
    return await runSenderRole({
      link,
      sender,
      clock: ctx.clock,
      files: listing.files,
      dirs: listing.dirs,
      openSource: (p) => ctx.jail.openAbsForRead(p),
      ...(events ? { events } : {}),
    });
  } finally {
    stopKeepAlive?.();
    ctx.onEvent?.({ type: 'session.end', sessionId });
    link.close();
  }
}

/** Where an upload's files go on the server (see README: destination rules). */
export function uploadResolver(jail: Jail, hello: Hello): (rel: string, kind: 'file' | 'dir') => string {
  const dest = jail.resolve(hello.dest ?? '/');
  const destIsDir = isDir(dest) || (hello.dest ?? '/').endsWith('/');
  return (rel, kind) => {
    const comps = jail.components(rel);
    if (comps.length === 0) throw new TachyonError('PATH_INVALID', `empty path '${rel}'`, { publicMessage: 'Invalid path.', details: { reason: 'empty-path' } });
    let target: string;
    if (hello.single && kind === 'file' && !destIsDir) target = dest;
    else target = path.join(dest, ...comps);
    jail.checkInside(target, rel);
    return target;
  };
}

/** Where a download's files go on the client. */
export function downloadResolver(destDir: string, singleSource: boolean): (rel: string, kind: 'file' | 'dir') => string {
  const dest = path.resolve(destDir);
  const destIsDir = isDir(dest) || destDir.endsWith('/') || destDir.endsWith(path.sep);
  return (rel) => {
    const comps = rel.split('/').filter((c) => c !== '' && c !== '.');
    if (comps.length === 0 || comps.includes('..') || rel.includes('\0') || rel.startsWith('/')) {
      throw new TachyonError('PATH_INVALID', `server sent an unsafe path '${rel.slice(0, 200)}'`);
    }
    if (singleSource && comps.length === 1 && !destIsDir) return dest;
    const target = path.join(dest, ...comps);
    if (!target.startsWith(dest + path.sep)) throw new TachyonError('PATH_INVALID', `server sent an unsafe path '${rel.slice(0, 200)}'`);
    return target;
  };
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Expands local or jailed source paths into files (and empty directories) to send. */
export function listLocal(sources: readonly string[], resolve: (p: string) => string = (p) => path.resolve(p)): {
  files: OutgoingFile[];
  dirs: string[];
} {
  const files: OutgoingFile[] = [];
  const dirs: string[] = [];
  for (const src of sources) {
    const abs = resolve(src);
    let st;
    try {
      st = statSync(abs);
    } catch (err) {
      throw new TachyonError('NOT_FOUND', `source ${src} does not exist`, { cause: err, publicMessage: `Source ${src} does not exist.` });
    }
    const base = path.basename(abs) || 'root';
    if (st.isFile()) {
      files.push({ path: base, abs, size: st.size, mtimeMs: st.mtimeMs });
    } else if (st.isDirectory()) {
      walk(abs, base, files, dirs);
    } else {
      throw new TachyonError('USAGE', `source ${src} is neither a file nor a directory`);
    }
  }
  return { files, dirs };
}

function walk(absDir: string, rel: string, files: OutgoingFile[], dirs: string[]): void {
  const entries = readdirSync(absDir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
  if (entries.length === 0) dirs.push(rel);
  for (const e of entries) {
    const abs = path.join(absDir, e.name);
    const r = `${rel}/${e.name}`;
    if (e.isDirectory()) walk(abs, r, files, dirs);
    else if (e.isFile()) {
      const st = lstatSync(abs);
      files.push({ path: r, abs, size: st.size, mtimeMs: st.mtimeMs });
    }
    // symbolic links and special files are not followed
  }
}

function listSources(jail: Jail, sources: readonly string[]): { files: OutgoingFile[]; dirs: string[] } {
  if (sources.length === 0) throw new TachyonError('USAGE', 'no source paths given');
  return listLocal(sources, (p) => jail.resolve(p));
}

// ---- client side ---------------------------------------------------------------------

export interface ClientTransferOptions {
  link: ControlLink;
  /** the server's address as connected (its UDP port comes from `welcome`) */
  serverAddress: string;
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
  events?: RoleEvents;
  onWelcome?(w: Welcome): void;
}

export async function clientTransfer(o: ClientTransferOptions): Promise<TransferSummary> {
  const local = o.op === 'send' ? listLocal(o.sources) : undefined;
  const hello: Hello = {
    t: 'hello',
    v: PROTOCOL_VERSION,
    op: o.op,
    cipher: o.cipher,
    policy: o.policy,
    targetRate: o.targetBps,
    minRate: o.minBps,
    datagramSize: o.datagramSize,
  };
  if (o.op === 'send') {
    hello.dest = o.dest;
    hello.single = o.sources.length === 1 && local!.files.length === 1 && local!.dirs.length === 0 && local!.files[0]!.path.indexOf('/') < 0;
  } else {
    hello.sources = o.sources;
  }
  const link = new QueuedLink(o.link);
  link.send(hello);
  const w = await link.next(o.clock, 30_000);
  if (w.t === 'error') throw new TachyonError(toCode(w.code), w.message, { publicMessage: w.message });
  if (w.t !== 'welcome') throw new TachyonError('PROTOCOL', `expected welcome, got ${w.t}`);
  o.onWelcome?.(w);
  const peer = { address: o.serverAddress, port: w.udpPort };
  const endpoint = await o.openSocket(peer);
  const c2s = Buffer.from(w.keys.c2s, 'base64');
  const s2c = Buffer.from(w.keys.s2c, 'base64');
  const seal = createProtection(w.cipher, c2s);
  const open = createProtection(w.cipher, s2c);
  try {
    if (o.op === 'send') {
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
      return await runSenderRole({ link, sender, clock: o.clock, files: local!.files, dirs: local!.dirs, ...(o.events ? { events: o.events } : {}) });
    }
    const receiver = new DataReceiver({ endpoint, sessionId: w.sessionId, clock: o.clock, seal, open, datagramSize: w.datagramSize, peer });
    const resolve = downloadResolver(o.dest, o.sources.length === 1);
    return await runReceiverRole({ link, receiver, clock: o.clock, resolve, ...(o.events ? { events: o.events } : {}) });
  } finally {
    await endpoint.socket.close();
  }
}

function toCode(code: string): ErrorCode {
  return isErrorCode(code) ? code : 'PROTOCOL';
}
