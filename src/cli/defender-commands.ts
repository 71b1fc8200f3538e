/**
 * `tachyon defender …`: administration of the IP defender's blocks in the server database
 * (shared with running servers, which re-read the table every few seconds).
 *
 *   tachyon defender list [--json]
 *   tachyon defender unblock ADDRESS [--json]
 *
 * The database is found like `tachyon user`'s: `--config FILE`, `--db URL` or `--data DIR`
 * (default ./tachyon-data). Every lifted block is recorded in the server's audit log (and
 * notified, when the configuration has notifications).
 */
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import type { Command } from 'commander';
import type { AuditSink } from '../audit/index.js';
import { TachyonError } from '../core/errors.js';
import type { Database } from '../db/database.js';
import { FanOutNotifier, ScoringDefender, SmtpNotifier, WebhookNotifier, type Notifier } from '../defender/index.js';
import { loadServerConfig, type ServerConfig } from '../server/config.js';
import { addStoreOptions, openStore, type StoreOpts } from './user-commands.js';

/** The notifiers of a configuration's `defender.notify` (undefined: none). */
export function configuredNotifier(cfg: ServerConfig): Notifier | undefined {
  const n = cfg.defender.notify;
  const all: Notifier[] = [];
  if (n.webhook) all.push(new WebhookNotifier(n.webhook));
  if (n.smtp) {
    let password: string | undefined;
    if (n.smtp.passwordFile !== undefined) {
      try {
        password = readFileSync(n.smtp.passwordFile, 'utf8').trim();
      } catch (err) {
        throw new TachyonError('CONFIG', `defender.notify.smtp.passwordFile: cannot read ${n.smtp.passwordFile}`, { cause: err });
      }
    }
    const { passwordFile: _pf, ...rest } = n.smtp;
    void _pf;
    all.push(new SmtpNotifier({ ...rest, ...(password !== undefined ? { password } : {}) }));
  }
  return all.length === 0 ? undefined : all.length === 1 ? all[0] : new FanOutNotifier(all);
}

/** Opens the defender a configuration describes, over an open database. */
export async function openConfiguredDefender(cfg: ServerConfig, database: Database, audit: AuditSink | undefined, onError: (e: TachyonError) => void): Promise<ScoringDefender> {
  const notifier = configuredNotifier(cfg);
  return ScoringDefender.open({
    database,
    settings: cfg.defender.settings,
    safeList: cfg.defender.safeList,
    allowLists: cfg.defender.allowLists,
    ...(audit ? { audit } : {}),
    ...(notifier ? { notifier } : {}),
    onError,
  });
}

interface Opts extends StoreOpts {
  json: boolean;
}

async function withDefender<T>(o: Opts, fn: (d: ScoringDefender) => Promise<T>): Promise<T> {
  const store = await openStore(o, false);
  const errors: TachyonError[] = [];
  let defender: ScoringDefender | undefined;
  try {
    const cfg = o.config !== undefined ? await loadServerConfig(o.config) : undefined;
    const notifier = cfg ? configuredNotifier(cfg) : undefined;
    defender = await ScoringDefender.open({
      database: store.database,
      settings: { ...cfg?.defender.settings, syncIntervalMs: 0 },
      ...(store.audit ? { audit: store.audit } : {}),
      ...(notifier ? { notifier } : {}),
      onError: (e) => errors.push(e),
    });
    const r = await fn(defender);
    await defender.close();
    for (const e of errors) process.stderr.write(`tachyon: warning: ${e.message}\n`);
    return r;
  } finally {
    await defender?.close();
    await store.audit?.close();
    await store.database.close();
  }
}

export function registerDefenderCommands(program: Command): void {
  const defender = program.command('defender').description('the IP defender: list and lift blocks (database: --config FILE, --db URL, or ./tachyon-data/tachyon.db)');
  addStoreOptions(defender.command('list').description('list the blocked addresses (address, score, until, ban count)').option('--json', 'print JSON', false)).action(async (o: Opts) => {
    const blocks = await withDefender(o, (d) => d.list());
    if (o.json) {
      process.stdout.write(JSON.stringify({ blocks }) + '\n');
      return;
    }
    if (blocks.length === 0) {
      process.stdout.write('no blocked addresses\n');
      return;
    }
    const w = Math.max(7, ...blocks.map((b) => b.address.length));
    process.stdout.write(`${'ADDRESS'.padEnd(w)}  SCORE  BANS  UNTIL\n`);
    for (const b of blocks) process.stdout.write(`${b.address.padEnd(w)}  ${String(b.score).padStart(5)}  ${String(b.banCount).padStart(4)}  ${b.until}\n`);
  });
  addStoreOptions(
    defender
      .command('unblock')
      .description('lift the block of an address (an IPv4 or IPv6 address, or an IPv6 /64)')
      .argument('<address>', 'the blocked address')
      .option('--json', 'print JSON', false),
  ).action(async (address: string, o: Opts) => {
    const lifted = await withDefender(o, (d) => d.unblock(address, `cli:${userInfo().username}`));
    if (!lifted) throw new TachyonError('NOT_FOUND', `${address.slice(0, 64)} is not blocked`, { publicMessage: 'The address is not blocked.' });
    process.stdout.write(o.json ? JSON.stringify({ event: 'unblocked', address }) + '\n' : `unblocked ${address}\n`);
  });
}
