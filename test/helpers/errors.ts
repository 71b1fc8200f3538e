/** Assertions about TachyonError codes. */
import assert from 'node:assert/strict';
import { TachyonError, type ErrorCode } from '../../src/core/errors.js';

/** Asserts that `fn` throws a TachyonError with `code` (and nothing else). */
export function throwsCode(fn: () => unknown, code: ErrorCode, what = ''): void {
  assert.throws(
    fn,
    (err: unknown) => {
      assert.ok(err instanceof TachyonError, `${what}: expected a TachyonError, got ${String(err)}`);
      assert.equal(err.code, code, `${what}: code ${err.code} (${err.message})`);
      return true;
    },
    `${what}: expected a TachyonError ${code}`,
  );
}

/** Asserts that the promise rejects with a TachyonError with `code`; returns the error. */
export async function rejectsCode(p: Promise<unknown>, code: ErrorCode, what = ''): Promise<TachyonError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, `${what}: expected a rejection with ${code}, but it resolved`);
  assert.ok(caught instanceof TachyonError, `${what}: expected a TachyonError, got ${String(caught)}`);
  assert.equal(caught.code, code, `${what}: code ${caught.code} (${caught.message})`);
  return caught;
}
