//! `DaemonClient`: starts, stops and looks at a profile's daemon workers; their pid files and log
//! are in the instance folder's `daemon/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aiida::plugins::EntryPointScope;
use aiida::storage::Storage;

use crate::queue::HEARTBEAT_TIMEOUT_SECONDS;
use crate::worker::{WorkerSpec, worker_env};

/// Errors of the daemon client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// A file of the daemon's folder.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The entry points of the caller's scope cannot reach a worker process.
    #[error(transparent)]
    Scope(#[from] aiida::plugins::PluginError),
    /// The storage failed.
    #[error(transparent)]
    Engine(#[from] aiida_engine::EngineError),
    /// A worker did not come up in time.
    #[error("daemon worker {pid} did not start within {seconds} s; see the daemon log {log}")]
    NotStarted {
        /// Its pid.
        pid: u32,
        /// How long we waited.
        seconds: u64,
        /// The log.
        log: PathBuf,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_owned();
    move |source| DaemonError::Io { action, path, source }
}

/// Starts, stops and looks at the daemon of a profile (aiida's `DaemonClient`).
#[derive(Debug, Clone)]
pub struct DaemonClient {
    storage: Storage,
    instance: PathBuf,
    dir: PathBuf,
    /// End the workers when this process ends (the daemon of a test run).
    tied: bool,
    /// The state changes of the profile's processes, listened to from the first wait on, until
    /// the client (and its clones) drop.
    changes: std::sync::Arc<tokio::sync::OnceCell<crate::wait::StateChanges>>,
}

impl DaemonClient {
    /// The daemon of `storage`'s profile, configured in the instance folder `instance`; its
    /// workers outlive this process (as `verdi daemon start`'s do).
    pub fn new(storage: &Storage, instance: &Path) -> DaemonClient {
        DaemonClient {
            storage: storage.clone(),
            instance: instance.to_owned(),
            dir: instance.join("daemon"),
            tied: false,
            changes: Default::default(),
        }
    }

    /// The same, with workers that end when this process ends, also when it is killed (within a
    /// heartbeat): the daemon of a test run.
    pub fn tied_to_this_process(mut self) -> DaemonClient {
        self.tied = true;
        self
    }

    /// The daemon's folder (pid files, log).
    pub fn daemon_dir(&self) -> &Path {
        &self.dir
    }

    /// The log the workers write to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log").join(format!("aiida-{}.log", self.storage.profile().name()))
    }

    fn pid_file(&self, index: usize) -> PathBuf {
        self.dir.join(format!("worker-{index}.pid"))
    }

    /// The pids of the workers this client knows (from their pid files), alive or not.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.indexed_pids().into_iter().map(|(_, pid)| pid).collect()
    }

    /// The workers' numbers and pids, by number.
    fn indexed_pids(&self) -> Vec<(usize, u32)> {
        let mut pids: Vec<(usize, u32)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let index = name.strip_prefix("worker-")?.strip_suffix(".pid")?.parse().ok()?;
                let pid = std::fs::read_to_string(entry.path()).ok()?.trim().parse().ok()?;
                Some((index, pid))
            })
            .collect();
        pids.sort();
        pids
    }

    /// Starts `workers` more workers (the daemon's first ones, or more); returns once each serves
    /// (it has registered its heartbeat).
    pub fn start(&self, workers: usize) -> Result<(), DaemonError> {
        let log_dir = self.dir.join("log");
        std::fs::create_dir_all(&log_dir).map_err(io("create", &log_dir))?;
        let scope = match EntryPointScope::current() {
            Some(scope) => Some(scope.describe()?),
            None => None,
        };
        let spec = WorkerSpec {
            instance: self.instance.clone(),
            profile: self.storage.profile().name().to_owned(),
            parent: self.tied.then(std::process::id),
            scope,
        };
        let spec = serde_json::to_string(&spec).expect("a worker spec serialises");
        let exe = std::env::current_exe().map_err(io("find", Path::new("/proc/self/exe")))?;
        let first = self.worker_pids().len();
        let mut started = Vec::new();
        for index in first..first + workers {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .map_err(io("open", &self.log_path()))?;
            let err = log.try_clone().map_err(io("open", &self.log_path()))?;
            let child = std::process::Command::new(&exe)
                .env(worker_env(), &spec)
                .stdin(std::process::Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .map_err(io("run", &exe))?;
            let pid_file = self.pid_file(index);
            std::fs::write(&pid_file, child.id().to_string()).map_err(io("write", &pid_file))?;
            started.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for mut child in started {
            let pid = child.id();
            loop {
                if self.registered(pid)? {
                    break;
                }
                if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                    return Err(DaemonError::NotStarted { pid, seconds: 10, log: self.log_path() });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            // Reaped by a thread of its own when it ends: no zombie is left.
            std::thread::spawn(move || child.wait());
        }
        Ok(())
    }

    fn registered(&self, pid: u32) -> Result<bool, DaemonError> {
        let rows = aiida::runtime::block_on(self.storage.execute_own_async(&format!(
            "SELECT count(*) FROM aiida_rs_daemon_worker WHERE pid = {pid}
               AND heartbeat > now() - interval '{HEARTBEAT_TIMEOUT_SECONDS} seconds'"
        )));
        Ok(matches!(rows, Ok(rows) if rows.first().and_then(|r| r.first().cloned().flatten()).as_deref() == Some("1")))
    }

    /// Whether the daemon runs: a worker of this client's is alive and beats its heartbeat.
    pub fn is_daemon_running(&self) -> bool {
        self.worker_pids().into_iter().any(|pid| alive(pid) && self.registered(pid).unwrap_or(false))
    }

    /// Submits `submittable` (a builder, an entry point with inputs, a process node) to this
    /// daemon and waits until its process is in `state` (aiida's `submit_and_await`; see
    /// [`await_state`](crate::await_state)). A timeout's error ends with the end of the daemon log.
    pub fn submit_and_await(
        &self,
        submittable: impl crate::Submittable,
        state: &str,
        timeout: Duration,
    ) -> Result<aiida::orm::Node, crate::AwaitError> {
        let node = submittable.submit_to(&self.storage)?;
        let (storage, changes, pk, wanted) =
            (self.storage.clone(), self.changes.clone(), node.pk().unwrap_or_default(), state.to_owned());
        let waited = aiida::runtime::block_on(aiida::runtime::on_runtime(async move {
            let changes = changes
                .get_or_try_init(|| crate::wait::StateChanges::open(&storage))
                .await
                .map_err(|reason| crate::AwaitError::Listen { pk, reason })?;
            crate::wait::wait_for(&storage, changes, pk, &wanted, timeout).await
        }));
        waited.map_err(|e| match e {
            crate::AwaitError::Timeout { pk, state, wanted, seconds, report } => {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: String = tail.into_iter().rev().map(|l| format!("\n  {l}")).collect();
                let report = format!("{report}; the daemon log ({}) ends:{tail}", self.log_path().display());
                crate::AwaitError::Timeout { pk, state, wanted, seconds, report }
            }
            other => other,
        })
    }

    /// Stops the `workers` highest-numbered workers (SIGTERM, SIGKILL after `timeout`) and removes
    /// their pid files (`verdi daemon decr`); the others keep serving. Returns how many it stopped.
    pub fn decrease(&self, workers: usize, timeout: Duration) -> Result<usize, DaemonError> {
        let mut indexed = self.indexed_pids();
        let stopping = indexed.split_off(indexed.len().saturating_sub(workers));
        for (_, pid) in &stopping {
            signal(*pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while stopping.iter().any(|(_, pid)| alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        for (_, pid) in stopping.iter().filter(|(_, pid)| alive(*pid)) {
            signal(*pid, libc::SIGKILL);
        }
        for (index, _) in &stopping {
            let pid_file = self.pid_file(*index);
            std::fs::remove_file(&pid_file).map_err(io("remove", &pid_file))?;
        }
        Ok(stopping.len())
    }

    /// Stops the workers (SIGTERM, SIGKILL after `timeout`) and removes their pid files; their
    /// processes go back to the queue, unchanged, for the next start.
    pub fn stop(&self, timeout: Duration) -> Result<(), DaemonError> {
        let pids = self.worker_pids();
        for pid in &pids {
            signal(*pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while pids.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        for pid in pids.iter().filter(|pid| alive(**pid)) {
            signal(*pid, libc::SIGKILL);
        }
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(".pid") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// Whether process `pid` runs (a zombie, ended but not reaped, does not).
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // A zombie (ended, not yet reaped) counts as gone.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    // SAFETY: kill with signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    exists && state != Some('Z')
}

fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }
}
