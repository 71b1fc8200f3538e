/** The real DatagramSocket: node:dgram. */
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import type { DatagramHandler, DatagramSocket, PeerAddress } from './types.js';
import { systemClock, type Clock } from '../../core/clock.js';
import { TachyonError } from '../../core/errors.js';
import { native as loadedNative, type NativeBinding, type UdpHandle } from '../native/binding.js';

export interface UdpOptions {
  address: string;
  port: number;
  /**
   * socket buffer sizes in bytes; default {@link DEFAULT_BUFFER_BYTES}. The kernel caps
   * them at net.core.[rw]mem_max, except that the native path of a process with
   * CAP_NET_ADMIN (a server run as root) takes the size it asks for.
   */
  bufferBytes?: number;
  /** the native addon to use for IPv4; default: the loaded one (undefined: node:dgram) */
  native?: NativeBinding | undefined;
  /** the clock in which arrival times are given to handlers (default: the system clock) */
  clock?: Clock;
}

/** Largest datagram the native path receives (bigger ones are dropped, like a short read). */
export const NATIVE_SLOT_BYTES = 65536;
const NATIVE_SLOTS = 32;

/**
 * 32 MiB: about 85 ms of datagrams at 3 Gbit/s. A receiver that stalls for longer than its
 * buffer holds loses datagrams it must then ask for again. On loopback with 8 MiB (the
 * kernel's usual 4 MiB cap, doubled), 27–42% of what the sender sent were such repairs;
 * with 32 MiB 0–11% in the same (busy) conditions.
 */
export const DEFAULT_BUFFER_BYTES = 32 * 1024 * 1024;

/**
 * Opens a UDP socket: through the native addon (recvmmsg into one reused slab) for IPv4
 * when it is available, else node:dgram. Received packets are views that are valid only
 * during the handler call on the native path: handlers copy what they keep.
 */
export async function openUdpSocket(opts: UdpOptions): Promise<DatagramSocket> {
  const n = 'native' in opts ? opts.native : loadedNative;
  if (n && isIP(opts.address) === 4) return openNativeUdp(n, opts);
  return openDgramUdp(opts);
}

function ipv4ToU32(a: string): number {
  const p = a.split('.');
  return ((Number(p[0]) << 24) | (Number(p[1]) << 16) | (Number(p[2]) << 8) | Number(p[3])) >>> 0;
}

function u32ToIpv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

function openNativeUdp(n: NativeBinding, opts: UdpOptions): DatagramSocket {
  const slab = Buffer.allocUnsafeSlow(NATIVE_SLOT_BYTES * NATIVE_SLOTS);
  const meta = new Uint32Array(4 * NATIVE_SLOTS);
  // kernel receive timestamps, as ages at the read (-1: none)
  const ages = new Float64Array(NATIVE_SLOTS).fill(-1);
  const clock = opts.clock ?? systemClock;
  let handler: DatagramHandler | undefined;
  // sender addresses repeat: keep one PeerAddress object per (address, port)
  const peers = new Map<number, PeerAddress>();
  const onBatch = (count: number): void => {
    // the addon read the batch just now: an arrival is this long before it
    const readAt = clock.now();
    for (let i = 0; i < count; i++) {
      const len = meta[4 * i]!;
      const ip = meta[4 * i + 1]!;
      const port = meta[4 * i + 2]!;
      const slot = meta[4 * i + 3]!;
      const k = ip * 65536 + port;
      let from = peers.get(k);
      if (from === undefined) {
        if (peers.size > 4096) peers.clear();
        from = { address: u32ToIpv4(ip), port };
        peers.set(k, from);
      }
      const at = slot * NATIVE_SLOT_BYTES;
      const age = ages[i]!;
      handler?.(slab.subarray(at, at + len), from, age >= 0 ? readAt - age : undefined);
    }
  };
  let sock: UdpHandle;
  try {
    sock = n.udpOpen(opts.address, opts.port, opts.bufferBytes ?? DEFAULT_BUFFER_BYTES, slab, NATIVE_SLOT_BYTES, meta, onBatch, ages);
  } catch (err) {
    throw new TachyonError('CONNECT', `cannot bind UDP ${opts.address}:${opts.port}: ${(err as Error).message}`, { cause: err });
  }
  let closed = false;
  const port = n.udpLocalPort(sock);
  return {
    copiesOnSend: true,
    send(packets, to) {
      if (closed || isIP(to.address) !== 4) return; // an IPv4 socket reaches IPv4 peers only
      const ip = ipv4ToU32(to.address);
      for (const p of packets) n.udpSend(sock, p, 0, p.length, ip, to.port);
    },
    onDatagram(h) {
      handler = h;
    },
    local() {
      return { address: opts.address, port };
    },
    close() {
      if (!closed) {
        closed = true;
        n.udpClose(sock);
      }
      return Promise.resolve();
    },
  };
}

async function openDgramUdp(opts: UdpOptions): Promise<DatagramSocket> {
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
  const buf = opts.bufferBytes ?? DEFAULT_BUFFER_BYTES;
  try {
    sock.setRecvBufferSize(buf);
    sock.setSendBufferSize(buf);
  } catch {
    // best effort: the kernel may refuse sizes above its limits
  }
  // a UDP socket reports ICMP errors (port unreachable) asynchronously; never crash on them
  sock.on('error', () => {});
  let handler: DatagramHandler | undefined;
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
