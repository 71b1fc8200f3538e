/**
 * The error catalogue. Every error Tachyon raises on purpose is a TachyonError with a
 * stable `code`; each edge (CLI exit code, control-channel reply, later HTTP status)
 * maps the code, and only `publicMessage` is ever shown to a remote party.
 */
export const ERROR_CODES = {
  // usage and configuration
  USAGE: { exit: 2, retryable: false, summary: 'The command line or a parameter is invalid.' },
  TOO_LARGE: { exit: 65, retryable: false, summary: 'The request is too large.' },
  CONFIG: { exit: 78, retryable: false, summary: 'A configuration value is invalid.' },
  // state
  DB_UNAVAILABLE: { exit: 69, retryable: true, summary: 'The database is unavailable.' },
  BUSY: { exit: 75, retryable: true, summary: 'The server is busy; try again later.' },
  // authentication and trust
  HOST_KEY_UNKNOWN: { exit: 77, retryable: false, summary: "The server's host key is not pinned." },
  HOST_KEY_MISMATCH: { exit: 77, retryable: false, summary: "The server's host key does not match the pinned one." },
  AUTH_FAILED: { exit: 77, retryable: false, summary: 'The server refused the credentials.' },
  /** a second-factor code (TOTP or recovery) was refused: wrong, malformed, expired or replayed (details.reason says which) */
  MFA_INVALID: { exit: 77, retryable: false, summary: 'The verification code is not valid.' },
  /** too many wrong second-factor codes: refused for a while (details.lockedUntil) */
  MFA_LOCKED: { exit: 77, retryable: true, summary: 'Too many wrong verification codes; try again later.' },
  /** single sign-on (OIDC, SAML) refused the response; `details.reason` says why (logs only) */
  SSO_FAILED: { exit: 77, retryable: false, summary: 'Single sign-on failed.' },
  /** a sensitive change needs a recent proof of identity: re-authenticate (POST /api/v1/auth/reauth, or SSO again) and retry */
  REAUTH_REQUIRED: { exit: 77, retryable: true, summary: 'Confirm your identity again (re-authenticate) to do this.' },
  // paths and storage
  PATH_INVALID: { exit: 65, retryable: false, summary: 'A path is malformed or leaves the allowed root.' },
  NOT_FOUND: { exit: 66, retryable: false, summary: 'A file or directory does not exist.' },
  IS_DIRECTORY: { exit: 73, retryable: false, summary: 'The destination exists as a directory.' },
  EXISTS: { exit: 73, retryable: false, summary: 'The destination exists.' },
  PERMISSION: { exit: 77, retryable: false, summary: 'The operation is not permitted.' },
  DISK_FULL: { exit: 74, retryable: true, summary: 'The destination storage is full.' },
  IO: { exit: 74, retryable: true, summary: 'A storage read or write failed.' },
  STORAGE_UNAVAILABLE: { exit: 69, retryable: true, summary: 'The storage service is unavailable.' },
  // protocol
  PROTOCOL: { exit: 76, retryable: false, summary: 'The peer broke the protocol.' },
  CIPHER_REFUSED: { exit: 77, retryable: false, summary: 'The requested cipher is not allowed.' },
  DIGEST_MISMATCH: { exit: 65, retryable: true, summary: 'The received file does not match the sender digest.' },
  PEER_VANISHED: { exit: 69, retryable: true, summary: 'The peer stopped answering.' },
  CONNECT: { exit: 69, retryable: true, summary: 'The server could not be reached.' },
  CANCELLED: { exit: 130, retryable: true, summary: 'The transfer was cancelled.' },
  /** the resource is not in a state that allows the operation (node API: 409), e.g. cancelling a finished transfer */
  CONFLICT: { exit: 75, retryable: false, summary: 'The operation conflicts with the current state.' },
  // encryption at rest
  ENVELOPE_INVALID: { exit: 65, retryable: false, summary: 'An encrypted file is damaged or not in the expected format.' },
  WRONG_KEY: { exit: 77, retryable: false, summary: 'The passphrase or key does not open the encrypted file.' },
  KEY_MISSING: { exit: 78, retryable: false, summary: 'The key needed to encrypt or decrypt is not available.' },
  ENCRYPTION_REQUIRED: { exit: 77, retryable: false, summary: 'This account accepts only files encrypted by the client (.tachyon-enc).' },
  // audit
  AUDIT_TAMPERED: { exit: 1, retryable: false, summary: 'The audit log failed verification.' },
  INTERNAL: { exit: 70, retryable: false, summary: 'An internal error occurred.' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface TachyonErrorOptions {
  cause?: unknown;
  /** Text safe to show to a remote party; defaults to the code's summary. */
  publicMessage?: string;
  /** Extra fields for logs (never shown to a remote party). */
  details?: Record<string, unknown>;
}

export class TachyonError extends Error {
  readonly code: ErrorCode;
  readonly publicMessage: string;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: TachyonErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TachyonError';
    this.code = code;
    this.publicMessage = options.publicMessage ?? ERROR_CODES[code].summary;
    this.details = options.details;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, value);
}

/** Turns anything thrown into a TachyonError, translating common Node errno codes. */
export function toTachyonError(err: unknown, fallback: ErrorCode = 'INTERNAL'): TachyonError {
  if (err instanceof TachyonError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  const msg = e?.message ?? String(err);
  switch (e?.code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return new TachyonError('DISK_FULL', msg, { cause: err });
    case 'ENOENT':
      return new TachyonError('NOT_FOUND', msg, { cause: err, publicMessage: 'No such file or directory.' });
    case 'EISDIR':
      return new TachyonError('IS_DIRECTORY', msg, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new TachyonError('PERMISSION', msg, { cause: err });
    case 'EEXIST':
      return new TachyonError('EXISTS', msg, { cause: err });
    case 'EIO':
    case 'EROFS':
    case 'EBADF':
      return new TachyonError('IO', msg, { cause: err });
    default:
      return new TachyonError(fallback, msg, { cause: err });
  }
}
