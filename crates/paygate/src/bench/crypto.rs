//! `paygate bench crypto`: what the unavoidable cryptography costs on this machine, one core,
//! so the gateway's own cost per operation can be put against it.

use std::time::{Duration, Instant};

use paygate_wxpay::crypto::aead::{self, AeadAlgorithm};
use paygate_wxpay::crypto::{SignatureScheme, SigningKey};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct CryptoFigure {
    pub operation: &'static str,
    pub ops_per_s: f64,
    pub us_per_op: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CryptoReport {
    pub figures: Vec<CryptoFigure>,
    /// 2 RSA-2048 signs + 2 verifies: what a prepay cannot avoid in the gateway.
    pub prepay_floor_us: f64,
    /// 1 sign + 1 verify: a query.
    pub query_floor_us: f64,
}

fn measure(
    operation: &'static str,
    budget: Duration,
    mut op: impl FnMut() -> bool,
) -> CryptoFigure {
    // Warm up caches and lazily built state first.
    for _ in 0..3 {
        std::hint::black_box(op());
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..8 {
            std::hint::black_box(op());
        }
        n += 8;
    }
    let secs = start.elapsed().as_secs_f64();
    CryptoFigure {
        operation,
        ops_per_s: n as f64 / secs,
        us_per_op: secs * 1e6 / n as f64,
    }
}

pub fn run(budget: Duration) -> Result<CryptoReport, String> {
    let rsa = SigningKey::generate(SignatureScheme::Rsa2048Sha256).map_err(|e| e.to_string())?;
    let rsa_pub = rsa.verifying_key();
    let sm2 = SigningKey::generate(SignatureScheme::Sm2WithSm3).map_err(|e| e.to_string())?;
    let sm2_pub = sm2.verifying_key();
    // A message the size of a typical prepay's signed string.
    let message = vec![b'x'; 400];
    let rsa_sig = rsa.sign_base64(&message).map_err(|e| e.to_string())?;
    let sm2_sig = sm2.sign_base64(&message).map_err(|e| e.to_string())?;
    let kib = vec![7u8; 1024];
    let key32 = b"0123456789abcdef0123456789abcdef";
    let nonce = "0123456789ab";
    let aes_ct = aead::encrypt(AeadAlgorithm::Aes256Gcm, key32, nonce, b"transaction", &kib)
        .map_err(|e| e.to_string())?;
    let field = vec![9u8; 64];
    let figures = vec![
        measure("RSA-2048 SHA-256 sign", budget, || {
            rsa.sign_base64(&message).is_ok()
        }),
        measure("RSA-2048 SHA-256 verify", budget, || {
            rsa_pub.verify_base64(&message, &rsa_sig).is_ok()
        }),
        measure("SM2-SM3 sign", budget, || sm2.sign_base64(&message).is_ok()),
        measure("SM2-SM3 verify", budget, || {
            sm2_pub.verify_base64(&message, &sm2_sig).is_ok()
        }),
        measure("AES-256-GCM decrypt 1 KiB", budget, || {
            aead::decrypt(
                AeadAlgorithm::Aes256Gcm,
                key32,
                nonce,
                b"transaction",
                &aes_ct,
            )
            .is_ok()
        }),
        measure("SM4-GCM encrypt 64 B", budget, || {
            aead::encrypt(AeadAlgorithm::Sm4Gcm, key32, nonce, b"", &field).is_ok()
        }),
        measure("SHA-256 1 KiB", budget, || {
            paygate_wxpay::crypto::hash::sha256(&kib)[0] != 1
        }),
        measure("SM3 1 KiB", budget, || {
            paygate_wxpay::crypto::hash::sm3(&kib)[0] != 1
        }),
    ];
    let sign = figures[0].us_per_op;
    let verify = figures[1].us_per_op;
    Ok(CryptoReport {
        prepay_floor_us: 2.0 * sign + 2.0 * verify,
        query_floor_us: sign + verify,
        figures,
    })
}

pub fn print(report: &CryptoReport) {
    println!(
        "{:<28} {:>12} {:>10}",
        "operation (one core)", "ops/s", "µs/op"
    );
    for f in &report.figures {
        println!(
            "{:<28} {:>12.0} {:>10.2}",
            f.operation, f.ops_per_s, f.us_per_op
        );
    }
    println!(
        "unavoidable per prepay (2 signs + 2 verifies): {:.0} µs",
        report.prepay_floor_us
    );
    println!(
        "unavoidable per query  (1 sign + 1 verify):   {:.0} µs",
        report.query_floor_us
    );
}
