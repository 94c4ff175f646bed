'use strict';

// Conformance of the paygate GATEWAY: the real `wechatpay-axios-plugin` SDK is the merchant,
// exactly as with real WeChat Pay, only its baseURL points at `paygate serve`. The gateway
// collects through its embedded sandbox channel (an in-process WeChat Pay simulator); the sandbox
// payer (POST /sandbox/v1/pay on the gateway) pays at the channel so the real callback path runs.
// The SDK verifies the signature of every 2xx response itself (never disabled here).
// Protocol reference: shared/reference/wechatpay-v3.md (section numbers below refer to it).
//
// The whole file runs once per store: SQLite (always) and PostgreSQL in a fresh private schema
// when PAYGATE_TEST_DATABASE_URL is set. In each, both key modes:
//   public-key mode: certs = {PUB_KEY_ID_...: pub_key.pem}, every request sends Wechatpay-Serial,
//                    so the gateway must sign with its public-key key pair (§1.3, §2.3);
//   certificate mode: certs = {platform_serial_no: platform_cert.pem}, no Wechatpay-Serial,
//                    so the gateway must sign with its platform certificate's key.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const {
  describe, it, before, after,
} = require('node:test');

const {
  Wechatpay, Rsa, Aes, Formatter,
} = require('wechatpay-axios-plugin');

const { AesGcm } = Aes;

const {
  startGateway, startNotifyServer, uniqueNo, sleep, pgSchema,
} = require('./harness');
const {
  RFC3339, ok, apiError, pollUntil, openNotificationWith,
} = require('./v3');

const TRADE_TYPE = {
  native: 'NATIVE', jsapi: 'JSAPI', app: 'APP', h5: 'MWEB',
};
const OPENID = 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o';
const TRANSACTION_ID = /^\d{28}$/;
const KIT_FIELDS = ['mchid', 'appid', 'serial_no', 'apiv3_key', 'base_url', 'platform_public_key_id', 'platform_serial_no'];

const BACKENDS = [{ name: 'SQLite' }];
if (process.env.PAYGATE_TEST_DATABASE_URL) {
  BACKENDS.push({ name: 'PostgreSQL', pg: process.env.PAYGATE_TEST_DATABASE_URL });
}

/** The admin API answers a kit as {merchant: {merchant.json}, apiclient_key_pem, ...}: the harness's shape. */
function kitFromAdmin(kit) {
  return {
    merchant: kit.merchant,
    privateKey: kit.apiclient_key_pem,
    merchantCert: kit.apiclient_cert_pem,
    pubKey: kit.pub_key_pem,
    platformCert: kit.platform_cert_pem,
  };
}

/**
 * A request signed by hand with the SDK's primitives (Formatter.request + Rsa.sign), so a test
 * controls the timestamp and nonce. Resolves with {status, json, text}.
 */
async function rawSigned(mch, method, target, body, { timestamp = Formatter.timestamp(), nonce = Formatter.nonce() } = {}) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  const signature = Rsa.sign(Formatter.request(method, target, timestamp, nonce, payload), Rsa.from(mch.kit.privateKey));
  const res = await fetch(new URL(target.replace(/^\//, ''), mch.m.base_url), {
    method,
    headers: {
      Authorization: Formatter.authorization(mch.m.mchid, nonce, signature, timestamp, mch.m.serial_no),
      Accept: 'application/json',
      ...(payload ? { 'Content-Type': 'application/json' } : {}),
    },
    body: payload || undefined,
    signal: AbortSignal.timeout(20000),
  });
  const text = await res.text();
  let json;
  try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
  return { status: res.status, json, text };
}

/** One gateway merchant in one key mode, with its SDK client. */
class Merchant {
  constructor(ctx, kit, mode, notifySuffix) {
    this.ctx = ctx;
    this.kit = kit;
    this.mode = mode;
    this.m = kit.merchant;
    this.platformKeys = {
      [this.m.platform_public_key_id]: Rsa.from(kit.pubKey, Rsa.KEY_TYPE_PUBLIC),
      [this.m.platform_serial_no]: Rsa.from(kit.platformCert, Rsa.KEY_TYPE_PUBLIC),
    };
    this.expectedSerial = mode === 'pubkey' ? this.m.platform_public_key_id : this.m.platform_serial_no;
    this.notifySuffix = notifySuffix;
    this.notifyUrl = ctx.notify.url(notifySuffix);
    this.wx = this.client();
  }

  client(certsOverride) {
    const certs = certsOverride || (this.mode === 'pubkey'
      ? { [this.m.platform_public_key_id]: this.kit.pubKey }
      : { [this.m.platform_serial_no]: this.kit.platformCert });
    const headers = this.mode === 'pubkey' ? { 'Wechatpay-Serial': this.m.platform_public_key_id } : {};
    return new Wechatpay({
      mchid: this.m.mchid,
      serial: this.m.serial_no,
      privateKey: this.kit.privateKey,
      certs,
      baseURL: this.m.base_url,
      headers,
      timeout: 20000,
    });
  }

  prepayBody(type, {
    outTradeNo, total = 101, description = 'Image形象店-深圳腾大-QQ公仔', attach = '自定义数据 paygate', notifyUrl,
  }) {
    const body = {
      appid: this.m.appid,
      mchid: this.m.mchid,
      description,
      attach,
      out_trade_no: outTradeNo,
      notify_url: notifyUrl || this.notifyUrl,
      amount: { total, currency: 'CNY' },
    };
    if (type === 'jsapi') body.payer = { openid: OPENID };
    if (type === 'h5') body.scene_info = { payer_client_ip: '127.0.0.1', h5_info: { type: 'Wap' } };
    return body;
  }

  prepay(type, opts) {
    return this.wx.v3.pay.transactions[type].post(this.prepayBody(type, opts));
  }

  queryByOutTradeNo(outTradeNo) {
    return this.wx.v3.pay.transactions.outTradeNo._out_trade_no_.get({ out_trade_no: outTradeNo, params: { mchid: this.m.mchid } });
  }

  queryById(transactionId) {
    return this.wx.v3.pay.transactions.id._transaction_id_.get({ transaction_id: transactionId, params: { mchid: this.m.mchid } });
  }

  close(outTradeNo) {
    return this.wx.v3.pay.transactions.outTradeNo._out_trade_no_.close.post({ mchid: this.m.mchid }, { out_trade_no: outTradeNo });
  }

  /** The paygate extension: client-side invocation parameters (POST /paygate/v1/pay-params). */
  payParams(outTradeNo, tradeType) {
    return this.wx.paygate.v1.payParams.post({ out_trade_no: outTradeNo, trade_type: tradeType });
  }

  /** The gateway's sandbox payer (unsigned JSON). Resolves with {status, text}. */
  async sandboxPay(outTradeNo, result = 'SUCCESS') {
    const res = await fetch(new URL('sandbox/v1/pay', this.ctx.gw.baseURL), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ mchid: this.m.mchid, out_trade_no: outTradeNo, result }),
      signal: AbortSignal.timeout(20000),
    });
    return { status: res.status, text: await res.text() };
  }

  async payViaSandbox(outTradeNo, result = 'SUCCESS') {
    const r = await this.sandboxPay(outTradeNo, result);
    assert.ok(r.status >= 200 && r.status < 300, `sandbox pay ${outTradeNo} ${result} -> HTTP ${r.status}: ${r.text}`);
    return r;
  }

  /** prepay + sandbox pay + query until SUCCESS; returns the Transaction. */
  async paidOrder(type = 'native', { total = 101, notifyUrl } = {}) {
    const outTradeNo = uniqueNo(`gw${this.mode[0]}${type}`);
    await ok(`prepay ${type}`, this.prepay(type, { outTradeNo, total, notifyUrl }));
    await this.payViaSandbox(outTradeNo);
    const res = await pollUntil(
      `order ${outTradeNo} to become SUCCESS at the gateway`,
      () => ok('query by out_trade_no', this.queryByOutTradeNo(outTradeNo)),
      (r) => r.data.trade_state === 'SUCCESS',
      15000,
    );
    return res.data;
  }

  open(rec) {
    return openNotificationWith(rec, this.platformKeys, this.m.apiv3_key);
  }

  /** Deliveries on this merchant's notify path (or `suffix`) whose plaintext is about outTradeNo. */
  deliveries(outTradeNo, suffix = this.notifySuffix) {
    return this.ctx.notify.received.filter((n) => n.path.endsWith(`/${suffix}`) && (() => {
      try { return this.open(n).resource.out_trade_no === outTradeNo; } catch { return false; }
    })());
  }

  waitNotification(outTradeNo, { suffix = this.notifySuffix, count = 1, timeoutMs = 15000 } = {}) {
    return this.ctx.notify.waitFor(() => {
      const got = this.deliveries(outTradeNo, suffix);
      return got.length >= count ? got : null;
    }, timeoutMs, `${count} TRANSACTION.SUCCESS notification(s) for ${outTradeNo} on /notify/${suffix}`);
  }
}

function checkTransaction(t, mch, { outTradeNo, total, type }) {
  assert.equal(t.out_trade_no, outTradeNo, 'out_trade_no');
  assert.equal(t.mchid, mch.m.mchid, 'mchid is the merchant\'s own (not the channel\'s)');
  assert.equal(t.appid, mch.m.appid, 'appid is the merchant\'s own (not the channel\'s)');
  assert.equal(t.sp_mchid, undefined, 'a direct merchant\'s Transaction has no sp_mchid (§4.5)');
  assert.equal(t.sub_mchid, undefined, 'a direct merchant\'s Transaction has no sub_mchid (§4.5)');
  if (type) assert.equal(t.trade_type, TRADE_TYPE[type], 'trade_type (§4.5)');
  assert.equal(t.attach, '自定义数据 paygate', 'attach is echoed (§4.1)');
  assert.equal(t.amount.total, total, 'amount.total');
  assert.ok(t.amount.currency === undefined || t.amount.currency === 'CNY', 'amount.currency');
}

function checkPaidTransaction(t, mch, opts) {
  checkTransaction(t, mch, opts);
  assert.equal(t.trade_state, 'SUCCESS', 'trade_state');
  assert.match(t.transaction_id, TRANSACTION_ID, 'transaction_id in WeChat\'s 28-digit shape');
  assert.match(t.success_time, RFC3339, 'success_time RFC3339 (§4.5)');
  assert.equal(t.amount.payer_total, opts.total, 'amount.payer_total (no coupons)');
  assert.ok(t.payer && typeof t.payer === 'object', 'payer');
}

for (const backend of BACKENDS) {
  describe(`paygate gateway (${backend.name} store) driven by wechatpay-axios-plugin`, () => {
    const ctx = {};

    before(async () => {
      ctx.notify = await startNotifyServer();
      if (backend.pg) ctx.schema = pgSchema(backend.pg, 'conf_node');
      ctx.gw = await startGateway({ databaseUrl: ctx.schema && ctx.schema.url, timeScale: 1000, merchantsBeforeStart: ['offline'] });
      ctx.kit = await ctx.gw.createMerchantCli(`conformance-node-${backend.name}`);
    });

    after(async () => {
      if (ctx.gw) await ctx.gw.stop();
      if (ctx.notify) await ctx.notify.close();
      if (ctx.schema) await ctx.schema.drop();
    });

    it('`paygate merchant create` writes a kit: merchant.json fields, base_url = the gateway', () => {
      const m = ctx.kit.merchant;
      for (const f of KIT_FIELDS) assert.equal(typeof m[f], 'string', `merchant.json ${f}`);
      assert.equal(Buffer.byteLength(m.apiv3_key), 32, 'apiv3_key is 32 bytes');
      assert.match(m.platform_public_key_id, /^PUB_KEY_ID_/, 'platform_public_key_id');
      assert.match(m.platform_serial_no, /^[0-9A-F]+$/, 'platform_serial_no uppercase hex');
      assert.equal(new URL(m.base_url).origin, new URL(ctx.gw.baseURL).origin, 'base_url is the gateway');
      assert.equal(m.sp_mchid, undefined, 'a gateway merchant is a direct merchant');
      for (const f of ['privateKey', 'merchantCert', 'pubKey', 'platformCert']) assert.ok(ctx.kit[f].startsWith('-----BEGIN '), `${f} is PEM`);
      const cert = new crypto.X509Certificate(ctx.kit.merchantCert);
      assert.equal(BigInt(`0x${cert.serialNumber}`), BigInt(`0x${m.serial_no}`), 'apiclient_cert.pem serial == serial_no');
      const pc = new crypto.X509Certificate(ctx.kit.platformCert);
      assert.equal(BigInt(`0x${pc.serialNumber}`), BigInt(`0x${m.platform_serial_no}`), 'platform_cert.pem serial == platform_serial_no');
    });

    it('a merchant created by the CLI before the server started works (same store)', async () => {
      const kit = ctx.gw.kitsBeforeStart.offline;
      assert.equal(new URL(kit.merchant.base_url).origin, new URL(ctx.gw.baseURL).origin, 'base_url is the gateway');
      assert.notEqual(kit.merchant.mchid, ctx.kit.merchant.mchid, 'distinct merchants');
      const mch = new Merchant(ctx, kit, 'cert', 'gw-offline');
      const outTradeNo = uniqueNo('gwoffline');
      const res = await ok('prepay with the offline-created kit', mch.prepay('native', { outTradeNo }));
      assert.equal(res.status, 200);
      const q = await ok('query', mch.queryByOutTradeNo(outTradeNo));
      assert.equal(q.data.mchid, kit.merchant.mchid);
    });

    it('GET /healthz and /readyz answer 200', async () => {
      for (const p of ['healthz', 'readyz']) {
        const res = await fetch(new URL(p, ctx.gw.baseURL), { signal: AbortSignal.timeout(10000) });
        assert.equal(res.status, 200, `/${p}`);
      }
    });

    for (const mode of ['pubkey', 'cert']) {
      describe(mode === 'pubkey' ? 'public-key mode (Wechatpay-Serial sent)' : 'platform-certificate mode (no Wechatpay-Serial)', () => {
        let mch;
        before(() => { mch = new Merchant(ctx, ctx.kit, mode, `gw-${mode}`); });

        for (const type of ['native', 'jsapi', 'app', 'h5']) {
          it(`prepay ${type} (§4.1): SDK verifies the signed 200; query by out_trade_no says NOTPAY`, async () => {
            const outTradeNo = uniqueNo(`gw${mode[0]}pre${type}`);
            const res = await ok(`prepay ${type}`, mch.prepay(type, { outTradeNo }));
            assert.equal(res.status, 200);
            assert.equal(res.headers['wechatpay-serial'], mch.expectedSerial, 'response signed with the key the request selected (§1.3)');
            if (type === 'native') assert.match(res.data.code_url, /^weixin:\/\//, 'code_url');
            if (type === 'jsapi' || type === 'app') {
              assert.equal(typeof res.data.prepay_id, 'string', 'prepay_id');
              assert.ok(res.data.prepay_id.length > 0 && res.data.prepay_id.length <= 64, 'prepay_id string(64)');
            }
            if (type === 'h5') assert.match(res.data.h5_url, /^https?:\/\//, 'h5_url');
            const q = await ok('query unpaid order by out_trade_no', mch.queryByOutTradeNo(outTradeNo));
            checkTransaction(q.data, mch, { outTradeNo, total: 101, type });
            assert.equal(q.data.trade_state, 'NOTPAY', 'fresh order is NOTPAY (§4.5)');
          });
        }

        it('2xx responses carry the §0 headers (Wechatpay-Signature-Type, Request-ID, JSON content type)', async () => {
          const res = await ok('prepay native', mch.prepay('native', { outTradeNo: uniqueNo('gwhdr') }));
          assert.equal(res.headers['wechatpay-signature-type'], 'WECHATPAY2-SHA256-RSA2048');
          assert.ok(res.headers['request-id'], 'Request-ID');
          assert.match(res.headers['content-type'], /^application\/json/);
          assert.ok(Math.abs(Number(res.headers['wechatpay-timestamp']) - Formatter.timestamp()) <= 300, 'timestamp within 5 min');
        });

        it('the SDK really verifies: a wrong key under the right serial is rejected', async () => {
          const { publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
          const wrong = mch.client({ [mch.expectedSerial]: publicKey.export({ type: 'spki', format: 'pem' }) });
          await assert.rejects(
            wrong.v3.pay.transactions.native.post(mch.prepayBody('native', { outTradeNo: uniqueNo('gwwrong') })),
            (e) => e.code === 'EV3_RES_HEADER_SIGNATURE_DIGEST',
          );
        });

        for (const type of ['native', 'jsapi']) {
          it(`same out_trade_no with identical parameters (${type}) -> the same answer again (§4.6)`, async () => {
            const outTradeNo = uniqueNo(`gw${mode[0]}same${type}`);
            const a = await ok('first prepay', mch.prepay(type, { outTradeNo }));
            const b = await ok('identical prepay', mch.prepay(type, { outTradeNo }));
            assert.equal(b.status, 200);
            assert.deepEqual(b.data, a.data, 'an identical re-prepay answers the same credential');
          });
        }

        it('same out_trade_no with other parameters -> 403 OUT_TRADE_NO_USED (§4.6, §6)', async () => {
          const outTradeNo = uniqueNo('gwdup');
          await ok('first prepay', mch.prepay('native', { outTradeNo, total: 101 }));
          await apiError('prepay with another amount', mch.prepay('native', { outTradeNo, total: 202 }), 403, 'OUT_TRADE_NO_USED');
          await apiError('prepay with another description', mch.prepay('native', { outTradeNo, description: 'another' }), 403, 'OUT_TRADE_NO_USED');
          await apiError('prepay as another product (jsapi)', mch.prepay('jsapi', { outTradeNo }), 403, 'OUT_TRADE_NO_USED');
          const q = await ok('query', mch.queryByOutTradeNo(outTradeNo));
          assert.equal(q.data.amount.total, 101, 'the first order is unchanged');
        });

        it('query of a missing order -> 404 ORDER_NOT_EXIST, by out_trade_no and by transaction_id (§4.3)', async () => {
          await apiError('query missing by out_trade_no', mch.queryByOutTradeNo(uniqueNo('gwmissing')), 404, 'ORDER_NOT_EXIST');
          const fakeId = `4200${Date.now()}${String(Math.floor(Math.random() * 1e11)).padStart(11, '0')}`.slice(0, 28);
          assert.match(fakeId, TRANSACTION_ID);
          await apiError('query missing by transaction_id', mch.queryById(fakeId), 404, 'ORDER_NOT_EXIST');
        });

        it('pay via the sandbox payer: NOTPAY -> SUCCESS by out_trade_no and by transaction_id; TRANSACTION.SUCCESS notification verified (Rsa.verify) and decrypted (AesGcm) (§3, §4.3, §4.5)', async () => {
          const outTradeNo = uniqueNo(`gw${mode[0]}pay`);
          await ok('prepay jsapi', mch.prepay('jsapi', { outTradeNo, total: 333 }));
          const before0 = await ok('query before payment', mch.queryByOutTradeNo(outTradeNo));
          assert.equal(before0.data.trade_state, 'NOTPAY');
          await mch.payViaSandbox(outTradeNo);
          const paid = await pollUntil(
            `order ${outTradeNo} to become SUCCESS`,
            () => ok('query by out_trade_no', mch.queryByOutTradeNo(outTradeNo)),
            (r) => r.data.trade_state === 'SUCCESS',
            15000,
          );
          const t = paid.data;
          checkPaidTransaction(t, mch, { outTradeNo, total: 333, type: 'jsapi' });
          const byId = await ok('query by transaction_id', mch.queryById(t.transaction_id));
          assert.equal(byId.headers['wechatpay-serial'], mch.expectedSerial);
          checkPaidTransaction(byId.data, mch, { outTradeNo, total: 333, type: 'jsapi' });
          assert.equal(byId.data.transaction_id, t.transaction_id);

          const [rec] = await mch.waitNotification(outTradeNo);
          assert.equal(rec.method, 'POST');
          assert.match(rec.headers['content-type'] || '', /^application\/json/, 'notification Content-Type (§3.1)');
          const { env, resource, serial } = mch.open(rec);
          assert.equal(serial, mch.expectedSerial, 'the notification is signed with the key family the merchant asked for at prepay (a public-key-only SDK holds no certificate)');
          assert.equal(env.event_type, 'TRANSACTION.SUCCESS', 'event_type (§3.2)');
          assert.equal(env.resource.original_type, 'transaction', 'original_type (§3.2)');
          checkPaidTransaction(resource, mch, { outTradeNo, total: 333, type: 'jsapi' });
          assert.equal(resource.transaction_id, t.transaction_id, 'the notification names the transaction_id the query gives');
          // acknowledged with 204 at once: no redelivery (retries come after 15 ms at time scale 1000)
          await sleep(500);
          assert.equal(mch.deliveries(outTradeNo).length, 1, 'an acknowledged notification is not delivered again');
        });

        it('a notification answered with 500 is delivered again with the same id; none after the 204 (§3.4)', async () => {
          const suffix = `gw-${mode}/flaky`;
          const t = await mch.paidOrder('native', { total: 404, notifyUrl: ctx.notify.url(suffix) });
          const [first, second] = await mch.waitNotification(t.out_trade_no, { suffix, count: 2 });
          assert.equal(first.answered, 500);
          assert.equal(second.answered, 204);
          const a = mch.open(first);
          const b = mch.open(second);
          assert.equal(b.env.id, a.env.id, 'a retry carries the same notification id');
          assert.equal(b.resource.transaction_id, t.transaction_id);
          await sleep(500);
          assert.equal(mch.deliveries(t.out_trade_no, suffix).length, 2, 'no delivery after the 204 acknowledgement');
        });

        it('a 200 answer with a JSON body is an acknowledgement too (§3.4)', async () => {
          const suffix = `gw-${mode}/ok200`;
          const t = await mch.paidOrder('native', { total: 405, notifyUrl: ctx.notify.url(suffix) });
          const [first] = await mch.waitNotification(t.out_trade_no, { suffix });
          assert.equal(first.answered, 200);
          await sleep(500);
          assert.equal(mch.deliveries(t.out_trade_no, suffix).length, 1, 'no redelivery after a 200');
        });

        it('a PAYERROR payment leaves the order unpaid and sends no TRANSACTION.SUCCESS (§4.5)', async () => {
          const outTradeNo = uniqueNo(`gw${mode[0]}perr`);
          await ok('prepay native', mch.prepay('native', { outTradeNo }));
          await mch.payViaSandbox(outTradeNo, 'PAYERROR');
          await sleep(500);
          const q = await ok('query', mch.queryByOutTradeNo(outTradeNo));
          assert.ok(['NOTPAY', 'PAYERROR'].includes(q.data.trade_state), `trade_state after PAYERROR: ${q.data.trade_state}`);
          assert.equal(mch.deliveries(outTradeNo).length, 0, 'no notification for a failed payment');
        });

        it('close -> 204 signed with an empty body; re-entrant; CLOSED; re-prepay -> 400 ORDER_CLOSED (§4.4, §4.6)', async () => {
          const outTradeNo = uniqueNo(`gw${mode[0]}close`);
          await ok('prepay', mch.prepay('native', { outTradeNo }));
          const res = await ok('close', mch.close(outTradeNo));
          assert.equal(res.status, 204);
          assert.ok(res.data === '' || res.data === undefined || res.data === null, `204 has an empty body, got ${JSON.stringify(res.data)}`);
          assert.equal(res.headers['wechatpay-serial'], mch.expectedSerial, '204 signed with the selected key');
          const again = await ok('close again', mch.close(outTradeNo));
          assert.equal(again.status, 204);
          const q = await ok('query closed', mch.queryByOutTradeNo(outTradeNo));
          assert.equal(q.data.trade_state, 'CLOSED');
          await apiError('re-prepay a closed order', mch.prepay('native', { outTradeNo }), 400, 'ORDER_CLOSED');
        });

        it('close of a paid order -> 400 ORDER_PAID; identical re-prepay -> 400 ORDER_PAID; still SUCCESS (§4.4, §4.6)', async () => {
          const t = await mch.paidOrder('native', { total: 212 });
          await apiError('close a paid order', mch.close(t.out_trade_no), 400, 'ORDER_PAID');
          await apiError('re-prepay a paid order', mch.prepay('native', { outTradeNo: t.out_trade_no, total: 212 }), 400, 'ORDER_PAID');
          const q = await ok('query', mch.queryById(t.transaction_id));
          assert.equal(q.data.trade_state, 'SUCCESS');
        });

        it('close of a missing order -> 404 ORDER_NOT_EXIST', async () => {
          await apiError('close missing', mch.close(uniqueNo('gwnoclose')), 404, 'ORDER_NOT_EXIST');
        });

        it('pay-params JSAPI (paygate extension, §5 shape): appId, timeStamp, nonceStr, package=prepay_id=<the prepay\'s>, signType RSA, paySign', async () => {
          const outTradeNo = uniqueNo(`gw${mode[0]}ppj`);
          const pre = await ok('prepay jsapi', mch.prepay('jsapi', { outTradeNo }));
          const res = await ok('pay-params JSAPI', mch.payParams(outTradeNo, 'JSAPI'));
          assert.equal(res.status, 200);
          assert.equal(res.headers['wechatpay-serial'], mch.expectedSerial, 'pay-params answer signed like any merchant call');
          const p = res.data;
          assert.deepEqual(Object.keys(p).sort(), ['appId', 'nonceStr', 'package', 'paySign', 'signType', 'timeStamp'], `JSAPI pay params keys: ${JSON.stringify(p)}`);
          assert.equal(typeof p.appId, 'string');
          assert.ok(p.appId.length > 0);
          assert.match(p.timeStamp, /^\d{10}$/, 'timeStamp: Unix seconds as a string');
          assert.ok(Math.abs(Number(p.timeStamp) - Formatter.timestamp()) <= 300, 'timeStamp is now');
          assert.ok(typeof p.nonceStr === 'string' && p.nonceStr.length > 0 && p.nonceStr.length <= 32, 'nonceStr');
          assert.equal(p.package, `prepay_id=${pre.data.prepay_id}`, 'package carries the prepay_id the prepay returned');
          assert.equal(p.signType, 'RSA');
          assert.equal(Buffer.from(p.paySign, 'base64').length, 256, 'paySign is base64 of an RSA-2048 signature');
        });

        it('pay-params APP (paygate extension, §5 shape): appid, partnerid, prepayid=<the prepay\'s>, package Sign=WXPay, noncestr, timestamp, sign', async () => {
          const outTradeNo = uniqueNo(`gw${mode[0]}ppa`);
          const pre = await ok('prepay app', mch.prepay('app', { outTradeNo }));
          const res = await ok('pay-params APP', mch.payParams(outTradeNo, 'APP'));
          assert.equal(res.status, 200);
          const p = res.data;
          assert.deepEqual(Object.keys(p).sort(), ['appid', 'noncestr', 'package', 'partnerid', 'prepayid', 'sign', 'timestamp'], `APP pay params keys: ${JSON.stringify(p)}`);
          assert.ok(typeof p.appid === 'string' && p.appid.length > 0, 'appid');
          assert.ok(typeof p.partnerid === 'string' && p.partnerid.length > 0, 'partnerid');
          assert.equal(p.prepayid, pre.data.prepay_id, 'prepayid is the prepay_id the prepay returned');
          assert.equal(p.package, 'Sign=WXPay');
          assert.ok(typeof p.noncestr === 'string' && p.noncestr.length > 0, 'noncestr');
          assert.match(p.timestamp, /^\d{10}$/, 'timestamp: Unix seconds as a string');
          assert.equal(Buffer.from(p.sign, 'base64').length, 256, 'sign is base64 of an RSA-2048 signature');
        });

        it('pay-params for a missing order -> 404 ORDER_NOT_EXIST', async () => {
          await apiError('pay-params missing', mch.payParams(uniqueNo('gwppmiss'), 'JSAPI'), 404, 'ORDER_NOT_EXIST');
        });

        it('/v3/certificates (§4.9): verified by the SDK, decrypted with the merchant\'s APIv3 key (AesGcm), serial == platform_serial_no', async () => {
          const res = await ok('GET /v3/certificates', mch.wx.v3.certificates.get());
          assert.equal(res.headers['wechatpay-serial'], mch.expectedSerial);
          const list = res.data.data;
          assert.ok(Array.isArray(list) && list.length > 0, 'data[] not empty');
          const certPub = mch.platformKeys[mch.m.platform_serial_no].export({ type: 'spki', format: 'der' });
          let matched = false;
          for (const c of list) {
            for (const f of ['serial_no', 'effective_time', 'expire_time']) assert.equal(typeof c[f], 'string', f);
            assert.match(c.effective_time, RFC3339);
            assert.match(c.expire_time, RFC3339);
            const ec = c.encrypt_certificate;
            assert.equal(ec.algorithm, 'AEAD_AES_256_GCM');
            assert.equal(ec.associated_data, 'certificate');
            assert.equal(Buffer.byteLength(ec.nonce), 12, 'nonce is 12 bytes');
            const pem = AesGcm.decrypt(ec.ciphertext, mch.m.apiv3_key, ec.nonce, ec.associated_data);
            assert.match(pem, /^-----BEGIN CERTIFICATE-----/);
            const x509 = new crypto.X509Certificate(pem);
            assert.equal(BigInt(`0x${x509.serialNumber}`), BigInt(`0x${c.serial_no}`), 'decrypted certificate serial == serial_no');
            assert.match(c.serial_no, /^[0-9A-F]+$/, 'serial_no uppercase hex');
            if (c.serial_no === mch.m.platform_serial_no) {
              matched = true;
              assert.ok(x509.publicKey.export({ type: 'spki', format: 'der' }).equals(certPub), 'same key as platform_cert.pem');
            }
          }
          assert.ok(matched, `the list contains platform_serial_no ${mch.m.platform_serial_no}`);
        });

        it('a request signed with another private key -> 401 SIGN_ERROR (§1.2)', async () => {
          const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
          const impostor = new Wechatpay({
            mchid: mch.m.mchid,
            serial: mch.m.serial_no,
            privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }),
            certs: { [mch.expectedSerial]: mode === 'pubkey' ? mch.kit.pubKey : mch.kit.platformCert },
            baseURL: mch.m.base_url,
            headers: mode === 'pubkey' ? { 'Wechatpay-Serial': mch.m.platform_public_key_id } : {},
          });
          await apiError('prepay signed with a wrong key', impostor.v3.pay.transactions.native.post(mch.prepayBody('native', { outTradeNo: uniqueNo('gwbadsig') })), 401, 'SIGN_ERROR');
        });

        it('a replayed nonce and a stale timestamp -> 401 SIGN_ERROR (§1.2, DESIGN request path)', async () => {
          const target = '/v3/pay/transactions/native';
          const body = mch.prepayBody('native', { outTradeNo: uniqueNo('gwreplay') });
          const nonce = Formatter.nonce();
          const timestamp = Formatter.timestamp();
          const first = await rawSigned(mch, 'POST', target, body, { nonce, timestamp });
          assert.equal(first.status, 200, `hand-signed prepay: HTTP ${first.status} ${first.text}`);
          const replay = await rawSigned(mch, 'POST', target, body, { nonce, timestamp });
          assert.equal(replay.status, 401, `the same signed request again (replayed nonce): HTTP ${replay.status} ${replay.text}`);
          assert.equal(replay.json && replay.json.code, 'SIGN_ERROR', replay.text);
          const stale = await rawSigned(mch, 'POST', target, mch.prepayBody('native', { outTradeNo: uniqueNo('gwstale') }), { timestamp: timestamp - 600 });
          assert.equal(stale.status, 401, `a request signed 10 min ago: HTTP ${stale.status} ${stale.text}`);
          assert.equal(stale.json && stale.json.code, 'SIGN_ERROR', stale.text);
        });

        it('invalid prepay parameters -> 400 PARAM_ERROR (§4.1, §8)', async () => {
          const cases = [
            ['amount.total = 0', (b) => { b.amount.total = 0; }],
            ['out_trade_no of 5 chars', (b) => { b.out_trade_no = 'ab123'; }],
            ['out_trade_no with a space', (b) => { b.out_trade_no = 'ab 12345'; }],
            ['no description', (b) => { delete b.description; }],
            ['no notify_url', (b) => { delete b.notify_url; }],
            ['description with a 4-byte character', (b) => { b.description = 'emoji 😀'; }],
          ];
          for (const [label, mutate] of cases) {
            const body = mch.prepayBody('native', { outTradeNo: uniqueNo('gwbad') });
            mutate(body);
            await apiError(`prepay with ${label}`, mch.wx.v3.pay.transactions.native.post(body), 400, 'PARAM_ERROR');
          }
          const jsapi = mch.prepayBody('jsapi', { outTradeNo: uniqueNo('gwnoopenid') });
          delete jsapi.payer;
          await assert.rejects(mch.wx.v3.pay.transactions.jsapi.post(jsapi), (e) => e.response && e.response.status === 400, 'JSAPI without payer.openid -> 400 (§4.1)');
        });

        it('prepay naming another mchid than the signer, or an appid not the merchant\'s, is refused', async () => {
          const other = mch.prepayBody('native', { outTradeNo: uniqueNo('gwothermch') });
          other.mchid = '1900000109';
          await assert.rejects(mch.wx.v3.pay.transactions.native.post(other), (e) => e.response && e.response.status >= 400 && e.response.status < 500, 'body mchid != Authorization mchid -> 4xx (§1.1)');
          const app = mch.prepayBody('native', { outTradeNo: uniqueNo('gwotherapp') });
          app.appid = 'wx0000000000000000';
          await apiError('prepay with an appid not bound to the merchant', mch.wx.v3.pay.transactions.native.post(app), 400, 'APPID_MCHID_NOT_MATCH');
        });

        it('a closed order cannot be paid: the sandbox payer is refused, the order stays CLOSED, no notification (§4.4, DESIGN rule 3)', async () => {
          const outTradeNo = uniqueNo(`gw${mode[0]}cpay`);
          await ok('prepay', mch.prepay('native', { outTradeNo }));
          await ok('close', mch.close(outTradeNo));
          const r = await mch.sandboxPay(outTradeNo);
          assert.ok(r.status >= 400, `paying a closed order must fail, got HTTP ${r.status}: ${r.text}`);
          await sleep(500);
          const q = await ok('query', mch.queryByOutTradeNo(outTradeNo));
          assert.equal(q.data.trade_state, 'CLOSED');
          assert.equal(mch.deliveries(outTradeNo).length, 0, 'no notification for a closed order');
        });
      });
    }

    describe('refunds (§4.7): the SDK as a merchant of the gateway', () => {
      const refunds = (mch) => mch.wx.v3.refund.domestic.refunds;
      const queryRefund = (mch, outRefundNo) => refunds(mch)._out_refund_no_.get({ out_refund_no: outRefundNo });

      /** The REFUND.* notification about outRefundNo on `suffix`, verified and decrypted. */
      const refundNotification = (mch, suffix, outRefundNo, eventType) => ctx.notify.waitFor(
        (all) => all.find((n) => {
          if (!n.path.endsWith(`/${suffix}`)) return false;
          try {
            const { env, resource } = mch.open(n);
            return env.event_type === eventType && resource.out_refund_no === outRefundNo ? n : null;
          } catch { return null; }
        }),
        15000,
        `${eventType} for ${outRefundNo} on /notify/${suffix}`,
      );

      for (const mode of ['pubkey', 'cert']) {
        it(`${mode}: create, idempotent repeat, query until SUCCESS; REFUND.SUCCESS carries the merchant's ids; the order is in REFUND`, async () => {
          const suffix = `gw-refund-${mode}`;
          const mch = new Merchant(ctx, ctx.kit, mode, suffix);
          const t = await mch.paidOrder('native', { total: 1000 });
          const outRefundNo = uniqueNo(`gwrf${mode[0]}`);
          const body = {
            out_trade_no: t.out_trade_no,
            out_refund_no: outRefundNo,
            reason: 'conformance',
            notify_url: mch.notifyUrl,
            amount: { refund: 300, total: 1000, currency: 'CNY' },
          };
          const created = await ok('refund create', refunds(mch).post(body));
          assert.equal(created.status, 200);
          assert.equal(created.headers['wechatpay-serial'], mch.expectedSerial, 'answer signed with the key the request selected');
          const r = created.data;
          assert.equal(r.out_refund_no, outRefundNo);
          assert.equal(r.out_trade_no, t.out_trade_no, 'the merchant\'s out_trade_no');
          assert.equal(r.transaction_id, t.transaction_id, 'the gateway\'s transaction_id');
          assert.match(r.refund_id, /^\d{29}$/, 'refund_id in WeChat\'s 29-digit shape');
          assert.ok(['PROCESSING', 'SUCCESS'].includes(r.status), `refund status ${r.status}`);
          assert.equal(r.channel, 'ORIGINAL');
          assert.equal(r.amount.refund, 300);
          assert.equal(r.amount.total, 1000);
          assert.equal(r.amount.currency, 'CNY');
          assert.match(r.create_time, RFC3339, 'create_time');

          const again = await ok('refund create again (same out_refund_no)', refunds(mch).post(body));
          assert.equal(again.data.refund_id, r.refund_id, 'same out_refund_no refunds once (§4.7)');

          const done = await pollUntil(
            'refund to reach SUCCESS',
            () => ok('refund query', queryRefund(mch, outRefundNo)),
            (x) => x.data.status === 'SUCCESS',
            20000,
          );
          assert.equal(done.data.refund_id, r.refund_id);
          assert.match(done.data.success_time, RFC3339, 'success_time once SUCCESS');
          assert.equal(done.headers['wechatpay-serial'], mch.expectedSerial);

          const q = await ok('order query', mch.queryByOutTradeNo(t.out_trade_no));
          assert.equal(q.data.trade_state, 'REFUND', 'a refunded order is in REFUND (§4.5)');

          const rec = await refundNotification(mch, suffix, outRefundNo, 'REFUND.SUCCESS');
          const { env, resource, serial } = mch.open(rec);
          assert.equal(serial, mch.expectedSerial, 'signed with the key the merchant\'s prepay selected');
          assert.equal(env.resource.original_type, 'refund');
          assert.equal(env.summary, '退款成功');
          assert.equal(resource.mchid, mch.m.mchid, 'the merchant\'s mchid, not the channel\'s');
          assert.equal(resource.sp_mchid, undefined);
          assert.equal(resource.sub_mchid, undefined);
          assert.equal(resource.transaction_id, t.transaction_id);
          assert.equal(resource.out_trade_no, t.out_trade_no);
          assert.equal(resource.refund_id, r.refund_id);
          assert.equal(resource.refund_status, 'SUCCESS', 'refund notifications use refund_status (§4.7)');
          assert.match(resource.success_time, RFC3339);
          assert.equal(resource.amount.refund, 300);
          assert.equal(resource.amount.total, 1000);
        });
      }

      it('partial refunds by transaction_id up to the paid amount; more -> 403 NOT_ENOUGH; other parameters under a used out_refund_no -> 400 INVALID_REQUEST', async () => {
        const mch = new Merchant(ctx, ctx.kit, 'pubkey', 'gw-refund-partial');
        const t = await mch.paidOrder('native', { total: 500 });
        const first = uniqueNo('gwrfp');
        await ok('refund 200 by transaction_id', refunds(mch).post({
          transaction_id: t.transaction_id, out_refund_no: first, amount: { refund: 200, total: 500, currency: 'CNY' },
        }));
        await ok('refund the other 300', refunds(mch).post({
          out_trade_no: t.out_trade_no, out_refund_no: uniqueNo('gwrfp'), amount: { refund: 300, total: 500, currency: 'CNY' },
        }));
        await apiError('a third refund of 1 fen', refunds(mch).post({
          out_trade_no: t.out_trade_no, out_refund_no: uniqueNo('gwrfp'), amount: { refund: 1, total: 500, currency: 'CNY' },
        }), 403, 'NOT_ENOUGH');
        await apiError('the first out_refund_no with another amount', refunds(mch).post({
          transaction_id: t.transaction_id, out_refund_no: first, amount: { refund: 201, total: 500, currency: 'CNY' },
        }), 400, 'INVALID_REQUEST');
        const q = await pollUntil(
          'the first refund to reach SUCCESS',
          () => ok('refund query', queryRefund(mch, first)),
          (x) => x.data.status === 'SUCCESS',
          20000,
        );
        assert.equal(q.data.amount.refund, 200);
      });

      it('an unpaid order -> 404 RESOURCE_NOT_EXISTS; a wrong amount.total -> 400 INVALID_REQUEST; an unknown out_refund_no -> 404 RESOURCE_NOT_EXISTS', async () => {
        const mch = new Merchant(ctx, ctx.kit, 'cert', 'gw-refund-bad');
        const unpaid = uniqueNo('gwrfu');
        await ok('prepay', mch.prepay('native', { outTradeNo: unpaid }));
        await apiError('refund of an unpaid order', refunds(mch).post({
          out_trade_no: unpaid, out_refund_no: uniqueNo('gwrfu'), amount: { refund: 1, total: 101, currency: 'CNY' },
        }), 404, 'RESOURCE_NOT_EXISTS');
        const t = await mch.paidOrder('native', { total: 101 });
        await apiError('refund with amount.total other than the order\'s', refunds(mch).post({
          out_trade_no: t.out_trade_no, out_refund_no: uniqueNo('gwrfu'), amount: { refund: 1, total: 100, currency: 'CNY' },
        }), 400, 'INVALID_REQUEST');
        await apiError('query of an out_refund_no never used', queryRefund(mch, uniqueNo('gwrfnone')), 404, 'RESOURCE_NOT_EXISTS');
      });
    });

    describe('operator (admin API)', () => {
      const st = {};

      it('the admin API refuses a request without the operator token', async () => {
        const res = await fetch(new URL('admin/v1/merchants', ctx.gw.baseURL), {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'nope' }), signal: AbortSignal.timeout(10000),
        });
        assert.ok([401, 403].includes(res.status), `admin without token -> HTTP ${res.status}: ${await res.text()}`);
      });

      it('the admin API accepts the operator token given in PAYGATE_OPERATOR_TOKEN', async () => {
        const res = await ctx.gw.admin('GET', 'admin/v1/orders/4200000000000000000000000000', undefined, { bearer: ctx.gw.token });
        assert.notEqual(res.status, 401, `admin with the PAYGATE_OPERATOR_TOKEN token -> HTTP ${res.status}: ${res.text}`);
        assert.notEqual(res.status, 403, `admin with the PAYGATE_OPERATOR_TOKEN token -> HTTP ${res.status}: ${res.text}`);
      });

      it('POST /admin/v1/merchants returns a kit that works with the SDK', async () => {
        const res = await ctx.gw.admin('POST', 'admin/v1/merchants', { name: `conformance-admin-${backend.name}` });
        assert.ok(res.status === 200 || res.status === 201, `create merchant -> HTTP ${res.status}: ${res.text}`);
        assert.ok(res.json && res.json.kit && res.json.merchant, `answer {merchant, kit}: ${res.text.slice(0, 500)}`);
        const kit = kitFromAdmin(res.json.kit);
        for (const f of KIT_FIELDS) assert.equal(typeof kit.merchant[f], 'string', `kit.merchant.${f}`);
        assert.notEqual(kit.merchant.mchid, ctx.kit.merchant.mchid, 'a new mchid');
        assert.equal(new URL(kit.merchant.base_url).origin, new URL(ctx.gw.baseURL).origin, 'base_url is the gateway');
        st.mch = new Merchant(ctx, kit, 'pubkey', 'gw-admin');
        const r = await ok('prepay with the admin-created kit', st.mch.prepay('native', { outTradeNo: uniqueNo('gwadm') }));
        assert.equal(r.status, 200);
      });

      it('a disabled merchant gets 403 NO_AUTH; after enable it works again', async () => {
        assert.ok(st.mch, 'needs the merchant of the previous step');
        const { mchid } = st.mch.m;
        const outTradeNo = uniqueNo('gwdis');
        await ok('prepay before disable', st.mch.prepay('native', { outTradeNo }));
        const d = await ctx.gw.admin('POST', `admin/v1/merchants/${mchid}/disable`);
        assert.ok(d.status >= 200 && d.status < 300, `disable -> HTTP ${d.status}: ${d.text}`);
        await apiError('prepay while disabled', st.mch.prepay('native', { outTradeNo: uniqueNo('gwdis2') }), 403, 'NO_AUTH');
        await apiError('query while disabled', st.mch.queryByOutTradeNo(outTradeNo), 403, 'NO_AUTH');
        await apiError('close while disabled', st.mch.close(outTradeNo), 403, 'NO_AUTH');
        const e = await ctx.gw.admin('POST', `admin/v1/merchants/${mchid}/enable`);
        assert.ok(e.status >= 200 && e.status < 300, `enable -> HTTP ${e.status}: ${e.text}`);
        const q = await ok('query after enable', st.mch.queryByOutTradeNo(outTradeNo));
        assert.equal(q.data.trade_state, 'NOTPAY');
        await ok('prepay after enable', st.mch.prepay('native', { outTradeNo: uniqueNo('gwen') }));
      });

      it('merchants are isolated: another merchant cannot see, close, pay-param or shadow an order', async () => {
        assert.ok(st.mch, 'needs the admin-created merchant of an earlier step');
        const a = new Merchant(ctx, ctx.kit, 'pubkey', 'gw-iso-a');
        const b = st.mch;
        const unpaidNo = uniqueNo('gwisoa');
        await ok('A prepays jsapi', a.prepay('jsapi', { outTradeNo: unpaidNo }));
        const paid = await a.paidOrder('native', { total: 606 });
        await apiError('B queries A\'s order under its own mchid', b.queryByOutTradeNo(unpaidNo), 404, 'ORDER_NOT_EXIST');
        await apiError('B queries A\'s transaction_id under its own mchid', b.queryById(paid.transaction_id), 404, 'ORDER_NOT_EXIST');
        const asA = (p) => assert.rejects(p, (e) => e.response && e.response.status >= 400 && e.response.status < 500);
        await asA(b.wx.v3.pay.transactions.outTradeNo._out_trade_no_.get({ out_trade_no: unpaidNo, params: { mchid: a.m.mchid } }), 'B queries with mchid=A');
        await asA(b.wx.v3.pay.transactions.id._transaction_id_.get({ transaction_id: paid.transaction_id, params: { mchid: a.m.mchid } }), 'B queries by id with mchid=A');
        await asA(b.wx.v3.pay.transactions.outTradeNo._out_trade_no_.close.post({ mchid: a.m.mchid }, { out_trade_no: unpaidNo }), 'B closes with mchid=A');
        await apiError('B closes A\'s order under its own mchid', b.close(unpaidNo), 404, 'ORDER_NOT_EXIST');
        await apiError('B asks pay-params for A\'s order', b.payParams(unpaidNo, 'JSAPI'), 404, 'ORDER_NOT_EXIST');
        const q = await ok('A queries its order', a.queryByOutTradeNo(unpaidNo));
        assert.equal(q.data.trade_state, 'NOTPAY', 'A\'s order is untouched');
        // the same out_trade_no is B's own business: a different order, not A's
        const mine = await ok('B prepays the same out_trade_no', b.prepay('native', { outTradeNo: unpaidNo, total: 777 }));
        assert.match(mine.data.code_url, /^weixin:\/\//);
        const qb = await ok('B queries its order', b.queryByOutTradeNo(unpaidNo));
        assert.equal(qb.data.amount.total, 777);
        assert.equal(qb.data.mchid, b.m.mchid);
        const qa = await ok('A queries again', a.queryByOutTradeNo(unpaidNo));
        assert.equal(qa.data.amount.total, 101, 'A\'s order is not B\'s');
      });

      it('GET /admin/v1/orders/{transaction_id}: the paid order with exactly one notification; resend delivers it again', async () => {
        const mch = new Merchant(ctx, ctx.kit, 'pubkey', 'gw-resend');
        const t = await mch.paidOrder('native', { total: 909 });
        await mch.waitNotification(t.out_trade_no);
        const view = () => ctx.gw.admin('GET', `admin/v1/orders/${t.transaction_id}`);
        const notifs = (res) => (res.json && Array.isArray(res.json.notifications) ? res.json.notifications : []);
        const deliveriesOf = (n) => (Array.isArray(n.deliveries) ? n.deliveries : []);
        // the delivery is recorded once the merchant's answer is in: poll for it (bounded)
        const res = await pollUntil(
          'admin order view to record the acknowledged delivery',
          view,
          (r) => r.status !== 200 || (notifs(r).length > 0 && deliveriesOf(notifs(r)[0]).length > 0),
          10000,
        );
        assert.equal(res.status, 200, `admin order -> HTTP ${res.status}: ${res.text}`);
        const v = res.json;
        assert.ok(v && v.order, `answer has an order: ${res.text.slice(0, 500)}`);
        assert.ok(JSON.stringify(v.order).includes(t.out_trade_no), 'the order is ours');
        assert.ok(Array.isArray(v.attempts) && v.attempts.length >= 1, `attempts[]: ${JSON.stringify(v.attempts)}`);
        assert.equal(notifs(res).length, 1, `exactly one notification record for one payment: ${JSON.stringify(v.notifications)}`);
        const n = notifs(res)[0];
        const rec = n.notification || n;
        assert.ok(rec.id, `notification record id: ${JSON.stringify(n)}`);
        const { env } = mch.open(mch.deliveries(t.out_trade_no)[0]);
        assert.equal(rec.id, env.id, 'the record is the notification the merchant received');
        assert.equal(deliveriesOf(n).length, 1, `one delivery (acknowledged at once): ${JSON.stringify(n.deliveries)}`);
        const r = await ctx.gw.admin('POST', `admin/v1/notifications/${rec.id}/resend`);
        assert.ok(r.status >= 200 && r.status < 300, `resend -> HTTP ${r.status}: ${r.text}`);
        const got = await mch.waitNotification(t.out_trade_no, { count: 2 });
        const b = mch.open(got[1]);
        assert.equal(b.resource.transaction_id, t.transaction_id);
        assert.equal(b.env.id, env.id, 'a resent notification keeps its id');
        const after2 = await pollUntil(
          'admin order view to record the resent delivery',
          view,
          (x) => notifs(x).length !== 1 || deliveriesOf(notifs(x)[0]).length >= 2,
          10000,
        );
        assert.equal(notifs(after2).length, 1, 'resend adds no notification record');
        assert.equal(deliveriesOf(notifs(after2)[0]).length, 2, 'resend adds a delivery');
      });
    });
  });
}

// Not in the runner's output otherwise: explain an empty PostgreSQL column.
if (!process.env.PAYGATE_TEST_DATABASE_URL) {
  describe('paygate gateway (PostgreSQL store)', () => {
    it('skipped: PAYGATE_TEST_DATABASE_URL is not set', { skip: 'PAYGATE_TEST_DATABASE_URL is not set' }, () => {});
  });
}
