/**
 * The route table of the platform's HTTP API: every route with the roles allowed to call
 * it. The application registers routes from this table only (and refuses any other), and
 * test/platform/authz-matrix.test.ts generates the authorization matrix from it — every
 * route × every role × own/other tenant — so a route without a rule cannot ship.
 */
import type { Role } from './model.js';

/** A session's stage (see service.ts `SessionStage`; repeated here so the table stands alone). */
export type RouteStage = 'full' | 'mfa' | 'enrol';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** Who may call a route: anyone (`public`: sign-in only), or a signed-in user holding one of the roles. */
export type RouteAccess = 'public' | readonly Role[];

export interface RouteRule {
  readonly method: HttpMethod;
  /** fastify path (`:id` parameters). */
  readonly url: string;
  readonly access: RouteAccess;
  /**
   * Allowed while the caller's password must be changed (after an administrator's reset,
   * or on expiry). Everything else answers 403 until the password is changed.
   */
  readonly whilePasswordChangeRequired: boolean;
  readonly summary: string;
  /**
   * The session stages that may call the route; default `['full']`. A pending session
   * (`mfa`: second factor due; `enrol`: must enrol TOTP first) gets 403 anywhere else.
   */
  readonly stages?: readonly RouteStage[];
  /** Only with the session cookie, never with an API token (`Authorization: Bearer`). */
  readonly sessionOnly?: boolean;
  /**
   * A sensitive change: a session may call it only while its last proof of identity
   * (sign-in, TOTP step, SSO, POST /api/v1/auth/reauth) is younger than the tenant's
   * `reauthWindowSeconds`; else 403 `REAUTH_REQUIRED`. `'when-enrolled'`: only when the
   * caller has a second factor (enrolling again replaces it). API tokens are not asked.
   */
  readonly reauth?: true | 'when-enrolled';
}

/** Every role: for routes about the caller's own account. */
const ANY_ROLE: readonly Role[] = ['member', 'auditor', 'tenant_admin'];
const READERS: readonly Role[] = ['auditor', 'tenant_admin'];
const ADMIN: readonly Role[] = ['tenant_admin'];

export const ROUTE_TABLE = Object.freeze({
  signIn: { method: 'POST', url: '/api/v1/auth/signin', access: 'public', whilePasswordChangeRequired: true, summary: 'Sign in with tenant, user name and password.' },
  disclaimer: {
    method: 'GET',
    url: '/api/v1/auth/disclaimer/:tenant',
    access: 'public',
    whilePasswordChangeRequired: true,
    summary: 'The tenant’s sign-in disclaimer (null when none, or no such tenant).',
  },
  ssoMethods: {
    method: 'GET',
    url: '/api/v1/auth/sso/:tenant/methods',
    access: 'public',
    whilePasswordChangeRequired: true,
    summary: 'The single sign-on methods the tenant offers (oidc, saml); an empty list when none, or no such tenant.',
  },
  reauth: {
    sessionOnly: true,
    method: 'POST',
    url: '/api/v1/auth/reauth',
    access: ANY_ROLE,
    whilePasswordChangeRequired: true,
    summary: 'Re-authenticate in the current session (current password, and a TOTP code when enrolled) before sensitive changes.',
  },
  ssoOidcStart: {
    method: 'GET',
    url: '/api/v1/auth/sso/:tenant/oidc/start',
    access: 'public',
    whilePasswordChangeRequired: true,
    summary: 'Single sign-on through the tenant’s OpenID Connect provider: 303 to the provider.',
  },
  ssoOidcCallback: {
    method: 'GET',
    url: '/api/v1/auth/sso/oidc/callback',
    access: 'public',
    whilePasswordChangeRequired: true,
    summary: 'The OIDC redirect URI: verifies the answer, opens a session, 303 to /.',
  },
  ssoSamlStart: {
    method: 'GET',
    url: '/api/v1/auth/sso/:tenant/saml/start',
    access: 'public',
    whilePasswordChangeRequired: true,
    summary: 'Single sign-on through the tenant’s SAML identity provider: 303 to the provider.',
  },
  ssoSamlAcs: {
    method: 'POST',
    url: '/api/v1/auth/sso/saml/acs',
    access: 'public',
    whilePasswordChangeRequired: true,
    summary: 'The SAML assertion consumer (form-encoded SAMLResponse, RelayState): opens a session, 303 to /.',
  },
  signInTotp: {
    sessionOnly: true,
    method: 'POST',
    url: '/api/v1/auth/totp',
    access: ANY_ROLE,
    whilePasswordChangeRequired: true,
    stages: ['mfa'],
    summary: 'Second sign-in step: a TOTP code or a recovery code; opens the full session.',
  },
  enrolTotp: {
    reauth: 'when-enrolled',
    sessionOnly: true,
    method: 'POST',
    url: '/api/v1/me/totp/enrol',
    access: ANY_ROLE,
    whilePasswordChangeRequired: true,
    stages: ['full', 'enrol'],
    summary: 'Begin one’s own TOTP enrolment (otpauth URI and secret).',
  },
  confirmTotp: {
    sessionOnly: true,
    method: 'POST',
    url: '/api/v1/me/totp/confirm',
    access: ANY_ROLE,
    whilePasswordChangeRequired: true,
    stages: ['full', 'enrol'],
    summary: 'Confirm the enrolment with a code; returns the recovery codes once.',
  },
  signOut: { sessionOnly: true, method: 'POST', url: '/api/v1/auth/signout', access: ANY_ROLE, whilePasswordChangeRequired: true, stages: ['full', 'mfa', 'enrol'], summary: 'End the current session.' },
  me: { method: 'GET', url: '/api/v1/me', access: ANY_ROLE, whilePasswordChangeRequired: true, stages: ['full', 'mfa', 'enrol'], summary: 'The caller, their tenant and CSRF token.' },
  changePassword: { sessionOnly: true, method: 'POST', url: '/api/v1/me/password', access: ANY_ROLE, whilePasswordChangeRequired: true, summary: 'Change one’s own password (current password required).' },
  listSessions: { method: 'GET', url: '/api/v1/me/sessions', access: ANY_ROLE, whilePasswordChangeRequired: true, summary: 'One’s own active sessions.' },
  endSession: { method: 'DELETE', url: '/api/v1/me/sessions/:id', access: ANY_ROLE, whilePasswordChangeRequired: true, summary: 'End one of one’s own sessions.' },
  createToken: {
    reauth: true,
    method: 'POST',
    url: '/api/v1/me/tokens',
    access: ANY_ROLE,
    whilePasswordChangeRequired: false,
    sessionOnly: true,
    summary: 'Create an API token (scopes read/admin within one’s roles, expiry); shown once.',
  },
  listTokens: { method: 'GET', url: '/api/v1/me/tokens', access: ANY_ROLE, whilePasswordChangeRequired: false, summary: 'One’s own API tokens (never the token).' },
  deleteToken: { method: 'DELETE', url: '/api/v1/me/tokens/:id', access: ANY_ROLE, whilePasswordChangeRequired: false, summary: 'Delete one of one’s own API tokens.' },
  listGroups: { method: 'GET', url: '/api/v1/groups', access: READERS, whilePasswordChangeRequired: false, summary: 'The tenant’s groups and their members.' },
  createGroup: { method: 'POST', url: '/api/v1/groups', access: ADMIN, whilePasswordChangeRequired: false, summary: 'Create a group (a name unique in the tenant).' },
  deleteGroup: { method: 'DELETE', url: '/api/v1/groups/:id', access: ADMIN, whilePasswordChangeRequired: false, summary: 'Delete a group and its memberships.' },
  addGroupMember: { method: 'POST', url: '/api/v1/groups/:id/members', access: ADMIN, whilePasswordChangeRequired: false, summary: 'Add a user of the tenant to a group.' },
  removeGroupMember: { method: 'DELETE', url: '/api/v1/groups/:id/members/:userId', access: ADMIN, whilePasswordChangeRequired: false, summary: 'Remove a user from a group.' },
  listUsers: { method: 'GET', url: '/api/v1/users', access: READERS, whilePasswordChangeRequired: false, summary: 'The tenant’s users.' },
  createUser: { reauth: true, method: 'POST', url: '/api/v1/users', access: ADMIN, whilePasswordChangeRequired: false, summary: 'Create a user with a temporary password.' },
  resetPassword: { reauth: true, method: 'POST', url: '/api/v1/users/:id/reset-password', access: ADMIN, whilePasswordChangeRequired: false, summary: 'Set a temporary password; forces a change at next sign-in.' },
  updateUser: { reauth: true, method: 'PATCH', url: '/api/v1/users/:id', access: ADMIN, whilePasswordChangeRequired: false, summary: 'Change display name, status (disable) or roles.' },
  getPolicy: { method: 'GET', url: '/api/v1/policy', access: READERS, whilePasswordChangeRequired: false, summary: 'The tenant’s password, lockout and session policy.' },
  setPolicy: { reauth: true, method: 'PUT', url: '/api/v1/policy', access: ADMIN, whilePasswordChangeRequired: false, summary: 'Change the tenant’s policy.' },
  auditList: {
    method: 'GET',
    url: '/api/v1/audit',
    access: READERS,
    whilePasswordChangeRequired: false,
    summary: 'The tenant’s audit records (filters from, to, action, actor, outcome; offset, limit; X-Total-Count).',
  },
  auditExport: {
    method: 'GET',
    url: '/api/v1/audit/export',
    access: READERS,
    whilePasswordChangeRequired: false,
    summary: 'Export the tenant’s audit records (format=jsonl|csv, same filters), streamed, with the chain verification (X-Audit-Chain, last line).',
  },
  getAllowList: { method: 'GET', url: '/api/v1/allow-list', access: READERS, whilePasswordChangeRequired: false, summary: 'The tenant’s IP allow-list (CIDR) and the caller’s address.' },
  setAllowList: {
    reauth: true,
    method: 'PUT',
    url: '/api/v1/allow-list',
    access: ADMIN,
    whilePasswordChangeRequired: false,
    summary: 'Replace the tenant’s IP allow-list (empty: none); a list without the caller’s address needs confirmLockout.',
  },
  listBlocks: {
    method: 'GET',
    url: '/api/v1/blocks',
    access: READERS,
    whilePasswordChangeRequired: false,
    summary: 'Addresses the IP defender blocks after failures against this tenant (with whether the tenant may lift them).',
  },
  liftBlock: {
    reauth: true,
    method: 'DELETE',
    url: '/api/v1/blocks/:address',
    access: ADMIN,
    whilePasswordChangeRequired: false,
    summary: 'Lift a block caused only by failures against this tenant (URL-encoded address or IPv6 /64).',
  },
  getSso: { method: 'GET', url: '/api/v1/sso', access: READERS, whilePasswordChangeRequired: false, summary: 'The tenant’s single sign-on configuration (the OIDC client secret only as clientSecretSet; null when none).' },
  setSso: {
    reauth: true,
    method: 'PUT',
    url: '/api/v1/sso',
    access: ADMIN,
    whilePasswordChangeRequired: false,
    sessionOnly: true,
    summary: 'Replace the tenant’s single sign-on configuration (OIDC without clientSecret keeps the stored secret).',
  },
  clearSso: { reauth: true, method: 'DELETE', url: '/api/v1/sso', access: ADMIN, whilePasswordChangeRequired: false, sessionOnly: true, summary: 'Remove the tenant’s single sign-on configuration.' },
} as const satisfies Record<string, RouteRule>);

export type RouteName = keyof typeof ROUTE_TABLE;

/** The rules, as a list. */
export function routeRules(): readonly (RouteRule & { readonly name: RouteName })[] {
  return (Object.keys(ROUTE_TABLE) as RouteName[]).map((name) => ({ name, ...ROUTE_TABLE[name] }));
}

/** Whether a caller holding `roles` may call a route with `access`. */
export function allowed(access: RouteAccess, roles: readonly Role[] | undefined): boolean {
  if (access === 'public') return true;
  return roles !== undefined && roles.some((r) => access.includes(r));
}
