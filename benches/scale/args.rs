//! What the benchmarks share of their command line and their tables.

use std::process::ExitCode;

/// How a benchmark was asked to run.
pub(crate) struct Args {
    /// Under `cargo bench` (Cargo passes `--bench`), rather than a smoke run under `cargo test`.
    pub full: bool,
    /// Namespace counts to measure.
    pub sizes: Vec<usize>,
    /// Whether to write the report into the docs.
    pub write: bool,
}

impl Args {
    /// Reads `--sizes a,b,c` and `--no-write`; `sizes` are the full run's and `smoke` the
    /// smoke run's defaults. A bad `--sizes` is told on stderr and ends the run with 2.
    pub(crate) fn parse(sizes: &[usize], smoke: &[usize]) -> Result<Self, ExitCode> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let full = args.iter().any(|a| a == "--bench");
        let mut parsed = Args { full, sizes: if full { sizes.to_vec() } else { smoke.to_vec() }, write: full };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--sizes" => match it.next().map(|s| s.split(',').map(str::parse).collect::<Result<Vec<usize>, _>>()) {
                    Some(Ok(s)) if !s.is_empty() => parsed.sizes = s,
                    _ => {
                        eprintln!("--sizes takes a comma-separated list of namespace counts, e.g. --sizes 1,100,1000");
                        return Err(ExitCode::from(2));
                    }
                },
                "--no-write" => parsed.write = false,
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// `n` with thousands separated by commas, as the tables write counts.
pub(crate) fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
