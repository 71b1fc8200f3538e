/** The real DatagramSocket: node:dgram. */
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import type { DatagramSocket, PeerAddress } from './types.js';
import { TachyonError } from '../../core/errors.js';

export interface UdpOptions {
  address: string;
  port: number;
  /** socket buffer sizes in bytes (the kernel caps them at net.core.[rw]mem_max) */
  bufferBytes?: number;
}

export async function openUdpSocket(opts: UdpOptions): Promise<DatagramSocket> {
  const family = isIP(opts.address) === 6 ? 'udp6' : 'udp4';
  const sock = dgram.createSocket({ type: family, reuseAddr: false });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(new TachyonError('CONNECT', `cannot bind UDP ${opts.address}:${opts.port}: ${err.message}`, { cause: err }));
    sock.once('error', onError);
    sock.bind(opts.port, opts.address, () => {
      sock.off('error', onError);
      resolve();
    });
  });
  const buf = opts.bufferBytes ?? 8 * 1024 * 1024;
  try {
    sock.setRecvBufferSize(buf);
    sock.setSendBufferSize(buf);
  } catch {
    // best effort: the kernel may refuse sizes above its limits
  }
  // a UDP socket reports ICMP errors (port unreachable) asynchronously; never crash on them
  sock.on('error', () => {});
  let handler: ((packet: Buffer, from: PeerAddress) => void) | undefined;
  sock.on('message', (msg, rinfo) => handler?.(msg, { address: rinfo.address, port: rinfo.port }));
  let closed = false;
  return {
    send(packets, to) {
      if (closed) return;
      for (const p of packets) sock.send(p, to.port, to.address);
    },
    onDatagram(h) {
      handler = h;
    },
    local() {
      const a = sock.address();
      return { address: a.address, port: a.port };
    },
    close() {
      if (closed) return Promise.resolve();
      closed = true;
      return new Promise((resolve) => sock.close(() => resolve()));
    },
  };
}
