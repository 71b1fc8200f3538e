#!/usr/bin/env node
// Runs the compiled test suite: every *.test.js under dist/test, one file at a time.
//
//   node scripts/run-tests.mjs [FILTER…] [-- NODE_TEST_OPTION…]
//
// FILTER: a substring of the test file path (relative to dist/test); a file runs when it
//   matches any filter (`npm test -- control` runs only files whose path contains
//   "control"). No filter runs everything.
// Arguments starting with "-" are passed to `node --test` unchanged (for example
//   --test-name-pattern=handshake, --test-reporter=spec, --test-only).
//
// Compiled tests whose TypeScript source no longer exists (stale output left in dist/ by
// an earlier build) are skipped. The exit code is node's.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const distTest = join(root, 'dist', 'test');

/** Lists every *.test.js below dir, sorted for a stable order. */
function findTests(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...findTests(p));
    else if (entry.isFile() && entry.name.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}

const args = process.argv.slice(2).filter((a) => a !== '--');
const nodeArgs = args.filter((a) => a.startsWith('-'));
const filters = args.filter((a) => !a.startsWith('-'));

if (!existsSync(distTest)) {
  console.error('run-tests: dist/test does not exist; run `tsc --build` first (npm test does).');
  process.exit(1);
}

const all = findTests(distTest).filter((file) => {
  const source = join(root, relative(join(root, 'dist'), file)).replace(/\.js$/, '.ts');
  if (existsSync(source)) return true;
  console.error(`run-tests: skipping stale ${relative(root, file)} (no ${relative(root, source)})`);
  return false;
});
const files = all.filter((file) => {
  if (filters.length === 0) return true;
  const rel = relative(distTest, file).split(sep).join('/');
  return filters.some((f) => rel.includes(f));
});

if (files.length === 0) {
  console.error(
    filters.length > 0
      ? `run-tests: no test file matches ${filters.map((f) => `"${f}"`).join(', ')} (of ${all.length} files)`
      : 'run-tests: no *.test.js files under dist/test',
  );
  process.exit(1);
}

const argv = ['--test', '--test-concurrency=1', '--test-timeout=120000', ...nodeArgs, ...files];
console.error(`run-tests: ${files.length} file(s): ${files.map((f) => relative(distTest, f)).join(' ')}`);
const started = Date.now();
const child = spawn(process.execPath, argv, { cwd: root, stdio: 'inherit' });

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => child.kill(signal));
}

child.on('exit', (code, signal) => {
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (signal) {
    console.error(`run-tests: node --test killed by ${signal} after ${secs}s`);
    process.exit(1);
  }
  console.error(`run-tests: ${code === 0 ? 'passed' : `FAILED (exit ${code})`} in ${secs}s`);
  process.exit(code ?? 1);
});
