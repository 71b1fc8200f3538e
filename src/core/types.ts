/** Names shared by every layer. */
export const CIPHERS = ['aes-128-gcm', 'aes-192-gcm', 'aes-256-gcm', 'none'] as const;
export type CipherName = (typeof CIPHERS)[number];
export const POLICIES = ['fixed', 'high', 'fair', 'low'] as const;
export type RatePolicy = (typeof POLICIES)[number];
/** What a transfer user may do inside its docroot (SSH transfers and SFTP alike). */
export const PERMISSIONS = ['list', 'read', 'write', 'mkdir', 'rename', 'delete'] as const;
export type Permission = (typeof PERMISSIONS)[number];
/** What to do with a destination file that exists (ascp's --overwrite). */
export const OVERWRITE_POLICIES = ['never', 'always', 'diff', 'diff+older', 'older'] as const;
export type OverwritePolicy = (typeof OVERWRITE_POLICIES)[number];
/** How to resume a partial file and compare an existing one (ascp's -k 0..3). */
export const RESUME_LEVELS = ['none', 'attrs', 'sparse', 'full'] as const;
export type ResumeLevel = (typeof RESUME_LEVELS)[number];
