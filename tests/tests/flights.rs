//! The flights example (`silt flights`) as a test: 336,776 records through an
//! idempotent producer and a three-member consumer group, with its own
//! exactly-once, ordering and committed-offset checks.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use silt_tests::{SiltProcess, flights_dataset, silt_bin};

#[test]
fn flights_example_delivers_every_flight_once_in_order() -> Result<()> {
    let Some(csv) = flights_dataset()? else {
        return Ok(());
    };
    let silt = SiltProcess::start()?;
    let output = Command::new(silt_bin()?)
        .arg("flights")
        .arg("--bootstrap")
        .arg(silt.bootstrap())
        .arg("--csv")
        .arg(&csv)
        .args(["--timeout-secs", "600"])
        .stdin(Stdio::null())
        .output()
        .context("running silt flights")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    ensure!(
        output.status.success(),
        "silt flights failed with {}",
        output.status
    );
    ensure!(
        stdout.contains("produced 336776 records"),
        "not every flight was produced"
    );
    ensure!(
        stdout.contains("consumed 336776 records"),
        "not every flight was consumed"
    );
    ensure!(
        stdout.contains("all checks passed"),
        "the flights checks did not pass"
    );
    Ok(())
}
