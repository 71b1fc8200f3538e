/** The node API's error edge: every catalogue code has an HTTP status, and bodies stay sanitized. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_CODES, TachyonError, type ErrorCode } from '../../src/core/errors.js';
import { HTTP_STATUS, errorBody } from '../../src/node-api/http-errors.js';

describe('node API error mapping', () => {
  it('every code in the error catalogue has an HTTP status row (a new code without one fails here)', () => {
    const missing = (Object.keys(ERROR_CODES) as ErrorCode[]).filter((c) => HTTP_STATUS[c] === undefined);
    assert.deepEqual(missing, [], `codes without an HTTP status: ${missing.join(', ')}`);
    for (const [code, status] of Object.entries(HTTP_STATUS)) assert.ok(status >= 400 && status <= 599, `${code}: ${status}`);
  });

  it('a body carries the public message only: never the local message or details', () => {
    const e = new TachyonError('STORAGE_UNAVAILABLE', 'GET s3://secret-bucket/key failed: AccessDenied for AKIAEXAMPLE', { details: { bucket: 'secret-bucket' } });
    const body = JSON.stringify(errorBody(e, 'cid-1'));
    assert.doesNotMatch(body, /secret-bucket|AKIA|AccessDenied/);
    assert.match(body, /"code":"STORAGE_UNAVAILABLE"/);
    assert.match(body, /"correlation_id":"cid-1"/);
    const internal = JSON.stringify(errorBody(new TachyonError('CONFIG', 'bad /etc/tachyon/secret.json'), 'cid-2'));
    assert.doesNotMatch(internal, /etc|secret/);
    assert.match(internal, /"code":"INTERNAL"/);
  });
});
