//! The ledger on PostgreSQL, where many nodes post at once. A posting locks the account rows
//! it touches (`FOR UPDATE`, in id order, so two postings never wait on each other in a
//! cycle), reads them and the transfers it names after the locks are held (READ COMMITTED:
//! a fresh snapshot per statement), applies, and writes the delta, all in the caller's
//! transaction. A posting never updates a transfer row (pending statuses live in
//! `ledger_pending`), so it never waits on the journal integrator, which updates transfer rows
//! only to give them a leaf, under the head row's lock.

use paygate_ledger::{
    Account, Applied, LedgerState, NoteSigner, PendingStatus, Posting, TransferKind,
};
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

use super::{end_tx, pg_err};
use crate::StoreError;
use crate::codec::unix_ms;
use crate::ledger::{
    self as rows, ACCOUNT_COLS, CHECKPOINT_COLS, CheckpointRecord, Integrated, LedgerTransferRow,
    TRANSFER_COLS, TRANSFER_FROM, col,
};

type Result<T> = std::result::Result<T, StoreError>;

/// Applies `posting` inside the caller's transaction on `conn`: creates its accounts if
/// missing, locks the accounts it touches in id order, applies it to the locked snapshot and
/// writes the delta. A ledger refusal is [`StoreError::Ledger`], with nothing written by this
/// call: the caller rolls its transaction back (or tries another posting).
/// Other store modules (profit sharing, settlement) call this from their own transactions.
pub(crate) async fn apply_posting(
    conn: &mut PgConnection,
    posting: &Posting,
    now_ms: u64,
) -> Result<Applied> {
    let at = col(now_ms);
    // Accounts first, in id order: a concurrent creator of the same account makes this wait
    // for it, then do nothing. Zero balances, so creating one changes no sum.
    insert_accounts(conn, &posting.accounts, at).await?;
    let required = paygate_ledger::required(&posting.accounts, &posting.transfers);
    let account_ids: Vec<String> = required.account_ids.iter().map(|id| id.to_hex()).collect();
    let account_rows = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLS} FROM ledger_accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    ))
    .bind(&account_ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(pg_err)?;
    let accounts = account_rows
        .iter()
        .map(rows::account)
        .collect::<Result<Vec<_>>>()?;
    let transfer_ids: Vec<String> = required.transfer_ids.iter().map(|id| id.to_hex()).collect();
    let transfer_rows = sqlx::query(&format!(
        "SELECT {TRANSFER_COLS} FROM {TRANSFER_FROM} WHERE t.id = ANY($1)"
    ))
    .bind(&transfer_ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(pg_err)?;
    let mut transfers = Vec::with_capacity(transfer_rows.len());
    let mut pending = Vec::new();
    for r in &transfer_rows {
        let row = rows::transfer_row(r)?;
        if row.record.transfer.kind == TransferKind::Pending {
            let status = row.pending_status.unwrap_or(PendingStatus::Pending);
            pending.push((row.record.transfer.id, status));
        }
        transfers.push(row.record);
    }
    let mut state = LedgerState::from_rows(accounts, transfers, pending)
        .map_err(|e| StoreError::Corrupt(format!("ledger snapshot: {e}")))?;
    let applied = state
        .apply_posting(posting, now_ms)
        .map_err(StoreError::Ledger)?;
    write_delta(conn, &applied.delta, at).await?;
    Ok(applied)
}

/// Creates the accounts that do not exist yet, in one statement, in id order.
async fn insert_accounts(conn: &mut PgConnection, accounts: &[Account], at: i64) -> Result<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<&Account> = accounts.iter().collect();
    sorted.sort_by_key(|a| a.id);
    sorted.dedup_by_key(|a| a.id);
    let mut cols = AccountColumns::default();
    for a in sorted {
        cols.id.push(a.id.to_hex());
        cols.currency.push(a.ledger.as_str());
        cols.code.push(i64::from(a.code));
        cols.flags.push(i64::from(a.flags.bits()));
        cols.owner.push(&a.user_data);
    }
    sqlx::query(
        "INSERT INTO ledger_accounts (id, currency, code, flags, owner, debits_pending, debits_posted,
             credits_pending, credits_posted, created_at, updated_at)
         SELECT id, currency, code, flags, owner, 0, 0, 0, 0, $6, $6
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
             WITH ORDINALITY AS t(id, currency, code, flags, owner, ord)
         ORDER BY ord
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&cols.id)
    .bind(&cols.currency)
    .bind(&cols.code)
    .bind(&cols.flags)
    .bind(&cols.owner)
    .bind(at)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(pg_err)
}

#[derive(Default)]
struct AccountColumns<'a> {
    id: Vec<String>,
    currency: Vec<&'a str>,
    code: Vec<i64>,
    flags: Vec<i64>,
    owner: Vec<&'a str>,
}

/// Writes a posting's delta in ONE statement while the account rows are locked: the balances,
/// the new transfers (in application order, which their `seq` keeps for the journal) and the
/// pending statuses. A statement per row held the hot accounts' locks (the platform's clearing
/// and fee accounts, which every payment touches) for ~8 round trips; now it is one.
async fn write_delta(
    conn: &mut PgConnection,
    delta: &paygate_ledger::Delta,
    at: i64,
) -> Result<()> {
    insert_accounts(conn, &delta.accounts_created, at).await?;
    // One row per account and per pending transfer, the last state of each: an UPDATE ...
    // FROM or an upsert must not meet the same row twice in one statement.
    let mut changed: std::collections::BTreeMap<String, &paygate_ledger::Balances> =
        std::collections::BTreeMap::new();
    for a in &delta.accounts_changed {
        changed.insert(a.id.to_hex(), &a.balances);
    }
    let mut pending: std::collections::BTreeMap<String, &'static str> =
        std::collections::BTreeMap::new();
    for (id, status) in &delta.pending_changes {
        pending.insert(id.to_hex(), status.as_str());
    }
    if changed.is_empty() && delta.created.is_empty() && pending.is_empty() {
        return Ok(());
    }
    let mut b = BalanceColumns::default();
    for (id, bal) in &changed {
        b.id.push(id.as_str());
        b.debits_pending.push(col(bal.debits_pending));
        b.debits_posted.push(col(bal.debits_posted));
        b.credits_pending.push(col(bal.credits_pending));
        b.credits_posted.push(col(bal.credits_posted));
    }
    let mut t = TransferColumns::default();
    for r in &delta.created {
        let x = &r.transfer;
        t.id.push(x.id.to_hex());
        t.debit.push(x.debit_account_id.to_hex());
        t.credit.push(x.credit_account_id.to_hex());
        t.amount.push(col(x.amount));
        t.pending_id.push(x.pending_id.map(|p| p.to_hex()));
        t.timeout_s.push(i64::from(x.timeout_s));
        t.currency.push(x.ledger.as_str());
        t.code.push(i64::from(x.code));
        t.kind.push(x.kind.as_str());
        t.linked.push(i64::from(x.linked));
        t.user_data.push(&x.user_data);
        t.timestamp_ms.push(col(r.timestamp_ms));
    }
    let (pending_ids, pending_status): (Vec<&str>, Vec<&str>) =
        pending.iter().map(|(id, s)| (id.as_str(), *s)).unzip();
    let row = sqlx::query(
        "WITH balances AS (
             UPDATE ledger_accounts a SET debits_pending = u.debits_pending,
                 debits_posted = u.debits_posted, credits_pending = u.credits_pending,
                 credits_posted = u.credits_posted, updated_at = $6
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
                 AS u(id, debits_pending, debits_posted, credits_pending, credits_posted)
             WHERE a.id = u.id
             RETURNING 1),
         transfers AS (
             INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount,
                 pending_id, timeout_s, currency, code, kind, linked, user_data, timestamp_ms)
             SELECT id, debit, credit, amount, pending_id, timeout_s, currency, code, kind, linked,
                 user_data, timestamp_ms
             FROM UNNEST($7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[],
                         $12::bigint[], $13::text[], $14::bigint[], $15::text[], $16::bigint[],
                         $17::text[], $18::bigint[])
                 WITH ORDINALITY AS t(id, debit, credit, amount, pending_id, timeout_s, currency,
                                      code, kind, linked, user_data, timestamp_ms, ord)
             ORDER BY ord
             RETURNING 1),
         statuses AS (
             INSERT INTO ledger_pending (transfer_id, status)
             SELECT * FROM UNNEST($19::text[], $20::text[])
             ON CONFLICT (transfer_id) DO UPDATE SET status = EXCLUDED.status
             RETURNING 1)
         SELECT (SELECT count(*) FROM balances), (SELECT count(*) FROM transfers),
                (SELECT count(*) FROM statuses)",
    )
    .bind(&b.id)
    .bind(&b.debits_pending)
    .bind(&b.debits_posted)
    .bind(&b.credits_pending)
    .bind(&b.credits_posted)
    .bind(at)
    .bind(&t.id)
    .bind(&t.debit)
    .bind(&t.credit)
    .bind(&t.amount)
    .bind(&t.pending_id)
    .bind(&t.timeout_s)
    .bind(&t.currency)
    .bind(&t.code)
    .bind(&t.kind)
    .bind(&t.linked)
    .bind(&t.user_data)
    .bind(&t.timestamp_ms)
    .bind(&pending_ids)
    .bind(&pending_status)
    .fetch_one(&mut *conn)
    .await
    .map_err(pg_err)?;
    let counts: (i64, i64, i64) = (
        row.try_get(0).map_err(pg_err)?,
        row.try_get(1).map_err(pg_err)?,
        row.try_get(2).map_err(pg_err)?,
    );
    let wanted = (changed.len(), delta.created.len(), pending.len());
    let written = (
        usize::try_from(counts.0).unwrap_or(0),
        usize::try_from(counts.1).unwrap_or(0),
        usize::try_from(counts.2).unwrap_or(0),
    );
    if written != wanted {
        // An account locked above vanished, or a row went missing: never commit half a posting.
        return Err(StoreError::Corrupt(format!(
            "ledger delta wrote {written:?} rows (balances, transfers, statuses), expected {wanted:?}"
        )));
    }
    Ok(())
}

#[derive(Default)]
struct BalanceColumns<'a> {
    id: Vec<&'a str>,
    debits_pending: Vec<i64>,
    debits_posted: Vec<i64>,
    credits_pending: Vec<i64>,
    credits_posted: Vec<i64>,
}

#[derive(Default)]
struct TransferColumns<'a> {
    id: Vec<String>,
    debit: Vec<String>,
    credit: Vec<String>,
    amount: Vec<i64>,
    pending_id: Vec<Option<String>>,
    timeout_s: Vec<i64>,
    currency: Vec<&'a str>,
    code: Vec<i64>,
    kind: Vec<&'a str>,
    linked: Vec<i64>,
    user_data: Vec<&'a str>,
    timestamp_ms: Vec<i64>,
}

// ---- reads ----

pub(super) async fn accounts_of(pool: &PgPool, owner: Option<&str>) -> Result<Vec<Account>> {
    let found = match owner {
        Some(owner) => {
            sqlx::query(&format!(
                "SELECT {ACCOUNT_COLS} FROM ledger_accounts WHERE owner = $1 ORDER BY code, id"
            ))
            .bind(owner)
            .fetch_all(pool)
            .await
        }
        None => {
            sqlx::query(&format!(
                "SELECT {ACCOUNT_COLS} FROM ledger_accounts ORDER BY id"
            ))
            .fetch_all(pool)
            .await
        }
    }
    .map_err(pg_err)?;
    found.iter().map(rows::account).collect()
}

pub(super) async fn account_by_id(pool: &PgPool, id_hex: &str) -> Result<Option<Account>> {
    sqlx::query(&format!(
        "SELECT {ACCOUNT_COLS} FROM ledger_accounts WHERE id = $1"
    ))
    .bind(id_hex)
    .fetch_optional(pool)
    .await
    .map_err(pg_err)?
    .map(|r| rows::account(&r))
    .transpose()
}

pub(super) async fn transfer_by_id(
    pool: &PgPool,
    id_hex: &str,
) -> Result<Option<LedgerTransferRow>> {
    sqlx::query(&format!(
        "SELECT {TRANSFER_COLS} FROM {TRANSFER_FROM} WHERE t.id = $1"
    ))
    .bind(id_hex)
    .fetch_optional(pool)
    .await
    .map_err(pg_err)?
    .map(|r| rows::transfer_row(&r))
    .transpose()
}

async fn transfers_by_reference_on(
    conn: &mut PgConnection,
    user_data: &str,
) -> Result<Vec<LedgerTransferRow>> {
    let found = sqlx::query(&format!(
        "SELECT {TRANSFER_COLS} FROM {TRANSFER_FROM} WHERE t.user_data = $1 ORDER BY t.seq"
    ))
    .bind(user_data)
    .fetch_all(conn)
    .await
    .map_err(pg_err)?;
    found.iter().map(rows::transfer_row).collect()
}

pub(super) async fn transfers_by_reference(
    pool: &PgPool,
    user_data: &str,
) -> Result<Vec<LedgerTransferRow>> {
    let mut conn = pool.acquire().await.map_err(pg_err)?;
    transfers_by_reference_on(&mut conn, user_data).await
}

pub(super) async fn journal_entries(
    pool: &PgPool,
    from: u64,
    limit: u32,
) -> Result<Vec<LedgerTransferRow>> {
    let found = sqlx::query(&format!(
        "SELECT {TRANSFER_COLS} FROM {TRANSFER_FROM} WHERE t.leaf_index >= $1
         ORDER BY t.leaf_index LIMIT $2"
    ))
    .bind(col(from))
    .bind(i64::from(limit.min(rows::JOURNAL_PAGE_MAX)))
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    found.iter().map(rows::transfer_row).collect()
}

async fn unsequenced_on(
    conn: &mut PgConnection,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<LedgerTransferRow>> {
    let found = sqlx::query(&format!(
        "SELECT {TRANSFER_COLS} FROM {TRANSFER_FROM} WHERE t.leaf_index IS NULL AND t.seq > $1
         ORDER BY t.seq LIMIT $2"
    ))
    .bind(after_seq)
    .bind(i64::from(limit.min(rows::JOURNAL_PAGE_MAX)))
    .fetch_all(conn)
    .await
    .map_err(pg_err)?;
    found.iter().map(rows::transfer_row).collect()
}

pub(super) async fn unsequenced(
    pool: &PgPool,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<LedgerTransferRow>> {
    let mut conn = pool.acquire().await.map_err(pg_err)?;
    unsequenced_on(&mut conn, after_seq, limit).await
}

pub(super) async fn checkpoints(pool: &PgPool, limit: u32) -> Result<Vec<CheckpointRecord>> {
    let found = sqlx::query(&format!(
        "SELECT {CHECKPOINT_COLS} FROM ledger_checkpoints ORDER BY size DESC LIMIT $1"
    ))
    .bind(i64::from(limit.min(rows::JOURNAL_PAGE_MAX)))
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    found.iter().map(rows::checkpoint).collect()
}

// ---- the journal integrator ----

/// One integration run in its own transaction. The head row's lock makes it the only
/// integrator until it commits; a second node's run waits, then reads the rows this one left.
pub(super) async fn integrate(
    pool: &PgPool,
    signer: &NoteSigner,
    origin: &str,
    batch_max: u32,
    now: OffsetDateTime,
) -> Result<Integrated> {
    let mut tx = pool.begin().await.map_err(pg_err)?;
    let step = integrate_in(&mut tx, signer, origin, batch_max, now)
        .await
        .map(|done| (done, true));
    end_tx(tx, step).await
}

async fn integrate_in(
    conn: &mut PgConnection,
    signer: &NoteSigner,
    origin: &str,
    batch_max: u32,
    now: OffsetDateTime,
) -> Result<Integrated> {
    let head = sqlx::query("SELECT size, peaks FROM ledger_journal_head WHERE id = 1 FOR UPDATE")
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_err)?
        .ok_or_else(|| StoreError::Corrupt("ledger journal head row is missing".into()))?;
    let size: i64 = head.try_get(0).map_err(pg_err)?;
    let peaks: String = head.try_get(1).map_err(pg_err)?;
    let mut tree = rows::compact_tree(size, &peaks)?;
    let batch = unsequenced_on(conn, 0, batch_max.clamp(1, rows::INTEGRATE_BATCH_MAX)).await?;
    if batch.is_empty() {
        return Ok(Integrated {
            appended: 0,
            checkpoint: None,
        });
    }
    let mut ids = Vec::with_capacity(batch.len());
    let mut indices = Vec::with_capacity(batch.len());
    let mut hashes = Vec::with_capacity(batch.len());
    for row in &batch {
        let leaf = paygate_ledger::canonical::leaf_hash_of(&row.record);
        ids.push(row.record.transfer.id.to_hex());
        indices.push(col(tree.size()));
        hashes.push(leaf.to_hex());
        tree.append(leaf);
    }
    // One statement for the batch (TigerStyle: batch at the boundaries).
    sqlx::query(
        "UPDATE ledger_transfers t SET leaf_index = b.leaf_index, leaf_hash = b.leaf_hash
         FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS b(id, leaf_index, leaf_hash)
         WHERE t.id = b.id AND t.leaf_index IS NULL",
    )
    .bind(&ids)
    .bind(&indices)
    .bind(&hashes)
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?;
    let checkpoint = rows::sign_checkpoint(&tree, signer, origin, now)?;
    sqlx::query("UPDATE ledger_journal_head SET size = $1, peaks = $2 WHERE id = 1")
        .bind(col(tree.size()))
        .bind(rows::peaks_text(tree.peaks()))
        .execute(&mut *conn)
        .await
        .map_err(pg_err)?;
    sqlx::query(
        "INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(col(checkpoint.size))
    .bind(checkpoint.root.to_hex())
    .bind(&checkpoint.note)
    .bind(unix_ms(checkpoint.created_at))
    .execute(&mut *conn)
    .await
    .map_err(pg_err)?;
    Ok(Integrated {
        appended: batch.len() as u64,
        checkpoint: Some(checkpoint),
    })
}

// ---- refunds ----

/// Order facts a refund's ledger side needs, and whether its payment is in the ledger.
async fn order_in_ledger(
    conn: &mut PgConnection,
    transaction_id: &str,
) -> Result<Option<rows::OrderFees>> {
    let fees = sqlx::query(
        "SELECT o.fee_fen, o.total_fen, o.refunded_fen,
             (SELECT COALESCE(SUM(t.amount), 0)::BIGINT FROM refunds r
                  JOIN ledger_transfers t ON t.user_data = r.refund_id
                  JOIN ledger_pending p ON p.transfer_id = t.id
              WHERE r.transaction_id = o.transaction_id AND t.code = $2
                AND p.status IN ('pending', 'posted'))
         FROM orders o WHERE o.transaction_id = $1",
    )
    .bind(transaction_id)
    .bind(i64::from(rows::REFUND_RESERVE_FEE_CODE))
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_err)?;
    let Some(fees) = fees else {
        return Ok(None);
    };
    let codes: Vec<i64> = rows::PAYMENT_CODES.iter().map(|c| i64::from(*c)).collect();
    let posted: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledger_transfers WHERE user_data = $1 AND code = ANY($2))",
    )
    .bind(transaction_id)
    .bind(&codes)
    .fetch_one(&mut *conn)
    .await
    .map_err(pg_err)?;
    if !posted {
        return Ok(None);
    }
    Ok(Some(rows::OrderFees {
        fee_fen: fees.try_get(0).map_err(pg_err)?,
        total_fen: fees.try_get(1).map_err(pg_err)?,
        refunded_fen: fees.try_get(2).map_err(pg_err)?,
        fee_refunded_fen: fees.try_get(3).map_err(pg_err)?,
    }))
}

/// Reserves a new refund's money inside the caller's transaction (see [`crate::ledger`]):
/// from the merchant's pending takings, else its available balance. False when neither
/// covers it (nothing written by this call).
pub(super) async fn reserve_refund(
    conn: &mut PgConnection,
    r: &crate::RefundRecord,
) -> Result<bool> {
    let Some(order) = order_in_ledger(conn, &r.transaction_id).await? else {
        return Ok(true);
    };
    let f = rows::RefundFacts::of(r, order.fee_share(r.amount_fen))?;
    for posting in rows::refund_reservations(&f)? {
        match apply_posting(conn, &posting, rows::now_ms(r.created_at)).await {
            Ok(_) => return Ok(true),
            Err(e) if rows::is_shortfall(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Posts or voids a refund's reservation as it reaches SUCCESS or CLOSED, inside the
/// caller's transaction (which holds the refund's row lock).
pub(super) async fn settle_refund(
    conn: &mut PgConnection,
    r: &crate::RefundRecord,
    new_state: crate::RefundState,
    at: OffsetDateTime,
) -> Result<()> {
    if !new_state.is_final() {
        return Ok(());
    }
    let reserved = transfers_by_reference_on(conn, &r.refund_id).await?;
    let f = rows::RefundFacts::of(r, 0)?;
    if let Some(posting) = rows::refund_settlement(&reserved, &f, new_state)? {
        apply_posting(conn, &posting, rows::now_ms(at)).await?;
    }
    Ok(())
}
