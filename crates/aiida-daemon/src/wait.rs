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
    aiida::runtime::block_on(aiida::runtime::on_runtime(async move {
        let fail = |reason: String| AwaitError::Listen { pk, reason };
        let (tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
        // Listening before looking: a change between the two is not missed.
        let _listener = listen_to(&storage, PROCESS_STATE_CHANNEL, tx).await.map_err(fail)?;
        let deadline = Instant::now() + timeout;
        let prefix = format!("{pk} ");
        loop {
            let node = Node::load_async(&storage, pk).await.map_err(|e| fail(aiida::report::Chain(&e).to_string()))?;
            let current = node.attribute("process_state").and_then(|v| v.as_str()).unwrap_or("created").to_owned();
            if current == wanted {
                return Ok(node);
            }
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
                    Ok(Some(note)) if note.starts_with(&prefix) => break,
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err(fail("the notification connection closed".to_owned())),
                    Err(_) => {
                        let logs = Log::of_async(&storage, &node).await.unwrap_or_default();
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
    }))
}
