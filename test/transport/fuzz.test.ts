/**
 * Fuzzing the datagram path with a seeded PRNG (replayable: the seed is in each
 * message). Mutations of valid DATA, FEEDBACK and STATUS datagrams (bit flips,
 * truncation, extension, field overwrites, splices) and plain random bytes go to:
 *
 * 1. the decoders: only TachyonError('PROTOCOL') may come out, never a RangeError or
 *    anything else, and whatever they accept satisfies the format's invariants;
 * 2. a live DataReceiver and a live DataSender through their Endpoints: every datagram
 *    is counted as rejected, nothing is written, no state moves, nothing throws; and
 *    afterwards the genuine datagrams still work (so the spies could have seen a write).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TachyonError } from '../../src/core/errors.js';
import { SimClock } from '../../src/testkit/simclock.js';
import { createProtection, SECRET_BYTES } from '../../src/transport/crypto/aead.js';
import { FixedRateController } from '../../src/transport/rate/controller.js';
import { Endpoint } from '../../src/transport/session/endpoint.js';
import { DataReceiver } from '../../src/transport/session/receiver.js';
import { DataSender } from '../../src/transport/session/sender.js';
import type { PeerAddress } from '../../src/transport/socket/types.js';
import {
  COMMON_HEADER,
  DATA_HEADER,
  PacketType,
  WIRE_VERSION,
  decodeCommon,
  decodeDataHeader,
  decodeFeedback,
  decodeParityHeader,
  writeParityHeader,
  decodeStatus,
  encodeFeedback,
  encodeStatus,
  writeCommon,
  writeDataHeader,
  type NakRange,
} from '../../src/transport/wire/packet.js';
import { Rng } from '../helpers/rng.js';
import { MemorySource, RecordingSink } from '../helpers/sim-flow.js';
import { TapSocket } from '../helpers/tap-socket.js';

const SEED = 0xf0221;
const SESSION = 0x51e55107;
const DATAGRAM = 1472;

// ---- mutation engine ------------------------------------------------------------------

type Mutation = 'flip' | 'truncate' | 'extend' | 'overwrite' | 'splice' | 'random' | 'random-with-header';
const MUTATIONS: Mutation[] = ['flip', 'flip', 'truncate', 'extend', 'overwrite', 'splice', 'random', 'random-with-header'];

/** Returns a datagram derived from `templates` that differs from every template it came from. */
function mutate(r: Rng, templates: readonly Buffer[], kind: Mutation): Buffer {
  const t = r.pick(templates);
  let out: Buffer;
  switch (kind) {
    case 'flip': {
      out = Buffer.from(t);
      const flips = r.range(1, 4);
      // half of the time aim at the headers, where the parsing decisions are made
      const span = r.chance(0.5) ? Math.min(out.length, DATA_HEADER + 48) : out.length;
      for (let i = 0; i < flips && span > 0; i++) {
        const bit = r.int(span * 8);
        out[bit >> 3]! ^= 1 << (bit & 7);
      }
      break;
    }
    case 'truncate':
      out = Buffer.from(t.subarray(0, r.int(t.length)));
      break;
    case 'extend':
      out = Buffer.concat([t, r.bytes(r.range(1, 100))]);
      break;
    case 'overwrite': {
      // an extreme value in a random field-sized slot
      out = Buffer.from(t);
      const width = r.pick([1, 2, 4, 6]);
      if (out.length >= width) {
        const at = r.int(out.length - width + 1);
        const v = r.pick([0, 0xff, r.int(256)]);
        out.fill(v, at, at + width);
      }
      break;
    }
    case 'splice': {
      const u = r.pick(templates);
      const cut = r.int(Math.min(t.length, u.length) + 1);
      out = Buffer.concat([t.subarray(0, cut), u.subarray(Math.max(0, cut + r.range(-8, 8)))]);
      break;
    }
    case 'random':
      out = r.bytes(r.int(1600));
      break;
    case 'random-with-header': {
      // random bytes behind a well-formed header for the live session: reaches the AEAD
      out = r.bytes(r.range(COMMON_HEADER, 1600));
      const type = r.pick([PacketType.DATA, PacketType.FEEDBACK, PacketType.STATUS, PacketType.PROBE, PacketType.PARITY]);
      writeCommon(out, type, type === PacketType.DATA ? r.int(4) : r.int(2), SESSION, r.int(2 ** 30));
      break;
    }
  }
  if (templates.some((x) => x.equals(out))) {
    if (out.length === 0) return Buffer.from([0]);
    out[r.int(out.length)]! ^= 0x40;
  }
  return out;
}

// ---- plaintext templates for the decoders ---------------------------------------------

function plainTemplates(r: Rng): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < 8; i++) {
    const data = Buffer.alloc(DATA_HEADER + r.range(0, 1448));
    writeCommon(data, PacketType.DATA, r.int(2), SESSION, r.int(2 ** 40));
    writeDataHeader(data, r.int(2 ** 40), r.int(2 ** 32), r.int(500));
    r.fill(data.subarray(DATA_HEADER));
    out.push(data);

    const parity = Buffer.alloc(DATA_HEADER + r.range(0, 1448));
    writeCommon(parity, PacketType.PARITY, 0, SESSION, r.int(2 ** 40));
    writeParityHeader(parity, r.int(2 ** 40), r.range(1, 129), r.int(128), r.int(2 ** 32));
    r.fill(parity.subarray(DATA_HEADER));
    out.push(parity);

    const next = r.range(1000, 2 ** 40);
    const naks: NakRange[] = [];
    for (let s = r.int(next), n = r.int(20); n > 0 && s < next; n--) {
      const count = Math.min(next - s, r.range(1, 0xffff));
      naks.push({ start: s, count });
      s += count + r.range(1, 1000);
    }
    const body = encodeFeedback({
      cumAck: naks[0]?.start ?? next,
      nextExpected: next,
      bytesReceived: r.int(2 ** 40),
      echoTsUs: r.int(2 ** 32),
      holdUs: r.int(1e6),
      qdelayUs: r.pick([-1, r.int(1e6)]),
      recvRateKbps: r.int(1e7),
      intervalPackets: r.int(1e5),
      intervalLost: r.int(1e3),
      naks,
      // the optional trailer of verified file ids, in some seeds
      ...(r.int(3) === 0 ? { verified: Array.from({ length: r.range(1, 32) }, () => r.int(2 ** 32)) } : {}),
    });
    const fb = Buffer.alloc(COMMON_HEADER + body.length);
    writeCommon(fb, PacketType.FEEDBACK, 0, SESSION, r.int(2 ** 40));
    body.copy(fb, COMMON_HEADER);
    out.push(fb);

    const st = Buffer.alloc(COMMON_HEADER + 10);
    writeCommon(st, PacketType.STATUS, 0, SESSION, r.int(2 ** 40));
    encodeStatus({ nextSsn: r.int(2 ** 40), sendTsUs: r.int(2 ** 32) }).copy(st, COMMON_HEADER);
    out.push(st);
  }
  return out;
}

/** Runs fn; returns undefined if it returned or threw TachyonError PROTOCOL, else a description. */
function onlyProtocolErrors(what: string, fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (err instanceof TachyonError && err.code === 'PROTOCOL') return undefined;
    return `${what}: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`;
  }
}

describe('fuzz: decoders', () => {
  it('20,000+ mutated and random datagrams: only TachyonError(PROTOCOL), accepted forms are valid', { timeout: 30_000 }, () => {
    const r = new Rng(SEED);
    const templates = plainTemplates(r);
    const failures: string[] = [];
    const accepted = { common: 0, data: 0, parity: 0, feedback: 0, status: 0 };
    const started = performance.now();
    const N = 24_000;
    for (let i = 0; i < N; i++) {
      const kind = MUTATIONS[i % MUTATIONS.length]!;
      const pkt = mutate(r, templates, kind);
      const tag = `seed ${SEED} #${i} (${kind}) ${pkt.subarray(0, 48).toString('hex')}`;
      const fail = (msg: string | undefined): void => {
        if (msg !== undefined && failures.length < 10) failures.push(`${tag}: ${msg}`);
      };
      fail(
        onlyProtocolErrors('decodeCommon', () => {
          const h = decodeCommon(pkt);
          accepted.common++;
          assert.equal(pkt[0]! >> 4, WIRE_VERSION);
          assert.ok(h.type >= PacketType.DATA && h.type <= PacketType.PARITY);
          // the grouped flag only on DATA
          assert.equal(h.flags & ~(h.type === PacketType.DATA ? 7 : 1), 0);
          if (h.type === PacketType.DATA) {
            decodeDataHeader(pkt, h);
            accepted.data++;
          }
          if (h.type === PacketType.PARITY) {
            const p = decodeParityHeader(pkt, h);
            assert.ok(p.k >= 1 && p.k <= 128 && p.j <= 127, `parity group k ${p.k} j ${p.j} accepted`);
            accepted.parity++;
          }
        }),
      );
      // every body decoder must cope with any bytes, whatever the header says
      const body = pkt.subarray(Math.min(COMMON_HEADER, pkt.length));
      fail(
        onlyProtocolErrors('decodeFeedback', () => {
          const f = decodeFeedback(body);
          accepted.feedback++;
          assert.ok(f.cumAck <= f.nextExpected, 'cumAck beyond nextExpected accepted');
          for (const n of f.naks) assert.ok(n.count > 0 && n.start + n.count <= f.nextExpected, 'NAK range outside the stream accepted');
          if (f.verified) assert.ok(f.verified.length >= 1 && f.verified.length <= 32, 'verified trailer of a bad length accepted');
        }),
      );
      fail(
        onlyProtocolErrors('decodeStatus', () => {
          decodeStatus(body);
          accepted.status++;
        }),
      );
      // decodeDataHeader on any buffer with any header it is handed
      fail(onlyProtocolErrors('decodeDataHeader', () => decodeDataHeader(pkt, { type: PacketType.DATA, flags: 0, sessionId: 0, packetNumber: 0 })));
      fail(onlyProtocolErrors('decodeParityHeader', () => decodeParityHeader(pkt, { type: PacketType.PARITY, flags: 0, sessionId: 0, packetNumber: 0 })));
    }
    const ms = performance.now() - started;
    assert.deepEqual(failures, []);
    // the mutations must reach the accepting paths too, or the fuzz proves little
    for (const [k, n] of Object.entries(accepted)) assert.ok(n > 500, `only ${n} datagrams passed ${k}`);
    assert.ok(ms < 20_000, `fuzzing took ${ms.toFixed(0)} ms`);
  });
});

// ---- live sender and receiver ---------------------------------------------------------

const SENDER_ADDR: PeerAddress = { address: '10.1.0.1', port: 4000 };
const RECEIVER_ADDR: PeerAddress = { address: '10.1.0.2', port: 5000 };
const ATTACKER: PeerAddress = { address: '10.6.6.6', port: 6666 };

/**
 * Captures genuine sealed datagrams of one session: the DATA and STATUS packets a real
 * DataSender sends for a 64 KiB file, and the FEEDBACK a real DataReceiver returns
 * (with NAKs, because a few blocks are held back first, then complete).
 */
function captureSession() {
  const r = new Rng(SEED + 1);
  const secretA = r.bytes(SECRET_BYTES);
  const secretB = r.bytes(SECRET_BYTES);
  const file = r.bytes(64 * 1024 + 17);
  const clock = new SimClock();
  const sSock = new TapSocket(SENDER_ADDR);
  const rSock = new TapSocket(RECEIVER_ADDR);
  const sender = new DataSender({
    endpoint: new Endpoint(sSock),
    sessionId: SESSION,
    clock,
    seal: createProtection('aes-128-gcm', secretA),
    open: createProtection('aes-128-gcm', secretB),
    rate: new FixedRateController(100e6),
    datagramSize: DATAGRAM,
    peer: RECEIVER_ADDR,
  });
  const receiver = new DataReceiver({
    endpoint: new Endpoint(rSock),
    sessionId: SESSION,
    clock,
    seal: createProtection('aes-128-gcm', secretB),
    open: createProtection('aes-128-gcm', secretA),
    datagramSize: DATAGRAM,
  });
  const ssn0 = sender.assign(1, file.length);
  receiver.addFile(1, ssn0, file.length, new RecordingSink());
  sender.start(1, new MemorySource(file));
  clock.advance(50); // all blocks, then STATUS packets
  const out = sSock.drain();
  const data = out.filter((p) => p[0]! === ((WIRE_VERSION << 4) | PacketType.DATA));
  const status = out.filter((p) => p[0]! === ((WIRE_VERSION << 4) | PacketType.STATUS));
  // the receiver gets all but blocks 3, 4 and 20: its feedback NAKs them
  for (const [i, p] of data.entries()) if (![3, 4, 20].includes(i)) rSock.inject(p, SENDER_ADDR);
  clock.advance(20);
  const nakFeedback = rSock.drain();
  for (const i of [3, 4, 20]) rSock.inject(data[i]!, SENDER_ADDR);
  clock.advance(20);
  const finalFeedback = rSock.drain();
  sender.close();
  receiver.close();
  assert.ok(data.length >= 40 && status.length > 0 && nakFeedback.length > 0 && finalFeedback.length > 0);
  assert.ok(nakFeedback.some((p) => p.length > COMMON_HEADER + 44 + 16), 'the NAK feedback carries NAK ranges');
  return { secretA, secretB, file, data, status, nakFeedback, finalFeedback };
}

describe('fuzz: live data receiver and sender', () => {
  const cap = captureSession();
  const templates = [...cap.data, ...cap.status, ...cap.nakFeedback, ...cap.finalFeedback];

  it('a DataReceiver rejects 20,000 forged datagrams, writes nothing, then still accepts the genuine ones', { timeout: 30_000 }, () => {
    const clock = new SimClock();
    const sock = new TapSocket(RECEIVER_ADDR);
    const endpoint = new Endpoint(sock);
    const sink = new RecordingSink();
    const receiver = new DataReceiver({
      endpoint,
      sessionId: SESSION,
      clock,
      seal: createProtection('aes-128-gcm', cap.secretB),
      open: createProtection('aes-128-gcm', cap.secretA),
      datagramSize: DATAGRAM,
    });
    let completed = 0;
    const errors: unknown[] = [];
    receiver.onFileComplete = () => completed++;
    receiver.onWriteError = (_id, err) => errors.push(err);
    receiver.addFile(1, 0, cap.file.length, sink);
    try {
      const r = new Rng(SEED + 2);
      const N = 20_000;
      for (let i = 0; i < N; i++) {
        const pkt = mutate(r, templates, MUTATIONS[i % MUTATIONS.length]!);
        assert.doesNotThrow(() => sock.inject(pkt, ATTACKER), `seed ${SEED + 2} #${i}`);
        if (i % 1000 === 0) clock.advance(5); // let feedback timers run in between
      }
      const ep = endpoint.stats;
      assert.equal(ep.received, N);
      assert.equal(receiver.stats.rejected + ep.malformed + ep.unknownSession, N, 'every forged datagram is counted as bad');
      assert.ok(receiver.stats.rejected > N / 2, 'most forgeries reach the receiver (live session id)');
      assert.equal(receiver.stats.packets, 0);
      assert.equal(receiver.stats.bytes, 0);
      assert.deepEqual(sink.writes, [], 'nothing may be written');
      assert.equal(completed, 0);
      assert.deepEqual(errors, []);
      assert.equal(receiver.peerAddress, undefined, 'a forgery must not set the peer address');
      assert.equal(sock.sent.length, 0, 'nothing is sent to a forger');

      // control: the genuine datagrams are accepted and complete the file
      for (const p of cap.data) sock.inject(p, SENDER_ADDR);
      assert.equal(completed, 1);
      assert.equal(sink.writes.length, cap.data.length);
      assert.deepEqual(receiver.peerAddress, SENDER_ADDR);
      // and once accepted, a replay of them is refused
      const before = receiver.stats.replayed;
      for (const p of cap.data) sock.inject(p, ATTACKER);
      assert.equal(receiver.stats.replayed - before, cap.data.length);
      assert.equal(sink.writes.length, cap.data.length);
      assert.deepEqual(receiver.peerAddress, SENDER_ADDR, 'a replay must not move the peer address');
    } finally {
      receiver.close();
    }
  });

  it('a DataSender rejects 20,000 forged feedback datagrams without acting on them, then still works', { timeout: 30_000 }, () => {
    const clock = new SimClock();
    const sock = new TapSocket(SENDER_ADDR);
    const endpoint = new Endpoint(sock);
    const sender = new DataSender({
      endpoint,
      sessionId: SESSION,
      clock,
      seal: createProtection('aes-128-gcm', cap.secretA),
      open: createProtection('aes-128-gcm', cap.secretB),
      rate: new FixedRateController(100e6),
      datagramSize: DATAGRAM,
      peer: RECEIVER_ADDR,
    });
    try {
      sender.assign(1, cap.file.length);
      sender.start(1, new MemorySource(cap.file));
      clock.advance(50);
      const sentBefore = sender.stats.packetsSent;
      assert.equal(sentBefore, cap.data.length);
      const r = new Rng(SEED + 3);
      const N = 20_000;
      for (let i = 0; i < N; i++) {
        const pkt = mutate(r, templates, MUTATIONS[i % MUTATIONS.length]!);
        assert.doesNotThrow(() => sock.inject(pkt, ATTACKER), `seed ${SEED + 3} #${i}`);
        if (i % 1000 === 0) clock.advance(5);
      }
      const ep = endpoint.stats;
      assert.equal(sender.stats.badPackets + ep.malformed + ep.unknownSession, N, 'every forged datagram is counted as bad');
      assert.equal(sender.stats.feedbacks, 0);
      assert.equal(sender.stats.retransmits, 0, 'forged NAKs must not trigger retransmissions');
      assert.equal(sender.stats.packetsSent, sentBefore);
      assert.equal(sender.stats.bytesAcked, 0);
      assert.deepEqual(sender.peerAddress, RECEIVER_ADDR, 'a forgery must not redirect the stream');
      assert.ok(sock.sent.every((s) => s.to.address === RECEIVER_ADDR.address), 'nothing was sent to the forger');

      // control: genuine NAK feedback triggers retransmissions, final feedback acknowledges all
      for (const p of cap.nakFeedback) sock.inject(p, RECEIVER_ADDR);
      clock.advance(10);
      assert.ok(sender.stats.retransmits >= 3, `${sender.stats.retransmits} retransmits after genuine NAKs`);
      for (const p of cap.finalFeedback) sock.inject(p, RECEIVER_ADDR);
      assert.ok(sender.allAcked);
    } finally {
      sender.close();
    }
  });
});
