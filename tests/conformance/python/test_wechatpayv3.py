"""Conformance: the real PyPI `wechatpayv3` SDK (pinned in requirements.txt) drives the paygate
WeChat Pay v3 simulator the way a merchant would.

The SDK has no base-url parameter (reference §2.4): the client is constructed, then
`wxpay._core._gate_way` is pointed at the simulator. The SDK verifies every 2xx response itself
(`Core.request` -> `_verify_signature`, which also requires Wechatpay-Signature-Type), except the
certificate download and `download_bill` (skip_verify). Nothing here disables that.

Matrix: {direct, partner} x {public-key mode, platform-certificate mode}.
  public-key mode: WeChatPay(public_key=pub_key.pem, public_key_id=PUB_KEY_ID_...); the SDK sends
                   Wechatpay-Serial on every request, so responses must be signed with that key.
  certificate mode: cert_dir holds platform_cert.pem; no Wechatpay-Serial is sent, so responses
                   must be signed with the platform certificate's key.
"""

import datetime
import gzip
import hashlib
import json
import os
import re
import tempfile
import time
import uuid

import pytest
from requests.structures import CaseInsensitiveDict
from wechatpayv3 import WeChatPay, WeChatPayType

RFC3339 = re.compile(r'^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$')
OPENID = 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o'


def unique_no(prefix):
    return (prefix + uuid.uuid4().hex)[:32]


def beijing_date():
    return (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=8)).strftime('%Y-%m-%d')


class Merchant:
    def __init__(self, sim, notify, kit_name, mode):
        self.sim = sim
        self.kit_name = kit_name
        self.mode = mode
        self.kit = sim.kits[kit_name]
        self.m = self.kit['merchant']
        self.partner = kit_name == 'partner'
        self.notify_url = notify.url(kit_name)
        kwargs = dict(
            wechatpay_type=WeChatPayType.NATIVE,
            mchid=self.m['mchid'],
            private_key=self.kit['private_key'],
            cert_serial_no=self.m['serial_no'],
            appid=self.m['appid'],
            apiv3_key=self.m['apiv3_key'],
            notify_url=self.notify_url,
            partner_mode=self.partner,
            timeout=(5, 20),
        )
        if mode == 'pubkey':
            kwargs.update(public_key=self.kit['pub_key'], public_key_id=self.m['platform_public_key_id'])
        else:
            # certificate mode with a pre-populated cert_dir: no network access at construction
            self.cert_dir = tempfile.mkdtemp(prefix='paygate-conf-py-certs-')
            with open(os.path.join(self.cert_dir, self.m['platform_serial_no'] + '.pem'), 'w') as f:
                f.write(self.kit['platform_cert'])
            kwargs.update(cert_dir=self.cert_dir)
        self.wx = WeChatPay(**kwargs)
        # reference §2.4: the only way to point this SDK at another server
        self.wx._core._gate_way = self.m['base_url'].rstrip('/')

    def callback_verifier(self):
        """The SDK client that checks notifications. Which platform key signs a notification is the
        server's choice (no request names one), so use the SDK's transition set-up: the public key
        plus platform certificates, which the SDK downloads from /v3/certificates when a
        notification names a certificate serial (Core._verify_signature -> _update_certificates)."""
        wx = WeChatPay(wechatpay_type=WeChatPayType.NATIVE, mchid=self.m['mchid'], private_key=self.kit['private_key'],
                       cert_serial_no=self.m['serial_no'], appid=self.m['appid'], apiv3_key=self.m['apiv3_key'],
                       notify_url=self.notify_url, partner_mode=self.partner, timeout=(5, 20),
                       public_key=self.kit['pub_key'], public_key_id=self.m['platform_public_key_id'])
        wx._core._gate_way = self.m['base_url'].rstrip('/')
        return wx

    @property
    def sub(self):
        return {'sub_mchid': self.m['sub_mchid']} if self.partner else {}

    def pay(self, pay_type, out_trade_no, total=101, **extra):
        kw = dict(description='Image形象店-深圳腾大-QQ公仔', attach='自定义数据 paygate', out_trade_no=out_trade_no,
                  amount={'total': total, 'currency': 'CNY'}, pay_type=pay_type, **extra)
        if pay_type == WeChatPayType.JSAPI:
            kw['payer'] = {'sp_openid': OPENID} if self.partner else {'openid': OPENID}
        if self.partner:
            kw.update(sub_mchid=self.m['sub_mchid'], sub_appid=self.m['sub_appid'])
        return self.wx.pay(**kw)

    def query(self, **kw):
        return self.wx.query(**kw, **self.sub)

    def sandbox_pay(self, out_trade_no, result='SUCCESS'):
        if self.partner:
            body = {'sp_mchid': self.m['sp_mchid'], 'sub_mchid': self.m['sub_mchid'],
                    'out_trade_no': out_trade_no, 'result': result}
        else:
            body = {'mchid': self.m['mchid'], 'out_trade_no': out_trade_no, 'result': result}
        self.sim.sandbox('sandbox/v1/pay', body)

    def paid_order(self, pay_type=WeChatPayType.NATIVE, total=101, **extra):
        out_trade_no = unique_no(f'py{self.kit_name[0]}{self.mode[0]}')
        code, text = self.pay(pay_type, out_trade_no, total=total, **extra)
        assert code == 200, f'prepay: HTTP {code} {text}'
        self.sandbox_pay(out_trade_no)
        deadline = time.time() + 10
        while True:
            code, text = self.query(out_trade_no=out_trade_no)
            assert code == 200, f'query: HTTP {code} {text}'
            t = json.loads(text)
            if t['trade_state'] == 'SUCCESS':
                return t
            assert time.time() < deadline, f'order {out_trade_no} never became SUCCESS: {text}'
            time.sleep(0.1)


MATRIX = [('direct', 'pubkey'), ('direct', 'cert'), ('partner', 'pubkey'), ('partner', 'cert')]


@pytest.fixture(params=MATRIX, ids=[f'{k}-{m}' for k, m in MATRIX])
def mch(request, sim, notify):
    kit_name, mode = request.param
    m = Merchant(sim, notify, kit_name, mode)
    yield m
    if mode == 'pubkey':
        # Key selection (§1.3): every request carried Wechatpay-Serial = public_key_id, so every
        # response must be signed with the public key. This SDK silently falls back to downloading
        # /v3/certificates when a response names a certificate serial; it must never have needed to.
        assert m.wx._core._certificates == [], (
            'in public-key mode a response was signed with the platform certificate '
            '(the SDK had to download /v3/certificates to verify it)')


@pytest.fixture(scope='session')
def bill_day(sim, notify):
    """One paid order per kit, paid before the single sandbox close-day of today: a day's bill is
    generated once and then never changes, so orders paid after the close are not in it."""
    orders = {k: Merchant(sim, notify, k, 'pubkey').paid_order(total=1234) for k in ('direct', 'partner')}
    date = beijing_date()
    sim.sandbox('sandbox/v1/bills/close-day', {'bill_date': date})
    return date, orders


def check_ids(t, mch):
    if mch.partner:
        assert t['sp_mchid'] == mch.m['sp_mchid']
        assert t['sub_mchid'] == mch.m['sub_mchid']
        assert t['sp_appid'] == mch.m['sp_appid']
    else:
        assert t['mchid'] == mch.m['mchid']
        assert t['appid'] == mch.m['appid']


def test_prepay_native(mch):
    code, text = mch.pay(WeChatPayType.NATIVE, unique_no('pyn'))
    assert code == 200, text
    assert json.loads(text)['code_url'].startswith('weixin://')


def test_prepay_jsapi(mch):
    code, text = mch.pay(WeChatPayType.JSAPI, unique_no('pyj'))
    assert code == 200, text
    prepay_id = json.loads(text)['prepay_id']
    assert isinstance(prepay_id, str) and 0 < len(prepay_id) <= 64
    # the client-side paySign (§5) is computed by the SDK with the merchant key; no server involved
    sign = mch.wx.sign([mch.m['appid'], str(int(time.time())), uuid.uuid4().hex, f'prepay_id={prepay_id}'])
    assert isinstance(sign, str) and sign


def test_query_by_out_trade_no_and_transaction_id(mch):
    t = mch.paid_order(WeChatPayType.JSAPI, total=333)
    check_ids(t, mch)
    assert t['trade_type'] == 'JSAPI'
    assert t['attach'] == '自定义数据 paygate'
    assert t['amount']['total'] == 333
    assert RFC3339.match(t['success_time'])
    code, text = mch.query(transaction_id=t['transaction_id'])
    assert code == 200, text
    by_id = json.loads(text)
    assert by_id['out_trade_no'] == t['out_trade_no']
    assert by_id['trade_state'] == 'SUCCESS'


def test_close_is_204_and_verified(mch):
    out_trade_no = unique_no('pyc')
    code, text = mch.pay(WeChatPayType.NATIVE, out_trade_no)
    assert code == 200, text
    code, body = mch.wx.close(out_trade_no, **mch.sub)  # the SDK verified the signed 204 itself
    assert code == 204, body
    assert not body
    code, text = mch.query(out_trade_no=out_trade_no)
    assert code == 200, text
    assert json.loads(text)['trade_state'] == 'CLOSED'


def test_refund_and_query(mch):
    t = mch.paid_order(total=1000)
    out_refund_no = unique_no('pyr')
    code, text = mch.wx.refund(out_refund_no=out_refund_no, amount={'refund': 400, 'total': 1000, 'currency': 'CNY'},
                               out_trade_no=t['out_trade_no'], reason='conformance', **mch.sub)
    assert code == 200, text
    r = json.loads(text)
    assert r['out_refund_no'] == out_refund_no
    assert r['status'] in ('PROCESSING', 'SUCCESS')
    assert r['amount']['refund'] == 400
    deadline = time.time() + 20
    while True:
        code, text = mch.wx.query_refund(out_refund_no, **mch.sub)
        assert code == 200, text
        q = json.loads(text)
        if q['status'] == 'SUCCESS':
            break
        assert time.time() < deadline, f'refund never reached SUCCESS: {text}'
        time.sleep(0.1)
    assert q['refund_id'] == r['refund_id']
    assert RFC3339.match(q['success_time'])


def test_error_shapes(mch):
    out_trade_no = unique_no('pyd')
    code, text = mch.pay(WeChatPayType.NATIVE, out_trade_no, total=101)
    assert code == 200, text
    code, text = mch.pay(WeChatPayType.NATIVE, out_trade_no, total=202)
    assert code == 403, text
    assert json.loads(text)['code'] == 'OUT_TRADE_NO_USED'
    code, text = mch.query(out_trade_no=unique_no('pym'))
    assert code == 404, text
    err = json.loads(text)
    assert err['code'] == 'ORDER_NOT_EXIST'
    assert isinstance(err['message'], str) and err['message']


def test_trade_bill_gzip_download_and_hash(mch, bill_day):
    bill_date, orders = bill_day
    t = orders[mch.kit_name]
    code, text = mch.wx.trade_bill(bill_date=bill_date, tar_type='GZIP', **mch.sub)
    assert code == 200, text
    bill = json.loads(text)
    assert bill['hash_type'] == 'SHA1'
    # download_bill() only strips the gateway base when download_url starts with it (§2.4, §4.10)
    assert bill['download_url'].startswith(mch.wx._core._gate_way + '/'), bill['download_url']
    code, content = mch.wx.download_bill(bill['download_url'])
    assert code == 200, content
    assert isinstance(content, bytes), f'bill file should not be served as JSON: {content!r:.200}'
    raw = gzip.decompress(content)
    assert hashlib.sha1(raw).hexdigest() == bill['hash_value'].lower()
    assert raw.startswith(b'\xef\xbb\xbf')
    csv = raw.decode('utf-8')
    assert t['out_trade_no'] in csv and t['transaction_id'] in csv


def test_fundflow_bill_gzip_download_and_hash(mch, bill_day):
    # the fund-flow bill is the merchant's (or service provider's) own account: no sub_mchid
    bill_date, _ = bill_day
    code, text = mch.wx.fundflow_bill(bill_date=bill_date, account_type='BASIC', tar_type='GZIP')
    assert code == 200, text
    bill = json.loads(text)
    assert bill['hash_type'] == 'SHA1'
    code, content = mch.wx.download_bill(bill['download_url'])
    assert code == 200, content
    raw = gzip.decompress(content)
    assert hashlib.sha1(raw).hexdigest() == bill['hash_value'].lower()
    assert raw[3:].decode('utf-8').startswith('记账时间,')


def test_payment_callback_decrypted_by_sdk(mch, notify):
    t = mch.paid_order(total=555)
    verifier = mch.callback_verifier()

    def pick(rec):
        if not rec['path'].endswith('/' + mch.kit_name):
            return None
        try:
            data = verifier.callback(CaseInsensitiveDict(rec['headers'].items()), rec['body'])
        except Exception:
            return None
        if data and data.get('event_type') == 'TRANSACTION.SUCCESS' \
                and data['resource'].get('out_trade_no') == t['out_trade_no']:
            return data
        return None

    data = notify.wait_for(pick, 15, f'TRANSACTION.SUCCESS for {t["out_trade_no"]}')
    res = data['resource']
    assert data['resource_type'] == 'encrypt-resource'
    assert res['trade_state'] == 'SUCCESS'
    assert res['amount']['total'] == 555
    assert res['transaction_id'] == t['transaction_id']
    assert res['attach'] == '自定义数据 paygate'
    check_ids(res, mch)


def test_profit_sharing_roundtrip(mch, sim):
    """receivers add (one with an encrypted name) -> order -> query -> return -> return query ->
    amounts -> unfreeze -> receivers delete, all through the SDK's own calls."""
    openid = ('o' + uuid.uuid4().hex)[:28]
    other = sim.kits['partner' if mch.kit_name == 'direct' else 'direct']['merchant']['mchid']
    code, text = mch.wx.profitsharing_add_receiver('PERSONAL_OPENID', openid, 'USER', **mch.sub)
    assert code == 200, text
    # MERCHANT_ID needs the merchant name, RSA-OAEP encrypted by the SDK with the platform key it
    # holds (public key, or its newest platform certificate) and named in Wechatpay-Serial
    code, text = mch.wx.profitsharing_add_receiver('MERCHANT_ID', other, 'PARTNER', name='paygate test merchant', **mch.sub)
    assert code == 200, text
    assert json.loads(text)['account'] == other
    # the prepay must allow sharing: settle_info.profit_sharing = true
    t = mch.paid_order(WeChatPayType.NATIVE, total=1000, settle_info={'profit_sharing': True})
    tid = t['transaction_id']
    code, text = mch.wx.profitsharing_amount_query(tid)
    assert code == 200, text
    before = json.loads(text)['unsplit_amount']
    out_order_no = unique_no('pyo')
    code, text = mch.wx.profitsharing_order(
        tid, out_order_no,
        [{'type': 'PERSONAL_OPENID', 'account': openid, 'amount': 50, 'description': 'py user'},
         {'type': 'MERCHANT_ID', 'account': other, 'amount': 40, 'description': 'py merchant'}],
        False, **mch.sub)
    assert code == 200, text
    assert json.loads(text)['state'] in ('PROCESSING', 'FINISHED')
    deadline = time.time() + 20
    while True:
        code, text = mch.wx.profitsharing_order_query(tid, out_order_no, **mch.sub)
        assert code == 200, text
        if json.loads(text)['state'] == 'FINISHED':
            break
        assert time.time() < deadline, text
        time.sleep(0.1)
    code, text = mch.wx.profitsharing_amount_query(tid)
    assert code == 200, text
    assert json.loads(text)['unsplit_amount'] == before - 90
    out_return_no = unique_no('pyrt')
    code, text = mch.wx.profitsharing_return(out_return_no, other, 15, 'py return', out_order_no=out_order_no, **mch.sub)
    assert code == 200, text
    assert json.loads(text)['result'] in ('PROCESSING', 'SUCCESS')
    deadline = time.time() + 20
    while True:
        # note: the SDK builds ".../return-orders/{no}?&out_order_no=..." (an empty query pair)
        code, text = mch.wx.profitsharing_return_query(out_order_no, out_return_no, **mch.sub)
        assert code == 200, text
        if json.loads(text)['result'] == 'SUCCESS':
            break
        assert time.time() < deadline, text
        time.sleep(0.1)
    code, text = mch.wx.profitsharing_unfreeze(tid, unique_no('pyu'), 'rest', **mch.sub)
    assert code == 200, text
    deadline = time.time() + 20
    while True:
        code, text = mch.wx.profitsharing_amount_query(tid)
        assert code == 200, text
        if json.loads(text)['unsplit_amount'] == 0:
            break
        assert time.time() < deadline, f'unsplit_amount stays {text}'
        time.sleep(0.1)
    if mch.partner:
        code, text = mch.wx.profitsharing_config_query(mch.m['sub_mchid'])
        assert code == 200, text
        assert json.loads(text)['sub_mchid'] == mch.m['sub_mchid']
    for account_type, account in (('PERSONAL_OPENID', openid), ('MERCHANT_ID', other)):
        code, text = mch.wx.profitsharing_delete_receiver(account_type, account, **mch.sub)
        assert code == 200, text


@pytest.mark.parametrize('kit_name', ['direct', 'partner'])
def test_sdk_certificate_download(sim, notify, kit_name):
    """The SDK's own platform-certificate download (Core._update_certificates: GET /v3/certificates,
    AES-GCM decrypt with the APIv3 key, drop certificates outside their validity window) finds the
    kit's platform certificate (§4.9)."""
    m = Merchant(sim, notify, kit_name, 'pubkey')
    core = m.wx._core
    core._update_certificates()
    serials = [format(c.serial_number, 'X') for c in core._certificates]
    assert int(m.m['platform_serial_no'], 16) in [c.serial_number for c in core._certificates], \
        f'downloaded certificate serials {serials}, expected {m.m["platform_serial_no"]}'
