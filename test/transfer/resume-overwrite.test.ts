/**
 * Overwrite policies, resume, source selection and many small files, end to end on
 * 127.0.0.1 (serveSession and clientTransfer over an in-memory control link, real UDP):
 * the server executes the policies when it receives (uploads), the client when it
 * receives (downloads). Bad input: tampered partial files, sources changed between
 * runs, a missing destination directory.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { TachyonError } from '../../src/core/errors.js';
import type { OverwritePolicy, ResumeLevel } from '../../src/core/types.js';
import type { ControlMessage } from '../../src/control/messages.js';
import type { FileOutcome } from '../../src/transfer/roles.js';
import { formatRecord, partialPath, readRecord, recordPath } from '../../src/transfer/resume.js';
import {
  exists,
  partials,
  removeDir,
  sha256File,
  startServer,
  startTransfer,
  tempDir,
  transferOk,
  treeListing,
  type CapturingSocket,
  type Server,
} from '../helpers/loopback.js';
import { Rng } from '../helpers/rng.js';

const KiB = 1024;
const MiB = 1 << 20;
const rng = new Rng(0x2e5);
/** source modification time (s), and older/newer ones for destinations */
const T0 = 1_700_000_000;

function write(p: string, data: Buffer | string, mtimeS?: number): void {
  mkdirSync(path.dirname(p), { recursive: true });
  writeFileSync(p, data);
  if (mtimeS !== undefined) utimesSync(p, mtimeS, mtimeS);
}

function byPath(files: FileOutcome[]): Record<string, FileOutcome> {
  return Object.fromEntries(files.map((f) => [path.basename(f.path), f]));
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('overwrite, resume, selection and many files over loopback', () => {
  let work: string;
  let local: string;
  let server: Server;

  before(async () => {
    work = tempDir('xfer');
    local = path.join(work, 'local');
    mkdirSync(path.join(work, 'root'));
    mkdirSync(local);
    server = await startServer(path.join(work, 'root'));
  });

  after(async () => {
    await server.close();
    removeDir(work);
  });

  describe('overwrite policies (upload: the server decides)', () => {
    const size = 40 * KiB;
    let src: string;
    const content = { same: rng.bytes(size), older: rng.bytes(size), newer: rng.bytes(size), resized: rng.bytes(size), absent: rng.bytes(size), sneaky: rng.bytes(size) };

    before(() => {
      src = path.join(local, 'ow');
      for (const [name, data] of Object.entries(content)) write(path.join(src, `${name}.bin`), data, T0);
    });

    /** A destination directory where each file is in the state its name says. */
    function destination(dir: string): void {
      const d = path.join(server.root, dir);
      write(path.join(d, 'same.bin'), content.same, T0);
      write(path.join(d, 'older.bin'), rng.bytes(size), T0 - 3600);
      write(path.join(d, 'newer.bin'), rng.bytes(size), T0 + 3600);
      write(path.join(d, 'resized.bin'), rng.bytes(size + 1), T0 + 3600);
      // same size and modification time, different bytes: only a digest tells
      const sneaky = Buffer.from(content.sneaky);
      sneaky[100] = sneaky[100]! ^ 0xff;
      write(path.join(d, 'sneaky.bin'), sneaky, T0);
    }

    const cases: [OverwritePolicy, ResumeLevel, Record<string, string>][] = [
      ['never', 'none', { same: 'skipped:exists', older: 'skipped:exists', newer: 'skipped:exists', resized: 'skipped:exists', sneaky: 'skipped:exists', absent: 'done' }],
      ['always', 'none', { same: 'done', older: 'done', newer: 'done', resized: 'done', sneaky: 'done', absent: 'done' }],
      ['diff', 'none', { same: 'skipped:same', older: 'done', newer: 'done', resized: 'done', sneaky: 'skipped:same', absent: 'done' }],
      ['diff', 'sparse', { same: 'skipped:same', older: 'done', newer: 'done', resized: 'done', sneaky: 'done', absent: 'done' }],
      ['diff', 'full', { same: 'skipped:same', older: 'done', newer: 'done', resized: 'done', sneaky: 'done', absent: 'done' }],
      ['diff+older', 'none', { same: 'skipped:newer', older: 'done', newer: 'skipped:newer', resized: 'skipped:newer', sneaky: 'skipped:newer', absent: 'done' }],
      ['older', 'none', { same: 'skipped:newer', older: 'done', newer: 'skipped:newer', resized: 'skipped:newer', sneaky: 'skipped:newer', absent: 'done' }],
    ];

    for (const [overwrite, resume, expected] of cases) {
      it(`--overwrite ${overwrite} -k ${resume}: ${Object.entries(expected).map(([k, v]) => `${k} ${v}`).join(', ')}`, async () => {
        const dir = `ow-${overwrite}-${resume}`;
        destination(dir);
        const before = Object.fromEntries(Object.keys(content).map((n) => [n, exists(path.join(server.root, dir, `${n}.bin`)) ? sha256File(path.join(server.root, dir, `${n}.bin`)) : '']));
        const r = await transferOk(server, { op: 'send', sources: [src], dest: `/${dir}`, overwrite, resume, srcBase: src });
        const got = byPath(r.client.files);
        for (const [name, want] of Object.entries(expected)) {
          const f = got[`${name}.bin`];
          assert.ok(f, `${name}: no outcome`);
          assert.equal(f.reason ? `${f.status}:${f.reason}` : f.status, want, name);
          const stored = path.join(server.root, dir, `${name}.bin`);
          if (want === 'done') {
            assert.ok(readFileSync(stored).equals(content[name as keyof typeof content]), `${name} replaced`);
            assert.ok(Math.abs(statSync(stored).mtimeMs - T0 * 1000) < 1, `${name}: the source time is kept`);
            assert.equal(f.sentBytes, size);
          } else {
            assert.equal(sha256File(stored), before[name], `${name} untouched`);
            assert.equal(f.sentBytes, 0);
            assert.equal(f.skippedBytes, statSync(path.join(src, `${name}.bin`)).size);
          }
        }
        assert.ok(r.client.ok, 'skipped files are not failures');
        // the server saw the same outcomes
        assert.deepEqual(
          r.server!.files.map((f) => `${f.path} ${f.status}`).sort(),
          r.client.files.map((f) => `${f.path} ${f.status}`).sort(),
        );
        assert.deepEqual(partials(server.root), []);
      });
    }
  });

  describe('resume (-k) of a partial upload', () => {
    const size = 8 * MiB + 123;
    const kept = 5 * MiB;
    let data: Buffer;
    let src: string;

    before(() => {
      data = rng.bytes(size);
      src = path.join(local, 'big.bin');
      write(src, data, T0);
    });

    /** A partial file of an interrupted upload: the first `kept` bytes (maybe tampered), junk after, its record. */
    function interrupted(dir: string, o: { tamperAt?: number; recordMtimeS?: number; verified?: number } = {}): string {
      const final = path.join(server.root, dir, 'big.bin');
      const prefix = Buffer.from(data.subarray(0, kept));
      if (o.tamperAt !== undefined) prefix[o.tamperAt] = prefix[o.tamperAt]! ^ 0x55;
      write(partialPath(final), Buffer.concat([prefix, rng.bytes(100 * KiB)]));
      writeFileSync(recordPath(final), formatRecord({ size, mtimeMs: (o.recordMtimeS ?? T0) * 1000, verified: o.verified ?? kept }));
      return final;
    }

    for (const resume of ['none', 'attrs', 'sparse', 'full'] as const) {
      it(`-k ${resume} ${resume === 'none' ? 'sends the whole file again' : 'sends only what follows the kept prefix'}, and the result verifies`, async () => {
        const dir = `k-${resume}`;
        const final = interrupted(dir);
        // blocks sent speculatively before the plan said `resume`/`check` (a void range): early data's price
        let voided = 0;
        const onControl = (d: 'sent' | 'received', m: ControlMessage): void => {
          if (d === 'sent' && m.t === 'files') for (const e of m.files) if ('void' in e) voided += e.void;
        };
        const r = await transferOk(server, { op: 'send', sources: [src], dest: `/${dir}/big.bin`, resume, onControl });
        const f = r.client.files[0]!;
        assert.equal(f.status, 'done');
        assert.equal(f.sha256, sha256File(src));
        assert.ok(readFileSync(final).equals(data), 'the stored file is exact');
        const bytesSent = r.client.stats!.bytesSent!;
        if (resume === 'none') {
          assert.equal(f.skippedBytes, 0);
          assert.equal(f.sentBytes, size);
          assert.ok(bytesSent >= size, `datagrams carried ${bytesSent}`);
        } else {
          assert.equal(f.skippedBytes, kept);
          assert.equal(f.sentBytes, size - kept);
          assert.ok(bytesSent < (size - kept) * 1.15 + voided * 1472, `datagrams carried ${bytesSent} bytes for ${size - kept} missing (${voided} blocks void)`);
        }
        assert.equal(r.client.skippedBytes, f.skippedBytes);
        assert.ok(!exists(partialPath(final)), 'no partial file is left');
        // (-k none does not look for records: an orphaned one stays, ignored, until a resumed run replaces it)
        if (resume !== 'none') assert.ok(!exists(recordPath(final)), 'no record is left');
      });
    }

    for (const resume of ['sparse', 'full'] as const) {
      it(`-k ${resume}: a tampered partial file fails the digest comparison and the file starts over from 0`, async () => {
        const dir = `tamper-${resume}`;
        const final = interrupted(dir, { tamperAt: 10 });
        const r = await transferOk(server, { op: 'send', sources: [src], dest: `/${dir}/big.bin`, resume });
        const f = r.client.files[0]!;
        assert.equal(f.status, 'done');
        assert.equal(f.skippedBytes, 0, 'nothing of the tampered prefix is kept');
        assert.equal(f.sentBytes, size);
        assert.ok(readFileSync(final).equals(data));
      });
    }

    it('-k attrs trusts the record: a tampered prefix is caught by the whole-file digest (DIGEST_MISMATCH), discarded, and the next run succeeds', async () => {
      const dir = 'tamper-attrs';
      const final = interrupted(dir, { tamperAt: 10 });
      const r = await transferOk(server, { op: 'send', sources: [src], dest: `/${dir}/big.bin`, resume: 'attrs' });
      const f = r.client.files[0]!;
      assert.equal(f.status, 'failed');
      assert.equal(f.code, 'DIGEST_MISMATCH');
      assert.ok(!exists(final) && !exists(partialPath(final)) && !exists(recordPath(final)), 'the bad copy is discarded');
      const again = await transferOk(server, { op: 'send', sources: [src], dest: `/${dir}/big.bin`, resume: 'attrs' });
      assert.equal(again.client.files[0]!.status, 'done');
      assert.ok(readFileSync(final).equals(data));
    });

    for (const resume of ['attrs', 'sparse', 'full'] as const) {
      it(`-k ${resume}: a source changed since the interruption (time in the record differs) starts over from 0`, async () => {
        const dir = `changed-${resume}`;
        const final = interrupted(dir, { recordMtimeS: T0 - 10 });
        const r = await transferOk(server, { op: 'send', sources: [src], dest: `/${dir}/big.bin`, resume });
        assert.equal(r.client.files[0]!.skippedBytes, 0);
        assert.equal(r.client.files[0]!.sentBytes, size);
        assert.ok(readFileSync(final).equals(data));
      });
    }

    it('an upload interrupted with -k sparse keeps its partial file and record; the next run sends only the rest', async () => {
      const dir = 'interrupted';
      mkdirSync(path.join(server.root, dir));
      const final = path.join(server.root, dir, 'big.bin');
      let sock: CapturingSocket | undefined;
      const run = startTransfer(server, { op: 'send', sources: [src], dest: `/${dir}/`, resume: 'sparse', policy: 'fixed', targetBps: 40e6, onSocket: (s) => (sock = s) });
      await waitFor(() => exists(partialPath(final)) && statSync(partialPath(final)).size >= size / 2, 20_000, 'half of the file');
      run.clientLink.close();
      await sock!.close();
      const s = await run.server;
      assert.ok(!s.ok && s.error instanceof TachyonError && s.error.code === 'PEER_VANISHED');
      await run.client;
      run.clientClock.dispose();
      const record = readRecord(final);
      assert.ok(record, 'the record is kept');
      assert.ok(record.verified >= size * 0.4 && record.verified <= statSync(partialPath(final)).size, `verified ${record.verified}`);
      const r = await transferOk(server, { op: 'send', sources: [src], dest: `/${dir}/`, resume: 'sparse' });
      const f = r.client.files[0]!;
      assert.equal(f.status, 'done');
      assert.equal(f.skippedBytes, record.verified);
      assert.ok(r.client.stats!.bytesSent! < size * 0.65, `sent ${r.client.stats!.bytesSent} of ${size}`);
      assert.ok(readFileSync(final).equals(data));
      assert.deepEqual(partials(path.join(server.root, dir)), []);
    });
  });

  describe('downloads (the client decides)', () => {
    const size = 6 * MiB + 5;
    let data: Buffer;

    before(() => {
      data = rng.bytes(size);
      write(path.join(server.root, 'dl', 'file.bin'), data, T0);
      write(path.join(server.root, 'dl', 'other.bin'), 'other', T0);
    });

    it('--overwrite never keeps the client file and reports it skipped; diff replaces a different one', async () => {
      const dl = path.join(work, 'dl-never');
      write(path.join(dl, 'file.bin'), 'mine');
      const r = await transferOk(server, { op: 'recv', sources: ['/dl/file.bin', '/dl/other.bin'], dest: dl, overwrite: 'never' });
      const got = byPath(r.client.files);
      assert.equal(got['file.bin']!.status, 'skipped');
      assert.equal(got['file.bin']!.reason, 'exists');
      assert.equal(got['other.bin']!.status, 'done');
      assert.equal(readFileSync(path.join(dl, 'file.bin'), 'utf8'), 'mine');
      const d = await transferOk(server, { op: 'recv', sources: ['/dl/file.bin'], dest: dl, overwrite: 'diff' });
      assert.equal(d.client.files[0]!.status, 'done');
      assert.ok(readFileSync(path.join(dl, 'file.bin')).equals(data));
      const again = await transferOk(server, { op: 'recv', sources: ['/dl/file.bin'], dest: dl, overwrite: 'diff' });
      assert.equal(again.client.files[0]!.status, 'skipped', 'now the same: skipped');
    });

    it('-k attrs resumes a partial download on the client', async () => {
      const dl = path.join(work, 'dl-resume');
      const final = path.join(dl, 'file.bin');
      write(partialPath(final), data.subarray(0, 4 * MiB));
      writeFileSync(recordPath(final), formatRecord({ size, mtimeMs: T0 * 1000, verified: 4 * MiB }));
      const r = await transferOk(server, { op: 'recv', sources: ['/dl/file.bin'], dest: dl, resume: 'attrs' });
      const f = r.client.files[0]!;
      assert.equal(f.status, 'done');
      assert.equal(f.skippedBytes, 4 * MiB);
      assert.ok(r.server!.stats!.bytesSent! < (size - 4 * MiB) * 1.15, `the server sent ${r.server!.stats!.bytesSent}`);
      assert.ok(readFileSync(final).equals(data));
      assert.ok(!exists(recordPath(final)) && !exists(partialPath(final)));

      // the same to a new name: the destination does not exist, its partial file does
      const renamed = path.join(dl, 'renamed.bin');
      write(partialPath(renamed), data.subarray(0, 3 * MiB));
      writeFileSync(recordPath(renamed), formatRecord({ size, mtimeMs: T0 * 1000, verified: 3 * MiB }));
      const again = await transferOk(server, { op: 'recv', sources: ['/dl/file.bin'], dest: renamed, resume: 'attrs' });
      assert.equal(again.client.files[0]!.skippedBytes, 3 * MiB);
      assert.ok(readFileSync(renamed).equals(data));
    });

    it('a download interrupted with -k full keeps the partial file on the client and resumes from it', async () => {
      const dl = path.join(work, 'dl-interrupted');
      mkdirSync(dl);
      const final = path.join(dl, 'file.bin');
      const run = startTransfer(server, { op: 'recv', sources: ['/dl/file.bin'], dest: dl, resume: 'full', policy: 'fixed', targetBps: 30e6 });
      await waitFor(() => exists(partialPath(final)) && statSync(partialPath(final)).size >= size / 2, 20_000, 'half of the file');
      run.clientLink.close();
      const c = await run.client;
      assert.ok(!c.ok);
      await run.server;
      run.clientClock.dispose();
      await waitFor(() => readRecord(final) !== undefined, 5_000, 'the record');
      const verified = readRecord(final)!.verified;
      const r = await transferOk(server, { op: 'recv', sources: ['/dl/file.bin'], dest: dl, resume: 'full' });
      assert.equal(r.client.files[0]!.skippedBytes, verified);
      assert.ok(readFileSync(final).equals(data));
    });
  });

  describe('source selection and destinations', () => {
    let tree: string;

    before(() => {
      tree = path.join(local, 'sel');
      write(path.join(tree, 'keep.txt'), 'keep');
      write(path.join(tree, 'skip.tmp'), 'tmp');
      write(path.join(tree, 'sub', 'deep.txt'), 'deep');
      write(path.join(tree, 'sub', 'deep.tmp'), 'tmp');
      write(path.join(tree, 'cache', 'blob.bin'), 'cached');
      write(path.join(tree, 'logs', 'a.log'), 'log');
    });

    it('upload: --exclude patterns prune files and directories; --src-base strips the prefix', async () => {
      const r = await transferOk(server, {
        op: 'send',
        sources: [path.join(tree, 'sub'), path.join(tree, 'keep.txt'), path.join(tree, 'skip.tmp'), path.join(tree, 'cache'), path.join(tree, 'logs')],
        dest: '/sel-up',
        createDir: true,
        srcBase: tree,
        exclude: ['*.tmp', 'cache/', '/logs/*.log'],
      });
      assert.deepEqual(
        treeListing(path.join(server.root, 'sel-up')).map((l) => l.split(' ').slice(0, 2).join(' ')),
        ['d logs', 'd sub', 'f keep.txt', 'f sub/deep.txt'],
      );
      assert.equal(r.client.files.length, 2);
    });

    it('download: the server applies --exclude and --src-base', async () => {
      await transferOk(server, { op: 'send', sources: [tree], dest: '/sel-src', createDir: true });
      const dl = path.join(work, 'sel-dl');
      mkdirSync(dl);
      await transferOk(server, { op: 'recv', sources: ['/sel-src/sel/sub', '/sel-src/sel/keep.txt'], dest: dl, srcBase: '/sel-src', exclude: ['deep.tmp'] });
      assert.deepEqual(
        treeListing(dl).map((l) => l.split(' ').slice(0, 2).join(' ')),
        ['d sel', 'd sel/sub', 'f sel/keep.txt', 'f sel/sub/deep.txt'],
      );
    });

    it('a source outside --src-base is refused before anything is sent; so is a bad pattern', async () => {
      const run = startTransfer(server, { op: 'send', sources: [path.join(tree, 'keep.txt')], dest: '/', srcBase: path.join(tree, 'sub') });
      const c = await run.client;
      assert.ok(!c.ok && c.error instanceof TachyonError && c.error.code === 'USAGE', String(!c.ok && c.error));
      run.clientLink.close();
      await run.server;
      const bad = startTransfer(server, { op: 'recv', sources: ['/sel-src'], dest: work, exclude: ['[oops'] });
      const b = await bad.client;
      assert.ok(!b.ok && b.error instanceof TachyonError && b.error.code === 'USAGE');
      bad.clientLink.close();
      await bad.server;
    });

    it('a missing destination directory is refused with a clear message; --create-dir creates it (upload and download)', async () => {
      const up = startTransfer(server, { op: 'send', sources: [tree], dest: '/no/such/dir' });
      const [c, s] = await Promise.all([up.client, up.server]);
      for (const r of [c, s]) assert.ok(!r.ok && r.error instanceof TachyonError && r.error.code === 'NOT_FOUND');
      assert.match((!c.ok && (c.error as TachyonError).publicMessage) || '', /does not exist; pass --create-dir/);
      assert.ok(!exists(path.join(server.root, 'no')));
      // one file to a new name: only its parent must exist
      await transferOk(server, { op: 'send', sources: [path.join(tree, 'keep.txt')], dest: '/renamed.txt' });
      assert.equal(readFileSync(path.join(server.root, 'renamed.txt'), 'utf8'), 'keep');
      await transferOk(server, { op: 'send', sources: [tree], dest: '/no/such/dir', createDir: true });
      assert.ok(exists(path.join(server.root, 'no', 'such', 'dir', 'sel', 'keep.txt')));

      const missing = path.join(work, 'dl-missing', 'deeper');
      const down = startTransfer(server, { op: 'recv', sources: ['/sel-src/sel'], dest: missing });
      const d = await down.client;
      assert.ok(!d.ok && d.error instanceof TachyonError && d.error.code === 'NOT_FOUND', String(!d.ok && d.error));
      assert.match((d.error as TachyonError).publicMessage, /pass --create-dir/);
      await down.server;
      assert.ok(!exists(missing));
      await transferOk(server, { op: 'recv', sources: ['/sel-src/sel'], dest: missing, createDir: true });
      assert.ok(exists(path.join(missing, 'sel', 'sub', 'deep.txt')));
    });

    it('--preserve-times also sets the access time; without it only the modification time is the source\'s', async () => {
      const src = path.join(local, 'times.bin');
      write(src, 'times');
      utimesSync(src, T0 - 7200, T0);
      await transferOk(server, { op: 'send', sources: [src], dest: '/times-p.bin', preserveTimes: true, overwrite: 'always' });
      const p = statSync(path.join(server.root, 'times-p.bin'));
      assert.ok(Math.abs(p.mtimeMs - T0 * 1000) < 1 && Math.abs(p.atimeMs - (T0 - 7200) * 1000) < 1, `${p.mtimeMs} ${p.atimeMs}`);
      await transferOk(server, { op: 'send', sources: [src], dest: '/times-n.bin', overwrite: 'always' });
      const n = statSync(path.join(server.root, 'times-n.bin'));
      assert.ok(Math.abs(n.mtimeMs - T0 * 1000) < 1);
      assert.ok(n.atimeMs > (T0 + 3600) * 1000, 'the access time is the time of the transfer');
    });
  });

  describe('many small files', () => {
    it('2,000 files flow through one session with batched control messages (no round trip per file)', async () => {
      const n = 2000;
      const dir = path.join(local, 'many');
      const blob = rng.bytes(4 * KiB);
      for (let i = 0; i < n; i++) {
        blob.writeUInt32BE(i, 0);
        write(path.join(dir, `f${String(i).padStart(5, '0')}.bin`), blob);
      }
      const counts: Record<string, number> = {};
      const entries: Record<string, number> = {};
      const t0 = performance.now();
      const r = await transferOk(server, {
        op: 'send',
        sources: [dir],
        dest: '/many',
        createDir: true,
        onControl: (dir, m: ControlMessage) => {
          const k = `${dir} ${m.t}`;
          counts[k] = (counts[k] ?? 0) + 1;
          if ('files' in m && Array.isArray(m.files)) entries[k] = (entries[k] ?? 0) + m.files.length;
        },
      });
      const seconds = (performance.now() - t0) / 1000;
      assert.ok(r.client.ok);
      assert.equal(r.client.files.length, n);
      assert.equal(readFileSync(path.join(server.root, 'many', 'many', 'f01999.bin')).readUInt32BE(0), 1999);
      // every file is accounted for in the batches...
      assert.equal(entries['sent probe'], n);
      assert.equal(entries['received plan'], n);
      assert.equal(entries['sent files'], n);
      assert.equal(entries['sent digests'], n);
      assert.equal(entries['received results'], n);
      // ...carried by far fewer messages than files
      const sent = Object.entries(counts).filter(([k]) => k.startsWith('sent')).reduce((a, [, v]) => a + v, 0);
      const received = Object.entries(counts).filter(([k]) => k.startsWith('received')).reduce((a, [, v]) => a + v, 0);
      assert.ok(sent <= n / 5 && received <= n / 5, `messages sent ${sent}, received ${received} for ${n} files: ${JSON.stringify(counts)}`);
      assert.equal(r.client.stats!.controlSent, sent - 1, 'the role counts all it sent but hello');
      assert.ok(seconds < 60, `took ${seconds.toFixed(1)} s`);
    });
  });
});
