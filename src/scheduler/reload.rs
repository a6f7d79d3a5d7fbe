//! What the `Supervisor` decides about the config files, as pure functions.
//!
//! - [`ReloadPolicy`]: when content read from disk is acted on. A change is acted on only once the
//!   same content has been read twice in a row, so a file caught mid-write is never applied;
//!   one read or validation runs at a time, and a check asked for meanwhile (SIGHUP) runs
//!   once after it, unless a change is settling: its second read comes after the signal too.
//!   A rejected change is reported once, not on every tick, and so is the return of the files
//!   to the running config.
//! - [`diff`]: how a new config differs from the running one, namespace by namespace.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::NamespaceConfig;

/// What was read from disk: the hashes of both files, or the read error.
pub(crate) type ContentKey = (String, Option<String>);

/// The namespaces of a config, by name.
pub(crate) type Namespaces = BTreeMap<Arc<str>, Arc<NamespaceConfig>>;

/// What to do with the content just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It is the running config: nothing to do. `back`: the files held a rejected change
    /// before, so their return is reported.
    Running {
        /// The files are back from a rejected change.
        back: bool,
    },
    /// A change rejected before, and reported then.
    AlreadyRejected,
    /// Seen for the first time: read again after a short pause before acting on it.
    Settle,
    /// The same content read twice in a row: validate it and apply it, or reject it.
    Act,
}

/// The supervisor's reload policy, and what it remembers between reads of the config files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ReloadPolicy {
    /// Changed content seen once; acted on when read again unchanged.
    pending: Option<ContentKey>,
    /// Content rejected last, so it is reported once, not every tick.
    rejected: Option<ContentKey>,
    /// A read or a validation is under way.
    busy: bool,
    /// A check was asked for while busy; one more follows it.
    recheck: bool,
}

impl ReloadPolicy {
    /// The tick: a read starts unless one, or a validation, is under way.
    pub(crate) fn begin_read(&mut self) -> bool {
        !std::mem::replace(&mut self.busy, true)
    }

    /// The files were read: what to do with `read`, given the hashes of the `running` config's
    /// files.
    pub(crate) fn read(&mut self, read: &ContentKey, running: (&str, Option<&str>)) -> Verdict {
        self.busy = false;
        if read.0 == running.0 && read.1.as_deref() == running.1 {
            self.pending = None;
            return Verdict::Running { back: self.rejected.take().is_some() };
        }
        if self.rejected.as_ref() == Some(read) {
            self.pending = None;
            return Verdict::AlreadyRejected;
        }
        if self.pending.as_ref() != Some(read) {
            self.pending = Some(read.clone());
            return Verdict::Settle;
        }
        self.pending = None;
        Verdict::Act
    }

    /// A validation starts: no read until it ends.
    pub(crate) fn begin_validation(&mut self) {
        self.busy = true;
    }

    /// The validation ended.
    pub(crate) fn validated(&mut self) {
        self.busy = false;
    }

    /// `key` was rejected; the running config stays in force.
    pub(crate) fn rejected(&mut self, key: ContentKey) {
        self.rejected = Some(key);
    }

    /// A new config is in force.
    pub(crate) fn applied(&mut self) {
        self.rejected = None;
    }

    /// A check is asked for (SIGHUP): true to read now; else it runs once the read or
    /// validation under way ends.
    pub(crate) fn ask(&mut self) -> bool {
        if self.busy {
            self.recheck = true;
        }
        !self.busy
    }

    /// Nothing under way any more: true to run a check asked for meanwhile. A change that is
    /// settling waits for its second read instead, which comes after the signal too: reading
    /// now would cut short the pause that lets a file being written settle.
    pub(crate) fn recheck(&mut self) -> bool {
        if !self.recheck || self.busy {
            return false;
        }
        self.recheck = false;
        self.pending.is_none()
    }
}

/// How the namespaces of a new config differ from those running, each list in name order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Diff {
    /// Running, and gone from the new config: stop once their running anchors return.
    pub retire: Vec<Arc<str>>,
    /// Running with a config that changed: reconfigure in place, keeping their state.
    pub change: Vec<Arc<str>>,
    /// Still finishing their runs after leaving the config: bring them back rather than
    /// start a second actor, which could run one cadence twice at the same time.
    pub revive: Vec<Arc<str>>,
    /// New to this process: start (their state may exist from an earlier run or config).
    pub start: Vec<Arc<str>>,
}

impl Diff {
    /// How many namespaces come (back) into the config.
    pub(crate) fn added(&self) -> usize {
        self.revive.len() + self.start.len()
    }
}

/// How `new` differs from what runs: `running` are the namespaces with an actor, `retiring`
/// those whose actor is finishing its runs after leaving the config, `old` the config in
/// force until now. A namespace whose config is the same (shared, or equal when parsed
/// again) is left alone.
pub(crate) fn diff<A, R>(
    running: &BTreeMap<Arc<str>, A>,
    retiring: &BTreeMap<Arc<str>, R>,
    old: &Namespaces,
    new: &Namespaces,
) -> Diff {
    // One pass over the three sorted maps: at 100,000 namespaces, looking each name up in
    // the others took a quarter of a reload.
    let mut d = Diff::default();
    let mut run = running.keys().peekable();
    let mut before = old.iter().peekable();
    for (name, cfg) in new {
        while let Some(gone) = run.next_if(|r| *r < name) {
            d.retire.push(gone.clone());
        }
        let is_running = run.next_if(|r| *r == name).is_some();
        while before.next_if(|(o, _)| *o < name).is_some() {}
        let was = before.next_if(|(o, _)| *o == name).map(|(_, c)| c);
        if is_running {
            if was.is_none_or(|o| !Arc::ptr_eq(o, cfg) && **o != **cfg) {
                d.change.push(name.clone());
            }
        } else if retiring.contains_key(name) {
            d.revive.push(name.clone());
        } else {
            d.start.push(name.clone());
        }
    }
    d.retire.extend(run.cloned());
    d
}

/// Each of `names` (in order) with its value in `map`, found in one pass over both rather
/// than a lookup each.
pub(crate) fn in_order<'a, N: Borrow<str>, K: Borrow<str>, V>(
    names: &'a [N],
    map: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = (&'a N, Option<&'a V>)> {
    let mut entries = map.iter().peekable();
    names.iter().map(move |name| {
        let wanted: &str = name.borrow();
        while entries.next_if(|(k, _)| (*k).borrow() < wanted).is_some() {}
        (name, entries.next_if(|(k, _)| (*k).borrow() == wanted).map(|(_, v)| v))
    })
}

/// Whether an actor for `cfg` is still wanted when an answer about it comes back: not
/// draining, no actor for the namespace started meanwhile, and `cfg` still its config in
/// force (`current`): a later reload may have moved on.
pub(crate) fn still_wanted(
    draining: bool,
    has_actor: bool,
    current: Option<&Arc<NamespaceConfig>>,
    cfg: &Arc<NamespaceConfig>,
) -> bool {
    !draining && !has_actor && current.is_some_and(|c| Arc::ptr_eq(c, cfg))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::CadenceConfig;
    use crate::model::{CadenceKind, Target};

    fn key(ns: &str) -> ContentKey {
        (ns.to_string(), None)
    }

    fn running() -> (&'static str, Option<&'static str>) {
        ("c41f", None)
    }

    #[test]
    fn a_change_is_acted_on_only_when_read_twice_in_a_row() {
        let mut w = ReloadPolicy::default();
        assert!(w.begin_read());
        assert_eq!(w.read(&key("a1"), running()), Verdict::Settle);
        assert!(w.begin_read());
        assert_eq!(w.read(&key("a1"), running()), Verdict::Act);
    }

    #[test]
    fn content_still_changing_waits_for_two_equal_reads() {
        let mut w = ReloadPolicy::default();
        assert_eq!(w.read(&key("half-written"), running()), Verdict::Settle);
        assert_eq!(w.read(&key("written"), running()), Verdict::Settle);
        assert_eq!(w.read(&key("written"), running()), Verdict::Act);
    }

    #[test]
    fn a_change_to_the_targets_file_alone_is_a_change() {
        let mut w = ReloadPolicy::default();
        let targets_changed = ("c41f".to_string(), Some("8a9d".to_string()));
        assert_eq!(w.read(&targets_changed, running()), Verdict::Settle);
        assert_eq!(w.read(&targets_changed, running()), Verdict::Act);
    }

    #[test]
    fn files_back_to_the_running_config_forget_a_change_seen_once() {
        let mut w = ReloadPolicy::default();
        assert_eq!(w.read(&key("a1"), running()), Verdict::Settle);
        assert_eq!(w.read(&key("c41f"), running()), Verdict::Running { back: false });
        assert_eq!(w.read(&key("a1"), running()), Verdict::Settle, "seen once again, not twice");
    }

    #[test]
    fn a_rejected_change_is_reported_once_and_so_is_the_return_to_the_running_config() {
        let mut w = ReloadPolicy::default();
        w.read(&key("bad"), running());
        assert_eq!(w.read(&key("bad"), running()), Verdict::Act);
        w.rejected(key("bad"));
        assert_eq!(w.read(&key("bad"), running()), Verdict::AlreadyRejected);
        assert_eq!(w.read(&key("bad"), running()), Verdict::AlreadyRejected, "not reported every tick");
        assert_eq!(w.read(&key("c41f"), running()), Verdict::Running { back: true });
        assert_eq!(w.read(&key("c41f"), running()), Verdict::Running { back: false });
    }

    #[test]
    fn a_change_applied_after_a_rejection_clears_it() {
        let mut w = ReloadPolicy::default();
        w.rejected(key("bad"));
        w.applied();
        assert_eq!(w.read(&key("c41f"), running()), Verdict::Running { back: false });
    }

    #[test]
    fn one_read_or_validation_runs_at_a_time() {
        let mut w = ReloadPolicy::default();
        assert!(w.begin_read());
        assert!(!w.begin_read(), "a tick during a read");
        w.read(&key("a1"), running());
        w.read(&key("a1"), running());
        w.begin_validation();
        assert!(!w.begin_read(), "a tick during a validation");
        w.validated();
        assert!(w.begin_read());
    }

    #[test]
    fn a_check_asked_for_during_a_read_runs_once_after_it() {
        let mut w = ReloadPolicy::default();
        assert!(w.ask(), "nothing under way: read now");
        w.begin_read();
        assert!(!w.ask());
        assert!(!w.ask(), "a storm of signals is one check");
        assert!(!w.recheck(), "still reading");
        w.read(&key("c41f"), running());
        assert!(w.recheck());
        assert!(!w.recheck(), "once");
    }

    #[test]
    fn a_check_asked_for_while_a_change_settles_waits_for_its_second_read() {
        let mut w = ReloadPolicy::default();
        w.begin_read();
        w.ask();
        assert_eq!(w.read(&key("a1"), running()), Verdict::Settle);
        assert!(!w.recheck(), "the second read is already coming");
    }

    fn ns(name: &str, every_secs: u64) -> Arc<NamespaceConfig> {
        let fast = CadenceConfig {
            kind: CadenceKind::Fast,
            target: Target::parse("local:j").expect("target"),
            every: format!("{every_secs}s"),
            period: Duration::from_secs(every_secs),
            confirmations: None,
            policy_oid: None,
            jitter: Duration::ZERO,
        };
        Arc::new(NamespaceConfig {
            name: name.into(),
            description: None,
            cadences: [(CadenceKind::Fast, Arc::new(fast))].into_iter().collect(),
        })
    }

    fn names(list: &[&str]) -> BTreeMap<Arc<str>, ()> {
        list.iter().map(|n| (Arc::from(*n), ())).collect()
    }

    fn config(list: &[(&str, &Arc<NamespaceConfig>)]) -> Namespaces {
        list.iter().map(|(n, c)| (Arc::from(*n), Arc::clone(c))).collect()
    }

    fn strs(names: &[Arc<str>]) -> Vec<&str> {
        names.iter().map(|n| &**n).collect()
    }

    #[test]
    fn a_diff_starts_new_namespaces_retires_gone_ones_and_reconfigures_changed_ones_in_place() {
        let (a, b, c) = (ns("a", 60), ns("b", 60), ns("c", 60));
        let old = config(&[("a", &a), ("b", &b)]);
        let new = config(&[("a", &a), ("b", &ns("b", 30)), ("c", &c)]);
        let d = diff(&names(&["a", "b"]), &names(&[]), &old, &new);
        let want = Diff { retire: vec![], change: vec!["b".into()], revive: vec![], start: vec!["c".into()] };
        assert_eq!(d, want);
        let gone = diff(&names(&["a", "b"]), &names(&[]), &old, &config(&[("b", &b)]));
        assert_eq!(gone, Diff { retire: vec!["a".into()], ..Diff::default() });
    }

    #[test]
    fn a_namespace_parsed_again_but_equal_is_left_alone() {
        let old = config(&[("a", &ns("a", 60))]);
        let new = config(&[("a", &ns("a", 60))]);
        assert_eq!(diff(&names(&["a"]), &names(&[]), &old, &new), Diff::default());
    }

    #[test]
    fn a_namespace_still_finishing_its_runs_is_revived_not_started_twice() {
        let a = ns("a", 60);
        let d = diff(&names(&[]), &names(&["a"]), &config(&[]), &config(&[("a", &a)]));
        assert_eq!(d, Diff { revive: vec!["a".into()], ..Diff::default() });
        assert_eq!(d.added(), 1);
    }

    #[test]
    fn a_running_namespace_the_old_config_lacks_is_reconfigured() {
        // Its actor was started by a reload whose config a later one replaced before it ran.
        let a = ns("a", 60);
        let d = diff(&names(&["a"]), &names(&[]), &config(&[]), &config(&[("a", &a)]));
        assert_eq!(strs(&d.change), ["a"]);
    }

    #[test]
    fn an_actor_is_kept_only_for_the_config_still_in_force() {
        let (a, later) = (ns("a", 60), ns("a", 30));
        assert!(still_wanted(false, false, Some(&a), &a));
        assert!(!still_wanted(true, false, Some(&a), &a), "draining");
        assert!(!still_wanted(false, true, Some(&a), &a), "another actor started meanwhile");
        assert!(!still_wanted(false, false, Some(&later), &a), "a later reload moved on");
        assert!(!still_wanted(false, false, None, &a), "removed again");
    }

    #[test]
    fn in_order_finds_each_name_in_one_pass_and_none_for_the_missing() {
        let map: BTreeMap<String, u32> =
            [("b", 2), ("d", 4), ("e", 5)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let names: Vec<String> = ["a", "b", "c", "e", "f"].into_iter().map(String::from).collect();
        let found: Vec<(&str, Option<u32>)> = in_order(&names, &map).map(|(n, v)| (n.as_str(), v.copied())).collect();
        assert_eq!(found, [("a", None), ("b", Some(2)), ("c", None), ("e", Some(5)), ("f", None)]);
    }

    #[test]
    fn diff_retires_names_before_between_and_after_the_new_ones() {
        let cfg =
            |n: &str| Arc::new(NamespaceConfig { name: n.into(), description: None, cadences: Default::default() });
        let names = |v: &[&str]| -> BTreeMap<Arc<str>, Arc<NamespaceConfig>> {
            v.iter().map(|n| (Arc::from(*n), cfg(n))).collect()
        };
        let old = names(&["a", "c", "e", "g"]);
        let running: BTreeMap<Arc<str>, ()> = old.keys().map(|k| (k.clone(), ())).collect();
        let new = names(&["b", "c", "f"]);
        let d = diff(&running, &BTreeMap::<Arc<str>, ()>::new(), &old, &new);
        assert_eq!(strs(&d.retire), ["a", "e", "g"]);
        assert_eq!(strs(&d.start), ["b", "f"]);
        assert!(d.change.is_empty(), "c's config is equal: {:?}", d.change);
    }
}
