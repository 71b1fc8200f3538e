/**
 * The endpoint's hold for early data, on real UDP sockets on 127.0.0.1: datagrams for a
 * session id nobody has registered yet are held only from an address with an SSH
 * connection (the `holdFrom` predicate), for at most HOLD_MS, within a per-id and a total
 * byte bound, and handed to the session when it registers, in arrival order and with
 * their arrival times.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Clock } from '../../src/core/clock.js';
import { Endpoint, HOLD_ENTRY_BYTES, HOLD_MS, HOLD_PER_ID_BYTES, HOLD_TOTAL_BYTES, type EndpointOptions, type PacketSink } from '../../src/transport/session/endpoint.js';
import type { DatagramSocket, PeerAddress } from '../../src/transport/socket/types.js';
import { openUdpSocket } from '../../src/transport/socket/udp.js';
import { PacketType, writeCommon } from '../../src/transport/wire/packet.js';

/** A clock the test moves by hand (the endpoint reads it when datagrams arrive). */
class HandClock implements Clock {
  t = 1_000_000;
  now(): number {
    return this.t;
  }
  setTimer(ms: number, fn: () => void): () => void {
    const h = setTimeout(fn, ms);
    return () => clearTimeout(h);
  }
}

interface Got {
  packet: Buffer;
  from: PeerAddress;
  arrivedAt: number | undefined;
}

class RecordingSink implements PacketSink {
  readonly got: Got[] = [];
  onPacket(packet: Buffer, from: PeerAddress, arrivedAt?: number): void {
    this.got.push({ packet: Buffer.from(packet), from, arrivedAt });
  }
}

function datagram(sessionId: number, pn: number, size = 100): Buffer {
  const b = Buffer.alloc(size, pn & 0xff);
  writeCommon(b, PacketType.DATA, 0, sessionId, pn);
  return b;
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

const microtasks = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('endpoint: early datagrams are held for a session not registered yet', () => {
  let client: DatagramSocket;
  const open: DatagramSocket[] = [];

  before(async () => {
    client = await openUdpSocket({ address: '127.0.0.1', port: 0 });
  });

  after(async () => {
    await client.close();
    for (const s of open) await s.close();
  });

  async function endpoint(o: EndpointOptions): Promise<{ ep: Endpoint; to: PeerAddress }> {
    // the socket gives arrival times (the kernel's, where it can) in the endpoint's clock
    const sock = await openUdpSocket({ address: '127.0.0.1', port: 0, ...(o.clock ? { clock: o.clock } : {}) });
    open.push(sock);
    return { ep: new Endpoint(sock, o), to: sock.local() };
  }

  /** Sends one datagram and waits until the endpoint has seen it (so that arrival times are the test's). */
  async function deliver(ep: Endpoint, to: PeerAddress, d: Buffer): Promise<void> {
    const before = ep.stats.received;
    client.send([d], to);
    await until(() => ep.stats.received > before, 'the datagram to arrive');
  }

  it('holds datagrams from an address with an SSH connection and hands them over, in order, with their arrival times', async () => {
    const clock = new HandClock();
    const asked: string[] = [];
    const { ep, to } = await endpoint({ clock, holdFrom: (a) => (asked.push(a), a === '127.0.0.1') });
    const arrivals: number[] = [];
    for (let pn = 0; pn < 5; pn++) {
      arrivals.push(clock.t);
      await deliver(ep, to, datagram(7, pn));
      clock.t += 10 + pn;
    }
    assert.deepEqual(new Set(asked), new Set(['127.0.0.1']));
    assert.equal(ep.stats.held, 5);
    assert.equal(ep.stats.unknownSession, 0);
    assert.equal(ep.heldNow, 5 * (100 + HOLD_ENTRY_BYTES));
    // another id's session gets none of them
    const other = new RecordingSink();
    ep.register(8, other);
    const sink = new RecordingSink();
    ep.register(7, sink);
    assert.equal(sink.got.length, 0, 'handed over in a microtask (the sink may still be under construction)');
    await microtasks();
    assert.equal(other.got.length, 0);
    assert.deepEqual(
      sink.got.map((g) => g.packet.readUIntBE(6, 6)),
      [0, 1, 2, 3, 4],
    );
    // each with its own arrival time: the kernel's receive time, a little before the endpoint read it
    sink.got.forEach((g, i) => assert.ok(g.arrivedAt !== undefined && g.arrivedAt <= arrivals[i]! && g.arrivedAt > arrivals[i]! - 50, `#${i}: ${g.arrivedAt} for ${arrivals[i]}`));
    assert.deepEqual(sink.got[0]!.packet, datagram(7, 0));
    assert.equal(sink.got[0]!.from.port, client.local().port);
    assert.deepEqual({ held: ep.stats.held, heldDelivered: ep.stats.heldDelivered, heldDropped: ep.stats.heldDropped }, { held: 5, heldDelivered: 5, heldDropped: 0 });
    assert.equal(ep.heldNow, 0);
    // registered now: the next one goes straight to the session
    await deliver(ep, to, datagram(7, 5));
    assert.equal(sink.got.length, 6);
    assert.equal(ep.stats.held, 5);
  });

  it('holds nothing from an address without an SSH connection, nor by default', async () => {
    for (const o of [{ holdFrom: (a: string) => a === '10.9.8.7' }, {}] as EndpointOptions[]) {
      const { ep, to } = await endpoint(o);
      await deliver(ep, to, datagram(9, 0));
      await deliver(ep, to, datagram(9, 1));
      assert.deepEqual({ ...ep.stats }, { received: 2, unknownSession: 2, malformed: 0, held: 0, heldDelivered: 0, heldDropped: 0 });
      const sink = new RecordingSink();
      ep.register(9, sink);
      await microtasks();
      assert.equal(sink.got.length, 0);
    }
  });

  it(`drops held datagrams older than ${HOLD_MS} ms (lazily, as others arrive or a session registers)`, async () => {
    const clock = new HandClock();
    const { ep, to } = await endpoint({ clock, holdFrom: () => true });
    // (arrival times are the kernel's, a fraction of a millisecond before the read: margins of 50 ms)
    await deliver(ep, to, datagram(11, 0));
    clock.t += 1000;
    await deliver(ep, to, datagram(11, 1));
    await deliver(ep, to, datagram(12, 0));
    clock.t += HOLD_MS - 1000 - 50; // the first is just under HOLD_MS old: still held
    await deliver(ep, to, datagram(13, 0));
    assert.equal(ep.stats.heldDropped, 0);
    clock.t += 100; // now it is older
    await deliver(ep, to, datagram(13, 1));
    assert.equal(ep.stats.heldDropped, 1);
    clock.t += 900; // 11/1 and 12/0 are just under HOLD_MS old
    const s11 = new RecordingSink();
    ep.register(11, s11);
    await microtasks();
    assert.deepEqual(
      s11.got.map((g) => g.packet.readUIntBE(6, 6)),
      [1],
    );
    clock.t += 100;
    const s12 = new RecordingSink();
    ep.register(12, s12);
    await microtasks();
    assert.equal(s12.got.length, 0, 'expired before its session came');
    assert.deepEqual({ held: ep.stats.held, heldDelivered: ep.stats.heldDelivered, heldDropped: ep.stats.heldDropped }, { held: 5, heldDelivered: 1, heldDropped: 2 });
    // 13's two are 1100 and 1000 ms old; 1100 ms later they expire too, and nothing else is held
    clock.t += 1100;
    await deliver(ep, to, datagram(14, 0));
    assert.equal(ep.stats.heldDropped, 4);
    assert.equal(ep.heldNow, 100 + HOLD_ENTRY_BYTES);
  });

  it('holds at most 8 MiB per session id and 16 MiB in all; beyond, datagrams are dropped and counted', async () => {
    assert.equal(HOLD_PER_ID_BYTES, 8 * 1024 * 1024);
    assert.equal(HOLD_TOTAL_BYTES, 16 * 1024 * 1024);
    const clock = new HandClock();
    const { ep, to } = await endpoint({ clock, holdFrom: () => true });
    const size = 60_000;
    const cost = size + HOLD_ENTRY_BYTES;
    const perId = Math.floor(HOLD_PER_ID_BYTES / cost);
    const total = Math.floor(HOLD_TOTAL_BYTES / cost);
    for (let pn = 0; pn < perId + 3; pn++) await deliver(ep, to, datagram(21, pn, size));
    assert.equal(ep.stats.held, perId);
    assert.equal(ep.stats.heldDropped, 3);
    for (let pn = 0; pn < perId; pn++) await deliver(ep, to, datagram(22, pn, size));
    assert.equal(ep.stats.held, 2 * perId);
    // what is left of the total bound, for a third id
    const left = total - 2 * perId;
    assert.ok(left >= 1 && left < perId, `left ${left}`);
    for (let pn = 0; pn < left + 2; pn++) await deliver(ep, to, datagram(23, pn, size));
    assert.equal(ep.stats.held, 2 * perId + left);
    assert.equal(ep.stats.heldDropped, 5);
    assert.ok(ep.heldNow <= HOLD_TOTAL_BYTES);
    // a session takes its own: room again for the others
    const s21 = new RecordingSink();
    ep.register(21, s21);
    await microtasks();
    assert.equal(s21.got.length, perId);
    assert.deepEqual(
      s21.got.map((g) => g.packet.readUIntBE(6, 6)),
      [...Array(perId).keys()],
    );
    await deliver(ep, to, datagram(23, 1000, size));
    assert.equal(ep.stats.held, 2 * perId + left + 1);
    assert.equal(ep.stats.heldDelivered, perId);
    assert.equal(ep.stats.heldDropped, 5);
  });

  it('a session that unregisters before its held datagrams are handed over gets none (counted dropped)', async () => {
    const { ep, to } = await endpoint({ holdFrom: () => true });
    await deliver(ep, to, datagram(31, 0));
    const sink = new RecordingSink();
    ep.register(31, sink);
    ep.unregister(31);
    await microtasks();
    assert.equal(sink.got.length, 0);
    assert.equal(ep.stats.heldDropped, 1);
    assert.equal(ep.heldNow, 0);
  });
});
