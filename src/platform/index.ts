/** The web platform's identity and access (docs/platform-identity.md). */
export * from './model.js';
export * from './policy.js';
export * from './passwords.js';
export { IdentityRepository, noSuchUser } from './repository.js';
export type { Credentials, Group, NewUserRow, SessionRow, UserPatch } from './repository.js';
export * from './service.js';
export * from './routes.js';
export { createPlatformApp, readCookie, sessionCookie, SESSION_COOKIE, CSRF_HEADER, BODY_LIMIT } from './app.js';
export type { PlatformApp, PlatformAppOptions } from './app.js';
export { DatabaseAuditSink } from './audit-store.js';
export type { DatabaseAuditSinkOptions, StoredAuditRow } from './audit-store.js';
