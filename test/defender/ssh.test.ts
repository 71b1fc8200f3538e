/**
 * The defender on the SSH transfer server: real ssh2 clients fail authentication from
 * 127.0.0.1 until the address is blocked; then its connections are closed right after
 * TCP accept, before the server sends a byte of SSH; a client on 127.0.0.2 (Linux routes
 * all of 127/8 to lo) still logs in. The block survives a restart of server and defender.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import ssh2 from 'ssh2';
import { MemoryAuditSink } from '../../src/audit/index.js';
import { parseAuthorizedKeys } from '../../src/control/hostkeys.js';
import { CIPHERS } from '../../src/core/types.js';
import { openDatabase, type Database } from '../../src/db/database.js';
import { ScoringDefender } from '../../src/defender/index.js';
import { singleUserAccounts } from '../../src/server/accounts.js';
import { startTransferServer, type TransferServer } from '../../src/server/transfer-server.js';

type Outcome = { ok: true } | { ok: false; message: string; level?: string };

function login(port: number, key: Buffer, localAddress: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const c = new ssh2.Client();
    let done = false;
    const finish = (o: Outcome): void => {
      if (done) return;
      done = true;
      c.end();
      resolve(o);
    };
    c.on('ready', () => finish({ ok: true }));
    c.on('error', (e: Error & { level?: string }) => finish({ ok: false, message: e.message, ...(e.level !== undefined ? { level: e.level } : {}) }));
    c.on('close', () => finish({ ok: false, message: 'closed' }));
    c.connect({ host: '127.0.0.1', port, localAddress, username: 'xfer', privateKey: key, readyTimeout: 10_000, hostVerifier: () => true });
  });
}

/** Connects with a raw TCP socket and collects what the server sends until it closes. */
function rawBytes(port: number, localAddress: string): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      s.destroy();
    });
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(chunks)));
    setTimeout(() => s.destroy(), 5000).unref();
  });
}

describe('defender on the SSH transfer server', () => {
  let work: string;
  let good: Buffer;
  let stranger: Buffer;
  let dbUrl: string;
  let database: Database;
  let defender: ScoringDefender;
  let server: TransferServer;
  const audit = new MemoryAuditSink();

  const start = async (): Promise<void> => {
    database = await openDatabase({ url: dbUrl });
    defender = await ScoringDefender.open({ database, audit, settings: { threshold: 3, banMs: 600_000, maxBanMs: 3_600_000 } });
    server = await startTransferServer({
      accounts: singleUserAccounts({ user: 'xfer', root: path.join(work, 'root'), keys: parseAuthorizedKeys(readFileSync(path.join(work, 'id_good.pub'), 'utf8')).keys, ciphers: CIPHERS }),
      hostKeyFile: path.join(work, 'host_key'),
      listen: '127.0.0.1',
      port: 0,
      allowedCiphers: CIPHERS,
      maxRateBps: 10e9,
      audit,
      defender,
    });
  };
  const stop = async (): Promise<void> => {
    await server.close();
    await defender.close();
    await database.close();
  };

  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-defender-ssh-'));
    mkdirSync(path.join(work, 'root'));
    for (const k of ['id_good', 'id_stranger']) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(work, k)]);
    good = readFileSync(path.join(work, 'id_good'));
    stranger = readFileSync(path.join(work, 'id_stranger'));
    dbUrl = `sqlite://${path.join(work, 'tachyon.db')}`;
    await start();
  });

  after(async () => {
    await stop().catch(() => {});
    rmSync(work, { recursive: true, force: true });
  });

  it('blocks 127.0.0.1 after failed logins, refuses it before the handshake, and lets 127.0.0.2 in', async () => {
    assert.deepEqual(await login(server.port, good, '127.0.0.1'), { ok: true }, 'the right key works before any failure');
    for (let i = 0; i < 3; i++) {
      assert.equal(defender.isBlocked('127.0.0.1'), false, `not blocked after ${i} failures`);
      const r = await login(server.port, stranger, '127.0.0.1');
      assert.equal(r.ok, false);
      assert.match((r as { message: string }).message, /authentication methods failed/);
    }
    assert.equal(defender.isBlocked('127.0.0.1'), true);
    // blocked: closed at once, not one byte of SSH (no identification string)
    const bytes = await rawBytes(server.port, '127.0.0.1');
    assert.equal(bytes.length, 0, `server sent ${JSON.stringify(bytes.toString('latin1'))}`);
    const control = await rawBytes(server.port, '127.0.0.2');
    assert.match(control.toString('latin1'), /^SSH-2\.0-/, 'an address that is not blocked gets the SSH identification');
    // even the right key cannot log in from the blocked address
    const refused = await login(server.port, good, '127.0.0.1');
    assert.equal(refused.ok, false);
    assert.deepEqual(await login(server.port, good, '127.0.0.2'), { ok: true }, 'another address still logs in');
    const types = audit.records.map((r) => r.type);
    assert.ok(types.includes('defender.block'));
    const refusals = audit.records.filter((r) => r.type === 'refusal.address');
    assert.ok(refusals.length >= 2);
    assert.deepEqual({ ...refusals[0]!.fields, clientPort: 0 }, { clientAddress: '127.0.0.1', clientPort: 0, reason: 'blocked', service: 'ssh' });
  });

  it('scores a protocol violation (garbage instead of SSH) and blocks at the threshold', async () => {
    const garbage = (): Promise<void> =>
      new Promise((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: server.port, localAddress: '127.0.0.5' }, () => s.write(`SSH-2.0-x\r\n${'\u0000\u0000\u0000\u0010garbage-garbage!'.repeat(3)}`));
        s.on('error', () => {});
        s.on('close', () => resolve());
        s.on('data', () => {});
        setTimeout(() => s.destroy(), 3000).unref();
      });
    await garbage();
    assert.equal(defender.isBlocked('127.0.0.5'), true, 'protocol-violation scores 3 = the threshold');
    assert.equal((await rawBytes(server.port, '127.0.0.5')).length, 0);
  });

  it('keeps the block across a restart (same SQLite file), until it is lifted', async () => {
    await stop();
    await start();
    assert.equal(defender.isBlocked('127.0.0.1'), true, 'loaded from the database');
    assert.equal((await rawBytes(server.port, '127.0.0.1')).length, 0);
    const b = (await defender.list()).find((x) => x.address === '127.0.0.1');
    assert.equal(b?.address, '127.0.0.1');
    assert.equal(b?.banCount, 1);
    assert.equal(await defender.unblock('127.0.0.1', 'test'), true);
    assert.deepEqual(await login(server.port, good, '127.0.0.1'), { ok: true });
  });
});
