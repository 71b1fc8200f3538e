/**
 * Schemas of the early-data additions: `hello.early` (a client-chosen session id and two
 * 32-byte keys) and the `files` entry `{void, ssn0}` (SSNs sent speculatively that carry
 * no file). Anything malformed fails validation, so that it ends the session with PROTOCOL.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ControlMessageSchema, FilesSchema, HelloSchema, PROTOCOL_VERSION } from '../../src/control/messages.js';

const key = (n = 32, fill = 7): string => Buffer.alloc(n, fill).toString('base64');
const hello = {
  t: 'hello',
  v: PROTOCOL_VERSION,
  op: 'send',
  cipher: 'aes-128-gcm',
  policy: 'fair',
  targetRate: 1e9,
  minRate: 0,
  datagramSize: 1472,
  dest: '/',
} as const;

describe('control messages: early data', () => {
  it('protocol version 3', () => {
    assert.equal(PROTOCOL_VERSION, 3);
  });

  it('hello.early: a non-zero u32 session id and two 32-byte base64 keys', () => {
    const ok = { ...hello, early: { sessionId: 1, c2s: key(), s2c: key(32, 9) } };
    assert.deepEqual(HelloSchema.parse(ok), ok);
    assert.ok(ControlMessageSchema.safeParse({ ...hello, early: { sessionId: 0xffffffff, c2s: key(), s2c: key() } }).success);
    assert.ok(HelloSchema.safeParse(hello).success, 'optional');
    const bad: unknown[] = [
      { sessionId: 0, c2s: key(), s2c: key() },
      { sessionId: 2 ** 32, c2s: key(), s2c: key() },
      { sessionId: 1.5, c2s: key(), s2c: key() },
      { sessionId: -1, c2s: key(), s2c: key() },
      { sessionId: 5, c2s: key(16), s2c: key() },
      { sessionId: 5, c2s: key(), s2c: key(33) },
      { sessionId: 5, c2s: key(), s2c: '' },
      { sessionId: 5, c2s: 'not base64!', s2c: key() },
      { sessionId: 5, c2s: key() },
      { sessionId: 5, c2s: key(), s2c: key(), extra: 1 },
      { c2s: key(), s2c: key() },
      'early',
    ];
    for (const early of bad) assert.ok(!ControlMessageSchema.safeParse({ ...hello, early }).success, JSON.stringify(early));
  });

  it('files: a void entry {void: count >= 1, ssn0}, beside announcements and declines', () => {
    const m = { t: 'files', files: [{ void: 12, ssn0: 0 }, { id: 0, path: 'a', size: 10, ssn0: 12 }, { id: 1, skip: 'same' }] };
    assert.deepEqual(FilesSchema.parse(m), m);
    const bad: unknown[] = [
      { void: 0, ssn0: 0 },
      { void: -1, ssn0: 0 },
      { void: 1.5, ssn0: 0 },
      { void: 2 ** 53, ssn0: 0 },
      { void: 1, ssn0: -1 },
      { void: 1 },
      { void: '1', ssn0: 0 },
      { void: 1, ssn0: 0, id: 3 },
      { void: 1, ssn0: 0, path: 'a', size: 1, id: 3 },
    ];
    for (const e of bad) assert.ok(!ControlMessageSchema.safeParse({ t: 'files', files: [e] }).success, JSON.stringify(e));
  });
});
