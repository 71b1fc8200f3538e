/**
 * A receiver handed datagrams that the endpoint held before the session existed (early
 * data): it times each by its arrival, not by the hand-over, so that a burst delivered at
 * once does not read as a fast path (the sender's start-up train is measured from the
 * receiver's interval arrival rate) and the echoed timestamp's hold time is the real one;
 * a held datagram that fails authentication is rejected like any other.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SimClock } from '../../src/testkit/simclock.js';
import { createProtection, SECRET_BYTES } from '../../src/transport/crypto/aead.js';
import { Endpoint } from '../../src/transport/session/endpoint.js';
import { DataReceiver } from '../../src/transport/session/receiver.js';
import { COMMON_HEADER, DATA_HEADER, PacketType, decodeFeedback, writeCommon, writeDataHeader, type Feedback } from '../../src/transport/wire/packet.js';
import { RecordingSink } from '../helpers/sim-flow.js';
import { TapSocket } from '../helpers/tap-socket.js';

const SESSION = 0xab12;
const DATAGRAM = 1472;
const SERVER = { address: '10.0.0.2', port: 33001 };
const CLIENT = { address: '10.0.0.1', port: 40000 };

describe('receiver: held datagrams keep their arrival times', () => {
  it('a burst handed over 300 ms late: arrival rate and hold time as the path delivered them; a forged one is rejected', async () => {
    const c2s = randomBytes(SECRET_BYTES);
    const s2c = randomBytes(SECRET_BYTES);
    const seal = createProtection('aes-128-gcm', c2s);
    const clock = new SimClock({ startMs: 1000 });
    const sock = new TapSocket(SERVER);
    const endpoint = new Endpoint(sock, { clock, holdFrom: (a) => a === CLIENT.address });
    const payload = DATAGRAM - DATA_HEADER - seal.overhead;
    const N = 100;
    const data = randomBytes(N * payload);
    // 100 datagrams over 100 ms (11.5 Mbit/s of blocks), nobody registered yet
    for (let i = 0; i < N; i++) {
      const pkt = Buffer.alloc(DATA_HEADER + payload + seal.overhead);
      writeCommon(pkt, PacketType.DATA, 0, SESSION, i);
      writeDataHeader(pkt, i, Math.round(clock.now() * 1000) >>> 0, 0);
      data.copy(pkt, DATA_HEADER, i * payload, (i + 1) * payload);
      seal.sealInPlace(pkt, DATA_HEADER, payload, i);
      sock.inject(pkt, CLIENT);
      clock.advance(1);
    }
    // and one under another key
    const forged = Buffer.alloc(DATA_HEADER + payload + seal.overhead);
    writeCommon(forged, PacketType.DATA, 0, SESSION, N);
    writeDataHeader(forged, N, 0, 0);
    createProtection('aes-128-gcm', randomBytes(SECRET_BYTES)).sealInPlace(forged, DATA_HEADER, payload, N);
    sock.inject(forged, CLIENT);
    assert.equal(endpoint.stats.held, N + 1);
    const lastArrival = clock.now() - 1;
    clock.advance(300 - N);
    const registeredAt = clock.now();
    const receiver = new DataReceiver({ endpoint, sessionId: SESSION, clock, seal: createProtection('aes-128-gcm', s2c), open: createProtection('aes-128-gcm', c2s), datagramSize: DATAGRAM });
    const sink = new RecordingSink();
    receiver.addFile(0, 0, data.length, sink);
    await Promise.resolve();
    try {
      assert.equal(endpoint.stats.heldDelivered, N + 1);
      assert.equal(receiver.stats.packets, N);
      assert.equal(receiver.stats.rejected, 1, 'the forged held datagram fails authentication');
      assert.equal(sink.writes.length, N);
      assert.equal(receiver.stats.lastPacketAt, lastArrival);
      clock.advance(5);
      const open = createProtection('aes-128-gcm', s2c);
      const feedbacks: Feedback[] = sock.drain().map((p) => decodeFeedback(open.open(p, COMMON_HEADER, p.readUIntBE(6, 6))));
      assert.ok(feedbacks.length >= 1);
      const f = feedbacks[0]!;
      assert.equal(f.cumAck, N);
      assert.deepEqual(f.naks, []);
      const rateBps = f.recvRateKbps * 1000;
      // as they arrived: 11.3 Mbit/s over their 99 ms (not from the hand-over: that would read ~230 Mbit/s)
      const arrived = ((N - 1) * payload * 8) / ((N - 1) / 1000);
      assert.ok(rateBps <= arrived * 1.01 && rateBps > 3e6, `interval rate ${(rateBps / 1e6).toFixed(1)} Mbit/s, arrived at ${(arrived / 1e6).toFixed(1)}`);
      // the newest timestamp was held from its arrival until now
      assert.equal(f.holdUs, Math.round((clock.now() - lastArrival) * 1000));
      assert.ok(clock.now() - registeredAt < 10);
    } finally {
      receiver.close();
    }
  });
});
