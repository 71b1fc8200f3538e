/**
 * Confines client-named paths to a root directory whose top the client sees as `/`.
 * Refuses NUL bytes, over-long paths and components, `..` that would climb above the
 * root, and symbolic links that lead out of it.
 */
import { lstatSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { TachyonError } from '../core/errors.js';

export const MAX_PATH_BYTES = 4096;
export const MAX_COMPONENT_BYTES = 255;

export class Jail {
  readonly root: string;

  constructor(root: string) {
    try {
      this.root = realpathSync(root);
    } catch (err) {
      throw new TachyonError('CONFIG', `root directory ${root} does not exist`, { cause: err });
    }
  }

  /** Splits and checks a client path; returns its normalised components under the root. */
  components(clientPath: string): string[] {
    if (clientPath.includes('\0')) throw bad(clientPath, 'contains a NUL byte');
    const p = clientPath.normalize('NFC');
    if (Buffer.byteLength(p) > MAX_PATH_BYTES) throw bad(clientPath, 'is too long');
    const out: string[] = [];
    for (const c of p.replace(/\\/g, '/').split('/')) {
      if (c === '' || c === '.') continue;
      if (c === '..') {
        if (out.length === 0) throw bad(clientPath, 'leaves the root');
        out.pop();
        continue;
      }
      if (Buffer.byteLength(c) > MAX_COMPONENT_BYTES) throw bad(clientPath, 'has a component longer than 255 bytes');
      out.push(c);
    }
    return out;
  }

  /**
   * Resolves a client path to an absolute path inside the root. Every existing
   * ancestor is checked with realpath so that a symlink cannot lead out.
   */
  resolve(clientPath: string): string {
    const abs = path.join(this.root, ...this.components(clientPath));
    this.checkInside(abs, clientPath);
    return abs;
  }

  /** Checks that the deepest existing ancestor of abs (abs included) is inside the root. */
  checkInside(abs: string, shown: string): void {
    let probe = abs;
    for (;;) {
      let real: string | undefined;
      try {
        lstatSync(probe);
        real = realpathSync(probe);
      } catch {
        real = undefined;
      }
      if (real !== undefined) {
        if (real !== this.root && !real.startsWith(this.root + path.sep)) throw bad(shown, 'leads outside the root');
        return;
      }
      const parent = path.dirname(probe);
      if (parent === probe) throw bad(shown, 'has no existing ancestor');
      probe = parent;
    }
  }

  /** The client's view (`/a/b`) of an absolute path inside the root. */
  display(abs: string): string {
    const rel = path.relative(this.root, abs);
    return '/' + rel.split(path.sep).join('/');
  }
}

function bad(p: string, why: string): TachyonError {
  const shown = p.length > 200 ? `${p.slice(0, 200)}…` : p;
  return new TachyonError('PATH_INVALID', `path '${shown.replace(/\0/g, '\\0')}' ${why}`, {
    publicMessage: `Invalid path: it ${why}.`,
  });
}
