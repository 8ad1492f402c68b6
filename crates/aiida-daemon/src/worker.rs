//! A daemon worker: claims queued processes and runs them, many at once on one runtime, beating a
//! heartbeat; releases its claims when it stops.

use std::path::PathBuf;
use std::time::Duration;

use aiida::config::Instance;
use aiida::plugins::EntryPointScope;
use aiida::storage::{Storage, literal};
use serde::{Deserialize, Serialize};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::queue::{CHANNEL, HEARTBEAT_TIMEOUT_SECONDS, ensure_tables};

/// Set on a worker process (this executable run again): what it serves, as JSON.
const WORKER_ENV: &str = "AIIDA_DAEMON_WORKER";

/// The environment variable that makes this executable a worker. (A function, not the constant:
/// whoever starts workers then links this module, and with it the constructor that catches them.)
#[inline(never)]
pub(crate) fn worker_env() -> &'static str {
    WORKER_ENV
}

/// The first key of the advisory locks under which processes run (the second is the pk).
pub(crate) const LOCK_CLASS: i32 = 73461;

/// What a worker serves.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    /// The instance folder.
    pub(crate) instance: PathBuf,
    /// The profile.
    pub(crate) profile: String,
    /// A process whose end ends the worker (the test process that started it), if any.
    pub(crate) parent: Option<u32>,
    /// The entry-point scope of whoever started it, described.
    pub(crate) scope: Option<String>,
}

// Late: after every other constructor, those that register the binary's entry points included
// (the worker loads plugins by name).
#[ctor::ctor(unsafe, priority = late)]
fn intercept_worker() {
    let Some(spec) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    // SAFETY: constructors run before main, while this process has a single thread.
    unsafe { std::env::remove_var(WORKER_ENV) };
    let code = match serde_json::from_str::<WorkerSpec>(&spec.to_string_lossy()) {
        Ok(spec) => match run(spec) {
            Ok(()) => 0,
            Err(message) => {
                eprintln!("aiida daemon worker: {message}");
                1
            }
        },
        Err(e) => {
            eprintln!("aiida daemon worker: invalid {WORKER_ENV}: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// Runs a worker until it is told to stop (SIGTERM, SIGINT) or its parent ends.
pub(crate) fn run(spec: WorkerSpec) -> Result<(), String> {
    // The worker's stderr is the daemon log.
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).try_init();
    let chain = |e: &(dyn std::error::Error + 'static)| aiida::report::Chain(e).to_string();
    let profile = Instance::at(&spec.instance).load().and_then(|c| c.profile(&spec.profile)).map_err(|e| chain(&e))?;
    let storage = Storage::open(&profile).map_err(|e| chain(&e))?;
    let scope = match &spec.scope {
        Some(text) => EntryPointScope::from_description(text).map_err(|e| chain(&e))?,
        None => EntryPointScope::new(),
    };
    let serving = scope.instrument(serve(storage, spec.parent));
    aiida::runtime::block_on(aiida::runtime::on_runtime(serving))
}

/// This worker's id: host, pid and a random part.
fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}-{}", host.trim(), std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

async fn serve(storage: Storage, parent: Option<u32>) -> Result<(), String> {
    let chain = |e: &(dyn std::error::Error + 'static)| aiida::report::Chain(e).to_string();
    ensure_tables(&storage).await.map_err(|e| chain(&e))?;
    let id = worker_id();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    storage
        .execute_own_async(&format!(
            "INSERT INTO aiida_rs_daemon_worker (id, host, pid) VALUES ({}, {}, {})",
            literal(&id),
            literal(host.trim()),
            std::process::id()
        ))
        .await
        .map_err(|e| chain(&e))?;
    // Woken by notifications on a connection of its own.
    let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel::<String>();
    let listener = std::sync::Arc::new(
        listen_to(&storage, CHANNEL, wake).await.map_err(|e| format!("cannot listen for submissions: {e}"))?,
    );
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut processes = tokio::task::JoinSet::new();
    let mut running: std::collections::HashMap<i32, tokio::task::AbortHandle> = Default::default();
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    // How many processes it runs at once at most (aiida's option and default): the others stay
    // queued for other workers, or for this one when a slot frees.
    let slots = storage.profile().options().get("daemon.worker_process_slots").and_then(serde_json::Value::as_u64);
    let slots = slots.map_or(200, |slots| slots.max(1) as usize);
    tracing::info!(worker = %id, slots, "serving");
    loop {
        while running.len() < slots
            && let Some(pk) = claim(&storage, &id).await.map_err(|e| chain(&e))?
        {
            // A process runs only under its lock, held by the session of the worker running it:
            // a worker whose claims were taken over while it still runs (it missed its heartbeats)
            // keeps the lock, and no one else runs the process meanwhile; a worker that died lost
            // its session, and the lock with it.
            let locked = listener
                .client
                .query_one(&format!("SELECT pg_try_advisory_lock({LOCK_CLASS}, {pk})"), &[])
                .await
                .map(|row| row.get::<_, bool>(0))
                .unwrap_or(false);
            if !locked {
                tracing::warn!(pk, "another worker runs this process still; leaving it to that one");
                continue;
            }
            let (storage, id, listener) = (storage.clone(), id.clone(), listener.clone());
            tracing::info!(pk, "continuing process");
            let handle = processes.spawn(async move {
                let result = aiida_engine::continue_process_async(&storage, pk).await;
                match &result {
                    Ok((_, node)) => tracing::info!(pk, state = ?node.attribute("process_state"), "process ended"),
                    Err(e) => tracing::warn!(pk, "process ended: {}", aiida::report::Chain(e)),
                }
                let _ = storage
                    .execute_own_async(&format!(
                        "DELETE FROM aiida_rs_process_queue WHERE process_id = {pk} AND worker = {}",
                        literal(&id)
                    ))
                    .await;
                let _ = listener.client.batch_execute(&format!("SELECT pg_advisory_unlock({LOCK_CLASS}, {pk})")).await;
                pk
            });
            running.insert(pk, handle);
        }
        // Kill requests for the processes this worker runs.
        if !running.is_empty() {
            let ids: Vec<String> = running.keys().map(i32::to_string).collect();
            let requests = storage
                .execute_own_async(&format!(
                    "SELECT process_id, message, intent FROM aiida_rs_process_control
                     WHERE intent IN ('kill', 'pause') AND process_id IN ({})",
                    ids.join(", ")
                ))
                .await
                .unwrap_or_default();
            for request in requests {
                let (Some(pk), Some(message)) = (request.first().cloned().flatten(), request.get(1).cloned().flatten())
                else {
                    continue;
                };
                let Ok(pk) = pk.parse::<i32>() else { continue };
                let pause = request.get(2).cloned().flatten().as_deref() == Some("pause");
                if let Some(handle) = running.remove(&pk) {
                    handle.abort();
                }
                tracing::info!(pk, pause, "stopping process on request");
                let done = if pause {
                    aiida_engine::pause_process_async(&storage, pk, &message).await
                } else {
                    aiida_engine::kill_process_async(&storage, pk, &message).await
                };
                if let Err(e) = done {
                    tracing::warn!(pk, "stopping failed: {}", aiida::report::Chain(&e));
                }
                let _ = storage
                    .execute_own_async(&format!(
                        "DELETE FROM aiida_rs_process_control WHERE process_id = {pk};
                         DELETE FROM aiida_rs_process_queue WHERE process_id = {pk};"
                    ))
                    .await;
                let _ = listener.client.batch_execute(&format!("SELECT pg_advisory_unlock({LOCK_CLASS}, {pk})")).await;
            }
        }
        tokio::select! {
            _ = woken.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            Some(ended) = processes.join_next() => {
                if let Ok(pk) = ended {
                    running.remove(&pk);
                }
            }
            _ = beat.tick() => {
                // On the listening connection, not the pool: hundreds of busy processes must not
                // delay it past the timeout, after which others take this worker's processes.
                let _ = listener
                    .client
                    .batch_execute(&format!("UPDATE aiida_rs_daemon_worker SET heartbeat = now() WHERE id = {}", literal(&id)))
                    .await;
                if parent.is_some_and(|pid| !crate::client::alive(pid)) {
                    tracing::info!(worker = %id, "the process that started the daemon ended; stopping");
                    break;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Stopping: the processes' tasks end where they are (their nodes keep their state), and their
    // claims go back to the queue for the next worker.
    processes.abort_all();
    while processes.join_next().await.is_some() {}
    drop(listener);
    let _ = storage
        .execute_own_async(&format!(
            "UPDATE aiida_rs_process_queue SET worker = NULL, claimed = NULL WHERE worker = {id};
             DELETE FROM aiida_rs_daemon_worker WHERE id = {id};
             SELECT pg_notify({}, '');",
            literal(CHANNEL),
            id = literal(&id)
        ))
        .await;
    tracing::info!(worker = %id, "stopped");
    Ok(())
}

/// Claims the oldest queued process that no live worker holds; `None` when there is none.
async fn claim(storage: &Storage, id: &str) -> Result<Option<i32>, aiida::storage::StorageError> {
    let rows = storage
        .execute_own_async(&format!(
            "UPDATE aiida_rs_process_queue SET worker = {id}, claimed = now() WHERE process_id = (
                 SELECT process_id FROM aiida_rs_process_queue
                 WHERE worker IS NULL OR worker <> {id} AND worker NOT IN (
                     SELECT w.id FROM aiida_rs_daemon_worker w
                     WHERE w.heartbeat > now() - interval '{HEARTBEAT_TIMEOUT_SECONDS} seconds')
                 ORDER BY queued FOR UPDATE SKIP LOCKED LIMIT 1)
             RETURNING process_id",
            id = literal(id)
        ))
        .await?;
    Ok(rows.first().and_then(|r| r.first().cloned().flatten()).and_then(|pk| pk.parse().ok()))
}

/// A connection of our own (see [`connect_own`]), closed when dropped.
pub(crate) struct Listener {
    pub(crate) client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A connection of its own to `storage`'s database (a session for advisory locks, heartbeats and
/// `LISTEN`), sending the payload of each notification it gets to `payloads`.
pub(crate) async fn connect_own(
    storage: &Storage,
    payloads: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<Listener, String> {
    let config = storage.database().map_err(|e| e.to_string())?;
    let mut pg = tokio_postgres::Config::new();
    pg.host(&config.database_hostname)
        .port(config.database_port)
        .user(&config.database_username)
        .password(&config.database_password)
        .dbname(&config.database_name);
    let (client, mut connection) = pg.connect(NoTls).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if payloads.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok(Listener { client, driver })
}

/// [`connect_own`], listening on `channel`.
pub(crate) async fn listen_to(
    storage: &Storage,
    channel: &str,
    payloads: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<Listener, String> {
    let listener = connect_own(storage, payloads).await?;
    listener.client.batch_execute(&format!("LISTEN {channel}")).await.map_err(|e| e.to_string())?;
    Ok(listener)
}
