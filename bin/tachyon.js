#!/usr/bin/env node
// Entry point of the `tachyon` command. The CLI lives in src/cli (compiled to dist/src/cli).
import { main } from '../dist/src/cli/main.js';

main(process.argv).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(`tachyon: internal error: ${err?.message ?? err}`); process.exitCode = 70; },
);
