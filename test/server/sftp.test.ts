/**
 * The SFTP server through ssh2's client: operations, permissions, status codes, limits,
 * audit events, and seeded random requests (paths, handles, raw packets).
 */
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { Attributes, SFTPWrapper } from 'ssh2';
import { serveSftp, sftpOverChannel, SFTP_STATUS, type SftpEvent } from '../../src/server/sftp.js';
import { Jail } from '../../src/transfer/jail.js';
import { ALL_PERMISSIONS, permissionSet } from '../../src/transfer/permissions.js';
import { duplexPair, tempDir } from '../control/helpers.js';
import { Rng } from '../helpers/rng.js';
import { ssh2RawSftp, ssh2Sftp, startSftpTestServer, type SftpTestServer } from './sftp-harness.js';

type Err = Error & { code?: number };

/** Calls an ssh2 SFTP client method; resolves with its result or the status error. */
function call<T>(fn: (cb: (err: Err | undefined | null, res?: T) => void) => void): Promise<{ err?: Err; res?: T }> {
  return new Promise((resolve) => fn((err, res) => resolve(err ? { err } : { res: res as T })));
}

async function expectStatus<T>(p: Promise<{ err?: Err; res?: T }>, code: number, what: string): Promise<Err> {
  const r = await p;
  assert.ok(r.err, `${what}: expected status ${code}, got success`);
  assert.equal(r.err.code, code, `${what}: status ${String(r.err.code)} (${r.err.message})`);
  return r.err;
}

async function must<T>(p: Promise<{ err?: Err; res?: T }>, what: string): Promise<T> {
  const r = await p;
  assert.ok(!r.err, `${what}: ${r.err?.message ?? ''} (status ${String(r.err?.code)})`);
  return r.res as T;
}

const writeFile = (s: SFTPWrapper, p: string, data: Buffer): Promise<{ err?: Err }> =>
  call<void>((cb) => s.writeFile(p, data, (e) => cb(e as Err)));
const readFile = (s: SFTPWrapper, p: string): Promise<{ err?: Err; res?: Buffer }> => call<Buffer>((cb) => s.readFile(p, (e, d) => cb(e as Err, d)));

describe('SFTP server (ssh2 client)', () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => {};
  let root = '';
  let outside = '';
  let server: SftpTestServer;

  const connect = (user: string): Promise<{ sftp: SFTPWrapper; end: () => void }> => ssh2Sftp(server.port, user, server.keyFile);
  const eventsOf = (user: string, op?: string): SftpEvent[] => server.events.filter((e) => e.user === user && (op === undefined || e.op === op));

  before(async () => {
    ({ dir, cleanup } = await tempDir('sftp'));
    dir = realpathSync(dir);
    root = path.join(dir, 'root');
    outside = path.join(dir, 'outside');
    mkdirSync(root);
    mkdirSync(outside);
    writeFileSync(path.join(outside, 'secret.txt'), 'secret');
    writeFileSync(path.join(root, 'hello.txt'), 'hello world');
    mkdirSync(path.join(root, 'docs'));
    writeFileSync(path.join(root, 'docs', 'a.txt'), 'a');
    symlinkSync(outside, path.join(root, 'link-out'));
    symlinkSync(path.join(outside, 'secret.txt'), path.join(root, 'link-out-file'));
    symlinkSync('docs', path.join(root, 'link-in'));
    server = await startSftpTestServer({
      dir,
      jail: new Jail(root),
      via: 'ssh2',
      users: {
        full: ALL_PERMISSIONS,
        reader: permissionSet(['list', 'read']),
        writer: permissionSet(['list', 'read', 'write', 'mkdir']),
        blind: permissionSet(['read', 'write']),
        nothing: permissionSet([]),
      },
      limits: { maxHandles: 8 },
    });
  });

  after(async () => {
    await server.close();
    await cleanup();
  });

  it('lists, reads, writes, makes, renames and removes within the root', async () => {
    const { sftp, end } = await connect('full');
    try {
      assert.equal((await must(call<string>((cb) => sftp.realpath('.', cb)), 'realpath .')), '/');
      const names = (await must(call<{ filename: string }[]>((cb) => sftp.readdir('/', cb)), 'readdir /')).map((e) => e.filename).sort();
      assert.deepEqual(names, ['docs', 'hello.txt', 'link-in']);
      assert.equal((await must(readFile(sftp, '/hello.txt'), 'read')).toString(), 'hello world');
      await must(call<void>((cb) => sftp.mkdir('/new', cb)), 'mkdir');
      const data = Buffer.alloc(300_000, 7);
      await must(writeFile(sftp, '/new/f.bin', data), 'write');
      assert.ok(readFileSync(path.join(root, 'new', 'f.bin')).equals(data));
      await must(call<void>((cb) => sftp.rename('/new/f.bin', '/new/g.bin', cb)), 'rename');
      const st = await must(call<Attributes>((cb) => sftp.stat('/new/g.bin', cb)), 'stat');
      assert.equal(st.size, data.length);
      await must(call<void>((cb) => sftp.unlink('/new/g.bin', cb)), 'unlink');
      await must(call<void>((cb) => sftp.rmdir('/new', cb)), 'rmdir');
      assert.ok(!existsSync(path.join(root, 'new')));
      // links inside the root are followed
      assert.equal((await must(readFile(sftp, '/link-in/a.txt'), 'read via link-in')).toString(), 'a');
    } finally {
      end();
    }
    const writes = eventsOf('full', 'write');
    assert.ok(writes.some((e) => e.path === '/new/f.bin' && e.bytes === 300_000 && e.outcome === 'ok' && e.durationMs >= 0), JSON.stringify(writes));
    const reads = eventsOf('full', 'read');
    assert.ok(reads.some((e) => e.path === '/hello.txt' && e.bytes === 11 && e.outcome === 'ok'));
    assert.ok(eventsOf('full', 'rename').some((e) => e.path === '/new/f.bin' && e.toPath === '/new/g.bin' && e.outcome === 'ok'));
    assert.ok(eventsOf('full', 'remove').some((e) => e.outcome === 'ok'));
  });

  it('refuses escapes with PERMISSION_DENIED and records the reason', async () => {
    const { sftp, end } = await connect('full');
    try {
      const cases: [string, string][] = [
        ['../../etc/passwd', 'above-root'],
        ['/link-out/secret.txt', 'symlink-escape'],
        ['/link-out-file', 'symlink-escape'],
        ['/a\uff0f..\uff0f..\uff0fetc', 'unicode-escape'],
        ['/x\u0000y', 'nul-byte'],
        ['/\u2025/etc/passwd', 'unicode-escape'],
      ];
      for (const [p, reason] of cases) {
        const err = await expectStatus(readFile(sftp, p), SFTP_STATUS.PERMISSION_DENIED, `read ${JSON.stringify(p)}`);
        assert.match(err.message, /^Invalid path: it /);
        assert.ok(!err.message.includes(dir), 'no server path in the message');
        assert.ok(
          server.events.some((e) => e.op === 'open' && e.outcome === 'refused' && e.reason === reason && e.code === 'PATH_INVALID'),
          `audit event with reason ${reason}`,
        );
      }
      await expectStatus(writeFile(sftp, '/link-out/new.txt', Buffer.from('x')), SFTP_STATUS.PERMISSION_DENIED, 'write through link-out');
      await expectStatus(writeFile(sftp, '/link-out-file', Buffer.from('x')), SFTP_STATUS.PERMISSION_DENIED, 'write onto link-out-file');
      await expectStatus(call<void>((cb) => sftp.mkdir('/link-out/d', cb)), SFTP_STATUS.PERMISSION_DENIED, 'mkdir in link-out');
      await expectStatus(call<void>((cb) => sftp.rename('/hello.txt', '/link-out/stolen', cb)), SFTP_STATUS.PERMISSION_DENIED, 'rename out');
      await expectStatus(call<unknown>((cb) => sftp.readdir('/link-out', cb)), SFTP_STATUS.PERMISSION_DENIED, 'readdir link-out');
      await expectStatus(call<string>((cb) => sftp.realpath('/..', cb)), SFTP_STATUS.PERMISSION_DENIED, 'realpath /..');
      await expectStatus(call<string>((cb) => sftp.readlink('/link-in', cb)), SFTP_STATUS.OP_UNSUPPORTED, 'readlink');
      await expectStatus(call<void>((cb) => sftp.symlink('/etc/passwd', '/pw', cb)), SFTP_STATUS.OP_UNSUPPORTED, 'symlink');
      await expectStatus(call<Attributes>((cb) => sftp.stat('/missing', cb)), SFTP_STATUS.NO_SUCH_FILE, 'stat missing');
      assert.deepEqual(readdirSync(outside), ['secret.txt']);
      assert.equal(readFileSync(path.join(outside, 'secret.txt'), 'utf8'), 'secret');
      assert.ok(!existsSync(path.join(root, 'pw')));
    } finally {
      end();
    }
  });

  it('enforces each permission on its own (deny by default)', async () => {
    const reader = await connect('reader');
    try {
      assert.equal((await must(readFile(reader.sftp, '/hello.txt'), 'reader read')).toString(), 'hello world');
      await expectStatus(writeFile(reader.sftp, '/r.txt', Buffer.from('x')), SFTP_STATUS.PERMISSION_DENIED, 'reader write');
      await expectStatus(call<void>((cb) => reader.sftp.mkdir('/rd', cb)), SFTP_STATUS.PERMISSION_DENIED, 'reader mkdir');
      await expectStatus(call<void>((cb) => reader.sftp.unlink('/hello.txt', cb)), SFTP_STATUS.PERMISSION_DENIED, 'reader unlink');
      await expectStatus(call<void>((cb) => reader.sftp.rename('/hello.txt', '/h2', cb)), SFTP_STATUS.PERMISSION_DENIED, 'reader rename');
      await expectStatus(call<void>((cb) => reader.sftp.utimes('/hello.txt', 1, 1, cb)), SFTP_STATUS.PERMISSION_DENIED, 'reader setstat');
    } finally {
      reader.end();
    }
    const denied = eventsOf('reader').filter((e) => e.outcome === 'denied');
    assert.deepEqual(
      denied.map((e) => e.permission),
      ['write', 'mkdir', 'delete', 'rename', 'write'],
    );
    assert.ok(denied.every((e) => e.code === 'PERMISSION' && e.reason === 'permission'));

    const writer = await connect('writer');
    try {
      await must(writeFile(writer.sftp, '/w.txt', Buffer.from('one')), 'writer write');
      // write includes overwriting content, never removing a name
      await must(writeFile(writer.sftp, '/w.txt', Buffer.from('two')), 'writer overwrite');
      assert.equal(readFileSync(path.join(root, 'w.txt'), 'utf8'), 'two');
      await expectStatus(call<void>((cb) => writer.sftp.unlink('/w.txt', cb)), SFTP_STATUS.PERMISSION_DENIED, 'writer unlink');
      await expectStatus(call<void>((cb) => writer.sftp.rename('/w.txt', '/w2.txt', cb)), SFTP_STATUS.PERMISSION_DENIED, 'writer rename');
      await must(call<void>((cb) => writer.sftp.mkdir('/wd', cb)), 'writer mkdir');
      await expectStatus(call<void>((cb) => writer.sftp.rmdir('/wd', cb)), SFTP_STATUS.PERMISSION_DENIED, 'writer rmdir');
    } finally {
      writer.end();
    }

    const blind = await connect('blind');
    try {
      await expectStatus(call<unknown>((cb) => blind.sftp.readdir('/', cb)), SFTP_STATUS.PERMISSION_DENIED, 'blind readdir');
      assert.equal((await must(readFile(blind.sftp, '/hello.txt'), 'blind read of a known name')).toString(), 'hello world');
    } finally {
      blind.end();
    }

    const nothing = await connect('nothing');
    try {
      await expectStatus(readFile(nothing.sftp, '/hello.txt'), SFTP_STATUS.PERMISSION_DENIED, 'nothing read');
      await expectStatus(call<unknown>((cb) => nothing.sftp.readdir('/', cb)), SFTP_STATUS.PERMISSION_DENIED, 'nothing readdir');
    } finally {
      nothing.end();
    }
  });

  it('never renames over an existing name', async () => {
    const { sftp, end } = await connect('full');
    try {
      await must(writeFile(sftp, '/r1.txt', Buffer.from('1')), 'write r1');
      await must(writeFile(sftp, '/r2.txt', Buffer.from('2')), 'write r2');
      const err = await expectStatus(call<void>((cb) => sftp.rename('/r1.txt', '/r2.txt', cb)), SFTP_STATUS.FAILURE, 'rename over');
      assert.equal(err.message, 'The destination exists.');
      assert.equal(readFileSync(path.join(root, 'r2.txt'), 'utf8'), '2');
      assert.equal(readFileSync(path.join(root, 'r1.txt'), 'utf8'), '1');
      await must(call<void>((cb) => sftp.mkdir('/rdir', cb)), 'mkdir');
      await expectStatus(call<void>((cb) => sftp.rename('/r1.txt', '/rdir', cb)), SFTP_STATUS.FAILURE, 'rename over a directory');
      await must(call<void>((cb) => sftp.rename('/rdir', '/rdir2', cb)), 'rename a directory');
      assert.ok(statSync(path.join(root, 'rdir2')).isDirectory());
    } finally {
      end();
    }
  });

  it('setstat sets times, masks permission bits to 0755 (never setuid) and refuses chown', async () => {
    const { sftp, end } = await connect('full');
    try {
      await must(writeFile(sftp, '/attrs.txt', Buffer.from('x')), 'write');
      await must(call<void>((cb) => sftp.utimes('/attrs.txt', 1_000_000, 1_500_000, cb)), 'utimes');
      assert.equal(Math.floor(statSync(path.join(root, 'attrs.txt')).mtimeMs / 1000), 1_500_000);
      await must(call<void>((cb) => sftp.chmod('/attrs.txt', 0o6777, cb)), 'chmod 6777');
      assert.equal(statSync(path.join(root, 'attrs.txt')).mode & 0o7777, 0o755);
      await must(call<void>((cb) => sftp.chmod('/attrs.txt', 0o000, cb)), 'chmod 000');
      assert.equal(statSync(path.join(root, 'attrs.txt')).mode & 0o7777, 0o600);
      const err = await expectStatus(call<void>((cb) => sftp.chown('/attrs.txt', 12345, 12345, cb)), SFTP_STATUS.PERMISSION_DENIED, 'chown');
      assert.match(err.message, /owner/);
      await must(call<void>((cb) => sftp.setstat('/attrs.txt', { size: 0 } as Attributes, cb)), 'truncate');
      assert.equal(statSync(path.join(root, 'attrs.txt')).size, 0);
      await must(call<void>((cb) => sftp.mkdir('/m', { mode: 0o4777 }, cb)), 'mkdir 4777');
      assert.equal(statSync(path.join(root, 'm')).mode & 0o7777, 0o755);
    } finally {
      end();
    }
  });

  it('limits open handles per session', async () => {
    const { sftp, end } = await connect('full');
    try {
      const handles: Buffer[] = [];
      for (let i = 0; i < 8; i++) handles.push(await must(call<Buffer>((cb) => sftp.open('/hello.txt', 'r', cb)), `open ${i}`));
      const err = await expectStatus(call<Buffer>((cb) => sftp.open('/hello.txt', 'r', cb)), SFTP_STATUS.FAILURE, 'open 9');
      assert.match(err.message, /Too many open handles/);
      await expectStatus(call<Buffer>((cb) => sftp.opendir('/', cb)), SFTP_STATUS.FAILURE, 'opendir beyond the limit');
      await must(call<void>((cb) => sftp.close(handles.pop()!, cb)), 'close');
      handles.push(await must(call<Buffer>((cb) => sftp.open('/hello.txt', 'r', cb)), 'open after close'));
      for (const h of handles) await must(call<void>((cb) => sftp.close(h, cb)), 'close');
      // an unknown handle
      await expectStatus(call<void>((cb) => sftp.close(Buffer.from([0, 0, 0, 99]), cb)), SFTP_STATUS.FAILURE, 'close unknown');

    } finally {
      end();
    }
  });

  it('closes what a vanished client left open and records it as aborted', async () => {
    const { sftp, end } = await connect('full');
    const h = await must(call<Buffer>((cb) => sftp.open('/left-open.bin', 'w', cb)), 'open');
    await must(call<void>((cb) => sftp.write(h, Buffer.alloc(1000, 3), 0, 1000, 0, cb)), 'write');
    end();
    const deadline = Date.now() + 5000;
    while (!eventsOf('full', 'write').some((e) => e.path === '/left-open.bin') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const ev = eventsOf('full', 'write').find((e) => e.path === '/left-open.bin');
    assert.equal(ev?.outcome, 'aborted');
    assert.equal(ev?.bytes, 1000);
    await Promise.all(server.sessions.map((s) => s.closed));
    assert.ok(server.sessions.every((s) => s.openHandles === 0));
    assert.ok(server.events.some((e) => e.op === 'session-end'));
  });

  it('a malformed packet ends only that session (ssh2 server path)', async () => {
    const { stream, end } = await ssh2RawSftp(server.port, 'full', server.keyFile);
    const raw = new RawSftp(stream);
    raw.send(FXP.INIT, RawSftp.u32(3));
    const ok = await raw.request(FXP.STAT, 1, RawSftp.str('/hello.txt'));
    assert.equal(ok.type, 105);
    raw.send(FXP.READ, Buffer.concat([RawSftp.u32(2), RawSftp.u32(1000), Buffer.alloc(16, 1)]));
    const deadline = Date.now() + 5000;
    while (!raw.ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    end();
    assert.ok(raw.ended, 'the server ended the channel');
    assert.ok(server.events.some((e) => e.op === 'protocol-error'));
    // the server still serves others
    const other = await connect('full');
    try {
      assert.equal(await must(call<string>((cb) => other.sftp.realpath('.', cb)), 'realpath'), '/');
    } finally {
      other.end();
    }
  });

  it('audit events hold no file data and only the listed fields', async () => {
    const keys = new Set(['type', 'user', 'op', 'path', 'toPath', 'bytes', 'entries', 'outcome', 'code', 'reason', 'permission', 'durationMs']);
    for (const e of server.events) {
      for (const k of Object.keys(e)) assert.ok(keys.has(k), `unexpected field ${k}`);
      assert.ok(!JSON.stringify(e).includes('hello world'));
      assert.ok(!JSON.stringify(e).includes(dir), `no server path in ${JSON.stringify(e)}`);
    }
  });

  it('survives seeded random requests: every effect stays inside the root', async () => {
    const { sftp, end } = await connect('full');
    const rng = new Rng(0x5f7b);
    const names = ['a', 'b', 'docs', 'link-in', 'link-out', 'link-out-file', '..', '.', '', '\uff0e\uff0e', '\u2025', 'x\u0000', 'f.bin', 'dd', 'caf\u00e9', 'cafe\u0301'];
    const randomPath = (): string => {
      const parts: string[] = [];
      for (let i = rng.range(0, 4); i > 0; i--) parts.push(rng.pick(names));
      return (rng.chance(0.7) ? '/' : '') + parts.join('/');
    };
    const handles: Buffer[] = [Buffer.from([0, 0, 0, 0]), Buffer.from([1, 2, 3]), Buffer.alloc(0)];
    try {
      for (let n = 0; n < 400; n++) {
        const p = randomPath();
        const q = randomPath();
        const h = rng.pick(handles);
        switch (rng.int(12)) {
          case 0: {
            const r = await call<Buffer>((cb) => sftp.open(p, rng.pick(['r', 'w', 'a', 'wx', 'r+']), cb));
            if (r.res) handles.push(r.res);
            break;
          }
          case 1:
            await call<void>((cb) => sftp.write(h, Buffer.alloc(rng.range(1, 5000), 1), 0, rng.range(1, 5000), rng.range(0, 1 << 20), cb)).catch(() => undefined);
            break;
          case 2:
            await new Promise<void>((r) => sftp.read(h, Buffer.alloc(70_000), 0, rng.range(0, 70_000), rng.range(0, 1 << 20), () => r()));
            break;
          case 3:
            await call<void>((cb) => sftp.close(h, cb));
            break;
          case 4:
            await call<void>((cb) => sftp.mkdir(p, cb));
            break;
          case 5:
            await call<void>((cb) => sftp.rename(p, q, cb));
            break;
          case 6:
            await call<void>((cb) => sftp.unlink(p, cb));
            break;
          case 7:
            await call<void>((cb) => sftp.rmdir(p, cb));
            break;
          case 8:
            await call<unknown>((cb) => sftp.readdir(p, cb));
            break;
          case 9:
            await call<Attributes>((cb) => sftp.stat(p, cb));
            break;
          case 10:
            await call<string>((cb) => sftp.realpath(p, cb));
            break;
          default:
            await call<void>((cb) => sftp.setstat(p, { mode: rng.int(0o10000), atime: rng.int(2e9), mtime: rng.int(2e9) } as Attributes, cb));
        }
      }
      // still answering
      assert.equal(await must(call<string>((cb) => sftp.realpath('/', cb)), 'realpath after fuzz'), '/');
    } finally {
      end();
    }
    assert.deepEqual(readdirSync(outside), ['secret.txt']);
    assert.equal(readFileSync(path.join(outside, 'secret.txt'), 'utf8'), 'secret');
    assert.ok(lstatSync(path.join(root, 'link-out')).isSymbolicLink());
    for (const e of server.events) {
      if (e.outcome === 'ok' && e.path !== undefined) assert.ok(!e.path.includes('\u0000'));
    }
  });
});

/** A bare SFTP v3 client over a byte stream, for malformed and edge-case requests. */
class RawSftp {
  private buf = Buffer.alloc(0);
  private readonly waiters = new Map<number, (r: { type: number; body: Buffer }) => void>();
  version: number | undefined;
  ended = false;

  constructor(private readonly ch: Duplex) {
    ch.on('data', (d: Buffer) => this.onData(d));
    ch.on('end', () => (this.ended = true));
    ch.on('close', () => (this.ended = true));
  }

  static u32(n: number): Buffer {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n >>> 0, 0);
    return b;
  }

  static u64(n: number): Buffer {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(n), 0);
    return b;
  }

  static str(s: string | Buffer): Buffer {
    const b = Buffer.isBuffer(s) ? s : Buffer.from(s);
    return Buffer.concat([RawSftp.u32(b.length), b]);
  }

  send(type: number, body: Buffer): void {
    const head = Buffer.alloc(5);
    head.writeUInt32BE(body.length + 1, 0);
    head[4] = type;
    this.ch.write(Buffer.concat([head, body]));
  }

  request(type: number, reqId: number, rest: Buffer): Promise<{ type: number; body: Buffer }> {
    return new Promise((resolve) => {
      this.waiters.set(reqId, resolve);
      this.send(type, Buffer.concat([RawSftp.u32(reqId), rest]));
    });
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 5) {
      const len = this.buf.readUInt32BE(0);
      if (this.buf.length < 4 + len) return;
      const type = this.buf[4]!;
      const payload = this.buf.subarray(5, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      if (type === 2) {
        this.version = payload.readUInt32BE(0);
        continue;
      }
      const id = payload.readUInt32BE(0);
      this.waiters.get(id)?.({ type, body: payload.subarray(4) });
      this.waiters.delete(id);
    }
  }
}

const FXP = { INIT: 1, OPEN: 3, CLOSE: 4, READ: 5, WRITE: 6, FSETSTAT: 10, STAT: 17, STATUS: 101, HANDLE: 102, DATA: 103 } as const;

describe('SFTP over a raw channel (the control-server hook adapter)', () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => {};
  let root = '';
  let jail: Jail;

  before(async () => {
    ({ dir, cleanup } = await tempDir('sftp-raw'));
    dir = realpathSync(dir);
    root = path.join(dir, 'root');
    mkdirSync(root);
    writeFileSync(path.join(root, 'f.txt'), 'data');
    writeFileSync(path.join(root, 'big.bin'), Buffer.alloc(1 << 20, 1));
    mkdirSync(path.join(dir, 'outside'));
    writeFileSync(path.join(dir, 'outside', 'secret.txt'), 'secret');
    symlinkSync(path.join(dir, 'outside'), path.join(root, 'link-out'));
    jail = new Jail(root);
  });

  after(async () => {
    await cleanup();
  });

  const start = (): { raw: RawSftp; events: SftpEvent[]; session: ReturnType<typeof serveSftp> } => {
    const [server, client] = duplexPair();
    const events: SftpEvent[] = [];
    const session = serveSftp(sftpOverChannel(server), { jail, permissions: ALL_PERMISSIONS, user: 'raw', onEvent: (e) => events.push(e) });
    const raw = new RawSftp(client);
    raw.send(FXP.INIT, RawSftp.u32(3));
    return { raw, events, session };
  };

  it('answers VERSION 3 and clamps a 1 MiB READ to 64 KiB (a short read)', async () => {
    const { raw, session } = start();
    const open = await raw.request(FXP.OPEN, 1, Buffer.concat([RawSftp.str('/big.bin'), RawSftp.u32(1), RawSftp.u32(0)]));
    assert.equal(raw.version, 3);
    assert.equal(open.type, FXP.HANDLE);
    const handle = open.body.subarray(4, 4 + open.body.readUInt32BE(0));
    const data = await raw.request(FXP.READ, 2, Buffer.concat([RawSftp.str(handle), RawSftp.u64(0), RawSftp.u32(1 << 20)]));
    assert.equal(data.type, FXP.DATA);
    assert.equal(data.body.readUInt32BE(0), 64 * 1024);
    const past = await raw.request(FXP.READ, 3, Buffer.concat([RawSftp.str(handle), RawSftp.u64(1 << 20), RawSftp.u32(100)]));
    assert.equal(past.type, FXP.STATUS);
    assert.equal(past.body.readUInt32BE(0), SFTP_STATUS.EOF);
    const closed = await raw.request(FXP.CLOSE, 4, RawSftp.str(handle));
    assert.equal(closed.body.readUInt32BE(0), SFTP_STATUS.OK);
    session.close();
    await session.closed;
  });

  for (const [name, type] of [['READ', FXP.READ], ['FSETSTAT', FXP.FSETSTAT]] as const) {
    it(`ends the session on a ${name} whose handle string is cut short (ssh2's parser throws on it)`, async () => {
      const { raw, events, session } = start();
      const ok = await raw.request(FXP.STAT, 1, RawSftp.str('/f.txt'));
      assert.equal(ok.type, 105);
      // request id, then a handle string that claims 1000 bytes but carries 16
      raw.send(type, Buffer.concat([RawSftp.u32(2), RawSftp.u32(1000), Buffer.alloc(16, 1)]));
      await session.closed;
      assert.ok(events.some((e) => e.op === 'protocol-error' && e.code === 'PROTOCOL'), JSON.stringify(events));
      assert.ok(events.some((e) => e.op === 'session-end'));
    });
  }

  it('survives seeded random packets (40 sessions)', async () => {
    const rng = new Rng(0xc0de);
    for (let round = 0; round < 40; round++) {
      const { raw, events, session } = start();
      // a valid STAT of /f.txt, then random requests: known types with random bodies, or random bytes
      await raw.request(FXP.STAT, 1, RawSftp.str('/f.txt'));
      for (let i = 0; i < 30; i++) {
        const type = rng.pick([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 200]);
        const body = rng.chance(0.5)
          ? Buffer.concat([RawSftp.u32(rng.int(1000)), RawSftp.str(rng.pick(['/f.txt', '../../etc/passwd', '/\u2025', '', 'x'.repeat(300), '/link-out/secret.txt', '/link-out/new'])), rng.bytes(rng.int(40))])
          : rng.bytes(rng.int(64));
        raw.send(type, body);
      }
      await new Promise((r) => setTimeout(r, 5));
      session.close();
      await session.closed;
      assert.equal(raw.version, 3, `round ${round}: VERSION first`);
      assert.ok(events.some((e) => e.op === 'session-end'), `round ${round}`);
    }
    assert.deepEqual(readdirSync(dir).sort(), ['outside', 'root'], 'nothing created beside the root');
    assert.deepEqual(readdirSync(path.join(dir, 'outside')), ['secret.txt']);
    assert.equal(readFileSync(path.join(dir, 'outside', 'secret.txt'), 'utf8'), 'secret');
  });
});
