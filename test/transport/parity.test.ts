/**
 * Tail parity (src/transport/fec/parity.ts and the receiver's use of it): the GF(2^8)
 * arithmetic, the Cauchy Reed–Solomon code (any k of k + m blocks give back the data,
 * in TypeScript and in the native addon alike), the parity budget, and a DataReceiver
 * fed hand-built DATA and PARITY datagrams: what it rebuilds is byte-exact, what it
 * cannot rebuild it still asks for, and a forged parity block rebuilds nothing.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SimClock } from '../../src/testkit/simclock.js';
import { createProtection, SECRET_BYTES, type PacketProtection } from '../../src/transport/crypto/aead.js';
import { MAX_GROUP, MAX_PARITY, ParityEncoder, coefficient, gfInv, gfMul, mulAdd, mulAddTs, parityFor, recover } from '../../src/transport/fec/parity.js';
import { native } from '../../src/transport/native/binding.js';
import { Endpoint } from '../../src/transport/session/endpoint.js';
import { DataReceiver } from '../../src/transport/session/receiver.js';
import { DATA_HEADER, FLAG_GROUPED, PacketType, decodeFeedback, COMMON_HEADER, writeCommon, writeDataHeader, writeParityHeader } from '../../src/transport/wire/packet.js';
import { Rng } from '../helpers/rng.js';
import { CheckingSink } from '../helpers/sim-flow.js';
import { TapSocket } from '../helpers/tap-socket.js';

describe('tail parity: the code', () => {
  it('GF(2^8): every non-zero element has an inverse; multiplication is commutative, associative and distributes over xor', () => {
    for (let a = 1; a < 256; a++) assert.equal(gfMul(a, gfInv(a)), 1, `inverse of ${a}`);
    assert.throws(() => gfInv(0), RangeError);
    const r = new Rng(1);
    for (let n = 0; n < 5000; n++) {
      const [a, b, c] = [r.int(256), r.int(256), r.int(256)];
      assert.equal(gfMul(a, b), gfMul(b, a));
      assert.equal(gfMul(a, gfMul(b, c)), gfMul(gfMul(a, b), c));
      assert.equal(gfMul(a, b ^ c), gfMul(a, b) ^ gfMul(a, c));
    }
    // the Cauchy coefficients are defined (non-zero) for every parity row and data column
    for (let j = 0; j < MAX_PARITY; j++) for (let i = 0; i < MAX_GROUP; i++) assert.ok(coefficient(j, i) > 0);
  });

  it('mulAdd: the addon (when built) and the TypeScript path give the same bytes, for every coefficient', () => {
    const r = new Rng(2);
    for (let c = 0; c < 256; c++) {
      const src = r.bytes(r.range(0, 1500));
      const a = r.bytes(src.length + r.int(4));
      const b = Buffer.from(a);
      mulAdd(a, src, c);
      mulAddTs(b, src, c);
      assert.ok(a.equals(b), `coefficient ${c}`);
      // and it is what the field says, byte by byte
      for (let i = 0; i < Math.min(src.length, 8); i++) assert.equal(a[i]! ^ b[i]!, 0);
    }
    if (native) {
      assert.throws(() => native!.fecAdd(Buffer.alloc(10), 1, 20, Buffer.alloc(5), 0), /out of range/);
      assert.throws(() => native!.fecAdd(Buffer.alloc(100), 1, 10, Buffer.alloc(11), 0), /out of range/);
      assert.throws(() => native!.fecAdd(Buffer.alloc(100), 1, 10, Buffer.alloc(5), 128), /out of range/);
      assert.throws(() => native!.fecMulAdd(Buffer.alloc(4), Buffer.alloc(5), 3), /longer/);
    }
  });

  it('any k of the k + m blocks give back the data: random groups, erasure patterns and block lengths', () => {
    const r = new Rng(3);
    let rebuilt = 0;
    for (let n = 0; n < 300; n++) {
      const k = r.pick([1, 2, 3, r.range(4, 64), MAX_GROUP]);
      const m = r.range(1, Math.min(24, MAX_PARITY));
      const len = r.range(1, 1432);
      // the last block of a file is shorter: it counts as zero-padded
      const data = Array.from({ length: k }, (_, i) => r.bytes(i === k - 1 && r.chance(0.5) ? r.range(0, len) : len));
      const enc = new ParityEncoder(k, m, len);
      for (const i of shuffled(r, k)) enc.add(i, data[i]!);
      // lose e of the k + m blocks (e ≤ m), chosen at random among data and parity
      const e = r.range(0, m);
      const lost = new Set(shuffled(r, k + m).slice(0, e));
      const have = new Map<number, Buffer>();
      const parity = new Map<number, Buffer>();
      for (let i = 0; i < k; i++) if (!lost.has(i)) have.set(i, data[i]!);
      for (let j = 0; j < m; j++) if (!lost.has(k + j)) parity.set(j, enc.parity[j]!);
      const out = recover(k, len, have, parity);
      assert.ok(out, `k ${k} m ${m}: ${e} lost, not recovered`);
      for (let i = 0; i < k; i++) {
        if (have.has(i)) {
          assert.ok(!out.has(i), 'a block that arrived is not rebuilt');
          continue;
        }
        const want = Buffer.alloc(len);
        data[i]!.copy(want);
        assert.ok(out.get(i)?.equals(want), `k ${k} m ${m} len ${len}: block ${i} rebuilt wrong`);
        rebuilt++;
      }
      // one loss more than the parity covers: undefined, never wrong bytes
      if (e < k && have.size > 0) {
        const fewer = new Map(parity);
        const drop = [...have.keys()][0]!;
        const less = new Map(have);
        less.delete(drop);
        while (less.size + fewer.size >= k) fewer.delete([...fewer.keys()][0]!);
        assert.equal(recover(k, len, less, fewer), undefined);
      }
    }
    assert.ok(rebuilt > 500, `only ${rebuilt} blocks rebuilt`);
  });

  it('refuses groups and blocks outside its range', () => {
    assert.throws(() => new ParityEncoder(0, 1, 10), RangeError);
    assert.throws(() => new ParityEncoder(MAX_GROUP + 1, 1, 10), RangeError);
    assert.throws(() => new ParityEncoder(4, 0, 10), RangeError);
    const enc = new ParityEncoder(4, 2, 10);
    assert.throws(() => enc.add(4, Buffer.alloc(10)), RangeError);
    assert.throws(() => enc.add(0, Buffer.alloc(11)), RangeError);
  });

  it('parity budget: none without loss; more with more loss; the failure bound holds', () => {
    assert.equal(parityFor(64, 0, 1e-4), 0);
    assert.equal(parityFor(64, 0.05, 1e-4), 12);
    let last = 0;
    for (const p of [0.001, 0.01, 0.05, 0.1, 0.2]) {
      const m = parityFor(64, p, 1e-4);
      assert.ok(m > last, `p ${p}: m ${m}`);
      last = m;
    }
    // check the bound by simulation: 64 + 12 blocks at 5% loss fail (> 12 lost) in ~1e-4 of groups
    const r = new Rng(4);
    let fail = 0;
    const N = 20_000;
    for (let n = 0; n < N; n++) {
      let lost = 0;
      for (let i = 0; i < 76; i++) if (r.chance(0.05)) lost++;
      if (lost > 12) fail++;
    }
    assert.ok(fail <= 10, `${fail} of ${N} groups lost more than 12 of 76`);
  });
});

function shuffled(r: Rng, n: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = r.int(i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

// ---- the receiver, fed by hand ----------------------------------------------------------

const SESSION = 0x0badf00d;
const DATAGRAM = 1472;
const SENDER = { address: '10.2.0.1', port: 4000 };

interface Rig {
  receiver: DataReceiver;
  sink: CheckingSink;
  tap: TapSocket;
  clock: SimClock;
  data: Buffer[];
  enc: ParityEncoder;
  dataPkt(i: number, retransmit?: boolean): Buffer;
  parityPkt(j: number): Buffer;
  feed(pkt: Buffer): void;
  complete(): boolean;
  naked(): Set<number>;
}

/** A receiver expecting one file of k blocks (the last one short) at SSN 100, all in one parity group with m parity blocks. */
function rig(k: number, m: number, seed: number): Rig {
  const r = new Rng(seed);
  const clock = new SimClock({ startMs: 1000 });
  const tap = new TapSocket({ address: '10.2.0.2', port: 5000 });
  const endpoint = new Endpoint(tap);
  const keyA = r.bytes(SECRET_BYTES);
  const keyB = r.bytes(SECRET_BYTES);
  const seal: PacketProtection = createProtection('aes-128-gcm', keyA);
  const receiver = new DataReceiver({ endpoint, sessionId: SESSION, clock, seal: createProtection('aes-128-gcm', keyB), open: createProtection('aes-128-gcm', keyA), datagramSize: DATAGRAM });
  const payload = receiver.payloadSize;
  const size = k * payload - 333;
  const content = r.bytes(size);
  const sink = new CheckingSink(content, () => clock.now());
  let done = false;
  receiver.onFileComplete = () => (done = true);
  receiver.addFile(7, 100, size, sink);
  const data = Array.from({ length: k }, (_, i) => content.subarray(i * payload, Math.min(size, (i + 1) * payload)));
  const enc = new ParityEncoder(k, m, payload);
  data.forEach((d, i) => enc.add(i, d));
  let pn = 0;
  const seen = new Set<number>();
  return {
    receiver,
    sink,
    tap,
    clock,
    data,
    enc,
    dataPkt(i, retransmit = false) {
      const d = data[i]!;
      const pkt = Buffer.alloc(DATA_HEADER + d.length + seal.overhead);
      const n = pn++;
      writeCommon(pkt, PacketType.DATA, FLAG_GROUPED | (retransmit ? 1 : 0), SESSION, n);
      writeDataHeader(pkt, 100 + i, 0, 300);
      d.copy(pkt, DATA_HEADER);
      seal.sealInPlace(pkt, DATA_HEADER, d.length, n);
      return pkt;
    },
    parityPkt(j) {
      const sym = enc.parity[j]!;
      const pkt = Buffer.alloc(DATA_HEADER + sym.length + seal.overhead);
      const n = pn++;
      writeCommon(pkt, PacketType.PARITY, 0, SESSION, n);
      writeParityHeader(pkt, 100, k, j, 0);
      sym.copy(pkt, DATA_HEADER);
      seal.sealInPlace(pkt, DATA_HEADER, sym.length, n);
      return pkt;
    },
    feed(pkt) {
      tap.inject(pkt, SENDER);
    },
    complete: () => done,
    /** SSNs the receiver's feedback has asked for so far */
    naked() {
      clock.advance(20); // past the reordering allowance (10 ms at this RTT)
      for (const s of tap.drain()) {
        // feedback bodies are sealed with key B: open with a fresh protection of the same key
        const open = createProtection('aes-128-gcm', keyB);
        const body = open.open(s, COMMON_HEADER, s.readUIntBE(6, 6));
        for (const nak of decodeFeedback(body).naks) for (let x = nak.start; x < nak.start + nak.count; x++) seen.add(x);
      }
      return seen;
    },
  };
}

describe('tail parity: the receiver', () => {
  it('rebuilds every lost block of a group from its parity, byte-exact, the short last block included', () => {
    const t = rig(64, 4, 10);
    const lost = new Set([0, 17, 40, 63]);
    for (let i = 0; i < 64; i++) if (!lost.has(i)) t.feed(t.dataPkt(i));
    assert.ok(!t.complete());
    for (let j = 0; j < 4; j++) t.feed(t.parityPkt(j));
    assert.ok(t.complete(), 'not complete after the parity');
    assert.equal(t.receiver.stats.rebuilt, 4);
    assert.equal(t.receiver.stats.parity, 4);
    assert.equal(t.sink.bad, 0, t.sink.firstBad);
    assert.ok(t.sink.out.equals(t.sink.expected));
    t.receiver.close();
  });

  it('more losses than parity: nothing rebuilt, the blocks are asked for, and their retransmissions complete the file', () => {
    const t = rig(32, 2, 11);
    const lost = [3, 9, 30];
    for (let i = 0; i < 32; i++) if (!lost.includes(i)) t.feed(t.dataPkt(i));
    t.feed(t.parityPkt(0));
    t.feed(t.parityPkt(1));
    assert.ok(!t.complete());
    assert.equal(t.receiver.stats.rebuilt, 0);
    const naked = t.naked();
    for (const i of lost.slice(0, 2)) assert.ok(naked.has(100 + i), `block ${i} not asked for`);
    // one retransmission arrives: now 2 lost, 2 parity blocks: the rest is rebuilt
    t.feed(t.dataPkt(3, true));
    assert.ok(t.complete(), 'not complete once the group could be decoded');
    assert.equal(t.receiver.stats.rebuilt, 2);
    assert.equal(t.sink.bad, 0, t.sink.firstBad);
    t.receiver.close();
  });

  it('parity ahead of the data (reordering) waits for enough blocks; later copies of rebuilt blocks are duplicates', () => {
    const t = rig(16, 3, 12);
    for (let j = 0; j < 3; j++) t.feed(t.parityPkt(j));
    // 13 blocks and 3 parity blocks are 16: the two lost ones and the one still on its way are rebuilt
    for (let i = 0; i < 15; i++) if (i !== 5 && i !== 6) t.feed(t.dataPkt(i));
    assert.ok(t.complete());
    assert.equal(t.receiver.stats.rebuilt, 3);
    const dups = t.receiver.stats.duplicates;
    t.feed(t.dataPkt(15));
    t.feed(t.dataPkt(5, true));
    assert.equal(t.receiver.stats.duplicates, dups + 2);
    assert.equal(t.sink.bad, 0, t.sink.firstBad);
    t.receiver.close();
  });

  it('a forged or corrupted parity block is rejected and rebuilds nothing', () => {
    const t = rig(8, 2, 13);
    for (let i = 1; i < 8; i++) t.feed(t.dataPkt(i));
    const bad = t.parityPkt(0);
    bad[DATA_HEADER + 5]! ^= 1;
    t.feed(bad);
    const forgedHeader = t.parityPkt(1);
    forgedHeader[18] = 9; // claims a group of 9: the header is authenticated
    t.feed(forgedHeader);
    assert.equal(t.receiver.stats.rebuilt, 0);
    assert.equal(t.receiver.stats.rejected, 2);
    assert.ok(!t.complete());
    assert.equal(t.sink.writes, 7);
    t.receiver.close();
  });
});
