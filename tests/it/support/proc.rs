//! Readers of /proc, for tests that watch a process from outside: whether it still runs, its
//! memory, open files, reads and threads, and which process is the scheduler of a root (the
//! harness keeps its child private, so tests find it here).

use std::fmt::Display;
use std::path::Path;

use super::BIN;

/// Whether a process is gone or a zombie (dead, awaiting its reaper).
pub(crate) fn is_dead(pid: impl Display) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// The pid of the one live scheduler binary whose working folder is `root` (the harness
/// starts each scheduler in its root), not counting its own children caught between fork and
/// exec; fails the test unless exactly one runs there.
pub(crate) fn scheduler_pid(root: &Path) -> u32 {
    let bin = std::fs::canonicalize(BIN).expect("binary path");
    let cwd = std::fs::canonicalize(root).expect("root path");
    let found: Vec<u32> = std::fs::read_dir("/proc")
        .expect("list /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == bin)
                && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == cwd)
                && !is_dead(pid)
        })
        .collect();
    // A child the scheduler forked to run an exec: command shows the scheduler's binary and
    // folder until it execs: it is not a second scheduler.
    let parent = |pid: &u32| status_field(pid, "PPid").and_then(|p| p.parse::<u32>().ok());
    let found: Vec<u32> = found.iter().copied().filter(|pid| parent(pid).is_none_or(|p| !found.contains(&p))).collect();
    assert_eq!(found.len(), 1, "one scheduler runs in {}: {found:?}", root.display());
    found[0]
}

/// A field of `/proc/<pid>/status` as written there (`Umask` gives `0022`); `None` once the
/// process is gone.
pub(crate) fn status_field(pid: impl Display, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`, `VmSize`); `None` once the process
/// is gone.
pub(crate) fn status_kib(pid: impl Display, field: &str) -> Option<u64> {
    status_field(pid, field)?.strip_suffix("kB")?.trim().parse().ok()
}

/// How many files a process has open.
pub(crate) fn open_fds(pid: impl Display) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Bytes a process has read so far (`rchar` of /proc/PID/io).
pub(crate) fn bytes_read(pid: impl Display) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| io.lines().find_map(|l| l.strip_prefix("rchar:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

/// Whether a thread of a process is blocked opening a FIFO nobody reads (the kernel's
/// `wait_for_partner`).
pub(crate) fn blocked_on_a_fifo(pid: impl Display) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .any(|t| std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.trim() == "wait_for_partner"))
        })
        .unwrap_or(false)
}
