/** TCP relays for tests that need a slow path on loopback. */
import net, { type AddressInfo } from 'node:net';

/**
 * A TCP relay on 127.0.0.1 to `target` (a port, or a function giving it at connection
 * time) that holds every chunk `oneWayMs` in each direction. `onConnection` is called
 * when a client connects.
 */
export async function slowRelay(
  target: number | (() => number),
  oneWayMs: number,
  onConnection?: () => void,
): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    onConnection?.();
    const upstream = net.connect(typeof target === 'number' ? target : target(), '127.0.0.1');
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      sockets.add(s);
      s.on('error', () => {});
    }
    const relay = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (chunk: Buffer) => setTimeout(() => !to.destroyed && to.write(chunk), oneWayMs));
      from.on('close', () => setTimeout(() => to.destroy(), oneWayMs));
    };
    relay(client, upstream);
    relay(upstream, client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
