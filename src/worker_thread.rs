//! A queue to a thread of its own, started with the first item and started again if it ever
//! ends (a panic), so one bad item cannot stop the work for good.

use std::io;
use std::sync::mpsc::{self, Receiver, SendError, Sender};
use std::sync::{Arc, Mutex};

/// Sends items to a named thread that runs `body` over its queue.
pub(crate) struct WorkerThread<T> {
    name: &'static str,
    body: Arc<dyn Fn(Receiver<T>) + Send + Sync>,
    queue: Mutex<Option<Sender<T>>>,
}

impl<T: Send + 'static> WorkerThread<T> {
    /// A worker named `name` (as threads are listed) whose thread runs `body`; nothing
    /// starts until the first [`send`](Self::send).
    pub(crate) fn new(name: &'static str, body: impl Fn(Receiver<T>) + Send + Sync + 'static) -> Self {
        Self { name, body: Arc::new(body), queue: Mutex::new(None) }
    }

    /// Queues `item`, starting the thread if it is not running; fails only if no thread
    /// can be started.
    pub(crate) fn send(&self, item: T) -> io::Result<()> {
        // A poisoned lock only means a sender panicked mid-send; the handle is intact.
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let tx = match &*queue {
            Some(tx) => tx,
            None => queue.insert(self.spawn()?),
        };
        let Err(SendError(item)) = tx.send(item) else { return Ok(()) };
        // The thread ended: what it held was dropped, and its askers were told. Start anew.
        let tx = queue.insert(self.spawn()?);
        tx.send(item).map_err(|_| io::Error::other(format!("{} stopped as soon as it started", self.name)))
    }

    fn spawn(&self) -> io::Result<Sender<T>> {
        let (tx, rx) = mpsc::channel();
        let body = Arc::clone(&self.body);
        std::thread::Builder::new().name(self.name.into()).spawn(move || body(rx))?;
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_ends_is_started_again_for_the_next_item() {
        let (done, results) = mpsc::channel();
        let worker = WorkerThread::new("test-worker", move |rx: Receiver<u32>| {
            for item in rx {
                // Ends the thread, as a panic would, without the noise of one.
                if item == 0 {
                    return;
                }
                let _ = done.send(item);
            }
        });
        worker.send(1).expect("started");
        worker.send(0).expect("queued");
        assert_eq!(results.recv().expect("answered"), 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut sent = 0;
        // The first sends after the stop may still reach the ending thread's queue.
        while std::time::Instant::now() < deadline {
            worker.send(2).expect("sent");
            sent += 1;
            if results.recv_timeout(std::time::Duration::from_millis(50)).is_ok() {
                return;
            }
        }
        panic!("no thread answered after {sent} sends");
    }
}
