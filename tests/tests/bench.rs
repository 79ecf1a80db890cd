//! `silt bench` against a real broker: every mode runs, counts what it measured and
//! prints figures that add up (warm-up records are produced but never counted).

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use silt_tests::SiltProcess;

fn bench_json(silt: &SiltProcess, args: &[&str]) -> Result<Value> {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let stdout = silt.cli_ok(&all)?;
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .with_context(|| format!("no JSON line in {stdout:?}"))?;
    serde_json::from_str(line).with_context(|| format!("bench output {line:?}"))
}

fn number(report: &Value, key: &str) -> Result<f64> {
    report
        .get(key)
        .and_then(Value::as_f64)
        .with_context(|| format!("{key} missing in {report}"))
}

/// Whether this machine's `/proc/stat` counts steal (the 8th field of its `cpu`
/// line), so that bench reports carry it.
fn counts_steal() -> bool {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .next()
        .is_some_and(|cpu| cpu.split_whitespace().count() > 8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_and_e2e_report_what_they_measured() -> Result<()> {
    let silt = SiltProcess::start()?;

    let produce = bench_json(
        &silt,
        &[
            "produce",
            "--topic",
            "bench-smoke",
            "--partitions",
            "3",
            "--count",
            "3000",
            "--record-size",
            "200",
            "--warmup-records",
            "500",
        ],
    )?;
    ensure!(
        number(&produce, "records")? == 3000.0,
        "produce counted {produce}"
    );
    ensure!(
        number(&produce, "failed")? == 0.0,
        "failed deliveries: {produce}"
    );
    ensure!(
        number(&produce, "records_per_sec")? > 0.0,
        "no throughput: {produce}"
    );
    let latency = produce
        .get("produce_latency_ms")
        .context("latency missing")?;
    ensure!(
        number(latency, "p50")? > 0.0 && number(latency, "p50")? <= number(latency, "max")?,
        "percentiles out of order: {latency}"
    );
    let windows = produce
        .get("worst_windows")
        .and_then(Value::as_array)
        .context("worst_windows missing")?;
    ensure!(!windows.is_empty(), "no stall windows reported: {produce}");

    // Warm-up and measured records are all in the topic.
    let consume = bench_json(&silt, &["consume", "--topic", "bench-smoke"])?;
    ensure!(
        number(&consume, "records")? == 3500.0,
        "consume read {consume}"
    );
    ensure!(
        number(&consume, "bytes")? == 3500.0 * 200.0,
        "consume bytes {consume}"
    );

    // e2e skips the warm-up records it consumes and times only stamped ones.
    let e2e = bench_json(
        &silt,
        &[
            "e2e",
            "--topic",
            "bench-e2e",
            "--count",
            "2000",
            "--rate",
            "4000",
            "--warmup-records",
            "300",
        ],
    )?;
    ensure!(number(&e2e, "records")? == 2000.0, "e2e counted {e2e}");
    let end_to_end = e2e.get("e2e_latency_ms").context("e2e latency missing")?;
    ensure!(number(end_to_end, "p50")? > 0.0, "e2e latency {end_to_end}");
    Ok(())
}

#[test]
fn disk_reports_a_bandwidth() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let output = std::process::Command::new(silt_tests::silt_bin()?)
        .args(["bench", "disk", "--size-mb", "8", "--json", "--dir"])
        .arg(dir.path())
        .output()?;
    ensure!(
        output.status.success(),
        "bench disk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout)?;
    ensure!(
        number(&report, "bytes")? == 8.0 * 1024.0 * 1024.0,
        "{report}"
    );
    ensure!(number(&report, "mib_per_sec")? > 0.0, "{report}");
    ensure!(
        std::fs::read_dir(dir.path())?.next().is_none(),
        "scratch file left behind"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_paces_at_half_the_measured_maximum_and_deletes_its_full_speed_topic() -> Result<()>
{
    let silt = SiltProcess::start()?;
    let report = bench_json(
        &silt,
        &[
            "latency",
            "--topic",
            "lat-smoke",
            "--partitions",
            "2",
            "--count",
            "2000",
            "--max-count",
            "3000",
            "--max-runs",
            "2",
            "--runs",
            "2",
            "--record-size",
            "100",
            "--warmup-records",
            "100",
            "--settle-secs",
            "0",
            "--linger-ms",
            "1",
        ],
    )?;
    let max_rates: Vec<f64> = report
        .get("max_rates")
        .and_then(Value::as_array)
        .context("max_rates missing")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    ensure!(
        max_rates.len() == 2 && max_rates.iter().all(|rate| *rate > 0.0),
        "full-speed runs {report}"
    );
    let max_rate = number(&report, "max_rate")?;
    ensure!(
        max_rates.iter().all(|rate| *rate <= max_rate) && max_rates.contains(&max_rate),
        "max_rate is not the highest: {report}"
    );
    let offered = number(&report, "offered_rate")?;
    ensure!(
        offered == (max_rate * 0.5).round(),
        "offered {offered} for a maximum of {max_rate}"
    );
    let runs = report
        .get("runs")
        .and_then(Value::as_array)
        .context("runs missing")?;
    ensure!(runs.len() == 2, "paced runs {report}");
    let mut under = 0;
    let (mut calm, mut calm_under) = (0, 0);
    for run in runs {
        ensure!(
            number(run, "records")? == 2000.0 && number(run, "failed")? == 0.0,
            "paced run {run}"
        );
        ensure!(
            number(run, "target_rate")? == offered,
            "paced run not at the offered rate: {run}"
        );
        let p99 = number(
            run.get("produce_latency_ms").context("latency missing")?,
            "p99",
        )?;
        let is_under = p99 < number(&report, "p99_target_ms")?;
        if is_under {
            under += 1;
        }
        if counts_steal() && number(run, "host_steal_ms")? <= 10.0 * number(run, "cpus")? {
            calm += 1;
            if is_under {
                calm_under += 1;
            }
        }
    }
    ensure!(
        number(&report, "runs_under_target")? == f64::from(under),
        "runs_under_target does not match the runs: {report}"
    );
    // The runs the hypervisor left alone are counted apart.
    if counts_steal() {
        let calm_runs = report
            .get("calm_runs")
            .filter(|calm| !calm.is_null())
            .context("calm_runs missing")?;
        ensure!(
            number(calm_runs, "runs")? == f64::from(calm)
                && number(calm_runs, "under_target")? == f64::from(calm_under),
            "calm_runs does not match the runs' steal: {report}"
        );
    }

    // The full-speed topic is gone; the paced one holds every record.
    let topics = silt.cli_ok(&["topics", "list"])?;
    ensure!(
        topics
            .lines()
            .any(|line| line.split_whitespace().next() == Some("lat-smoke"))
            && !topics.contains("lat-smoke-max"),
        "topics after the run:\n{topics}"
    );
    let consume = bench_json(&silt, &["consume", "--topic", "lat-smoke"])?;
    ensure!(
        number(&consume, "records")? == 2.0 * 2100.0,
        "paced topic holds {consume}"
    );

    // The rate is found, not given.
    let given = silt.cli(&["bench", "latency", "--rate", "5"])?;
    ensure!(
        !given.status.success() && String::from_utf8_lossy(&given.stderr).contains("--fraction"),
        "a given --rate was accepted: {given:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_run_keeps_its_rate_and_client_stats_name_where_stalls_waited() -> Result<()> {
    let silt = SiltProcess::start()?;
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as f64;
    let report = bench_json(
        &silt,
        &[
            "produce",
            "--topic",
            "bench-paced",
            "--count",
            "20000",
            "--rate",
            "20000",
            "--record-size",
            "100",
            "--linger-ms",
            "1",
            "--client-stats-ms",
            "100",
        ],
    )?;
    ensure!(
        number(&report, "records")? == 20000.0 && number(&report, "failed")? == 0.0,
        "paced run {report}"
    );
    // Sent in bursts of what is due, but at the offered rate: 20,000 at 20,000/s.
    let seconds = number(&report, "seconds")?;
    ensure!(
        (0.9..10.0).contains(&seconds),
        "20,000 records at 20,000/s took {seconds} s"
    );
    ensure!(
        number(&report, "records_per_sec")? <= 22000.0,
        "faster than offered: {report}"
    );
    let started = number(&report, "started_unix_ms")?;
    ensure!(
        started >= before_ms && started <= before_ms + 60_000.0,
        "started_unix_ms {started}, bench started at {before_ms}"
    );
    let run_stats = report
        .get("client_stats")
        .filter(|stats| !stats.is_null())
        .context("client_stats missing with --client-stats-ms")?;
    ensure!(
        number(run_stats, "rtt_max_ms")? > 0.0 && number(run_stats, "queue_max_ms")? > 0.0,
        "librdkafka saw no round trip or queue wait: {run_stats}"
    );
    let windows = report
        .get("worst_windows")
        .and_then(Value::as_array)
        .context("worst_windows missing")?;
    ensure!(!windows.is_empty(), "no windows: {report}");
    for window in windows {
        let stats = window
            .get("client_stats")
            .filter(|stats| !stats.is_null())
            .with_context(|| format!("window without client stats: {window}"))?;
        ensure!(
            number(stats, "rtt_max_ms")? <= number(run_stats, "rtt_max_ms")?,
            "a window's maximum above the run's: {window} / {run_stats}"
        );
    }
    // The run and each window carry how much CPU time the hypervisor took, a
    // window no more than the whole run (its span ends inside the run).
    if counts_steal() {
        let run_steal = number(&report, "host_steal_ms")?;
        ensure!(number(&report, "cpus")? >= 1.0, "cpus missing: {report}");
        for window in windows {
            let window_steal = number(window, "host_steal_ms")?;
            ensure!(
                window_steal <= run_steal,
                "a window's steal above the run's: {window} / {run_steal}"
            );
        }
    }
    Ok(())
}
