/**
 * Expands source paths into the files (and directories with nothing to send in them: empty,
 * or all excluded) a sender announces, with
 * the relative paths the destination will see: each source keeps its last component
 * (`tree/a/b.txt` for source `tree`), or, with a source base, its path below the base
 * (`a/b.txt` for `/data/a/b.txt` and base `/data`). Exclude patterns prune files and
 * whole directories. Symbolic links and special files are not followed.
 */
import { lstatSync, readdirSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';
import { TachyonError } from '../core/errors.js';
import type { ExcludeSet } from './exclude.js';
import type { OutgoingFile } from './roles.js';

export interface Listing {
  files: OutgoingFile[];
  dirs: string[];
}

export interface ListOptions {
  /** turns a source as named into an absolute local path (the jail on a server) */
  resolve?: (p: string) => string;
  /** absolute path of the source base: sources must be below it; paths are relative to it */
  srcBase?: string;
  exclude?: ExcludeSet;
  /** how a source is shown in error messages (default: as named) */
  display?: (p: string) => string;
}

export function listSources(sources: readonly string[], o: ListOptions = {}): Listing {
  const resolve = o.resolve ?? ((p: string) => path.resolve(p));
  const show = o.display ?? ((p: string) => p);
  const files: OutgoingFile[] = [];
  const dirs: string[] = [];
  for (const src of sources) {
    const abs = resolve(src);
    let st: Stats;
    try {
      st = statSync(abs);
    } catch (err) {
      throw new TachyonError('NOT_FOUND', `source ${show(src)} does not exist`, { cause: err, publicMessage: `Source ${show(src)} does not exist.` });
    }
    let rel: string;
    if (o.srcBase !== undefined) {
      const r = path.relative(o.srcBase, abs);
      if (r.startsWith('..') || path.isAbsolute(r)) {
        throw new TachyonError('USAGE', `source ${show(src)} is not below the source base`, { publicMessage: `Source ${show(src)} is not below the source base.` });
      }
      rel = r.split(path.sep).join('/');
    } else {
      rel = path.basename(abs) || 'root';
    }
    if (st.isFile()) {
      if (rel === '') throw new TachyonError('USAGE', `source ${show(src)} is the source base itself`);
      if (o.exclude?.excludes(rel, false)) continue;
      files.push(outgoing(rel, abs, st));
    } else if (st.isDirectory()) {
      if (rel !== '' && o.exclude?.excludes(rel, true)) continue;
      walk(abs, rel, files, dirs, o.exclude);
    } else {
      throw new TachyonError('USAGE', `source ${show(src)} is neither a file nor a directory`);
    }
  }
  return { files, dirs };
}

function outgoing(rel: string, abs: string, st: Stats): OutgoingFile {
  return { path: rel, abs, size: st.size, mtimeMs: st.mtimeMs, atimeMs: st.atimeMs };
}

function walk(absDir: string, rel: string, files: OutgoingFile[], dirs: string[], exclude: ExcludeSet | undefined): void {
  const entries = readdirSync(absDir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
  const before = files.length + dirs.length;
  for (const e of entries) {
    const abs = path.join(absDir, e.name);
    const r = rel === '' ? e.name : `${rel}/${e.name}`;
    if (e.isDirectory()) {
      if (exclude?.matchesEntry(r, true)) continue;
      walk(abs, r, files, dirs, exclude);
    } else if (e.isFile()) {
      if (exclude?.matchesEntry(r, false)) continue;
      files.push(outgoing(r, abs, lstatSync(abs)));
    }
    // symbolic links and special files are not followed
  }
  // a directory with nothing to send in it (empty, or all excluded) is created empty
  if (files.length + dirs.length === before && rel !== '') dirs.push(rel);
}

/**
 * Parses a `--file-list` file: one path per line (UTF-8, `\n` or `\r\n`), empty lines
 * ignored, nothing else interpreted (a path may contain spaces or `#`). A NUL byte or
 * invalid UTF-8 is a USAGE error.
 */
export function parseFileList(content: Buffer, name = 'file list'): string[] {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(content);
  } catch {
    throw new TachyonError('USAGE', `${name} is not valid UTF-8`);
  }
  if (text.includes('\0')) throw new TachyonError('USAGE', `${name} contains a NUL byte`);
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.length > 0) out.push(line);
  }
  return out;
}
