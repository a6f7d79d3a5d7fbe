//! Which members an aggregate collects and when it is sealed, as pure functions of the
//! members, the target's spec and the time, so every rule is tested without an actor or a
//! real clock.
//!
//! One aggregate collects at a time per group (target, cadence, confirmations, policy): the
//! first member opens it, and it is sealed at the end of the window it opened in, or at once
//! when it reaches `maxLeaves` (the next member then opens another). A member may leave until
//! the seal.
//!
//! Windows are slots of the wall clock (a 10 s window ends at :00, :10, :20 …), not counted
//! from the first member: a run then waits at most one window, whenever it comes. Counted from
//! the first member, a lone namespace whose anchor takes `c` to become final would open every
//! aggregate itself, one period plus `c` after the last, and fall `c` further behind its
//! schedule every period.

use std::collections::BTreeMap;

use crate::clock::{MonoMs, WallMs};
use crate::config::aggregate::AggregateSpec;
use crate::model::aggregate::GroupKey;
use crate::model::time::duration_ms;

/// An aggregate collecting members.
#[derive(Debug)]
struct Collecting<T> {
    /// Tells this aggregate from later ones of its group, whose timers are set apart.
    id: u64,
    /// When its first member arrived.
    opened: MonoMs,
    /// When it is sealed unless it fills first.
    seal_at: MonoMs,
    /// How many members fill it.
    max: usize,
    members: Vec<T>,
}

/// What became of a member that joined.
#[derive(Debug, PartialEq)]
pub(crate) enum Joined<T> {
    /// It opened an aggregate, to be sealed at `seal_at` (see [`Groups::window_over`]).
    Opened {
        /// The aggregate's id.
        id: u64,
        /// When its window is over.
        seal_at: MonoMs,
    },
    /// It joined the aggregate collecting.
    Added,
    /// It filled the aggregate, which is sealed now with these members.
    Full(Vec<T>),
}

/// The aggregates collecting, one per group.
#[derive(Debug)]
pub(crate) struct Groups<T> {
    open: BTreeMap<GroupKey, Collecting<T>>,
    next_id: u64,
}

impl<T> Default for Groups<T> {
    fn default() -> Self {
        Self { open: BTreeMap::new(), next_id: 0 }
    }
}

impl<T> Groups<T> {
    /// `member` joins its group's aggregate, opening one at `now` (monotonic) if none collects;
    /// `wall` is the wall clock at `now`, whose window slots say when it is sealed.
    pub(crate) fn join(
        &mut self,
        key: GroupKey,
        spec: AggregateSpec,
        member: T,
        now: MonoMs,
        wall: WallMs,
    ) -> Joined<T> {
        let opened = !self.open.contains_key(&key);
        if opened {
            self.next_id += 1;
            let collecting = Collecting {
                id: self.next_id,
                opened: now,
                seal_at: now.saturating_add(until_window_ends(wall, spec.window)),
                max: usize::try_from(spec.max_leaves).unwrap_or(usize::MAX).max(1),
                members: Vec::new(),
            };
            self.open.insert(key.clone(), collecting);
        }
        let Some(collecting) = self.open.get_mut(&key) else { return Joined::Added };
        collecting.members.push(member);
        if collecting.members.len() >= collecting.max {
            return self.open.remove(&key).map_or(Joined::Added, |c| Joined::Full(c.members));
        }
        if opened { Joined::Opened { id: collecting.id, seal_at: collecting.seal_at } } else { Joined::Added }
    }

    /// The window of aggregate `id` of `key` is over at `now`: its members, when it is still
    /// collecting (it may have filled, or lost every member, meanwhile).
    pub(crate) fn window_over(&mut self, key: &GroupKey, id: u64, now: MonoMs) -> Option<Vec<T>> {
        match self.open.get(key) {
            Some(c) if c.id == id && c.seal_at <= now => self.open.remove(key).map(|c| c.members),
            _ => None,
        }
    }

    /// Takes the first collecting member `is` picks out of its aggregate.
    pub(crate) fn leave(&mut self, is: impl Fn(&T) -> bool) -> Option<T> {
        let (key, at) = self.open.iter().find_map(|(k, c)| c.members.iter().position(&is).map(|i| (k.clone(), i)))?;
        let collecting = self.open.get_mut(&key)?;
        let member = collecting.members.remove(at);
        if collecting.members.is_empty() {
            self.open.remove(&key);
        }
        Some(member)
    }

    /// Takes every collecting member (shutdown).
    pub(crate) fn drain(&mut self) -> Vec<T> {
        std::mem::take(&mut self.open).into_values().flat_map(|c| c.members).collect()
    }

    /// Each group collecting, with when its aggregate opened and how many members it has.
    pub(crate) fn opened(&self) -> impl Iterator<Item = (&GroupKey, MonoMs, usize)> {
        self.open.iter().map(|(k, c)| (k, c.opened, c.members.len()))
    }
}

/// Attempts that left before their job reached the aggregator: the namespace tells the
/// aggregator directly, while the job comes through the pool, so the leave can come first.
/// Their jobs are turned away on arrival instead of waiting for a window nobody needs.
#[derive(Debug, Default)]
pub(crate) struct Departed {
    ids: std::collections::VecDeque<String>,
}

impl Departed {
    /// Attempts remembered at most; an older one's job, should it still come, just joins.
    const KEPT: usize = 4096;

    /// Remembers that `attempt_id` left.
    pub(crate) fn remember(&mut self, attempt_id: String) {
        if self.ids.len() >= Self::KEPT {
            self.ids.pop_front();
        }
        self.ids.push_back(attempt_id);
    }

    /// Whether `attempt_id` left before its job came (forgetting it: it is answered now).
    pub(crate) fn take(&mut self, attempt_id: &str) -> bool {
        match self.ids.iter().position(|id| id == attempt_id) {
            Some(at) => self.ids.remove(at).is_some(),
            None => false,
        }
    }
}

/// Milliseconds from `wall` to the end of its window slot: a whole window when `wall` is
/// where a slot begins.
fn until_window_ends(wall: WallMs, window: std::time::Duration) -> i64 {
    let window = duration_ms(window).max(1);
    window - wall.rem_euclid(window)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::aggregate::{Member, seal};
    use crate::model::{CadenceKind, Target};

    fn key(target: &str) -> GroupKey {
        GroupKey {
            target: Target::parse(target).expect("target"),
            cadence: CadenceKind::Fast,
            confirmations: None,
            policy_oid: None,
        }
    }

    fn spec(window_ms: u64, max_leaves: u32) -> AggregateSpec {
        AggregateSpec { window: Duration::from_millis(window_ms), max_leaves }
    }

    /// The wall clock runs this far ahead of the monotonic one in these tests, so a seal time
    /// that followed the monotonic clock's slots instead would show.
    const WALL: WallMs = 1_700_000_003_000;

    #[test]
    fn the_first_member_opens_an_aggregate_sealed_when_its_window_ends_with_all_who_joined_meanwhile() {
        let mut g = Groups::default();
        fn join(g: &mut Groups<&'static str>, m: &'static str, mono: MonoMs) -> Joined<&'static str> {
            g.join(key("local:j"), spec(10_000, 1_024), m, mono, WALL + mono)
        }
        // The wall clock is 3 s into a 10 s slot at mono 0: the window ends at mono 7,000.
        let Joined::Opened { id, seal_at } = join(&mut g, "a", 1_000) else { panic!("the first member opens") };
        assert_eq!(seal_at, 7_000);
        assert_eq!(join(&mut g, "b", 5_000), Joined::Added);
        assert_eq!(join(&mut g, "c", 6_999), Joined::Added);
        assert_eq!(g.window_over(&key("local:j"), id, 6_999), None, "not before the window is over");
        assert_eq!(g.window_over(&key("local:j"), id, 7_000), Some(vec!["a", "b", "c"]));
        assert_eq!(g.window_over(&key("local:j"), id, 7_000), None, "sealed once");
        assert!(
            matches!(join(&mut g, "d", 7_000), Joined::Opened { seal_at: 17_000, .. }),
            "a slot's start waits it all"
        );
        assert_eq!(join(&mut g, "e", 16_999), Joined::Added, "d's aggregate collects to its end");
    }

    #[test]
    fn a_job_whose_attempt_left_before_it_came_is_recognised_once_and_old_departures_are_forgotten() {
        let mut d = Departed::default();
        d.remember("a".into());
        assert!(!d.take("b"), "only the attempt that left");
        assert!(d.take("a"));
        assert!(!d.take("a"), "answered once");
        for i in 0..=Departed::KEPT {
            d.remember(format!("x{i}"));
        }
        assert!(!d.take("x0"), "the oldest is forgotten past the bound");
        assert!(d.take(&format!("x{}", Departed::KEPT)));
    }

    #[test]
    fn a_lone_member_waits_at_most_one_window_and_never_drifts_behind_its_schedule() {
        // One namespace, period = window = 10 s, anchors final 1.5 s after they are sent: each
        // run starts when the last is final or when due, whichever is later.
        let (period, final_after) = (10_000, 1_500);
        let mut g = Groups::default();
        let mut started = 0;
        for run in 0..20 {
            let due = run * period;
            let Joined::Opened { id, seal_at } =
                g.join(key("local:j"), spec(10_000, 1_024), run, started, WALL + started)
            else {
                panic!("a lone member opens every aggregate")
            };
            assert_eq!(g.window_over(&key("local:j"), id, seal_at), Some(vec![run]));
            let lag = seal_at - due;
            assert!((0..=10_000).contains(&lag), "run {run} was sent {lag} ms after it was due");
            started = (due + period).max(seal_at + final_after);
        }
    }

    #[test]
    fn twenty_members_with_max_leaves_eight_make_two_full_aggregates_at_once_and_one_of_four_at_the_window() {
        let mut g = Groups::default();
        let mut sealed = Vec::new();
        let mut timers = Vec::new();
        for n in 0..20 {
            match g.join(key("local:j"), spec(10_000, 8), n, 0, WALL) {
                Joined::Opened { id, seal_at } => timers.push((id, seal_at)),
                Joined::Added => {}
                Joined::Full(members) => sealed.push(members),
            }
        }
        assert_eq!(sealed, vec![(0..8).collect::<Vec<_>>(), (8..16).collect()]);
        assert_eq!(timers.len(), 3, "each aggregate opened with a timer");
        let late: Vec<Vec<i32>> =
            timers.iter().filter_map(|(id, at)| g.window_over(&key("local:j"), *id, *at)).collect();
        assert_eq!(late, vec![vec![16, 17, 18, 19]], "the timers of the full ones find nothing to seal");
        let mut one = Groups::default();
        assert_eq!(one.join(key("local:j"), spec(10_000, 1), "x", 0, WALL), Joined::Full(vec!["x"]), "maxLeaves 1");
    }

    #[test]
    fn groups_of_another_target_cadence_confirmations_or_policy_collect_apart() {
        let mut g = Groups::default();
        let mut strong = key("local:j");
        strong.cadence = CadenceKind::Strong;
        let mut confirmed = key("local:j");
        confirmed.confirmations = Some(2);
        let mut policy = key("local:j");
        policy.policy_oid = Some("1.2.3".into());
        for k in [key("local:j"), key("local:k"), strong, confirmed, policy] {
            assert!(matches!(g.join(k, spec(1_000, 8), 1, 0, WALL), Joined::Opened { .. }));
        }
        assert_eq!(g.opened().count(), 5);
    }

    #[test]
    fn a_member_that_leaves_before_the_seal_is_not_in_it_and_an_emptied_aggregate_seals_nothing() {
        let mut g = Groups::default();
        let Joined::Opened { id, seal_at } = g.join(key("local:j"), spec(1_000, 8), "a", 0, WALL) else {
            panic!("opens")
        };
        g.join(key("local:j"), spec(1_000, 8), "b", 0, WALL);
        assert_eq!(g.leave(|m| *m == "a"), Some("a"));
        assert_eq!(g.leave(|m| *m == "a"), None, "gone already");
        assert_eq!(g.window_over(&key("local:j"), id, seal_at), Some(vec!["b"]));
        let Joined::Opened { id, seal_at } = g.join(key("local:j"), spec(1_000, 8), "c", 0, WALL) else {
            panic!("opens")
        };
        assert_eq!(g.leave(|m| *m == "c"), Some("c"));
        assert_eq!(g.window_over(&key("local:j"), id, seal_at), None);
        g.join(key("local:j"), spec(1_000, 8), "d", 0, WALL);
        assert_eq!(g.drain(), vec!["d"]);
        assert_eq!(g.opened().count(), 0);
    }

    #[test]
    fn an_aggregate_sealed_from_its_members_in_any_order_is_the_same_tree() {
        let member = |ns: &str, n: u8| Member {
            namespace: ns.into(),
            cadence: CadenceKind::Fast,
            batch_id: "b1".into(),
            root: [n; 32],
            attempt_id: [n; 32],
        };
        let mut g = Groups::default();
        let arrivals = [member("c", 3), member("a", 1), member("b", 2)];
        let mut sealed = None;
        for m in arrivals.iter().cloned() {
            if let Joined::Full(members) = g.join(key("local:j"), spec(1_000, 3), m, 0, WALL) {
                sealed = Some(members);
            }
        }
        let sealed = seal(&sealed.expect("full at three")).expect("sealed");
        let mut sorted = arrivals.to_vec();
        sorted.sort();
        assert_eq!(seal(&sorted).expect("sealed").root, sealed.root);
        let indexes: Vec<u64> = sealed.proofs.iter().map(|p| p.index).collect();
        assert_eq!(indexes, vec![2, 0, 1], "each member's leaf sits where its bytes sort");
    }
}
