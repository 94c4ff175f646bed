//! A WeChat Pay API v3 server that an official SDK cannot tell from the real one, for
//! tests, demos and benchmarks: direct and partner (service-provider) prepay, query and
//! close; refunds; profit sharing; bills; platform certificates and public-key mode;
//! signed, encrypted notifications with WeChat's retry schedule; and a sandbox control API
//! that plays the payer, moves time and injects faults.
//!
//! ```no_run
//! # async fn demo() -> Result<(), paygate_sim::SimError> {
//! let sim = paygate_sim::start(paygate_sim::SimConfig {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     kit_dir: "./sim-kits".into(),
//!     time_scale: 1000,
//!     public_base_url: None,
//!     auto_onboard_sub_merchants: false,
//! })
//! .await?;
//! println!("direct merchant {} at {}", sim.direct.merchant.mchid, sim.base_url);
//! # Ok(()) }
//! ```

pub mod accounts;
pub mod api;
mod api_profitsharing;
pub mod bills;
pub mod clock;
pub mod faults;
pub use paygate_core::ids;
pub mod notify;
pub mod sandbox;
pub mod server;
pub mod state;
mod views;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use paygate_wxpay::kit::MerchantKit;

use crate::accounts::{AccountKind, AccountScheme, Directory};
use crate::server::AppState;

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub listen: SocketAddr,
    /// Where the `direct/` and `partner/` kits (and the simulator's own identity) live.
    pub kit_dir: PathBuf,
    /// Divides notification retry intervals and processing delays.
    pub time_scale: u32,
    /// The base URL clients reach the simulator at, if not `http://<listen>/`.
    pub public_base_url: Option<String>,
    /// Sandbox deviation: a service provider's unknown sub_mchid is onboarded on first use
    /// (real sub-merchants go through 进件 first). Lets a gateway allocate its merchants'
    /// sub-merchant numbers itself.
    pub auto_onboard_sub_merchants: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Identity(#[from] accounts::IdentityError),
    #[error("{0}")]
    Kit(#[from] paygate_wxpay::kit::KitError),
}

/// A running simulator.
pub struct RunningSim {
    pub addr: SocketAddr,
    pub base_url: String,
    pub direct: MerchantKit,
    pub partner: MerchantKit,
    pub state: Arc<AppState>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub(crate) const IDENTITY_DIR: &str = ".sim";

/// Binds, loads or creates the sandbox accounts, writes the kits and starts serving.
pub async fn start(config: SimConfig) -> Result<RunningSim, SimError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: config.listen,
        source,
    })?;
    let mut base_url = config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}/"));
    if !base_url.ends_with('/') {
        base_url.push('/');
    }
    let clock = Arc::new(clock::SimClock::new(config.time_scale));
    let now = clock.now();
    let mut directory = Directory::load_or_new(&config.kit_dir.join(IDENTITY_DIR), now)?;
    let direct = ensure_kit(
        &mut directory,
        &config.kit_dir.join("direct"),
        AccountKind::Direct,
        &base_url,
        now,
    )?;
    let partner = ensure_kit(
        &mut directory,
        &config.kit_dir.join("partner"),
        AccountKind::ServiceProvider,
        &base_url,
        now,
    )?;
    directory.save(&config.kit_dir.join(IDENTITY_DIR))?;
    let state = Arc::new(AppState {
        directory: RwLock::new(directory),
        store: Mutex::new(state::Store::default()),
        notifier: Arc::new(notify::Notifier::new(Arc::clone(&clock))),
        clock,
        faults: RwLock::new(Default::default()),
        bills: Mutex::new(bills::BillCache::default()),
        nonces: Mutex::new(Default::default()),
        base_url: base_url.clone(),
        kit_dir: config.kit_dir.clone(),
        delays: state::Delays::default(),
        auto_onboard_sub_merchants: config.auto_onboard_sub_merchants,
        notify_serials: RwLock::new(Default::default()),
    });
    let task = tokio::spawn(server::serve(Arc::clone(&state), listener));
    Ok(RunningSim {
        addr,
        base_url,
        direct,
        partner,
        state,
        task,
    })
}

/// Reuses the kit in `dir` when the simulator still knows its account (base URL refreshed),
/// otherwise creates a new account there.
fn ensure_kit(
    directory: &mut Directory,
    dir: &Path,
    kind: AccountKind,
    base_url: &str,
    now: time::OffsetDateTime,
) -> Result<MerchantKit, SimError> {
    if let Ok(mut kit) = MerchantKit::read_from_dir(dir) {
        let known = directory
            .account(&kit.merchant.mchid)
            .is_some_and(|a| a.kind == kind && a.api_certs.contains_key(&kit.merchant.serial_no));
        if known {
            kit.merchant.base_url = base_url.to_string();
            kit.write_to_dir(dir)?;
            return Ok(kit);
        }
    }
    let subs = if kind == AccountKind::ServiceProvider {
        1
    } else {
        0
    };
    let created = directory.create_account(kind, AccountScheme::Rsa, subs, base_url, now)?;
    created.kit.write_to_dir(dir)?;
    Ok(created.kit)
}

/// Adds an account at run time (sandbox API) and writes its kit under `<kit-dir>/<mchid>/`.
pub fn create_account(
    app: &AppState,
    kind: AccountKind,
    scheme: AccountScheme,
    subs: usize,
) -> Result<MerchantKit, String> {
    let mut directory = app.directory.write().unwrap_or_else(|p| p.into_inner());
    let created = directory
        .create_account(kind, scheme, subs, &app.base_url, app.clock.now())
        .map_err(|e| e.to_string())?;
    created
        .kit
        .write_to_dir(&app.kit_dir.join(&created.account.mchid))
        .map_err(|e| e.to_string())?;
    directory
        .save(&app.kit_dir.join(IDENTITY_DIR))
        .map_err(|e| e.to_string())?;
    Ok(created.kit)
}
