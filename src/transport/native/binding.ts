/**
 * The optional native datagram path (native/tachyon_native.c, built by node-gyp at
 * install). When it is missing or disabled (TACHYON_NATIVE=0), the pure-TypeScript path
 * (node:crypto, node:dgram) does the same work with the same wire format.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** Opaque handles owned by the addon. */
export type GcmHandle = { readonly __gcm: unique symbol };
export type UdpHandle = { readonly __udp: unique symbol };

export interface NativeBinding {
  gcmCreate(key: Buffer, iv: Buffer): GcmHandle;
  /** Encrypts buf[headerLen, +plainLen) in place and writes the tag after it. */
  gcmSeal(ctx: GcmHandle, buf: Buffer, headerLen: number, plainLen: number, pn: number): void;
  /** Authenticates and decrypts buf[headerLen, totalLen - 16) in place. */
  gcmOpen(ctx: GcmHandle, buf: Buffer, headerLen: number, totalLen: number, pn: number): boolean;
  /** `ages`: when given, kernel receive timestamps as ms before the read, per message (-1: none) */
  udpOpen(address: string, port: number, bufferBytes: number, slab: Buffer, slotBytes: number, meta: Uint32Array, onBatch: (count: number) => void, ages?: Float64Array): UdpHandle;
  /** 0 sent, 1 queued until the socket is writable, 2 dropped */
  udpSend(sock: UdpHandle, buf: Uint8Array, offset: number, length: number, ipv4: number, port: number): number;
  udpLocalPort(sock: UdpHandle): number;
  udpClose(sock: UdpHandle): void;
  /** dst[0, src.length) ^= c·src in GF(2^8) (src/transport/fec/parity.ts) */
  fecMulAdd(dst: Uint8Array, src: Uint8Array, c: number): void;
  /** Adds data block i of a group to each of the m parity symbols of `len` bytes held one after the other in `parity`. */
  fecAdd(parity: Buffer, m: number, len: number, block: Uint8Array, i: number): void;
}

function load(): { binding: NativeBinding | undefined; reason: string } {
  if (process.env['TACHYON_NATIVE'] === '0') return { binding: undefined, reason: 'disabled by TACHYON_NATIVE=0' };
  if (process.platform !== 'linux') return { binding: undefined, reason: `not built on ${process.platform}` };
  // dist/src/transport/native/binding.js (or src/… under a TS loader): the repository root is 4 levels up
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.resolve(here, '../../../../build/Release/tachyon_native.node'), path.resolve(here, '../../../build/Release/tachyon_native.node')];
  const file = candidates.find((c) => existsSync(c));
  if (!file) return { binding: undefined, reason: 'addon not built (npm run build:native)' };
  try {
    const req = createRequire(import.meta.url);
    return { binding: req(file) as NativeBinding, reason: file };
  } catch (err) {
    return { binding: undefined, reason: `addon failed to load: ${(err as Error).message}` };
  }
}

const loaded = load();

/** The addon, or undefined when the pure-TypeScript path is in use. */
export const native: NativeBinding | undefined = loaded.binding;
/** Why the addon is (not) in use: its file, or the reason it is not. */
export const nativeStatus: string = loaded.reason;
