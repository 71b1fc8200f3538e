#!/usr/bin/env node
// Builds the optional native addons (native/tachyon_native.c → build/Release/
// tachyon_native.node, the datagram path; native/tachyon_dir.c → tachyon_dir.node, the
// directory scan behind LocalStorage listings) with node-gyp. Runs as the package's `install` script on
// `npm ci`. Tachyon works without the addon (the pure-TypeScript path), so a failed
// build warns and exits 0 unless TACHYON_REQUIRE_NATIVE=1 (CI), where it fails.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const required = process.env.TACHYON_REQUIRE_NATIVE === '1';
if (process.platform !== 'linux') {
  console.warn(`tachyon: native addon skipped on ${process.platform} (the pure-TypeScript path is used)`);
  process.exit(0);
}
if (process.env.TACHYON_NATIVE === '0' && !required) {
  console.warn('tachyon: TACHYON_NATIVE=0: native addon not built');
  process.exit(0);
}
// npm puts its bundled node-gyp on PATH for lifecycle scripts; outside npm, try npx
const viaNpm = spawnSync('node-gyp', ['rebuild'], { stdio: 'inherit' });
const r = viaNpm.error ? spawnSync('npx', ['--no-install', 'node-gyp', 'rebuild'], { stdio: 'inherit' }) : viaNpm;
if (r.status === 0 && existsSync('build/Release/tachyon_native.node') && existsSync('build/Release/tachyon_dir.node')) process.exit(0);
const msg = 'tachyon: building the native addons failed; the pure-TypeScript datagram path (slower on multi-gigabit links) and node:fs directory listings (slower on directories of 100,000 entries) will be used';
if (required) {
  console.error(`${msg}\nTACHYON_REQUIRE_NATIVE=1: failing`);
  process.exit(1);
}
console.warn(msg);
process.exit(0);
