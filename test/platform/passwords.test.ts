/**
 * Passwords and policy without HTTP: argon2id with a salt per password, the shipped
 * common-password list, the policy checks (length 12 by default, up to 256 accepted,
 * common and derived-from-common passwords, the user name), policy updates, and
 * fuzz-style checks of the parsers (seeded random inputs: only USAGE refusals).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TachyonError } from '../../src/core/errors.js';
import { readCookie } from '../../src/platform/app.js';
import { validateDisplayName, validateRoles, validateTenantSlug, validateUsername } from '../../src/platform/model.js';
import { argon2idHasher, checkNewPassword, COMMON_PASSWORDS_FILE, isCommonPassword, loadCommonPasswords } from '../../src/platform/passwords.js';
import { applyPolicyUpdate, DEFAULT_POLICY, parseStoredPolicy } from '../../src/platform/policy.js';
import { throwsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';
import { TEST_ARGON2 } from './helpers.js';

const SEED = 0x1d3e7;
const common = loadCommonPasswords();

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TachyonError);
    assert.equal(err.code, 'USAGE');
    return String(err.details?.['reason']);
  }
  return 'accepted';
}

describe('platform passwords', () => {
  it('hashes with argon2id, a fresh salt each time; verifies only the right password', async () => {
    const h = argon2idHasher(TEST_ARGON2);
    const a = await h.hash('same password twice!');
    const b = await h.hash('same password twice!');
    assert.match(a, /^\$argon2id\$v=19\$m=1024,p=1,t=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]+$/);
    assert.notEqual(a, b, 'different salts');
    assert.notEqual(a.split('$')[4], b.split('$')[4]);
    assert.equal(await h.verify(a, 'same password twice!'), true);
    assert.equal(await h.verify(a, 'same password twice?'), false);
    assert.equal(await h.verify('not a hash', 'x'), false);
    assert.equal(await h.verify('$argon2i$v=19$m=1024,p=1,t=1$AAAA$BBBB', 'x'), false, 'only argon2id');
    const real = argon2idHasher();
    assert.match(await real.hash('default parameters'), /^\$argon2id\$v=19\$m=19456,p=1,t=2\$/);
  });

  it('ships a list of 10,000 common passwords and recognises them and their simple variants', () => {
    assert.equal(common.size, 10_000);
    assert.ok(COMMON_PASSWORDS_FILE.endsWith(path.join('data', 'common-passwords.txt')));
    for (const p of ['password', 'PASSWORD', '123456', 'qwertyuiop', 'iloveyou', 'Dragon2024!', '!!monkey99', 'passwordpassword', 'letmeinletmein1', '123412341234']) {
      assert.equal(isCommonPassword(p, common), true, p);
    }
    for (const p of ['violet-harbour-engine-47', 'quiet lantern over 9 hills', 'zq8#Lm2!pR4v', 'correct horse battery staple']) {
      assert.equal(isCommonPassword(p, common), false, p);
    }
  });

  it('a custom list is read (comments and blanks skipped); a missing or empty one is a CONFIG error', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-pw-'));
    try {
      const f = path.join(dir, 'list.txt');
      writeFileSync(f, '# ours\n\nHunter2Hunter2\n');
      assert.deepEqual([...loadCommonPasswords(f)], ['hunter2hunter2']);
      writeFileSync(f, '# nothing\n');
      throwsCode(() => loadCommonPasswords(f), 'CONFIG');
      throwsCode(() => loadCommonPasswords(path.join(dir, 'missing')), 'CONFIG');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('policy: 12 characters by default, up to 256 accepted (128 and more), common and user-name passwords refused', () => {
    const p = DEFAULT_POLICY;
    assert.equal(p.minPasswordLength, 12);
    assert.equal(reason(() => checkNewPassword('elevenchars', p, common, 'bob')), 'too-short');
    assert.equal(reason(() => checkNewPassword('twelve chars', p, common, 'bob')), 'accepted');
    assert.equal(reason(() => checkNewPassword('ü'.repeat(12), p, common, 'bob')), 'accepted', 'characters, not bytes');
    assert.equal(reason(() => checkNewPassword('k9'.repeat(64), p, common, 'bob')), 'accepted', '128 characters');
    assert.equal(reason(() => checkNewPassword('k9'.repeat(128), p, common, 'bob')), 'accepted', '256 characters');
    assert.equal(reason(() => checkNewPassword('k9'.repeat(128) + 'x', p, common, 'bob')), 'too-long');
    assert.equal(reason(() => checkNewPassword('password1234', p, common, 'bob')), 'common');
    assert.equal(reason(() => checkNewPassword('Password1234!', { ...p, rejectCommonPasswords: false }, common, 'bob')), 'accepted');
    assert.equal(reason(() => checkNewPassword('my name is alice.w ok', p, common, 'Alice.W')), 'contains-username');
    assert.equal(reason(() => checkNewPassword('tab\there is bad', p, common, 'bob')), 'control-characters');
    assert.equal(reason(() => checkNewPassword(12345678901234, p, common, 'bob')), 'type');
    const strict = applyPolicyUpdate(p, { minPasswordLength: 128 });
    assert.equal(reason(() => checkNewPassword('k9'.repeat(63) + 'a', strict, common, 'bob')), 'too-short');
    assert.equal(reason(() => checkNewPassword('k9'.repeat(64), strict, common, 'bob')), 'accepted');
  });

  it('policy updates: partial, range-checked, unknown fields refused; stored JSON read with defaults', () => {
    const p = applyPolicyUpdate(DEFAULT_POLICY, { maxFailedAttempts: 3, passwordExpiryDays: 90 });
    assert.equal(p.maxFailedAttempts, 3);
    assert.equal(p.passwordExpiryDays, 90);
    assert.equal(p.lockoutSeconds, 900);
    for (const bad of [
      { minPasswordLength: 7 },
      { minPasswordLength: 257 },
      { minPasswordLength: 12.5 },
      { maxFailedAttempts: 0 },
      { lockoutSeconds: '900' },
      { passwordExpiryDays: -1 },
      { sessionIdleSeconds: 7200, sessionAbsoluteSeconds: 3600 },
      { isAdmin: true },
      { __proto__: { minPasswordLength: 1 }, rejectCommonPasswords: 'no' },
      [],
      null,
      'minPasswordLength=1',
    ]) {
      throwsCode(() => applyPolicyUpdate(DEFAULT_POLICY, bad), 'USAGE', JSON.stringify(bad));
    }
    assert.deepEqual(parseStoredPolicy(undefined), DEFAULT_POLICY);
    assert.equal(parseStoredPolicy(JSON.stringify({ minPasswordLength: 20, retired: 1 })).minPasswordLength, 20);
    throwsCode(() => parseStoredPolicy('{'), 'INTERNAL');
  });

  it('names: slugs, user names, display names and roles are validated; injection strings in names are refused', () => {
    assert.equal(validateUsername('Alice.Smith@example.org'), 'alice.smith@example.org');
    for (const bad of ["admin'--", 'a b', '<script>', 'x;DROP TABLE platform_user', '', '.dot', 'a'.repeat(129), 'name\u0000', 'ａdmin']) {
      throwsCode(() => validateUsername(bad), 'USAGE', bad);
    }
    assert.equal(validateTenantSlug('acme-2'), 'acme-2');
    for (const bad of ['Acme', 'a', '-acme', "acme'", 'acme/..', 'x'.repeat(64)]) throwsCode(() => validateTenantSlug(bad), 'USAGE', bad);
    assert.equal(validateDisplayName('<img src=x onerror=alert(1)>'), '<img src=x onerror=alert(1)>', 'stored as data');
    for (const bad of ['line\nbreak', 'bidi\u202eoverride', 'x'.repeat(129), 5]) throwsCode(() => validateDisplayName(bad), 'USAGE');
    assert.deepEqual(validateRoles(['tenant_admin', 'member', 'member']), ['member', 'tenant_admin']);
    for (const bad of [[], ['root'], 'member', [1], ['member', 'auditor', 'tenant_admin', 'member']]) throwsCode(() => validateRoles(bad), 'USAGE');
  });

  it('fuzz: 5,000 seeded random passwords, policies, names and cookie headers: only USAGE refusals, nothing else thrown', () => {
    const r = new Rng(SEED);
    const alphabet = ['a', 'Z', '9', ' ', '!', "'", '"', ';', '-', '\u0000', '\n', 'é', 'ß', '😀', '\u202e', '<', '>', '%', '=', '\\', '@', '.', '_'];
    const str = (max: number): string => Array.from({ length: r.int(max) }, () => r.pick(alphabet)).join('');
    const keys = [...Object.keys(DEFAULT_POLICY), 'x', '__proto__', 'constructor'];
    const values = (): unknown => r.pick([r.int(1_000_000) - 1000, str(8), true, null, [], {}, 1.5, Number.MAX_SAFE_INTEGER, -0]);
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      const pw = str(300);
      try {
        checkNewPassword(pw, DEFAULT_POLICY, common, str(10));
        accepted++;
        assert.ok([...pw].length >= 12 && [...pw].length <= 256);
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'USAGE', String(err));
      }
      const upd: Record<string, unknown> = {};
      for (let k = r.int(4); k > 0; k--) upd[r.pick(keys)] = values();
      try {
        const p = applyPolicyUpdate(DEFAULT_POLICY, upd);
        assert.ok(p.minPasswordLength >= 8 && p.sessionIdleSeconds <= p.sessionAbsoluteSeconds);
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'USAGE', String(err));
      }
      for (const f of [validateUsername, validateTenantSlug, validateDisplayName]) {
        try {
          f(str(140));
        } catch (err) {
          assert.ok(err instanceof TachyonError && err.code === 'USAGE', String(err));
        }
      }
      const header = str(100);
      const v = readCookie(header, '__Host-tachyon-session');
      assert.ok(v === undefined || header.includes(v));
    }
    assert.ok(accepted > 20, `some random passwords pass (${accepted})`);
  });
});
