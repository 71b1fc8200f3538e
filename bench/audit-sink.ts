/**
 * Cost of one audit record per fsync policy (docs/audit.md quotes its output).
 *
 *   npx tsc --build && node dist/bench/audit-sink.js [DIR] [RECORDS]
 *
 * Writes RECORDS (default 2000) typical records (an auth failure, ~500 bytes a line) to a
 * fresh file in DIR (default the OS temp dir) with each policy, keyed and not, and prints
 * microseconds per record (median of three runs) and fsyncs done.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileAuditSink } from '../src/audit/index.js';
import type { AuditFsyncPolicy } from '../src/audit/index.js';

const dir = mkdtempSync(join(process.argv[2] ?? tmpdir(), 'tachyon-audit-bench-'));
const records = Number(process.argv[3] ?? 2000);

async function run(policy: AuditFsyncPolicy, key: Buffer | undefined, n: number, run: number): Promise<{ us: number; fsyncs: number }> {
  const file = join(dir, `${policy}-${key ? 'keyed' : 'plain'}-${run}.log`);
  const sink = new FileAuditSink(file, { fsync: policy, ...(key ? { key } : {}) });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    sink.record({
      type: 'auth.failure',
      component: 'ssh',
      fields: {
        user: `user${i % 50}`,
        method: 'publickey',
        reason: 'not-authorized',
        clientAddress: '198.51.100.23',
        clientPort: 40000 + (i % 20000),
        keyType: 'ssh-ed25519',
        keyFingerprint: 'SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU',
        failures: (i % 6) + 1,
      },
    });
  }
  const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
  await sink.close();
  return { us, fsyncs: sink.stats.fsyncs };
}

const key = Buffer.alloc(32, 1);
await run('never', undefined, 500, 99); // warm-up (JIT)
console.log(`audit sink: ${records} records per run, median of 3, in ${dir}`);
console.log('policy    chain          µs/record   records/s   fsyncs');
for (const policy of ['never', 'batched', 'always'] as const) {
  for (const k of [undefined, key]) {
    const n = policy === 'always' ? Math.min(records, 500) : records;
    const runs = [];
    for (let r = 0; r < 3; r++) runs.push(await run(policy, k, n, r));
    runs.sort((a, b) => a.us - b.us);
    const mid = runs[1] ?? runs[0];
    if (!mid) continue;
    console.log(
      `${policy.padEnd(9)} ${(k ? 'hmac-sha256' : 'sha256').padEnd(14)} ${mid.us.toFixed(1).padStart(9)}   ${Math.round(1e6 / mid.us)
        .toString()
        .padStart(9)}   ${mid.fsyncs} (of ${n})`,
    );
  }
}
rmSync(dir, { recursive: true, force: true });
