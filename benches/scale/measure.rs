//! Measurements taken of a running scheduler: percentiles, CPU over a window, scrapers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::service::{Service, get};

/// p50, p99 and max of a sample (nearest rank), or `None` when empty.
pub(crate) fn percentiles(values: &mut [f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    Some((rank(0.50), rank(0.99), values[values.len() - 1]))
}

/// CPU and memory over a window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    /// CPU seconds per minute of wall time (60 = one core busy).
    pub cpu_s_per_min: f64,
    /// Resident set at the end, MiB.
    pub rss_mib: f64,
}

/// Watches the process for `window` and returns its CPU rate and final RSS.
pub(crate) fn usage_over(service: &Service, window: Duration) -> Result<Usage, String> {
    let (cpu0, _) = service.usage()?;
    let t0 = Instant::now();
    std::thread::sleep(window);
    let (cpu1, rss) = service.usage()?;
    let wall = t0.elapsed().as_secs_f64();
    Ok(Usage { cpu_s_per_min: (cpu1 - cpu0) / wall * 60.0, rss_mib: rss as f64 / 1024.0 })
}

/// Latency of one endpoint under concurrent scrapers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scrape {
    /// Latency p50, ms.
    pub p50_ms: f64,
    /// Latency p99, ms.
    pub p99_ms: f64,
    /// Requests answered.
    pub requests: usize,
    /// Body size of the last answer, bytes.
    pub bytes: usize,
}

/// `scrapers` threads GET `path` back to back for `window`; every answer must be 200.
pub(crate) fn scrape(addr: SocketAddr, path: &str, scrapers: usize, window: Duration) -> Result<Scrape, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let bytes = Arc::new(Mutex::new(0usize));
    let failure = Arc::new(Mutex::new(None::<String>));
    let threads: Vec<_> = (0..scrapers)
        .map(|_| {
            let (stop, latencies, bytes, failure) =
                (Arc::clone(&stop), Arc::clone(&latencies), Arc::clone(&bytes), Arc::clone(&failure));
            let path = path.to_string();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    match get(addr, &path) {
                        Ok(r) if r.status == 200 => {
                            let ms = t0.elapsed().as_secs_f64() * 1000.0;
                            latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(ms);
                            *bytes.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = r.body.len();
                        }
                        Ok(r) => {
                            *failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Some(format!("{path} answered {}", r.status));
                        }
                        Err(e) => {
                            *failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Some(format!("{path}: {e}"));
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a scraper thread panicked")?;
    }
    if let Some(f) = failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        return Err(f);
    }
    let mut l = std::mem::take(&mut *latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let requests = l.len();
    let (p50_ms, p99_ms, _) = percentiles(&mut l).ok_or_else(|| format!("no answer from {path} in {window:?}"))?;
    let bytes = *bytes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(Scrape { p50_ms, p99_ms, requests, bytes })
}

/// The machine, for a report: cores, CPU model and memory, from /proc.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .map_or(0.0, |kib: f64| kib / (1024.0 * 1024.0));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find_map(|l| Some(l.strip_prefix("model name")?.split_once(':')?.1.trim().to_string())))
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu}), {mem_gib:.1} GiB memory")
}
