//! The `Supervisor`: owns the running config. It starts one `NamespaceActor` per namespace
//! and, every tick, re-reads the config files and compares their SHA-256 with the running
//! config's. A change is applied only once the same content has been read twice in a row
//! (so a file caught mid-write is never applied), and only if it validates; it is then
//! applied as a diff: new namespaces started, removed ones stopped, changed ones
//! reconfigured in place, keeping their state. A change that does not validate is logged,
//! counted and shown in /health while the old config keeps running. Those decisions are
//! pure functions in [`super::reload`]; the actor reads, validates and sends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use slog::Logger;

use super::cluster::ClusterRole;
use super::config::{self as running_config, Config};
use super::control::{Control, ControlError, ControlNamespace, Controlled};
use super::namespace::{DrainNamespace, NamespaceActor, NamespaceDeps, Quiesce, Reconfigure, Retire, Revive};
use super::reload::{self, ContentKey, ReloadPolicy, Verdict};
use crate::anchor::Drivers;
use crate::anchor::pool::{TargetsInUse, UpdateDrivers};
use crate::clock::MonoMs;
use crate::config::tokens::{Reread, TokenStore};
use crate::config::{self, ConfigErrors, FileSnapshot, NamespaceConfig, ParseCache};
use crate::health::actor::{
    AdminTokensReport, ConfigApplied, ConfigReport, ReloadRejected, ReloadReport, SetReady, Tick,
};
use crate::model::time::duration_ms;
use crate::model::{CadenceKind, Ping};
use crate::storage::state::NamespaceState;
use crate::storage::state::backend::Namespaces;
use crate::storage::state::store::GetNamespace;
use crate::telemetry::InternalEvent;
use crate::telemetry::events::{ConfigCheckRequested, ConfigLoaded, ConfigRejected, ConfigReloaded, ConfigRestored};

/// Longest wait before a changed file is read the second time.
const SETTLE: Duration = Duration::from_millis(250);

/// How long after start-up or a reload the heap is trimmed: long enough for every actor to
/// have handled its start or change at 100,000 namespaces. Real time, not the injected
/// clock's: it waits for work to be done, not for a point in the schedule.
const SETTLE_HEAP: Duration = Duration::from_secs(3);

/// Where the config files are and how often to look at them.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    /// Namespaces file.
    pub namespaces: PathBuf,
    /// Targets file, if any.
    pub targets: Option<PathBuf>,
    /// Re-read interval.
    pub tick: Duration,
    /// Variables and root for the targets file.
    pub context: config::LoadContext,
    /// The admin API's token file, read again at every tick.
    pub tokens: Option<Arc<TokenStore>>,
}

type Snapshots = Result<(FileSnapshot, Option<FileSnapshot>), ConfigErrors>;

/// A reading of the admin token file: its content, or why it could not be read.
type TokenRead = Option<Result<Vec<u8>, String>>;

/// Owns the config and the namespace actors.
pub(crate) struct Supervisor {
    watch: Watch,
    pub(super) config: Config,
    /// What the last load made of each namespace's text; taken while a load runs.
    parsed: Option<ParseCache>,
    loaded_at_ms: i64,
    /// When content read from disk is acted on.
    reload: ReloadPolicy,
    pub(super) actors: BTreeMap<Arc<str>, Addr<NamespaceActor>>,
    /// Removed namespaces whose actors are still finishing running anchors.
    pub(super) retiring: BTreeMap<Arc<str>, Addr<NamespaceActor>>,
    /// Cluster mode: namespaces handed over whose actors are still finishing running anchors.
    pub(super) handing: BTreeMap<String, Addr<NamespaceActor>>,
    /// The state of each configured namespace, as loaded at start-up, until the actors take it.
    initial_state: Option<BTreeMap<Arc<str>, NamespaceState>>,
    pub(super) deps: Arc<NamespaceDeps>,
    drivers: Drivers,
    pub(super) draining: bool,
    pub(super) log: Logger,
    /// Cluster mode: which namespaces this replica runs; `None` runs them all.
    pub(super) cluster: Option<ClusterRole>,
}

impl Supervisor {
    /// The state of each namespace of `config` in `state` (as the state store holds it),
    /// keyed by the config's own names: a copy of the file's names would be freed once the
    /// actors start, leaving a hole in the heap for each (3 MB at 100,000 namespaces).
    pub(crate) fn initial_state(config: &Config, state: &Namespaces) -> BTreeMap<Arc<str>, NamespaceState> {
        config
            .namespaces
            .keys()
            .filter_map(|name| Some((Arc::clone(name), NamespaceState::clone(state.get(name)?))))
            .collect()
    }

    /// A supervisor for a validated config and the state loaded at start-up (see
    /// [`Supervisor::initial_state`]).
    pub(crate) fn new(
        watch: Watch,
        (config, parsed): (Config, ParseCache),
        state: BTreeMap<Arc<str>, NamespaceState>,
        deps: Arc<NamespaceDeps>,
        drivers: Drivers,
    ) -> Self {
        let log = deps.log.clone();
        let loaded_at_ms = deps.clock.wall_ms();
        Self {
            watch,
            config,
            parsed: Some(parsed),
            loaded_at_ms,
            reload: ReloadPolicy::default(),
            actors: BTreeMap::new(),
            retiring: BTreeMap::new(),
            handing: BTreeMap::new(),
            initial_state: Some(state),
            deps,
            drivers,
            draining: false,
            log,
            cluster: None,
        }
    }

    /// Runs in cluster mode: only the namespaces `role` says this replica holds.
    pub(crate) fn in_cluster(mut self, role: ClusterRole) -> Self {
        self.cluster = Some(role);
        self
    }

    /// Whether this process runs `name` (cluster mode: only what it holds and has loaded).
    fn runs_here(&self, name: &str) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.may_run(name))
    }

    fn report(&self, last_reload: Option<ReloadReport>) -> ConfigReport {
        ConfigReport {
            path: self.watch.namespaces.display().to_string(),
            hash: self.config.hash.clone(),
            targets_path: self.watch.targets.as_ref().map(|p| p.display().to_string()),
            targets_hash: self.config.targets_hash.clone(),
            loaded_at_ms: self.loaded_at_ms,
            last_reload,
        }
    }

    fn emit(&self, event: impl InternalEvent) {
        event.emit(&self.log, &self.deps.metrics);
    }

    /// Reads the config files off the actor's thread; the tick counts as done only once the
    /// read returns, so a hung file system shows as a stalled tick in /health.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.retiring.retain(|_, addr| addr.connected());
        self.deps.metrics.series.pack();
        if self.draining || !self.reload.begin_read() {
            return;
        }
        // The paths alone: the load context (every variable) is not needed to read.
        let (namespaces, targets) = (self.watch.namespaces.clone(), self.watch.targets.clone());
        let token_file = self.watch.tokens.as_ref().map(|t| t.path().to_path_buf());
        let read = async move {
            tokio::task::spawn_blocking(move || -> (Snapshots, TokenRead) {
                let tokens = token_file.as_deref().map(crate::config::tokens::read_file);
                let read = || -> Snapshots {
                    let ns = config::read_snapshot(&namespaces)?;
                    let targets = targets.as_deref().map(config::read_snapshot).transpose()?;
                    Ok((ns, targets))
                };
                (read(), tokens)
            })
            .await
            .unwrap_or_else(|e| {
                (Err(ConfigErrors::file(&PathBuf::from("config"), format!("reader failed: {e}"))), None)
            })
        };
        ctx.spawn(actix::fut::wrap_future(read).map(|(result, tokens), act: &mut Self, ctx| {
            act.deps.health.do_send(Tick);
            if let Some(read) = tokens {
                act.reread_tokens(read);
            }
            act.consider(result, ctx);
            act.recheck_if_asked(ctx);
        }));
    }

    /// Applies a reading of the admin token file: a valid change rotates the tokens; a bad
    /// file leaves the tokens read before in force, and says so.
    fn reread_tokens(&mut self, read: Result<Vec<u8>, String>) {
        let Some(store) = &self.watch.tokens else { return };
        let reread = store.reread(read);
        self.deps.metrics.admin_tokens_ok.set(i64::from(store.error().is_none()));
        self.deps.health.do_send(AdminTokensReport(store.error()));
        match reread {
            Reread::Unchanged => {}
            Reread::Applied(n) => slog::info!(self.log, "admin tokens reloaded"; "tokens" => n),
            Reread::Refused(why) => {
                slog::error!(self.log, "admin token file refused; the tokens read before stay in force"; "err" => why);
            }
        }
    }

    /// Sets the config tick due at `due` on the injected clock (so a test's manual clock
    /// drives reloads); each tick sets the next, one interval on. Ticks missed while the actor
    /// was held up are skipped rather than fired in a burst: the files are read once either way.
    fn arm_tick(&mut self, due: MonoMs, ctx: &mut Context<Self>) {
        let sleep = actix::fut::wrap_future(self.deps.clock.sleep_until(due));
        ctx.spawn(sleep.map(move |(), act: &mut Self, ctx| {
            act.tick(ctx);
            let every = duration_ms(act.watch.tick).max(1);
            let behind = act.deps.clock.mono_ms().saturating_sub(due).max(0);
            act.arm_tick(due.saturating_add(every.saturating_mul(behind / every + 1)), ctx);
        }));
    }

    /// Runs the check asked for while the supervisor was busy, once it is idle again.
    fn recheck_if_asked(&mut self, ctx: &mut Context<Self>) {
        if self.reload.recheck() {
            self.emit(ConfigCheckRequested);
            self.tick(ctx);
        }
    }

    fn consider(&mut self, read: Snapshots, ctx: &mut Context<Self>) {
        let key: ContentKey = match &read {
            Ok((ns, targets)) => (ns.hash.clone(), targets.as_ref().map(|t| t.hash.clone())),
            // Unreadable (e.g. mid-way through a ConfigMap symlink swap): keep running.
            Err(errors) => (format!("unreadable: {errors}"), None),
        };
        match self.reload.read(&key, (&self.config.hash, self.config.targets_hash.as_deref())) {
            Verdict::Running { back: true } => {
                self.emit(ConfigRestored);
                let report =
                    ReloadReport { result: "success", at_ms: self.deps.clock.wall_ms(), hash: key.0, errors: vec![] };
                self.deps.health.do_send(ConfigApplied(self.report(Some(report))));
                return;
            }
            Verdict::Running { back: false } | Verdict::AlreadyRejected => return,
            Verdict::Settle => {
                let at = self.deps.clock.mono_ms().saturating_add(duration_ms(self.watch.tick.min(SETTLE)));
                let sleep = actix::fut::wrap_future(self.deps.clock.sleep_until(at));
                ctx.spawn(sleep.map(|(), act: &mut Self, ctx| act.tick(ctx)));
                return;
            }
            Verdict::Act => {}
        }
        let (ns, targets) = match read {
            Ok(files) => files,
            Err(errors) => return self.reject(&errors, key),
        };
        // Validate off the actor's thread: even a bug in validation must not take the
        // supervisor down with it.
        self.reload.begin_validation();
        let began = self.deps.clock.mono_ms();
        let path = ns.path.clone();
        let context = self.watch.context.clone();
        let mut parsed = self.parsed.take().unwrap_or_default();
        let build = async move {
            tokio::task::spawn_blocking(move || {
                let built = running_config::build_reusing(&ns, targets.as_ref(), &context, &mut parsed);
                (built, parsed)
            })
            .await
        };
        ctx.spawn(actix::fut::wrap_future(build).map(move |result, act: &mut Self, ctx| {
            act.reload.validated();
            match result {
                Ok((Ok(new), parsed)) => {
                    act.parsed = Some(parsed);
                    act.apply(new, began, ctx);
                }
                Ok((Err(errors), parsed)) => {
                    act.parsed = Some(parsed);
                    act.reject(&errors, key);
                }
                // The cache went with the failed task; the next load parses every namespace.
                Err(e) => act.reject(
                    &ConfigErrors::file(&path, format!("internal error while validating (please report it): {e}")),
                    key,
                ),
            }
            act.recheck_if_asked(ctx);
        }));
    }

    fn reject(&mut self, errors: &ConfigErrors, key: ContentKey) {
        self.emit(ConfigRejected { errors: &errors.0, at_ms: self.deps.clock.wall_ms() });
        self.deps.health.do_send(ReloadRejected {
            hash: key.0.clone(),
            errors: errors.0.iter().map(ToString::to_string).collect(),
        });
        self.reload.rejected(key);
    }

    /// Puts `new` in force; `began` is when its validation started (monotonic ms), so the
    /// log can say what a reload cost from the files read to every actor told.
    fn apply(&mut self, new: Config, began: MonoMs, ctx: &mut Context<Self>) {
        let old = std::mem::replace(&mut self.config, new);
        self.loaded_at_ms = self.deps.clock.wall_ms();
        self.reload.applied();
        let diff = reload::diff(&self.actors, &self.retiring, &old.namespaces, &self.config.namespaces);
        for name in &diff.retire {
            if let Some(addr) = self.actors.remove(name) {
                addr.do_send(Retire);
                self.retiring.insert(name.clone(), addr);
            }
        }
        let configs = reload::in_order(&diff.change, &self.config.namespaces);
        for ((_, addr), (_, cfg)) in reload::in_order(&diff.change, &self.actors).zip(configs) {
            if let (Some(addr), Some(cfg)) = (addr, cfg) {
                addr.do_send(Reconfigure(Arc::clone(cfg)));
            }
        }
        for name in diff.revive.iter().chain(&diff.start) {
            if !self.runs_here(name) {
                continue;
            }
            let Some(cfg) = self.config.namespaces.get(name).map(Arc::clone) else { continue };
            let name = name.clone();
            match self.retiring.remove(&name) {
                Some(old_actor) => {
                    let ask = old_actor.send(Revive(Arc::clone(&cfg)));
                    ctx.spawn(actix::fut::wrap_future(ask).map(move |answer, act: &mut Self, ctx| {
                        if !act.is_current(&name, &cfg) {
                            return;
                        }
                        match answer {
                            Ok(()) => {
                                act.actors.insert(name, old_actor);
                            }
                            Err(_) => act.start_namespace(name, cfg, ctx),
                        }
                    }));
                }
                None => self.start_namespace(name, cfg, ctx),
            }
        }
        if let Some(role) = &self.cluster {
            role.configured(self.config.namespaces.keys().map(|k| k.to_string()));
        }
        let (added, removed, changed) = (diff.added(), diff.retire.len(), diff.change.len());
        if old.targets != self.config.targets {
            self.drivers = self.drivers.reconfigured(self.deps.root.clone(), &self.config.targets);
            self.deps.pool.do_send(UpdateDrivers(self.drivers.clone()));
        }
        self.tell_targets_in_use();
        self.emit(ConfigReloaded {
            previous_hash: &old.hash,
            hash: &self.config.hash,
            added,
            removed,
            changed,
            namespaces: self.config.namespaces.len(),
            took_ms: self.deps.clock.mono_ms().saturating_sub(began),
            at_ms: self.deps.clock.wall_ms(),
        });
        // Once the actors have taken their new config, the parse's garbage can go back.
        ctx.run_later(SETTLE_HEAP, |_, _| crate::heap::release_free_memory());
        let report = ReloadReport {
            result: "success",
            at_ms: self.deps.clock.wall_ms(),
            hash: self.config.hash.clone(),
            errors: vec![],
        };
        self.deps.health.do_send(ConfigApplied(self.report(Some(report))));
    }

    /// Tells the pool which targets the running config names (a lane each), and the metrics
    /// which targets' fleet totals to keep.
    fn tell_targets_in_use(&self) {
        // Namespaces mostly share their cadence configs (see the config's parse): each shared
        // one is looked at once, by address, rather than its target hashed per namespace.
        let mut configs: std::collections::HashSet<*const crate::config::CadenceConfig> =
            std::collections::HashSet::new();
        let mut seen: std::collections::HashSet<&crate::model::Target> = std::collections::HashSet::new();
        for ns in self.config.namespaces.values() {
            for c in ns.cadences.values() {
                if configs.insert(Arc::as_ptr(c)) {
                    seen.insert(&c.target);
                }
            }
        }
        let in_use: std::collections::BTreeSet<crate::model::Target> = seen.into_iter().cloned().collect();
        let names: std::collections::HashSet<String> = in_use.iter().map(ToString::to_string).collect();
        self.deps.metrics.retain_targets(|target| names.contains(target));
        self.deps.pool.do_send(TargetsInUse(in_use));
    }

    /// Whether `cfg` is still the running config of `name` (a later reload may have moved on).
    fn is_current(&self, name: &str, cfg: &Arc<NamespaceConfig>) -> bool {
        reload::still_wanted(self.draining, self.actors.contains_key(name), self.config.namespaces.get(name), cfg)
    }

    /// Starts an actor for a namespace new to this process; its state may exist from an
    /// earlier run or an earlier config.
    fn start_namespace(&mut self, name: Arc<str>, cfg: Arc<NamespaceConfig>, ctx: &mut Context<Self>) {
        let fetch = self.deps.store.send(GetNamespace(name.to_string()));
        ctx.spawn(actix::fut::wrap_future(fetch).map(move |state, act: &mut Self, _| {
            if let Ok(state) = state
                && act.is_current(&name, &cfg)
            {
                let addr = NamespaceActor::new(cfg, state, Arc::clone(&act.deps)).start();
                act.actors.insert(name, addr);
            }
        }));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let mut state = self.initial_state.take().unwrap_or_default();
        // In cluster mode nothing runs until the cluster says what this replica holds.
        let all = if self.cluster.is_some() { None } else { Some(&self.config.namespaces) };
        // Collected in name order, which packs the map's nodes full; inserted one by one they
        // stay half empty (4 MB at 100,000 namespaces).
        self.actors = all
            .into_iter()
            .flatten()
            .map(|(name, cfg)| {
                let ns_state = state.remove(name).unwrap_or_default();
                (Arc::clone(name), NamespaceActor::new(Arc::clone(cfg), ns_state, Arc::clone(&self.deps)).start())
            })
            .collect();
        let (hash, namespaces, at_ms) = (&self.config.hash, self.config.namespaces.len(), self.deps.clock.wall_ms());
        self.emit(ConfigLoaded { hash, namespaces, at_ms });
        self.tell_targets_in_use();
        self.deps.health.do_send(ConfigApplied(self.report(None)));
        self.deps.health.do_send(Tick);
        self.deps.health.do_send(SetReady);
        self.arm_tick(self.deps.clock.mono_ms().saturating_add(duration_ms(self.watch.tick)), ctx);
        // After the namespace actors have started and reported, start-up's garbage can go back.
        ctx.run_later(SETTLE_HEAP, |_, _| crate::heap::release_free_memory());
    }
}

/// Shutdown: stop every namespace from starting anchors.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DrainAll;

/// Answered once every namespace actor has handled everything sent to it before.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct QuiesceAll;

impl Handler<DrainAll> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: DrainAll, _: &mut Context<Self>) {
        self.draining = true;
        for addr in self.actors.values() {
            addr.do_send(DrainNamespace);
        }
    }
}

impl Handler<QuiesceAll> for Supervisor {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: QuiesceAll, _: &mut Context<Self>) -> Self::Result {
        let asks: Vec<_> = self
            .actors
            .values()
            .chain(self.retiring.values())
            .chain(self.handing.values())
            .map(|a| a.send(Quiesce))
            .collect();
        Box::pin(async move {
            // An actor that already stopped has nothing left to hand over.
            let _ = join_all(asks).await;
        })
    }
}

/// Looks at the config files now instead of at the next tick (SIGHUP).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CheckConfig;

impl Handler<CheckConfig> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: CheckConfig, ctx: &mut Context<Self>) {
        // A read or validation under way may predate the change: then the check runs after it,
        // once, however many are asked for meanwhile.
        if self.reload.ask() {
            self.emit(ConfigCheckRequested);
            self.tick(ctx);
        }
    }
}

impl Handler<ControlNamespace> for Supervisor {
    type Result = ResponseFuture<Result<Vec<(CadenceKind, Controlled)>, ControlError>>;
    fn handle(&mut self, msg: ControlNamespace, _: &mut Context<Self>) -> Self::Result {
        let checked = self.route(&msg);
        Box::pin(async move {
            let addr = checked?;
            addr.send(msg).await.map_err(|_| ControlError::Unavailable("the namespace is stopping".into()))?
        })
    }
}

impl Supervisor {
    /// The actor that runs `msg`'s namespace, once the request is checked against the
    /// running config.
    fn route(&self, msg: &ControlNamespace) -> Result<Addr<NamespaceActor>, ControlError> {
        let Some(cfg) = self.config.namespaces.get(msg.namespace.as_str()) else {
            return Err(ControlError::UnknownNamespace(msg.namespace.clone()));
        };
        if let Some(kind) = msg.cadence
            && !cfg.cadences.contains_key(&kind)
        {
            let has: Vec<&str> = cfg.cadences.keys().map(|k| k.as_str()).collect();
            return Err(ControlError::UnknownCadence {
                namespace: msg.namespace.clone(),
                cadence: kind.as_str().to_string(),
                has: has.join(", "),
            });
        }
        if msg.cadence.is_none() && matches!(msg.control, Control::Trigger | Control::Skip) {
            return Err(ControlError::CadenceRequired);
        }
        if self.draining {
            return Err(ControlError::Unavailable("the scheduler is shutting down".into()));
        }
        match self.actors.get(msg.namespace.as_str()) {
            Some(addr) => Ok(addr.clone()),
            None if !self.runs_here(&msg.namespace) => Err(ControlError::NotHere(msg.namespace.clone())),
            None => Err(ControlError::Unavailable(format!("namespace {:?} is starting", msg.namespace))),
        }
    }
}

impl Handler<Ping> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}
