/**
 * Keys of an envelope: the key-encryption key (from a passphrase through argon2id or
 * scrypt, or a master key), the wrapping of the per-file content key under it, and the
 * per-file segment keys derived from the content key.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, scrypt } from 'node:crypto';
import { TachyonError } from '../../core/errors.js';
import { encodeHeader, envelopeError, FILE_ID_BYTES, FORMAT_VERSION, NONCE_BYTES, SALT_BYTES, WRAP_AAD_BYTES, type EnvelopeHeader, type KdfParams, type KeySlot } from './format.js';

export const KEY_BYTES = 32;

/** The default KDF for new files: argon2id, 64 MiB, 3 passes, 1 lane (about 0.35 s here). */
export function defaultKdf(salt: Buffer = randomBytes(SALT_BYTES)): KdfParams {
  return { id: 'argon2id', memoryKiB: 65536, passes: 3, parallelism: 1, salt };
}

/** Derives the 32-byte key-encryption key from a passphrase. */
export async function deriveKek(passphrase: string | Buffer, kdf: KdfParams): Promise<Buffer> {
  const pw = typeof passphrase === 'string' ? Buffer.from(passphrase.normalize('NFC'), 'utf8') : passphrase;
  if (kdf.id === 'argon2id') {
    // loaded when first needed: the CLI's start-up (send, recv) does not pull in the native addon
    const argon2 = (await import('argon2')).default;
    return argon2.hash(pw, {
      raw: true,
      type: argon2.argon2id,
      version: 0x13,
      salt: kdf.salt,
      memoryCost: kdf.memoryKiB,
      timeCost: kdf.passes,
      parallelism: kdf.parallelism,
      hashLength: KEY_BYTES,
    });
  }
  const N = 2 ** kdf.log2N;
  return new Promise((resolve, reject) =>
    scrypt(pw, kdf.salt, KEY_BYTES, { N, r: kdf.r, p: kdf.p, maxmem: 256 + 128 * N * kdf.r * 2 + 128 * kdf.r * kdf.p }, (err, key) =>
      err ? reject(new TachyonError('INTERNAL', `scrypt failed: ${err.message}`, { cause: err })) : resolve(key),
    ),
  );
}

/** Remembers derived keys per KDF parameters and salt, so that many files of one sender cost one derivation. */
export class KekCache {
  private readonly keys = new Map<string, Promise<Buffer>>();
  constructor(private readonly passphrase: string | Buffer) {}
  get(kdf: KdfParams): Promise<Buffer> {
    const id = kdf.id === 'argon2id' ? `a:${kdf.memoryKiB}:${kdf.passes}:${kdf.parallelism}` : `s:${kdf.log2N}:${kdf.r}:${kdf.p}`;
    const k = `${id}:${kdf.salt.toString('hex')}`;
    let p = this.keys.get(k);
    if (!p) {
      p = deriveKek(this.passphrase, kdf);
      this.keys.set(k, p);
    }
    return p;
  }
}

/**
 * Builds a header: the content key wrapped under `kek` with AES-256-GCM, the wrap
 * authenticating header bytes 0..64 (version, slot, file id, KDF parameters and salt).
 */
export function sealHeader(opts: { kek: Buffer; contentKey: Buffer; slot: KeySlot; fileId?: Buffer; wrapNonce?: Buffer }): Buffer {
  if (opts.contentKey.length !== KEY_BYTES || opts.kek.length !== KEY_BYTES) throw new TachyonError('INTERNAL', 'keys must be 32 bytes');
  const h: EnvelopeHeader = {
    version: FORMAT_VERSION,
    fileId: opts.fileId ?? randomBytes(FILE_ID_BYTES),
    slot: opts.slot,
    wrapNonce: opts.wrapNonce ?? randomBytes(NONCE_BYTES),
    wrappedKey: Buffer.alloc(KEY_BYTES),
    wrapTag: Buffer.alloc(16),
  };
  const draft = encodeHeader(h);
  const c = createCipheriv('aes-256-gcm', opts.kek, h.wrapNonce);
  c.setAAD(draft.subarray(0, WRAP_AAD_BYTES));
  h.wrappedKey = Buffer.concat([c.update(opts.contentKey), c.final()]);
  h.wrapTag = c.getAuthTag();
  return encodeHeader(h);
}

/** Unwraps the content key of a parsed header; a key that does not open it is WRONG_KEY. */
export function unwrapContentKey(headerBytes: Buffer, h: EnvelopeHeader, kek: Buffer): Buffer {
  try {
    const d = createDecipheriv('aes-256-gcm', kek, h.wrapNonce);
    d.setAAD(headerBytes.subarray(0, WRAP_AAD_BYTES));
    d.setAuthTag(h.wrapTag);
    return Buffer.concat([d.update(h.wrappedKey), d.final()]);
  } catch {
    throw envelopeError('wrong-key', h.slot.kind === 'passphrase' ? 'wrong passphrase (the key wrap did not authenticate)' : `the master key '${h.slot.keyId}' does not open this file`);
  }
}

/** Re-wraps a header's content key under another key slot; segments are untouched (file id kept). */
export function rewrapHeader(headerBytes: Buffer, h: EnvelopeHeader, oldKek: Buffer, newKek: Buffer, slot: KeySlot): Buffer {
  const contentKey = unwrapContentKey(headerBytes, h, oldKek);
  return sealHeader({ kek: newKek, contentKey, slot, fileId: h.fileId });
}

/** The two per-file keys derived from the content key (HKDF-SHA256, salt = file id). */
export interface SegmentKeys {
  /** AES-256-GCM key of the segments */
  readonly data: Buffer;
  /** HMAC-SHA256 key that derives each segment's synthetic nonce */
  readonly nonce: Buffer;
}

export function segmentKeys(contentKey: Buffer, fileId: Buffer): SegmentKeys {
  return {
    data: Buffer.from(hkdfSync('sha256', contentKey, fileId, 'tachyon-enc v1 data', KEY_BYTES)),
    nonce: Buffer.from(hkdfSync('sha256', contentKey, fileId, 'tachyon-enc v1 nonce', KEY_BYTES)),
  };
}

/** The synthetic nonce of a segment: the first 12 bytes of HMAC-SHA256(nonce key, aad || plaintext). */
export function syntheticNonce(keys: SegmentKeys, aad: Buffer, plain: Buffer): Buffer {
  return createHmac('sha256', keys.nonce).update(aad).update(plain).digest().subarray(0, NONCE_BYTES);
}
