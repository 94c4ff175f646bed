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
    /// How prepays are routed across the channels, retried and failed over.
    pub routing: RoutingConfig,
    pub workers: WorkerConfig,
    pub risk: RiskSettings,
    /// Fees and the ledger's journal (fees.rs).
    pub ledger: crate::fees::LedgerConfig,
    /// End-of-day reconciliation: the daily job, the cross-day pool (recon.rs).
    pub recon: crate::recon::ReconConfig,
    /// Merchant bills: when days close, download URL lifetime.
    pub bills: crate::bills::BillsConfig,
    /// Daily settlement: T+N, the job's schedule (settlement.rs).
    pub settlement: crate::settlement::SettlementConfig,
    /// Master key, rate limits, vault worker (key_rotation.rs).
    pub security: crate::key_rotation::SecurityConfig,
    /// Platform signing key rotation: grace period, switch, reload (keys.rs).
    pub platform_keys: crate::keys::PlatformKeyConfig,
    /// How long an orderly stop (SIGTERM, Ctrl-C) may take: requests in flight finish and the
    /// outbox records its deliveries, then the store closes (shutdown.rs). Default 25 s: a
    /// prepay's whole deadline (20 s) fits, and it ends before a usual 30 s kill timeout.
    pub shutdown_grace_ms: u64,
    /// The first part of that stop: `/readyz` answers 503 while the gateway goes on serving,
    /// so a load balancer that polls it moves new calls elsewhere first. Default 0 (no load
    /// balancer); behind one, a little more than its check interval.
    pub shutdown_drain_ms: u64,
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

/// A channel from a credential kit directory (the layout the simulator writes), with its
/// routing profile. Every profile field has a default, so `id` + `kit_dir` is a channel open
/// to its own merchants, for every trade type and amount, at the standard 0.6%.
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
    /// `wx_partner` (service provider) or `wx_direct`; if given it must match the kit.
    #[serde(default)]
    pub kind: Option<String>,
    /// PEM CA bundle TLS to this channel trusts instead of the system's web roots (a
    /// private CA, a TLS-terminating proxy, a test CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The channel's fee in basis points of the amount (60 = 0.6%): its cost to the router.
    #[serde(default = "default_fee_rate_bp")]
    pub fee_rate_bp: u32,
    /// `JSAPI`, `APP`, `MWEB` (or `H5`), `NATIVE`; empty: all four.
    #[serde(default)]
    pub trade_types: Vec<String>,
    #[serde(default = "default_amount_fen_min")]
    pub amount_fen_min: i64,
    /// Per-order maximum; none: no maximum of the channel's own.
    #[serde(default)]
    pub amount_fen_max: Option<i64>,
    /// Volume handed out per Beijing day before the channel stops taking orders.
    #[serde(default)]
    pub daily_volume_fen_max: Option<i64>,
    /// Beijing-time `"HH:MM-HH:MM"` every day, or `"<RFC 3339>/<RFC 3339>"` once.
    #[serde(default)]
    pub maintenance: Vec<String>,
    /// Share in weighted splits (`[routing] strategy = "weight"`); 0 = standby only.
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Every merchant may use it: a direct channel, or a sandbox provider channel (which
    /// allocates each merchant's sub-merchant number itself). Otherwise only the merchants
    /// whose own channel it is, and those listed in `merchants`.
    #[serde(default)]
    pub all_merchants: bool,
    #[serde(default)]
    pub merchants: Vec<ChannelMerchant>,
}

impl Default for ChannelEntry {
    fn default() -> Self {
        ChannelEntry {
            id: String::new(),
            kit_dir: PathBuf::new(),
            sandbox: false,
            timeout_ms: default_channel_timeout_ms(),
            kind: None,
            ca_file: None,
            fee_rate_bp: default_fee_rate_bp(),
            trade_types: Vec::new(),
            amount_fen_min: default_amount_fen_min(),
            amount_fen_max: None,
            daily_volume_fen_max: None,
            maintenance: Vec::new(),
            weight: default_weight(),
            enabled: true,
            all_merchants: false,
            merchants: Vec::new(),
        }
    }
}

/// A merchant allowed on a channel, with its sub-merchant there (provider channels).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelMerchant {
    pub mchid: String,
    #[serde(default)]
    pub sub_mchid: Option<String>,
    #[serde(default)]
    pub sub_appid: Option<String>,
}

fn default_fee_rate_bp() -> u32 {
    60
}

fn default_amount_fen_min() -> i64 {
    1
}

fn default_weight() -> u32 {
    100
}

fn default_true() -> bool {
    true
}

/// `[routing]`: the router's weights and windows, the circuit breaker, retry and failover
/// bounds, and operator rules.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// `score` (success rate by Thompson sampling, minus cost and latency) or `weight`.
    pub strategy: String,
    /// What a certain success is worth, in score points.
    pub success_points: f64,
    pub cost_points_per_bp: f64,
    pub latency_points_per_ms: f64,
    pub window_bucket_ms: u32,
    pub window_buckets: u32,
    pub window_half_life_ms: u32,
    /// Consecutive failures or timeouts that open a channel's breaker.
    pub breaker_failures_max: u32,
    pub breaker_cool_down_ms: u32,
    pub breaker_probe_interval_ms: u32,
    /// A prepay (every channel it tries, and settling abandoned attempts) ends by then.
    pub prepay_deadline_ms: u64,
    /// Channels one prepay request may try.
    pub channels_per_prepay_max: u32,
    /// Channel calls (query, close) spent settling one abandoned attempt before failing over.
    pub settle_calls_max: u32,
    /// How often a node re-reads every channel's volume of the day from the store (all
    /// nodes' prepays), when some channel has a daily cap; in between it counts its own.
    pub volume_refresh_ms: u64,
    pub rules: Vec<RuleConfig>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        let score = paygate_routing::ScoreConfig::default();
        let window = paygate_routing::WindowConfig::default();
        let breaker = paygate_routing::BreakerConfig::default();
        RoutingConfig {
            strategy: "score".into(),
            success_points: score.success_points,
            cost_points_per_bp: score.cost_points_per_bp,
            latency_points_per_ms: score.latency_points_per_ms,
            window_bucket_ms: window.bucket_ms,
            window_buckets: window.buckets,
            window_half_life_ms: window.half_life_ms,
            breaker_failures_max: breaker.failures_max,
            breaker_cool_down_ms: breaker.cool_down_ms,
            breaker_probe_interval_ms: breaker.probe_interval_ms,
            prepay_deadline_ms: 20_000,
            channels_per_prepay_max: 3,
            settle_calls_max: 6,
            volume_refresh_ms: 30_000,
            rules: Vec::new(),
        }
    }
}

/// An operator rule: the first whose conditions all match a prepay shapes its routing.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    pub name: String,
    pub mchids: Vec<String>,
    pub trade_types: Vec<String>,
    pub amount_fen_min: Option<i64>,
    pub amount_fen_max: Option<i64>,
    /// Beijing-time `"HH:MM-HH:MM"` windows.
    pub hours: Vec<String>,
    /// Only these channels.
    pub only: Vec<String>,
    pub exclude: Vec<String>,
    /// Fixed volume split: channel id → weight.
    pub split: std::collections::BTreeMap<String, u32>,
    /// When the rule leaves no eligible channel, route as if it had not matched.
    #[serde(default = "default_true")]
    pub fallback: bool,
}

fn default_channel_timeout_ms() -> u64 {
    10_000
}

/// The real-time risk engine on the payment path.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskSettings {
    pub enabled: bool,
    /// Keys the payer hash (HMAC of the openid); set one per deployment and keep it.
    pub payer_key_secret: Option<String>,
    /// A directory of rule files replacing the bundled library.
    pub rules_dir: Option<PathBuf>,
    /// Whether the model layer's score alone may refuse a payment. Off by default: a model
    /// trained on a synthetic stream flags (REVIEW); rules, lists and devices refuse.
    pub model_may_deny: bool,
    /// How often a node looks for a new rule set version in the store (1–60 s); a save
    /// through this node's admin API applies at once.
    pub reload_interval_s: u64,
    /// Which refusals stand: `all`, `lists` (only an operator's block-list hit refuses; every
    /// other refusal is kept as a REVIEW) or `never` (decide, keep and count only). Unset:
    /// `lists` while the sandbox is on, like a payment provider's test mode (synthetic payers
    /// and load tests would trip velocity rules), `all` otherwise.
    pub enforce: Option<Enforce>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforce {
    All,
    Lists,
    Never,
}

impl Default for RiskSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            payer_key_secret: None,
            rules_dir: None,
            model_may_deny: false,
            reload_interval_s: 30,
            enforce: None,
        }
    }
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
            routing: RoutingConfig::default(),
            workers: WorkerConfig::default(),
            risk: RiskSettings::default(),
            ledger: Default::default(),
            recon: Default::default(),
            settlement: Default::default(),
            bills: Default::default(),
            security: Default::default(),
            platform_keys: Default::default(),
            shutdown_grace_ms: 25_000,
            shutdown_drain_ms: 0,
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
    /// The risk refusals that stand (see [`RiskSettings::enforce`]).
    pub fn risk_enforcement(&self) -> Enforce {
        self.risk.enforce.unwrap_or(if self.sandbox.enabled {
            Enforce::Lists
        } else {
            Enforce::All
        })
    }

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
            "listen = \"0.0.0.0:9443\"\nshutdown_drain_ms = 5000\n[sandbox]\nenabled = false\n[[channels]]\nid = \"wx1\"\nkit_dir = \"/k\"\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9443);
        assert_eq!((c.shutdown_drain_ms, c.shutdown_grace_ms), (5_000, 25_000));
        assert!(!c.sandbox.enabled);
        assert_eq!(c.channels[0].timeout_ms, 10_000);
        assert_eq!(c.channels[0].fee_rate_bp, 60);
        assert!(c.channels[0].enabled && !c.channels[0].all_merchants);
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }

    #[test]
    fn channel_profiles_and_routing_rules_parse() {
        let c: Config = toml::from_str(
            r#"
[routing]
prepay_deadline_ms = 8000
breaker_failures_max = 3
[[routing.rules]]
name = "big-native"
trade_types = ["NATIVE"]
amount_fen_min = 100000
split = { a = 70, c = 30 }
[[channels]]
id = "a"
kit_dir = "/k/a"
kind = "wx_partner"
fee_rate_bp = 20
trade_types = ["NATIVE", "JSAPI"]
amount_fen_max = 5000000
daily_volume_fen_max = 100000000
maintenance = ["23:30-00:30"]
weight = 70
merchants = [{ mchid = "1900000109", sub_mchid = "1900000110" }]
"#,
        )
        .unwrap();
        let a = &c.channels[0];
        assert_eq!((a.fee_rate_bp, a.weight, a.amount_fen_min), (20, 70, 1));
        assert_eq!(a.merchants[0].sub_mchid.as_deref(), Some("1900000110"));
        assert_eq!(c.routing.prepay_deadline_ms, 8000);
        assert_eq!(c.routing.breaker_failures_max, 3);
        assert_eq!(c.routing.window_buckets, 20);
        let rule = &c.routing.rules[0];
        assert_eq!(rule.split.get("a"), Some(&70));
        assert!(rule.fallback);
        assert!(toml::from_str::<Config>("[routing]\nstrategy_x = 1").is_err());
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
