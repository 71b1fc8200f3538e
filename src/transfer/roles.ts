/**
 * The file-level protocol on top of the data plane: the sending role announces
 * files and digests over the control link and feeds blocks to the DataSender; the
 * receiving role accepts files, stores blocks under a temporary name, verifies the
 * whole-file SHA-256 and only then renames the file to its final name.
 */
import { mkdirSync, renameSync, statSync, unlinkSync, utimesSync } from 'node:fs';
import path from 'node:path';
import type { Clock } from '../core/clock.js';
import { TachyonError, isErrorCode, toTachyonError, type ErrorCode } from '../core/errors.js';
import type { ControlLink, ControlMessage } from '../control/messages.js';
import type { DataReceiver } from '../transport/session/receiver.js';
import type { DataSender } from '../transport/session/sender.js';
import { LocalFileSink, LocalFileSource } from './local-file.js';

export interface OutgoingFile {
  /** relative path with '/' separators, as the receiver will see it */
  path: string;
  abs: string;
  size: number;
  mtimeMs: number;
}

export interface FileOutcome {
  path: string;
  size: number;
  ok: boolean;
  sha256?: string;
  code?: string;
  message?: string;
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
  onFile?(f: FileOutcome): void;
}

export interface TransferSummary {
  files: FileOutcome[];
  bytes: number;
  elapsedMs: number;
  ok: boolean;
  /** data-plane counters of this side */
  stats?: Record<string, number>;
}

const ANNOUNCE_AHEAD_FILES = 128;
const TRACE = process.env.TACHYON_TRACE === '1';
const VANISH_MS = 30_000;

/** Runs the sending role until every file has a verified (or failed) result. */
export function runSenderRole(opts: {
  link: ControlLink;
  sender: DataSender;
  clock: Clock;
  files: OutgoingFile[];
  dirs?: string[];
  /** Opens a file to send (default: a plain open; the server pins it in its jail). */
  openSource?: (abs: string) => number;
  events?: RoleEvents;
  vanishMs?: number;
}): Promise<TransferSummary> {
  const { link, sender, clock, files } = opts;
  const started = clock.now();
  const totalBytes = files.reduce((a, f) => a + f.size, 0);
  const outcomes: FileOutcome[] = [];
  const sources = new Map<number, LocalFileSource>();
  let announced = 0;
  let resultsIn = 0;
  let bytesDone = 0;
  let endSent = false;

  return new Promise<TransferSummary>((resolve, reject) => {
    let finished = false;
    const watchdog = { stop: (): void => {} };
    const cleanup = (): void => {
      finished = true;
      watchdog.stop();
      for (const s of sources.values()) s.close();
      sources.clear();
      sender.close();
    };
    const fail = (err: unknown): void => {
      if (finished) return;
      cleanup();
      reject(toTachyonError(err));
    };
    const succeed = (): void => {
      if (finished) return;
      cleanup();
      const st = sender.stats;
      const summary = {
        files: outcomes,
        bytes: bytesDone,
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
          firstSendMs: st.firstSendAt ? st.firstSendAt - started : -1,
          allSentMs: st.allSentAt ? st.allSentAt - started : -1,
        },
      };
      resolve(summary);
    };

    const announce = (): void => {
      while (announced < files.length && announced - resultsIn < ANNOUNCE_AHEAD_FILES) {
        const f = files[announced]!;
        const ssn0 = sender.assign(announced, f.size);
        link.send({ t: 'file', id: announced, path: f.path, size: f.size, mtimeMs: f.mtimeMs, ssn0 });
        // send at once, without waiting a round trip for `ready`: the announcement and
        // the first blocks travel together; a block that overtakes its announcement is
        // simply asked for again. A refused file is skipped when its result arrives.
        const src = new LocalFileSource(f.abs, f.size, opts.openSource);
        sources.set(announced, src);
        sender.start(announced, src);
        announced++;
      }
      if (announced === files.length && !endSent) {
        endSent = true;
        link.send({ t: 'end', files: files.length, bytes: totalBytes });
      }
    };

    const report = (): void => {
      const acked = Math.min(totalBytes, Math.max(bytesDone, sender.stats.bytesAcked));
      opts.events?.onProgress?.({
        bytes: acked,
        totalBytes,
        files: resultsIn,
        totalFiles: files.length,
        rateBps: sender.stats.rateBps,
        elapsedMs: clock.now() - started,
      });
    };

    superviseRole({
      stopper: watchdog,
      link,
      clock,
      finished: () => finished,
      fail,
      tick: () => {
        report();
        const outstanding = resultsIn < files.length;
        if (outstanding && clock.now() - sender.stats.lastFeedbackAt > (opts.vanishMs ?? VANISH_MS)) {
          return new TachyonError('PEER_VANISHED', 'the receiver stopped answering');
        }
        return undefined;
      },
      handle: (msg: ControlMessage) => {
        switch (msg.t) {
          case 'ready': {
            // the receiver accepted the file (sending already started at announcement)
            if (msg.id >= announced) throw new TachyonError('PROTOCOL', `ready for unknown file ${msg.id}`);
            break;
          }
          case 'result': {
            const f = files[msg.id];
            if (!f) throw new TachyonError('PROTOCOL', `result for unknown file ${msg.id}`);
            if (!msg.ok) sender.skip(msg.id);
            sources.get(msg.id)?.close();
            sources.delete(msg.id);
            sender.release(msg.id);
            const o: FileOutcome = { path: f.path, size: f.size, ok: msg.ok };
            if (msg.sha256) o.sha256 = msg.sha256;
            if (msg.code) o.code = msg.code;
            if (msg.message) o.message = msg.message;
            outcomes.push(o);
            if (msg.ok) bytesDone += f.size;
            resultsIn++;
            opts.events?.onFile?.(o);
            announce();
            if (resultsIn === files.length) {
              report();
              link.send({ t: 'bye' });
              succeed();
            }
            break;
          }
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

    sender.onSourceError = (_id: number, err: unknown): void => {
      const e = toTachyonError(err, 'IO');
      sendError(link, e);
      fail(e);
    };
    sender.onFileSent = (id: number): void => {
      const src = sources.get(id);
      if (src) link.send({ t: 'digest', id, sha256: src.digest() });
      else if (files[id]?.size === 0) link.send({ t: 'digest', id, sha256: EMPTY_SHA256 });
    };

    for (const d of opts.dirs ?? []) link.send({ t: 'dir', path: d });
    announce();
    if (files.length === 0) {
      link.send({ t: 'bye' });
      succeed();
    }
  });
}

export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';


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

/** Decides where an announced file goes; throws a TachyonError to refuse it. */
export type DestinationResolver = (relPath: string, kind: 'file' | 'dir') => string;

interface RxEntry {
  id: number;
  path: string;
  final: string;
  temp: string;
  size: number;
  mtimeMs: number | undefined;
  sink: LocalFileSink;
  digest: string | undefined;
  complete: boolean;
}

/** Runs the receiving role until the sender's `end` and every file is settled. */
export function runReceiverRole(opts: {
  link: ControlLink;
  receiver: DataReceiver;
  clock: Clock;
  resolve: DestinationResolver;
  /** Creates a file's temporary file (default: `createTempFile`; the server pins it in its jail). */
  openTemp?: (tempPath: string) => number;
  events?: RoleEvents;
  vanishMs?: number;
  /** also send the final `bye` (the side that ends the session) */
}): Promise<TransferSummary> {
  const { link, receiver, clock } = opts;
  const started = clock.now();
  const entries = new Map<number, RxEntry>();
  const outcomes: FileOutcome[] = [];
  let endFiles: number | undefined;
  let totalBytes = 0;
  let announcedFiles = 0;
  let settled = 0;
  let bytesDone = 0;

  return new Promise<TransferSummary>((resolve, reject) => {
    let finished = false;
    const watchdog = { stop: (): void => {} };
    const cleanup = (discard: boolean): void => {
      finished = true;
      watchdog.stop();
      receiver.close();
      for (const e of entries.values()) {
        e.sink.close();
        if (discard) safeUnlink(e.temp);
      }
      entries.clear();
    };
    const fail = (err: unknown): void => {
      if (finished) return;
      cleanup(true);
      reject(toTachyonError(err));
    };
    const maybeDone = (): void => {
      if (endFiles !== undefined && settled === endFiles && announcedFiles === endFiles) {
        opts.events?.onProgress?.(progress());
        cleanup(false);
        const st = receiver.stats;
        resolve({
          files: outcomes,
          bytes: bytesDone,
          elapsedMs: clock.now() - started,
          ok: outcomes.every((o) => o.ok),
          stats: { packets: st.packets, duplicates: st.duplicates, rejected: st.rejected, replayed: st.replayed, naksSent: st.naksSent, feedbacksSent: st.feedbacksSent },
        });
      }
    };
    const progress = (): Progress => ({
      bytes: receiver.stats.bytes,
      totalBytes,
      files: settled,
      totalFiles: endFiles ?? announcedFiles,
      rateBps: 0,
      elapsedMs: clock.now() - started,
    });
    const settle = (o: FileOutcome): void => {
      outcomes.push(o);
      settled++;
      opts.events?.onFile?.(o);
    };

    const finalize = async (e: RxEntry): Promise<void> => {
      entries.delete(e.id);
      receiver.removeFile(e.id);
      let sha: string;
      const t0 = clock.now();
      try {
        sha = await e.sink.finish();
        if (TRACE) process.stderr.write(`trace finalize ${e.path}: finish ${(clock.now() - t0).toFixed(1)} ms\n`);
        e.sink.close();
      } catch (err) {
        e.sink.close();
        safeUnlink(e.temp);
        if (finished) return;
        const te = toTachyonError(err, 'IO');
        link.send({ t: 'result', id: e.id, ok: false, code: te.code, message: te.publicMessage });
        settle({ path: e.path, size: e.size, ok: false, code: te.code, message: te.publicMessage });
        if (te.code === 'DISK_FULL') fail(te);
        return;
      }
      if (finished) {
        // the transfer failed while the last writes were landing
        safeUnlink(e.temp);
        return;
      }
      if (sha !== e.digest) {
        safeUnlink(e.temp);
        const message = 'The received file does not match the sender digest; it was discarded.';
        link.send({ t: 'result', id: e.id, ok: false, sha256: sha, code: 'DIGEST_MISMATCH', message });
        settle({ path: e.path, size: e.size, ok: false, sha256: sha, code: 'DIGEST_MISMATCH', message });
        return;
      }
      try {
        if (e.mtimeMs !== undefined) utimesSync(e.temp, new Date(), new Date(e.mtimeMs));
        renameSync(e.temp, e.final);
      } catch (err) {
        safeUnlink(e.temp);
        const te = toTachyonError(err, 'IO');
        link.send({ t: 'result', id: e.id, ok: false, code: te.code, message: te.publicMessage });
        settle({ path: e.path, size: e.size, ok: false, code: te.code, message: te.publicMessage });
        return;
      }
      bytesDone += e.size;
      link.send({ t: 'result', id: e.id, ok: true, sha256: sha });
      settle({ path: e.path, size: e.size, ok: true, sha256: sha });
      maybeDone();
    };

    receiver.onFileComplete = (id: number): void => {
      if (TRACE) process.stderr.write(`trace complete ${id} at ${(clock.now() - started).toFixed(1)} ms, digest ${entries.get(id)?.digest ? 'known' : 'pending'}\n`);
        const e = entries.get(id);
        if (!e || finished) return;
        e.complete = true;
        if (e.digest !== undefined) void finalize(e);
    };
    receiver.onWriteError = (_id: number, err: unknown): void => {
        const te = toTachyonError(err, 'IO');
        sendError(link, te);
        fail(te);
    };

    superviseRole({
      stopper: watchdog,
      link,
      clock,
      finished: () => finished,
      fail,
      tick: () => {
        opts.events?.onProgress?.(progress());
        if (entries.size > 0 && clock.now() - receiver.stats.lastPacketAt > (opts.vanishMs ?? VANISH_MS)) {
          return new TachyonError('PEER_VANISHED', 'the sender stopped sending');
        }
        return undefined;
      },
      handle: (msg: ControlMessage) => {
        switch (msg.t) {
          case 'file': {
            if (entries.has(msg.id)) throw new TachyonError('PROTOCOL', `file id ${msg.id} announced twice`);
            announcedFiles++;
            totalBytes += msg.size;
            let final: string;
            let sink: LocalFileSink;
            let temp: string;
            try {
              final = opts.resolve(msg.path, 'file');
              const st = statOrUndefined(final);
              if (st?.isDirectory()) {
                throw new TachyonError('IS_DIRECTORY', `destination ${msg.path} exists as a directory`, {
                  publicMessage: `The destination of ${msg.path} exists as a directory.`,
                });
              }
              mkdirSync(path.dirname(final), { recursive: true });
              temp = path.join(path.dirname(final), `.${path.basename(final)}.tachyon-partial`);
              sink = new LocalFileSink(temp, msg.size, opts.openTemp);
            } catch (err) {
              const te = toTachyonError(err, 'IO');
              receiver.skipFile(msg.id, msg.ssn0, msg.size);
              link.send({ t: 'result', id: msg.id, ok: false, code: te.code, message: te.publicMessage });
              settle({ path: msg.path, size: msg.size, ok: false, code: te.code, message: te.publicMessage });
              maybeDone();
              break;
            }
            const e: RxEntry = { id: msg.id, path: msg.path, final, temp, size: msg.size, mtimeMs: msg.mtimeMs, sink, digest: undefined, complete: false };
            entries.set(msg.id, e);
            receiver.addFile(msg.id, msg.ssn0, msg.size, sink);
            link.send({ t: 'ready', id: msg.id });
            break;
          }
          case 'digest': {
            if (TRACE) process.stderr.write(`trace digest ${msg.id} at ${(clock.now() - started).toFixed(1)} ms\n`);
            const e = entries.get(msg.id);
            if (!e) break; // refused or already settled
            e.digest = msg.sha256;
            if (e.complete) void finalize(e);
            break;
          }
          case 'dir': {
            const d = opts.resolve(msg.path, 'dir');
            mkdirSync(d, { recursive: true });
            break;
          }
          case 'end':
            endFiles = msg.files;
            maybeDone();
            break;
          case 'error':
            fail(remoteError(msg.code, msg.message, msg.correlationId));
            break;
          case 'bye':
            if (endFiles === undefined || settled < endFiles) fail(new TachyonError('PROTOCOL', 'the sender ended the session early'));
            break;
          default:
            throw new TachyonError('PROTOCOL', `unexpected message '${msg.t}' for the receiving side`);
        }
      },
    });
  });
}


function statOrUndefined(p: string): ReturnType<typeof statSync> | undefined {
  try {
    return statSync(p);
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
