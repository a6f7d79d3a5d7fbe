//! Building and running the application, in three steps as zero2prod's `Application` has
//! them: [`Application::build`] loads everything that can fail before any actor starts (so a
//! bad start exits with one clear line) and binds the port; [`Application::run_until_stopped`]
//! starts the actors and the HTTP server and serves until asked to stop; then it shuts down
//! in an order we own ([`super::shutdown`]).
//!
//! The clock and the logger come in from outside ([`Deps`]): the binary passes the system
//! clock, a test a [`crate::clock::ManualClock`] that decides when every timer fires.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::prelude::*;
use slog::{Logger, info, warn};

use super::cluster::{ClusterClients, Joined};
use super::control::{Asks, Control};
use super::shutdown::{self, Exit, Running};
use crate::admin::api::AdminState;
use crate::anchor::Drivers;
use crate::anchor::aggregate::Aggregator;
use crate::anchor::lanes::LaneBoard;
use crate::anchor::local::LocalDriver;
use crate::anchor::local::shared::SharedJournals;
use crate::anchor::pool::{AnchorPool, PoolSettings};
use crate::anchor::rfc3161::TsaWatch;
use crate::batch::BatchReader;
use crate::clock::Clock;
use crate::clock::MonoMs;
use crate::cluster::actor::{ClusterActor, Reporting};
use crate::config::tokens::TokenStore;
use crate::config::{self, ConfigErrors, ParseCache, Settings};
use crate::health::actor::{ConfigReport, HealthActor, StateReport};
use crate::metrics::{Metrics, TsaBoard};
use crate::scheduler::backoff::BackoffPolicy;
use crate::scheduler::cluster::ClusterRole;
use crate::scheduler::config::{self as running_config, Config};
use crate::scheduler::gate::StartGate;
use crate::scheduler::namespace::NamespaceDeps;
use crate::scheduler::supervisor::{CheckConfig, Supervisor, Watch};
use crate::storage::durable::ensure_dir;
use crate::storage::group_commit::GroupCommit;
use crate::storage::lockfile::{self, LockError, OwnerLock};
use crate::storage::receipts::ReceiptWriter;
use crate::storage::state::backend::StateBackend;
use crate::storage::state::file::FileBackend;
use crate::storage::state::store::StateStore;
use crate::storage::state::{self, Loaded, Origin, StateError, StateFile};
use crate::storage::writer::Writer;
use std::time::Duration;

/// Why the service could not start (or stopped badly); each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Invalid environment or flags.
    #[error("invalid setting {0}")]
    Settings(#[from] config::settings::SettingsError),
    /// Invalid or unreadable config files.
    #[error("{0}")]
    Config(ConfigErrors),
    /// Unusable state file.
    #[error("{0}")]
    State(#[from] StateError),
    /// The state folder cannot be created.
    #[error("cannot create state folder {path}: {source}")]
    StateDir {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds the lock of the state file or of the root.
    #[error(
        "{what} is in use by another vmsh-scheduler: {source}; stop that process first, or give this one a VMSH_STATE and VMSH_ROOT of its own"
    )]
    InUse {
        /// What the lock guards (`state file PATH`, `root PATH`).
        what: String,
        /// Which lock, and its holder.
        source: LockError,
    },
    /// A lock file, or the folder it goes in, cannot be created or locked.
    #[error("cannot take ownership of {what}: {source}")]
    Lock {
        /// What the lock guards.
        what: String,
        /// The lock file and the OS error.
        source: LockError,
    },
    /// Cluster mode cannot start: etcd's settings, or joining the cluster.
    #[error("cluster mode: {0}")]
    Cluster(String),
    /// The HTTP port cannot be bound.
    #[error("cannot listen on {addr}: {source} (is another scheduler running? set METRICS_PORT)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The final state write at shutdown failed: memory state is lost.
    #[error("could not write state at shutdown: {0}")]
    FinalWrite(String),
    /// The admin token file is unreadable or invalid.
    #[error("{0}")]
    AdminTokens(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl StartupError {
    /// The process exit code for this error (documented in the README).
    pub fn exit_code(&self) -> i32 {
        match self {
            StartupError::Settings(_) | StartupError::Config(_) | StartupError::AdminTokens(_) => 2,
            StartupError::State(_)
            | StartupError::StateDir { .. }
            | StartupError::Lock { .. }
            | StartupError::Cluster(_)
            | StartupError::FinalWrite(_) => 3,
            StartupError::Bind { .. } => 4,
            StartupError::InUse { .. } => 5,
            StartupError::Other(_) => 1,
        }
    }
}

/// Start-up options that are not settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Move a corrupt state file aside and start empty instead of refusing to start.
    pub reset_corrupt_state: bool,
}

/// What the application is given rather than makes for itself.
#[derive(Clone)]
pub struct Deps {
    /// Where time comes from: every timer and stamp of the service reads it.
    pub clock: Arc<dyn Clock>,
    /// Where log lines go.
    pub log: Logger,
}

/// Everything loaded and bound, ready to run.
pub struct Application {
    /// The locks on the state file and the root, held until the process exits.
    ownership: Vec<OwnerLock>,
    built: Built,
}

/// What [`Application::build`] loaded, for the actors to start from.
struct Built {
    settings: Settings,
    config: Config,
    /// What the start-up parse made of each namespace, for the reloads to come.
    parsed: ParseCache,
    state: StateFile,
    /// Where the state is kept: the state file, loaded; or etcd, joined in
    /// [`Application::run_until_stopped`].
    backend: Backend,
    origin: Origin,
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    log: Logger,
    /// The admin API's tokens; `None` when it is off.
    tokens: Option<Arc<TokenStore>>,
}

/// Where the state is kept.
enum Backend {
    /// The state file, loaded.
    File(FileBackend),
    /// etcd, to join once the application runs.
    Etcd(ClusterClients),
    /// etcd, joined.
    Joined(Joined),
}

impl Application {
    /// Loads config and state and binds the port; nothing runs yet.
    pub fn build(settings: Settings, options: Options, deps: Deps) -> Result<Self, StartupError> {
        let Deps { clock, log } = deps;
        let mut parsed = ParseCache::for_start();
        let config = running_config::load_reusing(
            &settings.namespaces_path,
            settings.anchors_path.as_deref(),
            &settings.load_context(),
            &mut parsed,
        )
        .map_err(StartupError::Config)?;
        let tokens = match &settings.admin_token_file {
            Some(path) => Some(Arc::new(TokenStore::load(path).map_err(StartupError::AdminTokens)?)),
            None => None,
        };
        if let Some(cluster) = settings.cluster.clone() {
            let clients = ClusterClients::new(cluster)?;
            ensure_dir(&settings.root.join("out"))
                .map_err(|source| StartupError::StateDir { path: settings.root.join("out"), source })?;
            let (listener, addr, metrics) = listen(&settings)?;
            metrics.register_cluster().map_err(|e| StartupError::Other(format!("metrics registry: {e}")))?;
            // The state is in etcd and the outputs on a volume the replicas share, so no file
            // is locked; the cluster is joined when the application runs.
            let (state, backend, origin) = (StateFile::default(), Backend::Etcd(clients), Origin::Current);
            let built =
                Built { settings, config, parsed, state, backend, origin, listener, addr, metrics, clock, log, tokens };
            return Ok(Self { ownership: Vec::new(), built });
        }
        let state_dir = match settings.state_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        ensure_dir(&state_dir).map_err(|source| StartupError::StateDir { path: state_dir, source })?;
        // Before the state is read: a second process must not even migrate or move it aside.
        let ownership = take_ownership(&settings.state_path, &settings.root, clock.wall_ms())?;
        // A snapshot cut short by a crash left its temporary behind, as large as the state.
        match crate::storage::durable::remove_stale_temps(&settings.state_path) {
            Ok(0) => {}
            Ok(n) => info!(log, "removed temporary state files a crash left behind"; "files" => n),
            Err(e) => warn!(log, "cannot remove temporary state files a crash left behind"; "err" => %e),
        }
        // With --reset-corrupt-state each corrupt file (the state file or one of its logs) is
        // moved aside in turn, and what remains is loaded.
        let mut moved_aside = 0;
        let mut backend = FileBackend::new(settings.state_path.clone());
        let loaded = loop {
            match backend.load() {
                Ok(loaded) => break loaded,
                Err(StateError::Corrupt { path, reason }) if options.reset_corrupt_state && moved_aside < 3 => {
                    let moved = state::move_aside(&path, clock.wall_ms()).map_err(|e| {
                        StartupError::Other(format!("cannot move corrupt state file {} aside: {e}", path.display()))
                    })?;
                    warn!(log, "state file was corrupt; moved aside, starting without it";
                        "reason" => reason, "moved_to" => %moved.display());
                    moved_aside += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let (listener, addr, metrics) = listen(&settings)?;
        let Loaded { state, origin } = loaded;
        let backend = Backend::File(backend);
        let built =
            Built { settings, config, parsed, state, backend, origin, listener, addr, metrics, clock, log, tokens };
        Ok(Self { ownership, built })
    }

    /// The address the HTTP server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.built.addr
    }

    /// Starts the actors and the HTTP server and serves until `control` asks to stop
    /// (SIGTERM, SIGINT or SIGQUIT, for the binary), then drains and writes state. Must run
    /// inside an actix `System`: for the binary, the one its signals were installed in.
    pub async fn run_until_stopped(self, mut control: impl Control) -> Result<Exit, StartupError> {
        let Application { ownership, built } = self;
        // Threads that a forced exit leaves running may still be writing: the locks go only
        // when the process does, and the kernel releases them then.
        std::mem::forget(ownership);
        let log = built.log.clone();
        if let Some(which) = control.stop_asked_during_start_up().await {
            info!(log, "shutdown requested during start-up: stopping before anything started"; "signal" => which);
            return Ok(Exit::Clean);
        }
        let grace = built.settings.shutdown_grace;
        let mut built = built;
        if let Backend::Etcd(clients) = built.backend {
            let joined = tokio::select! {
                joined = clients.join(&built.clock, &log) => joined?,
                which = control.next_stop() => {
                    info!(log, "shutdown requested while joining the cluster: stopping before anything started"; "signal" => which);
                    return Ok(Exit::Clean);
                }
            };
            built.backend = Backend::Joined(joined);
        }
        let running = start(built)?;
        let which = serve(&running.supervisor, &mut control, &log).await;
        info!(log, "shutdown requested: draining"; "signal" => which, "grace_s" => grace.as_secs_f64());
        shutdown::shutdown(running, &mut control, grace, &log).await
    }
}

/// Binds the HTTP port and makes the metrics registry.
fn listen(settings: &Settings) -> Result<(TcpListener, SocketAddr, Arc<Metrics>), StartupError> {
    let addr = SocketAddr::new(settings.bind, settings.port);
    let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartupError::Bind { addr, source })?;
    let metrics = Arc::new(
        Metrics::with_options(settings.namespace_histograms)
            .map_err(|e| StartupError::Other(format!("metrics registry: {e}")))?
            .with_fleet(settings.fleet),
    );
    Ok((listener, addr, metrics))
}

/// Starts the actors, then the HTTP server.
fn start(built: Built) -> Result<Running, StartupError> {
    let Built { settings, config, parsed, state, backend, origin, listener, addr, metrics, clock, log, tokens } = built;
    let batches = BatchReader::new(
        settings.root.clone(),
        settings.batch_read_timeout,
        Arc::clone(&clock),
        metrics.batch_reads_stuck.clone(),
        log.new(slog::o!("component" => "batches")),
    );
    // One board of TSA health for the process: the rfc3161 drivers write it (and keep it
    // across reloads), /health and /metrics read it.
    let tsa = TsaWatch::new(Arc::new(TsaBoard::new(Arc::clone(&clock))), log.new(slog::o!("component" => "tsa")));
    metrics.show_tsa(Arc::clone(tsa.board()));
    // The pool's lanes, as /health shows them.
    let lanes = Arc::new(LaneBoard::default());
    let health = HealthActor::new(
        Arc::clone(&clock),
        settings.tick,
        settings.anchor_timeout,
        ConfigReport::default(),
        StateReport {
            path: settings.state_path.display().to_string(),
            origin: format!("{origin:?}").to_lowercase(),
            last_write_ms: None,
            error: None,
        },
    )
    .with_batch_reader(batches.monitor())
    .with_tsa(Arc::clone(tsa.board()))
    .with_lanes(Arc::clone(&lanes))
    .with_fleet(Arc::clone(metrics.fleet()), log.new(slog::o!("component" => "metrics")))
    .start();
    let (store_backend, joined): (Arc<dyn StateBackend>, Option<Joined>) = match backend {
        Backend::File(file) => (Arc::new(file), None),
        Backend::Joined(joined) => (Arc::clone(&joined.backend) as Arc<dyn StateBackend>, Some(joined)),
        Backend::Etcd(_) => return Err(StartupError::Other("cluster mode started before joining".into())),
    };
    let health = match &joined {
        Some(j) => {
            health.do_send(crate::cluster::actor::ClusterUpdate(j.first_report(), MonoMs::MIN));
            health
        }
        None => health,
    };
    let shared = |name: &str| config.namespaces.get_key_value(name).map(|(n, _)| Arc::clone(n));
    let held = state.into_shared(shared);
    let initial = Supervisor::initial_state(&config, &held);
    let store = StateStore::new(
        store_backend,
        held,
        health.clone().recipient(),
        Arc::clone(&metrics),
        log.new(slog::o!("component" => "state")),
    )
    .start();
    // One writer, and one round of syncs, for receipts and journal lines alike.
    let writer = Arc::new(Writer::new(Arc::new(GroupCommit::new())));
    let mut drivers =
        Drivers::watched(settings.root.clone(), &config.targets, Arc::clone(&clock), Arc::clone(&writer), tsa);
    let mut receipts = ReceiptWriter::new(settings.root.clone(), Arc::clone(&writer));
    if let Some(j) = &joined {
        // Outputs on the shared volume count only once committed in etcd, under the claim.
        let fenced = |what: &str| metrics.fenced_writes.with_label_values(&[what]);
        let node = j.membership.node();
        let journals = SharedJournals::new(node, Arc::clone(&j.ledger), Arc::clone(&writer), fenced("journal"));
        let local = LocalDriver::new(settings.root.clone(), Arc::clone(&clock), writer).in_cluster(journals);
        drivers = drivers.with_local(local);
        receipts = receipts.in_cluster(node, Arc::clone(&j.ledger), fenced("receipt"));
    }
    // The pool and the aggregator each send the other jobs: the aggregator is started with
    // the pool's address, and the pool is given the aggregator's.
    let mut aggregator = None;
    let pool = AnchorPool::create(|ctx| {
        let started = Aggregator::new(
            ctx.address(),
            store.clone(),
            Arc::clone(&clock),
            Arc::clone(&metrics),
            receipts.clone(),
            log.new(slog::o!("component" => "aggregate")),
        )
        .start();
        aggregator = Some(started.clone());
        AnchorPool::new(
            PoolSettings {
                concurrency: settings.anchor_workers,
                // Real time, not the injected clock's: it bounds a job's network and disk I/O,
                // which no test clock can hurry, and a manual clock moved on by hours would
                // otherwise cut short every job running at that moment.
                timeout: settings.anchor_timeout,
                receipts,
            },
            drivers.clone(),
            Arc::clone(&clock),
            Arc::clone(&metrics),
        )
        .with_aggregator(started)
        .with_board(Arc::clone(&lanes), log.new(slog::o!("component" => "pool")))
    });
    let alarm = crate::scheduler::alarm::Alarm::start(Arc::clone(&clock));
    let deps = Arc::new(NamespaceDeps {
        clock: Arc::clone(&clock),
        pool: pool.clone(),
        aggregator,
        store: store.clone(),
        health: health.clone(),
        metrics: Arc::clone(&metrics),
        log: log.clone(),
        root: settings.root.clone(),
        batches,
        backoff: BackoffPolicy { base_secs: settings.base_backoff_secs, max_level: settings.max_backoff },
        recheck: settings.tick,
        gate: Arc::new(if joined.is_some() { StartGate::closed() } else { StartGate::open() }),
        alarm,
    });
    let namespaces = config.namespaces.len();
    let config_hash = config.hash.clone();
    let watch = Watch {
        namespaces: settings.namespaces_path.clone(),
        targets: settings.anchors_path.clone(),
        tick: settings.tick,
        context: settings.load_context(),
        tokens: tokens.clone(),
    };
    metrics.pause_alert_after.set(settings.pause_alert_after.as_secs_f64());
    if tokens.is_some() {
        metrics.register_admin().map_err(|e| StartupError::Other(format!("metrics registry: {e}")))?;
        health.do_send(crate::health::actor::AdminTokensReport(None));
    }
    let reader = deps.batches.monitor();
    let mut cluster_actor = None;
    let supervisor = match joined {
        None => Supervisor::new(watch, (config, parsed), initial, deps, drivers).start(),
        Some(joined) => Supervisor::create(|ctx| {
            let reporting = Reporting {
                health: health.clone().recipient(),
                metrics: Arc::clone(&metrics),
                prefix: joined.prefix.clone(),
                ttl_s: joined.ttl_s,
            };
            // About three rounds per TTL: a lease is counted on for two thirds of it.
            let every = Duration::from_millis(joined.ttl_s.saturating_mul(1000) / 3).max(Duration::from_millis(500));
            let actor = ClusterActor::new(joined.membership, every, Arc::clone(&clock), ctx.address().recipient())
                .with_namespaces(Arc::new(config.namespaces.keys().map(|k| k.to_string()).collect::<BTreeSet<_>>()))
                .reporting(reporting)
                .start();
            cluster_actor = Some(actor.clone());
            let role = ClusterRole::new(actor, joined.backend, Arc::clone(&deps.gate));
            Supervisor::new(watch, (config, parsed), initial, deps, drivers).in_cluster(role)
        }),
    };
    let http_state = crate::http::HttpState {
        health: health.clone(),
        live: vec![
            ("supervisor", supervisor.clone().recipient()),
            ("health", health.clone().recipient()),
            ("pool", pool.clone().recipient()),
            ("state", store.clone().recipient()),
        ],
        batches: Some(reader),
    };
    let admin = AdminState {
        tokens,
        supervisor: supervisor.clone(),
        health: health.clone(),
        metrics: Arc::clone(&metrics),
        log: log.new(slog::o!("component" => "admin")),
        clock: Arc::clone(&clock),
    };
    let server = crate::http::start(listener, http_state, crate::admin::api::routes(admin), &metrics)
        .map_err(|e| StartupError::Other(format!("cannot start HTTP server on {addr}: {e}")))?;
    if origin == Origin::Migrated {
        info!(log, "migrated the original service's state file"; "path" => %settings.state_path.display());
    }
    info!(log, "vmsh-scheduler started";
            "addr" => %addr, "namespaces" => namespaces, "config_hash" => config_hash,
            "state" => %settings.state_path.display(),
            "concurrency" => settings.anchor_workers.map_or_else(|| "per scheme".to_string(), |n| n.to_string()));

    Ok(Running { health, supervisor, pool, store, server, cluster: cluster_actor })
}

/// Serves until `control` asks to stop; answers its other requests meanwhile. Returns the
/// name of the request that asked to stop.
async fn serve(supervisor: &Addr<Supervisor>, control: &mut impl Control, log: &Logger) -> &'static str {
    // At most one config check is asked for at a time; requests that arrive meanwhile fold
    // into one more, so a storm of SIGHUP cannot queue up work.
    let mut check: Option<std::pin::Pin<Box<actix::dev::Request<Supervisor, CheckConfig>>>> = None;
    let mut check_again = false;
    // Signals ignored are logged the first time each comes.
    let mut logged = BTreeSet::new();
    loop {
        tokio::select! {
            (name, asks) = control.next() => match asks {
                Asks::Stop => return name,
                Asks::CheckConfig if check.is_some() => check_again = true,
                Asks::CheckConfig => check = Some(Box::pin(supervisor.send(CheckConfig))),
                Asks::Ignore(reason) => {
                    if logged.insert(name) {
                        info!(log, "signal ignored (logged once per signal)"; "signal" => name, "reason" => reason);
                    }
                }
            },
            _ = async { if let Some(c) = check.as_mut() { let _ = c.as_mut().await; } }, if check.is_some() => {
                check = std::mem::take(&mut check_again).then(|| Box::pin(supervisor.send(CheckConfig)));
            }
        }
    }
}

/// Takes the locks on the state file and on the root's outputs, always in this order (so of
/// two processes that share either, one wins) and writes this process's record into each.
fn take_ownership(state_path: &Path, root: &Path, now: crate::clock::WallMs) -> Result<Vec<OwnerLock>, StartupError> {
    let record = lockfile::record(std::process::id(), &lockfile::host_name(), &crate::clock::rfc3339(now));
    let out = root.join("out");
    ensure_dir(&out).map_err(|source| StartupError::Lock {
        what: format!("root {}", root.display()),
        source: LockError::Io { path: out.clone(), reason: format!("cannot create the folder: {source}") },
    })?;
    let mut held = Vec::new();
    for (what, path) in [
        (format!("state file {}", state_path.display()), lockfile::state_lock_path(state_path)),
        (format!("root {}", root.display()), lockfile::root_lock_path(root)),
    ] {
        match lockfile::acquire(&path, &record, &held) {
            Ok(Some(lock)) => held.push(lock),
            Ok(None) => {}
            Err(source @ LockError::Held { .. }) => return Err(StartupError::InUse { what, source }),
            Err(source) => return Err(StartupError::Lock { what, source }),
        }
    }
    Ok(held)
}
