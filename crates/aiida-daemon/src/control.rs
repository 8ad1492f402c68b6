//! Process control over the database: a kill request is a row of ours that the worker running the
//! process acts on (woken by a notification); a process nobody runs is killed right here.

use std::time::Duration;

use aiida::orm::Node;
use aiida::storage::{Storage, literal};

use crate::queue::{CHANNEL, ensure_tables};
use crate::wait::AwaitError;
use crate::worker::{LOCK_CLASS, listen_to};

/// The status a process killed through `verdi process kill` ends with (aiida's text).
pub const KILLED_BY_VERDI: &str = "Killed through `verdi process kill`";

/// Kills process `pk` with `message` as its status: the worker running it stops it, kills its
/// scheduler job and ends it KILLED; a process that no worker runs (queued, or its daemon
/// stopped) is killed here. Returns the node once it is KILLED (waiting at most `timeout`); a
/// process that ended already is returned as it is.
pub fn kill(storage: &Storage, pk: i32, message: &str, timeout: Duration) -> Result<Node, AwaitError> {
    let (storage, message) = (storage.clone(), message.to_owned());
    aiida::runtime::block_on(aiida::runtime::on_runtime(async move {
        let fail = |reason: String| AwaitError::Listen { pk, reason };
        let node = Node::load_async(&storage, pk).await.map_err(|e| fail(aiida::report::Chain(&e).to_string()))?;
        if node.is_sealed() {
            return Ok(node);
        }
        ensure_tables(&storage).await?;
        storage
            .execute_own_async(&format!(
                "INSERT INTO aiida_rs_process_control (process_id, intent, message) VALUES ({pk}, 'kill', {message})
                 ON CONFLICT (process_id) DO UPDATE SET intent = 'kill', message = EXCLUDED.message, requested = now();
                 SELECT pg_notify({channel}, 'control');",
                message = literal(&message),
                channel = literal(CHANNEL)
            ))
            .await
            .map_err(|e| fail(aiida::report::Chain(&e).to_string()))?;
        // Nobody runs it if its lock is free: then it is killed here, under the lock.
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let session = listen_to(&storage, "aiida_rs_unused", tx).await.map_err(fail)?;
        let free = session
            .client
            .query_one(&format!("SELECT pg_try_advisory_lock({LOCK_CLASS}, {pk})"), &[])
            .await
            .map(|row| row.get::<_, bool>(0))
            .map_err(|e| fail(e.to_string()))?;
        if free {
            let killed = aiida_engine::kill_process_async(&storage, pk, &message).await;
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
        crate::wait::wait_until(&storage, pk, "killed", timeout).await
    }))
}
