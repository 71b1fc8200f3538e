/**
 * Server sessions of a storage-backed account (a `ReceiverStore` instead of a jail) with
 * the features that came with the monitor, transfer tokens and encryption at rest:
 * file-start and outcome hooks for uploads and downloads, cancellation through the abort
 * signal (nothing published), and the two clear refusals — a token-restricted session and
 * an upload for an account that requires encryption at rest.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ControlLink } from '../../src/control/messages.js';
import { TachyonError } from '../../src/core/errors.js';
import { MemoryStorage } from '../../src/storage/index.js';
import { pathGrant } from '../../src/transfer/grant.js';
import { Jail } from '../../src/transfer/jail.js';
import type { FileOutcome, FileStart } from '../../src/transfer/roles.js';
import { serveSession, type ServerSessionContext } from '../../src/transfer/session.js';
import type { ReceiverStore } from '../../src/transfer/store-file.js';
import { removeDir, startServer, startTransfer, tempDir, type Server } from '../helpers/loopback.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function storeOf(backend: MemoryStorage): ReceiverStore {
  return {
    backend,
    ensureDir: async (d) => {
      if (d === '') return;
      await backend.mkdir(d, { recursive: true }).catch(() => undefined);
    },
  };
}

async function readAll(s: MemoryStorage, p: string): Promise<Buffer> {
  const h = await s.openRead(p);
  try {
    return await h.read(0, h.size);
  } finally {
    await h.close();
  }
}

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

  it('a token-restricted session is refused (not supported on storage yet), before anything is stored', async () => {
    const jail = new Jail(work);
    extra = { restriction: pathGrant({ jail, direction: 'upload', paths: ['/'], expiresAt: Date.now() + 60_000, clock: base.clock, label: 'token:test' }) };
    const src = path.join(work, 'tok.bin');
    writeFileSync(src, 'token');
    const t = startTransfer(base, { op: 'send', sources: [src], dest: '/' });
    const [c, s] = await Promise.all([t.client, t.server]);
    t.clientClock.dispose();
    assert.ok(!s.ok && codeOf(s.error) === 'PERMISSION', String(s.ok ? 'served' : s.error));
    assert.ok(!c.ok);
    assert.match(String((c.error as Error).message), /Transfer tokens cannot be used with this storage yet/);
    await assert.rejects(backend.stat('tok.bin'), (e: unknown) => codeOf(e) === 'NOT_FOUND');
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
