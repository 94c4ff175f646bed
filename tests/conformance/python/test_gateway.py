"""Conformance of the paygate GATEWAY: the real PyPI `wechatpayv3` SDK is a merchant of
`paygate serve` (embedded sandbox channel), pointed at it through `_core._gate_way` (reference
§2.4), exactly as it would be at WeChat Pay. The SDK verifies every 2xx response itself
(including the signed 204 of close) and checks notifications with `callback(headers, body)`.

Runs per store backend (conftest `gateway` fixture: SQLite, plus PostgreSQL in a private schema
when PAYGATE_TEST_DATABASE_URL is set) x {public-key mode, platform-certificate mode}.
"""

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
TRANSACTION_ID = re.compile(r'^\d{28}$')
OPENID = 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o'


def unique_no(prefix):
    return (prefix + uuid.uuid4().hex)[:32]


@pytest.fixture(scope='session')
def gw_kit(gateway):
    return gateway.create_merchant_cli(f'conformance-py-{gateway.backend}')


class GwMerchant:
    def __init__(self, gateway, notify, kit, mode):
        self.gw = gateway
        self.kit = kit
        self.m = kit['merchant']
        self.mode = mode
        self.notify_suffix = f'pygw-{gateway.backend}-{mode}'
        self.notify_url = notify.url(self.notify_suffix)
        kwargs = dict(
            wechatpay_type=WeChatPayType.NATIVE, mchid=self.m['mchid'], private_key=kit['private_key'],
            cert_serial_no=self.m['serial_no'], appid=self.m['appid'], apiv3_key=self.m['apiv3_key'],
            notify_url=self.notify_url, timeout=(5, 20))
        if mode == 'pubkey':
            kwargs.update(public_key=kit['pub_key'], public_key_id=self.m['platform_public_key_id'])
        else:
            # certificate mode with a pre-populated cert_dir: no network access at construction
            self.cert_dir = tempfile.mkdtemp(prefix='paygate-conf-py-gwcerts-')
            with open(os.path.join(self.cert_dir, self.m['platform_serial_no'] + '.pem'), 'w') as f:
                f.write(kit['platform_cert'])
            kwargs.update(cert_dir=self.cert_dir)
        self.wx = WeChatPay(**kwargs)
        self.wx._core._gate_way = self.m['base_url'].rstrip('/')

    def callback_verifier(self):
        """The SDK's transition set-up (public key + certificates downloaded from the gateway's
        /v3/certificates when a notification names a certificate serial): the notification's key
        is the gateway's choice, either is fine."""
        wx = WeChatPay(wechatpay_type=WeChatPayType.NATIVE, mchid=self.m['mchid'], private_key=self.kit['private_key'],
                       cert_serial_no=self.m['serial_no'], appid=self.m['appid'], apiv3_key=self.m['apiv3_key'],
                       notify_url=self.notify_url, timeout=(5, 20),
                       public_key=self.kit['pub_key'], public_key_id=self.m['platform_public_key_id'])
        wx._core._gate_way = self.m['base_url'].rstrip('/')
        return wx

    def pay(self, pay_type, out_trade_no, total=101, **extra):
        kw = dict(description='Image形象店-深圳腾大-QQ公仔', attach='自定义数据 paygate', out_trade_no=out_trade_no,
                  amount={'total': total, 'currency': 'CNY'}, pay_type=pay_type, **extra)
        if pay_type == WeChatPayType.JSAPI:
            kw['payer'] = {'openid': OPENID}
        return self.wx.pay(**kw)

    def paid_order(self, pay_type=WeChatPayType.NATIVE, total=101):
        out_trade_no = unique_no(f'pygw{self.mode[0]}')
        code, text = self.pay(pay_type, out_trade_no, total=total)
        assert code == 200, f'prepay: HTTP {code} {text}'
        self.gw.sandbox_pay(self.m['mchid'], out_trade_no)
        deadline = time.time() + 15
        while True:
            code, text = self.wx.query(out_trade_no=out_trade_no)
            assert code == 200, f'query: HTTP {code} {text}'
            t = json.loads(text)
            if t['trade_state'] == 'SUCCESS':
                return t
            assert time.time() < deadline, f'order {out_trade_no} never became SUCCESS at the gateway: {text}'
            time.sleep(0.1)


MODES = ['pubkey', 'cert']


@pytest.fixture(params=MODES)
def mch(request, gateway, notify, gw_kit):
    m = GwMerchant(gateway, notify, gw_kit, request.param)
    yield m
    if request.param == 'pubkey':
        # every request carried Wechatpay-Serial = public_key_id (§1.3): every response must have
        # been signed with the public key, so the SDK never needed to download certificates
        assert m.wx._core._certificates == [], (
            'in public-key mode a gateway response was signed with the platform certificate '
            '(the SDK had to download /v3/certificates to verify it)')


def check_order(t, mch, out_trade_no, total, trade_type):
    assert t['out_trade_no'] == out_trade_no
    assert t['mchid'] == mch.m['mchid']
    assert t['appid'] == mch.m['appid']
    assert t['trade_type'] == trade_type
    assert t['attach'] == '自定义数据 paygate'
    assert t['amount']['total'] == total


def test_kit_points_at_the_gateway(gateway, gw_kit):
    m = gw_kit['merchant']
    for f in ('mchid', 'appid', 'serial_no', 'apiv3_key', 'base_url', 'platform_public_key_id', 'platform_serial_no'):
        assert isinstance(m[f], str) and m[f], f
    assert m['base_url'].rstrip('/') == gateway.base_url.rstrip('/')
    assert len(m['apiv3_key'].encode()) == 32


def test_prepay_native_then_query_notpay(mch):
    out_trade_no = unique_no('pygwn')
    code, text = mch.pay(WeChatPayType.NATIVE, out_trade_no)
    assert code == 200, text
    assert json.loads(text)['code_url'].startswith('weixin://')
    code, text = mch.wx.query(out_trade_no=out_trade_no)
    assert code == 200, text
    t = json.loads(text)
    check_order(t, mch, out_trade_no, 101, 'NATIVE')
    assert t['trade_state'] == 'NOTPAY'


def test_prepay_jsapi_idempotent(mch):
    out_trade_no = unique_no('pygwj')
    code, text = mch.pay(WeChatPayType.JSAPI, out_trade_no)
    assert code == 200, text
    prepay_id = json.loads(text)['prepay_id']
    assert isinstance(prepay_id, str) and 0 < len(prepay_id) <= 64
    code, text = mch.pay(WeChatPayType.JSAPI, out_trade_no)
    assert code == 200, text
    assert json.loads(text)['prepay_id'] == prepay_id, 'identical re-prepay answers the same prepay_id (§4.6)'
    code, text = mch.pay(WeChatPayType.JSAPI, out_trade_no, total=999)
    assert code == 403, text
    assert json.loads(text)['code'] == 'OUT_TRADE_NO_USED'


def test_paid_order_query_by_transaction_id(mch):
    t = mch.paid_order(WeChatPayType.JSAPI, total=333)
    check_order(t, mch, t['out_trade_no'], 333, 'JSAPI')
    assert TRANSACTION_ID.match(t['transaction_id']), t['transaction_id']
    assert RFC3339.match(t['success_time'])
    code, text = mch.wx.query(transaction_id=t['transaction_id'])
    assert code == 200, text
    by_id = json.loads(text)
    assert by_id['out_trade_no'] == t['out_trade_no']
    assert by_id['trade_state'] == 'SUCCESS'
    assert by_id['transaction_id'] == t['transaction_id']


def test_close_is_204_verified_and_final(mch):
    out_trade_no = unique_no('pygwc')
    code, text = mch.pay(WeChatPayType.NATIVE, out_trade_no)
    assert code == 200, text
    code, body = mch.wx.close(out_trade_no)  # the SDK verified the signed 204 itself
    assert code == 204, body
    assert not body
    code, text = mch.wx.query(out_trade_no=out_trade_no)
    assert code == 200, text
    assert json.loads(text)['trade_state'] == 'CLOSED'
    code, text = mch.pay(WeChatPayType.NATIVE, out_trade_no)
    assert code == 400, text
    assert json.loads(text)['code'] == 'ORDER_CLOSED'


def test_close_paid_order_is_order_paid(mch):
    t = mch.paid_order(total=212)
    code, text = mch.wx.close(t['out_trade_no'])
    assert code == 400, text
    assert json.loads(text)['code'] == 'ORDER_PAID'


def test_missing_order(mch):
    code, text = mch.wx.query(out_trade_no=unique_no('pygwm'))
    assert code == 404, text
    err = json.loads(text)
    assert err['code'] == 'ORDER_NOT_EXIST'
    assert isinstance(err['message'], str) and err['message']


def test_payment_callback_decrypted_by_sdk(mch, notify):
    t = mch.paid_order(total=555)
    verifier = mch.callback_verifier()
    suffix = '/' + mch.notify_suffix

    def pick(rec):
        if not rec['path'].endswith(suffix):
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
    assert data['resource_type'] == 'encrypt-resource'
    res = data['resource']
    assert res['trade_state'] == 'SUCCESS'
    assert res['amount']['total'] == 555
    assert res['transaction_id'] == t['transaction_id']
    check_order(res, mch, t['out_trade_no'], 555, 'NATIVE')


def test_sdk_certificate_download(gateway, notify, gw_kit):
    """The SDK's own /v3/certificates download (AES-GCM with the APIv3 key) finds the kit's
    platform certificate (§4.9)."""
    m = GwMerchant(gateway, notify, gw_kit, 'pubkey')
    core = m.wx._core
    core._update_certificates()
    assert int(m.m['platform_serial_no'], 16) in [c.serial_number for c in core._certificates], \
        f'downloaded {[format(c.serial_number, "X") for c in core._certificates]}, expected {m.m["platform_serial_no"]}'
