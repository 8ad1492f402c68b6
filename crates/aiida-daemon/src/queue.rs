//! The process queue: our tables beside aiida-core's in the profile's database.

use aiida::storage::{Storage, literal};
use aiida_engine::{EngineError, ProcessBuilder};

/// The notification channel that wakes workers.
pub(crate) const CHANNEL: &str = "aiida_rs_process_queue";

/// How long a worker's heartbeat stays valid: a claim of a worker that has not beaten for longer
/// is taken over.
pub(crate) const HEARTBEAT_TIMEOUT_SECONDS: u32 = 5;

/// Our tables, created when missing (under an advisory lock, so that workers starting together do
/// not race).
const SCHEMA: &str = "
    SELECT pg_advisory_xact_lock(7346125821);
    CREATE TABLE IF NOT EXISTS aiida_rs_process_queue (
        process_id integer PRIMARY KEY,
        queued timestamptz NOT NULL DEFAULT now(),
        worker text,
        claimed timestamptz
    );
    CREATE TABLE IF NOT EXISTS aiida_rs_process_control (
        process_id integer PRIMARY KEY,
        intent text NOT NULL,
        message text NOT NULL,
        requested timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS aiida_rs_daemon_worker (
        id text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        started timestamptz NOT NULL DEFAULT now(),
        heartbeat timestamptz NOT NULL DEFAULT now()
    );";

/// Makes sure the queue's tables exist (asked once per database in a process).
pub(crate) async fn ensure_tables(storage: &Storage) -> Result<(), EngineError> {
    static READY: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let config = storage.database()?;
    let database = format!("{}:{}/{}", config.database_hostname, config.database_port, config.database_name);
    if READY.lock().unwrap_or_else(|e| e.into_inner()).contains(&database) {
        return Ok(());
    }
    storage.execute_own_async(&format!("BEGIN; {SCHEMA} COMMIT;")).await?;
    READY.lock().unwrap_or_else(|e| e.into_inner()).push(database);
    Ok(())
}

/// Submits the process `builder` describes to the daemon: checks it as `run` does (nothing is
/// stored when it is not valid), stores its node (CREATED), queues it in the profile's database
/// and wakes the workers; returns the node at once. A running daemon's worker then runs it.
pub fn submit(storage: &Storage, builder: &ProcessBuilder) -> Result<aiida::orm::Node, EngineError> {
    aiida::runtime::block_on(async {
        ensure_tables(storage).await?;
        let node = aiida_engine::create_process_async(storage, builder).await?;
        enqueue(storage, node.pk().unwrap_or_default()).await?;
        Ok(node)
    })
}

/// What [`DaemonClient::submit_and_await`](crate::DaemonClient::submit_and_await) takes (aiida's
/// `submittable`): a builder; a calculation job's entry point with its inputs,
/// `("core.arithmetic.add", [("code", &code), ("x", &x), ("y", &y)])`; or a stored process node,
/// which is queued when it was only created ([`aiida_engine::create_process`]) and otherwise
/// waited for as it is (already submitted, running, paused or ended).
pub trait Submittable: sealed::Sealed {
    /// Submits it (when it is not yet) and returns its process node.
    #[doc(hidden)]
    fn submit_to(self, storage: &Storage) -> Result<aiida::orm::Node, EngineError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for &aiida_engine::ProcessBuilder {}
    impl Sealed for &aiida::orm::Node {}
    impl<'a, I: IntoIterator<Item = (&'a str, &'a aiida::orm::Node)>> Sealed for (&str, I) {}
}

impl Submittable for &ProcessBuilder {
    fn submit_to(self, storage: &Storage) -> Result<aiida::orm::Node, EngineError> {
        submit(storage, self)
    }
}

impl<'a, I: IntoIterator<Item = (&'a str, &'a aiida::orm::Node)>> Submittable for (&str, I) {
    fn submit_to(self, storage: &Storage) -> Result<aiida::orm::Node, EngineError> {
        let mut builder = ProcessBuilder::new(self.0)?;
        for (name, node) in self.1 {
            builder.input(name, node.clone());
        }
        submit(storage, &builder)
    }
}

impl Submittable for &aiida::orm::Node {
    fn submit_to(self, storage: &Storage) -> Result<aiida::orm::Node, EngineError> {
        let Some(pk) = self.pk().filter(|_| self.node_type().starts_with("process.")) else {
            let what = match self.pk() {
                Some(pk) => format!("node {pk} ({})", self.node_type()),
                None => format!("an unstored {} node", self.node_type()),
            };
            return Err(EngineError::InvalidInputs(format!(
                "only a stored process node can be submitted, not {what}: submit a builder instead"
            )));
        };
        aiida::runtime::block_on(async {
            let node = aiida::orm::Node::load_async(storage, pk).await?;
            let created = node.attribute("process_state").and_then(serde_json::Value::as_str) == Some("created");
            if created && !node.is_sealed() && node.attribute("paused").is_none() {
                ensure_tables(storage).await?;
                queue(storage, pk, "DO NOTHING").await?;
            }
            Ok(node)
        })
    }
}

/// Queues process `pk` (again) and wakes the workers.
pub(crate) async fn enqueue(storage: &Storage, pk: i32) -> Result<(), EngineError> {
    queue(storage, pk, "DO UPDATE SET worker = NULL, claimed = NULL").await
}

/// Queues process `pk`, `on_conflict` deciding what happens to a queued one, and wakes the workers.
async fn queue(storage: &Storage, pk: i32, on_conflict: &str) -> Result<(), EngineError> {
    storage
        .execute_own_async(&format!(
            "INSERT INTO aiida_rs_process_queue (process_id) VALUES ({pk})
             ON CONFLICT (process_id) {on_conflict};
             SELECT pg_notify({}, {});",
            literal(CHANNEL),
            literal(&pk.to_string())
        ))
        .await?;
    Ok(())
}
