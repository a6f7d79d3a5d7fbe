//! One timer for every namespace actor. A timer of its own cost each actor a boxed tokio
//! `Sleep` and a spawned future in its context: 160 bytes a namespace, 16 MB at 100,000.
//! Here each actor keeps its due time (when to be woken, and whether a wake-up still counts,
//! stay its own decisions) and leaves the waking to one actor that sleeps until the earliest
//! due time of them all.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix::WeakAddr;
use actix::dev::ToEnvelope;
use actix::prelude::*;

use crate::clock::{Clock, MonoMs};
use crate::heap::Packing;

/// Wakes an actor for the time it set. An actor that set another time since ignores it.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub(crate) struct Ring(pub MonoMs);

/// Who is woken when, by time and then by id: a plain map, so the logic needs no runtime.
#[derive(Debug)]
pub(crate) struct Schedule<T> {
    due: BTreeMap<(MonoMs, u64), T>,
    /// When to rebuild `due` packed: wake-ups set in random order leave a third of its
    /// nodes' room empty.
    packing: Packing,
}

impl<T> Default for Schedule<T> {
    fn default() -> Self {
        Self { due: BTreeMap::new(), packing: Packing::default() }
    }
}

impl<T> Schedule<T> {
    /// `who` (known by `id`) is woken at `at`.
    pub(crate) fn set(&mut self, at: MonoMs, id: u64, who: T) {
        self.due.insert((at, id), who);
        self.packing.pack(&mut self.due);
    }

    /// The wake-up of `id` at `at` is off.
    pub(crate) fn clear(&mut self, at: MonoMs, id: u64) {
        self.due.remove(&(at, id));
    }

    /// The earliest time anyone is to be woken.
    pub(crate) fn earliest(&self) -> Option<MonoMs> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    /// Takes every wake-up due by `now`, earliest first.
    pub(crate) fn take_due(&mut self, now: MonoMs) -> Vec<(MonoMs, T)> {
        let mut due = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), who) = entry.remove_entry();
            due.push((at, who));
        }
        due
    }
}

/// The wake-ups, shared by the alarm's actor and the handles that set them.
struct Shared<A: Actor> {
    schedule: Schedule<WeakAddr<A>>,
    /// The time the alarm's timer is set (or about to be set) for.
    armed: Option<MonoMs>,
}

fn lock<A: Actor>(shared: &Mutex<Shared<A>>) -> MutexGuard<'_, Shared<A>> {
    // Every change leaves the schedule whole, so a panic elsewhere poisons nothing real.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where actors set and clear their wake-ups: a call, not a message, so that a fleet
/// starting (100,000 wake-ups at once) queues no message per actor, whose freed envelopes
/// would stay behind as holes in the heap.
pub(crate) struct Alarm<A: Actor> {
    shared: Arc<Mutex<Shared<A>>>,
    clock: Addr<AlarmClock<A>>,
}

impl<A: Actor> Clone for Alarm<A> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared), clock: self.clock.clone() }
    }
}

impl<A> Alarm<A>
where
    A: Actor + Handler<Ring>,
    A::Context: ToEnvelope<A, Ring>,
{
    /// An alarm on `clock`, its actor started on the current arbiter.
    pub(crate) fn start(clock: Arc<dyn Clock>) -> Self {
        let shared = Arc::new(Mutex::new(Shared { schedule: Schedule::default(), armed: None }));
        let actor = AlarmClock { clock, shared: Arc::clone(&shared), timer: None }.start();
        Self { shared, clock: actor }
    }

    /// Wakes `addr`'s actor (known by `id`, unique among those this alarm wakes) at `at`.
    pub(crate) fn set(&self, at: MonoMs, id: u64, addr: WeakAddr<A>) {
        let mut shared = lock(&self.shared);
        shared.schedule.set(at, id, addr);
        // Only a wake-up earlier than the timer's moves it.
        if shared.armed.is_none_or(|armed| at < armed) {
            shared.armed = Some(at);
            self.clock.do_send(Rearm);
        }
    }

    /// The wake-up of `id` at `at` is off. The timer may go off for nothing; it then waits
    /// for the next.
    pub(crate) fn clear(&self, at: MonoMs, id: u64) {
        lock(&self.shared).schedule.clear(at, id);
    }
}

/// The earliest wake-up may have moved: set the timer for it.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
struct Rearm;

/// Sleeps until the earliest wake-up on the injected clock and rings whoever is due.
pub(crate) struct AlarmClock<A: Actor> {
    clock: Arc<dyn Clock>,
    shared: Arc<Mutex<Shared<A>>>,
    /// The one timer, and when it goes off.
    timer: Option<(MonoMs, SpawnHandle)>,
}

impl<A> AlarmClock<A>
where
    A: Actor + Handler<Ring>,
    A::Context: ToEnvelope<A, Ring>,
{
    /// Sets the timer for the earliest wake-up, or clears it when there is none.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let next = {
            let mut shared = lock(&self.shared);
            shared.armed = shared.schedule.earliest();
            shared.armed
        };
        if self.timer.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        if let Some((_, old)) = self.timer.take() {
            ctx.cancel_future(old);
        }
        if let Some(at) = next {
            let sleep = actix::fut::wrap_future(self.clock.sleep_until(at));
            let handle = ctx.spawn(sleep.map(|(), act: &mut Self, ctx| {
                act.timer = None;
                act.ring(ctx);
            }));
            self.timer = Some((at, handle));
        }
    }

    /// Rings everyone due by now, then waits for the next.
    fn ring(&mut self, ctx: &mut Context<Self>) {
        let due = lock(&self.shared).schedule.take_due(self.clock.mono_ms());
        for (at, addr) in due {
            if let Some(addr) = addr.upgrade() {
                addr.do_send(Ring(at));
            }
        }
        self.arm(ctx);
    }
}

impl<A: Actor> Actor for AlarmClock<A> {
    type Context = Context<Self>;
}

impl<A> Handler<Rearm> for AlarmClock<A>
where
    A: Actor + Handler<Ring>,
    A::Context: ToEnvelope<A, Ring>,
{
    type Result = ();
    fn handle(&mut self, _: Rearm, ctx: &mut Context<Self>) {
        self.arm(ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn wake_ups_come_due_in_time_order_and_a_cleared_one_never_does() {
        let mut s = Schedule::default();
        s.set(30, 1, "a at 30");
        s.set(10, 2, "b at 10");
        s.set(10, 3, "c at 10");
        s.set(20, 1, "a at 20");
        s.clear(30, 1);
        s.clear(99, 9);
        assert_eq!(s.earliest(), Some(10));
        assert!(s.take_due(9).is_empty(), "nothing before its time");
        assert_eq!(s.take_due(10), [(10, "b at 10"), (10, "c at 10")]);
        assert_eq!(s.take_due(1_000), [(20, "a at 20")], "the cleared one is gone");
        assert_eq!(s.earliest(), None);
    }

    struct Woken(Vec<MonoMs>);

    impl Actor for Woken {
        type Context = Context<Self>;
    }

    impl Handler<Ring> for Woken {
        type Result = ();
        fn handle(&mut self, msg: Ring, _: &mut Context<Self>) {
            self.0.push(msg.0);
        }
    }

    #[derive(Message)]
    #[rtype(result = "Vec<MonoMs>")]
    struct Rings;

    impl Handler<Rings> for Woken {
        type Result = MessageResult<Rings>;
        fn handle(&mut self, _: Rings, _: &mut Context<Self>) -> MessageResult<Rings> {
            MessageResult(self.0.clone())
        }
    }

    /// Polls `woken` until it has rung `want` times, for up to five seconds.
    async fn rings(woken: &Addr<Woken>, want: usize) -> Vec<MonoMs> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let got = woken.send(Rings).await.unwrap_or_default();
            if got.len() >= want || std::time::Instant::now() > deadline {
                return got;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[actix_rt::test]
    async fn an_actor_is_woken_once_at_each_time_it_set_on_the_injected_clock() {
        let clock = Arc::new(ManualClock::new(0));
        let alarm = Alarm::<Woken>::start(clock.clone());
        let woken = Woken(Vec::new()).start();
        for at in [200, 100, 300] {
            alarm.set(at, 1, woken.downgrade());
        }
        alarm.clear(300, 1);
        // Nothing rings until the clock gets there.
        let _ = alarm.clock.send(Rearm).await;
        assert!(rings(&woken, 0).await.is_empty());
        clock.advance(150);
        assert_eq!(rings(&woken, 1).await, [100]);
        clock.advance(1_000);
        assert_eq!(rings(&woken, 2).await, [100, 200], "the cleared wake-up never rings");
    }
}
