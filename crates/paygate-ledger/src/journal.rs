//! The journal: every created transfer, in order, as a leaf of an RFC 6962 Merkle log
//! (leaf data = [`crate::canonical`] bytes), with signed C2SP checkpoints and the audit that
//! recomputes it from stored rows.
//!
//! Two ways to keep it:
//! - [`append_entries`] over a [`CompactTree`] (O(log n) state): what the store does in the
//!   transaction of the fact: read the head row, append the batch's records, write the new
//!   entries and the head back. The head row serializes appends, like any log's sequencer.
//! - [`Journal`]: the whole tree in memory, for proofs (admin API, tests) and checkpoints.
//!
//! A stored entry keeps the leaf hash computed when it was appended. [`verify_log`] recomputes
//! each entry's hash from its fields: an edited row no longer matches its own hash and is
//! named by index. An editor who also rewrote the hashes changes the root, which no longer
//! matches the signed checkpoint.

use std::borrow::Borrow;

use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointVerifier};
use crate::ids::TransferId;
use crate::merkle::{CompactTree, Hash, MerkleTree, ProofError};
use crate::model::TransferRecord;
use crate::note::NoteSigner;

/// One stored journal row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Position in the log, from 0, without gaps.
    pub index: u64,
    pub record: TransferRecord,
    /// `SHA-256(0x00 ‖ canonical bytes)` as computed at append time.
    pub leaf_hash: Hash,
}

/// Appends records to a compact tree and returns their journal rows.
pub fn append_entries(head: &mut CompactTree, records: &[TransferRecord]) -> Vec<JournalEntry> {
    records
        .iter()
        .map(|r| {
            let leaf_hash = canonical::leaf_hash_of(r);
            let index = head.size();
            head.append(leaf_hash);
            JournalEntry {
                index,
                record: r.clone(),
                leaf_hash,
            }
        })
        .collect()
}

/// The journal with its whole tree in memory.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    tree: MerkleTree,
}

impl Journal {
    pub fn new() -> Journal {
        Journal::default()
    }

    /// A journal over stored entries, trusting their recorded hashes (verify with [`verify_log`]).
    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = Hash>) -> Journal {
        Journal {
            tree: MerkleTree::from_leaf_hashes(leaves),
        }
    }

    pub fn append(&mut self, record: &TransferRecord) -> JournalEntry {
        let leaf_hash = canonical::leaf_hash_of(record);
        let index = self.tree.append(leaf_hash);
        JournalEntry {
            index,
            record: record.clone(),
            leaf_hash,
        }
    }

    pub fn append_all(&mut self, records: &[TransferRecord]) -> Vec<JournalEntry> {
        records.iter().map(|r| self.append(r)).collect()
    }

    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.tree.root_at(size)
    }

    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.tree.leaf(index)
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.tree.inclusion_proof(index, size)
    }

    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofError> {
        self.tree.consistency_proof(size1, size2)
    }

    /// The checkpoint of the current tree.
    pub fn checkpoint(&self, origin: &str) -> Checkpoint {
        Checkpoint::new(origin, self.size(), self.root())
    }

    /// The current checkpoint, signed.
    pub fn signed_checkpoint(
        &self,
        origin: &str,
        signer: &NoteSigner,
    ) -> Result<String, CheckpointError> {
        self.checkpoint(origin).sign(signer)
    }
}

/// What is wrong with one stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadEntry {
    /// The row at this position carries another index: a row was deleted, inserted or moved.
    OutOfSequence { found: u64 },
    /// The fields no longer hash to the recorded leaf hash: the row was edited.
    Edited { transfer_id: TransferId },
}

impl BadEntry {
    pub const fn code(&self) -> &'static str {
        match self {
            BadEntry::OutOfSequence { .. } => "out_of_sequence",
            BadEntry::Edited { .. } => "edited",
        }
    }
}

/// Why the journal failed its audit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("entry {index} is bad: {}", reason.code())]
    BadEntry { index: u64, reason: BadEntry },
    #[error("the log has {entries} entries, the checkpoint signs {checkpoint_size}")]
    Truncated { entries: u64, checkpoint_size: u64 },
    #[error(
        "the root of the first {size} entries differs from the signed checkpoint: entries and their recorded hashes were rewritten"
    )]
    RootMismatch { size: u64 },
}

impl AuditError {
    pub const fn code(&self) -> &'static str {
        match self {
            AuditError::Checkpoint(e) => e.code(),
            AuditError::BadEntry { reason, .. } => reason.code(),
            AuditError::Truncated { .. } => "truncated",
            AuditError::RootMismatch { .. } => "root_mismatch",
        }
    }

    /// The first bad entry's index, when one can be named.
    pub const fn bad_index(&self) -> Option<u64> {
        match self {
            AuditError::BadEntry { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// What a passed audit covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReport {
    pub checkpoint: Checkpoint,
    /// Entries read (the checkpoint's size plus those appended since).
    pub entries: u64,
}

/// Audits stored entries (in index order) against a signed checkpoint: the signature and
/// origin, then every entry's fields against its recorded hash (naming the first bad one),
/// then the root of the first `checkpoint.size` entries. Entries appended after the
/// checkpoint are checked against their hashes only. Streams: O(log n) memory.
pub fn verify_log<I>(
    entries: I,
    signed_checkpoint: &str,
    verifier: &CheckpointVerifier,
) -> Result<LogReport, AuditError>
where
    I: IntoIterator,
    I::Item: Borrow<JournalEntry>,
{
    let checkpoint = verifier.open(signed_checkpoint)?;
    let mut tree = CompactTree::new();
    let mut root_at_checkpoint = (checkpoint.size == 0).then(|| tree.root());
    for (position, e) in entries.into_iter().enumerate() {
        let e = e.borrow();
        let index = position as u64;
        if e.index != index {
            return Err(AuditError::BadEntry {
                index,
                reason: BadEntry::OutOfSequence { found: e.index },
            });
        }
        let recomputed = canonical::leaf_hash_of(&e.record);
        if recomputed != e.leaf_hash {
            return Err(AuditError::BadEntry {
                index,
                reason: BadEntry::Edited {
                    transfer_id: e.record.transfer.id,
                },
            });
        }
        tree.append(recomputed);
        if tree.size() == checkpoint.size {
            root_at_checkpoint = Some(tree.root());
        }
    }
    match root_at_checkpoint {
        None => Err(AuditError::Truncated {
            entries: tree.size(),
            checkpoint_size: checkpoint.size,
        }),
        Some(root) if root != checkpoint.root => Err(AuditError::RootMismatch {
            size: checkpoint.size,
        }),
        Some(_) => Ok(LogReport {
            checkpoint,
            entries: tree.size(),
        }),
    }
}
