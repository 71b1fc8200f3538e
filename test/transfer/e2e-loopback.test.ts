/**
 * End to end on 127.0.0.1: serveSession and clientTransfer over an in-memory control
 * link and real UDP sockets. Uploads and downloads of a large file and of a tree
 * (nested directories, an empty file, an empty directory) must arrive bit-exact with
 * nothing temporary left behind; then hostile and failing conditions: junk and replayed
 * datagrams, a client that vanishes, a directory in the way, path traversal, a refused
 * cipher and a full disk.
 */
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { TachyonError } from '../../src/core/errors.js';
import { PROTOCOL_VERSION, type ControlMessage } from '../../src/control/messages.js';
import { memoryLinkPair } from '../../src/testkit/memory-link.js';
import { downloadResolver } from '../../src/transfer/session.js';
import { PacketType, writeCommon } from '../../src/transport/wire/packet.js';
import { throwsCode } from '../helpers/errors.js';
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
  type Settled,
} from '../helpers/loopback.js';
import { Rng } from '../helpers/rng.js';

const MiB = 1 << 20;
const rng = new Rng(0xe2e);

/** Asserts a settled result is a TachyonError with `code`; returns it. */
function failedWith<T>(s: Settled<T>, code: string, what: string): TachyonError {
  assert.ok(!s.ok, `${what}: expected failure ${code}, but it succeeded`);
  const e = s.error;
  assert.ok(e instanceof TachyonError, `${what}: expected a TachyonError, got ${String(e)}`);
  assert.equal(e.code, code, `${what}: ${e.code}: ${e.message}`);
  return e;
}

/** Waits until `cond()` holds (polling), or fails after `ms`. */
async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** After a session: no timer of it is still running and no session is registered. */
async function assertNoLeaks(server: Server, what: string): Promise<void> {
  await new Promise((r) => setImmediate(r));
  assert.equal(server.endpoint.sessionCount, 0, `${what}: a session is still registered on the server endpoint`);
  assert.equal(server.clock.pending, 0, `${what}: ${server.clock.pending} server timer(s) still running`);
}

describe('end to end over loopback', () => {
  let work: string;
  let server: Server;
  let local: string; // client-side files
  let big: string;
  let tree: string;

  before(async () => {
    work = tempDir('e2e');
    const root = path.join(work, 'root');
    local = path.join(work, 'local');
    mkdirSync(root);
    mkdirSync(local);
    big = path.join(local, 'big.bin');
    writeFileSync(big, rng.bytes(20 * MiB));
    tree = path.join(local, 'tree');
    mkdirSync(path.join(tree, 'a', 'b', 'c'), { recursive: true });
    mkdirSync(path.join(tree, 'emptydir'));
    mkdirSync(path.join(tree, 'z'));
    writeFileSync(path.join(tree, 'a', 'b', 'c', 'deep.bin'), rng.bytes(300_001));
    writeFileSync(path.join(tree, 'a', 'b', 'sibling.bin'), rng.bytes(1432 * 3)); // exactly three blocks
    writeFileSync(path.join(tree, 'a', 'one.txt'), 'one\n');
    writeFileSync(path.join(tree, 'empty.bin'), '');
    writeFileSync(path.join(tree, 'z', 'x.bin'), rng.bytes(MiB + 3));
    server = await startServer(root);
  });

  after(async () => {
    await server.close();
    removeDir(work);
  });

  describe('round trips', () => {
    it('uploads a 20 MiB file and downloads it back, bit-exact', async () => {
      const up = await transferOk(server, { op: 'send', sources: [big], dest: '/' });
      assert.ok(up.client.ok, JSON.stringify(up.client.files));
      assert.equal(up.client.bytes, 20 * MiB);
      const stored = path.join(server.root, 'big.bin');
      const digest = sha256File(big);
      assert.equal(sha256File(stored), digest);
      assert.equal(up.client.files[0]?.sha256, digest);
      assert.ok(Math.abs(statSync(stored).mtimeMs - statSync(big).mtimeMs) < 1, 'the modification time is kept');
      assert.equal(up.clientTimers, 0, 'client timers left running');
      await assertNoLeaks(server, 'upload');

      const dl = path.join(work, 'dl-big');
      mkdirSync(dl);
      const down = await transferOk(server, { op: 'recv', sources: ['/big.bin'], dest: dl });
      assert.ok(down.client.ok);
      assert.ok(readFileSync(path.join(dl, 'big.bin')).equals(readFileSync(big)));
      assert.deepEqual([...partials(server.root), ...partials(dl)], []);
      assert.equal(down.clientTimers, 0, 'client timers left running');
      await assertNoLeaks(server, 'download');
    });

    it("verification does not wait for the 'digests' message: held back 4 s (a lost TCP segment), a 20 MiB upload and download still end in < 2.5 s, bit-exact", async () => {
      // the sender also sends a large file's digest in STATUS datagrams; without them the
      // receiver can verify the complete file only when 'digests' arrives, 4 s late
      const t0 = performance.now();
      const up = await transferOk(server, { op: 'send', sources: [big], dest: '/late-digest.bin', delayDigests: 4000 });
      const upMs = performance.now() - t0;
      assert.ok(up.client.ok, JSON.stringify(up.client.files));
      assert.equal(sha256File(path.join(server.root, 'late-digest.bin')), sha256File(big));
      assert.ok(upMs < 2500, `upload took ${upMs.toFixed(0)} ms`);
      const dl = path.join(work, 'dl-late-digest');
      mkdirSync(dl);
      const t1 = performance.now();
      const down = await transferOk(server, { op: 'recv', sources: ['/late-digest.bin'], dest: dl, delayDigests: 4000 });
      const downMs = performance.now() - t1;
      assert.ok(down.client.ok, JSON.stringify(down.client.files));
      assert.ok(readFileSync(path.join(dl, 'late-digest.bin')).equals(readFileSync(big)));
      assert.ok(downMs < 2500, `download took ${downMs.toFixed(0)} ms`);
      await assertNoLeaks(server, 'late digests');
    });

    it("success does not wait for the 'results' message: held back 4 s (a lost TCP segment), an upload and a download of a tree still end in < 2.5 s, bit-exact", async () => {
      // the receiver repeats 'verified' file ids in its UDP feedback; without that fast
      // path the sender settles files only when 'results' arrives, 4 s late
      const t0 = performance.now();
      const up = await transferOk(server, { op: 'send', sources: [tree, big], dest: '/late', createDir: true, delayResults: 4000 });
      const upMs = performance.now() - t0;
      assert.ok(up.client.ok, JSON.stringify(up.client.files));
      assert.equal(up.client.files.filter((f) => f.status === 'done').length, 6);
      assert.equal(sha256File(path.join(server.root, 'late', 'big.bin')), sha256File(big));
      assert.ok(upMs < 2500, `upload took ${upMs.toFixed(0)} ms`);
      const dl = path.join(work, 'dl-late');
      mkdirSync(dl);
      const t1 = performance.now();
      const down = await transferOk(server, { op: 'recv', sources: ['/late/big.bin', '/late/tree'], dest: dl, delayResults: 4000 });
      const downMs = performance.now() - t1;
      assert.ok(down.client.ok, JSON.stringify(down.client.files));
      assert.ok(readFileSync(path.join(dl, 'big.bin')).equals(readFileSync(big)));
      assert.ok(readFileSync(path.join(dl, 'tree', 'z', 'x.bin')).equals(readFileSync(path.join(tree, 'z', 'x.bin'))));
      assert.ok(downMs < 2500, `download took ${downMs.toFixed(0)} ms`);
      await assertNoLeaks(server, 'late results');
    });

    it('uploads a tree with nested directories, an empty file and an empty directory, and downloads it back', async () => {
      const up = await transferOk(server, { op: 'send', sources: [tree], dest: '/up', createDir: true });
      assert.ok(up.client.ok, JSON.stringify(up.client.files));
      assert.equal(up.client.files.length, 5);
      const expected = treeListing(tree);
      assert.ok(expected.includes('d emptydir') && expected.some((l) => l.startsWith('f empty.bin ')));
      assert.deepEqual(treeListing(path.join(server.root, 'up', 'tree')), expected);

      const dl = path.join(work, 'dl-tree');
      mkdirSync(dl);
      const down = await transferOk(server, { op: 'recv', sources: ['/up/tree'], dest: dl });
      assert.ok(down.client.ok, JSON.stringify(down.client.files));
      assert.deepEqual(treeListing(path.join(dl, 'tree')), expected);
      assert.deepEqual([...partials(server.root), ...partials(dl)], []);
      await assertNoLeaks(server, 'tree');
    });
  });

  describe('bad input', () => {
    it('a flood of junk, forged and replayed datagrams during an upload is rejected and the file is still exact', async (t: TestContext) => {
      const src = path.join(local, 'flooded.bin');
      writeFileSync(src, rng.bytes(6 * MiB));
      const junk = dgram.createSocket('udp4');
      // from an address without a (stand-in) SSH connection: the endpoint holds nothing from it
      await new Promise<void>((r) => junk.bind(0, '127.0.0.2', () => r()));
      const r = new Rng(0xf100d);
      const sent = { random: 0, forged: 0, replayed: 0 };
      let sessionId = 0;
      let captured: CapturingSocket | undefined;
      let flooding = true;
      const fire = (b: Buffer): void => junk.send(b, server.port, '127.0.0.1');
      const flood = setInterval(() => {
        // bounded, so that a slow machine does not turn the flood into a longer test
        if (!flooding || sessionId === 0 || sent.random >= 3000) return;
        for (let i = 0; i < 10; i++) {
          fire(r.bytes(r.int(1500)));
          sent.random++;
          // a well-formed header for the live session, garbage behind it
          const forged = r.bytes(r.range(24, 1472));
          writeCommon(forged, r.pick([PacketType.DATA, PacketType.STATUS, PacketType.FEEDBACK]), r.int(2), sessionId, r.int(2 ** 32));
          fire(forged);
          sent.forged++;
          // a replay of a real datagram the client sent a little earlier
          const real = captured?.sent;
          if (real && real.length > 50) {
            fire(real[r.int(real.length - 20)]!);
            sent.replayed++;
          }
        }
      }, 2);
      const before = { ...server.endpoint.stats };
      try {
        const run = startTransfer(server, {
          op: 'send',
          sources: [src],
          dest: '/flooded.bin',
          policy: 'fixed',
          // slow enough (about 1.3 s) that the flood's timer gets its turns on a busy machine
          targetBps: 40e6,
          onWelcome: (w) => (sessionId = w.sessionId),
          onSocket: (s) => (captured = s),
        });
        const [c, s] = await Promise.all([run.client, run.server]);
        flooding = false;
        assert.ok(c.ok, `client failed: ${String(!c.ok && c.error)}`);
        assert.ok(s.ok && s.value, `server failed: ${String(!s.ok && s.error)}`);
        assert.ok(c.value.ok);
        assert.equal(sha256File(path.join(server.root, 'flooded.bin')), sha256File(src));
        const { rejected = Number.NaN, replayed = Number.NaN } = s.value.stats ?? {};
        const ep = server.endpoint.stats;
        const unknown = ep.unknownSession - before.unknownSession;
        const malformed = ep.malformed - before.malformed;
        t.diagnostic(`junk sent ${JSON.stringify(sent)}; receiver rejected ${rejected} (replayed ${replayed}); endpoint unknown session ${unknown}, malformed ${malformed}`);
        assert.ok(sent.random > 300 && sent.forged > 300 && sent.replayed > 300, 'the flood ran during the transfer');
        assert.ok(replayed > 0, 'replays were recognised');
        assert.ok(rejected >= replayed);
        assert.ok(malformed > 0 && unknown > 0);
        // the junk that reached the socket is counted (the kernel drops some under load)
        const accounted = rejected + unknown + malformed;
        const total = sent.random + sent.forged + sent.replayed;
        assert.ok(accounted >= 0.3 * total, `only ${accounted} of ${total} junk datagrams counted`);
      } finally {
        flooding = false;
        clearInterval(flood);
        junk.close();
      }
      await assertNoLeaks(server, 'flood');
    });

    it('a client that vanishes mid-transfer: the server fails clearly, keeps no file, and serves the next session', async () => {
      const src = path.join(local, 'vanish.bin');
      writeFileSync(src, rng.bytes(16 * MiB));
      let sock: CapturingSocket | undefined;
      const run = startTransfer(server, { op: 'send', sources: [src], dest: '/vanish.bin', policy: 'fixed', targetBps: 50e6, onSocket: (s) => (sock = s) });
      await waitFor(() => (sock?.sent.length ?? 0) > 1000, 10_000, 'the upload to start');
      // abruptly: the control link and the UDP socket go away together
      run.clientLink.close();
      await sock!.close();
      const s = await run.server;
      const e = failedWith(s, 'PEER_VANISHED', 'server');
      assert.match(e.message, /control connection closed/);
      assert.ok(!(await run.client).ok, 'the client side fails too');
      await new Promise((r) => setImmediate(r));
      assert.equal(run.clientClock.pending, 0, 'client timers left running');
      assert.ok(!exists(path.join(server.root, 'vanish.bin')), 'no file under the final name');
      assert.deepEqual(partials(server.root), []);
      await assertNoLeaks(server, 'vanished client');

      // the same endpoint serves another session
      const small = path.join(local, 'after.bin');
      writeFileSync(small, rng.bytes(100_000));
      const next = await transferOk(server, { op: 'send', sources: [small], dest: '/' });
      assert.ok(next.client.ok);
      assert.equal(sha256File(path.join(server.root, 'after.bin')), sha256File(small));
    });

    it('uploading file x where the destination x is a directory: per-file IS_DIRECTORY, directory untouched', async () => {
      const dir = path.join(server.root, 'x');
      mkdirSync(dir);
      writeFileSync(path.join(dir, 'keep.txt'), 'keep me');
      const srcDir = path.join(local, 'isdir');
      mkdirSync(srcDir);
      writeFileSync(path.join(srcDir, 'x'), rng.bytes(50_000));
      const before = treeListing(dir);
      const r = await transferOk(server, { op: 'send', sources: [path.join(srcDir, 'x')], dest: '/' });
      assert.equal(r.client.ok, false);
      assert.equal(r.client.files.length, 1);
      assert.equal(r.client.files[0]?.ok, false);
      assert.equal(r.client.files[0]?.code, 'IS_DIRECTORY');
      assert.deepEqual(treeListing(dir), before);
      assert.deepEqual(partials(server.root), []);
      await assertNoLeaks(server, 'is-directory');
    });

    /** One refused upload to '../../etc', on a server of its own so that whatever it leaks stays there. */
    let traversal: Promise<{ client: Settled<unknown>; server: Settled<unknown>; sessions: number; timers: number }> | undefined;
    function refusedDestination(): NonNullable<typeof traversal> {
      traversal ??= (async () => {
        const own = await startServer(server.root);
        try {
          const small = path.join(local, 'trav.bin');
          writeFileSync(small, 'x');
          const run = startTransfer(own, { op: 'send', sources: [small], dest: '../../etc' });
          const [client, srv] = await Promise.all([run.client, run.server]);
          await new Promise((r) => setTimeout(r, 20));
          return { client, server: srv, sessions: own.endpoint.sessionCount, timers: own.clock.pending };
        } finally {
          await own.close();
        }
      })();
      return traversal;
    }

    it("a destination that climbs out of the root ('../../etc') is refused by the server with PATH_INVALID", async () => {
      failedWith((await refusedDestination()).server, 'PATH_INVALID', 'server');
    });

    it("the client whose destination is refused is told PATH_INVALID", async () => {
      failedWith((await refusedDestination()).client, 'PATH_INVALID', 'client');
    });

    it('a refused destination leaves no session registered and no timer running on the server', async () => {
        const r = await refusedDestination();
        assert.equal(r.sessions, 0, 'sessions still registered on the endpoint');
        assert.equal(r.timers, 0, 'timers still running');
    });

    it("a download source that climbs out of the root is refused with PATH_INVALID", async () => {
      const dl = path.join(work, 'dl-trav');
      mkdirSync(dl);
      const run = startTransfer(server, { op: 'recv', sources: ['../../etc/passwd'], dest: dl });
      const [c, s] = await Promise.all([run.client, run.server]);
      failedWith(s, 'PATH_INVALID', 'server');
      failedWith(c, 'PATH_INVALID', 'client');
      assert.deepEqual(readdirSync(dl), []);
      await assertNoLeaks(server, 'refused source');
    });

    it("a file path with '..' announced by a hostile client is refused per file with PATH_INVALID", async () => {
      const evil = ['../escape.bin', 'a/../../escape.bin', 'a/b/../../../escape.bin'];
      // unplanned (files announced at once) and planned (probed first): both refuse each path
      for (const overwrite of ['always', 'diff'] as const) {
        const [cl, sl] = memoryLinkPair();
        const served = server.serve(sl);
        const got: ControlMessage[] = [];
        cl.onMessage((m) => got.push(m));
        cl.send({ t: 'hello', v: PROTOCOL_VERSION, op: 'send', cipher: 'aes-128-gcm', policy: 'fair', targetRate: 1e8, minRate: 0, datagramSize: 1472, dest: '/', overwrite, resume: 'none' });
        await waitFor(() => got.length > 0, 5_000, 'welcome');
        assert.equal(got[0]?.t, 'welcome');
        if (overwrite === 'always') cl.send({ t: 'files', files: evil.map((p, id) => ({ id, path: p, size: 10, ssn0: id })) });
        else cl.send({ t: 'probe', files: evil.map((p, id) => ({ id, path: p, size: 10 })) });
        cl.send({ t: 'end', files: evil.length, bytes: 10 * evil.length });
        const refusals = (): { code?: string }[] =>
          got.flatMap((m): { code?: string }[] => (m.t === 'results' ? m.files.filter((r) => !r.ok) : m.t === 'plan' ? m.files.filter((e) => e.do === 'refuse') : []));
        await waitFor(() => refusals().length === evil.length, 5_000, 'refusals');
        for (const r of refusals()) assert.equal(r.code, 'PATH_INVALID', JSON.stringify(r));
        const summary = await served;
        assert.equal(summary?.ok, false);
        cl.close();
      }
      assert.ok(!exists(path.join(server.root, '..', 'escape.bin')));
      assert.ok(!exists(path.join(path.dirname(server.root), 'escape.bin')));
      await assertNoLeaks(server, 'hostile paths');
    });

    it("a download client refuses paths with '..' or absolute paths from a hostile server", () => {
      const dl = path.join(work, 'dl-evil');
      mkdirSync(dl);
      const resolve = downloadResolver(dl, false);
      for (const p of ['../x', 'a/../../x', '/etc/passwd', 'a/\0b', '..']) throwsCode(() => resolve(p, 'file'), 'PATH_INVALID', p);
      assert.equal(resolve('a/./b', 'file'), path.join(dl, 'a', 'b'));
    });

    it("cipher 'none' is refused by a server that does not allow it (CIPHER_REFUSED)", async () => {
      const small = path.join(local, 'plain.bin');
      writeFileSync(small, 'plain');
      const saved = server.allowedCiphers;
      server.allowedCiphers = ['aes-128-gcm', 'aes-256-gcm'];
      try {
        const run = startTransfer(server, { op: 'send', sources: [small], dest: '/', cipher: 'none' });
        const [c, s] = await Promise.all([run.client, run.server]);
        failedWith(s, 'CIPHER_REFUSED', 'server');
        const e = failedWith(c, 'CIPHER_REFUSED', 'client');
        assert.match(e.publicMessage, /aes-128-gcm/);
        assert.ok(!exists(path.join(server.root, 'plain.bin')));
        await assertNoLeaks(server, 'refused cipher');
      } finally {
        server.allowedCiphers = saved;
      }
    });
  });

  describe('full disk', () => {
    let mnt: string | undefined;
    let skip: string | false = false;
    let diskServer: Server | undefined;

    before(async () => {
      const dir = path.join(work, 'tiny');
      mkdirSync(dir);
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir], { stdio: 'pipe' });
        mnt = dir;
        diskServer = await startServer(dir);
      } catch (err) {
        skip = `cannot mount a 2 MiB tmpfs: ${String(err).split('\n')[0]}`;
      }
    });

    after(async () => {
      await diskServer?.close();
      if (!mnt) return;
      // the failed sink closes its file once its last writes behind return (ENOSPC):
      // give the thread pool a moment before the file system is unmounted
      for (let i = 0; ; i++) {
        try {
          execFileSync('umount', [mnt], { stdio: 'pipe' });
          return;
        } catch (err) {
          if (i >= 40) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    });

    it('a 5 MiB upload into a 2 MiB file system fails with DISK_FULL and leaves no file', async (t: TestContext) => {
      if (skip || !diskServer) {
        t.skip(skip || 'no tmpfs');
        return;
      }
      const src = path.join(local, 'toolarge.bin');
      writeFileSync(src, rng.bytes(5 * MiB));
      const run = startTransfer(diskServer, { op: 'send', sources: [src], dest: '/' });
      const [c, s] = await Promise.all([run.client, run.server]);
      failedWith(c, 'DISK_FULL', 'client');
      failedWith(s, 'DISK_FULL', 'server');
      assert.ok(!exists(path.join(diskServer.root, 'toolarge.bin')), 'no file under the final name');
      assert.deepEqual(partials(diskServer.root), [], 'the partial file is removed');
      await assertNoLeaks(diskServer, 'disk full');
    });
  });
});
