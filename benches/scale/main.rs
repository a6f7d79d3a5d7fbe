//! The scale benchmark. `cargo bench --bench scale` runs the release binary at 1, 100, 1,000,
//! 10,000 and 100,000 namespaces (three `local:` cadences each), prints one table and writes
//! it to `docs/PERFORMANCE.md`. `-- --sizes 1,100` picks sizes; `-- --no-write` only prints.
//!
//! It also runs the pool case: 1,000 namespaces every 5 s through an `exec:` command that
//! takes 0.3 s, with the default concurrency and with the old global pool of 4.
//!
//! Under `cargo test` (Cargo then passes no `--bench`), it is a smoke run: sizes 1 and 100
//! with short windows (the pool case at 50 namespaces), checking that every figure is produced.

mod args;
mod ceiling;
mod fixture;
mod measure;
mod service;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use args::{Args, group};
use fixture::{Layout, Periods, name, sample, series_count, series_of};
use measure::{Scrape, Usage, percentiles, scrape, usage_over};
use service::Service;

/// The switch that keeps `namespace` off the duration histogram, for large fleets.
const FLEET_SWITCH: (&str, &str) = ("VMSH_METRICS_NAMESPACE_HISTOGRAMS", "false");

/// Workers of the phases that anchor. A `local:` anchor waits for two rounds of the group
/// commit (its journal line, then its receipt); the more anchors wait together, the more one
/// round covers, so with the default 4 workers the pool tops out far below these rates.
/// A worker is not a thread, so many cost little.
const WORKERS: (&str, &str) = ("VMSH_ANCHOR_WORKERS", "256");

/// The pool case's command: an anchor that takes 0.3 s and uses no CPU, as a CLI that calls
/// out does.
const SLOW_COMMAND: &[&str] = &["sleep", "0.3"];

/// The pool case's namespaces, each anchoring fast every 5 s (200 anchors/s at 1,000).
const POOL_CASE_PERIODS: Periods = Periods::Uniform { fast_s: 5, both: false };

/// How the pool case's scheduler is set: the defaults, and the old single pool of 4 (a
/// concurrency of 4 for the one target is what a global pool of 4 was).
const POOL_CASES: [(&str, Option<(&str, &str)>); 2] = [
    ("defaults (`exec` 128 per target)", None),
    ("VMSH_ANCHOR_WORKERS=4 (the old global pool)", Some(("VMSH_ANCHOR_WORKERS", "4"))),
];

/// How long each phase watches.
#[derive(Clone, Copy)]
struct Plan {
    full: bool,
    settle: Duration,
    idle: Duration,
    warmup: Duration,
    window: Duration,
    scrape: Duration,
    scrapers: usize,
    ceiling: Duration,
}

impl Plan {
    fn full() -> Self {
        Plan {
            full: true,
            settle: Duration::from_secs(3),
            idle: Duration::from_secs(30),
            warmup: Duration::from_secs(6),
            window: Duration::from_secs(20),
            scrape: Duration::from_secs(8),
            scrapers: 8,
            ceiling: Duration::from_secs(15),
        }
    }

    fn smoke() -> Self {
        Plan {
            full: false,
            settle: Duration::from_millis(300),
            idle: Duration::from_secs(1),
            warmup: Duration::from_secs(2),
            window: Duration::from_secs(3),
            scrape: Duration::from_secs(1),
            scrapers: 8,
            ceiling: Duration::from_secs(1),
        }
    }

    /// Start-up limit: generous, the figure is what is recorded.
    fn start_limit(n: usize) -> Duration {
        Duration::from_secs(60 + (n / 500) as u64)
    }
}

/// Lag and throughput over a window.
#[derive(Debug, Clone, Copy, Default)]
struct Lag {
    p50: f64,
    p99: f64,
    max: f64,
    /// Anchors per second started in the window (first sends).
    rate: f64,
    /// Anchors per second the config asks for.
    demand: f64,
}

/// Everything measured at one size.
#[derive(Default)]
struct Row {
    n: usize,
    ready_s: f64,
    idle: Option<Usage>,
    reload_one_ms: f64,
    reload_all_ms: f64,
    reload_seen_ms: f64,
    shutdown_s: f64,
    lag: Option<Lag>,
    lag_usage: Option<Usage>,
    metrics: Option<Scrape>,
    health: Option<Scrape>,
    series_per_ns: usize,
    series_total: usize,
    state_write_ms: f64,
    state_bytes: u64,
    busy: Option<(Lag, Usage)>,
    busy_metrics: Option<Scrape>,
    busy_series_per_ns: usize,
    /// Fleet mode with namespaces failing: /metrics, the /health summary, a page of namespaces.
    trouble_metrics: Option<Scrape>,
    trouble_series: usize,
    summary: Option<Scrape>,
    page: Option<Scrape>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// First due times, as a fraction of each namespace's fast period: the golden-ratio sequence,
/// so dues never bunch and fill the whole period. Those that come due while the scheduler
/// starts run late, at ready, but keep their phase (a period counts from when the run was
/// due), so after the warm-up the load is as even as the namespaces' periods make it.
fn golden(i: usize) -> f64 {
    (i as f64 * 0.618_033_988_749_895).fract()
}

fn lag_over(service: &Service, plan: &Plan, demand: f64) -> Result<(Lag, Usage), String> {
    std::thread::sleep(plan.warmup);
    let t0 = Instant::now();
    let usage = usage_over(service, plan.window)?;
    let wall = t0.elapsed().as_secs_f64();
    let mut lags: Vec<f64> = service.lags_since(t0).into_iter().map(|l| l as f64).collect();
    let rate = lags.len() as f64 / wall;
    let (p50, p99, max) = percentiles(&mut lags)
        .ok_or_else(|| format!("no anchor started in {:?}: {}", plan.window, service.problems()))?;
    Ok((Lag { p50, p99, max, rate, demand }, usage))
}

/// Mean state write time (ms) from the scheduler's own histogram.
fn state_write_ms(metrics: &str) -> f64 {
    let sum = sample(metrics, "vmsh_state_write_duration_seconds_sum").unwrap_or(0.0);
    let count = sample(metrics, "vmsh_state_write_duration_seconds_count").unwrap_or(0.0);
    if count > 0.0 { sum / count * 1000.0 } else { f64::NAN }
}

/// Start-up, idle cost, reloads and shutdown, with every cadence far from due.
fn idle_phase(base: &Path, n: usize, plan: &Plan, row: &mut Row) -> Result<(), String> {
    let layout = Layout::new(base, n, "idle")?;
    layout.write_namespaces(Periods::Idle, "1d", None)?;
    layout.write_state(Periods::Idle, now_ms(), |_| 1.0)?;
    let service = Service::start(&layout.dir, &layout.env(&[]), Plan::start_limit(n))?;
    row.ready_s = service.ready.as_secs_f64();
    std::thread::sleep(plan.settle);
    row.idle = Some(usage_over(&service, plan.idle)?);

    let limit = Duration::from_secs(120);
    let hash = layout.write_namespaces(Periods::Idle, "1d", Some("2h"))?;
    let t0 = Instant::now();
    service.hangup()?;
    row.reload_one_ms = service.wait_reload(&hash, limit)? as f64;
    row.reload_seen_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let hash = layout.write_namespaces(Periods::Idle, "2d", Some("2h"))?;
    service.hangup()?;
    row.reload_all_ms = service.wait_reload(&hash, limit)? as f64;

    row.shutdown_s = service.stop(Duration::from_secs(120))?.as_secs_f64();
    Ok(())
}

/// Fast cadences of 1–5 s: lag, then /metrics and /health under scrapers.
fn lag_phase(base: &Path, n: usize, plan: &Plan, row: &mut Row) -> Result<(), String> {
    let layout = Layout::new(base, n, "mixed")?;
    layout.write_namespaces(Periods::Mixed, "1d", None)?;
    layout.write_state(Periods::Mixed, now_ms(), golden)?;
    let service = Service::start(&layout.dir, &layout.env(&[WORKERS]), Plan::start_limit(n))?;
    let (lag, usage) = lag_over(&service, plan, Periods::Mixed.demand(n))?;
    row.lag = Some(lag);
    row.lag_usage = Some(usage);
    row.metrics = Some(scrape(service.addr, "/metrics", plan.scrapers, plan.scrape)?);
    row.health = Some(scrape(service.addr, "/health", plan.scrapers, plan.scrape)?);
    let text = String::from_utf8_lossy(&service::get(service.addr, "/metrics")?.body).into_owned();
    row.series_per_ns = series_of(&text, &name(0));
    row.series_total = series_count(&text);
    row.state_write_ms = state_write_ms(&text);
    row.state_bytes = layout.state_bytes();
    service.stop(Duration::from_secs(120))?;
    Ok(())
}

/// Namespaces failing in the fleet-mode phase: 100, or a tenth of a smaller fleet.
fn failing_of(n: usize) -> usize {
    (n / 10).min(100)
}

/// Fleet mode with [`failing_of`] namespaces failing and the rest far from due: /metrics,
/// the /health summary and the status page's page of namespaces, under 8 scrapers each.
fn trouble_phase(base: &Path, n: usize, plan: &Plan, row: &mut Row) -> Result<(), String> {
    let failing = failing_of(n);
    let layout = Layout::new(base, n, "trouble")?;
    layout.write_exec_target("refused", &["false"])?;
    layout.write_namespaces_to(Periods::Idle, "1d", None, None, failing)?;
    layout.write_state(Periods::Idle, now_ms(), |i| if i < failing { 0.0 } else { 1.0 })?;
    let anchors = layout.anchors_path().display().to_string();
    let env = layout.env(&[("VMSH_ANCHORS", anchors.as_str()), ("VMSH_METRICS_MODE", "fleet")]);
    let service = Service::start(&layout.dir, &env, Plan::start_limit(n))?;
    // Every failing namespace backing off, and judged so (at the next config tick).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = String::from_utf8_lossy(&service::get(service.addr, "/metrics")?.body).into_owned();
        if sample(&text, "vmsh_metrics_namespaces_shown").is_some_and(|v| v as usize >= failing) {
            row.trouble_series = series_count(&text);
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the {failing} failing namespaces were not shown within 60 s: {}", service.problems()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    row.trouble_metrics = Some(scrape(service.addr, "/metrics", plan.scrapers, plan.scrape)?);
    row.summary = Some(scrape(service.addr, "/health?view=summary", plan.scrapers, plan.scrape)?);
    row.page = Some(scrape(service.addr, "/health/namespaces?offset=0&limit=100", plan.scrapers, plan.scrape)?);
    service.stop(Duration::from_secs(120))?;
    Ok(())
}

/// The config that asks about 2,000 anchors/s of `n` namespaces, if `n` can.
fn busy_periods(n: usize) -> Option<Periods> {
    match n {
        0..667 => None,
        667..2000 => Some(Periods::Uniform { fast_s: 1, both: true }),
        _ => Some(Periods::Uniform { fast_s: (n / 2000) as u64, both: false }),
    }
}

/// About 2,000 anchors/s with the large-fleet metrics switch on.
fn busy_phase(base: &Path, n: usize, plan: &Plan, row: &mut Row) -> Result<(), String> {
    let Some(periods) = busy_periods(n) else { return Ok(()) };
    let layout = Layout::new(base, n, "busy")?;
    layout.write_namespaces(periods, "1d", None)?;
    layout.write_state(periods, now_ms(), golden)?;
    let service = Service::start(&layout.dir, &layout.env(&[FLEET_SWITCH, WORKERS]), Plan::start_limit(n))?;
    row.busy = Some(lag_over(&service, plan, periods.demand(n))?);
    row.busy_metrics = Some(scrape(service.addr, "/metrics", plan.scrapers, plan.scrape)?);
    let text = String::from_utf8_lossy(&service::get(service.addr, "/metrics")?.body).into_owned();
    row.busy_series_per_ns = series_of(&text, &name(0));
    service.stop(Duration::from_secs(120))?;
    Ok(())
}

/// `n` namespaces every 5 s through [`SLOW_COMMAND`], set as `setting` says: the lag and the
/// share of due anchors that ran.
fn pool_case(base: &Path, n: usize, plan: &Plan, label: &str, setting: Option<(&str, &str)>) -> Result<Lag, String> {
    let layout = Layout::new(base, n, label)?;
    layout.write_exec_target("slow", SLOW_COMMAND)?;
    layout.write_namespaces_to(POOL_CASE_PERIODS, "1d", None, Some("exec:slow"), 0)?;
    layout.write_state(POOL_CASE_PERIODS, now_ms(), golden)?;
    let anchors = layout.anchors_path().display().to_string();
    let mut extra = vec![("VMSH_ANCHORS", anchors.as_str())];
    extra.extend(setting);
    let service = Service::start(&layout.dir, &layout.env(&extra), Plan::start_limit(n))?;
    let (lag, _) = lag_over(&service, plan, POOL_CASE_PERIODS.demand(n))?;
    service.stop(Duration::from_secs(120))?;
    Ok(lag)
}

/// The highest rate at which lag p99 stays under 100 ms, at `n` namespaces.
fn max_rate(base: &Path, n: usize, plan: &Plan) -> Result<Vec<(u64, Lag)>, String> {
    let mut steps = Vec::new();
    for fast_s in [10, 5, 4, 3, 2, 1] {
        let periods = Periods::Uniform { fast_s, both: false };
        let layout = Layout::new(base, n, &format!("max-{fast_s}s"))?;
        layout.write_namespaces(periods, "1d", None)?;
        layout.write_state(periods, now_ms(), golden)?;
        let service = Service::start(&layout.dir, &layout.env(&[FLEET_SWITCH, WORKERS]), Plan::start_limit(n))?;
        let (lag, _) = lag_over(&service, plan, periods.demand(n))?;
        service.stop(Duration::from_secs(120))?;
        eprintln!("  fast every {fast_s} s: {:.0} anchors/s, lag p99 {:.1} ms", lag.rate, lag.p99);
        steps.push((fast_s, lag));
        if lag.p99 >= 100.0 {
            break;
        }
    }
    Ok(steps)
}

fn fmt_lag(l: &Lag) -> String {
    format!("{:.1} / {:.1} / {:.0} ms at {:.0}/s (asked {:.0}/s)", l.p50, l.p99, l.max, l.rate, l.demand)
}

fn fmt_scrape(s: &Scrape) -> String {
    format!("{:.1} / {:.1} ms, {:.0} KiB", s.p50_ms, s.p99_ms, s.bytes as f64 / 1024.0)
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let header: Vec<String> = rows.iter().map(|r| format!("{} ns", group(r.n))).collect();
    let _ = writeln!(out, "| measure | {} | target at 10,000 | target at 100,000 |", header.join(" | "));
    let _ = writeln!(out, "|---|{}---|---|", "---|".repeat(rows.len()));
    let mut line = |what: &str, target: &str, target_100k: &str, cell: &dyn Fn(&Row) -> String| {
        let cells: Vec<String> = rows.iter().map(cell).collect();
        let _ = writeln!(out, "| {what} | {} | {target} | {target_100k} |", cells.join(" | "));
    };
    let na = || "n/a".to_string();
    line("time to ready", "< 1 s", "< 2 s", &|r| format!("{:.2} s", r.ready_s));
    line("idle CPU (s per min)", "< 0.3 s (0.5 %)", "< 0.3 s (0.5 %)", &|r| {
        r.idle.map_or_else(na, |u| format!("{:.3} s", u.cpu_s_per_min))
    });
    line("idle RSS", "< 64 MiB", "< 256 MiB", &|r| r.idle.map_or_else(na, |u| format!("{:.1} MiB", u.rss_mib)));
    line("lag p50 / p99 / max, fast 1–5 s", "p99 < 20 ms", "", &|r| r.lag.as_ref().map_or_else(na, fmt_lag));
    line("CPU (s per min) and RSS, fast 1–5 s", "", "", &|r| {
        r.lag_usage.map_or_else(na, |u| format!("{:.1} s, {:.1} MiB", u.cpu_s_per_min, u.rss_mib))
    });
    line("busy ≈2,000/s: lag p50 / p99 / max", "", "p99 < 20 ms", &|r| {
        r.busy.as_ref().map_or_else(na, |(l, _)| fmt_lag(l))
    });
    line("busy ≈2,000/s: CPU (s per min), RSS", "", "", &|r| {
        r.busy.as_ref().map_or_else(na, |(_, u)| format!("{:.1} s, {:.1} MiB", u.cpu_s_per_min, u.rss_mib))
    });
    line("reload, one namespace changed", "< 250 ms", "", &|r| format!("{:.0} ms", r.reload_one_ms));
    line("reload, all changed", "< 250 ms", "< 500 ms", &|r| format!("{:.0} ms", r.reload_all_ms));
    line("reload seen, SIGHUP → applied", "", "", &|r| format!("{:.0} ms", r.reload_seen_ms));
    line("state write (mean), fast 1–5 s", "", "", &|r| format!("{:.2} ms", r.state_write_ms));
    line("state files size", "", "", &|r| format!("{:.2} MiB", r.state_bytes as f64 / (1024.0 * 1024.0)));
    line("/metrics p50 / p99, body, 8 scrapers (default mode)", "p99 < 250 ms", "", &|r| {
        r.metrics.as_ref().map_or_else(na, fmt_scrape)
    });
    line("/metrics, busy, large-fleet switch", "p99 < 250 ms", "", &|r| {
        r.busy_metrics.as_ref().map_or_else(na, fmt_scrape)
    });
    line("/metrics, fleet mode, 100 failing", "", "p99 < 100 ms, < 2 MB", &|r| {
        r.trouble_metrics.as_ref().map_or_else(na, fmt_scrape)
    });
    line("series in all, fleet mode, 100 failing", "", "", &|r| {
        if r.trouble_metrics.is_some() { r.trouble_series.to_string() } else { na() }
    });
    line("/health (default view), fast 1–5 s", "", "", &|r| r.health.as_ref().map_or_else(na, fmt_scrape));
    line("/health?view=summary, 100 failing", "", "p99 < 50 ms", &|r| r.summary.as_ref().map_or_else(na, fmt_scrape));
    line("/health/namespaces, a page of 100", "", "", &|r| r.page.as_ref().map_or_else(na, fmt_scrape));
    line("series per namespace (switch on)", "", "", &|r| {
        let with = if r.busy_metrics.is_some() { format!(" ({})", r.busy_series_per_ns) } else { String::new() };
        format!("{}{with}", r.series_per_ns)
    });
    line("series in all, fast 1–5 s", "", "", &|r| r.series_total.to_string());
    line("shutdown (SIGTERM → exit)", "", "", &|r| format!("{:.2} s", r.shutdown_s));
    out
}

fn run(sizes: &[usize], plan: &Plan, write: Option<&Path>) -> Result<(), String> {
    // This run's files stay until its figures are taken (see `Layout::new`); an earlier run's
    // are set aside now and deleted at the end.
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scale");
    let base = scratch.join(format!("run-{}", std::process::id()));
    let earlier: Vec<PathBuf> =
        std::fs::read_dir(&scratch).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let result = measure(&base, sizes, plan, write);
    eprintln!("removing the benchmark's files …");
    for dir in earlier.iter().chain([&base]) {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// Runs every phase with its files under `base`, then prints (and maybe writes) the report.
fn measure(base: &Path, sizes: &[usize], plan: &Plan, write: Option<&Path>) -> Result<(), String> {
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for &n in sizes {
        eprintln!("{} namespaces …", group(n));
        // A figure not measured shows as NaN, not as a plausible zero.
        let nan = f64::NAN;
        let mut row = Row {
            n,
            ready_s: nan,
            reload_one_ms: nan,
            reload_all_ms: nan,
            reload_seen_ms: nan,
            shutdown_s: nan,
            state_write_ms: nan,
            ..Row::default()
        };
        // A phase that fails is reported with the figures of the others, not instead of them.
        let phases: [(&str, Phase); 4] = [
            ("idle", idle_phase),
            ("fast 1–5 s", lag_phase),
            ("busy", busy_phase),
            ("fleet mode, failing", trouble_phase),
        ];
        for (name, phase) in phases {
            if let Err(e) = phase(base, n, plan, &mut row) {
                eprintln!("  {name} failed: {e}");
                failures.push(format!("{} namespaces, {name}: {e}", group(n)));
            }
        }
        rows.push(row);
    }
    let search = match sizes.iter().copied().filter(|n| (1000..=10_000).contains(n)).max() {
        Some(n) if plan.full => {
            eprintln!("highest rate with lag p99 under 100 ms, {} namespaces …", group(n));
            match max_rate(base, n, plan) {
                Ok(steps) => Some((n, steps)),
                Err(e) => {
                    failures.push(format!("{} namespaces, highest rate: {e}", group(n)));
                    None
                }
            }
        }
        _ => None,
    };
    let pool_n = if plan.full { 1_000 } else { 50 };
    let mut pool = Vec::new();
    for (i, (label, setting)) in POOL_CASES.into_iter().enumerate() {
        eprintln!("pool case, {} namespaces, {label} …", group(pool_n));
        match pool_case(base, pool_n, plan, &format!("pool-{i}"), setting) {
            Ok(lag) => pool.push((label, lag)),
            Err(e) => failures.push(format!("pool case, {label}: {e}")),
        }
    }
    // The disk's own limit, at the largest size the anchoring phases are judged at.
    let ceiling = match sizes.iter().copied().filter(|n| *n <= 10_000).max() {
        Some(n) => {
            eprintln!("disk ceiling for local anchors, {} namespaces …", group(n));
            let in_flight = WORKERS.1.parse().unwrap_or(256);
            match ceiling::local_anchor_io(&base.join("ceiling"), n, fixture::JOURNALS, in_flight, plan.ceiling) {
                Ok(rate) => Some((n, in_flight, rate)),
                Err(e) => {
                    failures.push(format!("disk ceiling: {e}"));
                    None
                }
            }
        }
        None => None,
    };
    let mut report = String::new();
    let _ = writeln!(
        report,
        "Machine: {}. Binary: `{}` ({}).",
        measure::machine(),
        Path::new(service::BIN).display(),
        profile()
    );
    let _ = writeln!(report);
    report.push_str(&table(&rows));
    if let Some((n, steps)) = &search {
        let best = steps.iter().filter(|(_, l)| l.p99 < 100.0).map(|(_, l)| l.rate).fold(0.0, f64::max);
        let _ = writeln!(report);
        let _ = writeln!(
            report,
            "Highest rate with lag p99 under 100 ms at {} namespaces: **{best:.0} anchors/s**.",
            group(*n)
        );
        let _ = writeln!(report);
        let _ = writeln!(report, "| fast period | asked | started | lag p50 / p99 / max |");
        let _ = writeln!(report, "|---|---|---|---|");
        for (fast_s, l) in steps {
            let _ = writeln!(
                report,
                "| {fast_s} s | {:.0}/s | {:.0}/s | {:.1} / {:.1} / {:.0} ms |",
                l.demand, l.rate, l.p50, l.p99, l.max
            );
        }
    }
    if !pool.is_empty() {
        let _ = writeln!(report);
        let _ = writeln!(
            report,
            "Pool case: {} namespaces, fast every 5 s (strong every 34 fast periods) through an `exec:` command that \
             takes 0.3 s (`{}`), {:.0} anchors/s asked.",
            group(pool_n),
            SLOW_COMMAND.join(" "),
            POOL_CASE_PERIODS.demand(pool_n)
        );
        let _ = writeln!(report);
        let _ = writeln!(report, "| pool | due anchors that ran | lag p50 / p99 / max |");
        let _ = writeln!(report, "|---|---|---|");
        for (label, l) in &pool {
            let _ = writeln!(
                report,
                "| {label} | {:.1} % ({:.0}/s) | {:.1} / {:.1} / {:.0} ms |",
                100.0 * l.rate / l.demand,
                l.rate,
                l.p50,
                l.p99,
                l.max
            );
        }
    }
    if let Some((n, in_flight, rate)) = ceiling {
        let _ = writeln!(report);
        let _ = writeln!(
            report,
            "Disk ceiling: the file work of a `local:` anchor alone (journal line and receipt, written and made \
             durable by the service's storage writer), {in_flight} anchors in flight, {} namespace folders, {} journals, no scheduler: **{rate:.0} anchors/s**.",
            group(n),
            fixture::JOURNALS
        );
    }
    if !failures.is_empty() {
        let _ = writeln!(report);
        let _ = writeln!(report, "Phases that failed (their figures show as NaN or n/a):");
        let _ = writeln!(report);
        for f in &failures {
            let _ = writeln!(report, "- {f}");
        }
    }
    let _ = writeln!(report);
    let _ = writeln!(report, "Benchmark wall time: {:.0} s.", started.elapsed().as_secs_f64());
    println!("{report}");
    if !plan.full {
        check_smoke(&rows)?;
        if pool.len() != POOL_CASES.len() || pool.iter().any(|(_, l)| l.rate.is_nan() || l.rate <= 0.0) {
            return Err("the pool case was not measured".into());
        }
        if !ceiling.is_some_and(|(_, _, rate)| rate > 0.0) {
            return Err("the disk ceiling was not measured".into());
        }
    }
    if let Some(path) = write {
        let mut doc = format!("{}\n\n## Results\n\n{report}", include_str!("notes.md").trim_end());
        // The cluster and aggregation benchmarks' sections, which each keeps beside itself,
        // stay in the page, in that order.
        for other in ["benches/cluster/results.md", "benches/aggregate/results.md"] {
            if let Ok(section) = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(other)) {
                doc = format!("{}\n\n{}", doc.trim_end(), section.trim_end());
            }
        }
        std::fs::write(path, doc).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) }
}

/// One phase of the measurement at one size.
type Phase = fn(&Path, usize, &Plan, &mut Row) -> Result<(), String>;

fn profile() -> &'static str {
    if cfg!(debug_assertions) { "debug build" } else { "release build" }
}

/// The smoke run's checks: every figure was produced and is plausible.
fn check_smoke(rows: &[Row]) -> Result<(), String> {
    for r in rows {
        let what = format!("{} namespaces", r.n);
        let ok = r.ready_s > 0.0
            && r.idle.is_some_and(|u| u.rss_mib > 1.0 && u.cpu_s_per_min >= 0.0)
            && r.reload_one_ms >= 0.0
            && r.reload_all_ms >= 0.0
            && r.lag.is_some_and(|l| l.rate > 0.0 && l.max >= l.p99 && l.p99 >= l.p50)
            && r.metrics.is_some_and(|s| s.requests > 0 && s.bytes > 0)
            && r.health.is_some_and(|s| s.requests > 0 && s.bytes > 0)
            && r.series_per_ns > 0
            && r.state_bytes > 0
            && r.trouble_metrics.is_some_and(|s| s.requests > 0 && s.bytes > 0)
            && r.summary.is_some_and(|s| s.requests > 0)
            && r.page.is_some_and(|s| s.requests > 0);
        if !ok {
            return Err(format!("{what}: a figure is missing or implausible"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::parse(&[1, 100, 1_000, 10_000, 100_000], &[1, 100]) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let (full, sizes, write) = (args.full, args.sizes, args.write);
    let plan = if full { Plan::full() } else { Plan::smoke() };
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/PERFORMANCE.md");
    match run(&sizes, &plan, write.then_some(doc.as_path())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
