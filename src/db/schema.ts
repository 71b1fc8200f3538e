/**
 * The tables of Tachyon's database, as kysely sees them. Column types are the portable
 * subset both SQLite and PostgreSQL serve the same way: text, integer, bigint (which
 * PostgreSQL's driver returns as a string; readers convert), timestamps as ISO-8601 UTC
 * text, booleans as integer 0/1, short lists as comma-separated text.
 *
 * The migrations in migrations.ts create exactly these tables; repositories that own
 * the data (for example transfer users in src/server/users) query them.
 */

import type { Generated } from 'kysely';

/** A transfer user (an account that logs in over SSH/SFTP and transfers within its docroot). */
export interface TransferUserTable {
  /** Login name; primary key. */
  name: string;
  /** Canonical storage URL of the user's root (`file:///…`, `s3://bucket/prefix`). */
  docroot: string;
  /** Comma-separated permissions (list,read,write,mkdir,rename,delete). */
  permissions: string;
  /** Comma-separated datagram ciphers the user may choose. */
  ciphers: string;
  /** Comma-separated rate policies the user may choose. */
  policies: string;
  /** Rate cap in bits/s, or null for none beyond the server's. bigint: a string from PostgreSQL. */
  max_rate_bps: number | string | null;
  /** 1 enabled, 0 disabled. */
  enabled: number;
  /** 1: uploads must be client-side encrypted envelopes (`.tachyon-enc`); 0: any file (migration 0004). */
  require_encrypted_at_rest: Generated<number>;
  created_at: string;
  updated_at: string;
}

/** An SSH public key of a transfer user. A key belongs to at most one user. */
export interface UserKeyTable {
  /** `SHA256:…` fingerprint of the key blob; primary key (so a key has one owner). */
  fingerprint: string;
  user_name: string;
  /** Key type, e.g. `ssh-ed25519`. */
  type: string;
  /** The public key blob (SSH wire format), base64. */
  blob: string;
  comment: string;
  added_at: string;
}

/** An access key of the node API (or a node administrator's key: kind 'admin'). */
export interface AccessKeyTable {
  /** Public id (`AK…`); primary key. */
  id: string;
  /** 'access' (bound to a storage root) or 'admin' (manages keys; no storage). */
  kind: string;
  /** Canonical storage URL the key is confined to (null for admin keys). */
  storage_root: string | null;
  /** Comma-separated permissions (list,read,write,mkdir,rename,delete). */
  permissions: string;
  description: string;
  /** argon2id hash (PHC string) of the current secret. */
  secret_hash: string;
  /** 1 at creation, +1 per rotation (bearer tokens remember the version they were made from). */
  secret_version: number;
  /** The secret before the last rotation, valid until previous_valid_until. */
  previous_secret_hash: string | null;
  previous_valid_until: string | null;
  created_at: string;
  updated_at: string;
  /** Set once revoked; a revoked key never authenticates again. */
  revoked_at: string | null;
}

/** A finished transfer session (src/server/monitor.ts); active ones live in memory. */
export interface TransferTable {
  /** The monitor's transfer id (a UUID); primary key. */
  id: string;
  /** The SSH connection id, which the audit records of the session carry. */
  correlation_id: string;
  user_name: string;
  /** The access key whose transfer token started it, or null. */
  access_key_id: string | null;
  /** `upload` | `download` (as the client sees it). */
  direction: string;
  /** `completed` | `failed` | `cancelled`. */
  status: string;
  /** Error code of a failed or cancelled session. */
  code: string | null;
  /** Its public message. */
  message: string | null;
  client_address: string;
  cipher: string;
  /** ISO-8601 UTC. */
  started_at: string;
  ended_at: string;
  files: number;
  /** File bytes carried over UDP. bigint columns: strings from PostgreSQL. */
  bytes: number | string;
  total_bytes: number | string;
  skipped_bytes: number | string;
  duration_ms: number | string;
  datagrams: number | string;
  retransmits: number | string | null;
  /** JSON: the per-file records (at most the monitor's per-transfer file limit). */
  detail: string;
}

/**
 * A TOTP second factor of a web platform user (src/platform/mfa), keyed by the
 * identity's tenant and user ids (no foreign key: the module stands alone).
 */
export interface MfaTotpTable {
  tenant_id: string;
  user_id: string;
  /** `pending` (begun, not yet confirmed by a code) | `confirmed`. */
  status: string;
  /** The shared secret sealed by the server's SecretBox (AES-256-GCM, bound to tenant and user). */
  secret_sealed: string;
  /** The last 30 s time step accepted; codes of that step or earlier are refused. bigint: a string from PostgreSQL. */
  last_step: number | string | null;
  /** Wrong codes in the current window (from failed_window_start), counted before each check. */
  failed_count: Generated<number>;
  failed_window_start: string | null;
  /** Codes refused until then (ISO-8601 UTC), or null. */
  locked_until: string | null;
  created_at: string;
  confirmed_at: string | null;
  updated_at: string;
}

/** A recovery code of a web platform user: never the code, only its salted SHA-256. */
export interface MfaRecoveryCodeTable {
  /** UUID; primary key. */
  id: string;
  tenant_id: string;
  user_id: string;
  /** 16 random bytes, base64. */
  salt: string;
  /** SHA-256 (hex) over a label, tenant, user, salt and the canonical code (src/platform/mfa/codes.ts). */
  code_hash: string;
  created_at: string;
  /** When it was used (each code works once), or null. */
  used_at: string | null;
}

/** A tenant (an organisation) of the web platform (src/platform). */
export interface PlatformTenantTable {
  /** UUID; primary key. */
  id: string;
  /** Unique short name people type at sign-in. */
  slug: string;
  name: string;
  created_at: string;
}

/** A person's account in one tenant; `username` is unique within the tenant. */
export interface PlatformUserTable {
  id: string;
  tenant_id: string;
  username: string;
  display_name: string;
  /** `active` | `disabled`. */
  status: string;
  /** argon2id PHC string (its own salt), or null for an account that cannot sign in locally. */
  password_hash: string | null;
  /** 1: the next sign-in must change the password first. */
  must_change_password: number;
  password_changed_at: string | null;
  /** Failed sign-ins in the current window (from `failed_window_start`). */
  failed_count: number;
  failed_window_start: string | null;
  /** Sign-in refused until then (ISO-8601 UTC), or null. */
  locked_until: string | null;
  created_at: string;
  updated_at: string;
}

/**
 * Failed sign-ins of one account from one source address (migration 0010), for tenants
 * whose policy says `lockoutScope: 'address'`.
 */
export interface PlatformAddressLockoutTable {
  tenant_id: string;
  user_id: string;
  /** The defender's address key: IPv4, or an IPv6 /64. */
  address: string;
  failed_count: number;
  failed_window_start: string | null;
  /** Sign-in of this account from this address refused until then (ISO-8601 UTC), or null. */
  locked_until: string | null;
}

/** The roles that exist (seeded: tenant_admin, member, auditor). */
export interface PlatformRoleTable {
  name: string;
  description: string;
}

export interface PlatformUserRoleTable {
  tenant_id: string;
  user_id: string;
  role: string;
}

export interface PlatformGroupTable {
  id: string;
  tenant_id: string;
  name: string;
  created_at: string;
}

export interface PlatformGroupMemberTable {
  tenant_id: string;
  group_id: string;
  user_id: string;
}

/** A single sign-on identity linked to its platform user (migration 0008). */
export interface PlatformSsoLinkTable {
  tenant_id: string;
  /** OIDC issuer or SAML IdP entity id. */
  issuer: string;
  /** OIDC `sub` or SAML NameID. */
  subject: string;
  user_id: string;
  created_at: string;
}

/** An API token for scripts (migration 0008): only its SHA-256 (hex) is stored. */
export interface PlatformApiTokenTable {
  id: string;
  token_sha256: string;
  tenant_id: string;
  user_id: string;
  name: string;
  /** Space-separated scopes (`read`, `admin`). */
  scopes: string;
  created_at: string;
  expires_at: string;
  last_used_at: string | null;
}

/** A web session. The token itself is never stored, only its SHA-256 (hex). */
export interface PlatformSessionTable {
  /** Public handle (UUID) for listing and ending sessions; not a credential. */
  id: string;
  token_sha256: string;
  tenant_id: string;
  user_id: string;
  created_at: string;
  last_seen_at: string;
  /** Absolute expiry. */
  expires_at: string;
  client_address: string;
  user_agent: string;
  /** `full`, `mfa` (second step due) or `enrol` (may only enrol TOTP); migration 0008. */
  stage: string;
  /** When the user last proved who they are in this session (ISO); null: `created_at`. Migration 0012. */
  authenticated_at: string | null;
}

/**
 * One audit record of the web platform (src/platform/audit-store.ts): `line` is the
 * record exactly as the audit log file would hold it (src/audit/line.ts), chained to the
 * previous seq's line by its SHA-256.
 */
export interface PlatformAuditTable {
  /** 1, 2, 3 …; primary key. bigint: a string from PostgreSQL. */
  seq: number | string;
  /** The record's id (a ULID). */
  id: string;
  ts: string;
  /** The tenant slug the record names (`fields.tenant`), or ''. For filtering only: the line is authoritative. */
  tenant: string;
  type: string;
  severity: string;
  correlation_id: string | null;
  line: string;
}

/** A tenant's password, lockout and session policy (JSON; src/platform/policy.ts). */
export interface PlatformPolicyTable {
  tenant_id: string;
  policy: string;
  updated_at: string;
}

/**
 * An address the IP defender blocks (or blocked: the row stays after the block ends so
 * that the next ban is longer, until it is forgotten or lifted). Migration 0006.
 */
export interface DefenderBlockTable {
  /** The defender's address key: an IPv4 address, or an IPv6 /64 (`2001:db8:0:1::/64`); primary key. */
  address: string;
  /** The score that caused the last block. */
  score: number;
  /** Blocks so far (the ban time grows with it). */
  ban_count: number;
  /** ISO-8601 UTC end of the current or last block. */
  blocked_until: string;
  updated_at: string;
}

/** A tenant's IP allow-list of the web platform (migration 0009; src/platform/allow-list-store.ts). */
export interface PlatformAllowListTable {
  tenant_id: string;
  /** JSON array of normalized CIDR blocks; empty: no list. */
  cidrs: string;
  updated_at: string;
  /** User name of the administrator who saved it. */
  updated_by: string;
}

/** Every table, for `Kysely<TachyonSchema>`. */
/** A tenant's single sign-on configuration (migration 0011; src/platform/sso/config-store.ts). */
export interface PlatformSsoConfigTable {
  tenant_id: string;
  /** The validated configuration as JSON, without `tenantId` and without the OIDC client secret. */
  config: string;
  /** The OIDC client secret sealed by the platform's SecretBox (null without OIDC). */
  oidc_secret_sealed: string | null;
  /** Random, new at every write. */
  revision: string;
  updated_at: string;
}

export interface TachyonSchema {
  transfer_user: TransferUserTable;
  user_key: UserKeyTable;
  access_key: AccessKeyTable;
  transfer: TransferTable;
  defender_block: DefenderBlockTable;
  mfa_totp: MfaTotpTable;
  mfa_recovery_code: MfaRecoveryCodeTable;
  platform_tenant: PlatformTenantTable;
  platform_user: PlatformUserTable;
  platform_role: PlatformRoleTable;
  platform_user_role: PlatformUserRoleTable;
  platform_group: PlatformGroupTable;
  platform_group_member: PlatformGroupMemberTable;
  platform_session: PlatformSessionTable;
  platform_policy: PlatformPolicyTable;
  platform_sso_link: PlatformSsoLinkTable;
  platform_sso_config: PlatformSsoConfigTable;
  platform_api_token: PlatformApiTokenTable;
  platform_audit: PlatformAuditTable;
  platform_allow_list: PlatformAllowListTable;
  platform_address_lockout: PlatformAddressLockoutTable;
}
