/**
 * `tachyon token …`: the node's transfer-token key.
 *
 *   tachyon token rotate-key --config FILE [--json]
 *
 * Makes a new token key (`transferTokens.keyFile`); the old one moves to
 * `<keyFile>.previous` and is still accepted for `transferTokens.keyGraceSeconds`.
 * Running servers pick the change up within a second (docs/transfer-tokens.md).
 */
import type { Command } from 'commander';
import { TachyonError } from '../core/errors.js';
import { FileAuditSink } from '../audit/index.js';
import { loadServerConfig } from '../server/config.js';
import { loadTokenKeyring, rotateTokenKey } from '../server/transfer-token.js';

export function registerTokenCommands(program: Command): void {
  const token = program.command('token').description("manage the node's transfer-token key (see docs/transfer-tokens.md)");
  token
    .command('rotate-key')
    .description('make a new token key; the previous one stays accepted for transferTokens.keyGraceSeconds')
    .requiredOption('--config <file>', 'server configuration file (its transferTokens section names the key file)')
    .option('--json', 'print the result as JSON', false)
    .action(async (o: { config: string; json: boolean }) => {
      const cfg = await loadServerConfig(o.config);
      const tt = cfg.transferTokens;
      if (!tt) throw new TachyonError('USAGE', `${o.config} has no transferTokens section: transfer tokens are off`);
      const before = loadTokenKeyring(tt.keyFile, { graceMs: tt.keyGraceSeconds * 1000 });
      const after = rotateTokenKey(tt.keyFile);
      const audit = cfg.auditLog ? new FileAuditSink(cfg.auditLog) : undefined;
      try {
        audit?.record({ type: 'config.change', component: 'config', fields: { actor: 'cli', action: 'token.rotate-key', target: tt.keyFile, changed: [`keyId:${after.current.id}`] } });
      } finally {
        await audit?.close();
      }
      const graceUntil = new Date(Date.now() + tt.keyGraceSeconds * 1000).toISOString();
      if (o.json) process.stdout.write(JSON.stringify({ event: 'token.rotate-key', keyId: after.current.id, previousKeyId: before.current.id, previousAcceptedUntil: graceUntil }) + '\n');
      else process.stdout.write(`new token key ${after.current.id}; the previous key ${before.current.id} is accepted until ${graceUntil}\n`);
      process.exitCode = 0;
    });
}
