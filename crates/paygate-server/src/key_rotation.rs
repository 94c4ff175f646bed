//! Data protection settings and their workers (issue 7): where the master key comes from,
//! the store opened with its vault, and the background work every node does — reloading
//! the data keys (another node rotated), re-sealing old rows onto the active key, purging
//! expired request nonces.

use std::sync::Arc;
use std::time::Duration;

use paygate_store::Store;
use paygate_store::vault::{LocalMasterKey, MasterKey, MasterKeySource};
use serde::Deserialize;

use crate::config::{Config, ConfigError};

/// `[security]` in paygate.toml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// The master key: `file:PATH`, `env:VAR` or a path (32 hex digits). Default: the file
    /// `<data_dir>/master.key`, created on first start. Several nodes need the same key.
    pub master_key: Option<String>,
    /// Requests per second each merchant may make (token bucket; 0 = no limit).
    pub rate_limit_per_s: u32,
    /// Burst above the rate (bucket size); default: one second's worth.
    pub rate_limit_burst: u32,
    /// How often a node reloads keys, re-seals a batch and purges nonces.
    pub vault_interval_ms: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            master_key: None,
            rate_limit_per_s: 0,
            rate_limit_burst: 0,
            vault_interval_ms: 5_000,
        }
    }
}

/// Where the master key lives, for this configuration.
pub fn master_key_source(config: &Config) -> MasterKeySource {
    match &config.security.master_key {
        Some(s) => MasterKeySource::parse(s),
        None => MasterKeySource::File(config.data_dir.join("master.key")),
    }
}

pub fn load_master_key(config: &Config) -> Result<Arc<dyn MasterKey>, ConfigError> {
    LocalMasterKey::load(&master_key_source(config))
        .map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// A store shared by the gateway's tasks.
pub type SharedStore = Arc<dyn Store>;

/// The store with its vault attached: what the gateway and the CLI's offline commands use.
pub async fn open_store(config: &Config) -> Result<SharedStore, crate::StartError> {
    let master = load_master_key(config)?;
    let store = paygate_store::open(&config.database_url()).await?;
    store.attach_vault(master).await?;
    Ok(store)
}

/// The node's data-protection chores, every `vault_interval_ms`: keys reloaded first (a key
/// rotated elsewhere is known here before it activates), then batches of the re-seal pass
/// (none once a pass has finished under the active key: see `vault::reseal_batch`), then
/// expired nonces purged.
pub fn spawn_vault_worker(store: Arc<dyn Store>, interval_ms: u64) {
    tokio::spawn(async move {
        let every = Duration::from_millis(interval_ms.max(100));
        loop {
            if let Err(e) = vault_round(store.as_ref()).await {
                tracing::warn!(error = %e, "vault round failed");
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Re-seal batches per round at most, so one node's round stays short.
const RESEAL_BATCHES_PER_ROUND_MAX: u32 = 20;

async fn vault_round(store: &dyn Store) -> Result<(), paygate_store::StoreError> {
    store.refresh_vault_keys().await?;
    for _ in 0..RESEAL_BATCHES_PER_ROUND_MAX {
        let report = store.reseal_batch().await?;
        if report.resealed > 0 {
            tracing::info!(resealed = report.resealed, "re-sealed stored values");
        }
        if !report.more {
            break;
        }
    }
    store.purge_nonces(time::OffsetDateTime::now_utc()).await?;
    Ok(())
}
