//! Entry point: parse the command line and environment, set up logging, run.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use vmsh_scheduler::anchor::targets::TargetsConfig;
use vmsh_scheduler::app::control::Signals;
use vmsh_scheduler::app::shutdown::Exit;
use vmsh_scheduler::app::startup::{Application, Deps, Options};
use vmsh_scheduler::cli::status;
use vmsh_scheduler::cli::verify::VerifyOptions;
use vmsh_scheduler::cli::{self, Cli, Command};
use vmsh_scheduler::clock::SystemClock;
use vmsh_scheduler::config::Settings;
use vmsh_scheduler::config::settings::{Paths, listen_addr, read_env_file};
use vmsh_scheduler::{stdio, telemetry};

fn main() -> ExitCode {
    tune_allocator();
    ExitCode::from(u8::try_from(run()).unwrap_or(1))
}

/// A scrape of a large fleet allocates tens of megabytes for a moment. glibc raises its mmap
/// threshold after such a buffer is freed, so the next one comes from a heap it never returns
/// to the system, and every thread gets an arena of its own to keep: RSS doubled after a few
/// scrapes at 10,000 namespaces. A fixed 4 MiB threshold keeps those buffers in mmap (returned
/// on free) while a config parse's many mid-sized buffers stay on the heap (mapping each anew
/// made a reload 30 % slower); two arenas are plenty for this service's handful of threads.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning, before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn run() -> i32 {
    let cli = Cli::parse();
    // Only ./.env (not a parent folder's); none is fine: the environment may say it all.
    let env_file = cli.env_file.clone().or_else(|| Path::new(".env").exists().then(|| ".env".into()));
    if let Some(path) = env_file {
        match read_env_file(&path) {
            Ok(vars) => {
                for (key, value) in vars {
                    if std::env::var_os(&key).is_none() {
                        // SAFETY: no other thread exists yet to read the environment meanwhile.
                        unsafe { std::env::set_var(&key, value) };
                    }
                }
            }
            Err(e) => {
                stdio::err(&format!("vmsh-scheduler: {e}"));
                return 2;
            }
        }
    }
    // A variable whose name or value is not UTF-8 (vars() would panic on it) cannot be one of
    // ours or a ${VAR} a YAML file refers to: it is left out.
    let env: HashMap<String, String> =
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
    let overrides = &cli.overrides;
    // Each subcommand reads only the settings it uses, so a setting meant for the service
    // (VMSH_TICK_MS, LOG_LEVEL …) cannot stop a `validate`, `verify` or `status`.
    let paths = Paths::from_env(&env, overrides);
    match &cli.command {
        Some(Command::Validate { file }) => {
            let file = file.clone().unwrap_or_else(|| paths.namespaces.clone());
            return cli::validate(&file, paths.anchors.as_deref(), &paths.load_context(&env));
        }
        Some(Command::Verify { receipt, trust_bundle, rpc }) => {
            // The targets file only supplies defaults (RPC URL, trust bundle): a problem with it
            // must not stop a verification that names its own.
            let targets = paths.anchors.as_deref().and_then(|path| {
                let snapshot = vmsh_scheduler::config::read_snapshot(path).ok()?;
                TargetsConfig::parse(&snapshot.bytes, path, &paths.load_context(&env)).ok()
            });
            // A receipt written in cluster mode counts only with its commit in etcd: the
            // VMSH_ETCD_* settings say where. Read only when set, and a problem with them
            // only stops the verification of a receipt that needs them.
            let etcd = match vmsh_scheduler::config::settings::cluster(&env, overrides) {
                Ok(None) => None,
                Ok(Some(c)) => Some(
                    vmsh_scheduler::cluster::connect::client(&c, std::time::Duration::from_secs(5))
                        .map(std::sync::Arc::new),
                ),
                Err(e) => Some(Err(format!("invalid setting {e}"))),
            };
            let opts = VerifyOptions {
                root: paths.root.clone(),
                trust_bundle: trust_bundle.clone(),
                rpc: rpc.clone(),
                targets,
                etcd,
            };
            return cli::verify(receipt, &opts);
        }
        Some(Command::Status { url }) => {
            let url = match url {
                Some(url) => url.clone(),
                None => match listen_addr(&env, overrides) {
                    Ok((bind, port)) => status::default_url(bind, port),
                    Err(e) => {
                        stdio::err(&format!("vmsh-scheduler: invalid setting {e} (or pass --url)"));
                        return 2;
                    }
                },
            };
            return status::run(&url, std::io::stdout().is_terminal() && !env.contains_key("NO_COLOR"));
        }
        Some(Command::Ctl { action, namespace, cadence, note, url, token_file }) => {
            let url = match url.clone().or_else(|| env.get("VMSH_CTL_URL").cloned()) {
                Some(url) => url,
                None => match listen_addr(&env, overrides) {
                    Ok((bind, port)) => status::default_url(bind, port),
                    Err(e) => {
                        stdio::err(&format!("vmsh-scheduler ctl: invalid setting {e} (or pass --url)"));
                        return cli::ctl::EXIT_USAGE;
                    }
                },
            };
            let file = token_file
                .clone()
                .or_else(|| env.get("VMSH_CTL_TOKEN_FILE").map(std::path::PathBuf::from))
                .or_else(|| env.get("VMSH_ADMIN_TOKEN_FILE").map(std::path::PathBuf::from));
            let Some(file) = file else {
                stdio::err(
                    "vmsh-scheduler ctl: give the admin token's file: --token-file, VMSH_CTL_TOKEN_FILE or VMSH_ADMIN_TOKEN_FILE",
                );
                return cli::ctl::EXIT_USAGE;
            };
            let request = cli::ctl::Request {
                url: &url,
                token_file: &file,
                action: *action,
                namespace: namespace.as_deref(),
                cadence: cadence.as_deref(),
                note: note.as_deref(),
            };
            return cli::ctl::run(&request);
        }
        Some(Command::MigrateState { to, force }) => {
            let now = vmsh_scheduler::clock::Clock::wall_ms(&SystemClock::new());
            return cli::migrate::run(&env, overrides, *to, *force, now);
        }
        Some(Command::Run) | None => {}
    }
    let settings = match Settings::from_env(&env, overrides) {
        Ok(s) => s,
        Err(e) => {
            stdio::err(&format!("vmsh-scheduler: invalid setting {e}"));
            return 2;
        }
    };

    let (log, guard) = telemetry::init(settings.log_level, settings.log_format);
    let options = Options { reset_corrupt_state: cli.reset_corrupt_state };
    let system = actix::System::new();
    let result = system.block_on(async {
        // Before the slow loads: a signal sent while they run must be seen, not be fatal.
        let signals = Signals::install()?;
        let deps = Deps { clock: Arc::new(SystemClock::new()), log: log.clone() };
        Application::build(settings, options, deps)?.run_until_stopped(signals).await
    });
    // Dropping the runtime would wait for every blocking task, and one stuck on a hung file
    // system would then hold the exit forever. What such a task was writing is either not yet
    // acknowledged (and so redone from the state file at the next start) or already durable.
    std::mem::forget(system);
    // Flush every log line before the exit status is decided.
    drop(log);
    drop(guard);
    match result {
        Ok(Exit::Clean) => 0,
        Ok(Exit::Forced) => 130,
        Err(e) => {
            for line in e.to_string().lines() {
                stdio::err(&format!("vmsh-scheduler: {line}"));
            }
            e.exit_code()
        }
    }
}
