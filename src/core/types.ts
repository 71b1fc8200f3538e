/** Names shared by every layer. */
export const CIPHERS = ['aes-128-gcm', 'aes-192-gcm', 'aes-256-gcm', 'none'] as const;
export type CipherName = (typeof CIPHERS)[number];
export const POLICIES = ['fixed', 'high', 'fair', 'low'] as const;
export type RatePolicy = (typeof POLICIES)[number];
/** What a transfer user may do inside its docroot (SSH transfers and SFTP alike). */
export const PERMISSIONS = ['list', 'read', 'write', 'mkdir', 'rename', 'delete'] as const;
export type Permission = (typeof PERMISSIONS)[number];
