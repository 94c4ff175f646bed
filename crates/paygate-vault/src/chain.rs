//! The operator audit trail's tamper evidence: each entry carries the keyed hash (HMAC-SM3)
//! of the previous entry's hash and its own fields, so editing, deleting or reordering any
//! entry breaks every link after it, and nobody without the key can forge a new chain.

use crate::sm;

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry's chained fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an entry whose fields are these and whose predecessor's hash is `prev_hash`.
#[allow(clippy::too_many_arguments)] // the chained fields, each its own argument, in order
pub fn entry_hash(
    key: &[u8],
    prev_hash: &str,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> String {
    hex::encode(sm::hmac_sm3(
        key,
        &[
            prev_hash.as_bytes(),
            &seq.to_be_bytes(),
            &at_ms.to_be_bytes(),
            actor.as_bytes(),
            action.as_bytes(),
            target.as_bytes(),
            detail.as_bytes(),
        ],
    ))
}

/// Where a chain stops being what was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Checks entries in `seq` order from the start: consecutive numbers from 1, each linked
/// to its predecessor, each hash recomputed. Returns how many were checked.
pub fn verify(
    key: &[u8],
    entries: impl IntoIterator<Item = ChainEntry>,
) -> Result<u64, ChainBreak> {
    verify_from(key, 1, GENESIS_HASH, entries)
}

/// [`verify`] of a continuation: the first entry must be `first_seq`, linked to `prev_hash`.
pub fn verify_from(
    key: &[u8],
    first_seq: i64,
    prev_hash: &str,
    entries: impl IntoIterator<Item = ChainEntry>,
) -> Result<u64, ChainBreak> {
    let mut prev = prev_hash.to_string();
    let mut n = 0;
    for (e, expected_seq) in entries.into_iter().zip(first_seq..) {
        let fail = |reason: String| ChainBreak { seq: e.seq, reason };
        if e.seq != expected_seq {
            return Err(fail(format!(
                "expected entry {expected_seq} here (a gap: an entry was deleted)"
            )));
        }
        if e.prev_hash != prev {
            return Err(fail("prev_hash does not link to the entry before".into()));
        }
        let hash = entry_hash(
            key,
            &e.prev_hash,
            e.seq,
            e.at_ms,
            &e.actor,
            &e.action,
            &e.target,
            &e.detail,
        );
        if hash != e.hash {
            return Err(fail(
                "hash does not match its fields (the entry was edited)".into(),
            ));
        }
        prev = e.hash;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(key: &[u8], n: i64) -> Vec<ChainEntry> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let hash = entry_hash(
                    key,
                    &prev,
                    seq,
                    seq * 10,
                    "op",
                    "merchant.disable",
                    "1900000109",
                    "{}",
                );
                let e = ChainEntry {
                    seq,
                    at_ms: seq * 10,
                    actor: "op".into(),
                    action: "merchant.disable".into(),
                    target: "1900000109".into(),
                    detail: "{}".into(),
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_is_named() {
        let key = [1u8; 32];
        assert_eq!(verify(&key, chain(&key, 5)), Ok(5));
        let mut edited = chain(&key, 5);
        edited[2].target = "1900000110".into();
        assert_eq!(verify(&key, edited).unwrap_err().seq, 3);
        let mut deleted = chain(&key, 5);
        deleted.remove(1);
        assert_eq!(verify(&key, deleted).unwrap_err().seq, 3);
        // Recomputed without the key: refused at the first forged entry.
        let forged = chain(&[2u8; 32], 5);
        assert_eq!(verify(&key, forged).unwrap_err().seq, 1);
    }
}
