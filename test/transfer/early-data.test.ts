/**
 * Early data, end to end on 127.0.0.1 (serveSession and clientTransfer over an in-memory
 * control link standing in for an SSH connection from 127.0.0.1, real UDP): an upload's
 * datagrams leave right behind `hello`, under the session id and keys the client chose;
 * the server's endpoint holds them until the session exists. In a planned session the
 * first file is sent speculatively before its plan; a plan that says otherwise (skip,
 * resume, check, refuse) turns what was sent into a void range, and the files still
 * arrive exact with nothing stray left.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PROTOCOL_VERSION, type ControlMessage, type VoidRange } from '../../src/control/messages.js';
import { memoryLinkPair } from '../../src/testkit/memory-link.js';
import { formatRecord, partialPath, recordPath } from '../../src/transfer/resume.js';
import type { PacketSink } from '../../src/transport/session/endpoint.js';
import { exists, partials, removeDir, sha256File, startServer, tempDir, transferOk, type Server } from '../helpers/loopback.js';
import { Rng } from '../helpers/rng.js';

const MiB = 1 << 20;
const rng = new Rng(0xea21);
const T0 = 1_700_000_000;

describe('early data: an upload starts before welcome', () => {
  let work: string;
  let local: string;
  let server: Server;

  before(async () => {
    work = tempDir('early');
    local = path.join(work, 'local');
    mkdirSync(path.join(work, 'root'));
    mkdirSync(local);
    server = await startServer(path.join(work, 'root'));
  });

  after(async () => {
    await server.close();
    removeDir(work);
  });

  /** What the client sent on the control channel, and when the welcome came relative to the first datagram. */
  function watch(): { voids: VoidRange[]; sent: ControlMessage[]; onControl: (d: 'sent' | 'received', m: ControlMessage) => void } {
    const voids: VoidRange[] = [];
    const sent: ControlMessage[] = [];
    return {
      voids,
      sent,
      onControl: (d, m) => {
        if (d !== 'sent') return;
        sent.push(m);
        if (m.t === 'files') for (const e of m.files) if ('void' in e) voids.push(e);
      },
    };
  }

  function source(name: string, size: number): { path: string; data: Buffer } {
    const p = path.join(local, name);
    const data = rng.bytes(size);
    writeFileSync(p, data);
    utimesSync(p, T0, T0);
    return { path: p, data };
  }

  for (const overwrite of ['always', 'diff'] as const) {
    it(`--overwrite ${overwrite}${overwrite === 'always' ? ' (no plan: announced at once)' : ' (planned: the first file is speculative)'}: the data leaves before welcome, the server delivers what it held, the file is exact`, async () => {
      const src = source(`up-${overwrite}.bin`, 8 * MiB + 123);
      const before = { ...server.endpoint.stats };
      let sentAtWelcome = -1;
      let socketSent: Buffer[] | undefined;
      const w = watch();
      const r = await transferOk(server, {
        op: 'send',
        sources: [src.path],
        dest: `/up-${overwrite}.bin`,
        overwrite,
        onControl: w.onControl,
        onSocket: (s) => (socketSent = s.sent),
        onWelcome: () => (sentAtWelcome = socketSent?.length ?? -1),
        // the first datagrams overtake hello (as on a real path, where the TCP flight leaves a few ms later)
        delayHello: 30,
        // the plan comes late: the speculative file keeps flowing meanwhile
        ...(overwrite === 'diff' ? { delayPlan: 50 } : {}),
      });
      const f = r.client.files[0]!;
      assert.equal(f.status, 'done');
      assert.equal(sha256File(path.join(server.root, `up-${overwrite}.bin`)), sha256File(src.path));
      assert.equal(f.sha256, sha256File(src.path));
      const ep = server.endpoint.stats;
      assert.ok(sentAtWelcome > 0, `datagrams sent before welcome: ${sentAtWelcome}`);
      assert.ok(ep.held - before.held > 0, 'the server held early datagrams');
      assert.ok(ep.heldDelivered - before.heldDelivered > 0, `held datagrams delivered: ${ep.heldDelivered - before.heldDelivered}`);
      assert.equal(ep.heldDropped - before.heldDropped, 0);
      assert.deepEqual(w.voids, [], 'nothing void: the plan said send');
      const announce = w.sent.flatMap((m) => (m.t === 'files' ? m.files : [])).find((e) => 'ssn0' in e && !('void' in e));
      assert.deepEqual(announce && 'ssn0' in announce ? announce.ssn0 : undefined, 0);
      assert.deepEqual(partials(server.root), []);
    });
  }

  it('a plan that comes late (a lost TCP segment): the speculative file stops at 24 MiB, inside what the receiver holds, and goes on once the plan says send', async () => {
    const src = source('late-plan.bin', 48 * MiB);
    const before = { ...server.endpoint.stats };
    let socketSent: Buffer[] | undefined;
    let atPlan = -1;
    const r = await transferOk(server, {
      op: 'send',
      sources: [src.path],
      dest: '/late-plan.bin',
      onSocket: (s) => (socketSent = s.sent),
      onControl: (d, m) => {
        // the harness holds the plan 2.5 s after this: look just before it is handed over
        if (d === 'received' && m.t === 'plan') setTimeout(() => (atPlan = (socketSent ?? []).filter((p) => p[0] === 0x11).reduce((n, p) => n + p.length - 40, 0)), 2400);
      },
      delayPlan: 2500,
    });
    assert.equal(r.client.files[0]!.status, 'done');
    assert.equal(sha256File(path.join(server.root, 'late-plan.bin')), sha256File(src.path));
    // block bytes in DATA datagrams (version 1, type 1; 40 bytes of header and tag each) before the plan: 24 MiB and repairs
    assert.ok(atPlan > 20 * MiB && atPlan <= 26 * MiB, `${(atPlan / MiB).toFixed(1)} MiB of blocks sent before the plan`);
    assert.equal(server.endpoint.stats.heldDropped - before.heldDropped, 0);
    assert.deepEqual(partials(server.root), []);
  });

  it('the destination already holds the same file (plan skip): the speculative blocks are void, nothing is written', async () => {
    const src = source('same.bin', 4 * MiB);
    await transferOk(server, { op: 'send', sources: [src.path], dest: '/same.bin' });
    const stored = path.join(server.root, 'same.bin');
    const ino = statSync(stored).ino;
    const w = watch();
    const r = await transferOk(server, { op: 'send', sources: [src.path], dest: '/same.bin', onControl: w.onControl, delayPlan: 50 });
    const f = r.client.files[0]!;
    assert.equal(f.status, 'skipped');
    assert.equal(f.reason, 'same');
    assert.equal(w.voids.length, 1, JSON.stringify(w.voids));
    assert.equal(w.voids[0]!.ssn0, 0);
    assert.ok(w.voids[0]!.void > 0);
    assert.equal(statSync(stored).ino, ino, 'the stored file was not replaced');
    assert.ok(readFileSync(stored).equals(src.data));
    assert.deepEqual(partials(server.root), []);
  });

  it('--overwrite never with an existing file (plan skip exists), followed by a file that is sent after the void range', async () => {
    const a = source('never-a.bin', 3 * MiB);
    const b = source('never-b.bin', 2 * MiB + 7);
    mkdirSync(path.join(server.root, 'never'));
    const kept = randomBytes(1000);
    writeFileSync(path.join(server.root, 'never', 'never-a.bin'), kept);
    const w = watch();
    const r = await transferOk(server, { op: 'send', sources: [a.path, b.path], dest: '/never', overwrite: 'never', onControl: w.onControl, delayPlan: 50 });
    const byName = Object.fromEntries(r.client.files.map((f) => [path.basename(f.path), f]));
    assert.equal(byName['never-a.bin']!.status, 'skipped');
    assert.equal(byName['never-a.bin']!.reason, 'exists');
    assert.equal(byName['never-b.bin']!.status, 'done');
    assert.ok(readFileSync(path.join(server.root, 'never', 'never-a.bin')).equals(kept), 'the existing file is untouched');
    assert.ok(readFileSync(path.join(server.root, 'never', 'never-b.bin')).equals(b.data));
    assert.equal(w.voids.length, 1);
    const v = w.voids[0]!;
    const announced = w.sent.flatMap((m) => (m.t === 'files' ? m.files : [])).filter((e) => 'path' in e);
    assert.equal(announced.length, 1);
    assert.ok('ssn0' in announced[0]! && announced[0].ssn0 >= v.ssn0 + v.void, `the next file starts after the void range ${JSON.stringify(v)}: ${JSON.stringify(announced[0])}`);
    assert.deepEqual(partials(server.root), []);
  });

  for (const resume of ['attrs', 'sparse', 'full'] as const) {
    it(`a partial upload to resume (-k ${resume}: plan ${resume === 'attrs' ? 'resume' : 'check'}): void range, then only the rest; exact, no partial left`, async () => {
      const size = 5 * MiB + 11;
      const kept = 2 * MiB;
      const src = source(`resume-${resume}.bin`, size);
      const final = path.join(server.root, `resume-${resume}.bin`);
      writeFileSync(partialPath(final), Buffer.concat([src.data.subarray(0, kept), rng.bytes(1000)]));
      writeFileSync(recordPath(final), formatRecord({ size, mtimeMs: T0 * 1000, verified: kept }));
      const w = watch();
      const r = await transferOk(server, { op: 'send', sources: [src.path], dest: `/resume-${resume}.bin`, resume, onControl: w.onControl, delayPlan: 50 });
      const f = r.client.files[0]!;
      assert.equal(f.status, 'done');
      assert.equal(f.skippedBytes, kept);
      assert.ok(readFileSync(final).equals(src.data));
      assert.equal(w.voids.length, 1);
      assert.ok(w.voids[0]!.void > 0);
      assert.ok(!exists(partialPath(final)) && !exists(recordPath(final)));
      assert.deepEqual(partials(server.root), []);
    });
  }

  it('the destination is a directory (plan refuse): the file fails with IS_DIRECTORY, the next one arrives', async () => {
    const a = source('isdir.bin', 2 * MiB);
    const b = source('after-isdir.bin', MiB);
    mkdirSync(path.join(server.root, 'refuse', 'isdir.bin'), { recursive: true });
    const w = watch();
    const r = await transferOk(server, { op: 'send', sources: [a.path, b.path], dest: '/refuse', onControl: w.onControl, delayPlan: 50 });
    const byName = Object.fromEntries(r.client.files.map((f) => [path.basename(f.path), f]));
    assert.equal(byName['isdir.bin']!.status, 'failed');
    assert.equal(byName['isdir.bin']!.code, 'IS_DIRECTORY');
    assert.equal(byName['after-isdir.bin']!.status, 'done');
    assert.ok(readFileSync(path.join(server.root, 'refuse', 'after-isdir.bin')).equals(b.data));
    assert.ok(statSync(path.join(server.root, 'refuse', 'isdir.bin')).isDirectory());
    assert.equal(w.voids.length, 1);
    assert.deepEqual(partials(server.root), []);
  });

  it('without a port guess the client waits for welcome, as before (no early field, nothing held)', async () => {
    const src = source('late.bin', MiB);
    const before = { ...server.endpoint.stats };
    let hello: ControlMessage | undefined;
    await transferOk(server, { op: 'send', sources: [src.path], dest: '/late.bin', serverPort: null, onControl: (d, m) => d === 'sent' && m.t === 'hello' && (hello = m) });
    assert.ok(hello && hello.t === 'hello' && hello.early === undefined);
    assert.equal(server.endpoint.stats.held, before.held);
    assert.equal(sha256File(path.join(server.root, 'late.bin')), sha256File(src.path));
  });

  it('a guessed port that is wrong: welcome redirects the data, the lost early datagrams are asked for again', async () => {
    const src = source('wrong-port.bin', 3 * MiB);
    // a port with nothing behind it (the server's endpoint never sees what goes there)
    const before = { ...server.endpoint.stats };
    const r = await transferOk(server, { op: 'send', sources: [src.path], dest: '/wrong-port.bin', serverPort: server.port === 1 ? 2 : 1 });
    assert.equal(r.client.files[0]!.status, 'done');
    assert.equal(sha256File(path.join(server.root, 'wrong-port.bin')), sha256File(src.path));
    assert.equal(server.endpoint.stats.heldDelivered, before.heldDelivered);
  });

  it('a session id the client chose that is in use on the server is refused with BUSY (retryable), before anything is set up', async () => {
    const id = 0x5eed1d;
    const taken: PacketSink = { onPacket() {} };
    server.endpoint.register(id, taken);
    try {
      const [cl, sl] = memoryLinkPair();
      const served = server.serve(sl).then(
        () => undefined,
        (e: unknown) => e,
      );
      const got: ControlMessage[] = [];
      cl.onMessage((m) => got.push(m));
      const key = (): string => randomBytes(32).toString('base64');
      cl.send({ t: 'hello', v: PROTOCOL_VERSION, op: 'send', cipher: 'aes-128-gcm', policy: 'fair', targetRate: 1e8, minRate: 0, datagramSize: 1472, dest: '/', early: { sessionId: id, c2s: key(), s2c: key() } });
      const err = (await served) as { code?: string } | undefined;
      assert.equal(err?.code, 'BUSY');
      await new Promise((r) => setImmediate(r));
      assert.equal(got.length, 1);
      const m = got[0]!;
      assert.ok(m.t === 'error' && m.code === 'BUSY', JSON.stringify(m));
      assert.match(m.message, /session id .* in use .* try again/);
      assert.equal(server.endpoint.sessionCount, 1, 'only the session that held the id');
    } finally {
      server.endpoint.unregister(id);
    }
  });
});
