//! The cryptography every V3 call pays for (issue 8 §3): RSA-2048 and SM2 sign/verify over a
//! prepay-sized message, and AES-256-GCM / SM4-GCM over a notification-sized resource.
//! `paygate bench crypto` prints the same figures next to a load run; this is the
//! criterion view, for regressions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paygate_wxpay::crypto::aead::{AeadAlgorithm, AeadKey};
use paygate_wxpay::crypto::{SignatureScheme, SigningKey};

/// About the size of a prepay's signed string (method, target, timestamp, nonce, body).
const MESSAGE_BYTES: usize = 400;
/// About the size of a payment notification's plaintext resource.
const RESOURCE_BYTES: usize = 1024;

fn signatures(c: &mut Criterion) {
    let message = vec![b'x'; MESSAGE_BYTES];
    let mut group = c.benchmark_group("signature");
    for (name, scheme) in [
        ("rsa2048_sha256", SignatureScheme::Rsa2048Sha256),
        ("sm2_sm3", SignatureScheme::Sm2WithSm3),
    ] {
        let key = SigningKey::generate(scheme).unwrap();
        let public = key.verifying_key();
        let signature = key.sign(&message).unwrap();
        group.bench_function(format!("{name}/sign"), |b| {
            b.iter(|| key.sign(black_box(&message)).unwrap())
        });
        group.bench_function(format!("{name}/verify"), |b| {
            b.iter(|| public.verify(black_box(&message), &signature).unwrap())
        });
    }
    group.finish();
}

fn aead(c: &mut Criterion) {
    let plaintext = vec![b'r'; RESOURCE_BYTES];
    let apiv3_key = b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
    let nonce = "4JkBQ5ZTKz8m";
    let aad = b"transaction";
    let mut group = c.benchmark_group("aead");
    group.throughput(Throughput::Bytes(RESOURCE_BYTES as u64));
    for (name, alg) in [
        ("aes256gcm", AeadAlgorithm::Aes256Gcm),
        ("sm4gcm", AeadAlgorithm::Sm4Gcm),
    ] {
        let key = AeadKey::new(alg, apiv3_key).unwrap();
        let sealed = key.encrypt(nonce, aad, &plaintext).unwrap();
        group.bench_function(format!("{name}/seal_1KiB"), |b| {
            b.iter(|| key.encrypt(nonce, aad, black_box(&plaintext)).unwrap())
        });
        group.bench_function(format!("{name}/open_1KiB"), |b| {
            b.iter(|| key.decrypt(nonce, aad, black_box(&sealed)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, signatures, aead);
criterion_main!(benches);
