'use strict';

// Conformance: the real `wechatpay-axios-plugin` SDK (pinned in package.json) drives the paygate
// WeChat Pay v3 simulator the way a merchant would. The SDK verifies the signature of every 2xx
// response itself (its default responseVerifier; never disabled here). Protocol reference:
// shared/reference/wechatpay-v3.md (section numbers below refer to it).
//
// Matrix: {direct kit, partner kit} x {public-key mode, platform-certificate mode}.
//   public-key mode: certs = {PUB_KEY_ID_...: pub_key.pem}; every request sends Wechatpay-Serial = that id,
//                    so the simulator must sign responses with the public-key key pair (§1.3, §2.3).
//   certificate mode: certs = {platform_serial_no: platform_cert.pem}; no Wechatpay-Serial is sent,
//                    so the simulator must sign with the platform certificate's key.
// Each client holds exactly one platform key, so a response signed with the other key is rejected
// by the SDK (EV3_RES_HEADER_PLATFORM_SERIAL): key selection is checked on every call.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const zlib = require('node:zlib');
const {
  describe, it, before, after,
} = require('node:test');

const {
  Wechatpay, Rsa, Aes, Formatter, Hash,
} = require('wechatpay-axios-plugin');

const { AesGcm } = Aes;

const {
  startSimulator, startNotifyServer, beijingDate, uniqueNo, sleep,
} = require('./harness');
const {
  RFC3339, describeErr, ok, apiError, pollUntil, openNotificationWith,
} = require('./v3');
const TRADE_TYPE = {
  native: 'NATIVE', jsapi: 'JSAPI', app: 'APP', h5: 'MWEB',
};

let sim;
let notify;
// One paid order per kit, paid before the (single) sandbox close-day of today: a day's bill is
// generated once and then never changes, so orders paid after the close are not in it.
const billOrders = {};
let billDate;

async function sandbox(pathname, body) {
  const url = new URL(pathname, sim.baseURL);
  const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`sandbox POST ${pathname} ${JSON.stringify(body)} -> HTTP ${res.status}: ${text}`);
  return text;
}

/** Decrypt and verify a notification with the SDK's own primitives (§3). */
function openNotification(rec, kit) {
  return openNotificationWith(rec, kit.platformKeys, kit.m.apiv3_key);
}

/** One merchant identity (kit) in one key mode, with the SDK client. */
class Merchant {
  constructor(kitName, mode) {
    const kit = sim.kits[kitName];
    this.kitName = kitName;
    this.mode = mode;
    this.kit = kit;
    this.m = kit.merchant;
    this.partner = kitName === 'partner';
    this.platformKeys = {
      [this.m.platform_public_key_id]: Rsa.from(kit.pubKey, Rsa.KEY_TYPE_PUBLIC),
      [this.m.platform_serial_no]: Rsa.from(kit.platformCert, Rsa.KEY_TYPE_PUBLIC),
    };
    this.expectedSerial = mode === 'pubkey' ? this.m.platform_public_key_id : this.m.platform_serial_no;
    this.wx = this.client();
    this.notifyUrl = notify.url(kitName);
  }

  /** Build an SDK client; `certs` may be overridden to prove the SDK really verifies. */
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

  get ids() {
    return this.partner
      ? {
        sp_appid: this.m.sp_appid, sp_mchid: this.m.sp_mchid, sub_appid: this.m.sub_appid, sub_mchid: this.m.sub_mchid,
      }
      : { appid: this.m.appid, mchid: this.m.mchid };
  }

  get queryParams() {
    return this.partner ? { sp_mchid: this.m.sp_mchid, sub_mchid: this.m.sub_mchid } : { mchid: this.m.mchid };
  }

  get trx() { return this.partner ? this.wx.v3.pay.partner.transactions : this.wx.v3.pay.transactions; }

  prepayBody(type, {
    outTradeNo, total = 101, profitSharing, description = 'Image形象店-深圳腾大-QQ公仔', attach = '自定义数据 paygate',
  }) {
    const body = {
      ...this.ids,
      description,
      attach,
      out_trade_no: outTradeNo,
      notify_url: this.notifyUrl,
      amount: { total, currency: 'CNY' },
    };
    if (type === 'jsapi') {
      body.payer = this.partner ? { sp_openid: 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o' } : { openid: 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o' };
    }
    if (type === 'h5') {
      body.scene_info = { payer_client_ip: '127.0.0.1', h5_info: { type: 'Wap' } };
    }
    if (profitSharing) body.settle_info = { profit_sharing: true };
    return body;
  }

  prepay(type, opts) {
    return this.trx[type].post(this.prepayBody(type, opts));
  }

  queryByOutTradeNo(outTradeNo) {
    return this.trx.outTradeNo._out_trade_no_.get({ out_trade_no: outTradeNo, params: this.queryParams });
  }

  queryById(transactionId) {
    return this.trx.id._transaction_id_.get({ transaction_id: transactionId, params: this.queryParams });
  }

  close(outTradeNo) {
    const body = this.partner ? { sp_mchid: this.m.sp_mchid, sub_mchid: this.m.sub_mchid } : { mchid: this.m.mchid };
    return this.trx.outTradeNo._out_trade_no_.close.post(body, { out_trade_no: outTradeNo });
  }

  payViaSandbox(outTradeNo, result = 'SUCCESS') {
    const body = this.partner
      ? {
        sp_mchid: this.m.sp_mchid, sub_mchid: this.m.sub_mchid, out_trade_no: outTradeNo, result,
      }
      : { mchid: this.m.mchid, out_trade_no: outTradeNo, result };
    return sandbox('sandbox/v1/pay', body);
  }

  /** prepay + pay via the sandbox + wait until the query says SUCCESS; returns the Transaction. */
  async paidOrder(type = 'native', { total = 101, profitSharing = false } = {}) {
    const outTradeNo = uniqueNo(`${this.kitName[0]}${this.mode[0]}${type}`);
    await ok(`prepay ${type}`, this.prepay(type, { outTradeNo, total, profitSharing }));
    await this.payViaSandbox(outTradeNo);
    const res = await pollUntil(
      `order ${outTradeNo} to become SUCCESS`,
      () => ok('query by out_trade_no', this.queryByOutTradeNo(outTradeNo)),
      (r) => r.data.trade_state === 'SUCCESS',
      10000,
    );
    return res.data;
  }

  withSub(body) { return this.partner ? { sub_mchid: this.m.sub_mchid, ...body } : body; }

  subParams(params = {}) { return this.partner ? { ...params, sub_mchid: this.m.sub_mchid } : params; }

  get appidForSharing() { return this.partner ? this.m.sp_appid : this.m.appid; }

  /** Public key that encrypts sensitive fields, and the Wechatpay-Serial naming it (§4.8). */
  get encryptionKey() {
    return this.mode === 'pubkey'
      ? { serial: this.m.platform_public_key_id, key: this.platformKeys[this.m.platform_public_key_id] }
      : { serial: this.m.platform_serial_no, key: this.platformKeys[this.m.platform_serial_no] };
  }

  /** Download a bill through the SDK (absolute download_url on the simulator's own base). */
  async downloadBill(downloadUrl) {
    const u = new URL(downloadUrl);
    const base = new URL(this.m.base_url);
    assert.equal(u.origin, base.origin, `download_url ${downloadUrl} must be on the simulator's own base ${this.m.base_url} (§4.10)`);
    const params = Object.fromEntries(u.searchParams.entries());
    // the SDK skips response verification for its known download paths only (e.g. /v3/billdownload/file)
    return ok(`download ${downloadUrl}`, this.wx[u.pathname.replace(/^\/+/, '')].get({ params, responseType: 'arraybuffer' }));
  }
}

function checkTransaction(t, mch, { outTradeNo, total, type }) {
  assert.equal(t.out_trade_no, outTradeNo, 'out_trade_no');
  if (mch.partner) {
    assert.equal(t.sp_mchid, mch.m.sp_mchid, 'sp_mchid');
    assert.equal(t.sub_mchid, mch.m.sub_mchid, 'sub_mchid');
    assert.equal(t.sp_appid, mch.m.sp_appid, 'sp_appid');
  } else {
    assert.equal(t.mchid, mch.m.mchid, 'mchid');
    assert.equal(t.appid, mch.m.appid, 'appid');
  }
  if (type) assert.equal(t.trade_type, TRADE_TYPE[type], 'trade_type (§4.5)');
  assert.equal(t.attach, '自定义数据 paygate', 'attach is echoed (§4.1)');
  assert.equal(t.amount.total, total, 'amount.total');
  assert.ok(t.amount.currency === undefined || t.amount.currency === 'CNY', 'amount.currency');
}

function checkPaidTransaction(t, mch, opts) {
  checkTransaction(t, mch, opts);
  assert.equal(t.trade_state, 'SUCCESS', 'trade_state');
  assert.equal(typeof t.transaction_id, 'string', 'transaction_id');
  assert.ok(t.transaction_id.length > 0 && t.transaction_id.length <= 32, 'transaction_id string(32)');
  assert.match(t.success_time, RFC3339, 'success_time RFC3339 (§4.5)');
  assert.equal(t.amount.payer_total, opts.total, 'amount.payer_total (no coupons)');
  assert.ok(t.payer && typeof t.payer === 'object', 'payer');
}

async function checkBill(mch, apply, { gzip, expectText }) {
  const { data: bill } = apply;
  assert.equal(bill.hash_type, 'SHA1', `hash_type (§4.10): ${JSON.stringify(bill)}`);
  assert.match(bill.hash_value, /^[0-9a-fA-F]{40}$/, 'hash_value is hex SHA1');
  assert.equal(typeof bill.download_url, 'string', 'download_url');
  const res = await mch.downloadBill(bill.download_url);
  let bytes = Buffer.from(res.data);
  if (gzip) {
    assert.ok(bytes.length > 2 && bytes[0] === 0x1f && bytes[1] === 0x8b, `tar_type=GZIP: the file must be gzip (got first bytes ${bytes.subarray(0, 8).toString('hex')}, content-type ${res.headers['content-type']})`);
    bytes = zlib.gunzipSync(bytes);
  } else {
    assert.ok(!(bytes[0] === 0x1f && bytes[1] === 0x8b), 'without tar_type the file must not be gzip');
  }
  assert.equal(Hash.sha1(bytes), bill.hash_value.toLowerCase(), 'SHA1 of the uncompressed file must equal hash_value (§4.10)');
  assert.deepEqual([...bytes.subarray(0, 3)], [0xef, 0xbb, 0xbf], 'bill starts with a UTF-8 BOM (§7)');
  const text = bytes.toString('utf8');
  assert.ok(text.includes('\r\n'), 'bill uses CRLF line endings (§7)');
  for (const s of expectText || []) assert.ok(text.includes(s), `bill contains ${s}`);
  return { text, bytes };
}

const MATRIX = [
  ['direct', 'pubkey'],
  ['direct', 'cert'],
  ['partner', 'pubkey'],
  ['partner', 'cert'],
];

describe('paygate WeChat Pay v3 simulator driven by wechatpay-axios-plugin', () => {
  before(async () => {
    notify = await startNotifyServer();
    sim = await startSimulator();
    sim.baseURL = sim.kits.direct.merchant.base_url;
    for (const k of ['direct', 'partner']) {
      billOrders[k] = await new Merchant(k, 'pubkey').paidOrder('native', { total: 1234 });
    }
    billDate = beijingDate();
    await sandbox('sandbox/v1/bills/close-day', { bill_date: billDate });
  });

  after(async () => {
    if (sim) await sim.stop();
    if (notify) await notify.close();
  });

  it('writes both credential kits with the documented fields', () => {
    for (const k of ['direct', 'partner']) {
      const { merchant: m } = sim.kits[k];
      for (const f of ['mchid', 'appid', 'serial_no', 'apiv3_key', 'base_url', 'platform_public_key_id', 'platform_serial_no']) {
        assert.equal(typeof m[f], 'string', `${k}/merchant.json ${f}`);
      }
      assert.equal(Buffer.byteLength(m.apiv3_key), 32, `${k} apiv3_key is 32 bytes`);
      assert.match(m.platform_public_key_id, /^PUB_KEY_ID_/, `${k} platform_public_key_id`);
      assert.match(m.platform_serial_no, /^[0-9A-F]+$/, `${k} platform_serial_no uppercase hex`);
      assert.equal(new URL(m.base_url).origin, new URL(sim.listeningURL).origin, `${k} base_url matches the "listening on" line`);
    }
    const p = sim.kits.partner.merchant;
    assert.equal(p.mchid, p.sp_mchid);
    assert.equal(p.appid, p.sp_appid);
    assert.ok(p.sub_mchid && p.sub_appid);
  });

  for (const [kitName, mode] of MATRIX) {
    describe(`${kitName} kit, ${mode === 'pubkey' ? 'public-key mode (Wechatpay-Serial sent)' : 'platform-certificate mode (no Wechatpay-Serial)'}`, () => {
      let mch;
      before(() => { mch = new Merchant(kitName, mode); });

      for (const type of ['native', 'jsapi', 'app', 'h5']) {
        it(`prepay ${type} (§4.${kitName === 'partner' ? 2 : 1}); SDK verifies the signed 200`, async () => {
          const outTradeNo = uniqueNo(`${kitName[0]}${mode[0]}pre${type}`);
          const res = await ok(`prepay ${type}`, mch.prepay(type, { outTradeNo }));
          assert.equal(res.status, 200);
          assert.equal(res.headers['wechatpay-serial'], mch.expectedSerial, 'response signed with the selected key');
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
        const res = await ok('prepay native', mch.prepay('native', { outTradeNo: uniqueNo('hdr') }));
        assert.equal(res.headers['wechatpay-signature-type'], 'WECHATPAY2-SHA256-RSA2048');
        assert.ok(res.headers['request-id'], 'Request-ID');
        assert.match(res.headers['content-type'], /^application\/json/);
        assert.ok(Math.abs(Number(res.headers['wechatpay-timestamp']) - Formatter.timestamp()) <= 300, 'timestamp within 5 min');
      });

      it('the SDK really verifies: a wrong key under the right serial is rejected', async () => {
        const { publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
        const wrong = mch.client({ [mch.expectedSerial]: publicKey.export({ type: 'spki', format: 'pem' }) });
        const p = mch.partner ? wrong.v3.pay.partner.transactions.native : wrong.v3.pay.transactions.native;
        await assert.rejects(
          p.post(mch.prepayBody('native', { outTradeNo: uniqueNo('wrongkey') })),
          (e) => e.code === 'EV3_RES_HEADER_SIGNATURE_DIGEST',
        );
      });

      it('same out_trade_no with identical parameters is accepted again (§4.6)', async () => {
        const outTradeNo = uniqueNo('same');
        const a = await ok('first prepay', mch.prepay('native', { outTradeNo }));
        const b = await ok('identical prepay', mch.prepay('native', { outTradeNo }));
        assert.equal(typeof a.data.code_url, 'string');
        assert.equal(typeof b.data.code_url, 'string');
      });

      it('same out_trade_no with another amount -> 403 OUT_TRADE_NO_USED (§4.6, §6)', async () => {
        const outTradeNo = uniqueNo('dup');
        await ok('first prepay', mch.prepay('native', { outTradeNo, total: 101 }));
        await apiError('prepay with other amount', mch.prepay('native', { outTradeNo, total: 202 }), 403, 'OUT_TRADE_NO_USED');
      });

      it('query of a missing order -> 404 ORDER_NOT_EXIST (§4.3)', async () => {
        await apiError('query missing', mch.queryByOutTradeNo(uniqueNo('missing')), 404, 'ORDER_NOT_EXIST');
      });

      it('pay via sandbox; query by out_trade_no and by transaction_id (§4.3, §4.5)', async () => {
        const t = await mch.paidOrder('jsapi', { total: 333 });
        checkPaidTransaction(t, mch, { outTradeNo: t.out_trade_no, total: 333, type: 'jsapi' });
        const byId = await ok('query by transaction_id', mch.queryById(t.transaction_id));
        checkPaidTransaction(byId.data, mch, { outTradeNo: t.out_trade_no, total: 333, type: 'jsapi' });
        assert.equal(byId.data.transaction_id, t.transaction_id);
      });

      it('close -> 204 with a signed empty body the SDK verifies; re-entrant; order CLOSED (§4.4)', async () => {
        const outTradeNo = uniqueNo('close');
        await ok('prepay', mch.prepay('native', { outTradeNo }));
        const res = await ok('close', mch.close(outTradeNo));
        assert.equal(res.status, 204);
        assert.ok(res.data === '' || res.data === undefined || res.data === null, `204 has an empty body, got ${JSON.stringify(res.data)}`);
        assert.equal(res.headers['wechatpay-serial'], mch.expectedSerial);
        const again = await ok('close again', mch.close(outTradeNo));
        assert.equal(again.status, 204);
        const q = await ok('query closed', mch.queryByOutTradeNo(outTradeNo));
        assert.equal(q.data.trade_state, 'CLOSED');
      });

      it('refund: create, idempotent repeat, query until SUCCESS, REFUND.SUCCESS notification (§4.7, §3)', async () => {
        const t = await mch.paidOrder('native', { total: 1000 });
        const outRefundNo = uniqueNo('rf');
        const body = mch.withSub({
          out_trade_no: t.out_trade_no,
          out_refund_no: outRefundNo,
          reason: 'conformance',
          notify_url: mch.notifyUrl,
          amount: { refund: 300, total: 1000, currency: 'CNY' },
        });
        const created = await ok('refund create', mch.wx.v3.refund.domestic.refunds.post(body));
        const r = created.data;
        assert.equal(r.out_refund_no, outRefundNo);
        assert.equal(r.out_trade_no, t.out_trade_no);
        assert.equal(r.transaction_id, t.transaction_id);
        assert.ok(['PROCESSING', 'SUCCESS'].includes(r.status), `refund status ${r.status}`);
        assert.equal(r.amount.refund, 300);
        assert.equal(r.amount.total, 1000);
        assert.ok(r.refund_id, 'refund_id');
        assert.match(r.create_time, RFC3339, 'create_time');

        const again = await ok('refund create again (same out_refund_no)', mch.wx.v3.refund.domestic.refunds.post(body));
        assert.equal(again.data.refund_id, r.refund_id, 'same out_refund_no refunds once (§4.7)');

        const done = await pollUntil(
          'refund to reach SUCCESS',
          () => ok('refund query', mch.wx.v3.refund.domestic.refunds._out_refund_no_.get({ out_refund_no: outRefundNo, params: mch.subParams() })),
          (x) => x.data.status === 'SUCCESS',
          20000,
        );
        assert.equal(done.data.refund_id, r.refund_id);
        assert.match(done.data.success_time, RFC3339, 'success_time once SUCCESS');

        const rec = await notify.waitFor(
          (all) => all.find((n) => {
            if (!n.path.endsWith(`/${kitName}`)) return false;
            try {
              const { env, resource } = openNotification(n, mch);
              return env.event_type === 'REFUND.SUCCESS' && resource.out_refund_no === outRefundNo ? n : null;
            } catch { return null; }
          }),
          15000,
          `REFUND.SUCCESS for ${outRefundNo}`,
        );
        const { env, resource } = openNotification(rec, mch);
        assert.equal(env.resource.original_type, 'refund');
        assert.equal(resource.refund_status, 'SUCCESS', 'refund notification uses refund_status (§4.7)');
        assert.equal(resource.amount.refund, 300);
      });

      it('refunded order has trade_state REFUND (§4.5 state machine)', async () => {
        const t = await mch.paidOrder('native', { total: 500 });
        await ok('refund create', mch.wx.v3.refund.domestic.refunds.post(mch.withSub({
          transaction_id: t.transaction_id,
          out_refund_no: uniqueNo('rs'),
          amount: { refund: 500, total: 500, currency: 'CNY' },
        })));
        const q = await ok('query', mch.queryByOutTradeNo(t.out_trade_no));
        assert.equal(q.data.trade_state, 'REFUND');
      });

      it('payment notification: TRANSACTION.SUCCESS verified with Rsa.verify and decrypted with AesGcm (§3)', async () => {
        const t = await mch.paidOrder('app', { total: 777 });
        const rec = await notify.waitFor(
          (all) => all.find((n) => {
            if (!n.path.endsWith(`/${kitName}`)) return false;
            try {
              const { env, resource } = openNotification(n, mch);
              return env.event_type === 'TRANSACTION.SUCCESS' && resource.out_trade_no === t.out_trade_no ? n : null;
            } catch { return null; }
          }),
          15000,
          `TRANSACTION.SUCCESS for ${t.out_trade_no}`,
        );
        assert.equal(rec.method, 'POST');
        const { env, resource } = openNotification(rec, mch);
        assert.equal(env.event_type, 'TRANSACTION.SUCCESS');
        assert.equal(env.resource.original_type, 'transaction');
        checkPaidTransaction(resource, mch, { outTradeNo: t.out_trade_no, total: 777, type: 'app' });
        assert.equal(resource.transaction_id, t.transaction_id);
        // acknowledged with 204 at once: exactly one delivery expected (no retry)
        await sleep(300);
        const deliveries = notify.received.filter((n) => n.path.endsWith(`/${kitName}`) && n.body.includes(env.id));
        assert.equal(deliveries.length, 1, 'an acknowledged notification is not delivered again');
      });

      it('a notification answered with 500 is delivered again, freshly signed; an acknowledged one is not (§3.4)', async () => {
        const outTradeNo = uniqueNo('flaky');
        const body = mch.prepayBody('native', { outTradeNo, total: 404 });
        body.notify_url = notify.url(`${kitName}/flaky`);
        await ok('prepay', mch.trx.native.post(body));
        await mch.payViaSandbox(outTradeNo);
        const mine = (all) => all.filter((n) => n.path.endsWith(`/${kitName}/flaky`) && (() => {
          try { return openNotification(n, mch).resource.out_trade_no === outTradeNo; } catch { return false; }
        })());
        const [first, second] = await notify.waitFor((all) => {
          const got = mine(all);
          return got.length >= 2 ? got : null;
        }, 15000, `a retried TRANSACTION.SUCCESS for ${outTradeNo} (first answered 500)`);
        assert.equal(first.answered, 500);
        assert.equal(second.answered, 204);
        const a = openNotification(first, mch);
        const b = openNotification(second, mch);
        assert.equal(b.env.id, a.env.id, 'a retry carries the same notification id');
        assert.equal(b.env.event_type, 'TRANSACTION.SUCCESS');
        assert.equal(b.resource.trade_state, 'SUCCESS');
        await sleep(300);
        assert.equal(mine(notify.received).length, 2, 'no delivery after the 204 acknowledgement');
      });

      it('a request signed with another private key -> 401 SIGN_ERROR (§1.2)', async () => {
        const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
        const impostor = new Wechatpay({
          mchid: mch.m.mchid,
          serial: mch.m.serial_no,
          privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }),
          certs: { [mch.expectedSerial]: mch.mode === 'pubkey' ? mch.kit.pubKey : mch.kit.platformCert },
          baseURL: mch.m.base_url,
          headers: mch.mode === 'pubkey' ? { 'Wechatpay-Serial': mch.m.platform_public_key_id } : {},
        });
        const p = mch.partner ? impostor.v3.pay.partner.transactions.native : impostor.v3.pay.transactions.native;
        await apiError('prepay signed with a wrong key', p.post(mch.prepayBody('native', { outTradeNo: uniqueNo('badsig') })), 401, 'SIGN_ERROR');
      });

      describe('profit sharing (§4.8)', () => {
        const st = {};
        before(() => {
          const other = sim.kits[kitName === 'direct' ? 'partner' : 'direct'].merchant;
          st.merchantReceiver = other.mchid;
          st.openidReceiver = `o${uniqueNo('psr')}`.slice(0, 28);
        });

        it('receivers add: MERCHANT_ID (name RSA-OAEP encrypted, Wechatpay-Serial names the key) and PERSONAL_OPENID', async () => {
          const enc = mch.encryptionKey;
          const r1 = await ok('receivers/add MERCHANT_ID', mch.wx.v3.profitsharing.receivers.add.post(mch.withSub({
            appid: mch.appidForSharing,
            type: 'MERCHANT_ID',
            account: st.merchantReceiver,
            name: Rsa.encrypt('paygate test merchant', enc.key),
            relation_type: 'PARTNER',
          }), { headers: { 'Wechatpay-Serial': enc.serial } }));
          assert.equal(r1.data.type, 'MERCHANT_ID');
          assert.equal(r1.data.account, st.merchantReceiver);
          assert.equal(r1.data.relation_type, 'PARTNER');
          const r2 = await ok('receivers/add PERSONAL_OPENID', mch.wx.v3.profitsharing.receivers.add.post(mch.withSub({
            appid: mch.appidForSharing,
            type: 'PERSONAL_OPENID',
            account: st.openidReceiver,
            relation_type: 'USER',
          })));
          assert.equal(r2.data.type, 'PERSONAL_OPENID');
          assert.equal(r2.data.account, st.openidReceiver);
          st.receiversAdded = true;
        });

        it('a paid order with settle_info.profit_sharing=true; amounts before sharing', async () => {
          const t = await mch.paidOrder('jsapi', { total: 1000, profitSharing: true });
          st.transactionId = t.transaction_id;
          const a = await ok('amounts', mch.wx.v3.profitsharing.transactions._transaction_id_.amounts.get({ transaction_id: t.transaction_id }));
          assert.equal(a.data.transaction_id, t.transaction_id);
          assert.ok(Number.isInteger(a.data.unsplit_amount) && a.data.unsplit_amount > 0 && a.data.unsplit_amount <= 1000, `unsplit_amount ${a.data.unsplit_amount}`);
          st.unsplitBefore = a.data.unsplit_amount;
        });

        if (kitName === 'partner') {
          it('merchant-configs/{sub_mchid} gives max_ratio', async () => {
            const c = await ok('merchant-configs', mch.wx.v3.profitsharing.merchantConfigs._sub_mchid_.get({ sub_mchid: mch.m.sub_mchid }));
            assert.equal(c.data.sub_mchid, mch.m.sub_mchid);
            assert.ok(Number.isInteger(c.data.max_ratio) && c.data.max_ratio > 0 && c.data.max_ratio <= 10000, `max_ratio ${c.data.max_ratio}`);
          });
        }

        it('orders: create, then query until FINISHED; amounts decrease by the shared sum', async () => {
          assert.ok(st.transactionId && st.receiversAdded, 'needs the receivers and the paid order of the previous steps');
          st.outOrderNo = uniqueNo('ps');
          const created = await ok('profitsharing/orders', mch.wx.v3.profitsharing.orders.post(mch.withSub({
            appid: mch.appidForSharing,
            transaction_id: st.transactionId,
            out_order_no: st.outOrderNo,
            receivers: [
              {
                type: 'MERCHANT_ID', account: st.merchantReceiver, amount: 50, description: 'to merchant',
              },
              {
                type: 'PERSONAL_OPENID', account: st.openidReceiver, amount: 20, description: 'to user',
              },
            ],
            unfreeze_unsplit: false,
          })));
          const o = created.data;
          assert.equal(o.transaction_id, st.transactionId);
          assert.equal(o.out_order_no, st.outOrderNo);
          assert.ok(o.order_id, 'order_id');
          assert.ok(['PROCESSING', 'FINISHED'].includes(o.state), `state ${o.state}`);
          if (mch.partner) assert.equal(o.sub_mchid, mch.m.sub_mchid);

          const q = await pollUntil(
            'profit-sharing order to FINISH',
            () => ok('profitsharing/orders/{out_order_no}', mch.wx.v3.profitsharing.orders._out_order_no_.get({
              out_order_no: st.outOrderNo, params: mch.subParams({ transaction_id: st.transactionId }),
            })),
            (x) => x.data.state === 'FINISHED',
            20000,
          );
          assert.equal(q.data.order_id, o.order_id);
          assert.equal(q.data.receivers.length, 2);
          for (const rc of q.data.receivers) {
            assert.equal(rc.result, 'SUCCESS', `receiver ${rc.account} result`);
            assert.ok(rc.detail_id, 'detail_id');
            assert.match(rc.create_time, RFC3339, 'receiver create_time');
            assert.match(rc.finish_time, RFC3339, 'receiver finish_time');
          }
          const a = await ok('amounts', mch.wx.v3.profitsharing.transactions._transaction_id_.amounts.get({ transaction_id: st.transactionId }));
          assert.equal(a.data.unsplit_amount, st.unsplitBefore - 70, 'unsplit_amount decreased by 50 + 20');
          st.orderId = o.order_id;
        });

        it('return-orders: return from the merchant receiver, then query until SUCCESS', async () => {
          assert.ok(st.orderId, 'needs the profit-sharing order of the previous step');
          const outReturnNo = uniqueNo('rt');
          const created = await ok('profitsharing/return-orders', mch.wx.v3.profitsharing.returnOrders.post(mch.withSub({
            out_order_no: st.outOrderNo,
            out_return_no: outReturnNo,
            return_mchid: st.merchantReceiver,
            amount: 30,
            description: 'conformance return',
          })));
          const r = created.data;
          assert.equal(r.out_return_no, outReturnNo);
          assert.equal(r.out_order_no, st.outOrderNo);
          assert.equal(r.return_mchid, st.merchantReceiver);
          assert.equal(r.amount, 30);
          assert.ok(r.return_id, 'return_id');
          assert.ok(['PROCESSING', 'SUCCESS'].includes(r.result), `result ${r.result}`);
          const q = await pollUntil(
            'return to SUCCESS',
            () => ok('return-orders/{out_return_no}', mch.wx.v3.profitsharing.returnOrders._out_return_no_.get({
              out_return_no: outReturnNo, params: mch.subParams({ out_order_no: st.outOrderNo }),
            })),
            (x) => x.data.result === 'SUCCESS',
            20000,
          );
          assert.equal(q.data.return_id, r.return_id);
          assert.match(q.data.finish_time, RFC3339, 'finish_time');
        });

        it('orders/unfreeze with a new out_order_no; unsplit_amount goes to 0', async () => {
          assert.ok(st.orderId, 'needs the profit-sharing order of the earlier step');
          const outOrderNo = uniqueNo('uf');
          const u = await ok('profitsharing/orders/unfreeze', mch.wx.v3.profitsharing.orders.unfreeze.post(mch.withSub({
            transaction_id: st.transactionId,
            out_order_no: outOrderNo,
            description: 'unfreeze the rest',
          })));
          assert.equal(u.data.out_order_no, outOrderNo);
          assert.ok(['PROCESSING', 'FINISHED'].includes(u.data.state), `state ${u.data.state}`);
          await pollUntil(
            'unfreeze order to FINISH',
            () => ok('query unfreeze order', mch.wx.v3.profitsharing.orders._out_order_no_.get({
              out_order_no: outOrderNo, params: mch.subParams({ transaction_id: st.transactionId }),
            })),
            (x) => x.data.state === 'FINISHED',
            20000,
          );
          const a = await ok('amounts', mch.wx.v3.profitsharing.transactions._transaction_id_.amounts.get({ transaction_id: st.transactionId }));
          assert.equal(a.data.unsplit_amount, 0);
        });

        it('receivers delete (both)', async () => {
          assert.ok(st.receiversAdded, 'needs the receivers of the first step');
          for (const [type, account] of [['MERCHANT_ID', st.merchantReceiver], ['PERSONAL_OPENID', st.openidReceiver]]) {
            const d = await ok(`receivers/delete ${type}`, mch.wx.v3.profitsharing.receivers.chain('delete').post(mch.withSub({
              appid: mch.appidForSharing, type, account,
            })));
            assert.equal(d.data.type, type);
            assert.equal(d.data.account, account);
          }
        });
      });

      describe('bills (§4.10, §7)', () => {
        const st = {};
        before(() => {
          st.paid = billOrders[kitName];
          st.billDate = billDate;
        });

        for (const gzip of [false, true]) {
          it(`trade bill${gzip ? ' with tar_type=GZIP' : ''}: apply, download, ${gzip ? 'gunzip, ' : ''}SHA1 == hash_value, our order listed`, async () => {
            const params = mch.subParams({ bill_date: st.billDate, bill_type: 'ALL' });
            if (gzip) params.tar_type = 'GZIP';
            const apply = await ok('bill/tradebill', mch.wx.v3.bill.tradebill.get({ params }));
            const { bytes } = await checkBill(mch, apply, { gzip, expectText: [st.paid.out_trade_no, st.paid.transaction_id] });
            const { rows } = Formatter.castCsvBill(bytes);
            const row = rows.find((x) => x['商户订单号'] === st.paid.out_trade_no);
            assert.ok(row, `a row with 商户订单号=${st.paid.out_trade_no} (parsed with Formatter.castCsvBill)`);
            assert.equal(row['微信订单号'], st.paid.transaction_id);
            assert.equal(row['交易状态'], 'SUCCESS');
            if (mch.partner) assert.equal(row['特约商户号'], mch.m.sub_mchid);
          });

          it(`fund-flow bill${gzip ? ' with tar_type=GZIP' : ''}: apply, download, ${gzip ? 'gunzip, ' : ''}SHA1 == hash_value`, async () => {
            const params = { bill_date: st.billDate, account_type: 'BASIC' };
            if (gzip) params.tar_type = 'GZIP';
            const apply = await ok('bill/fundflowbill', mch.wx.v3.bill.fundflowbill.get({ params }));
            const { text } = await checkBill(mch, apply, { gzip });
            assert.ok(text.slice(1).startsWith('记账时间,'), `fund-flow header starts with 记账时间 (§7): ${JSON.stringify(text.slice(0, 80))}`);
          });
        }
      });

      it(`/v3/certificates (§4.9)${mode === 'cert' ? ': verified by the SDK, decrypted with AesGcm, serial matches' : ' in public-key mode: a verified list or NOT_FOUND'}`, async () => {
        let res;
        try {
          res = await mch.wx.v3.certificates.get();
        } catch (e) {
          if (mode === 'pubkey' && e.response && e.response.status === 404 && e.response.data && e.response.data.code === 'NOT_FOUND') return;
          throw new Error(`GET /v3/certificates failed: ${describeErr(e)}`);
        }
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
    });
  }
});
