//! `core.local`: this machine, as a transport.
//!
//! File operations run on tokio's blocking pool, one task per operation; commands run as
//! `bash -l -c <command>` (`bash -c` without a login shell) in their own process group, so that a
//! signal for the engine's group (Ctrl-C in a terminal) does not reach the jobs it started.
//!
//! aiida starts commands with `start_new_session` (setsid). Here a new process group does that
//! job: `Command::process_group` keeps std's `posix_spawn` path, whereas a `pre_exec(setsid)`
//! forces `fork`, whose cost grows with the engine's memory (measured: 1.9 ms vs 28 ms per command
//! from a process with 400 MB resident). The one difference: the command keeps the engine's
//! controlling terminal, if it has one (a daemon worker has none).

use std::io::{self, ErrorKind};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;

use super::pattern::{glob, has_magic, inside};
use super::{AuthOption, CommandOutput, Transport, TransportError, TransportType, bool_param, seconds_param};

const USE_LOGIN_SHELL: &str = "use_login_shell";
const SAFE_INTERVAL: &str = "safe_interval";

/// The `core.local` plugin: opens [`LocalTransport`]s. Its authentication parameters are
/// `use_login_shell` (default true) and `safe_interval` (default 0 s).
#[derive(Debug, Default)]
pub struct LocalTransportType;

aiida::entry_point!(crate::groups::Transports: "core.local", LocalTransportType);

impl LocalTransportType {
    /// A transport for this machine with the authinfo's parameters `auth_params`, checked: only
    /// `use_login_shell` (a boolean) and `safe_interval` (seconds >= 0) are taken.
    pub fn open_local(&self, auth_params: &Map<String, Value>) -> Result<LocalTransport, TransportError> {
        if let Some((name, value)) =
            auth_params.iter().find(|(k, _)| ![USE_LOGIN_SHELL, SAFE_INTERVAL].contains(&k.as_str()))
        {
            return Err(TransportError::Parameter {
                name: name.clone(),
                value: value.to_string(),
                expected: "no such parameter: core.local takes use_login_shell and safe_interval",
            });
        }
        let use_login_shell = bool_param(auth_params, USE_LOGIN_SHELL, true)?;
        seconds_param(auth_params, SAFE_INTERVAL, self.default_safe_interval())?;
        LocalTransport::new(use_login_shell)
    }
}

#[async_trait::async_trait]
impl TransportType for LocalTransportType {
    async fn open(
        &self,
        hostname: &str,
        auth_params: &Map<String, Value>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        if !hostname.is_empty() && hostname != "localhost" {
            tracing::debug!(hostname, "core.local ignores the computer's hostname");
        }
        Ok(Arc::new(self.open_local(auth_params)?))
    }

    fn auth_options(&self) -> Vec<AuthOption> {
        vec![
            AuthOption {
                name: USE_LOGIN_SHELL,
                help: "Whether to use a login shell when running commands (`bash -l -c`): it reads the profile \
                       files, at a cost for every command.",
                default: json!(true),
            },
            AuthOption {
                name: SAFE_INTERVAL,
                help: "The minimum time in seconds between two openings of the transport.",
                default: json!(0.0),
            },
        ]
    }

    fn default_safe_interval(&self) -> Duration {
        Duration::ZERO
    }

    fn default_minimum_job_poll_interval(&self) -> Duration {
        Duration::from_millis(100)
    }
}

/// An open `core.local` transport: this machine's files and commands. Relative paths on the
/// "remote" side resolve against the home folder; local paths must be absolute.
#[derive(Debug)]
pub struct LocalTransport {
    home: PathBuf,
    use_login_shell: bool,
}

impl LocalTransport {
    /// A transport whose home folder is `$HOME`.
    pub fn new(use_login_shell: bool) -> Result<LocalTransport, TransportError> {
        match std::env::home_dir().filter(|home| home.is_absolute()) {
            Some(home) => Ok(LocalTransport::with_home(home, use_login_shell)),
            None => Err(TransportError::Connect {
                target: "localhost".to_owned(),
                reason: "the home folder is unknown: set HOME to an absolute path".to_owned(),
            }),
        }
    }

    /// A transport whose relative paths resolve against `home`, where commands without a workdir
    /// run too (their environment, `HOME` included, is the engine's).
    pub fn with_home(home: PathBuf, use_login_shell: bool) -> LocalTransport {
        LocalTransport { home, use_login_shell }
    }

    /// The folder relative paths resolve against.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Whether commands run in a login shell.
    pub fn use_login_shell(&self) -> bool {
        self.use_login_shell
    }

    fn resolve(&self, path: &Path) -> Result<PathBuf, TransportError> {
        if path.as_os_str().is_empty() {
            return Err(TransportError::InvalidPath { path: path.to_owned(), reason: "it is empty" });
        }
        Ok(self.home.join(path))
    }

    fn local(path: &Path) -> Result<PathBuf, TransportError> {
        if path.is_absolute() {
            Ok(path.to_owned())
        } else {
            Err(TransportError::InvalidPath { path: path.to_owned(), reason: "a local path must be absolute" })
        }
    }
}

/// Runs the file operation `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TransportError> + Send + 'static,
) -> Result<T, TransportError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(TransportError::Io {
            action: "finish a file operation",
            path: PathBuf::new(),
            source: io::Error::other(e.to_string()),
        }),
    }
}

/// Whether something (a dangling link included) is at `path`.
fn lexists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> TransportError {
    match source.kind() {
        ErrorKind::NotFound => TransportError::Missing(path.to_owned()),
        _ => TransportError::Io { action, path: path.to_owned(), source },
    }
}

/// Copies the file `source` to `destination` (contents and permission bits; links followed).
fn copy_file(source: &Path, destination: &Path) -> Result<(), TransportError> {
    std::fs::copy(source, destination).map(drop).map_err(|e| {
        if lexists(source) {
            TransportError::Io { action: "copy a file to", path: destination.to_owned(), source: e }
        } else {
            TransportError::Missing(source.to_owned())
        }
    })
}

/// Copies the folder `source` as `destination` (Python's `shutil.copytree`): links are followed
/// with `follow_links`, else recreated; an existing `destination` is merged into with `merge`, an
/// error otherwise. Permission bits are kept.
fn copy_tree(source: &Path, destination: &Path, follow_links: bool, merge: bool) -> Result<(), TransportError> {
    // Listed before `destination` is created, which may be inside `source`.
    let entries = std::fs::read_dir(source)
        .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
        .map_err(|e| io_error("list the folder", source, e))?;
    match std::fs::create_dir(destination) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists && merge && destination.is_dir() => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(TransportError::Exists(destination.to_owned())),
        Err(e) => return Err(TransportError::io("create the folder", destination)(e)),
    }
    for entry in entries {
        let from = entry.path();
        let to = destination.join(entry.file_name());
        let kind = entry.file_type().map_err(TransportError::io("read the type of", &from))?;
        if kind.is_symlink() && !follow_links {
            let target = std::fs::read_link(&from).map_err(TransportError::io("read the link", &from))?;
            if merge && lexists(&to) && !to.is_dir() {
                std::fs::remove_file(&to).map_err(TransportError::io("replace", &to))?;
            }
            std::os::unix::fs::symlink(target, &to).map_err(TransportError::io("create the link", &to))?;
        } else if kind.is_dir() || (kind.is_symlink() && from.is_dir()) {
            copy_tree(&from, &to, follow_links, merge)?;
        } else {
            copy_file(&from, &to)?;
        }
    }
    let permissions = std::fs::metadata(source).map_err(TransportError::io("read the permissions of", source))?;
    std::fs::set_permissions(destination, permissions.permissions())
        .map_err(TransportError::io("set the permissions of", destination))
}

/// Copies file or folder `source` to `destination`, into it when it is an existing folder, as it
/// otherwise, overwriting files and merging folders (aiida's `put`/`get` with `overwrite=True`,
/// `dereference=True`).
fn transfer(source: &Path, destination: &Path) -> Result<(), TransportError> {
    if source.is_dir() {
        if lexists(destination) && !destination.is_dir() {
            return Err(TransportError::InvalidPath {
                path: destination.to_owned(),
                reason: "it is a file: a folder cannot be copied onto it",
            });
        }
        let target = if destination.is_dir() { inside(destination, source) } else { destination.to_owned() };
        copy_tree(source, &target, true, true)
    } else {
        let target = if destination.is_dir() { inside(destination, source) } else { destination.to_owned() };
        copy_file(source, &target)
    }
}

/// aiida's `put`/`get`: `source` (a glob pattern, or one path that must exist unless
/// `ignore_nonexisting`) to `destination`. Several matches need an existing folder.
fn transfer_matches(source: &Path, destination: &Path, ignore_nonexisting: bool) -> Result<(), TransportError> {
    if !has_magic(source) {
        if !source.exists() {
            return if ignore_nonexisting { Ok(()) } else { Err(TransportError::Missing(source.to_owned())) };
        }
        return transfer(source, destination);
    }
    if has_magic(destination) {
        return Err(TransportError::InvalidPath {
            path: destination.to_owned(),
            reason: "a destination cannot be a glob pattern",
        });
    }
    let matches = glob(source);
    if matches.len() > 1 && !destination.is_dir() {
        return Err(several_need_a_folder(destination));
    }
    matches.iter().try_for_each(|path| transfer(path, destination))
}

fn several_need_a_folder(destination: &Path) -> TransportError {
    if lexists(destination) {
        TransportError::InvalidPath {
            path: destination.to_owned(),
            reason: "it is not a folder, and the pattern matches several paths",
        }
    } else {
        TransportError::Missing(destination.to_owned())
    }
}

/// aiida's `copy` of one path: a file with `shutil.copy` (into `destination` when a folder), a
/// folder with `copytree` (into `destination/<name>` when `destination` exists: an existing
/// target is an error), links kept.
fn copy_one(source: &Path, destination: &Path) -> Result<(), TransportError> {
    if source.is_dir() {
        let target = if destination.is_dir() { inside(destination, source) } else { destination.to_owned() };
        copy_tree(source, &target, false, false)
    } else {
        let target = if destination.is_dir() { inside(destination, source) } else { destination.to_owned() };
        copy_file(source, &target)
    }
}

/// Renames `old` to `new` (`shutil.move`: copied then removed across file systems).
fn rename(old: &Path, new: &Path) -> Result<(), TransportError> {
    if !lexists(old) {
        return Err(TransportError::Missing(old.to_owned()));
    }
    if lexists(new) {
        return Err(TransportError::Exists(new.to_owned()));
    }
    match std::fs::rename(old, new) {
        Err(e) if e.kind() == ErrorKind::CrossesDevices => {
            if old.is_dir() && !old.is_symlink() {
                copy_tree(old, new, false, false)?;
                std::fs::remove_dir_all(old).map_err(TransportError::io("remove", old))
            } else {
                copy_file(old, new)?;
                std::fs::remove_file(old).map_err(TransportError::io("remove", old))
            }
        }
        result => result.map_err(|e| io_error("rename", old, e)),
    }
}

fn rmtree(path: &Path) -> Result<(), TransportError> {
    let result = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    match result {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(TransportError::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Whether a folder is at `path` (links followed); a missing path is no folder.
fn is_dir(path: &Path) -> Result<bool, TransportError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.is_dir()),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(false),
        Err(e) => Err(TransportError::io("read the type of", path)(e)),
    }
}

#[async_trait::async_trait]
impl Transport for LocalTransport {
    async fn put(&self, local: &Path, remote: &Path) -> Result<(), TransportError> {
        let local = Self::local(local)?;
        let remote = self.resolve(remote)?;
        blocking(move || transfer_matches(&local, &remote, false)).await
    }

    async fn get(&self, remote: &Path, local: &Path, ignore_nonexisting: bool) -> Result<(), TransportError> {
        let local = Self::local(local)?;
        let remote = self.resolve(remote)?;
        blocking(move || transfer_matches(&remote, &local, ignore_nonexisting)).await
    }

    async fn copy(&self, source: &Path, destination: &Path) -> Result<(), TransportError> {
        let source = self.resolve(source)?;
        let destination = self.resolve(destination)?;
        blocking(move || {
            if !has_magic(&source) {
                if !source.exists() {
                    return Err(TransportError::Missing(source));
                }
                if destination.canonicalize().is_ok_and(|d| source.canonicalize().is_ok_and(|s| s == d)) {
                    return Err(TransportError::InvalidPath {
                        path: destination,
                        reason: "it is the source itself: a path cannot be copied onto itself",
                    });
                }
                return copy_one(&source, &destination);
            }
            if has_magic(&destination) {
                return Err(TransportError::InvalidPath {
                    path: destination,
                    reason: "a destination cannot be a glob pattern",
                });
            }
            let matches = glob(&source);
            if matches.len() > 1 && !destination.is_dir() {
                return Err(several_need_a_folder(&destination));
            }
            matches.iter().try_for_each(|path| copy_one(path, &destination))
        })
        .await
    }

    async fn symlink(&self, source: &Path, link: &Path) -> Result<(), TransportError> {
        let link = self.resolve(link)?;
        if source.as_os_str().is_empty() {
            return Err(TransportError::InvalidPath { path: source.to_owned(), reason: "it is empty" });
        }
        if !has_magic(source) {
            // The target is stored as given: a relative one is relative to the link's folder.
            let source = source.to_owned();
            return blocking(move || {
                std::os::unix::fs::symlink(&source, &link).map_err(|e| match e.kind() {
                    ErrorKind::AlreadyExists => TransportError::Exists(link.clone()),
                    _ => TransportError::io("create the link", &link)(e),
                })
            })
            .await;
        }
        if has_magic(&link) {
            return Err(TransportError::InvalidPath { path: link, reason: "a link cannot be a glob pattern" });
        }
        let source = self.resolve(source)?;
        blocking(move || {
            for path in glob(&source) {
                let name = inside(&link, &path);
                std::os::unix::fs::symlink(&path, &name).map_err(|e| match e.kind() {
                    ErrorKind::AlreadyExists => TransportError::Exists(name.clone()),
                    _ => TransportError::io("create the link", &name)(e),
                })?;
            }
            Ok(())
        })
        .await
    }

    async fn listdir(&self, path: &Path) -> Result<Vec<String>, TransportError> {
        let path = self.resolve(path)?;
        blocking(move || {
            let entries = std::fs::read_dir(&path).map_err(|e| io_error("list the folder", &path, e))?;
            let mut names = entries
                .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<io::Result<Vec<_>>>()
                .map_err(TransportError::io("list the folder", &path))?;
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn glob(&self, pattern: &Path) -> Result<Vec<PathBuf>, TransportError> {
        let pattern = self.resolve(pattern)?;
        blocking(move || Ok(glob(&pattern))).await
    }

    async fn mkdir(&self, path: &Path, ignore_existing: bool) -> Result<(), TransportError> {
        let path = self.resolve(path)?;
        blocking(move || match std::fs::create_dir(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if ignore_existing && is_dir(&path)? {
                    Ok(())
                } else {
                    Err(TransportError::Exists(path))
                }
            }
            Err(e) => Err(TransportError::io("create the folder", &path)(e)),
        })
        .await
    }

    async fn makedirs(&self, path: &Path, ignore_existing: bool) -> Result<(), TransportError> {
        let path = self.resolve(path)?;
        blocking(move || {
            if lexists(&path) {
                return if ignore_existing && is_dir(&path)? { Ok(()) } else { Err(TransportError::Exists(path)) };
            }
            std::fs::create_dir_all(&path).map_err(TransportError::io("create the folder", &path))
        })
        .await
    }

    async fn rmtree(&self, path: &Path) -> Result<(), TransportError> {
        let path = self.resolve(path)?;
        blocking(move || rmtree(&path)).await
    }

    async fn rename(&self, old: &Path, new: &Path) -> Result<(), TransportError> {
        let old = self.resolve(old)?;
        let new = self.resolve(new)?;
        blocking(move || rename(&old, &new)).await
    }

    async fn path_exists(&self, path: &Path) -> Result<bool, TransportError> {
        if path.as_os_str().is_empty() {
            return Ok(false);
        }
        let path = self.resolve(path)?;
        match tokio::fs::metadata(&path).await {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(false),
            Err(e) => Err(TransportError::io("look for", &path)(e)),
        }
    }

    async fn is_dir(&self, path: &Path) -> Result<bool, TransportError> {
        if path.as_os_str().is_empty() {
            return Ok(false);
        }
        let path = self.resolve(path)?;
        blocking(move || is_dir(&path)).await
    }

    async fn chmod(&self, path: &Path, mode: u32) -> Result<(), TransportError> {
        let path = self.resolve(path)?;
        tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(|e| io_error("change the permissions of", &path, e))
    }

    async fn exec_command_wait(
        &self,
        command: &str,
        workdir: Option<&Path>,
        stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, TransportError> {
        let workdir = match workdir {
            Some(dir) => self.resolve(dir)?,
            None => self.home.clone(),
        };
        let mut bash = tokio::process::Command::new("bash");
        if self.use_login_shell {
            bash.arg("-l");
        }
        bash.arg("-c")
            .arg(command)
            .current_dir(&workdir)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = match bash.spawn() {
            Ok(child) => child,
            Err(source) => {
                // Say what is wrong with the workdir rather than "bash: no such file".
                return Err(match tokio::fs::metadata(&workdir).await {
                    Ok(meta) if meta.is_dir() => TransportError::Command { command: command.to_owned(), source },
                    Ok(_) => {
                        TransportError::InvalidPath { path: workdir, reason: "it is not a folder to run a command in" }
                    }
                    Err(_) => TransportError::Missing(workdir),
                });
            }
        };
        let input = child.stdin.take();
        let feed = async move {
            if let (Some(mut pipe), Some(data)) = (input, stdin) {
                // A command that does not read all of its input closes the pipe: not an error.
                let _ = pipe.write_all(data).await;
            }
        };
        let (output, ()) = tokio::join!(child.wait_with_output(), feed);
        let output = output.map_err(|source| TransportError::Command { command: command.to_owned(), source })?;
        Ok(CommandOutput { retval: output.status.code().unwrap_or(-1), stdout: output.stdout, stderr: output.stderr })
    }

    /// The user running the engine (this machine's, this process's): `whoami`, run once per
    /// process without a shell (a login shell's start-up files cannot change the answer, only
    /// slow it down), then remembered.
    async fn whoami(&self) -> Result<String, TransportError> {
        static USER: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
        USER.get_or_try_init(|| async {
            let output = tokio::process::Command::new("whoami")
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(|source| TransportError::Command { command: "whoami".to_owned(), source })?;
            match output.status.success() {
                true => Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned()),
                false => Err(TransportError::Command {
                    command: "whoami".to_owned(),
                    source: io::Error::other(String::from_utf8_lossy(&output.stderr).trim().to_owned()),
                }),
            }
        })
        .await
        .cloned()
    }
}

#[cfg(test)]
mod tests;
