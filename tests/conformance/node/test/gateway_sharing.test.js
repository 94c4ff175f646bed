'use strict';

// Conformance of the paygate GATEWAY's profit sharing (§4.8): the real `wechatpay-axios-plugin`
// SDK is the merchant of `paygate serve`. It pays with settle_info.profit_sharing, adds a
// receiver whose name it encrypts itself (Rsa.encrypt, RSA-OAEP, for the platform key named by
// its Wechatpay-Serial), splits in two rounds, queries them to FINISHED, returns part of a
// split, unfreezes the rest and reads the amounts, verifying every signed answer on the way;
// repeats are idempotent and the protocol's refusals come back in the V3 error shape. Runs on
// SQLite, and on PostgreSQL in a fresh private schema when PAYGATE_TEST_DATABASE_URL is set.

const assert = require('node:assert/strict');
const {
  describe, it, before, after,
} = require('node:test');

const { Wechatpay, Rsa } = require('wechatpay-axios-plugin');

const { startGateway, uniqueNo, pgSchema } = require('./harness');
const { ok, apiError, pollUntil } = require('./v3');

const BACKENDS = [{ name: 'SQLite' }];
if (process.env.PAYGATE_TEST_DATABASE_URL) {
  BACKENDS.push({ name: 'PostgreSQL', pg: process.env.PAYGATE_TEST_DATABASE_URL });
}

const RECEIVER = '1900000201';

function client(kit) {
  const m = kit.merchant;
  return new Wechatpay({
    mchid: m.mchid,
    serial: m.serial_no,
    privateKey: kit.privateKey,
    certs: { [m.platform_public_key_id]: kit.pubKey },
    baseURL: m.base_url,
    headers: { 'Wechatpay-Serial': m.platform_public_key_id },
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

/** A paid order of `total` fen, with or without profit sharing: its transaction_id. */
async function paidOrder(ctx, kit, total, sharing) {
  const wx = client(kit);
  const m = kit.merchant;
  const outTradeNo = uniqueNo('gwps');
  const body = {
    appid: m.appid, mchid: m.mchid, description: 'sharing conformance', out_trade_no: outTradeNo,
    notify_url: 'http://127.0.0.1:9/notify', amount: { total, currency: 'CNY' },
  };
  if (sharing) body.settle_info = { profit_sharing: true };
  await ok('prepay', wx.v3.pay.transactions.native.post(body));
  await post(ctx.gw.baseURL, 'sandbox/v1/pay', { mchid: m.mchid, out_trade_no: outTradeNo, result: 'SUCCESS' });
  const paid = await pollUntil('order SUCCESS', () => ok('query', wx.v3.pay.transactions.outTradeNo._out_trade_no_.get({
    out_trade_no: outTradeNo, params: { mchid: m.mchid },
  })), (r) => r.data.trade_state === 'SUCCESS', 15000);
  return paid.data.transaction_id;
}

function splitBody(kit, transactionId, outOrderNo, amount) {
  return {
    appid: kit.merchant.appid,
    transaction_id: transactionId,
    out_order_no: outOrderNo,
    receivers: [{
      type: 'MERCHANT_ID', account: RECEIVER, amount, description: '分给商户',
      name: Rsa.encrypt('示例商户全称', kit.pubKey),
    }],
    unfreeze_unsplit: false,
  };
}

async function finished(wx, outOrderNo, transactionId) {
  return pollUntil(`share ${outOrderNo} FINISHED`, () => ok('share query', wx.v3.profitsharing.orders._out_order_no_.get({
    out_order_no: outOrderNo, params: { transaction_id: transactionId },
  })), (r) => r.data.state === 'FINISHED', 15000);
}

for (const backend of BACKENDS) {
  describe(`paygate gateway profit sharing (${backend.name} store) driven by wechatpay-axios-plugin`, () => {
    const ctx = {};

    before(async () => {
      if (backend.pg) ctx.schema = pgSchema(backend.pg, 'conf_sharing');
      ctx.gw = await startGateway({ databaseUrl: ctx.schema && ctx.schema.url, timeScale: 1000 });
      ctx.kit = await ctx.gw.createMerchantCli(`conformance-sharing-${backend.name}`);
      ctx.other = await ctx.gw.createMerchantCli(`conformance-sharing-other-${backend.name}`);
      ctx.tx = await paidOrder(ctx, ctx.kit, 1000, true);
    });

    after(async () => {
      if (ctx.gw) await ctx.gw.stop();
      if (ctx.schema) await ctx.schema.drop();
    });

    it('receivers/add with a name the SDK encrypted for the platform key', async () => {
      const wx = client(ctx.kit);
      const name = Rsa.encrypt('示例商户全称', ctx.kit.pubKey);
      const res = await ok('add receiver', wx.v3.profitsharing.receivers.add.post({
        appid: ctx.kit.merchant.appid, type: 'MERCHANT_ID', account: RECEIVER, name, relation_type: 'PARTNER',
      }));
      assert.equal(res.data.account, RECEIVER);
      assert.equal(res.data.relation_type, 'PARTNER');
    });

    it('two rounds, each FINISHED with the receiver SUCCESS; the amounts follow (fee never split)', async () => {
      const wx = client(ctx.kit);
      const amounts = () => ok('amounts', wx.v3.profitsharing.transactions._transaction_id_.amounts.get({ transaction_id: ctx.tx }));
      assert.equal((await amounts()).data.unsplit_amount, 994);
      const first = await ok('split 1', wx.v3.profitsharing.orders.post(splitBody(ctx.kit, ctx.tx, 'P1', 100)));
      assert.equal(first.data.transaction_id, ctx.tx);
      assert.equal(first.data.out_order_no, 'P1');
      const done = await finished(wx, 'P1', ctx.tx);
      assert.equal(done.data.order_id, first.data.order_id);
      assert.equal(done.data.receivers[0].result, 'SUCCESS');
      assert.ok(!Number.isNaN(Date.parse(done.data.receivers[0].finish_time)));
      ctx.orderId = first.data.order_id;
      await ok('split 2', wx.v3.profitsharing.orders.post(splitBody(ctx.kit, ctx.tx, 'P2', 50)));
      await finished(wx, 'P2', ctx.tx);
      assert.equal((await amounts()).data.unsplit_amount, 994 - 150);
    });

    it('the same out_order_no again is the same order; other parameters -> 400 INVALID_REQUEST', async () => {
      const wx = client(ctx.kit);
      const again = await ok('split again', wx.v3.profitsharing.orders.post(splitBody(ctx.kit, ctx.tx, 'P1', 100)));
      assert.equal(again.data.order_id, ctx.orderId);
      await apiError('split other', wx.v3.profitsharing.orders.post(splitBody(ctx.kit, ctx.tx, 'P1', 101)), 400, 'INVALID_REQUEST');
    });

    it('a return of part of a split: PROCESSING then SUCCESS; more than is left -> 403 NOT_ENOUGH', async () => {
      const wx = client(ctx.kit);
      const created = await ok('return', wx.v3.profitsharing.returnOrders.post({
        out_order_no: 'P1', out_return_no: 'R1', return_mchid: RECEIVER, amount: 30, description: '用户退款',
      }));
      assert.equal(created.data.order_id, ctx.orderId);
      const done = await pollUntil('return SUCCESS', () => ok('return query', wx.v3.profitsharing.returnOrders._out_return_no_.get({
        out_return_no: 'R1', params: { out_order_no: 'P1' },
      })), (r) => r.data.result === 'SUCCESS', 15000);
      assert.equal(done.data.amount, 30);
      await apiError('return too much', wx.v3.profitsharing.returnOrders.post({
        out_order_no: 'P1', out_return_no: 'R2', return_mchid: RECEIVER, amount: 71, description: '用户退款',
      }), 403, 'NOT_ENOUGH');
    });

    it('another merchant sees none of it', async () => {
      const theirs = client(ctx.other);
      await apiError('other query', theirs.v3.profitsharing.orders._out_order_no_.get({
        out_order_no: 'P1', params: { transaction_id: ctx.tx },
      }), 404, 'RESOURCE_NOT_EXISTS');
      await apiError('other amounts', theirs.v3.profitsharing.transactions._transaction_id_.amounts.get({ transaction_id: ctx.tx }), 404, 'RESOURCE_NOT_EXISTS');
    });

    it('unfreeze: the rest to the merchant, then nothing to split', async () => {
      const wx = client(ctx.kit);
      const u = await ok('unfreeze', wx.v3.profitsharing.orders.unfreeze.post({
        transaction_id: ctx.tx, out_order_no: 'U1', description: '解冻全部剩余资金',
      }));
      assert.equal(u.data.receivers[0].amount, 994 - 150);
      await finished(wx, 'U1', ctx.tx);
      const a = await ok('amounts', wx.v3.profitsharing.transactions._transaction_id_.amounts.get({ transaction_id: ctx.tx }));
      assert.equal(a.data.unsplit_amount, 0);
      await apiError('late split', wx.v3.profitsharing.orders.post(splitBody(ctx.kit, ctx.tx, 'P3', 1)), 400, 'INVALID_REQUEST');
    });

    it('refusals: an order paid without profit sharing, an unknown order, merchant-configs', async () => {
      const wx = client(ctx.kit);
      const plain = await paidOrder(ctx, ctx.kit, 500, false);
      await apiError('no sharing', wx.v3.profitsharing.orders.post(splitBody(ctx.kit, plain, 'P9', 1)), 400, 'INVALID_REQUEST');
      await apiError('unknown', wx.v3.profitsharing.orders.post(splitBody(ctx.kit, '4200000000202601010000000000', 'P8', 1)), 404, 'RESOURCE_NOT_EXISTS');
      await apiError('configs', wx.v3.profitsharing.merchantConfigs._sub_mchid_.get({ sub_mchid: '1900000109' }), 403, 'NO_AUTH');
    });
  });
}
