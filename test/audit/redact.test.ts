/** The redaction guard and correlation ids (core/correlation.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TachyonError } from '../../src/core/errors.js';
import { correlationIdOf, correlationIdTime, newCorrelationId, withCorrelationId } from '../../src/core/correlation.js';
import { REDACTED, isSecretName, isSecretValue, sanitizeFields } from '../../src/audit/index.js';
import { Rng } from '../helpers/rng.js';

describe('redaction guard', () => {
  it('treats secret-looking names as secrets and leaves ordinary ones', () => {
    for (const name of [
      'password', 'Password', 'userPassword', 'new_password', 'passwd', 'passphrase', 'secret', 'clientSecret', 'token',
      'accessToken', 'refresh-token', 'privateKey', 'private_key', 'PRIVATE', 'credentials', 'cookie', 'Authorization',
      'key', 'apiKey', 'api_key', 'apikey', 'hostKey', 'sessionKeys', 'keys', 'signature', 'otp', 'seed', 'secretAccessKey', 'keyPem',
    ]) {
      assert.equal(isSecretName(name), true, name);
    }
    for (const name of [
      'user', 'keyFingerprint', 'keyType', 'keyId', 'hostKeyFingerprints', 'clientAddress', 'path', 'bytes', 'cipher',
      'reason', 'method', 'monkey', 'turkey', 'keyboard', 'passage', 'bypassed', 'sha256', 'skippedSha256',
    ]) {
      assert.equal(isSecretName(name), false, name);
    }
  });

  it('recognizes key material and credentials in values', () => {
    assert.equal(isSecretValue('-----BEGIN OPENSSH PRIVATE KEY-----\nabc'), true);
    assert.equal(isSecretValue('x -----BEGIN RSA PRIVATE KEY----- y'), true);
    assert.equal(isSecretValue('-----BEGIN ENCRYPTED PRIVATE KEY-----'), true);
    assert.equal(isSecretValue('Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc'), true);
    assert.equal(isSecretValue('authorization=Basic dXNlcjpwYXNzd29yZA=='), true);
    assert.equal(isSecretValue('Basic Instinct (1992).mkv'), false);
    assert.equal(isSecretValue('the bearer of bad news'), false);
    assert.equal(isSecretValue('-----BEGIN PUBLIC KEY-----'), false);
    assert.equal(isSecretValue('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI bob@host'), false);
    assert.equal(isSecretValue('a basic question'), false);
  });

  it('redacts at any depth, drops undefined, stringifies the odd types and lists what it redacted', () => {
    const { fields, redacted } = sanitizeFields({
      user: 'bob',
      n: 1.5,
      inf: Infinity,
      big: 10n,
      when: new Date(0),
      gone: undefined,
      fn: () => 1,
      bytes: new Uint8Array([1, 2, 3]),
      list: [{ token: 't' }, 'ok', undefined],
      deep: { a: { b: { c: { d: { e: 1 } } } } },
      nested: { password: 'p', fine: 'f' },
    });
    assert.deepEqual(fields, {
      user: 'bob',
      n: 1.5,
      inf: null,
      big: '10',
      when: '1970-01-01T00:00:00.000Z',
      bytes: REDACTED,
      list: [{ token: REDACTED }, 'ok', null],
      deep: { a: { b: { c: '[too deep]' } } },
      nested: { password: REDACTED, fine: 'f' },
    });
    assert.deepEqual(redacted, ['bytes', 'list[0].token', 'nested.password']);
  });

  it('never lets a secret through whatever shape the fields have (seeded random)', () => {
    const r = new Rng(0x5ec2e7);
    const SECRET = 'S3CR3T-VALUE';
    const secretNames = ['password', 'apiKey', 'token', 'private_key', 'clientSecret', 'key'];
    const build = (depth: number): unknown => {
      const o: Record<string, unknown> = {};
      for (let i = r.int(5); i > 0; i--) {
        const k = r.int(6);
        if (k === 0) o[r.pick(secretNames)] = r.chance(0.5) ? SECRET : { inner: SECRET };
        else if (k === 1 && depth < 6) o[`obj${r.int(9)}`] = build(depth + 1);
        else if (k === 2 && depth < 6) o[`arr${r.int(9)}`] = [build(depth + 1), 'x'];
        else if (k === 3) o[`pem${r.int(9)}`] = `-----BEGIN PRIVATE KEY-----${SECRET}`;
        else o[`plain${r.int(9)}`] = r.int(100);
      }
      return o;
    };
    for (let i = 0; i < 500; i++) {
      const { fields } = sanitizeFields(build(0));
      assert.ok(!JSON.stringify(fields).includes(SECRET), `seed 0x5ec2e7 case ${i}`);
    }
  });
});

describe('correlation ids', () => {
  it('are 26-character ULIDs that encode their time and do not repeat', () => {
    const t = Date.UTC(2025, 5, 1, 8, 30, 0, 250);
    const ids = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const id = newCorrelationId(t);
      assert.match(id, /^[0-9A-HJKMNP-TV-Z]{26}$/);
      assert.equal(correlationIdTime(id), t);
      ids.add(id);
    }
    assert.equal(ids.size, 2000);
    assert.ok(newCorrelationId(t) < newCorrelationId(t + 1), 'ids sort by time');
    assert.equal(correlationIdTime('not-an-id'), undefined);
  });

  it('make a sanitized client-facing error carry the reference', () => {
    const err = new TachyonError('PERMISSION', 'user bob may not write /srv/x/secret-plans.txt');
    const ref = newCorrelationId();
    const withRef = withCorrelationId(err, ref);
    assert.equal(withRef.code, 'PERMISSION');
    assert.equal(withRef.exitCode, err.exitCode);
    assert.equal(withRef.publicMessage, `The operation is not permitted (ref ${ref})`);
    assert.ok(!withRef.publicMessage.includes('secret-plans'), 'the public text stays sanitized');
    assert.match(withRef.message, new RegExp(`secret-plans\\.txt \\[ref ${ref}\\]$`));
    assert.equal(correlationIdOf(withRef), ref);
    assert.equal(correlationIdOf(err), undefined);
    // Re-referencing replaces the reference instead of stacking them.
    const again = withCorrelationId(withRef, 'ABCDEFGH12');
    assert.equal(again.publicMessage, 'The operation is not permitted (ref ABCDEFGH12)');
    assert.throws(() => withCorrelationId(err, 'bad ref\n'), (e: unknown) => e instanceof TachyonError && e.code === 'INTERNAL');
  });
});
