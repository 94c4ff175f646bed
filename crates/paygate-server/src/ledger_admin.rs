//! The ledger in the admin API (behind the operator token, see `admin.rs`):
//! - `GET /admin/v1/ledger/accounts?owner=…`: an owner's accounts (an mchid, a channel id,
//!   `platform`, a receiver key) with their four counters and balances; without `owner`, all;
//! - `GET /admin/v1/ledger/transfers?reference=…`: the transfers of one business fact (a
//!   transaction_id, a refund_id, `mchid/out_order_no`), with their journal positions;
//! - `GET /admin/v1/ledger/proof/{transfer_id}`: the RFC 6962 inclusion proof of one transfer
//!   against the newest signed checkpoint (sequencing it first if the integrator has not yet).
//!
//! The proof is computed from the stored leaf hashes up to the checkpoint's size: O(n) reads
//! and memory per proof, bounded by [`PROOF_LOG_SIZE_MAX`]. (A tiled log would make it
//! O(log n); not needed at this size.)

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use paygate_core::error::{ApiError, ErrorCode};
use paygate_ledger::chart::AccountKind;
use paygate_ledger::{Account, Journal, TransferId};
use paygate_store::ledger::{JOURNAL_PAGE_MAX, LedgerTransferRow};
use serde_json::{Value, json};

use crate::http::{ApiFail, ApiResult, AppState, internal, ok_json};

/// Largest log an inclusion proof is computed over in memory.
pub const PROOF_LOG_SIZE_MAX: u64 = 10_000_000;
/// Accounts or transfers one answer lists at most.
pub const LIST_MAX: usize = 1_000;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/ledger/accounts", get(accounts))
        .route("/admin/v1/ledger/transfers", get(transfers))
        .route("/admin/v1/ledger/proof/{transfer_id}", get(proof))
}

fn param(name: &str, message: &str) -> ApiFail {
    ApiFail(ApiError::param(&format!("/{name}"), message))
}

/// One account as the operator reads it: counters, and the balance on its normal side.
pub fn account_view(a: &Account) -> Value {
    let kind = AccountKind::from_code(a.code);
    let balance = match kind {
        Some(AccountKind::ChannelClearing) => a.debit_balance_posted(),
        _ => a.credit_balance_posted(),
    };
    let b = &a.balances;
    json!({
        "id": a.id,
        "kind": kind.map_or("unknown", AccountKind::name),
        "owner": a.user_data,
        "currency": a.ledger.as_str(),
        "debits_pending": b.debits_pending,
        "debits_posted": b.debits_posted,
        "credits_pending": b.credits_pending,
        "credits_posted": b.credits_posted,
        // i128 in JSON would lose exactness in JavaScript: a string keeps it.
        "balance_posted": balance.to_string(),
    })
}

pub fn transfer_view(r: &LedgerTransferRow) -> Value {
    let t = &r.record.transfer;
    json!({
        "id": t.id,
        "seq": r.seq,
        "debit_account_id": t.debit_account_id,
        "credit_account_id": t.credit_account_id,
        "amount": t.amount,
        "currency": t.ledger.as_str(),
        "code": t.code,
        "kind": t.kind.as_str(),
        "pending_id": t.pending_id,
        "pending_status": r.pending_status.map(|s| s.as_str()),
        "linked": t.linked,
        "reference": t.user_data,
        "timestamp_ms": r.record.timestamp_ms,
        "leaf_index": r.leaf_index,
        "leaf_hash": r.leaf_hash.map(|h| h.to_hex()),
    })
}

async fn accounts(
    State(app): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let owner = q.get("owner").map(String::as_str);
    if owner.is_some_and(|o| o.is_empty() || o.len() > paygate_ledger::USER_DATA_BYTES_MAX) {
        return Err(param("owner", "owner must be 1..=128 characters"));
    }
    let accounts = app.store.ledger_accounts(owner).await.map_err(internal)?;
    let views: Vec<Value> = accounts.iter().take(LIST_MAX).map(account_view).collect();
    ok_json(&json!({"owner": owner, "accounts": views, "truncated": accounts.len() > LIST_MAX}))
}

async fn transfers(
    State(app): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let Some(reference) = q.get("reference").filter(|r| !r.is_empty()) else {
        return Err(param("reference", "reference is required"));
    };
    let rows = app
        .store
        .ledger_transfers_by_reference(reference)
        .await
        .map_err(internal)?;
    let views: Vec<Value> = rows.iter().take(LIST_MAX).map(transfer_view).collect();
    ok_json(&json!({"reference": reference, "transfers": views}))
}

async fn proof(State(app): State<Arc<AppState>>, Path(transfer_id): Path<String>) -> ApiResult {
    let id = TransferId::from_hex(&transfer_id)
        .map_err(|e| param("transfer_id", &format!("not a transfer id: {e}")))?;
    let mut row = app
        .store
        .ledger_transfer(id)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            ApiFail(ApiError::new(
                ErrorCode::ResourceNotExists,
                "转账记录不存在",
            ))
        })?;
    if row.leaf_index.is_none() {
        // Not sequenced yet: run the integrator now rather than make the operator wait.
        crate::fees::integrate_all(app.store.as_ref(), &app.journal)
            .await
            .map_err(internal)?;
        row = app
            .store
            .ledger_transfer(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| internal("transfer vanished"))?;
    }
    let (Some(index), Some(leaf_hash)) = (row.leaf_index, row.leaf_hash) else {
        return Err(internal("transfer still has no journal position"));
    };
    let checkpoint = app
        .store
        .ledger_checkpoints(1)
        .await
        .map_err(internal)?
        .into_iter()
        .next()
        .filter(|c| c.size > index)
        .ok_or_else(|| internal("no checkpoint covers the transfer"))?;
    if checkpoint.size > PROOF_LOG_SIZE_MAX {
        return Err(ApiFail(ApiError::new(
            ErrorCode::InvalidRequest,
            "the log is too large for an in-memory proof",
        )));
    }
    let journal = journal_up_to(&app, checkpoint.size).await?;
    let path = journal
        .inclusion_proof(index, checkpoint.size)
        .map_err(internal)?;
    ok_json(&json!({
        "transfer": transfer_view(&row),
        "leaf_index": index,
        "leaf_hash": leaf_hash.to_hex(),
        "tree_size": checkpoint.size,
        "audit_path": path.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        "root": checkpoint.root.to_hex(),
        "checkpoint": checkpoint.note,
        "verifier_key": app.journal.verifier().to_vkey(),
    }))
}

/// The tree of the first `size` leaves, from the stored leaf hashes.
async fn journal_up_to(app: &AppState, size: u64) -> Result<Journal, ApiFail> {
    let mut leaves = Vec::new();
    while (leaves.len() as u64) < size {
        let page = app
            .store
            .journal_entries(leaves.len() as u64, JOURNAL_PAGE_MAX)
            .await
            .map_err(internal)?;
        if page.is_empty() {
            return Err(internal("the journal is shorter than its checkpoint"));
        }
        for r in page {
            if leaves.len() as u64 == size {
                break;
            }
            if r.leaf_index != Some(leaves.len() as u64) {
                return Err(internal(format!(
                    "journal entry {} is out of sequence",
                    leaves.len()
                )));
            }
            leaves.push(
                r.leaf_hash
                    .ok_or_else(|| internal("a leaf without a hash"))?,
            );
        }
    }
    Ok(Journal::from_leaf_hashes(leaves))
}
