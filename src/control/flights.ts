/**
 * One flight, one TCP segment. With TCP_NODELAY every `socket.write` leaves as its own
 * segment, and an SSH set-up writes many small packets per flight (the server's answer
 * to an authenticated, pipelined request is eight SSH packets over ~10 ms: SERVICE_ACCEPT,
 * USERAUTH_SUCCESS, the channel confirmation, the subsystem's success, `welcome`, `plan`).
 * On a lossy path each segment is a chance to lose the flight's tail, and a lost tail
 * waits for a tail-loss probe or a retransmission timeout (0.6–1 s at 300 ms RTT, where
 * one flight is 0.3 s). Coalescing a flight's writes into one segment leaves one chance
 * instead of six.
 *
 * While coalescing is on, the first write of a flight corks the socket, and the socket
 * is uncorked once no write has come for 5 ms, or 20 ms after the first, whichever
 * is first: a flight's messages may be a few ms apart (a signature check, a stat), a
 * flight's answer takes a round trip. Nagle's algorithm would instead hold everything
 * after the first segment for a whole round trip.
 */
import type { Socket } from 'node:net';

export interface Flights {
  /** Sends what is held now: the current flight is complete (the next write begins another). */
  flush(): void;
  /** Sends what is held now and writes go out at once from then on. Idempotent. */
  stop(): void;
  /**
   * Calls `cb` once the flight being gathered now has been written to the socket (on the
   * next turn of the event loop when none is being gathered).
   */
  afterFlight(cb: () => void): void;
}

/** uncork once no write came for this long, ms */
const QUIET_MS = 5;
/** uncork at the latest this long after a flight's first write, ms */
const MAX_MS = 20;

/** Coalesces what `socket` is given to write into flights (see the module comment) until stopped or closed. */
export function coalesceFlights(socket: Socket): Flights {
  const write = socket.write;
  let corked = false;
  let firstAt = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let waiting: (() => void)[] = [];

  const flush = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (!corked) return;
    corked = false;
    if (!socket.destroyed) socket.uncork();
    const cbs = waiting;
    waiting = [];
    for (const cb of cbs) cb();
  };

  const afterFlight = (cb: () => void): void => {
    if (corked) waiting.push(cb);
    else setImmediate(cb);
  };

  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    if (socket.write !== write) socket.write = write;
    flush();
  };

  // an instance property shadowing net.Socket.prototype.write: everything that writes to
  // this socket (ssh2's transport included) goes through it
  socket.write = function coalescedWrite(this: Socket, ...args: Parameters<Socket['write']>): boolean {
    if (!stopped && !socket.destroyed) {
      const now = performance.now();
      if (!corked) {
        corked = true;
        firstAt = now;
        socket.cork();
      }
      if (timer !== undefined) clearTimeout(timer);
      timer = setTimeout(flush, Math.max(0, Math.min(QUIET_MS, firstAt + MAX_MS - now)));
    }
    return write.apply(socket, args);
  } as Socket['write'];

  socket.once('close', stop);
  return { flush, stop, afterFlight };
}
