/**
 * A control link handed out before its connection exists: an upload's data leaves as soon
 * as TCP connects, while the SSH key exchange is still on its way (docs/protocol.md:
 * early data), and the transfer role already queues `hello` and its probes.
 *
 * - `send` queues until the link arrives, then forwards in order;
 * - `onMessage` and `onClose` handlers are passed to the link when it arrives;
 * - when the connection fails, every `onClose` handler gets its error (a host key
 *   mismatch stays a host key mismatch), and what was queued is dropped;
 * - `close` before the link arrives ends it at once for its users (handlers run without
 *   an error) and closes the link when it arrives.
 */
import type { ControlLink, ControlMessage } from './messages.js';

export function deferredLink(connecting: Promise<ControlLink>): ControlLink {
  let inner: ControlLink | undefined;
  /** set once the link will never carry anything: closed before arrival, or failed */
  let ended: { err?: Error } | undefined;
  let queue: ControlMessage[] = [];
  let messageHandler: ((msg: ControlMessage) => void) | undefined;
  const closeHandlers: ((err?: Error) => void)[] = [];

  const end = (err?: Error): void => {
    if (ended) return;
    ended = err ? { err } : {};
    queue = [];
    for (const h of closeHandlers.splice(0)) h(err);
  };

  connecting.then(
    (link) => {
      if (ended) {
        link.close();
        return;
      }
      inner = link;
      if (messageHandler) link.onMessage(messageHandler);
      for (const h of closeHandlers.splice(0)) link.onClose(h);
      for (const m of queue.splice(0)) link.send(m);
    },
    (err: unknown) => end(err instanceof Error ? err : new Error(String(err))),
  );

  return {
    send(msg) {
      if (inner) inner.send(msg);
      else if (!ended) queue.push(msg);
    },
    onMessage(handler) {
      messageHandler = handler;
      inner?.onMessage(handler);
    },
    onClose(handler) {
      if (inner) inner.onClose(handler);
      else if (ended) {
        const err = ended.err;
        queueMicrotask(() => handler(err));
      } else closeHandlers.push(handler);
    },
    close() {
      if (inner) inner.close();
      else end();
    },
  };
}
