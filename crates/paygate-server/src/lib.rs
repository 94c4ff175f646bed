//! paygate's gateway: the WeChat Pay v3–compatible merchant API, the order flow through a
//! channel, channel callbacks, merchant notifications from a transactional outbox, the
//! admin API, and the workers, over SQLite or PostgreSQL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), paygate_server::StartError> {
//! let gateway = paygate_server::start(paygate_server::config::Config::default()).await?;
//! println!("listening on {}", gateway.base_url);
//! # Ok(()) }
//! ```

pub mod admin;
pub mod audit_trail;
pub mod bills;
pub mod callbacks;
pub mod config;
pub mod fees;
pub mod flow;
pub mod http;
pub mod key_rotation;
pub mod keys;
pub mod ledger_admin;
pub mod merchant_api;
pub mod merchants;
pub mod platform_keys_admin;
pub mod ratelimit;
pub mod recon;
pub mod recon_admin;
// Daily settlement (helper SETTLE).
pub mod metrics;
pub mod recon_balance;
pub mod recon_ledger;
pub mod refunds;
pub mod risk;
pub mod risk_rules;
pub mod routing;
pub mod sandbox;
pub mod settlement;
pub mod sharing;
pub mod sharing_flow;
pub mod shutdown;
pub mod tls;
pub mod views;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use paygate_channel::{ChannelConfig, ChannelKind, WxChannel};
use paygate_store::Store;
use paygate_wxpay::kit::MerchantKit;

use crate::config::Config;
use crate::http::AppState;
use crate::keys::PlatformKeys;
use crate::merchants::{ChannelMapping, NewMerchant, OnboardError, Onboarded};

/// The id of the embedded sandbox channel.
pub const SANDBOX_CHANNEL: &str = "sandbox";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("store: {0}")]
    Store(#[from] paygate_store::StoreError),
    #[error("{0}")]
    Keys(#[from] keys::KeyError),
    #[error("channel {id}: {message}")]
    Channel { id: String, message: String },
    #[error("cannot listen on {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("sandbox simulator: {0}")]
    Sandbox(String),
    #[error("{0}")]
    Risk(#[from] risk::RiskSetupError),
}

pub struct RunningGateway {
    pub addr: SocketAddr,
    pub base_url: String,
    pub state: Arc<AppState>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The outbox worker: it ends once a stop has begun and its deliveries are recorded.
    pub outbox: tokio::task::JoinHandle<()>,
    /// The embedded sandbox simulator, when it runs.
    pub sandbox: Option<paygate_sim::RunningSim>,
}

/// How a merchant maps onto a channel: a provider channel needs a sub-merchant number; on
/// a sandbox provider channel one is allocated (the simulator onboards it on first use).
pub fn channel_mapping(
    channel: &ChannelConfig,
    sub_mchid: Option<String>,
    sub_appid: Option<String>,
) -> Result<ChannelMapping, OnboardError> {
    let sub_mchid = match (&channel.kind, sub_mchid) {
        (ChannelKind::WxDirect, None) => None,
        (ChannelKind::WxDirect, Some(_)) => {
            return Err(OnboardError::Invalid(
                "a direct channel takes no sub_mchid".into(),
            ));
        }
        (ChannelKind::WxPartner, Some(s)) => Some(s),
        (ChannelKind::WxPartner, None) if channel.sandbox => Some(merchants::sandbox_sub_mchid()),
        (ChannelKind::WxPartner, None) => {
            return Err(OnboardError::Invalid(format!(
                "channel {} is a service provider: give the merchant's sub_mchid",
                channel.id
            )));
        }
    };
    Ok(ChannelMapping {
        channel_id: channel.id.clone(),
        sub_mchid,
        sub_appid,
    })
}

/// Channels from the configuration, or the embedded sandbox simulator when none is configured.
async fn channels(
    config: &Config,
    base_url: &str,
) -> Result<
    (
        HashMap<String, Arc<WxChannel>>,
        String,
        Option<paygate_sim::RunningSim>,
    ),
    StartError,
> {
    let channel_err = |id: &str, e: &dyn std::fmt::Display| StartError::Channel {
        id: id.to_string(),
        message: e.to_string(),
    };
    let mut map = HashMap::new();
    let callback = |id: &str| format!("{base_url}callbacks/wxpay/{id}");
    if config.channels.is_empty() {
        let sim = paygate_sim::start(paygate_sim::SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kit_dir: config.data_dir.join("sandbox"),
            time_scale: config.sandbox.time_scale,
            public_base_url: None,
            auto_onboard_sub_merchants: true,
        })
        .await
        .map_err(|e| StartError::Sandbox(e.to_string()))?;
        let mut channel_config = ChannelConfig::from_kit(
            SANDBOX_CHANNEL,
            &sim.partner,
            &callback(SANDBOX_CHANNEL),
            true,
        );
        channel_config.timeout_ms = config.sandbox.channel_timeout_ms;
        let channel =
            WxChannel::new(channel_config).map_err(|e| channel_err(SANDBOX_CHANNEL, &e))?;
        map.insert(SANDBOX_CHANNEL.to_string(), Arc::new(channel));
        return Ok((map, SANDBOX_CHANNEL.to_string(), Some(sim)));
    }
    for entry in &config.channels {
        let kit =
            MerchantKit::read_from_dir(&entry.kit_dir).map_err(|e| channel_err(&entry.id, &e))?;
        let mut channel_config =
            ChannelConfig::from_kit(&entry.id, &kit, &callback(&entry.id), entry.sandbox);
        channel_config.timeout_ms = entry.timeout_ms;
        let ca_pem = match &entry.ca_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                channel_err(&entry.id, &format!("ca_file {}: {e}", path.display()))
            })?),
            None => None,
        };
        let channel = WxChannel::with_ca(channel_config, ca_pem.as_deref())
            .map_err(|e| channel_err(&entry.id, &e))?;
        map.insert(entry.id.clone(), Arc::new(channel));
    }
    let default = config.channels[0].id.clone();
    Ok((map, default, None))
}

/// Starts the gateway: store (migrated), platform keys, channels, workers, HTTP(S).
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| config::ConfigError::Invalid(format!("{}: {e}", config.data_dir.display())))?;
    // Opened with its vault: sensitive fields are sealed at rest (key_rotation.rs).
    let store = key_rotation::open_store(&config).await?;
    let keys = PlatformKeys::load_or_create_with(store.as_ref(), &config.platform_keys).await?;
    let operator_token = config.operator_token()?;
    config.ledger.validate()?;
    let journal = fees::Journal::load_or_create(&config)?;
    // Seeds an empty store's rules, starts the engine on the newest version and its reloader.
    let risk_rules = risk_rules::RiskRules::start(&config.risk, Arc::clone(&store)).await?;
    let std_listener =
        std::net::TcpListener::bind(config.listen).map_err(|e| StartError::Bind {
            addr: config.listen,
            message: e.to_string(),
        })?;
    let addr = std_listener.local_addr().map_err(|e| StartError::Bind {
        addr: config.listen,
        message: e.to_string(),
    })?;
    let base_url = {
        let mut c = config.clone();
        c.listen = addr;
        c.public_base_url()
    };
    let (channels, default_channel, sandbox) = channels(&config, &base_url).await?;
    let routing =
        routing::Routing::build(&config, &channels).map_err(|message| StartError::Channel {
            id: "routing".into(),
            message,
        })?;
    let state = Arc::new(AppState {
        time_scale: config.sandbox.time_scale.max(1),
        metrics: Default::default(),
        risk: risk_rules.engine().cloned(),
        risk_rules: Arc::new(risk_rules),
        store,
        keys,
        merchants: Default::default(),
        channels,
        default_channel,
        routing,
        nonces: Mutex::new(Default::default()),
        rate_limiter: ratelimit::RateLimiter::new(
            config.security.rate_limit_per_s,
            config.security.rate_limit_burst,
        ),
        base_url: base_url.clone(),
        operator_token,
        journal,
        order_locks: AppState::new_order_locks(),
        outbox_wake: tokio::sync::Notify::new(),
        shutdown: Default::default(),
        // As many idle connections per merchant host as deliveries may be in flight: fewer
        // made the outbox close and reconnect (connect() was ~2 % of its CPU under load).
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(config.workers.deliveries_in_flight_max.max(1))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new()),
        config,
    });
    // Daily caps start from what every node handed out today, not from zero.
    state.routing.refresh_volumes(state.store.as_ref()).await?;
    let app = router(Arc::clone(&state));
    let outbox = workers::spawn(Arc::clone(&state));
    fees::spawn_integrator(Arc::clone(&state));
    keys::spawn_reloader(Arc::clone(&state));
    key_rotation::spawn_vault_worker(
        Arc::clone(&state.store),
        state.config.security.vault_interval_ms,
    );
    // Both listeners stop accepting once an orderly stop begins (shutdown.rs).
    let stop = {
        let state = Arc::clone(&state);
        async move { state.shutdown.begun().await }
    };
    let task = match &state.config.tls {
        Some(tls) => {
            let rustls = tls::server_config(tls).map_err(StartError::Tls)?;
            tls::serve(std_listener, rustls, app, stop)
        }
        None => {
            std_listener
                .set_nonblocking(true)
                .map_err(|e| StartError::Bind {
                    addr,
                    message: e.to_string(),
                })?;
            let listener =
                tokio::net::TcpListener::from_std(std_listener).map_err(|e| StartError::Bind {
                    addr,
                    message: e.to_string(),
                })?;
            tokio::spawn(async move {
                axum::serve(listener, app.into_make_service())
                    .with_graceful_shutdown(stop)
                    .await
            })
        }
    };
    Ok(RunningGateway {
        addr,
        base_url,
        state,
        task,
        outbox,
        sandbox,
    })
}

pub fn router(state: Arc<AppState>) -> Router {
    let merchant =
        merchant_api::routes()
            .merge(bills::routes())
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                http::merchant_layer,
            ));
    let mut router = Router::new()
        .merge(merchant)
        .merge(admin::routes(Arc::clone(&state)))
        .route(
            "/callbacks/wxpay/{channel_id}",
            post(callbacks::wxpay_callback),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .route("/readyz", get(readyz));
    if state.config.sandbox.enabled {
        router = router.route("/sandbox/v1/pay", post(sandbox::pay));
        router = router.route(
            "/sandbox/v1/bills/close-day",
            post(bills::sandbox_close_day),
        );
    }
    router
        .fallback(http::not_found)
        .method_not_allowed_fallback(paygate_http::method_not_allowed)
        .with_state(state)
}

async fn metrics_text(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
) -> impl axum::response::IntoResponse {
    let mut extra = app.routing.metrics_text();
    extra.push_str(&metrics::pool_text(
        app.store.backend(),
        &app.store.pool_stats(),
    ));
    extra.push_str(&metrics::crypto_text(
        &paygate_wxpay::crypto::cost::snapshot(),
    ));
    let body = app.metrics.render(&extra);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}

/// Ready when the store answers and no stop has begun (a load balancer stops sending while
/// the gateway drains, see shutdown.rs).
async fn readyz(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
) -> (axum::http::StatusCode, &'static str) {
    if app.shutdown.is_draining() {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "stopping");
    }
    match app.store.platform_keys().await {
        Ok(_) => (axum::http::StatusCode::OK, "ready"),
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable",
        ),
    }
}

/// `paygate merchant create`: onboards a merchant directly in the store, with or without a
/// running server. The channel mapping is derived from the configuration without starting
/// any channel.
pub async fn create_merchant_offline(
    config: &Config,
    name: &str,
    sub_mchid: Option<String>,
) -> Result<Onboarded, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| config::ConfigError::Invalid(format!("{}: {e}", config.data_dir.display())))?;
    let store: Arc<dyn Store> = key_rotation::open_store(config).await?;
    let keys = PlatformKeys::load_or_create(store.as_ref()).await?;
    let channel_config = match config.channels.first() {
        Some(entry) => {
            let kit =
                MerchantKit::read_from_dir(&entry.kit_dir).map_err(|e| StartError::Channel {
                    id: entry.id.clone(),
                    message: e.to_string(),
                })?;
            ChannelConfig::from_kit(&entry.id, &kit, "", entry.sandbox)
        }
        None => sandbox_channel_shape(),
    };
    let mapping =
        channel_mapping(&channel_config, sub_mchid, None).map_err(|e| StartError::Channel {
            id: channel_config.id.clone(),
            message: e.to_string(),
        })?;
    merchants::onboard(
        store.as_ref(),
        &keys,
        &config.public_base_url(),
        NewMerchant {
            name: name.to_string(),
            cert_pem: None,
            mapping,
        },
    )
    .await
    .map_err(|e| StartError::Channel {
        id: channel_config.id.clone(),
        message: e.to_string(),
    })
}

/// What the embedded sandbox channel is, for decisions that need no running simulator.
fn sandbox_channel_shape() -> ChannelConfig {
    ChannelConfig {
        id: SANDBOX_CHANNEL.to_string(),
        kind: ChannelKind::WxPartner,
        base_url: String::new(),
        mchid: String::new(),
        appid: String::new(),
        serial_no: String::new(),
        private_key_pem: String::new(),
        apiv3_key: String::new(),
        platform_public_key_id: String::new(),
        platform_public_key_pem: String::new(),
        platform_cert_pem: None,
        timeout_ms: 10_000,
        notify_url: String::new(),
        sandbox: true,
    }
}
