//! `paygate`: the command line. `paygate sim` runs the WeChat Pay v3 simulator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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

#[derive(Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
        Command::Sim {
            listen,
            kit_dir,
            time_scale,
            public_base_url,
        } => {
            let sim = paygate_sim::start(paygate_sim::SimConfig {
                listen,
                kit_dir: kit_dir.clone(),
                time_scale,
                public_base_url,
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
            tokio::select! {
                served = sim.task => match served {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("simulator stopped: {e}")),
                    Err(e) => Err(format!("simulator task failed: {e}")),
                },
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
    }
}
