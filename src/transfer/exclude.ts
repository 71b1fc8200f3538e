/**
 * Exclude patterns (`--exclude PATTERN`, repeatable), matched against the relative path
 * of each file and directory as the destination will see it (after `--src-base`):
 *
 * - `*` matches any run of characters except `/`; `?` one character except `/`;
 *   `**` any run of characters including `/` (`a/**\/b` also matches `a/b`);
 *   `[abc]`, `[a-z]`, `[!a-z]` (or `[^a-z]`) one character of (not of) a class;
 *   `\` makes the next character literal.
 * - A pattern without `/` matches the name of a file or directory at any depth
 *   (`*.tmp`, `node_modules`). A pattern with `/` matches the whole relative path from
 *   its start (`tree/logs/*.log`); a leading `/` only anchors (`/build` matches the
 *   top-level `build`, not `src/build`).
 * - A trailing `/` matches directories only (`cache/`).
 * - An excluded directory is not descended into: nothing below it is sent.
 *
 * Matching simulates the pattern as a small automaton (time proportional to path
 * length × pattern length, never exponential), since a server also matches patterns
 * that clients send.
 */
import { TachyonError } from '../core/errors.js';

export const MAX_EXCLUDE_PATTERNS = 256;
export const MAX_PATTERN_LENGTH = 1024;

type Token =
  | { k: 'lit'; c: string }
  | { k: 'any' }
  | { k: 'class'; neg: boolean; ranges: [number, number][] }
  | { k: 'star' }
  | { k: 'globstar' }
  /** `**` followed by `/` is nothing, or anything ending in `/`: an entry that may skip the loop */
  | { k: 'globdir' }
  /** the loop of `**\/`: any character, leaving after a `/` */
  | { k: 'globloop' };

export interface CompiledPattern {
  readonly source: string;
  /** matches the whole relative path (else: any single name in it) */
  readonly anchored: boolean;
  readonly dirOnly: boolean;
  readonly tokens: readonly Token[];
}

function bad(pattern: string, why: string): TachyonError {
  const shown = pattern.length > 100 ? `${pattern.slice(0, 100)}…` : pattern;
  return new TachyonError('USAGE', `invalid exclude pattern '${shown}': ${why}`, { publicMessage: `Invalid exclude pattern: ${why}.` });
}

/** Parses one pattern; throws a USAGE error for an empty, over-long or malformed one. */
export function compilePattern(pattern: string): CompiledPattern {
  if (pattern.length > MAX_PATTERN_LENGTH) throw bad(pattern, `longer than ${MAX_PATTERN_LENGTH} characters`);
  if (pattern.includes('\0')) throw bad(pattern, 'contains a NUL byte');
  let body = pattern;
  let dirOnly = false;
  let anchored = false;
  while (body.endsWith('/') && !body.endsWith('\\/')) {
    body = body.slice(0, -1);
    dirOnly = true;
  }
  if (body.startsWith('/')) {
    anchored = true;
    body = body.replace(/^\/+/, '');
  }
  if (body.length === 0) throw bad(pattern, 'it matches nothing');
  const chars = [...body];
  const tokens: Token[] = [];
  let hasSlash = false;
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    if (c === '\\') {
      const n = chars[++i];
      if (n === undefined) throw bad(pattern, 'ends with a lone backslash');
      if (n === '/') hasSlash = true;
      tokens.push({ k: 'lit', c: n });
    } else if (c === '*') {
      if (chars[i + 1] === '*') {
        i++;
        while (chars[i + 1] === '*') i++;
        if (chars[i + 1] === '/') {
          i++;
          hasSlash = true;
          tokens.push({ k: 'globdir' }, { k: 'globloop' });
        } else tokens.push({ k: 'globstar' });
        hasSlash = true;
      } else tokens.push({ k: 'star' });
    } else if (c === '?') {
      tokens.push({ k: 'any' });
    } else if (c === '[') {
      let j = i + 1;
      let neg = false;
      if (chars[j] === '!' || chars[j] === '^') {
        neg = true;
        j++;
      }
      const ranges: [number, number][] = [];
      let first = true;
      for (;;) {
        const d = chars[j];
        if (d === undefined) throw bad(pattern, "a '[' class is not closed");
        if (d === ']' && !first) break;
        first = false;
        let lo = d;
        if (d === '\\') {
          const e = chars[++j];
          if (e === undefined) throw bad(pattern, 'ends with a lone backslash');
          lo = e;
        }
        let hi = lo;
        if (chars[j + 1] === '-' && chars[j + 2] !== undefined && chars[j + 2] !== ']') {
          hi = chars[j + 2]!;
          if (hi === '\\') {
            const e = chars[j + 3];
            if (e === undefined) throw bad(pattern, 'ends with a lone backslash');
            hi = e;
            j++;
          }
          j += 2;
        }
        const a = lo.codePointAt(0)!;
        const b = hi.codePointAt(0)!;
        if (b < a) throw bad(pattern, `the class range ${lo}-${hi} is reversed`);
        ranges.push([a, b]);
        j++;
      }
      tokens.push({ k: 'class', neg, ranges });
      i = j;
    } else {
      if (c === '/') hasSlash = true;
      tokens.push({ k: 'lit', c });
    }
  }
  return { source: pattern, anchored: anchored || hasSlash, dirOnly, tokens };
}

function inClass(ranges: readonly [number, number][], cp: number): boolean {
  for (const [a, b] of ranges) if (cp >= a && cp <= b) return true;
  return false;
}

/** True when `text` (all of it) matches the tokens. */
function run(tokens: readonly Token[], text: string): boolean {
  const m = tokens.length;
  let cur = new Uint8Array(m + 1);
  let next = new Uint8Array(m + 1);
  const close = (set: Uint8Array): void => {
    for (let i = 0; i < m; i++) {
      if (!set[i]) continue;
      const k = tokens[i]!.k;
      if (k === 'star' || k === 'globstar') set[i + 1] = 1;
      else if (k === 'globdir') {
        set[i + 1] = 1; // into the loop
        set[i + 2] = 1; // or skip it: `**/` matching nothing
      }
    }
  };
  cur[0] = 1;
  close(cur);
  for (const ch of text) {
    next.fill(0);
    let alive = false;
    const cp = ch.codePointAt(0)!;
    for (let i = 0; i < m; i++) {
      if (!cur[i]) continue;
      const t = tokens[i]!;
      let to = -1;
      switch (t.k) {
        case 'lit':
          if (t.c === ch) to = i + 1;
          break;
        case 'any':
          if (ch !== '/') to = i + 1;
          break;
        case 'class':
          if (ch !== '/' && inClass(t.ranges, cp) !== t.neg) to = i + 1;
          break;
        case 'star':
          if (ch !== '/') to = i;
          break;
        case 'globstar':
          to = i;
          break;
        case 'globdir':
          break; // only an entry: its epsilon moves were taken by close()
        case 'globloop':
          to = i;
          if (ch === '/') next[i + 1] = 1;
          break;
      }
      if (to >= 0) {
        next[to] = 1;
        alive = true;
      }
    }
    if (!alive) return false;
    close(next);
    [cur, next] = [next, cur];
  }
  return cur[m] === 1;
}

/** A set of compiled exclude patterns. */
export class ExcludeSet {
  readonly patterns: readonly CompiledPattern[];

  constructor(patterns: readonly string[]) {
    if (patterns.length > MAX_EXCLUDE_PATTERNS) {
      throw new TachyonError('USAGE', `at most ${MAX_EXCLUDE_PATTERNS} exclude patterns`, { publicMessage: `At most ${MAX_EXCLUDE_PATTERNS} exclude patterns.` });
    }
    this.patterns = patterns.map(compilePattern);
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /** Does a pattern match this entry itself (`rel`: relative path with '/' separators)? */
  matchesEntry(rel: string, isDir: boolean): boolean {
    if (this.patterns.length === 0) return false;
    const slash = rel.lastIndexOf('/');
    const name = slash < 0 ? rel : rel.slice(slash + 1);
    for (const p of this.patterns) {
      if (p.dirOnly && !isDir) continue;
      if (run(p.tokens, p.anchored ? rel : name)) return true;
    }
    return false;
  }

  /** Is `rel` excluded, by a pattern matching it or one of the directories above it? */
  excludes(rel: string, isDir: boolean): boolean {
    if (this.patterns.length === 0) return false;
    let i = rel.indexOf('/');
    while (i >= 0) {
      if (this.matchesEntry(rel.slice(0, i), true)) return true;
      i = rel.indexOf('/', i + 1);
    }
    return this.matchesEntry(rel, isDir);
  }
}
