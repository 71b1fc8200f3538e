/**
 * Transfer setup: `POST /files/upload_setup` and `POST /files/download_setup` turn an
 * access key's request for some paths into a transfer spec (Aspera field names) with a
 * transfer token bound to the key, the direction, the exact paths and an expiry. The
 * transfer server accepts the token for its shared transfer user (docs/transfer-tokens.md).
 *
 * Issuing costs one AES-256-GCM seal: no hashing, no I/O besides the audit record.
 */
import path from 'node:path/posix';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { TachyonError } from '../core/errors.js';
import { CIPHERS, POLICIES, type CipherName, type RatePolicy } from '../core/types.js';
import { normalizeStoragePath } from '../storage/index.js';
import type { TransferDirection, TransferTokenClaims, TransferTokenCodec } from '../server/transfer-token.js';
import type { AccessKeyPrincipal, NodeApiContext, NodeApiPlugin } from './context.js';
import { apiSchema } from './openapi.js';

/** Where and how clients reach this node's transfer server. */
export interface TransferEndpoint {
  /** Host name or address clients connect to. */
  readonly host: string;
  readonly sshPort: number;
  /** UDP data port (the same number as the SSH port on a Tachyon server). */
  readonly udpPort: number;
  /** The shared transfer user that logs in with tokens. */
  readonly user: string;
  /** `SHA256:…` of the server's host key: clients pin it. */
  readonly hostKeyFingerprint: string;
  readonly cipher?: CipherName;
  readonly ratePolicy?: RatePolicy;
  /** kbit/s */
  readonly targetRateKbps?: number;
  readonly minRateKbps?: number;
}

export interface TransferSetupOptions extends TransferEndpoint {
  codec: TransferTokenCodec;
  /** Token lifetime, ms (default: the codec's, 5 minutes). */
  ttlMs?: number;
}

export const MAX_TRANSFER_REQUESTS = 100;
export const MAX_PATHS_PER_REQUEST = 256;
export const SETUP_BODY_LIMIT = 512 * 1024;

const str = z.string().max(4096);
const PathSchema = z.strictObject({ source: str.optional(), destination: str.optional() });
const RequestSchema = z.strictObject({
  paths: z.array(PathSchema).min(1).max(MAX_PATHS_PER_REQUEST),
  destination_root: str.optional(),
  source_root: str.optional(),
  cipher: z.enum(CIPHERS).optional(),
  rate_policy: z.enum(POLICIES).optional(),
  target_rate_kbps: z.number().int().positive().max(1e9).optional(),
  min_rate_kbps: z.number().int().nonnegative().max(1e9).optional(),
});
export const SetupBodySchema = z.strictObject({
  transfer_requests: z.array(z.strictObject({ transfer_request: RequestSchema })).min(1).max(MAX_TRANSFER_REQUESTS),
});
export type TransferSetupBody = z.infer<typeof SetupBodySchema>;
type TransferRequest = z.infer<typeof RequestSchema>;

/** One transfer spec (Aspera's field names). */
export interface TransferSpec {
  remote_host: string;
  remote_user: string;
  ssh_port: number;
  fasp_port: number;
  /** `send`: the client uploads; `receive`: the client downloads. */
  direction: 'send' | 'receive';
  paths: { source?: string; destination?: string }[];
  destination_root?: string;
  source_root?: string;
  token: string;
  cipher: CipherName;
  rate_policy: RatePolicy;
  target_rate_kbps: number;
  min_rate_kbps: number;
  host_key_fingerprint: string;
}

function usage(message: string, publicMessage: string, details?: Record<string, unknown>): TachyonError {
  return new TachyonError('USAGE', message, { publicMessage, ...(details ? { details } : {}) });
}

/** A path under the key's root in the jail's form (`/a/b`); traversal and odd characters refused. */
function storagePath(text: string | undefined, field: string): string {
  try {
    return `/${normalizeStoragePath(text ?? '')}`;
  } catch (err) {
    const reason = (err as TachyonError).details?.['reason'];
    throw new TachyonError('PATH_INVALID', `${field}: ${(err as Error).message}`, { publicMessage: `Invalid path in ${field}.`, details: { field, ...(reason !== undefined ? { reason } : {}) } });
  }
}

/** The server-side paths one request grants, in the jail's form. */
export function grantedPaths(direction: TransferDirection, r: TransferRequest): string[] {
  const out: string[] = [];
  for (const [i, p] of r.paths.entries()) {
    if (direction === 'upload') {
      const root = storagePath(r.destination_root, 'destination_root');
      const name = p.destination ?? (p.source !== undefined ? path.basename(p.source.replace(/\/+$/, '')) : undefined);
      if (name === undefined || name === '') throw usage(`paths[${i}]: no destination`, `paths[${i}] needs a destination (or a source to name it).`);
      const full = storagePath(path.join(root, name.startsWith('/') ? name.slice(1) : name), `paths[${i}].destination`);
      // `a/../b` is refused by the normalization above; also refuse a destination that names the root itself
      if (full === '/') throw usage(`paths[${i}]: destination is the root`, `paths[${i}].destination may not be the root.`);
      // the raw destination is checked too, so that `..` anywhere is refused, not folded by join
      storagePath(p.destination ?? '', `paths[${i}].destination`);
      out.push(full);
    } else {
      const root = storagePath(r.source_root, 'source_root');
      if (p.source === undefined || p.source === '') throw usage(`paths[${i}]: no source`, `paths[${i}] needs a source.`);
      storagePath(p.source, `paths[${i}].source`);
      out.push(storagePath(path.join(root, p.source), `paths[${i}].source`));
    }
  }
  return [...new Set(out)];
}

/** Builds the transfer spec of one request for an access key. */
export function buildTransferSpec(
  o: TransferSetupOptions,
  principal: Pick<AccessKeyPrincipal, 'accessKeyId' | 'storageRoot' | 'permissions'>,
  direction: TransferDirection,
  r: TransferRequest,
): { spec: TransferSpec; claims: TransferTokenClaims } {
  const need = direction === 'upload' ? 'write' : 'read';
  if (!principal.permissions.includes(need)) {
    throw new TachyonError('PERMISSION', `access key ${principal.accessKeyId} lacks '${need}' for ${direction}_setup`, {
      publicMessage: `This access key may not ${direction === 'upload' ? 'upload' : 'download'}.`,
      details: { permission: need },
    });
  }
  if (r.destination_root !== undefined) storagePath(r.destination_root, 'destination_root');
  if (r.source_root !== undefined) storagePath(r.source_root, 'source_root');
  const paths = grantedPaths(direction, r);
  const { token, claims } = o.codec.issue({ accessKeyId: principal.accessKeyId, storageRoot: principal.storageRoot, direction, paths, ...(o.ttlMs !== undefined ? { ttlMs: o.ttlMs } : {}) });
  const target = r.target_rate_kbps ?? o.targetRateKbps ?? 10_000_000;
  const spec: TransferSpec = {
    remote_host: o.host,
    remote_user: o.user,
    ssh_port: o.sshPort,
    fasp_port: o.udpPort,
    direction: direction === 'upload' ? 'send' : 'receive',
    paths: r.paths.map((p) => ({ ...(p.source !== undefined ? { source: p.source } : {}), ...(p.destination !== undefined ? { destination: p.destination } : {}) })),
    ...(direction === 'upload' ? { destination_root: storagePath(r.destination_root, 'destination_root') } : { source_root: storagePath(r.source_root, 'source_root') }),
    token,
    cipher: r.cipher ?? o.cipher ?? 'aes-128-gcm',
    rate_policy: r.rate_policy ?? o.ratePolicy ?? 'fair',
    target_rate_kbps: target,
    min_rate_kbps: Math.min(r.min_rate_kbps ?? o.minRateKbps ?? 0, target),
    host_key_fingerprint: o.hostKeyFingerprint,
  };
  return { spec, claims };
}

function parseBody(body: unknown): TransferSetupBody {
  const r = SetupBodySchema.safeParse(body);
  if (r.success) return r.data;
  const iss = r.error.issues[0]!;
  const where = iss.path.map(String).join('.') || '(body)';
  const what = iss.code === 'unrecognized_keys' ? `unknown field ${iss.keys.join(', ')}` : iss.message;
  throw usage(`transfer setup body: ${where}: ${what}`, `Invalid request: ${where}: ${what}.`.slice(0, 300));
}

/** The two routes, as a node API plugin. */
export function transferSetupPlugin(o: TransferSetupOptions): NodeApiPlugin {
  return (app: FastifyInstance, context: NodeApiContext) => {
    const route = (direction: TransferDirection) => async (request: FastifyRequest) => {
      const principal = await context.requireAccessKey(request);
      const body = parseBody(request.body);
      const specs = body.transfer_requests.map(({ transfer_request }) => buildTransferSpec(o, principal, direction, transfer_request));
      for (const { claims } of specs) {
        context.audit.record({
          type: 'transfer.authorize',
          component: 'api',
          fields: {
            clientAddress: request.ip,
            accessKeyId: principal.accessKeyId,
            direction,
            paths: claims.paths.slice(0, 100),
            grantId: claims.id,
            expiresAt: new Date(claims.expiresAt).toISOString(),
          },
        });
      }
      return { transfer_specs: specs.map(({ spec }) => ({ transfer_spec: spec })) };
    };
    // the body is validated by SetupBodySchema (zod) in the handler; the schema here only documents the route (OpenAPI)
    app.post('/files/upload_setup', { bodyLimit: SETUP_BODY_LIMIT, schema: apiSchema({ summary: 'A transfer spec with a token to upload the given paths', tags: ['transfers'], auth: 'key' }) }, route('upload'));
    app.post('/files/download_setup', { bodyLimit: SETUP_BODY_LIMIT, schema: apiSchema({ summary: 'A transfer spec with a token to download the given paths', tags: ['transfers'], auth: 'key' }) }, route('download'));
  };
}
