/**
 * The multi-user transfer server end to end: `tachyon serve --config FILE` as a child
 * process with users in a real SQLite database, driven by real `tachyon send`/`recv`
 * processes; every refusal is checked on the client (exit code and message), on disk
 * (nothing written) and in the hash-chained audit log (`tachyon audit verify`).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli, type RunResult, startConfigServer } from '../helpers/cli.js';


const run = (args: string[], cwd: string, timeoutMs = 60_000): Promise<RunResult> => runCli(args, cwd, timeoutMs);

const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');

function auditRecords(file: string): { type: string; correlationId?: string; fields: Record<string, unknown> }[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { type: string; correlationId?: string; fields: Record<string, unknown> });
}

describe('multi-user transfer server (serve --config)', () => {
  let work: string;
  let files: string;
  let cfgFile: string;
  let auditLog: string;
  let server: ChildProcessWithoutNullStreams;
  let port: number;
  let fingerprint: string;
  const key: Record<string, string> = {};

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-mu-'));
    files = path.join(work, 'files');
    for (const u of ['alice', 'bob', 'carol']) {
      mkdirSync(path.join(files, u), { recursive: true });
      key[u] = path.join(work, `id_${u}`);
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', u, '-f', key[u]!]);
    }
    writeFileSync(path.join(files, 'bob', 'report.bin'), randomBytes(700_000));
    auditLog = path.join(work, 'audit.log');
    cfgFile = path.join(work, 'tachyon.json');
    const pub = (u: string): string => readFileSync(`${key[u]}.pub`, 'utf8').trim();
    writeFileSync(
      cfgFile,
      JSON.stringify({
        listen: '127.0.0.1',
        port: 0,
        database: 'tachyon.db',
        allowedRoots: [`file://${files}/*`],
        auditLog,
        ssh: { maxAuthTries: 3, banner: 'Authorized use only.' },
        users: [
          { name: 'alice', docroot: `file://${files}/alice`, keys: [pub('alice')], permissions: ['list', 'read', 'write', 'mkdir'], ciphers: ['aes-256-gcm'] },
          { name: 'bob', docroot: `file://${files}/bob`, keys: [pub('bob')], permissions: ['list', 'read'] },
          { name: 'carol', docroot: `file://${files}/carol`, keys: [pub('carol')], enabled: false },
        ],
      }),
    );
    const started = await startConfigServer(cfgFile, work);
    server = started.child;
    const start = started.event;
    port = start.tcpPort as number;
    fingerprint = start.fingerprint as string;
  });

  after(() => {
    server?.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
  });

  const common = (u: string, ...extra: string[]): string[] => ['-P', String(port), '-i', key[u]!, '--host-key-fingerprint', fingerprint, '-l', '300m', ...extra];

  it('a user uploads into their own docroot (and only there); the audit log records the login, session and file', async () => {
    const src = path.join(work, 'up.bin');
    writeFileSync(src, randomBytes(2_000_000));
    const r = await run(['send', ...common('alice', '-c', 'aes-256-gcm'), '--create-dir', src, 'alice@127.0.0.1:/in/'], work);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha(path.join(files, 'alice', 'in', 'up.bin')), sha(src));
    const recs = auditRecords(auditLog);
    const file = recs.find((x) => x.type === 'file.transfer' && x.fields['user'] === 'alice');
    assert.ok(file, 'a file.transfer record');
    assert.equal(file.fields['status'], 'ok');
    assert.equal(file.fields['bytes'], 2_000_000);
    assert.equal(file.fields['cipher'], 'aes-256-gcm');
    assert.equal(file.fields['direction'], 'upload');
    assert.equal(file.fields['sha256'], sha(src));
    const login = recs.find((x) => x.type === 'auth.success' && x.fields['user'] === 'alice');
    assert.ok(login, 'an auth.success record');
    assert.equal(login.correlationId, file.correlationId, 'the connection id ties the login to the file');
    assert.ok(recs.some((x) => x.type === 'session.start' && x.fields['user'] === 'alice'));
  });

  it('a user without write permission may download but not upload (PERMISSION, audited, nothing written)', async () => {
    const back = path.join(work, 'report-back.bin');
    const ok = await run(['recv', ...common('bob'), 'bob@127.0.0.1:/report.bin', back], work);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(sha(back), sha(path.join(files, 'bob', 'report.bin')));
    const src = path.join(work, 'x.bin');
    writeFileSync(src, 'x');
    const r = await run(['send', ...common('bob'), src, 'bob@127.0.0.1:/'], work);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /Permission denied/);
    assert.ok(!existsSync(path.join(files, 'bob', 'x.bin')));
    // the sanitized message quotes the audit record that holds the details
    const ref = /\(ref ([0-9A-Z]+)\)/.exec(r.stderr)?.[1];
    assert.ok(ref, `a correlation id in: ${r.stderr}`);
    const rec = auditRecords(auditLog).find((x) => (x as { id?: string }).id === ref);
    assert.ok(rec, `audit record ${ref}`);
    assert.equal(rec.type, 'refusal.permission');
    assert.equal(rec.fields['user'], 'bob');
    assert.equal(rec.fields['permission'], 'write');
  });

  it("another user's key, a disabled user and an unknown user are refused at login (exit 77), each audited with its reason", async () => {
    const src = path.join(work, 'y.bin');
    writeFileSync(src, 'y');
    const cases = [
      ['alice', 'bob', 'key-of-other-user'],
      ['carol', 'carol', 'disabled'],
      ['alice', 'mallory', 'unknown-user'],
    ] as const;
    for (const [u, as] of cases) {
      const r = await run(['send', ...common(u), src, `${as}@127.0.0.1:/`], work);
      assert.equal(r.code, 77, `${u} as ${as}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /disabled|other user|unknown user/i, 'the client is not told why');
    }
    const failures = auditRecords(auditLog).filter((x) => x.type === 'auth.failure');
    for (const [, as, reason] of cases) {
      assert.ok(
        failures.some((x) => x.fields['user'] === as && x.fields['reason'] === reason),
        `auth.failure for ${as} with reason ${reason}: ${JSON.stringify(failures.filter((x) => x.fields['user'] === as).map((x) => x.fields['reason']))}`,
      );
    }
    assert.ok(!existsSync(path.join(files, 'bob', 'y.bin')) && !existsSync(path.join(files, 'carol', 'y.bin')));
  });

  it("a path that climbs out of the docroot is refused (PATH_INVALID, audited); the neighbour's files are untouched", async () => {
    const src = path.join(work, 'z.bin');
    writeFileSync(src, 'z');
    const before = readdirSync(path.join(files, 'bob')).sort();
    const r = await run(['send', ...common('alice', '-c', 'aes-256-gcm'), src, 'alice@127.0.0.1:/../bob/z.bin'], work);
    assert.equal(r.code, 65, r.stderr);
    assert.deepEqual(readdirSync(path.join(files, 'bob')).sort(), before);
    assert.ok(auditRecords(auditLog).some((x) => x.type === 'refusal.jail' && x.fields['user'] === 'alice'));
  });

  it("a cipher outside the user's list is refused (CIPHER_REFUSED, audited)", async () => {
    const src = path.join(work, 'c.bin');
    writeFileSync(src, 'c');
    const r = await run(['send', ...common('alice', '-c', 'aes-128-gcm'), src, 'alice@127.0.0.1:/'], work);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /aes-256-gcm/, 'the refusal says what is allowed');
    assert.ok(auditRecords(auditLog).some((x) => x.type === 'refusal.cipher' && x.fields['cipher'] === 'aes-128-gcm'));
  });

  it('a user disabled while the server runs cannot log in any more', async () => {
    const d = await run(['user', 'disable', 'alice', '--config', cfgFile], work);
    assert.equal(d.code, 0, d.stderr);
    const src = path.join(work, 'late.bin');
    writeFileSync(src, 'late');
    const r = await run(['send', ...common('alice', '-c', 'aes-256-gcm'), src, 'alice@127.0.0.1:/'], work);
    assert.equal(r.code, 77, r.stderr);
    assert.ok(!existsSync(path.join(files, 'alice', 'late.bin')));
    const e = await run(['user', 'set', 'alice', '--enable', '--config', cfgFile], work);
    assert.equal(e.code, 0, e.stderr);
    // both changes are in the server's audit log, with who made them
    const changes = auditRecords(auditLog).filter((x) => x.type === 'config.change' && x.fields['target'] === 'alice' && String(x.fields['actor']).startsWith('cli:'));
    assert.equal(changes.length, 2, JSON.stringify(changes));
  });

  it("OpenSSH's sftp reaches the same docroot under the same permissions and audit log", async () => {
    const kh = path.join(work, 'known_hosts');
    writeFileSync(kh, `[127.0.0.1]:${port} ${readFileSync(path.join(work, 'ssh_host_ed25519_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    const batch = path.join(work, 'sftp-batch');
    const local = path.join(work, 'sftp-up.bin');
    writeFileSync(local, randomBytes(300_000));
    const sftp = (u: string, cmds: string): { code: number; out: string } => {
      writeFileSync(batch, cmds);
      try {
        const out = execFileSync('sftp', ['-b', batch, '-i', key[u]!, '-P', String(port), '-o', `UserKnownHostsFile=${kh}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'IdentitiesOnly=yes', `${u}@127.0.0.1`], { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
        return { code: 0, out: out.toString() };
      } catch (err) {
        const e = err as { status: number; stdout: Buffer; stderr: Buffer };
        return { code: e.status, out: e.stdout.toString() + e.stderr.toString() };
      }
    };
    const up = sftp('alice', `put ${local} sftp-up.bin\nls -l\n`);
    assert.equal(up.code, 0, up.out);
    assert.equal(sha(path.join(files, 'alice', 'sftp-up.bin')), sha(local));
    assert.match(up.out, /sftp-up\.bin/);
    // bob may read but not write; nobody leaves the docroot
    const denied = sftp('bob', `put ${local} nope.bin\n`);
    assert.notEqual(denied.code, 0);
    assert.ok(!existsSync(path.join(files, 'bob', 'nope.bin')));
    const escape = sftp('bob', `get ../alice/sftp-up.bin ${path.join(work, 'stolen.bin')}\n`);
    assert.notEqual(escape.code, 0);
    assert.ok(!existsSync(path.join(work, 'stolen.bin')));
    const recs = auditRecords(auditLog);
    assert.ok(recs.some((x) => x.fields['user'] === 'alice' && JSON.stringify(x).includes('sftp-up.bin')), 'the SFTP upload is audited');
    assert.ok(recs.some((x) => x.type === 'refusal.permission' && x.fields['user'] === 'bob' && x.fields['permission'] === 'write'));
  });

  it('the audit log verifies; an edited line is detected with its line number', async () => {
    const ok = await run(['audit', 'verify', auditLog], work);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    const copy = path.join(work, 'audit-copy.log');
    const lines = readFileSync(auditLog, 'utf8').split('\n');
    const i = lines.findIndex((l) => l.includes('"auth.failure"'));
    lines[i] = lines[i]!.replace('"auth.failure"', '"auth.success"');
    writeFileSync(copy, lines.join('\n'));
    const bad = await run(['audit', 'verify', copy], work);
    assert.equal(bad.code, 1);
    assert.match(bad.stdout + bad.stderr, new RegExp(`line ${i + 1}\\b`));
    assert.doesNotMatch(readFileSync(auditLog, 'utf8'), /BEGIN OPENSSH PRIVATE KEY|PRIVATE KEY/, 'no key material in the log');
  });

  it('a corrupt configuration is refused at start with the field and the reason (exit 78)', async () => {
    const bad = path.join(work, 'bad.json');
    writeFileSync(bad, JSON.stringify({ allowedRoots: [`file://${files}/*`], ssh: { maxAuthTries: 'many' }, users: [{ name: 'root', docroot: '/etc' }] }));
    const r = await run(['serve', '--config', bad], work, 20_000);
    assert.equal(r.code, 78, r.stderr);
    assert.match(r.stderr, /ssh\.maxAuthTries: expected a positive integer/);
    const rootUser = path.join(work, 'root-user.json');
    writeFileSync(rootUser, JSON.stringify({ allowedRoots: [`file://${files}/*`], users: [{ name: 'root', docroot: `file://${files}/alice` }] }));
    const u = await run(['serve', '--config', rootUser], work, 20_000);
    assert.equal(u.code, 78, u.stderr);
    assert.match(u.stderr, /users\[0\]\.name/);
    const garbage = path.join(work, 'garbage.json');
    writeFileSync(garbage, '{ "listen": ');
    const g = await run(['serve', '--config', garbage], work, 20_000);
    assert.equal(g.code, 78, g.stderr);
  });
});
