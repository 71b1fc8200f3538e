/** Shared helpers for the audit tests. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEvent, AuditSink } from '../../src/audit/index.js';

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `tachyon-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** The i-th event of a deterministic series (a mix of types). */
export function sampleEvent(i: number): AuditEvent {
  switch (i % 4) {
    case 0:
      return {
        type: 'auth.failure',
        component: 'ssh',
        fields: { user: `user${i}`, method: 'publickey', reason: 'not-authorized', clientAddress: '192.0.2.7', clientPort: 40000 + i, keyFingerprint: `SHA256:${'A'.repeat(43)}` },
      };
    case 1:
      return {
        type: 'auth.success',
        component: 'ssh',
        fields: { user: `user${i}`, method: 'publickey', clientAddress: '192.0.2.7', keyFingerprint: `SHA256:${'B'.repeat(43)}` },
      };
    case 2:
      return {
        type: 'file.transfer',
        component: 'transfer',
        fields: {
          user: `user${i}`,
          clientAddress: '192.0.2.7',
          direction: 'upload',
          source: `in/file ${i}.bin`,
          destination: `/incoming/file ${i}.bin`,
          bytes: 1024 * i,
          durationMs: 12.5,
          rateBps: 8e6,
          cipher: 'aes-128-gcm',
          status: 'ok',
        },
      };
    default:
      return { type: 'refusal.jail', component: 'transfer', fields: { user: `user${i}`, clientAddress: '192.0.2.7', path: '../../etc/passwd', reason: 'dot-dot' } };
  }
}

/** Records events 0..n-1 of the sample series; returns their ids. */
export function recordSamples(sink: AuditSink, n: number, from = 0): string[] {
  const ids: string[] = [];
  for (let i = from; i < from + n; i++) ids.push(sink.record(sampleEvent(i)));
  return ids;
}

/** Splits file text into its lines (the last element is '' when the file ends with a newline). */
export function splitLines(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let from = 0;
  for (;;) {
    const nl = buf.indexOf(0x0a, from);
    if (nl === -1) {
      out.push(buf.subarray(from));
      return out;
    }
    out.push(buf.subarray(from, nl));
    from = nl + 1;
  }
}

export function joinLines(lines: readonly Buffer[]): Buffer {
  return Buffer.concat(lines.flatMap((l, i) => (i === lines.length - 1 ? [l] : [l, Buffer.from('\n')])));
}
