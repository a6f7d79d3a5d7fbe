//! Answers from other services over HTTP (the network targets, etcd): bodies read with a
//! size cap, and errors told without their URL.

/// Reads a response body, refusing more than `limit` bytes.
///
/// The chunks are kept as they arrive and joined once at the end. Growing one buffer instead
/// doubles it up to `limit` for an endless answer before refusing it, and glibc raises its
/// mmap threshold to the largest block freed, so later buffers came from the heap and stayed
/// resident: with two flooding targets the scheduler peaked near 100 MiB instead of 66 and
/// kept 25–45 MiB of it for good (tests/it/adversarial.rs).
pub async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("the answer is larger than {limit} bytes"));
    }
    let mut chunks = Vec::new();
    let mut size = 0;
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        size += chunk.len();
        if size > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        chunks.push(chunk);
    }
    Ok(chunks.concat())
}

/// A reqwest error without its URL.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "broken answer"
    } else {
        "request failed"
    };
    // `without_url` drops the URL that reqwest's Display would print.
    let detail = std::error::Error::source(e).map(|s| format!(": {s}")).unwrap_or_default();
    format!("{kind}{detail}")
}
