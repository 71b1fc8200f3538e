/** The TOTP code an authenticator app shows for a base32 secret at `ms` (SHA-1, 6 digits, 30 s: what enrolment hands out). */
import { Secret, TOTP } from 'otpauth';

export function codeAt(secret: string, ms: number): string {
  return new TOTP({ secret: Secret.fromBase32(secret), algorithm: 'SHA1', digits: 6, period: 30 }).generate({ timestamp: ms });
}
