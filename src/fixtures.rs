//! The fixtures, with aiida's names. Each is an rstest `#[fixture]` (take it as a test argument)
//! and a plain function (call it).
//!
//! Scopes in Rust terms: a fixture's value lives as long as the test holds it and is cleaned up
//! when it drops. The values of one test share what they stand on: the instance folder of
//! [`aiida_instance`] and the profile of [`aiida_profile`] are the same for every fixture of the
//! test (found through the test's thread). [`postgres_cluster`] is the run's server: one per
//! `cargo nextest` run, one per test binary under `cargo test`, stopped when the run ends.

use aiida::config::Config;
use aiida::storage::Storage;
use rstest::fixture;

use aiida::orm::Computer;

use crate::cluster::{ConfigPsqlDos, PostgresCluster};
use crate::computers::{CodeFactory, ComputerFactory, InstalledCodeFactory, LocalCodeFactory, LocalComputerFactory};
use crate::daemon::TestDaemon;
use crate::entry_points::EntryPointManager;
use crate::error::FixtureError;
use crate::profile::{AiidaInstance, AiidaProfile, ProfileOptions, current_instance, current_profile};

fn or_panic<T>(fixture: &str, result: Result<T, FixtureError>) -> T {
    result.unwrap_or_else(|e| panic!("aiida-fixtures: `{fixture}` failed: {}", aiida::report::Chain(&e)))
}

/// The run's temporary PostgreSQL server.
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let cluster = postgres_cluster();
/// let db = cluster.create_database(None, Some("guest"), Some("guest")).unwrap();
/// assert_eq!((db.database_username.as_str(), db.database_engine.as_str()), ("guest", "postgresql_psycopg"));
/// ```
#[fixture]
pub fn postgres_cluster() -> PostgresCluster {
    or_panic("postgres_cluster", PostgresCluster::shared())
}

/// A factory of `core.psql_dos` storage settings (fresh database with aiida's schema, fresh
/// repository folder), e.g. for [`aiida_profile_factory`].
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let factory = config_psql_dos();
/// let (a, b) = (factory.create().unwrap(), factory.create().unwrap());
/// assert_ne!(a.database_name, b.database_name);
/// ```
#[fixture]
pub fn config_psql_dos() -> ConfigPsqlDos {
    ConfigPsqlDos::new()
}

/// The test's instance folder (holding `config.json`): temporary, or with `AIIDA_TEST_PROFILE`
/// the real one (`AIIDA_PATH` or `~/.aiida`).
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let instance = aiida_instance();
/// let profile = aiida_profile();
/// assert_eq!(profile.instance().dir(), instance.dir(), "the test's fixtures share its instance");
/// assert!(instance.dir().join("config.json").is_file());
/// ```
#[fixture]
pub fn aiida_instance() -> AiidaInstance {
    or_panic("aiida_instance", current_instance())
}

/// The test's instance folder, as aiida's `aiida_config`: read its configuration with
/// [`AiidaInstance::config`].
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let profile = aiida_profile();
/// let config = aiida_config().config().unwrap();
/// assert_eq!(config.default_profile(), Some(profile.name()));
/// ```
#[fixture]
pub fn aiida_config() -> AiidaInstance {
    aiida_instance()
}

/// What aiida's manager gives a test: the configuration and profiles by name.
#[derive(Debug, Clone)]
pub struct AiidaManager {
    instance: AiidaInstance,
}

impl AiidaManager {
    /// The configuration on disk.
    pub fn config(&self) -> Result<Config, FixtureError> {
        self.instance.config()
    }

    /// Opens the storage of profile `name` (the default profile when `None`).
    pub fn load_profile(&self, name: Option<&str>) -> Result<Storage, FixtureError> {
        let profile = self.config()?.profile_or_default(name)?;
        Ok(Storage::open(&profile)?)
    }

    /// The instance folder.
    pub fn instance(&self) -> &AiidaInstance {
        &self.instance
    }
}

/// The manager of the test's instance.
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let profile = aiida_profile();
/// let storage = aiida_manager().load_profile(None).unwrap();
/// assert_eq!(storage.profile().name(), profile.name());
/// ```
#[fixture]
pub fn aiida_manager() -> AiidaManager {
    AiidaManager { instance: aiida_instance() }
}

/// The test's profile: by default a temporary, isolated test profile (`test_profile: true`, a
/// database cloned from the migrated template, its own repository, default user
/// `test@localhost`); with `AIIDA_TEST_PROFILE`, that profile of the real instance.
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let profile = aiida_profile();
/// assert!(profile.profile().is_test_profile());
/// let mut node = aiida::orm::data::int(5);
/// node.store(&profile).unwrap();
/// assert_eq!(profile.info().unwrap().counts.iter().find(|(e, _)| e == "nodes").unwrap().1, 1);
/// ```
#[fixture]
pub fn aiida_profile() -> AiidaProfile {
    or_panic("aiida_profile", current_profile().map(|(p, _)| p))
}

/// The test's profile, empty when the test starts (cleaned first, as aiida's
/// `aiida_profile_clean`; a profile made for this very test is empty already). On a shared
/// `AIIDA_TEST_PROFILE` profile the test runs alone, as every test of that profile does: no other
/// test of it, in any thread or process, overlaps with it.
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let profile = aiida_profile_clean();
/// assert_eq!(aiida::orm::QueryBuilder::nodes().count(&profile).unwrap(), 0);
/// ```
#[fixture]
pub fn aiida_profile_clean() -> AiidaProfile {
    or_panic(
        "aiida_profile_clean",
        current_profile().and_then(|(profile, fresh)| {
            if !fresh || !profile.instance().is_temporary() {
                profile.clean()?;
            }
            Ok(profile)
        }),
    )
}

/// Makes more profiles in the test's (temporary) instance, with custom storage, name or email.
#[derive(Debug, Clone)]
pub struct AiidaProfileFactory {
    instance: AiidaInstance,
}

impl AiidaProfileFactory {
    /// A new test profile, made the instance's default.
    pub fn create(&self, options: ProfileOptions) -> Result<AiidaProfile, FixtureError> {
        AiidaProfile::create(&self.instance, options)
    }

    /// The instance the profiles go into.
    pub fn instance(&self) -> &AiidaInstance {
        &self.instance
    }
}

/// A factory of profiles in the test's instance (a temporary one, also under
/// `AIIDA_TEST_PROFILE`: the real configuration is never changed).
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let factory = aiida_profile_factory();
/// let config_psql_dos = config_psql_dos(); // the databases it makes live as long as it does
/// let storage = config_psql_dos.create().unwrap();
/// let options = ProfileOptions { name: Some("custom".into()), email: Some("me@example.com".into()), storage: Some(storage) };
/// let profile = factory.create(options).unwrap();
/// assert_eq!(profile.profile().default_user_email(), Some("me@example.com"));
/// ```
#[fixture]
pub fn aiida_profile_factory() -> AiidaProfileFactory {
    let instance = aiida_instance();
    let instance =
        if instance.is_temporary() { instance } else { or_panic("aiida_profile_factory", AiidaInstance::temporary()) };
    AiidaProfileFactory { instance }
}

/// A brand-new profile in a brand-new temporary instance folder, apart from the test's own.
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let (tmp, own) = (aiida_profile_tmp(), aiida_profile());
/// assert_ne!(tmp.profile().uuid(), own.profile().uuid());
/// assert_ne!(tmp.instance().dir(), own.instance().dir());
/// ```
#[fixture]
pub fn aiida_profile_tmp() -> AiidaProfile {
    or_panic(
        "aiida_profile_tmp",
        AiidaInstance::temporary().and_then(|instance| AiidaProfile::create(&instance, ProfileOptions::default())),
    )
}

/// Entry points added or removed for this test only.
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// struct MyParser;
/// let mut entry_points = entry_points();
/// entry_points.add(MyParser, "aiida.parsers:my.parser").unwrap();
/// assert!(aiida::plugins::parser_factory::<MyParser>("my.parser").is_ok());
/// drop(entry_points);
/// assert!(aiida::plugins::parser_factory::<MyParser>("my.parser").is_err());
/// ```
#[fixture]
pub fn entry_points() -> EntryPointManager {
    EntryPointManager::new()
}

/// Gets or creates computers in the test's profile (aiida's `aiida_computer`): by label, host
/// name, scheduler and transport; new ones work in the run's scratch folder, poll the scheduler
/// without delay and are configured only when asked.
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let computers = aiida_computer();
/// let spec = ComputerSpec { label: Some("cluster".into()), ..ComputerSpec::default() };
/// let first = computers.get(spec.clone()).unwrap();
/// assert_eq!(computers.get(spec).unwrap().uuid(), first.uuid(), "got, not created again");
/// ```
#[fixture]
pub fn aiida_computer() -> ComputerFactory {
    ComputerFactory::for_profile(aiida_profile())
}

/// Gets or creates `core.local` + `core.direct` computers, configured unless asked not to
/// (aiida's `aiida_computer_local`).
#[fixture]
pub fn aiida_computer_local() -> LocalComputerFactory {
    LocalComputerFactory::new(aiida_computer())
}

/// The computer `localhost` (`core.local` + `core.direct`, configured), as aiida's
/// `aiida_localhost`.
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let localhost = aiida_localhost();
/// assert_eq!((localhost.label(), localhost.transport_type()), ("localhost", "core.local"));
/// ```
#[fixture]
pub fn aiida_localhost() -> Computer {
    or_panic("aiida_localhost", aiida_computer_local().get(Some("localhost"), true))
}

/// The path of the run's private SSH key, ed25519, made once per run (aiida's `ssh_key`, an RSA
/// key per session); the public key is beside it, with `.pub`. Cargo feature `ssh`.
#[cfg(feature = "ssh")]
#[fixture]
pub fn ssh_key() -> std::path::PathBuf {
    or_panic("ssh_key", crate::ssh::run_key())
}

/// Gets or creates `core.ssh` + `core.direct` computers on a private SSH server the harness
/// starts for the test process (or on the host in `AIIDA_TEST_SSH_HOST`), configured with the
/// run's key unless asked not to (aiida's `aiida_computer_ssh`, which needs password-less SSH to
/// localhost set up by hand). Cargo feature `ssh`.
#[cfg(feature = "ssh")]
#[fixture]
pub fn aiida_computer_ssh() -> crate::SshComputerFactory {
    crate::SshComputerFactory::new(aiida_computer())
}

/// Gets or creates codes by data type and label (aiida's `aiida_code`).
#[fixture]
pub fn aiida_code() -> CodeFactory {
    CodeFactory::new(aiida_profile())
}

/// Gets or creates `InstalledCode`s, on `aiida_localhost` unless told otherwise (aiida's
/// `aiida_code_installed`).
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// let spec = InstalledCodeSpec { default_calc_job_plugin: Some("core.arithmetic.add".into()), ..Default::default() };
/// let code = aiida_code_installed().get(spec).unwrap();
/// assert_eq!(code.attribute("filepath_executable"), Some(&"/bin/bash".into()));
/// ```
#[fixture]
pub fn aiida_code_installed() -> InstalledCodeFactory {
    InstalledCodeFactory::new(aiida_code(), aiida_localhost())
}

/// Gets or creates codes on `aiida_localhost` for executables on `PATH` (aiida's legacy
/// `aiida_local_code_factory(entry_point, executable)`).
#[fixture]
pub fn aiida_local_code_factory() -> LocalCodeFactory {
    LocalCodeFactory::new(aiida_profile(), aiida_localhost())
}

/// The daemon of the test's profile, not started (aiida's `daemon_client`); its workers stop when
/// the value drops, and end with the test process in any case.
#[fixture]
pub fn daemon_client() -> TestDaemon {
    TestDaemon::new(aiida_profile())
}

/// The daemon of the test's profile, running (one worker: this test binary re-run, which sees the
/// entry points of the test's scope; a value added at run time cannot reach it).
#[fixture]
pub fn started_daemon_client() -> TestDaemon {
    or_panic("started_daemon_client", daemon_client().started())
}

/// The daemon of the test's profile, stopped.
#[fixture]
pub fn stopped_daemon_client() -> TestDaemon {
    let daemon = daemon_client();
    let _ = daemon.client().stop(std::time::Duration::from_secs(5));
    daemon
}

/// A running daemon to submit to and wait on (aiida's `submit_and_await`):
/// `submit_and_await.submit_and_await(&builder)` waits until the process is finished (20 s at
/// most), failing at once on any other end with its exit status or exception.
#[fixture]
pub fn submit_and_await() -> TestDaemon {
    started_daemon_client()
}
