//! Process control over the database: a kill request is a row of ours that the worker running the
//! process acts on (woken by a notification); a process nobody runs is killed right here.

use std::time::Duration;

use aiida::orm::Node;
use aiida::storage::{Storage, literal};

use crate::queue::{CHANNEL, ensure_tables};
use crate::wait::{AwaitError, StateChanges, wait_for, wait_for_node};
use crate::worker::{LOCK_CLASS, connect_own};

/// The status a process killed through `verdi process kill` ends with (aiida's text).
pub const KILLED_BY_VERDI: &str = "Killed through `verdi process kill`";

/// Kills process `pk` with `message` as its status: the worker running it stops it, kills its
/// scheduler job and ends it KILLED; a process that no worker runs (queued, or its daemon
/// stopped) is killed here. Returns the node once it is KILLED (waiting at most `timeout`); a
/// process that ended already is returned as it is.
pub fn kill(storage: &Storage, pk: i32, message: &str, timeout: Duration) -> Result<Node, AwaitError> {
    request(storage, pk, "kill", message, timeout)
}

/// The status a process paused through `verdi process pause` has (aiida's text).
pub const PAUSED_BY_VERDI: &str = "Paused through `verdi process pause`";

/// Pauses process `pk` with `message` as its status: the worker running it stops it where it is
/// (a job with the scheduler runs on) and it stays paused, out of the queue, until [`play`]; a
/// process that no worker runs is paused here. Returns the node once it is paused.
pub fn pause(storage: &Storage, pk: i32, message: &str, timeout: Duration) -> Result<Node, AwaitError> {
    request(storage, pk, "pause", message, timeout)
}

/// Plays a paused process `pk`: `paused` and its status removed, and queued again for the daemon,
/// which continues it from where it stopped.
pub fn play(storage: &Storage, pk: i32) -> Result<Node, AwaitError> {
    let storage = storage.clone();
    aiida::runtime::block_on(aiida::runtime::on_runtime(async move {
        let node = aiida_engine::play_process_async(&storage, pk).await?;
        if !node.is_sealed() {
            ensure_tables(&storage).await?;
            crate::queue::enqueue(&storage, pk).await?;
        }
        Ok(node)
    }))
}

fn request(
    storage: &Storage,
    pk: i32,
    intent: &'static str,
    message: &str,
    timeout: Duration,
) -> Result<Node, AwaitError> {
    let (storage, message) = (storage.clone(), message.to_owned());
    aiida::runtime::block_on(aiida::runtime::on_runtime(async move {
        let fail = |reason: String| AwaitError::Listen { pk, reason };
        let node = Node::load_async(&storage, pk).await.map_err(|e| fail(aiida::report::Chain(&e).to_string()))?;
        if node.is_sealed() {
            return Ok(node);
        }
        ensure_tables(&storage).await?;
        // Listening before asking: the worker's answer is not missed.
        let changes = StateChanges::open(&storage).await.map_err(fail)?;
        storage
            .execute_own_async(&format!(
                "INSERT INTO aiida_rs_process_control (process_id, intent, message) VALUES ({pk}, {intent}, {message})
                 ON CONFLICT (process_id) DO UPDATE SET intent = EXCLUDED.intent, message = EXCLUDED.message,
                     requested = now();
                 SELECT pg_notify({channel}, 'control');",
                intent = literal(intent),
                message = literal(&message),
                channel = literal(CHANNEL)
            ))
            .await
            .map_err(|e| fail(aiida::report::Chain(&e).to_string()))?;
        // Nobody runs it if its lock is free: then it is killed here, under the lock.
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let session = connect_own(&storage, tx).await.map_err(fail)?;
        let free = session
            .client
            .query_one(&format!("SELECT pg_try_advisory_lock({LOCK_CLASS}, {pk})"), &[])
            .await
            .map(|row| row.get::<_, bool>(0))
            .map_err(|e| fail(e.to_string()))?;
        if free {
            let killed = if intent == "pause" {
                aiida_engine::pause_process_async(&storage, pk, &message).await
            } else {
                aiida_engine::kill_process_async(&storage, pk, &message).await
            };
            let _ = storage
                .execute_own_async(&format!(
                    "DELETE FROM aiida_rs_process_control WHERE process_id = {pk};
                     DELETE FROM aiida_rs_process_queue WHERE process_id = {pk};"
                ))
                .await;
            drop(session);
            return killed.map_err(AwaitError::from);
        }
        drop(session);
        if intent == "pause" {
            // Paused is no process state: wait until the worker has let the process go.
            let paused = |node: &Node| node.attribute("paused").is_some() || node.is_sealed();
            return wait_for_node(&storage, &changes, pk, "paused", paused, timeout).await;
        }
        wait_for(&storage, &changes, pk, "killed", timeout).await
    }))
}
