'use strict';

// Conformance of the paygate GATEWAY's merchant bills (§4.10, §7): the real
// `wechatpay-axios-plugin` SDK is the merchant of `paygate serve`. It pays and refunds through
// the gateway, the sandbox closes the day (POST /sandbox/v1/bills/close-day), then the SDK
// applies for the trade and fund-flow bills (it verifies those signed answers itself), downloads
// the file from the gateway's own base (signed request, unsigned answer: the SDK skips
// verification for its download path), gunzips when asked, checks SHA1 == hash_value and parses
// the CSV with its own Formatter.castCsvBill. Runs on SQLite, and on PostgreSQL in a fresh
// private schema when PAYGATE_TEST_DATABASE_URL is set.

const assert = require('node:assert/strict');
const zlib = require('node:zlib');
const {
  describe, it, before, after,
} = require('node:test');

const { Wechatpay, Formatter, Hash } = require('wechatpay-axios-plugin');

const { startGateway, beijingDate, uniqueNo } = require('./harness');
const { pgSchema } = require('./harness');
const { ok, apiError, pollUntil } = require('./v3');

const BACKENDS = [{ name: 'SQLite' }];
if (process.env.PAYGATE_TEST_DATABASE_URL) {
  BACKENDS.push({ name: 'PostgreSQL', pg: process.env.PAYGATE_TEST_DATABASE_URL });
}

function client(kit, mode) {
  const m = kit.merchant;
  const certs = mode === 'pubkey' ? { [m.platform_public_key_id]: kit.pubKey } : { [m.platform_serial_no]: kit.platformCert };
  return new Wechatpay({
    mchid: m.mchid,
    serial: m.serial_no,
    privateKey: kit.privateKey,
    certs,
    baseURL: m.base_url,
    headers: mode === 'pubkey' ? { 'Wechatpay-Serial': m.platform_public_key_id } : {},
    timeout: 20000,
  });
}

async function post(baseURL, pathname, body) {
  const res = await fetch(new URL(pathname, baseURL), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(20000),
  });
  const text = await res.text();
  assert.ok(res.status >= 200 && res.status < 300, `POST ${pathname} -> HTTP ${res.status}: ${text}`);
  return JSON.parse(text);
}

/** Download through the SDK: the absolute download_url on the gateway's own base. */
async function download(wx, kit, downloadUrl) {
  const u = new URL(downloadUrl);
  assert.equal(u.origin, new URL(kit.merchant.base_url).origin, `download_url ${downloadUrl} is on the gateway's base (§4.10)`);
  const params = Object.fromEntries(u.searchParams.entries());
  return ok(`download ${downloadUrl}`, wx[u.pathname.replace(/^\/+/, '')].get({ params, responseType: 'arraybuffer' }));
}

/** The bill's uncompressed bytes, after the hash and format checks every bill must pass. */
async function fetchBill(wx, kit, apply, gzip) {
  const { data } = apply;
  assert.equal(data.hash_type, 'SHA1');
  assert.match(data.hash_value, /^[0-9a-f]{40}$/, 'hash_value: lowercase hex SHA1');
  const res = await download(wx, kit, data.download_url);
  let bytes = Buffer.from(res.data);
  if (gzip) {
    assert.ok(bytes[0] === 0x1f && bytes[1] === 0x8b, `tar_type=GZIP gives a gzip body (content-type ${res.headers['content-type']})`);
    bytes = zlib.gunzipSync(bytes);
  }
  assert.equal(Hash.sha1(bytes), data.hash_value, 'SHA1 of the uncompressed file == hash_value (§4.10)');
  assert.deepEqual([...bytes.subarray(0, 3)], [0xef, 0xbb, 0xbf], 'UTF-8 BOM (§7)');
  assert.ok(bytes.toString('utf8').endsWith('\r\n'), 'CRLF through the last line (§7)');
  return bytes;
}

for (const backend of BACKENDS) {
  describe(`paygate gateway bills (${backend.name} store) driven by wechatpay-axios-plugin`, () => {
    const ctx = {};

    before(async () => {
      if (backend.pg) ctx.schema = pgSchema(backend.pg, 'conf_bills');
      ctx.gw = await startGateway({ databaseUrl: ctx.schema && ctx.schema.url, timeScale: 1000 });
      ctx.kit = await ctx.gw.createMerchantCli(`conformance-bills-${backend.name}`);
      ctx.other = await ctx.gw.createMerchantCli(`conformance-bills-other-${backend.name}`);
      const wx = client(ctx.kit, 'pubkey');
      const m = ctx.kit.merchant;
      // One paid order and a partial refund of it, both today (Beijing).
      ctx.outTradeNo = uniqueNo('gwbill');
      await ok('prepay', wx.v3.pay.transactions.native.post({
        appid: m.appid, mchid: m.mchid, description: 'bill conformance', out_trade_no: ctx.outTradeNo,
        notify_url: 'http://127.0.0.1:9/notify', amount: { total: 1234, currency: 'CNY' },
      }));
      await post(ctx.gw.baseURL, 'sandbox/v1/pay', { mchid: m.mchid, out_trade_no: ctx.outTradeNo, result: 'SUCCESS' });
      const paid = await pollUntil('order SUCCESS', () => ok('query', wx.v3.pay.transactions.outTradeNo._out_trade_no_.get({
        out_trade_no: ctx.outTradeNo, params: { mchid: m.mchid },
      })), (r) => r.data.trade_state === 'SUCCESS', 15000);
      ctx.transactionId = paid.data.transaction_id;
      ctx.outRefundNo = uniqueNo('gwbillrf');
      await ok('refund', wx.v3.refund.domestic.refunds.post({
        out_trade_no: ctx.outTradeNo, out_refund_no: ctx.outRefundNo, amount: { refund: 234, total: 1234, currency: 'CNY' },
      }));
      const refunded = await pollUntil('refund SUCCESS', () => ok('refund query', wx.v3.refund.domestic.refunds._out_refund_no_.get({
        out_refund_no: ctx.outRefundNo,
      })), (r) => r.data.status === 'SUCCESS', 15000);
      ctx.refundId = refunded.data.refund_id;
      ctx.billDate = beijingDate();
    });

    after(async () => {
      if (ctx.gw) await ctx.gw.stop();
      if (ctx.schema) await ctx.schema.drop();
    });

    it('before the day is closed: 400 STATEMENT_CREATING (§4.10)', async () => {
      const wx = client(ctx.kit, 'pubkey');
      await apiError('tradebill', wx.v3.bill.tradebill.get({ params: { bill_date: ctx.billDate } }), 400, 'STATEMENT_CREATING');
      const closed = await post(ctx.gw.baseURL, 'sandbox/v1/bills/close-day', { bill_date: ctx.billDate });
      assert.equal(closed.bill_date, ctx.billDate);
    });

    for (const mode of ['pubkey', 'cert']) {
      for (const gzip of [false, true]) {
        it(`${mode}: trade bill ALL${gzip ? ' (tar_type=GZIP)' : ''}: our payment and refund, paygate's ids, summary (castCsvBill)`, async () => {
          const wx = client(ctx.kit, mode);
          const params = { bill_date: ctx.billDate, bill_type: 'ALL' };
          if (gzip) params.tar_type = 'GZIP';
          const apply = await ok('tradebill', wx.v3.bill.tradebill.get({ params }));
          const bytes = await fetchBill(wx, ctx.kit, apply, gzip);
          const { rows, summary } = Formatter.castCsvBill(bytes);
          const pay = rows.find((r) => r['商户订单号'] === ctx.outTradeNo && r['交易状态'] === 'SUCCESS');
          assert.ok(pay, 'the payment row');
          assert.equal(pay['微信订单号'], ctx.transactionId);
          assert.equal(pay['商户号'], ctx.kit.merchant.mchid);
          assert.equal(pay['应结订单金额'], '12.34');
          const refund = rows.find((r) => r['交易状态'] === 'REFUND');
          assert.ok(refund, 'the refund row');
          assert.equal(refund['微信退款单号'], ctx.refundId);
          assert.equal(refund['商户退款单号'], ctx.outRefundNo);
          assert.equal(refund['退款金额'], '2.34');
          assert.equal(refund['退款状态'], 'SUCCESS');
          assert.equal(rows.length, 2);
          assert.equal(Number(summary['总交易单数']), 2);
          assert.equal(summary['应结订单总金额'], '12.34');
          assert.equal(summary['退款总金额'], '2.34');
        });
      }
    }

    for (const gzip of [false, true]) {
      it(`fund-flow bill BASIC${gzip ? ' (tar_type=GZIP)' : ''}: payment, fee, refund, fee given back; running balance`, async () => {
        const wx = client(ctx.kit, 'pubkey');
        const params = { bill_date: ctx.billDate, account_type: 'BASIC' };
        if (gzip) params.tar_type = 'GZIP';
        const apply = await ok('fundflowbill', wx.v3.bill.fundflowbill.get({ params }));
        const bytes = await fetchBill(wx, ctx.kit, apply, gzip);
        const { rows, summary } = Formatter.castCsvBill(bytes);
        // The payment and paygate's 0.60% fee (7 fen), the refund and its share of the fee
        // given back (floor(7 x 234 / 1234) = 1 fen).
        assert.deepEqual(rows.map((r) => [r['业务名称'], r['收支类型'], r['收支金额(元)']]), [
          ['交易', '收入', '12.34'],
          ['扣除交易手续费', '支出', '0.07'],
          ['退款', '支出', '2.34'],
          ['退还交易手续费', '收入', '0.01'],
        ]);
        assert.deepEqual(rows.map((r) => r['账户结余(元)']), ['12.34', '12.27', '9.93', '9.94']);
        assert.equal(rows[2]['微信支付业务单号'], ctx.refundId);
        assert.equal(summary['收入金额'], '12.35');
        assert.equal(summary['支出金额'], '2.41');
      });
    }

    it('the same bill twice: the same hash and bytes (generated once)', async () => {
      const wx = client(ctx.kit, 'pubkey');
      const params = { bill_date: ctx.billDate };
      const a = await ok('tradebill', wx.v3.bill.tradebill.get({ params }));
      const b = await ok('tradebill', wx.v3.bill.tradebill.get({ params }));
      assert.equal(a.data.hash_value, b.data.hash_value);
      const [x, y] = [await fetchBill(wx, ctx.kit, a, false), await fetchBill(wx, ctx.kit, b, false)];
      assert.ok(x.equals(y));
    });

    it('another merchant: no bill of its own that day, and our download URL -> 403 NO_AUTH', async () => {
      const mine = client(ctx.kit, 'pubkey');
      const theirs = client(ctx.other, 'pubkey');
      await apiError('other tradebill', theirs.v3.bill.tradebill.get({ params: { bill_date: ctx.billDate } }), 400, 'NO_STATEMENT_EXIST');
      const apply = await ok('tradebill', mine.v3.bill.tradebill.get({ params: { bill_date: ctx.billDate } }));
      const u = new URL(apply.data.download_url);
      const params = Object.fromEntries(u.searchParams.entries());
      await apiError('other download', theirs[u.pathname.replace(/^\/+/, '')].get({ params }), 403, 'NO_AUTH');
    });

    it('a future bill_date -> 400 PARAM_ERROR', async () => {
      const wx = client(ctx.kit, 'pubkey');
      const tomorrow = new Date(Date.now() + 8 * 3600 * 1000 + 24 * 3600 * 1000).toISOString().slice(0, 10);
      await apiError('future', wx.v3.bill.tradebill.get({ params: { bill_date: tomorrow } }), 400, 'PARAM_ERROR');
    });
  });
}
