//! The ledger on SQLite. Everything runs on the one writer thread (or a reader), so a posting
//! needs no row locks: the writer applies one command at a time inside its savepoint, and an
//! error rolls that savepoint back whole, with the business fact the posting belongs to.

use paygate_ledger::{
    Account, Applied, LedgerState, NoteSigner, PendingStatus, Posting, TransferKind, TransferRecord,
};
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::sqlite_err;
use crate::StoreError;
use crate::codec::unix_ms;
use crate::ledger::{
    self as rows, ACCOUNT_COLS, CHECKPOINT_COLS, CheckpointRecord, Integrated, LedgerTransferRow,
    TRANSFER_COLS, TRANSFER_FROM, col,
};

type Result<T> = std::result::Result<T, StoreError>;

fn query_rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(sqlite_err)?;
    let mut found = stmt.query(params).map_err(sqlite_err)?;
    let mut out = Vec::new();
    while let Some(row) = found.next().map_err(sqlite_err)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Applies `posting` inside the caller's transaction (savepoint): loads the rows it touches,
/// applies it to that snapshot and writes the delta. A ledger refusal is
/// [`StoreError::Ledger`]: return it, and the writer rolls the whole command back.
/// Other store modules (profit sharing, settlement) call this from their own write commands.
pub(crate) fn apply_posting(conn: &Connection, posting: &Posting, now_ms: u64) -> Result<Applied> {
    let required = paygate_ledger::required(&posting.accounts, &posting.transfers);
    let mut accounts = Vec::with_capacity(required.account_ids.len());
    for id in &required.account_ids {
        accounts.extend(account_by_id(conn, &id.to_hex())?);
    }
    let mut transfers = Vec::new();
    let mut pending = Vec::new();
    for id in &required.transfer_ids {
        if let Some(row) = transfer_by_id(conn, &id.to_hex())? {
            if row.record.transfer.kind == TransferKind::Pending {
                let status = row.pending_status.unwrap_or(PendingStatus::Pending);
                pending.push((row.record.transfer.id, status));
            }
            transfers.push(row.record);
        }
    }
    let mut state = LedgerState::from_rows(accounts, transfers, pending)
        .map_err(|e| StoreError::Corrupt(format!("ledger snapshot: {e}")))?;
    let applied = state
        .apply_posting(posting, now_ms)
        .map_err(StoreError::Ledger)?;
    write_delta(conn, &applied.delta, now_ms)?;
    Ok(applied)
}

fn write_delta(conn: &Connection, delta: &paygate_ledger::Delta, now_ms: u64) -> Result<()> {
    let at = col(now_ms);
    for a in &delta.accounts_created {
        insert_account(conn, a, at)?;
    }
    for a in &delta.accounts_changed {
        let b = &a.balances;
        conn.prepare_cached(
            "UPDATE ledger_accounts SET debits_pending = ?2, debits_posted = ?3,
                 credits_pending = ?4, credits_posted = ?5, updated_at = ?6 WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                a.id.to_hex(),
                col(b.debits_pending),
                col(b.debits_posted),
                col(b.credits_pending),
                col(b.credits_posted),
                at
            ])
        })
        .map_err(sqlite_err)?;
    }
    for r in &delta.created {
        insert_transfer(conn, r)?;
    }
    for (id, status) in &delta.pending_changes {
        conn.prepare_cached(
            "INSERT INTO ledger_pending (transfer_id, status) VALUES (?1, ?2)
             ON CONFLICT (transfer_id) DO UPDATE SET status = excluded.status",
        )
        .and_then(|mut s| s.execute(params![id.to_hex(), status.as_str()]))
        .map_err(sqlite_err)?;
    }
    Ok(())
}

fn insert_account(conn: &Connection, a: &Account, at: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO ledger_accounts (id, currency, code, flags, owner, debits_pending, debits_posted,
             credits_pending, credits_posted, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, 0, 0, ?6, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            a.id.to_hex(),
            a.ledger.as_str(),
            i64::from(a.code),
            i64::from(a.flags.bits()),
            a.user_data,
            at
        ])
    })
    .map(|_| ())
    .map_err(sqlite_err)
}

fn insert_transfer(conn: &Connection, r: &TransferRecord) -> Result<()> {
    let t = &r.transfer;
    conn.prepare_cached(
        "INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, pending_id,
             timeout_s, currency, code, kind, linked, user_data, timestamp_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.id.to_hex(),
            t.debit_account_id.to_hex(),
            t.credit_account_id.to_hex(),
            col(t.amount),
            t.pending_id.map(|p| p.to_hex()),
            i64::from(t.timeout_s),
            t.ledger.as_str(),
            i64::from(t.code),
            t.kind.as_str(),
            i64::from(t.linked),
            t.user_data,
            col(r.timestamp_ms)
        ])
    })
    .map(|_| ())
    .map_err(sqlite_err)
}

pub(crate) fn account_by_id(conn: &Connection, id_hex: &str) -> Result<Option<Account>> {
    let sql = format!("SELECT {ACCOUNT_COLS} FROM ledger_accounts WHERE id = ?1");
    Ok(query_rows(conn, &sql, [id_hex], |r| rows::account(r))?
        .into_iter()
        .next())
}

pub(crate) fn transfer_by_id(conn: &Connection, id_hex: &str) -> Result<Option<LedgerTransferRow>> {
    let sql = format!("SELECT {TRANSFER_COLS} FROM {TRANSFER_FROM} WHERE t.id = ?1");
    Ok(query_rows(conn, &sql, [id_hex], |r| rows::transfer_row(r))?
        .into_iter()
        .next())
}

pub(crate) fn accounts_of(conn: &Connection, owner: Option<&str>) -> Result<Vec<Account>> {
    match owner {
        Some(owner) => query_rows(
            conn,
            &format!(
                "SELECT {ACCOUNT_COLS} FROM ledger_accounts WHERE owner = ?1 ORDER BY code, id"
            ),
            [owner],
            |r| rows::account(r),
        ),
        None => query_rows(
            conn,
            &format!("SELECT {ACCOUNT_COLS} FROM ledger_accounts ORDER BY id"),
            [],
            |r| rows::account(r),
        ),
    }
}

pub(crate) fn transfers_by_reference(
    conn: &Connection,
    user_data: &str,
) -> Result<Vec<LedgerTransferRow>> {
    query_rows(
        conn,
        &format!(
            "SELECT {TRANSFER_COLS} FROM {TRANSFER_FROM} WHERE t.user_data = ?1 ORDER BY t.seq"
        ),
        [user_data],
        |r| rows::transfer_row(r),
    )
}

/// Sequenced transfers from leaf `from`, in leaf order.
pub(crate) fn journal_entries(
    conn: &Connection,
    from: u64,
    limit: u32,
) -> Result<Vec<LedgerTransferRow>> {
    query_rows(
        conn,
        &format!(
            "SELECT {TRANSFER_COLS} FROM {TRANSFER_FROM} WHERE t.leaf_index >= ?1
             ORDER BY t.leaf_index LIMIT ?2"
        ),
        params![col(from), limit.min(rows::JOURNAL_PAGE_MAX)],
        |r| rows::transfer_row(r),
    )
}

/// Transfers the integrator has not sequenced yet, after `after_seq`, in seq order.
pub(crate) fn unsequenced(
    conn: &Connection,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<LedgerTransferRow>> {
    query_rows(
        conn,
        &format!(
            "SELECT {TRANSFER_COLS} FROM {TRANSFER_FROM} WHERE t.leaf_index IS NULL AND t.seq > ?1
             ORDER BY t.seq LIMIT ?2"
        ),
        params![after_seq, limit.min(rows::JOURNAL_PAGE_MAX)],
        |r| rows::transfer_row(r),
    )
}

pub(crate) fn checkpoints(conn: &Connection, limit: u32) -> Result<Vec<CheckpointRecord>> {
    query_rows(
        conn,
        &format!("SELECT {CHECKPOINT_COLS} FROM ledger_checkpoints ORDER BY size DESC LIMIT ?1"),
        [limit.min(rows::JOURNAL_PAGE_MAX)],
        |r| rows::checkpoint(r),
    )
}

/// The journal integrator: sequences up to `batch_max` transfers and signs a checkpoint of
/// the new size. The writer thread is the only writer, so the head needs no lock here.
pub(crate) fn integrate(
    conn: &Connection,
    signer: &NoteSigner,
    origin: &str,
    batch_max: u32,
    now: OffsetDateTime,
) -> Result<Integrated> {
    let (size, peaks): (i64, String) = conn
        .query_row(
            "SELECT size, peaks FROM ledger_journal_head WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sqlite_err)?
        .ok_or_else(|| StoreError::Corrupt("ledger journal head row is missing".into()))?;
    let mut tree = rows::compact_tree(size, &peaks)?;
    let batch = unsequenced(conn, 0, batch_max.clamp(1, rows::INTEGRATE_BATCH_MAX))?;
    if batch.is_empty() {
        return Ok(Integrated {
            appended: 0,
            checkpoint: None,
        });
    }
    for row in &batch {
        let leaf = paygate_ledger::canonical::leaf_hash_of(&row.record);
        let index = tree.size();
        tree.append(leaf);
        conn.prepare_cached(
            "UPDATE ledger_transfers SET leaf_index = ?2, leaf_hash = ?3
             WHERE id = ?1 AND leaf_index IS NULL",
        )
        .and_then(|mut s| {
            s.execute(params![
                row.record.transfer.id.to_hex(),
                col(index),
                leaf.to_hex()
            ])
        })
        .map_err(sqlite_err)?;
    }
    let checkpoint = rows::sign_checkpoint(&tree, signer, origin, now)?;
    conn.prepare_cached("UPDATE ledger_journal_head SET size = ?1, peaks = ?2 WHERE id = 1")
        .and_then(|mut s| s.execute(params![col(tree.size()), rows::peaks_text(tree.peaks())]))
        .map_err(sqlite_err)?;
    conn.prepare_cached(
        "INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            col(checkpoint.size),
            checkpoint.root.to_hex(),
            checkpoint.note,
            unix_ms(checkpoint.created_at)
        ])
    })
    .map_err(sqlite_err)?;
    Ok(Integrated {
        appended: batch.len() as u64,
        checkpoint: Some(checkpoint),
    })
}

/// Order facts a refund's ledger side needs (`None` when the order's payment was not posted
/// to the ledger: refunds of orders paid before it reserve nothing).
fn order_in_ledger(conn: &Connection, transaction_id: &str) -> Result<Option<rows::OrderFees>> {
    let fees: Option<rows::OrderFees> = conn
        .query_row(
            "SELECT o.fee_fen, o.total_fen, o.refunded_fen,
                 (SELECT COALESCE(SUM(t.amount), 0) FROM refunds r
                      JOIN ledger_transfers t ON t.user_data = r.refund_id
                      JOIN ledger_pending p ON p.transfer_id = t.id
                  WHERE r.transaction_id = o.transaction_id AND t.code = ?2
                    AND p.status IN ('pending', 'posted'))
             FROM orders o WHERE o.transaction_id = ?1",
            params![transaction_id, i64::from(rows::REFUND_RESERVE_FEE_CODE)],
            |r| {
                Ok(rows::OrderFees {
                    fee_fen: r.get(0)?,
                    total_fen: r.get(1)?,
                    refunded_fen: r.get(2)?,
                    fee_refunded_fen: r.get(3)?,
                })
            },
        )
        .optional()
        .map_err(sqlite_err)?;
    let [a, b, c] = rows::PAYMENT_CODES.map(i64::from);
    let posted: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM ledger_transfers WHERE user_data = ?1 AND code IN (?2, ?3, ?4))",
            params![transaction_id, a, b, c],
            |r| r.get(0),
        )
        .map_err(sqlite_err)?;
    Ok(fees.filter(|_| posted))
}

/// Reserves a new refund's money (see [`crate::ledger`]): from the merchant's pending
/// takings, else its available balance. False when neither covers it: the caller undoes the
/// refund and answers NOT_ENOUGH.
pub(crate) fn reserve_refund(conn: &Connection, r: &crate::RefundRecord) -> Result<bool> {
    let Some(order) = order_in_ledger(conn, &r.transaction_id)? else {
        return Ok(true);
    };
    let f = rows::RefundFacts::of(r, order.fee_share(r.amount_fen))?;
    for posting in rows::refund_reservations(&f)? {
        match apply_posting(conn, &posting, rows::now_ms(r.created_at)) {
            Ok(_) => return Ok(true),
            Err(e) if rows::is_shortfall(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Posts or voids a refund's reservation as it reaches SUCCESS or CLOSED.
pub(crate) fn settle_refund(
    conn: &Connection,
    refund_id: &str,
    new_state: crate::RefundState,
    at: OffsetDateTime,
) -> Result<()> {
    if !new_state.is_final() {
        return Ok(());
    }
    let Some(r) = super::ops::refunds::get_refund_by_id(conn, refund_id)? else {
        return Err(StoreError::Database(format!("refund {refund_id} vanished")));
    };
    let reserved = transfers_by_reference(conn, refund_id)?;
    let f = rows::RefundFacts::of(&r, 0)?;
    if let Some(posting) = rows::refund_settlement(&reserved, &f, new_state)? {
        apply_posting(conn, &posting, rows::now_ms(at))?;
    }
    Ok(())
}
