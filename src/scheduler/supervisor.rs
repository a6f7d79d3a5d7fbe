//! The `Supervisor`: owns the running config. It starts one `NamespaceActor` per namespace
//! and, every tick, re-reads the config files and compares their SHA-256 with the running
//! config's. A change that validates is applied as a diff (new namespaces started, removed
//! ones stopped, changed ones reconfigured in place, keeping their state); a change that
//! does not is logged, counted and shown in /health while the old config keeps running.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use slog::{Logger, error, info};

use super::namespace::{DrainNamespace, NamespaceActor, NamespaceDeps, Quiesce, Reconfigure, Retire};
use crate::anchor::Drivers;
use crate::anchor::pool::UpdateDrivers;
use crate::config::{self, Config, ConfigErrors, FileSnapshot};
use crate::health::actor::{ConfigApplied, ConfigReport, Ping, ReloadRejected, ReloadReport, SetReady, Tick};
use crate::state::StateFile;
use crate::state::store::GetNamespace;

/// Where the config files are and how often to look at them.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Namespaces file.
    pub namespaces: PathBuf,
    /// Targets file, if any.
    pub targets: Option<PathBuf>,
    /// Re-read interval.
    pub tick: Duration,
}

/// Owns the config and the namespace actors.
pub struct Supervisor {
    watch: Watch,
    config: Config,
    loaded_at_ms: i64,
    rejected: Option<(String, Option<String>)>,
    actors: BTreeMap<String, Addr<NamespaceActor>>,
    initial_state: Option<StateFile>,
    deps: Arc<NamespaceDeps>,
    drivers: Drivers,
    draining: bool,
    reading: bool,
    log: Logger,
}

impl Supervisor {
    /// A supervisor for a validated config and the state loaded at start-up.
    pub fn new(watch: Watch, config: Config, state: StateFile, deps: Arc<NamespaceDeps>, drivers: Drivers) -> Self {
        let log = deps.log.clone();
        let loaded_at_ms = deps.clock.wall_ms();
        Self {
            watch,
            config,
            loaded_at_ms,
            rejected: None,
            actors: BTreeMap::new(),
            initial_state: Some(state),
            deps,
            drivers,
            draining: false,
            reading: false,
            log,
        }
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

    fn set_config_metrics(&self, old_hash: Option<&str>) {
        let m = &self.deps.metrics;
        if let Some(old) = old_hash {
            let _ = m.config_info.remove_label_values(&[old]);
        }
        m.config_info.with_label_values(&[&self.config.hash]).set(1);
        m.namespaces.set(i64::try_from(self.config.namespaces.len()).unwrap_or(i64::MAX));
        m.reload_ok.set(1);
        m.reload_time.set(self.deps.clock.wall_ms() as f64 / 1000.0);
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.deps.health.do_send(Tick);
        if self.draining || self.reading {
            return;
        }
        self.reading = true;
        let watch = self.watch.clone();
        let read = async move {
            tokio::task::spawn_blocking(move || -> Result<(FileSnapshot, Option<FileSnapshot>), ConfigErrors> {
                let ns = config::read_snapshot(&watch.namespaces)?;
                let targets = watch.targets.as_deref().map(config::read_snapshot).transpose()?;
                Ok((ns, targets))
            })
            .await
            .unwrap_or_else(|e| Err(ConfigErrors::file(&PathBuf::from("config"), format!("reader failed: {e}"))))
        };
        ctx.spawn(actix::fut::wrap_future(read).map(|result, act: &mut Self, ctx| {
            act.reading = false;
            act.consider(result, ctx);
        }));
    }

    fn consider(&mut self, read: Result<(FileSnapshot, Option<FileSnapshot>), ConfigErrors>, ctx: &mut Context<Self>) {
        let (ns, targets) = match read {
            Ok(files) => files,
            Err(errors) => {
                // Unreadable (e.g. mid-way through a ConfigMap symlink swap): keep running.
                let key = (format!("unreadable: {errors}"), None);
                if self.rejected.as_ref() != Some(&key) {
                    self.reject(&errors, key);
                }
                return;
            }
        };
        let key = (ns.hash.clone(), targets.as_ref().map(|t| t.hash.clone()));
        if key.0 == self.config.hash && key.1 == self.config.targets_hash {
            if self.rejected.take().is_some() {
                info!(self.log, "config files match the running config again");
                self.deps.metrics.reload_ok.set(1);
                let report =
                    ReloadReport { result: "success", at_ms: self.deps.clock.wall_ms(), hash: key.0, errors: vec![] };
                self.deps.health.do_send(ConfigApplied(self.report(Some(report))));
            }
            return;
        }
        if self.rejected.as_ref() == Some(&key) {
            return;
        }
        match config::build(&ns, targets.as_ref()) {
            Ok(new) => self.apply(new, ctx),
            Err(errors) => self.reject(&errors, key),
        }
    }

    fn reject(&mut self, errors: &ConfigErrors, key: (String, Option<String>)) {
        for e in &errors.0 {
            error!(self.log, "config change rejected; the running config stays in force";
                "file" => %e.file.display(), "ns" => e.namespace.clone().unwrap_or_default(),
                "field" => &e.field, "reason" => &e.reason, "err" => %e);
        }
        let m = &self.deps.metrics;
        m.reloads.with_label_values(&["failure"]).inc();
        m.reload_ok.set(0);
        m.reload_time.set(self.deps.clock.wall_ms() as f64 / 1000.0);
        self.deps.health.do_send(ReloadRejected {
            hash: key.0.clone(),
            errors: errors.0.iter().map(ToString::to_string).collect(),
        });
        self.rejected = Some(key);
    }

    fn apply(&mut self, new: Config, ctx: &mut Context<Self>) {
        let old = std::mem::replace(&mut self.config, new);
        self.loaded_at_ms = self.deps.clock.wall_ms();
        self.rejected = None;
        let (mut added, mut removed, mut changed) = (0usize, 0usize, 0usize);
        let gone: Vec<String> =
            self.actors.keys().filter(|n| !self.config.namespaces.contains_key(*n)).cloned().collect();
        for name in gone {
            if let Some(addr) = self.actors.remove(&name) {
                addr.do_send(Retire);
                removed += 1;
            }
        }
        let entries: Vec<_> = self.config.namespaces.iter().map(|(n, c)| (n.clone(), Arc::clone(c))).collect();
        for (name, cfg) in entries {
            match self.actors.get(&name) {
                Some(addr) => {
                    if old.namespaces.get(&name).is_none_or(|o| **o != *cfg) {
                        addr.do_send(Reconfigure(cfg));
                        changed += 1;
                    }
                }
                None => {
                    added += 1;
                    // Its state may exist from an earlier run or an earlier config.
                    let store = self.deps.store.clone();
                    let fetch = async move { store.send(GetNamespace(name.clone())).await.map(|s| (name, s)) };
                    ctx.spawn(actix::fut::wrap_future(fetch).map(move |result, act: &mut Self, _| {
                        if let Ok((name, state)) = result
                            && !act.draining
                            && !act.actors.contains_key(&name)
                            && act.config.namespaces.get(&name).is_some_and(|c| Arc::ptr_eq(c, &cfg))
                        {
                            let addr = NamespaceActor::new(cfg, state, Arc::clone(&act.deps)).start();
                            act.actors.insert(name, addr);
                        }
                    }));
                }
            }
        }
        if old.targets != self.config.targets {
            self.drivers = self.drivers.reconfigured(self.deps.root.clone(), &self.config.targets);
            self.deps.pool.do_send(UpdateDrivers(self.drivers.clone()));
        }
        self.deps.metrics.reloads.with_label_values(&["success"]).inc();
        self.set_config_metrics(Some(&old.hash));
        info!(self.log, "config reloaded";
            "hash" => &self.config.hash, "added" => added, "removed" => removed, "changed" => changed,
            "namespaces" => self.config.namespaces.len());
        let report = ReloadReport {
            result: "success",
            at_ms: self.deps.clock.wall_ms(),
            hash: self.config.hash.clone(),
            errors: vec![],
        };
        self.deps.health.do_send(ConfigApplied(self.report(Some(report))));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let mut state = self.initial_state.take().unwrap_or_default();
        for (name, cfg) in &self.config.namespaces {
            let ns_state = state.namespaces.remove(name).unwrap_or_default();
            let addr = NamespaceActor::new(Arc::clone(cfg), ns_state, Arc::clone(&self.deps)).start();
            self.actors.insert(name.clone(), addr);
        }
        self.set_config_metrics(None);
        self.deps.health.do_send(ConfigApplied(self.report(None)));
        self.deps.health.do_send(Tick);
        self.deps.health.do_send(SetReady);
        ctx.run_interval(self.watch.tick, |act, ctx| act.tick(ctx));
    }
}

/// Shutdown: stop every namespace from starting anchors.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainAll;

/// Answered once every namespace actor has handled everything sent to it before.
#[derive(Message)]
#[rtype(result = "()")]
pub struct QuiesceAll;

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
        let asks: Vec<_> = self.actors.values().map(|a| a.send(Quiesce)).collect();
        Box::pin(async move {
            // An actor that already stopped has nothing left to hand over.
            let _ = join_all(asks).await;
        })
    }
}

impl Handler<Ping> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}
