/**
 * Brute force against the sign-in endpoint (issue #6, first target), on a real platform
 * app on port 0 with a real ScoringDefender over its SQLite file: 300 wrong passwords
 * from 127.0.0.1, 50 in flight, reach the password check exactly THRESHOLD times (the
 * sign-in gate runs one check per address at a time, so the defender sees each failure
 * before the next check), and everything after is refused before the check. With the
 * tenant's `lockoutScope: 'address'` the owner still signs in from 127.0.0.2; with
 * `'account'` (the default) the same attack locks the owner out everywhere. Linux routes
 * all of 127/8 to lo, so `localAddress` picks the source address.
 *
 * Also: the per-(account, address) lock below the defender's threshold, the policy
 * field's bad values, and the SignInGate on its own (order, concurrency, BUSY bounds).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ScoringDefender } from '../../src/defender/index.js';
import type { AddressInfo } from 'node:net';
import { SignInGate } from '../../src/platform/sign-in-gate.js';
import { createPlatformApp, type PlatformApp } from '../../src/platform/app.js';
import { applyPolicyUpdate, DEFAULT_POLICY, parseStoredPolicy } from '../../src/platform/policy.js';
import { TachyonError } from '../../src/core/errors.js';
import { PG_URL, postFrom, seedTenant, startPlatform, USER_PW, type Platform, type SeededTenant } from './helpers.js';

interface AuditLine {
  type: string;
  fields: Record<string, unknown>;
}

function auditRecords(p: Platform): AuditLine[] {
  return readFileSync(p.auditFile, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as AuditLine);
}

/** `total` sign-ins with wrong passwords from `from`, `inFlight` at a time; the statuses in order of sending. */
async function attack(p: Platform, tenant: string, username: string, from: string, total: number, inFlight: number): Promise<number[]> {
  const statuses: number[] = new Array<number>(total);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      statuses[i] = (await postFrom(p.base, '/api/v1/auth/signin', { tenant, username, password: `wrong-guess-${i}-qwertyuiop` }, from)).status;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return statuses;
}

const count = (xs: readonly number[], v: number): number => xs.filter((x) => x === v).length;

/** Attempts from `address` that reached the password check (each is one `web.signin` failure record). */
function checked(p: Platform, address: string): number {
  return auditRecords(p).filter((r) => r.type === 'web.signin' && r.fields['result'] === 'failure' && r.fields['clientAddress'] === address).length;
}

describe('sign-in under brute force: the defender, the gate and the lockout scope', () => {
  let p: Platform;
  let addr: SeededTenant;
  let acct: SeededTenant;
  let defender: ScoringDefender;
  const THRESHOLD = 20;
  const ATTEMPTS = 300;
  const IN_FLIGHT = 50;

  before(async () => {
    p = await startPlatform({
      defender: async (database, clock) => (defender = await ScoringDefender.open({ database, clock, settings: { threshold: THRESHOLD, syncIntervalMs: 60_000 } })),
    });
    addr = await seedTenant(p, 'by-address');
    acct = await seedTenant(p, 'by-account');
    await p.identity.repo.setPolicy(addr.id, applyPolicyUpdate(DEFAULT_POLICY, { lockoutScope: 'address' }), new Date(p.clock.now()).toISOString());
  });

  after(async () => {
    await p?.close();
  });

  it("'address' scope: 300 guesses from 127.0.0.1 (50 in flight) reach the password check exactly THRESHOLD times; the owner signs in from 127.0.0.2", async () => {
    const statuses = await attack(p, addr.slug, 'member1', '127.0.0.1', ATTEMPTS, IN_FLIGHT);
    assert.equal(count(statuses, 401), THRESHOLD, `401s: ${count(statuses, 401)}`);
    // refused: 403 on the connections open when the block came (each then closes), new connections closed at accept
    assert.equal(count(statuses, 403) + count(statuses, 0), ATTEMPTS - THRESHOLD, `statuses: ${JSON.stringify(statuses)}`);
    assert.ok(count(statuses, 403) >= 1 && count(statuses, 403) <= IN_FLIGHT, `403s: ${count(statuses, 403)}`);
    assert.equal(checked(p, '127.0.0.1'), THRESHOLD, 'password checks from the attacker');
    assert.equal(defender.isBlocked('127.0.0.1'), true);
    assert.equal(defender.isBlocked('127.0.0.2'), false);
    // the account was locked for 127.0.0.1 only (after maxFailedAttempts = 5), once
    const lockouts = auditRecords(p).filter((r) => r.type === 'web.lockout' && r.fields['tenant'] === addr.slug);
    assert.equal(lockouts.length, 1, JSON.stringify(lockouts));
    assert.equal(lockouts[0]?.fields['scope'], 'address');
    assert.equal(lockouts[0]?.fields['lockedAddress'], '127.0.0.1');
    assert.equal(lockouts[0]?.fields['failures'], DEFAULT_POLICY.maxFailedAttempts);
    const reasons = auditRecords(p)
      .filter((r) => r.type === 'web.signin' && r.fields['clientAddress'] === '127.0.0.1')
      .map((r) => r.fields['reason']);
    assert.deepEqual(reasons, [...Array<string>(5).fill('bad-credentials'), ...Array<string>(THRESHOLD - 5).fill('address-locked')]);
    // the owner, from a clean address
    const owner = await postFrom(p.base, '/api/v1/auth/signin', { tenant: addr.slug, username: 'member1', password: USER_PW }, '127.0.0.2');
    assert.equal(owner.status, 200, owner.body);
    // and the attacker's address, even with the right password: refused before any check
    const fromAttacker = await postFrom(p.base, '/api/v1/auth/signin', { tenant: addr.slug, username: 'member1', password: USER_PW }, '127.0.0.1');
    assert.ok(fromAttacker.status === 0 || fromAttacker.status === 403, String(fromAttacker.status));
    assert.equal(checked(p, '127.0.0.1'), THRESHOLD);
  });

  it("'account' scope (the default): the same attack from 127.0.0.3 locks the owner out of 127.0.0.4 too", async () => {
    const statuses = await attack(p, acct.slug, 'member1', '127.0.0.3', ATTEMPTS, IN_FLIGHT);
    assert.equal(count(statuses, 401), THRESHOLD);
    assert.equal(count(statuses, 403) + count(statuses, 0), ATTEMPTS - THRESHOLD);
    assert.equal(checked(p, '127.0.0.3'), THRESHOLD);
    const lockouts = auditRecords(p).filter((r) => r.type === 'web.lockout' && r.fields['tenant'] === acct.slug);
    assert.equal(lockouts.length, 1);
    assert.equal(lockouts[0]?.fields['scope'], 'account');
    assert.equal(lockouts[0]?.fields['lockedAddress'], undefined);
    const owner = await postFrom(p.base, '/api/v1/auth/signin', { tenant: acct.slug, username: 'member1', password: USER_PW }, '127.0.0.4');
    assert.equal(owner.status, 401, 'the account is locked against its owner');
    const last = auditRecords(p).filter((r) => r.type === 'web.signin' && r.fields['clientAddress'] === '127.0.0.4');
    assert.equal(last.at(-1)?.fields['reason'], 'locked');
  });

});

for (const [engine, url] of [
  ['SQLite', undefined],
  ['PostgreSQL', PG_URL],
] as const) {
  describe(`lockoutScope 'address' on ${engine}`, { skip: engine === 'PostgreSQL' && !url ? 'set TACHYON_TEST_PG_URL=postgres://… to run against PostgreSQL' : false }, () => {
    let p: Platform;
    let addr: SeededTenant;
    // the tenant of this run (PostgreSQL keeps earlier runs')
    const T = `addr-${randomBytes(3).toString('hex')}`;

    before(async () => {
      p = await startPlatform(url ? { url } : {});
      addr = await seedTenant(p, T);
      await p.identity.repo.setPolicy(addr.id, applyPolicyUpdate(DEFAULT_POLICY, { lockoutScope: 'address' }), new Date(p.clock.now()).toISOString());
    });

    after(async () => {
      await p?.close();
    });

    it("'address' scope below the defender's threshold: 5 wrong passwords lock the account for that address only, until lockoutSeconds pass", async () => {
      const u = await p.identity.provisionUser(addr.id, { username: 'carol', password: USER_PW });
      for (let i = 0; i < 5; i++) {
        assert.equal((await postFrom(p.base, '/api/v1/auth/signin', { tenant: addr.slug, username: 'carol', password: `nope-${i}-abcdefgh` }, '127.0.0.5')).status, 401);
      }
      const right = { tenant: addr.slug, username: 'carol', password: USER_PW };
      assert.equal((await postFrom(p.base, '/api/v1/auth/signin', right, '127.0.0.5')).status, 401, 'locked for 127.0.0.5');
      assert.equal((await p.identity.repo.userById(addr.id, u.id))?.lockedUntil, null, 'the account itself is not locked');
      assert.equal((await postFrom(p.base, '/api/v1/auth/signin', right, '127.0.0.6')).status, 200, 'another address signs in');
      // the success from .6 did not lift the lock of .5
      assert.equal((await postFrom(p.base, '/api/v1/auth/signin', right, '127.0.0.5')).status, 401);
      p.clock.advance(DEFAULT_POLICY.lockoutSeconds * 1000 + 1);
      assert.equal((await postFrom(p.base, '/api/v1/auth/signin', right, '127.0.0.5')).status, 200, 'unlocked after lockoutSeconds');
      const rows = await p.db.db.selectFrom('platform_address_lockout').selectAll().where('user_id', '=', u.id).execute();
      assert.deepEqual(rows, [], 'a success clears the counters of the address and the ended ones');
    });

    it("an administrator's password reset lifts the per-address locks", async () => {
      const u = await p.identity.provisionUser(addr.id, { username: 'dave', password: USER_PW });
      for (let i = 0; i < 5; i++) await postFrom(p.base, '/api/v1/auth/signin', { tenant: addr.slug, username: 'dave', password: `nope-${i}-abcdefgh` }, '127.0.0.7');
      const rows = await p.db.db.selectFrom('platform_address_lockout').selectAll().where('user_id', '=', u.id).execute();
      assert.equal(rows.length, 1);
      assert.notEqual(rows[0]?.locked_until, null);
      await p.identity.repo.setPassword(addr.id, u.id, 'x', false, new Date(p.clock.now()).toISOString());
      assert.deepEqual(await p.db.db.selectFrom('platform_address_lockout').selectAll().where('user_id', '=', u.id).execute(), []);
    });
  });
}

describe('the sign-in gate in the app: more guesses at once from one address than it lets wait', () => {
  let p: Platform;
  let t: SeededTenant;
  let web: PlatformApp;
  let base: string;
  let defender: ScoringDefender;

  before(async () => {
    p = await startPlatform();
    t = await seedTenant(p, 'gated');
    defender = await ScoringDefender.open({ database: p.db, clock: p.clock, settings: { threshold: 1000, syncIntervalMs: 60_000 } });
    web = createPlatformApp({ identity: p.identity, insecureHttp: true, defender, signInGate: { maxWaiting: 2 } });
    await web.app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(web.app.server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await web?.app.close();
    await defender?.close();
    await p?.close();
  });

  it('refuses the excess at once with BUSY (503, sanitized, audited); other addresses are not affected', async () => {
    const burst = await Promise.all(
      Array.from({ length: 20 }, (_, i) => postFrom(base, '/api/v1/auth/signin', { tenant: t.slug, username: 'member1', password: `burst-${i}-wrong-pass` }, '127.0.0.9')),
    );
    const busy = burst.filter((r) => r.status === 503);
    assert.ok(busy.length >= 1, JSON.stringify(burst.map((r) => r.status)));
    assert.equal(busy.length + burst.filter((r) => r.status === 401).length, 20);
    for (const r of busy) {
      const body = JSON.parse(r.body) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'BUSY');
      assert.equal(body.error.message, 'Too many sign-in attempts at once; try again later.');
    }
    const refusals = auditRecords(p).filter((r) => r.type === 'web.refusal' && r.fields['code'] === 'BUSY' && r.fields['clientAddress'] === '127.0.0.9');
    assert.equal(refusals.length, busy.length);
    assert.equal(checked(p, '127.0.0.9'), 20 - busy.length, 'the refused ones never reached the password check');
    const other = await postFrom(base, '/api/v1/auth/signin', { tenant: t.slug, username: 'auditor1', password: USER_PW }, '127.0.0.10');
    assert.equal(other.status, 200, other.body);
  });
});

describe('the lockoutScope policy field', () => {
  it("defaults to 'account', also for a policy stored before the field existed", () => {
    assert.equal(DEFAULT_POLICY.lockoutScope, 'account');
    assert.equal(parseStoredPolicy(JSON.stringify({ maxFailedAttempts: 3 })).lockoutScope, 'account');
    assert.equal(parseStoredPolicy(JSON.stringify({ lockoutScope: 'address' })).lockoutScope, 'address');
  });

  it('refuses anything but account or address, naming the field, never echoing the value', () => {
    for (const bad of ['ip', 'ADDRESS', '', ' address', 'address\u0000', 1, null, true, ['address'], { scope: 'address' }]) {
      assert.throws(
        () => applyPolicyUpdate(DEFAULT_POLICY, { lockoutScope: bad }),
        (e: unknown) => e instanceof TachyonError && e.code === 'USAGE' && e.publicMessage === 'Invalid policy field lockoutScope.',
        JSON.stringify(bad),
      );
    }
  });
});

describe('SignInGate', () => {
  const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

  it('runs one check per address at a time, in arrival order; other addresses are not held up', async () => {
    const gate = new SignInGate();
    const log: string[] = [];
    const release: Array<() => void> = [];
    const job = (name: string) => () =>
      new Promise<string>((resolve) => {
        log.push(`start ${name}`);
        release.push(() => {
          log.push(`end ${name}`);
          resolve(name);
        });
      });
    const a = [1, 2, 3].map((i) => gate.run('10.0.0.1', job(`a${i}`)));
    const b = gate.run('10.0.0.2', job('b1'));
    await tick();
    assert.deepEqual(log, ['start a1', 'start b1']);
    assert.equal(gate.waiting('10.0.0.1'), 2);
    release.shift()!();
    await tick();
    assert.deepEqual(log.slice(2), ['end a1', 'start a2']);
    while (release.length > 0) {
      release.shift()!();
      await tick();
    }
    assert.deepEqual(await Promise.all([...a, b]), ['a1', 'a2', 'a3', 'b1']);
    assert.equal(gate.size, 0, 'no address left behind');
  });

  it('an IPv6 /64 is one address; concurrency 2 runs two at a time; an error releases the slot', async () => {
    const gate = new SignInGate({ concurrency: 2 });
    let running = 0;
    let peak = 0;
    const job = async (fail: boolean): Promise<void> => {
      running++;
      peak = Math.max(peak, running);
      await tick();
      running--;
      if (fail) throw new TachyonError('AUTH_FAILED', 'x');
    };
    const all = Array.from({ length: 10 }, (_, i) => gate.run(`2001:db8:0:1::${i.toString(16)}`, () => job(i % 2 === 0)));
    const results = await Promise.allSettled(all);
    assert.equal(peak, 2);
    assert.equal(results.filter((r) => r.status === 'rejected').length, 5);
    assert.equal(gate.size, 0);
  });

  it('refuses with BUSY beyond maxWaiting for one address and beyond maxAddresses', async () => {
    const gate = new SignInGate({ maxWaiting: 2, maxAddresses: 2 });
    let open!: () => void;
    const held = new Promise<void>((r) => (open = r));
    const runs = Array.from({ length: 5 }, () => gate.run('10.0.0.1', () => held));
    const settled = Promise.allSettled(runs);
    await tick();
    const other = gate.run('10.0.0.2', () => held);
    await assert.rejects(gate.run('10.0.0.3', () => held), (e: unknown) => e instanceof TachyonError && e.code === 'BUSY' && e.details?.['reason'] === 'addresses');
    open();
    const r = await settled;
    await other;
    assert.deepEqual(
      r.map((x) => (x.status === 'fulfilled' ? 'ok' : (x.reason as TachyonError).code)),
      ['ok', 'ok', 'ok', 'BUSY', 'BUSY'],
    );
    assert.equal(gate.size, 0);
  });

  it('refuses bad settings with CONFIG', () => {
    for (const o of [{ concurrency: 0 }, { concurrency: 1.5 }, { maxWaiting: -1 }, { maxAddresses: 0 }, { concurrency: Number.NaN }]) {
      assert.throws(() => new SignInGate(o), (e: unknown) => e instanceof TachyonError && e.code === 'CONFIG', JSON.stringify(o));
    }
  });
});
