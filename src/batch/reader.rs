//! The batch reader: one thread that reads the latest batch for every namespace that asks.
//!
//! A run begins by reading its namespace's latest batch. On a blocking thread per read, the
//! wake-up and sleep of that thread cost more than the read; here one thread takes every
//! request queued since it last looked, and a folder asked for by several of them (the
//! shared `out/batches`) is read once for all. Every answer comes from a read that began
//! after its request arrived, so no request sees a batch older than it would have alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use tokio::sync::oneshot;

use super::{Batch, BatchError, Unwatched, batch_dir, latest_in};
use crate::worker_thread::WorkerThread;

/// Requests taken into one pass at most, so a burst does not hold the first of them back.
const MAX_PER_PASS: usize = 1024;

type Answer = Result<Option<Batch>, BatchError>;

struct Ask {
    namespace: String,
    reply: oneshot::Sender<Answer>,
}

/// Reads namespaces' latest batches under one root, on a thread of its own.
pub struct BatchReader {
    root: PathBuf,
    thread: WorkerThread<Ask>,
}

impl BatchReader {
    /// A reader of batches under `root/out/batches`; its thread starts with the first request.
    pub fn new(root: PathBuf) -> Self {
        let under = root.clone();
        Self { root, thread: WorkerThread::new("vmsh-batches", move |rx| run(&under, &rx)) }
    }

    /// The latest batch of `namespace` (`None` when there is none yet).
    pub fn latest(&self, namespace: &str) -> impl Future<Output = Answer> + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.thread.send(Ask { namespace: namespace.to_string(), reply });
        let shared = self.root.join("out").join("batches");
        async move {
            sent.map_err(|source| BatchError::Io { path: shared.clone(), source })?;
            answer.await.unwrap_or_else(|_| {
                Err(BatchError::Io { path: shared, source: std::io::Error::other("the batch reader stopped") })
            })
        }
    }
}

fn run(root: &Path, rx: &Receiver<Ask>) {
    while let Ok(first) = rx.recv() {
        let mut pass = vec![first];
        pass.extend(rx.try_iter().take(MAX_PER_PASS - 1));
        answer_pass(root, pass);
    }
}

/// Answers one pass of requests, reading each folder once.
fn answer_pass(root: &Path, pass: Vec<Ask>) {
    let mut read: HashMap<PathBuf, Option<Batch>> = HashMap::new();
    for Ask { namespace, reply } in pass {
        let answer = batch_dir(root, &namespace, &mut Unwatched).and_then(|dir| match read.get(&dir) {
            Some(batch) => Ok(batch.clone()),
            None => {
                let answer = latest_in(&dir, &mut Unwatched);
                // An error is rare and cheap to meet again; only a good read is shared.
                if let Ok(batch) = &answer {
                    read.insert(dir, batch.clone());
                }
                answer
            }
        });
        // The run may have been given up (a shutdown); nothing waits for the answer then.
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const ROOT: &str = "sha256:5bd2f6cfdc3c4e36ce1e2a7ed6bc59c4c9a9a0a4f8c1fe3f36f3aa5b7b0c3a11";

    fn write(dir: &Path, name: &str, id: &str) {
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(dir.join(name), format!(r#"{{"id":"{id}","root":"{ROOT}"}}"#)).expect("write");
    }

    #[actix_rt::test]
    async fn answers_each_namespace_from_its_own_folder_or_the_shared_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = tmp.path().join("out/batches");
        write(&shared, "0001.json", "shared-1");
        write(&shared.join("own"), "0001.json", "own-1");
        let reader = BatchReader::new(tmp.path().to_path_buf());
        let asks: Vec<_> = ["a", "own", "b"].iter().map(|ns| reader.latest(ns)).collect();
        let mut ids = Vec::new();
        for ask in asks {
            ids.push(ask.await.expect("read").map(|b| b.id));
        }
        assert_eq!(ids, [Some("shared-1".into()), Some("own-1".into()), Some("shared-1".into())]);
    }

    #[actix_rt::test]
    async fn a_batch_written_after_an_answer_is_seen_by_the_next_request() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reader = BatchReader::new(tmp.path().to_path_buf());
        assert_eq!(reader.latest("ns").await.expect("read"), None, "no batch yet is not an error");
        write(&tmp.path().join("out/batches"), "0001.json", "b1");
        assert_eq!(reader.latest("ns").await.expect("read").map(|b| b.id), Some("b1".into()));
        write(&tmp.path().join("out/batches"), "0002.json", "b2");
        assert_eq!(reader.latest("ns").await.expect("read").map(|b| b.id), Some("b2".into()));
    }

    #[test]
    fn one_pass_answers_every_request_and_reports_errors_to_each() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = tmp.path().join("out/batches");
        write(&shared, "0001.json", "b1");
        fs::create_dir_all(shared.join("bad")).expect("mkdir");
        fs::write(shared.join("bad").join("0001.json"), "not json").expect("write");
        let (asks, answers): (Vec<_>, Vec<_>) = ["a", "bad", "b", "bad"]
            .iter()
            .map(|ns| {
                let (reply, answer) = oneshot::channel();
                (Ask { namespace: (*ns).to_string(), reply }, answer)
            })
            .unzip();
        answer_pass(tmp.path(), asks);
        let got: Vec<_> = answers
            .into_iter()
            .map(|mut a| match a.try_recv().expect("answered") {
                Ok(b) => b.map(|b| b.id).unwrap_or_default(),
                Err(e) => format!("error: {e}"),
            })
            .collect();
        assert_eq!(got[0], "b1");
        assert_eq!(got[2], "b1");
        assert!(got[1].starts_with("error:") && got[1].contains("not a valid batch"), "{}", got[1]);
        assert_eq!(got[1], got[3]);
    }
}
