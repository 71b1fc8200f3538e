/**
 * The query parser of `GET /ops/transfers`: valid queries round-trip, and seeded random
 * inputs (mutated valid queries, random keys, values and shapes) either parse into a
 * query within bounds or are refused with USAGE only, never another error; its messages
 * never echo more than a short prefix of what was sent.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TachyonError } from '../../src/core/errors.js';
import { MAX_PAGE_LIMIT, parseTransferQuery } from '../../src/node-api/ops.js';
import { TRANSFER_STATUSES } from '../../src/server/monitor.js';
import { Rng } from '../helpers/rng.js';

const KEYS = ['offset', 'limit', 'status', 'user', 'direction', 'since', 'until'];

describe('parseTransferQuery', () => {
  it('parses valid queries, with defaults and times normalized to UTC', () => {
    assert.deepEqual(parseTransferQuery(undefined), { offset: 0, limit: 100 });
    assert.deepEqual(parseTransferQuery({}), { offset: 0, limit: 100 });
    assert.deepEqual(
      parseTransferQuery({ offset: '20', limit: '1000', status: 'cancelled', user: 'alice', direction: 'download', since: '2026-01-31', until: '2026-02-01T01:00:00+01:00' }),
      { offset: 20, limit: 1000, status: 'cancelled', user: 'alice', direction: 'download', since: '2026-01-31T00:00:00.000Z', until: '2026-02-01T00:00:00.000Z' },
    );
  });

  it('refuses each bad parameter with USAGE', () => {
    for (const q of [{ limit: '0' }, { limit: '1001' }, { offset: '-1' }, { offset: '1e3' }, { offset: ' 1' }, { limit: ['1', '2'] }, { status: 'ACTIVE' }, { direction: '' }, { since: '2026-02-30T00:00:00Z' }, { until: 'now' }, { user: '' }, { sort: 'size' }, 'x', 7]) {
      assert.throws(() => parseTransferQuery(q), (e: unknown) => e instanceof TachyonError && e.code === 'USAGE', JSON.stringify(q));
    }
  });

  it('fuzz: random and mutated queries parse within bounds or are USAGE (seeded)', () => {
    const seed = 0x0b5;
    const rng = new Rng(seed);
    const alphabet = ['0', '1', '9', '-', ':', 'T', 'Z', '.', '+', ' ', 'a', 'é', '\u0000', '%', '2026-01-31', 'active', 'upload', '\ud800', '99999999999'];
    const value = (): unknown => {
      const r = rng.int(10);
      if (r === 0) return [value(), value()];
      if (r === 1) return rng.int(1e6);
      if (r === 2) return null;
      let s = '';
      const n = rng.int(8);
      for (let i = 0; i < n; i++) s += rng.pick(alphabet);
      return s;
    };
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      const q: Record<string, unknown> = {};
      const n = rng.int(4);
      for (let k = 0; k < n; k++) {
        const key = rng.chance(0.85) ? rng.pick(KEYS) : rng.bytes(rng.int(6)).toString('latin1');
        q[key] = rng.chance(0.3) ? rng.pick(['5', '100', 'completed', 'download', '2026-03-01T10:00:00Z', 'bob']) : value();
      }
      try {
        const p = parseTransferQuery(q);
        accepted++;
        assert.ok(Number.isInteger(p.offset) && p.offset >= 0, `seed ${seed} #${i}`);
        assert.ok(Number.isInteger(p.limit) && p.limit >= 1 && p.limit <= MAX_PAGE_LIMIT, `seed ${seed} #${i}`);
        if (p.status !== undefined) assert.ok(TRANSFER_STATUSES.includes(p.status));
        if (p.direction !== undefined) assert.ok(p.direction === 'upload' || p.direction === 'download');
        for (const t of [p.since, p.until]) if (t !== undefined) assert.equal(new Date(t).toISOString(), t);
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'USAGE', `seed ${seed} #${i}: ${String(err)}`);
        assert.ok(err.publicMessage.length < 160, `seed ${seed} #${i}: a short message`);
      }
    }
    assert.ok(accepted > 100 && accepted < 4900, `both outcomes exercised (${accepted} accepted)`);
  });
});
