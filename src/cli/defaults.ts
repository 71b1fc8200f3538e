/** Defaults shared by the CLI's command definitions (kept free of heavy imports). */
import os from 'node:os';
import path from 'node:path';

/** Where `serve` keeps its host key unless told otherwise. */
export function defaultHostKeyPath(): string {
  const base = process.env.XDG_CONFIG_HOME ?? path.join(os.homedir(), '.config');
  return path.join(base, 'tachyon', 'ssh_host_ed25519_key');
}
