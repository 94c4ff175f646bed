//! Shared helpers: keys, WeChat Pay v3 style sign/verify, nonces, CPU accounting.
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{self, KeyPair as _, ParsedPublicKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where run.sh put the two RSA-2048 keys (PKCS#8 DER): `FLOOR_KEYS`.
fn key_dir() -> String {
    std::env::var("FLOOR_KEYS").expect("FLOOR_KEYS: the directory run.sh made the keys in")
}

pub struct Signer {
    kp: KeyPair,
    rng: SystemRandom,
}

impl Signer {
    pub fn load(name: &str) -> Signer {
        let der = std::fs::read(format!("{}/{name}.p8.der", key_dir())).expect("read key");
        let kp = KeyPair::from_pkcs8(&der).expect("pkcs8");
        Signer {
            kp,
            rng: SystemRandom::new(),
        }
    }
    pub fn public(&self) -> ParsedPublicKey {
        ParsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            self.kp.public_key().as_ref(),
        )
        .expect("pubkey")
    }
    pub fn sign_raw(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; self.kp.public_modulus_len()];
        self.kp
            .sign(&signature::RSA_PKCS1_SHA256, &self.rng, msg, &mut sig)
            .expect("sign");
        sig
    }
    pub fn sign_b64(&self, msg: &[u8]) -> String {
        B64.encode(self.sign_raw(msg))
    }
}

pub fn verify_b64(pk: &ParsedPublicKey, msg: &[u8], sig_b64: &str) -> bool {
    match B64.decode(sig_b64) {
        Ok(sig) => pk.verify_sig(msg, &sig).is_ok(),
        Err(_) => false,
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        let addr = &t as *const u64 as u64;
        (t ^ addr.rotate_left(32)) | 1
    });
}

/// xorshift64*, good enough for nonces in a benchmark.
pub fn rand_u64() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545F4914F6CDD1D)
    })
}

pub fn nonce() -> String {
    format!("{:016X}{:016X}", rand_u64(), rand_u64())
}

/// "METHOD\nPATH\nTS\nNONCE\nBODY\n"
pub fn req_message(method: &str, path: &str, ts: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m =
        Vec::with_capacity(method.len() + path.len() + ts.len() + nonce.len() + body.len() + 5);
    for part in [
        method.as_bytes(),
        path.as_bytes(),
        ts.as_bytes(),
        nonce.as_bytes(),
        body,
    ] {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m
}

/// "TS\nNONCE\nBODY\n"
/// A signed V3 answer: `body` with its Wechatpay-* headers (`sig` over [`resp_message`]).
pub fn signed_answer(
    body: Vec<u8>,
    ts: &str,
    nonce: &str,
    sig: &str,
    serial: &'static str,
) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("wechatpay-timestamp", HeaderValue::from_str(ts).unwrap());
    h.insert("wechatpay-nonce", HeaderValue::from_str(nonce).unwrap());
    h.insert("wechatpay-signature", HeaderValue::from_str(sig).unwrap());
    h.insert("wechatpay-serial", HeaderValue::from_static(serial));
    r
}

/// An answer's (timestamp, nonce, signature) headers; empty where missing.
pub fn answer_signature(h: &axum::http::HeaderMap) -> (String, String, String) {
    let g = |k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    (
        g("wechatpay-timestamp"),
        g("wechatpay-nonce"),
        g("wechatpay-signature"),
    )
}

pub fn resp_message(ts: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ts.len() + nonce.len() + body.len() + 3);
    for part in [ts.as_bytes(), nonce.as_bytes(), body] {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m
}

/// Build the Authorization header value for a request.
pub fn auth_header(
    signer: &Signer,
    mchid: &str,
    serial: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    let ts = now_secs().to_string();
    let n = nonce();
    let sig = signer.sign_b64(&req_message(method, path, &ts, &n, body));
    format!(
        "WECHATPAY2-SHA256-RSA2048 mchid=\"{mchid}\",nonce_str=\"{n}\",timestamp=\"{ts}\",serial_no=\"{serial}\",signature=\"{sig}\""
    )
}

pub struct AuthParts<'a> {
    pub mchid: &'a str,
    pub nonce: &'a str,
    pub timestamp: &'a str,
    pub serial: &'a str,
    pub signature: &'a str,
}

pub fn parse_auth(h: &str) -> Option<AuthParts<'_>> {
    let rest = h.strip_prefix("WECHATPAY2-SHA256-RSA2048 ")?;
    let (mut mchid, mut nonce, mut ts, mut serial, mut sig) = (None, None, None, None, None);
    for kv in rest.split(',') {
        let (k, v) = kv.trim().split_once('=')?;
        let v = v.strip_prefix('"')?.strip_suffix('"')?;
        match k {
            "mchid" => mchid = Some(v),
            "nonce_str" => nonce = Some(v),
            "timestamp" => ts = Some(v),
            "serial_no" => serial = Some(v),
            "signature" => sig = Some(v),
            _ => {}
        }
    }
    Some(AuthParts {
        mchid: mchid?,
        nonce: nonce?,
        timestamp: ts?,
        serial: serial?,
        signature: sig?,
    })
}

/// Verify an incoming request's Authorization header.
pub fn verify_request(
    pk: &ParsedPublicKey,
    auth: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> bool {
    match parse_auth(auth) {
        Some(a) => verify_b64(
            pk,
            &req_message(method, path, a.timestamp, a.nonce, body),
            a.signature,
        ),
        None => false,
    }
}

// ---------- CPU accounting from /proc ----------

/// Per-thread (comm, tid, ns on CPU from schedstat).
pub fn thread_cpu(pid: u32) -> Vec<(String, u32, u64)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in rd.flatten() {
            let tid: u32 = match e.file_name().to_string_lossy().parse() {
                Ok(t) => t,
                Err(_) => continue,
            };
            let p = e.path();
            let comm = std::fs::read_to_string(p.join("comm"))
                .unwrap_or_default()
                .trim()
                .to_string();
            let ns = std::fs::read_to_string(p.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
                .unwrap_or(0);
            out.push((comm, tid, ns));
        }
    }
    out
}

/// utime+stime in clock ticks (includes exited threads).
pub fn proc_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the ")" of comm
    let after = match s.rfind(')') {
        Some(i) => &s[i + 2..],
        None => return 0,
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ")" field index 0 is field 3 (state); utime = field 14 -> idx 11, stime = 15 -> idx 12
    f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
}

// ---------- in-situ crypto accounting (thread CPU time around each sign/verify) ----------
use std::sync::atomic::{AtomicU64, Ordering};
pub static SIGN_NS: AtomicU64 = AtomicU64::new(0);
pub static SIGN_N: AtomicU64 = AtomicU64::new(0);
pub static VERIFY_NS: AtomicU64 = AtomicU64::new(0);
pub static VERIFY_N: AtomicU64 = AtomicU64::new(0);

pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn timed<T>(ns: &AtomicU64, n: &AtomicU64, f: impl FnOnce() -> T) -> T {
    let t0 = thread_cpu_ns();
    let r = f();
    ns.fetch_add(thread_cpu_ns() - t0, Ordering::Relaxed);
    n.fetch_add(1, Ordering::Relaxed);
    r
}
