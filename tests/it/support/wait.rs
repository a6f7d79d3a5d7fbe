//! Waiting without sleeping as synchronisation: poll a condition until a deadline.

use std::time::{Duration, Instant};

/// Polls `check` every 25 ms until it returns `Some`, or panics after `limit` naming `what`.
pub(crate) fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}
