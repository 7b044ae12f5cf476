//! `sluice`: one binary for the all-in-one server, the production server, the Kubernetes
//! operator and the analyst's client. This file only parses the command line and hands
//! typed values to the crates that do the work.

mod config;
mod demo;
mod kube_cluster;
mod server;

use clap::{Parser, Subcommand};
use config::{ServerArgs, ServerConfig};
use tracing_subscriber::{EnvFilter, fmt};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Publish Python functions as live, governed data feeds for BI tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on this machine: API, feeds, workers, embedded SQLite, sample data.
    #[command(after_help = "Example:\n  sluice up --data-dir ./.sluice --listen 127.0.0.1:8080")]
    Up(ServerArgs),
    /// Run the production server (PostgreSQL metadata with --database-url or a config file).
    #[command(after_help = "Example:\n  sluice server --config /etc/sluice/sluice.toml")]
    Server(ServerArgs),
    /// Run the Kubernetes operator: Workspace, Feed and DataSource controllers.
    #[command(
        after_help = "Example:\n  sluice operator --registry registry.example.com/sluice --public-url https://sluice.example.com"
    )]
    Operator(Box<sluice_kube::operator::OperatorArgs>),
    /// Build a feed's OCI image and push it, without a Docker daemon.
    #[command(
        after_help = "Example:\n  sluice build --source feed.py --lock requirements.lock --base ghcr.io/sluice-dev/sluice:0.1.0 --image registry.example.com/sluice/team/sales:7 --feed sales"
    )]
    Build(Box<sluice_build::cli::BuildArgs>),
    /// Build Sluice's own image (server, operator, builder, feed runtime) from a Python base
    /// and push it, without a Docker daemon.
    #[command(
        after_help = "Example:\n  sluice image --from docker.io/library/python:3.12-slim --image registry.example.com/sluice/sluice:0.1.0"
    )]
    Image(Box<sluice_build::cli::ImageArgs>),
    /// Serve one feed revision in a Kubernetes pod (run by the operator's Deployments).
    Agent(Box<sluice_agent::AgentArgs>),
    /// Print the Kubernetes CRDs, or write them into the repository with --write.
    Crds(sluice_kube::operator::CrdsArgs),
    #[command(flatten)]
    Client(Box<sluice_cli::ClientCommand>),
}

fn init_logs(json: bool) {
    let filter = EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    if json {
        fmt()
            .with_env_filter(filter)
            .json()
            .with_writer(std::io::stderr)
            .init();
    } else {
        fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A server's configuration is read before the async runtime starts, because the CPU
    // scheduling policy it names must be set first: the runtime's threads, and the worker
    // processes they start, inherit it.
    let config = match &cli.command {
        Command::Up(args) | Command::Server(args) => match ServerConfig::load(args) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let scheduling = match (&cli.command, &config) {
        (_, Some(cfg)) => Some(cfg.cpu_scheduling),
        (Command::Agent(args), _) => Some(args.cpu_scheduling),
        _ => None,
    };
    let scheduled = &scheduling.map(|s| (s, s.apply()));
    // A server serves HTTP on a small runtime of its own and runs heavy work (streamed
    // results, OData, PostgreSQL sessions) on a compute runtime (see `GatewayConfig::compute`).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(cfg) = &config {
        builder
            .worker_threads(cfg.io_threads)
            .thread_name("sluice-io");
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let server = |mode: server::Mode| -> std::process::ExitCode {
        let Some(mut cfg) = config else {
            unreachable!("server commands load their configuration above")
        };
        let compute = match tokio::runtime::Builder::new_multi_thread()
            .thread_name("sluice-compute")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the compute runtime: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        cfg.gateway.compute = Some(compute.handle().clone());
        let result = rt.block_on(async move {
            init_logs(cfg.log_json);
            log_scheduling(scheduled);
            server::run(cfg, mode).await
        });
        // Streams still running there were cut when the server stopped; do not wait long.
        compute.shutdown_timeout(std::time::Duration::from_secs(5));
        match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        }
    };
    match cli.command {
        Command::Up(_) => server(server::Mode::AllInOne),
        Command::Server(_) => server(server::Mode::Production),
        Command::Operator(args) => {
            init_logs(false);
            exit(rt.block_on(sluice_kube::operator::run(*args)))
        }
        Command::Build(args) => {
            init_logs(false);
            exit(rt.block_on(sluice_build::cli::run(*args)).map(|_| ()))
        }
        Command::Image(args) => {
            init_logs(false);
            exit(rt.block_on(sluice_build::cli::run_image(*args)).map(|_| ()))
        }
        Command::Agent(args) => {
            init_logs(true);
            log_scheduling(scheduled);
            exit(rt.block_on(sluice_agent::run(*args)))
        }
        Command::Crds(args) => exit(sluice_kube::operator::crds(&args)),
        Command::Client(cmd) => match rt.block_on(sluice_cli::run(*cmd)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => sluice_cli::report_error(&e),
        },
    }
}

/// Say which CPU scheduling policy the process runs under; failing to set it is worth a
/// warning (e.g. a seccomp profile that forbids the call), not a refusal to serve.
fn log_scheduling(
    scheduled: &Option<(
        sluice_runtime::sched::CpuScheduling,
        std::io::Result<sluice_runtime::sched::Applied>,
    )>,
) {
    match scheduled {
        Some((asked, Ok(applied))) => {
            tracing::debug!(%asked, ?applied, "CPU scheduling policy")
        }
        Some((asked, Err(e))) => tracing::warn!(
            %asked,
            error = %e,
            "could not set the CPU scheduling policy; serving with the default (set cpu_scheduling = \"normal\" to skip this)"
        ),
        None => {}
    }
}

fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
