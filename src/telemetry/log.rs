//! The process logger: slog JSON lines on stdout (time, level, msg, service, version and the
//! event's fields), or a readable format for terminals; both stamp lines with RFC 3339 UTC times.

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

use slog::{Drain, Level, Logger, o};

use crate::config::settings::{LogFormat, LogLevel};

/// Keeps the asynchronous log writer alive; dropping it flushes pending lines.
pub struct LogGuard(#[allow(dead_code)] Option<slog_async::AsyncGuard>);

fn slog_level(level: LogLevel) -> Level {
    match level {
        LogLevel::Trace => Level::Trace,
        LogLevel::Debug => Level::Debug,
        LogLevel::Info => Level::Info,
        LogLevel::Warn => Level::Warning,
        LogLevel::Error => Level::Error,
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Critical => "critical",
        Level::Error => "error",
        Level::Warning => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// Builds the process logger writing to stdout.
pub fn init(level: LogLevel, format: LogFormat) -> (Logger, LogGuard) {
    let threshold = slog_level(level);
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = match format {
        LogFormat::Json => {
            let json = slog_json::Json::new(LogOut::default())
                .set_newlines(true)
                .set_flush(true)
                .add_key_value(o!(
                    "time" => slog::PushFnValue(|_, ser| ser.emit(crate::clock::rfc3339(now_ms()))),
                    "level" => slog::FnValue(|r| level_name(r.level())),
                    "msg" => slog::PushFnValue(|r, ser| ser.emit(r.msg())),
                ))
                .build()
                .ignore_res();
            Box::new(json)
        }
        LogFormat::Text => {
            let decorator = slog_term::PlainSyncDecorator::new(LogOut::default());
            // The same RFC 3339 UTC time as the JSON lines: slog-term's default has neither the
            // year nor the zone, which a log read next to receipts and state needs.
            let format = slog_term::FullFormat::new(decorator)
                .use_custom_timestamp(|w: &mut dyn io::Write| w.write_all(crate::clock::rfc3339(now_ms()).as_bytes()));
            Box::new(format.build().ignore_res())
        }
    };
    let (async_drain, guard) = slog_async::Async::new(drain.filter_level(threshold).fuse())
        .chan_size(16_384)
        // Block rather than drop: a lost log line at 3 a.m. costs more than a short stall.
        .overflow_strategy(slog_async::OverflowStrategy::Block)
        .build_with_guard();
    let log = Logger::root(async_drain.fuse(), o!("service" => "vmsh-scheduler", "version" => crate::VERSION));
    (log, LogGuard(Some(guard)))
}

/// Standard output for log lines: whole lines, written straight to the descriptor, and never an
/// error. A reader that went away (EPIPE), a full disk or a closed descriptor must not stop the
/// scheduler: a failing write used to panic the logger, and with it whatever logged next. The
/// line is dropped instead, and stderr says so once per spell of failures. A non-blocking
/// stdout that is full is waited for, as a blocking one is.
#[derive(Default)]
struct LogOut {
    /// The unfinished line.
    pending: Vec<u8>,
    failing: bool,
}

impl LogOut {
    fn emit(&mut self, line: &[u8]) {
        match write_stdout(line) {
            Ok(()) if self.failing => {
                self.failing = false;
                crate::stdio::err("vmsh-scheduler: stdout takes log lines again");
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                crate::stdio::err(&format!(
                    "vmsh-scheduler: cannot write log lines to stdout ({e}); dropping them until it takes them again"
                ));
            }
            Err(_) => {}
        }
    }
}

impl Write for LogOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') {
            let rest = self.pending.split_off(end + 1);
            let lines = std::mem::replace(&mut self.pending, rest);
            self.emit(&lines);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest);
        }
        Ok(())
    }
}

fn write_stdout(mut bytes: &[u8]) -> io::Result<()> {
    // SAFETY: descriptor 1 stays open for the life of the process; ManuallyDrop never closes it.
    let mut out = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    while !bytes.is_empty() {
        match out.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fd = libc::pollfd { fd: 1, events: libc::POLLOUT, revents: 0 };
                // SAFETY: one valid pollfd; a failed poll just means trying the write again.
                unsafe { libc::poll(&mut fd, 1, -1) };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    use crate::clock::{Clock, SystemClock};
    // Only the wall clock is used here, whose origin does not matter.
    SystemClock::new().wall_ms()
}

/// A logger that drops everything, for tests.
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}
