/**
 * Sealing and opening one segment: nonce (12) || AES-256-GCM ciphertext || tag (16),
 * associated data = header bytes 0..32 || index (u64 BE) || final flag (u8).
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { NONCE_BYTES, segmentAad, SEGMENT_OVERHEAD, TAG_BYTES } from './format.js';
import { syntheticNonce, type SegmentKeys } from './keys.js';

/**
 * Encrypts `plain` as segment `index` into `out` at `at` (plain.length + 28 bytes).
 * Deterministic: the nonce is synthetic (an HMAC of the associated data and the
 * plaintext), so re-encrypting the same segment gives the same bytes (what resume
 * relies on) and different plaintexts never share a nonce.
 */
export function sealSegment(keys: SegmentKeys, header: Buffer, index: number, final: boolean, plain: Buffer, out: Buffer, at: number): void {
  const aad = segmentAad(header, index, final);
  const nonce = syntheticNonce(keys, aad, plain);
  nonce.copy(out, at);
  const c = createCipheriv('aes-256-gcm', keys.data, nonce);
  c.setAAD(aad);
  const a = c.update(plain);
  a.copy(out, at + NONCE_BYTES);
  const b = c.final();
  b.copy(out, at + NONCE_BYTES + a.length);
  c.getAuthTag().copy(out, at + NONCE_BYTES + plain.length);
}

/**
 * Decrypts one sealed segment (nonce || ciphertext || tag) as segment `index`; returns the
 * plaintext, or undefined when it does not authenticate in that position.
 */
export function openSegment(keys: SegmentKeys, header: Buffer, index: number, final: boolean, sealed: Buffer, aad?: Buffer): Buffer | undefined {
  if (sealed.length < SEGMENT_OVERHEAD) return undefined;
  const a = segmentAad(header, index, final, aad);
  try {
    const d = createDecipheriv('aes-256-gcm', keys.data, sealed.subarray(0, NONCE_BYTES));
    d.setAAD(a);
    d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    const p = d.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES));
    d.final();
    return p;
  } catch {
    return undefined;
  }
}
