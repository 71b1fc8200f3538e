// quick manual smoke: node dist/test/transfer/loopback-smoke.js SIZE_MB
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { randomBytes, createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { systemClock } from '../../src/core/clock.js';
import { openUdpSocket } from '../../src/transport/socket/udp.js';
import { Endpoint } from '../../src/transport/session/endpoint.js';
import { Jail } from '../../src/transfer/jail.js';
import { serveSession, clientTransfer } from '../../src/transfer/session.js';
import { memoryLinkPair } from '../../src/testkit/memory-link.js';

const mb = Number(process.argv[2] ?? 20);
const dir = mkdtempSync(path.join(os.tmpdir(), 'tsmoke-'));
const src = path.join(dir, 'src.bin');
const data = randomBytes(mb * 1024 * 1024);
writeFileSync(src, data);
const root = path.join(dir, 'root');
import('node:fs').then(async (fs) => {
  fs.mkdirSync(root);
  const sock = await openUdpSocket({ address: '127.0.0.1', port: 0 });
  const ep = new Endpoint(sock);
  const [cl, sl] = memoryLinkPair();
  const t0 = performance.now();
  const server = serveSession(sl, { endpoint: ep, udpPort: sock.local().port, jail: new Jail(root), clock: systemClock, allowedCiphers: ['aes-128-gcm', 'none'], maxRateBps: 10e9 });
  const res = await clientTransfer({
    link: cl, serverAddress: '127.0.0.1', clock: systemClock, op: 'send', cipher: (process.argv[3] as 'aes-128-gcm') ?? 'aes-128-gcm', policy: 'fair', targetBps: 10e9, minBps: 0,
    datagramSize: Number(process.argv[4] ?? 1472), sources: [src], dest: '/',
    openSocket: async () => new Endpoint(await openUdpSocket({ address: '127.0.0.1', port: 0 })),
  });
  const secs = (performance.now() - t0) / 1000;
  const srv = await server;
  console.log(JSON.stringify(res.stats), JSON.stringify(srv?.stats));
  const got = readFileSync(path.join(root, 'src.bin'));
  console.log(JSON.stringify({ ok: res.ok, secs, gbps: (mb * 8 * 1.048576) / 1000 / secs, same: createHash('sha256').update(got).digest('hex') === createHash('sha256').update(data).digest('hex'), ep: ep.stats }));
  await sock.close();
});
