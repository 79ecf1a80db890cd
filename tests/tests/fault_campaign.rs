//! The randomized fault campaign (`silt_tests::campaign`): 20 faults by default
//! (`SILT_CAMPAIGN_FAULTS`, `SILT_CAMPAIGN_SEED` to replay one) on a 3-node cluster
//! under load. Nothing acknowledged may be lost, moved or duplicated, no committed group
//! offset may go back, every node must start again every time, and the cluster must heal
//! after every fault.

use anyhow::{Result, ensure};
use silt_tests::campaign::{self, CampaignOptions};

#[test]
fn randomized_faults_lose_nothing_and_every_node_starts() -> Result<()> {
    let options = CampaignOptions::from_env(20)?;
    let report = campaign::run(&options)?;
    ensure!(
        report.faults.len() == options.faults,
        "{} of {} faults ran",
        report.faults.len(),
        options.faults
    );
    ensure!(
        report.failed_starts() == 0,
        "nodes failed to start (seed {}):\n{}",
        report.seed,
        report.summary()
    );
    ensure!(
        report.unrecovered.is_empty(),
        "the cluster did not heal after faults {:?} (seed {})",
        report.unrecovered,
        report.seed
    );
    ensure!(
        report.anomalies() == 0,
        "anomalies (seed {}):\n{}",
        report.seed,
        report.summary()
    );
    ensure!(
        report.acknowledged() >= 1000,
        "too few acknowledged records to mean anything:\n{}",
        report.summary()
    );
    Ok(())
}
