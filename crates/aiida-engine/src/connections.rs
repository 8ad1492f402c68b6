//! One open transport per computer and user, shared by every job of the process that runs on
//! them, and one scheduler query at a time for all of their jobs (aiida's `TransportQueue` and
//! `JobsList`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::scheduler::{JobInfo, Scheduler};
use crate::transport::{Transport, TransportError, TransportType};

/// An open transport to a computer as a user, and the scheduler queries made through it.
pub(crate) struct Connection {
    pub(crate) transport: Arc<dyn Transport>,
    jobs: Mutex<Polls>,
    whoami: tokio::sync::OnceCell<String>,
}

#[derive(Default)]
struct Polls {
    waiting: HashMap<String, Vec<oneshot::Sender<Result<JobInfo, String>>>>,
    polling: bool,
    last: Option<Instant>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let transport = self.transport.clone();
        aiida::runtime::handle().spawn(async move {
            let _ = transport.close().await;
        });
    }
}

/// The connections open in this process, by computer, user and database; when each was last
/// opened (for `safe_interval`); and those kept open after their last use.
struct Registry {
    open: HashMap<String, Weak<Connection>>,
    opened: HashMap<String, Instant>,
    /// Each connection stays open for `safe_interval` after its last job: a job that comes in
    /// that time uses it, where it would otherwise wait for the interval to reopen it.
    lingering: HashMap<String, (Arc<Connection>, Instant)>,
}

static REGISTRY: tokio::sync::Mutex<Option<Registry>> = tokio::sync::Mutex::const_new(None);

/// The open connection for `key` (computer, user, database), opened with `transport_type` when
/// there is none, no sooner than `safe_interval` after the last one was opened; held until the
/// lease drops.
pub(crate) async fn connect(
    key: String,
    transport_type: &dyn TransportType,
    hostname: &str,
    auth_params: &serde_json::Map<String, serde_json::Value>,
    safe_interval: Duration,
) -> Result<Lease, TransportError> {
    let mut registry = REGISTRY.lock().await;
    let registry = registry.get_or_insert_with(|| Registry {
        open: HashMap::new(),
        opened: HashMap::new(),
        lingering: HashMap::new(),
    });
    if let Some(connection) = registry.open.get(&key).and_then(Weak::upgrade) {
        return Ok(Lease { connection, key, interval: safe_interval });
    }
    if let Some(last) = registry.opened.get(&key) {
        let wait = safe_interval.saturating_sub(last.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    let transport = transport_type.open(hostname, auth_params).await?;
    registry.opened.insert(key.clone(), Instant::now());
    let connection =
        Arc::new(Connection { transport, jobs: Mutex::new(Polls::default()), whoami: tokio::sync::OnceCell::new() });
    registry.open.retain(|_, c| c.strong_count() > 0);
    registry.open.insert(key.clone(), Arc::downgrade(&connection));
    Ok(Lease { connection, key, interval: safe_interval })
}

/// A job's use of a connection: when it ends, the connection stays open for `safe_interval`
/// more, for the next job (see [`Registry::lingering`]).
pub(crate) struct Lease {
    connection: Arc<Connection>,
    key: String,
    interval: Duration,
}

impl Lease {
    /// The connection.
    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    /// Gives the connection up after a failure, which may be its own (a server that went away):
    /// it is not handed out again, so the next job asking opens a new one, and it does not
    /// linger; jobs that hold it keep it until they give it up too.
    pub(crate) async fn forget(mut self) {
        if let Some(registry) = REGISTRY.lock().await.as_mut() {
            let this = |other: &Arc<Connection>| Arc::ptr_eq(other, &self.connection);
            if registry.open.get(&self.key).and_then(Weak::upgrade).is_some_and(|c| this(&c)) {
                registry.open.remove(&self.key);
            }
            if registry.lingering.get(&self.key).is_some_and(|(c, _)| this(c)) {
                registry.lingering.remove(&self.key);
            }
        }
        self.interval = Duration::ZERO;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.interval.is_zero() {
            return;
        }
        let (connection, key, interval) = (self.connection.clone(), std::mem::take(&mut self.key), self.interval);
        aiida::runtime::handle().spawn(async move {
            if let Some(registry) = REGISTRY.lock().await.as_mut() {
                linger(registry, &key, &connection, interval);
            }
        });
    }
}

/// Keeps `connection` open for `interval` from now (nothing for a zero interval).
fn linger(registry: &mut Registry, key: &str, connection: &Arc<Connection>, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    registry.lingering.insert(key.to_owned(), (connection.clone(), Instant::now()));
    let key = key.to_owned();
    aiida::runtime::handle().spawn(async move {
        tokio::time::sleep(interval).await;
        if let Some(registry) = REGISTRY.lock().await.as_mut()
            && registry.lingering.get(&key).is_some_and(|(_, since)| since.elapsed() >= interval)
        {
            registry.lingering.remove(&key);
        }
    });
}

impl Connection {
    /// The user name on the computer, asked once.
    pub(crate) async fn whoami(&self) -> Result<&str, TransportError> {
        self.whoami.get_or_try_init(|| self.transport.whoami()).await.map(String::as_str)
    }

    /// What the scheduler says of job `job_id`: from the next query, which serves every job
    /// waiting by then, made no sooner than `interval` after the last one.
    pub(crate) async fn job_info(
        self: &Arc<Self>,
        job_id: &str,
        scheduler: Arc<dyn Scheduler>,
        interval: Duration,
    ) -> Result<JobInfo, String> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut polls = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            polls.waiting.entry(job_id.to_owned()).or_default().push(tx);
            !std::mem::replace(&mut polls.polling, true)
        };
        if start {
            let connection = self.clone();
            aiida::runtime::handle().spawn(async move { connection.poll(scheduler, interval).await });
        }
        rx.await.unwrap_or_else(|_| Err("the scheduler query was abandoned".to_owned()))
    }

    async fn poll(self: Arc<Self>, scheduler: Arc<dyn Scheduler>, interval: Duration) {
        loop {
            let wait = {
                let polls = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                polls.last.map(|last| interval.saturating_sub(last.elapsed())).unwrap_or_default()
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let waiting = {
                let mut polls = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                if polls.waiting.is_empty() {
                    polls.polling = false;
                    return;
                }
                std::mem::take(&mut polls.waiting)
            };
            let ids: Vec<String> = waiting.keys().cloned().collect();
            let answer = scheduler.jobs(&*self.transport, &ids).await;
            self.jobs.lock().unwrap_or_else(|e| e.into_inner()).last = Some(Instant::now());
            for (id, senders) in waiting {
                let result = match &answer {
                    Ok(infos) => {
                        Ok(infos.iter().find(|i| i.job_id == id).cloned().unwrap_or_else(|| JobInfo::done(&id)))
                    }
                    Err(e) => Err(aiida::report::Chain(e).to_string()),
                };
                for sender in senders {
                    let _ = sender.send(result.clone());
                }
            }
        }
    }
}
