/** The `tachyon` command. */
import { Command, CommanderError, Option } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import path from 'node:path';
import { systemClock } from '../core/clock.js';
import { TachyonError, toTachyonError } from '../core/errors.js';
import { CIPHERS, OVERWRITE_POLICIES, POLICIES, RESUME_LEVELS, type CipherName, type OverwritePolicy, type RatePolicy, type ResumeLevel } from '../core/types.js';
import { formatRate, parseRate } from '../core/units.js';
import type { ControlLink } from '../control/messages.js';
import { parseFileList } from '../transfer/sources.js';
import { prepareAtRest, registerAtRestCommands, registerKeyCommands } from './atrest-commands.js';
import { ManifestWriter } from './manifest.js';
import { createReporter } from './progress.js';
import { requireRemote, parseRemote } from './remote.js';
import { defaultHostKeyPath } from './defaults.js';
import type { ServeOpts, StartOpts } from './serve.js';
import type { SpecTransfer } from './transfer-spec.js';

const DEFAULT_PORT = 33001;

interface TransferOpts {
  port: string;
  identity?: string;
  hostKeyFingerprint?: string;
  knownHosts?: string;
  rate: string;
  minRate: string;
  policy: RatePolicy;
  cipher: CipherName;
  mtu: string;
  race: string;
  json: boolean;
  resume: ResumeLevel;
  overwrite: OverwritePolicy;
  preserveTimes: boolean;
  createDir: boolean;
  srcBase?: string;
  exclude: string[];
  fileList?: string;
  manifest?: string;
  transferSpec?: string;
  encryptAtRest?: boolean;
  decrypt?: boolean;
}

/** ascp's numeric resume levels are accepted too: 0 none, 1 attrs, 2 sparse, 3 full. */
function parseResume(v: string): ResumeLevel {
  const byDigit: Record<string, ResumeLevel> = { '0': 'none', '1': 'attrs', '2': 'sparse', '3': 'full' };
  const level = byDigit[v] ?? v;
  if (!(RESUME_LEVELS as readonly string[]).includes(level)) {
    throw new TachyonError('USAGE', `invalid resume level '${v}': one of ${RESUME_LEVELS.join(', ')} (or 0-3)`);
  }
  return level as ResumeLevel;
}

function addTransferOptions(cmd: Command): Command {
  return cmd
    .option('-P, --port <port>', 'server port (SSH on TCP, data on UDP)', String(DEFAULT_PORT))
    .option('-i, --identity <file>', 'private key for SSH authentication (default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa)')
    .option('--host-key-fingerprint <SHA256:...>', "the server's pinned host-key fingerprint")
    .option('--known-hosts <file>', 'known_hosts file that pins the server host key (default: ~/.ssh/known_hosts)')
    .option('-l, --rate <rate>', 'target rate, e.g. 200m, 1g, 500k (bits/s); a ceiling for adaptive policies', '10g')
    .option('-m, --min-rate <rate>', 'minimum rate for adaptive policies', '0')
    .addOption(new Option('--policy <policy>', 'rate policy').choices([...POLICIES]).default('fair'))
    .addOption(new Option('-c, --cipher <cipher>', 'datagram encryption').choices([...CIPHERS]).default('aes-128-gcm'))
    .option('--mtu <bytes>', 'path MTU; datagrams are sized to fit it (use 9000 on jumbo-frame networks)', '1500')
    .option('--race <n>', 'TCP connections opened at once for the SSH set-up; the first through its key exchange is kept and the others are closed before authenticating (on a lossy path a lost handshake segment costs a second); 1 opens one', '3')
    .option('--json', 'print one JSON object per line (progress and per-file events, then a final "done")', false)
    .option('-k, --resume <level>', 'resume partial files: none, attrs (size and time), sparse (sampled digests), full (whole digest); 0-3 as in ascp', parseResume, 'none')
    .addOption(new Option('--overwrite <policy>', 'existing destination files: never, always, diff (replace if different), diff+older, older').choices([...OVERWRITE_POLICIES]).default('diff'))
    .option('-p, --preserve-times', "also set each file's access time to the source's (the modification time is always kept)", false)
    .option('-d, --create-dir', 'create the destination directory if it does not exist', false)
    .option('--src-base <prefix>', 'strip this prefix from source paths to form destination paths (recv: a path on the server)')
    .option('-E, --exclude <pattern>', 'skip files and directories matching the glob (repeatable; see README)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--file-list <file>', 'read the sources from FILE, one path per line')
    .option('--manifest <file>', 'write one JSON line per file (path, size, sha256, status) to FILE')
    .option('--transfer-spec <file>', "a node's transfer spec (JSON; - for stdin): host, user, token, pinned host key and paths come from it");
}

function readFileList(file: string): string[] {
  let content: Buffer;
  try {
    content = readFileSync(file);
  } catch (err) {
    throw new TachyonError('USAGE', `cannot read the file list ${file}: ${(err as Error).message}`, { cause: err });
  }
  const list = parseFileList(content, `file list ${file}`);
  if (list.length === 0) throw new TachyonError('USAGE', `the file list ${file} names no file`);
  return list;
}

function defaultIdentity(): string {
  const dir = path.join(os.homedir(), '.ssh');
  for (const n of ['id_ed25519', 'id_ecdsa', 'id_rsa']) {
    const p = path.join(dir, n);
    if (existsSync(p)) return p;
  }
  throw new TachyonError('USAGE', 'no SSH key found: pass -i KEYFILE (create one with ssh-keygen -t ed25519)');
}

function parseRateOpt(text: string, allowZero: boolean): number {
  if (allowZero && /^0+$/.test(text.trim())) return 0;
  return parseRate(text);
}

async function runTransfer(op: 'send' | 'recv', args: string[], o: TransferOpts): Promise<number> {
  let spec: SpecTransfer | undefined;
  if (o.transferSpec !== undefined) {
    if (o.fileList !== undefined || o.identity !== undefined || o.knownHosts !== undefined) {
      throw new TachyonError('USAGE', '--transfer-spec names the paths, the credentials and the host key: leave out --file-list, -i and --known-hosts');
    }
    const { readTransferSpec, specTransfer } = await import('./transfer-spec.js');
    spec = specTransfer(op, readTransferSpec(o.transferSpec), args);
    if (o.hostKeyFingerprint !== undefined && o.hostKeyFingerprint !== spec.hostKeyFingerprint) {
      throw new TachyonError('USAGE', `--host-key-fingerprint ${o.hostKeyFingerprint} differs from the transfer spec's ${spec.hostKeyFingerprint}`);
    }
  }
  const listed = o.fileList !== undefined ? readFileList(o.fileList) : undefined;
  if (listed) {
    const want = op === 'send' ? 1 : 2;
    if (args.length !== want) {
      throw new TachyonError('USAGE', op === 'send' ? 'with --file-list: tachyon send --file-list FILE [options] [user@]host:DEST' : 'with --file-list: tachyon recv --file-list FILE [options] [user@]host:[DIR] DEST');
    }
  } else if (args.length < 2 && !spec) {
    throw new TachyonError('USAGE', op === 'send' ? 'usage: tachyon send [options] SOURCE... [user@]host:DEST' : 'usage: tachyon recv [options] [user@]host:SOURCE... DEST');
  }
  const last = args[args.length - 1]!;
  const firsts = args.slice(0, -1);
  let remoteHost: string;
  let remoteUser: string | undefined;
  let sources: string[];
  let dest: string;
  if (spec) {
    remoteHost = spec.host;
    remoteUser = spec.user;
    sources = spec.sources;
    dest = spec.dest;
  } else if (op === 'send') {
    const r = requireRemote(last, 'destination');
    remoteHost = r.host;
    remoteUser = r.user;
    dest = r.path;
    sources = listed ?? firsts;
    for (const s of sources) if (parseRemote(s) && !existsSync(s)) throw new TachyonError('USAGE', `source '${s}' looks remote: send takes local sources`);
  } else {
    const rs = firsts.map((a) => requireRemote(a, 'source'));
    const hosts = new Set(rs.map((r) => `${r.user ?? ''}@${r.host}`));
    if (hosts.size !== 1) throw new TachyonError('USAGE', 'all sources must be on the same server');
    remoteHost = rs[0]!.host;
    remoteUser = rs[0]!.user;
    // with --file-list, relative entries are taken relative to the remote directory named
    // (joined as text: the server's jail, not the client, judges what `..` means)
    sources = listed ? listed.map((p) => (p.startsWith('/') ? p : `${rs[0]!.path.replace(/\/+$/, '')}/${p}`)) : rs.map((r) => r.path);
    dest = last;
  }
  const port = spec ? spec.port : Number(o.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TachyonError('USAGE', `invalid port '${o.port}'`);
  const mtu = Number(o.mtu);
  if (!Number.isInteger(mtu) || mtu < 604 || mtu > 65535) throw new TachyonError('USAGE', `invalid MTU '${o.mtu}' (604..65535)`);
  const datagramSize = mtu >= 65535 ? 65507 : Math.min(65507, mtu - 28);
  const race = Number(o.race);
  if (!Number.isInteger(race) || race < 1 || race > 8) throw new TachyonError('USAGE', `invalid --race '${o.race}' (1..8)`);
  const targetBps = spec?.targetBps ?? parseRateOpt(o.rate, false);
  const minBps = spec?.minBps ?? parseRateOpt(o.minRate, true);
  if (minBps > targetBps) throw new TachyonError('USAGE', `minimum rate ${formatRate(minBps)} is above the target ${formatRate(targetBps)}`);
  let privateKey: Buffer | undefined;
  if (!spec) {
    const identity = o.identity ?? defaultIdentity();
    try {
      privateKey = readFileSync(identity);
    } catch (err) {
      throw new TachyonError('USAGE', `cannot read key file ${identity}`, { cause: err });
    }
  }
  const atRest = await prepareAtRest(op, o, `${remoteUser ?? 'xfer'}@${remoteHost}:${port}:${dest}`);
  // a spec pins the host key by its fingerprint (never trust on first use, no known_hosts)
  const pinned = spec ? spec.hostKeyFingerprint : o.hostKeyFingerprint;
  const knownHosts = spec ? undefined : (o.knownHosts ?? (o.hostKeyFingerprint ? undefined : path.join(os.homedir(), '.ssh', 'known_hosts')));
  const started = performance.now();
  const cpu0 = process.cpuUsage();
  const tracing = process.env.TACHYON_TRACE === '1';
  const loopDelay = tracing ? monitorEventLoopDelay({ resolution: 2 }) : undefined;
  // TACHYON_TRACE=1: where the time goes — every SSH message and transfer phase, in ms since start
  const trace = tracing ? (line: string): void => void process.stderr.write(`[${(performance.now() - started).toFixed(1)} ms] ${line}\n`) : undefined;
  trace?.(`clock origin ${(performance.timeOrigin + started).toFixed(1)} ms (the data plane's trace lines, t=, count from the same epoch)`);
  loopDelay?.enable();
  // Load the transfer code (about 90 ms) while the TCP handshake and the server's greeting
  // are on their way: on a long path that time is free.
  // several at once (--race): the first through its key exchange goes on (ssh-client.ts)
  const sockets = Array.from({ length: race }, () => {
    const socket = net.connect({ host: remoteHost, port });
    socket.on('error', () => {}); // connectControl reports it (socket.errored)
    return socket;
  });
  const [{ connectControl }, { deferredLink }, { clientTransfer, DEFAULT_DATAGRAM_SIZE }, { Endpoint }, { openUdpSocket }] = await Promise.all([
    import('../control/ssh-client.js'),
    import('../control/deferred-link.js'),
    import('../transfer/session.js'),
    import('../transport/session/endpoint.js'),
    import('../transport/socket/udp.js'),
  ]);
  const connecting = connectControl({
    socket: sockets,
    // hello and the first probes ride with the authentication (a refused key ends the link with AUTH_FAILED)
    early: true,
    host: remoteHost,
    port,
    user: remoteUser ?? 'xfer',
    ...(spec ? { token: spec.token } : { privateKey: privateKey! }),
    hostKey: { ...(pinned ? { fingerprint: pinned } : {}), ...(knownHosts ? { knownHostsFile: knownHosts } : {}) },
    timeoutMs: 20_000,
    ...(trace !== undefined ? { trace } : {}),
  });
  let conn: Awaited<typeof connecting> | undefined;
  const connected = connecting.then((c) => {
    trace?.('control channel open');
    conn = c;
    return c;
  });
  connected.catch(() => {}); // reported through the link (send) or awaited below (recv)
  // An upload starts as soon as a TCP connection is up, with the key exchange still on its
  // way: its data leaves under the session id and keys it chose, the server's endpoint
  // holds it (the address has a TCP connection there), and the keys go out only over the
  // verified, authenticated channel (docs/protocol.md: early data). A download waits for
  // the channel, as its keys come from the server.
  let link: ControlLink;
  let serverAddress: string;
  let connectedAddress: Promise<string> | undefined;
  if (op === 'send') {
    serverAddress = await firstConnected(sockets, connected);
    trace?.(`TCP connected to ${serverAddress}: the data may leave`);
    const inner = connected.then((c) => (trace !== undefined ? tracedLink(c.link, trace) : c.link));
    link = deferredLink(inner);
    connectedAddress = connected.then((c) => c.remoteAddress);
  } else {
    const c = await connected;
    link = trace !== undefined ? tracedLink(c.link, trace) : c.link;
    serverAddress = c.remoteAddress;
  }
  const reporter = createReporter({ json: o.json, tty: process.stderr.isTTY === true, out: process.stdout, err: process.stderr });
  let manifest: ManifestWriter | undefined;
  try {
    manifest = o.manifest !== undefined ? new ManifestWriter(o.manifest) : undefined;
  } catch (err) {
    link.close();
    conn?.close();
    throw err;
  }
  let stopping = false;
  const onSignal = (): void => {
    if (stopping) process.exit(130);
    stopping = true;
    link.close();
    conn?.close();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const summary = await clientTransfer({
      link,
      serverAddress,
      ...(connectedAddress ? { connectedAddress } : {}),
      // the data port is the SSH port's number by convention: an upload's data leaves before welcome says so
      serverPort: port,
      clock: systemClock,
      op,
      cipher: spec?.cipher ?? o.cipher,
      policy: spec?.policy ?? o.policy,
      targetBps,
      minBps,
      datagramSize: Math.min(datagramSize, DEFAULT_DATAGRAM_SIZE * 64),
      sources,
      dest,
      overwrite: o.overwrite,
      resume: o.resume,
      preserveTimes: o.preserveTimes,
      // a spec's destination directories are made as needed (within what its token grants)
      createDir: o.createDir || (spec !== undefined && op === 'send'),
      ...(o.srcBase !== undefined ? { srcBase: o.srcBase } : {}),
      exclude: o.exclude,
      ...(atRest.content ? { content: atRest.content } : {}),
      openSocket: async (remote) => {
        const v6 = remote.address.includes(':');
        return new Endpoint(await openUdpSocket({ address: v6 ? '::' : '0.0.0.0', port: 0 }));
      },
      events: {
        onProgress: (p) => reporter.progress(p),
        onFileStart: (f) => reporter.fileStart(f),
        onFile: (f) => {
          reporter.file(f);
          manifest?.add(f);
        },
      },
    });
    trace?.(`transfer done (data phase ${summary.elapsedMs.toFixed(0)} ms)`);
    reporter.end();
    manifest?.close();
    if (loopDelay) {
      loopDelay.disable();
      const ms = (ns: number): string => (ns / 1e6).toFixed(1);
      process.stderr.write(`event loop delay ms: p50 ${ms(loopDelay.percentile(50))} p99 ${ms(loopDelay.percentile(99))} p99.9 ${ms(loopDelay.percentile(99.9))} max ${ms(loopDelay.max)}\n`);
    }
    const seconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const failed = summary.files.filter((f) => !f.ok);
    const notDecrypted = atRest.afterReceive ? await atRest.afterReceive(summary.files, o.json) : 0;
    const skipped = summary.files.filter((f) => f.status === 'skipped').length;
    if (o.json) {
      process.stdout.write(
        JSON.stringify({
          event: 'done',
          ok: failed.length === 0 && notDecrypted === 0,
          bytes: summary.bytes,
          files: summary.files.length,
          failed: failed.length,
          skipped,
          skippedBytes: summary.skippedBytes,
          seconds: Math.round(seconds * 1000) / 1000,
          transferSeconds: Math.round(summary.elapsedMs) / 1000,
          goodputMbps: Math.round(((summary.bytes * 8) / seconds / 1e6) * 100) / 100,
          // the data phase alone (after SSH set-up), comparable with iperf3's figure
          transferGoodputMbps: summary.elapsedMs > 0 ? Math.round(((summary.bytes * 8) / (summary.elapsedMs / 1000) / 1e6) * 100) / 100 : 0,
          cpuSeconds: Math.round(((cpu.user + cpu.system) / 1e6) * 1000) / 1000,
          cipher: spec?.cipher ?? o.cipher,
          ...(summary.stats ? { stats: summary.stats } : {}),
        }) + '\n',
      );
    } else {
      const verb = op === 'send' ? 'sent' : 'received';
      const done = summary.files.length - failed.length - skipped;
      const extra = [skipped ? `${skipped} skipped` : '', summary.skippedBytes ? `${summary.skippedBytes} bytes already there` : ''].filter(Boolean).join(', ');
      process.stderr.write(
        `${verb} ${done} file(s), ${summary.bytes} bytes in ${seconds.toFixed(2)} s (${formatRate((summary.bytes * 8) / seconds)}), SHA-256 verified${extra ? ` (${extra})` : ''}\n`,
      );
      for (const f of failed) process.stderr.write(`failed: ${f.path}: ${f.message ?? f.code}\n`);
    }
    return failed.length === 0 && notDecrypted === 0 ? 0 : 1;
  } finally {
    manifest?.close();
    link.close();
    conn?.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/**
 * The address of the first of `sockets` to connect (TCP), or of the control connection
 * when that settles first; its failure (all attempts failed, host key refused …) rejects.
 */
function firstConnected(sockets: readonly net.Socket[], connected: Promise<{ remoteAddress: string }>): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    for (const s of sockets) {
      if (!s.connecting && s.remoteAddress !== undefined) return resolve(s.remoteAddress);
      s.once('connect', () => resolve(s.remoteAddress ?? ''));
    }
    connected.then((c) => resolve(c.remoteAddress), reject);
  });
}

/** A control link that reports the type of every message sent and received (TACHYON_TRACE). */
function tracedLink(inner: ControlLink, trace: (line: string) => void): ControlLink {
  return {
    send: (msg) => {
      trace(`control → ${msg.t}`);
      inner.send(msg);
    },
    onMessage: (handler) =>
      inner.onMessage((msg) => {
        trace(`control ← ${msg.t}`);
        handler(msg);
      }),
    onClose: (handler) => inner.onClose(handler),
    close: () => inner.close(),
  };
}

export function buildProgram(argv: readonly string[] = process.argv): Command {
  const program = new Command();
  program
    .name('tachyon')
    .description('High-speed, secure transfer of large files over long, lossy links (UDP data, SSH control).')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('start')
    .description('start Tachyon on embedded defaults (multi-user transfer server, node API and web platform on loopback; database, files and audit log in ./tachyon-data)')
    .option('--data <dir>', 'data directory', 'tachyon-data')
    .option('--listen <addr>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'TCP/UDP port', String(DEFAULT_PORT))
    .option('--api-port <port>', 'TCP port of the node API (HTTPS)', '9092')
    .option('--no-api', 'do not run the node API')
    .option('--web-port <port>', 'TCP port of the web platform (HTTPS)', '9443')
    .option('--no-web', 'do not serve the web platform')
    .option('--json', 'log events as JSON lines on stdout (server.start, node-api.start, web.start …)', false)
    .action(async (o: StartOpts) => {
      const { runStart } = await import('./serve.js');
      process.exitCode = await runStart(o);
    });

  program
    .command('serve')
    .description('run the transfer server: SSH control on TCP PORT, data on UDP PORT')
    .option('--config <file>', 'server configuration file (users in the database, audit log, SSH limits; see docs/users.md)')
    .option('--root <dir>', 'single-user form: directory the transfer user sees as /')
    .option('--authorized-keys <file>', 'single-user form: OpenSSH authorized_keys file of the keys allowed to log in')
    .option('--user <name>', 'single-user form: the transfer user name', 'xfer')
    .option('--host-key <file>', 'OpenSSH host key (generated if missing)', defaultHostKeyPath())
    .option('--listen <addr>', 'address to listen on (0.0.0.0 for all)', '127.0.0.1')
    .option('--port <port>', 'TCP and UDP port', String(DEFAULT_PORT))
    .addOption(
      new Option('--allow-cipher <cipher...>', 'ciphers clients may use').choices([...CIPHERS]).default(['aes-128-gcm', 'aes-192-gcm', 'aes-256-gcm']),
    )
    .option('--max-rate <rate>', 'ceiling on any session rate', '10g')
    .option('--json', 'log events as JSON lines on stdout', false)
    .action(async (o: ServeOpts) => {
      const { runServe } = await import('./serve.js');
      process.exitCode = await runServe(o);
    });

  addTransferOptions(
    program
      .command('send')
      .description('send local files or directories to a server')
      .argument('[paths...]', 'SOURCE... [user@]host:DEST (with --transfer-spec: [SOURCE...])'),
  )
    .option('--encrypt-at-rest', 'store the files encrypted as NAME.tachyon-enc with a passphrase the server never sees (TACHYON_FILE_PASSPHRASE or a prompt)', false)
    .action(async (paths: string[], o: TransferOpts) => {
    process.exitCode = await runTransfer('send', paths, o);
  });

  addTransferOptions(
    program
      .command('recv')
      .description('receive files or directories from a server')
      .argument('[paths...]', '[user@]host:SOURCE... DEST (with --transfer-spec: [DEST])'),
  )
    .option('--decrypt', 'decrypt received .tachyon-enc files (TACHYON_FILE_PASSPHRASE or a prompt); the plaintext replaces the envelope once verified', false)
    .action(async (paths: string[], o: TransferOpts) => {
    process.exitCode = await runTransfer('recv', paths, o);
  });

  // Administration commands load their implementation (database, audit, HTTP, S3 …)
  // only when they run: `send` and `recv` start faster, which a short transfer on a
  // long path feels (each 100 ms of start-up is a round trip).
  lazyGroup(program, argv, 'user', 'manage transfer users in the server database (add, list, show, set, disable, remove, key)', async () =>
    (await import('./user-commands.js')).registerUserCommands,
  );
  lazyGroup(program, argv, 'defender', 'the IP defender: list and lift blocks of source addresses (list, unblock)', async () => (await import('./defender-commands.js')).registerDefenderCommands);
  lazyGroup(program, argv, 'audit', 'read and verify audit logs', async () => (await import('./audit-commands.js')).registerAuditCommands);
  registerAtRestCommands(program);
  registerKeyCommands(program);
  lazyGroup(program, argv, 'token', "manage the node's transfer-token key (rotate-key; see docs/transfer-tokens.md)", async () => (await import('./token-commands.js')).registerTokenCommands);
  const nodeApiCommands = async (): Promise<(p: Command) => void> => (await import('./node-api-commands.js')).registerNodeApiCommands;
  lazyGroup(program, argv, 'ca', 'the private certificate authority of the node API (init)', nodeApiCommands);
  lazyGroup(program, argv, 'cert', 'server certificates of the node API (issue)', nodeApiCommands);
  lazyGroup(program, argv, 'tenant', 'organisations of the web platform and their administrators (create, list, admin-add, reset-password, allow-list, sso-set, sso-show, sso-clear)', async () => (await import('./tenant-commands.js')).registerTenantCommands);
  lazyGroup(program, argv, 'access-key', 'access keys of the node API (create, list, show, rotate, revoke)', nodeApiCommands);
  return program;
}

/**
 * Registers a command group by name and description only; when it is invoked, its
 * module is imported, registers the real commands on a fresh program, and that program
 * parses the command line (so `tachyon GROUP --help` and every option behave as if the
 * group were registered up front).
 */
function lazyGroup(program: Command, argv: readonly string[], name: string, description: string, load: () => Promise<(p: Command) => void>): void {
  program
    .command(name)
    .description(description)
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[args...]')
    .action(async () => {
      const register = await load();
      const real = new Command().name('tachyon').exitOverride().configureOutput({ writeErr: (s) => process.stderr.write(s) });
      register(real);
      await real.parseAsync(argv as string[]);
    });
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram(argv);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    const e = toTachyonError(err);
    const json = argv.includes('--json');
    if (json) process.stdout.write(JSON.stringify({ event: 'error', code: e.code, message: e.message }) + '\n');
    process.stderr.write(`tachyon: ${e.message}\n`);
    return e.exitCode;
  }
}
