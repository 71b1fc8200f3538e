/**
 * The seam between the node API's application (TLS, headers, authentication, error
 * mapping: `app.ts`) and the route plugins that other modules contribute (transfer
 * setup, monitoring, files). A plugin receives the fastify instance and this context;
 * it authenticates each request through the context and throws TachyonErrors, which
 * the application maps to HTTP statuses with a sanitized body and a correlation id.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuditSink } from '../audit/index.js';
import type { Permission } from '../core/types.js';
import type { StorageBackend } from '../storage/index.js';

/** A caller authenticated with an access key (or a bearer session made from one). */
export interface AccessKeyPrincipal {
  readonly kind: 'access-key';
  readonly accessKeyId: string;
  /** The key's storage root as configured: `file:///srv/x` or `s3://bucket/prefix`. */
  readonly storageRoot: string;
  readonly permissions: readonly Permission[];
  /** A backend rooted at `storageRoot`; paths the caller sends are relative to it. */
  readonly storage: StorageBackend;
}

/** A node administrator (manages access keys, sees and cancels every transfer). */
export interface NodeAdminPrincipal {
  readonly kind: 'node-admin';
  readonly name: string;
}

export type Principal = AccessKeyPrincipal | NodeAdminPrincipal;

export interface NodeApiContext {
  readonly audit: AuditSink;
  /** Resolves the request's credentials to an access key; throws AUTH_FAILED (401) otherwise. */
  readonly requireAccessKey: (request: FastifyRequest) => Promise<AccessKeyPrincipal>;
  /** Resolves the request's credentials to a node administrator; throws AUTH_FAILED (401) or PERMISSION (403) otherwise. */
  readonly requireAdmin: (request: FastifyRequest) => Promise<NodeAdminPrincipal>;
  /**
   * Resolves the request's credentials to either kind of principal; throws AUTH_FAILED (401)
   * otherwise. Always set by the application (optional so that contexts made elsewhere stay valid).
   */
  readonly authenticate?: (request: FastifyRequest) => Promise<Principal>;
}

/** A group of routes contributed to the node API. */
export type NodeApiPlugin = (app: FastifyInstance, context: NodeApiContext) => void | Promise<void>;
