//! Writing to stdout and stderr without `print!`'s panic: a reader that went away (`| head`,
//! a closed terminal, a supervisor that closed our stderr) is not a reason to crash, and
//! the exit status must stay the one documented for what happened.

use std::io::{self, Write as _};

/// Writes `text` to stdout as it is; a failed write is dropped.
pub fn out(text: &str) {
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

/// Writes `line` and a newline to stderr; a failed write is dropped.
pub fn err(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}
