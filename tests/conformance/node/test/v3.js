'use strict';

// Assertion helpers shared by the conformance suites (simulator and gateway): SDK error
// rendering, "must succeed" / "must fail with a V3 error" wrappers, bounded polling, and the
// notification check done with the SDK's own primitives (Rsa.verify over Formatter.response,
// AesGcm.decrypt). Protocol reference: shared/reference/wechatpay-v3.md.

const assert = require('node:assert/strict');
const { Rsa, Aes, Formatter } = require('wechatpay-axios-plugin');

const { AesGcm } = Aes;

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

/** Render an SDK/axios error with what the SDK saw (never the request config: it holds the key). */
function describeErr(e) {
  if (!e || typeof e !== 'object') return String(e);
  const r = e.response || {};
  let { data } = r;
  if (Buffer.isBuffer(data)) data = data.toString('utf8');
  const hdrs = r.headers ? JSON.stringify(typeof r.headers.toJSON === 'function' ? r.headers.toJSON() : r.headers) : '';
  const req = e.config ? `${(e.config.method || '').toUpperCase()} ${e.config.url}${e.config.params ? ` params=${JSON.stringify(e.config.params)}` : ''}${e.config.data ? ` body=${e.config.data}` : ''}` : '';
  return `[${e.code || e.name}] ${e.message}${req ? `\n  request: ${req}` : ''}${r.status ? `\n  response status: ${r.status}` : ''}${hdrs ? `\n  response headers: ${hdrs}` : ''}${data !== undefined ? `\n  response body: ${typeof data === 'string' ? data : JSON.stringify(data)}` : ''}`;
}

/** Await an SDK call that must succeed; on failure, fail with everything the SDK reported. */
async function ok(label, promise) {
  try {
    return await promise;
  } catch (e) {
    throw new Error(`${label} failed: ${describeErr(e)}`);
  }
}

/** Await an SDK call that must fail with a V3 error {code, message}; returns the AxiosError. */
async function apiError(label, promise, status, code) {
  let res;
  try {
    res = await promise;
  } catch (e) {
    assert.ok(e.response, `${label}: expected HTTP ${status} ${code}, got a non-HTTP error: ${describeErr(e)}`);
    assert.equal(e.response.status, status, `${label}: HTTP status\n${describeErr(e)}`);
    const body = e.response.data;
    assert.equal(typeof body, 'object', `${label}: error body must be JSON {code, message} (§6.1)\n${describeErr(e)}`);
    assert.equal(body.code, code, `${label}: error code\n${describeErr(e)}`);
    assert.equal(typeof body.message, 'string', `${label}: error message (§6.1)\n${describeErr(e)}`);
    assert.ok(body.message.length > 0, `${label}: error message must not be empty`);
    return e;
  }
  assert.fail(`${label}: expected HTTP ${status} ${code}, got HTTP ${res.status} ${JSON.stringify(res.data)}`);
  return undefined;
}

/** Call `fn` until `done(value)`, every intervalMs, failing after timeoutMs. */
async function pollUntil(label, fn, done, timeoutMs = 20000, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (done(last)) return last;
    if (Date.now() > deadline) {
      assert.fail(`${label}: condition not reached within ${timeoutMs} ms; last value: ${JSON.stringify(last && last.data !== undefined ? last.data : last)}`);
    }
    await sleep(intervalMs);
  }
}

/**
 * Verify and decrypt one received notification (§3) with the SDK's primitives.
 * platformKeys: {serial: KeyObject}; apiv3Key: the merchant's APIv3 key.
 * Returns {env, resource, serial}; throws (assertion) on any deviation.
 */
function openNotificationWith(rec, platformKeys, apiv3Key) {
  const h = rec.headers;
  const serial = h['wechatpay-serial'];
  const key = platformKeys[serial];
  assert.ok(key, `notification Wechatpay-Serial ${serial} names none of the kit's platform keys (${Object.keys(platformKeys)})`);
  assert.equal(h['wechatpay-signature-type'], 'WECHATPAY2-SHA256-RSA2048', 'notification Wechatpay-Signature-Type (§3.1)');
  assert.ok(h['wechatpay-timestamp'] && h['wechatpay-nonce'] && h['wechatpay-signature'], 'notification signature headers (§3.1)');
  const verified = Rsa.verify(
    Formatter.response(h['wechatpay-timestamp'], h['wechatpay-nonce'], rec.body),
    h['wechatpay-signature'],
    key,
  );
  assert.ok(verified, `notification signature does not verify with ${serial} (Rsa.verify over Formatter.response)`);
  const env = JSON.parse(rec.body);
  assert.equal(env.resource_type, 'encrypt-resource', 'resource_type (§3.2)');
  assert.equal(env.resource.algorithm, 'AEAD_AES_256_GCM', 'resource.algorithm (§3.2)');
  assert.equal(typeof env.resource.associated_data, 'string', 'resource.associated_data must be present (§3.2)');
  assert.equal(Buffer.byteLength(env.resource.nonce), 12, 'resource.nonce must be 12 bytes (§0)');
  assert.match(env.create_time, RFC3339, 'create_time RFC3339 (§3.2)');
  assert.ok(env.id, 'notification id');
  const plain = AesGcm.decrypt(env.resource.ciphertext, apiv3Key, env.resource.nonce, env.resource.associated_data);
  return { env, resource: JSON.parse(plain), serial };
}

module.exports = {
  RFC3339, sleep, describeErr, ok, apiError, pollUntil, openNotificationWith,
};
