/**
 * The web platform and the IP defender (issue #6, item 8: one defender across web, API
 * and SSH): failed sign-ins from one address get it blocked once its score reaches the
 * threshold — every later request from it is refused before any route runs, even with
 * the right password (403 on a connection opened before the block, which then closes; new
 * connections end at accept) — while a user signing in from another address is unaffected.
 * Real HTTP on port 0, requests from 127.0.0.1 and 127.0.0.2 (Linux routes all of 127/8
 * to lo), a real ScoringDefender over the platform's SQLite database.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Agent } from 'node:http';
import { ScoringDefender } from '../../src/defender/index.js';
import { postFrom, USER_PW, seedTenant, startPlatform, type Platform, type RawRes as Res, type SeededTenant } from './helpers.js';

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
    // kept-alive connections, the way a browser or script keeps them: one for the guesses,
    // one opened before the block and left idle (a malformed sign-in, 400, is not scored)
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const idle = new Agent({ keepAlive: true, maxSockets: 1 });
    assert.equal((await postFrom(p.base, '/api/v1/auth/signin', {}, attacker, idle)).status, 400);
    const results: Res[] = [];
    for (let i = 0; i < THRESHOLD + 2; i++) {
      results.push(await postFrom(p.base, '/api/v1/auth/signin', { tenant: t.slug, username: `nobody${i}`, password: `wrong-password-${i}-xyz` }, attacker, agent));
    }
    // the guess that reached the threshold is answered 401 and its connection closes; new connections end at accept
    assert.deepEqual(
      results.map((r) => r.status),
      [...Array<number>(THRESHOLD).fill(401), 0, 0],
    );
    // on the connection opened before the block: 403 once, even with the right password, and it closes
    const refused = await postFrom(p.base, '/api/v1/auth/signin', { tenant: t.slug, username: 'member1', password: USER_PW }, attacker, idle);
    assert.equal(refused.status, 403);
    assert.match(refused.body, /Access denied/);
    assert.doesNotMatch(refused.body, /127\.0\.0\.1|blocked/, 'the body does not explain the block');
    const blocked = await postFrom(p.base, '/api/v1/auth/signin', { tenant: t.slug, username: 'member1', password: USER_PW }, attacker, idle);
    assert.equal(blocked.status, 0, 'the right password from the blocked address, on a new connection');
    agent.destroy();
    idle.destroy();
    const other = await postFrom(p.base, '/api/v1/auth/signin', { tenant: t.slug, username: 'member1', password: USER_PW }, '127.0.0.2');
    assert.equal(other.status, 200, other.body);
  });
});
