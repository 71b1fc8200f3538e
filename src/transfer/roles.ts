/**
 * The file-level protocol on top of the data plane (docs/protocol.md, "Files").
 *
 * The sending role lists files, asks the receiver what it holds when the policy needs
 * that (`probe` → `plan`), announces files (`files`, each with its SSN range, which
 * starts at the resume offset) and feeds their blocks to the DataSender, then sends each
 * file's whole SHA-256 (`digests`). The receiving role decides per file (overwrite
 * policy, resume), stores blocks under a temporary name, verifies the SHA-256 and only
 * then renames the file to its final name (`results`).
 *
 * Every per-file message is an entry of a batched message, and nothing waits for an
 * answer per file: many small files flow through one session with no round trip each.
 */
import type { Hash } from 'node:crypto';
import { constants, lstatSync, openSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { lutimes, rename } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../core/clock.js';
import { TachyonError, isErrorCode, toTachyonError, type ErrorCode } from '../core/errors.js';
import type { Announce, ControlLink, ControlMessage, Decline, PlanEntry, ProbeEntry, ResultEntry, VoidRange } from '../control/messages.js';
import type { DataReceiver } from '../transport/session/receiver.js';
import type { DataSender } from '../transport/session/sender.js';
import { checkRanges, decide, sampleRanges, type SkipReason, type TransferPolicy } from './policy.js';
import { hashRanges, JobQueue, openNoFollow, partialPath, readRecord, removeRecord, writeRecord, type ReadOpener } from './resume.js';
import { Batcher, BATCH_BYTES, BATCH_ENTRIES, directoryMaker, pathCost, RxFile, TxSource, WorkQueue, type TempFiles } from './role-kit.js';
import { createTempFile } from './local-file.js';
import { StoreSink, hashStoredRanges, type ReceiverStore } from './store-file.js';
import type { SendContent, TxBlocks } from './encrypted-content.js';

export interface OutgoingFile {
  /** relative path with '/' separators, as the receiver will see it */
  path: string;
  abs: string;
  size: number;
  mtimeMs: number;
  atimeMs?: number;
  /** the local file's size when what is sent is derived from it (`--encrypt-at-rest`: `size` is the envelope's) */
  plainSize?: number;
}

export type FileStatus = 'done' | 'skipped' | 'failed';

export interface FileOutcome {
  path: string;
  size: number;
  /** verified and in place, or skipped by policy */
  ok: boolean;
  status: FileStatus;
  sha256?: string;
  code?: string;
  message?: string;
  /** the receiver's local path of a file it stored (set on the receiving side) */
  local?: string;
  /** why a file was skipped: the destination exists (`never`), is not older, or is the same */
  reason?: SkipReason;
  /** file bytes carried over UDP: what follows the resume offset (0 when skipped) */
  sentBytes: number;
  /** file bytes not carried: the resumed prefix, or the whole file when skipped */
  skippedBytes: number;
  /** from the file's announcement (or decision) to its result */
  elapsedMs: number;
}

export interface FileStart {
  path: string;
  size: number;
  /** resume offset: bytes the receiver already holds */
  offset: number;
}

export interface Progress {
  bytes: number;
  totalBytes: number;
  files: number;
  totalFiles: number;
  rateBps: number;
  elapsedMs: number;
}

export interface RoleEvents {
  onProgress?(p: Progress): void;
  /** a file's data starts to flow */
  onFileStart?(f: FileStart): void;
  /** a file is settled: verified, skipped or failed */
  onFile?(f: FileOutcome): void;
}

export interface TransferSummary {
  files: FileOutcome[];
  /** file bytes carried over UDP for the files that were verified */
  bytes: number;
  /** file bytes not carried: skipped files and resumed prefixes */
  skippedBytes: number;
  elapsedMs: number;
  ok: boolean;
  /** data-plane counters of this side, and control messages sent and received */
  stats?: Record<string, number>;
}

/** files announced ahead of their results (their sources open only when read) */
const ANNOUNCE_AHEAD_FILES = 1024;
/** files from this size on send their digest by datagram too (a lost TCP segment costs them a retransmission timeout) */
const UDP_DIGEST_MIN_BYTES = 1 << 20;
/** most bytes of the speculative first file sent before its plan (the receiver holds 32 MiB of blocks it was not told of) */
const SPECULATE_MAX_BYTES = 24 * 1024 * 1024;
/** files probed ahead of their results */
const PROBE_AHEAD_FILES = 4096;
/** per-file entries (results, digests) wait this long for company before they are sent */
const BATCH_MS = 5;
/** files a receiver accepts in flight (probed or announced, not settled) before it calls the sender broken */
const MAX_RECEIVER_IN_FLIGHT = 4 * PROBE_AHEAD_FILES;
/** concurrent digest computations (resume and compare) */
const HASH_JOBS = 2;
const TRACE = process.env.TACHYON_TRACE === '1';
const VANISH_MS = 30_000;
/** the receiver refreshes resume records of files in progress this often */
const RECORD_EVERY_MS = 1000;

export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** Counts the messages a role sends and handles (reported in the summary's stats). */
class CountingLink {
  sent = 0;
  received = 0;
  constructor(readonly inner: ControlLink) {}
  send(m: ControlMessage): void {
    this.sent++;
    this.inner.send(m);
  }
}

/** Probes sent before the sending role started (pipelined behind `hello`). */
export interface ProbesSent {
  /** files [0, files) are probed */
  files: number;
  messages: number;
}

/**
 * Sends probes for files [from, until) in batches; returns the new probe frontier and
 * the number of messages. The client calls it right behind `hello` so that the first
 * plan comes back with `welcome`.
 */
export function sendProbes(link: Pick<ControlLink, 'send'>, files: readonly OutgoingFile[], from: number, until: number): ProbesSent {
  let batch: ProbeEntry[] = [];
  let bytes = 0;
  let messages = 0;
  const flush = (): void => {
    if (batch.length) {
      link.send({ t: 'probe', files: batch });
      messages++;
    }
    batch = [];
    bytes = 0;
  };
  const end = Math.min(files.length, until);
  for (let id = from; id < end; id++) {
    const f = files[id]!;
    batch.push({ id, path: f.path, size: f.size, mtimeMs: f.mtimeMs });
    bytes += pathCost(f.path);
    if (batch.length >= BATCH_ENTRIES || bytes >= BATCH_BYTES) flush();
  }
  flush();
  return { files: Math.max(from, end), messages };
}

export function initialProbeCount(files: number): number {
  return Math.min(files, PROBE_AHEAD_FILES);
}

// ---- sending role --------------------------------------------------------------------

const enum Tx {
  Listed,
  Probed,
  Checking,
  Queued,
  Announced,
  Settled,
}

interface TxFile {
  id: number;
  f: OutgoingFile;
  state: Tx;
  offset: number;
  prefix: Hash | undefined;
  source: TxBlocks | undefined;
  since: number;
  /** our SHA-256 of the file, once every block was sent */
  sha256?: string;
  /** settled by the receiver's `verified` feedback, ahead of its `results` message */
  settledEarly?: boolean;
  /** sent speculatively before its plan: the first SSN it was assigned (until it is announced or abandoned) */
  preassigned?: number;
  /** every block of the speculative file was sent before it was announced (its digest is due at the announcement) */
  sentEarly?: boolean;
}

export interface SenderRoleOptions {
  link: ControlLink;
  sender: DataSender;
  clock: Clock;
  files: OutgoingFile[];
  dirs?: string[];
  policy: TransferPolicy;
  /** the receiver plans each file (probe/plan) before it is announced */
  planned: boolean;
  /** probes already sent before the role started (pipelined behind hello) */
  probed?: ProbesSent;
  /**
   * Planned sessions: send the first probed file's blocks (from offset 0, at the start of
   * the stream) before its plan arrives, as if the plan said `send`; a plan that says
   * otherwise turns the blocks sent into a void range (docs/protocol.md: early data).
   */
  speculate?: boolean;
  /** Opens a file to send or to hash (default: a plain open; the server pins it in its jail). */
  openSource?: (abs: string) => number;
  /**
   * Makes a file readable at `f.abs` before it is sent or hashed (a storage-backed account
   * fetches the object into a local spool file); called at most once per file, files in
   * order. The file's blocks are not sent before it resolves; a rejection fails the session.
   */
  prepare?: (f: OutgoingFile) => Promise<void>;
  /** The file is settled (or the session ends): what `prepare` made can go. */
  release?: (f: OutgoingFile) => void;
  /** what is sent for each file (default: its own bytes; `--encrypt-at-rest`: its envelope, see encrypted-content.ts) */
  content?: SendContent;
  events?: RoleEvents;
  vanishMs?: number;
}

/** Runs the sending role until every file has a result (verified, skipped or failed). */
export function runSenderRole(opts: SenderRoleOptions): Promise<TransferSummary> {
  const { sender, clock, files, policy } = opts;
  const link = new CountingLink(opts.link);
  const started = clock.now();
  const n = files.length;
  const totalBytes = files.reduce((a, f) => a + f.size, 0);
  const tx: TxFile[] = files.map((f, id) => ({ id, f, state: Tx.Listed, offset: 0, prefix: undefined, source: undefined, since: started }));
  const outcomes: FileOutcome[] = [];
  const queue: number[] = [];
  let queueHead = 0;
  let probed = opts.probed?.files ?? 0;
  let decided = 0;
  let settled = 0;
  let inflight = 0;
  let sentDone = 0;
  let skippedBytes = 0;
  let endSent = false;
  /** the file sent speculatively, until its plan arrives */
  let spec: TxFile | undefined;
  /** blocks sent speculatively that a plan then did not want (the void range) */
  let voidBlocks = 0;
  const jobs = new JobQueue(HASH_JOBS);
  for (let i = 0; i < probed; i++) tx[i]!.state = Tx.Probed;

  return new Promise<TransferSummary>((resolve, reject) => {
    let finished = false;
    const watchdog = { stop: (): void => {} };
    const files$ = new Batcher<Announce | Decline | VoidRange>((items) => link.send({ t: 'files', files: items }), clock);
    const digests = new Batcher<{ id: number; sha256: string }>((items) => link.send({ t: 'digests', files: items }), clock, BATCH_MS);
    const work = new WorkQueue(clock, (err) => failWith(err));
    const cleanup = (): void => {
      finished = true;
      watchdog.stop();
      work.stop();
      files$.discard();
      digests.discard();
      for (const t of tx) t.source?.close();
      if (opts.release) for (const t of tx) opts.release(t.f);
      sender.close();
    };
    const fail = (err: unknown): void => {
      if (finished) return;
      cleanup();
      reject(toTachyonError(err));
    };
    const failWith = (err: unknown): void => {
      const e = toTachyonError(err);
      sendError(opts.link, e);
      fail(e);
    };
    const succeed = (): void => {
      if (finished) return;
      cleanup();
      const st = sender.stats;
      resolve({
        files: outcomes,
        bytes: sentDone,
        skippedBytes,
        elapsedMs: clock.now() - started,
        ok: outcomes.every((o) => o.ok),
        stats: {
          packetsSent: st.packetsSent,
          retransmits: st.retransmits,
          bytesSent: st.bytesSent,
          feedbacks: st.feedbacks,
          badPackets: st.badPackets,
          srttMs: st.srttMs,
          minRttMs: st.minRttMs,
          rateBps: st.rateBps,
          pacingLostBytes: st.pacingLostBytes,
          tailDuplicates: st.tailDuplicates,
          parityPackets: st.parityPackets,
          firstSendMs: st.firstSendAt ? st.firstSendAt - started : -1,
          allSentMs: st.allSentAt ? st.allSentAt - started : -1,
          voidBlocks,
          controlSent: link.sent + (opts.probed?.messages ?? 0),
          controlReceived: link.received,
        },
      });
    };

    const settle = (t: TxFile, o: Omit<FileOutcome, 'path' | 'size' | 'elapsedMs'>): void => {
      if (t.state === Tx.Announced) inflight--;
      t.state = Tx.Settled;
      t.source?.close();
      t.source = undefined;
      opts.release?.(t.f);
      t.prefix = undefined;
      settled++;
      const outcome: FileOutcome = { path: t.f.path, size: t.f.size, ...o, elapsedMs: clock.now() - t.since };
      outcomes.push(outcome);
      if (outcome.status === 'done') sentDone += outcome.sentBytes;
      skippedBytes += outcome.skippedBytes;
      opts.events?.onFile?.(outcome);
    };

    /** the sender will not send this probed file: tell the receiver */
    const decline = (t: TxFile, d: Omit<Decline, 'id'>, o: Omit<FileOutcome, 'path' | 'size' | 'elapsedMs'>): void => {
      files$.push({ id: t.id, ...d }, 96 + (d.message?.length ?? 0) * 6);
      decided++;
      settle(t, o);
    };

    const enqueue = (t: TxFile, offset: number, prefix: TxFile['prefix']): void => {
      t.state = Tx.Queued;
      t.offset = offset;
      t.prefix = prefix;
      queue.push(t.id);
    };

    const probe = (): void => {
      if (!opts.planned) return;
      const until = Math.min(n, settled + PROBE_AHEAD_FILES);
      if (probed >= until) return;
      const from = probed;
      probed = sendProbes(link, files, from, until).files;
      for (let i = from; i < probed; i++) tx[i]!.state = Tx.Probed;
    };

    const announce = (): void => {
      const now = clock.now();
      // the speculative file must stay the last one assigned until its plan says what it is
      if (spec !== undefined) {
        files$.flush();
        return;
      }
      while (queueHead < queue.length && inflight < ANNOUNCE_AHEAD_FILES) {
        const t = tx[queue[queueHead++]!]!;
        const f = t.f;
        const ssn0 = t.preassigned ?? sender.assign(t.id, f.size - t.offset);
        const a: Announce = { id: t.id, path: f.path, size: f.size, mtimeMs: f.mtimeMs, ssn0 };
        if (policy.preserveTimes && f.atimeMs !== undefined) a.atimeMs = f.atimeMs;
        if (t.offset > 0) a.offset = t.offset;
        files$.push(a, pathCost(f.path));
        t.state = Tx.Announced;
        t.since = now;
        inflight++;
        decided++;
        opts.events?.onFileStart?.({ path: f.path, size: f.size, offset: t.offset });
        const startBlocks = (): void => {
          // what is sent: the file's own bytes, or what `content` derives from them (its envelope)
          t.source = opts.content ? opts.content.open(f, t.offset, t.prefix, opts.openSource) : new TxSource(f.abs, f.size, t.offset, t.prefix, opts.openSource);
          t.prefix = undefined;
          sender.start(t.id, t.source);
        };
        if (t.preassigned !== undefined) {
          // sent speculatively, and the plan said `send`: its blocks are on their way already
          t.preassigned = undefined;
          sender.unlimit(t.id);
          if (t.sentEarly) fileSent(t.id);
        } else if (opts.prepare) {
          // the file is readable at f.abs once prepared; its blocks wait until then
          opts.prepare(f).then(
            () => {
              if (finished || t.state !== Tx.Announced || t.source) return;
              startBlocks();
            },
            (err: unknown) => failWith(toTachyonError(err, 'IO')),
          );
        } else startBlocks();
      }
      if (queueHead === queue.length && queueHead > 0) {
        queue.length = 0;
        queueHead = 0;
      }
      if (decided === n && !endSent) {
        endSent = true;
        opts.sender.lastFileAssigned();
        files$.flush();
        link.send({ t: 'end', files: n, bytes: totalBytes });
      } else files$.flush();
    };

    const afterChange = (): void => {
      if (finished) return;
      announce();
      probe();
      if (settled === n) {
        report();
        link.send({ t: 'bye' });
        succeed();
      }
    };

    /** Compares the receiver's digests with ours and decides (asynchronously). */
    const check = (t: TxFile, e: Extract<PlanEntry, { do: 'check' | 'resume' }>): void => {
      t.state = Tx.Checking;
      const f = t.f;
      const sums = e.do === 'check' ? e.sums : [];
      const then = e.do === 'check' ? e.then : 'resume';
      jobs
        .run(async () => {
          await opts.prepare?.(f);
          return opts.content
            ? opts.content.hash(f, e.offset, sums, then === 'resume', opts.openSource ?? openNoFollow)
            : hashRanges(f.abs, e.offset, sums, then === 'resume', opts.openSource ?? openNoFollow);
        })
        .then(
          (h) => {
            if (finished) return;
            const same = h.sums.length === sums.length && h.sums.every((s, i) => s.sha256 === sums[i]!.sha256);
            if (TRACE) process.stderr.write(`trace check ${f.path}: ${e.do} at ${e.offset}: ${same ? 'same' : 'different'}\n`);
            if (!same) enqueue(t, 0, undefined);
            else if (then === 'resume') enqueue(t, e.offset, h.prefix);
            else decline(t, { skip: 'same' }, { ok: true, status: 'skipped', reason: 'same', sentBytes: 0, skippedBytes: f.size });
            afterChange();
          },
          (err: unknown) => {
            if (finished) return;
            const te = toTachyonError(err, 'IO');
            decline(t, { skip: 'failed', code: te.code, message: te.publicMessage }, { ok: false, status: 'failed', code: te.code, message: te.publicMessage, sentBytes: 0, skippedBytes: 0 });
            afterChange();
          },
        );
    };

    const onPlan = (e: PlanEntry): void => {
      const t = tx[e.id];
      if (!t || t.state !== Tx.Probed) throw new TachyonError('PROTOCOL', `plan for a file that was not probed or is already planned (${e.id})`);
      const size = t.f.size;
      if (t === spec) {
        spec = undefined;
        if (e.do !== 'send') {
          // not wanted as sent: what went out is void, and the file goes on as the plan says
          const v = sender.abandon(t.id);
          t.source?.close();
          t.source = undefined;
          t.preassigned = undefined;
          t.sentEarly = false;
          if (v.blocks > 0) files$.push({ void: v.blocks, ssn0: v.ssn0 }, 64);
          voidBlocks = v.blocks;
          if (TRACE) process.stderr.write(`trace speculation on ${t.f.path} void: ${e.do}, ${v.blocks} blocks\n`);
        }
      }
      switch (e.do) {
        case 'send':
          enqueue(t, 0, undefined);
          break;
        case 'skip':
          decided++;
          settle(t, { ok: true, status: 'skipped', reason: e.reason, sentBytes: 0, skippedBytes: size });
          break;
        case 'refuse':
          decided++;
          settle(t, { ok: false, status: 'failed', code: e.code, message: e.message, sentBytes: 0, skippedBytes: 0 });
          break;
        case 'resume':
          if (policy.resume === 'none' || e.offset > size) throw new TachyonError('PROTOCOL', `resume of file ${e.id} at ${e.offset} not allowed`);
          check(t, e);
          break;
        case 'check': {
          const bad = checkRanges(e.sums, e.offset, size);
          if (bad || policy.resume === 'none' || (e.then === 'skip' && e.offset !== size)) {
            throw new TachyonError('PROTOCOL', `invalid check for file ${e.id}: ${bad ?? e.then}`);
          }
          check(t, e);
          break;
        }
      }
    };

    const onResult = (r: ResultEntry, early = false): void => {
      const t = tx[r.id];
      // the feedback's fast path settles it (or did); the message says the same
      if (!early && t?.settledEarly && r.ok) return;
      if (!t || t.state !== Tx.Announced) throw new TachyonError('PROTOCOL', `result for a file that is not in flight (${r.id})`);
      if (!r.ok) sender.skip(r.id);
      sender.release(r.id);
      const o: Omit<FileOutcome, 'path' | 'size' | 'elapsedMs'> = r.ok
        ? { ok: true, status: 'done', sentBytes: t.f.size - t.offset, skippedBytes: t.offset }
        : { ok: false, status: 'failed', sentBytes: 0, skippedBytes: 0 };
      if (r.sha256) o.sha256 = r.sha256;
      if (r.code) o.code = r.code;
      if (r.message) o.message = r.message;
      settle(t, o);
    };

    const report = (): void => {
      const acked = Math.min(totalBytes, skippedBytes + Math.max(sentDone, sender.stats.bytesAcked));
      opts.events?.onProgress?.({
        bytes: acked,
        totalBytes,
        files: settled,
        totalFiles: n,
        rateBps: sender.stats.rateBps,
        elapsedMs: clock.now() - started,
      });
    };

    superviseRole({
      stopper: watchdog,
      link: opts.link,
      clock,
      finished: () => finished,
      fail,
      tick: () => {
        report();
        if (inflight > 0 && clock.now() - sender.stats.lastFeedbackAt > (opts.vanishMs ?? VANISH_MS)) {
          return new TachyonError('PEER_VANISHED', 'the receiver stopped answering');
        }
        return undefined;
      },
      handle: (msg: ControlMessage) => {
        link.received++;
        switch (msg.t) {
          case 'plan':
            if (!opts.planned) throw new TachyonError('PROTOCOL', 'plan in a session without probes');
            for (const e of msg.files) work.push(() => onPlan(e));
            work.push(afterChange);
            break;
          case 'results':
            for (const r of msg.files) work.push(() => onResult(r));
            work.push(afterChange);
            break;
          case 'error':
            fail(remoteError(msg.code, msg.message, msg.correlationId));
            break;
          case 'bye':
            fail(new TachyonError('PROTOCOL', 'the receiver ended the session early'));
            break;
          default:
            throw new TachyonError('PROTOCOL', `unexpected message '${msg.t}' for the sending side`);
        }
      },
    });

    sender.onSourceError = (_id: number, err: unknown): void => failWith(toTachyonError(err, 'IO'));
    sender.onFileSent = (id: number): void => {
      const t = tx[id];
      if (t !== undefined && t.preassigned !== undefined && t.state !== Tx.Announced) t.sentEarly = true;
      else fileSent(id);
    };
    function fileSent(id: number): void {
      const t = tx[id];
      if (!t || t.state !== Tx.Announced || !t.source) return;
      let sha: string;
      try {
        sha = t.source.digest();
      } catch (err) {
        failWith(toTachyonError(err, 'IO'));
        return;
      }
      t.sha256 = sha;
      digests.push({ id, sha256: sha });
      // a large file's digest also goes by datagram: the receiver verifies on the first copy
      if (t.f.size >= UDP_DIGEST_MIN_BYTES) sender.sendDigest(id, sha);
    }
    // the receiver verified the file against our digest and stored it: settle it now
    // rather than when the `results` message arrives (a lost TCP segment on a lossy path
    // holds that back by a retransmission timeout; the message is then ignored)
    sender.onFileVerified = (id: number): void => {
      const t = tx[id];
      if (!t || t.state !== Tx.Announced || t.sha256 === undefined || t.settledEarly) return;
      t.settledEarly = true;
      const sha256 = t.sha256;
      work.push(() => {
        if (t.state === Tx.Announced) onResult({ id, ok: true, sha256 }, true);
      });
      work.push(afterChange);
    };

    const dirs = opts.dirs ?? [];
    if (dirs.length) {
      const dirBatch = new Batcher<string>((paths) => link.send({ t: 'dirs', paths }), clock);
      for (const d of dirs) dirBatch.push(d, pathCost(d));
      dirBatch.flush();
    }
    if (!opts.planned) for (const t of tx) enqueue(t, 0, undefined);
    else if (opts.speculate && !opts.prepare && n > 0 && tx[0]!.state === Tx.Probed) {
      // the first file's blocks leave now, before its plan (a plan comes a round trip later)
      const t = tx[0]!;
      try {
        t.source = opts.content ? opts.content.open(t.f, 0, undefined, opts.openSource) : new TxSource(t.f.abs, t.f.size, 0, undefined, opts.openSource);
        t.preassigned = sender.assign(t.id, t.f.size);
        sender.start(t.id, t.source);
        // the receiver holds what arrives before the file's announcement, within bounds:
        // a plan a retransmission timeout late must not overflow them
        sender.limit(t.id, SPECULATE_MAX_BYTES);
        spec = t;
      } catch {
        // unreadable now: no speculation; its plan handles it as usual
        t.source?.close();
        t.source = undefined;
        t.preassigned = undefined;
      }
    }
    probe();
    announce();
    if (n === 0) {
      link.send({ t: 'bye' });
      succeed();
    }
  });
}

/**
 * Wires a file role to its control link: a 250 ms watchdog (`tick` returns an error to
 * end the role), failure when the link closes early, and incoming messages handled with
 * any error reported to the peer.
 */
function superviseRole(o: {
  link: ControlLink;
  clock: Clock;
  finished: () => boolean;
  fail: (err: unknown) => void;
  tick: () => TachyonError | undefined;
  handle: (msg: ControlMessage) => void;
  /** receives the function that stops the watchdog, before any message is handled */
  stopper: { stop: () => void };
}): void {
  let cancel: (() => void) | undefined;
  o.stopper.stop = () => cancel?.();
  const watchdog = (): void => {
    cancel = o.clock.setTimer(250, () => {
      if (o.finished()) return;
      const err = o.tick();
      if (err) o.fail(err);
      else watchdog();
    });
  };
  watchdog();
  o.link.onClose((err) => {
    if (!o.finished()) o.fail(err ?? new TachyonError('PEER_VANISHED', 'the control connection closed before the transfer finished'));
  });
  o.link.onMessage((msg) => {
    if (o.finished()) return;
    try {
      o.handle(msg);
    } catch (err) {
      const e = toTachyonError(err);
      sendError(o.link, e);
      o.fail(e);
    }
  });
}

/** Tells the peer about a fatal error (if the link still works). */
function sendError(link: ControlLink, e: TachyonError): void {
  try {
    link.send({ t: 'error', code: e.code, message: e.publicMessage });
  } catch {
    // the link is already gone
  }
}

function remoteError(code: string, message: string, correlationId?: string): TachyonError {
  const c: ErrorCode = isErrorCode(code) ? code : 'PROTOCOL';
  const suffix = correlationId ? ` (correlation id ${correlationId})` : '';
  return new TachyonError(c, `${message}${suffix}`, { publicMessage: message });
}

// ---- receiving role ------------------------------------------------------------------

/** Decides where an announced file goes; throws a TachyonError to refuse it. */
export type DestinationResolver = (relPath: string, kind: 'file' | 'dir') => string;

/** A probed file waiting for the sender's decision (planned sessions). */
interface RxPlanned {
  id: number;
  path: string;
  size: number;
  mtimeMs: number | undefined;
  final: string;
  temp: string;
  /** the SHA-256 state of the kept prefix, when a resume was offered */
  prefix: { offset: number; hash: Hash } | undefined;
  /** a resume record existed beside the partial file */
  hadRecord: boolean;
  /** the plan entry was sent (a digest computation may delay it) */
  answered: boolean;
  since: number;
}

interface RxEntry {
  id: number;
  path: string;
  final: string;
  temp: string;
  size: number;
  offset: number;
  mtimeMs: number | undefined;
  atimeMs: number | undefined;
  /** local mode: the temporary file (undefined in store mode) */
  file: RxFile | undefined;
  digest: string | undefined;
  complete: boolean;
  since: number;
  /** a resume record beside the partial file may exist (remove it when done) */
  record: boolean;
  recorded: number;
  /** store mode: the sink into the storage backend */
  sink?: StoreSink;
}

export interface ReceiverRoleOptions {
  link: ControlLink;
  receiver: DataReceiver;
  clock: Clock;
  resolve: DestinationResolver;
  policy: TransferPolicy;
  /** files are probed and planned before they are announced */
  planned: boolean;
  /** Creates a fresh temporary file, a stale one removed (default: `createTempFile`; the server pins it in its jail). */
  openTemp?: (tempPath: string) => number;
  /** Opens an existing partial file to resume it: read/write, no truncation, never through a link (the server's jail pins it). */
  openPartial?: (tempPath: string) => number;
  /** Opens a partial or destination file to hash it, or a resume record to read it (the server's jail pins it). */
  openRead?: ReadOpener;
  /** Makes the parent directory of a temporary file (default `mkdir -p`; the server's resolver already made it through the jail). */
  makeDir?: (dir: string) => void;
  /**
   * Receive into a storage backend instead of local files: the resolver then returns
   * backend paths, files are written through the backend's writer (committed after the
   * digest matched) and there are no partial files, so only complete files are compared
   * (`-k attrs` skips a file whose size and mtime match; a partial resume starts over).
   */
  store?: ReceiverStore;
  /** Refuses a file before any data flows (a TachyonError), e.g. a plaintext name where only envelopes are accepted. */
  admit?: (final: string, size: number) => void;
  /** Checks a received, verified file before it is renamed into place (a TachyonError refuses it; the file is removed). */
  checkStored?: (temp: string, size: number, open: ReadOpener) => void;
  events?: RoleEvents;
  vanishMs?: number;
}

/** Runs the receiving role until the sender's `end` and every file is settled. */
export function runReceiverRole(opts: ReceiverRoleOptions): Promise<TransferSummary> {
  if (opts.store && opts.checkStored) {
    // a stored object cannot be read before it is committed: refuse rather than skip the check
    return Promise.reject(new TachyonError('INTERNAL', 'checkStored is not supported when receiving into a storage backend'));
  }
  const { receiver, clock, policy } = opts;
  const link = new CountingLink(opts.link);
  const started = clock.now();
  const planned = new Map<number, RxPlanned>();
  const entries = new Map<number, RxEntry>();
  const seen = new Set<number>();
  const outcomes: FileOutcome[] = [];
  const resumeOn = policy.resume !== 'none';
  const makeDir = opts.makeDir ?? directoryMaker();
  const openRead = opts.openRead ?? openNoFollow;
  const createTemp = opts.openTemp ?? createTempFile;
  const tempFiles: TempFiles = {
    create: (p) => {
      makeDir(path.dirname(p));
      return createTemp(p);
    },
    reopen: opts.openPartial ?? ((p) => openSync(p, constants.O_RDWR | constants.O_NOFOLLOW)),
  };
  const jobs = new JobQueue(HASH_JOBS);
  let endFiles: number | undefined;
  let totalBytes = 0;
  let settled = 0;
  let bytesDone = 0;
  let skippedBytes = 0;
  let lastRecords = started;

  return new Promise<TransferSummary>((resolve, reject) => {
    let finished = false;
    const watchdog = { stop: (): void => {} };
    const results = new Batcher<ResultEntry>((items) => link.send({ t: 'results', files: items }), clock, BATCH_MS);
    const plans = new Batcher<PlanEntry>((items) => link.send({ t: 'plan', files: items }), clock, 0);
    const work = new WorkQueue(clock, (err) => {
      const e = toTachyonError(err);
      sendError(opts.link, e);
      fail(e);
    });
    // opening temporary files: its own queue, so that it never waits behind a batch of probes
    const fileWork = new WorkQueue(clock, (err) => {
      const e = toTachyonError(err);
      sendError(opts.link, e);
      fail(e);
    });

    /** Keeps (with a resume record) or removes the partial file of an unfinished entry. */
    const park = (e: RxEntry): void => {
      if (!e.file) {
        void e.sink?.abort();
        return;
      }
      e.file.close();
      if (!e.file.touched) return; // never touched: whatever was there stays as it was
      if (!e.file.opened && e.offset > 0) return; // still opening: the kept prefix was not cut yet
      const kept = e.file.writtenPrefix();
      if (resumeOn && e.mtimeMs !== undefined && kept > 0 && writeRecord(e.final, { size: e.size, mtimeMs: e.mtimeMs, verified: kept }, createTemp)) return;
      safeUnlink(e.temp);
      if (e.record) removeRecord(e.final);
    };
    const cleanup = (discard: boolean): void => {
      finished = true;
      watchdog.stop();
      work.stop();
      fileWork.stop();
      results.discard();
      plans.discard();
      receiver.close();
      for (const e of entries.values()) {
        if (discard) park(e);
        else if (e.sink) void e.sink.abort();
        else e.file?.close();
      }
      entries.clear();
      planned.clear();
    };
    const fail = (err: unknown): void => {
      if (finished) return;
      cleanup(true);
      reject(toTachyonError(err));
    };
    const maybeDone = (): void => {
      if (finished || endFiles === undefined || settled !== endFiles || seen.size !== endFiles) return;
      results.flush();
      plans.flush();
      opts.events?.onProgress?.(progress());
      cleanup(false);
      const st = receiver.stats;
      resolve({
        files: outcomes,
        bytes: bytesDone,
        skippedBytes,
        elapsedMs: clock.now() - started,
        ok: outcomes.every((o) => o.ok),
        stats: {
          packets: st.packets,
          duplicates: st.duplicates,
          rejected: st.rejected,
          replayed: st.replayed,
          naksSent: st.naksSent,
          feedbacksSent: st.feedbacksSent,
          controlSent: link.sent,
          controlReceived: link.received,
        },
      });
    };
    const progress = (): Progress => ({
      bytes: Math.min(totalBytes, receiver.stats.bytes + skippedBytes),
      totalBytes,
      files: settled,
      totalFiles: endFiles ?? seen.size,
      rateBps: 0,
      elapsedMs: clock.now() - started,
    });
    const settle = (o: FileOutcome): void => {
      outcomes.push(o);
      settled++;
      if (o.status === 'done') bytesDone += o.sentBytes;
      skippedBytes += o.skippedBytes;
      opts.events?.onFile?.(o);
    };
    const fileFailed = (id: number, p: string, size: number, since: number, te: TachyonError, sha256?: string): void => {
      const r: ResultEntry = { id, ok: false, code: te.code, message: te.publicMessage };
      if (sha256) r.sha256 = sha256;
      results.push(r, 96 + te.publicMessage.length * 6);
      const o: FileOutcome = { path: p, size, ok: false, status: 'failed', code: te.code, message: te.publicMessage, sentBytes: 0, skippedBytes: 0, elapsedMs: clock.now() - since };
      if (sha256) o.sha256 = sha256;
      settle(o);
    };

    const finalizeStored = async (e: RxEntry, sink: StoreSink): Promise<void> => {
      entries.delete(e.id);
      receiver.removeFile(e.id);
      let sha: string;
      try {
        sha = await sink.finish();
      } catch (err) {
        await sink.abort();
        if (finished) return;
        const te = toTachyonError(err, 'IO');
        fileFailed(e.id, e.path, e.size, e.since, te);
        if (te.code === 'DISK_FULL' || te.code === 'STORAGE_UNAVAILABLE') fail(te);
        else maybeDone();
        return;
      }
      if (finished) {
        await sink.abort();
        return;
      }
      if (sha !== e.digest) {
        await sink.abort();
        const message = 'The received file does not match the sender digest; it was discarded.';
        fileFailed(e.id, e.path, e.size, e.since, new TachyonError('DIGEST_MISMATCH', message, { publicMessage: message }), sha);
        maybeDone();
        return;
      }
      try {
        const c0 = clock.now();
        await sink.commit(); // the object becomes visible only now
        if (TRACE) process.stderr.write(`trace commit ${e.path}: ${(clock.now() - c0).toFixed(1)} ms\n`);
      } catch (err) {
        await sink.abort();
        if (finished) return;
        fileFailed(e.id, e.path, e.size, e.since, toTachyonError(err, 'IO'));
        maybeDone();
        return;
      }
      results.push({ id: e.id, ok: true, sha256: sha });
      receiver.announceVerified(e.id);
      settle({ path: e.path, size: e.size, ok: true, status: 'done', sha256: sha, sentBytes: e.size - e.offset, skippedBytes: e.offset, elapsedMs: clock.now() - e.since });
      maybeDone();
    };

    const finalize = async (e: RxEntry): Promise<void> => {
      if (e.sink) return finalizeStored(e, e.sink);
      const file = e.file;
      if (!file) return;
      entries.delete(e.id);
      receiver.removeFile(e.id);
      let sha: string;
      const t0 = clock.now();
      try {
        sha = await file.finish();
        if (TRACE) process.stderr.write(`trace finalize ${e.path}: finish ${(clock.now() - t0).toFixed(1)} ms\n`);
        file.close();
      } catch (err) {
        file.close();
        if (file.touched) safeUnlink(e.temp);
        if (finished) return;
        const te = toTachyonError(err, 'IO');
        fileFailed(e.id, e.path, e.size, e.since, te);
        if (te.code === 'DISK_FULL') fail(te);
        else maybeDone();
        return;
      }
      if (finished) {
        // the transfer failed while the last writes were landing: keep what resume can use
        park(e);
        return;
      }
      if (sha !== e.digest) {
        safeUnlink(e.temp);
        if (e.record) removeRecord(e.final);
        const message = 'The received file does not match the sender digest; it was discarded.';
        fileFailed(e.id, e.path, e.size, e.since, new TachyonError('DIGEST_MISMATCH', message, { publicMessage: message }), sha);
        maybeDone();
        return;
      }
      try {
        opts.checkStored?.(e.temp, e.size, openRead);
      } catch (err) {
        safeUnlink(e.temp);
        if (e.record) removeRecord(e.final);
        fileFailed(e.id, e.path, e.size, e.since, toTachyonError(err, 'IO'), sha);
        maybeDone();
        return;
      }
      try {
        const now = Date.now() / 1000;
        const atime = policy.preserveTimes && e.atimeMs !== undefined ? e.atimeMs / 1000 : now;
        // on the thread pool: metadata writes must not stall the datagram path
        await lutimes(e.temp, atime, e.mtimeMs !== undefined ? e.mtimeMs / 1000 : now);
        await rename(e.temp, e.final);
      } catch (err) {
        if (finished) return;
        safeUnlink(e.temp);
        fileFailed(e.id, e.path, e.size, e.since, toTachyonError(err, 'IO'));
        maybeDone();
        return;
      }
      if (e.record) removeRecord(e.final);
      results.push({ id: e.id, ok: true, sha256: sha });
      receiver.announceVerified(e.id);
      settle({ path: e.path, size: e.size, ok: true, status: 'done', sha256: sha, sentBytes: e.size - e.offset, skippedBytes: e.offset, elapsedMs: clock.now() - e.since, local: e.final });
      maybeDone();
    };

    receiver.onFileComplete = (id: number): void => {
      if (TRACE) process.stderr.write(`trace complete ${id} at ${(clock.now() - started).toFixed(1)} ms, digest ${entries.get(id)?.digest ? 'known' : 'pending'}\n`);
      const e = entries.get(id);
      if (!e || finished) return;
      e.complete = true;
      if (e.digest !== undefined) void finalize(e);
    };
    /** The sender's digest of a file, by the `digests` message or by datagram, whichever comes first. */
    const takeDigest = (id: number, sha256: string, via: string): void => {
      const e = entries.get(id);
      if (!e || e.digest !== undefined) return; // not announced yet, refused, settled, or known already
      if (TRACE) process.stderr.write(`trace digest ${id}${via} at ${(clock.now() - started).toFixed(1)} ms\n`);
      e.digest = sha256;
      if (e.complete) void finalize(e);
    };
    receiver.onDigest = (id: number, sha256: string): void => {
      work.push(() => {
        if (!finished) takeDigest(id, sha256, ' by datagram');
      });
    };
    receiver.onWriteError = (_id: number, err: unknown): void => {
      const te = toTachyonError(err, 'IO');
      sendError(opts.link, te);
      fail(te);
    };

    const newId = (id: number): void => {
      if (seen.has(id)) throw new TachyonError('PROTOCOL', `file id ${id} announced twice`);
      // an honest sender keeps at most PROBE_AHEAD_FILES in flight; bound what a hostile one can pile up
      if (planned.size + entries.size >= MAX_RECEIVER_IN_FLIGHT) throw new TachyonError('PROTOCOL', 'too many files in flight');
      seen.add(id);
    };

    /** Resolves the destination of a file and checks that it can be written there. */
    const destination = (p: string, size: number): { final: string; st: Stats | undefined } => {
      const final = opts.resolve(p, 'file');
      opts.admit?.(final, size);
      const st = statOrUndefined(final);
      if (st?.isDirectory()) {
        throw new TachyonError('IS_DIRECTORY', `destination ${p} exists as a directory`, { publicMessage: `The destination of ${p} exists as a directory.` });
      }
      if (st && !st.isFile()) {
        throw new TachyonError('EXISTS', `destination ${p} exists and is not a regular file`, { publicMessage: `The destination of ${p} exists and is not a regular file.` });
      }
      return { final, st };
    };

    /** Store mode: the destination is looked up in the backend (asynchronously); no partial files. */
    const onProbeStored = (pe: ProbeEntry, store: ReceiverStore): void => {
      const now = clock.now();
      const refuse = (te: TachyonError): void => {
        plans.push({ id: pe.id, do: 'refuse', code: te.code, message: te.publicMessage }, 96 + te.publicMessage.length * 6);
        settle({ path: pe.path, size: pe.size, ok: false, status: 'failed', code: te.code, message: te.publicMessage, sentBytes: 0, skippedBytes: 0, elapsedMs: 0 });
      };
      let final: string;
      try {
        final = opts.resolve(pe.path, 'file');
        opts.admit?.(final, pe.size);
      } catch (err) {
        refuse(toTachyonError(err, 'IO'));
        return;
      }
      const p: RxPlanned = { id: pe.id, path: pe.path, size: pe.size, mtimeMs: pe.mtimeMs, final, temp: '', prefix: undefined, hadRecord: false, answered: false, since: now };
      planned.set(pe.id, p);
      const answer = (e: PlanEntry): void => {
        p.answered = true;
        plans.push(e, e.do === 'check' ? 200 + e.sums.length * 150 : 96);
      };
      jobs
        .run(async () => {
          try {
            return await store.backend.stat(final);
          } catch (err) {
            if (err instanceof TachyonError && err.code === 'NOT_FOUND') return undefined;
            throw err;
          }
        })
        .then(
          (st) => {
            if (finished) return;
            if (st?.kind === 'directory') {
              planned.delete(pe.id);
              refuse(new TachyonError('IS_DIRECTORY', `destination ${pe.path} exists as a directory`, { publicMessage: `The destination of ${pe.path} exists as a directory.` }));
              return;
            }
            const d = decide(policy, { size: pe.size, mtimeMs: pe.mtimeMs }, st ? { final: { size: st.size, mtimeMs: st.mtimeMs } } : {});
            switch (d.do) {
              case 'skip':
                planned.delete(pe.id);
                plans.push({ id: pe.id, do: 'skip', reason: d.reason });
                settle({ path: pe.path, size: pe.size, ok: true, status: 'skipped', reason: d.reason, sentBytes: 0, skippedBytes: pe.size, elapsedMs: 0 });
                return;
              case 'compare': {
                const ranges = d.mode === 'full' ? [{ at: 0, len: d.length }] : sampleRanges(d.length);
                jobs.run(() => hashStoredRanges(store.backend, final, ranges)).then(
                  (sums) => !finished && answer({ id: pe.id, do: 'check', offset: d.length, sums, then: 'skip' }),
                  () => !finished && answer({ id: pe.id, do: 'send' }),
                );
                return;
              }
              default: // send ('resume' needs a partial file, which a store does not keep)
                answer({ id: pe.id, do: 'send' });
            }
          },
          (err: unknown) => {
            if (finished) return;
            planned.delete(pe.id);
            const te = toTachyonError(err, 'IO');
            refuse(te);
            if (te.code === 'STORAGE_UNAVAILABLE') {
              sendError(opts.link, te);
              fail(te);
            } else maybeDone();
          },
        );
    };

    const onProbe = (pe: ProbeEntry): void => {
      newId(pe.id);
      totalBytes += pe.size;
      if (opts.store) {
        onProbeStored(pe, opts.store);
        return;
      }
      const now = clock.now();
      let final: string;
      let st: Stats | undefined;
      try {
        ({ final, st } = destination(pe.path, pe.size));
      } catch (err) {
        const te = toTachyonError(err, 'IO');
        plans.push({ id: pe.id, do: 'refuse', code: te.code, message: te.publicMessage }, 96 + te.publicMessage.length * 6);
        settle({ path: pe.path, size: pe.size, ok: false, status: 'failed', code: te.code, message: te.publicMessage, sentBytes: 0, skippedBytes: 0, elapsedMs: 0 });
        return;
      }
      const temp = partialPath(final);
      let partial: { size: number; record?: ReturnType<typeof readRecord> } | undefined;
      if (resumeOn) {
        const pst = lstatOrUndefined(temp);
        if (pst?.isFile()) {
          const record = readRecord(final, openRead);
          partial = record ? { size: pst.size, record } : { size: pst.size };
        }
      }
      const p: RxPlanned = {
        id: pe.id,
        path: pe.path,
        size: pe.size,
        mtimeMs: pe.mtimeMs,
        final,
        temp,
        prefix: undefined,
        hadRecord: partial?.record !== undefined,
        answered: false,
        since: now,
      };
      const d = decide(policy, { size: pe.size, mtimeMs: pe.mtimeMs }, { ...(st ? { final: { size: st.size, mtimeMs: st.mtimeMs } } : {}), ...(partial ? { partial } : {}) });
      const answer = (e: PlanEntry): void => {
        p.answered = true;
        plans.push(e, e.do === 'check' ? 200 + e.sums.length * 150 : 96);
      };
      switch (d.do) {
        case 'skip':
          plans.push({ id: pe.id, do: 'skip', reason: d.reason });
          settle({ path: pe.path, size: pe.size, ok: true, status: 'skipped', reason: d.reason, sentBytes: 0, skippedBytes: pe.size, elapsedMs: 0 });
          return;
        case 'send':
          planned.set(pe.id, p);
          answer({ id: pe.id, do: 'send' });
          return;
        case 'compare': {
          planned.set(pe.id, p);
          const ranges = d.mode === 'full' ? [{ at: 0, len: d.length }] : sampleRanges(d.length);
          jobs.run(() => hashRanges(final, d.length, ranges, false, openRead)).then(
            (h) => !finished && answer({ id: pe.id, do: 'check', offset: d.length, sums: h.sums, then: 'skip' }),
            () => !finished && answer({ id: pe.id, do: 'send' }),
          );
          return;
        }
        case 'resume': {
          planned.set(pe.id, p);
          const ranges = d.verify === 'sparse' ? sampleRanges(d.offset) : [];
          jobs.run(() => hashRanges(temp, d.offset, ranges, true, openRead)).then(
            (h) => {
              if (finished) return;
              p.prefix = { offset: d.offset, hash: h.prefix! };
              if (d.verify === 'none') answer({ id: pe.id, do: 'resume', offset: d.offset });
              else {
                const sums = d.verify === 'full' ? [{ at: 0, len: d.offset, sha256: h.prefix!.copy().digest('hex') }] : h.sums;
                answer({ id: pe.id, do: 'check', offset: d.offset, sums, then: 'resume' });
              }
            },
            () => !finished && answer({ id: pe.id, do: 'send' }),
          );
          return;
        }
      }
    };

    const onDecline = (d: Decline): void => {
      const p = planned.get(d.id);
      if (!p || !p.answered) throw new TachyonError('PROTOCOL', `decision for a file that was not planned (${d.id})`);
      planned.delete(d.id);
      if (d.skip === 'same') {
        settle({ path: p.path, size: p.size, ok: true, status: 'skipped', reason: 'same', sentBytes: 0, skippedBytes: p.size, elapsedMs: clock.now() - p.since });
      } else {
        const code = d.code && isErrorCode(d.code) ? d.code : 'IO';
        settle({ path: p.path, size: p.size, ok: false, status: 'failed', code, message: d.message ?? 'The sender could not read the file.', sentBytes: 0, skippedBytes: 0, elapsedMs: clock.now() - p.since });
      }
    };

    /** blocks the sender sent before a plan that did not want them (once per session, planned sessions only) */
    let voided = false;
    const onVoid = (v: VoidRange): void => {
      if (!opts.planned || voided) throw new TachyonError('PROTOCOL', 'a void range in a session without plans, or a second one');
      voided = true;
      receiver.voidRange(v.ssn0, v.void);
    };

    const onAnnounce = (a: Announce): void => {
      const offset = a.offset ?? 0;
      if (offset > a.size) throw new TachyonError('PROTOCOL', `file ${a.id}: offset beyond its size`);
      const now = clock.now();
      let final: string;
      let temp: string;
      let prefix: RxPlanned['prefix'];
      let record = false;
      if (opts.planned) {
        const p = planned.get(a.id);
        if (!p || !p.answered) throw new TachyonError('PROTOCOL', `file ${a.id} announced without a plan`);
        if (p.path !== a.path || p.size !== a.size) throw new TachyonError('PROTOCOL', `file ${a.id} announced differently from its probe`);
        if (offset > 0 && p.prefix?.offset !== offset) throw new TachyonError('PROTOCOL', `file ${a.id} resumed at an offset that was not offered`);
        planned.delete(a.id);
        ({ final, temp } = p);
        prefix = offset > 0 ? p.prefix : undefined;
        record = p.hadRecord;
      } else {
        newId(a.id);
        totalBytes += a.size;
        if (offset > 0) throw new TachyonError('PROTOCOL', `file ${a.id} resumed in a session without plans`);
        try {
          if (opts.store) {
            final = opts.resolve(a.path, 'file');
            opts.admit?.(final, a.size);
          } else final = destination(a.path, a.size).final;
        } catch (err) {
          receiver.skipFile(a.id, a.ssn0, a.size);
          fileFailed(a.id, a.path, a.size, now, toTachyonError(err, 'IO'));
          return;
        }
        temp = partialPath(final);
      }
      if (opts.store) {
        if (offset > 0) throw new TachyonError('PROTOCOL', `file ${a.id}: a resume into storage was not offered`);
        const sink = new StoreSink(opts.store, final, a.size, a.mtimeMs);
        const e: RxEntry = {
          id: a.id,
          path: a.path,
          final,
          temp,
          size: a.size,
          offset: 0,
          mtimeMs: a.mtimeMs,
          atimeMs: a.atimeMs,
          file: undefined,
          sink,
          digest: undefined,
          complete: false,
          since: now,
          record: false,
          recorded: -1,
        };
        entries.set(a.id, e);
        opts.events?.onFileStart?.({ path: a.path, size: a.size, offset: 0 });
        receiver.addFile(a.id, a.ssn0, a.size, sink);
        return;
      }
      const file = new RxFile(temp, a.size, offset, prefix?.hash, tempFiles, (job) => fileWork.push(job), (err) => {
        sendError(opts.link, err);
        fail(err);
      });
      const e: RxEntry = {
        id: a.id,
        path: a.path,
        final,
        temp,
        size: a.size,
        offset,
        mtimeMs: a.mtimeMs,
        atimeMs: a.atimeMs,
        file,
        digest: undefined,
        complete: false,
        since: now,
        record,
        recorded: -1,
      };
      entries.set(a.id, e);
      // a record that no longer describes the partial file must not outlive this start
      if (record) {
        if (offset > 0 && a.mtimeMs !== undefined) e.recorded = writeRecord(final, { size: a.size, mtimeMs: a.mtimeMs, verified: offset }, createTemp) ? offset : -1;
        else removeRecord(final);
      }
      opts.events?.onFileStart?.({ path: a.path, size: a.size, offset });
      receiver.addFile(a.id, a.ssn0, a.size - offset, file);
    };

    /** Refreshes the resume records of files in progress (a crash then loses little). */
    const refreshRecords = (): void => {
      for (const e of entries.values()) {
        if (!e.file?.opened || e.mtimeMs === undefined) continue;
        const kept = e.file.writtenPrefix();
        if (kept <= 0 || kept === e.recorded) continue;
        if (writeRecord(e.final, { size: e.size, mtimeMs: e.mtimeMs, verified: kept }, createTemp)) {
          e.recorded = kept;
          e.record = true;
        }
      }
    };

    superviseRole({
      stopper: watchdog,
      link: opts.link,
      clock,
      finished: () => finished,
      fail,
      tick: () => {
        opts.events?.onProgress?.(progress());
        if (resumeOn && clock.now() - lastRecords >= RECORD_EVERY_MS) {
          lastRecords = clock.now();
          refreshRecords();
        }
        if (entries.size > 0 && clock.now() - receiver.stats.lastPacketAt > (opts.vanishMs ?? VANISH_MS)) {
          return new TachyonError('PEER_VANISHED', 'the sender stopped sending');
        }
        return undefined;
      },
      handle: (msg: ControlMessage) => {
        link.received++;
        switch (msg.t) {
          case 'probe':
            if (!opts.planned) throw new TachyonError('PROTOCOL', 'probe in a session without plans');
            for (const pe of msg.files) work.push(() => onProbe(pe));
            break;
          case 'files':
            for (const f of msg.files) work.push(() => ('skip' in f ? onDecline(f) : 'void' in f ? onVoid(f) : onAnnounce(f)));
            work.push(maybeDone);
            break;
          case 'digests':
            for (const d of msg.files) work.push(() => takeDigest(d.id, d.sha256, ''));
            break;
          case 'dirs':
            for (const p of msg.paths) {
              const store = opts.store;
              if (store) work.push(() => void store.ensureDir(opts.resolve(p, 'dir')).catch(fail));
              else work.push(() => makeDir(opts.resolve(p, 'dir')));
            }
            break;
          case 'end':
            work.push(() => {
              endFiles = msg.files;
              maybeDone();
            });
            break;
          case 'error':
            fail(remoteError(msg.code, msg.message, msg.correlationId));
            break;
          case 'bye':
            work.push(() => {
              if (endFiles === undefined || settled < endFiles) fail(new TachyonError('PROTOCOL', 'the sender ended the session early'));
            });
            break;
          default:
            throw new TachyonError('PROTOCOL', `unexpected message '${msg.t}' for the receiving side`);
        }
      },
    });
  });
}

function statOrUndefined(p: string): Stats | undefined {
  try {
    return statSync(p);
  } catch {
    return undefined;
  }
}

function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}

function safeUnlink(p: string): void {
  try {
    unlinkSync(p);
  } catch {
    // already gone
  }
}
