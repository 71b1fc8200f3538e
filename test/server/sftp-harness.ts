/**
 * SFTP test servers: a minimal ssh2 server that accepts one test key and hands the `sftp`
 * subsystem to serveSftp, or the real control server with the `extraSubsystems` hook.
 * Each user name maps to a permission set; all users share the one jail.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import type { Connection, ParsedKey, SFTPWrapper } from 'ssh2';
import { findAuthorizedKey, loadOrCreateHostKey, parseAuthorizedKeys } from '../../src/control/hostkeys.js';
import { startControlServer } from '../../src/control/ssh-server.js';
import { serveSftp, sftpSubsystem, type SftpContext, type SftpEvent, type SftpLimits, type SftpSession } from '../../src/server/sftp.js';
import type { Jail } from '../../src/transfer/jail.js';
import type { Permissions } from '../../src/transfer/permissions.js';
import { sshKeygen } from '../control/helpers.js';

export interface SftpTestServer {
  port: number;
  /** A known_hosts line for [127.0.0.1]:port. */
  knownHostsLine: string;
  /** The client key (OpenSSH private key file). */
  keyFile: string;
  events: SftpEvent[];
  sessions: SftpSession[];
  close(): Promise<void>;
}

export interface SftpTestServerOptions {
  dir: string;
  jail: Jail;
  users: Record<string, Permissions>;
  via: 'ssh2' | 'control-server';
  limits?: Partial<SftpLimits>;
}

export async function startSftpTestServer(o: SftpTestServerOptions): Promise<SftpTestServer> {
  const hostKey = await loadOrCreateHostKey(join(o.dir, `host_key_${o.via}`));
  const keyFile = await sshKeygen(o.dir, `client_${o.via}`);
  const authorized = parseAuthorizedKeys(readFileSync(`${keyFile}.pub`, 'utf8')).keys;
  const events: SftpEvent[] = [];
  const sessions: SftpSession[] = [];
  const contextFor = (user: string): SftpContext => {
    const permissions = o.users[user];
    if (permissions === undefined) throw new Error(`no such test user ${user}`);
    return { jail: o.jail, permissions, user, onEvent: (e) => events.push(e), ...(o.limits ? { limits: o.limits } : {}) };
  };

  if (o.via === 'control-server') {
    const server = await startControlServer({
      listen: '127.0.0.1',
      port: 0,
      hostKey: hostKey.privateKey,
      authorize: (user, _algo, blob) => Object.hasOwn(o.users, user) && findAuthorizedKey(authorized, blob) !== undefined,
      onSession: (link) => link.close(),
      extraSubsystems: { sftp: sftpSubsystem((info) => contextFor(info.user)) },
    });
    return {
      port: server.port,
      knownHostsLine: `[127.0.0.1]:${server.port} ${hostKey.publicKeyLine}`,
      keyFile,
      events,
      sessions,
      close: () => server.close(),
    };
  }

  const clientKey = ssh2.utils.parseKey(readFileSync(keyFile)) as ParsedKey;
  const clientBlob = clientKey.getPublicSSH();
  const conns = new Set<Connection>();
  const server = new ssh2.Server({ hostKeys: [hostKey.privateKey] }, (conn) => {
    conns.add(conn);
    conn.on('error', () => {});
    conn.on('close', () => conns.delete(conn));
    let user = '';
    conn.on('authentication', (ctx) => {
      if (ctx.method !== 'publickey' || !Object.hasOwn(o.users, ctx.username) || !ctx.key.data.equals(clientBlob)) {
        ctx.reject(['publickey']);
        return;
      }
      if (ctx.signature !== undefined && ctx.blob !== undefined && clientKey.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) {
        ctx.reject(['publickey']);
        return;
      }
      user = ctx.username;
      ctx.accept();
    });
    conn.on('ready', () => {
      conn.on('session', (accept) => {
        const session = accept();
        session.on('sftp', (acceptSftp) => {
          sessions.push(serveSftp(acceptSftp(), contextFor(user)));
        });
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    knownHostsLine: `[127.0.0.1]:${port} ${hostKey.publicKeyLine}`,
    keyFile,
    events,
    sessions,
    close: () =>
      new Promise<void>((r) => {
        for (const c of conns) c.end();
        server.close(() => r());
      }),
  };
}

/** Connects with ssh2's client and opens SFTP; returns the wrapper and a closer. */
export function ssh2Sftp(port: number, user: string, keyFile: string): Promise<{ sftp: SFTPWrapper; end: () => void }> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.on('error', reject);
    client.on('ready', () => {
      client.sftp((err, sftp) => {
        if (err) return reject(err);
        resolve({ sftp, end: () => client.end() });
      });
    });
    client.connect({ host: '127.0.0.1', port, username: user, privateKey: readFileSync(keyFile) });
  });
}

/** Connects with ssh2's client and opens the `sftp` subsystem as a raw byte stream. */
export function ssh2RawSftp(port: number, user: string, keyFile: string): Promise<{ stream: Duplex; end: () => void }> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.on('error', reject);
    client.on('ready', () => {
      client.subsys('sftp', (err, stream) => {
        if (err) return reject(err);
        resolve({ stream, end: () => client.end() });
      });
    });
    client.connect({ host: '127.0.0.1', port, username: user, privateKey: readFileSync(keyFile) });
  });
}

export function hasProgram(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program (never rejects on exit status); kills it by its own pid after timeoutMs. */
export function runProgram(file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

export function writeKnownHosts(file: string, line: string): string {
  writeFileSync(file, `${line}\n`);
  return file;
}
