/**
 * `tachyon send|recv --transfer-spec FILE`: reads a transfer spec made by a node's
 * `/files/upload_setup` or `/files/download_setup` (the whole answer, one
 * `transfer_spec`, or its content; `-` reads standard input) and turns it into what a
 * transfer needs: host, port, user, token, pinned host key, sources and destination.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path/posix';
import { z } from 'zod';
import { TachyonError } from '../core/errors.js';
import { CIPHERS, POLICIES, type CipherName, type RatePolicy } from '../core/types.js';

const SpecSchema = z.object({
  remote_host: z.string().min(1).max(255),
  remote_user: z.string().min(1).max(256),
  ssh_port: z.number().int().min(1).max(65535),
  fasp_port: z.number().int().min(1).max(65535).optional(),
  direction: z.enum(['send', 'receive']),
  paths: z.array(z.object({ source: z.string().optional(), destination: z.string().optional() })).min(1),
  destination_root: z.string().optional(),
  source_root: z.string().optional(),
  token: z.string().min(1).max(16_384),
  cipher: z.enum(CIPHERS).optional(),
  rate_policy: z.enum(POLICIES).optional(),
  target_rate_kbps: z.number().positive().optional(),
  min_rate_kbps: z.number().nonnegative().optional(),
  host_key_fingerprint: z.string().min(1),
});
export type ClientTransferSpec = z.infer<typeof SpecSchema>;

/** What a transfer made from a spec needs. */
export interface SpecTransfer {
  host: string;
  port: number;
  user: string;
  token: string;
  hostKeyFingerprint: string;
  sources: string[];
  dest: string;
  cipher?: CipherName;
  policy?: RatePolicy;
  targetBps?: number;
  minBps?: number;
}

/** Reads and validates a spec from FILE (or standard input for `-`). */
export function readTransferSpec(file: string): ClientTransferSpec {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new TachyonError('USAGE', `cannot read the transfer spec ${file}: ${(err as Error).message}`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new TachyonError('USAGE', `the transfer spec ${file} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  // accept the whole answer, one element of it, or the spec itself
  const r = raw as { transfer_specs?: unknown; transfer_spec?: unknown } | null;
  if (r && typeof r === 'object' && Array.isArray(r.transfer_specs)) {
    if (r.transfer_specs.length !== 1) throw new TachyonError('USAGE', `the transfer spec ${file} holds ${r.transfer_specs.length} specs; give one`);
    raw = (r.transfer_specs[0] as { transfer_spec?: unknown } | undefined)?.transfer_spec;
  } else if (r && typeof r === 'object' && r.transfer_spec !== undefined) raw = r.transfer_spec;
  const parsed = SpecSchema.safeParse(raw);
  if (!parsed.success) {
    const iss = parsed.error.issues[0]!;
    throw new TachyonError('USAGE', `the transfer spec ${file} is invalid: ${iss.path.map(String).join('.') || '(spec)'}: ${iss.message}`);
  }
  return parsed.data;
}

/** The transfer a spec describes; `args`: send's local SOURCEs (default: the spec's sources), recv's DEST (default `.`). */
export function specTransfer(op: 'send' | 'recv', spec: ClientTransferSpec, args: readonly string[]): SpecTransfer {
  const want = op === 'send' ? 'send' : 'receive';
  if (spec.direction !== want) {
    throw new TachyonError('USAGE', `the transfer spec is for ${spec.direction === 'send' ? 'an upload (tachyon send)' : 'a download (tachyon recv)'}, not tachyon ${op}`);
  }
  let sources: string[];
  let dest: string;
  if (op === 'send') {
    const root = spec.destination_root ?? '/';
    sources = args.length > 0 ? [...args] : spec.paths.map((p, i) => {
      if (p.source === undefined) throw new TachyonError('USAGE', `the transfer spec's paths[${i}] has no source: name the local files after the spec`);
      return p.source;
    });
    const renamed = spec.paths.filter((p) => p.destination !== undefined && p.source !== undefined && p.destination !== path.basename(p.source.replace(/\/+$/, '')));
    if (renamed.length > 0 && (spec.paths.length > 1 || sources.length > 1)) {
      throw new TachyonError('USAGE', 'a transfer spec that renames files is used one path at a time');
    }
    const one = spec.paths[0]!;
    dest = renamed.length === 1 || (args.length > 0 && one.destination !== undefined && sources.length === 1) ? path.join(root, one.destination!) : `${root.replace(/\/+$/, '')}/`;
  } else {
    if (args.length > 1) throw new TachyonError('USAGE', 'usage: tachyon recv --transfer-spec FILE [DEST]');
    const root = spec.source_root ?? '/';
    sources = spec.paths.map((p, i) => {
      if (p.source === undefined) throw new TachyonError('USAGE', `the transfer spec's paths[${i}] has no source`);
      return path.join(root, p.source);
    });
    dest = args[0] ?? (spec.paths.length === 1 && spec.paths[0]!.destination !== undefined ? spec.paths[0]!.destination : '.');
  }
  return {
    host: spec.remote_host,
    port: spec.ssh_port,
    user: spec.remote_user,
    token: spec.token,
    hostKeyFingerprint: spec.host_key_fingerprint,
    sources,
    dest,
    ...(spec.cipher ? { cipher: spec.cipher } : {}),
    ...(spec.rate_policy ? { policy: spec.rate_policy } : {}),
    ...(spec.target_rate_kbps !== undefined ? { targetBps: Math.round(spec.target_rate_kbps * 1000) } : {}),
    ...(spec.min_rate_kbps !== undefined ? { minBps: Math.round(spec.min_rate_kbps * 1000) } : {}),
  };
}
