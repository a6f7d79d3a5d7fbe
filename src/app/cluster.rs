//! Cluster mode's start-up: the etcd clients made from the settings (their files read before
//! anything runs, so a missing certificate is one clear line), then joining the cluster.
//!
//! Two clients, one per runtime: the membership's requests run on the actors' runtime, the
//! state backend's on its own (it is called from blocking threads). A connection made on one
//! runtime is driven by that runtime's tasks, so sharing one client would leave the other
//! waiting on connections nobody drives.

use std::sync::Arc;
use std::time::Duration;

use slog::{Logger, info, warn};

use super::startup::StartupError;
use crate::clock::Clock;
use crate::cluster::actor::ClusterStatus as ClusterReport;
use crate::cluster::claim::Keys;
use crate::cluster::etcd::{Etcd, EtcdError};
use crate::cluster::ledger::{EtcdLedger, OutputLedger};
use crate::cluster::member::{Membership, Registration};
use crate::config::settings::ClusterSettings;
use crate::config::vars::display_url;
use crate::storage::state::etcd::EtcdBackend;

/// Time limit of one request to one etcd member: well inside the lease, so a round that
/// tries every member still ends before the lease can no longer be counted on.
fn request_timeout(ttl_s: u64) -> Duration {
    Duration::from_millis((ttl_s.saturating_mul(1000) / 5).clamp(500, 5_000))
}

/// The etcd clients, made and not yet used.
pub(crate) struct ClusterClients {
    settings: ClusterSettings,
    membership: Arc<Etcd>,
    state: Arc<Etcd>,
}

/// A replica that joined: its membership and the state backend fenced on its lease.
pub(crate) struct Joined {
    /// The membership, for the cluster actor to drive.
    pub(crate) membership: Membership,
    /// The state in etcd.
    pub(crate) backend: Arc<EtcdBackend>,
    /// The key prefix.
    pub(crate) prefix: String,
    /// The lease TTL asked for.
    pub(crate) ttl_s: u64,
    /// Where the outputs' commit points are kept.
    pub(crate) ledger: Arc<dyn OutputLedger>,
}

impl ClusterClients {
    /// Reads the TLS and password files and makes the clients; sends nothing.
    pub(crate) fn new(settings: ClusterSettings) -> Result<Self, StartupError> {
        let client = || {
            crate::cluster::connect::client(&settings, request_timeout(settings.lease_ttl_s))
                .map(Arc::new)
                .map_err(StartupError::Cluster)
        };
        let (membership, state) = (client()?, client()?);
        Ok(Self { settings, membership, state })
    }

    fn endpoints(&self) -> String {
        self.settings.endpoints.iter().map(|e| display_url(e)).collect::<Vec<_>>().join(",")
    }

    /// Joins the cluster. A restarted replica whose previous lease still holds its node id
    /// waits for that lease to expire (at most its TTL); etcd being unreachable is retried
    /// for as long, then reported.
    pub(crate) async fn join(self, clock: &Arc<dyn Clock>, log: &Logger) -> Result<Joined, StartupError> {
        let ClusterSettings { node_id, prefix, lease_ttl_s, .. } = self.settings.clone();
        let node_id = node_id.unwrap_or_else(crate::storage::lockfile::host_name);
        let keys = Keys::new(&prefix);
        let registration =
            Registration { node: node_id.clone(), version: crate::VERSION.to_string(), joined_ms: clock.wall_ms() };
        // A previous lease lasts at most its TTL; a little more for etcd to notice.
        let patience = Duration::from_secs(lease_ttl_s.saturating_mul(2).saturating_add(5));
        let deadline = tokio::time::Instant::now() + patience;
        let mut told = false;
        let membership = loop {
            let joined = Membership::join(
                Arc::clone(&self.membership),
                keys.clone(),
                registration.clone(),
                lease_ttl_s,
                Arc::clone(clock),
            )
            .await;
            match joined {
                Ok(m) => break m,
                Err(e @ (EtcdError::NodeTaken(_) | EtcdError::Unavailable(_)))
                    if tokio::time::Instant::now() < deadline =>
                {
                    if !told {
                        warn!(log, "cluster: cannot join yet; waiting"; "node" => &node_id, "err" => %e,
                            "waits_up_to_s" => patience.as_secs());
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    return Err(StartupError::Cluster(format!(
                        "cannot join the cluster at {} as node {node_id}: {e}",
                        self.endpoints()
                    )));
                }
            }
        };
        let location = format!("etcd {} {prefix}", self.endpoints());
        let (etcd, lease, node) = (Arc::clone(&self.state), membership.lease(), node_id.clone());
        let backend = tokio::task::spawn_blocking(move || EtcdBackend::new(etcd, keys, &node, lease, location))
            .await
            .map_err(|e| StartupError::Cluster(format!("state backend: {e}")))?
            .map_err(|e| StartupError::Cluster(format!("state backend: {e}")))?;
        info!(log, "cluster: joined"; "node" => &node_id, "endpoints" => self.endpoints(), "prefix" => &prefix,
            "lease_ttl_s" => lease_ttl_s);
        let ledger: Arc<dyn OutputLedger> =
            Arc::new(EtcdLedger::new(Arc::clone(&self.membership), &prefix, membership.fences()));
        Ok(Joined { membership, backend: Arc::new(backend), prefix, ttl_s: lease_ttl_s, ledger })
    }
}

impl Joined {
    /// The cluster section of /health before the first round: not yet ready.
    pub(crate) fn first_report(&self) -> ClusterReport {
        ClusterReport {
            node: self.membership.node().to_string(),
            prefix: self.prefix.clone(),
            lease_valid: false,
            lease_renewed_ago_s: None,
            lease_valid_for_s: 0.0,
            lease_ttl_s: self.ttl_s,
            members: Default::default(),
            owned: 0,
            unowned: 0,
            unowned_for_s: 0.0,
            last_round_ms: None,
            error: Some("joined; the first round has not ended yet".into()),
        }
    }
}
