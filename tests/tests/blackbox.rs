//! Other Kafka clients against Silt: kcat, confluent-kafka and kafka-python,
//! driven by `tests/blackbox/clients.py`.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use silt_tests::SiltOptions;

/// Exit code of clients.py when a client is not installed.
const MISSING_CLIENT: i32 = 3;

#[test]
fn kcat_confluent_kafka_and_kafka_python_work_against_silt() -> Result<()> {
    // A cleaner that looks for dirty logs every 100 ms, for the compacted-topic suite.
    let silt = SiltOptions::new()
        .override_config("log.cleaner.backoff.ms", 100)
        .start()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("blackbox/clients.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg("--bootstrap")
        .arg(silt.bootstrap())
        .stdin(Stdio::null())
        // Test runners point LD_LIBRARY_PATH at build directories holding
        // rdkafka-sys's own librdkafka.so; kcat must use the system one.
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .context("running python3 tests/blackbox/clients.py")?;
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    match output.status.code() {
        Some(0) => Ok(()),
        Some(MISSING_CLIENT) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: a client is missing (scripts/install-test-deps installs them)");
            Ok(())
        }
        _ => bail!("clients.py failed with {}", output.status),
    }
}
