/**
 * The native datagram socket (recvmmsg into one slab, sendto with a queue when the
 * socket is full) against node:dgram on real loopback sockets. Skipped when the addon is
 * not built, except under TACHYON_REQUIRE_NATIVE=1 (CI), where its absence fails.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { native, nativeStatus } from '../../src/transport/native/binding.js';
import { openUdpSocket } from '../../src/transport/socket/udp.js';
import type { DatagramSocket, PeerAddress } from '../../src/transport/socket/types.js';
import { Rng } from '../helpers/rng.js';

const required = process.env['TACHYON_REQUIRE_NATIVE'] === '1';
const skip = native ? false : required ? false : `native addon not loaded (${nativeStatus})`;

function collect(sock: DatagramSocket, want: number, timeoutMs = 5000): Promise<{ packets: Buffer[]; from: PeerAddress[] }> {
  const packets: Buffer[] = [];
  const from: PeerAddress[] = [];
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`received ${packets.length} of ${want}`)), timeoutMs);
    sock.onDatagram((p, f) => {
      // the native path lends a view of its slab: copy what is kept
      packets.push(Buffer.from(p));
      from.push(f);
      if (packets.length === want) {
        clearTimeout(t);
        resolve({ packets, from });
      }
    });
  });
}

describe('native UDP socket', { skip }, () => {
  it('the addon is loaded (TACHYON_REQUIRE_NATIVE=1 makes its absence a failure)', () => {
    assert.ok(native, nativeStatus);
  });

  it('exchanges datagrams of every size up to 65,507 bytes with node:dgram, both ways, byte for byte', async () => {
    const rng = new Rng(0x5eed);
    const a = await openUdpSocket({ address: '127.0.0.1', port: 0 }); // native
    const b = await openUdpSocket({ address: '127.0.0.1', port: 0, native: undefined }); // node:dgram
    assert.equal(a.copiesOnSend, true);
    assert.notEqual(b.copiesOnSend, true);
    try {
      for (const [tx, rx] of [
        [a, b],
        [b, a],
      ] as const) {
        const sizes = [0, 1, 12, 1472, 9000, 65507, ...Array.from({ length: 194 }, () => rng.range(1, 65507))];
        const sent = sizes.map((n) => rng.bytes(n));
        const got = collect(rx, sent.length);
        // in groups, so that the loopback socket buffers never overflow
        for (let i = 0; i < sent.length; i += 20) {
          tx.send(
            sent.slice(i, i + 20).map((p) => Buffer.from(p)),
            rx.local(),
          );
          await new Promise((r) => setTimeout(r, 2));
        }
        const { packets, from } = await got;
        const digest = (l: Buffer[]): string[] => l.map((p) => createHash('sha256').update(p).digest('hex')).sort();
        assert.deepEqual(digest(packets), digest(sent));
        for (const f of from) assert.deepEqual(f, { address: '127.0.0.1', port: tx.local().port });
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('each datagram carries the kernel\'s receive time: read 80 ms late, it still says when it arrived', async () => {
    const a = await openUdpSocket({ address: '127.0.0.1', port: 0 });
    const b = await openUdpSocket({ address: '127.0.0.1', port: 0 }); // native
    const c = await openUdpSocket({ address: '127.0.0.1', port: 0, native: undefined }); // node:dgram: no kernel time
    try {
      const seen: { arrivedAt: number | undefined; readAt: number }[] = [];
      const done = new Promise<void>((resolve) => {
        b.onDatagram((_p, _f, arrivedAt) => {
          seen.push({ arrivedAt, readAt: performance.timeOrigin + performance.now() });
          if (seen.length === 40) resolve();
        });
      });
      let dgram: number | undefined | null = null;
      c.onDatagram((_p, _f, arrivedAt) => (dgram = arrivedAt));
      const sentAt = performance.timeOrigin + performance.now();
      for (let i = 0; i < 40; i++) a.send([Buffer.alloc(1200, i)], b.local());
      a.send([Buffer.alloc(10)], c.local());
      // keep the event loop busy: nothing is read for 80 ms
      const until = performance.now() + 80;
      while (performance.now() < until);
      await done;
      for (const { arrivedAt, readAt } of seen) {
        assert.ok(arrivedAt !== undefined, 'no arrival time');
        assert.ok(readAt - sentAt >= 79, `read ${(readAt - sentAt).toFixed(1)} ms after sending`);
        // it arrived within a few ms of being sent (loopback), not when it was read
        assert.ok(arrivedAt >= sentAt - 1 && arrivedAt - sentAt < 20, `arrived ${(arrivedAt - sentAt).toFixed(2)} ms after sending, read ${(readAt - sentAt).toFixed(1)} ms after`);
        assert.ok(arrivedAt <= readAt);
      }
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(dgram, undefined, 'node:dgram has no kernel time: the receiver uses its own clock');
    } finally {
      await a.close();
      await b.close();
      await c.close();
    }
  });

  it('a buffer reused at once after send is what arrives (send copies)', async () => {
    const a = await openUdpSocket({ address: '127.0.0.1', port: 0 });
    const b = await openUdpSocket({ address: '127.0.0.1', port: 0 });
    try {
      const got = collect(b, 100);
      const buf = Buffer.alloc(1000);
      for (let i = 0; i < 100; i++) {
        buf.fill(i);
        a.send([buf], b.local());
      }
      const { packets } = await got;
      assert.deepEqual(
        packets.map((p) => p[0]),
        Array.from({ length: 100 }, (_, i) => i),
        'each datagram carries the bytes the buffer held when it was sent',
      );
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a burst larger than one recvmmsg batch arrives whole and in order', async () => {
    const a = await openUdpSocket({ address: '127.0.0.1', port: 0 });
    const b = await openUdpSocket({ address: '127.0.0.1', port: 0 });
    try {
      const n = 1000;
      const got = collect(b, n);
      const pkts = Array.from({ length: n }, (_, i) => {
        const p = Buffer.alloc(200);
        p.writeUInt32BE(i, 0);
        return p;
      });
      a.send(pkts, b.local());
      const { packets } = await got;
      assert.deepEqual(
        packets.map((p) => p.readUInt32BE(0)),
        pkts.map((_, i) => i),
      );
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('refuses a port in use with CONNECT; sending to IPv6 or after close is a no-op; close twice is fine', async () => {
    const a = await openUdpSocket({ address: '127.0.0.1', port: 0 });
    await assert.rejects(openUdpSocket({ address: '127.0.0.1', port: a.local().port }), (e: Error & { code?: string }) => e.code === 'CONNECT');
    a.send([Buffer.from('x')], { address: '::1', port: 9 });
    await a.close();
    a.send([Buffer.from('x')], { address: '127.0.0.1', port: 9 });
    await a.close();
  });
});
