//! The run's shared server: one per `cargo nextest` run (all its test processes), one per process
//! otherwise. A *keeper* process owns it and stops it when the run's owner ends, however it ends.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::binaries::Binaries;
use crate::conn::ConnectionInfo;
use crate::env::{BACKEND_ENV, BIN_DIR_ENV, KEEPER_ENV, KEEPER_OWNER_ENV, RUN_ID_ENV, RUN_OWNER_ENV, URL_ENV};
use crate::error::{Error, Result};
use crate::os::{self, ProcessId};
use crate::state::{Backend, State, keeper_alive, read_state};
use crate::trust;

/// The run's key (the name of its folder) and the process whose end ends the run.
fn run_key() -> Result<(String, ProcessId)> {
    let me = ProcessId::current();
    if let Ok(id) = std::env::var(RUN_ID_ENV)
        && !id.is_empty()
    {
        let owner = match std::env::var(RUN_OWNER_ENV).unwrap_or_default() {
            value if value.is_empty() => os::parent_of(me.pid).and_then(ProcessId::of).unwrap_or(me),
            value => value.trim().parse().ok().and_then(ProcessId::of).ok_or(Error::BadSetting {
                name: RUN_OWNER_ENV,
                value,
                expected: "the pid of a running process that lives as long as the run, e.g. `$$` in a script",
            })?,
        };
        let safe = id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') && id.len() <= 64;
        let id = if safe { id } else { format!("{:016x}", crate::hash(&id)) };
        return Ok((format!("run-{id}"), owner));
    }
    if let Ok(run_id) = std::env::var("NEXTEST_RUN_ID")
        && !run_id.is_empty()
        && let Some(owner) = nextest_process(me.pid)
    {
        return Ok((format!("nextest-{run_id}"), owner));
    }
    Ok((format!("pid-{}-{}", me.pid, me.start), me))
}

/// Whether `name` is the name of a run's folder (see [`run_key`]).
fn is_run_key(name: &str) -> bool {
    ["run-", "nextest-", "pid-"].iter().any(|p| name.starts_with(p))
}

/// The `cargo-nextest` process above us (tests may run in a subprocess of a test).
fn nextest_process(mut pid: u32) -> Option<ProcessId> {
    for _ in 0..16 {
        pid = os::parent_of(pid)?;
        if os::command_name(pid).as_deref() == Some("cargo-nextest") {
            return ProcessId::of(pid);
        }
    }
    None
}

pub(crate) fn attach() -> Result<(State, PathBuf)> {
    let backend = Backend::from_env()?;
    // Settings the keeper uses, checked here so that a mistake is reported to the caller.
    crate::keeper::pool_size()?;
    crate::cluster::start_timeout()?;
    let (key, owner) = run_key()?;
    let runs = trust::subdir(&trust::base()?, "runs")?;
    loop {
        let run_dir = match trust::subdir(&runs, &key) {
            Ok(dir) => dir,
            // A finishing keeper removed the folder between our making and checking it.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let lock_path = run_dir.join("lock");
        let lock = match os::create_file(&lock_path, 0o644) {
            Ok(lock) => lock,
            // A sweeper or a finishing keeper removed the fresh folder before we could lock it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("create", &lock_path)(e)),
        };
        lock.lock().map_err(Error::io("lock", &lock_path))?;
        // The keeper removes the run folder at the end; a lock on the removed file locks nothing.
        if os::inode(&lock_path) != lock.metadata().ok().map(|m| m.ino()) {
            continue;
        }
        if keeper_alive(&run_dir)
            && let Some(state) = read_state(&run_dir)
        {
            return Ok((state, run_dir));
        }
        clean_run(&run_dir, true);
        sweep_dead_runs(&runs, &key);
        return match spawn_keeper(&run_dir, owner, backend) {
            Ok(state) => Ok((state, run_dir)),
            Err(e) => {
                clean_run(&run_dir, false);
                Err(e)
            }
        };
    }
}

/// Removes what a dead keeper left in `run_dir`: its server (if still running), the databases it
/// made on a URL server, and its files. Keeps the `lock` file when asked (we hold it).
fn clean_run(run_dir: &Path, keep_lock: bool) {
    if let Some(state) = read_state(run_dir) {
        // Only this very process (pid and start time): the pid may long belong to another.
        if let Some(postmaster) = state.postmaster
            && postmaster.is_alive()
        {
            os::signal(postmaster.pid, libc::SIGQUIT);
        }
        if state.backend == Backend::Url {
            let _ =
                crate::client::block(async move { crate::keeper::drop_prefixed(&state.admin, &state.prefix).await });
        }
    }
    let Ok(entries) = fs::read_dir(run_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if keep_lock && entry.file_name() == "lock" {
            continue;
        }
        let path = entry.path();
        // The entry itself (a symlink is removed, not followed).
        let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            os::remove_tree(&path)
        } else {
            fs::remove_file(&path).map_err(Error::io("remove", &path))
        };
    }
    if !keep_lock {
        let _ = os::remove_tree(run_dir);
    }
}

/// Removes the folders of runs whose keeper died without cleaning up (e.g. killed with SIGKILL
/// together with everything else).
///
/// Only what is provably a run of ours goes. `runs` and the base folder above it were checked to
/// be folders of ours that nobody else can write to (see `trust`), so every entry of `runs` was
/// made by a process running as us (or by root); an entry is then taken for a run only when it
/// is named like one, is itself (`lstat`, no symlink followed) a folder owned by us that nobody
/// else can write to, and holds a regular file `lock` owned by us, which `attach` makes right
/// after the folder. Such a folder whose `lock` nobody holds and whose keeper is gone is removed;
/// an old one without `lock` (its maker died in between) is removed only if it is empty.
fn sweep_dead_runs(runs: &Path, ours: &str) {
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    let me = os::euid();
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name();
        if name == ours || !is_run_key(&name.to_string_lossy()) || os::check_ours(&dir, &[me]).is_err() {
            continue;
        }
        if keeper_alive(&dir) {
            continue;
        }
        let lock_path = dir.join("lock");
        let Ok(lock) = os::open_file(&lock_path) else {
            // A folder without its lock is either being made right now or a leftover: only an
            // old, empty one is removed (`remove_dir` removes nothing else).
            let old = fs::symlink_metadata(&dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default().as_secs() > 60);
            if old {
                let _ = fs::remove_dir(&dir);
            }
            continue;
        };
        if !lock.metadata().is_ok_and(|m| m.is_file() && m.uid() == me) {
            continue;
        }
        // Somebody holding the run lock is starting a keeper there right now; and a keeper may
        // have started between our first look and taking the lock.
        if lock.try_lock().is_ok() && !keeper_alive(&dir) {
            tracing::info!("removing leftovers of a dead test run: {}", dir.display());
            clean_run(&dir, false);
        }
    }
}

fn spawn_keeper(run_dir: &Path, owner: ProcessId, backend: Backend) -> Result<State> {
    let exe = std::env::current_exe().map_err(Error::io("find the current executable", "/proc/self/exe"))?;
    let mut cmd = Command::new(&exe);
    cmd.env(KEEPER_ENV, run_dir)
        .env(KEEPER_OWNER_ENV, format!("{}:{}", owner.pid, owner.start))
        .env(BACKEND_ENV, backend.name());
    // Checked here rather than in the keeper, so that the caller gets the typed error.
    match backend {
        Backend::Launched => drop(cmd.env(BIN_DIR_ENV, Binaries::discover()?.dir())),
        Backend::Url => drop(ConnectionInfo::parse_url(&std::env::var(URL_ENV).unwrap_or_default())?),
        Backend::Testcontainers => {}
    }
    let log_path = run_dir.join("keeper.log");
    let log = os::create_file(&log_path, 0o644).map_err(Error::io("create", &log_path))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
    // SAFETY: setsid is async-signal-safe. Its own session keeps the keeper out of the test
    // runner's process group, which a runner signals on timeouts: the keeper must outlive tests.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(Error::io("run", &exe))?;
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let _ = stdout.read_line(&mut line);
    if line.trim() == "ready"
        && let Some(state) = read_state(run_dir)
    {
        return Ok(state);
    }
    // An error may span several lines (a server log's tail): the keeper writes them all, then ends.
    let _ = std::io::Read::read_to_string(&mut stdout, &mut line);
    let _ = child.wait();
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    let reason = line.trim_end().strip_prefix("error ").map(str::to_owned);
    Err(Error::Keeper(reason.unwrap_or_else(|| {
        format!("it exited early; {} says:\n{}", log_path.display(), crate::cluster::tail(&log, 10))
    })))
}
