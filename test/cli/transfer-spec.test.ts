/**
 * Reading a transfer spec on the client (`--transfer-spec`): the three accepted shapes,
 * what send and recv make of the paths, refusals, and a seeded fuzz of the reader.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TachyonError } from '../../src/core/errors.js';
import { readTransferSpec, specTransfer, type ClientTransferSpec } from '../../src/cli/transfer-spec.js';
import { throwsCode } from '../helpers/errors.js';
import { Rng } from '../helpers/rng.js';

let dir: string;
before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-spec-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const FP = 'SHA256:' + 'A'.repeat(43);
const spec = (o: Partial<ClientTransferSpec> = {}): ClientTransferSpec => ({
  remote_host: 'h.example',
  remote_user: 'xfer',
  ssh_port: 33001,
  fasp_port: 33001,
  direction: 'send',
  paths: [{ source: '/home/me/a.mov', destination: 'a.mov' }],
  destination_root: '/in',
  token: 'tkn1.abc',
  cipher: 'aes-256-gcm',
  rate_policy: 'high',
  target_rate_kbps: 50_000,
  min_rate_kbps: 100,
  host_key_fingerprint: FP,
  ...o,
});
let n = 0;
const file = (content: unknown): string => {
  const f = path.join(dir, `s${++n}.json`);
  writeFileSync(f, typeof content === 'string' ? content : JSON.stringify(content));
  return f;
};

describe('readTransferSpec / specTransfer', () => {
  it('reads the whole answer, one transfer_spec, or the spec itself', () => {
    const s = spec();
    assert.deepEqual(readTransferSpec(file({ transfer_specs: [{ transfer_spec: s }] })), s);
    assert.deepEqual(readTransferSpec(file({ transfer_spec: s })), s);
    assert.deepEqual(readTransferSpec(file(s)), s);
  });

  it('refuses unreadable, non-JSON, several specs, and invalid specs (USAGE, naming the field)', () => {
    throwsCode(() => readTransferSpec(path.join(dir, 'missing.json')), 'USAGE');
    throwsCode(() => readTransferSpec(file('{ nope')), 'USAGE');
    throwsCode(() => readTransferSpec(file({ transfer_specs: [{ transfer_spec: spec() }, { transfer_spec: spec() }] })), 'USAGE');
    for (const [field, value] of [['ssh_port', 0], ['direction', 'sideways'], ['paths', []], ['token', ''], ['host_key_fingerprint', undefined], ['cipher', 'rot13']] as const) {
      try {
        readTransferSpec(file({ ...spec(), [field]: value }));
        assert.fail(`${field} accepted`);
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'USAGE', String(err));
        assert.match(err.message, new RegExp(field));
      }
    }
  });

  it('send: the spec’s sources into destination_root/ (or a renamed single file), its cipher, policy and rates', () => {
    const t = specTransfer('send', spec({ paths: [{ source: '/home/me/a.mov' }, { source: 'clips/' }] }), []);
    assert.deepEqual(t.sources, ['/home/me/a.mov', 'clips/']);
    assert.equal(t.dest, '/in/');
    assert.equal(t.user, 'xfer');
    assert.equal(t.token, 'tkn1.abc');
    assert.equal(t.hostKeyFingerprint, FP);
    assert.equal(t.cipher, 'aes-256-gcm');
    assert.equal(t.policy, 'high');
    assert.equal(t.targetBps, 50_000_000);
    assert.equal(t.minBps, 100_000);
    assert.equal(specTransfer('send', spec({ paths: [{ source: '/x/a.mov', destination: 'b.mov' }] }), []).dest, '/in/b.mov');
    // local files named on the command line go where the spec's single destination says
    assert.equal(specTransfer('send', spec(), ['./other.mov']).dest, '/in/a.mov');
    assert.deepEqual(specTransfer('send', spec(), ['./other.mov']).sources, ['./other.mov']);
    throwsCode(() => specTransfer('send', spec({ paths: [{ source: 'a', destination: 'x' }, { source: 'b' }] }), []), 'USAGE');
    throwsCode(() => specTransfer('send', spec({ paths: [{ destination: 'x' }] }), []), 'USAGE');
  });

  it('recv: sources under source_root, DEST from the argument, the single destination, or .', () => {
    const r = spec({ direction: 'receive', destination_root: undefined, source_root: '/out', paths: [{ source: 'a.bin', destination: 'local.bin' }, { source: 'dir' }] });
    const t = specTransfer('recv', r, ['got']);
    assert.deepEqual(t.sources, ['/out/a.bin', '/out/dir']);
    assert.equal(t.dest, 'got');
    assert.equal(specTransfer('recv', r, []).dest, '.');
    assert.equal(specTransfer('recv', { ...r, paths: [{ source: 'a.bin', destination: 'local.bin' }] }, []).dest, 'local.bin');
    throwsCode(() => specTransfer('recv', r, ['a', 'b']), 'USAGE');
  });

  it('refuses a spec for the other direction, naming the right command', () => {
    assert.throws(() => specTransfer('recv', spec(), []), /is for an upload \(tachyon send\)/);
    assert.throws(() => specTransfer('send', spec({ direction: 'receive' }), []), /is for a download \(tachyon recv\)/);
  });

  it('fuzz: mutated spec files give a spec or USAGE, nothing else', () => {
    const seed = 0x5bec;
    const r = new Rng(seed);
    const text = JSON.stringify({ transfer_specs: [{ transfer_spec: spec() }] });
    for (let i = 0; i < 300; i++) {
      let t = text;
      for (let k = r.range(1, 3); k > 0; k--) {
        const at = r.int(t.length);
        t = r.chance(0.5) ? t.slice(0, at) + t.slice(at + r.range(1, 8)) : t.slice(0, at) + r.pick(['"', '{', '}', '[', ']', ',', ':', '0', 'null', 'x', '\\u0000']) + t.slice(at);
      }
      try {
        const s = readTransferSpec(file(t));
        specTransfer(s.direction === 'send' ? 'send' : 'recv', s, []);
      } catch (err) {
        assert.ok(err instanceof TachyonError && err.code === 'USAGE', `seed ${seed} case ${i}: ${String(err)}`);
      }
    }
  });
});
