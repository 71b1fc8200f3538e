/**
 * The transfer server's composition root: the SSH control service on TCP PORT and the
 * shared UDP data endpoint on UDP PORT, one jail, one transfer user (issue #2's
 * single-user form; multi-user accounts come with the user database).
 */
import { readFileSync } from 'node:fs';
import { systemClock, type Clock } from '../core/clock.js';
import { TachyonError } from '../core/errors.js';
import type { CipherName } from '../core/types.js';
import { findAuthorizedKey, loadOrCreateHostKey, parseAuthorizedKeys, type AuthorizedKey } from '../control/hostkeys.js';
import { startControlServer, type ControlServer } from '../control/ssh-server.js';
import { Endpoint } from '../transport/session/endpoint.js';
import { openUdpSocket } from '../transport/socket/udp.js';
import { Jail } from '../transfer/jail.js';
import { serveSession } from '../transfer/session.js';

export interface TransferServerOptions {
  root: string;
  authorizedKeysFile: string;
  user: string;
  hostKeyFile: string;
  listen: string;
  port: number;
  allowedCiphers: readonly CipherName[];
  maxRateBps: number;
  banner?: string;
  clock?: Clock;
  onEvent?(e: { type: string; [k: string]: unknown }): void;
}

export interface TransferServer {
  address: string;
  /** TCP (SSH) port */
  port: number;
  /** UDP (data) port */
  udpPort: number;
  /** number of authorized keys loaded */
  keyCount: number;
  hostKeyFingerprint: string;
  endpoint: Endpoint;
  close(): Promise<void>;
}

/** Reads an OpenSSH authorized_keys file; unusable lines come back as warnings. */
export function loadAuthorizedKeys(file: string): { keys: AuthorizedKey[]; warnings: string[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TachyonError('CONFIG', `cannot read authorized keys file ${file}`, { cause: err });
  }
  const parsed = parseAuthorizedKeys(text);
  return { keys: parsed.keys, warnings: parsed.errors.map((e) => `${file}:${e.line}: ${e.message}`) };
}

export async function startTransferServer(o: TransferServerOptions): Promise<TransferServer> {
  const clock = o.clock ?? systemClock;
  const jail = new Jail(o.root);
  if (o.user === 'root') throw new TachyonError('CONFIG', 'the transfer user may not be root');
  const { keys, warnings } = loadAuthorizedKeys(o.authorizedKeysFile);
  for (const w of warnings) o.onEvent?.({ type: 'config.warning', message: w });
  if (keys.length === 0) o.onEvent?.({ type: 'config.warning', message: `${o.authorizedKeysFile} holds no usable key: nobody can log in` });
  const hostKey = await loadOrCreateHostKey(o.hostKeyFile);
  let control: ControlServer | undefined;
  // bind TCP first (port 0 picks one), then UDP on the same number
  control = await startControlServer({
    listen: o.listen,
    port: o.port,
    hostKey: hostKey.privateKey,
    authorize: (user, _algo, blob) => user === o.user && findAuthorizedKey(keys, blob) !== undefined,
    ...(o.banner ? { banner: o.banner } : {}),
    onSession: (link, info) => {
      serveSession(link, {
        endpoint,
        udpPort,
        jail,
        clock,
        allowedCiphers: o.allowedCiphers,
        maxRateBps: o.maxRateBps,
        onEvent: (e) => o.onEvent?.({ ...e, user: info.user, client: info.clientAddress }),
      }).then(
        (summary) =>
          o.onEvent?.({
            type: 'transfer.end',
            user: info.user,
            client: info.clientAddress,
            ok: summary?.ok ?? false,
            bytes: summary?.bytes ?? 0,
            files: summary?.files.length ?? 0,
            seconds: (summary?.elapsedMs ?? 0) / 1000,
          }),
        (err: unknown) =>
          o.onEvent?.({ type: 'transfer.error', user: info.user, client: info.clientAddress, code: (err as TachyonError).code ?? 'INTERNAL', message: (err as Error).message }),
      );
    },
    ...(o.onEvent ? { onEvent: o.onEvent } : {}),
  });
  let socket;
  try {
    socket = await openUdpSocket({ address: o.listen, port: control.port });
  } catch (err) {
    await control.close();
    throw err;
  }
  const endpoint = new Endpoint(socket);
  const udpPort = socket.local().port;
  return {
    address: control.address,
    port: control.port,
    udpPort,
    keyCount: keys.length,
    hostKeyFingerprint: hostKey.fingerprint,
    endpoint,
    async close() {
      await control?.close();
      control = undefined;
      await socket.close();
    },
  };
}
