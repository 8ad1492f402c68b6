//! rstest fixtures for testing AiiDA plugins against real, isolated instances of the engine.
//!
//! Add the crate and `rstest` as dev-dependencies, import the prelude, and take fixtures as test
//! arguments:
//!
//! ```no_run
//! use aiida_fixtures::prelude::*;
//!
//! #[rstest]
//! fn stores_an_int(aiida_profile_clean: AiidaProfile) {
//!     let mut node = aiida::orm::data::int(42);
//!     node.store(&aiida_profile_clean).unwrap();
//!     let count = aiida::orm::QueryBuilder::nodes().of_type(&aiida::orm::data::INT).count(&aiida_profile_clean);
//!     assert_eq!(count.unwrap(), 1);
//! }
//! ```
//!
//! Every test gets its own profile: its own database (cloned in a millisecond from a template
//! migrated once per run), repository and instance folder, on a PostgreSQL server the harness
//! starts itself (see [`testpg`]) and stops when the run ends. Nothing has to be installed or
//! started by hand but PostgreSQL's binaries. Isolation holds under `cargo test` (threads) and
//! `cargo nextest` (a process per test).
//!
//! Set `AIIDA_TEST_PROFILE=NAME` to run on an existing profile of the real instance instead (it
//! must be marked `test_profile: true`, e.g. by `verdi profile setup ... --test-profile`); then
//! no temporary server is started, and the clean fixtures never overlap with another test of
//! that profile.
//!
//! The fixtures are in [`fixtures`]; all of them, and the types they return, are in the
//! [`prelude`].

#![warn(missing_docs)]

mod cluster;
mod computers;
mod daemon;
mod entry_points;
mod error;
pub mod fixtures;
mod profile;
mod spare;
#[cfg(feature = "ssh")]
mod ssh;

pub use cluster::{ConfigPsqlDos, DatabaseConfig, PostgresCluster};
pub use computers::{
    CodeFactory, ComputerFactory, ComputerSpec, InstalledCodeFactory, InstalledCodeSpec, LocalCodeFactory,
    LocalComputerFactory,
};
pub use daemon::TestDaemon;
pub use entry_points::EntryPointManager;
pub use error::FixtureError;
pub use fixtures::{AiidaManager, AiidaProfileFactory};
pub use profile::{AiidaInstance, AiidaProfile, DEFAULT_EMAIL, GroupProfile, ProfileOptions, TEST_PROFILE_ENV};
pub use {aiida, aiida_daemon, aiida_engine, testpg};
#[cfg(feature = "ssh")]
pub use {
    aiida_ssh,
    ssh::{SshComputerFactory, TEST_SSH_HOST_ENV, TEST_SSH_KEY_ENV},
};

/// Everything a test imports: `use aiida_fixtures::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "ssh")]
    pub use crate::SshComputerFactory;
    pub use crate::fixtures::*;
    pub use crate::{
        AiidaInstance, AiidaProfile, CodeFactory, ComputerFactory, ComputerSpec, ConfigPsqlDos, DatabaseConfig,
        EntryPointManager, FixtureError, GroupProfile, InstalledCodeFactory, InstalledCodeSpec, LocalCodeFactory,
        LocalComputerFactory, PostgresCluster, ProfileOptions, TestDaemon,
    };
    pub use rstest::{fixture, rstest};
}
