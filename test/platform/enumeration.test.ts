/**
 * No account enumeration, at the service: every way a sign-in can fail (unknown tenant,
 * unknown or malformed user, wrong password, locked, disabled, no local password) does
 * exactly one argon2id verification and raises the same error, and with the real
 * default parameters an unknown user costs as long as a wrong password.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MemoryAuditSink } from '../../src/audit/index.js';
import { TachyonError } from '../../src/core/errors.js';
import { openDatabase, type Database } from '../../src/db/database.js';
import { argon2idHasher, type PasswordHasher } from '../../src/platform/passwords.js';
import { IdentityService, type RequestMeta } from '../../src/platform/service.js';
import { SimClock } from '../../src/testkit/simclock.js';
import { T0, TEST_ARGON2, USER_PW } from './helpers.js';

/** The real hasher, counting its verifications. */
function counting(inner: PasswordHasher): PasswordHasher & { verifies: number } {
  const h = {
    verifies: 0,
    hash: (p: string) => inner.hash(p),
    verify: (hash: string, p: string) => {
      h.verifies++;
      return inner.verify(hash, p);
    },
  };
  return h;
}

const META: RequestMeta = { clientAddress: '192.0.2.7', userAgent: 'test', correlationId: '01HZZZZZZZZZZZZZZZZZZZZZZZ' };

async function failure(p: Promise<unknown>): Promise<TachyonError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof TachyonError);
    return err;
  }
  assert.fail('sign-in succeeded');
}

describe('platform sign-in: no account enumeration', () => {
  let dir: string;
  let db: Database;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-enum-'));
    db = await openDatabase({ url: `sqlite://${path.join(dir, 'p.db')}` });
  });
  after(async () => {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every failure path does exactly one argon2id verification and gets the same error', async () => {
    const hasher = counting(argon2idHasher(TEST_ARGON2));
    const clock = new SimClock({ startMs: T0 });
    const audit = new MemoryAuditSink({ clock });
    const s = new IdentityService({ database: db, audit, clock, hasher });
    const t = await s.createTenant('enum', 'Enum');
    await s.provisionUser(t.id, { username: 'alice', password: USER_PW });
    const off = await s.provisionUser(t.id, { username: 'off', password: USER_PW });
    await s.repo.updateUser(t.id, off.id, { status: 'disabled' }, new Date(T0).toISOString());
    await s.provisionUser(t.id, { username: 'sso-only' });
    const locked = await s.provisionUser(t.id, { username: 'locked', password: USER_PW });
    await s.repo.lock(t.id, locked.id, new Date(T0).toISOString(), new Date(T0 + 3_600_000).toISOString());
    const attempts: [string, { tenant: string; username: string; password: string }][] = [
      ['unknown-tenant', { tenant: 'nope', username: 'alice', password: USER_PW }],
      ['malformed tenant', { tenant: "x' OR 1=1", username: 'alice', password: USER_PW }],
      ['unknown-user', { tenant: 'enum', username: 'bob', password: USER_PW }],
      ['malformed user', { tenant: 'enum', username: '<script>', password: USER_PW }],
      ['bad-credentials', { tenant: 'enum', username: 'alice', password: 'wrong wrong wrong' }],
      ['disabled (right password)', { tenant: 'enum', username: 'off', password: USER_PW }],
      ['no-local-password', { tenant: 'enum', username: 'sso-only', password: USER_PW }],
      ['locked (right password)', { tenant: 'enum', username: 'locked', password: USER_PW }],
    ];
    const seen = new Set<string>();
    for (const [what, input] of attempts) {
      const before = hasher.verifies;
      const err = await failure(s.signIn(input, META));
      assert.equal(hasher.verifies - before, 1, `${what}: one verification`);
      assert.equal(err.code, 'AUTH_FAILED', what);
      seen.add(`${err.code}|${err.publicMessage}|${JSON.stringify(Object.keys(err.details ?? {}))}`);
    }
    assert.equal(seen.size, 1, [...seen].join('\n'));
    const reasons = audit.ofType('web.signin').map((r) => r.fields['reason']);
    assert.deepEqual(reasons, ['unknown-tenant', 'unknown-tenant', 'unknown-user', 'unknown-user', 'bad-credentials', 'disabled', 'no-local-password', 'locked']);
    const before = hasher.verifies;
    await s.signIn({ tenant: 'enum', username: 'alice', password: USER_PW }, META);
    assert.equal(hasher.verifies - before, 1);
  });

  it('with the real argon2id parameters, an unknown user takes as long as a wrong password (medians within 2.5×)', { timeout: 30_000 }, async (t) => {
    const clock = new SimClock({ startMs: T0 });
    const s = new IdentityService({ database: db, audit: new MemoryAuditSink({ clock }), clock, hasher: argon2idHasher() });
    const tenant = await s.createTenant('timing', 'Timing');
    await s.provisionUser(tenant.id, { username: 'carol', password: USER_PW });
    await failure(s.signIn({ tenant: 'timing', username: 'warm-up', password: 'x' }, META));
    const time = async (username: string): Promise<number> => {
      const t0 = performance.now();
      await failure(s.signIn({ tenant: 'timing', username, password: 'not the password at all' }, META));
      return performance.now() - t0;
    };
    const known: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 4; i++) {
      // stay under the lockout threshold for carol: 4 failures
      known.push(await time('carol'));
      unknown.push(await time(`nobody-${i}`));
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
    const k = median(known);
    const u = median(unknown);
    t.diagnostic(`median sign-in failure: known user ${k.toFixed(1)} ms, unknown user ${u.toFixed(1)} ms`);
    assert.ok(k > 2 && u > 2, `both paths do real argon2 work (known ${k.toFixed(1)} ms, unknown ${u.toFixed(1)} ms)`);
    assert.ok(Math.max(k, u) / Math.min(k, u) < 2.5, `known ${k.toFixed(1)} ms vs unknown ${u.toFixed(1)} ms`);
  });
});
