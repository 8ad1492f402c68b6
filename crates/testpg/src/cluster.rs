//! Launching one PostgreSQL server: a copy of a cached `initdb` cluster, `postgres` started
//! directly (as an unprivileged user when we are root), ready when `postmaster.pid` says so.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::binaries::Binaries;
use crate::cache::DataCache;
use crate::conn::ConnectionInfo;
use crate::env::{DIR_ENV, START_TIMEOUT_ENV};
use crate::error::{Error, Result};
use crate::os::{self, ServerUser};

/// The superuser of launched servers.
pub const SUPERUSER: &str = "postgres";

/// How a [`Cluster`] is launched; build it with the `with_*` methods.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    tcp: bool,
    use_cache: bool,
    die_with_thread: bool,
    /// Take a ready copy of the cache when there is one (the keeper, which makes the next).
    pub(crate) ready_copy: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { tcp: false, use_cache: true, die_with_thread: true, ready_copy: false }
    }
}

impl ClusterOptions {
    /// Also listen on `127.0.0.1` (a free port, password authentication). Off by default: the
    /// server then listens only on a Unix socket in a private folder.
    pub fn with_tcp(mut self, on: bool) -> Self {
        self.tcp = on;
        self
    }

    /// Copy the data folder from a cluster `initdb` made once per binaries (on by default). When
    /// off, `initdb` runs for this server: the slow, cold path.
    pub fn with_cache(mut self, on: bool) -> Self {
        self.use_cache = on;
        self
    }

    /// Kill the server if the thread that started it ends (Linux `PR_SET_PDEATHSIG`), so that a
    /// crashed owner cannot leak it. On by default; turn it off when the `Cluster` outlives the
    /// thread that started it.
    pub fn with_die_with_thread(mut self, on: bool) -> Self {
        self.die_with_thread = on;
        self
    }
}

/// A running PostgreSQL server that this handle owns: dropping it (or [`Cluster::stop`]) stops
/// the server and removes its folder.
#[derive(Debug)]
pub struct Cluster {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    tcp_password: Option<String>,
}

/// The server's durability and housekeeping are off: tests want speed, not crash safety.
const SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("autovacuum", "off"),
    ("wal_level", "minimal"),
    ("max_wal_senders", "0"),
    ("max_connections", "300"),
    ("unix_socket_permissions", "0700"),
    ("shared_buffers", "64MB"),
    // Segments in the data folder, not in /dev/shm: a killed server then leaves none behind.
    ("dynamic_shared_memory_type", "mmap"),
];

const PORT_ATTEMPTS: usize = 5;

impl Cluster {
    /// Launches a server in the new folder `dir` (data in `dir/data`, socket in `dir/socket`, log
    /// in `dir/server.log`).
    pub fn start(binaries: &Binaries, dir: impl Into<PathBuf>, options: &ClusterOptions) -> Result<Cluster> {
        let dir = dir.into();
        start_timeout()?;
        let user = os::server_user()?;
        os::make_dir(&dir, 0o755, None)?;
        let data = dir.join("data");
        if options.use_cache {
            let cache = DataCache::for_binaries(binaries, user)?;
            if !(options.ready_copy && cache.take_ready_copy(&data)?) {
                cache.copy_to(binaries, &data)?;
            }
        } else {
            os::make_dir(&data, 0o700, user)?;
            initdb(binaries, &data, user)?;
        }
        os::make_dir(&dir.join("socket"), 0o700, user)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = if options.tcp { free_port(&dir)? } else { 5432 };
            match launch(binaries, &dir, port, options, user) {
                Ok(child) => {
                    let mut cluster = Cluster { child: Some(child), dir, port, tcp_password: None };
                    if options.tcp {
                        cluster.set_tcp_password()?;
                    }
                    return Ok(cluster);
                }
                Err(e) if options.tcp && attempt < PORT_ATTEMPTS && port_taken(&dir) => {
                    tracing::debug!("port {port} was taken, retrying: {e}");
                }
                Err(e) => {
                    let _ = os::remove_tree(&dir);
                    return Err(e);
                }
            }
        }
    }

    /// Superuser settings for database `postgres` over the Unix socket.
    pub fn connection(&self) -> ConnectionInfo {
        ConnectionInfo {
            host: self.dir.join("socket").to_string_lossy().into_owned(),
            port: self.port,
            user: SUPERUSER.to_owned(),
            password: None,
            dbname: "postgres".to_owned(),
        }
    }

    /// Superuser settings over TCP (`127.0.0.1`, with a password), when launched with `tcp`.
    pub fn tcp_connection(&self) -> Option<ConnectionInfo> {
        let password = self.tcp_password.clone()?;
        Some(ConnectionInfo { host: "127.0.0.1".to_owned(), password: Some(password), ..self.connection() })
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The folder this server lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the server process has ended (e.g. it crashed or was killed).
    pub fn has_exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the server and removes its folder. The data is thrown away, so the shutdown is
    /// PostgreSQL's "immediate" one (SIGQUIT: no checkpoint), then SIGKILL after 10 s.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Stops the server cleanly (PostgreSQL's "fast" shutdown, which writes a checkpoint, so that
    /// the data folder can start another server), hands the data folder to `keep` (which moves
    /// it away), then removes the server's folder.
    pub(crate) fn stop_keeping_data(mut self, keep: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return self.shutdown();
        };
        os::signal(child.id(), libc::SIGINT);
        let kept = match wait_exit(&mut child, Duration::from_secs(10)) {
            Some(status) if status.success() => keep(&self.dir.join("data")),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::Command { program: "postgres".to_owned(), detail: format!("fast shutdown: {other:?}") })
            }
        };
        kept.and(self.shutdown())
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            os::signal(child.id(), libc::SIGQUIT);
            if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        os::remove_tree(&self.dir)
    }

    fn set_tcp_password(&mut self) -> Result<()> {
        let password = os::random_hex(12);
        let client = crate::client::Client::connect(&self.connection())?;
        client.query(format!("ALTER ROLE {SUPERUSER} PASSWORD {}", crate::conn::literal(&password)))?;
        self.tcp_password = Some(password);
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!("stopping PostgreSQL in {}: {e}", self.dir.display());
        }
    }
}

/// The folder under which everything of ours is kept: `TESTPG_DIR`, else `/dev/shm/testpg-<uid>`
/// when `/dev/shm` is a writable tmpfs with room, else `<temp>/testpg-<uid>`.
pub(crate) fn base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return dir.into();
    }
    // SAFETY: geteuid has no preconditions.
    let name = format!("testpg-{}", unsafe { libc::geteuid() });
    let shm = Path::new("/dev/shm");
    // Once chosen, kept: every process of a run must agree, however full the tmpfs gets.
    if shm.join(&name).is_dir() || (os::writable(shm) && os::free_bytes(shm).is_some_and(|b| b > 1 << 30)) {
        return shm.join(name);
    }
    std::env::temp_dir().join(name)
}

/// [`base_dir`], refusing a relative `TESTPG_DIR` (every process of a run must find the same one).
pub(crate) fn base_dir_setting() -> Result<PathBuf> {
    let dir = base_dir();
    if dir.is_relative() {
        return Err(Error::BadSetting {
            name: DIR_ENV,
            value: dir.to_string_lossy().into_owned(),
            expected: "an absolute path to a folder of your own (made if missing), e.g. /dev/shm/testpg",
        });
    }
    Ok(dir)
}

pub(crate) fn initdb(binaries: &Binaries, data: &Path, user: Option<ServerUser>) -> Result<()> {
    let mut cmd = Command::new(binaries.tool("initdb"));
    cmd.arg("-D").arg(data);
    cmd.args([
        "-U",
        SUPERUSER,
        "-A",
        "trust",
        "--auth-host=scram-sha-256",
        "-E",
        "UTF8",
        "--locale=C",
        "--wal-segsize=1",
        "-N",
    ]);
    run_as(&mut cmd, user, data.parent().unwrap_or(data));
    let out = cmd.output().map_err(Error::io("run", binaries.tool("initdb")))?;
    if !out.status.success() {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        return Err(Error::Command {
            program: "initdb".to_owned(),
            detail: format!("{}: {}", out.status, tail(&text, 10)),
        });
    }
    Ok(())
}

/// Configures `cmd` to run as `user` (when root) from a folder that user can enter.
fn run_as(cmd: &mut Command, user: Option<ServerUser>, cwd: &Path) {
    cmd.current_dir(cwd).stdin(Stdio::null());
    if let Some(u) = user {
        // As root, std also drops the supplementary groups before it changes the user.
        cmd.uid(u.uid).gid(u.gid);
    }
}

fn launch(
    binaries: &Binaries,
    dir: &Path,
    port: u16,
    options: &ClusterOptions,
    user: Option<ServerUser>,
) -> Result<Child> {
    let log_path = dir.join("server.log");
    let log = os::create_file(&log_path, 0o644).map_err(Error::io("create", &log_path))?;
    let mut cmd = Command::new(binaries.tool("postgres"));
    cmd.arg("-D").arg(dir.join("data")).arg("-k").arg(dir.join("socket")).arg("-p").arg(port.to_string());
    let listen = if options.tcp { "127.0.0.1" } else { "" };
    cmd.arg("-c").arg(format!("listen_addresses={listen}"));
    for (key, value) in SETTINGS {
        cmd.arg("-c").arg(format!("{key}={value}"));
    }
    run_as(&mut cmd, user, dir);
    cmd.stdout(log.try_clone().map_err(Error::io("open", &log_path))?).stderr(log);
    let die_with_thread = options.die_with_thread;
    // SAFETY: the closure only makes async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            // Our own session: a test runner's signal to its process group does not hit the server.
            libc::setsid();
            if die_with_thread {
                // SIGQUIT: PostgreSQL's immediate shutdown, which still frees its shared memory.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(Error::io("run", binaries.tool("postgres")))?;
    match wait_ready(&mut child, dir) {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// `TESTPG_START_TIMEOUT`, or 60 s when it is unset or empty.
pub(crate) fn start_timeout() -> Result<Duration> {
    let value = std::env::var(START_TIMEOUT_ENV).unwrap_or_default();
    if value.is_empty() {
        return Ok(Duration::from_secs(60));
    }
    match value.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(Error::BadSetting {
            name: START_TIMEOUT_ENV,
            value,
            expected: "a whole number of seconds above 0, e.g. 60",
        }),
    }
}

/// Waits until line 8 of `postmaster.pid` reads `ready`, or the server exits, or the deadline.
fn wait_ready(child: &mut Child, dir: &Path) -> Result<()> {
    let pid_file = dir.join("data").join("postmaster.pid");
    let log = dir.join("server.log");
    let timeout = start_timeout()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = fs::read_to_string(&pid_file)
            && text.lines().nth(7).is_some_and(|l| l.trim() == "ready")
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log_text = fs::read_to_string(&log).unwrap_or_default();
            return Err(Error::Command {
                program: "postgres".to_owned(),
                detail: format!("{status}: {}", tail(&log_text, 10)),
            });
        }
        if Instant::now() > deadline {
            let log_text = fs::read_to_string(&log).unwrap_or_default();
            return Err(Error::NotReady { seconds: timeout.as_secs(), log, tail: tail(&log_text, 10) });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits up to `timeout` for `child` to exit.
pub(crate) fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Err(_) => return None,
            Ok(None) if Instant::now() > deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn free_port(dir: &Path) -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind a port for", dir))?;
    Ok(listener.local_addr().map_err(Error::io("bind a port for", dir))?.port())
}

fn port_taken(dir: &Path) -> bool {
    fs::read_to_string(dir.join("server.log")).is_ok_and(|log| log.contains("could not bind") || log.contains("in use"))
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
