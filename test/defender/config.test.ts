import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TachyonError } from '../../src/core/errors.js';
import { validateServerConfig } from '../../src/server/config.js';

describe('defender section of the server configuration', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-defender-cfg-'));
  const base = { allowedRoots: [`file://${dir}/*`] };

  it('is on by default, with the default settings', async () => {
    const c = await validateServerConfig(base, 't.json', dir);
    assert.equal(c.defender.enabled, true);
    assert.deepEqual(c.defender.settings, {});
    assert.equal(c.defender.allowLists.configured, false);
    assert.equal(c.defender.safeList.size, 0);
  });

  it('takes thresholds, ban times, scores, lists and notifications', async () => {
    const c = await validateServerConfig(
      {
        ...base,
        defender: {
          threshold: 20,
          observationSeconds: 600,
          banSeconds: 60,
          banMultiplier: 3,
          maxBanSeconds: 3600,
          scores: { 'protocol-violation': 5 },
          safeList: ['10.0.0.0/8'],
          allowList: { global: ['0.0.0.0/0', '::/0'], tenants: { acme: ['192.0.2.0/24'] } },
          notify: { webhook: { url: 'https://hooks.example.test/x' }, smtp: { host: 'mail.example.test', port: 587, from: 'a@example.test', to: ['b@example.test'], passwordFile: 'smtp.pass' } },
        },
      },
      't.json',
      dir,
    );
    assert.equal(c.defender.settings.threshold, 20);
    assert.equal(c.defender.settings.banMs, 60_000);
    assert.equal(c.defender.settings.maxBanMs, 3_600_000);
    assert.equal(c.defender.settings.scores?.['protocol-violation'], 5);
    assert.equal(c.defender.settings.scores?.['auth-failed'], 1);
    assert.equal(c.defender.safeList.contains('10.9.9.9'), true);
    assert.equal(c.defender.allowLists.allowed('198.51.100.1', 'acme'), false);
    assert.equal(c.defender.notify.smtp?.passwordFile, path.join(dir, 'smtp.pass'));
  });

  it('names every bad field', async () => {
    const bad = {
      ...base,
      defender: {
        threshold: 0,
        banSeconds: 600,
        maxBanSeconds: 60,
        safeList: ['10.0.0.1/8'],
        allowList: { global: ['nope'] },
        notify: { webhook: { url: 'ftp://x' } },
      },
    };
    await assert.rejects(validateServerConfig(bad, 't.json', dir), (e: unknown) => e instanceof TachyonError && e.code === 'CONFIG' && /defender\.threshold: expected a positive integer/.test(e.message));
    const bad2 = { ...bad, defender: { ...bad.defender, threshold: 5 } };
    await assert.rejects(validateServerConfig(bad2, 't.json', dir), (e: unknown) => {
      assert.ok(e instanceof TachyonError);
      assert.match(e.message, /defender\.safeList\[0\]: invalid address block "10\.0\.0\.1\/8": host bits are set/);
      assert.match(e.message, /defender\.allowList\.global\[0\]: invalid address block "nope": not an IP address/);
      assert.match(e.message, /defender\.notify\.webhook\.url: expected an http:\/\/ or https:\/\/ URL/);
      assert.match(e.message, /defender\.maxBanSeconds: must be at least banSeconds/);
      return true;
    });
    await assert.rejects(validateServerConfig({ ...base, defender: { scores: { 'no-such-kind': 1 } } }, 't.json', dir), /defender\.scores/);
    await assert.rejects(validateServerConfig({ ...base, defender: { unknown: 1 } }, 't.json', dir), /defender\.unknown: unknown field/);
    rmSync(dir, { recursive: true, force: true });
  });
});
