/**
 * Many small files against one file of the same total size, over loopback, in one
 * process (server session and client share the event loop, as in the loopback tests):
 *
 *   node dist/bench/small-files.js [FILES] [KIB] [RATE_BPS]
 *
 * Prints files/s, seconds and control-message counts for both runs. Not a test: it
 * measures per-file costs (control frames, file-system calls, hashing set-up).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { removeDir, startServer, tempDir, transferOk } from '../test/helpers/loopback.js';

const files = Number(process.argv[2] ?? 10_000);
const kib = Number(process.argv[3] ?? 16);
const rate = Number(process.argv[4] ?? 2e9);

async function main(): Promise<void> {
  const work = tempDir('small-bench');
  try {
    const src = path.join(work, 'src');
    const many = path.join(src, 'many');
    mkdirSync(many, { recursive: true });
    const blob = randomBytes(kib * 1024);
    for (let i = 0; i < files; i++) {
      blob.writeUInt32BE(i, 0);
      writeFileSync(path.join(many, `f${String(i).padStart(6, '0')}.bin`), blob);
    }
    const one = path.join(src, 'one.bin');
    writeFileSync(one, randomBytes(files * kib * 1024));
    const runs = [
      ['one file', [one]],
      [`${files} files`, [many]],
    ] as const;
    for (const [name, sources] of runs.filter(([n]) => !process.env.ONLY || n.includes(process.env.ONLY))) {
      const root = path.join(work, `root-${name.replace(/\W/g, '')}`);
      mkdirSync(root);
      const server = await startServer(root);
      const t0 = performance.now();
      const r = await transferOk(server, { op: 'send', sources: [...sources], dest: '/', policy: (process.env.POLICY ?? 'fair') as 'fair', targetBps: rate });
      const s = (performance.now() - t0) / 1000;
      await server.close();
      const n = r.client.files.length;
      console.log(
        `${name}: ${s.toFixed(2)} s, ${(n / s).toFixed(0)} files/s, ${((r.client.bytes * 8) / s / 1e6).toFixed(0)} Mbit/s, ok ${r.client.ok}, stats ${JSON.stringify(r.client.stats)}`,
      );
    }
  } finally {
    removeDir(work);
  }
}

await main();
