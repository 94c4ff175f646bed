//! Data protection inside the store (issue 7 §1): the store seals sensitive fields on write
//! and opens them on read with the [`Vault`] attached at open ([`attach_vault`]), so every
//! record the [`Store`](crate::Store) API hands out is plaintext and the rest of the code is
//! unaffected.
//!
//! - `orders.request_json`, `orders.fingerprint` (it embeds the request), `orders.attach` and
//!   `notifications.plaintext` (the payer's openid, and whatever the merchant put in
//!   `attach`) are sealed in place: SM4-GCM, the data key's id in
//!   the value (`pgv1.<key id>.…`), the column as AAD.
//! - `orders.payer_openid` holds a token (`ov_…`, a keyed hash of the openid); the openid,
//!   sealed, lives in `openid_vault`, written in the order's own transaction.
//! - Rows written before encryption was on, and rows sealed with an older data key, are
//!   re-sealed in small batches by [`reseal_batch`] (`paygate keys rotate` adds a key; the
//!   server's worker then moves everything onto it without downtime).
//!
//! A store opened without a vault ([`crate::open`]) writes plaintext as before; one holding
//! sealed values it cannot open answers [`StoreError::Corrupt`], never garbage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use time::OffsetDateTime;

pub use paygate_vault::chain::{ChainBreak, ChainEntry};
pub use paygate_vault::{
    KeyPurpose, LocalMasterKey, MasterKey, MasterKeySource, OPENID_TOKEN_PREFIX, SEALED_PREFIX,
    Vault, VaultError, WrappedKey,
};

use crate::{NotificationRecord, OrderRecord, StoreError};

/// The AAD of each sealed column.
pub(crate) const ORDER_REQUEST: &str = "orders.request_json";
pub(crate) const ORDER_ATTACH: &str = "orders.attach";
pub(crate) const ORDER_FINGERPRINT: &str = "orders.fingerprint";
/// A split's idempotency fingerprint names its receivers' accounts (crate::receiver_seal).
pub(crate) const SHARE_FINGERPRINT: &str = "share_orders.fingerprint";
pub(crate) const NOTIFICATION_PLAINTEXT: &str = "notifications.plaintext";
pub(crate) const OPENID: &str = "openid_vault.sealed";

/// Openids kept in memory per store (token → openid), so reads of recent orders need no
/// vault lookup. Cleared whole when full: a bound, not a cache policy worth tuning.
const OPENID_CACHE_MAX: usize = 65_536;
/// Rows a re-seal batch examines per column, in key order.
pub const RESEAL_BATCH_MAX: u32 = 500;
/// A re-seal pass that began this long after the active key started sealing is the last one
/// that key needs: a value sealed under the previous key just before the switch has committed
/// by then, and node clocks agree to well within it.
pub const RESEAL_SETTLE_S: i64 = 30;
/// A rotated key starts sealing this long after it is stored, so every node has loaded it
/// first (nodes reload keys at least this often: see the server's vault worker).
pub const KEY_ACTIVATION_DELAY_S: i64 = 20;

/// One column whose values are sealed in place.
#[derive(Clone, Copy, Debug)]
pub struct SealedColumn {
    pub table: &'static str,
    pub key: &'static str,
    pub column: &'static str,
    pub purpose: &'static str,
}

pub const SEALED_COLUMNS: &[SealedColumn] = &[
    SealedColumn {
        table: "orders",
        key: "transaction_id",
        column: "request_json",
        purpose: ORDER_REQUEST,
    },
    // The idempotency fingerprint embeds the whole request.
    SealedColumn {
        table: "orders",
        key: "transaction_id",
        column: "fingerprint",
        purpose: ORDER_FINGERPRINT,
    },
    // The merchant's data package: free text that may carry anything personal.
    SealedColumn {
        table: "orders",
        key: "transaction_id",
        column: "attach",
        purpose: ORDER_ATTACH,
    },
    SealedColumn {
        table: "notifications",
        key: "id",
        column: "plaintext",
        purpose: NOTIFICATION_PLAINTEXT,
    },
    SealedColumn {
        table: "share_orders",
        key: "order_id",
        column: "fingerprint",
        purpose: SHARE_FINGERPRINT,
    },
    SealedColumn {
        table: "openid_vault",
        key: "token",
        column: "sealed",
        purpose: OPENID,
    },
];

/// A row of the openid vault, written beside the order that references it.
#[derive(Clone, Debug)]
pub struct OpenidRow {
    pub token: String,
    pub sealed: String,
}

/// The store's side of the vault: absent until attached.
#[derive(Default)]
pub struct Sealer {
    vault: OnceLock<Arc<Vault>>,
    openids: Mutex<HashMap<String, String>>,
    reseal: Mutex<ResealPass>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer(attached: {})", self.vault.get().is_some())
    }
}

fn vault_err(e: VaultError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Sealer {
    pub fn vault(&self) -> Option<&Arc<Vault>> {
        self.vault.get()
    }

    fn reseal_pass(&self) -> std::sync::MutexGuard<'_, ResealPass> {
        self.reseal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key chaining the audit trail; an error without a vault.
    pub(crate) fn audit_key(&self) -> Result<[u8; 32], StoreError> {
        self.vault
            .get()
            .ok_or_else(|| StoreError::Database("the audit trail needs the master key".into()))?
            .audit_key()
            .map_err(vault_err)
    }

    fn seal(&self, purpose: &str, text: &str) -> Result<String, StoreError> {
        match self.vault.get() {
            Some(v) => v.seal(purpose, text).map_err(vault_err),
            None => Ok(text.to_string()),
        }
    }

    fn open(&self, purpose: &str, text: String) -> Result<String, StoreError> {
        match self.vault.get() {
            Some(v) => v.open(purpose, &text).map_err(vault_err),
            None if paygate_vault::split_sealed(&text).is_some() => Err(StoreError::Corrupt(
                format!("{purpose} is sealed but the store was opened without a master key"),
            )),
            None => Ok(text),
        }
    }

    /// `text` sealed for `purpose`; as it is without a vault.
    pub(crate) fn seal_text(&self, purpose: &str, text: &str) -> Result<String, StoreError> {
        self.seal(purpose, text)
    }

    pub(crate) fn open_text(&self, purpose: &str, text: String) -> Result<String, StoreError> {
        self.open(purpose, text)
    }

    /// The openid's token and its vault row (sealed), remembering the pair.
    fn tokenize(&self, openid: &str) -> Result<(String, OpenidRow), StoreError> {
        let v = self
            .vault
            .get()
            .ok_or_else(|| StoreError::Corrupt("no vault".into()))?;
        let token = v.openid_token(openid).map_err(vault_err)?;
        let sealed = v.seal(OPENID, openid).map_err(vault_err)?;
        self.remember(&token, openid);
        Ok((token.clone(), OpenidRow { token, sealed }))
    }

    fn remember(&self, token: &str, openid: &str) {
        let mut cache = self.openids.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= OPENID_CACHE_MAX {
            cache.clear();
        }
        cache.insert(token.to_string(), openid.to_string());
    }

    /// The order as stored: request sealed, openid replaced by its token (+ the vault row).
    pub(crate) fn seal_order(
        &self,
        o: &OrderRecord,
    ) -> Result<(OrderRecord, Option<OpenidRow>), StoreError> {
        let mut sealed = o.clone();
        if self.vault.get().is_none() {
            return Ok((sealed, None));
        }
        sealed.request_json = self.seal(ORDER_REQUEST, &o.request_json)?;
        sealed.fingerprint = self.seal(ORDER_FINGERPRINT, &o.fingerprint)?;
        sealed.attach = o
            .attach
            .as_deref()
            .map(|a| self.seal(ORDER_ATTACH, a))
            .transpose()?;
        let (token, row) = self.seal_openid(o.payer_openid.as_deref())?;
        sealed.payer_openid = token;
        Ok((sealed, row))
    }

    /// `Some(openid)` → its token and vault row; without a vault, the openid as it is.
    pub(crate) fn seal_openid(
        &self,
        openid: Option<&str>,
    ) -> Result<(Option<String>, Option<OpenidRow>), StoreError> {
        match (openid, self.vault.get()) {
            (Some(openid), Some(_)) => {
                let (token, row) = self.tokenize(openid)?;
                Ok((Some(token), Some(row)))
            }
            (openid, _) => Ok((openid.map(str::to_string), None)),
        }
    }

    pub(crate) fn seal_notification(
        &self,
        n: &NotificationRecord,
    ) -> Result<NotificationRecord, StoreError> {
        let mut sealed = n.clone();
        sealed.plaintext = self.seal(NOTIFICATION_PLAINTEXT, &n.plaintext)?;
        Ok(sealed)
    }

    pub(crate) fn open_notification(
        &self,
        mut n: NotificationRecord,
    ) -> Result<NotificationRecord, StoreError> {
        n.plaintext = self.open(NOTIFICATION_PLAINTEXT, n.plaintext)?;
        Ok(n)
    }

    pub(crate) fn open_notifications(
        &self,
        list: Vec<NotificationRecord>,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        list.into_iter()
            .map(|n| self.open_notification(n))
            .collect()
    }

    /// The openids of the `ov_…` tokens among `tokens` (others are left out): from the cache
    /// or, for the others, from the vault rows `fetch` reads. Empty without a vault.
    pub(crate) async fn open_tokens<F, Fut>(
        &self,
        tokens: Vec<String>,
        fetch: F,
    ) -> Result<HashMap<String, String>, StoreError>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<(String, String)>, StoreError>>,
    {
        let Some(vault) = self.vault.get() else {
            return Ok(HashMap::new());
        };
        let mut wanted: Vec<String> = tokens
            .into_iter()
            .filter(|t| t.starts_with(OPENID_TOKEN_PREFIX))
            .collect();
        wanted.sort();
        wanted.dedup();
        let missing: Vec<String> = {
            let cache = self.openids.lock().unwrap_or_else(|p| p.into_inner());
            wanted
                .iter()
                .filter(|t| !cache.contains_key(*t))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            for (token, sealed) in fetch(missing).await? {
                let openid = vault.open(OPENID, &sealed).map_err(vault_err)?;
                self.remember(&token, &openid);
            }
        }
        let cache = self.openids.lock().unwrap_or_else(|p| p.into_inner());
        wanted
            .into_iter()
            .map(|t| match cache.get(&t) {
                Some(openid) => Ok((t, openid.clone())),
                None => Err(StoreError::Corrupt(format!(
                    "openid token {t} is not in the vault"
                ))),
            })
            .collect()
    }

    /// Opens orders read from the store: requests decrypted, openid tokens resolved from the
    /// cache or, for the others, from the vault rows `fetch` reads.
    pub(crate) async fn open_orders<F, Fut>(
        &self,
        orders: Vec<OrderRecord>,
        fetch: F,
    ) -> Result<Vec<OrderRecord>, StoreError>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<(String, String)>, StoreError>>,
    {
        self.open_orders_as(orders, Opening::Whole, fetch).await
    }

    /// One order read for a view ([`Opening::View`]).
    pub(crate) async fn open_order_view<F, Fut>(
        &self,
        order: Option<OrderRecord>,
        fetch: F,
    ) -> Result<Option<OrderRecord>, StoreError>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<(String, String)>, StoreError>>,
    {
        let orders = order.into_iter().collect();
        Ok(self
            .open_orders_as(orders, Opening::View, fetch)
            .await?
            .pop())
    }

    /// [`Self::open_orders`], opening as much as `opening` says.
    pub(crate) async fn open_orders_as<F, Fut>(
        &self,
        mut orders: Vec<OrderRecord>,
        opening: Opening,
        fetch: F,
    ) -> Result<Vec<OrderRecord>, StoreError>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<(String, String)>, StoreError>>,
    {
        let Some(vault) = self.vault.get() else {
            for o in &orders {
                if paygate_vault::split_sealed(&o.request_json).is_some() {
                    return Err(StoreError::Corrupt(
                        "order is sealed but the store was opened without a master key".into(),
                    ));
                }
            }
            if opening == Opening::View {
                orders.iter_mut().for_each(blank_request);
            }
            return Ok(orders);
        };
        let missing: Vec<String> = {
            let cache = self.openids.lock().unwrap_or_else(|p| p.into_inner());
            let mut m: Vec<String> = orders
                .iter()
                .filter_map(|o| o.payer_openid.as_ref())
                .filter(|t| t.starts_with(OPENID_TOKEN_PREFIX) && !cache.contains_key(*t))
                .cloned()
                .collect();
            m.sort();
            m.dedup();
            m
        };
        if !missing.is_empty() {
            for (token, sealed) in fetch(missing).await? {
                let openid = vault.open(OPENID, &sealed).map_err(vault_err)?;
                self.remember(&token, &openid);
            }
        }
        let cache = self.openids.lock().unwrap_or_else(|p| p.into_inner());
        for o in &mut orders {
            if opening == Opening::Whole {
                o.request_json = vault
                    .open(ORDER_REQUEST, &o.request_json)
                    .map_err(vault_err)?;
                o.fingerprint = vault
                    .open(ORDER_FINGERPRINT, &o.fingerprint)
                    .map_err(vault_err)?;
            } else {
                blank_request(o);
            }
            if let Some(a) = &o.attach {
                o.attach = Some(vault.open(ORDER_ATTACH, a).map_err(vault_err)?);
            }
            if let Some(token) = o
                .payer_openid
                .as_ref()
                .filter(|t| t.starts_with(OPENID_TOKEN_PREFIX))
            {
                let openid = cache.get(token).cloned().ok_or_else(|| {
                    StoreError::Corrupt(format!("openid token {token} is not in the vault"))
                })?;
                o.payer_openid = Some(openid);
            }
        }
        Ok(orders)
    }
}

/// A view's order: no request snapshot, no fingerprint (sealed or not, the same either way).
fn blank_request(o: &mut OrderRecord) {
    o.request_json.clear();
    o.fingerprint.clear();
}

/// How much of a read order to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// Every field, as written.
    Whole,
    /// What the query API shows: the request snapshot and its fingerprint left empty.
    View,
}

/// What the backends provide for the generic vault operations below.
#[async_trait::async_trait]
pub(crate) trait VaultBackend: Send + Sync {
    fn sealer(&self) -> &Sealer;
    async fn vault_keys(&self) -> Result<Vec<WrappedKey>, StoreError>;
    async fn insert_vault_key(&self, key: &WrappedKey) -> Result<(), StoreError>;
    /// The next `limit` rows of `col`'s table after key `after` ("" for the first), in key
    /// order: each row's key, and its value when that is stale (not NULL and not starting with
    /// `keep_prefix`). Every row examined is listed, so the caller knows where the page ends.
    async fn stale_values_after(
        &self,
        col: &SealedColumn,
        after: &str,
        keep_prefix: &str,
        limit: u32,
    ) -> Result<Vec<(String, Option<String>)>, StoreError>;
    /// Compare-and-set of one value; false if it changed meanwhile.
    async fn replace_value(
        &self,
        col: &SealedColumn,
        key: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError>;
    /// Moves an order's plaintext openid into the vault (row + token) in one transaction.
    async fn tokenize_order_openid(
        &self,
        transaction_id: &str,
        old: &str,
        row: &OpenidRow,
    ) -> Result<bool, StoreError>;
    /// How many values of `col` start with `prefix` ("" counts every non-NULL value).
    async fn count_prefix(&self, col: &SealedColumn, prefix: &str) -> Result<i64, StoreError>;
}

/// Attaches `master`'s vault: loads the stored keys, creating the index key and the first
/// data key on a fresh database (two nodes racing: one index key wins, the loser re-reads;
/// two first data keys are both valid, the newer seals). Fails if a stored key does not
/// unwrap with `master` (the wrong master key).
pub(crate) async fn attach(
    b: &impl VaultBackend,
    master: Arc<dyn MasterKey>,
) -> Result<(), StoreError> {
    let vault = Arc::new(Vault::new(master));
    let now = OffsetDateTime::now_utc();
    let mut keys = b.vault_keys().await?;
    if !keys.iter().any(|k| k.purpose == KeyPurpose::Index) {
        match b
            .insert_vault_key(&vault.new_index_key(now).map_err(vault_err)?)
            .await
        {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        keys = b.vault_keys().await?;
    }
    if !keys
        .iter()
        .any(|k| k.purpose == KeyPurpose::Data && k.retired_at.is_none())
    {
        b.insert_vault_key(
            &vault
                .new_data_key(now, time::Duration::ZERO)
                .map_err(vault_err)?,
        )
        .await?;
        keys = b.vault_keys().await?;
    }
    vault.install(&keys).map_err(vault_err)?;
    b.sealer()
        .vault
        .set(vault)
        .map_err(|_| StoreError::Database("a vault is already attached to this store".into()))
}

/// Reloads the stored keys (a rotation or a retirement made by another node).
pub(crate) async fn refresh(b: &impl VaultBackend) -> Result<(), StoreError> {
    let Some(vault) = b.sealer().vault() else {
        return Ok(());
    };
    let keys = b.vault_keys().await?;
    vault.install(&keys).map_err(vault_err)
}

/// Stores a new data key that starts sealing after [`KEY_ACTIVATION_DELAY_S`].
pub(crate) async fn rotate(b: &impl VaultBackend) -> Result<WrappedKey, StoreError> {
    let vault = b
        .sealer()
        .vault()
        .ok_or_else(|| StoreError::Database("no master key: the store has no vault".into()))?;
    let key = vault
        .new_data_key(
            OffsetDateTime::now_utc(),
            time::Duration::seconds(KEY_ACTIVATION_DELAY_S),
        )
        .map_err(vault_err)?;
    b.insert_vault_key(&key).await?;
    refresh(b).await?;
    Ok(key)
}

/// What one [`reseal_batch`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Values re-sealed (or sealed for the first time) and openids moved into the vault.
    pub resealed: u64,
    /// Rows looked at; none once a settled pass has finished under the active key.
    pub examined: u64,
    /// True while the pass has rows left: call again.
    pub more: bool,
}

/// Where this store's re-seal pass stands. A pass walks every sealed column once, in key
/// order, a batch at a time. New values are sealed under the active key as they are written,
/// so once a pass that began after that key settled has finished, nothing is left to find
/// until the next key activates, and batches skip the tables instead of scanning them: a
/// scan for stale values was a full read of `orders` (four times over) every few seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum ResealPass {
    #[default]
    Idle,
    Running {
        key: String,
        began: OffsetDateTime,
        /// Per column of [`reseal_columns`]: the last key examined ("" before the first), or
        /// None once the column is done.
        cursors: Vec<Option<String>>,
    },
    Finished {
        key: String,
        began: OffsetDateTime,
    },
}

/// What a batch does, given the pass so far and the active key (`since`: when it began sealing).
#[derive(Debug, PartialEq, Eq)]
enum ResealStep {
    /// Nothing can be stale, or not yet worth a new pass.
    Skip,
    /// Go on from these cursors; `began` names the pass.
    Scan {
        began: OffsetDateTime,
        cursors: Vec<Option<String>>,
    },
}

fn settled(began: OffsetDateTime, since: OffsetDateTime) -> bool {
    began >= since + time::Duration::seconds(RESEAL_SETTLE_S)
}

/// Starts, goes on with, or skips a pass (and records a new one in `pass`).
fn reseal_step(
    pass: &mut ResealPass,
    active: &str,
    since: OffsetDateTime,
    now: OffsetDateTime,
    columns: usize,
) -> ResealStep {
    match pass {
        ResealPass::Running {
            key,
            began,
            cursors,
        } if key == active => {
            return ResealStep::Scan {
                began: *began,
                cursors: cursors.clone(),
            };
        }
        // A pass that began too soon after the switch may have missed a late write under the
        // old key: one more pass, once the key has settled.
        ResealPass::Finished { key, began }
            if key == active && (settled(*began, since) || !settled(now, since)) =>
        {
            return ResealStep::Skip;
        }
        _ => {}
    }
    let cursors = vec![Some(String::new()); columns];
    *pass = ResealPass::Running {
        key: active.to_string(),
        began: now,
        cursors: cursors.clone(),
    };
    ResealStep::Scan {
        began: now,
        cursors,
    }
}

/// The columns a pass walks: the sealed ones, then `orders.payer_openid` (true: plaintext
/// openids move into the vault, tokens stay).
fn reseal_columns() -> impl Iterator<Item = (&'static SealedColumn, bool)> {
    let sealed = SEALED_COLUMNS.iter().map(|col| (col, false));
    sealed.chain(std::iter::once((&ORDER_OPENID, true)))
}

/// One batch of the re-seal pass: up to [`RESEAL_BATCH_MAX`] rows of each column examined
/// from where the pass stands, stale values re-sealed under the active key (plaintext rows
/// included) and plaintext openids of orders moved into the vault. Each value is a
/// compare-and-set, so it is safe beside live writes and on several nodes at once.
pub(crate) async fn reseal_batch(b: &impl VaultBackend) -> Result<ResealReport, StoreError> {
    let Some(vault) = b.sealer().vault() else {
        return Ok(ResealReport::default());
    };
    let now = OffsetDateTime::now_utc();
    let Some((active, since)) = vault.active_key(now) else {
        return Ok(ResealReport::default());
    };
    let step = {
        let mut pass = b.sealer().reseal_pass();
        reseal_step(&mut pass, &active, since, now, reseal_columns().count())
    };
    let ResealStep::Scan { began, cursors } = step else {
        return Ok(ResealReport::default());
    };
    let keep = format!("{SEALED_PREFIX}{active}.");
    let mut report = ResealReport::default();
    let mut next = Vec::with_capacity(cursors.len());
    for ((col, openids), cursor) in reseal_columns().zip(cursors) {
        let Some(after) = cursor else {
            next.push(None);
            continue;
        };
        let prefix = if openids { OPENID_TOKEN_PREFIX } else { &keep };
        let page = b
            .stale_values_after(col, &after, prefix, RESEAL_BATCH_MAX)
            .await?;
        report.examined += page.len() as u64;
        let full = page.len() as u32 >= RESEAL_BATCH_MAX;
        let last = page.last().map(|(key, _)| key.clone());
        for (key, stale) in page {
            let Some(old) = stale else { continue };
            if reseal_value(b, vault, col, openids, &key, &old).await? {
                report.resealed += 1;
            }
        }
        next.push(if full { last } else { None });
    }
    report.more = next.iter().any(Option::is_some);
    let mut pass = b.sealer().reseal_pass();
    // Another batch may have started a pass for a newer key meanwhile: leave that one be.
    let ours = matches!(&*pass, ResealPass::Running { key, began: at, .. } if *key == active && *at == began);
    if ours {
        *pass = if report.more {
            ResealPass::Running {
                key: active,
                began,
                cursors: next,
            }
        } else {
            ResealPass::Finished { key: active, began }
        };
    }
    Ok(report)
}

/// Re-seals one stale value (or moves one plaintext openid into the vault); false if the row
/// changed meanwhile.
async fn reseal_value(
    b: &impl VaultBackend,
    vault: &Vault,
    col: &SealedColumn,
    openid: bool,
    key: &str,
    old: &str,
) -> Result<bool, StoreError> {
    if openid {
        let (_, row) = b.sealer().tokenize(old)?;
        return b.tokenize_order_openid(key, old, &row).await;
    }
    let plain = vault.open(col.purpose, old).map_err(vault_err)?;
    let new = vault.seal(col.purpose, &plain).map_err(vault_err)?;
    b.replace_value(col, key, old, &new).await
}

/// The SELECT behind [`VaultBackend::stale_values_after`], with the backend's placeholders
/// for the key to start after, the prefix to keep and the page size.
pub(crate) fn stale_page_sql(col: &SealedColumn, after: &str, keep: &str, limit: &str) -> String {
    format!(
        "SELECT {key}, CASE WHEN {column} IS NOT NULL AND substr({column}, 1, length({keep})) <> {keep}
             THEN {column} END
         FROM {table} WHERE {key} > {after} ORDER BY {key} LIMIT {limit}",
        key = col.key,
        column = col.column,
        table = col.table
    )
}

/// `orders.payer_openid`, for the migration of plaintext openids (never sealed in place).
pub(crate) const ORDER_OPENID: SealedColumn = SealedColumn {
    table: "orders",
    key: "transaction_id",
    column: "payer_openid",
    purpose: "orders.payer_openid",
};

/// One data key and how many stored values it seals.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyUsage {
    pub key_id: String,
    pub purpose: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub activate_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
    pub active: bool,
    pub sealed_values: i64,
}

/// `paygate keys status`: every key, which one seals, what each still protects, and how many
/// values are still plaintext (awaiting the background re-seal).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VaultStatus {
    pub master_key_id: String,
    pub keys: Vec<KeyUsage>,
    pub plaintext_values: i64,
}

pub(crate) async fn status(b: &impl VaultBackend) -> Result<VaultStatus, StoreError> {
    let vault = b
        .sealer()
        .vault()
        .ok_or_else(|| StoreError::Database("no master key: the store has no vault".into()))?;
    let active = vault.active_key_id(OffsetDateTime::now_utc());
    let mut keys = Vec::new();
    for k in b.vault_keys().await? {
        let mut sealed_values = 0;
        if k.purpose == KeyPurpose::Data {
            for col in SEALED_COLUMNS {
                sealed_values += b
                    .count_prefix(col, &format!("{SEALED_PREFIX}{}.", k.key_id))
                    .await?;
            }
        }
        keys.push(KeyUsage {
            active: active.as_deref() == Some(k.key_id.as_str()),
            key_id: k.key_id,
            purpose: k.purpose.as_str(),
            created_at: k.created_at,
            activate_at: k.activate_at,
            retired_at: k.retired_at,
            sealed_values,
        });
    }
    let mut plaintext_values = 0;
    for col in SEALED_COLUMNS {
        plaintext_values +=
            b.count_prefix(col, "").await? - b.count_prefix(col, SEALED_PREFIX).await?;
    }
    plaintext_values += b.count_prefix(&ORDER_OPENID, "").await?
        - b.count_prefix(&ORDER_OPENID, OPENID_TOKEN_PREFIX).await?;
    Ok(VaultStatus {
        master_key_id: vault.master_key_id().to_string(),
        keys,
        plaintext_values,
    })
}

/// Refuses to retire the active key or one that still seals a value.
pub(crate) async fn check_retirable(b: &impl VaultBackend, key_id: &str) -> Result<(), StoreError> {
    let st = status(b).await?;
    let key = st
        .keys
        .iter()
        .find(|k| k.key_id == key_id && k.purpose == "DATA")
        .ok_or_else(|| StoreError::Conflict(format!("no data key {key_id}")))?;
    if key.active {
        return Err(StoreError::Conflict(format!(
            "{key_id} is the active key: rotate first"
        )));
    }
    if key.sealed_values > 0 {
        return Err(StoreError::Conflict(format!(
            "{key_id} still seals {} values: wait for the re-seal",
            key.sealed_values
        )));
    }
    Ok(())
}

/// One operator action in the audit trail (issue 7 §6), as appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub at: OffsetDateTime,
    /// Who acted: the operator token's holder (`operator`), a CLI (`cli`), ...
    pub actor: String,
    /// `merchant.create`, `merchant.disable`, `risk.rules.save`, `keys.rotate`, ...
    pub action: String,
    /// What it was done to (a mchid, a notification id, a key id).
    pub target: String,
    /// JSON with the action's parameters (no secrets).
    pub detail: String,
}

/// An entry of the audit trail, chained to the one before.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// Chains `entry` after `prev` (`None`: the first entry) with the audit key.
    pub(crate) fn chained(
        key: &[u8; 32],
        prev: Option<(i64, String)>,
        entry: &NewAuditEntry,
    ) -> Self {
        let (seq, prev_hash) = match prev {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, paygate_vault::chain::GENESIS_HASH.to_string()),
        };
        let at = crate::truncate_to_ms(entry.at);
        let hash = paygate_vault::chain::entry_hash(
            key,
            &prev_hash,
            seq,
            crate::unix_ms(at),
            &entry.actor,
            &entry.action,
            &entry.target,
            &entry.detail,
        );
        Self {
            seq,
            at,
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            detail: entry.detail.clone(),
            prev_hash,
            hash,
        }
    }

    fn chain_entry(&self) -> ChainEntry {
        ChainEntry {
            seq: self.seq,
            at_ms: crate::unix_ms(self.at),
            actor: self.actor.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            detail: self.detail.clone(),
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        }
    }
}

/// What [`crate::Store::verify_audit`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditVerdict {
    /// Entries checked and found intact (all of them when `broken` is `None`).
    pub entries: u64,
    pub broken: Option<ChainBreak>,
}

/// Audit entries read per page while verifying.
const AUDIT_PAGE: u32 = 1_000;

/// Recomputes the whole chain, page by page, naming the first entry that does not hold.
pub(crate) async fn verify_audit(
    sealer: &Sealer,
    store: &(impl crate::Store + ?Sized),
) -> Result<AuditVerdict, StoreError> {
    let key = sealer.audit_key()?;
    let mut checked = 0u64;
    let mut after = 0;
    let mut prev_hash = paygate_vault::chain::GENESIS_HASH.to_string();
    loop {
        let page = store.audit_entries(after, AUDIT_PAGE).await?;
        let Some(last) = page.last().cloned() else {
            return Ok(AuditVerdict {
                entries: checked,
                broken: None,
            });
        };
        // Each page is checked as the continuation of the last: re-base the expected link.
        let entries: Vec<ChainEntry> = page.iter().map(AuditRecord::chain_entry).collect();
        if let Err(b) = paygate_vault::chain::verify_from(&key, after + 1, &prev_hash, entries) {
            return Ok(AuditVerdict {
                entries: checked + (b.seq - after - 1).max(0) as u64,
                broken: Some(b),
            });
        }
        checked += page.len() as u64;
        after = last.seq;
        prev_hash = last.hash;
        if page.len() < AUDIT_PAGE as usize {
            return Ok(AuditVerdict {
                entries: checked,
                broken: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).unwrap()
    }

    fn began(step: &ResealStep) -> OffsetDateTime {
        match step {
            ResealStep::Scan { began, .. } => *began,
            ResealStep::Skip => panic!("expected a scan"),
        }
    }

    #[test]
    fn a_pass_starts_from_the_first_key_of_every_column_and_goes_on_where_it_stands() {
        let mut pass = ResealPass::Idle;
        let step = reseal_step(&mut pass, "k1", at(0), at(100), 3);
        assert_eq!(
            step,
            ResealStep::Scan {
                began: at(100),
                cursors: vec![Some(String::new()); 3]
            }
        );
        pass = ResealPass::Running {
            key: "k1".into(),
            began: at(100),
            cursors: vec![None, Some("t9".into()), None],
        };
        let step = reseal_step(&mut pass, "k1", at(0), at(105), 3);
        assert_eq!(
            step,
            ResealStep::Scan {
                began: at(100),
                cursors: vec![None, Some("t9".into()), None]
            }
        );
    }

    #[test]
    fn a_settled_finished_pass_skips_until_the_next_key_activates() {
        let mut pass = ResealPass::Finished {
            key: "k1".into(),
            began: at(RESEAL_SETTLE_S),
        };
        assert_eq!(
            reseal_step(&mut pass, "k1", at(0), at(10_000), 2),
            ResealStep::Skip
        );
        // A new key: a new pass, from the start.
        let step = reseal_step(&mut pass, "k2", at(9_990), at(10_000), 2);
        assert_eq!(began(&step), at(10_000));
        assert!(matches!(&pass, ResealPass::Running { key, .. } if key == "k2"));
    }

    #[test]
    fn a_pass_begun_before_the_key_settled_is_run_once_more_after() {
        // Began 5 s after the switch: a value sealed under the old key may have landed behind it.
        let mut pass = ResealPass::Finished {
            key: "k1".into(),
            began: at(5),
        };
        assert_eq!(
            reseal_step(&mut pass, "k1", at(0), at(RESEAL_SETTLE_S - 1), 2),
            ResealStep::Skip
        );
        let step = reseal_step(&mut pass, "k1", at(0), at(RESEAL_SETTLE_S), 2);
        assert_eq!(began(&step), at(RESEAL_SETTLE_S));
        pass = ResealPass::Finished {
            key: "k1".into(),
            began: at(RESEAL_SETTLE_S),
        };
        assert_eq!(
            reseal_step(&mut pass, "k1", at(0), at(RESEAL_SETTLE_S + 60), 2),
            ResealStep::Skip
        );
    }
}
