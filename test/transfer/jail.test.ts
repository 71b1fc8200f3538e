/**
 * The path jail against path tricks, symbolic links in and out of the root, hard links,
 * a directory swapped for a link while in use, and seeded random paths.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  realpathSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TachyonError } from '../../src/core/errors.js';
import { Jail, MAX_COMPONENT_BYTES, MAX_PATH_BYTES, type PathRefusal } from '../../src/transfer/jail.js';
import { uploadResolver } from '../../src/transfer/session.js';
import { tempDir } from '../control/helpers.js';
import { Rng } from '../helpers/rng.js';

/** Asserts a PATH_INVALID refusal with this reason. */
function refused(fn: () => unknown, reason: PathRefusal, what: string): void {
  assert.throws(
    fn,
    (err: unknown) => {
      assert.ok(err instanceof TachyonError, `${what}: expected a TachyonError, got ${String(err)}`);
      assert.equal(err.code, 'PATH_INVALID', `${what}: code ${err.code} (${err.message})`);
      assert.equal(err.details?.['reason'], reason, `${what}: reason ${String(err.details?.['reason'])} (${err.message})`);
      assert.match(err.publicMessage, /^Invalid path: it /, what);
      return true;
    },
    `${what}: expected a refusal (${reason})`,
  );
}

function readAll(fd: number): string {
  const b = Buffer.alloc(1 << 16);
  const n = readSync(fd, b, 0, b.length, 0);
  return b.subarray(0, n).toString('utf8');
}

describe('jail', () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => {};
  let root = '';
  let outside = '';
  let jail: Jail;

  before(async () => {
    ({ dir, cleanup } = await tempDir('jail'));
    dir = realpathSync(dir);
    root = path.join(dir, 'root');
    outside = path.join(dir, 'outside');
    mkdirSync(root);
    mkdirSync(outside);
    writeFileSync(path.join(outside, 'secret.txt'), 'secret');
    writeFileSync(path.join(root, 'in.txt'), 'inside');
    mkdirSync(path.join(root, 'sub'));
    writeFileSync(path.join(root, 'sub', 'deep.txt'), 'deep');
    symlinkSync(outside, path.join(root, 'link-out'));
    symlinkSync(path.join(outside, 'secret.txt'), path.join(root, 'link-out-file'));
    symlinkSync('../outside/secret.txt', path.join(root, 'link-out-rel'));
    symlinkSync('sub', path.join(root, 'link-in'));
    symlinkSync('in.txt', path.join(root, 'link-in-file'));
    symlinkSync(path.join(outside, 'not-yet'), path.join(root, 'dangling-out'));
    symlinkSync('sub/not-yet', path.join(root, 'dangling-in'));
    symlinkSync('loop2', path.join(root, 'loop1'));
    symlinkSync('loop1', path.join(root, 'loop2'));
    symlinkSync('..', path.join(root, 'sub', 'up'));
    symlinkSync('../..', path.join(root, 'sub', 'upup'));
    linkSync(path.join(outside, 'secret.txt'), path.join(root, 'hard-out'));
    jail = new Jail(root);
  });

  after(async () => {
    await cleanup();
  });

  describe('path tricks', () => {
    const refusedCases: [string, string, PathRefusal][] = [
      ['parent of the root', '..', 'above-root'],
      ['climbing to /etc', '../../etc/passwd', 'above-root'],
      ['absolute climb', '/../etc', 'above-root'],
      ['climb after a descent', 'sub/../../x', 'above-root'],
      ['backslash climb', '..\\..\\etc', 'above-root'],
      ['mixed separators', 'sub\\..\\..\\etc', 'above-root'],
      ['NUL byte', 'a\0b', 'nul-byte'],
      ['NUL after a dot-dot', '../\0', 'nul-byte'],
      ['newline', 'a\nb', 'control-character'],
      ['carriage return', 'a\rb', 'control-character'],
      ['escape sequence', '\u001b[31mred', 'control-character'],
      ['DEL', 'a\u007f', 'control-character'],
      ['C1 control (NEL)', 'a\u0085b', 'control-character'],
      ['tab', 'a\tb', 'control-character'],
      ['right-to-left override', 'evil\u202etxt.exe', 'bidi-control'],
      ['isolate control', 'a\u2066b', 'bidi-control'],
      ['lone surrogate', 'a\ud800b', 'invalid-unicode'],
      ['replacement character (invalid UTF-8)', 'a\ufffdb', 'invalid-unicode'],
      ['component of 256 bytes', 'x'.repeat(MAX_COMPONENT_BYTES + 1), 'component-too-long'],
      ['component of 128 two-byte characters', '\u00e9'.repeat(128), 'component-too-long'],
      ['path over 4096 bytes', 'a/'.repeat(2049), 'path-too-long'],
      ['path over 4096 bytes of dots', './'.repeat(2049), 'path-too-long'],
      ['fullwidth full stops', '\uff0e\uff0e/etc', 'unicode-escape'],
      ['fullwidth solidus', 'a\uff0fb', 'unicode-escape'],
      ['fullwidth dot-dot-solidus', '\uff0e\uff0e\uff0fetc', 'unicode-escape'],
      ['fullwidth reverse solidus', 'a\uff3cb', 'unicode-escape'],
      ['two dot leader', '\u2025', 'unicode-escape'],
      ['one dot leaders', '\u2024\u2024/etc', 'unicode-escape'],
      ['one dot leader alone', '\u2024', 'unicode-escape'],
      ['small full stops', '\ufe52\ufe52', 'unicode-escape'],
      ['dot with a combining acute', '.\u0301', 'unicode-escape'],
      ['dot-dot with a combining mark', '..\u0338', 'unicode-escape'],
      ['dot-dot with a zero-width space', '.\u200b.', 'unicode-escape'],
      ['zero-width space only', '\u200b', 'unicode-escape'],
      ['starts with a combining mark', 'sub/\u0338x', 'unicode-escape'],
      ['symlink to a directory outside', 'link-out/secret.txt', 'symlink-escape'],
      ['symlink to a file outside', 'link-out-file', 'symlink-escape'],
      ['relative symlink to a file outside', 'link-out-rel', 'symlink-escape'],
      ['dangling symlink pointing outside', 'dangling-out', 'symlink-escape'],
      ['symlink to .. of the root', 'sub/upup/outside/secret.txt', 'symlink-escape'],
      ['symlink loop', 'loop1/x', 'symlink-loop'],
    ];
    for (const [what, p, reason] of refusedCases) {
      it(`refuses ${what}`, () => {
        refused(() => jail.resolve(p), reason, what);
      });
    }

    const containedCases: [string, string, string][] = [
      ['empty path', '', ''],
      ['slash', '/', ''],
      ['dot', '.', ''],
      ['dot-dot inside', 'sub/../in.txt', 'in.txt'],
      ['repeated slashes', '//sub///deep.txt', 'sub/deep.txt'],
      ['four dots is a name', '....', '....'],
      ['three dots is a name', 'sub/...', 'sub/...'],
      ['percent-encoded dots are names', '%2e%2e/x', '%2e%2e/x'],
      ['tilde is a name', '~/x', '~/x'],
      ['decomposed é is stored composed (NFC)', 'caf\u0065\u0301', 'caf\u00e9'],
      ['component of exactly 255 bytes', 'y'.repeat(255), 'y'.repeat(255)],
      ['link inside the root', 'link-in/deep.txt', 'sub/deep.txt'],
      ['link to .. of a subdirectory', 'sub/up/in.txt', 'in.txt'],
      ['ligature ﬁ is kept as written', '\ufb01le', '\ufb01le'],
    ];
    for (const [what, p, rel] of containedCases) {
      it(`contains ${what}`, () => {
        assert.equal(jail.resolve(p), path.join(root, rel));
      });
    }

    it('treats the exact limits as allowed: a 4096-byte path', () => {
      const p = `${'z'.repeat(200)}/`.repeat(20) + 'z'.repeat(MAX_PATH_BYTES - 201 * 20);
      assert.equal(Buffer.byteLength(p), MAX_PATH_BYTES);
      assert.ok(jail.contains(jail.resolve(p)));
    });

    it('gives refusals a public message that names no server path', () => {
      try {
        jail.resolve('link-out/secret.txt');
        assert.fail('resolved');
      } catch (err) {
        assert.ok(err instanceof TachyonError);
        assert.ok(!err.publicMessage.includes(dir), err.publicMessage);
        assert.equal(err.details?.['path'], 'link-out/secret.txt');
      }
    });

    it('escapes control characters in the logged message', () => {
      try {
        jail.resolve('a\u001b[2Jb');
        assert.fail('resolved');
      } catch (err) {
        assert.ok(err instanceof TachyonError);
        assert.ok(!err.message.includes('\u001b'), err.message);
        assert.match(err.message, /\\u001b/);
      }
    });
  });

  describe('symbolic links', () => {
    it('refuses reading through a link planted inside that points outside', () => {
      refused(() => jail.openForRead('link-out-file'), 'symlink-escape', 'read link-out-file');
      refused(() => jail.openForRead('link-out/secret.txt'), 'symlink-escape', 'read through link-out');
      refused(() => jail.stat('link-out-file'), 'symlink-escape', 'stat link-out-file');
      refused(() => jail.list('link-out'), 'symlink-escape', 'list link-out');
    });

    it('refuses writing through a link that points outside, and the outside is untouched', () => {
      refused(() => jail.openForWrite('link-out-file', { create: true, truncate: true }), 'final-symlink', 'write link-out-file');
      refused(() => jail.openForWrite('link-out/new.txt', { create: true }), 'symlink-escape', 'write into link-out');
      refused(() => jail.openForWrite('dangling-out', { create: true }), 'final-symlink', 'write dangling-out');
      refused(() => jail.mkdir('link-out/d'), 'symlink-escape', 'mkdir in link-out');
      refused(() => jail.ensureDir(path.join(root, 'link-out', 'd')), 'symlink-escape', 'ensureDir in link-out');
      refused(() => jail.rename('in.txt', 'link-out/stolen.txt', { overwrite: false }), 'symlink-escape', 'rename into link-out');
      assert.equal(readFileSync(path.join(outside, 'secret.txt'), 'utf8'), 'secret');
      assert.deepEqual(readdirSync(outside).sort(), ['secret.txt']);
    });

    it('refuses writing through any final-component link, even one that stays inside', () => {
      refused(() => jail.openForWrite('link-in-file', { create: true }), 'final-symlink', 'write link-in-file');
      assert.equal(readFileSync(path.join(root, 'in.txt'), 'utf8'), 'inside');
    });

    it('allows reading and listing through links that stay inside', () => {
      const f = jail.openForRead('link-in-file');
      try {
        assert.equal(readAll(f.fd), 'inside');
        assert.equal(f.abs, path.join(root, 'in.txt'));
      } finally {
        closeSync(f.fd);
      }
      assert.deepEqual(
        jail.list('link-in').map((e) => e.name),
        ['deep.txt', 'up'],
      );
      const w = jail.openForWrite('link-in/new.txt', { create: true, exclusive: true });
      closeSync(w.fd);
      assert.ok(existsSync(path.join(root, 'sub', 'new.txt')));
    });

    it('lists links inside the root as what they point to and leaves out the others', () => {
      const names = jail.list('/').map((e) => e.name);
      for (const n of ['in.txt', 'sub', 'link-in', 'link-in-file', 'hard-out']) assert.ok(names.includes(n), `${n} listed`);
      for (const n of ['link-out', 'link-out-file', 'link-out-rel', 'dangling-out', 'dangling-in', 'loop1', 'loop2']) {
        assert.ok(!names.includes(n), `${n} not listed`);
      }
      const linkIn = jail.list('/').find((e) => e.name === 'link-in');
      assert.ok(linkIn?.stats.isDirectory());
    });

    it('lstat, remove and rename act on a link itself, never on what it points to', () => {
      symlinkSync(path.join(outside, 'secret.txt'), path.join(root, 'to-remove'));
      assert.ok(jail.lstat('to-remove').isSymbolicLink());
      jail.rename('to-remove', 'renamed-link', { overwrite: false });
      assert.ok(lstatSync(path.join(root, 'renamed-link')).isSymbolicLink());
      jail.remove('renamed-link');
      assert.ok(!existsSync(path.join(root, 'renamed-link')));
      assert.equal(readFileSync(path.join(outside, 'secret.txt'), 'utf8'), 'secret');
    });

    it('openAbsForRead (files a download sends) refuses paths outside or through links that lead out', () => {
      refused(() => jail.openAbsForRead(path.join(outside, 'secret.txt')), 'above-root', 'outside file');
      refused(() => jail.openAbsForRead(path.join(root, 'link-out', 'secret.txt')), 'symlink-escape', 'through link-out');
      refused(() => jail.openAbsForRead(path.join(root, 'link-out-file')), 'symlink-escape', 'link-out-file');
      const fd = jail.openAbsForRead(path.join(root, 'sub', 'deep.txt'));
      try {
        assert.equal(readAll(fd), 'deep');
      } finally {
        closeSync(fd);
      }
    });

    it('a dangling link inside the root is NOT_FOUND when followed', () => {
      assert.throws(() => jail.openForRead('dangling-in'), (e: unknown) => e instanceof TachyonError && e.code === 'NOT_FOUND');
    });

    it('refuses to write a file that has another hard link (it may be a file outside)', () => {
      refused(() => jail.openForWrite('hard-out', { create: false, truncate: true }), 'hard-link', 'write hard-out');
      assert.equal(readFileSync(path.join(outside, 'secret.txt'), 'utf8'), 'secret');
    });

    it('createTemp replaces a link planted at the temporary name instead of following it', () => {
      const temp = path.join(root, '.up.bin.tachyon-partial');
      symlinkSync(path.join(outside, 'secret.txt'), temp);
      const fd = jail.createTemp(temp);
      try {
        writeSync(fd, 'fresh');
      } finally {
        closeSync(fd);
      }
      assert.ok(lstatSync(temp).isFile());
      assert.equal(readFileSync(temp, 'utf8'), 'fresh');
      assert.equal(readFileSync(path.join(outside, 'secret.txt'), 'utf8'), 'secret');
    });

    it('the upload resolver refuses destinations through links that lead out; ensureDir makes directories inside', () => {
      const hello = { t: 'hello', v: 1, op: 'send', cipher: 'aes-128-gcm', policy: 'fair', targetRate: 1, minRate: 0, datagramSize: 1472, dest: '/' } as const;
      const resolve = uploadResolver(jail, { ...hello });
      refused(() => resolve('link-out/x.bin', 'file'), 'symlink-escape', 'upload into link-out');
      refused(() => resolve('../x.bin', 'file'), 'above-root', 'upload above the root');
      assert.equal(resolve('made/here/x.bin', 'file'), path.join(root, 'made', 'here', 'x.bin'));
      assert.equal(jail.ensureDir(path.join(root, 'made', 'here')), path.join(root, 'made', 'here'));
      assert.ok(lstatSync(path.join(root, 'made', 'here')).isDirectory());
      assert.equal(jail.ensureDir(path.join(root, 'link-in', 'made')), path.join(root, 'sub', 'made'));
      refused(() => uploadResolver(jail, { ...hello, dest: '/link-out' }), 'symlink-escape', 'upload destination link-out');
    });

    it('without /proc pinning (other systems) the same links are refused and the same writes allowed', () => {
      const plain = new Jail(root, { pinned: false });
      assert.equal(plain.pinned, false);
      refused(() => plain.openForRead('link-out-file'), 'symlink-escape', 'unpinned read link-out-file');
      refused(() => plain.openForWrite('link-out/new.txt', { create: true }), 'symlink-escape', 'unpinned write into link-out');
      refused(() => plain.openForWrite('dangling-out', { create: true }), 'final-symlink', 'unpinned write dangling-out');
      refused(() => plain.mkdir('link-out/d'), 'symlink-escape', 'unpinned mkdir in link-out');
      refused(() => plain.openAbsForRead(path.join(root, 'link-out', 'secret.txt')), 'symlink-escape', 'unpinned download through link-out');
      plain.mkdir('plain-dir');
      const w = plain.openForWrite('plain-dir/f.txt', { create: true, exclusive: true });
      writeSync(w.fd, 'plain');
      closeSync(w.fd);
      assert.equal(readFileSync(path.join(root, 'plain-dir', 'f.txt'), 'utf8'), 'plain');
      assert.deepEqual(plain.list('plain-dir').map((e) => e.name), ['f.txt']);
      plain.rename('plain-dir/f.txt', 'plain-dir/g.txt', { overwrite: false });
      plain.remove('plain-dir/g.txt');
      plain.rmdir('plain-dir');
      assert.ok(!existsSync(path.join(root, 'plain-dir')));
      assert.deepEqual(readdirSync(outside), ['secret.txt']);
    });

    it('refuses a descriptor that is outside the root (post-open check)', { skip: jailPinned() ? false : 'no /proc/self/fd' }, () => {
      const fd = openSync(outside, 'r');
      try {
        refused(() => jail.verifyFd(fd, 'x'), 'symlink-escape', 'descriptor outside');
      } finally {
        closeSync(fd);
      }
      const inside = openSync(path.join(root, 'sub'), 'r');
      try {
        jail.verifyFd(inside, 'sub');
      } finally {
        closeSync(inside);
      }
    });

    it('never writes outside while another process swaps a directory for a link to the outside', { skip: jailPinned() ? false : 'no /proc/self/fd' }, async () => {
      const swap = path.join(root, 'swap');
      mkdirSync(swap);
      const target = path.join(dir, 'target');
      mkdirSync(target);
      // the swapper: directory <-> link to `target`, as fast as it can, for 1.5 s
      const script = `
        const fs = require('fs');
        const [swap, target] = process.argv.slice(1);
        const end = Date.now() + 1500;
        let n = 0;
        while (Date.now() < end) {
          try { fs.renameSync(swap, swap + '.d'); fs.symlinkSync(target, swap); } catch {}
          try { fs.unlinkSync(swap); fs.renameSync(swap + '.d', swap); } catch {}
          n++;
        }
        try { fs.unlinkSync(swap); } catch {}
        try { fs.renameSync(swap + '.d', swap); } catch {}
        process.stdout.write(String(n));`;
      const child = spawn(process.execPath, ['-e', script, swap, target], { stdio: ['ignore', 'pipe', 'inherit'] });
      let swaps = '';
      child.stdout.on('data', (d: Buffer) => (swaps += d.toString()));
      const exited = new Promise<void>((r) => child.on('exit', () => r()));
      let written = 0;
      let refusedCount = 0;
      const deadline = Date.now() + 1300;
      let i = 0;
      while (Date.now() < deadline) {
        i++;
        try {
          const f = jail.openForWrite(`swap/f${i}`, { create: true, exclusive: true });
          writeSync(f.fd, 'x');
          closeSync(f.fd);
          written++;
        } catch (err) {
          assert.ok(err instanceof TachyonError, String(err));
          if (err.code === 'PATH_INVALID') refusedCount++;
        }
        try {
          jail.mkdir(`swap/d${i}`);
        } catch (err) {
          assert.ok(err instanceof TachyonError, String(err));
        }
        if (i % 50 === 0) await new Promise((r) => setImmediate(r));
      }
      await exited;
      assert.deepEqual(readdirSync(target), [], `files escaped into the target (${written} written, ${refusedCount} refused, ${swaps} swaps)`);
      assert.ok(Number(swaps) > 100, `the swapper ran (${swaps} swaps)`);
      assert.ok(written > 0, 'some writes went through while the directory was in place');
      assert.ok(refusedCount > 0, 'some writes were refused while it was a link');
    });
  });

  describe('fuzz', () => {
    const tokens = [
      'a', 'b', 'sub', 'deep.txt', 'in.txt', '..', '.', '', '...', 'link-in', 'link-out', 'link-out-file', 'link-in-file',
      'dangling-out', 'dangling-in', 'loop1', 'up', 'upup', 'hard-out', '\uff0e\uff0e', '\u2025', '\ufe52', 'caf\u00e9',
      'cafe\u0301', '\u0000', '\\', '\u200b', 'x'.repeat(300), '\u202e', '%2e%2e', '\u0301', '\ud83d\ude00', '\n', '~',
    ];

    it('every accepted random path resolves inside the root (seeded, 4000 paths)', () => {
      const rng = new Rng(0x1a11);
      let accepted = 0;
      for (let n = 0; n < 4000; n++) {
        const parts: string[] = [];
        const len = rng.range(0, 8);
        for (let i = 0; i < len; i++) parts.push(rng.pick(tokens));
        const p = (rng.chance(0.5) ? '/' : '') + parts.join(rng.chance(0.8) ? '/' : '\\');
        for (const final of ['follow', 'nofollow'] as const) {
          let abs: string;
          try {
            abs = jail.resolve(p, { final });
          } catch (err) {
            assert.ok(err instanceof TachyonError, `seed 0x1a11 #${n} ${JSON.stringify(p)}: ${String(err)}`);
            assert.ok(['PATH_INVALID', 'NOT_FOUND'].includes(err.code), `#${n} ${JSON.stringify(p)}: ${err.code}`);
            continue;
          }
          accepted++;
          assert.ok(jail.contains(abs), `#${n} ${JSON.stringify(p)} -> ${abs}`);
          // what exists of it is physically inside
          let probe = final === 'nofollow' && abs !== root ? path.dirname(abs) : abs;
          while (!existsSync(probe)) probe = path.dirname(probe);
          const real = realpathSync(probe);
          assert.ok(real === root || real.startsWith(root + path.sep), `#${n} ${JSON.stringify(p)}: ${real}`);
        }
      }
      assert.ok(accepted > 1000, `enough accepted paths to mean something (${accepted})`);
    });

    it('random code points never crash the name checks and accepted names are NFC', () => {
      const rng = new Rng(0xbeef);
      for (let n = 0; n < 3000; n++) {
        let s = '';
        const len = rng.range(0, 12);
        for (let i = 0; i < len; i++) {
          const kind = rng.int(4);
          const cp = kind === 0 ? rng.int(0x80) : kind === 1 ? rng.int(0x3000) : kind === 2 ? 0xfe00 + rng.int(0x200) : rng.int(0x110000);
          s += cp >= 0xd800 && cp <= 0xdfff && rng.chance(0.5) ? '/' : String.fromCodePoint(cp);
        }
        let comps: string[];
        try {
          comps = jail.components(s);
        } catch (err) {
          assert.ok(err instanceof TachyonError && err.code === 'PATH_INVALID', `seed 0xbeef #${n}: ${String(err)}`);
          continue;
        }
        for (const c of comps) {
          assert.equal(c, c.normalize('NFC'));
          assert.ok(!['', '.', '..'].includes(c.normalize('NFKC')), `#${n} ${JSON.stringify(c)}`);
          assert.ok(!/[/\\\0]/.test(c.normalize('NFKC')), `#${n} ${JSON.stringify(c)}`);
          assert.ok(Buffer.byteLength(c) <= MAX_COMPONENT_BYTES);
        }
      }
    });
  });
});

function jailPinned(): boolean {
  return existsSync('/proc/self/fd');
}
