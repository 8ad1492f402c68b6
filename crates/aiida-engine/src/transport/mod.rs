//! Transports: how the engine reaches a computer's files and runs commands there.
//!
//! A transport is async, so that one runtime drives the file transfers and commands of many jobs
//! at once without blocking on any of them. A [`TransportType`] (the plugin, an entry point of
//! `aiida.transports`) opens a [`Transport`] for a computer with a user's authentication
//! parameters (the authinfo); the engine shares one open transport among the jobs of a computer
//! and user.

mod local;
pub mod pattern;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub use local::{LocalTransport, LocalTransportType};

/// What a command run through a transport returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Its exit status (`-1` when a signal ended it).
    pub retval: i32,
    /// What it wrote to stdout.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Errors of transports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A file operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done ("put", "create folder", ...).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A path that must exist does not.
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// A destination exists and may not be overwritten.
    #[error("{0} exists already")]
    Exists(PathBuf),
    /// A path given in a form the operation does not take (relative where it must be absolute, ...).
    #[error("invalid path {path}: {reason}")]
    InvalidPath {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A command could not be run at all.
    #[error("cannot run `{command}`")]
    Command {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An authentication parameter has a value the transport cannot use.
    #[error("the transport parameter `{name}` = {value} is invalid: expected {expected}")]
    Parameter {
        /// The parameter.
        name: String,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// Connecting to the computer failed.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// The host (and user, port).
        target: String,
        /// Why, and what to do.
        reason: String,
    },
}

impl TransportError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TransportError {
        let path = path.to_owned();
        move |source| TransportError::Io { action, path, source }
    }
}

/// An open connection to a computer. Paths are absolute on the computer (relative ones are taken
/// from the user's home folder); local paths are absolute on this machine.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Copies the local file or folder `local` to `remote`: into `remote` when that is an existing
    /// folder, as `remote` otherwise (overwriting).
    async fn put(&self, local: &Path, remote: &Path) -> Result<(), TransportError>;

    /// Copies the remote file or folder `remote` to `local`, as `put` the other way; a missing
    /// `remote` is an error unless `ignore_nonexisting`.
    async fn get(&self, remote: &Path, local: &Path, ignore_nonexisting: bool) -> Result<(), TransportError>;

    /// Copies on the computer, `source` to `destination` (into it when it is a folder).
    async fn copy(&self, source: &Path, destination: &Path) -> Result<(), TransportError>;

    /// Makes `link` a symbolic link to `source`.
    async fn symlink(&self, source: &Path, link: &Path) -> Result<(), TransportError>;

    /// The names in folder `path`, sorted.
    async fn listdir(&self, path: &Path) -> Result<Vec<String>, TransportError>;

    /// The paths that the absolute glob `pattern` (`*`, `?`, `[...]` within a path component)
    /// matches, sorted.
    async fn glob(&self, pattern: &Path) -> Result<Vec<PathBuf>, TransportError>;

    /// Creates folder `path`; an existing one is an error unless `ignore_existing`.
    async fn mkdir(&self, path: &Path, ignore_existing: bool) -> Result<(), TransportError>;

    /// Creates folder `path` and the folders above it; an existing `path` is an error unless
    /// `ignore_existing`.
    async fn makedirs(&self, path: &Path, ignore_existing: bool) -> Result<(), TransportError>;

    /// Removes the file or folder tree `path`; nothing to do when it does not exist.
    async fn rmtree(&self, path: &Path) -> Result<(), TransportError>;

    /// Renames `old` to `new`, which must not exist.
    async fn rename(&self, old: &Path, new: &Path) -> Result<(), TransportError>;

    /// Whether `path` exists.
    async fn path_exists(&self, path: &Path) -> Result<bool, TransportError>;

    /// Whether `path` is a folder.
    async fn is_dir(&self, path: &Path) -> Result<bool, TransportError>;

    /// Sets the permission bits of `path`.
    async fn chmod(&self, path: &Path, mode: u32) -> Result<(), TransportError>;

    /// Runs `command` with bash (a login shell unless the computer's `use_login_shell` is false) in
    /// `workdir` (else the home folder), feeding it `stdin`, and waits for it.
    async fn exec_command_wait(
        &self,
        command: &str,
        workdir: Option<&Path>,
        stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, TransportError>;

    /// The user name on the computer (`whoami`).
    async fn whoami(&self) -> Result<String, TransportError> {
        let output = self.exec_command_wait("whoami", None, None).await?;
        match output.retval {
            0 => Ok(output.stdout_text().trim().to_owned()),
            _ => Err(TransportError::Command {
                command: "whoami".to_owned(),
                source: std::io::Error::other(output.stderr_text().trim().to_owned()),
            }),
        }
    }

    /// Closes the connection (the transport is not used afterwards).
    async fn close(&self) -> Result<(), TransportError> {
        Ok(())
    }
}

/// One authentication parameter a transport takes (`verdi computer configure` asks for it).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthOption {
    /// The key in the authinfo's `auth_params`, e.g. `safe_interval`.
    pub name: &'static str,
    /// What it means.
    pub help: &'static str,
    /// Its default.
    pub default: Value,
}

/// A transport plugin (an entry point of `aiida.transports`): opens transports to computers.
#[async_trait::async_trait]
pub trait TransportType: Send + Sync {
    /// Opens a transport to `hostname` with the authinfo's parameters.
    async fn open(
        &self,
        hostname: &str,
        auth_params: &Map<String, Value>,
    ) -> Result<Arc<dyn Transport>, TransportError>;

    /// The parameters it takes, with their defaults.
    fn auth_options(&self) -> Vec<AuthOption>;

    /// How long to wait before opening a connection after the last one (`safe_interval` when the
    /// authinfo does not set it).
    fn default_safe_interval(&self) -> Duration;

    /// How often, at most, the engine asks the scheduler about a job of a computer with this
    /// transport, when the computer does not say.
    fn default_minimum_job_poll_interval(&self) -> Duration;
}

/// `text` quoted for bash as aiida's `escape_for_bash` does: in single quotes, each `'` written
/// as `'"'"'`; with `double_quotes`, in double quotes, each `"` written as `"'"'"`.
pub fn escape_for_bash(text: &str, double_quotes: bool) -> String {
    if double_quotes {
        format!("\"{}\"", text.replace('"', "\"'\"'\""))
    } else {
        format!("'{}'", text.replace('\'', "'\"'\"'"))
    }
}

/// The value of a boolean authentication parameter, or its default.
pub fn bool_param(params: &Map<String, Value>, name: &str, default: bool) -> Result<bool, TransportError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(TransportError::Parameter {
            name: name.to_owned(),
            value: other.to_string(),
            expected: "true or false",
        }),
    }
}

/// The value of a duration parameter given in seconds, or its default.
pub fn seconds_param(params: &Map<String, Value>, name: &str, default: Duration) -> Result<Duration, TransportError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|s| s >= 0.0 && s.is_finite()) => {
            Ok(Duration::from_secs_f64(n.as_f64().unwrap_or_default()))
        }
        Some(other) => Err(TransportError::Parameter {
            name: name.to_owned(),
            value: other.to_string(),
            expected: "a number of seconds >= 0",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::escape_for_bash;

    #[test]
    fn quoting_is_aiidas() {
        assert_eq!(escape_for_bash("it's", false), r#"'it'"'"'s'"#);
        assert_eq!(escape_for_bash("a \"b\"", true), r#""a "'"'"b"'"'"""#);
        assert_eq!(escape_for_bash("x y", false), "'x y'");
    }
}
