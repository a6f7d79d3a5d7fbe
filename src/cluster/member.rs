//! A replica's membership: its registration under a lease, how long that lease can be
//! counted on, and the plan that turns the member list into claims to take and to let go.
//!
//! Safety before liveness: a replica counts its lease valid only until the time it *sent*
//! the renewal that etcd last answered, plus the TTL etcd granted, minus a margin. Its clock
//! can only make it stop early, never late: etcd starts the TTL when it receives the
//! renewal, after it was sent. Past that instant the replica starts nothing new, whether or
//! not etcd has really expired the lease; a paused replica that wakes is past it at once.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::claim::Keys;
use super::etcd::{Etcd, EtcdError};
use super::ownership::owner;
use crate::model::time::MonoMs;

/// Claims sent at once, within a round.
const CLAIMS_AT_ONCE: usize = 32;

/// What a member writes under its key, for the other members and the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The node id.
    pub node: String,
    /// The scheduler version it runs.
    pub version: String,
    /// When it joined (Unix ms).
    pub joined_ms: i64,
}

/// Until when a lease renewed by a request sent at `sent` (monotonic ms) with `ttl_s`
/// seconds granted may be counted on: a third of the TTL is kept as margin for the time the
/// request took on the way in and for clock rate differences.
pub fn valid_until(sent: MonoMs, ttl_s: i64) -> MonoMs {
    let ttl_ms = ttl_s.max(0).saturating_mul(1000);
    sent.saturating_add(ttl_ms - ttl_ms / 3)
}

/// What a replica should do about its claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Namespaces it should own and has not claimed: claim them (they may still be held by
    /// a replica leaving; the claim waits until that one lets go or expires).
    pub claim: Vec<String>,
    /// Namespaces it holds that another member should own now: let them go, once their work
    /// in flight is finished.
    pub release: Vec<String>,
}

/// The plan for `node`, given the configured `namespaces`, the live `members` and the
/// `claims` as they stand (namespace → holder). A replica that is not among the members
/// (its registration expired) claims nothing and keeps nothing.
pub fn plan(
    node: &str,
    namespaces: &BTreeSet<String>,
    members: &BTreeSet<String>,
    claims: &BTreeMap<String, String>,
) -> Plan {
    let mut out = Plan::default();
    let member = members.contains(node);
    for ns in namespaces {
        let should = member && owner(ns, members.iter().map(String::as_str)) == Some(node);
        let holds = claims.get(ns).is_some_and(|h| h == node);
        if should && !holds {
            out.claim.push(ns.clone());
        } else if holds && !should {
            out.release.push(ns.clone());
        }
    }
    // A claim on a namespace no longer configured is let go too.
    for (ns, holder) in claims {
        if holder == node && !namespaces.contains(ns) {
            out.release.push(ns.clone());
        }
    }
    out
}

/// Registers `node` under a new lease of `ttl_s` seconds; returns the lease id and TTL.
/// Refused with [`EtcdError::NodeTaken`] while another lease holds the node's key: a replica
/// that restarts under its old name waits for its previous lease to expire, and two live
/// replicas never share a name (the second would fence the first's writes).
pub async fn join(etcd: &Etcd, keys: &Keys, registration: &Registration, ttl_s: u64) -> Result<(i64, i64), EtcdError> {
    use super::etcd::{Compare, Op};
    let (lease, ttl) = etcd.grant(ttl_s).await?;
    let value = serde_json::to_vec(registration)
        .map_err(|e| EtcdError::Malformed { what: "registration", why: e.to_string() })?;
    let key = keys.member(&registration.node);
    let free = [Compare::CreateRevision(key.clone(), 0)];
    let out = etcd.txn(&free, &[Op::Put { key, value, lease }], &[]).await?;
    if !out.succeeded {
        // The lease granted for nothing goes now rather than at its TTL; it holds no key.
        let _ = etcd.revoke(lease).await;
        return Err(EtcdError::NodeTaken(registration.node.clone()));
    }
    Ok((lease, ttl))
}

/// The live members (their node ids) and every claim (namespace → holder), read at one
/// revision so they agree with each other.
pub async fn view(etcd: &Etcd, keys: &Keys) -> Result<(BTreeSet<String>, BTreeMap<String, String>), EtcdError> {
    use super::etcd::Op;
    let (members_dir, owners_dir) = (keys.members(), keys.owners());
    // One transaction with two reads: a consistent snapshot of both.
    let out = etcd.txn(&[], &[Op::GetPrefix(members_dir.clone()), Op::GetPrefix(owners_dir.clone())], &[]).await?;
    let (members, owners) = match out.gets.as_slice() {
        [m, o] => (m, o),
        _ => return Err(EtcdError::Malformed { what: "txn", why: "not two ranges".into() }),
    };
    let members = members.iter().filter_map(|kv| Keys::name_in(&members_dir, &kv.key).map(str::to_string)).collect();
    let claims = owners
        .iter()
        .filter_map(|kv| {
            let ns = Keys::name_in(&owners_dir, &kv.key)?;
            Some((ns.to_string(), String::from_utf8_lossy(&kv.value).into_owned()))
        })
        .collect();
    Ok((members, claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_lease_is_counted_on_for_two_thirds_of_its_ttl_from_when_the_renewal_was_sent() {
        assert_eq!(valid_until(1_000, 10), 1_000 + 6_667);
        assert_eq!(valid_until(1_000, 0), 1_000, "an expired lease is counted on for nothing");
        assert_eq!(valid_until(i64::MAX - 1, 10), i64::MAX);
    }

    #[test]
    fn each_member_plans_to_claim_exactly_its_share_and_together_they_cover_every_namespace() {
        let namespaces: BTreeSet<String> = (0..300).map(|i| format!("ns{i}")).collect();
        let members = set(&["a", "b", "c"]);
        let plans: Vec<Plan> =
            ["a", "b", "c"].iter().map(|n| plan(n, &namespaces, &members, &BTreeMap::new())).collect();
        let mut claimed: Vec<&String> = plans.iter().flat_map(|p| &p.claim).collect();
        claimed.sort();
        assert_eq!(claimed, namespaces.iter().collect::<Vec<_>>(), "each namespace once");
        assert!(plans.iter().all(|p| p.release.is_empty() && (80..120).contains(&p.claim.len())));
    }

    #[test]
    fn a_member_lets_go_of_what_moved_to_another_and_of_what_left_the_config() {
        let namespaces: BTreeSet<String> = (0..100).map(|i| format!("ns{i}")).collect();
        let two = set(&["a", "b"]);
        let a_holds: BTreeMap<String, String> = namespaces
            .iter()
            .filter(|ns| owner(ns, two.iter().map(String::as_str)) == Some("a"))
            .map(|ns| (ns.clone(), "a".to_string()))
            .chain([("gone".to_string(), "a".to_string())])
            .collect();
        assert_eq!(plan("a", &namespaces, &two, &a_holds).release, vec!["gone".to_string()]);
        let three = set(&["a", "b", "c"]);
        let p = plan("a", &namespaces, &three, &a_holds);
        assert!(p.claim.is_empty(), "a new member takes, a member never gains: {p:?}");
        assert!(p.release.iter().all(|ns| ns == "gone" || owner(ns, three.iter().map(String::as_str)) == Some("c")));
        assert!(p.release.len() > 1);
    }

    #[test]
    fn a_replica_whose_registration_expired_claims_nothing_and_keeps_nothing() {
        let namespaces = set(&["x", "y"]);
        let claims: BTreeMap<String, String> = [("x".to_string(), "a".to_string())].into();
        let p = plan("a", &namespaces, &set(&["b"]), &claims);
        assert_eq!(p, Plan { claim: vec![], release: vec!["x".into()] });
    }
}

/// What one round of [`Membership::round`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Every namespace this replica holds a claim on now.
    pub held: BTreeSet<String>,
    /// Claimed this round: load their state, then run them.
    pub gained: Vec<String>,
    /// Held, but another member should own them now: stop them, make their last commit,
    /// then [`Membership::release`] them.
    pub to_release: Vec<String>,
    /// Held until now, and no longer (this replica's lease expired): stop them at once and
    /// write nothing more for them.
    pub lost: Vec<String>,
    /// The live members.
    pub members: BTreeSet<String>,
    /// How many namespaces each member holds, as the round read the claims.
    pub owners: BTreeMap<String, usize>,
    /// Configured namespaces nobody held when the round read the claims (before its own
    /// claims).
    pub unowned: BTreeSet<String>,
    /// The member lease this replica holds now: a new one after it joined again.
    pub lease: i64,
    /// Until when (monotonic ms) this replica may start anything.
    pub valid_until: MonoMs,
    /// Namespaces this replica should own that another live replica still holds: it is
    /// handing them over, and they can be claimed as soon as it lets go.
    pub awaited: usize,
}

/// A replica's part in the cluster: its member lease and the claims it holds. Driven by its
/// owner, one [`Membership::round`] at a time (about three per lease TTL).
pub struct Membership {
    etcd: std::sync::Arc<Etcd>,
    keys: Keys,
    registration: Registration,
    ttl_s: u64,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    lease: i64,
    valid_until: MonoMs,
    held: BTreeMap<String, super::claim::Fence>,
    /// The same claims, for the outputs' commit points to fence on.
    fences: Fences,
}

/// The claims a replica holds now, by namespace: what its outputs' commits are fenced on.
#[derive(Debug, Clone, Default)]
pub struct Fences(std::sync::Arc<std::sync::RwLock<FenceSet>>);

/// The claims held, and the member key and lease they hang on.
#[derive(Debug, Default)]
struct FenceSet {
    held: BTreeMap<String, super::claim::Fence>,
    member: Option<(Vec<u8>, i64)>,
}

impl Fences {
    /// The fence of `namespace`, while this replica holds it.
    pub fn get(&self, namespace: &str) -> Option<super::claim::Fence> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).held.get(namespace).cloned()
    }

    /// The member key and the lease it carries: the fence of what belongs to no namespace
    /// (an aggregate's anchor, made of this replica's namespaces).
    pub fn member(&self) -> Option<(Vec<u8>, i64)> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).member.clone()
    }

    fn set(&self, held: &BTreeMap<String, super::claim::Fence>) {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner).held = held.clone();
    }

    fn set_member(&self, key: Vec<u8>, lease: i64) {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner).member = Some((key, lease));
    }
}

impl Membership {
    /// Joins the cluster as `registration.node` with a lease of `ttl_s` seconds.
    pub async fn join(
        etcd: std::sync::Arc<Etcd>,
        keys: Keys,
        registration: Registration,
        ttl_s: u64,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
    ) -> Result<Self, EtcdError> {
        let sent = clock.mono_ms();
        let (lease, ttl) = join(&etcd, &keys, &registration, ttl_s).await?;
        let valid_until = valid_until(sent, ttl);
        let (held, fences) = (BTreeMap::new(), Fences::default());
        fences.set_member(keys.member(&registration.node), lease);
        Ok(Self { etcd, keys, registration, ttl_s, clock, lease, valid_until, held, fences })
    }

    /// The member lease.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// The claims held, as they change: for the outputs' commit points.
    pub fn fences(&self) -> Fences {
        self.fences.clone()
    }

    /// This replica's node id.
    pub fn node(&self) -> &str {
        &self.registration.node
    }

    /// Until when (monotonic ms) the lease can be counted on.
    pub fn valid_until(&self) -> MonoMs {
        self.valid_until
    }

    /// Whether this replica may start something now: its lease can be counted on.
    pub fn can_start(&self) -> bool {
        self.clock.mono_ms() < self.valid_until
    }

    /// The fence of a namespace this replica holds.
    pub fn fence(&self, namespace: &str) -> Option<&super::claim::Fence> {
        self.held.get(namespace)
    }

    /// Renews the lease, reads the members and claims, and claims what this replica should
    /// own among `namespaces`. A lease found expired loses every claim; the replica joins
    /// again under a new lease and claims afresh from the next round.
    pub async fn round(&mut self, namespaces: &BTreeSet<String>) -> Result<Round, EtcdError> {
        let sent = self.clock.mono_ms();
        let mut lost = Vec::new();
        match self.etcd.keep_alive(self.lease).await {
            Ok(ttl) => self.valid_until = valid_until(sent, ttl),
            Err(EtcdError::LeaseExpired(_)) => {
                lost = std::mem::take(&mut self.held).into_keys().collect();
                self.fences.set(&self.held);
                let (lease, ttl) = join(&self.etcd, &self.keys, &self.registration, self.ttl_s).await?;
                self.lease = lease;
                self.valid_until = valid_until(sent, ttl);
                self.fences.set_member(self.keys.member(&self.registration.node), lease);
            }
            Err(e) => return Err(e),
        }
        let node = self.registration.node.clone();
        let (members, claims) = view(&self.etcd, &self.keys).await?;
        // A claim that is not ours any more (released by an operator, or expired and taken).
        let gone: Vec<String> =
            self.held.keys().filter(|ns| claims.get(*ns).is_none_or(|h| *h != node)).cloned().collect();
        for ns in gone {
            self.held.remove(&ns);
            lost.push(ns);
        }
        self.fences.set(&self.held);
        let mut owners: BTreeMap<String, usize> = BTreeMap::new();
        for holder in claims.values() {
            *owners.entry(holder.clone()).or_default() += 1;
        }
        let unowned = namespaces.iter().filter(|ns| !claims.contains_key(*ns)).cloned().collect();
        let plan = plan(&node, namespaces, &members, &claims);
        let mut gained = Vec::new();
        let mut awaited = 0;
        let mut renewed = sent;
        let renew_after = i64::try_from(self.ttl_s).unwrap_or(i64::MAX).saturating_mul(1000) / 4;
        // Thousands of claims (a replica taking its share of a large fleet) take longer than
        // a lease: they go a chunk at a time, concurrently within a chunk, and the lease is
        // renewed between chunks so it never lapses under claims being made.
        for chunk in plan.claim.chunks(CLAIMS_AT_ONCE) {
            let now = self.clock.mono_ms();
            if now.saturating_sub(renewed) > renew_after {
                match self.etcd.keep_alive(self.lease).await {
                    Ok(ttl) => (self.valid_until, renewed) = (valid_until(now, ttl), now),
                    // What is claimed so far is reported; the next round sorts out the rest.
                    Err(_) => break,
                }
            }
            let (etcd, keys, lease) = (&self.etcd, &self.keys, self.lease);
            let claimed = futures_util::future::join_all(
                chunk.iter().map(|ns| super::claim::claim(etcd, keys, ns, &node, lease)),
            )
            .await;
            let mut failed = false;
            for (ns, claimed) in chunk.iter().zip(claimed) {
                match claimed {
                    Ok(super::claim::Claimed::Ours(fence)) => {
                        self.held.insert(ns.clone(), fence);
                        gained.push(ns.clone());
                    }
                    Ok(super::claim::Claimed::Held(_)) => awaited += 1,
                    Err(_) => failed = true,
                }
            }
            // A claim made is held and must be reported as gained, or it would never run:
            // a failure ends the claiming, not the round.
            if failed {
                break;
            }
        }
        if !gained.is_empty() {
            *owners.entry(node).or_default() += gained.len();
        }
        self.fences.set(&self.held);
        let to_release = plan.release.into_iter().filter(|ns| self.held.contains_key(ns)).collect();
        Ok(Round {
            held: self.held.keys().cloned().collect(),
            gained,
            to_release,
            lost,
            members,
            owners,
            unowned,
            lease: self.lease,
            valid_until: self.valid_until,
            awaited,
        })
    }

    /// Lets go of `namespaces` (each stopped and its state committed), a chunk at a time,
    /// keeping the lease renewed between chunks; stops at the first failure, keeping the
    /// rest held, to be let go of again.
    pub async fn release_all(&mut self, namespaces: &[String]) -> Result<(), EtcdError> {
        let mut renewed = self.clock.mono_ms();
        let renew_after = i64::try_from(self.ttl_s).unwrap_or(i64::MAX).saturating_mul(1000) / 4;
        for chunk in namespaces.chunks(CLAIMS_AT_ONCE) {
            let now = self.clock.mono_ms();
            if now.saturating_sub(renewed) > renew_after {
                let ttl = self.etcd.keep_alive(self.lease).await?;
                (self.valid_until, renewed) = (valid_until(now, ttl), now);
            }
            let fences: Vec<(String, super::claim::Fence)> =
                chunk.iter().filter_map(|ns| Some((ns.clone(), self.held.get(ns)?.clone()))).collect();
            let etcd = &self.etcd;
            let done = futures_util::future::join_all(fences.iter().map(|(_, f)| super::claim::release(etcd, f))).await;
            let mut failed = None;
            for ((ns, _), done) in fences.iter().zip(done) {
                match done {
                    Ok(_) => {
                        self.held.remove(ns);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            self.fences.set(&self.held);
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Lets go of `namespace` once its work is stopped and its state committed.
    pub async fn release(&mut self, namespace: &str) -> Result<bool, EtcdError> {
        let Some(fence) = self.held.get(namespace) else { return Ok(false) };
        let released = super::claim::release(&self.etcd, fence).await?;
        self.held.remove(namespace);
        self.fences.set(&self.held);
        Ok(released)
    }

    /// Leaves the cluster at once (a clean shutdown, after every namespace stopped): the
    /// lease is revoked, so every claim goes with it and the others need not wait for it to
    /// expire.
    pub async fn leave(mut self) -> Result<(), EtcdError> {
        self.held.clear();
        self.fences.set(&self.held);
        self.etcd.revoke(self.lease).await
    }
}
