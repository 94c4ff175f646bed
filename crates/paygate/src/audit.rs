//! `paygate audit verify`: recomputes what the store claims and fails naming the first entry
//! that does not hold. Read-only; runs against a live database (it reads committed rows).
//!
//! The body is a list of checks ([`verify`]); each reads what it needs and either passes with
//! a one-line summary or fails naming the first bad entry. To add a check, write one more
//! `async fn(&Context) -> Result<Passed, Failed>` and list it in [`verify`].
//!
//! Checks:
//! 1. `journal`: every sequenced ledger transfer re-hashed (RFC 6962 leaf over its canonical
//!    bytes) against the leaf hash recorded when it was sequenced; the root of the first
//!    `size` leaves against the newest signed checkpoint, whose Ed25519 signature is checked
//!    with the key file (never stored in the database).
//! 2. `ledger`: every transfer replayed in journal order into an empty ledger; the stored
//!    balances and pending statuses must equal the replay, and the invariants hold
//!    (Σ debits = Σ credits, pending and posted; limits; each pending resolved at most once).
//! 3. `operator-trail`: the chained audit trail of admin actions (audit_trail.rs, issue 7 §6).

use std::sync::Arc;

use paygate_ledger::{
    AuditError, BadEntry, CheckpointVerifier, JournalEntry, LedgerState, NoteSigner, TransferKind,
    TransferRecord, verify_log,
};
use paygate_server::config::Config;
use paygate_store::Store;
use paygate_store::ledger::{JOURNAL_PAGE_MAX, LedgerTransferRow};

/// What the checks read.
pub struct Context {
    pub config: Config,
    pub store: Arc<dyn Store>,
}

/// A passed check.
pub struct Passed {
    pub check: &'static str,
    pub summary: String,
}

/// A failed check: what is wrong, naming the first bad entry.
pub struct Failed {
    pub check: &'static str,
    pub reason: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit FAILED [{}]: {}", self.check, self.reason)
    }
}

/// Runs every check in order; stops at the first failure.
pub async fn verify(ctx: &Context) -> Result<Vec<Passed>, Failed> {
    let mut passed = Vec::new();
    let rows = transfers(ctx).await?;
    passed.push(journal(ctx, &rows).await?);
    passed.push(ledger(ctx, &rows).await?);
    passed.push(crate::audit_trail::operator_trail(ctx).await?);
    Ok(passed)
}

/// `paygate audit verify`: opens the store, runs the checks, prints a summary.
pub async fn run(config: Config) -> Result<(), String> {
    // With the vault: the operator trail's chain key derives from the master key.
    let store = paygate_server::key_rotation::open_store(&config)
        .await
        .map_err(|e| format!("cannot open the store: {e}"))?;
    let ctx = Context { config, store };
    let outcome = verify(&ctx).await;
    ctx.store.close().await;
    match outcome {
        Ok(passed) => {
            for p in &passed {
                println!("ok [{}] {}", p.check, p.summary);
            }
            println!("audit passed: {} checks", passed.len());
            Ok(())
        }
        Err(failed) => Err(failed.to_string()),
    }
}

/// Sequenced transfers in leaf order, then the ones the integrator has not reached yet.
struct Transfers {
    sequenced: Vec<LedgerTransferRow>,
    unsequenced: Vec<LedgerTransferRow>,
}

async fn transfers(ctx: &Context) -> Result<Transfers, Failed> {
    let fail = |reason: String| Failed {
        check: "journal",
        reason,
    };
    let mut sequenced: Vec<LedgerTransferRow> = Vec::new();
    loop {
        // A row that no longer decodes fails here, named by its id.
        let page = ctx
            .store
            .journal_entries(sequenced.len() as u64, JOURNAL_PAGE_MAX)
            .await
            .map_err(|e| {
                fail(format!(
                    "journal entry {} or after cannot be read: {e}",
                    sequenced.len()
                ))
            })?;
        if page.is_empty() {
            break;
        }
        sequenced.extend(page);
    }
    let mut unsequenced: Vec<LedgerTransferRow> = Vec::new();
    loop {
        let after = unsequenced.last().map_or(0, |r| r.seq);
        let page = ctx
            .store
            .unsequenced_transfers(after, JOURNAL_PAGE_MAX)
            .await
            .map_err(|e| fail(format!("an unsequenced transfer cannot be read: {e}")))?;
        if page.is_empty() {
            break;
        }
        unsequenced.extend(page);
    }
    Ok(Transfers {
        sequenced,
        unsequenced,
    })
}

async fn journal(ctx: &Context, rows: &Transfers) -> Result<Passed, Failed> {
    let fail = |reason: String| Failed {
        check: "journal",
        reason,
    };
    let checkpoint = ctx
        .store
        .ledger_checkpoints(1)
        .await
        .map_err(|e| fail(format!("checkpoints cannot be read: {e}")))?
        .into_iter()
        .next();
    let Some(checkpoint) = checkpoint else {
        if rows.sequenced.is_empty() {
            return Ok(Passed {
                check: "journal",
                summary: format!(
                    "empty (no checkpoint yet; {} transfers not sequenced yet)",
                    rows.unsequenced.len()
                ),
            });
        }
        return Err(fail(format!(
            "{} sequenced entries but no signed checkpoint",
            rows.sequenced.len()
        )));
    };
    let key_file = ctx.config.ledger.key_file(&ctx.config.data_dir);
    let skey = std::fs::read_to_string(&key_file)
        .map_err(|e| fail(format!("journal key {}: {e}", key_file.display())))?;
    let signer = NoteSigner::from_skey(skey.trim())
        .map_err(|e| fail(format!("journal key {}: {e}", key_file.display())))?;
    let verifier = CheckpointVerifier::new(&ctx.config.ledger.journal_origin, signer.verifier());
    let mut entries: Vec<JournalEntry> = Vec::with_capacity(rows.sequenced.len());
    for (index, r) in rows.sequenced.iter().enumerate() {
        let entry = r.journal_entry().ok_or_else(|| {
            fail(format!(
                "entry {index} (transfer {}) has no leaf hash",
                r.record.transfer.id
            ))
        })?;
        entries.push(entry);
    }
    let report = verify_log(&entries, &checkpoint.note, &verifier).map_err(|e| {
        fail(match &e {
            AuditError::BadEntry {
                index,
                reason: BadEntry::Edited { transfer_id },
            } => format!("journal entry {index} (transfer {transfer_id}) was edited: its fields no longer hash to its leaf"),
            AuditError::BadEntry {
                index,
                reason: BadEntry::OutOfSequence { found },
            } => format!("journal entry {index} is missing or moved (found index {found})"),
            other => other.to_string(),
        })
    })?;
    Ok(Passed {
        check: "journal",
        summary: format!(
            "{} entries re-hashed; root of the first {} matches the checkpoint signed by {} (root {}); {} transfers not sequenced yet",
            report.entries,
            report.checkpoint.size,
            verifier_name(&ctx.config),
            checkpoint.root.to_hex(),
            rows.unsequenced.len()
        ),
    })
}

fn verifier_name(config: &Config) -> &str {
    &config.ledger.journal_origin
}

async fn ledger(ctx: &Context, rows: &Transfers) -> Result<Passed, Failed> {
    let fail = |reason: String| Failed {
        check: "ledger",
        reason,
    };
    let accounts = ctx
        .store
        .ledger_accounts(None)
        .await
        .map_err(|e| fail(format!("accounts cannot be read: {e}")))?;
    let all: Vec<&LedgerTransferRow> = rows.sequenced.iter().chain(&rows.unsequenced).collect();
    let records: Vec<TransferRecord> = all.iter().map(|r| r.record.clone()).collect();
    let replayed = LedgerState::replay(&accounts, &records)
        .map_err(|e| fail(format!("replaying the journal: {e}")))?;
    let report = replayed
        .check_invariants()
        .map_err(|e| fail(format!("invariant broken after replay: {e}")))?;
    for a in &accounts {
        let Some(r) = replayed.account(a.id) else {
            return Err(fail(format!("account {} vanished in the replay", a.id)));
        };
        if r.balances != a.balances {
            return Err(fail(format!(
                "account {} ({}): stored balances {:?} differ from its transfers {:?}",
                a.id, a.user_data, a.balances, r.balances
            )));
        }
    }
    for r in all
        .iter()
        .filter(|r| r.record.transfer.kind == TransferKind::Pending)
    {
        let id = r.record.transfer.id;
        if r.pending_status != replayed.pending_status(id) {
            return Err(fail(format!(
                "pending transfer {id}: stored status {:?} differs from its transfers {:?}",
                r.pending_status.map(|s| s.as_str()),
                replayed.pending_status(id).map(|s| s.as_str())
            )));
        }
    }
    let posted: u128 = accounts
        .iter()
        .map(|a| u128::from(a.balances.debits_posted))
        .sum();
    let pending: u128 = accounts
        .iter()
        .map(|a| u128::from(a.balances.debits_pending))
        .sum();
    Ok(Passed {
        check: "ledger",
        summary: format!(
            "{} accounts, {} transfers replayed, {} invariant checks; Σ debits = Σ credits: posted {posted}, pending {pending}",
            report.accounts, report.transfers, report.checks
        ),
    })
}
