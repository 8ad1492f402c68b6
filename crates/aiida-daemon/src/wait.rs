//! Waiting for a process to reach a state: on the state-change notifications the engine sends
//! through the profile's PostgreSQL, not by polling.

use std::time::{Duration, Instant};

use aiida::orm::{Log, Node, PROCESS_STATE_CHANNEL};
use aiida::storage::Storage;

use crate::worker::listen_to;

/// Why a process did not reach the state waited for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwaitError {
    /// It ended in another state.
    #[error("process {pk} ended {state}{detail}, not {wanted}")]
    Ended {
        /// The process.
        pk: i32,
        /// The state it ended in.
        state: String,
        /// Its exit status or exception.
        detail: String,
        /// The state waited for.
        wanted: String,
    },
    /// It did not get there in time.
    #[error("process {pk} did not reach {wanted} within {seconds} s: it is {state}{report}")]
    Timeout {
        /// The process.
        pk: i32,
        /// The state it is in.
        state: String,
        /// The state waited for.
        wanted: String,
        /// How long we waited.
        seconds: f64,
        /// Its report (log records), and more that helps (the daemon log's end).
        report: String,
    },
    /// The process could not be submitted.
    #[error(transparent)]
    Submit(#[from] aiida_engine::EngineError),
    /// Listening or loading failed.
    #[error("cannot wait for process {pk}: {reason}")]
    Listen {
        /// The process.
        pk: i32,
        /// Why.
        reason: String,
    },
}

const TERMINAL: [&str; 3] = ["finished", "excepted", "killed"];

/// Waits until process `pk` is in `state` (`finished`, `waiting`, ...); fails at once when it ends
/// in another terminal state (with its exit status or exception), and after `timeout` (naming the
/// state it is in, with its report).
pub fn await_state(storage: &Storage, pk: i32, state: &str, timeout: Duration) -> Result<Node, AwaitError> {
    let (storage, wanted) = (storage.clone(), state.to_owned());
    aiida::runtime::block_on(aiida::runtime::on_runtime(
        async move { wait_until(&storage, pk, &wanted, timeout).await },
    ))
}

/// [`await_state`], async, on the core's runtime.
pub(crate) async fn wait_until(
    storage: &Storage,
    pk: i32,
    wanted: &str,
    timeout: Duration,
) -> Result<Node, AwaitError> {
    let changes = StateChanges::open(storage).await.map_err(|reason| AwaitError::Listen { pk, reason })?;
    wait_for(storage, &changes, pk, wanted, timeout).await
}

/// [`await_state`] on notifications that `changes` already listens to.
pub(crate) async fn wait_for(
    storage: &Storage,
    changes: &StateChanges,
    pk: i32,
    wanted: &str,
    timeout: Duration,
) -> Result<Node, AwaitError> {
    let reached = |node: &Node| node.attribute("process_state").and_then(|v| v.as_str()).unwrap_or("created") == wanted;
    wait_for_node(storage, changes, pk, wanted, reached, timeout).await
}

/// Waits until process `pk` is `reached` (described as `wanted`), woken by the notifications
/// `changes` listens to; an end that is not `reached` fails at once.
pub(crate) async fn wait_for_node(
    storage: &Storage,
    changes: &StateChanges,
    pk: i32,
    wanted: &str,
    reached: impl Fn(&Node) -> bool,
    timeout: Duration,
) -> Result<Node, AwaitError> {
    let wanted = wanted.to_owned();
    let fail = |reason: String| AwaitError::Listen { pk, reason };
    // Subscribed before looking: a change between the two is not missed.
    let mut notes = changes.subscribe();
    let deadline = Instant::now() + timeout;
    let prefix = format!("{pk} ");
    loop {
        let node = Node::load_async(storage, pk).await.map_err(|e| fail(aiida::report::Chain(&e).to_string()))?;
        if reached(&node) {
            return Ok(node);
        }
        let current = node.attribute("process_state").and_then(|v| v.as_str()).unwrap_or("created").to_owned();
        if TERMINAL.contains(&current.as_str()) {
            let detail = match (node.attribute("exit_status"), node.attribute("exception")) {
                (Some(status), _) => format!(" [{status}]"),
                (_, Some(exception)) => format!(": {}", exception.as_str().unwrap_or_default()),
                _ => String::new(),
            };
            return Err(AwaitError::Ended { pk, state: current, detail, wanted });
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, notes.recv()).await {
                Ok(Ok(note)) if note.starts_with(&prefix) => break,
                Ok(Ok(_)) => continue,
                // Notifications were missed: look again.
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => break,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    return Err(fail("the notification connection closed".to_owned()));
                }
                Err(_) => {
                    let logs = Log::of_async(storage, &node).await.unwrap_or_default();
                    let report: String =
                        logs.iter().map(|l| format!("\n  {} {}: {}", l.time, l.levelname, l.message)).collect();
                    let report = if report.is_empty() { String::new() } else { format!("; its report:{report}") };
                    return Err(AwaitError::Timeout {
                        pk,
                        state: current,
                        wanted,
                        seconds: timeout.as_secs_f64(),
                        report,
                    });
                }
            }
        }
    }
}

/// A process going from one state to another (`waiting` to `running`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The process.
    pub pk: i32,
    /// The state it left.
    pub from: String,
    /// The state it is in.
    pub to: String,
}

/// The state changes of processes `pks` as they happen, in order, from the engine's notifications:
/// an iterator that blocks for the next change and ends once every process it follows has ended.
/// A process that has ended already is not followed. Dropping it stops listening.
pub fn watch(storage: &Storage, pks: &[i32]) -> Result<Watch, AwaitError> {
    let (storage, pks) = (storage.clone(), pks.to_vec());
    let (sender, changes) = tokio::sync::mpsc::unbounded_channel();
    if pks.is_empty() {
        return Ok(Watch { changes, task: aiida::runtime::handle().spawn(async move { drop(sender) }) });
    }
    // Listening before looking at the processes: a change in between is not missed.
    let (ready, listening) = tokio::sync::oneshot::channel();
    let task = aiida::runtime::handle().spawn(async move {
        let notes = match StateChanges::open(&storage).await {
            Ok(notes) => notes,
            Err(reason) => {
                let pk = pks.first().copied().unwrap_or_default();
                return drop(ready.send(Err(AwaitError::Listen { pk, reason })));
            }
        };
        let mut subscription = notes.subscribe();
        let mut followed = std::collections::HashSet::new();
        for &pk in &pks {
            match Node::load_async(&storage, pk).await {
                Ok(node) if !node.is_sealed() => drop(followed.insert(pk)),
                Ok(_) => {}
                Err(e) => {
                    return drop(
                        ready.send(Err(AwaitError::Listen { pk, reason: aiida::report::Chain(&e).to_string() })),
                    );
                }
            }
        }
        let _ = ready.send(Ok(()));
        while !followed.is_empty() {
            let note = match subscription.recv().await {
                Ok(note) => note,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    let reason = format!("{missed} state changes were missed (too many at once)");
                    return drop(sender.send(Err(AwaitError::Listen { pk: *followed.iter().next().unwrap(), reason })));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let mut fields = note.split(' ');
            let (Some(Ok(pk)), Some(to), Some(from), None) =
                (fields.next().map(str::parse), fields.next(), fields.next(), fields.next())
            else {
                continue; // (or paused or played)
            };
            if followed.contains(&pk) {
                if TERMINAL.contains(&to) {
                    followed.remove(&pk);
                }
                if sender.send(Ok(StateChange { pk, from: from.to_owned(), to: to.to_owned() })).is_err() {
                    return;
                }
            }
        }
    });
    let watch = Watch { changes, task };
    aiida::runtime::block_on(listening).unwrap_or(Ok(()))?;
    Ok(watch)
}

/// The state changes [`watch`] follows.
#[derive(Debug)]
pub struct Watch {
    changes: tokio::sync::mpsc::UnboundedReceiver<Result<StateChange, AwaitError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Iterator for Watch {
    type Item = Result<StateChange, AwaitError>;

    fn next(&mut self) -> Option<Self::Item> {
        aiida::runtime::block_on(self.changes.recv())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The state changes of the processes of a database, from a listening connection of their own
/// (closed when this is dropped), for any number of waiters.
pub(crate) struct StateChanges {
    sender: tokio::sync::broadcast::Sender<String>,
    _listener: crate::worker::Listener,
}

impl StateChanges {
    pub(crate) async fn open(storage: &Storage) -> Result<StateChanges, String> {
        let (forward, mut payloads) = tokio::sync::mpsc::unbounded_channel::<String>();
        let listener = listen_to(storage, PROCESS_STATE_CHANNEL, forward).await?;
        let (sender, _) = tokio::sync::broadcast::channel(1024);
        let relay = sender.clone();
        tokio::spawn(async move {
            while let Some(payload) = payloads.recv().await {
                let _ = relay.send(payload);
            }
        });
        Ok(StateChanges { sender, _listener: listener })
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.sender.subscribe()
    }
}

impl std::fmt::Debug for StateChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateChanges").finish_non_exhaustive()
    }
}
