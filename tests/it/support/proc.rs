//! Readers of /proc, for tests that watch processes from outside: whether one still runs.

/// Whether a process is gone or a zombie (dead, awaiting its reaper).
pub fn is_dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
