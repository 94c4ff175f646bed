'use strict';

// Test harness: starts the paygate WeChat Pay v3 simulator on a free 127.0.0.1 port with a
// temporary kit directory, loads the two credential kits it writes, and runs a local
// notify_url receiver. Everything here is plumbing; every protocol check in the tests goes
// through the wechatpay-axios-plugin SDK.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const NODE_DIR = path.resolve(__dirname, '..');

function paygateBin() {
  const fromEnv = process.env.PAYGATE_BIN;
  if (fromEnv) return path.resolve(fromEnv);
  return path.resolve(NODE_DIR, '..', '..', '..', 'target', 'debug', 'paygate');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

function readKit(dir) {
  const read = (f) => fs.readFileSync(path.join(dir, f), 'utf8');
  const merchant = JSON.parse(read('merchant.json'));
  return {
    dir,
    merchant,
    privateKey: read('apiclient_key.pem'),
    merchantCert: read('apiclient_cert.pem'),
    pubKey: read('pub_key.pem'),
    platformCert: read('platform_cert.pem'),
  };
}

/**
 * Spawn `paygate <args>` and wait for its `listening on http://...` line on stdout.
 * Resolves with {child, listeningURL, stdout(), stderr(), exited(), stop({signal}), kill()}.
 * The child is SIGKILLed if this process exits first.
 */
async function spawnListening(args, { env = {}, readyTimeoutMs = 60000, what = 'paygate' } = {}) {
  const bin = paygateBin();
  if (!fs.existsSync(bin)) {
    throw new Error(`paygate binary not found at ${bin} (build it with \`cargo build -p paygate\` or set PAYGATE_BIN)`);
  }
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });

  let out = '';
  let err = '';
  let exited = false;
  child.stderr.on('data', (d) => { err += d.toString(); if (err.length > 200000) err = err.slice(-100000); });
  child.stdout.on('data', (d) => { out += d.toString(); if (out.length > 200000) out = out.slice(-100000); });
  child.on('exit', () => { exited = true; });
  const killOnExit = () => { if (!exited) child.kill('SIGKILL'); };
  process.on('exit', killOnExit);

  const listeningURL = await new Promise((resolve, reject) => {
    const done = (f, v) => {
      clearTimeout(timer); clearInterval(poll); // eslint-disable-line no-use-before-define
      f(v);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      done(reject, new Error(`${what} did not print "listening on" within ${readyTimeoutMs} ms.\nargs: ${args.join(' ')}\nstdout:\n${out}\nstderr:\n${err}`));
    }, readyTimeoutMs);
    const poll = setInterval(() => {
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) done(resolve, m[1]);
    }, 20);
    child.on('exit', (code, sig) => {
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (!m) done(reject, new Error(`${what} exited early (code ${code}, signal ${sig}).\nargs: ${args.join(' ')}\nstdout:\n${out}\nstderr:\n${err}`));
    });
    child.on('error', (e) => done(reject, e));
  });

  async function stop({ signal = 'SIGTERM', graceMs = 3000 } = {}) {
    process.removeListener('exit', killOnExit);
    if (!exited) {
      child.kill(signal);
      for (let i = 0; i < graceMs / 100 && !exited; i += 1) await sleep(100);
      if (!exited) child.kill('SIGKILL');
      for (let i = 0; i < 50 && !exited; i += 1) await sleep(100);
    }
  }

  return {
    child, listeningURL, stdout: () => out, stderr: () => err, exited: () => exited, stop,
  };
}

/**
 * Start the simulator. Resolves with {baseURL, kitDir, kits: {direct, partner}, stop()}.
 */
async function startSimulator({ timeScale = 1000, readyTimeoutMs = 60000 } = {}) {
  const port = await freePort();
  const kitDir = fs.mkdtempSync(path.join(os.tmpdir(), 'paygate-conf-node-'));
  const args = ['sim', '--listen', `127.0.0.1:${port}`, '--kit-dir', kitDir, '--time-scale', String(timeScale)];
  const proc = await spawnListening(args, { readyTimeoutMs, what: 'simulator' });

  // the kits may be flushed right around the "listening" line: wait briefly for them
  const kitFiles = ['direct', 'partner'].map((k) => path.join(kitDir, k, 'merchant.json'));
  for (let i = 0; i < 50 && !kitFiles.every((f) => fs.existsSync(f)); i += 1) await sleep(100);

  const kits = {
    direct: readKit(path.join(kitDir, 'direct')),
    partner: readKit(path.join(kitDir, 'partner')),
  };

  async function stop() {
    await proc.stop();
    fs.rmSync(kitDir, { recursive: true, force: true });
  }

  return {
    listeningURL: proc.listeningURL, port, kitDir, kits, stop, stderr: proc.stderr,
  };
}

/**
 * A local notify_url receiver. Records every POST (raw body + headers) and answers 204.
 */
async function startNotifyServer() {
  const received = [];
  const waiters = new Set();
  // paths containing "/flaky" refuse the first delivery of each notification id with a 500
  const refusedOnce = new Set();
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const rec = {
        path: req.url, method: req.method, headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now(),
      };
      let status = 204;
      if (req.url.includes('/flaky')) {
        let id;
        try { id = JSON.parse(rec.body).id; } catch { id = rec.body; }
        if (!refusedOnce.has(id)) { refusedOnce.add(id); status = 500; }
      }
      rec.answered = status;
      received.push(rec);
      res.statusCode = status;
      if (status === 500) {
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ code: 'FAIL', message: '失败' }));
      } else {
        res.end();
      }
      waiters.forEach((w) => w());
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();

  /** Wait until `pick(received)` returns a truthy value, or fail after timeoutMs. */
  async function waitFor(pick, timeoutMs = 15000, what = 'notification') {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = pick(received);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; received ${received.length} notification(s) in total`);
      await new Promise((resolve) => {
        const w = () => { waiters.delete(w); clearTimeout(t); resolve(); };
        const t = setTimeout(w, Math.min(left, 250));
        waiters.add(w);
      });
    }
  }

  return {
    url: (suffix) => `http://127.0.0.1:${port}/notify/${suffix}`,
    received,
    waitFor,
    close: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); }),
  };
}

/** Beijing date (UTC+8) as YYYY-MM-DD. */
function beijingDate(ms = Date.now()) {
  return new Date(ms + 8 * 3600 * 1000).toISOString().slice(0, 10);
}

let seq = 0;
/** A fresh merchant-side order number, 6-32 chars of [0-9A-Za-z_-]. */
function uniqueNo(prefix) {
  seq += 1;
  const t = Date.now().toString(36);
  const r = Math.random().toString(36).slice(2, 8);
  return `${prefix}${t}${r}${seq}`.replace(/[^0-9A-Za-z_-]/g, '').slice(0, 32);
}

module.exports = {
  startSimulator, startNotifyServer, beijingDate, uniqueNo, sleep, paygateBin, freePort, readKit, spawnListening,
};
