/**
 * `tachyon audit verify|tail|keygen` as child processes of bin/tachyon.js, on logs written
 * by the real FileAuditSink.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { FileAuditSink, loadAuditKey } from '../../src/audit/index.js';
import { recordSamples } from '../audit/helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = path.join(repo, 'bin', 'tachyon.js');

function tachyon(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`tachyon ${args.join(' ')} timed out`));
    }, 20_000);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

describe('tachyon audit (CLI)', () => {
  let work = '';
  let log = '';
  let keyedLog = '';
  let keyFile = '';

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-audit-cli-'));
    log = path.join(work, 'audit.log');
    const sink = new FileAuditSink(log);
    recordSamples(sink, 6);
    await sink.close();
    keyFile = path.join(work, 'audit.key');
    const kg = await tachyon(['audit', 'keygen', keyFile]);
    assert.equal(kg.code, 0, kg.stderr);
    keyedLog = path.join(work, 'keyed.log');
    const keyed = new FileAuditSink(keyedLog, { key: loadAuditKey(keyFile) });
    recordSamples(keyed, 4);
    await keyed.close();
  });

  after(() => rmSync(work, { recursive: true, force: true }));

  it('verify: exit 0 and a checkpoint for an intact log', async () => {
    const r = await tachyon(['audit', 'verify', log]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /intact: 6 record\(s\), SHA-256 chain, not keyed/);
    assert.match(r.stdout, /checkpoint 6:[0-9a-f]{64}/);
    const j = await tachyon(['audit', 'verify', '--json', log]);
    assert.equal(j.code, 0);
    const out = JSON.parse(j.stdout) as { ok: boolean; records: number; head: { seq: number; checkpoint: string }; failure: unknown };
    assert.equal(out.ok, true);
    assert.equal(out.records, 6);
    assert.equal(out.head.seq, 6);
    assert.equal(out.failure, null);
  });

  it('verify: exit 1 with the line number and reason for an edited, a cut and a reordered log', async () => {
    const text = readFileSync(log, 'utf8');
    const lines = text.split('\n');
    const cases: [string, string, RegExp][] = [
      ['edited', text.replace('user2', 'userZ'), /line 3: hash-mismatch/],
      ['middle line removed', [...lines.slice(0, 2), ...lines.slice(3)].join('\n'), /line 3: missing-lines/],
      ['reordered', [lines[1], lines[0], ...lines.slice(2)].join('\n'), /line 1: reordered/],
      ['garbage appended', `${text}not a record\n`, /line 7: malformed/],
      ['last line cut', text.slice(0, -20), /line 6: partial-line/],
    ];
    for (const [name, content, want] of cases) {
      const f = path.join(work, `${name.replace(/ /g, '-')}.log`);
      writeFileSync(f, content);
      const r = await tachyon(['audit', 'verify', f]);
      assert.equal(r.code, 1, `${name}: ${r.stderr}`);
      assert.match(r.stderr, /NOT intact/, name);
      assert.match(r.stderr, want, name);
      const j = await tachyon(['audit', 'verify', '--json', f]);
      assert.equal(j.code, 1, name);
      const out = JSON.parse(j.stdout) as { ok: boolean; failure: { line: number; reason: string } };
      assert.equal(out.ok, false);
      assert.ok(out.failure.line >= 1);
    }
  });

  it('verify: a removed last line passes alone and fails against the earlier checkpoint', async () => {
    const first = JSON.parse((await tachyon(['audit', 'verify', '--json', log])).stdout) as { head: { checkpoint: string } };
    const text = readFileSync(log, 'utf8');
    const cut = path.join(work, 'tail-cut.log');
    writeFileSync(cut, `${text.split('\n').slice(0, 5).join('\n')}\n`);
    assert.equal((await tachyon(['audit', 'verify', cut])).code, 0);
    const r = await tachyon(['audit', 'verify', '--checkpoint', first.head.checkpoint, cut]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /truncated: the log ends at seq 5 but the checkpoint names seq 6/);
    assert.equal((await tachyon(['audit', 'verify', '--checkpoint', 'nonsense', cut])).code, 2);
  });

  it('verify: keyed logs with --key, the wrong key, and no key', async () => {
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    const ok = await tachyon(['audit', 'verify', '--key', keyFile, keyedLog]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /keyed \(HMAC-SHA-256\)/);
    const noKey = await tachyon(['audit', 'verify', keyedLog]);
    assert.equal(noKey.code, 0);
    assert.match(noKey.stdout, /MACs were not/);
    const otherKey = path.join(work, 'other.key');
    assert.equal((await tachyon(['audit', 'keygen', otherKey])).code, 0);
    const wrong = await tachyon(['audit', 'verify', '--key', otherKey, keyedLog]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /line 1: hash-mismatch.*key is wrong/);
    const exists = await tachyon(['audit', 'keygen', otherKey]);
    assert.notEqual(exists.code, 0);
    assert.match(exists.stderr, /exists|EEXIST/i);
  });

  it('verify: exit 66 for a missing file, 2 for a missing argument', async () => {
    const r = await tachyon(['audit', 'verify', path.join(work, 'missing.log')]);
    assert.equal(r.code, 66);
    assert.match(r.stderr, /cannot read audit log/);
    assert.equal((await tachyon(['audit', 'verify'])).code, 2);
  });

  it('tail: the last N records, readable or as stored', async () => {
    const r = await tachyon(['audit', 'tail', '-n', '2', log]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 2);
    assert.match(lines[0] ?? '', /^\d{4}-\d\d-\d\dT.*Z warning +ssh auth\.failure ref=[0-9A-Z]{26} user="user4" .*reason="not-authorized"/);
    assert.match(lines[1] ?? '', /notice +ssh auth\.success ref=[0-9A-Z]{26} user="user5" .*keyFingerprint="SHA256:B+"/);
    const j = await tachyon(['audit', 'tail', '--json', '-n', '3', log]);
    const stored = readFileSync(log, 'utf8').trim().split('\n').slice(-3).join('\n');
    assert.equal(j.stdout.trim(), stored);
    assert.equal((await tachyon(['audit', 'tail', '-n', '0', log])).code, 2);
  });
});
