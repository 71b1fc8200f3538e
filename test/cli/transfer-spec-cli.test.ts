/**
 * Transfer tokens end to end, with real processes: `tachyon serve --config` with the
 * token user enabled, specs made by the node API's spec builder (with the server's own
 * token key), then `tachyon send|recv --transfer-spec`. The right paths move; everything
 * else is refused with a clear message, a nonzero exit and an audit record.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Clock } from '../../src/core/clock.js';
import { systemClock } from '../../src/core/clock.js';
import { loadTokenKeyring, tokenKeyOf, TransferTokenCodec } from '../../src/server/transfer-token.js';
import { buildTransferSpec, type TransferSpec } from '../../src/node-api/transfer-setup.js';
import { auditRecordAfter, auditRecords, bin, runCli, type AuditLine, type RunResult, startConfigServer } from '../helpers/cli.js';

const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');


describe('transfer specs and tokens end to end (serve --config, send/recv --transfer-spec)', () => {
  let work: string;
  let files: string;
  let auditLog: string;
  let server: ChildProcessWithoutNullStreams;
  let port: number;
  let fingerprint: string;
  let codec: TransferTokenCodec;
  let aliceKey: string;
  let n = 0;

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-tkn-'));
    files = path.join(work, 'files');
    mkdirSync(path.join(files, 'media', 'incoming'), { recursive: true });
    mkdirSync(path.join(files, 'media', 'out', 'dir', 'sub'), { recursive: true });
    mkdirSync(path.join(files, 'alice'), { recursive: true });
    writeFileSync(path.join(files, 'media', 'out', 'report.bin'), randomBytes(300_000));
    writeFileSync(path.join(files, 'media', 'out', 'secret.txt'), 'not for this token');
    writeFileSync(path.join(files, 'media', 'out', 'dir', 'one.txt'), 'one');
    writeFileSync(path.join(files, 'media', 'out', 'dir', 'sub', 'two.txt'), 'two');
    aliceKey = path.join(work, 'id_alice');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'alice', '-f', aliceKey]);
    auditLog = path.join(work, 'audit.log');
    writeFileSync(path.join(work, 'access-keys.json'), JSON.stringify({ active: ['ak-1'], revoked: ['ak-revoked'] }));
    const cfgFile = path.join(work, 'tachyon.json');
    writeFileSync(
      cfgFile,
      JSON.stringify({
        listen: '127.0.0.1',
        port: 0,
        database: 'tachyon.db',
        allowedRoots: [`file://${files}/*`],
        auditLog,
        users: [{ name: 'alice', docroot: `file://${files}/alice`, keys: [readFileSync(`${aliceKey}.pub`, 'utf8').trim()] }],
        transferTokens: { user: 'xfer', nodeId: 'node-e2e', keyFile: 'token.key', accessKeysFile: 'access-keys.json' },
      }),
    );
    const started = await startConfigServer(cfgFile, work);
    server = started.child;
    const start = started.event;
    port = start.tcpPort as number;
    fingerprint = start.fingerprint as string;
    // the node API's side: the same node id and token key file as the server
    codec = new TransferTokenCodec({ nodeId: 'node-e2e', keys: loadTokenKeyring(path.join(work, 'token.key')), clock: systemClock });
  });

  after(() => {
    server?.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
  });

  const root = (): string => `file://${files}/media`;
  const endpoint = (c: TransferTokenCodec = codec) => ({ codec: c, host: '127.0.0.1', sshPort: port, udpPort: port, user: 'xfer', hostKeyFingerprint: fingerprint, targetRateKbps: 300_000 });
  const specFor = (
    direction: 'upload' | 'download',
    request: Parameters<typeof buildTransferSpec>[3],
    o: { accessKeyId?: string; codec?: TransferTokenCodec } = {},
  ): TransferSpec => buildTransferSpec(endpoint(o.codec), { accessKeyId: o.accessKeyId ?? 'ak-1', storageRoot: root(), permissions: ['list', 'read', 'write', 'mkdir'] }, direction, request).spec;
  const writeSpec = (spec: unknown): string => {
    const f = path.join(work, `spec-${++n}.json`);
    writeFileSync(f, JSON.stringify({ transfer_specs: [{ transfer_spec: spec }] }));
    return f;
  };
  const tachyon = (args: string[]): Promise<RunResult> => runCli(args, work, 60_000);
  const newRecords = (since: number): AuditLine[] => auditRecords(auditLog).slice(since);
  const count = (): number => auditRecords(auditLog).length;

  it('send --transfer-spec uploads the spec’s files into the granted destination; recv --transfer-spec downloads them', async () => {
    const local = path.join(work, 'clip.bin');
    writeFileSync(local, randomBytes(500_000));
    const up = specFor('upload', { paths: [{ source: local, destination: 'clip.bin' }], destination_root: '/incoming/day1' });
    const r = await tachyon(['send', '--transfer-spec', writeSpec(up)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha(path.join(files, 'media', 'incoming', 'day1', 'clip.bin')), sha(local));
    const recs = auditRecords(auditLog);
    const login = recs.find((x) => x.type === 'auth.success' && x.fields['user'] === 'xfer');
    assert.ok(login, 'the token login is audited');
    assert.equal(login.fields['method'], 'password');
    assert.match(String(login.fields['keyFingerprint']), /^token:[A-Za-z0-9_-]{22}$/);
    assert.ok(!readFileSync(auditLog, 'utf8').includes(up.token), 'the token itself is never in the audit log');
    const file = recs.find((x) => x.type === 'file.transfer' && x.fields['user'] === 'xfer' && x.fields['direction'] === 'upload');
    assert.equal(file?.fields['status'], 'ok');

    // download a file and a directory (and what is under it), spec from stdin
    const down = specFor('download', { paths: [{ source: 'out/report.bin' }, { source: 'out/dir' }] });
    const dest = path.join(work, 'got');
    mkdirSync(dest);
    const child = spawn(process.execPath, [bin, 'recv', '--transfer-spec', '-', dest], { cwd: work, env: { ...process.env, HOME: work } });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin.end(JSON.stringify({ transfer_spec: down }));
    const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? -1)));
    assert.equal(code, 0, err);
    assert.equal(sha(path.join(dest, 'report.bin')), sha(path.join(files, 'media', 'out', 'report.bin')));
    assert.equal(readFileSync(path.join(dest, 'dir', 'sub', 'two.txt'), 'utf8'), 'two');
    assert.ok(!existsSync(path.join(dest, 'secret.txt')));
  });

  it('refuses an expired token at login: clear message, exit 77, audit reason token-expired', async () => {
    const past: Clock = { now: () => Date.now() - 3_600_000, setTimer: () => () => {} };
    const old = new TransferTokenCodec({ nodeId: 'node-e2e', keys: loadTokenKeyring(path.join(work, 'token.key')), clock: past });
    const spec = specFor('download', { paths: [{ source: 'out/report.bin' }] }, { codec: old });
    const since = count();
    const r = await tachyon(['recv', '--transfer-spec', writeSpec(spec), path.join(work, 'x1')]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /refused the transfer token .*expired/);
    const f = await auditRecordAfter(auditLog, since, (x) => x.type === 'auth.failure' && x.fields['user'] === 'xfer');
    assert.equal(f?.fields['reason'], 'token-expired');
  });

  it('refuses a tampered token (audit: token-tampered) and one from another node (token-wrong-node)', async () => {
    const spec = specFor('download', { paths: [{ source: 'out/report.bin' }] });
    const raw = Buffer.from(spec.token.slice(5), 'base64url');
    raw[raw.length - 20] = raw[raw.length - 20]! ^ 0x40;
    let since = count();
    let r = await tachyon(['recv', '--transfer-spec', writeSpec({ ...spec, token: `tkn1.${raw.toString('base64url')}` }), path.join(work, 'x2')]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /refused the transfer token/);
    assert.equal((await auditRecordAfter(auditLog, since, (x) => x.type === 'auth.failure'))?.fields['reason'], 'token-tampered');

    const other = new TransferTokenCodec({ nodeId: 'node-other', keys: { current: tokenKeyOf(randomBytes(32)) }, clock: systemClock });
    since = count();
    r = await tachyon(['recv', '--transfer-spec', writeSpec(specFor('download', { paths: [{ source: 'out/report.bin' }] }, { codec: other })), path.join(work, 'x3')]);
    assert.equal(r.code, 77, r.stderr);
    assert.equal((await auditRecordAfter(auditLog, since, (x) => x.type === 'auth.failure'))?.fields['reason'], 'token-wrong-node');
  });

  it('refuses an upload token used for a download, and a download token used for an upload', async () => {
    const up = specFor('upload', { paths: [{ source: 'report.bin' }], destination_root: '/out' });
    let since = count();
    // the spec says "receive" but its token grants an upload
    let r = await tachyon(['recv', '--transfer-spec', writeSpec({ ...up, direction: 'receive', source_root: '/out', paths: [{ source: 'report.bin' }] }), path.join(work, 'x4')]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /does not allow this direction/);
    let refusal = await auditRecordAfter(auditLog, since, (x) => x.type === 'refusal.permission');
    assert.equal(refusal?.fields['permission'], 'token');
    assert.equal(refusal?.fields['op'], 'direction');

    const local = path.join(work, 'report.bin');
    writeFileSync(local, 'overwrite attempt');
    const down = specFor('download', { paths: [{ source: 'out/report.bin' }] });
    since = count();
    r = await tachyon(['send', '--transfer-spec', writeSpec({ ...down, direction: 'send', destination_root: '/out', paths: [{ source: local }] })]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /does not allow this direction/);
    refusal = await auditRecordAfter(auditLog, since, (x) => x.type === 'refusal.permission');
    assert.equal(refusal?.fields['op'], 'direction');
    assert.notEqual(readFileSync(path.join(files, 'media', 'out', 'report.bin'), 'utf8'), 'overwrite attempt');

    // the client checks the spec's direction itself, before connecting
    r = await tachyon(['send', '--transfer-spec', writeSpec(down)]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /is for a download \(tachyon recv\)/);
  });

  it('refuses a token replayed for another path (download: session refused; upload: the file refused)', async () => {
    const down = specFor('download', { paths: [{ source: 'out/report.bin' }] });
    let since = count();
    let r = await tachyon(['recv', '--transfer-spec', writeSpec({ ...down, paths: [{ source: 'out/secret.txt' }] }), path.join(work, 'x5')]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /does not cover \/out\/secret\.txt/);
    assert.ok(!existsSync(path.join(work, 'x5', 'secret.txt')));
    let refusal = await auditRecordAfter(auditLog, since, (x) => x.type === 'refusal.permission');
    assert.equal(refusal?.fields['op'], 'path-not-granted');
    assert.equal(refusal?.fields['path'], '/out/secret.txt');
    // `..` does not climb out of a granted directory either
    r = await tachyon(['recv', '--transfer-spec', writeSpec({ ...specFor('download', { paths: [{ source: 'out/dir' }] }), paths: [{ source: 'out/dir/../secret.txt' }] }), path.join(work, 'x6')]);
    assert.equal(r.code, 77, r.stderr);

    const up = specFor('upload', { paths: [{ source: 'granted.txt' }], destination_root: '/incoming' });
    const other = path.join(work, 'other.txt');
    writeFileSync(other, 'not granted');
    since = count();
    r = await tachyon(['send', '--transfer-spec', writeSpec(up), other]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /failed: other\.txt: The transfer token does not cover \/incoming\/other\.txt/);
    assert.ok(!existsSync(path.join(files, 'media', 'incoming', 'other.txt')));
    refusal = await auditRecordAfter(auditLog, since, (x) => x.type === 'refusal.permission');
    assert.equal(refusal?.fields['permission'], 'token');
    assert.equal(refusal?.fields['path'], 'other.txt');
  });

  it('refuses a token whose access key is revoked (audit: access-key-revoked)', async () => {
    const spec = specFor('download', { paths: [{ source: 'out/report.bin' }] }, { accessKeyId: 'ak-revoked' });
    const since = count();
    const r = await tachyon(['recv', '--transfer-spec', writeSpec(spec), path.join(work, 'x7')]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /revoked/);
    assert.equal((await auditRecordAfter(auditLog, since, (x) => x.type === 'auth.failure'))?.fields['reason'], 'access-key-revoked');
    // revoked after the token was issued: refused from then on
    const later = specFor('download', { paths: [{ source: 'out/report.bin' }] });
    writeFileSync(path.join(work, 'access-keys.json'), JSON.stringify({ active: [], revoked: ['ak-1', 'ak-revoked'] }));
    try {
      const r2 = await tachyon(['recv', '--transfer-spec', writeSpec(later), path.join(work, 'x8')]);
      assert.equal(r2.code, 77, r2.stderr);
    } finally {
      writeFileSync(path.join(work, 'access-keys.json'), JSON.stringify({ active: ['ak-1'], revoked: ['ak-revoked'] }));
    }
  });

  it('keys and tokens do not cross: the token user cannot log in with a key, a key user not with a token', async () => {
    const since = count();
    const r = await tachyon(['recv', '-P', String(port), '-i', aliceKey, '--host-key-fingerprint', fingerprint, 'xfer@127.0.0.1:/out/report.bin', path.join(work, 'x9')]);
    assert.equal(r.code, 77, r.stderr);
    assert.equal((await auditRecordAfter(auditLog, since, (x) => x.type === 'auth.failure'))?.fields['reason'], 'method-not-allowed');
    const spec = specFor('download', { paths: [{ source: 'out/report.bin' }] });
    const r2 = await tachyon(['recv', '--transfer-spec', writeSpec({ ...spec, remote_user: 'alice' }), path.join(work, 'x10')]);
    assert.equal(r2.code, 77, r2.stderr);
    // alice still logs in with her key
    const r3 = await tachyon(['send', '-P', String(port), '-i', aliceKey, '--host-key-fingerprint', fingerprint, path.join(work, 'clip.bin'), 'alice@127.0.0.1:/']);
    assert.equal(r3.code, 0, r3.stderr);
  });

  it('tachyon token rotate-key: tokens of the previous key still work, the new key works on the running server', async () => {
    const before = specFor('download', { paths: [{ source: 'out/report.bin' }] });
    const rot = await tachyon(['token', 'rotate-key', '--config', path.join(work, 'tachyon.json'), '--json']);
    assert.equal(rot.code, 0, rot.stderr);
    const out = JSON.parse(rot.stdout) as { keyId: string; previousKeyId: string };
    assert.notEqual(out.keyId, out.previousKeyId);
    assert.ok(existsSync(path.join(work, 'token.key.previous')));
    const fresh = new TransferTokenCodec({ nodeId: 'node-e2e', keys: loadTokenKeyring(path.join(work, 'token.key')), clock: systemClock });
    const after = specFor('download', { paths: [{ source: 'out/report.bin' }] }, { codec: fresh });
    await new Promise((r) => setTimeout(r, 1100)); // the server looks at the key file at most once a second
    for (const [what, spec] of [['previous key', before], ['new key', after]] as const) {
      const dest = path.join(work, `rot-${what.replace(' ', '-')}`);
      const r = await tachyon(['recv', '--transfer-spec', writeSpec(spec), dest]);
      assert.equal(r.code, 0, `${what}: ${r.stderr}`);
    }
    assert.ok(auditRecords(auditLog).some((x) => x.type === 'config.change' && x.fields['action'] === 'token.rotate-key'));
    codec = fresh;
  });

  it('pins the host key from the spec: a wrong fingerprint is refused before the token is sent', async () => {
    const spec = specFor('download', { paths: [{ source: 'out/report.bin' }] });
    const since = count();
    const r = await tachyon(['recv', '--transfer-spec', writeSpec({ ...spec, host_key_fingerprint: 'SHA256:' + 'B'.repeat(43) }), path.join(work, 'x11')]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /host key/i);
    assert.ok(!newRecords(since).some((x) => x.type === 'auth.success' || x.type === 'auth.failure'), 'no authentication was attempted');
  });
});
