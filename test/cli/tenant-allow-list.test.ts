/**
 * `tachyon tenant allow-list TENANT [--clear]` as a child process of bin/tachyon.js on
 * the embedded data directory: shows a tenant's IP allow-list, removes it (the recovery
 * when the tenant's administrators locked themselves out), audited in the log file; an
 * unknown tenant is exit 66, a bad slug exit 2.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { systemClock } from '../../src/core/clock.js';
import { openDatabase } from '../../src/db/database.js';
import { TenantAllowLists } from '../../src/platform/allow-list-store.js';
import { runCli } from '../helpers/cli.js';

describe('tachyon tenant allow-list', () => {
  let work: string;
  before(() => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-tenant-allow-'));
  });
  after(() => {
    rmSync(work, { recursive: true, force: true });
  });

  it('shows the list and clears it; unknown tenants and bad slugs are refused', async () => {
    const created = await runCli(['tenant', 'create', 'acme', '--json'], work);
    assert.equal(created.code, 0, created.stderr);
    const id = String((JSON.parse(created.stdout) as Record<string, unknown>)['id']);
    const db = await openDatabase({ url: `sqlite://${path.join(work, 'tachyon-data', 'tachyon.db')}` });
    try {
      await new TenantAllowLists(db, systemClock).set(id, ['192.0.2.0/24'], 'admin');
    } finally {
      await db.close();
    }
    const shown = await runCli(['tenant', 'allow-list', 'acme', '--json'], work);
    assert.equal(shown.code, 0, shown.stderr);
    const s = JSON.parse(shown.stdout) as Record<string, unknown>;
    assert.deepEqual(s['cidrs'], ['192.0.2.0/24']);
    assert.equal(s['updatedBy'], 'admin');
    const plain = await runCli(['tenant', 'allow-list', 'acme'], work);
    assert.equal(plain.stdout, 'acme: 192.0.2.0/24\n');

    const cleared = await runCli(['tenant', 'allow-list', 'acme', '--clear', '--json'], work);
    assert.equal(cleared.code, 0, cleared.stderr);
    const c = JSON.parse(cleared.stdout) as Record<string, unknown>;
    assert.equal(c['event'], 'tenant.allow-list-cleared');
    assert.deepEqual(c['cidrs'], []);
    assert.match(String(c['updatedBy']), /^cli:/);
    assert.equal((await runCli(['tenant', 'allow-list', 'acme'], work)).stdout, 'acme: no allow-list (every address may sign in)\n');
    const log = readFileSync(path.join(work, 'tachyon-data', 'audit.log'), 'utf8');
    assert.match(log, /"action":"tenant\.allow-list-clear","target":"acme"/);

    const unknown = await runCli(['tenant', 'allow-list', 'globex', '--clear'], work);
    assert.equal(unknown.code, 66, unknown.stderr);
    assert.match(unknown.stderr, /no tenant 'globex'/);
    assert.equal((await runCli(['tenant', 'allow-list', 'Not A Slug'], work)).code, 2);
  });
});
