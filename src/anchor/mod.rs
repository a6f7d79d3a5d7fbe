//! Anchor drivers and the worker pool that runs them.
//!
//! A driver knows how to put a root somewhere and prove it; it knows nothing about cadences
//! or backoff. Every failure carries an [`ErrorClass`] so the scheduler can pick a backoff
//! multiplier without looking at message text.

pub(crate) mod aggregate;
pub mod btc;
pub mod client;
pub mod eip155;
pub(crate) mod exec;
pub mod lanes;
pub mod local;
pub mod locks;
pub(crate) mod pool;
pub mod rfc3161;
pub mod targets;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use self::targets::{Resolved, TargetsConfig};
use crate::clock::Clock;
use crate::config::vars::{Redactor, Secrets, display_url};
use crate::model::{
    AnchorError, AnchorRequest, Attestation, Confirmation, ErrorClass, Pending, Recovery, Scheme, Submitted, Target,
};
use crate::storage::writer::Writer;

/// A boxed, sendable future; drivers are used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a driver records, durably, what it is about to send before it sends it (e.g. a
/// signed transaction and its hash), closing the window in which a crash would leave an
/// anchor sent but unknown.
pub trait ProgressSink: Send + Sync {
    /// Records `progress` for the attempt; returns once it is on disk.
    fn record<'a>(&'a self, progress: serde_json::Value) -> BoxFuture<'a, Result<(), AnchorError>>;
}

/// A sink that keeps nothing, for driver tests and tools that send nothing.
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn record<'a>(&'a self, _progress: serde_json::Value) -> BoxFuture<'a, Result<(), AnchorError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A way to anchor a root to one kind of target. Drivers know nothing about cadences.
pub trait Driver: Send + Sync + 'static {
    /// Anchors the request's root: the proof, or a pending anchor to confirm later.
    fn anchor<'a>(
        &'a self,
        req: &'a AnchorRequest,
        progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Submitted, AnchorError>>;

    /// Asks the target whether this attempt (with `req.progress` as recorded) already
    /// happened.
    fn recover<'a>(&'a self, _req: &'a AnchorRequest) -> BoxFuture<'a, Recovery> {
        Box::pin(async { Recovery::Unknown })
    }

    /// Looks at a pending anchor again. An error only means "look again later"; a final
    /// refusal is `Confirmation::Rejected`. A sender that replaces a stuck transaction (a
    /// higher fee, the same nonce or inputs) records the replacement in `progress` first.
    fn confirm<'a>(
        &'a self,
        req: &'a AnchorRequest,
        _pending: &'a Pending,
        _progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Confirmation, AnchorError>> {
        Box::pin(async move {
            Err(AnchorError::new(
                ErrorClass::Unknown,
                format!("{} anchors are final at once; nothing to confirm", req.target.scheme),
            ))
        })
    }
}

/// How a network driver's messages name their target: the targets-file entry and the host,
/// as in `eip155.base (https://node.example/…)`. Never the URL's credentials, path or query.
pub fn entry_label(section: &str, name: &str, url: &str) -> String {
    format!("{section}.{name} ({})", display_url(url))
}

/// Whether a driver's attestation is evidence (fields the driver checked against what it
/// sent, which `verify` checks again) or free text (whatever an exec command printed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proof {
    Evidence,
    FreeText,
}

/// What every driver says passes through here on its way out: error messages, the reasons a
/// pending anchor was dropped or refused, and attestations. One [`Redactor`], knowing every
/// configured secret, cleans all of it, so a target that echoes our request back (or a
/// command that prints its environment) cannot make the scheduler repeat a secret in its
/// logs, `/health`, the state file or a receipt.
///
/// An attestation is never altered where it is evidence: one that holds a secret is refused
/// instead (a target that puts our credentials into its proof is echoing, not proving). An
/// exec command's attestation is free text; a secret in it is replaced by `<redacted>`, and
/// the anchor, which did happen, counts.
struct Guarded {
    inner: Arc<dyn Driver>,
    redact: Arc<Redactor>,
    proof: Proof,
}

impl Guarded {
    fn error(&self, e: AnchorError) -> AnchorError {
        AnchorError { message: self.redact.clean(&e.message), ..e }
    }

    /// The attestation fit for a receipt, or why it is refused.
    fn attestation(&self, mut att: Attestation) -> Result<Attestation, AnchorError> {
        match self.proof {
            Proof::FreeText => {
                self.redact.clean_json(&mut att.data);
                Ok(att)
            }
            Proof::Evidence if self.redact.finds_in_json(&att.data) => Err(AnchorError::new(
                ErrorClass::Validation,
                "the target's proof holds one of the configured secrets (is it echoing requests?); it was not recorded",
            )),
            Proof::Evidence => Ok(att),
        }
    }
}

impl Driver for Guarded {
    fn anchor<'a>(
        &'a self,
        req: &'a AnchorRequest,
        progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Submitted, AnchorError>> {
        Box::pin(async move {
            match self.inner.anchor(req, progress).await {
                Ok(Submitted::Anchored(att)) => self.attestation(att).map(Submitted::Anchored),
                Ok(Submitted::Written { attestation, round }) => {
                    self.attestation(attestation).map(|attestation| Submitted::Written { attestation, round })
                }
                Ok(pending @ Submitted::Pending(_)) => Ok(pending),
                Err(e) => Err(self.error(e)),
            }
        })
    }

    fn recover<'a>(&'a self, req: &'a AnchorRequest) -> BoxFuture<'a, Recovery> {
        Box::pin(async move {
            match self.inner.recover(req).await {
                Recovery::Done(att) => match self.attestation(att) {
                    Ok(att) => Recovery::Done(att),
                    // Sending again would make a second anchor: leave it for a later look.
                    Err(e) => Recovery::Later(AnchorError::uncertain(e.class, e.message)),
                },
                Recovery::Later(e) => Recovery::Later(self.error(e)),
                other => other,
            }
        })
    }

    fn confirm<'a>(
        &'a self,
        req: &'a AnchorRequest,
        pending: &'a Pending,
        progress: &'a dyn ProgressSink,
    ) -> BoxFuture<'a, Result<Confirmation, AnchorError>> {
        Box::pin(async move {
            match self.inner.confirm(req, pending, progress).await {
                Ok(Confirmation::Confirmed(att)) => Ok(match self.attestation(att) {
                    Ok(att) => Confirmation::Confirmed(att),
                    Err(e) => Confirmation::Rejected(e),
                }),
                Ok(Confirmation::Dropped(why)) => Ok(Confirmation::Dropped(self.redact.clean(&why))),
                Ok(Confirmation::Rejected(e)) => Ok(Confirmation::Rejected(self.error(e))),
                Ok(waiting @ Confirmation::Waiting(_)) => Ok(waiting),
                Err(e) => Err(self.error(e)),
            }
        })
    }
}

/// The drivers for every target, as configured now.
#[derive(Clone)]
pub struct Drivers {
    local: Arc<local::LocalDriver>,
    /// When a chain transaction was sent, so `bumpAfter` can tell when to replace it.
    clock: Arc<dyn Clock>,
    exec: Arc<dyn Driver>,
    targets: Arc<TargetsConfig>,
    locks: Arc<locks::SendLocks>,
    /// One driver per usable network entry, by scheme and entry name; an entry whose driver
    /// could not be built maps to why.
    network: BTreeMap<(Scheme, String), Result<Arc<dyn Driver>, String>>,
    /// Where the rfc3161 drivers report each TSA's health; kept across reloads.
    tsa: rfc3161::TsaWatch,
}

impl Drivers {
    /// Drivers writing under `root`, with the given targets configuration; journal lines
    /// are made durable by `writer`.
    pub fn new(root: PathBuf, targets: &Arc<TargetsConfig>, clock: Arc<dyn Clock>, writer: Arc<Writer>) -> Self {
        let tsa = rfc3161::TsaWatch::unwatched(Arc::clone(&clock));
        Self::watched(root, targets, clock, writer, tsa)
    }

    /// The same as [`Drivers::new`], with the rfc3161 drivers reporting to `tsa`.
    pub fn watched(
        root: PathBuf,
        targets: &Arc<TargetsConfig>,
        clock: Arc<dyn Clock>,
        writer: Arc<Writer>,
        tsa: rfc3161::TsaWatch,
    ) -> Self {
        let local = Arc::new(local::LocalDriver::new(root.clone(), Arc::clone(&clock), writer));
        Self::build(local, clock, Arc::default(), tsa, root, targets)
    }

    /// The same drivers with `local` for `local:` targets (cluster mode's, which commits its
    /// lines in etcd); kept across reloads like any local driver.
    pub fn with_local(mut self, local: local::LocalDriver) -> Self {
        self.local = Arc::new(local);
        self
    }

    /// The same drivers with a new targets configuration. The local driver and the send
    /// locks are kept: they serialise journal appends and transaction sends, and second
    /// instances would race them. So is the TSA watch: what is known of a TSA outlives a reload.
    pub fn reconfigured(&self, root: PathBuf, targets: &Arc<TargetsConfig>) -> Self {
        let (local, clock, locks) = (Arc::clone(&self.local), Arc::clone(&self.clock), Arc::clone(&self.locks));
        Self::build(local, clock, locks, self.tsa.clone(), root, targets)
    }

    fn build(
        local: Arc<local::LocalDriver>,
        clock: Arc<dyn Clock>,
        locks: Arc<locks::SendLocks>,
        tsa: rfc3161::TsaWatch,
        root: PathBuf,
        targets: &Arc<TargetsConfig>,
    ) -> Self {
        use crate::config::targets::Entry;
        // A network target can only echo what it was sent, so its redactor knows its own
        // secrets. An exec command inherits the scheduler's environment, where every target's
        // keys and passwords may be, so its redactor knows them all. The `local:` driver is not
        // guarded: it holds no secret and repeats nothing a target said.
        let guard = |inner: Arc<dyn Driver>, secrets: &Secrets, proof: Proof| -> Arc<dyn Driver> {
            Arc::new(Guarded { inner, redact: Arc::new(secrets.redactor()), proof })
        };
        let mut network = BTreeMap::new();
        for (name, entry) in &targets.eip155 {
            if let Entry::Ready(t) = entry {
                let driver = eip155::EvmDriver::new(name, t, Arc::clone(&locks), Arc::clone(&clock));
                let driver = driver.map(|d| guard(Arc::new(d), &t.secrets(), Proof::Evidence));
                network.insert((Scheme::Eip155, name.clone()), driver);
            }
        }
        for (name, entry) in &targets.btc {
            if let Entry::Ready(t) = entry {
                let driver = btc::BtcDriver::new(name, t, &locks, Arc::clone(&clock));
                network.insert(
                    (Scheme::Btc, name.clone()),
                    driver.map(|d| guard(Arc::new(d), &t.secrets(), Proof::Evidence)),
                );
            }
        }
        let mut tsa_entries = Vec::new();
        for (name, entry) in &targets.rfc3161 {
            if let Entry::Ready(t) = entry {
                let driver = rfc3161::TsaDriver::watched(name, t, tsa.clone());
                tsa_entries.extend(driver.is_ok().then_some(name.as_str()));
                let driver = driver.map(|d| guard(Arc::new(d), &t.secrets(), Proof::Evidence));
                network.insert((Scheme::Rfc3161, name.clone()), driver);
            }
        }
        // The TSAs of entries a reload removed leave /health and /metrics.
        tsa.board().retain(&tsa_entries);
        let exec = exec::ExecDriver::new(root, targets.exec.clone());
        let exec = guard(Arc::new(exec), &targets.secrets(), Proof::FreeText);
        Self { local, clock, exec, targets: Arc::clone(targets), locks, network, tsa }
    }

    /// How `target` aggregates, as configured now.
    pub(crate) fn aggregation(&self, target: &Target) -> Option<crate::config::aggregate::AggregateSpec> {
        self.targets.aggregation(target)
    }

    /// How many of `target`'s jobs may run at once, when its entry says; and the field that
    /// says it.
    pub(crate) fn concurrency(&self, target: &Target) -> (Option<u32>, String) {
        self.targets.concurrency(target)
    }

    /// The driver for a target.
    pub fn for_target(&self, target: &Target) -> Result<Arc<dyn Driver>, AnchorError> {
        let refused = |why: String| AnchorError::new(ErrorClass::Validation, why);
        let entry = match self.targets.resolve(target).map_err(refused)? {
            Resolved::Local => return Ok(self.local.clone()),
            Resolved::Exec(..) => return Ok(self.exec.clone()),
            Resolved::Evm(name, _) => (Scheme::Eip155, name.to_string()),
            Resolved::Btc(name, _) => (Scheme::Btc, name.to_string()),
            Resolved::Tsa(name, _) => (Scheme::Rfc3161, name.to_string()),
        };
        match self.network.get(&entry) {
            Some(Ok(driver)) => Ok(Arc::clone(driver)),
            Some(Err(why)) => Err(refused(format!("{}.{}: {why}", entry.0, entry.1))),
            None => Err(refused(format!("{target}: no driver for {}.{}", entry.0, entry.1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::CadenceKind;

    const SECRET: &str = "hunter22-S3cret";

    /// A target that puts the secret into everything it says; with `fail`, it fails.
    struct Echoing {
        fail: bool,
    }

    fn echoed() -> String {
        use base64::Engine as _;
        format!("echo {SECRET} / {}", base64::engine::general_purpose::STANDARD.encode(format!("u:{SECRET}")))
    }

    fn proof() -> Attestation {
        Attestation { data: json!({"output": echoed(), "n": 1}), anchored_at: None }
    }

    fn error() -> AnchorError {
        AnchorError::new(ErrorClass::Auth, echoed())
    }

    impl Driver for Echoing {
        fn anchor<'a>(
            &'a self,
            _req: &'a AnchorRequest,
            _progress: &'a dyn ProgressSink,
        ) -> BoxFuture<'a, Result<Submitted, AnchorError>> {
            Box::pin(async move { if self.fail { Err(error()) } else { Ok(Submitted::Anchored(proof())) } })
        }

        fn recover<'a>(&'a self, _req: &'a AnchorRequest) -> BoxFuture<'a, Recovery> {
            Box::pin(async move { if self.fail { Recovery::Later(error()) } else { Recovery::Done(proof()) } })
        }

        fn confirm<'a>(
            &'a self,
            _req: &'a AnchorRequest,
            _pending: &'a Pending,
            _progress: &'a dyn ProgressSink,
        ) -> BoxFuture<'a, Result<Confirmation, AnchorError>> {
            Box::pin(async move {
                if self.fail { Ok(Confirmation::Dropped(echoed())) } else { Ok(Confirmation::Confirmed(proof())) }
            })
        }
    }

    fn guarded(fail: bool, proof: Proof) -> Guarded {
        let mut secrets = Secrets::new();
        secrets.login("u", SECRET);
        Guarded { inner: Arc::new(Echoing { fail }), redact: Arc::new(secrets.redactor()), proof }
    }

    fn request() -> AnchorRequest {
        AnchorRequest {
            namespace: "n".into(),
            cadence: CadenceKind::Fast,
            target: Target::parse("exec:t").expect("target"),
            batch_id: "b".into(),
            root: [1; 32],
            attempt_id: "a".into(),
            confirmations: None,
            policy_oid: None,
            progress: None,
            membership: None,
        }
    }

    fn pending() -> Pending {
        Pending { data: json!({}), required: 1, depth: 0, poll_ms: 1, fee: None }
    }

    fn shows_no_secret(what: &str, text: &str) {
        use base64::Engine as _;
        let header = base64::engine::general_purpose::STANDARD.encode(format!("u:{SECRET}"));
        assert!(!text.contains(SECRET) && !text.contains(&header[..12]), "{what}: {text}");
        assert!(text.contains("<redacted>"), "{what} was not cleaned: {text}");
    }

    #[actix_rt::test]
    async fn errors_drop_reasons_and_recovery_errors_are_cleaned() {
        let g = guarded(true, Proof::Evidence);
        let e = g.anchor(&request(), &NoProgress).await.expect_err("fails");
        assert_eq!((e.class, e.refused), (ErrorClass::Auth, true), "the class and refusal stay");
        shows_no_secret("an anchor error", &e.message);
        match g.recover(&request()).await {
            Recovery::Later(e) => shows_no_secret("a recovery error", &e.message),
            other => panic!("{other:?}"),
        }
        match g.confirm(&request(), &pending(), &NoProgress).await {
            Ok(Confirmation::Dropped(why)) => shows_no_secret("a drop reason", &why),
            other => panic!("{other:?}"),
        }
    }

    #[actix_rt::test]
    async fn evidence_holding_a_secret_is_refused_never_altered() {
        let g = guarded(false, Proof::Evidence);
        let e = g.anchor(&request(), &NoProgress).await.expect_err("refused");
        assert_eq!((e.class, e.refused), (ErrorClass::Validation, true), "{e:?}");
        assert!(matches!(g.recover(&request()).await, Recovery::Later(e) if !e.refused), "nothing is sent again");
        assert!(matches!(g.confirm(&request(), &pending(), &NoProgress).await, Ok(Confirmation::Rejected(_))));
    }

    #[actix_rt::test]
    async fn free_text_proofs_keep_their_shape_with_the_secret_replaced() {
        let g = guarded(false, Proof::FreeText);
        let att = g.anchor(&request(), &NoProgress).await.expect("anchored").into_attestation().expect("final");
        shows_no_secret("an exec attestation", att.data["output"].as_str().expect("output"));
        assert_eq!(att.data["n"], 1);
        match g.recover(&request()).await {
            Recovery::Done(att) => shows_no_secret("a recovered attestation", &att.data.to_string()),
            other => panic!("{other:?}"),
        }
    }
}
