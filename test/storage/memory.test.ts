/** MemoryStorage: the shared contract, plus its byte budget (DISK_FULL). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStorage } from '../../src/storage/index.js';
import { rejectsCode } from '../helpers/errors.js';
import { storageContract } from './contract.js';

storageContract('memory', async () => ({ backend: new MemoryStorage() }));

describe('MemoryStorage specifics', () => {
  it('fails writers beyond its byte budget with DISK_FULL and frees space on abort and remove', async () => {
    const s = new MemoryStorage({ maxBytes: 100 });
    const w = await s.createWriter('a', 80);
    await rejectsCode(s.createWriter('b', 30), 'DISK_FULL', 'reserved by an open writer');
    await w.abort();
    const w2 = await s.createWriter('b', 60);
    await w2.write(0, Buffer.alloc(60));
    await w2.commit();
    await rejectsCode(s.createWriter('c', 41), 'DISK_FULL', 'held by a file');
    await s.remove('b');
    const w3 = await s.createWriter('c', 100);
    await w3.abort();
  });

  it('uses the injected clock for mtimes', async () => {
    let t = 1_000;
    const s = new MemoryStorage({ now: () => t });
    t = 5_000;
    await s.mkdir('d');
    assert.equal((await s.stat('d')).mtimeMs, 5_000);
    assert.equal((await s.stat('')).mtimeMs, 5_000, 'the parent is touched');
  });
});
