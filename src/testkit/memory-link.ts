/** An in-memory ControlLink pair (ordered, reliable, asynchronous delivery) for tests. */
import type { ControlLink, ControlMessage } from '../control/messages.js';
import { ControlMessageSchema } from '../control/messages.js';

class MemoryLink implements ControlLink {
  peer: MemoryLink | undefined;
  private handler: ((m: ControlMessage) => void) | undefined;
  private closeHandlers: ((err?: Error) => void)[] = [];
  private queue: ControlMessage[] = [];
  closed = false;

  send(msg: ControlMessage): void {
    if (this.closed) return;
    // validate as the real framing does, and copy so that no object is shared
    const copy = ControlMessageSchema.parse(JSON.parse(JSON.stringify(msg)));
    // messages sent in one turn of the event loop arrive together, in one synchronous
    // burst, as frames coalesced in one TCP segment do
    this.outbox.push(copy);
    if (this.outbox.length === 1) {
      setImmediate(() => {
        const batch = this.outbox.splice(0);
        for (const m of batch) this.peer?.deliver(m);
      });
    }
  }

  private outbox: ControlMessage[] = [];

  deliver(m: ControlMessage): void {
    if (this.closed) return;
    if (this.handler) this.handler(m);
    else this.queue.push(m);
  }

  onMessage(handler: (msg: ControlMessage) => void): void {
    this.handler = handler;
    const q = this.queue;
    this.queue = [];
    for (const m of q) handler(m);
  }

  onClose(handler: (err?: Error) => void): void {
    this.closeHandlers.push(handler);
  }

  close(): void {
    this.shut();
    setImmediate(() => this.peer?.shut());
  }

  shut(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.closeHandlers) h(err);
  }
}

export function memoryLinkPair(): [ControlLink & { shut(err?: Error): void }, ControlLink & { shut(err?: Error): void }] {
  const a = new MemoryLink();
  const b = new MemoryLink();
  a.peer = b;
  b.peer = a;
  return [a, b];
}
