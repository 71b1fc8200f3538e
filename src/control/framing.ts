/**
 * Framing of control messages on a byte stream (the SSH subsystem channel `tachyon-v1`):
 * every message is a frame of a 4-byte big-endian length followed by that many bytes of
 * UTF-8 JSON. Incoming frames are validated with {@link ControlMessageSchema}; anything
 * malformed is a `PROTOCOL` error and ends the link.
 */
import type { Duplex } from 'node:stream';
import { TachyonError, isErrorCode, toTachyonError } from '../core/errors.js';
import { ControlMessageSchema, MAX_FRAME_BYTES } from './messages.js';
import type { ControlLink, ControlMessage } from './messages.js';

/** Size of the length prefix in bytes. */
export const FRAME_HEADER_BYTES = 4;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Shortens text that may come from a peer before it goes into an error message. */
function clip(text: string, max = 80): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

/** Describes the message type of an untrusted value for error messages, without echoing much of it. */
function describeType(value: unknown): string {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const t = (value as Record<string, unknown>)['t'];
    return typeof t === 'string' ? `message t=${JSON.stringify(clip(t, 32))}` : 'message without a string "t"';
  }
  return 'message';
}

/** Formats zod issues as `path: message; …`, bounded in size. */
function describeIssues(issues: readonly { path: readonly PropertyKey[]; message: string }[]): string {
  const shown = issues.slice(0, 3).map((issue) => {
    const path = issue.path.length === 0 ? '(root)' : issue.path.map((p) => clip(String(p), 40)).join('.');
    return `${path}: ${clip(issue.message, 120)}`;
  });
  const more = issues.length > 3 ? `; and ${issues.length - 3} more issue(s)` : '';
  return shown.join('; ') + more;
}

/**
 * Validates a control message and encodes it as one frame.
 * @throws TachyonError `INTERNAL` if `msg` does not satisfy the schema (a local bug), or
 *   `PROTOCOL` if its encoding exceeds {@link MAX_FRAME_BYTES}.
 */
export function encodeFrame(msg: ControlMessage): Buffer {
  const checked = ControlMessageSchema.safeParse(msg);
  if (!checked.success) {
    throw new TachyonError(
      'INTERNAL',
      `Refusing to send an invalid control ${describeType(msg)}: ${describeIssues(checked.error.issues)}`,
    );
  }
  const json = Buffer.from(JSON.stringify(msg), 'utf8');
  if (json.length > MAX_FRAME_BYTES) {
    throw new TachyonError(
      'PROTOCOL',
      `Control ${describeType(msg)} is ${json.length} bytes encoded, over the frame limit of ${MAX_FRAME_BYTES} bytes`,
    );
  }
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + json.length);
  frame.writeUInt32BE(json.length, 0);
  json.copy(frame, FRAME_HEADER_BYTES);
  return frame;
}

/**
 * Parses and validates the payload of one frame.
 * @throws TachyonError `PROTOCOL` when the payload is not UTF-8 JSON or fails the schema.
 */
export function decodeFramePayload(payload: Uint8Array): ControlMessage {
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    throw new TachyonError('PROTOCOL', `Control frame of ${payload.length} bytes is not valid UTF-8`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // The SyntaxError text quotes the input, so it is deliberately not included.
    throw new TachyonError('PROTOCOL', `Control frame of ${payload.length} bytes is not valid JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    throw new TachyonError('PROTOCOL', `Control frame must hold a JSON object, got ${kind}`);
  }
  const checked = ControlMessageSchema.safeParse(value);
  if (!checked.success) {
    throw new TachyonError(
      'PROTOCOL',
      `Invalid control ${describeType(value)}: ${describeIssues(checked.error.issues)}`,
    );
  }
  return checked.data;
}

/**
 * Incremental frame decoder. Feed it the chunks of a byte stream in order; it returns
 * every complete, validated message. Frames may be split across chunks or packed several
 * to a chunk. A frame is buffered only up to its declared length, which must be between
 * 1 and {@link MAX_FRAME_BYTES}.
 *
 * After it has thrown once the decoder is failed: every later call throws the same error.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Payload length of the frame being assembled, once its header is complete. */
  private want: number | undefined;
  private failure: TachyonError | undefined;
  private framesDecoded = 0;

  /** Bytes held for a frame that is not complete yet. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /** Whether the decoder stopped at a protocol error. */
  get failed(): boolean {
    return this.failure !== undefined;
  }

  /**
   * Decodes what `chunk` completes.
   * @throws TachyonError `PROTOCOL` on a malformed frame (messages that preceded it in the
   *   same chunk are lost; use {@link decode} to receive them).
   */
  push(chunk: Uint8Array): ControlMessage[] {
    const out: ControlMessage[] = [];
    this.decode(chunk, (m) => out.push(m));
    return out;
  }

  /**
   * Like {@link push}, but hands each message to `sink` as soon as its frame is decoded, so
   * messages before a malformed frame are delivered before the error is thrown.
   */
  decode(chunk: Uint8Array, sink: (msg: ControlMessage) => void): void {
    if (this.failure) throw this.failure;
    if (chunk.length > 0) {
      // Copied: the caller may reuse its buffer after we return.
      this.chunks.push(Buffer.from(chunk));
      this.buffered += chunk.length;
    }
    for (;;) {
      if (this.want === undefined) {
        if (this.buffered < FRAME_HEADER_BYTES) return;
        const header = this.take(FRAME_HEADER_BYTES);
        const length = header.readUInt32BE(0);
        if (length === 0) this.fail(`Control frame #${this.framesDecoded + 1} has zero length`);
        if (length > MAX_FRAME_BYTES) {
          this.fail(
            `Control frame #${this.framesDecoded + 1} declares ${length} bytes, over the limit of ${MAX_FRAME_BYTES}`,
          );
        }
        this.want = length;
      }
      if (this.buffered < this.want) return;
      const payload = this.take(this.want);
      this.want = undefined;
      let msg: ControlMessage;
      try {
        msg = decodeFramePayload(payload);
      } catch (err) {
        const e = toTachyonError(err, 'PROTOCOL');
        this.failure = new TachyonError('PROTOCOL', `Control frame #${this.framesDecoded + 1}: ${e.message}`);
        this.chunks = [];
        this.buffered = 0;
        throw this.failure;
      }
      this.framesDecoded++;
      sink(msg);
    }
  }

  private fail(message: string): never {
    this.failure = new TachyonError('PROTOCOL', message);
    this.chunks = [];
    this.buffered = 0;
    this.want = undefined;
    throw this.failure;
  }

  /** Removes and returns the first `n` buffered bytes (n <= buffered). */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      const head = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return head;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0];
      if (c === undefined) throw new TachyonError('INTERNAL', 'FrameDecoder buffer underrun');
      const use = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, use);
      filled += use;
      if (use === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(use);
    }
    this.buffered -= n;
    return out;
  }
}

/** A {@link ControlLink} over a byte stream, with the extras the SSH layers need. */
export interface StreamControlLink extends ControlLink {
  /** True once the link has ended (onClose handlers have been or are being called). */
  readonly closed: boolean;
  /**
   * Ends the link abnormally with `err` (e.g. because the SSH connection under it died):
   * the peer is sent an `error` message (code and public message of `err`) if the stream
   * is still writable, onClose handlers receive `err` (as a TachyonError), and the stream
   * is destroyed.
   * No-op once closed.
   */
  abort(err: Error): void;
}

/** Options for {@link linkFromStream}. */
export interface LinkOptions {
  /** Called on every frame sent or received (used for idle timeouts). */
  onActivity?: () => void;
  /** How long close() waits for the peer to close its side before destroying the stream. Default 5000 ms. */
  closeTimeoutMs?: number;
  /** Called once, right after the first message is written. */
  onFirstSend?: () => void;
}

/**
 * Implements {@link ControlLink} over a duplex byte stream (an ssh2 channel, a socket, or
 * one end of a test pipe).
 *
 * - `send` validates and frames the message; it throws `INTERNAL`/`PROTOCOL` for a message
 *   that may not be sent, and is a silent no-op once the link is closed.
 * - Messages that arrive before `onMessage` is called are queued (and the stream paused),
 *   then delivered in order. Calling `onMessage` again replaces the handler.
 * - A malformed incoming frame ends the link: an `error` message is sent to the peer, the
 *   stream is ended, and onClose handlers get the `PROTOCOL` TachyonError. If the message
 *   handler throws, the link ends the same way with that error.
 * - The peer ending the stream cleanly (at a frame boundary) ends the link without error,
 *   unless the last message it sent was `error`: then onClose gets a TachyonError with that
 *   code (`INTERNAL` if the code is unknown). Ending in the middle of a frame is a `PROTOCOL`
 *   error; the stream closing without an end, or failing, is a `PEER_VANISHED` error.
 * - `close()` ends the link at once (onClose handlers run without an error), flushes what
 *   was sent, and half-closes the stream; it is destroyed if the peer does not close its side.
 */
export function linkFromStream(stream: Duplex, options: LinkOptions = {}): StreamControlLink {
  const decoder = new FrameDecoder();
  const queue: ControlMessage[] = [];
  const closeHandlers: ((err?: Error) => void)[] = [];
  let messageHandler: ((msg: ControlMessage) => void) | undefined;
  let closed = false;
  let closeError: Error | undefined;
  let delivering = false;
  /** The peer ended the stream while messages still waited for a handler. */
  let pendingEnd = false;
  /** The last message decoded, if it was an `error`: a following end is then abnormal. */
  let peerError: { code: string; message: string } | undefined;
  let destroyTimer: NodeJS.Timeout | undefined;
  const closeTimeoutMs = options.closeTimeoutMs ?? 5000;
  const activity = options.onActivity ?? ((): void => {});
  let firstSend = options.onFirstSend;

  const callCloseHandler = (h: (err?: Error) => void): void => {
    try {
      if (closeError === undefined) h();
      else h(closeError);
    } catch (err) {
      // A failing close handler is a bug in the caller: surface it like an uncaught exception.
      queueMicrotask(() => {
        throw err;
      });
    }
  };

  const scheduleDestroy = (): void => {
    if (destroyTimer !== undefined || stream.destroyed) return;
    destroyTimer = setTimeout(() => stream.destroy(), closeTimeoutMs);
    destroyTimer.unref();
  };

  const finish = (err: Error | undefined): void => {
    if (closed) return;
    closed = true;
    closeError = err;
    queue.length = 0;
    messageHandler = undefined;
    // Keep consuming (and discarding) input so the stream can reach its end and close.
    if (stream.isPaused()) stream.resume();
    for (const h of closeHandlers.splice(0)) callCloseHandler(h);
  };

  const endStream = (): void => {
    try {
      if (!stream.writableEnded && !stream.destroyed) stream.end();
    } catch {
      stream.destroy();
    }
    scheduleDestroy();
  };

  const writeFrame = (frame: Buffer): void => {
    activity();
    stream.write(frame);
  };

  /**
   * Ends the link because of an error: tells the peer (`notice`, when given, is the text it
   * may see), reports `err` to the onClose handlers and ends the stream.
   */
  const failWith = (err: TachyonError, notice: string | undefined): void => {
    if (closed) return;
    if (notice !== undefined && !stream.writableEnded && !stream.destroyed) {
      try {
        writeFrame(encodeFrame({ t: 'error', code: err.code, message: notice.slice(0, 1024) }));
      } catch {
        /* best effort */
      }
    }
    finish(err);
    endStream();
  };

  const drain = (): void => {
    if (delivering) return;
    delivering = true;
    try {
      while (!closed && messageHandler !== undefined && queue.length > 0) {
        const msg = queue.shift() as ControlMessage;
        try {
          messageHandler(msg);
        } catch (err) {
          const te = toTachyonError(err, 'INTERNAL');
          failWith(te, te.code === 'PROTOCOL' ? te.publicMessage : undefined);
        }
      }
    } finally {
      delivering = false;
    }
    if (!closed && messageHandler === undefined && queue.length > 0) stream.pause();
  };

  const onData = (chunk: Buffer | string): void => {
    if (closed) return;
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    try {
      decoder.decode(bytes, (msg) => {
        activity();
        peerError = msg.t === 'error' ? msg : undefined;
        queue.push(msg);
      });
    } catch (err) {
      drain();
      const te = toTachyonError(err, 'PROTOCOL');
      failWith(te, te.message);
      return;
    }
    drain();
  };

  /** What a clean end of the peer's stream means: no error, unless its last word was `error`. */
  const endError = (): TachyonError | undefined => {
    if (peerError === undefined) return undefined;
    const code = isErrorCode(peerError.code) ? peerError.code : 'INTERNAL';
    return new TachyonError(code, `The peer ended the session with ${peerError.code}: ${peerError.message}`, {
      publicMessage: peerError.message,
    });
  };

  const onEnd = (): void => {
    if (closed) return;
    if (decoder.pendingBytes > 0) {
      const te = new TachyonError(
        'PROTOCOL',
        `Control stream ended in the middle of a frame (${decoder.pendingBytes} bytes pending)`,
      );
      failWith(te, te.message);
      return;
    }
    // Deliver what is queued first if a handler exists; otherwise keep it for a late handler.
    drain();
    if (queue.length > 0) {
      // No handler yet: finish once it has been registered and the queue delivered.
      pendingEnd = true;
      return;
    }
    finish(endError());
    endStream();
  };

  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('error', (err: Error) => {
    if (closed) return;
    finish(toTachyonError(err, 'PEER_VANISHED'));
    stream.destroy();
  });
  stream.on('close', () => {
    if (destroyTimer !== undefined) clearTimeout(destroyTimer);
    if (closed) return;
    if (pendingEnd) return;
    finish(new TachyonError('PEER_VANISHED', 'The control channel closed without an orderly end'));
  });

  const link: StreamControlLink = {
    get closed(): boolean {
      return closed;
    },
    send(msg: ControlMessage): void {
      if (closed) return;
      writeFrame(encodeFrame(msg));
      if (firstSend !== undefined) {
        const f = firstSend;
        firstSend = undefined;
        f();
      }
    },
    onMessage(handler: (msg: ControlMessage) => void): void {
      messageHandler = handler;
      if (queue.length > 0) {
        queueMicrotask(() => {
          drain();
          if (pendingEnd && queue.length === 0 && !closed) {
            finish(endError());
            endStream();
          }
        });
      }
      if (!closed && stream.isPaused()) stream.resume();
    },
    onClose(handler: (err?: Error) => void): void {
      if (closed) queueMicrotask(() => callCloseHandler(handler));
      else closeHandlers.push(handler);
    },
    close(): void {
      if (closed) return;
      finish(undefined);
      endStream();
    },
    abort(err: Error): void {
      if (closed) return;
      const te = toTachyonError(err, 'INTERNAL');
      if (stream.writable && !stream.destroyed) {
        try {
          writeFrame(encodeFrame({ t: 'error', code: te.code, message: te.publicMessage.slice(0, 1024) }));
        } catch {
          /* best effort */
        }
      }
      finish(te);
      stream.destroy();
    },
  };
  return link;
}
