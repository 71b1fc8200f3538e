/**
 * Server sessions of a storage-backed account (a `ReceiverStore` instead of a jail) with
 * the features that came with the monitor, transfer tokens and encryption at rest:
 * file-start and outcome hooks for uploads and downloads, cancellation through the abort
 * signal (nothing published), a token-restricted session (storageGrant: granted paths only,
 * one direction), and the clear refusal of an upload for an account that requires
 * encryption at rest.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ControlLink } from '../../src/control/messages.js';
import { TachyonError } from '../../src/core/errors.js';
import { MemoryStorage } from '../../src/storage/index.js';
import { storageGrant } from '../../src/transfer/grant.js';
import type { FileOutcome, FileStart } from '../../src/transfer/roles.js';
import { serveSession, type ServerSessionContext } from '../../src/transfer/session.js';
import { removeDir, startServer, startTransfer, tempDir, type Server } from '../helpers/loopback.js';
import { readAll, storeOf } from '../helpers/memory-store.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');


const codeOf = (e: unknown): string | undefined => (e instanceof TachyonError ? e.code : undefined);

describe('server sessions on a storage backend', () => {
  let work: string;
  let base: Server;
  let backend: MemoryStorage;
  /** extra context for the next session */
  let extra: Partial<ServerSessionContext> = {};

  before(async () => {
    work = tempDir('store-session');
    mkdirSync(path.join(work, 'unused-root'));
    base = await startServer(path.join(work, 'unused-root'));
    backend = new MemoryStorage();
    const store = storeOf(backend);
    base.serve = (link: ControlLink) =>
      serveSession(link, { endpoint: base.endpoint, udpPort: base.port, store, clock: base.clock, allowedCiphers: base.allowedCiphers, maxRateBps: 2e9, ...extra });
  });
  after(async () => {
    await base?.close();
    removeDir(work);
  });

  it('uploads and downloads report file starts and outcomes (the monitor hooks) with their direction', async () => {
    const starts: [string, string][] = [];
    const settled: [string, string, string][] = [];
    extra = {
      onFileStart: (f: FileStart, d) => starts.push([f.path, d]),
      onFile: (f: FileOutcome, d) => settled.push([f.path, f.status, d]),
    };
    const data = randomBytes(700_000);
    const src = path.join(work, 'm.bin');
    writeFileSync(src, data);
    const up = startTransfer(base, { op: 'send', sources: [src], dest: '/' });
    const [cu, su] = await Promise.all([up.client, up.server]);
    up.clientClock.dispose();
    assert.ok(cu.ok && su.ok, String(!cu.ok ? cu.error : !su.ok ? su.error : ''));
    assert.equal(sha(await readAll(backend, 'm.bin')), sha(data));
    const out = path.join(work, 'back.bin');
    const down = startTransfer(base, { op: 'recv', sources: ['/m.bin'], dest: out });
    const [cd, sd] = await Promise.all([down.client, down.server]);
    down.clientClock.dispose();
    assert.ok(cd.ok && sd.ok, String(!cd.ok ? cd.error : !sd.ok ? sd.error : ''));
    assert.equal(sha(readFileSync(out)), sha(data));
    assert.deepEqual(starts, [
      ['m.bin', 'upload'],
      ['m.bin', 'download'],
    ]);
    assert.deepEqual(settled, [
      ['m.bin', 'done', 'upload'],
      ['m.bin', 'done', 'download'],
    ]);
  });

  it('an aborted signal cancels an upload (CANCELLED) and nothing is published', async () => {
    const abort = new AbortController();
    extra = { signal: abort.signal, onFileStart: () => setTimeout(() => abort.abort(), 50) };
    const src = path.join(work, 'slow.bin');
    writeFileSync(src, randomBytes(4 * 1024 * 1024));
    const t = startTransfer(base, { op: 'send', sources: [src], dest: '/', targetBps: 8e6 });
    const [c, s] = await Promise.all([t.client, t.server]);
    t.clientClock.dispose();
    assert.ok(!s.ok && codeOf(s.error) === 'CANCELLED', String(s.ok ? 'server finished' : s.error));
    assert.ok(!c.ok, 'the client fails too');
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(backend.stat('slow.bin'), (e: unknown) => codeOf(e) === 'NOT_FOUND');
  });

  it('a token-restricted session (storageGrant): granted uploads and downloads work; other paths and the other direction are refused before anything is stored', async () => {
    const refused: TachyonError[] = [];
    const failed: FileOutcome[] = [];
    const grant = (direction: 'upload' | 'download', paths: string[]): Partial<ServerSessionContext> => ({
      restriction: storageGrant({ direction, paths, expiresAt: Date.now() + 60_000, clock: base.clock, label: 'token:test' }),
      onRefuse: (e) => {
        refused.push(e);
        return undefined;
      },
      onFile: (f) => {
        if (!f.ok) failed.push(f);
      },
    });
    const data = randomBytes(50_000);
    const src = path.join(work, 'tok.bin');
    writeFileSync(src, data);
    // upload into the granted directory (created on the way: createDir)
    extra = grant('upload', ['/in/batch']);
    const ok = startTransfer(base, { op: 'send', sources: [src], dest: '/in/batch/', createDir: true });
    const [c1, s1] = await Promise.all([ok.client, ok.server]);
    ok.clientClock.dispose();
    assert.ok(c1.ok && s1.ok, String(!c1.ok ? c1.error : !s1.ok ? s1.error : ''));
    assert.equal(sha(await readAll(backend, 'in/batch/tok.bin')), sha(data));
    // a destination next to the grant whose name only starts like it: refused, nothing stored
    const bad = startTransfer(base, { op: 'send', sources: [src], dest: '/in/batchx/', createDir: true });
    const [c2, s2] = await Promise.all([bad.client, bad.server]);
    bad.clientClock.dispose();
    assert.ok(!c2.ok && !s2.ok, 'refused');
    assert.match(String((c2.error as Error).message), /does not cover \/in\/batchx/);
    assert.equal(refused.at(-1)?.details?.['reason'], 'path-not-granted');
    await assert.rejects(backend.stat('in/batchx'), (e: unknown) => codeOf(e) === 'NOT_FOUND');
    // an existing destination outside the grant: the file is refused as it starts
    const outside = startTransfer(base, { op: 'send', sources: [src], dest: '/' });
    const [c3] = await Promise.all([outside.client, outside.server]);
    outside.clientClock.dispose();
    assert.ok(!c3.ok || !c3.value.ok, 'the file outside the grant fails');
    assert.equal(failed.at(-1)?.code, 'PERMISSION');
    await assert.rejects(backend.stat('tok.bin'), (e: unknown) => codeOf(e) === 'NOT_FOUND');
    // the upload token cannot download
    const wrongWay = startTransfer(base, { op: 'recv', sources: ['/in/batch/tok.bin'], dest: path.join(work, 'no.bin') });
    const [c4] = await Promise.all([wrongWay.client, wrongWay.server]);
    wrongWay.clientClock.dispose();
    assert.ok(!c4.ok);
    assert.match(String((c4.error as Error).message), /does not allow this direction/);
    assert.equal(refused.at(-1)?.details?.['reason'], 'direction');
    // a download token: its object comes back; another object is refused
    extra = grant('download', ['/in/batch/tok.bin']);
    const out = path.join(work, 'tok-back.bin');
    const d = startTransfer(base, { op: 'recv', sources: ['/in/batch/tok.bin'], dest: out });
    const [c5, s5] = await Promise.all([d.client, d.server]);
    d.clientClock.dispose();
    assert.ok(c5.ok && s5.ok, String(!c5.ok ? c5.error : !s5.ok ? s5.error : ''));
    assert.equal(sha(readFileSync(out)), sha(data));
    const d2 = startTransfer(base, { op: 'recv', sources: ['/m.bin'], dest: path.join(work, 'm-no.bin') });
    const [c6] = await Promise.all([d2.client, d2.server]);
    d2.clientClock.dispose();
    assert.ok(!c6.ok);
    assert.match(String((c6.error as Error).message), /does not cover \/m\.bin/);
    assert.equal(refused.at(-1)?.details?.['reason'], 'path-not-granted');
  });

  it('requireEncryptedAtRest: uploads are refused (ENCRYPTION_REQUIRED, cannot be checked yet), downloads still work', async () => {
    extra = { requireEncryptedAtRest: true };
    const src = path.join(work, 'x.tachyon-enc');
    writeFileSync(src, randomBytes(1000));
    const t = startTransfer(base, { op: 'send', sources: [src], dest: '/' });
    const [c, s] = await Promise.all([t.client, t.server]);
    t.clientClock.dispose();
    assert.ok(!s.ok && codeOf(s.error) === 'ENCRYPTION_REQUIRED', String(s.ok ? 'served' : s.error));
    assert.ok(!c.ok);
    assert.match(String((c.error as Error).message), /cannot check them yet/);
    await assert.rejects(backend.stat('x.tachyon-enc'), (e: unknown) => codeOf(e) === 'NOT_FOUND');
    const out = path.join(work, 'again.bin');
    const d = startTransfer(base, { op: 'recv', sources: ['/m.bin'], dest: out });
    const [cd, sd] = await Promise.all([d.client, d.server]);
    d.clientClock.dispose();
    assert.ok(cd.ok && sd.ok, String(!cd.ok ? cd.error : !sd.ok ? sd.error : ''));
  });
});
