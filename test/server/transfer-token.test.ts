/**
 * Transfer tokens: the codec (issue, verify, each refusal with its own reason and the
 * one public message), the key file (0600, created once, rotation with a grace period)
 * and a seeded fuzz of the decoder.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync, utimesSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Clock } from '../../src/core/clock.js';
import { TachyonError } from '../../src/core/errors.js';
import {
  DEFAULT_TOKEN_TTL_MS,
  loadTokenKeyring,
  rotateTokenKey,
  TOKEN_PREFIX,
  TOKEN_PUBLIC_MESSAGE,
  tokenKeyOf,
  TransferTokenCodec,
  type TokenKeyring,
  type TokenRefusal,
} from '../../src/server/transfer-token.js';
import { Rng } from '../helpers/rng.js';

/** A clock the test sets. */
function fixedClock(t: number): Clock & { t: number } {
  const c = { t, now: () => c.t, setTimer: () => () => {} };
  return c;
}

const ring = (seed: number): TokenKeyring => ({ current: tokenKeyOf(Buffer.alloc(32, seed)) });

const GRANT = { accessKeyId: 'ak-1', storageRoot: 'file:///srv/x', direction: 'upload' as const, paths: ['/in/a.txt', '/in/dir'] };

function refusal(fn: () => unknown): TokenRefusal {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TachyonError, `not a TachyonError: ${String(err)}`);
    assert.equal(err.code, 'AUTH_FAILED');
    assert.equal(err.publicMessage, TOKEN_PUBLIC_MESSAGE);
    return err.details?.['reason'] as TokenRefusal;
  }
  assert.fail('the token was accepted');
}

describe('transfer token codec', () => {
  const clock = fixedClock(1_800_000_000_000);
  const codec = new TransferTokenCodec({ nodeId: 'node-a', keys: ring(1), clock });

  it('issues a compact tkn1 token whose claims verify', () => {
    const { token, claims } = codec.issue(GRANT);
    assert.ok(token.startsWith(TOKEN_PREFIX));
    assert.match(token, /^tkn1\.[A-Za-z0-9_-]+$/);
    assert.ok(token.length < 400, `token is ${token.length} characters`);
    const v = codec.verify(token);
    assert.deepEqual(v, claims);
    assert.equal(v.nodeId, 'node-a');
    assert.equal(v.direction, 'upload');
    assert.deepEqual(v.paths, GRANT.paths);
    assert.equal(v.expiresAt - v.issuedAt, DEFAULT_TOKEN_TTL_MS);
    assert.match(v.id, /^[A-Za-z0-9_-]{22}$/);
    // secret: the claims are not readable in the token
    assert.ok(!Buffer.from(token.slice(5), 'base64url').toString('latin1').includes('/in/a.txt'));
    // two tokens for the same grant differ (random id and nonce)
    assert.notEqual(codec.issue(GRANT).token, token);
  });

  it('refuses an expired token (and one used exactly at its expiry)', () => {
    const { token, claims } = codec.issue({ ...GRANT, ttlMs: 1000 });
    const later = new TransferTokenCodec({ nodeId: 'node-a', keys: ring(1), clock: fixedClock(claims.expiresAt) });
    assert.equal(refusal(() => later.verify(token)), 'expired');
    const before = new TransferTokenCodec({ nodeId: 'node-a', keys: ring(1), clock: fixedClock(claims.expiresAt - 1) });
    assert.equal(before.verify(token).id, claims.id);
  });

  it('refuses a token issued in the future beyond the tolerated skew', () => {
    const early = new TransferTokenCodec({ nodeId: 'node-a', keys: ring(1), clock: fixedClock(clock.t + 10 * 60_000) });
    const { token } = early.issue({ ...GRANT, ttlMs: 60 * 60_000 });
    assert.equal(refusal(() => codec.verify(token)), 'not-yet-valid');
  });

  it('refuses a token from another node, and one sealed under a key this node does not hold', () => {
    const other = new TransferTokenCodec({ nodeId: 'node-b', keys: ring(2), clock });
    assert.equal(refusal(() => codec.verify(other.issue(GRANT).token)), 'wrong-node');
    // same node name, other key (a node rebuilt, or a forger who knows the name)
    const forger = new TransferTokenCodec({ nodeId: 'node-a', keys: ring(3), clock });
    assert.equal(refusal(() => codec.verify(forger.issue(GRANT).token)), 'unknown-key');
  });

  it('refuses a tampered token: any changed byte of header, nonce, body or tag', () => {
    const { token } = codec.issue(GRANT);
    const raw = Buffer.from(token.slice(TOKEN_PREFIX.length), 'base64url');
    const seen = new Set<TokenRefusal>();
    for (let i = 0; i < raw.length; i++) {
      const t = Buffer.from(raw);
      t[i] = t[i]! ^ 0x01;
      const reason = refusal(() => codec.verify(TOKEN_PREFIX + t.toString('base64url')));
      seen.add(reason);
      // the key id bytes: another key; the node id: another node; everything else: tampered
      if (i >= 10 + 6) assert.equal(reason, 'tampered', `byte ${i}`);
    }
    assert.ok(seen.has('tampered') && seen.has('unknown-key') && seen.has('unknown-version') && seen.has('wrong-node'), [...seen].join(','));
  });

  it('refuses unknown versions and malformed text, each with its reason', () => {
    const { token } = codec.issue(GRANT);
    assert.equal(refusal(() => codec.verify(token.replace(/^tkn1\./, 'tkn2.'))), 'unknown-version');
    assert.equal(refusal(() => codec.verify('')), 'malformed');
    assert.equal(refusal(() => codec.verify('hello')), 'malformed');
    assert.equal(refusal(() => codec.verify('tkn1.')), 'malformed');
    assert.equal(refusal(() => codec.verify('tkn1.@@@')), 'malformed');
    assert.equal(refusal(() => codec.verify(token.slice(0, 40))), 'malformed');
    assert.equal(refusal(() => codec.verify(`${token}x`.repeat(400))), 'malformed');
    assert.equal(refusal(() => codec.verify(42)), 'malformed');
  });

  it('refuses to issue tokens that are too large, and bad node ids', () => {
    const many = Array.from({ length: 300 }, (_, i) => `/p/${i}`);
    assert.throws(() => codec.issue({ ...GRANT, paths: many }), (e: unknown) => e instanceof TachyonError && e.code === 'USAGE');
    assert.throws(() => new TransferTokenCodec({ nodeId: '', keys: ring(1), clock }), (e: unknown) => e instanceof TachyonError && e.code === 'CONFIG');
    assert.throws(() => new TransferTokenCodec({ nodeId: 'x'.repeat(65), keys: ring(1), clock }), (e: unknown) => e instanceof TachyonError && e.code === 'CONFIG');
  });
});

describe('token key file', () => {
  it('is created once, 0600, and then reused', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tkn-key-'));
    const file = path.join(dir, 'sub', 'token.key');
    const a = loadTokenKeyring(file);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readFileSync(file).length, 32);
    const b = loadTokenKeyring(file);
    assert.equal(a.current.id, b.current.id);
    assert.equal(a.previous, undefined);
  });

  it('rotation keeps the previous key accepted for the grace period, then refuses it', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tkn-rot-'));
    const file = path.join(dir, 'token.key');
    const now = Date.now();
    const clock = fixedClock(now);
    const first = loadTokenKeyring(file);
    const old = new TransferTokenCodec({ nodeId: 'n', keys: first, clock });
    const { token } = old.issue({ ...GRANT, ttlMs: 4 * 3600_000 });
    const rotated = rotateTokenKey(file);
    assert.notEqual(rotated.current.id, first.current.id);
    assert.equal(rotated.previous?.id, first.current.id);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const fresh = new TransferTokenCodec({ nodeId: 'n', keys: loadTokenKeyring(file, { graceMs: 3600_000 }), clock });
    assert.equal(fresh.verify(token).accessKeyId, 'ak-1');
    // new tokens use the new key; the old codec does not know it
    assert.equal(refusal(() => old.verify(fresh.issue(GRANT).token)), 'unknown-key');
    // past the grace period (the previous file rotated out two hours ago)
    const past = new Date(now - 2 * 3600_000);
    utimesSync(`${file}.previous`, past, past);
    const after = new TransferTokenCodec({ nodeId: 'n', keys: loadTokenKeyring(file, { graceMs: 3600_000 }), clock });
    assert.equal(refusal(() => after.verify(token)), 'unknown-key');
  });
});

describe('token decoder fuzz', () => {
  it('random and mutated tokens: only AUTH_FAILED with a known reason, never an acceptance', () => {
    const seed = 0x70c3e;
    const r = new Rng(seed);
    const clock = fixedClock(1_800_000_000_000);
    const codec = new TransferTokenCodec({ nodeId: 'node-a', keys: ring(1), clock });
    const valid = Array.from({ length: 8 }, (_, i) => codec.issue({ ...GRANT, paths: [`/f/${i}`] }).token);
    const reasons = new Set<string>(['malformed', 'unknown-version', 'wrong-node', 'unknown-key', 'tampered', 'expired', 'not-yet-valid']);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \u0000é';
    for (let n = 0; n < 5000; n++) {
      const base = r.pick(valid);
      let t: string;
      switch (r.int(6)) {
        case 0: {
          const raw = Buffer.from(base.slice(5), 'base64url');
          for (let k = r.range(1, 4); k > 0; k--) raw[r.int(raw.length)] = r.int(256);
          t = TOKEN_PREFIX + raw.toString('base64url');
          break;
        }
        case 1:
          t = base.slice(0, r.int(base.length));
          break;
        case 2:
          t = base + Array.from({ length: r.range(1, 20) }, () => r.pick([...alphabet])).join('');
          break;
        case 3: {
          const raw = Buffer.alloc(r.int(200));
          r.fill(raw);
          t = (r.chance(0.7) ? TOKEN_PREFIX : '') + raw.toString('base64url');
          break;
        }
        case 4:
          t = Array.from({ length: r.int(120) }, () => r.pick([...alphabet])).join('');
          break;
        default: {
          // splice two valid tokens
          const other = r.pick(valid);
          const cut = r.range(6, base.length - 1);
          t = base.slice(0, cut) + other.slice(cut);
          break;
        }
      }
      if (valid.includes(t)) continue;
      try {
        codec.verify(t);
        assert.fail(`seed ${seed} case ${n}: accepted ${JSON.stringify(t)}`);
      } catch (err) {
        assert.ok(err instanceof TachyonError, `seed ${seed} case ${n}: ${String(err)}`);
        assert.equal(err.code, 'AUTH_FAILED');
        assert.equal(err.publicMessage, TOKEN_PUBLIC_MESSAGE);
        assert.ok(reasons.has(String(err.details?.['reason'])), `seed ${seed} case ${n}: reason ${String(err.details?.['reason'])}`);
      }
    }
  });
});
