/**
 * Architecture rules: every folder under src/ is a layer, and a layer may import only
 * the layers its row of {@link LAYER_RULES} allows. This test parses every .ts file under
 * src/ with the TypeScript parser, collects its import specifiers (static imports,
 * `export … from`, dynamic `import()`, `import x = require()`, `require()` and
 * `import('…')` types) and fails with one line per import that breaks the table.
 *
 * The same table is printed in docs/architecture.md (between the `rules:begin` and
 * `rules:end` markers); a test below keeps the two in sync.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, posix, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** What one layer may depend on. */
export interface LayerRule {
  /** Layers whose values and types may be imported. */
  readonly imports: readonly string[];
  /** Layers that may be imported with `import type` / `export type` only (erased at run time). */
  readonly typesFrom: readonly string[];
  /** npm packages the layer may import ('*' = any); Node built-ins are always allowed. */
  readonly packages: readonly string[] | '*';
}

/** The dependency rules table. Keep docs/architecture.md in step (a test checks it). */
export const LAYER_RULES: Readonly<Record<string, LayerRule>> = {
  core: { imports: [], typesFrom: [], packages: [] },
  transport: { imports: ['core'], typesFrom: [], packages: [] },
  control: { imports: ['core'], typesFrom: ['transport'], packages: ['ssh2', 'zod'] },
  storage: { imports: ['core'], typesFrom: [], packages: '*' },
  db: { imports: ['core'], typesFrom: [], packages: '*' },
  audit: { imports: ['core'], typesFrom: [], packages: [] },
  defender: { imports: ['core', 'db', 'audit'], typesFrom: [], packages: '*' },
  transfer: { imports: ['core', 'transport', 'control', 'storage'], typesFrom: [], packages: [] },
  server: {
    imports: ['core', 'transport', 'control', 'storage', 'db', 'audit', 'defender', 'transfer'],
    typesFrom: [],
    packages: '*',
  },
  'node-api': { imports: ['core', 'storage', 'db', 'audit', 'defender', 'server'], typesFrom: ['transport', 'control'], packages: '*' },
  platform: { imports: ['core', 'storage', 'db', 'audit', 'defender', 'node-api'], typesFrom: [], packages: '*' },
  cli: {
    imports: ['core', 'transport', 'control', 'storage', 'db', 'audit', 'defender', 'transfer', 'server', 'node-api', 'platform'],
    typesFrom: [],
    packages: '*',
  },
  testkit: { imports: ['core'], typesFrom: ['transport'], packages: [] },
};

/** A single file allowed to import one layer its row forbids, with the reason. */
export interface RuleException {
  /** Repository-relative path of the importing file. */
  readonly file: string;
  /** The layer it may import despite the table. */
  readonly layer: string;
  readonly reason: string;
}

/**
 * Deliberate, reviewed exceptions to {@link LAYER_RULES}, one file each. Keep this list
 * short and listed in docs/architecture.md; prefer moving the file or changing the table.
 */
export const RULE_EXCEPTIONS: readonly RuleException[] = [
  {
    file: 'src/testkit/memory-link.ts',
    layer: 'control',
    reason: 'in-memory ControlLink double; validates frames with the real control schemas',
  },
];

/** How an import specifier appeared in the source. */
export type ImportKind = 'import' | 'export-from' | 'dynamic-import' | 'import-type' | 'require';

/** One import found in a source file. */
export interface ImportRef {
  /** The specifier text, or undefined for a dynamic import of a computed expression. */
  readonly specifier: string | undefined;
  readonly kind: ImportKind;
  /** True when the import is erased at run time (`import type`, `export type`, `import('x').T`). */
  readonly typeOnly: boolean;
  /** 1-based line number. */
  readonly line: number;
}

/** A source file to check: path relative to the repository root, with '/' separators. */
export interface SourceFile {
  readonly path: string;
  readonly text: string;
}

/** One broken rule. */
export interface Violation {
  readonly file: string;
  readonly line: number;
  readonly specifier: string;
  readonly message: string;
}

function stringArg(node: ts.Expression | undefined): string | undefined {
  if (node !== undefined && (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node))) return node.text;
  return undefined;
}

/** Parses a TypeScript source and lists its import specifiers (comments and strings are ignored). */
export function extractImports(path: string, text: string): ImportRef[] {
  const sf = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const out: ImportRef[] = [];
  const add = (node: ts.Node, specifier: string | undefined, kind: ImportKind, typeOnly: boolean): void => {
    const line = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
    out.push({ specifier, kind, typeOnly, line });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      // `import { type A }` is not erased under verbatimModuleSyntax (it becomes `import {} from`),
      // so only `import type …` counts as type-only.
      add(node, stringArg(node.moduleSpecifier), 'import', node.importClause?.isTypeOnly === true);
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier !== undefined) {
      add(node, stringArg(node.moduleSpecifier), 'export-from', node.isTypeOnly);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      add(node, stringArg(node.moduleReference.expression), 'require', node.isTypeOnly);
    } else if (ts.isImportTypeNode(node)) {
      const arg = node.argument;
      const spec = ts.isLiteralTypeNode(arg) && ts.isStringLiteral(arg.literal) ? arg.literal.text : undefined;
      add(node, spec, 'import-type', true);
    } else if (ts.isCallExpression(node)) {
      if (node.expression.kind === ts.SyntaxKind.ImportKeyword) {
        add(node, stringArg(node.arguments[0]), 'dynamic-import', false);
      } else if (ts.isIdentifier(node.expression) && node.expression.text === 'require' && node.arguments.length === 1) {
        add(node, stringArg(node.arguments[0]), 'require', false);
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

const BUILTINS = new Set(builtinModules);

function packageName(spec: string): string {
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] ?? spec);
}

/** The layer of a repository-relative path under src/, or undefined when not in a layer folder. */
function layerOf(path: string): string | undefined {
  const parts = path.split('/');
  return parts[0] === 'src' && parts.length >= 3 ? parts[1] : undefined;
}

function describeKind(ref: ImportRef): string {
  return ref.typeOnly ? `${ref.kind}, type-only` : ref.kind;
}

/**
 * Checks the imports of `files` (paths relative to the repository root, under src/)
 * against `rules`. Returns every violation, in file and line order.
 */
export function checkImports(
  files: readonly SourceFile[],
  rules: Readonly<Record<string, LayerRule>>,
  exceptions: readonly RuleException[] = [],
): Violation[] {
  const violations: Violation[] = [];
  for (const file of [...files].sort((a, b) => a.path.localeCompare(b.path))) {
    const from = layerOf(file.path);
    const report = (line: number, specifier: string, message: string): void => {
      violations.push({ file: file.path, line, specifier, message });
    };
    if (from === undefined) {
      report(1, '', 'file is not inside a layer folder (src/<layer>/…)');
      continue;
    }
    const rule = rules[from];
    if (rule === undefined) {
      report(1, '', `folder '${from}' is not a layer in the rules table (add a row to LAYER_RULES and docs/architecture.md)`);
      continue;
    }
    for (const ref of extractImports(file.path, file.text)) {
      const spec = ref.specifier;
      if (spec === undefined) {
        report(ref.line, '<computed>', `${ref.kind} of a computed specifier cannot be checked; use a string literal`);
        continue;
      }
      if (spec.startsWith('.') || spec.startsWith('/')) {
        const target = spec.startsWith('/') ? spec : posix.normalize(posix.join(posix.dirname(file.path), spec));
        const to = layerOf(target);
        if (to === undefined) {
          report(ref.line, spec, `${from} imports ${target}, outside the src/<layer>/ folders (${describeKind(ref)})`);
        } else if (to === from || rule.imports.includes(to)) {
          continue;
        } else if (exceptions.some((e) => e.file === file.path && e.layer === to)) {
          continue;
        } else if (rule.typesFrom.includes(to)) {
          if (!ref.typeOnly) {
            report(
              ref.line,
              spec,
              `${from} → ${to}: only types may be imported from ${to}; write \`import type\` (${describeKind(ref)})`,
            );
          }
        } else if (rules[to] === undefined) {
          report(ref.line, spec, `${from} → ${to}: '${to}' is not a layer in the rules table (${describeKind(ref)})`);
        } else {
          const allowed = [...rule.imports, ...rule.typesFrom.map((l) => `${l} (types)`)];
          report(
            ref.line,
            spec,
            `${from} → ${to} is not allowed (${describeKind(ref)}); ${from} may import: ${allowed.join(', ') || 'nothing'}`,
          );
        }
        continue;
      }
      if (spec.startsWith('node:') || BUILTINS.has(spec) || BUILTINS.has(packageName(spec))) continue;
      if (spec.startsWith('#')) {
        report(ref.line, spec, `package subpath imports ('#…') are not used in this project; use a relative path`);
        continue;
      }
      const pkg = packageName(spec);
      if (pkg === 'tachyon') {
        report(ref.line, spec, 'self-reference to the tachyon package; use a relative path');
      } else if (rule.packages !== '*' && !rule.packages.includes(pkg) && !ref.typeOnly) {
        const allowed = rule.packages.length > 0 ? rule.packages.join(', ') : 'none';
        report(ref.line, spec, `${from} may not import the npm package '${pkg}' (allowed: ${allowed})`);
      }
    }
  }
  return violations;
}

/** Formats violations as one line each: `file:line: message ['specifier']`. */
export function formatViolations(violations: readonly Violation[]): string {
  return violations
    .map((v) => `  ${v.file}:${v.line}: ${v.message}${v.specifier && v.specifier !== '<computed>' ? ` ['${v.specifier}']` : ''}`)
    .join('\n');
}

/** The repository root (this file runs from dist/test/). */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function listSources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listSources(p));
    else if (entry.isFile() && /\.(?:ts|mts|cts|tsx)$/.test(entry.name)) out.push(p);
  }
  return out;
}

function loadSources(): SourceFile[] {
  return listSources(join(ROOT, 'src')).map((p) => ({
    path: relative(ROOT, p).split(sep).join('/'),
    text: readFileSync(p, 'utf8'),
  }));
}

/** Parses the rules table in docs/architecture.md into the same shape as LAYER_RULES. */
function rulesFromDoc(markdown: string): Record<string, LayerRule> {
  const m = /<!-- rules:begin -->([\s\S]*?)<!-- rules:end -->/.exec(markdown);
  assert.ok(m, 'docs/architecture.md has no <!-- rules:begin --> … <!-- rules:end --> table');
  const cells = (s: string): string[] =>
    s
      .split(',')
      .map((x) => x.replace(/`/g, '').trim())
      .filter((x) => x !== '' && x !== '—' && x !== '-');
  const rows: Record<string, LayerRule> = {};
  for (const line of (m[1] ?? '').split('\n')) {
    const cols = line.split('|').map((c) => c.trim());
    // | `layer` | imports | types only | packages |
    if (cols.length < 6 || !/^`[a-z-]+`$/.test(cols[1] ?? '')) continue;
    const layer = (cols[1] ?? '').replace(/`/g, '');
    const pk = cells(cols[4] ?? '');
    rows[layer] = {
      imports: cells(cols[2] ?? ''),
      typesFrom: cells(cols[3] ?? ''),
      packages: pk.length === 1 && pk[0] === 'any' ? '*' : pk,
    };
  }
  return rows;
}

describe('architecture', () => {
  it('every import under src/ follows the layer rules', () => {
    const files = loadSources();
    assert.ok(files.length > 0, 'no sources found under src/');
    const violations = checkImports(files, LAYER_RULES, RULE_EXCEPTIONS);
    assert.equal(
      violations.length,
      0,
      `${violations.length} import(s) break the dependency rules (see docs/architecture.md):\n${formatViolations(violations)}\n`,
    );
  });

  it('docs/architecture.md prints the same rules table as this test', () => {
    const docPath = join(ROOT, 'docs', 'architecture.md');
    assert.ok(existsSync(docPath), 'docs/architecture.md is missing');
    const fromDoc = rulesFromDoc(readFileSync(docPath, 'utf8'));
    const norm = (r: Readonly<Record<string, LayerRule>>): Record<string, LayerRule> =>
      Object.fromEntries(
        Object.entries(r)
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([k, v]) => [
            k,
            {
              imports: [...v.imports].sort(),
              typesFrom: [...v.typesFrom].sort(),
              packages: v.packages === '*' ? '*' : [...v.packages].sort(),
            },
          ]),
      );
    assert.deepEqual(norm(fromDoc), norm(LAYER_RULES));
  });

  it('every rule exception names an existing file and is listed in docs/architecture.md', () => {
    const doc = readFileSync(join(ROOT, 'docs', 'architecture.md'), 'utf8');
    for (const e of RULE_EXCEPTIONS) {
      assert.ok(existsSync(join(ROOT, e.file)), `exception for missing file ${e.file}: remove it from RULE_EXCEPTIONS`);
      assert.ok(doc.includes(`\`${e.file}\``), `docs/architecture.md does not list the exception for ${e.file}`);
    }
  });
});

describe('architecture checker', () => {
  it('extracts static, export-from, dynamic, require and type imports, ignoring comments and strings', () => {
    const refs = extractImports(
      'src/x/a.ts',
      [
        "import { a } from './a.js';",
        "import type { B } from './b.js';",
        "import { type C } from './c.js';",
        "import './side-effect.js';",
        "export { d } from './d.js';",
        "export type { E } from './e.js';",
        "export * from './f.js';",
        'const g = await import(\'./g.js\');',
        'const h = await import(`./h.js`);',
        'const name = "./i.js"; const i = await import(name);',
        "type J = typeof import('./j.js');",
        "// import { k } from './k.js';",
        "const s = \"import { l } from './l.js'\";",
        "import m = require('./m.js');",
      ].join('\n'),
    );
    assert.deepEqual(
      refs.map((r) => [r.line, r.specifier, r.kind, r.typeOnly]),
      [
        [1, './a.js', 'import', false],
        [2, './b.js', 'import', true],
        [3, './c.js', 'import', false],
        [4, './side-effect.js', 'import', false],
        [5, './d.js', 'export-from', false],
        [6, './e.js', 'export-from', true],
        [7, './f.js', 'export-from', false],
        [8, './g.js', 'dynamic-import', false],
        [9, './h.js', 'dynamic-import', false],
        [10, undefined, 'dynamic-import', false],
        [11, './j.js', 'import-type', true],
        [14, './m.js', 'require', false],
      ],
    );
  });

  it('accepts a synthetic tree that follows the rules', () => {
    const files: SourceFile[] = [
      { path: 'src/core/errors.ts', text: "import { x } from './units.js'; import { createHash } from 'node:crypto';" },
      { path: 'src/transport/wire/packet.ts', text: "import { TachyonError } from '../../core/errors.js';" },
      { path: 'src/control/server.ts', text: "import type { PeerAddress } from '../transport/socket/types.js'; import { z } from 'zod';" },
      { path: 'src/testkit/simnet.ts', text: "import type { DatagramSocket } from '../transport/socket/types.js'; import fs from 'fs';" },
      { path: 'src/cli/main.ts', text: "import { Command } from 'commander'; const s = await import('../server/index.js');" },
    ];
    assert.deepEqual(checkImports(files, LAYER_RULES), []);
  });

  it('reports every import that breaks the rules, with file, line and reason', () => {
    const files: SourceFile[] = [
      { path: 'src/core/clock.ts', text: "\n\nimport { Session } from '../transport/session/session.js';" },
      { path: 'src/transport/wire/packet.ts', text: "export { Hello } from '../../control/messages.js';" },
      { path: 'src/transport/session/s.ts', text: "const m = await import('../../server/index.js');\nimport ssh from 'ssh2';" },
      { path: 'src/control/client.ts', text: "import { UdpSocket } from '../transport/socket/udp.js';\nimport { type P } from '../transport/socket/types.js';" },
      { path: 'src/server/main.ts', text: "import { SimNetwork } from '../testkit/index.js';" },
      { path: 'src/storage/s3.ts', text: "import x from '../../test/helpers.js';\nconst y = await import(modName);" },
      { path: 'src/testkit/simnet.ts', text: "import { UdpSocket } from '../transport/socket/udp.js';" },
      { path: 'src/cli/main.ts', text: "import { SimClock } from '../testkit/simclock.js';\nimport { z } from 'tachyon/core';" },
      { path: 'src/web/app.ts', text: "import React from 'react';" },
      { path: 'src/index.ts', text: "export * from './core/errors.js';" },
    ];
    const violations = checkImports(files, LAYER_RULES);
    const summary = violations.map((v) => `${v.file}:${v.line} ${v.specifier}`);
    assert.deepEqual(summary, [
      'src/cli/main.ts:1 ../testkit/simclock.js',
      'src/cli/main.ts:2 tachyon/core',
      'src/control/client.ts:1 ../transport/socket/udp.js',
      'src/control/client.ts:2 ../transport/socket/types.js',
      'src/core/clock.ts:3 ../transport/session/session.js',
      'src/index.ts:1 ',
      'src/server/main.ts:1 ../testkit/index.js',
      'src/storage/s3.ts:1 ../../test/helpers.js',
      'src/storage/s3.ts:2 <computed>',
      'src/testkit/simnet.ts:1 ../transport/socket/udp.js',
      'src/transport/session/s.ts:1 ../../server/index.js',
      'src/transport/session/s.ts:2 ssh2',
      'src/transport/wire/packet.ts:1 ../../control/messages.js',
      'src/web/app.ts:1 ',
    ]);
    const text = formatViolations(violations);
    assert.match(text, /src\/core\/clock\.ts:3: core → transport is not allowed \(import\); core may import: nothing/);
    assert.match(text, /src\/control\/client\.ts:1: control → transport: only types may be imported/);
    assert.match(text, /src\/server\/main\.ts:1: server → testkit is not allowed/);
    assert.match(text, /src\/transport\/session\/s\.ts:1: transport → server is not allowed \(dynamic-import\)/);
    assert.match(text, /src\/transport\/wire\/packet\.ts:1: transport → control is not allowed \(export-from\)/);
    assert.match(text, /transport may not import the npm package 'ssh2'/);
    assert.match(text, /folder 'web' is not a layer/);
    assert.match(text, /src\/index\.ts:1: file is not inside a layer folder/);
  });

  it('honours a per-file exception for that file and layer only', () => {
    const exceptions: RuleException[] = [{ file: 'src/testkit/link.ts', layer: 'control', reason: 'test double' }];
    const files: SourceFile[] = [
      { path: 'src/testkit/link.ts', text: "import { S } from '../control/messages.js';\nimport { T } from '../server/x.js';" },
      { path: 'src/testkit/other.ts', text: "import { S } from '../control/messages.js';" },
    ];
    assert.deepEqual(
      checkImports(files, LAYER_RULES, exceptions).map((v) => `${v.file}:${v.line}`),
      ['src/testkit/link.ts:2', 'src/testkit/other.ts:1'],
    );
  });

  it('makes the real-tree assertion fail on a violation', () => {
    const violations = checkImports(
      [{ path: 'src/core/bad.ts', text: "import '../cli/main.js';" }],
      LAYER_RULES,
    );
    assert.throws(
      () => assert.equal(violations.length, 0, formatViolations(violations)),
      /src\/core\/bad\.ts:1: core → cli is not allowed/,
    );
  });
});
