//! Shutting down in an order we own: health says draining, namespaces stop starting anchors,
//! the pool stops dispatching and says when its last running anchor returned (a signal, not a
//! poll: [`WhenIdle`]), every result is handed to its namespace, and the state store writes
//! the state a last time. A second stop request cuts this short.
//!
//! The grace period and the forced exit's wait are real time, not the injected clock's: they
//! bound how long real network and disk I/O may take, which no test clock can hurry.

use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use slog::{Logger, error, info, warn};
use tokio::sync::oneshot;

use super::control::Control;
use super::startup::StartupError;
use crate::anchor::pool::{Abort, AnchorPool, Drain, Stats, WhenIdle};
use crate::cluster::actor::{ClusterActor, Leave};
use crate::health::actor::{HealthActor, SetDraining};
use crate::scheduler::supervisor::{DrainAll, QuiesceAll, Supervisor};
use crate::storage::state::store::{Flush, StateStore};

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Drained and wrote state.
    Clean,
    /// A second stop request cut the drain short.
    Forced,
}

/// The actors and the server of a started application: what shutting down stops.
pub(crate) struct Running {
    pub(crate) health: Addr<HealthActor>,
    pub(crate) supervisor: Addr<Supervisor>,
    pub(crate) pool: Addr<AnchorPool>,
    pub(crate) store: Addr<StateStore>,
    pub(crate) server: ServerHandle,
    /// Cluster mode: the membership, left once the state is written.
    pub(crate) cluster: Option<Addr<ClusterActor>>,
}

/// Drains within `grace` and writes the state, unless `control` asks to stop again first;
/// then stops the HTTP server.
pub(crate) async fn shutdown(
    running: Running,
    control: &mut impl Control,
    grace: Duration,
    log: &Logger,
) -> Result<Exit, StartupError> {
    let Running { health, supervisor, pool, store, server, cluster } = running;
    let drain = async {
        drain(&health, &supervisor, &pool, &store, grace, log).await?;
        if let Some(cluster) = &cluster {
            leave(cluster, log).await;
        }
        Ok(())
    };
    let outcome = tokio::select! {
        r = drain => r.map(|()| Exit::Clean),
        _ = control.next_stop() => Ok(Exit::Forced),
    };
    let forced = matches!(outcome, Ok(Exit::Forced));
    if forced {
        warn!(log, "second signal: exiting now, without waiting for running anchors or a final state write");
        // Cancelled jobs let go of what they started (an exec command's process group is
        // killed) at their next poll; nothing else is waited for.
        pool.do_send(Abort);
        let let_go = async {
            if let Ok(told) = pool.send(WhenIdle).await {
                let _ = told.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), let_go).await;
    }
    // A forced exit does not wait for HTTP connections to finish either.
    server.stop(!forced).await;
    match &outcome {
        Ok(_) => info!(log, "stopped"),
        Err(e) => error!(log, "stopped with an error"; "err" => %e),
    }
    outcome
}

async fn drain(
    health: &Addr<HealthActor>,
    supervisor: &Addr<Supervisor>,
    pool: &Addr<AnchorPool>,
    store: &Addr<StateStore>,
    grace: Duration,
    log: &Logger,
) -> Result<(), StartupError> {
    health.do_send(SetDraining);
    // Namespaces stop first so nothing new is submitted after the pool stops dispatching.
    let _ = supervisor.send(DrainAll).await;
    let _ = pool.send(Drain).await;
    // The pool says when the last running anchor returned; nothing is polled.
    let idle = pool.send(WhenIdle).await;
    let mut idle = std::pin::pin!(async move {
        if let Ok(told) = idle {
            let _ = told.await;
        }
    });
    tokio::select! {
        () = &mut idle => {}
        () = tokio::time::sleep(grace) => {
            let (running, _) = pool.send(Stats).await.unwrap_or((0, 0));
            warn!(log, "grace period over: cancelling running anchors"; "running" => running);
            pool.do_send(Abort);
            idle.await;
        }
    }
    // Every result is now in a namespace mailbox; let them all be handled so their state
    // updates reach the store before the final write.
    let _ = supervisor.send(QuiesceAll).await;
    let (ack, written) = oneshot::channel();
    store.do_send(Flush(ack));
    match written.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StartupError::FinalWrite(e)),
        Err(_) => Err(StartupError::FinalWrite("state store stopped".into())),
    }
}

/// Cluster mode, after the last state write: revokes the member lease, so the other replicas
/// take the namespaces over at once instead of after the TTL. Not leaving is no harm to
/// safety: the lease then expires.
async fn leave(cluster: &Addr<ClusterActor>, log: &Logger) {
    match tokio::time::timeout(Duration::from_secs(5), cluster.send(Leave)).await {
        Ok(Ok(Ok(()))) => info!(log, "cluster: left; the other replicas take over now"),
        Ok(Ok(Err(e))) => {
            warn!(log, "cluster: could not leave; the namespaces move when the lease expires"; "err" => e)
        }
        _ => warn!(log, "cluster: could not leave in time; the namespaces move when the lease expires"),
    }
}
