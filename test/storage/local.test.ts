/**
 * LocalStorage on a real temporary directory: the shared contract, plus what only a disk
 * has — symbolic links (never followed), hidden temporary files, special files, file
 * modes, permissions and the root itself.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LocalStorage, RESERVED_PREFIX } from '../../src/storage/index.js';
import { rejectsCode } from '../helpers/errors.js';
import { storageContract } from './contract.js';

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'tachyon-storage-'));
}

storageContract('local', async () => {
  const dir = await tempDir();
  return {
    backend: await LocalStorage.open(dir),
    cleanup: async () => {
      // nothing may be left in the root but what the test created through the backend
      for (const name of readdirSync(dir, { recursive: true }) as string[]) {
        assert.ok(!name.split('/').some((c) => c.startsWith(RESERVED_PREFIX)), `temporary file left behind: ${name}`);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
});

describe('LocalStorage specifics', () => {
  let base: string;
  let root: string;
  let outside: string;
  let s: LocalStorage;

  before(async () => {
    base = await tempDir();
    root = join(base, 'root');
    outside = join(base, 'outside');
    mkdirSync(root);
    mkdirSync(outside);
    writeFileSync(join(outside, 'secret'), 'top secret');
    mkdirSync(join(root, 'd'));
    writeFileSync(join(root, 'd', 'f'), 'inside');
    symlinkSync(outside, join(root, 'link-dir'));
    symlinkSync(join(outside, 'secret'), join(root, 'link-file'));
    symlinkSync(join(root, 'd', 'f'), join(root, 'link-inside'));
    s = await LocalStorage.open(root);
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it('never follows a symbolic link, inside or outside the root', async () => {
    for (const p of ['link-dir/secret', 'link-file', 'link-inside']) {
      await rejectsCode(s.openRead(p), 'PATH_INVALID', `openRead ${p}`);
      await rejectsCode(s.stat(p), 'PATH_INVALID', `stat ${p}`);
    }
    await rejectsCode(s.list('link-dir'), 'PATH_INVALID', 'list through a link');
    await rejectsCode(s.createWriter('link-dir/new', 1), 'PATH_INVALID', 'write through a directory link');
    await rejectsCode(s.createWriter('link-file', 1, { overwrite: true }), 'PATH_INVALID', 'overwrite a file link');
    await rejectsCode(s.mkdir('link-dir/sub', { recursive: true }), 'PATH_INVALID', 'mkdir through a link');
    await rejectsCode(s.rename('link-dir/secret', 'stolen'), 'PATH_INVALID', 'rename out through a link');
    await rejectsCode(s.rename('d/f', 'link-dir/planted'), 'PATH_INVALID', 'rename into a link');
    await rejectsCode(s.remove('link-dir/secret'), 'PATH_INVALID', 'remove through a link');
    assert.deepEqual(readdirSync(outside), ['secret'], 'nothing written outside');
    assert.equal(statSync(join(outside, 'secret')).size, 10);
  });

  it('lists only regular files and directories', async () => {
    execFileSync('mkfifo', [join(root, 'fifo')]);
    const page = await s.list('');
    assert.deepEqual(page.entries.map((e) => e.name), ['d']);
    assert.equal(page.total, 1);
    await rejectsCode(s.openRead('fifo'), 'PERMISSION', 'a FIFO is not read');
  });

  it('hides temporary files while a writer is open, and creates files with mode 0600', async () => {
    const w = await s.createWriter('d/new', 4);
    assert.ok(readdirSync(join(root, 'd')).some((n) => n.startsWith(RESERVED_PREFIX)), 'the temporary file exists');
    assert.deepEqual((await s.list('d')).entries.map((e) => e.name), ['f']);
    await w.write(0, Buffer.from('abcd'));
    await w.commit();
    assert.deepEqual(readdirSync(join(root, 'd')).sort(), ['f', 'new']);
    assert.equal(statSync(join(root, 'd', 'new')).mode & 0o777, 0o600);
  });

  it('translates permission errors', { skip: process.getuid?.() === 0 ? 'root ignores file modes' : false }, async () => {
    mkdirSync(join(root, 'locked'));
    chmodSync(join(root, 'locked'), 0o500);
    try {
      await rejectsCode(s.createWriter('locked/f', 1), 'PERMISSION');
      await rejectsCode(s.mkdir('locked/x'), 'PERMISSION');
    } finally {
      chmodSync(join(root, 'locked'), 0o700);
    }
  });

  it('refuses a missing root or a file as root', async () => {
    await rejectsCode(LocalStorage.open(join(base, 'missing')), 'NOT_FOUND');
    await rejectsCode(LocalStorage.open(join(outside, 'secret')), 'PATH_INVALID');
  });
});
