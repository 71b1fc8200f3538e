/**
 * End-to-end harness on the loopback interface: a server (shared UDP Endpoint + Jail)
 * serving sessions with serveSession, and a client running clientTransfer, talking over
 * an in-memory control link and real UDP sockets on 127.0.0.1.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { systemClock, type Clock } from '../../src/core/clock.js';
import type { CipherName, OverwritePolicy, RatePolicy, ResumeLevel } from '../../src/core/types.js';
import type { ControlLink, ControlMessage, Welcome } from '../../src/control/messages.js';
import { memoryLinkPair } from '../../src/testkit/memory-link.js';
import { Jail } from '../../src/transfer/jail.js';
import type { RoleEvents, TransferSummary } from '../../src/transfer/roles.js';
import { clientTransfer, serveSession } from '../../src/transfer/session.js';
import { Endpoint } from '../../src/transport/session/endpoint.js';
import type { DatagramSocket, PeerAddress } from '../../src/transport/socket/types.js';
import { openUdpSocket } from '../../src/transport/socket/udp.js';

/**
 * The system clock, with every pending timer tracked: `pending` reveals timers that
 * outlive their session (a leak), and `dispose` clears them so that a leak cannot keep
 * the test process alive.
 */
export class TrackingClock implements Clock {
  private readonly live = new Set<NodeJS.Timeout>();

  now(): number {
    return systemClock.now();
  }

  setTimer(ms: number, fn: () => void): () => void {
    const t = setTimeout(() => {
      this.live.delete(t);
      fn();
    }, Math.max(0, ms));
    this.live.add(t);
    return () => {
      clearTimeout(t);
      this.live.delete(t);
    };
  }

  get pending(): number {
    return this.live.size;
  }

  dispose(): void {
    for (const t of this.live) clearTimeout(t);
    this.live.clear();
  }
}

export interface Server {
  readonly root: string;
  readonly jail: Jail;
  readonly socket: DatagramSocket;
  readonly endpoint: Endpoint;
  readonly port: number;
  readonly clock: TrackingClock;
  allowedCiphers: CipherName[];
  /** Serves one session on the given control link. */
  serve(link: ControlLink): Promise<TransferSummary | undefined>;
  close(): Promise<void>;
}

export async function startServer(root: string, allowedCiphers: CipherName[] = ['aes-128-gcm', 'aes-256-gcm', 'none']): Promise<Server> {
  const socket = await openUdpSocket({ address: '127.0.0.1', port: 0 });
  // the in-memory control link stands in for an SSH connection from 127.0.0.1: early data from there is held
  const endpoint = new Endpoint(socket, { holdFrom: (address) => address === '127.0.0.1' });
  const clock = new TrackingClock();
  const jail = new Jail(root);
  const server: Server = {
    root: jail.root,
    jail,
    socket,
    endpoint,
    port: socket.local().port,
    clock,
    allowedCiphers,
    serve(link) {
      return serveSession(link, { endpoint, udpPort: server.port, jail, clock, allowedCiphers: server.allowedCiphers, maxRateBps: 2e9 });
    },
    async close() {
      clock.dispose();
      await socket.close();
    },
  };
  return server;
}

export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

export function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

/** A DatagramSocket that records every datagram sent through it. */
export class CapturingSocket implements DatagramSocket {
  readonly sent: Buffer[] = [];
  constructor(readonly inner: DatagramSocket) {}
  send(packets: readonly Uint8Array[], to: PeerAddress): void {
    for (const p of packets) this.sent.push(Buffer.from(p));
    this.inner.send(packets, to);
  }
  onDatagram(handler: (packet: Buffer, from: PeerAddress) => void): void {
    this.inner.onDatagram(handler);
  }
  local(): PeerAddress {
    return this.inner.local();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

export interface TransferOptions {
  op: 'send' | 'recv';
  sources: string[];
  dest: string;
  cipher?: CipherName;
  policy?: RatePolicy;
  targetBps?: number;
  events?: RoleEvents;
  onWelcome?(w: Welcome): void;
  /** called with the client's UDP socket once it is open */
  onSocket?(s: CapturingSocket): void;
  overwrite?: OverwritePolicy;
  resume?: ResumeLevel;
  preserveTimes?: boolean;
  createDir?: boolean;
  srcBase?: string;
  exclude?: string[];
  /** sees every control message the client sends and receives */
  onControl?(direction: 'sent' | 'received', m: ControlMessage): void;
  /**
   * holds every `results` message the client sends or receives back this long (ms), as a
   * lost TCP segment would; one still held when the client's link closes is dropped
   */
  delayResults?: number;
  /** holds every `digests` message the client sends or receives this long (ms), as a lost TCP segment would */
  delayDigests?: number;
  /** holds the first `plan` the client receives, and everything after it, this long (ms): speculation runs that much longer */
  delayPlan?: number;
  /** holds the client's `hello`, and everything after it, this long (ms), as a TCP flight slower than the first datagrams */
  delayHello?: number;
  /** the UDP port the client guesses before welcome (default: the server's; null: no guess, no early data) */
  serverPort?: number | null;
}

export interface RunningTransfer {
  client: Promise<Settled<TransferSummary>>;
  server: Promise<Settled<TransferSummary | undefined>>;
  clientLink: ControlLink;
  clientClock: TrackingClock;
}

/** Starts a client transfer against `server` over a fresh in-memory control link. */
export function startTransfer(server: Server, o: TransferOptions): RunningTransfer {
  const [clientLink, serverLink] = memoryLinkPair();
  const clientClock = new TrackingClock();
  const served = settle(server.serve(serverLink));
  // delayResults: a held `results` message holds back everything after it in its direction
  // (head-of-line blocking, as behind a lost TCP segment), the link's close included
  let linkClosed = false;
  const holder = (type: ControlMessage['t'], delay: number | undefined): ((m: ControlMessage | undefined, deliver: () => void) => void) => {
    const queue: (() => void)[] = [];
    return (m, deliver) => {
      if (delay === undefined || (queue.length === 0 && m?.t !== type)) return deliver();
      queue.push(deliver);
      if (queue.length === 1) {
        setTimeout(() => {
          for (const d of queue.splice(0)) d();
        }, delay).unref();
      }
    };
  };
  const holdResultsIn = holder('results', o.delayResults);
  const holdPlan = holder('plan', o.delayPlan);
  const holdDigestsIn = holder('digests', o.delayDigests);
  const holdIn = (m: ControlMessage | undefined, deliver: () => void): void => holdPlan(m, () => holdResultsIn(m, () => holdDigestsIn(m, deliver)));
  const holdResultsOut = holder('results', o.delayResults);
  const holdHello = holder('hello', o.delayHello);
  const holdDigestsOut = holder('digests', o.delayDigests);
  const holdOut = (m: ControlMessage | undefined, deliver: () => void): void => holdHello(m, () => holdResultsOut(m, () => holdDigestsOut(m, deliver)));
  const watched: ControlLink =
    o.onControl || o.delayResults !== undefined || o.delayPlan !== undefined || o.delayHello !== undefined || o.delayDigests !== undefined
      ? {
          send: (m) => {
            o.onControl?.('sent', m);
            holdOut(m, () => {
              if (!linkClosed) clientLink.send(m);
            });
          },
          onMessage: (h) =>
            clientLink.onMessage((m) => {
              o.onControl?.('received', m);
              holdIn(m, () => {
                if (!linkClosed) h(m);
              });
            }),
          onClose: (h) => clientLink.onClose((err) => holdIn(undefined, () => h(err))),
          close: () => {
            linkClosed = true;
            clientLink.close();
          },
        }
      : clientLink;
  const client = settle(
    clientTransfer({
      link: watched,
      serverAddress: '127.0.0.1',
      ...(o.serverPort !== null ? { serverPort: o.serverPort ?? server.port } : {}),
      clock: clientClock,
      op: o.op,
      cipher: o.cipher ?? 'aes-128-gcm',
      policy: o.policy ?? 'fair',
      targetBps: o.targetBps ?? 1e9,
      minBps: 0,
      datagramSize: 1472,
      sources: o.sources,
      dest: o.dest,
      ...(o.overwrite ? { overwrite: o.overwrite } : {}),
      ...(o.resume ? { resume: o.resume } : {}),
      ...(o.preserveTimes ? { preserveTimes: true } : {}),
      ...(o.createDir ? { createDir: true } : {}),
      ...(o.srcBase !== undefined ? { srcBase: o.srcBase } : {}),
      ...(o.exclude ? { exclude: o.exclude } : {}),
      ...(o.events ? { events: o.events } : {}),
      ...(o.onWelcome ? { onWelcome: o.onWelcome } : {}),
      openSocket: async () => {
        const s = new CapturingSocket(await openUdpSocket({ address: '127.0.0.1', port: 0 }));
        o.onSocket?.(s);
        return new Endpoint(s);
      },
    }),
  );
  return { client, server: served, clientLink, clientClock };
}

/**
 * Runs a transfer to the end; throws if either side failed. `clientTimers` is the
 * number of client timers still pending a moment after the end (0 unless something leaks).
 */
export async function transferOk(
  server: Server,
  o: TransferOptions,
): Promise<{ client: TransferSummary; server: TransferSummary | undefined; clientTimers: number }> {
  const t = startTransfer(server, o);
  const [c, s] = await Promise.all([t.client, t.server]);
  await new Promise((r) => setImmediate(r));
  const clientTimers = t.clientClock.pending;
  t.clientClock.dispose();
  if (!c.ok) throw c.error;
  if (!s.ok) throw s.error;
  return { client: c.value, server: s.value, clientTimers };
}

// ---- file-system helpers ------------------------------------------------------------------

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `tachyon-${prefix}-`));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export function sha256File(p: string): string {
  return createHash('sha256').update(readFileSync(p)).digest('hex');
}

/** Every entry below `dir`: 'd path' for directories, 'f path sha256' for files, sorted. */
export function treeListing(dir: string): string[] {
  const out: string[] = [];
  const walk = (abs: string, rel: string): void => {
    for (const e of readdirSync(abs, { withFileTypes: true })) {
      const a = path.join(abs, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out.push(`d ${r}`);
        walk(a, r);
      } else out.push(`f ${r} ${sha256File(a)}`);
    }
  };
  walk(dir, '');
  return out.sort();
}

/** Paths of leftover temporary files (`*.tachyon-partial`, and resume records) below `dir`. */
export function partials(dir: string): string[] {
  return treeListing(dir).filter((l) => l.includes('.tachyon-partial'));
}

export function exists(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}
