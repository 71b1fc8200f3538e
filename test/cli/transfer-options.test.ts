/**
 * The transfer options of `tachyon send` / `recv` end to end, with real processes:
 * a client killed (SIGKILL) half-way and resumed with `-k sparse`, the `--manifest` and
 * per-file `--json` events, `--overwrite never`, and `--file-list` (whose entries that
 * leave the server's root are refused by the jail).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { jsonLines, runCli, startCli, startCliServer, type CliServer } from '../helpers/cli.js';

const MiB = 1 << 20;
const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function sizeOf(p: string): number {
  try {
    return statSync(p).size;
  } catch {
    return 0;
  }
}

describe('tachyon send/recv transfer options', () => {
  let work: string;
  let server: CliServer;
  const remote = (p: string): string => `xfer@127.0.0.1:${p}`;

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-cliopt-'));
    server = await startCliServer(work);
  });

  after(() => {
    server?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('a client killed at about 50% resumes with -k sparse: under 55% of the bytes go over UDP again (besides what was sent speculatively before the plan), and the file verifies', async (t) => {
    const size = 48 * MiB;
    const src = path.join(work, 'big.bin');
    writeFileSync(src, randomBytes(size));
    mkdirSync(path.join(server.root, 'resume'));
    const partial = path.join(server.root, 'resume', '.big.bin.tachyon-partial');
    const record = `${partial}.json`;
    // jumbo datagrams on loopback: the header overhead (0.6%) does not blur the figure
    const opts = [...server.common(), '-k', 'sparse', '--mtu', '9000', '-l', '200m', '--policy', 'fixed', '--json'];
    const ended = (): number => server.events.filter((e) => e.type === 'transfer.error' || e.type === 'transfer.end').length;
    const before = ended();
    const first = startCli(['send', ...opts, src, remote('/resume/')], work);
    await waitFor(() => sizeOf(partial) >= size / 2, 30_000, 'half of the file at the server');
    first.child.kill('SIGKILL');
    await first.done;
    // the server sees the connection drop, keeps the partial file and records what it holds
    await waitFor(() => ended() > before, 10_000, 'the end of the session at the server');
    assert.ok(existsSync(record), 'the resume record is kept');
    const kept = (JSON.parse(readFileSync(record, 'utf8')) as { verified: number }).verified;
    assert.ok(kept > size * 0.4 && kept <= size * 0.6, `kept ${kept} of ${size}`);

    const second = await runCli(['send', ...opts, src, remote('/resume/')], work);
    assert.equal(second.code, 0, second.stderr);
    const done = jsonLines(second.stdout).find((e) => e.event === 'done')!;
    const stats = done.stats as Record<string, number>;
    // early data: blocks sent from offset 0 before the plan said `check` are a void range, early data's price for a resume
    const speculative = stats.voidBlocks! * (9000 - 28);
    t.diagnostic(`killed with ${kept} of ${size} bytes kept (${((100 * kept) / size).toFixed(1)}%); the resumed run sent ${stats.bytesSent} bytes over UDP (${((100 * stats.bytesSent!) / size).toFixed(1)}%, of them ${speculative} speculative, void) in ${String(done.transferSeconds)} s`);
    assert.ok(stats.bytesSent! - speculative < size * 0.55, `the resumed run sent ${stats.bytesSent} bytes over UDP (${speculative} of them void) for a ${size}-byte file`);
    assert.equal(done.skippedBytes, kept);
    const fileDone = jsonLines(second.stdout).find((e) => e.event === 'file.done')!;
    assert.equal(fileDone.skippedBytes, kept);
    assert.equal(fileDone.bytes, size - kept);
    assert.equal(sha(path.join(server.root, 'resume', 'big.bin')), sha(src), 'verified');
    assert.ok(!existsSync(partial) && !existsSync(record));
  });

  it('--manifest writes one JSON line per file (done, skipped, failed) and --json prints file.start/file.done/file.error', async () => {
    const dir = path.join(work, 'mixed');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'new.bin'), randomBytes(200_000));
    writeFileSync(path.join(dir, 'same.bin'), 'same');
    writeFileSync(path.join(dir, 'blocked'), 'x');
    const dest = path.join(server.root, 'mixed');
    mkdirSync(path.join(dest, 'blocked'), { recursive: true });
    // same.bin is already there, identical (the first run), so diff skips it the second time
    const pre = await runCli(['send', ...server.common(), path.join(dir, 'same.bin'), remote('/mixed/')], work);
    assert.equal(pre.code, 0, pre.stderr);
    const manifest = path.join(work, 'manifest.jsonl');
    const r = await runCli(['send', ...server.common(), '--json', '--manifest', manifest, '--src-base', dir, dir, remote('/mixed/')], work);
    assert.equal(r.code, 1, 'a failed file fails the command');
    const lines = readFileSync(manifest, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const byPath = Object.fromEntries(lines.map((l) => [l.path as string, l]));
    assert.equal(lines.length, 3);
    assert.deepEqual(byPath['new.bin'], { path: 'new.bin', size: 200_000, status: 'done', sha256: sha(path.join(dir, 'new.bin')), bytes: 200_000, skippedBytes: 0 });
    assert.deepEqual(byPath['same.bin'], { path: 'same.bin', size: 4, status: 'skipped', reason: 'same', bytes: 0, skippedBytes: 4 });
    assert.equal(byPath['blocked']!.status, 'failed');
    assert.equal(byPath['blocked']!.code, 'IS_DIRECTORY');

    const events = jsonLines(r.stdout);
    assert.deepEqual(
      events.filter((e) => e.event === 'file.start').map((e) => e.path),
      ['new.bin'],
      'only the file that is sent starts',
    );
    const done = events.filter((e) => e.event === 'file.done');
    assert.deepEqual(done.map((e) => `${String(e.path)} ${String(e.status)}`).sort(), ['new.bin done', 'same.bin skipped']);
    const sent = done.find((e) => e.path === 'new.bin')!;
    assert.equal(sent.bytes, 200_000);
    assert.equal(typeof sent.rateMbps, 'number');
    assert.equal(typeof sent.seconds, 'number');
    const err = events.find((e) => e.event === 'file.error')!;
    assert.equal(err.path, 'blocked');
    assert.equal(err.code, 'IS_DIRECTORY');
    const final = events.at(-1)!;
    assert.equal(final.event, 'done');
    assert.equal(final.files, 3);
    assert.equal(final.skipped, 1);
    assert.equal(final.failed, 1);
    assert.equal(final.bytes, 200_000);
    assert.equal(final.skippedBytes, 4);
    assert.ok(events.some((e) => e.event === 'progress'), 'the progress events are still printed');
  });

  it('--overwrite never skips existing files, reports them, and exits 0', async () => {
    const dir = path.join(work, 'never');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'a.txt'), 'new a');
    writeFileSync(path.join(dir, 'b.txt'), 'new b');
    mkdirSync(path.join(server.root, 'never'));
    writeFileSync(path.join(server.root, 'never', 'a.txt'), 'old a');
    const r = await runCli(['send', ...server.common(), '--json', '--overwrite', 'never', path.join(dir, 'a.txt'), path.join(dir, 'b.txt'), remote('/never/')], work);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(path.join(server.root, 'never', 'a.txt'), 'utf8'), 'old a');
    assert.equal(readFileSync(path.join(server.root, 'never', 'b.txt'), 'utf8'), 'new b');
    const skipped = jsonLines(r.stdout).find((e) => e.event === 'file.done' && e.path === 'a.txt')!;
    assert.equal(skipped.status, 'skipped');
    assert.equal(skipped.reason, 'exists');
    const plain = await runCli(['send', ...server.common(), '--overwrite', 'never', path.join(dir, 'a.txt'), remote('/never/')], work);
    assert.equal(plain.code, 0);
    assert.match(plain.stderr, /1 skipped/);
  });

  it('--file-list sends the listed sources; a download list whose entry leaves the root is refused by the jail (exit 65)', async () => {
    const dir = path.join(work, 'listed');
    mkdirSync(path.join(dir, 'sub'), { recursive: true });
    writeFileSync(path.join(dir, 'one.txt'), 'one');
    writeFileSync(path.join(dir, 'sub', 'two.txt'), 'two');
    writeFileSync(path.join(dir, 'unlisted.txt'), 'no');
    const list = path.join(work, 'list.txt');
    writeFileSync(list, `listed/one.txt\r\n\n${path.join(dir, 'sub')}\n`);
    const up = await runCli(['send', ...server.common(), '--file-list', list, '-d', remote('/listed-up/')], work);
    assert.equal(up.code, 0, up.stderr);
    assert.deepEqual(readdirSync(path.join(server.root, 'listed-up')).sort(), ['one.txt', 'sub']);
    assert.equal(readFileSync(path.join(server.root, 'listed-up', 'sub', 'two.txt'), 'utf8'), 'two');

    const out = path.join(work, 'listed-down');
    mkdirSync(out);
    const good = path.join(work, 'good-list.txt');
    writeFileSync(good, 'one.txt\nsub/two.txt\n');
    const down = await runCli(['recv', ...server.common(), '--file-list', good, remote('/listed-up'), out], work);
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual(readdirSync(out).sort(), ['one.txt', 'two.txt']);

    const evil = path.join(work, 'evil-list.txt');
    writeFileSync(evil, '/listed-up/one.txt\n../../../etc/passwd\n');
    const out2 = path.join(work, 'evil-down');
    mkdirSync(out2);
    const refused = await runCli(['recv', ...server.common(), '--file-list', evil, remote(''), out2], work);
    assert.equal(refused.code, 65, refused.stderr);
    assert.match(refused.stderr, /Invalid path/);
    assert.deepEqual(readdirSync(out2), []);
  });

  it('bad option values are usage errors (exit 2)', async () => {
    const src = path.join(work, 'listed', 'one.txt');
    for (const bad of [['-k', '4'], ['--overwrite', 'sometimes'], ['--exclude', '[x']]) {
      const r = await runCli(['send', ...server.common(), ...bad, src, remote('/')], work);
      assert.equal(r.code, 2, `${bad.join(' ')}: ${r.stderr}`);
    }
    const r = await runCli(['send', ...server.common(), '--file-list', path.join(work, 'missing.txt'), remote('/')], work);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /file list/);
  });
});
