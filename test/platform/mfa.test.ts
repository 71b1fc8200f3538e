/**
 * The TOTP second factor (src/platform/mfa) on a real SQLite file, and on PostgreSQL
 * when TACHYON_TEST_PG_URL is set: RFC 6238's SHA-1 vectors through otpauth and through
 * the service as configured, enrolment, the ±1 step window, expired, future and replayed
 * codes, recovery codes used once, the sealed secret (not the plaintext, bound to its
 * owner), the wrong-code lockout on an injected clock, audit records without secrets,
 * the key file, and a seeded fuzz of the code parsers.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HOTP, Secret, TOTP, URI } from 'otpauth';
import { MemoryAuditSink } from '../../src/audit/index.js';
import { openDatabase, type Database } from '../../src/db/database.js';
import {
  AesGcmSecretBox,
  generateRecoveryCode,
  loadSecretBox,
  loadSecretBoxKeyFile,
  MAX_CODE_INPUT,
  MfaService,
  parseRecoveryCode,
  parseTotpCode,
  totpSecretAad,
  type MfaServiceOptions,
} from '../../src/platform/mfa/index.js';
import { SimClock } from '../../src/testkit/simclock.js';
import { rejectsCode, throwsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';
import { codeAt } from '../helpers/totp.js';

let dir: string;
before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-mfa-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const RFC_SECRET = '12345678901234567890';
/** RFC 6238 appendix B, SHA-1 rows: time (s) → 8-digit TOTP. */
const RFC_SHA1: ReadonlyArray<[number, string]> = [
  [59, '94287082'],
  [1111111109, '07081804'],
  [1111111111, '14050471'],
  [1234567890, '89005924'],
  [2000000000, '69279037'],
  [20000000000, '65353130'],
];

/** A time well inside a 30 s step, so ±1 step arithmetic in tests is unambiguous. */
const T0 = Date.UTC(2026, 10, 29, 12, 0, 0) + 10_000;

describe('RFC 6238 test vectors (SHA-1)', () => {
  it('otpauth, configured as the service configures it, produces the appendix values', () => {
    const secret = Secret.fromLatin1(RFC_SECRET);
    for (const [t, want] of RFC_SHA1) {
      assert.equal(TOTP.generate({ secret, algorithm: 'SHA1', digits: 8, period: 30, timestamp: t * 1000 }), want, `T=${t}`);
      // 6 digits are the same truncation modulo 10^6
      assert.equal(TOTP.generate({ secret, algorithm: 'SHA1', digits: 6, period: 30, timestamp: t * 1000 }), want.slice(2), `T=${t} (6 digits)`);
      assert.equal(HOTP.generate({ secret, algorithm: 'SHA1', digits: 8, counter: MfaService.stepAt(t * 1000) }), want);
    }
  });
});

interface Harness {
  database: Database;
  svc: MfaService;
  clock: SimClock;
  audit: MemoryAuditSink;
  box: AesGcmSecretBox;
}

function mfaSuite(name: string, open: () => Promise<Database>, skip: string | false, cleanup?: () => Promise<void>): void {
  describe(`MfaService on ${name}`, { skip }, () => {
    let database: Database;
    before(async () => {
      database = await open();
    });
    after(async () => {
      await database?.close();
      await cleanup?.();
    });
    let n = 0;
    const harness = (opts: Partial<MfaServiceOptions> = {}): Harness & { tenant: string; user: string } => {
      const clock = new SimClock({ startMs: T0 });
      const audit = new MemoryAuditSink({ clock });
      const box = AesGcmSecretBox.random();
      const svc = new MfaService({ database, box, audit, clock, ...opts });
      n++;
      return { database, svc, clock, audit, box, tenant: `tenant-${n}`, user: `user-${n}` };
    };
    const enrolled = async (h: Harness & { tenant: string; user: string }): Promise<{ secret: string; codes: string[] }> => {
      const e = await h.svc.beginEnrolment(h.tenant, h.user, 'alice@example.com');
      const codes = await h.svc.confirmEnrolment(h.tenant, h.user, codeAt(e.secret, h.clock.now()));
      h.clock.advance(30_000); // the confirming step is used; move to the next
      return { secret: e.secret, codes };
    };

    it('the service accepts the RFC 6238 vector codes for a secret stored as it stores them', async () => {
      const h = harness();
      const now = new Date().toISOString();
      const clockAt = (t: number): SimClock => new SimClock({ startMs: t * 1000 });
      for (const [i, [t, want]] of RFC_SHA1.entries()) {
        const user = `rfc-${i}`;
        await h.database.db
          .insertInto('mfa_totp')
          .values({
            tenant_id: h.tenant,
            user_id: user,
            status: 'confirmed',
            secret_sealed: h.box.seal(Buffer.from(RFC_SECRET, 'latin1'), totpSecretAad(h.tenant, user)),
            last_step: null,
            failed_count: 0,
            failed_window_start: null,
            locked_until: null,
            created_at: now,
            confirmed_at: now,
            updated_at: now,
          })
          .execute();
        const svc = new MfaService({ database: h.database, box: h.box, audit: h.audit, clock: clockAt(t) });
        assert.deepEqual(await svc.verify(h.tenant, user, want.slice(2)), { method: 'totp', step: Math.floor(t / 30) }, `T=${t}`);
      }
    });

    it('enrolment round trip: otpauth URI, base32 secret, confirm with a code, recovery codes once', async () => {
      const h = harness();
      assert.equal(await h.svc.isEnrolled(h.tenant, h.user), false);
      const e = await h.svc.beginEnrolment(h.tenant, h.user, 'alice@example.com', { tenantLabel: 'acme', userLabel: 'alice', clientAddress: '203.0.113.9' });
      assert.match(e.secret, /^[A-Z2-7]{32}$/, '160-bit secret in base32');
      assert.equal(e.secretGrouped.replace(/ /g, ''), e.secret);
      const parsed = URI.parse(e.uri);
      assert.ok(parsed instanceof TOTP);
      assert.equal(parsed.issuer, 'Tachyon');
      assert.equal(parsed.label, 'alice@example.com');
      assert.equal(parsed.algorithm, 'SHA1');
      assert.equal(parsed.digits, 6);
      assert.equal(parsed.period, 30);
      assert.equal(parsed.secret.base32, e.secret);
      assert.match(e.uri, /^otpauth:\/\/totp\/Tachyon:alice%40example\.com\?/);
      assert.equal((await h.svc.status(h.tenant, h.user)).state, 'pending');
      assert.equal(await h.svc.isEnrolled(h.tenant, h.user), false, 'pending is not enrolled');
      await rejectsCode(h.svc.verify(h.tenant, h.user, codeAt(e.secret, h.clock.now())), 'MFA_INVALID', 'verify before confirm');

      const wrong = await rejectsCode(h.svc.confirmEnrolment(h.tenant, h.user, '000000' === codeAt(e.secret, h.clock.now()) ? '111111' : '000000'), 'MFA_INVALID');
      assert.equal(wrong.details?.reason, 'wrong-code');
      const codes = await h.svc.confirmEnrolment(h.tenant, h.user, codeAt(e.secret, h.clock.now()));
      assert.equal(codes.length, 10);
      assert.equal(new Set(codes).size, 10);
      for (const c of codes) assert.match(c, /^[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){3}$/);
      assert.equal(await h.svc.isEnrolled(h.tenant, h.user), true);
      const st = await h.svc.status(h.tenant, h.user);
      assert.equal(st.state, 'confirmed');
      assert.equal(st.recoveryCodesLeft, 10);
      // the confirming code cannot be used again to sign in
      const replay = await rejectsCode(h.svc.verify(h.tenant, h.user, codeAt(e.secret, h.clock.now())), 'MFA_INVALID');
      assert.equal(replay.details?.reason, 'replay');
      await rejectsCode(h.svc.beginEnrolment(h.tenant, h.user, 'again'), 'CONFLICT', 'a confirmed factor is not replaced');

      // audit: enrol, failure, confirm, replay — never the secret or a code
      assert.deepEqual(
        h.audit.records.map((r) => r.type),
        ['mfa.enrol', 'mfa.failure', 'mfa.failure', 'mfa.confirm', 'mfa.replay'],
      );
      assert.deepEqual(h.audit.records[0]?.fields, { clientAddress: '203.0.113.9', tenant: 'acme', user: 'alice', method: 'totp' });
      const all = JSON.stringify(h.audit.records);
      assert.ok(!all.includes(e.secret), 'secret not audited');
      for (const c of codes) assert.ok(!all.includes(c), 'recovery code not audited');
      assert.ok(h.audit.records.every((r) => r.redacted === undefined), 'nothing needed redacting');
    });

    it('accepts the steps either side of now; refuses an expired code and one from beyond the window', async () => {
      const h = harness();
      const { secret } = await enrolled(h);
      h.clock.advance(60_000); // so that the previous step is newer than the confirming one
      const now = h.clock.now();
      for (const off of [-2, 2, 3, -10]) {
        const err = await rejectsCode(h.svc.verify(h.tenant, h.user, codeAt(secret, now + off * 30_000)), 'MFA_INVALID', `step ${off}`);
        assert.equal(err.details?.reason, 'wrong-code', `step ${off}`);
        assert.equal(err.publicMessage, 'The verification code is not valid.');
      }
      const prev = await h.svc.verify(h.tenant, h.user, codeAt(secret, now - 30_000));
      assert.equal(prev.method === 'totp' && prev.step, MfaService.stepAt(now) - 1, 'previous step accepted');
      const next = await h.svc.verify(h.tenant, h.user, codeAt(secret, now + 30_000));
      assert.equal(next.method === 'totp' && next.step, MfaService.stepAt(now) + 1, 'next step accepted');
      // the current step is now before the last used one: refused as a replay
      const cur = await rejectsCode(h.svc.verify(h.tenant, h.user, codeAt(secret, now)), 'MFA_INVALID');
      assert.equal(cur.details?.reason, 'replay');
    });

    it('refuses a replayed code (same step twice), also when two uses race', async () => {
      const h = harness();
      const { secret } = await enrolled(h);
      const code = codeAt(secret, h.clock.now());
      await h.svc.verify(h.tenant, h.user, code);
      const again = await rejectsCode(h.svc.verify(h.tenant, h.user, code), 'MFA_INVALID');
      assert.equal(again.details?.reason, 'replay');
      assert.equal(h.audit.ofType('mfa.replay').length, 1);
      const replay = h.audit.ofType('mfa.replay')[0];
      assert.equal(replay?.fields.step, MfaService.stepAt(h.clock.now()));
      h.clock.advance(30_000);
      const fresh = codeAt(secret, h.clock.now());
      const results = await Promise.allSettled([1, 2, 3, 4].map(() => h.svc.verify(h.tenant, h.user, fresh)));
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'exactly one of four concurrent uses passes');
    });

    it('recovery codes: each works once, a wrong one is refused, regeneration voids the old set', async () => {
      const h = harness();
      const { codes } = await enrolled(h);
      const first = codes[0] as string;
      assert.deepEqual(await h.svc.verifyRecoveryCode(h.tenant, h.user, first), { method: 'recovery', remaining: 9 });
      const used = await rejectsCode(h.svc.verifyRecoveryCode(h.tenant, h.user, first), 'MFA_INVALID');
      assert.equal(used.details?.reason, 'used');
      // typed loosely: upper case, spaces instead of hyphens, look-alikes
      const second = codes[1] as string;
      const loose = ` ${second.toUpperCase().replace(/-/g, ' ').replace(/0/g, 'O').replace(/1/g, 'l')} `;
      assert.deepEqual(await h.svc.verifyRecoveryCode(h.tenant, h.user, loose), { method: 'recovery', remaining: 8 });
      const wrong = await rejectsCode(h.svc.verifyRecoveryCode(h.tenant, h.user, generateRecoveryCode()), 'MFA_INVALID');
      assert.equal(wrong.details?.reason, 'wrong-code');
      const bad = await rejectsCode(h.svc.verifyRecoveryCode(h.tenant, h.user, '123456'), 'MFA_INVALID');
      assert.equal(bad.details?.reason, 'malformed');
      const fresh = await h.svc.regenerateRecoveryCodes(h.tenant, h.user);
      assert.equal(fresh.length, 10);
      await rejectsCode(h.svc.verifyRecoveryCode(h.tenant, h.user, codes[2] as string), 'MFA_INVALID', 'old set void');
      assert.equal((await h.svc.verifyRecoveryCode(h.tenant, h.user, fresh[0] as string)).method, 'recovery');
      // stored only as salted hashes
      const rows = await h.database.db.selectFrom('mfa_recovery_code').selectAll().where('tenant_id', '=', h.tenant).execute();
      const dump = JSON.stringify(rows);
      for (const c of [...codes, ...fresh]) {
        assert.ok(!dump.includes(c) && !dump.includes(parseRecoveryCode(c) as string), 'no code in the table');
      }
      assert.equal(new Set(rows.map((r) => r.salt)).size, rows.length, 'a salt per row');
      assert.deepEqual(
        h.audit.ofType('mfa.recovery').map((r) => [r.fields.action, r.fields.remaining]),
        [['used', 9], ['used', 8], ['regenerated', 10], ['used', 9]],
      );
    });

    it('the secret is sealed: not the plaintext in the database, and a row moved to another user does not verify', async () => {
      const h = harness();
      const { secret } = await enrolled(h);
      const row = await h.database.db.selectFrom('mfa_totp').selectAll().where('tenant_id', '=', h.tenant).where('user_id', '=', h.user).executeTakeFirstOrThrow();
      const raw = Buffer.from(Secret.fromBase32(secret).bytes);
      assert.match(row.secret_sealed, /^v1\.[0-9a-f]{16}\.[A-Za-z0-9_-]+$/);
      for (const form of [secret, raw.toString('hex'), raw.toString('base64'), raw.toString('base64url'), raw.toString('latin1')]) {
        assert.ok(!row.secret_sealed.includes(form), 'plaintext secret in the row');
      }
      // copy the row to another user of the same tenant and to the same user id in another tenant
      for (const [tenant, user] of [[h.tenant, 'mallory'], ['other-tenant', h.user]] as const) {
        await h.database.db.insertInto('mfa_totp').values({ ...row, tenant_id: tenant, user_id: user, last_step: null }).execute();
        const err = await rejectsCode(h.svc.verify(tenant, user, codeAt(secret, h.clock.now())), 'WRONG_KEY', `${tenant}/${user}`);
        assert.equal(err.publicMessage, 'Two-step verification is not available for this account; contact an administrator.');
      }
      assert.equal(h.audit.ofType('mfa.failure').filter((r) => r.fields.reason === 'secret-unreadable').length, 2);
      // and another server key cannot open it
      const other = new MfaService({ database: h.database, box: AesGcmSecretBox.random(), audit: h.audit, clock: h.clock });
      await rejectsCode(other.verify(h.tenant, h.user, codeAt(secret, h.clock.now())), 'KEY_MISSING');
      // the right owner still verifies
      assert.equal((await h.svc.verify(h.tenant, h.user, codeAt(secret, h.clock.now()))).method, 'totp');
    });

    it('locks after 5 wrong codes in 5 minutes, refuses even a right code while locked, and lifts on the clock', async () => {
      const h = harness();
      const { secret } = await enrolled(h);
      const right = (): string => codeAt(secret, h.clock.now());
      const wrongCode = (): string => (right() === '000000' ? '999999' : '000000');
      for (let i = 1; i <= 4; i++) {
        const err = await rejectsCode(h.svc.verify(h.tenant, h.user, wrongCode()), 'MFA_INVALID', `wrong #${i}`);
        assert.equal(err.details?.reason, 'wrong-code');
        h.clock.advance(10_000);
      }
      const fifth = await rejectsCode(h.svc.verify(h.tenant, h.user, wrongCode()), 'MFA_LOCKED', 'fifth wrong code');
      assert.equal(fifth.publicMessage, 'Too many wrong verification codes; try again later.');
      const until = Date.parse(fifth.details?.lockedUntil as string);
      assert.equal(until, h.clock.now() + 15 * 60_000);
      assert.equal(h.audit.ofType('mfa.lockout').length, 1);
      await rejectsCode(h.svc.verify(h.tenant, h.user, right()), 'MFA_LOCKED', 'right code while locked');
      await rejectsCode(h.svc.verifyRecoveryCode(h.tenant, h.user, generateRecoveryCode()), 'MFA_LOCKED', 'recovery while locked');
      assert.equal((await h.svc.status(h.tenant, h.user)).lockedUntil, fifth.details?.lockedUntil);
      h.clock.advanceTo(until - 1000);
      await rejectsCode(h.svc.verify(h.tenant, h.user, right()), 'MFA_LOCKED', 'a second before the end');
      h.clock.advanceTo(until);
      assert.equal((await h.svc.verify(h.tenant, h.user, right())).method, 'totp', 'lock expired');
      assert.equal(h.audit.ofType('mfa.lockout').length, 1, 'one lockout record');
      // after a success the count starts again: 4 wrong codes do not lock
      h.clock.advance(30_000);
      for (let i = 0; i < 4; i++) await rejectsCode(h.svc.verify(h.tenant, h.user, wrongCode()), 'MFA_INVALID');
      assert.equal((await h.svc.verify(h.tenant, h.user, right())).method, 'totp');
    });

    it('wrong codes spread over more than the window do not lock; a concurrent burst gets at most 5 checks', async () => {
      const h = harness();
      const { secret } = await enrolled(h);
      const wrongCode = (): string => (codeAt(secret, h.clock.now()) === '000000' ? '999999' : '000000');
      for (let i = 0; i < 8; i++) {
        await rejectsCode(h.svc.verify(h.tenant, h.user, wrongCode()), 'MFA_INVALID', `spread #${i}`);
        h.clock.advance(2 * 60_000);
      }
      h.clock.advance(10 * 60_000);
      const burst = await Promise.allSettled(Array.from({ length: 20 }, () => h.svc.verify(h.tenant, h.user, wrongCode())));
      const codes = burst.map((r) => (r.status === 'rejected' ? (r.reason as { code?: string }).code : 'ok'));
      assert.ok(codes.filter((c) => c === 'MFA_INVALID').length <= 4, `at most 4 plain refusals: ${codes.join(',')}`);
      assert.ok(codes.filter((c) => c === 'MFA_LOCKED').length >= 16, 'the rest locked');
      await rejectsCode(h.svc.verify(h.tenant, h.user, codeAt(secret, h.clock.now())), 'MFA_LOCKED');
    });

    it('a custom policy is honoured (3 wrong in 1 minute, locked 2 minutes)', async () => {
      const h = harness({ maxFailures: 3, failureWindowMs: 60_000, lockMs: 120_000 });
      const { secret } = await enrolled(h);
      const wrongCode = (): string => (codeAt(secret, h.clock.now()) === '000000' ? '999999' : '000000');
      await rejectsCode(h.svc.verify(h.tenant, h.user, wrongCode()), 'MFA_INVALID');
      await rejectsCode(h.svc.verify(h.tenant, h.user, 'abc'), 'MFA_INVALID', 'malformed counts too');
      const e = await rejectsCode(h.svc.verify(h.tenant, h.user, wrongCode()), 'MFA_LOCKED');
      assert.equal(e.details?.retryAfterSeconds, 120);
      h.clock.advance(120_000);
      assert.equal((await h.svc.verify(h.tenant, h.user, codeAt(secret, h.clock.now()))).method, 'totp');
    });

    it('a pending enrolment expires; confirm without one and verify when not enrolled are refused', async () => {
      const h = harness();
      await rejectsCode(h.svc.confirmEnrolment(h.tenant, h.user, '123456'), 'MFA_INVALID', 'nothing pending');
      const e = await h.svc.beginEnrolment(h.tenant, h.user, 'bob');
      h.clock.advance(60 * 60_000);
      const err = await rejectsCode(h.svc.confirmEnrolment(h.tenant, h.user, codeAt(e.secret, h.clock.now())), 'MFA_INVALID');
      assert.equal(err.details?.reason, 'expired-enrolment');
      // beginning again replaces the pending secret; the old one no longer confirms
      const e2 = await h.svc.beginEnrolment(h.tenant, h.user, 'bob');
      assert.notEqual(e2.secret, e.secret);
      const old = await rejectsCode(h.svc.confirmEnrolment(h.tenant, h.user, codeAt(e.secret, h.clock.now())), 'MFA_INVALID');
      assert.notEqual(old.details?.reason, undefined);
      assert.equal((await h.svc.confirmEnrolment(h.tenant, h.user, codeAt(e2.secret, h.clock.now()))).length, 10);
      const none = await rejectsCode(h.svc.verify(h.tenant, 'nobody', '123456'), 'MFA_INVALID');
      assert.equal(none.details?.reason, 'not-enrolled');
      await rejectsCode(h.svc.verifyRecoveryCode(h.tenant, 'nobody', generateRecoveryCode()), 'MFA_INVALID');
      await rejectsCode(h.svc.regenerateRecoveryCodes(h.tenant, 'nobody'), 'MFA_INVALID');
      await rejectsCode(h.svc.beginEnrolment(h.tenant, 'x', 'bad:label'), 'USAGE');
      await rejectsCode(h.svc.beginEnrolment('', 'x', 'label'), 'USAGE');
      await rejectsCode(h.svc.verify(h.tenant, 'x\0y', '123456'), 'USAGE');
    });

    it('disable removes the factor and its recovery codes (audited with the actor); enrolling again works', async () => {
      const h = harness();
      const { secret, codes } = await enrolled(h);
      assert.equal(await h.svc.disable(h.tenant, h.user, { actor: 'admin-1' }), true);
      assert.equal(await h.svc.disable(h.tenant, h.user), false, 'nothing left');
      assert.equal(await h.svc.isEnrolled(h.tenant, h.user), false);
      assert.deepEqual(await h.svc.status(h.tenant, h.user), { state: 'none', recoveryCodesLeft: 0 });
      await rejectsCode(h.svc.verify(h.tenant, h.user, codeAt(secret, h.clock.now())), 'MFA_INVALID');
      await rejectsCode(h.svc.verifyRecoveryCode(h.tenant, h.user, codes[0] as string), 'MFA_INVALID');
      const d = h.audit.ofType('mfa.disable');
      assert.equal(d.length, 1);
      assert.equal(d[0]?.fields.actor, 'admin-1');
      const left = await h.database.db.selectFrom('mfa_recovery_code').select('id').where('tenant_id', '=', h.tenant).where('user_id', '=', h.user).execute();
      assert.equal(left.length, 0);
      await enrolled(h);
      assert.equal(await h.svc.isEnrolled(h.tenant, h.user), true);
    });

    it('a fuzzed code never verifies, never throws anything but MFA_INVALID/MFA_LOCKED', async () => {
      const h = harness({ maxFailures: 1_000_000 });
      await enrolled(h);
      const rng = new Rng(0x6d6661);
      for (let i = 0; i < 150; i++) {
        const input = randomInput(rng);
        for (const call of [() => h.svc.verify(h.tenant, h.user, input), () => h.svc.verifyRecoveryCode(h.tenant, h.user, input)]) {
          const err = await rejectsCode(call(), 'MFA_INVALID', JSON.stringify(input));
          assert.ok(['wrong-code', 'malformed'].includes(err.details?.reason as string));
        }
      }
    });
  });
}

mfaSuite('a SQLite file', () => openDatabase({ url: `sqlite://${dir}/mfa.db` }), false);

const pgUrl = process.env.TACHYON_TEST_PG_URL;
const pgSchema = `tachyon_mfa_${process.pid}_${Date.now()}`;
async function pgAdmin(statement: string): Promise<void> {
  const { Client } = (await import('pg')).default;
  const c = new Client({ connectionString: pgUrl });
  await c.connect();
  try {
    await c.query(statement);
  } finally {
    await c.end();
  }
}
mfaSuite(
  'PostgreSQL',
  async () => {
    await pgAdmin(`create schema ${pgSchema}`);
    const url = pgUrl as string;
    return openDatabase({ url: `${url}${url.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${pgSchema}`)}` });
  },
  pgUrl ? false : 'set TACHYON_TEST_PG_URL=postgres://… to run against PostgreSQL',
  () => pgAdmin(`drop schema if exists ${pgSchema} cascade`),
);

/** Hostile and odd inputs for the code parsers. */
function randomInput(rng: Rng): string {
  const pieces = [
    '0', '7', '12', '123', ' ', '\t', '-', '--', '\n', '\0', '\u00a0', '\u2007', '\u200b',
    '\uff11', '\u0661', '\u06f3', '\u0967', '\u00b9', '\u2460', '\ud835\udfce', 'a', 'Z', 'o', 'I', 'u', '\ud800',
    '\u202e', '\ufeff', '1e5', '0x1', '+1', '.', '٣٣٣٣٣٣', '１２３４５６', "' or 1=1 --", '<script>',
  ];
  const kind = rng.int(5);
  if (kind === 0) return 'x'.repeat(rng.range(MAX_CODE_INPUT + 1, 5000)); // overlong
  if (kind === 1) return `${'1'.repeat(rng.range(7, 40))}`; // too many digits
  if (kind === 2) {
    const b = rng.bytes(rng.range(0, 80));
    return b.toString('latin1');
  }
  let s = '';
  const n = rng.range(0, 12);
  for (let i = 0; i < n; i++) s += rng.pick(pieces);
  return s;
}

describe('code parsers', () => {
  it('TOTP codes: exactly six ASCII digits, with one group separator and surrounding blanks allowed', () => {
    for (const [input, want] of [
      ['123456', '123456'],
      [' 123456 ', '123456'],
      ['123 456', '123456'],
      ['123-456', '123456'],
      ['\t000000\t', '000000'],
    ] as const) {
      assert.equal(parseTotpCode(input), want, JSON.stringify(input));
    }
    for (const input of [
      '', '12345', '1234567', '12 34 56', '123--456', '-123456', '123456-', '１２３４５６', '١٢٣٤٥٦', '۱۲۳۴۵۶', '१२३४५६', '¹²³⁴⁵⁶',
      '123456\n', '\u00a0123456', '12345\u200b6', '123456\0', 'abcdef', '12345a', '1e5000', '+123456', '1'.repeat(MAX_CODE_INPUT + 1),
      ' '.repeat(60) + '123456' + ' '.repeat(60),
    ]) {
      assert.equal(parseTotpCode(input), undefined, JSON.stringify(input));
    }
    for (const v of [123456, null, undefined, {}, ['123456'], Buffer.from('123456')]) assert.equal(parseTotpCode(v), undefined);
  });

  it('recovery codes: 16 Crockford symbols, case, hyphens and blanks free, look-alikes mapped', () => {
    const c = generateRecoveryCode();
    const canon = c.replace(/-/g, '');
    assert.equal(parseRecoveryCode(c), canon);
    assert.equal(parseRecoveryCode(c.toUpperCase()), canon);
    assert.equal(parseRecoveryCode(` ${canon.match(/.{4}/g)?.join(' ')} `), canon);
    assert.equal(parseRecoveryCode('oooo-iiii-llll-0000'), '0000111111110000');
    for (const input of ['', canon.slice(1), `${canon}0`, 'uuuu-uuuu-uuuu-uuuu', 'ａａａａ-ａａａａ-ａａａａ-ａａａａ', `${canon.slice(0, 15)}!`, `${canon}\n`, 'x'.repeat(200)]) {
      assert.equal(parseRecoveryCode(input), undefined, JSON.stringify(input));
    }
    assert.equal(parseRecoveryCode(42), undefined);
  });

  it('seeded fuzz: parsers are total, bounded, and accept only their canonical forms', () => {
    const rng = new Rng(0x70747031);
    for (let i = 0; i < 20_000; i++) {
      const input = randomInput(rng);
      const t = parseTotpCode(input);
      if (t !== undefined) {
        assert.match(t, /^[0-9]{6}$/, JSON.stringify(input));
        assert.ok(input.length <= MAX_CODE_INPUT);
        assert.equal(input.replace(/[ \t-]/g, ''), t, `only blanks and one hyphen dropped from ${JSON.stringify(input)}`);
      }
      const r = parseRecoveryCode(input);
      if (r !== undefined) {
        assert.match(r, /^[0-9a-hjkmnp-tv-z]{16}$/, JSON.stringify(input));
        assert.ok(input.length <= MAX_CODE_INPUT);
      }
    }
    // generated codes always parse back
    for (let i = 0; i < 500; i++) {
      const c = generateRecoveryCode();
      assert.equal(parseRecoveryCode(c), c.replace(/-/g, ''));
    }
  });
});

describe('SecretBox key', () => {
  it('the key file is created 0600 (directory 0700), read back the same, and refused when others may read it', () => {
    const file = path.join(dir, 'keys', 'mfa.key');
    const k1 = loadSecretBoxKeyFile(file);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(path.dirname(file)).mode & 0o777, 0o700);
    assert.equal(k1.length, 32);
    assert.deepEqual(loadSecretBoxKeyFile(file), k1);
    const box = loadSecretBox({ keyFile: file });
    const sealed = box.seal(Buffer.from('hello'), Buffer.from('aad'));
    assert.equal(loadSecretBox({ keyFile: file }).open(sealed, Buffer.from('aad')).toString(), 'hello');
    throwsCode(() => box.open(sealed, Buffer.from('other')), 'WRONG_KEY', 'other aad');
    throwsCode(() => box.open(sealed.slice(0, -2) + (sealed.endsWith('AA') ? 'BB' : 'AA'), Buffer.from('aad')), 'WRONG_KEY', 'tampered');
    throwsCode(() => box.open('v1.zz.abc', Buffer.from('aad')), 'WRONG_KEY', 'malformed');
    chmodSync(file, 0o644);
    throwsCode(() => loadSecretBoxKeyFile(file), 'CONFIG', 'group/other readable');
    const bad = path.join(dir, 'bad.key');
    writeFileSync(bad, 'not hex\n', { mode: 0o600 });
    throwsCode(() => loadSecretBoxKeyFile(bad), 'CONFIG', 'not hex');
    throwsCode(() => loadSecretBoxKeyFile(path.join(dir, 'absent.key'), { create: false }), 'KEY_MISSING');
  });

  it('the environment key wins over the file; a retired key still opens old values', () => {
    const hex = 'ab'.repeat(32);
    const fromEnv = loadSecretBox({ env: { TACHYON_MFA_KEY: hex }, keyFile: path.join(dir, 'unused.key') });
    const sealed = fromEnv.seal(Buffer.from('s'), Buffer.from('a'));
    assert.equal(new AesGcmSecretBox(Buffer.from(hex, 'hex')).open(sealed, Buffer.from('a')).toString(), 's');
    throwsCode(() => loadSecretBox({ env: { TACHYON_MFA_KEY: 'short' } }), 'CONFIG');
    throwsCode(() => loadSecretBox({ env: {} }), 'KEY_MISSING');
    const rotated = new AesGcmSecretBox(Buffer.alloc(32, 7), [Buffer.from(hex, 'hex')]);
    assert.equal(rotated.open(sealed, Buffer.from('a')).toString(), 's');
    assert.ok(rotated.seal(Buffer.from('s'), Buffer.from('a')).startsWith(`v1.${rotated.keyId}.`));
  });
});
