/**
 * The audit vocabulary: what an audit event is, its severities, its types and the typed
 * fields of each type. Events never hold secrets: the sinks pass every event through the
 * redaction guard (redact.ts) before it is stored.
 *
 * To add an event type, add a row to {@link AuditFieldsByType} (and, if `info` is not
 * right for it, to {@link DEFAULT_SEVERITY}).
 */

/** Severities, in increasing order (the syslog names from `info` up). */
export const AUDIT_SEVERITIES = ['info', 'notice', 'warning', 'error', 'critical'] as const;
export type AuditSeverity = (typeof AUDIT_SEVERITIES)[number];

/** Rank of a severity: info 0 … critical 4. */
export function severityRank(s: AuditSeverity): number {
  return AUDIT_SEVERITIES.indexOf(s);
}

/** Which part of Tachyon reports the event. Free-form (a dotted lower-case name); these are the usual ones. */
export type AuditComponent = 'ssh' | 'transfer' | 'sftp' | 'config' | 'api' | 'server' | 'audit' | (string & {});

/** A value an audit field may hold (JSON). */
export type AuditValue = string | number | boolean | null | readonly AuditValue[] | { readonly [k: string]: AuditValue | undefined };

/** Where a connection comes from. */
export interface AuditPeer {
  clientAddress: string;
  clientPort?: number;
}

/**
 * The typed fields of each event type. Paths are as the client named them (clipped), or
 * as resolved inside the user's root; never a secret, a key, a password or a token.
 */
export interface AuditFieldsByType {
  /** A client proved possession of an authorized key. */
  'auth.success': AuditPeer & { user: string; method: string; keyType?: string; keyFingerprint: string };
  /** An authentication attempt was refused (`reason`: not-authorized, root-refused, bad-signature, method-not-allowed, …). */
  'auth.failure': AuditPeer & {
    user: string;
    method: string;
    reason: string;
    keyType?: string;
    keyFingerprint?: string;
    /** Failures so far on this connection. */
    failures?: number;
  };
  /** A session (an SSH channel running `tachyon-v1`, `sftp`, …) started. */
  'session.start': AuditPeer & { user: string; keyFingerprint?: string; subsystem?: string; sessionId?: string | number; localAddress?: string };
  /** A session ended; `code` is the error code of an abnormal end. */
  'session.end': AuditPeer & {
    user: string;
    keyFingerprint?: string;
    subsystem?: string;
    sessionId?: string | number;
    durationMs?: number;
    code?: string;
    reason?: string;
  };
  /** A connection was closed by the server for a limit, or by the client. */
  'connection.close': AuditPeer & { user?: string; reason: string };
  /** One file moved (or failed to). */
  'file.transfer': AuditPeer & {
    user: string;
    serverAddress?: string;
    direction: 'upload' | 'download';
    source: string;
    destination: string;
    bytes: number;
    durationMs: number;
    rateBps: number;
    cipher: string;
    status: 'ok' | 'failed' | 'skipped' | 'partial';
    /** bytes not carried: a resumed prefix, or the whole file when skipped by policy */
    skippedBytes?: number;
    /** why a file was skipped (overwrite policy) */
    reason?: string;
    code?: string;
    sha256?: string;
    sessionId?: string | number;
  };
  /** A file-system operation other than a transfer (SFTP mkdir, rename, remove, …). */
  'file.operation': AuditPeer & { user: string; op: string; path: string; target?: string; status: 'ok' | 'failed'; code?: string };
  /** A path was refused by the jail (`reason`: dot-dot, symlink, nul, too-long, unicode, …). */
  'refusal.jail': AuditPeer & { user: string; path: string; reason: string; op?: string };
  /** The user lacks a permission (list, read, write, mkdir, rename, delete). */
  'refusal.permission': AuditPeer & { user: string; permission: string; path?: string; op?: string };
  /** The requested data cipher is not allowed for this user or server. */
  'refusal.cipher': AuditPeer & { user: string; cipher: string; allowed?: readonly string[] };
  /**
   * An SSH channel or request was refused (`what`: shell, exec, pty, x11, env, auth-agent,
   * subsystem, direct-tcpip, global-request, session, …). `detail` is a name (a subsystem,
   * an environment variable's name, a forwarding target), never a command or a value.
   */
  'refusal.channel': AuditPeer & { user?: string; what: string; detail?: string };
  /** A connection was refused or cut by a limit (`limit`: max-auth-tries, login-grace, idle, per-source, max-startups, …). */
  'refusal.limit': AuditPeer & { user?: string; limit: string; value?: number };
  /** The node API issued a transfer token (`grantId` is its random id, as in `token:<id>` of the sessions that use it; the token itself is never stored). */
  'transfer.authorize': AuditPeer & {
    accessKeyId: string;
    direction: 'upload' | 'download';
    paths: readonly string[];
    grantId: string;
    expiresAt: string;
  };
  /** A single sign-on began: a redirect to the tenant's identity provider (`protocol`: oidc, saml). */
  'sso.start': { tenantId: string; protocol: 'oidc' | 'saml'; clientAddress?: string };
  /** A single sign-on response was verified: who (subject, email), the roles it mapped to. Never a token or an assertion. */
  'sso.success': {
    tenantId: string;
    protocol: 'oidc' | 'saml';
    subject: string;
    email?: string;
    roles: readonly string[];
    clientAddress?: string;
  };
  /** A single sign-on response was refused (`reason`: state-unknown, nonce-mismatch, audience, signature, replay, expired, …). */
  'sso.failure': { tenantId?: string; protocol: 'oidc' | 'saml'; reason: string; subject?: string; clientAddress?: string };
  /** A configuration change: who, what, on what; the names of changed settings, not secret values. */
  'config.change': {
    actor: string;
    action: string;
    target: string;
    changed?: readonly string[];
    clientAddress?: string;
  };
  /**
   * A node API request ended in an error other than an authentication, permission or path
   * refusal (those have their own types): the route (its pattern, not the raw URL), the
   * HTTP status and the error code; `principal` is the access key id or admin, if known.
   */
  'api.error': AuditPeer & { method: string; route: string; status: number; code: string; principal?: string; reason?: string };
  /** The IP defender blocked an address (an IPv4 address or an IPv6 /64) until `until`. */
  'defender.block': { clientAddress: string; score: number; banCount: number; until: string; banSeconds: number };
  /** An administrator lifted a block (`actor`: who, e.g. `cli:alice` or `admin:root`). */
  'defender.unblock': { clientAddress: string; actor: string };
  /** A connection or request from a blocked or not allowed address was refused (`reason`: blocked, not-allowed). */
  'refusal.address': AuditPeer & { reason: string; service: string };
  /** A configuration was refused (file, field, reason). */
  'config.error': { source: string; field?: string; reason: string };
  /**
   * Second factor (src/platform/mfa) of a web platform user. `tenant` and `user` name the
   * account (the caller's labels, else the ids); never a code, a recovery code or a secret.
   * `mfa.enrol`: an enrolment began (pending); `mfa.confirm`: a first code confirmed it.
   */
  'mfa.enrol': Partial<AuditPeer> & { tenant: string; user: string; method: 'totp' };
  'mfa.confirm': Partial<AuditPeer> & { tenant: string; user: string; method: 'totp'; recoveryCodes: number };
  /** A code was refused (`reason`: wrong-code, malformed, locked, not-enrolled, expired-enrolment, secret-unreadable); `failures` in the current window. */
  'mfa.failure': Partial<AuditPeer> & { tenant: string; user: string; method: 'totp' | 'recovery'; reason: string; failures?: number };
  /** A TOTP code of a time step already used (or older) was refused. */
  'mfa.replay': Partial<AuditPeer> & { tenant: string; user: string; step: number; lastStep: number };
  /** Too many wrong codes: codes are refused until `lockedUntil`. */
  'mfa.lockout': Partial<AuditPeer> & { tenant: string; user: string; failures: number; lockedUntil: string };
  /** A recovery code was used (`remaining`: unused ones left), or the set was regenerated. */
  'mfa.recovery': Partial<AuditPeer> & { tenant: string; user: string; action: 'used' | 'regenerated'; remaining: number };
  /** The second factor was removed (`actor`: who did it, when not the user). */
  'mfa.disable': Partial<AuditPeer> & { tenant: string; user: string; method: 'totp'; actor?: string };
  /** A sign-in to the web platform (`reason` of a failure: unknown-user, bad-credentials, locked, disabled, no-local-password, policy). Never the password. */
  'web.signin': AuditPeer & {
    tenant: string;
    user: string;
    // pending: the password was right, a second factor (or its enrolment) is still due
    result: 'success' | 'failure' | 'pending';
    method: string;
    reason?: string;
    changeRequired?: boolean;
    pending?: string;
    recoveryCodesLeft?: number;
    /** The tenant's disclaimer was accepted: the SHA-256 (hex, first 16) of the text accepted. */
    disclaimerAccepted?: string;
  };
  /** A web session ended (`reason`: signout, ended-by-user, idle, expired, superseded, password-changed). */
  'web.signout': AuditPeer & { tenant: string; user: string; reason: string; sessionId?: string };
  /**
   * An account was locked after too many failed sign-ins: `scope` `account` (for every
   * address), or `address` (only for sign-ins from `lockedAddress`, an IPv4 or IPv6 /64 key).
   */
  'web.lockout': AuditPeer & { tenant: string; user: string; failures: number; lockedUntil: string; scope?: 'account' | 'address'; lockedAddress?: string };
  /** A web request refused (`code`: the error code; `reason`: csrf, role, password-change-required, no-session, …); sign-in failures are `web.signin`. */
  'web.refusal': AuditPeer & { tenant?: string; user?: string; route: string; status: number; code: string; reason?: string };
  /** A change made on the web platform (`action`: user.create, user.update, user.reset, user.self-change, policy.update, …); names of changed settings, never values of secrets. */
  'web.change': AuditPeer & { tenant: string; actor: string; action: string; target: string; changed?: readonly string[] };
  /** The server started or stopped. */
  'server.start': { listen: string; port: number; hostKeyFingerprints?: readonly string[]; version?: string };
  'server.stop': { reason: string };
  /**
   * Written by the file sink itself when it found bytes after the last valid record at
   * open (a write cut short by a crash or a full disk): those bytes are skipped, and this
   * record says how many and their SHA-256, so that `verify` can tell the gap apart from
   * tampering.
   */
  'audit.recovery': { reason: string; skippedBytes: number; skippedLines: number; skippedSha256: string };
}

export type AuditEventType = keyof AuditFieldsByType;

/** Every known event type. */
export const AUDIT_EVENT_TYPES = [
  'auth.success',
  'auth.failure',
  'session.start',
  'session.end',
  'connection.close',
  'file.transfer',
  'file.operation',
  'refusal.jail',
  'refusal.permission',
  'refusal.cipher',
  'refusal.channel',
  'refusal.limit',
  'transfer.authorize',
  'sso.start',
  'sso.success',
  'sso.failure',
  'config.change',
  'api.error',
  'defender.block',
  'defender.unblock',
  'refusal.address',
  'config.error',
  'mfa.enrol',
  'mfa.confirm',
  'mfa.failure',
  'mfa.replay',
  'mfa.lockout',
  'mfa.recovery',
  'mfa.disable',
  'web.signin',
  'web.signout',
  'web.lockout',
  'web.refusal',
  'web.change',
  'server.start',
  'server.stop',
  'audit.recovery',
] as const satisfies readonly AuditEventType[];

// Compile-time check that the list above names every type of the map.
type MissingTypes = Exclude<AuditEventType, (typeof AUDIT_EVENT_TYPES)[number]>;
const _allTypesListed: MissingTypes extends never ? true : never = true;
void _allTypesListed;

/** Severity used when an event does not say. */
export const DEFAULT_SEVERITY: Readonly<Record<AuditEventType, AuditSeverity>> = {
  'auth.success': 'notice',
  'auth.failure': 'warning',
  'session.start': 'info',
  'session.end': 'info',
  'connection.close': 'info',
  'file.transfer': 'info',
  'file.operation': 'info',
  'refusal.jail': 'warning',
  'refusal.permission': 'warning',
  'refusal.cipher': 'warning',
  'refusal.channel': 'warning',
  'refusal.limit': 'warning',
  'transfer.authorize': 'info',
  'sso.start': 'info',
  'sso.success': 'notice',
  'sso.failure': 'warning',
  'config.change': 'notice',
  'api.error': 'warning',
  'defender.block': 'warning',
  'defender.unblock': 'notice',
  'refusal.address': 'warning',
  'config.error': 'error',
  'mfa.enrol': 'notice',
  'mfa.confirm': 'notice',
  'mfa.failure': 'warning',
  'mfa.replay': 'warning',
  'mfa.lockout': 'warning',
  'mfa.recovery': 'notice',
  'mfa.disable': 'notice',
  'web.signin': 'notice',
  'web.signout': 'info',
  'web.lockout': 'warning',
  'web.refusal': 'warning',
  'web.change': 'notice',
  'server.start': 'notice',
  'server.stop': 'notice',
  'audit.recovery': 'critical',
};

/** One audit event as a caller hands it to {@link AuditSink.record}. */
export type AuditEvent = {
  [T in AuditEventType]: {
    type: T;
    component: AuditComponent;
    /** Default: {@link DEFAULT_SEVERITY} of the type. */
    severity?: AuditSeverity;
    /** Groups the events of one connection, session or request (a ULID from `newCorrelationId`). */
    correlationId?: string;
    fields: AuditFieldsByType[T];
  };
}[AuditEventType];

/** An event as stored: with its sequence number, time and id, fields sanitized. */
export interface AuditRecord {
  /** 1 for the first record of a file, then +1 per record. */
  seq: number;
  /** UTC, ISO 8601 with milliseconds. */
  ts: string;
  /** This record's id (a ULID); what error messages quote as `ref`. */
  id: string;
  severity: AuditSeverity;
  component: string;
  type: string;
  correlationId?: string;
  fields: Record<string, AuditValue>;
  /** Paths of fields whose values the redaction guard replaced (e.g. `password`). */
  redacted?: string[];
}

/**
 * The audit seam: where events go. `record` stores the event synchronously (as far as
 * the sink's durability policy says) and returns the new record's id, to quote to the
 * client as a correlation id. It throws a `TachyonError` (`IO`, `DISK_FULL`) if the
 * record cannot be stored; callers decide whether that stops the operation.
 */
export interface AuditSink {
  record(event: AuditEvent): string;
  /** Flushes (fsync) and releases the sink; `record` throws afterwards. */
  close(): Promise<void>;
}

const NAME = /^[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)*$/;

/** Whether `s` is a well-formed component or event-type name (dotted lower case, ≤ 64 chars). */
export function isAuditName(s: unknown): s is string {
  return typeof s === 'string' && s.length <= 64 && NAME.test(s);
}
