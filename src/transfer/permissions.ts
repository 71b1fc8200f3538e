/**
 * What a transfer user may do inside their root. The same set governs the transfer
 * protocol and SFTP; each permission is checked on its own, none implies another:
 *
 * - `list`   — read directory listings (SFTP OPENDIR/READDIR). Without it a user can still
 *              stat a path they name, and get or put files whose names they know.
 * - `read`   — open files for reading (download).
 * - `write`  — create files and write into them, including overwriting or truncating an
 *              existing file's content and setting its times or permission bits. It never
 *              removes a name: deleting needs `delete`, and a rename never replaces an
 *              existing target.
 * - `mkdir`  — make directories.
 * - `rename` — rename or move files and directories (within the root; never over an
 *              existing name).
 * - `delete` — remove files and empty directories.
 */
import { TachyonError } from '../core/errors.js';
import { PERMISSIONS, type Permission } from '../core/types.js';

export { PERMISSIONS, type Permission };

/** A user's permissions (deny by default: what is not in the set is refused). */
export type Permissions = ReadonlySet<Permission>;

export function isPermission(value: unknown): value is Permission {
  return typeof value === 'string' && (PERMISSIONS as readonly string[]).includes(value);
}

/**
 * Builds a permission set from names (e.g. a configuration list).
 * @throws TachyonError `CONFIG` for an unknown name.
 */
export function permissionSet(names: Iterable<string>): Permissions {
  const out = new Set<Permission>();
  for (const n of names) {
    if (!isPermission(n)) throw new TachyonError('CONFIG', `unknown permission '${String(n).slice(0, 40)}' (known: ${PERMISSIONS.join(', ')})`);
    out.add(n);
  }
  return out;
}

/** Every permission. */
export const ALL_PERMISSIONS: Permissions = new Set(PERMISSIONS);

/**
 * Refuses an operation the user lacks `p` for.
 * @throws TachyonError `PERMISSION` with `details: { reason: 'permission', permission }`.
 */
export function requirePermission(perms: Permissions, p: Permission, what: string): void {
  if (perms.has(p)) return;
  throw new TachyonError('PERMISSION', `${what}: the user lacks the '${p}' permission`, {
    publicMessage: `Permission denied: ${p} is not allowed.`,
    details: { reason: 'permission', permission: p },
  });
}
