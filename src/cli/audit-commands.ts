/**
 * `tachyon audit …`: verify a hash-chained audit log, show its last records, make a chain key.
 *
 *   tachyon audit verify FILE [--key FILE] [--checkpoint SEQ:HASH] [--json]
 *   tachyon audit tail FILE [-n N] [--json]
 *   tachyon audit keygen FILE
 *
 * `verify` exits 0 when the log is intact, 1 (AUDIT_TAMPERED) with the first bad line and
 * the reason when it is not, 66 if the file does not exist, 2 for bad usage.
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import type { Command } from 'commander';
import { TachyonError, toTachyonError } from '../core/errors.js';
import {
  decodeLine,
  formatCheckpoint,
  generateAuditKeyFile,
  loadAuditKey,
  parseCheckpoint,
  readLastLines,
  verifyAuditLog,
} from '../audit/index.js';
import type { AuditVerifyResult } from '../audit/index.js';

interface VerifyOpts {
  key?: string;
  checkpoint?: string;
  json: boolean;
}

function describe(r: AuditVerifyResult, file: string): string {
  const lines: string[] = [];
  if (r.ok) {
    const alg = r.alg === undefined ? 'empty' : r.alg === 'hmac-sha256' ? 'keyed (HMAC-SHA-256)' : 'SHA-256 chain, not keyed';
    lines.push(`${file}: intact: ${r.records} record(s), ${alg}`);
    if (!r.macsChecked) lines.push('  note: the log is keyed but no --key was given: the chain links were checked, the line MACs were not');
    for (const g of r.recoveries) {
      lines.push(`  note: line ${g.line}: ${g.lines} line(s) (${g.bytes} bytes) skipped by the writer after a crash, vouched for by an audit.recovery record`);
    }
    if (r.head) lines.push(`  head: seq ${r.head.seq} (line ${r.head.line}, ${r.head.ts}); checkpoint ${formatCheckpoint(r.head)}`);
  } else if (r.failure) {
    lines.push(`${file}: NOT intact: line ${r.failure.line}: ${r.failure.reason}: ${r.failure.message}`);
    if (r.head) lines.push(`  the records before it verify up to seq ${r.head.seq} (line ${r.head.line})`);
  }
  return lines.join('\n') + '\n';
}

async function runVerify(file: string, o: VerifyOpts): Promise<number> {
  const key = o.key !== undefined ? loadAuditKey(o.key, { strict: false }) : undefined;
  const checkpoint = o.checkpoint !== undefined ? parseCheckpoint(o.checkpoint) : undefined;
  const r = await verifyAuditLog(file, { ...(key ? { key } : {}), ...(checkpoint ? { checkpoint } : {}) });
  if (o.json) {
    process.stdout.write(
      JSON.stringify({
        event: 'audit.verify',
        file,
        ok: r.ok,
        records: r.records,
        lines: r.lines,
        alg: r.alg ?? null,
        macsChecked: r.macsChecked,
        head: r.head ? { ...r.head, checkpoint: formatCheckpoint(r.head) } : null,
        recoveries: r.recoveries,
        failure: r.failure ?? null,
      }) + '\n',
    );
  } else {
    (r.ok ? process.stdout : process.stderr).write(describe(r, file));
  }
  return r.ok ? 0 : new TachyonError('AUDIT_TAMPERED', 'audit log verification failed').exitCode;
}

function runTail(file: string, o: { lines: string; json: boolean }): number {
  const n = Number(o.lines);
  if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new TachyonError('USAGE', `-n must be an integer 1..100000, got '${o.lines}'`);
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    const e = toTachyonError(err, 'IO');
    throw new TachyonError(e.code, `cannot read audit log ${file}: ${e.message}`, { cause: err });
  }
  try {
    const lines = readLastLines(fd, fstatSync(fd).size, n);
    for (const l of lines) {
      if (o.json) {
        process.stdout.write(`${l.bytes.toString('utf8')}\n`);
        continue;
      }
      const d = l.terminated ? decodeLine(l.bytes) : undefined;
      if (d === undefined || !d.ok) {
        process.stdout.write(`(not a record: ${d === undefined ? 'incomplete last line' : d.reason})\n`);
        continue;
      }
      const r = d.line.record;
      const fields = Object.entries(r.fields)
        .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
        .join(' ');
      process.stdout.write(`${r.ts} ${r.severity.padEnd(8)} ${r.component} ${r.type} ref=${r.id} ${fields}\n`);
    }
  } finally {
    closeSync(fd);
  }
  return 0;
}

/** Adds `tachyon audit` and its subcommands to `program`. */
export function registerAuditCommands(program: Command): void {
  const audit = program.command('audit').description('audit log tools: verify the hash chain, show the last records, make a chain key');

  audit
    .command('verify')
    .description('check that an audit log is intact: exit 0 if so, 1 with the first bad line otherwise')
    .argument('<file>', 'the audit log (JSON lines)')
    .option('--key <file>', 'chain key file: every line must carry a valid HMAC under it')
    .option('--checkpoint <seq:hash>', 'a record (as printed by an earlier verify) the log must still hold: detects a cut tail')
    .option('--json', 'print the result as one JSON object', false)
    .action(async (file: string, o: VerifyOpts) => {
      process.exitCode = await runVerify(file, o);
    });

  audit
    .command('tail')
    .description('print the last records of an audit log')
    .argument('<file>', 'the audit log')
    .option('-n, --lines <n>', 'how many records', '10')
    .option('--json', 'print the records as stored (JSON lines)', false)
    .action((file: string, o: { lines: string; json: boolean }) => {
      process.exitCode = runTail(file, o);
    });

  audit
    .command('keygen')
    .description('create a new audit chain key file (256 random bits, mode 0600)')
    .argument('<file>', 'the key file to create (must not exist)')
    .action((file: string) => {
      generateAuditKeyFile(file);
      process.stderr.write(`audit chain key written to ${file}: give it only to the account that writes the log (and to auditors)\n`);
      process.exitCode = 0;
    });
}
