#!/usr/bin/env node
// Entry point of the `tachyon` command. The CLI lives in src/cli (compiled to dist/src/cli).
import { main } from '../dist/src/cli/main.js';

main(process.argv).then(
  // Exit as soon as the command is done: a finished transfer has nothing left to wait
  // for (the SSH channel's orderly close would cost another round trip on a long path).
  // Writes to pipes, files and terminals are synchronous on POSIX, so no output is lost.
  (code) => process.exit(code),
  (err) => {
    console.error(`tachyon: internal error: ${err?.message ?? err}`);
    process.exit(70);
  },
);
