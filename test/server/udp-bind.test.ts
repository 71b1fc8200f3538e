/**
 * Port 0: the transfer server takes the TCP port the kernel chose and binds the same UDP
 * port for data. When another process already holds that UDP port, it lets the TCP port
 * go and chooses again, instead of failing to start. The clash here is real: a UDP
 * socket bound to the chosen port just before the server's own bind.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { singleUserAccounts } from '../../src/server/accounts.js';
import { startTransferServer } from '../../src/server/transfer-server.js';
import type { TransferServerOptions } from '../../src/server/transfer-server.js';
import { CIPHERS } from '../../src/core/types.js';
import { TachyonError } from '../../src/core/errors.js';
import { openUdpSocket } from '../../src/transport/socket/udp.js';

function occupy(port: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind(port, '127.0.0.1', () => resolve(s));
  });
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.once('connect', () => {
      c.destroy();
      resolve(false);
    });
    c.once('error', () => resolve(true));
  });
}

describe('transfer server on port 0: the UDP port is taken', () => {
  let work = '';
  const blockers: dgram.Socket[] = [];

  before(() => {
    work = mkdtempSync(path.join(os.tmpdir(), 'tachyon-udp-bind-'));
    mkdirSync(path.join(work, 'root'));
  });

  after(() => {
    for (const b of blockers) b.close();
    rmSync(work, { recursive: true, force: true });
  });

  const options = (over: Partial<TransferServerOptions>): TransferServerOptions => ({
    accounts: singleUserAccounts({ user: 'xfer', root: path.join(work, 'root'), keys: [], ciphers: CIPHERS }),
    hostKeyFile: path.join(work, 'host_key'),
    listen: '127.0.0.1',
    port: 0,
    allowedCiphers: CIPHERS,
    maxRateBps: 10e9,
    ...over,
  });

  it('chooses another port pair instead of failing, and lets the first TCP port go', async () => {
    const tried: number[] = [];
    const server = await startTransferServer(
      options({
        openUdp: async (address, port) => {
          tried.push(port);
          // another process takes the UDP port between our TCP listen and our UDP bind
          if (tried.length <= 2) blockers.push(await occupy(port));
          return openUdpSocket({ address, port });
        },
      }),
    );
    try {
      assert.equal(tried.length, 3, `ports tried: ${tried.join(', ')}`);
      assert.equal(new Set(tried).size, 3, 'a new port each time');
      assert.equal(server.port, tried[2]);
      assert.equal(server.udpPort, server.port, 'data on the same port number as SSH');
      assert.ok(await refused(tried[0]!), 'the abandoned TCP port is closed');
      assert.ok(await refused(tried[1]!), 'the abandoned TCP port is closed');
    } finally {
      await server.close();
    }
  });

  it('a port given explicitly is not replaced: the clash is reported', async () => {
    const probe = await occupy(0);
    const port = probe.address().port;
    blockers.push(probe);
    await assert.rejects(startTransferServer(options({ port })), (e: unknown) => {
      assert.ok(e instanceof TachyonError, String(e));
      assert.match(e.message, new RegExp(String(port)));
      return true;
    });
    assert.ok(await refused(port), 'nothing is left listening on TCP');
  });

  it('gives up after five clashes', async () => {
    let calls = 0;
    await assert.rejects(
      startTransferServer(
        options({
          openUdp: async (address, port) => {
            calls++;
            blockers.push(await occupy(port));
            return openUdpSocket({ address, port });
          },
        }),
      ),
      TachyonError,
    );
    assert.equal(calls, 5);
  });
});
