import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isIPv4, isIPv6 } from 'node:net';
import { addressKey, AllowLists, CidrList, parseCidr, parseIp } from '../../src/defender/index.js';
import { TachyonError } from '../../src/core/errors.js';
import { Rng } from '../helpers/rng.js';

describe('defender addresses', () => {
  it('normalizes IPv4-mapped IPv6 to IPv4 and scores IPv6 per /64', () => {
    assert.equal(addressKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(addressKey('::FFFF:c000:0207'), '192.0.2.7');
    assert.equal(addressKey('192.0.2.7'), '192.0.2.7');
    assert.equal(addressKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:db8:1:2::ffff'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:DB8:1:2::1'), '2001:db8:1:2::/64');
    assert.notEqual(addressKey('2001:db8:1:3::1'), addressKey('2001:db8:1:2::1'));
    assert.equal(addressKey('::1'), '0:0:0:0::/64');
    // not an address: kept (clipped), never thrown
    assert.equal(addressKey('not-an-ip'), 'not-an-ip');
    assert.equal(addressKey('x'.repeat(500)).length, 64);
  });

  it('parses CIDR blocks and tells what is wrong with bad ones', () => {
    assert.equal(parseCidr('10.0.0.0/8').text, '10.0.0.0/8');
    assert.equal(parseCidr('192.0.2.1').text, '192.0.2.1/32');
    assert.equal(parseCidr('2001:db8::/32').text, '2001:db8::/32');
    assert.equal(parseCidr('::ffff:10.0.0.0/104').text, '10.0.0.0/8');
    const bad: Array<[string, RegExp]> = [
      ['', /empty/],
      ['10.0.0.0/33', /prefix length must be a number from 0 to 32/],
      ['2001:db8::/129', /from 0 to 128/],
      ['10.0.0.1/8', /host bits are set \(did you mean 10\.0\.0\.0\/8\?\)/],
      ['10.0.0.0/-1', /prefix length/],
      ['10.0.0.0/8/8', /prefix length/],
      ['10.0.0.256', /not an IP address/],
      ['fe80::1%eth0', /zone ids/],
      ['example.com/24', /not an IP address/],
      ['10.0.0.0/ 8', /prefix length/],
      ['1'.repeat(100), /too long/],
    ];
    for (const [text, why] of bad) {
      assert.throws(
        () => parseCidr(text, 'allowList.global[0]'),
        (e: unknown) => e instanceof TachyonError && e.code === 'CONFIG' && why.test(e.message) && e.message.startsWith('allowList.global[0]: invalid address block'),
        text,
      );
    }
  });

  it('matches addresses against lists, IPv4 and IPv6', () => {
    const l = CidrList.parse(['10.0.0.0/8', '192.0.2.128/25', '2001:db8:aa::/48']);
    assert.equal(l.contains('10.255.1.2'), true);
    assert.equal(l.contains('::ffff:10.1.1.1'), true);
    assert.equal(l.contains('11.0.0.0'), false);
    assert.equal(l.contains('192.0.2.127'), false);
    assert.equal(l.contains('192.0.2.200'), true);
    assert.equal(l.contains('2001:db8:aa:ffff::1'), true);
    assert.equal(l.contains('2001:db8:ab::1'), false);
    assert.equal(l.contains('garbage'), false);
    assert.equal(CidrList.parse(['0.0.0.0/0']).contains('203.0.113.9'), true);
    assert.equal(CidrList.parse(['0.0.0.0/0']).contains('2001:db8::1'), false);
  });

  it('allow-lists deny by default once configured, per tenant too', () => {
    const none = AllowLists.parse({});
    assert.equal(none.configured, false);
    assert.equal(none.allowed('203.0.113.9'), true);
    assert.equal(none.allowed('203.0.113.9', 'acme'), true);
    const lists = AllowLists.parse({ global: ['10.0.0.0/8', '2001:db8::/32'], tenants: { acme: ['10.1.0.0/16'] } });
    assert.equal(lists.allowed('10.2.0.1'), true);
    assert.equal(lists.allowed('10.2.0.1', 'acme'), false);
    assert.equal(lists.allowed('10.1.0.1', 'acme'), true);
    assert.equal(lists.allowed('10.2.0.1', 'other'), true); // a tenant without a list: the global list only
    assert.equal(lists.allowed('192.0.2.1'), false);
    assert.equal(lists.allowed('2001:db8::5'), true);
    const tenantOnly = AllowLists.parse({ tenants: { acme: ['192.0.2.0/24'] } });
    assert.equal(tenantOnly.allowed('198.51.100.1'), true);
    assert.equal(tenantOnly.allowed('198.51.100.1', 'acme'), false);
    assert.throws(() => AllowLists.parse({ tenants: { acme: ['10.0.0.0/8', 'nope'] } }), /allowList\.tenants\.acme\[1\]: invalid address block "nope"/);
  });

  it('fuzz: random text never makes the parsers throw anything but CONFIG, and accepted blocks contain their network', () => {
    const rng = new Rng(0xdefe);
    const alphabet = '0123456789abcdefABCDEF:./%-x ';
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      let text: string;
      if (rng.chance(0.5)) {
        // mutate a valid block
        const base = rng.pick(['10.0.0.0/8', '192.0.2.0/24', '2001:db8::/32', '::/0', '::ffff:10.0.0.0/104', '203.0.113.7', 'fe80::1:2:3:4/64']);
        const chars = [...base];
        for (let k = rng.range(0, 3); k > 0; k--) {
          const at = rng.int(chars.length + 1);
          const op = rng.int(3);
          if (op === 0) chars.splice(at, 0, rng.pick([...alphabet]));
          else if (op === 1) chars.splice(at, 1);
          else chars[at] = rng.pick([...alphabet]);
        }
        text = chars.join('');
      } else {
        text = Array.from({ length: rng.range(0, 50) }, () => rng.pick([...alphabet])).join('');
      }
      let c;
      try {
        c = parseCidr(text);
      } catch (e) {
        assert.ok(e instanceof TachyonError && e.code === 'CONFIG', `${JSON.stringify(text)}: ${String(e)}`);
        continue;
      }
      accepted++;
      // the normalized text parses to the same block, and the block contains its own network address
      const again = parseCidr(c.text);
      assert.deepEqual({ ...again, text: '' }, { ...c, text: '' }, text);
      const addr = c.text.split('/')[0]!;
      assert.ok(isIPv4(addr) || isIPv6(addr), c.text);
      assert.equal(new CidrList([c]).contains(addr), true, c.text);
      // addresses never throw
      assert.equal(typeof addressKey(text), 'string');
      void parseIp(text);
    }
    assert.ok(accepted > 1000, `only ${accepted} accepted`);
  });
});
