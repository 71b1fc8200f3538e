/**
 * The client commands start fast: loading the CLI (what `send` and `recv` run before
 * their first packet) must not pull in what only servers and administration need —
 * the database drivers, the HTTP stack, the S3 SDK, password hashing. Each 100 ms of
 * start-up is a round trip on a long path. Administration command groups load their
 * implementation when they run.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { repo, bin } from '../helpers/cli.js';

/** Packages no client command needs at start-up. */
const SERVER_ONLY = ['kysely', 'better-sqlite3', 'pg', 'fastify', '@aws-sdk', 'argon2', '@peculiar', 'prom-client', 's3rver'];

/** Every module URL loaded when the CLI module is imported (recorded by a resolve hook). */
function modulesLoadedBy(entry: string): string[] {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-startup-'));
  try {
    const log = path.join(dir, 'loaded.txt');
    const hooks = `import { appendFileSync } from 'node:fs';
export async function resolve(spec, ctx, next) { const r = await next(spec, ctx); appendFileSync(${JSON.stringify(log)}, r.url + '\\n'); return r; }`;
    const script = `import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hooks)}));
await import(${JSON.stringify(pathToFileURL(entry).href)});`;
    execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: repo, stdio: ['ignore', 'ignore', 'inherit'] });
    return readFileSync(log, 'utf8').split('\n').filter(Boolean);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function packagesIn(urls: string[]): Set<string> {
  const pkgs = new Set<string>();
  for (const u of urls) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
    if (m) pkgs.add(m[1]!);
  }
  return pkgs;
}

describe('CLI start-up', () => {
  it('loading the CLI loads neither ssh2 nor zod: send and recv load them while the TCP handshake travels', () => {
    const pkgs = packagesIn(modulesLoadedBy(path.join(repo, 'dist', 'src', 'cli', 'main.js')));
    assert.ok(pkgs.has('commander'), `the hook saw no commander (saw: ${[...pkgs].join(', ')})`);
    const early = [...pkgs].filter((p) => ['ssh2', 'zod', ...SERVER_ONLY].some((s) => p === s || p.startsWith(s + '/')));
    assert.deepEqual(early, [], `loaded before the first packet: ${early.join(', ')}`);
  });

  it('the transfer client (loaded once connecting) needs ssh2 but none of the server-only packages', () => {
    const pkgs = new Set<string>();
    for (const m of ['control/ssh-client.js', 'transfer/session.js', 'transport/session/endpoint.js', 'transport/socket/udp.js']) {
      for (const p of packagesIn(modulesLoadedBy(path.join(repo, 'dist', 'src', m)))) pkgs.add(p);
    }
    assert.ok(pkgs.has('ssh2'), `the hook saw no ssh2 (saw: ${[...pkgs].join(', ')})`);
    const heavy = [...pkgs].filter((p) => SERVER_ONLY.some((s) => p === s || p.startsWith(s + '/')));
    assert.deepEqual(heavy, [], `server-only packages loaded by the transfer client: ${heavy.join(', ')}`);
  });

  it('a lazily loaded command group still parses its own options and help', () => {
    const help = execFileSync(process.execPath, [bin, 'user', '--help'], { encoding: 'utf8' });
    assert.match(help, /Usage: tachyon user/);
    assert.match(help, /\badd\b/);
    let code = 0;
    let stderr = '';
    try {
      execFileSync(process.execPath, [bin, 'user', 'no-such-subcommand'], { encoding: 'utf8', stdio: 'pipe' });
    } catch (err) {
      code = (err as { status: number }).status;
      stderr = String((err as { stderr: string }).stderr);
    }
    assert.equal(code, 2);
    assert.match(stderr, /unknown command 'no-such-subcommand'/);
  });
});
