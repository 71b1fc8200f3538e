/**
 * The platform's HTTP application: `createPlatformApp(options)` builds a fastify
 * instance with the routes of the route table (routes.ts) — nothing else can be
 * registered — and the checks every request passes in order: the session cookie
 * (401), the CSRF token on every state-changing request (403), a pending password change
 * (403), the route's roles (403), and for routes flagged `reauth` a recent proof of
 * identity (403 `REAUTH_REQUIRED`; POST /api/v1/auth/reauth refreshes it). Errors leave in the node API's shape
 * (`{ error: { code, message, correlation_id } }`, src/node-api/http-errors.ts): the
 * code's public message and the request's correlation id, which its audit records carry.
 *
 * Cookies are `__Host-` prefixed, `Secure; HttpOnly; SameSite=Strict; Path=/`. The app
 * serves HTTPS (`https: { key, cert }`); plain HTTP only when `insecureHttp: true` (tests,
 * or behind a TLS-terminating proxy on loopback) — the cookie stays `Secure` either way.
 */
import { refuseBarred, type Defender } from '../defender/index.js';
import type { Socket } from 'node:net';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { newCorrelationId } from '../core/correlation.js';
import { TachyonError, toTachyonError, type ErrorCode } from '../core/errors.js';
import { errorBody, httpStatusOf } from '../node-api/http-errors.js';
import { ID_PATTERN, type PlatformUser } from './model.js';
import { scopeAllows } from './api-tokens.js';
import { allowed, ROUTE_TABLE, type RouteName, type RouteRule } from './routes.js';
import { registerPages } from './pages/pages.js';
import { SignInGate, type SignInGateOptions } from './sign-in-gate.js';
import { adminHandlers, type AdminRouteName } from './admin-routes.js';
import type { AuditLogReader } from './audit-view.js';
import type { TenantAllowLists } from './allow-list-store.js';
import type { IdentityService, Principal, RequestMeta, SignInResult } from './service.js';

export const SESSION_COOKIE = '__Host-tachyon-session';
export const CSRF_HEADER = 'x-csrf-token';
/** Largest request body accepted (bytes). */
export const BODY_LIMIT = 16 * 1024;

export interface PlatformAppOptions {
  readonly identity: IdentityService;
  /** TLS key and certificate (PEM). Required unless `insecureHttp`. */
  readonly https?: { readonly key: string | Buffer; readonly cert: string | Buffer };
  /** Serve plain HTTP (tests; a TLS-terminating proxy on loopback). Cookies remain `Secure`. */
  readonly insecureHttp?: boolean;
  /** Serve the web pages (src/platform/pages: static HTML, one script, one style sheet). Default true. */
  readonly pages?: boolean;
  /**
   * The IP defender shared with SSH and the node API (src/defender): requests from a
   * blocked or not-allowed address are refused (403) before any route runs; failed
   * sign-ins, second-factor codes and bearer tokens are reported to it.
   */
  readonly defender?: Defender;
  /**
   * The sign-in gate (sign-in-gate.ts): password sign-ins from one source address run one
   * at a time by default, so the defender sees each failure before the next check starts
   * and one address cannot fill the argon2 threadpool. Raise `concurrency` only behind a
   * proxy that makes many people share one address.
   */
  readonly signInGate?: SignInGateOptions;
  /** Where the audit views (GET /api/v1/audit, /api/v1/audit/export) read records: the DatabaseAuditSink the identity service writes to. Without it they answer 409. */
  readonly auditLog?: AuditLogReader;
  /**
   * The tenants' IP allow-lists (allow-list-store.ts): GET/PUT /api/v1/allow-list, and
   * every request of a session or API token from outside its tenant's list is refused
   * (403). Give the same object to the identity service as its `addressGate` (sign-ins).
   */
  readonly allowLists?: TenantAllowLists;
  /** Current time for the audit export's summary. Default Date.now. */
  readonly now?: () => number;
}

/** Runs a password check through the sign-in gate (see {@link PlatformAppOptions.signInGate}). */
type Gated = <T>(request: FastifyRequest, fn: () => Promise<T>) => Promise<T>;

export interface PlatformApp {
  readonly app: FastifyInstance;
  /** Every route the fastify instance holds, as `METHOD url` (for the route-table test). */
  registeredRoutes(): readonly string[];
}

/** Statuses beyond the node API's table (src/node-api/http-errors.ts), whose error shape this app shares. */
const PLATFORM_STATUS: Partial<Record<ErrorCode, number>> = { CONFLICT: 409 };

function statusOf(code: ErrorCode): number {
  return PLATFORM_STATUS[code] ?? httpStatusOf(code);
}

/** The body of every error: the node API's `{ error: { code, message, correlation_id } }`. */
function errorReply(reply: FastifyReply, status: number, error: TachyonError, correlationId: string): void {
  void reply.code(status).type('application/json; charset=utf-8').send(errorBody(error, correlationId));
}

export interface Ctx {
  readonly request: FastifyRequest;
  readonly reply: FastifyReply;
  readonly meta: RequestMeta;
  /** Set for every non-public route. */
  readonly principal: Principal | undefined;
  readonly token: string | undefined;
}

export type Handler = (ctx: Ctx) => Promise<unknown>;

function usage(message: string): TachyonError {
  return new TachyonError('USAGE', message, { publicMessage: `Invalid request: ${message}.` });
}

/** Parses a body with a strict schema; a failure names the first bad field (never its value). */
function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = issue?.code === 'unrecognized_keys' ? `unknown field ${issue.keys.join(',').slice(0, 64)}` : `field ${issue?.path.join('.').slice(0, 64) || 'body'}`;
  throw usage(field);
}

/** The value of one cookie from a Cookie header (first occurrence), or undefined. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined || header.length > 8192) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    if (part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

export function sessionCookie(token: string, maxAgeSeconds: number): string {
  return `${SESSION_COOKIE}=${token}; Path=/; Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}; Secure; HttpOnly; SameSite=Strict`;
}

const CLEAR_COOKIE = `${SESSION_COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict`;

const pw = z.string().max(4096);
const SIGNIN = z.object({ tenant: z.string().max(256), username: z.string().max(512), password: pw, acceptDisclaimer: z.boolean().optional() }).strict();
const CHANGE = z.object({ currentPassword: pw, newPassword: pw }).strict();
const NEW_USER = z
  .object({ username: z.string().max(512), displayName: z.string().max(1024).optional(), roles: z.array(z.string().max(64)).max(8).optional(), password: pw })
  .strict();
const SECOND_STEP = z.object({ code: z.string().max(64).optional(), recoveryCode: z.string().max(64).optional() }).strict();
const REAUTH = z.object({ password: pw, code: z.string().max(64).optional(), recoveryCode: z.string().max(64).optional() }).strict();
const CONFIRM = z.object({ code: z.string().max(64) }).strict();
const NEW_TOKEN = z.object({ name: z.string().max(1024).optional(), scopes: z.array(z.string().max(32)).max(4), expiresInDays: z.number().optional() }).strict();
const RESET = z.object({ password: pw }).strict();
const NEW_GROUP = z.object({ name: z.string().max(256) }).strict();
const MEMBER = z.object({ userId: z.string().max(64) }).strict();
const PATCH = z
  .object({ displayName: z.string().max(1024).optional(), status: z.string().max(32).optional(), roles: z.array(z.string().max(64)).max(8).optional() })
  .strict();

function userView(u: PlatformUser): Record<string, unknown> {
  return {
    id: u.id,
    username: u.username,
    displayName: u.displayName,
    status: u.status,
    roles: u.roles,
    mustChangePassword: u.mustChangePassword,
    passwordChangedAt: u.passwordChangedAt,
    lockedUntil: u.lockedUntil,
    createdAt: u.createdAt,
    updatedAt: u.updatedAt,
  };
}

function idParam(request: FastifyRequest): string {
  const id = (request.params as Record<string, unknown>)['id'];
  if (typeof id !== 'string' || !ID_PATTERN.test(id)) throw new TachyonError('NOT_FOUND', 'malformed id', { publicMessage: 'Not found.' });
  return id;
}

function must<T>(v: T | undefined): T {
  if (v === undefined) throw new TachyonError('INTERNAL', 'route without principal');
  return v;
}

/** Sets the cookie of a new session and answers what a signed-in page needs. */
function sessionAnswer(reply: FastifyReply, r: SignInResult): Record<string, unknown> {
  const maxAge = (Date.parse(r.session.expiresAt) - Date.parse(r.session.createdAt)) / 1000;
  void reply.header('set-cookie', sessionCookie(r.token, maxAge));
  return {
    user: userView(r.principal.user),
    tenant: { slug: r.principal.tenant.slug, name: r.principal.tenant.name },
    csrfToken: r.csrfToken,
    passwordChangeRequired: r.principal.passwordChangeRequired,
    // null: a full session; 'totp': send a code to POST /api/v1/auth/totp; 'enrol': enrol TOTP first
    secondFactor: r.principal.stage === 'full' ? null : r.principal.stage === 'mfa' ? 'totp' : 'enrol',
    session: r.session,
  };
}

/** Where the browser goes after a single sign-on. */
export const SSO_LANDING = '/';
/** Largest body of the SAML assertion consumer (a signed response, base64, form-encoded). */
export const ACS_BODY_LIMIT = 1024 * 1024;
/** Largest body of PUT /api/v1/sso (a configuration with up to four IdP certificates). */
export const SSO_CONFIG_BODY_LIMIT = 96 * 1024;
const ACS_FORM = z.object({ SAMLResponse: z.string().max(ACS_BODY_LIMIT), RelayState: z.string().max(1024) });

function tenantParam(request: FastifyRequest): unknown {
  return (request.params as Record<string, unknown>)['tenant'];
}

function handlers(identity: IdentityService, https: boolean, gated: Gated): Record<Exclude<RouteName, AdminRouteName>, Handler> {
  const ssoDone = (reply: FastifyReply, r: SignInResult): undefined => {
    const maxAge = (Date.parse(r.session.expiresAt) - Date.parse(r.session.createdAt)) / 1000;
    void reply.header('set-cookie', sessionCookie(r.token, maxAge)).redirect(SSO_LANDING, 303);
    return undefined;
  };
  return {
    disclaimer: async ({ request }) => ({ disclaimer: await identity.disclaimer(tenantParam(request)) }),
    ssoMethods: async ({ request }) => ({ methods: await identity.ssoMethods(tenantParam(request)) }),
    reauth: async ({ request, meta, principal }) => {
      const body = parseBody(REAUTH, request.body);
      return await gated(request, () => identity.reauthenticate(must(principal), body, meta));
    },
    ssoOidcStart: async ({ request, reply, meta }) => {
      void reply.redirect(await identity.beginSso('oidc', tenantParam(request), meta), 303);
      return undefined;
    },
    ssoOidcCallback: async ({ request, reply, meta, token }) => {
      // the URL as the browser requested it; the service compares its origin and path with the configured redirect URI
      const host = String(request.headers.host ?? 'invalid.invalid').slice(0, 256);
      let url: URL;
      try {
        url = new URL(request.url, `${https ? 'https' : 'http'}://${host}`);
      } catch (err) {
        throw new TachyonError('SSO_FAILED', 'callback URL does not parse', { cause: err, details: { reason: 'bad-request' } });
      }
      return ssoDone(reply, await identity.completeOidcSignIn(url, meta, token));
    },
    ssoSamlStart: async ({ request, reply, meta }) => {
      void reply.redirect(await identity.beginSso('saml', tenantParam(request), meta), 303);
      return undefined;
    },
    ssoSamlAcs: async ({ request, reply, meta, token }) => {
      const r = ACS_FORM.safeParse(request.body ?? {});
      if (!r.success) throw new TachyonError('SSO_FAILED', 'ACS post without SAMLResponse and RelayState', { details: { reason: 'bad-request' } });
      return ssoDone(reply, await identity.completeSamlSignIn(r.data.SAMLResponse, r.data.RelayState, meta, token));
    },
    signIn: async ({ request, reply, meta, token }) => {
      const body = parseBody(SIGNIN, request.body);
      return sessionAnswer(reply, await gated(request, () => identity.signIn(body, meta, token)));
    },
    signInTotp: async ({ request, reply, meta, principal }) => {
      const body = parseBody(SECOND_STEP, request.body);
      const r = await identity.completeSecondFactor(must(principal), body, meta);
      return { ...sessionAnswer(reply, r), ...(r.recoveryCodesLeft !== undefined ? { recoveryCodesLeft: r.recoveryCodesLeft } : {}) };
    },
    enrolTotp: async ({ meta, principal }) => {
      const e = await identity.beginTotpEnrolment(must(principal), meta);
      return { uri: e.uri, secret: e.secret, secretGrouped: e.secretGrouped, expiresAt: e.expiresAt };
    },
    confirmTotp: async ({ request, reply, meta, principal }) => {
      const body = parseBody(CONFIRM, request.body);
      const r = await identity.confirmTotpEnrolment(must(principal), body.code, meta);
      return { recoveryCodes: r.recoveryCodes, ...(r.session ? sessionAnswer(reply, r.session) : {}) };
    },
    signOut: async ({ reply, meta, principal }) => {
      await identity.signOut(must(principal), meta);
      void reply.header('set-cookie', CLEAR_COOKIE).code(204);
      return undefined;
    },
    me: async ({ principal, token }) => {
      const p = must(principal);
      return {
        user: userView(p.user),
        tenant: { slug: p.tenant.slug, name: p.tenant.name },
        // null for an API-token caller (no session: no CSRF token needed or given)
        csrfToken: token === undefined || p.apiToken ? null : identity.csrfFor(token),
        passwordChangeRequired: p.passwordChangeRequired,
        secondFactor: p.stage === 'full' ? null : p.stage === 'mfa' ? 'totp' : 'enrol',
        sessionId: p.sessionId,
        // when the session last proved its user's identity, and how it can again (POST /api/v1/auth/reauth, or SSO)
        authenticatedAt: p.authenticatedAt ?? null,
        reauthMethod: p.apiToken ? null : await identity.reauthMethod(p),
      };
    },
    changePassword: async ({ request, reply, meta, principal }) => {
      const body = parseBody(CHANGE, request.body);
      await identity.changeOwnPassword(must(principal), body.currentPassword, body.newPassword, meta);
      void reply.code(204);
      return undefined;
    },
    listSessions: async ({ principal }) => {
      const p = must(principal);
      const sessions = await identity.listOwnSessions(p);
      return { sessions: sessions.map((s) => ({ ...s, current: s.id === p.sessionId })) };
    },
    endSession: async ({ request, reply, meta, principal }) => {
      const p = must(principal);
      const id = idParam(request);
      await identity.endOwnSession(p, id, meta);
      if (id === p.sessionId) void reply.header('set-cookie', CLEAR_COOKIE);
      void reply.code(204);
      return undefined;
    },
    createToken: async ({ request, reply, meta, principal }) => {
      const body = parseBody(NEW_TOKEN, request.body);
      void reply.code(201);
      return { token: await identity.createApiToken(must(principal), body, meta) };
    },
    listTokens: async ({ principal }) => ({ tokens: await identity.listApiTokens(must(principal)) }),
    deleteToken: async ({ request, reply, meta, principal }) => {
      await identity.revokeApiToken(must(principal), idParam(request), meta);
      void reply.code(204);
      return undefined;
    },
    listGroups: async ({ principal }) => ({ groups: await identity.listGroups(must(principal)) }),
    createGroup: async ({ request, reply, meta, principal }) => {
      const body = parseBody(NEW_GROUP, request.body);
      const group = await identity.createGroup(must(principal), body.name, meta);
      void reply.code(201);
      return { group };
    },
    deleteGroup: async ({ request, reply, meta, principal }) => {
      await identity.deleteGroup(must(principal), idParam(request), meta);
      void reply.code(204);
      return undefined;
    },
    addGroupMember: async ({ request, reply, meta, principal }) => {
      const id = idParam(request);
      const body = parseBody(MEMBER, request.body);
      if (!ID_PATTERN.test(body.userId)) throw new TachyonError('NOT_FOUND', 'malformed user id', { publicMessage: 'No such group or user.' });
      await identity.addGroupMember(must(principal), id, body.userId, meta);
      void reply.code(204);
      return undefined;
    },
    removeGroupMember: async ({ request, reply, meta, principal }) => {
      const id = idParam(request);
      const userId = (request.params as Record<string, unknown>)['userId'];
      if (typeof userId !== 'string' || !ID_PATTERN.test(userId)) throw new TachyonError('NOT_FOUND', 'malformed user id', { publicMessage: 'No such group or user.' });
      await identity.removeGroupMember(must(principal), id, userId, meta);
      void reply.code(204);
      return undefined;
    },
    listUsers: async ({ principal }) => ({ users: (await identity.listUsers(must(principal))).map(userView) }),
    createUser: async ({ request, reply, meta, principal }) => {
      const body = parseBody(NEW_USER, request.body);
      const user = await identity.createUser(must(principal), body, meta);
      void reply.code(201);
      return { user: userView(user) };
    },
    resetPassword: async ({ request, meta, principal }) => {
      const id = idParam(request);
      const body = parseBody(RESET, request.body);
      return { user: userView(await identity.adminResetPassword(must(principal), id, body.password, meta)) };
    },
    updateUser: async ({ request, meta, principal }) => {
      const id = idParam(request);
      const body = parseBody(PATCH, request.body);
      return { user: userView(await identity.updateUser(must(principal), id, body, meta)) };
    },
    getPolicy: async ({ principal }) => ({ policy: await identity.policy(must(principal)) }),
    setPolicy: async ({ request, meta, principal }) => ({ policy: await identity.setPolicy(must(principal), request.body ?? {}, meta) }),
    getSso: async ({ principal }) => ({ sso: await identity.ssoConfig(must(principal)) }),
    setSso: async ({ request, meta, principal }) => ({ sso: await identity.setSsoConfig(must(principal), request.body ?? {}, meta) }),
    clearSso: async ({ reply, meta, principal }) => {
      await identity.clearSsoConfig(must(principal), meta);
      void reply.code(204);
      return undefined;
    },
  };
}

/** Maps anything thrown while serving a request to a TachyonError (fastify's own errors included). */
function translate(err: unknown): { error: TachyonError; status: number } {
  if (err instanceof TachyonError) return { error: err, status: statusOf(err.code) };
  const fe = err as Partial<FastifyError>;
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { error: new TachyonError('TOO_LARGE', 'body too large', { cause: err }), status: 413 };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return {
        error: new TachyonError('USAGE', 'unsupported media type', { cause: err, publicMessage: 'Invalid request: send application/json.' }),
        status: 415,
      };
    default:
      break;
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { error: new TachyonError('USAGE', fe.message ?? 'bad request', { cause: err, publicMessage: 'Invalid request: the body is malformed.' }), status: 400 };
  }
  return { error: toTachyonError(err), status: 500 };
}

function metaOf(request: FastifyRequest): RequestMeta {
  return {
    clientAddress: request.socket.remoteAddress ?? request.ip,
    userAgent: String(request.headers['user-agent'] ?? '').slice(0, 256),
    correlationId: request.id,
  };
}

/**
 * Builds the platform application (not yet listening: call `app.listen`).
 * @throws TachyonError `CONFIG` without `https` unless `insecureHttp`.
 */
export function createPlatformApp(options: PlatformAppOptions): PlatformApp {
  if (!options.https && options.insecureHttp !== true) {
    throw new TachyonError('CONFIG', 'the platform serves HTTPS: give a TLS key and certificate (or insecureHttp for tests)');
  }
  // assigned below, once the identity service is at hand; frameworkErrors needs it first
  let refused: (request: FastifyRequest, status: number, code: string, reason?: unknown) => void = () => undefined;
  const common = {
    bodyLimit: BODY_LIMIT,
    logger: false,
    requestIdHeader: false as const,
    genReqId: () => newCorrelationId(),
    return503OnClosing: true,
    routerOptions: { maxParamLength: 200 },
    // a malformed URL or an over-long path parameter: a sanitized answer, never the URL echoed back
    frameworkErrors: (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
      const status = error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 404 : 400;
      refused(request, status, status === 404 ? 'NOT_FOUND' : 'USAGE', error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'long-parameter' : 'bad-url');
      const e =
        status === 404
          ? new TachyonError('NOT_FOUND', error.message, { publicMessage: 'Not found.' })
          : new TachyonError('USAGE', error.message, { publicMessage: 'Invalid request: the URL is malformed.' });
      errorReply(reply, status, e, request.id);
    },
  };
  const app: FastifyInstance = options.https
    ? (Fastify({ ...common, https: { key: options.https.key, cert: options.https.cert, minVersion: 'TLSv1.2' } }) as unknown as FastifyInstance)
    : Fastify(common);
  // JSON only: a form or text post (what a cross-site page can send without a preflight) is 415
  app.removeContentTypeParser('text/plain');
  const identity = options.identity;
  /** The principal of each authenticated request, for the refusal records. */
  const principals = new WeakMap<FastifyRequest, Principal>();
  refused = (request, status, code, reason) => {
    try {
      identity.recordRefusal(metaOf(request), {
        route: `${request.method} ${request.routeOptions.url ?? '(none)'}`.slice(0, 200),
        status,
        code,
        ...(typeof reason === 'string' ? { reason: reason.slice(0, 64) } : {}),
        ...(principals.has(request) ? { principal: principals.get(request) as Principal } : {}),
      });
    } catch {
      // the answer goes out even if the audit sink fails; the sink reports its own failures
    }
  };
  const table = ROUTE_TABLE as Record<RouteName, RouteRule>;
  const known = new Set(Object.values(table).map((r) => `${r.method} ${r.url}`));
  const registered: string[] = [];
  // the static pages (GET, no data) are registered before the route-table hook: they are not API routes
  if (options.pages !== false) registerPages(app);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const m of methods) {
      if (m === 'HEAD' || m === 'OPTIONS') continue;
      const key = `${m} ${route.url}`;
      if (!known.has(key)) throw new TachyonError('INTERNAL', `route ${key} has no rule in the platform route table`);
      registered.push(key);
    }
  });

  const defender = options.defender;
  if (defender !== undefined) {
    // A blocked address's new connections end at accept: no TLS handshake, no HTTP parsing,
    // no audit record per request (the block itself is audited) — a blocked guesser costs
    // the server next to nothing. On a connection opened before the block, a request is
    // answered 403 "Access denied." once and the connection closes. An address outside the
    // allow-lists (a configuration matter, not abuse) gets 403 on every request.
    // (ahead of the server's own connection listeners — for HTTPS the one that wraps the
    // socket in TLS — which then never see it)
    const server = app.server;
    const own = server.listeners('connection') as Array<(socket: Socket) => void>;
    server.removeAllListeners('connection');
    server.on('connection', (socket: Socket) => {
      const address = socket.remoteAddress;
      if (address !== undefined && defender.isBlocked(address)) {
        socket.destroy();
        return;
      }
      for (const listener of own) listener.call(server, socket);
    });
    app.addHook('onRequest', async (request) => refuseBarred(defender, request.ip));
  }

  app.addHook('onSend', (request, reply, payload, done) => {
    void reply
      .header('cache-control', 'no-store')
      .header('x-content-type-options', 'nosniff')
      .header('content-security-policy', "default-src 'none'; frame-ancestors 'none'")
      .header('referrer-policy', 'no-referrer')
      .header('x-correlation-id', request.id);
    if (options.https) void reply.header('strict-transport-security', 'max-age=31536000');
    done(null, payload);
  });

  /** Requests whose failure the sign-in gate has already reported to the defender. */
  const reported = new WeakSet<FastifyRequest>();
  const gate = new SignInGate(options.signInGate);
  const gated: Gated = (request, fn) =>
    gate.run(request.ip, async () => {
      if (defender === undefined) return fn();
      // blocked while it waited for its turn: refused before the password check
      refuseBarred(defender, request.ip);
      try {
        return await fn();
      } catch (err) {
        // reported before the next request from this address gets its turn
        if (err instanceof TachyonError && err.code === 'AUTH_FAILED') {
          defender.report(request.ip, 'auth-failed');
          reported.add(request);
        }
        throw err;
      }
    });

  app.setErrorHandler((err, request, reply) => {
    const { error, status } = translate(err);
    // failed sign-ins, wrong second-factor codes and bad bearer tokens count against the address
    if (defender !== undefined && !reported.has(request) && (error.code === 'AUTH_FAILED' || error.code === 'MFA_INVALID' || error.code === 'SSO_FAILED')) {
      defender.report(request.ip, 'auth-failed');
    }
    // more sign-ins at once from one address than the gate lets wait
    if (defender !== undefined && error.code === 'BUSY' && error.details?.['reason'] === 'waiting') defender.report(request.ip, 'rate-limited');
    if (error.details?.['audited'] !== true) refused(request, status, error.code, error.details?.['reason']);
    // a blocked address's connection closes after this answer (its new ones end at accept)
    if (defender !== undefined && defender.isBlocked(request.ip)) void reply.header('connection', 'close');
    errorReply(reply, status, error, request.id);
  });
  app.setNotFoundHandler((request, reply) => {
    refused(request, 404, 'NOT_FOUND', 'no-route');
    errorReply(reply, 404, new TachyonError('NOT_FOUND', 'no such route', { publicMessage: 'Not found.' }), request.id);
  });

  const impl: Record<RouteName, Handler> = {
    ...handlers(identity, options.https !== undefined, gated),
    ...adminHandlers({ identity, auditLog: options.auditLog, allowLists: options.allowLists, defender: options.defender, now: options.now ?? Date.now }),
  };
  for (const name of Object.keys(table) as RouteName[]) {
    const rule = table[name];
    const handler = impl[name];
    const route = {
      method: rule.method,
      url: rule.url,
      handler: async (request: FastifyRequest, reply: FastifyReply) => {
        const meta = metaOf(request);
        const token = readCookie(request.headers.cookie, SESSION_COOKIE);
        const authorization = request.headers.authorization;
        let principal: Principal | undefined;
        if (rule.access !== 'public' && typeof authorization === 'string' && /^bearer /i.test(authorization)) {
          // an API token in place of the cookie: no CSRF (a browser never sends this header by itself)
          principal = await identity.authenticateBearer(authorization.slice(7).trim(), meta);
          principals.set(request, principal);
          const scopes = principal.apiToken?.scopes ?? [];
          if (rule.sessionOnly === true || !scopeAllows(scopes, rule.method)) {
            throw new TachyonError('PERMISSION', `API token may not call ${rule.method} ${rule.url}`, {
              publicMessage: rule.sessionOnly === true ? 'Refused: sign in to do this.' : 'Permission denied: the token’s scopes do not allow this.',
              details: { reason: 'token-scope' },
            });
          }
        } else if (rule.access !== 'public') {
          principal = await identity.authenticate(token, meta);
          principals.set(request, principal);
          if (rule.method !== 'GET') {
            const csrf = request.headers[CSRF_HEADER];
            if (!identity.checkCsrf(token as string, typeof csrf === 'string' ? csrf : undefined)) {
              throw new TachyonError('PERMISSION', 'missing or wrong CSRF token', {
                publicMessage: 'Refused: the CSRF token is missing or wrong.',
                details: { reason: 'csrf' },
              });
            }
          }
        }
        if (principal) {
          if (options.allowLists !== undefined && !(await options.allowLists.admits(principal.tenant, meta.clientAddress))) {
            throw new TachyonError('PERMISSION', `request from ${meta.clientAddress} outside the tenant's allow-list`, {
              publicMessage: 'Access denied.',
              details: { reason: 'address-not-allowed-tenant' },
            });
          }
          if (!(rule.stages ?? ['full']).includes(principal.stage)) {
            throw new TachyonError('PERMISSION', `session stage ${principal.stage} may not call ${rule.method} ${rule.url}`, {
              publicMessage: principal.stage === 'full' ? 'Permission denied.' : 'Complete the second sign-in step first.',
              details: { reason: `stage-${principal.stage}` },
            });
          }
          if (principal.passwordChangeRequired && !rule.whilePasswordChangeRequired) {
            throw new TachyonError('PERMISSION', 'password change required', {
              publicMessage: 'Change your password first.',
              details: { reason: 'password-change-required' },
            });
          }
          if (!allowed(rule.access, principal.user.roles)) {
            throw new TachyonError('PERMISSION', `role not allowed for ${rule.method} ${rule.url}`, {
              publicMessage: 'Permission denied.',
              details: { reason: 'role' },
            });
          }
          // a sensitive change: the session's last proof of identity must be recent (REAUTH_REQUIRED, 403)
          if (rule.reauth !== undefined) await identity.requireRecentProof(principal, rule.reauth === true ? 'always' : 'when-enrolled');
        }
        const out = await handler({ request, reply, meta, principal, token });
        if (out === undefined) return reply.send();
        return out;
      },
    };
    if (name !== 'ssoSamlAcs') {
      app.route(name === 'setSso' ? { ...route, bodyLimit: SSO_CONFIG_BODY_LIMIT } : route);
      continue;
    }
    // The SAML assertion consumer is the one route that takes a form post, and a
    // cross-site one (the IdP's auto-submitted form): the form parser exists in its own
    // context only, and it has no CSRF token to check (no session exists yet). What binds
    // the post to this browser's sign-in is the IdP's signature over the response and its
    // InResponseTo, which must name the AuthnRequest this server issued and stored under the
    // RelayState (taken once, 10 minutes) — see docs/platform-sso.md.
    void app.register((child, _opts, done) => {
      child.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: ACS_BODY_LIMIT }, (_req, body, parsed) => {
        parsed(null, Object.fromEntries(new URLSearchParams(body as string)));
      });
      child.route({ ...route, bodyLimit: ACS_BODY_LIMIT });
      done();
    });
  }
  return { app, registeredRoutes: () => [...registered] };
}
