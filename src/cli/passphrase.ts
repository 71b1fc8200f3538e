/**
 * The file passphrase of encryption at rest: from TACHYON_FILE_PASSPHRASE, or typed on
 * the terminal with echo off. Never from the command line (it would show in `ps` and in
 * shell history).
 */
import { TachyonError } from '../core/errors.js';

export const PASSPHRASE_ENV = 'TACHYON_FILE_PASSPHRASE';
const MIN_LENGTH = 8;

/** Reads a line from the terminal without echoing it. */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    let text = '';
    const wasRaw = stdin.isRaw;
    // echo off before the prompt shows, so that nothing typed after it is ever echoed
    stdin.setRawMode(true);
    process.stderr.write(prompt);
    stdin.resume();
    const done = (err?: Error): void => {
      stdin.off('data', onData);
      stdin.setRawMode(wasRaw);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(text);
    };
    const onData = (d: Buffer): void => {
      for (const ch of d.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003' || ch === '\u0004') return done(new TachyonError('CANCELLED', 'passphrase entry cancelled'));
        if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1);
        else text += ch;
      }
    };
    stdin.on('data', onData);
  });
}

/**
 * The passphrase: the environment variable if set, else a prompt on the terminal (twice
 * when `confirm`, for encrypting). Without either it is a USAGE error.
 */
export async function readPassphrase(opts: { confirm: boolean }): Promise<string> {
  const env = process.env[PASSPHRASE_ENV];
  let pw: string;
  if (env !== undefined && env !== '') pw = env;
  else if (process.stdin.isTTY === true) {
    pw = await promptHidden('File passphrase: ');
    if (opts.confirm && (await promptHidden('Repeat the passphrase: ')) !== pw) throw new TachyonError('USAGE', 'the passphrases do not match');
  } else {
    throw new TachyonError('USAGE', `no file passphrase: set ${PASSPHRASE_ENV} or run on a terminal to be asked (it is never taken from the command line)`);
  }
  if (opts.confirm && pw.length < MIN_LENGTH) throw new TachyonError('USAGE', `the file passphrase is too short (at least ${MIN_LENGTH} characters)`);
  return pw;
}
