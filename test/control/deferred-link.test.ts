/**
 * deferredLink (src/control/deferred-link.ts): a control link handed out before its SSH
 * set-up is done. Messages sent meanwhile reach the peer in order once it is; a failed
 * set-up reaches every onClose handler with its own error; close() before it is done
 * ends it for its users and closes the link when it comes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deferredLink } from '../../src/control/deferred-link.js';
import type { ControlLink, ControlMessage } from '../../src/control/messages.js';
import { memoryLinkPair } from '../../src/testkit/memory-link.js';
import { TachyonError } from '../../src/core/errors.js';

function pending(): { promise: Promise<ControlLink>; resolve(l: ControlLink): void; reject(e: Error): void } {
  let resolve!: (l: ControlLink) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<ControlLink>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
const bye: ControlMessage = { t: 'bye' };
const end: ControlMessage = { t: 'end', files: 1, bytes: 1 };

describe('deferredLink', () => {
  it('queues what is sent before the link arrives and delivers it in order, then forwards both ways', async () => {
    const p = pending();
    const link = deferredLink(p.promise);
    const [a, b] = memoryLinkPair();
    const atPeer: ControlMessage[] = [];
    b.onMessage((m) => atPeer.push(m));
    const atUs: ControlMessage[] = [];
    link.onMessage((m) => atUs.push(m));
    link.send(end);
    link.send(bye);
    await tick();
    assert.equal(atPeer.length, 0, 'nothing leaves before the link exists');
    p.resolve(a);
    await tick();
    await tick();
    assert.deepEqual(atPeer.map((m) => m.t), ['end', 'bye']);
    b.send(bye);
    link.send(end);
    await tick();
    await tick();
    assert.deepEqual(atUs.map((m) => m.t), ['bye']);
    assert.deepEqual(atPeer.map((m) => m.t), ['end', 'bye', 'end']);
  });

  it('a failed set-up reaches every onClose handler, early and late, with its own error; nothing is sent', async () => {
    const p = pending();
    const link = deferredLink(p.promise);
    const seen: (Error | undefined)[] = [];
    link.onClose((e) => seen.push(e));
    link.send(bye);
    const refused = new TachyonError('HOST_KEY_MISMATCH', 'host key mismatch');
    p.reject(refused);
    await tick();
    link.onClose((e) => seen.push(e));
    link.send(bye); // dropped, no throw
    await tick();
    assert.equal(seen.length, 2);
    assert.ok(seen.every((e) => e === refused));
  });

  it('close() before the link arrives ends it at once (no error) and closes the link when it comes', async () => {
    const p = pending();
    const link = deferredLink(p.promise);
    const seen: (Error | undefined)[] = [];
    link.onClose((e) => seen.push(e));
    link.close();
    assert.deepEqual(seen, [undefined]);
    const [a, b] = memoryLinkPair();
    let peerClosed = false;
    b.onClose(() => (peerClosed = true));
    const atPeer: ControlMessage[] = [];
    b.onMessage((m) => atPeer.push(m));
    link.send(bye);
    p.resolve(a);
    await tick();
    await tick();
    assert.ok(peerClosed, 'the late link is closed');
    assert.equal(atPeer.length, 0, 'nothing sent after close');
  });
});
