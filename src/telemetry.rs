//! Structured logging: slog JSON lines on stdout (time, level, msg, service, version and the
//! event's fields), or a readable format for terminals; both stamp lines with RFC 3339 UTC times.

use std::io;

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
            let json = slog_json::Json::new(io::stdout())
                .set_newlines(true)
                .set_flush(true)
                .add_key_value(o!(
                    "time" => slog::PushFnValue(|_, ser| ser.emit(crate::clock::rfc3339(now_ms()))),
                    "level" => slog::FnValue(|r| level_name(r.level())),
                    "msg" => slog::PushFnValue(|r, ser| ser.emit(r.msg())),
                ))
                .build()
                .fuse();
            Box::new(json)
        }
        LogFormat::Text => {
            let decorator = slog_term::PlainSyncDecorator::new(io::stdout());
            // The same RFC 3339 UTC time as the JSON lines: slog-term's default has neither the
            // year nor the zone, which a log read next to receipts and state needs.
            let format = slog_term::FullFormat::new(decorator)
                .use_custom_timestamp(|w: &mut dyn io::Write| w.write_all(crate::clock::rfc3339(now_ms()).as_bytes()));
            Box::new(format.build().fuse())
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

fn now_ms() -> i64 {
    use crate::clock::{Clock, SystemClock};
    // Only the wall clock is used here, whose origin does not matter.
    SystemClock::new().wall_ms()
}

/// A logger that drops everything, for tests.
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}
