//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// A boxed error, as returned by a template's migration step.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while providing a PostgreSQL server or database for tests.
///
/// Each message says what went wrong and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No PostgreSQL server binaries could be found or provisioned.
    #[error(
        "no PostgreSQL binaries found (looked in: {searched}){download}; \
         install PostgreSQL (e.g. `apt-get install postgresql`), \
         or set TESTPG_BIN_DIR to the folder holding `initdb` and `postgres`, \
         or point at a running server with TESTPG_URL=postgresql://user:password@host:port/"
    )]
    NoBinaries {
        /// The places that were searched, comma-separated.
        searched: String,
        /// Why the download fallback did not help (empty when it was not tried).
        download: String,
    },

    /// A folder named by `TESTPG_BIN_DIR` lacks the server binaries.
    #[error("TESTPG_BIN_DIR={dir} does not hold `initdb` and `postgres`: point it at PostgreSQL's `bin` folder")]
    BadBinDir {
        /// The folder that was named.
        dir: PathBuf,
    },

    /// We run as root, and the unprivileged user to run PostgreSQL as does not exist.
    #[error(
        "PostgreSQL refuses to run as root and the user `{user}` to run it as does not exist: \
         create it (`useradd --system {user}`) or set TESTPG_OS_USER to an existing unprivileged user"
    )]
    NoServerUser {
        /// The user name that was looked up.
        user: String,
    },

    /// An external program (initdb, postgres, pg_config) failed.
    #[error("`{program}` failed: {detail}")]
    Command {
        /// The program that was run.
        program: String,
        /// Its exit status and the end of its output.
        detail: String,
    },

    /// The server did not become ready in time.
    #[error("PostgreSQL did not become ready within {seconds} s; its log ({log}, now removed) ended with:\n{tail}")]
    NotReady {
        /// How long we waited.
        seconds: u64,
        /// The server's log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },

    /// The process that keeps the run's server (the keeper) failed to start it.
    #[error("the run's PostgreSQL keeper failed: {0}")]
    Keeper(String),

    /// A file-system operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What we were doing ("create folder", "read", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A folder we would use (the base folder, or one below it) is not ours: another user could
    /// have planted it, and whatever it leads to would be changed or removed by us.
    #[error("`{path}` is not ours ({detail}): remove it, or set TESTPG_DIR to a folder of your own")]
    NotOurs {
        /// The folder (not followed when it is a symlink).
        path: PathBuf,
        /// What it is: owner, mode, whether it is a symlink.
        detail: String,
    },

    /// A folder above the base folder can be changed by another user, who could then swap the
    /// base folder for one of theirs.
    #[error(
        "`{path}` (above testpg's folder {base}) can be changed by other users ({detail}): \
         set TESTPG_DIR to a folder whose parents only you and root can change"
    )]
    UnsafeParent {
        /// The folder above.
        path: PathBuf,
        /// The base folder.
        base: PathBuf,
        /// Its owner and mode.
        detail: String,
    },

    /// An environment variable of ours has a value we cannot use.
    #[error("{name}=`{value}` is not valid: expected {expected}")]
    BadSetting {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },

    /// The run ended (its owner process exited), so its keeper stopped the server, while this
    /// process still used it.
    #[error(
        "the run's PostgreSQL server was stopped because its run ended: the run's owner (pid {owner}) \
         exited, and the keeper then stopped the server and removed {run_dir}; to keep the server for \
         as long as you use it, set TESTPG_RUN_OWNER to the pid of a process that lives as long as \
         the run, such as the script's shell (`export TESTPG_RUN_OWNER=$$`)"
    )]
    RunEnded {
        /// The run's folder.
        run_dir: PathBuf,
        /// The pid of the run's owner.
        owner: u32,
    },

    /// A query or connection failed.
    #[error("PostgreSQL at {target} failed")]
    Postgres {
        /// The server or database concerned.
        target: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// `TESTPG_URL` (or a URL given in code) could not be used.
    #[error("invalid PostgreSQL URL `{url}`: {reason}; expected postgresql://user:password@host:port/")]
    BadUrl {
        /// The URL, with its password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The caller's migration step failed while building a template database.
    #[error("building template database for `{key}` failed")]
    Migration {
        /// The template's key.
        key: String,
        /// The migration's error.
        #[source]
        source: BoxError,
    },

    /// The testcontainers backend could not start a container.
    #[error(
        "cannot start a PostgreSQL container: {0}; is a Docker engine running and reachable \
         (DOCKER_HOST or /var/run/docker.sock)? Without one, drop TESTPG_BACKEND=testcontainers \
         to use local binaries"
    )]
    Container(String),

    /// A backend was asked for that this build does not include.
    #[error("TESTPG_BACKEND={0} is not available: {1}")]
    Backend(String, &'static str),
}

/// `error` and its causes on one line (`error: cause: cause`), for the keeper's log and for what it
/// tells the processes of its run: messages do not repeat their source.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(&format!(": {error}"));
        cause = error.source();
    }
    text
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }

    pub(crate) fn pg(target: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let target = target.into();
        move |source| Error::Postgres { target, source }
    }
}
