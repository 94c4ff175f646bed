//! `paygate`: the command line.
//!
//! - `paygate demo`: a Native payment end to end on the embedded sandbox, explained step by step.
//! - `paygate serve`: the gateway (SQLite under `./paygate-data/` by default, sandbox channel).
//! - `paygate merchant create`: onboard a merchant and write its credential kit.
//! - `paygate sim`: the WeChat Pay v3 simulator on its own.
//! - `paygate bench`: load against a running V3 server; the cost of its cryptography.

// Per-request allocations (hyper buffers, JSON, SQLite pages) cost ~5 % of the gateway's CPU
// under glibc malloc; mimalloc's thread-local free lists make them cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod audit;
mod audit_trail;
mod bench;
mod demo;
mod keys_cmd;
mod recon;
mod settle;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use paygate_server::config::{ChannelEntry, Config, TlsConfig};

#[derive(Parser)]
#[command(
    name = "paygate",
    version,
    about = "paygate: an open payment platform speaking WeChat Pay API v3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the gateway keeps its data; shared by `serve` and `merchant create`.
#[derive(Args, Clone)]
struct StoreArgs {
    /// A paygate.toml; flags and PAYGATE_* variables override it.
    #[arg(long, env = "PAYGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (SQLite file, sandbox identities, operator token). Default ./paygate-data
    #[arg(long, env = "PAYGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://… (the scale-out store).
    #[arg(long, env = "PAYGATE_DATABASE_URL")]
    database_url: Option<String>,
    /// The URL merchants reach the gateway at (written into kits). Default http://<listen>/
    #[arg(long, env = "PAYGATE_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,
    /// Use the partner kit of an external simulator or channel in this directory instead of
    /// the embedded sandbox (e.g. ./sim-kits/partner from `paygate sim --auto-onboard`).
    #[arg(long, env = "PAYGATE_CHANNEL_KIT_DIR")]
    channel_kit_dir: Option<PathBuf>,
    /// Divide notification retry intervals (and the embedded simulator's delays) by N.
    #[arg(long, env = "PAYGATE_SANDBOX_TIME_SCALE")]
    sandbox_time_scale: Option<u32>,
    /// The admin API's bearer token (default: generated once into <data dir>/operator_token).
    #[arg(long, env = "PAYGATE_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
    /// Where the master key is: file:PATH, env:VAR or PATH (default <data dir>/master.key).
    #[arg(long, env = "PAYGATE_MASTER_KEY_SOURCE")]
    master_key: Option<String>,
}

impl StoreArgs {
    fn config(&self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(u) = &self.database_url {
            config.database_url = Some(u.clone());
        }
        if let Some(u) = &self.public_base_url {
            config.public_base_url = Some(u.clone());
        }
        if let Some(dir) = &self.channel_kit_dir {
            config.channels = vec![ChannelEntry {
                id: "wx".into(),
                kit_dir: dir.clone(),
                sandbox: true,
                timeout_ms: 10_000,
                ..ChannelEntry::default()
            }];
        }
        if let Some(n) = self.sandbox_time_scale {
            config.sandbox.time_scale = n.max(1);
        }
        if let Some(t) = &self.operator_token {
            config.operator_token = Some(t.clone());
        }
        if let Some(m) = &self.master_key {
            config.security.master_key = Some(m.clone());
        }
        Ok(config)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a Native payment end to end on the embedded sandbox and explain each step.
    Demo {
        /// Where the demo keeps its gateway data and the demo merchant's kit.
        #[arg(long, default_value = "./paygate-demo")]
        dir: PathBuf,
    },
    /// Run the gateway.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, env = "PAYGATE_LISTEN")]
        listen: Option<SocketAddr>,
        /// Serve HTTPS with this certificate chain (PEM) …
        #[arg(long, env = "PAYGATE_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// … and this private key (PEM).
        #[arg(long, env = "PAYGATE_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require client certificates signed by this CA (mutual TLS).
        #[arg(long, env = "PAYGATE_TLS_CLIENT_CA", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
    },
    /// Audits of the store: `verify` recomputes the ledger journal and balances.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Benchmarks: load a running V3 server, or measure the cryptography.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Data keys sealing sensitive fields at rest: rotate, status, reseal, retire.
    Keys {
        #[command(subcommand)]
        command: keys_cmd::KeysCommand,
    },
    /// End-of-day reconciliation against the channels' bills (on a running gateway).
    Recon {
        #[command(subcommand)]
        command: recon::ReconCommand,
    },
    /// Daily settlement of merchants' pending balances (on the store directly).
    Settle {
        #[command(subcommand)]
        command: settle::SettleCommand,
    },
    /// Merchants of the gateway.
    Merchant {
        #[command(subcommand)]
        command: MerchantCommand,
    },
    /// Run the WeChat Pay v3 simulator (a sandbox WeChat Pay for tests, demos and benchmarks).
    Sim {
        #[arg(long, default_value = "127.0.0.1:9090", env = "PAYGATE_SIM_LISTEN")]
        listen: SocketAddr,
        /// Where the ready-to-use credential kits `direct/` and `partner/` are written.
        #[arg(long, default_value = "./sim-kits", env = "PAYGATE_SIM_KIT_DIR")]
        kit_dir: PathBuf,
        /// Divide notification retry intervals and processing delays by N.
        #[arg(long, default_value_t = 1, env = "PAYGATE_SIM_TIME_SCALE")]
        time_scale: u32,
        /// The base URL clients use, when not http://<listen>/ (behind a proxy, say).
        #[arg(long, env = "PAYGATE_SIM_PUBLIC_BASE_URL")]
        public_base_url: Option<String>,
        /// Onboard a service provider's unknown sub_mchid on first use (for a gateway that
        /// allocates its merchants' sub-merchant numbers itself).
        #[arg(long, env = "PAYGATE_SIM_AUTO_ONBOARD")]
        auto_onboard: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the journal (leaf hashes, root, checkpoint signature) and replay the ledger
    /// (balances, invariants); exit non-zero naming the first bad entry.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Load a running V3 server (the gateway, or the simulator) as a merchant.
    Load {
        /// The merchant kit to sign with (its base_url is the server).
        #[arg(long)]
        kit: PathBuf,
        #[arg(long, value_enum, default_value = "native")]
        scenario: bench::load::Scenario,
        /// Callers in flight (closed loop), or the in-flight bound ×16 (open loop).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Calls per second: an open loop at this rate instead of a closed loop.
        #[arg(long)]
        rate: Option<u64>,
        #[arg(long, default_value_t = 20)]
        duration_s: u64,
        #[arg(long, default_value_t = 2)]
        warmup_s: u64,
        /// The server's pid for CPU accounting (default: whoever listens on base_url's port).
        #[arg(long)]
        pid: Option<u32>,
        /// Trust the platform certificate instead of the public key.
        #[arg(long)]
        certificate_mode: bool,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// The gateway's operator token, for the `notify` scenario (admin re-sends).
        #[arg(long, env = "PAYGATE_OPERATOR_TOKEN")]
        operator_token: Option<String>,
    },
    /// What the unavoidable cryptography costs on this machine (one core).
    Crypto {
        /// Seconds per operation measured.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum MerchantCommand {
    /// Create a merchant and write its credential kit (works with or without a running server).
    Create {
        #[arg(long)]
        name: String,
        /// Directory to write the kit into (merchant.json and the PEM files).
        #[arg(long)]
        out: PathBuf,
        /// The merchant's sub-merchant number at a service-provider channel.
        #[arg(long)]
        sub_mchid: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // PAYGATE_LOG_FORMAT=json: one JSON object per line, with the request span's request_id.
    if std::env::var("PAYGATE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("paygate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("paygate: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Demo { dir } => demo::run(&dir).await,
        Command::Bench { command } => run_bench(command).await,
        Command::Audit {
            command: AuditCommand::Verify { store },
        } => audit::run(store.config()?).await,
        Command::Keys { command } => keys_cmd::run(command).await,
        Command::Recon { command } => recon::run(command).await,
        Command::Settle { command } => settle::run(command).await,
        Command::Serve {
            store,
            listen,
            tls_cert,
            tls_key,
            tls_client_ca,
        } => {
            let mut config = store.config()?;
            if let Some(l) = listen {
                config.listen = l;
            }
            if let (Some(cert_pem), Some(key_pem)) = (tls_cert, tls_key) {
                config.tls = Some(TlsConfig {
                    cert_pem,
                    key_pem,
                    client_ca_pem: tls_client_ca,
                });
            }
            serve(config).await
        }
        Command::Merchant {
            command:
                MerchantCommand::Create {
                    name,
                    out,
                    sub_mchid,
                    store,
                },
        } => {
            let config = store.config()?;
            let onboarded = paygate_server::create_merchant_offline(&config, &name, sub_mchid)
                .await
                .map_err(|e| e.to_string())?;
            onboarded
                .kit
                .write_to_dir(&out)
                .map_err(|e| e.to_string())?;
            println!("merchant {} ({name}) created", onboarded.merchant.mchid);
            println!("  kit written to {}", out.display());
            println!("  base_url {}", onboarded.kit.merchant.base_url);
            Ok(())
        }
        Command::Sim {
            listen,
            kit_dir,
            time_scale,
            public_base_url,
            auto_onboard,
        } => {
            let sim = paygate_sim::start(paygate_sim::SimConfig {
                listen,
                kit_dir: kit_dir.clone(),
                time_scale,
                public_base_url,
                auto_onboard_sub_merchants: auto_onboard,
            })
            .await
            .map_err(|e| e.to_string())?;
            println!("WeChat Pay v3 simulator");
            println!(
                "  direct merchant  {}  kit {}",
                sim.direct.merchant.mchid,
                kit_dir.join("direct").display()
            );
            println!(
                "  service provider {} (sub-merchant {})  kit {}",
                sim.partner.merchant.mchid,
                sim.partner.merchant.sub_mchid.as_deref().unwrap_or("-"),
                kit_dir.join("partner").display()
            );
            println!("  sandbox control  {}sandbox/v1/", sim.base_url);
            println!("listening on {}", sim.base_url.trim_end_matches('/'));
            wait(sim.task).await
        }
    }
}

async fn run_bench(command: BenchCommand) -> Result<(), String> {
    let write_json = |path: &Option<PathBuf>, value: serde_json::Value| -> Result<(), String> {
        if let Some(p) = path {
            std::fs::write(
                p,
                serde_json::to_vec_pretty(&value).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    match command {
        BenchCommand::Load {
            kit,
            scenario,
            concurrency,
            rate,
            duration_s,
            warmup_s,
            pid,
            certificate_mode,
            json,
            operator_token,
        } => {
            let args = bench::load::LoadArgs {
                scenario,
                concurrency,
                rate,
                duration: std::time::Duration::from_secs(duration_s),
                warmup: std::time::Duration::from_secs(warmup_s),
                pid,
                key_mode: if certificate_mode {
                    paygate_wxpay::client::KeyMode::Certificate
                } else {
                    paygate_wxpay::client::KeyMode::PublicKey
                },
                operator_token,
            };
            let report = bench::load::run(&kit, args).await?;
            bench::load::print(&report);
            write_json(
                &json,
                serde_json::to_value(&report).map_err(|e| e.to_string())?,
            )
        }
        BenchCommand::Crypto { seconds, json } => {
            let budget = std::time::Duration::from_secs_f64(seconds.clamp(0.05, 60.0));
            let report = tokio::task::spawn_blocking(move || bench::crypto::run(budget))
                .await
                .map_err(|e| e.to_string())??;
            bench::crypto::print(&report);
            write_json(
                &json,
                serde_json::to_value(&report).map_err(|e| e.to_string())?,
            )
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let stop = stop_signal();
    let data_dir = config.data_dir.clone();
    let mut gateway = paygate_server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    println!("paygate gateway");
    println!("  store           {}", gateway.state.store.backend());
    println!("  data dir        {}", data_dir.display());
    println!("  channel         {}", gateway.state.default_channel);
    println!(
        "  admin API       {}admin/v1/ (Authorization: Bearer <operator token>)",
        gateway.base_url
    );
    if gateway.state.config.operator_token.is_none() {
        println!(
            "  operator token  {}",
            data_dir.join("operator_token").display()
        );
    }
    println!("listening on {}", gateway.base_url.trim_end_matches('/'));
    let grace = std::time::Duration::from_millis(gateway.state.config.shutdown_grace_ms);
    tokio::select! {
        served = &mut gateway.task => return served_result(served),
        () = stop => {}
    }
    println!("stopping: requests in flight and notification deliveries finish (≤ {grace:?})");
    let stopped = gateway.shutdown(grace).await;
    if stopped == paygate_server::shutdown::Stopped::default() {
        println!("stopped");
    } else {
        println!("stopped with work cut off: {stopped:?}");
    }
    Ok(())
}

async fn wait(mut task: tokio::task::JoinHandle<std::io::Result<()>>) -> Result<(), String> {
    tokio::select! {
        served = &mut task => served_result(served),
        () = stop_signal() => Ok(()),
    }
}

fn served_result(
    served: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<(), String> {
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("server stopped: {e}")),
        Err(e) => Err(format!("server task failed: {e}")),
    }
}

/// Ctrl-C, or SIGTERM (what a service manager or an orchestrator sends to stop a process).
/// The handlers are installed when this is called, not when it is first awaited, so a signal
/// that arrives while the gateway starts is not lost to the default action.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt()).ok();
    let terminate = signal(SignalKind::terminate()).ok();
    async move {
        let received = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = received(interrupt) => {}
            () = received(terminate) => {}
        }
    }
}
