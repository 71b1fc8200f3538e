/**
 * A simulated data-plane flow for deterministic protocol tests: one DataSender and one
 * DataReceiver, each on its own Endpoint over a SimNetwork socket, wired directly (no
 * control link): `assign` on the sender gives the first SSN, the receiver expects the
 * file there, and `start` lets the blocks go. Everything runs on a SimClock.
 */
import type { CipherName, RatePolicy } from '../../src/core/types.js';
import type { Clock } from '../../src/core/clock.js';
import { SimClock, SimNetwork, type LinkConfig } from '../../src/testkit/index.js';
import { createProtection, SECRET_BYTES } from '../../src/transport/crypto/aead.js';
import { createRateController, type RateController } from '../../src/transport/rate/controller.js';
import { Endpoint } from '../../src/transport/session/endpoint.js';
import { DataReceiver, type BlockSink } from '../../src/transport/session/receiver.js';
import { DataSender, type BlockSource } from '../../src/transport/session/sender.js';
import type { PeerAddress } from '../../src/transport/socket/types.js';
import { Rng } from './rng.js';

export const DATAGRAM = 1472;

/** Reads blocks from an in-memory buffer. */
export class MemorySource implements BlockSource {
  reads = 0;
  constructor(readonly data: Buffer) {}
  read(offset: number, len: number, out: Buffer, at: number): void {
    if (offset < 0 || offset + len > this.data.length) throw new RangeError(`read [${offset}, ${offset + len}) beyond ${this.data.length}`);
    this.reads++;
    this.data.copy(out, at, offset, offset + len);
  }
}

/**
 * Stores blocks in memory and checks every write against the expected bytes the
 * moment it happens, so a single wrong byte is caught even if a later write fixes it.
 */
export class CheckingSink implements BlockSink {
  readonly out: Buffer;
  writes = 0;
  bytes = 0;
  /** writes whose bytes differ from the source, or that fall outside the file */
  bad = 0;
  firstBad: string | undefined;
  /** `marks[p]`: virtual time at which p percent of the file had been written */
  readonly marks: number[] = [];

  constructor(
    readonly expected: Buffer,
    private readonly now: () => number = () => 0,
  ) {
    this.out = Buffer.alloc(expected.length);
    this.marks[0] = Number.NaN;
  }

  write(offset: number, data: Buffer): void {
    this.writes++;
    const end = offset + data.length;
    if (offset < 0 || end > this.expected.length || !data.equals(this.expected.subarray(offset, end))) {
      this.bad++;
      this.firstBad ??= `write of ${data.length} bytes at ${offset}`;
      return;
    }
    data.copy(this.out, offset);
    this.bytes += data.length;
    const size = this.expected.length;
    while (this.marks.length <= 100 && this.bytes >= (this.marks.length * size) / 100) this.marks.push(this.now());
  }
}

/** Records every write (for tests where nothing may be written at all). */
export class RecordingSink implements BlockSink {
  readonly writes: { offset: number; length: number }[] = [];
  write(offset: number, data: Buffer): void {
    this.writes.push({ offset, length: data.length });
  }
}

/** Deterministic pseudo-random content. */
export function contentFor(size: number, seed: number): Buffer {
  return new Rng(seed).bytes(size);
}

export interface FlowOptions {
  net: SimNetwork;
  clock: SimClock;
  sender: PeerAddress;
  receiver: PeerAddress;
  sessionId?: number;
  /** the files to send, in order (one buffer each) */
  files: Buffer[];
  cipher?: CipherName;
  policy?: RatePolicy;
  /** ceiling (adaptive) or the rate itself (fixed), bits/s */
  targetBps?: number;
  minBps?: number;
  initialBps?: number;
  /** replaces the rate controller built from policy/targetBps */
  rate?: RateController;
  datagramSize?: number;
  feedbackMs?: number;
  /** seed of the per-direction secrets */
  keySeed?: number;
  /** the receiver learns of the files this long after the sender starts (a delayed `files` message), ms */
  announceDelayMs?: number;
  /** the receiver's clock (default `clock`): one that reads differently models a skewed host */
  receiverClock?: Clock;
  /** the sender's tail parity (default on) */
  tailParity?: boolean;
}

export interface FlowFile {
  readonly id: number;
  readonly data: Buffer;
  readonly source: MemorySource;
  readonly sink: CheckingSink;
  completedAt: number | undefined;
}

export interface Flow {
  sender: DataSender;
  receiver: DataReceiver;
  senderEndpoint: Endpoint;
  receiverEndpoint: Endpoint;
  files: FlowFile[];
  /** the first (often only) file's sink */
  sink: CheckingSink;
  /** total bytes of all files */
  totalBytes: number;
  /** virtual time at which `start` was called */
  startedAt: number;
  /** virtual time at which the last file completed, undefined while running */
  completedAt: number | undefined;
  writeErrors: unknown[];
  /** announce and send every file (assign, addFile, start) */
  start(): void;
  close(): Promise<void>;
}

/** Builds a sender/receiver pair over two fresh sockets on `net` (nothing is sent until start()). */
export function createFlow(o: FlowOptions): Flow {
  const { net, clock } = o;
  const cipher = o.cipher ?? 'aes-128-gcm';
  const keys = new Rng(o.keySeed ?? 12345);
  const secretA = keys.bytes(SECRET_BYTES); // sender -> receiver
  const secretB = keys.bytes(SECRET_BYTES); // receiver -> sender
  const sessionId = o.sessionId ?? 0x5eed0001;
  const datagramSize = o.datagramSize ?? DATAGRAM;
  const sSock = net.socket(o.sender.address, o.sender.port);
  const rSock = net.socket(o.receiver.address, o.receiver.port);
  const senderEndpoint = new Endpoint(sSock);
  const receiverEndpoint = new Endpoint(rSock);
  const rate =
    o.rate ??
    createRateController({
      policy: o.policy ?? 'fair',
      targetBps: o.targetBps ?? 100e6,
      minBps: o.minBps ?? 1e6,
      ...(o.initialBps !== undefined ? { initialBps: o.initialBps } : {}),
    });
  const sender = new DataSender({
    endpoint: senderEndpoint,
    sessionId,
    clock,
    seal: createProtection(cipher, secretA),
    open: createProtection(cipher, secretB),
    rate,
    datagramSize,
    peer: rSock.local(),
    ...(o.tailParity !== undefined ? { tailParity: o.tailParity } : {}),
  });
  const receiver = new DataReceiver({
    endpoint: receiverEndpoint,
    sessionId,
    clock: o.receiverClock ?? clock,
    seal: createProtection(cipher, secretB),
    open: createProtection(cipher, secretA),
    datagramSize,
    ...(o.feedbackMs !== undefined ? { feedbackMs: o.feedbackMs } : {}),
  });
  const files: FlowFile[] = o.files.map((data, i) => ({
    id: 100 + i,
    data,
    source: new MemorySource(data),
    sink: new CheckingSink(data, () => clock.now()),
    completedAt: undefined,
  }));
  if (files.length === 0) throw new RangeError('createFlow: no files');
  const flow: Flow = {
    sender,
    receiver,
    senderEndpoint,
    receiverEndpoint,
    files,
    sink: files[0]!.sink,
    totalBytes: o.files.reduce((a, b) => a + b.length, 0),
    startedAt: Number.NaN,
    completedAt: undefined,
    writeErrors: [],
    start() {
      flow.startedAt = clock.now();
      const ssn0 = files.map((f) => sender.assign(f.id, f.data.length));
      sender.lastFileAssigned();
      const announce = (): void => files.forEach((f, i) => receiver.addFile(f.id, ssn0[i]!, f.data.length, f.sink));
      if (o.announceDelayMs === undefined) announce();
      else clock.setTimer(o.announceDelayMs, announce);
      for (const f of files) sender.start(f.id, f.source);
    },
    async close() {
      sender.close();
      receiver.close();
      await sSock.close();
      await rSock.close();
    },
  };
  receiver.onFileComplete = (id) => {
    const f = files.find((x) => x.id === id);
    if (!f || f.completedAt !== undefined) return;
    f.completedAt = clock.now();
    if (files.every((x) => x.completedAt !== undefined)) flow.completedAt = clock.now();
  };
  receiver.onWriteError = (_id, err) => flow.writeErrors.push(err);
  return flow;
}

/** Addresses used by the simulated tests. */
export const HOST_A = '10.0.0.1';
export const HOST_B = '10.0.0.2';

export interface PathSetup {
  clock: SimClock;
  net: SimNetwork;
}

/** A fresh clock and network with the given forward (A→B) and reverse (B→A) links. */
export function simPath(seed: number, forward: LinkConfig, reverse: LinkConfig = { delayMs: forward.delayMs }): PathSetup {
  const clock = new SimClock();
  const net = new SimNetwork(clock, { seed });
  net.link(HOST_A, HOST_B, forward);
  net.link(HOST_B, HOST_A, reverse);
  return { clock, net };
}

/** Calls `fn` every `periodMs` of virtual time until the returned function is called. */
export function every(clock: SimClock, periodMs: number, fn: () => void): () => void {
  let cancel: (() => void) | undefined;
  let stopped = false;
  const arm = (): void => {
    cancel = clock.setTimer(periodMs, () => {
      if (stopped) return;
      fn();
      arm();
    });
  };
  arm();
  return () => {
    stopped = true;
    cancel?.();
  };
}

/** Runs the clock until every flow's file is complete or `maxMs` passes; returns true on completion. */
export function runToCompletion(clock: SimClock, flows: readonly Flow[], maxMs: number): boolean {
  return clock.runUntil(() => flows.every((f) => f.completedAt !== undefined), maxMs);
}

/** Payload bytes per datagram for a datagram size and AEAD overhead. */
export function payloadPerDatagram(datagramSize: number, overhead = 16): number {
  return datagramSize - 24 - overhead;
}

/** Mbit/s, rounded to 0.1, for messages. */
export function mbps(bps: number): string {
  return `${(bps / 1e6).toFixed(1)} Mbit/s`;
}
