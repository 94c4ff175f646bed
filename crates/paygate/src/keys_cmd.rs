//! `paygate keys`: the data keys that seal sensitive fields at rest (issue 7 §2).
//!
//! - `rotate`: a new data key, sealing everywhere once every node has loaded it (about
//!   20 s); running gateways then re-seal old rows onto it in the background.
//! - `status`: each key, which one seals, how many stored values each still seals, and how
//!   many values still wait in plaintext.
//! - `reseal`: the background re-seal, run here to completion (for an offline database).
//! - `retire KEY_ID`: destroys a key that seals nothing any more.
//! - `rotate-platform [--kind CERTIFICATE|PUBLIC_KEY]`: a new generation of the platform
//!   signing keys, served next to the old one for the grace period (rules in
//!   paygate-server keys.rs); `platform-status`: what is served now.
//!
//! Every change is appended to the operator audit trail.

use clap::Subcommand;
use paygate_server::config::Config;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Add a new data key (old ones stay readable until retired).
    Rotate {
        #[command(flatten)]
        store: crate::StoreArgs,
    },
    /// Keys, the active one, what each still seals.
    Status {
        #[command(flatten)]
        store: crate::StoreArgs,
    },
    /// Re-seal every stored value under the active key now.
    Reseal {
        #[command(flatten)]
        store: crate::StoreArgs,
    },
    /// Destroy a data key that no stored value uses any more.
    Retire {
        key_id: String,
        #[command(flatten)]
        store: crate::StoreArgs,
    },
    /// Add a new generation of the platform signing keys (both kinds unless --kind).
    RotatePlatform {
        /// CERTIFICATE or PUBLIC_KEY.
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        store: crate::StoreArgs,
    },
    /// The platform signing keys served now: generations, default, retirement times.
    PlatformStatus {
        #[command(flatten)]
        store: crate::StoreArgs,
    },
}

async fn open(config: &Config) -> Result<paygate_server::key_rotation::SharedStore, String> {
    paygate_server::key_rotation::open_store(config)
        .await
        .map_err(|e| e.to_string())
}

fn print_json(v: &impl serde::Serialize) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
    );
    Ok(())
}

pub async fn run(command: KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Rotate { store } => {
            let store = open(&store.config()?).await?;
            let key = store.rotate_data_key().await.map_err(|e| e.to_string())?;
            paygate_server::audit_trail::record(
                store.as_ref(),
                "cli",
                "keys.rotate",
                &key.key_id,
                serde_json::json!({ "activate_at": key.activate_at.unix_timestamp() }),
            )
            .await;
            println!(
                "data key {} added; it seals from {} (every node reloads keys before then)",
                key.key_id, key.activate_at
            );
            Ok(())
        }
        KeysCommand::Status { store } => {
            let store = open(&store.config()?).await?;
            print_json(&store.vault_status().await.map_err(|e| e.to_string())?)
        }
        KeysCommand::Reseal { store } => {
            let store = open(&store.config()?).await?;
            let mut total = 0;
            loop {
                let report = store.reseal_batch().await.map_err(|e| e.to_string())?;
                total += report.resealed;
                if !report.more {
                    break;
                }
            }
            paygate_server::audit_trail::record(
                store.as_ref(),
                "cli",
                "keys.reseal",
                "*",
                serde_json::json!({ "resealed": total }),
            )
            .await;
            println!("{total} values re-sealed");
            Ok(())
        }
        KeysCommand::Retire { key_id, store } => {
            let store = open(&store.config()?).await?;
            store
                .retire_data_key(&key_id)
                .await
                .map_err(|e| e.to_string())?;
            paygate_server::audit_trail::record(
                store.as_ref(),
                "cli",
                "keys.retire",
                &key_id,
                serde_json::json!({}),
            )
            .await;
            println!("data key {key_id} retired (destroyed)");
            Ok(())
        }
        KeysCommand::RotatePlatform { kind, store } => {
            use paygate_server::keys;
            use paygate_store::PlatformKeyKind;
            let config = store.config()?;
            let store = open(&config).await?;
            let kinds = match kind.as_deref() {
                None => vec![PlatformKeyKind::Certificate, PlatformKeyKind::PublicKey],
                Some(k) => {
                    vec![keys::parse_kind(k).ok_or("--kind must be CERTIFICATE or PUBLIC_KEY")?]
                }
            };
            // First keys exist before a rotation (a fresh database gets generation 1 here).
            keys::PlatformKeys::load_or_create_with(store.as_ref(), &config.platform_keys)
                .await
                .map_err(|e| e.to_string())?;
            for kind in kinds {
                let id = keys::rotate(store.as_ref(), kind)
                    .await
                    .map_err(|e| e.to_string())?;
                paygate_server::audit_trail::record(
                    store.as_ref(),
                    "cli",
                    "platform-keys.rotate",
                    &id,
                    serde_json::json!({ "kind": keys::kind_str(kind) }),
                )
                .await;
                println!(
                    "platform key {id} ({}) added; gateways serve it within {} ms",
                    keys::kind_str(kind),
                    config.platform_keys.reload_interval_ms
                );
            }
            Ok(())
        }
        KeysCommand::PlatformStatus { store } => {
            let config = store.config()?;
            let store = open(&config).await?;
            let keys = paygate_server::keys::PlatformKeys::load_or_create_with(
                store.as_ref(),
                &config.platform_keys,
            )
            .await
            .map_err(|e| e.to_string())?;
            print_json(&keys.current().view())
        }
    }
}
