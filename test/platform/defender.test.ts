/**
 * The web platform and the IP defender (issue #6, item 8: one defender across web, API
 * and SSH): failed sign-ins from one address get it blocked once its score reaches the
 * threshold — every later request from it is refused (403) before any route runs, even
 * with the right password — while a user signing in from another address is unaffected.
 * Real HTTP on port 0, requests from 127.0.0.1 and 127.0.0.2 (Linux routes all of 127/8
 * to lo), a real ScoringDefender over the platform's SQLite database.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { ScoringDefender } from '../../src/defender/index.js';
import { USER_PW, seedTenant, startPlatform, type Platform, type SeededTenant } from './helpers.js';

interface Res {
  status: number;
  body: string;
}

function post(base: string, path: string, body: unknown, localAddress: string): Promise<Res> {
  const url = new URL(path, base);
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', localAddress, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

describe('web platform sign-in and the IP defender', () => {
  let p: Platform;
  let t: SeededTenant;
  const THRESHOLD = 5;

  before(async () => {
    p = await startPlatform({ defender: (database, clock) => ScoringDefender.open({ database, clock, settings: { threshold: THRESHOLD, syncIntervalMs: 60_000 } }) });
    t = await seedTenant(p, 'acme');
  });

  after(async () => {
    await p?.close();
  });

  it('blocks an address after THRESHOLD failed sign-ins; another address still signs in; the blocked one is refused even with the right password', async () => {
    const attacker = '127.0.0.1';
    const statuses: number[] = [];
    for (let i = 0; i < THRESHOLD + 3; i++) {
      const r = await post(p.base, '/api/v1/auth/signin', { tenant: t.slug, username: `nobody${i}`, password: `wrong-password-${i}-xyz` }, attacker);
      statuses.push(r.status);
    }
    assert.deepEqual(statuses.slice(0, THRESHOLD), Array(THRESHOLD).fill(401), `first attempts: ${statuses.join(',')}`);
    assert.deepEqual(statuses.slice(THRESHOLD), Array(3).fill(403), `after the threshold: ${statuses.join(',')}`);
    const blocked = await post(p.base, '/api/v1/auth/signin', { tenant: t.slug, username: 'member1', password: USER_PW }, attacker);
    assert.equal(blocked.status, 403);
    assert.match(blocked.body, /Access denied/);
    assert.doesNotMatch(blocked.body, /127\.0\.0\.1|blocked/, 'the body does not explain the block');
    const other = await post(p.base, '/api/v1/auth/signin', { tenant: t.slug, username: 'member1', password: USER_PW }, '127.0.0.2');
    assert.equal(other.status, 200, other.body);
  });
});
