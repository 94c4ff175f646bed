'use strict';

// Test harness: starts the paygate WeChat Pay v3 simulator on a free 127.0.0.1 port with a
// temporary kit directory, loads the two credential kits it writes, and runs a local
// notify_url receiver. Everything here is plumbing; every protocol check in the tests goes
// through the wechatpay-axios-plugin SDK.

const { spawn, execFile } = require('node:child_process');
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

/** Run `paygate <args>` to completion (bounded); resolves with {stdout, stderr}, rejects on failure. */
function runPaygate(args, { env = {}, timeoutMs = 120000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(paygateBin(), args, { env: { ...process.env, ...env }, timeout: timeoutMs, killSignal: 'SIGKILL' }, (e, stdout, stderr) => {
      if (e) reject(new Error(`paygate ${args.join(' ')} failed (${e.code ?? e.signal}):\nstdout:\n${stdout}\nstderr:\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}

/**
 * A private PostgreSQL schema for one gateway run, on the server of `baseUrl`
 * (PAYGATE_TEST_DATABASE_URL). The store creates the schema on first open; `drop()` removes it
 * (psql, best effort: a leftover schema only costs disk).
 */
function pgSchema(baseUrl, prefix) {
  const name = `${prefix}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`.toLowerCase();
  const u = new URL(baseUrl);
  u.searchParams.set('schema', name);
  return {
    name,
    url: u.toString(),
    drop: () => new Promise((resolve) => {
      execFile('psql', [baseUrl, '-q', '-c', `DROP SCHEMA IF EXISTS "${name}" CASCADE`], { timeout: 30000 }, () => resolve());
    }),
  };
}

/**
 * Start the gateway: `paygate serve` on a free port with a fresh data dir (SQLite store unless
 * databaseUrl is given) and the embedded sandbox channel. Resolves with
 * {baseURL, dataDir, token, storeArgs, admin(method, path, body), createMerchantCli(name), stop()}.
 */
async function startGateway({
  databaseUrl, timeScale = 1000, readyTimeoutMs = 60000, extraArgs = [], merchantsBeforeStart = [],
} = {}) {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'paygate-conf-gw-'));
  const token = `conf-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
  const storeArgs = ['--data-dir', dataDir];
  if (databaseUrl) storeArgs.push('--database-url', databaseUrl);
  const args = ['serve', '--listen', `127.0.0.1:${port}`, ...storeArgs, '--sandbox-time-scale', String(timeScale), ...extraArgs];
  const env = { PAYGATE_OPERATOR_TOKEN: token };

  /** `paygate merchant create` on the store (server running or not); returns the kit it wrote. */
  async function createMerchantCli(name, baseURL) {
    const kitDir = fs.mkdtempSync(path.join(os.tmpdir(), 'paygate-conf-gwkit-'));
    try {
      await runPaygate(['merchant', 'create', '--name', name, '--out', kitDir, ...storeArgs, '--public-base-url', baseURL], { env });
      return readKit(kitDir);
    } finally {
      fs.rmSync(kitDir, { recursive: true, force: true });
    }
  }

  // merchants created by the CLI while no server runs (the server must find them at start)
  const kitsBeforeStart = {};
  for (const name of merchantsBeforeStart) {
    kitsBeforeStart[name] = await createMerchantCli(name, `http://127.0.0.1:${port}/`);
  }

  const proc = await spawnListening(args, { env, readyTimeoutMs, what: 'paygate serve' });
  const baseURL = `${proc.listeningURL.replace(/\/+$/, '')}/`;

  // The contract: the operator token comes from PAYGATE_OPERATOR_TOKEN, else it is generated
  // into DATA_DIR/operator_token. Admin calls use the generated one when it exists (so the admin
  // tests still run if the env is not honoured); a dedicated test checks the env token itself.
  const tokenFile = path.join(dataDir, 'operator_token');
  const adminToken = () => (fs.existsSync(tokenFile) ? fs.readFileSync(tokenFile, 'utf8').trim() : token);

  async function admin(method, pathname, body, { bearer } = {}) {
    const res = await fetch(new URL(pathname, baseURL), {
      method,
      headers: { Authorization: `Bearer ${bearer ?? adminToken()}`, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(20000),
    });
    const text = await res.text();
    let json;
    try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
    return { status: res.status, text, json };
  }

  async function stop() {
    await proc.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }

  return {
    baseURL,
    port,
    dataDir,
    token,
    storeArgs,
    admin,
    createMerchantCli: (name) => createMerchantCli(name, baseURL),
    kitsBeforeStart,
    stop,
    stderr: proc.stderr,
    proc,
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
      if (req.url.includes('/ok200')) status = 200;
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
      } else if (status === 200) {
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ code: 'SUCCESS', message: '成功' }));
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
  runPaygate, startGateway, pgSchema,
};
