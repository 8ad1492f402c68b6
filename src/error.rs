//! The harness's errors.

use std::path::{Path, PathBuf};

/// What can go wrong while setting up a fixture. Fixtures panic with this message; the
/// `try_*`/`create` functions return it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// The temporary PostgreSQL could not be provided.
    #[error(transparent)]
    Postgres(#[from] testpg::Error),
    /// The instance's configuration.
    #[error(transparent)]
    Config(#[from] aiida::config::ConfigError),
    /// The profile's storage.
    #[error(transparent)]
    Storage(#[from] aiida::storage::StorageError),
    /// `AIIDA_TEST_PROFILE` names a profile that is not marked as a test profile.
    #[error("specified test profile `{0}` is not a test profile.")]
    NotATestProfile(String),
    /// A malformed entry point for the `entry_points` fixture.
    #[error("invalid `entry_point_string` format, should `group:name`.")]
    EntryPointFormat,
    /// Removing an entry point whose name exists in no group.
    #[error("entry point `{name}` does not exist in group `{group}`.")]
    NoEntryPoint {
        /// The group given.
        group: String,
        /// The name given.
        name: String,
    },
    /// An entry point could not be enabled.
    #[error(transparent)]
    Plugin(#[from] aiida::plugins::PluginError),
    /// The ORM refused an operation.
    #[error(transparent)]
    Orm(#[from] aiida::orm::OrmError),
    /// A computer with the label exists, but is another computer.
    #[error("a computer labelled `{label}` exists already as {existing}, not {wanted}: choose another label")]
    ComputerClash {
        /// The label.
        label: String,
        /// What the existing computer is (host, transport, scheduler).
        existing: String,
        /// What was asked for.
        wanted: String,
    },
    /// An executable is not on `PATH`.
    #[error("The executable \"{0}\" was not found in the $PATH.")]
    NoExecutable(String),
    /// The SSH server or key of the SSH fixtures.
    #[error("the SSH fixtures failed: {0}")]
    Ssh(String),
    /// The daemon could not be started.
    #[error("the daemon could not be started: {0}")]
    Daemon(String),
    /// A file-system error.
    #[error("cannot {action} {path}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl FixtureError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> FixtureError {
        FixtureError::Io { action, path: path.to_owned(), source }
    }
}
