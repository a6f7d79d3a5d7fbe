//! Faulty targets and hostile HTTP clients (issue 5: "Faulty targets" and the HTTP part of
//! "Hostile input").
//!
//! [`FaultyServer`] is a small HTTP server written for these tests that misbehaves in one way
//! per instance: it hangs, answers byte by byte, resets the connection, answers 500 or 401,
//! sends garbage, or floods (a 200 MiB body, an endless chunked one). Every network driver
//! (`rfc3161` url, `eip155` rpcUrl, `btc` rpcUrl) is pointed at each fault through the real
//! binary, and `exec:` commands hang, flood stdout and exit with garbage. Then the HTTP port
//! is attacked: wrong paths and methods, oversized heads and bodies, idle and trickling
//! connections, and many concurrent readers.
//!
//! Each scenario prints one `RELIABILITY {json}` line that `scripts/reliability.sh` collects
//! into docs/RELIABILITY.md; `VMSH_RELIABILITY=full` runs the full counts.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmsh_scheduler::health::OverallStatus;
use vmsh_scheduler::health::contract::Health;

use crate::support::faulty_server::{Fault, FaultyServer};
use crate::support::lying_proxy::{Call, LyingProxy};
use crate::support::proc::{is_dead, open_fds, scheduler_pid, status_kib};
use crate::support::report::{count, flat, report};
use crate::support::{Root, Scheduler, exec_targets, http, http_with_head, lines, root_hex, wait_for};

const LONG: Duration = Duration::from_secs(30);

/// The pool's time limit in these tests (VMSH_ANCHOR_TIMEOUT_S).
const TIMEOUT_S: f64 = 2.0;

/// What a failed attempt may take beyond the timeout: scheduling, logging, two busy cores.
const SLACK_MS: i64 = 1_500;

/// Settings for fast retries: a network failure retries after 0.32 s, auth after 0.65 s.
const FAST_RETRIES: [(&str, &str); 3] =
    [("VMSH_ANCHOR_TIMEOUT_S", "2"), ("VMSH_BASE_BACKOFF", "0.2"), ("VMSH_MAX_BACKOFF", "1")];

// ---------------------------------------------------------------------------------------
// Observing the scheduler process
// ---------------------------------------------------------------------------------------

/// Polls `check` like [`wait_for`] and returns the lowest VmRSS seen meanwhile. Attempts
/// against a flooding target hold a buffer of up to 16 MiB for a moment, so single readings
/// jump by tens of MiB; the lowest reading over a round of failures is the resident memory
/// that stays, and a leak shows as a rising floor.
fn rss_floor_until<T>(pid: u32, what: &str, mut check: impl FnMut() -> Option<T>) -> u64 {
    let mut floor = u64::MAX;
    wait_for(LONG, what, || {
        floor = floor.min(status_kib(pid, "VmRSS").expect("the scheduler's VmRSS"));
        check()
    });
    floor
}

/// The `time` of a log line (RFC 3339 UTC with milliseconds), in Unix milliseconds.
fn log_ms(line: &Value) -> i64 {
    let t = line["time"].as_str().unwrap_or_else(|| panic!("log line without time: {line}"));
    let num = |range: std::ops::Range<usize>| -> i64 {
        t.get(range).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad log time {t:?}"))
    };
    let month = time::Month::try_from(u8::try_from(num(5..7)).expect("month")).expect("month");
    let date =
        time::Date::from_calendar_date(i32::try_from(num(0..4)).expect("year"), month, num(8..10) as u8).expect("date");
    let clock = time::Time::from_hms_milli(num(11..13) as u8, num(14..16) as u8, num(17..19) as u8, num(20..23) as u16)
        .expect("time of day");
    let nanos = time::PrimitiveDateTime::new(date, clock).assume_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).expect("ms")
}

/// Lines of namespace `ns` with message `msg`.
fn ns_logs(s: &Scheduler, ns: &str, msg: &str) -> Vec<Value> {
    s.logs_with_msg(msg).into_iter().filter(|l| l["ns"] == ns).collect()
}

/// One failed attempt as the logs tell it.
struct Failure {
    class: String,
    message: String,
    /// From "job dispatched" to "anchor failed", by the log stamps (wall clock).
    ms: i64,
}

/// The failed attempts of `ns`, each paired with its dispatch (a cadence has one job at a time).
fn failures(s: &Scheduler, ns: &str) -> Vec<Failure> {
    // One snapshot for both: a job dispatched and failed between two reads would otherwise
    // count as a failure without its dispatch.
    let logs = s.logs();
    let of = |msg: &str| -> Vec<&Value> { logs.iter().filter(|l| l["msg"] == msg && l["ns"] == ns).collect() };
    let dispatched = of("job dispatched");
    let failed = of("anchor failed");
    assert!(failed.len() <= dispatched.len(), "{ns}: more failures than jobs");
    dispatched
        .iter()
        .zip(&failed)
        .map(|(d, f)| Failure {
            class: f["class"].as_str().unwrap_or_default().to_string(),
            message: f["err"].as_str().unwrap_or_default().to_string(),
            ms: log_ms(f) - log_ms(d),
        })
        .collect()
}

/// Gaps (ms) between consecutive entries of a `local:` journal.
fn journal_gaps(root: &Root, journal: &str) -> Vec<i64> {
    let entries = vmsh_scheduler::anchor::local::read_entries(&root.journal(journal)).unwrap_or_default();
    entries.windows(2).map(|w| w[1].time_ms - w[0].time_ms).collect()
}

/// Asserts the process is alive, answers /livez, and printed no panic.
fn assert_unharmed(s: &Scheduler, pid: u32) {
    assert!(!is_dead(pid), "the scheduler died: {}", s.stderr());
    let (code, body) = s.get("/livez");
    assert_eq!(code, 200, "/livez: {body}");
    let stderr = s.stderr();
    assert!(!stderr.contains("panicked"), "the scheduler panicked: {stderr}");
    let panics = s.logs().iter().filter(|l| l.to_string().contains("panicked")).count();
    assert_eq!(panics, 0, "a panic was logged");
}

// ---------------------------------------------------------------------------------------
// Faulty network targets
// ---------------------------------------------------------------------------------------

const EVM_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// The network drivers, by target scheme.
const DRIVERS: [&str; 3] = ["rfc3161", "eip155", "btc"];

/// The class each driver documents for each fault.
fn expected_class(driver: &str, fault: Fault) -> &'static str {
    match (fault, driver) {
        (Fault::Hang | Fault::Slow | Fault::Reset | Fault::Error500, _) => "network",
        (Fault::Error401, _) => "auth",
        // The TSA's reply is not a TimeStampResp; the nodes' answer is not JSON-RPC.
        (Fault::Garbage, "rfc3161") => "validation",
        (Fault::Garbage, _) => "unknown",
        // The TSA driver reads at most 1 MiB of a reply and calls a larger one malformed; the
        // JSON-RPC drivers read at most 16 MiB and report a broken answer (network).
        (Fault::Huge | Fault::Endless, "rfc3161") => "validation",
        (Fault::Huge | Fault::Endless, _) => "network",
    }
}

/// The chain id of the eip155 entry for a fault (each entry needs its own chain).
fn chain_of(fault: Fault) -> usize {
    9100 + Fault::ALL.iter().position(|f| *f == fault).expect("fault")
}

/// The targets-file entry pointing `driver` at `url` for `fault`, and the cadence target using it.
fn target_for(driver: &str, fault: Fault, url: &str) -> (String, String) {
    let name = fault.name();
    match driver {
        "rfc3161" => (format!("  {name}: {{url: \"{url}\"}}\n"), format!("rfc3161:{name}")),
        "eip155" => {
            let chain = chain_of(fault);
            (
                format!(
                    "  \"{chain}\": {{rpcUrl: \"{url}\", chainId: {chain}, key: \"{EVM_KEY}\", pollInterval: 200ms}}\n"
                ),
                format!("eip155:{chain}"),
            )
        }
        "btc" => (
            format!("  {name}: {{rpcUrl: \"{url}\", network: regtest, rpcUser: u, rpcPassword: p}}\n"),
            format!("btc:{name}"),
        ),
        other => panic!("no driver {other}"),
    }
}

/// Writes a targets file and namespaces `<driver>-<fault>` (every 1 s) for every pair, plus
/// the namespaces in `extra_ns` (YAML lines).
fn faulty_config(root: &Root, pairs: &[(&str, Fault, String)], extra_ns: &str) {
    let mut sections: BTreeMap<&str, String> = BTreeMap::new();
    let mut namespaces = String::from("namespaces:\n");
    for (driver, fault, url) in pairs {
        let (entry, target) = target_for(driver, *fault, url);
        sections.entry(driver).or_default().push_str(&entry);
        namespaces.push_str(&format!(
            "  {driver}-{}:\n    cadence:\n      fast: {{target: \"{target}\", every: \"1s\"}}\n",
            fault.name()
        ));
    }
    let targets: String = sections.iter().map(|(k, v)| format!("{k}:\n{v}")).collect();
    namespaces.push_str(extra_ns);
    root.anchors(&targets).namespaces(&namespaces).batch(None, "0001.json", "b1", &root_hex(1));
}

const HEALTHY_NS: &str = "  healthy:\n    cadence:\n      fast: {target: \"local:healthy\", every: \"1s\"}\n";

#[test]
fn network_targets_that_hang_trickle_reset_fail_or_flood_are_cut_off_classified_and_leave_memory_flat() {
    let rounds = count(4, 25);
    let servers: BTreeMap<Fault, FaultyServer> = Fault::ALL.iter().map(|f| (*f, FaultyServer::start(*f))).collect();
    let pairs: Vec<(&str, Fault, String)> =
        DRIVERS.iter().flat_map(|d| Fault::ALL.iter().map(|f| (*d, *f, servers[f].url()))).collect();
    let root = Root::new();
    faulty_config(&root, &pairs, HEALTHY_NS);
    let mut env = FAST_RETRIES.to_vec();
    // A worker for every namespace: here each attempt's own time is measured, not queueing
    // (the one-worker case is the next test).
    env.extend([("VMSH_ANCHOR_WORKERS", "32"), ("LOG_LEVEL", "debug")]);
    let s = Scheduler::start_with(&root, &env);
    let pid = scheduler_pid(root.path());
    let rss_idle = status_kib(pid, "VmRSS").expect("the scheduler's VmRSS");
    let names: Vec<String> = pairs.iter().map(|(d, f, _)| format!("{d}-{}", f.name())).collect();
    let all_failed = |n: usize| {
        let names = &names;
        let s = &s;
        move || {
            let counts: Vec<usize> = names.iter().map(|ns| ns_logs(s, ns, "anchor failed").len()).collect();
            counts.iter().all(|c| *c >= n).then_some(counts)
        }
    };
    // Warm up: every fault has been met twice, so buffers, connection pools and the
    // allocator's arenas exist.
    wait_for(LONG, "two failures of every faulty namespace", all_failed(2));
    let started = Instant::now();
    let floors: Vec<u64> = (1..=rounds)
        .map(|round| rss_floor_until(pid, &format!("failure round {round}"), all_failed(2 + round)))
        .collect();
    let (rss_before, rss_after) = (floors[0], floors[floors.len() - 1]);
    let peak = status_kib(pid, "VmHWM").expect("the scheduler's VmHWM");
    assert_unharmed(&s, pid);

    let limit_ms = (TIMEOUT_S * 1000.0) as i64 + SLACK_MS;
    let mut figures = serde_json::Map::new();
    let mut attempts = 0;
    for (driver, fault, _) in &pairs {
        let ns = format!("{driver}-{}", fault.name());
        let seen = failures(&s, &ns);
        attempts += seen.len();
        let want = expected_class(driver, *fault);
        for f in &seen {
            assert_eq!(f.class, want, "{ns}: {}", f.message);
            assert!(
                f.ms <= limit_ms,
                "{ns}: an attempt took {} ms, over the {TIMEOUT_S} s timeout: {}",
                f.ms,
                f.message
            );
            if fault.holds_until_timeout() {
                assert!(f.message.contains("VMSH_ANCHOR_TIMEOUT_S"), "{ns}: cut off by the pool: {}", f.message);
                assert!(f.ms >= 1_900, "{ns}: gave up after {} ms, before the timeout", f.ms);
            } else {
                assert!(!f.message.contains("VMSH_ANCHOR_TIMEOUT_S"), "{ns}: should fail fast: {}", f.message);
            }
        }
        assert!(root.receipts(&ns).is_empty(), "{ns} produced a receipt");
        let max_ms = seen.iter().map(|f| f.ms).max().unwrap_or_default();
        figures.insert(format!("{driver} {}", fault.name()), json!(format!("{want} ×{} ≤{max_ms} ms", seen.len())));
        println!("{ns}: {}", seen.last().map_or("", |f| f.message.as_str()));
    }
    // Every failure came from the faulty server: each attempt opened a connection to it.
    for (fault, server) in &servers {
        let failed: usize =
            DRIVERS.iter().map(|d| ns_logs(&s, &format!("{d}-{}", fault.name()), "anchor failed").len()).sum();
        assert!(server.accepted() >= failed, "{fault:?}: {} connections for {failed} failures", server.accepted());
    }
    // The healthy namespace kept its 1 s cadence throughout.
    let gaps = journal_gaps(&root, "healthy");
    assert!(gaps.len() >= 5, "the healthy namespace anchored {} times", gaps.len() + 1);
    let max_gap = gaps.iter().copied().max().unwrap_or_default();
    assert!(max_gap <= 1_000 + limit_ms, "the healthy namespace waited {max_gap} ms between anchors");
    // Memory. Two floods (the endless eip155 and btc answers) are read at once, each up to the
    // JSON-RPC cap, then refused. What the allocator keeps of them may raise the floor once;
    // a leak would raise it round after round, past any bound.
    let cap_kib = (vmsh_scheduler::anchor::client::MAX_RPC_BODY / 1024) as u64;
    let growth_kib = rss_after.saturating_sub(rss_before);
    let growth_limit_kib = 2 * cap_kib + 8 * 1024;
    let peak_limit_kib = rss_idle + 3 * cap_kib;
    let memory_ok = growth_kib <= growth_limit_kib && peak <= peak_limit_kib;
    report(
        "faulty network targets: hang, slow, reset, 500, 401, garbage, 200 MiB body, endless body × rfc3161, eip155, btc",
        attempts,
        if memory_ok { "pass" } else { "FAIL" },
        flat(
            figures,
            json!({
                "timeoutS": TIMEOUT_S,
                "attemptLimitMs": limit_ms,
                "healthyMaxGapMs": max_gap,
                "rssAtStartKiB": rss_idle,
                "rssFloorByRoundKiB": floors,
                "rssFloorGrowthKiB": growth_kib,
                "rssFloorGrowthLimitKiB": growth_limit_kib,
                "peakRssKiB": peak,
                "peakRssLimitKiB": peak_limit_kib,
                "measuredSeconds": started.elapsed().as_secs(),
            }),
        ),
    );
    assert!(
        growth_kib <= growth_limit_kib,
        "the resident floor rose by {growth_kib} KiB over {rounds} rounds of failures: {floors:?}"
    );
    assert!(peak <= peak_limit_kib, "resident memory peaked at {peak} KiB, from {rss_idle} KiB at start");
}

#[test]
fn one_stuck_network_target_delays_a_local_namespace_by_at_most_the_timeout_with_one_worker() {
    let anchors = count(5, 20);
    let gaps: Vec<(String, Vec<i64>, String)> = std::thread::scope(|scope| {
        let runs: Vec<_> = DRIVERS
            .iter()
            .map(|driver| {
                scope.spawn(move || {
                    let server = FaultyServer::start(Fault::Hang);
                    let root = Root::new();
                    faulty_config(&root, &[(driver, Fault::Hang, server.url())], HEALTHY_NS);
                    let mut env = FAST_RETRIES.to_vec();
                    env.push(("VMSH_ANCHOR_WORKERS", "1"));
                    let s = Scheduler::start_with(&root, &env);
                    let stuck = format!("{driver}-hang");
                    wait_for(LONG, "the stuck target's first timeout", || {
                        (!ns_logs(&s, &stuck, "anchor failed").is_empty()).then_some(())
                    });
                    let journal = root.journal("healthy");
                    let from = vmsh_scheduler::anchor::local::read_entries(&journal).map(|e| e.len()).unwrap_or(0);
                    wait_for(LONG + Duration::from_secs(3 * anchors as u64), "healthy anchors", || {
                        let n = vmsh_scheduler::anchor::local::read_entries(&journal).map(|e| e.len()).unwrap_or(0);
                        (n >= from + anchors).then_some(())
                    });
                    let timeouts = failures(&s, &stuck);
                    assert!(timeouts.len() >= 2, "{stuck} kept timing out");
                    assert!(timeouts.iter().all(|f| f.class == "network"), "{stuck}");
                    assert_unharmed(&s, scheduler_pid(root.path()));
                    (driver.to_string(), journal_gaps(&root, "healthy"), timeouts[0].message.clone())
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("run")).collect()
    });
    let limit_ms = 1_000 + (TIMEOUT_S * 1000.0) as i64 + SLACK_MS;
    let mut figures = serde_json::Map::new();
    for (driver, gaps, message) in &gaps {
        let max = gaps.iter().copied().max().unwrap_or_default();
        assert!(max <= limit_ms, "{driver}: the healthy namespace waited {max} ms ({gaps:?}); {message}");
        figures.insert(format!("{driver}HealthyGapsMs"), json!(gaps));
        figures.insert(format!("{driver}MaxGapMs"), json!(max));
    }
    report(
        "one hung network target, one worker: delay of a local namespace",
        gaps.iter().map(|(_, g, _)| g.len()).sum(),
        "pass",
        flat(figures, json!({"periodMs": 1000, "timeoutS": TIMEOUT_S, "gapLimitMs": limit_ms})),
    );
}

#[test]
fn exec_commands_that_hang_flood_stdout_or_exit_with_garbage_are_cut_off_and_leave_memory_flat() {
    let rounds = count(4, 20);
    let root = Root::new();
    let garbage = r"printf '\377\376\000{not json ]]\n\200'; printf '\377garbage\000' >&2";
    root.anchors(&exec_targets(&[
        ("hang", r#"echo $$ >> "$VMSH_ROOT/hang.pids"; exec sleep 60"#),
        ("flood", r#"echo $$ >> "$VMSH_ROOT/flood.pids"; exec yes 'an endless line of output'"#),
        ("garbage", &format!("{garbage}; exit 3")),
        ("garbage-ok", &format!("{garbage}; exit 0")),
    ]))
    .namespaces(&format!(
        "namespaces:\n{}{HEALTHY_NS}",
        ["hang", "flood", "garbage", "garbage-ok"]
            .iter()
            .map(|n| format!("  exec-{n}:\n    cadence:\n      fast: {{target: \"exec:{n}\", every: \"1s\"}}\n"))
            .collect::<String>()
    ))
    .batch(None, "0001.json", "b1", &root_hex(1));
    let mut env = FAST_RETRIES.to_vec();
    env.push(("VMSH_ANCHOR_WORKERS", "8"));
    let s = Scheduler::start_with(&root, &env);
    let pid = scheduler_pid(root.path());
    let failing = ["exec-hang", "exec-flood", "exec-garbage"];
    let all_failed = |n: usize| {
        let s = &s;
        move || failing.iter().all(|ns| ns_logs(s, ns, "anchor failed").len() >= n).then_some(())
    };
    wait_for(LONG, "two failures of every failing command", all_failed(2));
    let floors: Vec<u64> = (1..=rounds)
        .map(|round| rss_floor_until(pid, &format!("failure round {round}"), all_failed(2 + round)))
        .collect();
    let (rss_before, rss_after) = (floors[0], floors[floors.len() - 1]);
    assert_unharmed(&s, pid);
    let limit_ms = (TIMEOUT_S * 1000.0) as i64 + SLACK_MS;
    let mut figures = serde_json::Map::new();
    for (ns, class) in [("exec-hang", "network"), ("exec-flood", "network"), ("exec-garbage", "unknown")] {
        let seen = failures(&s, ns);
        for f in &seen {
            assert_eq!(f.class, class, "{ns}: {}", f.message);
            assert!(f.ms <= limit_ms, "{ns}: an attempt took {} ms: {}", f.ms, f.message);
            let cut_off = f.message.contains("VMSH_ANCHOR_TIMEOUT_S");
            assert_eq!(cut_off, ns != "exec-garbage", "{ns}: {}", f.message);
        }
        let max_ms = seen.iter().map(|f| f.ms).max().unwrap_or_default();
        figures.insert(ns.into(), json!(format!("{class} ×{} ≤{max_ms} ms", seen.len())));
    }
    // A command that exits 0 anchors, whatever it printed; the receipt is valid JSON.
    let receipts = root.receipts("exec-garbage-ok");
    assert!(!receipts.is_empty(), "exit 0 with garbage output is an anchor");
    assert!(receipts[0]["attestation"]["output"].is_string(), "{}", receipts[0]);
    // Every timed-out command's process was killed, not left running.
    for file in ["hang.pids", "flood.pids"] {
        let pids = lines(&root.path().join(file));
        for pid in &pids[..pids.len() - 1] {
            wait_for(LONG, &format!("timed-out command {pid} to be killed"), || is_dead(pid).then_some(()));
        }
    }
    // The healthy namespace kept its cadence beside them.
    let gaps = journal_gaps(&root, "healthy");
    let max_gap = gaps.iter().copied().max().unwrap_or_default();
    assert!(max_gap <= 1_000 + limit_ms, "the healthy namespace waited {max_gap} ms between anchors");
    // Output beyond 64 KiB per stream is read and dropped, so nothing here should stay.
    let growth_kib = rss_after.saturating_sub(rss_before);
    report(
        "faulty exec commands: hang, endless stdout, garbage and exit",
        failing.iter().map(|ns| ns_logs(&s, ns, "anchor failed").len()).sum(),
        if growth_kib <= 30 * 1024 { "pass" } else { "FAIL" },
        flat(
            figures,
            json!({
                "timeoutS": TIMEOUT_S,
                "garbageOkReceipts": receipts.len(),
                "healthyMaxGapMs": max_gap,
                "rssFloorByRoundKiB": floors,
                "rssFloorGrowthKiB": growth_kib,
            }),
        ),
    );
    assert!(growth_kib <= 30 * 1024, "the resident floor rose by {growth_kib} KiB: {floors:?}");
}

// ---------------------------------------------------------------------------------------
// The HTTP port
// ---------------------------------------------------------------------------------------

const ROUTES: [&str; 5] = ["/", "/metrics", "/health", "/livez", "/readyz"];

/// A scheduler with `n` namespaces anchoring to `local:` journals every `every`.
fn busy_scheduler(n: usize, every: &str) -> (Root, Scheduler) {
    let root = Root::new();
    let mut yaml = String::from("namespaces:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  ns{i:03}:\n    cadence:\n      fast: {{target: \"local:j{}\", every: \"{every}\"}}\n",
            i % 8
        ));
    }
    root.namespaces(&yaml).batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start_with(&root, &[("LOG_LEVEL", "info")]);
    wait_for(LONG, "readiness", || (s.get("/readyz").0 == 200).then_some(()));
    (root, s)
}

/// The status code of a raw response, if it has a status line.
fn status_of(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// What a server sent on a connection, and when it closed it (`None`: still open).
type Closed = (Vec<u8>, Option<Duration>);

/// Reads until the server closes the connection (end of file or reset); returns what it sent
/// and when it closed, or `None` for the time if it was still open after `limit`.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Closed {
    let t0 = Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while t0.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (out, Some(t0.elapsed())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (out, Some(t0.elapsed())),
        }
    }
    (out, None)
}

/// Sends `head`, then `body_block` again and again until the server stops taking it, while
/// another thread collects the response. Returns the response, the bytes of body sent and
/// how long until the server closed (`None`: still open after 10 s).
fn flood(addr: SocketAddr, head: &[u8], body_block: &[u8]) -> (Vec<u8>, u64, Option<Duration>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let mut reader = stream.try_clone().expect("clone stream");
    let response = std::thread::spawn(move || read_until_closed(&mut reader, Duration::from_secs(15)));
    stream.set_write_timeout(Some(Duration::from_secs(2))).expect("write timeout");
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut closed = None;
    if stream.write_all(head).is_ok() && !body_block.is_empty() {
        while t0.elapsed() < Duration::from_secs(10) {
            match stream.write_all(body_block) {
                Ok(()) => sent += body_block.len() as u64,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    closed = Some(t0.elapsed());
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    let (bytes, read_closed) = response.join().expect("reader");
    (bytes, sent, closed.or(read_closed))
}

#[test]
fn every_route_answers_404_for_unknown_paths_and_405_for_wrong_methods() {
    let (_root, s) = busy_scheduler(3, "1h");
    let mut checked = 0;
    for route in ROUTES {
        for method in ["GET", "HEAD"] {
            let (code, body) = http(s.addr, method, route);
            assert_eq!(code, 200, "{method} {route}: {body}");
        }
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"] {
            let (code, head, body) = http_with_head(s.addr, method, route);
            assert_eq!(code, 405, "{method} {route}: {body}");
            assert!(head.to_ascii_lowercase().contains("\r\nallow: get, head"), "{method} {route}: {head}");
            checked += 1;
        }
        // Methods HTTP does not define (they are case-sensitive): 501, as RFC 9110 asks.
        for method in ["BREW", "get", "Head", "X1Q"] {
            let (code, body) = http(s.addr, method, route);
            assert_eq!(code, 501, "{method} {route}: {body}");
            checked += 1;
        }
    }
    let long = format!("/{}", "a".repeat(8_000));
    let unknown = [
        "/nope",
        "/health/",
        "/health/x",
        "/metrics/",
        "/metricsx",
        "/HEALTH",
        "/livez/../health/..",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/index.html",
        "/.env",
        "/%00",
        long.as_str(),
    ];
    for path in unknown {
        for method in ["GET", "POST", "DELETE"] {
            let (code, body) = http(s.addr, method, path);
            assert_eq!(code, 404, "{method} {path}: {body}");
            checked += 1;
        }
    }
    // Scanners share one label value instead of minting a series per path.
    let metrics = s.metrics();
    assert!(!metrics.contains("nope") && !metrics.contains("passwd"), "unknown paths became label values");
    report(
        "HTTP: unknown paths 404, wrong methods 405, unknown methods 501 on every route",
        checked,
        "pass",
        json!({"requests": checked}),
    );
}

#[test]
fn oversized_requests_are_refused_and_their_connections_closed() {
    let (_root, s) = busy_scheduler(3, "1h");
    let mut figures = serde_json::Map::new();
    // Heads over actix's limits (128 KiB, 96 headers): 431, then the connection closes.
    let big_header = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(256 * 1024));
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200).map(|i| format!("X-H{i}: {i}\r\n")).collect::<String>()
    );
    let long_line = format!("GET /health?{} HTTP/1.1\r\nHost: x\r\n\r\n", "q".repeat(256 * 1024));
    for (what, request) in [("hugeHeader", big_header), ("manyHeaders", many_headers), ("hugeRequestLine", long_line)] {
        let (response, _, closed) = flood(s.addr, request.as_bytes(), b"");
        let code = status_of(&response);
        assert!(matches!(code, Some(431 | 400 | 414)), "{what}: {}", String::from_utf8_lossy(&response));
        let closed = closed.unwrap_or_else(|| panic!("{what}: the connection stayed open"));
        figures
            .insert(what.into(), json!(format!("{} then closed after {} ms", code.unwrap_or(0), closed.as_millis())));
    }
    // A body to a GET route: 413 at once, and the server stops reading it. A declared length
    // is read for at most the disconnect timeout (1 s); a chunked one not at all.
    let declared = 64u64 << 30;
    let with_length = format!("GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n");
    let chunked = "GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
    chunk.extend(std::iter::repeat_n(b'x', 64 * 1024));
    chunk.extend_from_slice(b"\r\n");
    let small_post = "POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789";
    for (what, head, block) in [
        ("bodyWithLength", with_length.as_str(), vec![b'x'; 64 * 1024]),
        ("endlessChunkedBody", chunked, chunk),
        ("smallBodyToGetRoute", "GET /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", Vec::new()),
        ("smallPost", small_post, Vec::new()),
    ] {
        let (response, sent, closed) = flood(s.addr, head.as_bytes(), &block);
        let code = status_of(&response);
        assert_eq!(code, Some(413), "{what}: {}", String::from_utf8_lossy(&response));
        let closed = closed.unwrap_or_else(|| panic!("{what}: the server kept reading the body ({sent} bytes)"));
        assert!(closed < Duration::from_secs(5), "{what}: closed only after {closed:?}");
        assert!(sent < declared, "{what}: the whole body was read");
        figures.insert(
            what.into(),
            json!(format!(
                "{} then closed after {} ms, {} MiB of body sent",
                code.unwrap_or(0),
                closed.as_millis(),
                sent >> 20
            )),
        );
    }
    // Still serving, and the refusals are counted like any answer.
    assert_eq!(s.get("/health").0, 200);
    let metrics = s.metrics();
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("vmsh_http_requests_total{") && l.contains("status=\"413\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 4.0, "413s counted in vmsh_http_requests_total:\n{metrics}");
    report("HTTP: oversized heads and request bodies refused", figures.len(), "pass", Value::Object(figures));
}

#[test]
fn idle_silent_and_trickling_connections_are_dropped() {
    let (_root, s) = busy_scheduler(3, "1h");
    let limit = vmsh_scheduler::http::CLIENT_REQUEST_TIMEOUT + Duration::from_secs(2);
    let addr = s.addr;
    let connect = move || {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_write_timeout(Some(Duration::from_secs(2))).expect("write timeout");
        stream
    };
    type Probe = Box<dyn FnOnce(&mut TcpStream) + Send>;
    let probes: Vec<(&str, Probe)> = vec![
        ("silent", Box::new(|_: &mut TcpStream| {})),
        ("halfRequestLine", Box::new(|st: &mut TcpStream| st.write_all(b"GET /hea").expect("send"))),
        (
            "headWithoutEnd",
            Box::new(|st: &mut TcpStream| st.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").expect("send")),
        ),
        (
            "idleAfterOneRequest",
            Box::new(|st: &mut TcpStream| {
                st.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
                let mut buf = [0u8; 1024];
                let n = st.read(&mut buf).expect("first response");
                assert_eq!(status_of(&buf[..n]), Some(200));
            }),
        ),
    ];
    let mut runs: Vec<(String, JoinHandle<Closed>)> = probes
        .into_iter()
        .map(|(name, probe)| {
            let mut st = connect();
            let run = std::thread::spawn(move || {
                probe(&mut st);
                read_until_closed(&mut st, limit)
            });
            (name.to_string(), run)
        })
        .collect();
    // Slowloris: one byte of a never-ending head every 200 ms; the timer is not reset by them.
    let trickle = std::thread::spawn(move || {
        let mut st = connect();
        let mut reader = st.try_clone().expect("clone");
        let collect = std::thread::spawn(move || read_until_closed(&mut reader, limit));
        let head = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: {}", "s".repeat(200));
        for byte in head.bytes() {
            if st.write_all(&[byte]).is_err() {
                break;
            }
            // The attack itself: a trickle, not a synchronisation.
            std::thread::sleep(Duration::from_millis(200));
        }
        collect.join().expect("trickle reader")
    });
    runs.push(("trickle".into(), trickle));
    let mut figures = serde_json::Map::new();
    for (name, run) in runs {
        let (response, closed) = run.join().expect("probe");
        let closed = closed.unwrap_or_else(|| panic!("{name}: the connection was still open after {limit:?}"));
        let code = status_of(&response);
        if name != "idleAfterOneRequest" {
            assert!(matches!(code, None | Some(408)), "{name}: {}", String::from_utf8_lossy(&response));
        }
        let answer = code.map_or_else(|| "closed".to_string(), |c| format!("{c}, closed"));
        figures.insert(name, json!(format!("{answer} after {} ms", closed.as_millis())));
    }
    assert_eq!(s.get("/livez").0, 200);
    report(
        "HTTP: silent, half-sent, trickling and idle keep-alive connections dropped",
        figures.len(),
        "pass",
        flat(figures, json!({"limitMs": limit.as_millis()})),
    );
}

/// One GET over a fresh connection: status, body, latency. Fails on a body shorter or
/// longer than its Content-Length.
fn timed_get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>, Duration), String> {
    let t0 = Instant::now();
    let mut st = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    st.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(st, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    st.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let elapsed = t0.elapsed();
    let code = status_of(&raw).ok_or_else(|| format!("no status line: {:?}", String::from_utf8_lossy(&raw)))?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of head")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = raw[split + 4..].to_vec();
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
    if length != Some(body.len()) {
        return Err(format!("{} body bytes for content-length {length:?}", body.len()));
    }
    Ok((code, body, elapsed))
}

/// The `p` quantile of sorted latencies, in ms to a tenth.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[i].as_secs_f64() * 10_000.0).round() / 10.0
}

#[test]
fn health_and_metrics_stay_responsive_under_many_concurrent_requests() {
    let namespaces = 300;
    let threads = 64;
    let per_thread = count(50, 200);
    // Every namespace anchors at start and then every 2 s: the load goes on until anchors
    // land during it, so a load that ends between two rounds proves nothing either way.
    let (root, s) = busy_scheduler(namespaces, "2s");
    let anchors_deadline = Duration::from_secs(15);
    let addr = s.addr;
    let anchored = || -> usize {
        (0..8)
            .map(|j| {
                vmsh_scheduler::anchor::local::read_entries(&root.journal(&format!("j{j}"))).map_or(0, |e| e.len())
            })
            .sum()
    };
    let anchored_before = anchored();
    let t0 = Instant::now();
    let done = AtomicBool::new(false);
    let anchored_meanwhile = AtomicBool::new(false);
    let loading =
        |i: usize| i < per_thread || (!anchored_meanwhile.load(Ordering::SeqCst) && t0.elapsed() < anchors_deadline);
    type Outcome = (&'static str, Result<Duration, String>);
    let (results, livez): (Vec<Outcome>, Vec<Result<u16, String>>) = std::thread::scope(|scope| {
        // A liveness probe, as the kubelet would send, all through the load.
        let probe = scope.spawn(|| {
            let mut codes = Vec::new();
            while !done.load(Ordering::SeqCst) {
                codes.push(timed_get(addr, "/livez").map(|(code, _, _)| code));
                if !anchored_meanwhile.load(Ordering::SeqCst) && anchored() > anchored_before {
                    anchored_meanwhile.store(true, Ordering::SeqCst);
                }
            }
            codes
        });
        let clients: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (0..)
                        .take_while(|&i| loading(i))
                        .map(|i| {
                            let path = if (t + i) % 2 == 0 { "/health" } else { "/metrics" };
                            let result = timed_get(addr, path).and_then(|(code, body, elapsed)| {
                                if code != 200 {
                                    let text = String::from_utf8_lossy(&body);
                                    return Err(format!("HTTP {code}: {}", text.chars().take(300).collect::<String>()));
                                }
                                // The first answers of each client are read in full; the rest
                                // are checked by length (parsing all of them would load the
                                // machine more than the server).
                                if i < 2 {
                                    check_body(path, &body, namespaces)?;
                                }
                                Ok(elapsed)
                            });
                            (path, result)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results = clients.into_iter().flat_map(|c| c.join().expect("client thread")).collect();
        done.store(true, Ordering::SeqCst);
        (results, probe.join().expect("probe thread"))
    });
    let wall = t0.elapsed();
    // The scheduler went on working under the load: its config tick ran (else /health says
    // unhealthy) and namespaces anchored.
    let anchored_during = anchored() - anchored_before;
    let anchored_meanwhile = anchored_meanwhile.load(Ordering::SeqCst);
    let total = results.len();
    let after = s.health();
    let mut latencies: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut failures = Vec::new();
    for (path, result) in results {
        match result {
            Ok(elapsed) => latencies.entry(path).or_default().push(elapsed),
            Err(e) => failures.push(format!("{path}: {e}")),
        }
    }
    let livez_failed: Vec<String> = livez.iter().filter(|r| !matches!(r, Ok(200))).map(|r| format!("{r:?}")).collect();
    let mut figures = serde_json::Map::new();
    let mut worst = Duration::ZERO;
    for (path, l) in &mut latencies {
        l.sort();
        worst = worst.max(*l.last().expect("latencies"));
        let name = path.trim_start_matches('/');
        figures.insert(format!("{name}Requests"), json!(l.len()));
        for (label, p) in [("P50Ms", 0.5), ("P99Ms", 0.99), ("MaxMs", 1.0)] {
            figures.insert(format!("{name}{label}"), json!(percentile(l, p)));
        }
    }
    let pass = failures.is_empty()
        && livez_failed.is_empty()
        && worst < Duration::from_secs(2)
        && after.status != OverallStatus::Unhealthy
        && anchored_meanwhile;
    report(
        "HTTP: /health and /metrics under concurrent load",
        total,
        if pass { "pass" } else { "FAIL" },
        flat(
            figures,
            json!({
                "namespaces": namespaces,
                "clientThreads": threads,
                "requestsPerThread": total / threads,
                "failed": failures.len(),
                "livezProbes": livez.len(),
                "livezFailed": livez_failed.len(),
                "anchorsDuringLoad": anchored_during,
                "statusAfter": after.status.as_str(),
                "wallSeconds": (wall.as_secs_f64() * 10.0).round() / 10.0,
            }),
        ),
    );
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(livez_failed.is_empty(), "/livez failed under load: {livez_failed:?}");
    assert!(worst < Duration::from_secs(2), "a request took {worst:?}");
    assert_ne!(after.status, OverallStatus::Unhealthy, "the load stalled the scheduler: {:?}", after.last_tick);
    assert!(anchored_meanwhile, "nothing was anchored during the load ({anchors_deadline:?} at most)");
}

/// Checks that a /health or /metrics body is whole: the health JSON lists every namespace,
/// the metrics text ends with the last series.
fn check_body(path: &str, body: &[u8], namespaces: usize) -> Result<(), String> {
    let complete = match path {
        "/health" => {
            serde_json::from_slice::<Health>(body).is_ok_and(|h| h.namespaces.is_some_and(|m| m.len() == namespaces))
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            text.contains("vmsh_build_info") && text.ends_with('\n')
        }
    };
    if complete { Ok(()) } else { Err(format!("incomplete {path} body of {} bytes", body.len())) }
}

// ---------------------------------------------------------------------------------------
// Bounded metrics, HEAD, odd requests and connection floods
// ---------------------------------------------------------------------------------------

/// Sends `request` on a fresh connection and reads until the server closes it (at most 10 s);
/// returns the status and everything sent.
fn exchange(addr: SocketAddr, request: &[u8]) -> (Option<u16>, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_write_timeout(Some(Duration::from_secs(5))).expect("write timeout");
    // A server that answers before it read everything may reset the rest; the answer counts.
    let _ = stream.write_all(request);
    let (response, _) = read_until_closed(&mut stream, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&response);
    let code = ["HTTP/1.1 ", "HTTP/1.0 "]
        .iter()
        .find_map(|v| text.strip_prefix(v))
        .and_then(|rest| rest.get(..3)?.parse().ok());
    (code, response)
}

/// Every series on a /metrics page (name and labels, without the value), with its value.
fn series(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// The end of a request head that asks the server to close the connection after answering.
const CLOSE: &str = "Connection: close\r\n\r\n";

/// One round of hostile requests, each made-up part numbered from `from`: unknown methods
/// (short, lowercase, 4 KiB long, with bodies), unknown and encoded paths, query strings,
/// absolute-form targets, odd hosts and headers, and HTTP/1.0.
fn hostile_round(addr: SocketAddr, from: usize, n: usize) -> usize {
    let mut sent = 0;
    for i in from..from + n {
        let long = format!("L{i}{}", "Q".repeat(4096));
        let requests = [
            format!("X{i}Q /health HTTP/1.1\r\nHost: x\r\n{CLOSE}"),
            format!("x{i}q /nope{i} HTTP/1.1\r\nHost: x\r\n{CLOSE}"),
            format!("{long} /metrics HTTP/1.1\r\nHost: x\r\n{CLOSE}"),
            format!("P{i} /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
            format!("GET /health?q={i}&r=%ff HTTP/1.1\r\nHost: h{i}\r\nX-Made-Up-{i}: {i}\r\n{CLOSE}"),
            format!("GET http://h{i}/livez?{i} HTTP/1.1\r\nHost: h{i}\r\n{CLOSE}"),
            format!("HEAD /%72eadyz?{i} HTTP/1.1\r\nHost: x\r\nUser-Agent: scanner/{i}\r\n{CLOSE}"),
            format!("OPTIONS //x{i}/../health HTTP/1.1\r\nHost: x\r\n{CLOSE}"),
            format!("DELETE /.env{i} HTTP/1.0\r\n\r\n"),
        ];
        for request in requests {
            let (code, response) = exchange(addr, request.as_bytes());
            let start: String = request.chars().take(40).collect();
            assert!(code.is_some(), "no answer to {start:?}: {:?}", String::from_utf8_lossy(&response));
            sent += 1;
        }
    }
    sent
}

#[test]
fn made_up_methods_paths_and_headers_do_not_grow_the_metrics() {
    let rounds = count(150, 300);
    let (_root, s) = busy_scheduler(3, "1h");
    wait_for(LONG, "every namespace's first anchor", || {
        let m = s.metrics();
        let done = (0..3).all(|i| {
            crate::support::metric(&m, "vmsh_anchors_succeeded_total", &[("namespace", &format!("ns{i:03}"))])
                .is_some_and(|v| v >= 1.0)
        });
        // And the health judgement has counted the cadences by status since.
        let judged = m.lines().filter(|l| l.starts_with("vmsh_cadences{") && l.contains("status=\"ok\"")).count() == 3;
        (done && judged).then_some(())
    });
    // A first round puts every kind of answer on the page once.
    hostile_round(s.addr, 0, 2);
    let before_text = s.metrics();
    let before = series(&before_text);
    let sent = hostile_round(s.addr, 1_000, rounds);
    let after_text = s.metrics();
    let after = series(&after_text);
    let new: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let http_series = after.keys().filter(|k| k.starts_with("vmsh_http_requests")).count();
    let growth = after_text.len().saturating_sub(before_text.len());
    report(
        "HTTP: made-up methods, paths, queries, hosts and headers add no series",
        sent,
        if new.is_empty() { "pass" } else { "FAIL" },
        json!({
            "requests": sent,
            "seriesBefore": before.len(),
            "seriesAfter": after.len(),
            "httpSeries": http_series,
            "metricsBytesBefore": before_text.len(),
            "metricsBytesAfter": after_text.len(),
        }),
    );
    assert!(new.is_empty(), "{} new series, e.g. {:?}", new.len(), &new[..new.len().min(3)]);
    // Counters grow by a digit or two and sums change their decimals; nothing else.
    assert!(growth < 2_048, "/metrics grew by {growth} bytes over {sent} requests");
    let methods: std::collections::BTreeSet<&str> = after
        .keys()
        .filter(|k| k.starts_with("vmsh_http_requests_total{"))
        .filter_map(|k| k.split("method=\"").nth(1)?.split('"').next())
        .collect();
    let allowed = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"];
    assert!(methods.iter().all(|m| allowed.contains(m)), "method labels {methods:?}");
    assert!(methods.contains("OTHER"), "made-up methods are counted as OTHER: {methods:?}");
}

#[test]
fn a_reload_that_drops_a_target_removes_its_series_also_from_shared_histograms() {
    let root = Root::new();
    let config =
        |i: usize| format!("namespaces:\n  a:\n    cadence:\n      fast: {{target: \"local:t{i}\", every: \"1s\"}}\n");
    root.namespaces(&config(0)).batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start_with(&root, &[("VMSH_METRICS_NAMESPACE_HISTOGRAMS", "false")]);
    // A scrape is counted once it is answered: after this one, the series of GET /metrics exist
    // in every scrape below, whichever of them is the first to see an anchor.
    s.metrics();
    let cycles = 4;
    let mut sizes = Vec::new();
    for i in 0..=cycles {
        if i > 0 {
            root.namespaces(&config(i));
        }
        let current = format!("target=\"local:t{i}\"");
        let text = wait_for(LONG, &format!("an anchor to local:t{i} and no series of older targets"), || {
            let text = s.metrics();
            let anchored =
                text.lines().any(|l| l.starts_with("vmsh_anchor_duration_seconds_count") && l.contains(&current));
            // The health judgement counts the cadence under its new target.
            let judged = text.lines().any(|l| l.starts_with("vmsh_cadences{") && l.contains(&current));
            let stale = (0..i).any(|old| text.contains(&format!("\"local:t{old}\"")));
            (anchored && judged && !stale).then_some(text)
        });
        sizes.push(series(&text).len());
    }
    report(
        "metrics: targets a reload drops leave no series (shared duration histograms)",
        cycles,
        "pass",
        json!({"seriesPerCycle": sizes}),
    );
    assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "series grew from cycle to cycle: {sizes:?}");
}

/// Reads one response from a kept-alive connection: its head, and its body by
/// Content-Length, read only when `with_body`. Fails on anything else arriving first.
fn read_response(stream: &mut TcpStream, with_body: bool) -> (String, Vec<u8>) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read a response head");
        assert_eq!(n, 1, "closed mid-head after {:?}", String::from_utf8_lossy(&raw));
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; if with_body { length } else { 0 }];
    stream.read_exact(&mut body).expect("read a response body");
    (head, body)
}

/// A response header's value.
fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).map(str::trim)
}

#[test]
fn head_answers_like_get_without_a_body_on_every_route() {
    let (_root, s) = busy_scheduler(3, "1h");
    let mut figures = serde_json::Map::new();
    for route in ROUTES {
        // Puts the series of both on /metrics, so that its size changes only by digits below.
        http(s.addr, "GET", route);
        http(s.addr, "HEAD", route);
        // One kept-alive connection: GET, HEAD, GET. Were a body sent after the HEAD answer,
        // the second GET's answer would not start where it is read.
        let mut st = TcpStream::connect(s.addr).expect("connect");
        st.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        let request = |method: &str| format!("{method} {route} HTTP/1.1\r\nHost: x\r\n\r\n");
        st.write_all(request("GET").as_bytes()).expect("send GET");
        let (get_head, get_body) = read_response(&mut st, true);
        st.write_all(request("HEAD").as_bytes()).expect("send HEAD");
        let (head_head, _) = read_response(&mut st, false);
        st.write_all(request("GET").as_bytes()).expect("send GET");
        let (after_head, _) = read_response(&mut st, true);
        for (what, h) in [("GET", &get_head), ("HEAD", &head_head), ("GET after HEAD", &after_head)] {
            assert!(h.starts_with("http/1.1 200 "), "{what} {route}: {h}");
        }
        assert_eq!(header_of(&head_head, "content-type"), header_of(&get_head, "content-type"), "{route}");
        let length: usize =
            header_of(&head_head, "content-length").and_then(|v| v.parse().ok()).expect("HEAD has a Content-Length");
        // /health and /metrics carry times and counters, so their size may change a little.
        if matches!(route, "/" | "/livez" | "/readyz") {
            assert_eq!(length, get_body.len(), "HEAD {route}");
        } else {
            assert!(length.abs_diff(get_body.len()) < 512, "HEAD {route}: {length} vs GET {}", get_body.len());
        }
        figures.insert(route.into(), json!(format!("HEAD 200, Content-Length {length}, no body")));
    }
    // The HEAD requests are counted as HEAD.
    let m = s.metrics();
    let heads = crate::support::metric(&m, "vmsh_http_requests_total", &[("endpoint", "/livez"), ("method", "HEAD")]);
    assert_eq!(heads, Some(2.0), "both HEAD /livez counted as HEAD");
    report("HTTP: HEAD answers like GET without a body", figures.len(), "pass", Value::Object(figures));
}

/// Sets the soft and hard limit on open files of our child `pid`.
fn limit_open_files(pid: u32, n: u64) {
    let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
    let pid = i32::try_from(pid).expect("pid");
    // SAFETY: prlimit on our own child with a valid limit; the old limit is not asked for.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Opens connections to `addr` and keeps up to `n` of them open, silent, until `stop`; a
/// connection the server closes is replaced. Returns the most that were open at once.
fn hold_connections(addr: SocketAddr, n: usize, stop: &AtomicBool) -> usize {
    let mut held: Vec<TcpStream> = Vec::new();
    let mut most = 0;
    while !stop.load(Ordering::SeqCst) {
        held.retain(|st| {
            let mut byte = [0u8; 1];
            // Still open while a read would block.
            matches!(st.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
        });
        while held.len() < n {
            // Once the server stops accepting, its backlog fills and connecting times out.
            match TcpStream::connect_timeout(&addr, Duration::from_millis(50)) {
                Ok(st) => {
                    st.set_nonblocking(true).expect("non-blocking");
                    held.push(st);
                }
                Err(_) => break,
            }
        }
        most = most.max(held.len());
        // The attack's pace, not a synchronisation.
        std::thread::sleep(Duration::from_millis(50));
    }
    most
}

#[test]
fn a_client_holding_a_thousand_connections_leaves_the_scheduler_its_file_descriptors() {
    const OPEN_FILES: u64 = 512;
    let root = Root::new();
    root.namespaces(&format!("namespaces:\n{HEALTHY_NS}")).batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start(&root);
    let pid = scheduler_pid(root.path());
    let journal = root.journal("healthy");
    let anchored = || vmsh_scheduler::anchor::local::read_entries(&journal).map_or(0, |e| e.len());
    wait_for(LONG, "the first anchor", || (anchored() > 0).then_some(()));
    // A tight but common limit (systemd's default soft limit is 1024).
    limit_open_files(pid, OPEN_FILES);
    let idle_fds = open_fds(pid);
    // Longer than CLIENT_REQUEST_TIMEOUT, so the held connections are closed and replaced.
    let hold = vmsh_scheduler::http::CLIENT_REQUEST_TIMEOUT + Duration::from_secs(3);
    let before = anchored();
    let stop = AtomicBool::new(false);
    let (held, peak_fds, probes) = std::thread::scope(|scope| {
        let holder = scope.spawn(|| hold_connections(s.addr, 1_000, &stop));
        // A probe as the kubelet sends it: it waits behind the held connections.
        let probe = scope.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                seen.push(timed_get(s.addr, "/livez").map(|(code, _, took)| (code, took)));
            }
            seen
        });
        let t0 = Instant::now();
        let mut peak = 0;
        while t0.elapsed() < hold {
            peak = peak.max(open_fds(pid));
            std::thread::sleep(Duration::from_millis(25));
        }
        stop.store(true, Ordering::SeqCst);
        (holder.join().expect("holder"), peak, probe.join().expect("probe"))
    });
    let probe_ms: Vec<u128> = probes.iter().filter_map(|p| p.as_ref().ok()).map(|(_, took)| took.as_millis()).collect();
    let during = anchored() - before;
    wait_for(LONG, "/livez once the connections are gone", || (s.get("/livez").0 == 200).then_some(()));
    let exhausted: Vec<Value> =
        s.logs().into_iter().filter(|l| l.to_string().contains("Too many open files")).take(3).collect();
    let failed_writes =
        crate::support::metric(&s.metrics(), "vmsh_state_writes_total", &[("result", "failure")]).unwrap_or(-1.0);
    let cap = vmsh_scheduler::http::MAX_CONNECTIONS;
    let pass = exhausted.is_empty() && failed_writes == 0.0 && during >= 3 && peak_fds <= idle_fds + cap + 16;
    report(
        "HTTP: a client holding a thousand connections open",
        1,
        if pass { "pass" } else { "FAIL" },
        json!({
            "openFilesLimit": OPEN_FILES,
            "connectionCap": cap,
            "connectionsHeldByClient": held,
            "schedulerFdsIdle": idle_fds,
            "schedulerFdsPeak": peak_fds,
            "holdSeconds": hold.as_secs(),
            "anchorsDuringHold": during,
            "failedStateWrites": failed_writes,
            "livezProbesDuringHold": probes.len(),
            "livezProbesAnswered": probe_ms.len(),
            "livezProbeMaxMs": probe_ms.iter().max(),
        }),
    );
    assert!(exhausted.is_empty(), "the scheduler ran out of file descriptors: {exhausted:?}");
    assert_eq!(failed_writes, 0.0, "state writes failed");
    assert!(during >= 3, "only {during} anchors in {hold:?} of a 1 s cadence");
    assert!(peak_fds <= idle_fds + cap + 16, "{peak_fds} files open, {idle_fds} before the connections");
}

#[test]
fn odd_but_harmless_requests_get_plain_answers_and_malformed_ones_400() {
    let (_root, s) = busy_scheduler(3, "1h");
    let route_queries: Vec<(String, String, u16)> = ROUTES
        .iter()
        .map(|r| (format!("query on {r}"), format!("GET {r}?a=1&b=%ff&c HTTP/1.1\r\nHost: x\r\n{CLOSE}"), 200))
        .collect();
    let cases: Vec<(String, String, u16)> = [
        ("absolute form", format!("GET http://other/health HTTP/1.1\r\nHost: other\r\n{CLOSE}"), 200),
        ("percent-encoded route", format!("GET /%68ealth HTTP/1.1\r\nHost: x\r\n{CLOSE}"), 200),
        ("HTTP/1.0", "GET /livez HTTP/1.0\r\n\r\n".to_string(), 200),
        ("Expect: 100-continue", format!("GET /livez HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n{CLOSE}"), 100),
        (
            "websocket upgrade",
            "GET /livez HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".to_string(),
            200,
        ),
        ("asterisk", format!("OPTIONS * HTTP/1.1\r\nHost: x\r\n{CLOSE}"), 404),
        ("CONNECT", "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n".to_string(), 404),
        ("double slash", format!("GET //health HTTP/1.1\r\nHost: x\r\n{CLOSE}"), 404),
        ("dot segments", format!("GET /x/../health HTTP/1.1\r\nHost: x\r\n{CLOSE}"), 404),
        ("HEAD with a body", "HEAD /health HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody".to_string(), 413),
        (
            "OPTIONS with a body",
            "OPTIONS /health HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody".to_string(),
            413,
        ),
        ("no Host in HTTP/1.1", format!("GET /livez HTTP/1.1\r\n{CLOSE}"), 400),
        ("two Hosts", format!("GET /livez HTTP/1.1\r\nHost: a\r\nHost: b\r\n{CLOSE}"), 400),
        (
            "two Content-Lengths",
            "GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n".into(),
            400,
        ),
        ("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_string(), 400),
        ("HTTP/3.0", format!("GET /livez HTTP/3.0\r\nHost: x\r\n{CLOSE}"), 400),
    ]
    .into_iter()
    .map(|(name, request, code)| (name.to_string(), request, code))
    .chain(route_queries)
    .collect();
    let mut figures = serde_json::Map::new();
    let raw_cases: [(&str, &[u8], u16); 2] = [
        ("non-UTF-8 path", b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
        // Bytes above 0x7f in a header value are allowed (obs-text); no endpoint reads them.
        (
            "non-ASCII header value",
            b"GET /livez HTTP/1.1\r\nHost: x\r\nX-A: \xff\x80\r\nConnection: close\r\n\r\n",
            200,
        ),
    ];
    let all = cases.iter().map(|(n, r, c)| (n.as_str(), r.as_bytes(), *c)).chain(raw_cases);
    for (name, request, want) in all {
        let t0 = Instant::now();
        let (code, response) = exchange(s.addr, request);
        let took = t0.elapsed();
        assert_eq!(code, Some(want), "{name}: {}", String::from_utf8_lossy(&response));
        if want == 100 {
            let text = String::from_utf8_lossy(&response);
            assert!(text.contains("\r\n\r\nHTTP/1.1 200 OK\r\n"), "{name}: the answer after 100: {text}");
        }
        // Every one of them ends with the connection closed, not left to a timeout.
        assert!(took < Duration::from_secs(3), "{name}: closed only after {took:?}");
        figures.insert(name.to_string(), json!(format!("{want}, closed after {} ms", took.as_millis())));
    }
    // Pipelined requests are answered in order.
    let pipelined = format!(
        "GET /livez HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n{CLOSE}"
    );
    let (_, response) = exchange(s.addr, pipelined.as_bytes());
    let text = String::from_utf8_lossy(&response);
    let statuses: Vec<&str> = text.match_indices("HTTP/1.1 ").filter_map(|(i, _)| text.get(i + 9..i + 12)).collect();
    assert_eq!(statuses, ["200", "200", "404"], "{text}");
    assert!(text.contains("{\"live\":true}") && text.contains("{\"ready\":true}"), "{text}");
    figures.insert("pipelined GETs".into(), json!("200, 200, 404 in order"));
    assert_eq!(s.get("/livez").0, 200);
    report(
        "HTTP: odd but valid requests, malformed ones and pipelining",
        figures.len(),
        "pass",
        Value::Object(figures),
    );
}

// ---------------------------------------------------------------------------------------
// What failing targets' errors say
// ---------------------------------------------------------------------------------------

/// The message of the last failure of `ns`'s `fast` cadence, once /health shows one.
fn last_error_message(s: &Scheduler, ns: &str) -> Option<String> {
    Some(s.cadence(ns, "fast")?.last_error?.message)
}

/// Every network driver's failure names the targets-file entry and the node's host, the same
/// way (`<section>.<entry> (<scheme>://<host>:<port>/…)`), and never the URL's credentials,
/// path or query.
#[test]
fn network_target_errors_name_the_entry_and_the_host_never_the_path() {
    let server = FaultyServer::start(Fault::Error500);
    let a = server.addr;
    let root = Root::new();
    root.anchors(&format!(
        r#"
eip155:
  "7": {{rpcUrl: "http://user:pw-S3cret@{a}/v3/KEY123456", key: "{EVM_KEY}"}}
btc:
  node: {{rpcUrl: "http://user:pw-S3cret@{a}/btc/KEY123456", network: regtest}}
rfc3161:
  tsa: {{url: "http://user:pw-S3cret@{a}/tsa?token=KEY123456"}}
"#
    ))
    .namespaces(
        "namespaces:\n  evm:\n    cadence:\n      fast: {target: \"eip155:7\", every: \"1h\"}\n  btc:\n    cadence:\n      fast: {target: \"btc:node\", every: \"1h\"}\n  tsa:\n    cadence:\n      fast: {target: \"rfc3161:tsa\", every: \"1h\"}\n",
    )
    .batch(None, "0001.json", "b1", &root_hex(1));
    let s = Scheduler::start_with(&root, &FAST_RETRIES);
    for (ns, entry) in [("evm", "eip155.7"), ("btc", "btc.node"), ("tsa", "rfc3161.tsa")] {
        let message = wait_for(LONG, &format!("{ns} to fail"), || last_error_message(&s, ns));
        assert!(message.starts_with(&format!("{entry} (http://{a}/…): ")), "{ns}: {message}");
        for hidden in ["user", "pw-S3cret", "KEY123456", "/v3", "/btc", "/tsa"] {
            assert!(!message.contains(hidden), "{ns} shows {hidden:?}: {message}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Targets that lie
// ---------------------------------------------------------------------------------------

/// The pending anchor's id (tx hash or txid) once `ns` shows one in /health.
fn wait_pending(s: &Scheduler, ns: &str, field: &str) -> String {
    wait_for(LONG, &format!("{ns} to send its anchor"), || {
        s.cadence(ns, "fast")?.pending?.data[field].as_str().map(str::to_string)
    })
}

/// While the proxy lies, the scheduler keeps asking (the lie is told `times` times), writes
/// no receipt, and shows why in `/health`, naming the entry; once the proxy stops lying (and
/// `then` has run), the receipt comes. Reports the scenario and returns that receipt.
fn no_receipt_while_lying(
    s: &Scheduler,
    root: &Root,
    proxy: &LyingProxy,
    (ns, entry, scenario): (&str, &str, &str),
    then: impl FnOnce(),
) -> Value {
    let times = 5;
    wait_for(LONG, &format!("the lie to be told {times} times"), || {
        if let Some(receipt) = root.receipts(ns).into_iter().next() {
            panic!("a receipt was written from a lie: {receipt}");
        }
        (proxy.told() >= times).then_some(())
    });
    let why = wait_for(LONG, "the reason in /health", || last_error_message(s, ns));
    assert!(why.starts_with(&format!("{entry} (http://127.0.0.1:")), "names the entry and the node: {why}");
    let told = proxy.told();
    proxy.lie(false);
    then();
    let receipt = wait_for(LONG, &format!("{ns}'s receipt once the node tells the truth"), || {
        root.receipts(ns).into_iter().next()
    });
    // What /health said, without the entry's label (it holds the random port) and with
    // hashes and txids shortened.
    let mut shown = String::new();
    let mut run = String::new();
    for c in why.split_once("): ").map_or(why.as_str(), |(_, w)| w).chars().chain([' ']) {
        if c.is_ascii_hexdigit() || c == 'x' {
            run.push(c);
            continue;
        }
        shown.push_str(if run.len() >= 16 { "…" } else { &run });
        run.clear();
        shown.push(c);
    }
    let shown = shown.trim_end();
    report(scenario, told, "pass", json!({"liesTold": told, "receiptsFromLies": 0, "lastError": shown}));
    receipt
}

/// anvil without automining behind a [`LyingProxy`], a scheduler anchoring namespace `n` to it
/// (1 confirmation), and a decoy: another transaction, mined before ours is sent. The proxy
/// starts lying once our transaction waits in the mempool, then a block mines it.
fn evm_lie(scenario: &str, lie: impl Fn(&Call, &str) -> Option<Value> + Send + Sync + 'static) -> Value {
    let anvil = crate::evm::Anvil::start(false);
    // Another account sends the decoy.
    let other = "0x70997970c51812dc3a010c7d01b50e8d3c4f79c8";
    anvil.rpc("anvil_setBalance", json!([other, "0xde0b6b3a7640000"]));
    anvil.rpc("anvil_impersonateAccount", json!([other]));
    let decoy = anvil.rpc("eth_sendTransaction", json!([{"from": other, "to": other, "value": "0x1"}]));
    let decoy = decoy.as_str().expect("decoy hash").to_string();
    anvil.mine(1);
    let upstream: SocketAddr = anvil.url().trim_start_matches("http://").parse().expect("anvil address");
    let proxy = LyingProxy::start(upstream, Box::new(move |call: &Call| lie(call, &decoy)));
    let root = Root::new();
    root.anchors(&format!(
        "eip155:\n  \"31337\": {{rpcUrl: \"{}\", key: \"{}\", pollInterval: 200ms, confirmations: 1}}\n",
        proxy.url(),
        crate::evm::FUNDED_KEY
    ))
    .namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"eip155:31337\", every: \"1h\"}\n")
    .batch(None, "0001.json", "b1", &root_hex(5));
    let s = Scheduler::start_with(&root, &FAST_RETRIES);
    let hash = wait_pending(&s, "n", "txHash");
    proxy.lie(true);
    anvil.mine(1);
    let receipt = no_receipt_while_lying(&s, &root, &proxy, ("n", "eip155.31337", scenario), || {});
    // What the receipt says is what the chain says.
    let real = anvil.rpc("eth_getTransactionReceipt", json!([hash]));
    let block = anvil.rpc("eth_getBlockByHash", json!([real["blockHash"], false]));
    let att = &receipt["attestation"];
    assert_eq!(att["txHash"], json!(hash), "{receipt}");
    assert_eq!(att["blockHash"], real["blockHash"], "{receipt}");
    let number =
        |v: &Value| u64::from_str_radix(v.as_str().expect("hex").trim_start_matches("0x"), 16).expect("number");
    assert_eq!(att["blockNumber"], json!(number(&real["blockNumber"])), "{receipt}");
    assert_eq!(att["blockTime"], json!(number(&block["timestamp"])), "{receipt}");
    assert_eq!(att["data"], json!(format!("0x564d5348{}", root_hex(5))), "{receipt}");
    receipt
}

/// A node that answers our transaction's receipt with the receipt of another one (mined in
/// another block) is not believed: the receipt records the block our transaction is in.
#[test]
fn an_evm_node_answering_the_receipt_of_another_transaction_is_not_believed() {
    evm_lie("lying EVM node: the receipt of another transaction", |call, decoy| {
        (call.method == "eth_getTransactionReceipt" && call.params[0] != json!(decoy))
            .then(|| (call.upstream)("eth_getTransactionReceipt", json!([decoy])))
    });
}

/// A node that answers the receipt's block number with another block (here, genesis) is not
/// believed: the block time recorded is that of our transaction's block.
#[test]
fn an_evm_node_answering_another_block_for_the_receipts_block_number_is_not_believed() {
    evm_lie("lying EVM node: another block for the receipt's block number", |call, _| {
        let by_number = call.params[0].as_str().is_some_and(|n| n.starts_with("0x") && n != "0x0");
        (call.method == "eth_getBlockByNumber" && by_number)
            .then(|| (call.upstream)("eth_getBlockByNumber", json!(["0x0", false])))
    });
}

/// A node that answers our transaction hash with another transaction is not believed: the
/// recorded data, sender and recipient are those of the transaction we signed.
#[test]
fn an_evm_node_answering_another_transaction_for_our_hash_is_not_believed() {
    let receipt = evm_lie("lying EVM node: another transaction for our hash", |call, decoy| {
        (call.method == "eth_getTransactionByHash" && call.params[0] != json!(decoy))
            .then(|| (call.upstream)("eth_getTransactionByHash", json!([decoy])))
    });
    assert_ne!(receipt["attestation"]["from"], "0x70997970c51812dc3a010c7d01b50e8d3c4f79c8", "{receipt}");
}

/// A node whose chain id changes while our transaction waits (the URL now reaches another
/// chain's node) is not believed: nothing is recorded until it is back on the chain.
#[test]
fn an_evm_node_whose_chain_changes_mid_attempt_is_not_believed() {
    evm_lie("lying EVM node: another chain while our transaction waits", |call, _| {
        (call.method == "eth_chainId").then(|| json!("0x1"))
    });
}

/// A node whose head goes back below the block it says holds our transaction contradicts
/// itself: no confirmation is counted from it.
#[test]
fn an_evm_node_whose_head_goes_back_below_our_block_is_not_believed() {
    evm_lie("lying EVM node: a head below our block", |call, _| {
        (call.method == "eth_blockNumber").then(|| json!("0x0"))
    });
}

/// The fake bitcoind behind a [`LyingProxy`], and a decoy: another wallet transaction with
/// its own OP_RETURN, mined before ours is sent. With 0 `confirmations` (final once sent) the
/// proxy lies from the first call; else once our transaction waits in the mempool, after
/// which a block mines it, and the blocks it still needs are mined once the lie stops.
fn btc_lie(
    scenario: &str,
    confirmations: u32,
    lie: impl Fn(&Call, &(String, String)) -> Option<Value> + Send + Sync + 'static,
) -> Value {
    let node = crate::support::fake_bitcoind::FakeBitcoind::start();
    let data = vmsh_scheduler::model::digest::to_hex(&vmsh_scheduler::anchor::btc::anchor_data(&[0x99; 32]));
    let raw = node.rpc("createrawtransaction", json!([[], [{"data": data}]])).expect("create");
    let funded = node.rpc("fundrawtransaction", json!([raw])).expect("fund");
    let signed = node.rpc("signrawtransactionwithwallet", json!([funded["hex"]])).expect("sign");
    let hex = signed["hex"].as_str().expect("hex").to_string();
    let txid = node.rpc("sendrawtransaction", json!([hex])).expect("send").as_str().expect("txid").to_string();
    node.generate(1);
    let upstream: SocketAddr = node.url().trim_start_matches("http://").trim_end_matches('/').parse().expect("addr");
    let decoy = (txid, hex);
    let proxy = LyingProxy::start(upstream, Box::new(move |call: &Call| lie(call, &decoy)));
    proxy.lie(confirmations == 0);
    let root = Root::new();
    root.anchors(&format!(
        "btc:\n  default: {{rpcUrl: \"{}\", network: regtest, rpcUser: u, rpcPassword: p, confirmations: {confirmations}, pollInterval: 200ms}}\n",
        proxy.url()
    ))
    .namespaces("namespaces:\n  n:\n    cadence:\n      fast: {target: \"btc:default\", every: \"1h\"}\n")
    .batch(None, "0001.json", "b1", &root_hex(5));
    let s = Scheduler::start_with(&root, &FAST_RETRIES);
    if confirmations > 0 {
        wait_pending(&s, "n", "txid");
        proxy.lie(true);
        node.generate(1);
    }
    let more = u64::from(confirmations.saturating_sub(1));
    let receipt = no_receipt_while_lying(&s, &root, &proxy, ("n", "btc.default", scenario), || {
        if more > 0 {
            node.generate(more);
        }
    });
    let att = &receipt["attestation"];
    let txid = att["txid"].as_str().expect("txid");
    let ours =
        node.live_anchors(&vmsh_scheduler::model::digest::to_hex(&vmsh_scheduler::anchor::btc::anchor_data(&[5; 32])));
    assert_eq!(ours, vec![txid.to_string()], "the receipt names our one transaction: {receipt}");
    if confirmations == 0 {
        return receipt;
    }
    let height = node.height_of(txid).expect("mined");
    assert_eq!(att["height"], json!(height), "{receipt}");
    assert_eq!(att["blockHash"], json!(node.block_hash(height).expect("block")), "{receipt}");
    receipt
}

/// A bitcoind whose wallet answers our txid with another transaction (mined in another
/// block) is not believed.
#[test]
fn a_bitcoind_answering_another_transaction_for_our_txid_is_not_believed() {
    btc_lie("lying bitcoind: another transaction for our txid", 1, |call, (decoy, _)| {
        (call.method == "gettransaction" && call.params[0] != json!(decoy))
            .then(|| (call.upstream)("gettransaction", json!([decoy])))
    });
}

/// A bitcoind whose wallet gives our txid the bytes of another transaction — one without our
/// OP_RETURN — is not believed.
#[test]
fn a_bitcoind_whose_transaction_bytes_lack_our_op_return_is_not_believed() {
    btc_lie("lying bitcoind: another transaction's bytes for our txid", 1, |call, (decoy, decoy_hex)| {
        if call.method != "gettransaction" || call.params[0] == json!(decoy) || call.result.is_null() {
            return None;
        }
        let mut lied = call.result.clone();
        lied["hex"] = json!(decoy_hex);
        Some(lied)
    });
}

/// A bitcoind whose wallet says our transaction is deeper than its chain has it is not
/// believed: the anchor waits for the confirmations it needs.
#[test]
fn a_bitcoind_whose_wallet_overstates_the_confirmations_is_not_believed() {
    let receipt = btc_lie("lying bitcoind: more confirmations than the chain has", 2, |call, (decoy, _)| {
        if call.method != "gettransaction" || call.params[0] == json!(decoy) || !call.result["blockhash"].is_string() {
            return None;
        }
        let mut lied = call.result.clone();
        lied["confirmations"] = json!(50);
        Some(lied)
    });
    assert_eq!(receipt["attestation"]["confirmations"], 2, "{receipt}");
}

/// A bitcoind that decodes our signed transaction to another txid (an anchor of another root,
/// already mined) is not believed: nothing is sent under that txid, and no receipt names it.
#[test]
fn a_bitcoind_decoding_our_transaction_to_another_txid_is_not_believed() {
    btc_lie("lying bitcoind: another txid for our signed transaction", 0, |call, (decoy, _)| {
        if call.method != "decoderawtransaction" || call.result.is_null() {
            return None;
        }
        let mut lied = call.result.clone();
        lied["txid"] = json!(decoy);
        Some(lied)
    });
}

/// A `btc:` cookie file that is a named pipe (nothing will ever write it): the target fails at
/// once, saying why, and nothing waits on the pipe — the other namespaces keep their cadence
/// and the scheduler stays live.
#[test]
fn a_cookie_file_that_is_a_named_pipe_fails_its_target_at_once_and_holds_nothing() {
    let root = Root::new();
    let cookie = root.path().join("bitcoind/.cookie");
    std::fs::create_dir_all(cookie.parent().expect("parent")).expect("mkdir");
    let c = std::ffi::CString::new(cookie.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo reads a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let node = crate::support::fake_bitcoind::FakeBitcoind::start();
    root.anchors(&format!(
        "btc:\n  node: {{rpcUrl: \"{}\", network: regtest, cookieFile: bitcoind/.cookie}}\n",
        node.url()
    ))
    .namespaces(&format!(
        "namespaces:\n  btc:\n    cadence:\n      fast: {{target: \"btc:node\", every: \"1s\"}}\n{HEALTHY_NS}"
    ))
    .batch(None, "0001.json", "b1", &root_hex(1));
    let mut env = FAST_RETRIES.to_vec();
    env.push(("VMSH_ANCHOR_WORKERS", "1"));
    let s = Scheduler::start_with(&root, &env);
    let pid = scheduler_pid(root.path());
    wait_for(LONG, "three failures of the btc namespace", || (failures(&s, "btc").len() >= 3).then_some(()));
    for f in failures(&s, "btc") {
        assert!(f.message.contains("not a regular file"), "{}", f.message);
        assert!(f.ms < 1_000, "the failure took {} ms: {}", f.ms, f.message);
    }
    let before = journal_gaps(&root, "healthy").len();
    wait_for(LONG, "the healthy namespace to keep anchoring", || {
        (journal_gaps(&root, "healthy").len() >= before + 3).then_some(())
    });
    assert_unharmed(&s, pid);
}
