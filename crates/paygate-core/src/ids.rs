//! Identifiers in WeChat Pay's shapes: 28-digit transaction ids, 29-digit refund ids,
//! `wx`-prefixed prepay ids. Uniqueness comes from a process-wide counter that starts at a
//! random point of a 10^16 space, so restarted processes and several nodes do not collide
//! (two processes' daily ranges overlap with odds around 10^-8); the date prefix is only
//! cosmetic, as in the real ones. Stores still enforce uniqueness with their keys.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

const SEQ_SPACE: u64 = 10_000_000_000_000_000;

fn seq() -> &'static AtomicU64 {
    static SEQ: OnceLock<AtomicU64> = OnceLock::new();
    SEQ.get_or_init(|| AtomicU64::new(rand::random::<u64>() % SEQ_SPACE))
}

/// The next sequence number, 16 digits at most.
fn next() -> u64 {
    seq().fetch_add(1, Ordering::Relaxed) % SEQ_SPACE
}

fn ymd(t: OffsetDateTime) -> String {
    let t = t.to_offset(crate::timefmt::BEIJING);
    format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
}

/// `4200000263201902167700134212`: 28 digits.
pub fn transaction_id(now: OffsetDateTime) -> String {
    format!("4200{}{:016}", ymd(now), next())
}

/// `50000709672019011908420787722`: 29 digits.
pub fn refund_id(now: OffsetDateTime) -> String {
    format!("50000{}{:016}", ymd(now), next())
}

/// `wx201410272009395522657a690389285100`: `wx`, 14 time digits, 20 hex characters.
pub fn prepay_id(now: OffsetDateTime) -> String {
    let t = now.to_offset(crate::timefmt::BEIJING);
    format!(
        "wx{}{:02}{:02}{:02}{:08x}{:012x}",
        ymd(now),
        t.hour(),
        t.minute(),
        t.second(),
        rand::random::<u32>(),
        next() % (1 << 48)
    )
}

/// Profit-sharing order ids, return ids and detail ids: 28 digits.
pub fn profit_sharing_id(prefix: &str, now: OffsetDateTime) -> String {
    format!(
        "{prefix}{}{:0width$}",
        ymd(now),
        next(),
        width = 28 - prefix.len() - 8
    )
}

/// The key of a row the gateway appends (risk decisions, notifications, repairs,
/// reconciliation findings): a UUIDv7, ordered by time. A random (v4) key sends every insert
/// to its own leaf of the key's B-tree, one page written per row; ordered keys share the
/// rightmost leaf, one page per commit batch.
pub fn row_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A short random token, for bill download URLs and code URLs.
pub fn token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_wechat_shapes_and_are_unique() {
        let now = OffsetDateTime::now_utc();
        let a = transaction_id(now);
        let b = transaction_id(now);
        assert_eq!(a.len(), 28);
        assert!(a.bytes().all(|c| c.is_ascii_digit()));
        assert_ne!(a, b);
        assert_eq!(refund_id(now).len(), 29);
        let p = prepay_id(now);
        assert!(p.starts_with("wx") && p.len() == 36, "{p}");
        assert_eq!(profit_sharing_id("3008", now).len(), 28);
        assert_eq!(token(16).len(), 16);
    }

    #[test]
    fn row_ids_are_uuids_in_creation_order() {
        let ids: Vec<String> = (0..1_000).map(|_| row_id()).collect();
        for id in &ids {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 7, "{id}");
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "later ids sort after earlier ones");
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
    }
}
