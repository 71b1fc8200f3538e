/** The web platform's second factor: TOTP with recovery codes (see docs/platform-mfa.md). */
export { MfaService, TOTP_ALGORITHM, TOTP_PERIOD_S, TOTP_SECRET_BYTES, TOTP_WINDOW, totpSecretAad } from './service.js';
export type { MfaContext, MfaServiceOptions, MfaStatus, MfaVerified, TotpEnrolment } from './service.js';
export { AesGcmSecretBox, loadSecretBox, loadSecretBoxKeyFile, MFA_KEY_ENV, secretBoxKeyId } from './secret-box.js';
export type { SecretBox } from './secret-box.js';
export { generateRecoveryCode, MAX_CODE_INPUT, parseRecoveryCode, parseTotpCode, RECOVERY_CODE_SYMBOLS, TOTP_DIGITS } from './codes.js';
