/**
 * What a person types: the parsers of TOTP codes and recovery codes (strict, bounded,
 * total: they return undefined for anything else and never throw), and the making and
 * hashing of recovery codes.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Longest input either parser looks at; anything longer is refused before any work. */
export const MAX_CODE_INPUT = 64;

/** Digits of a TOTP code. */
export const TOTP_DIGITS = 6;

/**
 * Parses a TOTP code as typed: ASCII digits, with ASCII spaces, tabs or one hyphen
 * between groups allowed and dropped (`123 456`, `123-456`), surrounding white space
 * ignored. Exactly {@link TOTP_DIGITS} digits. Other digits (fullwidth, Arabic-Indic,
 * superscript …), letters, control characters and inputs over {@link MAX_CODE_INPUT}
 * characters are refused: returns undefined.
 */
export function parseTotpCode(input: unknown): string | undefined {
  if (typeof input !== 'string' || input.length > MAX_CODE_INPUT) return undefined;
  const t = input.replace(/^[ \t]+|[ \t]+$/g, '');
  if (!/^[0-9]+(?:(?:[ \t]+|-)[0-9]+)?$/.test(t)) return undefined;
  const digits = t.replace(/[ \t-]/g, '');
  return digits.length === TOTP_DIGITS ? digits : undefined;
}

/** Crockford's base32 alphabet (no i, l, o, u): what recovery codes are written in. */
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
/** Symbols per recovery code: 16 × 5 bits = 80 bits of entropy. */
export const RECOVERY_CODE_SYMBOLS = 16;

/** A fresh recovery code, `xxxx-xxxx-xxxx-xxxx` (80 random bits). */
export function generateRecoveryCode(): string {
  const bytes = randomBytes(10); // 80 bits
  let bits = 0n;
  for (const b of bytes) bits = (bits << 8n) | BigInt(b);
  let s = '';
  for (let i = RECOVERY_CODE_SYMBOLS - 1; i >= 0; i--) s += ALPHABET[Number((bits >> BigInt(i * 5)) & 31n)];
  return `${s.slice(0, 4)}-${s.slice(4, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}`;
}

/**
 * Parses a recovery code as typed into its canonical 16 symbols: case-insensitive,
 * hyphens and ASCII spaces anywhere dropped, and Crockford's look-alikes read as they
 * are meant (o → 0, i and l → 1). Anything else is refused: undefined.
 */
export function parseRecoveryCode(input: unknown): string | undefined {
  if (typeof input !== 'string' || input.length > MAX_CODE_INPUT) return undefined;
  const t = input.replace(/[ \t-]/g, '').toLowerCase();
  if (t.length !== RECOVERY_CODE_SYMBOLS || !/^[0-9a-z]+$/.test(t)) return undefined;
  const s = t.replace(/o/g, '0').replace(/[il]/g, '1');
  for (const ch of s) if (!ALPHABET.includes(ch)) return undefined; // u
  return s;
}

/**
 * The stored hash of a canonical recovery code: SHA-256 over a label, the owner
 * (tenant, user) and a per-row random salt, then the code. Binding the owner means a
 * row copied to another account never matches.
 */
export function hashRecoveryCode(canonical: string, salt: Uint8Array, tenantId: string, userId: string): Buffer {
  return createHash('sha256')
    .update(JSON.stringify(['tachyon-mfa-recovery-v1', tenantId, userId]))
    .update('\0')
    .update(salt)
    .update(canonical)
    .digest();
}

/** A fresh salt for {@link hashRecoveryCode}. */
export function newRecoverySalt(): Buffer {
  return randomBytes(16);
}

/** Constant-time equality of two byte strings of any length. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
