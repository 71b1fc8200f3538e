import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { TachyonError } from '../../src/core/errors.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { configuredNotifier } from '../../src/cli/defender-commands.js';
import { FanOutNotifier, SmtpNotifier, WebhookNotifier, type DefenderNotice } from '../../src/defender/index.js';
import { validateServerConfig } from '../../src/server/config.js';

const blocked: DefenderNotice = { event: 'blocked', address: '203.0.113.9', score: 15, banCount: 2, until: '2026-11-29T13:00:00.000Z', at: '2026-11-29T12:00:00.000Z' };

async function webhookServer(status = 204): Promise<{ url: string; bodies: Array<{ headers: IncomingMessage['headers']; body: unknown }>; close(): Promise<void> }> {
  const bodies: Array<{ headers: IncomingMessage['headers']; body: unknown }> = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      bodies.push({ headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/hooks/tachyon`, bodies, close: () => new Promise((r) => server.close(() => r())) };
}

interface Mail {
  from: string | undefined;
  to: string[];
  data: string;
  user: string | undefined;
}

async function smtpServer(o: { auth?: { user: string; pass: string } } = {}): Promise<{ port: number; mails: Mail[]; close(): Promise<void> }> {
  const mails: Mail[] = [];
  const server = new SMTPServer({
    secure: false,
    disabledCommands: o.auth ? ['STARTTLS'] : ['STARTTLS', 'AUTH'],
    ...(o.auth ? { allowInsecureAuth: true, authOptional: false } : { authOptional: true }),
    logger: false,
    onAuth(auth, _session, cb) {
      if (o.auth && auth.username === o.auth.user && auth.password === o.auth.pass) cb(null, { user: auth.username });
      else cb(new Error('bad credentials'));
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        mails.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : undefined,
          to: session.envelope.rcptTo.map((r) => r.address),
          data: Buffer.concat(chunks).toString('utf8'),
          user: typeof session.user === 'string' ? session.user : undefined,
        });
        cb();
      });
    },
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.server.address() as AddressInfo;
  return { port, mails, close: () => new Promise((r) => server.close(() => r())) };
}

describe('defender notifiers', () => {
  it('webhook: POSTs the notice as JSON to a real HTTP server', async () => {
    const hook = await webhookServer();
    try {
      const n = new WebhookNotifier({ url: hook.url, headers: { authorization: 'Bearer hook-secret' } });
      await n.notify(blocked);
      await n.notify({ event: 'unblocked', address: '203.0.113.9', actor: 'cli:root', at: '2026-11-29T12:05:00.000Z' });
      assert.equal(hook.bodies.length, 2);
      assert.deepEqual(hook.bodies[0]!.body, { source: 'tachyon.defender', ...blocked });
      assert.equal(hook.bodies[0]!.headers['content-type'], 'application/json');
      assert.equal(hook.bodies[0]!.headers.authorization, 'Bearer hook-secret');
      assert.equal((hook.bodies[1]!.body as { event: string }).event, 'unblocked');
    } finally {
      await hook.close();
    }
  });

  it('webhook: a failing receiver or an unreachable one is a TachyonError, a bad URL a CONFIG error', async () => {
    const hook = await webhookServer(500);
    try {
      await assert.rejects(new WebhookNotifier({ url: hook.url }).notify(blocked), (e: unknown) => e instanceof TachyonError && e.code === 'IO');
    } finally {
      await hook.close();
    }
    await assert.rejects(new WebhookNotifier({ url: hook.url, timeoutMs: 2000 }).notify(blocked), (e: unknown) => e instanceof TachyonError && e.code === 'CONNECT');
    assert.throws(() => new WebhookNotifier({ url: 'ftp://example.test/x' }), (e: unknown) => e instanceof TachyonError && e.code === 'CONFIG');
    assert.throws(() => new WebhookNotifier({ url: 'not a url' }), (e: unknown) => e instanceof TachyonError && e.code === 'CONFIG');
  });

  it('SMTP: mails administrators through a real SMTP server (with authentication)', async () => {
    const smtp = await smtpServer({ auth: { user: 'tachyon', pass: 'mail-pass' } });
    try {
      const n = new SmtpNotifier({ host: '127.0.0.1', port: smtp.port, user: 'tachyon', password: 'mail-pass', from: 'tachyon@example.test', to: ['ops@example.test', 'sec@example.test'] });
      await n.notify(blocked);
      await n.close();
      assert.equal(smtp.mails.length, 1);
      const m = smtp.mails[0]!;
      const body = m.data.replace(/=\r\n/g, ''); // quoted-printable soft line breaks
      assert.equal(m.from, 'tachyon@example.test');
      assert.deepEqual(m.to, ['ops@example.test', 'sec@example.test']);
      assert.equal(m.user, 'tachyon');
      assert.match(m.data, /Subject: Tachyon blocked 203\.0\.113\.9/);
      assert.match(body, /until 2026-11-29T13:00:00\.000Z \(score 15, ban 2\)/);
      assert.doesNotMatch(m.data, /mail-pass/);
      // wrong password: refused, as a TachyonError
      const wrong = new SmtpNotifier({ host: '127.0.0.1', port: smtp.port, user: 'tachyon', password: 'nope', from: 'tachyon@example.test', to: ['ops@example.test'] });
      await assert.rejects(wrong.notify(blocked), (e: unknown) => e instanceof TachyonError && e.code === 'CONNECT');
      await wrong.close();
    } finally {
      await smtp.close();
    }
  });

  it('fan-out: every notifier gets the notice', async () => {
    const hook = await webhookServer();
    const smtp = await smtpServer();
    try {
      const n = new FanOutNotifier([new WebhookNotifier({ url: hook.url }), new SmtpNotifier({ host: '127.0.0.1', port: smtp.port, from: 't@example.test', to: ['a@example.test'] })]);
      await n.notify(blocked);
      await n.close();
      assert.equal(hook.bodies.length, 1);
      assert.equal(smtp.mails.length, 1);
    } finally {
      await hook.close();
      await smtp.close();
    }
  });

  it('from the configuration: webhook and SMTP with the password read from passwordFile', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tachyon-notify-cfg-'));
    const hook = await webhookServer();
    const smtp = await smtpServer({ auth: { user: 'tachyon', pass: 'from-file' } });
    try {
      writeFileSync(path.join(dir, 'smtp.pass'), 'from-file\n', { mode: 0o600 });
      const cfg = await validateServerConfig(
        {
          allowedRoots: [`file://${dir}/*`],
          defender: { notify: { webhook: { url: hook.url }, smtp: { host: '127.0.0.1', port: smtp.port, user: 'tachyon', passwordFile: 'smtp.pass', from: 't@example.test', to: ['ops@example.test'] } } },
        },
        'cfg.json',
        dir,
      );
      const n = configuredNotifier(cfg);
      assert.ok(n);
      await n.notify(blocked);
      await n.close?.();
      assert.equal(hook.bodies.length, 1);
      assert.equal(smtp.mails.length, 1);
      assert.equal(smtp.mails[0]!.user, 'tachyon');
      const none = await validateServerConfig({ allowedRoots: [`file://${dir}/*`] }, 'cfg.json', dir);
      assert.equal(configuredNotifier(none), undefined);
    } finally {
      await hook.close();
      await smtp.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
