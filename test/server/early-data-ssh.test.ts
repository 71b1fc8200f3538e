/**
 * Early data over real SSH and UDP: an in-process transfer server (its endpoint's
 * counters visible) and real `tachyon send` processes. The client's first datagrams
 * leave with its authentication flight, under the session id and keys it chose; the
 * server's endpoint holds them (the address has an SSH connection) and hands them to the
 * session it sets up from `hello`. The file arrives exact.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseAuthorizedKeys } from '../../src/control/hostkeys.js';
import { CIPHERS } from '../../src/core/types.js';
import { singleUserAccounts } from '../../src/server/accounts.js';
import { startTransferServer, type TransferServer, type TransferServerOptions } from '../../src/server/transfer-server.js';
import { openUdpSocket } from '../../src/transport/socket/udp.js';
import { jsonLines, runCli } from '../helpers/cli.js';
import { slowRelay } from '../helpers/relay.js';

const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');

/** A work directory with a server root and a client key `id`, and an in-process transfer server for it (`extra` added to its options). */
async function fixture(prefix: string, extra: Partial<TransferServerOptions> = {}): Promise<{ work: string; root: string; server: TransferServer }> {
  const work = mkdtempSync(path.join(os.tmpdir(), prefix));
  const root = path.join(work, 'root');
  mkdirSync(root);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(work, 'id')]);
  const server = await startTransferServer({
    accounts: singleUserAccounts({ user: 'xfer', root, keys: parseAuthorizedKeys(readFileSync(path.join(work, 'id.pub'), 'utf8')).keys, ciphers: CIPHERS }),
    hostKeyFile: path.join(work, 'host_key'),
    listen: '127.0.0.1',
    port: 0,
    allowedCiphers: CIPHERS,
    maxRateBps: 10e9,
    ...extra,
  });
  return { work, root, server };
}

describe('early data over SSH: tachyon send against an in-process server', () => {
  let work: string;
  let root: string;
  let server: TransferServer;

  before(async () => {
    ({ work, root, server } = await fixture('tachyon-early-ssh-'));
  });

  after(async () => {
    await server?.close();
    rmSync(work, { recursive: true, force: true });
  });

  const send = (...args: string[]): ReturnType<typeof runCli> =>
    runCli(['send', '-P', String(server.port), '-i', path.join(work, 'id'), '--host-key-fingerprint', server.hostKeyFingerprint, '-l', '300m', '--json', ...args], work);

  for (const overwrite of ['diff', 'always'] as const) {
    it(`--overwrite ${overwrite}: data leaves before welcome, the endpoint hands what it held to the session, the file is exact`, async () => {
      assert.equal(server.udpPort, server.port, 'the data port is the SSH port number (what the client guesses)');
      const src = path.join(work, `up-${overwrite}.bin`);
      writeFileSync(src, randomBytes(6 * 1024 * 1024 + 5));
      const before = { ...server.endpoint.stats };
      const r = await send('--overwrite', overwrite, src, `xfer@127.0.0.1:/up-${overwrite}.bin`);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sha(path.join(root, `up-${overwrite}.bin`)), sha(src));
      const done = jsonLines(r.stdout).find((e) => e['event'] === 'done');
      assert.ok(done && done['ok'] === true, r.stdout);
      const ep = server.endpoint.stats;
      const held = ep.held - before.held;
      const delivered = ep.heldDelivered - before.heldDelivered;
      assert.ok(held > 0 && delivered > 0, `held ${held}, delivered ${delivered}: the data did not leave before welcome`);
      assert.equal(ep.heldDropped - before.heldDropped, 0);
      assert.equal(server.endpoint.heldNow, 0, 'nothing left in the hold');
    });
  }
});

describe('early data at TCP connect: tachyon send behind a slow TCP path', () => {
  // The SSH connection crosses a relay that holds every chunk ONE_WAY_MS each way, so the
  // key exchange cannot finish before 2 × ONE_WAY_MS after the TCP connection; the data
  // port (the relay's port number, bound by the server) is reached directly.
  const ONE_WAY_MS = 400;
  let work: string;
  let root: string;
  let server: TransferServer;
  let relay: Awaited<ReturnType<typeof slowRelay>>;
  const connections: number[] = [];

  before(async () => {
    relay = await slowRelay(() => server.port, ONE_WAY_MS, () => connections.push(performance.now()));
    ({ work, root, server } = await fixture('tachyon-early-tcp-', { openUdp: (address) => openUdpSocket({ address, port: relay.port }) }));
  });

  after(async () => {
    await relay?.close();
    await server?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('the first datagrams reach the server before the key exchange can have finished; the file is exact', async () => {
    assert.equal(server.udpPort, relay.port);
    const src = path.join(work, 'up.bin');
    writeFileSync(src, randomBytes(3 * 1024 * 1024 + 7));
    const before = { ...server.endpoint.stats };
    let firstHeld: number | undefined;
    const watch = setInterval(() => {
      if (firstHeld === undefined && server.endpoint.stats.held > before.held) firstHeld = performance.now();
    }, 2);
    try {
      const r = await runCli(
        ['send', '-P', String(relay.port), '-i', path.join(work, 'id'), '--host-key-fingerprint', server.hostKeyFingerprint, '-l', '100m', '--race', '1', '--json', src, 'xfer@127.0.0.1:/up.bin'],
        work,
      );
      assert.equal(r.code, 0, r.stderr);
    } finally {
      clearInterval(watch);
    }
    assert.equal(sha(path.join(root, 'up.bin')), sha(src));
    assert.equal(connections.length, 1);
    assert.ok(firstHeld !== undefined, 'no datagram was held');
    const after = firstHeld - connections[0]!;
    // before: the data left behind hello, after the key exchange (≥ 800 ms after connecting)
    assert.ok(after < 2 * ONE_WAY_MS - 100, `the first datagram arrived ${after.toFixed(0)} ms after the TCP connection`);
    assert.equal(server.endpoint.stats.heldDropped - before.heldDropped, 0);
    assert.equal(server.endpoint.heldNow, 0, 'nothing left in the hold');
  });
});
