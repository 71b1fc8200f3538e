/**
 * The datagram codec (src/transport/wire/packet.ts): every header and body round-trips
 * exactly, including the extremes of each field, and every malformed form is refused
 * with a TachyonError of code PROTOCOL (never a RangeError from a Buffer read).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  COMMON_HEADER,
  DATA_HEADER,
  FEEDBACK_FIXED,
  FLAG_GROUPED,
  FLAG_RETRANSMIT,
  FLAG_TRAIN,
  NAK_RANGE_BYTES,
  PacketType,
  WIRE_VERSION,
  datagramSizeForMtu,
  decodeCommon,
  decodeDataHeader,
  decodeFeedback,
  decodeParityHeader,
  decodeStatus,
  encodeFeedback,
  encodeStatus,
  maxNakRanges,
  peekSessionId,
  writeCommon,
  writeDataHeader,
  writeParityHeader,
  type Feedback,
  type PacketTypeValue,
} from '../../src/transport/wire/packet.js';
import { throwsCode } from '../helpers/errors.js';

const U48_MAX = 2 ** 48 - 1;
const TYPES = Object.values(PacketType) as PacketTypeValue[];

function common(type: PacketTypeValue, flags: number, sessionId: number, pn: number, size = COMMON_HEADER): Buffer {
  const b = Buffer.alloc(size);
  writeCommon(b, type, flags, sessionId, pn);
  return b;
}

function feedback(over: Partial<Feedback> = {}): Feedback {
  return {
    cumAck: 100,
    nextExpected: 200,
    bytesReceived: 123_456_789,
    echoTsUs: 0xdeadbeef,
    holdUs: 1234,
    qdelayUs: 5678,
    recvRateKbps: 987_654,
    intervalPackets: 42,
    intervalLost: 3,
    naks: [
      { start: 100, count: 5 },
      { start: 150, count: 50 },
    ],
    ...over,
  };
}

describe('wire codec: round trips', () => {
  it('the common header round-trips for every type, flag and extreme field value', () => {
    for (const type of TYPES) {
      for (const flags of [0, FLAG_RETRANSMIT]) {
        for (const sessionId of [0, 1, 0x7fffffff, 0x80000000, 0xffffffff]) {
          for (const pn of [0, 1, 2 ** 24, 2 ** 32 + 7, U48_MAX]) {
            const b = common(type, flags, sessionId, pn);
            assert.equal(b[0]! >> 4, WIRE_VERSION);
            assert.deepEqual(decodeCommon(b), { type, flags, sessionId, packetNumber: pn });
            assert.equal(peekSessionId(b), sessionId);
          }
        }
      }
    }
  });

  it('the PARITY header round-trips at the extremes of each field; DATA may carry the grouped flag', () => {
    for (const [first, k, j, ts] of [
      [0, 1, 0, 0],
      [U48_MAX, 128, 127, 0xffffffff],
      [123456789, 64, 11, 42],
    ] as const) {
      const b = common(PacketType.PARITY, 0, 7, 9, DATA_HEADER + 3);
      writeParityHeader(b, first, k, j, ts);
      assert.deepEqual(decodeParityHeader(b, decodeCommon(b)), { type: PacketType.PARITY, flags: 0, sessionId: 7, packetNumber: 9, first, k, j, sendTsUs: ts });
    }
    for (const flags of [FLAG_GROUPED, FLAG_GROUPED | FLAG_RETRANSMIT]) {
      assert.equal(decodeCommon(common(PacketType.DATA, flags, 1, 1, DATA_HEADER)).flags, flags);
    }
  });

  it('the DATA header round-trips; timestamps wrap mod 2^32 and the RTT field saturates', () => {
    const b = common(PacketType.DATA, FLAG_RETRANSMIT, 0xabcdef01, 77, DATA_HEADER + 10);
    writeDataHeader(b, U48_MAX, 0xffffffff, 65535);
    assert.deepEqual(decodeDataHeader(b, decodeCommon(b)), {
      type: PacketType.DATA,
      flags: FLAG_RETRANSMIT,
      sessionId: 0xabcdef01,
      packetNumber: 77,
      ssn: U48_MAX,
      sendTsUs: 0xffffffff,
      srttMs: 65535,
    });
    const cases: [number, number, number, number][] = [
      // [sendTsUs written, read back, srttMs written, read back]
      [2 ** 32 + 5, 5, 70_000, 65535],
      [0, 0, -3, 0],
      [123, 123, 12.6, 13],
    ];
    for (const [ts, tsBack, rtt, rttBack] of cases) {
      writeDataHeader(b, 9, ts, rtt);
      const h = decodeDataHeader(b, decodeCommon(b));
      assert.equal(h.ssn, 9);
      assert.equal(h.sendTsUs, tsBack);
      assert.equal(h.srttMs, rttBack);
    }
  });

  it('FEEDBACK round-trips with NAK ranges, without them, and with the largest NAK list that fits', () => {
    const f = feedback();
    const body = encodeFeedback(f);
    assert.equal(body.length, FEEDBACK_FIXED + 2 * NAK_RANGE_BYTES);
    assert.deepEqual(decodeFeedback(body), f);

    const none = feedback({ naks: [], qdelayUs: -1, cumAck: 200 });
    assert.deepEqual(decodeFeedback(encodeFeedback(none)), none);

    // the train's measurement, at its extremes; a zero rate means none
    for (const train of [
      { rateKbps: 1, packets: 0, lost: 0 },
      { rateKbps: 0xffffffff, packets: 0xffff, lost: 0xffff },
      { rateKbps: 190_912, packets: 211, lost: 7 },
    ]) {
      const t = feedback({ train });
      assert.deepEqual(decodeFeedback(encodeFeedback(t)), t);
    }
    assert.equal(decodeFeedback(encodeFeedback(feedback({ train: { rateKbps: 0, packets: 9, lost: 1 } }))).train, undefined);
    // the receiver's arrival timestamp, mod 2^32; 0 means none
    for (const rxTsUs of [1, 0xffffffff, 123_456_789]) {
      const t = feedback({ rxTsUs });
      assert.deepEqual(decodeFeedback(encodeFeedback(t)), t);
    }
    assert.equal(decodeFeedback(encodeFeedback(feedback({ rxTsUs: 2 ** 32 }))).rxTsUs, undefined);

    // a range may end exactly at nextExpected (the highest SSN seen is nextExpected - 1)
    const edge = feedback({ cumAck: 0, nextExpected: U48_MAX, naks: [{ start: U48_MAX - 0xffff, count: 0xffff }] });
    assert.deepEqual(decodeFeedback(encodeFeedback(edge)), edge);

    const capacity = 1472 - COMMON_HEADER - 16;
    const n = maxNakRanges(capacity);
    assert.equal(n, Math.floor((capacity - FEEDBACK_FIXED) / NAK_RANGE_BYTES));
    const many = feedback({ cumAck: 0, nextExpected: 10 * n, naks: Array.from({ length: n }, (_, i) => ({ start: 10 * i, count: 3 })) });
    const manyBody = encodeFeedback(many);
    assert.ok(manyBody.length <= capacity);
    assert.deepEqual(decodeFeedback(manyBody), many);
    assert.equal(maxNakRanges(FEEDBACK_FIXED - 1), 0);
  });

  it("FEEDBACK round-trips its optional trailer of verified file ids (1 to 32), with and without NAK ranges; a bad trailer is refused", () => {
    for (const naks of [[], [{ start: 5, count: 2 }]]) {
      const f = feedback({ naks, verified: [0, 7, 0xffffffff] });
      const body = encodeFeedback(f);
      assert.equal(body.length, FEEDBACK_FIXED + naks.length * NAK_RANGE_BYTES + 2 + 3 * 4);
      assert.deepEqual(decodeFeedback(body), f);
    }
    const full = feedback({ naks: [], verified: Array.from({ length: 32 }, (_, i) => i) });
    assert.deepEqual(decodeFeedback(encodeFeedback(full)), full);
    throwsCode(() => encodeFeedback(feedback({ naks: [], verified: Array.from({ length: 33 }, (_, i) => i) })), 'PROTOCOL', '33 ids');
    const body = encodeFeedback(feedback({ naks: [], verified: [1, 2] }));
    throwsCode(() => decodeFeedback(body.subarray(0, body.length - 1)), 'PROTOCOL', 'truncated id');
    throwsCode(() => decodeFeedback(Buffer.concat([body, Buffer.alloc(4)])), 'PROTOCOL', 'id beyond the count');
    const zero = Buffer.from(body);
    zero.writeUInt16BE(0, FEEDBACK_FIXED);
    throwsCode(() => decodeFeedback(zero.subarray(0, FEEDBACK_FIXED + 2)), 'PROTOCOL', 'empty trailer');
    const lying = Buffer.from(body);
    lying.writeUInt16BE(33, FEEDBACK_FIXED);
    throwsCode(() => decodeFeedback(lying), 'PROTOCOL', 'count above 32');
  });

  it('FEEDBACK fields saturate or round instead of wrapping', () => {
    const f = feedback({ bytesReceived: 2 ** 50, holdUs: 2 ** 40, qdelayUs: -500, recvRateKbps: 12.4, intervalPackets: 2 ** 33, intervalLost: 2 ** 33, naks: [] });
    const d = decodeFeedback(encodeFeedback(f));
    assert.equal(d.bytesReceived, U48_MAX);
    assert.equal(d.holdUs, 0xffffffff);
    assert.equal(d.qdelayUs, -1, 'any negative queueing delay means "no sample"');
    assert.equal(d.recvRateKbps, 12);
    assert.equal(d.intervalPackets, 0xffffffff);
    assert.equal(d.intervalLost, 0xffffffff);
    assert.equal(decodeFeedback(encodeFeedback(feedback({ qdelayUs: 2 ** 40, naks: [] }))).qdelayUs, 0x7fffffff);
  });

  it('STATUS round-trips with a file digest; a digest of the wrong length is refused', () => {
    const sha256 = Buffer.alloc(32, 0xab);
    for (const fileId of [0, 7, 0xffffffff]) {
      const st = { nextSsn: U48_MAX, sendTsUs: 123, digest: { fileId, sha256 } };
      const body = encodeStatus(st);
      assert.equal(body.length, 46);
      assert.deepEqual(decodeStatus(body), st);
    }
    throwsCode(() => encodeStatus({ nextSsn: 1, sendTsUs: 1, digest: { fileId: 1, sha256: Buffer.alloc(31) } }), 'PROTOCOL');
    for (const n of [11, 45, 47]) throwsCode(() => decodeStatus(Buffer.alloc(n)), 'PROTOCOL', `${n} bytes`);
  });

  it('STATUS round-trips', () => {
    for (const s of [
      { nextSsn: 0, sendTsUs: 0 },
      { nextSsn: U48_MAX, sendTsUs: 0xffffffff },
      { nextSsn: 12345, sendTsUs: 678 },
    ]) {
      const body = encodeStatus(s);
      assert.equal(body.length, 10);
      assert.deepEqual(decodeStatus(body), s);
    }
  });

  it('datagram size for an MTU leaves room for the IPv4 and UDP headers', () => {
    assert.equal(datagramSizeForMtu(1500), 1472);
    assert.equal(datagramSizeForMtu(9000), 8972);
  });
});

describe('wire codec: malformed datagrams are refused with PROTOCOL', () => {
  it('too short for the common header', () => {
    for (let n = 0; n < COMMON_HEADER; n++) {
      throwsCode(() => decodeCommon(Buffer.alloc(n, 0x11)), 'PROTOCOL', `${n} bytes`);
      assert.equal(peekSessionId(Buffer.alloc(n)), undefined);
    }
  });

  it('wrong version', () => {
    for (let v = 0; v < 16; v++) {
      if (v === WIRE_VERSION) continue;
      const b = common(PacketType.DATA, 0, 1, 1, DATA_HEADER);
      b[0] = (v << 4) | PacketType.DATA;
      throwsCode(() => decodeCommon(b), 'PROTOCOL', `version ${v}`);
    }
  });

  it('unknown packet type', () => {
    for (let type = 0; type < 16; type++) {
      if ((TYPES as number[]).includes(type)) continue;
      const b = common(PacketType.DATA, 0, 1, 1, DATA_HEADER);
      b[0] = (WIRE_VERSION << 4) | type;
      throwsCode(() => decodeCommon(b), 'PROTOCOL', `type ${type}`);
    }
  });

  it('reserved flag bits set (alone or with the retransmission flag)', () => {
    for (let bit = 1; bit < 8; bit++) {
      for (const base of [0, FLAG_RETRANSMIT]) {
        const b = common(PacketType.FEEDBACK, base | (1 << bit), 1, 1);
        throwsCode(() => decodeCommon(b), 'PROTOCOL', `flags ${base | (1 << bit)}`);
      }
    }
  });

  it('the grouped and train flags on anything but DATA', () => {
    for (const type of TYPES) {
      if (type === PacketType.DATA) continue;
      for (const flag of [FLAG_GROUPED, FLAG_TRAIN]) throwsCode(() => decodeCommon(common(type, flag, 1, 1, DATA_HEADER)), 'PROTOCOL', `type ${type} flag ${flag}`);
    }
    assert.equal(decodeCommon(common(PacketType.DATA, FLAG_TRAIN | FLAG_GROUPED | FLAG_RETRANSMIT, 1, 1, DATA_HEADER)).flags, 7);
  });

  it('PARITY: shorter than its header, an empty or oversized group, a parity index past 127', () => {
    for (let n = COMMON_HEADER; n < DATA_HEADER; n++) {
      const b = common(PacketType.PARITY, 0, 1, 1, n);
      throwsCode(() => decodeParityHeader(b, decodeCommon(b)), 'PROTOCOL', `${n} bytes`);
    }
    for (const [k, j] of [
      [0, 0],
      [129, 0],
      [255, 3],
      [64, 128],
      [64, 255],
    ]) {
      const b = common(PacketType.PARITY, 0, 1, 1, DATA_HEADER + 16);
      writeParityHeader(b, 5, 1, 0, 0);
      b[18] = k!;
      b[19] = j!;
      throwsCode(() => decodeParityHeader(b, decodeCommon(b)), 'PROTOCOL', `k ${k} j ${j}`);
    }
  });

  it('DATA datagram shorter than the DATA header', () => {
    for (let n = COMMON_HEADER; n < DATA_HEADER; n++) {
      const b = common(PacketType.DATA, 0, 1, 1, n);
      throwsCode(() => decodeDataHeader(b, decodeCommon(b)), 'PROTOCOL', `${n} bytes`);
    }
  });

  it('FEEDBACK body too short for its fixed part', () => {
    const body = encodeFeedback(feedback({ naks: [] }));
    for (let n = 0; n < FEEDBACK_FIXED; n++) throwsCode(() => decodeFeedback(body.subarray(0, n)), 'PROTOCOL', `${n} bytes`);
  });

  it('FEEDBACK body length does not match its NAK count', () => {
    const body = encodeFeedback(feedback());
    // one byte short, one range short, one byte too many, one range too many
    throwsCode(() => decodeFeedback(body.subarray(0, body.length - 1)), 'PROTOCOL', 'truncated range');
    throwsCode(() => decodeFeedback(body.subarray(0, body.length - NAK_RANGE_BYTES)), 'PROTOCOL', 'missing range');
    throwsCode(() => decodeFeedback(Buffer.concat([body, Buffer.alloc(1)])), 'PROTOCOL', 'trailing byte');
    throwsCode(() => decodeFeedback(Buffer.concat([body, Buffer.alloc(NAK_RANGE_BYTES, 0)])), 'PROTOCOL', 'extra range');
    // a count field claiming 65535 ranges on a short body
    const lying = Buffer.from(body);
    lying.writeUInt16BE(0xffff, 54);
    throwsCode(() => decodeFeedback(lying), 'PROTOCOL', 'count 65535');
  });

  it('NAK range reaching beyond nextExpected, or empty', () => {
    const bad: [string, Feedback][] = [
      ['ends one past nextExpected', feedback({ naks: [{ start: 150, count: 51 }] })],
      ['starts at nextExpected', feedback({ naks: [{ start: 200, count: 1 }] })],
      ['starts far beyond', feedback({ naks: [{ start: U48_MAX - 1, count: 1 }] })],
      ['second range bad', feedback({ naks: [{ start: 100, count: 1 }, { start: 199, count: 2 }] })],
      ['count zero', feedback({ naks: [{ start: 120, count: 0 }] })],
    ];
    for (const [what, f] of bad) throwsCode(() => decodeFeedback(encodeFeedback(f)), 'PROTOCOL', what);
  });

  it('cumAck beyond nextExpected', () => {
    throwsCode(() => decodeFeedback(encodeFeedback(feedback({ cumAck: 201, nextExpected: 200, naks: [] }))), 'PROTOCOL');
    throwsCode(() => decodeFeedback(encodeFeedback(feedback({ cumAck: U48_MAX, nextExpected: 0, naks: [] }))), 'PROTOCOL');
    // equal is fine: everything seen has been received
    assert.equal(decodeFeedback(encodeFeedback(feedback({ cumAck: 200, nextExpected: 200, naks: [] }))).cumAck, 200);
  });

  it('STATUS body of the wrong length', () => {
    const body = encodeStatus({ nextSsn: 5, sendTsUs: 6 });
    for (const n of [0, 1, 9]) throwsCode(() => decodeStatus(body.subarray(0, n)), 'PROTOCOL', `${n} bytes`);
    throwsCode(() => decodeStatus(Buffer.concat([body, Buffer.alloc(1)])), 'PROTOCOL', '11 bytes');
  });
});
