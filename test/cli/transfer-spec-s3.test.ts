/**
 * Transfer tokens on an s3:// storage root, with real processes: `tachyon serve --config`
 * with the token user and an allowed `s3://` root in a real s3rver (started here), specs
 * made by the node API's spec builder (with the server's own token key), then `tachyon
 * send|recv --transfer-spec`. The granted upload lands in the bucket (verified by
 * SHA-256) and comes back by a download spec; the same token for another path or the
 * other direction is refused with a clear message, a nonzero exit and an audit record,
 * and nothing is stored.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { systemClock } from '../../src/core/clock.js';
import { TachyonError } from '../../src/core/errors.js';
import { buildTransferSpec, type TransferSpec } from '../../src/node-api/transfer-setup.js';
import { loadTokenKeyring, TransferTokenCodec } from '../../src/server/transfer-token.js';
import { S3Storage } from '../../src/storage/s3.js';
import { auditRecordAfter, auditRecords, runCli, type RunResult, startConfigServer } from '../helpers/cli.js';
import { S3RVER_CREDENTIALS, startS3rver, type S3rverFixture } from '../helpers/s3rver.js';

const BUCKET = 'tachyon-tokens';
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('transfer tokens on an s3:// root (serve --config, s3rver, send/recv --transfer-spec)', () => {
  let work: string;
  let s3: S3rverFixture;
  let media: S3Storage;
  let auditLog: string;
  let server: ChildProcessWithoutNullStreams;
  let serverErr = (): string => '';
  let port: number;
  let fingerprint: string;
  let codec: TransferTokenCodec;
  let n = 0;

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-tkn-s3-'));
    s3 = await startS3rver([BUCKET]);
    media = new S3Storage({ client: s3.client(), location: `s3://${BUCKET}/tenants/media` });
    auditLog = path.join(work, 'audit.log');
    writeFileSync(path.join(work, 'access-keys.json'), JSON.stringify({ active: ['ak-1'], revoked: [] }));
    const cfgFile = path.join(work, 'tachyon.json');
    writeFileSync(
      cfgFile,
      JSON.stringify({
        listen: '127.0.0.1',
        port: 0,
        database: 'tachyon.db',
        allowedRoots: [`s3://${BUCKET}/tenants/*`],
        auditLog,
        transferTokens: { user: 'xfer', nodeId: 'node-s3', keyFile: 'token.key', accessKeysFile: 'access-keys.json' },
        s3: { endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, requestTimeoutSeconds: 10, maxAttempts: 2, partSizeMiB: 5 },
      }),
    );
    const started = await startConfigServer(cfgFile, work, { env: { AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey } });
    server = started.child;
    const start = started.event;
    serverErr = started.stderr;
    port = start.tcpPort as number;
    fingerprint = start.fingerprint as string;
    codec = new TransferTokenCodec({ nodeId: 'node-s3', keys: loadTokenKeyring(path.join(work, 'token.key')), clock: systemClock });
  });

  after(async () => {
    server?.kill('SIGTERM');
    await s3?.close();
    rmSync(work, { recursive: true, force: true });
  });

  const specFor = (direction: 'upload' | 'download', request: Parameters<typeof buildTransferSpec>[3]): TransferSpec =>
    buildTransferSpec(
      { codec, host: '127.0.0.1', sshPort: port, udpPort: port, user: 'xfer', hostKeyFingerprint: fingerprint, targetRateKbps: 300_000 },
      { accessKeyId: 'ak-1', storageRoot: `s3://${BUCKET}/tenants/media`, permissions: ['list', 'read', 'write', 'mkdir'] },
      direction,
      request,
    ).spec;
  const writeSpec = (spec: unknown): string => {
    const f = path.join(work, `spec-${++n}.json`);
    writeFileSync(f, JSON.stringify({ transfer_specs: [{ transfer_spec: spec }] }));
    return f;
  };
  const tachyon = (args: string[]): Promise<RunResult> => runCli(args, work, 60_000);
  const count = (): number => auditRecords(auditLog).length;
  const stored = async (p: string): Promise<Buffer> => {
    const h = await media.openRead(p);
    try {
      return await h.read(0, h.size);
    } finally {
      await h.close();
    }
  };
  const absent = async (p: string): Promise<boolean> =>
    media.stat(p).then(
      () => false,
      (e: unknown) => e instanceof TachyonError && e.code === 'NOT_FOUND',
    );

  it('an upload spec puts the file into the bucket (SHA-256); a download spec brings it back', async () => {
    const local = path.join(work, 'clip.bin');
    const data = randomBytes(700_000);
    writeFileSync(local, data);
    const up = specFor('upload', { paths: [{ source: local, destination: 'clip.bin' }], destination_root: '/incoming/day1' });
    const r = await tachyon(['send', '--transfer-spec', writeSpec(up)]);
    assert.equal(r.code, 0, `${r.stderr}\nserver: ${serverErr()}`);
    assert.equal(sha(await stored('incoming/day1/clip.bin')), sha(data));
    const recs = auditRecords(auditLog);
    const file = recs.find((x) => x.type === 'file.transfer' && x.fields['user'] === 'xfer' && x.fields['direction'] === 'upload');
    assert.equal(file?.fields['status'], 'ok');
    assert.ok(!readFileSync(auditLog, 'utf8').includes(up.token), 'the token itself is never in the audit log');

    const down = specFor('download', { paths: [{ source: 'incoming/day1/clip.bin' }] });
    const dest = path.join(work, 'got');
    mkdirSync(dest);
    const d = await tachyon(['recv', '--transfer-spec', writeSpec(down), dest]);
    assert.equal(d.code, 0, `${d.stderr}\nserver: ${serverErr()}`);
    assert.equal(sha(readFileSync(path.join(dest, 'clip.bin'))), sha(data));
  });

  it('the same tokens for another path or the other direction are refused: clear message, exit code, audit record, nothing stored', async () => {
    // a download token replayed for another object
    const down = specFor('download', { paths: [{ source: 'incoming/day1/clip.bin' }] });
    let since = count();
    let r = await tachyon(['recv', '--transfer-spec', writeSpec({ ...down, paths: [{ source: 'incoming/day1/clip.bin.bak' }] }), path.join(work, 'x1')]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /does not cover \/incoming\/day1\/clip\.bin\.bak/);
    let refusal = await auditRecordAfter(auditLog, since, (x) => x.type === 'refusal.permission');
    assert.equal(refusal?.fields['permission'], 'token');
    assert.equal(refusal?.fields['op'], 'path-not-granted');
    assert.match(String(refusal?.fields['grant']), /^token:/);
    // `..` does not climb out of the granted path
    r = await tachyon(['recv', '--transfer-spec', writeSpec({ ...down, paths: [{ source: 'incoming/day1/clip.bin/../../other' }] }), path.join(work, 'x2')]);
    assert.notEqual(r.code, 0, r.stderr);
    assert.ok(!existsSync(path.join(work, 'x2', 'other')));

    // the download token used for an upload
    const local = path.join(work, 'evil.bin');
    writeFileSync(local, 'overwrite attempt');
    since = count();
    r = await tachyon(['send', '--transfer-spec', writeSpec({ ...down, direction: 'send', destination_root: '/incoming/day1', paths: [{ source: local, destination: 'clip.bin' }] })]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /does not allow this direction/);
    refusal = await auditRecordAfter(auditLog, since, (x) => x.type === 'refusal.permission');
    assert.equal(refusal?.fields['op'], 'direction');
    assert.notEqual((await stored('incoming/day1/clip.bin')).toString(), 'overwrite attempt');

    // an upload token for another file in the same directory: that file is refused
    const up = specFor('upload', { paths: [{ source: 'granted.txt' }], destination_root: '/incoming' });
    const other = path.join(work, 'other.txt');
    writeFileSync(other, 'not granted');
    since = count();
    r = await tachyon(['send', '--transfer-spec', writeSpec(up), other]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /The transfer token does not cover \/incoming\/other\.txt/);
    assert.ok(await absent('incoming/other.txt'));
    refusal = await auditRecordAfter(auditLog, since, (x) => x.type === 'refusal.permission');
    assert.equal(refusal?.fields['permission'], 'token');
    // and an upload token used for a download
    since = count();
    r = await tachyon(['recv', '--transfer-spec', writeSpec({ ...up, direction: 'receive', source_root: '/incoming/day1', paths: [{ source: 'clip.bin' }] }), path.join(work, 'x3')]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /does not allow this direction/);
    assert.equal((await auditRecordAfter(auditLog, since, (x) => x.type === 'refusal.permission'))?.fields['op'], 'direction');
    assert.ok(!existsSync(path.join(work, 'x3', 'clip.bin')));
  });
});
