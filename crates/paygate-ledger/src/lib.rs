//! paygate's double-entry ledger and its verifiable journal, as pure functions: no I/O, no
//! clock. The gateway computes the postings of a business fact, applies them to a snapshot of
//! the rows they touch, and writes the resulting rows and journal entries in the same database
//! transaction as the fact itself (DESIGN rule 1).
//!
//! - [`model`]: accounts (four balance counters, limit flags) and immutable transfers
//!   (single, pending → post / void / expire, linked chains), TigerBeetle's model.
//! - [`LedgerState`]: validate + apply, all or nothing; idempotent by transfer id; the
//!   invariant check (Σ debits = Σ credits, limits, balances = Σ transfers).
//! - [`chart`] and [`recipes`]: paygate's accounts and the transfers of each business fact.
//! - [`journal`], [`merkle`], [`checkpoint`], [`note`]: the RFC 6962 log over every transfer,
//!   inclusion and consistency proofs, C2SP signed checkpoints, and the audit.
//!
//! ```
//! use paygate_core::money::Money;
//! use paygate_ledger::{recipes, Journal, LedgerState, NoteSigner, CheckpointVerifier, verify_log};
//!
//! let mut ledger = LedgerState::new();
//! let posting = recipes::payment_success(&recipes::PaymentSuccess {
//!     transaction_id: "4200000000202605010000000001",
//!     mchid: "1900000109",
//!     channel_id: "wx-main",
//!     total: Money::cny_fen(10_000),
//!     fee: Money::cny_fen(60),
//!     profit_sharing: false,
//! })?;
//! let applied = ledger.apply_posting(&posting, 1_777_600_000_000)?;
//! ledger.check_invariants()?;
//!
//! // A replayed callback posts nothing twice.
//! let again = ledger.apply_posting(&posting, 1_777_600_005_000)?;
//! assert!(again.delta.created.is_empty());
//!
//! let mut journal = Journal::new();
//! let entries = journal.append_all(&applied.delta.created);
//! let signer = NoteSigner::generate("paygate.example/ledger")?;
//! let signed = journal.signed_checkpoint("paygate.example/ledger", &signer)?;
//! let verifier = CheckpointVerifier::new("paygate.example/ledger", signer.verifier());
//! verify_log(&entries, &signed, &verifier)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod canonical;
pub mod chart;
pub mod checkpoint;
pub mod error;
pub mod ids;
pub mod journal;
pub mod merkle;
pub mod model;
pub mod note;
pub mod recipes;
pub mod state;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointVerifier};
pub use error::{AccountError, InvariantViolation, LedgerError, SnapshotError, TransferError};
pub use ids::{AccountId, IdError, TransferId};
pub use journal::{
    AuditError, BadEntry, Journal, JournalEntry, LogReport, append_entries, verify_log,
};
pub use merkle::{CompactTree, Hash, MerkleTree, ProofError, verify_consistency, verify_inclusion};
pub use model::{
    AMOUNT_MAX, Account, AccountFlags, BALANCE_MAX, BATCH_EVENTS_MAX, Balances, PendingStatus,
    Posting, Transfer, TransferKind, TransferRecord, USER_DATA_BYTES_MAX,
};
pub use note::{NoteError, NoteSigner, NoteVerifier};
pub use recipes::RecipeError;
pub use state::{
    Applied, ChainsApplied, Delta, InvariantReport, LedgerState, Outcome, Required, required,
};
