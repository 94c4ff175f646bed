//! Gateway configuration: defaults for the embedded mode, a `paygate.toml` file, and
//! `PAYGATE_*` environment variables / command-line flags on top (the CLI applies those).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite at `<data_dir>/paygate.db`.
    pub database_url: Option<String>,
    /// The URL merchants and channels reach this gateway at; default `http(s)://<listen>/`.
    pub public_base_url: Option<String>,
    /// Bearer token of the admin API; default: generated once into `<data_dir>/operator_token`.
    pub operator_token: Option<String>,
    pub tls: Option<TlsConfig>,
    pub sandbox: SandboxConfig,
    /// Upstream channels from simulator/merchant kits; none = the embedded sandbox channel.
    pub channels: Vec<ChannelEntry>,
    pub workers: WorkerConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    /// When set, every client must present a certificate signed by this CA (mutual TLS).
    #[serde(default)]
    pub client_ca_pem: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Serve `POST /sandbox/v1/pay` (never in a production configuration).
    pub enabled: bool,
    /// Divides notification retry intervals and the embedded simulator's delays.
    pub time_scale: u32,
    /// How long a call to the embedded sandbox channel may take before its outcome is unknown.
    pub channel_timeout_ms: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            time_scale: 1,
            channel_timeout_ms: default_channel_timeout_ms(),
        }
    }
}

/// A channel from a credential kit directory (the layout the simulator writes).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelEntry {
    pub id: String,
    pub kit_dir: PathBuf,
    /// The channel is a simulator whose sandbox API may be called.
    #[serde(default)]
    pub sandbox: bool,
    #[serde(default = "default_channel_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_channel_timeout_ms() -> u64 {
    10_000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// How often the poller looks for pending orders.
    pub poll_interval_ms: u64,
    /// An attempt is queried again once it has not been for this long.
    pub poll_min_age_ms: u64,
    pub outbox_interval_ms: u64,
    /// How long a claimed notification is reserved for the node that claimed it.
    pub outbox_lease_ms: u64,
    pub outbox_batch_max: u32,
    pub deliveries_in_flight_max: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 5_000,
            poll_min_age_ms: 30_000,
            outbox_interval_ms: 500,
            outbox_lease_ms: 30_000,
            outbox_batch_max: 64,
            deliveries_in_flight_max: 64,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./paygate-data"),
            database_url: None,
            public_base_url: None,
            operator_token: None,
            tls: None,
            sandbox: SandboxConfig::default(),
            channels: Vec::new(),
            workers: WorkerConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| err(e.to_string()))
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("paygate.db").display()))
    }

    pub fn public_base_url(&self) -> String {
        let mut url = self.public_base_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}/", self.listen)
        });
        if !url.ends_with('/') {
            url.push('/');
        }
        url
    }

    /// The operator token: configured, or read from (or generated into) the data directory.
    pub fn operator_token(&self) -> Result<String, ConfigError> {
        if let Some(t) = &self.operator_token {
            return Ok(t.clone());
        }
        let path = self.data_dir.join("operator_token");
        if let Ok(t) = std::fs::read_to_string(&path) {
            return Ok(t.trim().to_string());
        }
        let token = paygate_core::ids::token(40);
        std::fs::create_dir_all(&self.data_dir).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        std::fs::write(&path, &token)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
        restrict(&path);
        Ok(token)
    }
}

#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_mode() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.database_url().starts_with("sqlite://./paygate-data/"));
        assert_eq!(c.public_base_url(), "http://127.0.0.1:8080/");
        assert!(c.sandbox.enabled);
    }

    #[test]
    fn toml_overrides_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str(
            "listen = \"0.0.0.0:9443\"\n[sandbox]\nenabled = false\n[[channels]]\nid = \"wx1\"\nkit_dir = \"/k\"\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9443);
        assert!(!c.sandbox.enabled);
        assert_eq!(c.channels[0].timeout_ms, 10_000);
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }

    #[test]
    fn operator_token_is_generated_once() {
        let dir = std::env::temp_dir().join(format!("pg-token-{}", uuid::Uuid::new_v4()));
        let c = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        let a = c.operator_token().unwrap();
        assert_eq!(a.len(), 40);
        assert_eq!(c.operator_token().unwrap(), a);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
