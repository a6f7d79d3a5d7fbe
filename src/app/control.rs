//! What a running service is asked from outside: stop, look at the config now, or nothing.
//! The binary is asked by Unix signals ([`Signals`]); a program that runs the service in its
//! own process, such as an integration test, asks through a [`Remote`] instead, so it needs
//! no signal handler that would change how the whole process answers SIGINT.
//!
//! Signals are listened to from before the first slow load ([`Signals::install`]): SIGHUP,
//! SIGUSR1 and SIGUSR2 terminate a process by default, and a deploy step that sends SIGHUP
//! while a large config still parses must not kill the scheduler.

use std::future::Future;
use std::task::Poll;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use super::startup::StartupError;

/// What a request asks of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asks {
    /// Drain and stop; a second one while draining forces the exit.
    Stop,
    /// Look at the config files now.
    CheckConfig,
    /// Nothing: logged once (with why) and otherwise ignored, instead of the default of
    /// terminating.
    Ignore(&'static str),
}

/// Where requests come from, each with the name it is logged under (`SIGTERM` …).
pub trait Control {
    /// The next request.
    fn next(&mut self) -> impl Future<Output = (&'static str, Asks)>;

    /// A stop that arrived while start-up loaded the config and the state, if any; does not
    /// wait for one.
    fn stop_asked_during_start_up(&mut self) -> impl Future<Output = Option<&'static str>>;

    /// The next request that asks to stop; others are passed over.
    fn next_stop(&mut self) -> impl Future<Output = &'static str> {
        async move {
            loop {
                if let (name, Asks::Stop) = self.next().await {
                    return name;
                }
            }
        }
    }
}

/// Why SIGUSR1 and SIGUSR2 are ignored.
const NO_MEANING: &str = "it has no meaning to vmsh-scheduler";

/// One handled signal.
struct Listener {
    name: &'static str,
    asks: Asks,
    stream: Signal,
}

/// The signals the service handles, listened to from [`Signals::install`] on. A signal that
/// arrives before a stream polls it is kept, not lost: several of one kind fold into one.
pub struct Signals(Vec<Listener>);

impl Signals {
    /// Installs the handlers; call it inside the actix `System`, before anything slow.
    pub fn install() -> Result<Self, StartupError> {
        let table = [
            // Listed by priority: a storm of SIGHUP never hides a SIGTERM.
            ("SIGTERM", SignalKind::terminate(), Asks::Stop),
            ("SIGINT", SignalKind::interrupt(), Asks::Stop),
            ("SIGQUIT", SignalKind::quit(), Asks::Stop),
            ("SIGHUP", SignalKind::hangup(), Asks::CheckConfig),
            ("SIGUSR1", SignalKind::user_defined1(), Asks::Ignore(NO_MEANING)),
            ("SIGUSR2", SignalKind::user_defined2(), Asks::Ignore(NO_MEANING)),
            // Caught, the write that went past `ulimit -f` fails with EFBIG instead, and is
            // handled as a full disk is.
            (
                "SIGXFSZ",
                SignalKind::from_raw(libc::SIGXFSZ),
                Asks::Ignore("a write went past the file size limit (ulimit -f) and fails instead"),
            ),
        ];
        let mut listeners = Vec::with_capacity(table.len());
        for (name, kind, asks) in table {
            let stream =
                signal(kind).map_err(|e| StartupError::Other(format!("cannot install a {name} handler: {e}")))?;
            listeners.push(Listener { name, asks, stream });
        }
        Ok(Self(listeners))
    }
}

impl Control for Signals {
    /// The next signal (the first by priority when several are waiting) and what it asks.
    async fn next(&mut self) -> (&'static str, Asks) {
        std::future::poll_fn(|cx| {
            for l in &mut self.0 {
                if l.stream.poll_recv(cx).is_ready() {
                    return Poll::Ready((l.name, l.asks));
                }
            }
            Poll::Pending
        })
        .await
    }

    async fn stop_asked_during_start_up(&mut self) -> Option<&'static str> {
        // Start-up blocked this thread: let the runtime deliver what its handlers recorded.
        tokio::task::yield_now().await;
        std::future::poll_fn(|cx| {
            Poll::Ready(
                self.0
                    .iter_mut()
                    .filter(|l| l.asks == Asks::Stop)
                    .find_map(|l| l.stream.poll_recv(cx).is_ready().then_some(l.name)),
            )
        })
        .await
    }
}

/// Requests made in-process through a [`RemoteHandle`].
#[derive(Debug)]
pub struct Remote(mpsc::UnboundedReceiver<Asks>);

/// Asks the service run with the paired [`Remote`]; it may be cloned and sent to any thread.
#[derive(Debug, Clone)]
pub struct RemoteHandle(mpsc::UnboundedSender<Asks>);

/// The name requests made through a [`RemoteHandle`] are logged under.
pub const REMOTE: &str = "remote";

impl Remote {
    /// A remote control and the handle that works it.
    pub fn new() -> (Self, RemoteHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(rx), RemoteHandle(tx))
    }
}

impl RemoteHandle {
    /// Asks the service to drain and stop (a second time: to stop without waiting).
    pub fn stop(&self) {
        // A service that already stopped has nothing left to stop.
        let _ = self.0.send(Asks::Stop);
    }

    /// Asks the service to look at its config files now, as SIGHUP does.
    pub fn check_config(&self) {
        let _ = self.0.send(Asks::CheckConfig);
    }
}

impl Control for Remote {
    async fn next(&mut self) -> (&'static str, Asks) {
        match self.0.recv().await {
            Some(asks) => (REMOTE, asks),
            // Every handle is gone: nobody can ask for anything any more.
            None => std::future::pending().await,
        }
    }

    async fn stop_asked_during_start_up(&mut self) -> Option<&'static str> {
        while let Ok(asks) = self.0.try_recv() {
            if asks == Asks::Stop {
                return Some(REMOTE);
            }
        }
        None
    }
}
