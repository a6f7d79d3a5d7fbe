//! The aggregation benchmark. `cargo bench --bench aggregate` runs the release binary with 1,
//! 100, 1,000 and 10,000 namespaces anchoring fast every 10 s to one `eip155` target on a
//! local anvil chain (a block a second), with aggregation off and then on (window 10 s), and
//! reports transactions per window, gas per namespace anchor, schedule lag and CPU. It writes
//! its table to `benches/aggregate/results.md` and the "Aggregation" section of
//! `docs/PERFORMANCE.md`. `-- --sizes 1,100` picks sizes; `-- --no-write` only prints.
//!
//! Under `cargo test` (Cargo then passes no `--bench`), it is a smoke run: sizes 1 and 100
//! with 2 s periods, checking that every figure is produced and that aggregation sends
//! fewer transactions than namespaces.

#[path = "../scale/measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "../scale/service.rs"]
#[allow(dead_code)]
mod service;

#[path = "../scale/args.rs"]
mod args;

mod anvil;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anvil::{Anvil, CHAIN_ID, FUNDED_KEY};
use args::{Args, group};
use measure::{percentiles, usage_over};
use serde_json::{Map, json};
use service::Service;

/// Leaves per aggregate at most.
const MAX_LEAVES: usize = 1024;

/// The root every namespace anchors.
const ROOT_HEX: &str = "5bd2f6cfdc3c4e36ce1e2a7ed6bc59c4c9a9a0a4f8c1fe3f36f3aa5b7b0c3a11";

/// How long each run watches.
#[derive(Clone, Copy)]
struct Plan {
    full: bool,
    /// Every namespace's fast period, and the aggregation window.
    period: Duration,
    /// From ready to the start of the measurement: every namespace has run once.
    warmup: Duration,
    /// Periods measured.
    periods: u32,
}

impl Plan {
    fn full() -> Self {
        Plan { full: true, period: Duration::from_secs(10), warmup: Duration::from_secs(15), periods: 3 }
    }

    fn smoke() -> Self {
        Plan { full: false, period: Duration::from_secs(2), warmup: Duration::from_secs(5), periods: 3 }
    }
}

/// What one run measured.
struct Row {
    n: usize,
    aggregate: bool,
    /// Transactions mined per window.
    tx_per_window: f64,
    /// Gas per namespace anchor that completed in the measurement.
    gas_per_anchor: f64,
    /// Namespace anchors completed per second.
    anchors_per_s: f64,
    /// Schedule lag p50, p99, max (ms): from when a run was due to its first send.
    lag: (f64, f64, f64),
    /// CPU seconds per minute.
    cpu: f64,
}

fn name(i: usize) -> String {
    format!("bench:ns{i:06}")
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the files of one run under `dir`; returns the scheduler's environment.
fn layout(
    dir: &Path,
    n: usize,
    plan: &Plan,
    chain: &Anvil,
    aggregate: bool,
) -> Result<BTreeMap<String, String>, String> {
    let batch = json!({"id": "bench-1", "root": format!("sha256:{ROOT_HEX}")});
    write(&dir.join("out/batches/0001.json"), batch.to_string().as_bytes())?;
    let every = format!("{}s", plan.period.as_secs());
    let mut yaml = String::with_capacity(n * 100);
    yaml.push_str("namespaces:\n");
    for i in 0..n {
        let _ = writeln!(
            yaml,
            "  \"{}\":\n    cadence:\n      fast: {{target: \"eip155:{CHAIN_ID}\", every: \"{every}\"}}",
            name(i)
        );
    }
    write(&dir.join("namespaces.yaml"), yaml.as_bytes())?;
    let aggregation = if aggregate {
        format!("\n    aggregate: {{window: \"{every}\", maxLeaves: {MAX_LEAVES}}}")
    } else {
        String::new()
    };
    let targets = format!(
        "eip155:\n  default:\n    rpcUrl: \"{}\"\n    chainId: {CHAIN_ID}\n    key: \"{FUNDED_KEY}\"\n    confirmations: 1\n    pollInterval: \"250ms\"{aggregation}\n",
        chain.url()
    );
    write(&dir.join("anchors.yaml"), targets.as_bytes())?;
    // Every namespace last anchored so that its next run falls at a golden-ratio fraction of
    // the period from now: dues spread over the whole period, as in a fleet that has run a while.
    let now = now_ms();
    let period_ms = plan.period.as_millis() as f64;
    let mut namespaces = Map::new();
    for i in 0..n {
        let phase = (i as f64 * 0.618_033_988_749_895).fract();
        let last = now - (period_ms * (1.0 - phase)).round() as i64;
        let fast = json!({
            "lastSuccessMs": last,
            "lastBatch": {"id": "bench-1", "root": format!("sha256:{ROOT_HEX}")},
            "backoff": 0,
            "failures": 0,
        });
        namespaces.insert(name(i), json!({"cadences": {"fast": fast}}));
    }
    let state = json!({"version": 1, "namespaces": namespaces});
    write(&dir.join("state/scheduler.json"), &serde_json::to_vec(&state).map_err(|e| e.to_string())?)?;
    let mut env = BTreeMap::new();
    for (k, v) in [
        ("VMSH_ROOT", dir.display().to_string()),
        ("VMSH_NAMESPACES", dir.join("namespaces.yaml").display().to_string()),
        ("VMSH_ANCHORS", dir.join("anchors.yaml").display().to_string()),
        ("VMSH_STATE", dir.join("state/scheduler.json").display().to_string()),
        ("METRICS_PORT", "0".into()),
        ("METRICS_HOST", "127.0.0.1".into()),
        ("LOG_FORMAT", "json".into()),
        ("LOG_LEVEL", "info".into()),
        // Unaggregated, a thousand sends a second go out at once at 10,000 namespaces.
        ("VMSH_ANCHOR_WORKERS", "1024".into()),
        ("VMSH_METRICS_NAMESPACE_HISTOGRAMS", "false".into()),
    ] {
        env.insert(k.to_string(), v);
    }
    Ok(env)
}

/// One run: `n` namespaces, aggregation on or off, on a chain of its own.
fn run_one(base: &Path, n: usize, plan: &Plan, aggregate: bool) -> Result<Row, String> {
    let chain = Anvil::start(Duration::from_secs(1))?;
    let dir = base.join(format!("{n}-{}", if aggregate { "on" } else { "off" }));
    let env = layout(&dir, n, plan, &chain, aggregate)?;
    let service = Service::start(&dir, &env, Duration::from_secs(60 + (n / 500) as u64))?;
    std::thread::sleep(plan.warmup);
    let window = plan.period * plan.periods;
    let (t0, b0) = (Instant::now(), chain.block_number()?);
    let usage = usage_over(&service, window)?;
    let (wall, b1) = (t0.elapsed().as_secs_f64(), chain.block_number()?);
    let blocks = chain.blocks(b0 + 1, b1)?;
    let mut lags: Vec<f64> = service.lags_since(t0).into_iter().map(|l| l as f64).collect();
    let anchors = lags.len();
    let lag =
        percentiles(&mut lags).ok_or_else(|| format!("no anchor completed in {window:?}: {}", service.problems()))?;
    service.stop(Duration::from_secs(120))?;
    Ok(Row {
        n,
        aggregate,
        tx_per_window: blocks.transactions as f64 * plan.period.as_secs_f64() / wall,
        gas_per_anchor: blocks.gas as f64 / anchors as f64,
        anchors_per_s: anchors as f64 / wall,
        lag,
        cpu: usage.cpu_s_per_min,
    })
}

/// The report, and what it finds against the goals.
fn report(rows: &[Row], plan: &Plan) -> (String, Vec<String>) {
    let window_s = plan.period.as_secs();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Each namespace anchors fast every {window_s} s to one `eip155` target on anvil (a block a second, \
         one confirmation); aggregation window {window_s} s, at most {MAX_LEAVES} leaves. Measured over \
         {} periods after a warm-up; lag is from when a run was due to its first send.",
        plan.periods
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| namespaces | aggregation | transactions per window | gas per namespace anchor | anchors/s | lag p50 / p99 / max | CPU (s per min) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {:.1} | {:.0} / {:.0} / {:.0} ms | {:.1} |",
            group(r.n),
            if r.aggregate { "on" } else { "off" },
            r.tx_per_window,
            r.gas_per_anchor,
            r.anchors_per_s,
            r.lag.0,
            r.lag.1,
            r.lag.2,
            r.cpu
        );
    }
    let mut missed = Vec::new();
    let limit_ms = plan.period.as_millis() as f64 + 50.0;
    for r in rows.iter().filter(|r| r.aggregate) {
        let goal = r.n.div_ceil(MAX_LEAVES) as f64;
        // A window's anchor is mined in one of the measured blocks or the next: one more or
        // less across the measurement is the edge, not a miss.
        if (r.tx_per_window - goal).abs() > 1.0 / f64::from(plan.periods) + 1e-9 {
            missed.push(format!(
                "{} namespaces: {:.2} transactions per window, goal {goal}",
                group(r.n),
                r.tx_per_window
            ));
        }
        if r.lag.1 > limit_ms {
            missed.push(format!("{} namespaces: lag p99 {:.0} ms, goal ≤ {limit_ms:.0} ms", group(r.n), r.lag.1));
        }
        if let Some(off) = rows.iter().find(|o| !o.aggregate && o.n == r.n && r.n >= 1000)
            && r.gas_per_anchor * 100.0 >= off.gas_per_anchor
        {
            missed.push(format!(
                "{} namespaces: {:.0} gas per namespace anchor aggregated, not below 1/100 of {:.0}",
                group(r.n),
                r.gas_per_anchor,
                off.gas_per_anchor
            ));
        }
    }
    let _ = writeln!(out);
    if rows.iter().all(|r| !r.aggregate) {
        missed.push("no run with aggregation on was measured".into());
    }
    if missed.is_empty() {
        let _ = writeln!(
            out,
            "Goals met: transactions per window = ceil(N / maxLeaves); gas per namespace at 1,000 namespaces \
             below 1/100 of unaggregated; lag p99 ≤ window + 50 ms."
        );
    } else {
        let _ = writeln!(out, "Goals missed:");
        for m in &missed {
            let _ = writeln!(out, "- {m}");
        }
    }
    (out, missed)
}

fn run(sizes: &[usize], plan: &Plan, write_doc: bool) -> Result<(), String> {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("aggregate-{}", std::process::id()));
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for &n in sizes {
        for aggregate in [false, true] {
            eprintln!("{} namespaces, aggregation {} …", group(n), if aggregate { "on" } else { "off" });
            match run_one(&base, n, plan, aggregate) {
                Ok(row) => rows.push(row),
                Err(e) => failures.push(format!("{} namespaces, aggregation {aggregate}: {e}", group(n))),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    let (table, missed) = report(&rows, plan);
    println!("{table}");
    eprintln!("Benchmark wall time: {:.0} s.", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    if !plan.full {
        // A smoke run's windows are too short for the goals; it checks that aggregation saves.
        for r in rows.iter().filter(|r| r.aggregate && r.n > 1) {
            if r.tx_per_window >= r.n as f64 / 2.0 {
                return Err(format!(
                    "{} namespaces sent {:.1} transactions per window aggregated",
                    r.n, r.tx_per_window
                ));
            }
        }
        return Ok(());
    }
    if write_doc {
        let section = format!("## Aggregation\n\n{table}");
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/aggregate/results.md");
        write(&results, section.as_bytes())?;
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/PERFORMANCE.md");
        let text = std::fs::read_to_string(&doc).map_err(|e| format!("{}: {e}", doc.display()))?;
        let kept = text.find("\n## Aggregation\n").map_or(text.as_str(), |at| &text[..at]);
        write(&doc, format!("{}\n\n{section}", kept.trim_end()).as_bytes())?;
    }
    if missed.is_empty() { Ok(()) } else { Err(format!("goals missed: {}", missed.join("; "))) }
}

fn main() -> ExitCode {
    let args = match Args::parse(&[1, 100, 1_000, 10_000], &[1, 100]) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let (full, sizes, write_doc) = (args.full, args.sizes, args.write);
    let plan = if full { Plan::full() } else { Plan::smoke() };
    match run(&sizes, &plan, write_doc) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aggregation benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
