import { TachyonError } from '../core/errors.js';

export interface RemoteSpec {
  user: string | undefined;
  host: string;
  path: string;
}

/** Parses `[user@]host:path` (host may be `[v6addr]`). Returns undefined for a local path. */
export function parseRemote(text: string): RemoteSpec | undefined {
  const m = /^(?:([^@/:]+)@)?(\[[0-9a-fA-F:.]+\]|[^:/[\]@]+):(.*)$/.exec(text);
  if (!m) return undefined;
  const host = m[2]!.startsWith('[') ? m[2]!.slice(1, -1) : m[2]!;
  const p = m[3] === '' ? '/' : m[3]!;
  return { user: m[1], host, path: p };
}

export function requireRemote(text: string, what: string): RemoteSpec {
  const r = parseRemote(text);
  if (!r) throw new TachyonError('USAGE', `${what} '${text}' is not a remote path: write it as [user@]host:PATH`);
  return r;
}
