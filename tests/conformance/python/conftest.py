"""Harness for the wechatpayv3 conformance suite.

Starts the paygate WeChat Pay v3 simulator (binary from $PAYGATE_BIN, default
<repo>/target/debug/paygate) on a free 127.0.0.1 port with a temporary kit directory, and a
local notify_url receiver. Protocol checks live in test_wechatpayv3.py and go through the SDK.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, '..', '..', '..'))


def paygate_bin():
    env = os.environ.get('PAYGATE_BIN')
    return os.path.abspath(env) if env else os.path.join(REPO, 'target', 'debug', 'paygate')


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def read_kit(d):
    def rd(name):
        with open(os.path.join(d, name), encoding='utf-8') as f:
            return f.read()
    return {
        'dir': d,
        'merchant': json.loads(rd('merchant.json')),
        'private_key': rd('apiclient_key.pem'),
        'merchant_cert': rd('apiclient_cert.pem'),
        'pub_key': rd('pub_key.pem'),
        'platform_cert': rd('platform_cert.pem'),
    }


class Simulator:
    def __init__(self, proc, kit_dir, listening_url, kits, log_path):
        self.proc = proc
        self.kit_dir = kit_dir
        self.listening_url = listening_url
        self.kits = kits
        self.log_path = log_path
        self.base_url = kits['direct']['merchant']['base_url']

    def sandbox(self, path, body):
        import requests
        url = self.base_url.rstrip('/') + '/' + path.lstrip('/')
        r = requests.post(url, json=body, timeout=20)
        if not (200 <= r.status_code < 300):
            raise AssertionError(f'sandbox POST {path} {body} -> HTTP {r.status_code}: {r.text}')
        return r

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture(scope='session')
def sim():
    binary = paygate_bin()
    if not os.path.exists(binary):
        pytest.fail(f'simulator binary not found at {binary} (cargo build -p paygate, or set PAYGATE_BIN)')
    port = free_port()
    kit_dir = tempfile.mkdtemp(prefix='paygate-conf-py-')
    log_path = os.path.join(kit_dir, 'sim.stderr.log')
    log = open(log_path, 'wb')
    proc = subprocess.Popen(
        [binary, 'sim', '--listen', f'127.0.0.1:{port}', '--kit-dir', kit_dir, '--time-scale', '1000'],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    lines = []
    found = {}

    def reader():
        for raw in proc.stdout:
            line = raw.decode('utf-8', 'replace')
            lines.append(line)
            m = re.search(r'listening on (http://\S+)', line)
            if m and 'url' not in found:
                found['url'] = m.group(1)
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = time.time() + 60
    while 'url' not in found:
        if proc.poll() is not None:
            log.flush()
            with open(log_path, 'rb') as f:
                err = f.read().decode('utf-8', 'replace')
            pytest.fail(f'simulator exited early ({proc.returncode}).\nstdout:\n{"".join(lines)}\nstderr:\n{err}')
        if time.time() > deadline:
            proc.kill()
            pytest.fail('simulator did not print "listening on" within 60 s:\n' + ''.join(lines))
        time.sleep(0.05)
    for _ in range(50):
        if all(os.path.exists(os.path.join(kit_dir, k, 'merchant.json')) for k in ('direct', 'partner')):
            break
        time.sleep(0.1)
    kits = {k: read_kit(os.path.join(kit_dir, k)) for k in ('direct', 'partner')}
    s = Simulator(proc, kit_dir, found['url'], kits, log_path)
    try:
        yield s
    finally:
        s.stop()
        log.close()
        shutil.rmtree(kit_dir, ignore_errors=True)


class NotifyServer:
    def __init__(self):
        self.received = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(n)
                with outer.cond:
                    outer.received.append({'path': self.path, 'headers': self.headers, 'body': body})
                    outer.cond.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, suffix):
        return f'http://127.0.0.1:{self.port}/notify/{suffix}'

    def wait_for(self, pick, timeout=15.0, what='notification'):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for rec in list(self.received):
                    out = pick(rec)
                    if out:
                        return out
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f'timed out after {timeout}s waiting for {what}; '
                                         f'{len(self.received)} notification(s) received in total')
                self.cond.wait(min(left, 0.25))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope='session')
def notify():
    n = NotifyServer()
    try:
        yield n
    finally:
        n.close()


# ---------------------------------------------------------------------------------------------
# The gateway (`paygate serve`) with its embedded sandbox channel, one per store backend:
# SQLite always, PostgreSQL in a fresh private schema when PAYGATE_TEST_DATABASE_URL is set.

GATEWAY_BACKENDS = ['sqlite'] + (['postgres'] if os.environ.get('PAYGATE_TEST_DATABASE_URL') else [])


def pg_schema_url(base_url, name):
    """The store's documented way to use a private PostgreSQL schema."""
    sep = '&' if '?' in base_url else '?'
    return f'{base_url}{sep}schema={name}'


class Gateway:
    def __init__(self, proc, base_url, data_dir, token, store_args, env, log_path):
        self.proc = proc
        self.base_url = base_url  # ends with '/'
        self.data_dir = data_dir
        self.token = token
        self.store_args = store_args
        self.env = env
        self.log_path = log_path

    def sandbox_pay(self, mchid, out_trade_no, result='SUCCESS'):
        import requests
        r = requests.post(self.base_url + 'sandbox/v1/pay',
                          json={'mchid': mchid, 'out_trade_no': out_trade_no, 'result': result}, timeout=20)
        if not (200 <= r.status_code < 300):
            raise AssertionError(f'gateway sandbox pay {out_trade_no} {result} -> HTTP {r.status_code}: {r.text}')
        return r

    def admin(self, method, path, body=None):
        import requests
        return requests.request(method, self.base_url + path.lstrip('/'), json=body, timeout=20,
                                headers={'Authorization': f'Bearer {self.token}'})

    def create_merchant_cli(self, name):
        kit_dir = tempfile.mkdtemp(prefix='paygate-conf-py-gwkit-')
        try:
            r = subprocess.run([paygate_bin(), 'merchant', 'create', '--name', name, '--out', kit_dir,
                                *self.store_args, '--public-base-url', self.base_url],
                               env=self.env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
            assert r.returncode == 0, (f'paygate merchant create failed ({r.returncode}):\n'
                                       f'{r.stdout.decode(errors="replace")}\n{r.stderr.decode(errors="replace")}')
            return read_kit(kit_dir)
        finally:
            shutil.rmtree(kit_dir, ignore_errors=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture(scope='session', params=GATEWAY_BACKENDS)
def gateway(request):
    binary = paygate_bin()
    if not os.path.exists(binary):
        pytest.fail(f'paygate binary not found at {binary} (cargo build -p paygate, or set PAYGATE_BIN)')
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix='paygate-conf-py-gw-')
    store_args = ['--data-dir', data_dir]
    schema = None
    pg_base = os.environ.get('PAYGATE_TEST_DATABASE_URL')
    if request.param == 'postgres':
        schema = f'conf_py_{int(time.time())}_{os.getpid()}'
        store_args += ['--database-url', pg_schema_url(pg_base, schema)]
    token = 'conf-py-' + os.urandom(12).hex()
    env = dict(os.environ, PAYGATE_OPERATOR_TOKEN=token)
    log_path = os.path.join(data_dir, 'serve.stderr.log')
    log = open(log_path, 'wb')
    proc = subprocess.Popen(
        [binary, 'serve', '--listen', f'127.0.0.1:{port}', *store_args, '--sandbox-time-scale', '1000'],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env)
    lines = []
    found = {}

    def reader():
        for raw in proc.stdout:
            line = raw.decode('utf-8', 'replace')
            lines.append(line)
            m = re.search(r'listening on (http://\S+)', line)
            if m and 'url' not in found:
                found['url'] = m.group(1)
    threading.Thread(target=reader, daemon=True).start()
    deadline = time.time() + 60
    while 'url' not in found:
        if proc.poll() is not None:
            log.flush()
            with open(log_path, 'rb') as f:
                err = f.read().decode('utf-8', 'replace')
            pytest.fail(f'paygate serve exited early ({proc.returncode}).\nstdout:\n{"".join(lines)}\nstderr:\n{err}')
        if time.time() > deadline:
            proc.kill()
            pytest.fail('paygate serve did not print "listening on" within 60 s:\n' + ''.join(lines))
        time.sleep(0.05)
    gw = Gateway(proc, found['url'].rstrip('/') + '/', data_dir, token, store_args, env, log_path)
    gw.backend = request.param
    try:
        yield gw
    finally:
        gw.stop()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        if schema:
            try:  # best effort: a leftover schema only costs disk
                subprocess.run(['psql', pg_base, '-q', '-c', f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'],
                               capture_output=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
            except (OSError, subprocess.SubprocessError):
                pass
