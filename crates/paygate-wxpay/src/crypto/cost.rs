//! What this process spends on signatures, measured where they are made: CPU time of the
//! signing/verifying thread (not wall time, so a descheduled thread costs nothing) and counts.
//! `/metrics` exports it, and `paygate bench load` divides the server's whole CPU by it: the
//! issue-8 ratio "gateway CPU ÷ its unavoidable cryptography" measured in one process at one
//! time, which a separate `bench crypto` run on a VM with steal time cannot give.

use std::sync::atomic::{AtomicU64, Ordering};

/// Totals since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignatureCost {
    pub signs: u64,
    pub sign_cpu_ns: u64,
    pub verifies: u64,
    pub verify_cpu_ns: u64,
}

static SIGNS: AtomicU64 = AtomicU64::new(0);
static SIGN_NS: AtomicU64 = AtomicU64::new(0);
static VERIFIES: AtomicU64 = AtomicU64::new(0);
static VERIFY_NS: AtomicU64 = AtomicU64::new(0);

pub fn snapshot() -> SignatureCost {
    SignatureCost {
        signs: SIGNS.load(Ordering::Relaxed),
        sign_cpu_ns: SIGN_NS.load(Ordering::Relaxed),
        verifies: VERIFIES.load(Ordering::Relaxed),
        verify_cpu_ns: VERIFY_NS.load(Ordering::Relaxed),
    }
}

fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

pub(crate) fn signing<T>(op: impl FnOnce() -> T) -> T {
    measured(op, &SIGNS, &SIGN_NS)
}

pub(crate) fn verifying<T>(op: impl FnOnce() -> T) -> T {
    measured(op, &VERIFIES, &VERIFY_NS)
}

fn measured<T>(op: impl FnOnce() -> T, count: &AtomicU64, ns: &AtomicU64) -> T {
    let started = thread_cpu_ns();
    let out = op();
    ns.fetch_add(thread_cpu_ns().saturating_sub(started), Ordering::Relaxed);
    count.fetch_add(1, Ordering::Relaxed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_cpu_time_grow_with_each_signature() {
        let key =
            crate::crypto::SigningKey::generate(crate::crypto::SignatureScheme::Rsa2048Sha256)
                .unwrap();
        let before = snapshot();
        let sig = key.sign(b"message").unwrap();
        key.verifying_key().verify(b"message", &sig).unwrap();
        let after = snapshot();
        assert!(after.signs > before.signs);
        assert!(after.verifies > before.verifies);
        // An RSA-2048 signature takes well over a microsecond of CPU anywhere.
        assert!(after.sign_cpu_ns - before.sign_cpu_ns > 1_000);
    }
}
