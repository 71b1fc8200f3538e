/**
 * Correlation ids: the reference that links what a remote party is told ("Permission
 * denied (ref 01J…)") to the full record in the audit log. An id is a ULID: 26 characters
 * of Crockford base32, the first 10 encoding the creation time in milliseconds (so ids
 * sort by time) and the other 16 carrying 80 random bits (so they cannot be guessed and
 * never collide in practice). Ids carry no information about the event itself.
 */
import { randomBytes } from 'node:crypto';
import { TachyonError } from './errors.js';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** What a correlation id looks like (also accepted: any other 8–64 character id of [0-9A-Z]). */
export const CORRELATION_ID_PATTERN = /^[0-9A-Z]{8,64}$/;

/**
 * A new correlation id: a ULID for time `nowMs` (milliseconds since the Unix epoch,
 * default `Date.now()`).
 */
export function newCorrelationId(nowMs: number = Date.now()): string {
  let t = Math.max(0, Math.min(Math.floor(nowMs), 2 ** 48 - 1));
  const time: string[] = [];
  for (let i = 0; i < 10; i++) {
    time.push(CROCKFORD[t % 32] as string);
    t = Math.floor(t / 32);
  }
  const rnd = randomBytes(10);
  let out = time.reverse().join('');
  // 80 random bits as 16 base32 digits: 5 bits each.
  let acc = 0;
  let bits = 0;
  for (const byte of rnd) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += CROCKFORD[(acc >>> bits) & 31] as string;
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}

/** The creation time (ms since the epoch) encoded in a ULID, or undefined if `id` is not one. */
export function correlationIdTime(id: string): number | undefined {
  if (!/^[0-9A-HJKMNP-TV-Z]{26}$/.test(id)) return undefined;
  let t = 0;
  for (const c of id.slice(0, 10)) t = t * 32 + CROCKFORD.indexOf(c);
  return t;
}

/**
 * Returns a copy of `err` that carries the correlation id `ref` of its audit record: the
 * public message (the only text a remote party sees) ends with `(ref REF)`, the local
 * message with `[ref REF]`, and `details.correlationId` holds it for the control channel's
 * `error` message. Code, exit code and cause are kept.
 * @throws TachyonError `INTERNAL` if `ref` is not a plain id (it ends up in a public message).
 */
export function withCorrelationId(err: TachyonError, ref: string): TachyonError {
  if (!CORRELATION_ID_PATTERN.test(ref)) {
    throw new TachyonError('INTERNAL', `not a correlation id: ${JSON.stringify(ref.slice(0, 80))}`);
  }
  const base = err.publicMessage.replace(/\s*\(ref [0-9A-Z]+\)\.?$/, '').replace(/\.$/, '');
  return new TachyonError(err.code, `${err.message} [ref ${ref}]`, {
    cause: err.cause ?? err,
    publicMessage: `${base} (ref ${ref})`,
    details: { ...(err.details ?? {}), correlationId: ref },
  });
}

/** The correlation id carried by an error made by {@link withCorrelationId}, if any. */
export function correlationIdOf(err: unknown): string | undefined {
  if (!(err instanceof TachyonError)) return undefined;
  const ref = err.details?.['correlationId'];
  return typeof ref === 'string' && CORRELATION_ID_PATTERN.test(ref) ? ref : undefined;
}
