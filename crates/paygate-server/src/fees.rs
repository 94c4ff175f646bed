//! Fees and the ledger's side of the gateway: the `[ledger]` configuration, the fee terms
//! snapshotted on each new order, the payment posting written with every move to SUCCESS, the
//! journal's signing key and the journal integrator.
//!
//! **Fees.** A merchant pays paygate `fee_rate_ppm` (parts per million of the total; default
//! 6000 = 0.60%, per-merchant overrides in `[[ledger.merchant_fee_rates]]`); paygate pays the
//! channel its `fee_rate_bp` (`[[channels]]`, 60 = 0.6% by default). Both are fixed on the
//! order when it is created ([`paygate_store::OrderPricing`]) and each is rounded half-up to
//! the fen per transaction, as WeChat Pay rounds its own fee. A refund gives back the same
//! proportion of the fee, rounded down (the store's rule, `paygate_store::ledger`).
//!
//! **Journal key.** Checkpoints are signed with an Ed25519 note key kept in a file, never in
//! the database: whoever can edit rows cannot re-sign them. The key is created on first start
//! (`<data_dir>/ledger_journal.key` unless `[ledger] journal_key_file` says otherwise, mode
//! 0600); `paygate audit verify` reads the same file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use paygate_core::error::{ApiError, ErrorCode};
use paygate_core::money::{Currency, Money};
use paygate_ledger::{NoteSigner, NoteVerifier, Posting, recipes};
use paygate_store::{OrderPricing, OrderRecord, RATE_PPM_MAX, Store, StoreError};
use serde::Deserialize;

use crate::config::{Config, ConfigError};

/// Default merchant fee: WeChat Pay's standard 0.60%.
pub const FEE_RATE_PPM_DEFAULT: i64 = 6_000;
/// How often the journal integrator runs unless told otherwise.
pub const INTEGRATE_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Default checkpoint origin (the log's name in its signed notes).
pub const JOURNAL_ORIGIN_DEFAULT: &str = "paygate.local/ledger";

/// `[ledger]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// paygate's fee for merchants without an override, parts per million of the total.
    pub fee_rate_ppm: i64,
    pub merchant_fee_rates: Vec<MerchantFeeRate>,
    /// The journal's Ed25519 note key; default `<data_dir>/ledger_journal.key`.
    pub journal_key_file: Option<PathBuf>,
    /// The log's name in checkpoints (a note key name: no spaces, no `+`).
    pub journal_origin: String,
    /// How often the journal integrator sequences new transfers and signs a checkpoint.
    pub integrate_interval_ms: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            fee_rate_ppm: FEE_RATE_PPM_DEFAULT,
            merchant_fee_rates: Vec::new(),
            journal_key_file: None,
            journal_origin: JOURNAL_ORIGIN_DEFAULT.into(),
            integrate_interval_ms: INTEGRATE_INTERVAL_MS_DEFAULT,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantFeeRate {
    pub mchid: String,
    pub fee_rate_ppm: i64,
}

impl LedgerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rates = std::iter::once(("ledger.fee_rate_ppm", self.fee_rate_ppm)).chain(
            self.merchant_fee_rates
                .iter()
                .map(|m| ("ledger.merchant_fee_rates", m.fee_rate_ppm)),
        );
        for (name, rate) in rates {
            if !(0..=RATE_PPM_MAX).contains(&rate) {
                return Err(ConfigError::Invalid(format!(
                    "{name} = {rate}: want 0..={RATE_PPM_MAX} (parts per million)"
                )));
            }
        }
        if !paygate_ledger::note::is_valid_key_name(&self.journal_origin) {
            return Err(ConfigError::Invalid(format!(
                "ledger.journal_origin {:?} is not a note key name",
                self.journal_origin
            )));
        }
        if self.integrate_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "ledger.integrate_interval_ms must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The merchant's fee rate.
    pub fn fee_rate_ppm(&self, mchid: &str) -> i64 {
        self.merchant_fee_rates
            .iter()
            .find(|m| m.mchid == mchid)
            .map_or(self.fee_rate_ppm, |m| m.fee_rate_ppm)
    }

    pub fn key_file(&self, data_dir: &Path) -> PathBuf {
        self.journal_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("ledger_journal.key"))
    }
}

/// The channel's cost rate in ppm (its `fee_rate_bp`; the embedded sandbox channel costs the
/// configured default).
pub fn channel_cost_ppm(config: &Config, channel_id: &str) -> i64 {
    let bp = config
        .channels
        .iter()
        .find(|c| c.id == channel_id)
        .map_or_else(
            || crate::config::ChannelEntry::default().fee_rate_bp,
            |c| c.fee_rate_bp,
        );
    i64::from(bp) * 100
}

/// The fee terms of a new order of `total_fen` for `mchid` routed to `channel_id`.
pub fn pricing(
    config: &Config,
    mchid: &str,
    channel_id: &str,
    total_fen: i64,
) -> Result<OrderPricing, ApiError> {
    let rate = config.ledger.fee_rate_ppm(mchid);
    OrderPricing::at(total_fen, rate, channel_cost_ppm(config, channel_id)).ok_or_else(|| {
        ApiError::new(
            ErrorCode::SystemError,
            "the configured fee rate is out of range",
        )
    })
}

/// The ledger posting of the order's payment through `channel_id`: gross to the channel's
/// clearing, the fee to platform income, the net to the merchant (frozen when the order was
/// placed with `settle_info.profit_sharing`).
pub fn payment_posting(order: &OrderRecord, channel_id: &str) -> Result<Posting, ApiError> {
    let currency = Currency::parse(&order.currency)
        .map_err(|e| ApiError::new(ErrorCode::SystemError, e.to_string()))?;
    recipes::payment_success(&recipes::PaymentSuccess {
        transaction_id: &order.transaction_id,
        mchid: &order.mchid,
        channel_id,
        total: Money::new(order.total_fen, currency),
        fee: Money::new(order.pricing.fee_fen, currency),
        profit_sharing: order.profit_sharing,
    })
    .map_err(|e| {
        ApiError::new(
            ErrorCode::SystemError,
            format!("order {}: no ledger posting: {e}", order.transaction_id),
        )
    })
}

// ---- the journal ----

/// The journal's signing key and the log's name.
pub struct Journal {
    pub signer: Arc<NoteSigner>,
    pub origin: String,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("origin", &self.origin)
            .field("signer", &self.signer)
            .finish()
    }
}

impl Journal {
    /// Reads the key file, creating it (mode 0600) on first start.
    pub fn load_or_create(config: &Config) -> Result<Journal, ConfigError> {
        let path = config.ledger.key_file(&config.data_dir);
        let origin = config.ledger.journal_origin.clone();
        let signer = match std::fs::read_to_string(&path) {
            Ok(text) => NoteSigner::from_skey(text.trim())
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signer = NoteSigner::generate(&origin)
                    .map_err(|e| ConfigError::Invalid(format!("journal key: {e}")))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", dir.display())))?;
                }
                write_secret(&path, &signer.to_skey())?;
                signer
            }
            Err(e) => return Err(ConfigError::Invalid(format!("{}: {e}", path.display()))),
        };
        if signer.name() != origin {
            return Err(ConfigError::Invalid(format!(
                "{}: the key is named {:?}, ledger.journal_origin is {origin:?}",
                path.display(),
                signer.name()
            )));
        }
        Ok(Journal {
            signer: Arc::new(signer),
            origin,
        })
    }

    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }
}

#[cfg(unix)]
fn write_secret(path: &Path, text: &str) -> Result<(), ConfigError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // create_new: two processes starting at once never overwrite each other's key.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))
}

#[cfg(not(unix))]
fn write_secret(path: &Path, text: &str) -> Result<(), ConfigError> {
    std::fs::write(path, text).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))
}

/// Sequences every transfer written so far and signs a checkpoint of the new size (if any).
/// Returns how many transfers got a leaf.
pub async fn integrate_all(store: &dyn Store, journal: &Journal) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let done = store
            .integrate_journal(
                Arc::clone(&journal.signer),
                &journal.origin,
                paygate_store::ledger::INTEGRATE_BATCH_MAX,
                time::OffsetDateTime::now_utc(),
            )
            .await?;
        total += done.appended;
        if done.appended < u64::from(paygate_store::ledger::INTEGRATE_BATCH_MAX) {
            return Ok(total);
        }
    }
}

/// The journal integrator: on every node (the store lets one run at a time).
pub fn spawn_integrator(app: Arc<crate::http::AppState>) {
    tokio::spawn(async move {
        let every = Duration::from_millis(app.config.ledger.integrate_interval_ms);
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = integrate_all(app.store.as_ref(), &app.journal).await {
                tracing::warn!(error = %e, "journal integration failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fees_round_half_up_to_the_fen_per_transaction() {
        assert_eq!(OrderPricing::fee_of(10_000, 6_000), Some(60));
        assert_eq!(OrderPricing::fee_of(1, 6_000), Some(0)); // 0.006 fen
        assert_eq!(OrderPricing::fee_of(84, 6_000), Some(1)); // 0.504 → 1
        assert_eq!(OrderPricing::fee_of(83, 6_000), Some(0)); // 0.498 → 0
        assert_eq!(OrderPricing::fee_of(250, 2_000), Some(1)); // 0.5 → 1 (half-up)
        assert_eq!(OrderPricing::fee_of(100, RATE_PPM_MAX), Some(100));
        assert_eq!(OrderPricing::fee_of(100, RATE_PPM_MAX + 1), None);
        assert_eq!(OrderPricing::fee_of(i64::MAX, RATE_PPM_MAX), Some(i64::MAX));
    }

    #[test]
    fn merchant_overrides_and_channel_costs_come_from_the_configuration() {
        let mut config = Config::default();
        config.ledger.merchant_fee_rates.push(MerchantFeeRate {
            mchid: "1900000109".into(),
            fee_rate_ppm: 2_500,
        });
        config.channels.push(crate::config::ChannelEntry {
            id: "wx-cheap".into(),
            fee_rate_bp: 20,
            ..Default::default()
        });
        let p = pricing(&config, "1900000109", "wx-cheap", 10_000).unwrap();
        assert_eq!((p.fee_rate_ppm, p.fee_fen), (2_500, 25));
        assert_eq!((p.channel_cost_ppm, p.channel_cost_fen), (2_000, 20));
        let other = pricing(&config, "1900000110", "sandbox", 10_000).unwrap();
        assert_eq!((other.fee_rate_ppm, other.fee_fen), (6_000, 60));
        assert_eq!(other.channel_cost_ppm, 6_000);
        config.ledger.fee_rate_ppm = -1;
        assert!(config.ledger.validate().is_err());
    }

    #[test]
    fn the_journal_key_is_created_once_and_kept_out_of_the_database() {
        let dir = std::env::temp_dir().join(format!("pg-journal-{}", uuid::Uuid::new_v4()));
        let config = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        let a = Journal::load_or_create(&config).unwrap();
        let b = Journal::load_or_create(&config).unwrap();
        assert_eq!(a.verifier().to_vkey(), b.verifier().to_vkey());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("ledger_journal.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
