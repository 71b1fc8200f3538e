import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TachyonError } from '../../src/core/errors.js';
import { FrameDecoder, encodeFrame, linkFromStream } from '../../src/control/framing.js';
import { MAX_FRAME_BYTES } from '../../src/control/messages.js';
import type { ControlMessage } from '../../src/control/messages.js';
import { duplexPair, prng, sleep } from './helpers.js';

const hello: ControlMessage = {
  t: 'hello',
  v: 1,
  op: 'send',
  cipher: 'aes-128-gcm',
  policy: 'fair',
  targetRate: 1e9,
  minRate: 0,
  datagramSize: 1400,
  dest: 'incoming/',
  single: false,
  early: { sessionId: 0xfeedbeef, c2s: Buffer.alloc(32, 3).toString('base64'), s2c: Buffer.alloc(32, 4).toString('base64') },
};
const welcome: ControlMessage = {
  t: 'welcome',
  v: 1,
  sessionId: 42,
  udpPort: 33001,
  cipher: 'aes-128-gcm',
  datagramSize: 1400,
  keys: { c2s: Buffer.alloc(32, 1).toString('base64'), s2c: Buffer.alloc(32, 2).toString('base64') },
  maxRate: 1e10,
};
const samples: ControlMessage[] = [
  hello,
  welcome,
  { t: 'probe', files: [{ id: 0, path: 'dir/ünïcødé 文件.bin', size: 123456789, mtimeMs: 1700000000000.5 }] },
  {
    t: 'plan',
    files: [
      { id: 0, do: 'check', offset: 65536, sums: [{ at: 0, len: 65536, sha256: 'd'.repeat(64) }], then: 'resume' },
      { id: 1, do: 'skip', reason: 'same' },
      { id: 2, do: 'refuse', code: 'IS_DIRECTORY', message: 'no' },
    ],
  },
  {
    t: 'files',
    files: [
      { id: 0, path: 'dir/ünïcødé 文件.bin', size: 123456789, mtimeMs: 1700000000000, offset: 65536, ssn0: 0 },
      { id: 3, skip: 'same' },
      { void: 1234, ssn0: 0 },
    ],
  },
  { t: 'dirs', paths: ['dir'] },
  { t: 'digests', files: [{ id: 0, sha256: 'a'.repeat(64) }] },
  { t: 'results', files: [{ id: 0, ok: true, sha256: 'b'.repeat(64) }] },
  { t: 'end', files: 1, bytes: 123456789 },
  { t: 'error', code: 'NOT_FOUND', message: 'nope' },
  { t: 'bye' },
];

/** Builds a frame around arbitrary payload bytes. */
function rawFrame(payload: Buffer | string, declared?: number): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const h = Buffer.alloc(4);
  h.writeUInt32BE(declared ?? body.length, 0);
  return Buffer.concat([h, body]);
}

function protocolError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TachyonError, `expected TachyonError, got ${String(err)}`);
    assert.equal(err.code, 'PROTOCOL');
    assert.match(err.message, pattern);
    return true;
  });
}

describe('framing', () => {
  it('encodes length-prefixed UTF-8 JSON', () => {
    const f = encodeFrame({ t: 'bye' });
    assert.equal(f.readUInt32BE(0), f.length - 4);
    assert.equal(f.subarray(4).toString('utf8'), '{"t":"bye"}');
  });

  it('round-trips every message type, whole, byte by byte and packed together', () => {
    const all = Buffer.concat(samples.map(encodeFrame));
    assert.deepEqual(new FrameDecoder().push(all), samples);
    const d = new FrameDecoder();
    const out: ControlMessage[] = [];
    for (let i = 0; i < all.length; i++) out.push(...d.push(all.subarray(i, i + 1)));
    assert.deepEqual(out, samples);
    assert.equal(d.pendingBytes, 0);
  });

  it('refuses to encode invalid or oversized messages', () => {
    assert.throws(
      () => encodeFrame({ t: 'results', files: [{ id: -1, ok: true }] } as ControlMessage),
      (e: unknown) => e instanceof TachyonError && e.code === 'INTERNAL' && /id/.test(e.message),
    );
    const huge: ControlMessage = { ...hello, sources: Array.from({ length: 400 }, () => 'x'.repeat(4000)) } as ControlMessage;
    assert.throws(
      () => encodeFrame(huge),
      (e: unknown) => e instanceof TachyonError && e.code === 'PROTOCOL' && /frame limit/.test(e.message),
    );
  });

  it('rejects a zero-length frame', () => {
    protocolError(() => new FrameDecoder().push(Buffer.alloc(4)), /zero length/);
  });

  it('rejects an oversized frame as soon as the header arrives, without buffering it', () => {
    const d = new FrameDecoder();
    protocolError(() => d.push(rawFrame(Buffer.alloc(0), MAX_FRAME_BYTES + 1)), /declares 1048577 bytes, over the limit/);
    // The decoder stays failed.
    protocolError(() => d.push(encodeFrame({ t: 'bye' })), /over the limit/);
  });

  it('accepts a frame of exactly MAX_FRAME_BYTES', () => {
    const base = JSON.stringify({ t: 'error', code: 'X', message: '' });
    const pad = MAX_FRAME_BYTES - base.length;
    // Pad with whitespace, which JSON allows.
    const payload = base.slice(0, -1) + ' '.repeat(pad) + '}';
    assert.equal(Buffer.byteLength(payload), MAX_FRAME_BYTES);
    assert.deepEqual(new FrameDecoder().push(rawFrame(payload)), [{ t: 'error', code: 'X', message: '' }]);
  });

  it('rejects invalid UTF-8, invalid JSON and non-objects without echoing the input', () => {
    protocolError(() => new FrameDecoder().push(rawFrame(Buffer.from([0x7b, 0xff, 0x7d]))), /not valid UTF-8/);
    const junk = '{"t":"bye",' + 'SECRET'.repeat(1000);
    assert.throws(
      () => new FrameDecoder().push(rawFrame(junk)),
      (e: unknown) =>
        e instanceof TachyonError && e.code === 'PROTOCOL' && /not valid JSON/.test(e.message) && !e.message.includes('SECRET'),
    );
    protocolError(() => new FrameDecoder().push(rawFrame('[1,2]')), /JSON object, got an array/);
    protocolError(() => new FrameDecoder().push(rawFrame('null')), /JSON object, got null/);
    protocolError(() => new FrameDecoder().push(rawFrame('42')), /JSON object, got a number/);
  });

  it('names what is wrong with a message that fails the schema', () => {
    protocolError(() => new FrameDecoder().push(rawFrame('{"t":"nope"}')), /Invalid control message t="nope": t:/);
    protocolError(() => new FrameDecoder().push(rawFrame('{"x":1}')), /message without a string "t"/);
    protocolError(
      () => new FrameDecoder().push(rawFrame(JSON.stringify({ ...welcome, udpPort: 0 }))),
      /t="welcome": udpPort:/,
    );
    protocolError(() => new FrameDecoder().push(rawFrame('{"t":"bye","extra":true}')), /t="bye".*extra/);
    const longKey = 'k'.repeat(100_000);
    assert.throws(
      () => new FrameDecoder().push(rawFrame(`{"t":"bye","${longKey}":1}`)),
      (e: unknown) => e instanceof TachyonError && e.code === 'PROTOCOL' && e.message.length < 600,
    );
  });

  it('returns the messages before a bad frame through decode()', () => {
    const d = new FrameDecoder();
    const got: ControlMessage[] = [];
    const bytes = Buffer.concat([encodeFrame({ t: 'bye' }), encodeFrame({ t: 'end', files: 1, bytes: 0 }), rawFrame('{')]);
    assert.throws(() => d.decode(bytes, (m) => got.push(m)), TachyonError);
    assert.deepEqual(got, [{ t: 'bye' }, { t: 'end', files: 1, bytes: 0 }]);
    assert.ok(d.failed);
  });

  it('fuzz: random and mutated input never throws anything but PROTOCOL and never hangs', () => {
    const rand = prng(0x7ac4);
    const valid = Buffer.concat(samples.map(encodeFrame));
    const int = (n: number): number => Math.floor(rand() * n);
    let decodedTotal = 0;
    let errors = 0;
    const started = Date.now();
    for (let iter = 0; iter < 5000; iter++) {
      let input: Buffer;
      const mode = iter % 4;
      if (mode === 0) {
        input = Buffer.alloc(int(300));
        for (let i = 0; i < input.length; i++) input[i] = int(256);
      } else if (mode === 1 || mode === 2) {
        input = Buffer.from(valid);
        const flips = 1 + int(mode === 1 ? 3 : 20);
        for (let k = 0; k < flips; k++) {
          const pos = int(input.length);
          const r = rand();
          if (r < 0.5) input[pos] = int(256);
          else if (r < 0.7) input[pos] = (input[pos] as number) ^ (1 << int(8));
          else if (r < 0.85) input = Buffer.concat([input.subarray(0, pos), input.subarray(pos + 1 + int(8))]);
          else input = Buffer.concat([input.subarray(0, pos), Buffer.from([int(256), int(256)]), input.subarray(pos)]);
        }
      } else {
        // Valid frames with small plausible headers but random JSON-ish payloads.
        const alphabet = '{}[]":,0123456789tfnrue.-e+ abcdehlorsy\\';
        const parts: Buffer[] = [];
        for (let f = 0; f < 1 + int(4); f++) {
          let s = '';
          const n = 1 + int(60);
          for (let i = 0; i < n; i++) s += alphabet[int(alphabet.length)];
          parts.push(rawFrame(rand() < 0.3 ? `{"t":"bye"${s}` : s));
        }
        input = Buffer.concat(parts);
      }
      const d = new FrameDecoder();
      let off = 0;
      try {
        while (off < input.length) {
          const n = 1 + int(Math.min(64, input.length - off));
          decodedTotal += d.push(input.subarray(off, off + n)).length;
          off += n;
        }
      } catch (err) {
        errors++;
        assert.ok(err instanceof TachyonError, `iteration ${iter}: non-Tachyon error ${String(err)}`);
        assert.equal(err.code, 'PROTOCOL', `iteration ${iter}`);
        assert.ok(err.message.length < 1000, `iteration ${iter}: message too long`);
      }
      assert.ok(d.pendingBytes <= input.length);
    }
    assert.ok(errors > 1000, `expected many rejections, got ${errors}`);
    assert.ok(decodedTotal > 100, `expected some decodes to survive mutation, got ${decodedTotal}`);
    assert.ok(Date.now() - started < 10_000, 'fuzzing took too long');
  });
});

describe('linkFromStream', () => {
  it('exchanges messages both ways and queues messages that arrive before a handler', async () => {
    const [a, b] = duplexPair();
    const la = linkFromStream(a);
    const lb = linkFromStream(b);
    for (const m of samples) la.send(m);
    await sleep(20);
    const got: ControlMessage[] = [];
    lb.onMessage((m) => got.push(m));
    await sleep(10);
    assert.deepEqual(got, samples);
    const back: ControlMessage[] = [];
    la.onMessage((m) => back.push(m));
    lb.send({ t: 'bye' });
    await sleep(10);
    assert.deepEqual(back, [{ t: 'bye' }]);

    const closedA = new Promise<Error | undefined>((r) => la.onClose(r));
    const closedB = new Promise<Error | undefined>((r) => lb.onClose(r));
    la.close();
    assert.equal(await closedA, undefined);
    assert.equal(await closedB, undefined);
    // Sending after close is a no-op, and late onClose handlers are still called.
    la.send({ t: 'bye' });
    assert.equal(await new Promise<Error | undefined>((r) => lb.onClose(r)), undefined);
  });

  it('delivers queued messages and then the clean end to a late handler', async () => {
    const [a, b] = duplexPair();
    const la = linkFromStream(a);
    const lb = linkFromStream(b);
    la.send({ t: 'end', files: 1, bytes: 0 });
    la.send({ t: 'end', files: 2, bytes: 0 });
    la.close();
    await sleep(20);
    const got: ControlMessage[] = [];
    const closed = new Promise<Error | undefined>((r) => lb.onClose(r));
    lb.onMessage((m) => got.push(m));
    assert.equal(await closed, undefined);
    assert.deepEqual(got, [
      { t: 'end', files: 1, bytes: 0 },
      { t: 'end', files: 2, bytes: 0 },
    ]);
  });

  it('ends with a PROTOCOL error, telling the peer, on a malformed frame', async () => {
    const [a, b] = duplexPair();
    const lb = linkFromStream(b);
    const fromB: Buffer[] = [];
    a.on('data', (c: Buffer) => fromB.push(c));
    const got: ControlMessage[] = [];
    lb.onMessage((m) => got.push(m));
    const closed = new Promise<Error | undefined>((r) => lb.onClose(r));
    a.write(Buffer.concat([encodeFrame({ t: 'bye' }), rawFrame('{"t":"hello"}')]));
    const err = await closed;
    assert.ok(err instanceof TachyonError);
    assert.equal(err.code, 'PROTOCOL');
    assert.match(err.message, /t="hello"/);
    assert.deepEqual(got, [{ t: 'bye' }]);
    await sleep(10);
    const reply = new FrameDecoder().push(Buffer.concat(fromB));
    assert.equal(reply.length, 1);
    assert.equal(reply[0]?.t, 'error');
  });

  it('treats an end in the middle of a frame as a PROTOCOL error', async () => {
    const [a, b] = duplexPair();
    const lb = linkFromStream(b);
    lb.onMessage(() => {});
    const closed = new Promise<Error | undefined>((r) => lb.onClose(r));
    a.end(encodeFrame({ t: 'bye' }).subarray(0, 6));
    const err = await closed;
    assert.ok(err instanceof TachyonError && err.code === 'PROTOCOL');
    assert.match(err.message, /middle of a frame/);
  });

  it('ends the link with the error when the message handler throws', async () => {
    const [a, b] = duplexPair();
    const la = linkFromStream(a);
    const lb = linkFromStream(b);
    lb.onMessage(() => {
      throw new TachyonError('PATH_INVALID', 'bad path');
    });
    const closed = new Promise<Error | undefined>((r) => lb.onClose(r));
    la.send({ t: 'dirs', paths: ['../x'] });
    const err = await closed;
    assert.ok(err instanceof TachyonError && err.code === 'PATH_INVALID');
  });

  it('reports a stream that closes without an end as PEER_VANISHED, and abort() as given', async () => {
    const [, b] = duplexPair();
    const lb = linkFromStream(b);
    const closed = new Promise<Error | undefined>((r) => lb.onClose(r));
    b.destroy();
    const err = await closed;
    assert.ok(err instanceof TachyonError && err.code === 'PEER_VANISHED');

    const [c] = duplexPair();
    const lc = linkFromStream(c);
    const closedC = new Promise<Error | undefined>((r) => lc.onClose(r));
    lc.abort(new TachyonError('CANCELLED', 'stop'));
    const errC = await closedC;
    assert.ok(errC instanceof TachyonError && errC.code === 'CANCELLED');
    assert.ok(lc.closed);
  });
});
