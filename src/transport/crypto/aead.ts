/**
 * Datagram protection (AEAD) for one direction of one session.
 *
 * Keys: each direction has a random 32-byte secret delivered over the authenticated
 * control channel. Key and IV of generation g are HKDF-SHA256(secret, info) and
 * g = floor(packetNumber / KEY_UPDATE_PACKETS), so both sides renew keys at the same
 * packet, with no extra message, long before AES-GCM's confidentiality limit of
 * 2^23 packets per key (RFC 9001 §6.6). The nonce is the generation's IV XOR the
 * 48-bit packet number; packet numbers are never reused, retransmissions included,
 * so no nonce repeats under a key. The header is the associated data.
 */
import { createCipheriv, createDecipheriv, hkdfSync, type CipherGCMTypes } from 'node:crypto';
import { TachyonError } from '../../core/errors.js';

import type { CipherName } from '../../core/types.js';
import { native as loadedNative, type GcmHandle, type NativeBinding } from '../native/binding.js';

export type { CipherName };
export const TAG_BYTES = 16;
export const KEY_UPDATE_PACKETS = 2 ** 22;
export const SECRET_BYTES = 32;

const KEY_LEN: Record<Exclude<CipherName, 'none'>, number> = {
  'aes-128-gcm': 16,
  'aes-192-gcm': 24,
  'aes-256-gcm': 32,
};

/** AEAD seam: seal and open datagrams in place of their payload. */
export interface PacketProtection {
  readonly cipher: CipherName;
  /** bytes added after the payload (the tag) */
  readonly overhead: number;
  /**
   * Writes the sealed `plain` into `out` at `headerLen`; `out[0:headerLen]` is the
   * associated data. `out` must have room for plain.length + overhead bytes after it.
   */
  seal(out: Buffer, headerLen: number, plain: Uint8Array, packetNumber: number): void;
  /**
   * Seals `pkt[headerLen, +plainLen)` where it lies (the plaintext is already in the
   * packet); the tag is written after it. `pkt` must have room for the overhead.
   */
  sealInPlace(pkt: Buffer, headerLen: number, plainLen: number, packetNumber: number): void;
  /**
   * Returns the plaintext of `packet[headerLen:]`, or throws if it is not authentic.
   * The plaintext may be decrypted in place (a view of `packet`): the packet's body is
   * not ciphertext any more afterwards, authentic or not.
   */
  open(packet: Buffer, headerLen: number, packetNumber: number): Buffer;
}

interface Generation {
  gen: number;
  key: Buffer;
  iv: Buffer;
  /** the native context of this key, when the addon is in use */
  ctx: GcmHandle | undefined;
}

class GcmProtection implements PacketProtection {
  readonly overhead = TAG_BYTES;
  private readonly gens: Generation[] = [];
  private readonly nonce = Buffer.alloc(12);

  constructor(
    readonly cipher: Exclude<CipherName, 'none'>,
    private readonly secret: Buffer,
    private readonly native: NativeBinding | undefined,
  ) {}

  private generation(pn: number): Generation {
    const g = Math.floor(pn / KEY_UPDATE_PACKETS);
    for (const x of this.gens) if (x.gen === g) return x;
    const info = (label: string): Buffer => Buffer.from(`tachyon v1 ${this.cipher} ${label} ${g}`);
    const key = Buffer.from(hkdfSync('sha256', this.secret, 'tachyon-datagram', info('key'), KEY_LEN[this.cipher]));
    const iv = Buffer.from(hkdfSync('sha256', this.secret, 'tachyon-datagram', info('iv'), 12));
    const created = { gen: g, key, iv, ctx: this.native?.gcmCreate(key, iv) };
    this.gens.push(created);
    if (this.gens.length > 3) this.gens.shift();
    return created;
  }

  private nonceFor(pn: number, gen: Generation): Buffer {
    const n = this.nonce;
    gen.iv.copy(n);
    // XOR the 48-bit packet number into the last six bytes
    const hi = Math.floor(pn / 2 ** 24);
    const lo = pn % 2 ** 24;
    n[6]! ^= (hi >>> 16) & 0xff;
    n[7]! ^= (hi >>> 8) & 0xff;
    n[8]! ^= hi & 0xff;
    n[9]! ^= (lo >>> 16) & 0xff;
    n[10]! ^= (lo >>> 8) & 0xff;
    n[11]! ^= lo & 0xff;
    return n;
  }

  seal(out: Buffer, headerLen: number, plain: Uint8Array, pn: number): void {
    if (this.native) {
      out.set(plain, headerLen);
      this.sealInPlace(out, headerLen, plain.length, pn);
      return;
    }
    const g = this.generation(pn);
    const c = createCipheriv(this.cipher as CipherGCMTypes, g.key, this.nonceFor(pn, g), { authTagLength: TAG_BYTES });
    c.setAAD(out.subarray(0, headerLen));
    const ct = c.update(plain);
    ct.copy(out, headerLen);
    c.final();
    c.getAuthTag().copy(out, headerLen + ct.length);
  }

  sealInPlace(pkt: Buffer, headerLen: number, plainLen: number, pn: number): void {
    const g = this.generation(pn);
    if (g.ctx !== undefined && this.native) {
      this.native.gcmSeal(g.ctx, pkt, headerLen, plainLen, pn);
      return;
    }
    const c = createCipheriv(this.cipher as CipherGCMTypes, g.key, this.nonceFor(pn, g), { authTagLength: TAG_BYTES });
    c.setAAD(pkt.subarray(0, headerLen));
    const ct = c.update(pkt.subarray(headerLen, headerLen + plainLen));
    ct.copy(pkt, headerLen);
    c.final();
    c.getAuthTag().copy(pkt, headerLen + plainLen);
  }

  /** newest key generation seen in an authentic packet */
  private openedGen = 0;

  open(packet: Buffer, headerLen: number, pn: number): Buffer {
    if (packet.length < headerLen + TAG_BYTES) throw new TachyonError('PROTOCOL', 'datagram shorter than its tag');
    // only the current generation and its neighbours are plausible: a forged packet
    // number must not make us derive keys (or evict the live ones from the cache)
    const claimed = Math.floor(pn / KEY_UPDATE_PACKETS);
    if (claimed > this.openedGen + 1 || claimed < this.openedGen - 1) {
      throw new TachyonError('PROTOCOL', 'datagram claims an implausible key generation');
    }
    const g = this.generation(pn);
    if (g.ctx !== undefined && this.native) {
      if (!this.native.gcmOpen(g.ctx, packet, headerLen, packet.length, pn)) throw new TachyonError('PROTOCOL', 'datagram failed authentication');
      if (claimed > this.openedGen) this.openedGen = claimed;
      return packet.subarray(headerLen, packet.length - TAG_BYTES);
    }
    const d = createDecipheriv(this.cipher as CipherGCMTypes, g.key, this.nonceFor(pn, g), { authTagLength: TAG_BYTES });
    d.setAAD(packet.subarray(0, headerLen));
    d.setAuthTag(packet.subarray(packet.length - TAG_BYTES));
    const pt = d.update(packet.subarray(headerLen, packet.length - TAG_BYTES));
    try {
      d.final();
    } catch {
      throw new TachyonError('PROTOCOL', 'datagram failed authentication');
    }
    if (claimed > this.openedGen) this.openedGen = claimed;
    return pt;
  }
}

class NoProtection implements PacketProtection {
  readonly cipher = 'none' as const;
  readonly overhead = 0;
  seal(out: Buffer, headerLen: number, plain: Uint8Array): void {
    out.set(plain, headerLen);
  }
  sealInPlace(): void {}
  open(packet: Buffer, headerLen: number): Buffer {
    return packet.subarray(headerLen);
  }
}

export interface ProtectionOptions {
  /** the native addon to use; default: the loaded one (undefined: node:crypto) */
  native?: NativeBinding | undefined;
}

/** Creates the protection for one direction from its 32-byte secret. */
export function createProtection(cipher: CipherName, secret: Buffer, opts: ProtectionOptions = {}): PacketProtection {
  if (cipher === 'none') return new NoProtection();
  if (secret.length !== SECRET_BYTES) throw new TachyonError('PROTOCOL', `session secret must be ${SECRET_BYTES} bytes`);
  return new GcmProtection(cipher, secret, 'native' in opts ? opts.native : loadedNative);
}

/**
 * Sliding replay window over packet numbers: accepts each packet number at most
 * once, and refuses numbers older than `size` below the highest seen.
 */
export class ReplayWindow {
  private highest = -1;
  private readonly bits: Uint8Array;

  constructor(private readonly size = 1 << 16) {
    this.bits = new Uint8Array(size);
  }

  /** True if pn is fresh; call `accept` only after the packet authenticated. */
  check(pn: number): boolean {
    if (pn > this.highest) return true;
    if (this.highest - pn >= this.size) return false;
    return this.bits[pn % this.size] === 0;
  }

  accept(pn: number): void {
    if (pn > this.highest) {
      const gap = pn - this.highest;
      if (gap >= this.size) this.bits.fill(0);
      else for (let p = this.highest + 1; p < pn; p++) this.bits[p % this.size] = 0;
      this.highest = pn;
    }
    this.bits[pn % this.size] = 1;
  }
}
