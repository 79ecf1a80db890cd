//! Runs the randomized fault campaign of `silt_tests::campaign` on its own, for long runs.
//!
//! Usage: `fault_campaign [--faults N] [--seed SEED]` (defaults: 100 faults, a random
//! seed, printed). Needs root (network namespaces, tmpfs) and, for S3 outages, the
//! `SILT_TEST_S3_*` variables of `eval "$(minio-dev/start)"`. Exits 1 when the campaign
//! found an anomaly, a node that failed to start or a fault the cluster did not heal.

use anyhow::{Context, Result, bail};
use silt_tests::campaign::{self, CampaignOptions};

fn main() -> Result<()> {
    let mut options = CampaignOptions::from_env(100)?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--faults" => options.faults = value()?.parse().context("--faults")?,
            "--seed" => options.seed = value()?.parse().context("--seed")?,
            other => {
                bail!("unknown argument {other}; usage: fault_campaign [--faults N] [--seed SEED]")
            }
        }
    }
    let report = campaign::run(&options)?;
    if report.anomalies() > 0 || report.failed_starts() > 0 || !report.unrecovered.is_empty() {
        bail!("the campaign failed (seed {})", report.seed);
    }
    Ok(())
}
