//! The computer and code fixtures: get-or-create factories with aiida's names and contracts
//! (`aiida_computer`, `aiida_computer_local`, `aiida_localhost`, `aiida_code`,
//! `aiida_code_installed`, and the legacy `aiida_local_code_factory`).

use std::path::{Path, PathBuf};

use aiida::orm::data::{self, DataTypes};
use aiida::orm::{Computer, Node, OrmError, QueryBuilder, User};
use aiida::plugins;
use serde_json::{Map, Value};

use crate::error::FixtureError;
use crate::profile::{AiidaProfile, TEST_PROFILE_ENV, random_hex};

/// What [`ComputerFactory::get`] looks for, or makes (aiida's `aiida_computer` arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct ComputerSpec {
    /// The label; `None` makes a new `test-computer-<hex>` one.
    pub label: Option<String>,
    /// The host name.
    pub hostname: String,
    /// The scheduler plugin.
    pub scheduler_type: String,
    /// The transport plugin.
    pub transport_type: String,
    /// Seconds between two scheduler polls, at least (0: as fast as it goes).
    pub minimum_job_poll_interval: f64,
    /// MPI processes per machine by default.
    pub default_mpiprocs_per_machine: u32,
    /// Authentication parameters: when given, the computer is configured for the profile's user
    /// with them (every time, new or found).
    pub configuration_kwargs: Option<Map<String, Value>>,
}

impl Default for ComputerSpec {
    fn default() -> Self {
        ComputerSpec {
            label: None,
            hostname: "localhost".to_owned(),
            scheduler_type: "core.direct".to_owned(),
            transport_type: "core.local".to_owned(),
            minimum_job_poll_interval: 0.0,
            default_mpiprocs_per_machine: 1,
            configuration_kwargs: None,
        }
    }
}

/// Gets or creates computers in the test's profile (the `aiida_computer` fixture).
#[derive(Debug, Clone)]
pub struct ComputerFactory {
    profile: AiidaProfile,
}

impl ComputerFactory {
    /// The factory of `profile`'s computers (what the fixture gives the test's profile; this one
    /// serves a thread the test starts, which has no test profile of its own).
    pub fn for_profile(profile: AiidaProfile) -> ComputerFactory {
        ComputerFactory { profile }
    }

    /// The computer with `spec`'s label, host name, scheduler and transport, as it is when it
    /// exists; otherwise a new one, its work folder in the run's scratch folder (removed with the
    /// run), stored with the poll interval and MPI default of `spec`. Tests in threads or
    /// processes racing for one label get one computer; a computer with that label but another
    /// host, scheduler or transport is an error.
    pub fn get(&self, spec: ComputerSpec) -> Result<Computer, FixtureError> {
        let storage = self.profile.storage();
        let label = spec.label.clone().unwrap_or_else(|| format!("test-computer-{}", random_hex(16)));
        let computer = match find(storage, &label, &spec)? {
            Some(found) => found,
            None => {
                let workdir = work_folder(&label)?;
                let mut computer = Computer::new(&label, &spec.hostname, &spec.transport_type, &spec.scheduler_type)
                    .with_workdir(workdir.to_string_lossy())
                    .with_minimum_poll_interval(spec.minimum_job_poll_interval)
                    .with_metadata("default_mpiprocs_per_machine", spec.default_mpiprocs_per_machine.into());
                match computer.store(storage) {
                    Ok(_) => computer,
                    // Another test stored it first: take that one (if it is the same computer).
                    Err(OrmError::Duplicate { .. }) => match find(storage, &label, &spec)? {
                        Some(found) => found,
                        None => return Err(clash(storage, &label, &spec)),
                    },
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if let Some(auth_params) = &spec.configuration_kwargs {
            let user = User::default_user(storage)?;
            computer.configure(storage, &user, auth_params.clone())?;
        }
        Ok(computer)
    }
}

/// The computer labelled `label` if it has `spec`'s host name, scheduler and transport; an error
/// if it has others; `None` if there is none.
fn find(storage: &aiida::storage::Storage, label: &str, spec: &ComputerSpec) -> Result<Option<Computer>, FixtureError> {
    match Computer::load_label(storage, label) {
        Ok(c)
            if c.hostname() == spec.hostname
                && c.scheduler_type() == spec.scheduler_type
                && c.transport_type() == spec.transport_type =>
        {
            Ok(Some(c))
        }
        Ok(_) => Err(clash(storage, label, spec)),
        Err(OrmError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn clash(storage: &aiida::storage::Storage, label: &str, spec: &ComputerSpec) -> FixtureError {
    let existing = Computer::load_label(storage, label)
        .map(|c| format!("{} with {} + {}", c.hostname(), c.transport_type(), c.scheduler_type()))
        .unwrap_or_else(|_| "another computer".to_owned());
    FixtureError::ComputerClash {
        label: label.to_owned(),
        existing,
        wanted: format!("{} with {} + {}", spec.hostname, spec.transport_type, spec.scheduler_type),
    }
}

/// A new work folder for a computer: in the run's scratch folder, removed when the run ends (in
/// a temporary folder on a real `AIIDA_TEST_PROFILE` profile, which outlives runs).
fn work_folder(label: &str) -> Result<PathBuf, FixtureError> {
    let base = run_folder("work")?;
    let safe: String = label.chars().map(|c| if c.is_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let path = base.join(format!("{safe}-{}", random_hex(4)));
    std::fs::create_dir_all(&path).map_err(|e| FixtureError::io("create", &path, e))?;
    Ok(path)
}

/// The run's folder `name`, made when missing: in the run's scratch folder (removed when the run
/// ends); in the temporary folder on a real `AIIDA_TEST_PROFILE` profile, which outlives runs.
pub(crate) fn run_folder(name: &str) -> Result<PathBuf, FixtureError> {
    let dir = if std::env::var_os(TEST_PROFILE_ENV).is_some() {
        std::env::temp_dir().join("aiida-fixtures-work").join(name)
    } else {
        testpg::Server::shared()?.run_dir().join("aiida").join(name)
    };
    std::fs::create_dir_all(&dir).map_err(|e| FixtureError::io("create", &dir, e))?;
    Ok(dir)
}

/// Gets or creates `core.local` + `core.direct` computers (the `aiida_computer_local` fixture).
#[derive(Debug, Clone)]
pub struct LocalComputerFactory {
    computers: ComputerFactory,
}

impl LocalComputerFactory {
    pub(crate) fn new(computers: ComputerFactory) -> LocalComputerFactory {
        LocalComputerFactory { computers }
    }

    /// The local computer `label` (a new one when `None`), configured for the profile's user with
    /// the transport's defaults when `configure` (an existing configuration is kept otherwise).
    pub fn get(&self, label: Option<&str>, configure: bool) -> Result<Computer, FixtureError> {
        self.computers.get(ComputerSpec {
            label: label.map(str::to_owned),
            configuration_kwargs: configure.then(Map::new),
            ..ComputerSpec::default()
        })
    }
}

/// Gets or creates codes of any data type (the `aiida_code` fixture).
#[derive(Debug, Clone)]
pub struct CodeFactory {
    profile: AiidaProfile,
}

impl CodeFactory {
    pub(crate) fn new(profile: AiidaProfile) -> CodeFactory {
        CodeFactory { profile }
    }

    /// The one code of data type `entry_point` (e.g. `core.code.installed`) labelled `label`, as
    /// it is; otherwise the node `make` builds for the label (a new `test-code-<hex>` one when
    /// `None`), stored.
    pub fn get(
        &self,
        entry_point: &str,
        label: Option<&str>,
        make: impl FnOnce(&str) -> Result<Node, OrmError>,
    ) -> Result<Node, FixtureError> {
        let storage = self.profile.storage();
        let data_type = plugins::factory::<DataTypes>(entry_point)?;
        let label = label.map(str::to_owned).unwrap_or_else(|| format!("test-code-{}", random_hex(16)));
        let found = QueryBuilder::nodes()
            .of_type(&data_type)
            .column("label", aiida::orm::query::Op::Eq, label.as_str())
            .limit(2)
            .all(storage)?;
        if let [code] = found.as_slice() {
            return Ok(code.clone());
        }
        let mut code = make(&label)?;
        code.store(storage)?;
        Ok(code)
    }
}

/// What [`InstalledCodeFactory::get`] makes (aiida's `aiida_code_installed` arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct InstalledCodeSpec {
    /// The label; `None` makes a new `test-code-<hex>` one.
    pub label: Option<String>,
    /// The description.
    pub description: Option<String>,
    /// The calculation job `get_builder` makes a builder for.
    pub default_calc_job_plugin: Option<String>,
    /// The computer; `None` is `aiida_localhost`.
    pub computer: Option<Computer>,
    /// The executable, absolute.
    pub filepath_executable: String,
    /// Double quotes on the command line.
    pub use_double_quotes: bool,
    /// Whether it runs with MPI (`None`: as the calculation says).
    pub with_mpi: Option<bool>,
    /// Shell text before it runs.
    pub prepend_text: String,
    /// Shell text after it ran.
    pub append_text: String,
}

impl Default for InstalledCodeSpec {
    fn default() -> Self {
        InstalledCodeSpec {
            label: None,
            description: None,
            default_calc_job_plugin: None,
            computer: None,
            filepath_executable: "/bin/bash".to_owned(),
            use_double_quotes: false,
            with_mpi: None,
            prepend_text: String::new(),
            append_text: String::new(),
        }
    }
}

/// Gets or creates `InstalledCode`s (the `aiida_code_installed` fixture).
#[derive(Debug, Clone)]
pub struct InstalledCodeFactory {
    codes: CodeFactory,
    localhost: Computer,
}

impl InstalledCodeFactory {
    pub(crate) fn new(codes: CodeFactory, localhost: Computer) -> InstalledCodeFactory {
        InstalledCodeFactory { codes, localhost }
    }

    /// The installed code `spec` describes (found by label, as [`CodeFactory::get`]).
    pub fn get(&self, spec: InstalledCodeSpec) -> Result<Node, FixtureError> {
        let computer = spec.computer.clone().unwrap_or_else(|| self.localhost.clone());
        self.codes.get("core.code.installed", spec.label.as_deref(), |label| {
            let mut code = data::installed_code(
                &computer,
                &spec.filepath_executable,
                label,
                spec.default_calc_job_plugin.as_deref(),
            )?;
            if let Some(description) = &spec.description {
                code.set_description(description.clone())?;
            }
            code.set_attribute("use_double_quotes", spec.use_double_quotes)?;
            code.set_attribute("with_mpi", spec.with_mpi.map_or(Value::Null, Value::Bool))?;
            code.set_attribute("prepend_text", spec.prepend_text.clone())?;
            code.set_attribute("append_text", spec.append_text.clone())?;
            Ok(code)
        })
    }
}

/// Gets or creates codes for executables on `PATH` (aiida's legacy `aiida_local_code_factory`).
#[derive(Debug, Clone)]
pub struct LocalCodeFactory {
    profile: AiidaProfile,
    localhost: Computer,
}

impl LocalCodeFactory {
    pub(crate) fn new(profile: AiidaProfile, localhost: Computer) -> LocalCodeFactory {
        LocalCodeFactory { profile, localhost }
    }

    /// The installed code on `aiida_localhost` labelled `executable` whose default calculation is
    /// `entry_point`; otherwise a new one for `executable` looked up on `PATH`.
    pub fn get(&self, entry_point: &str, executable: &str) -> Result<Node, FixtureError> {
        let storage = self.profile.storage();
        let installed = plugins::factory::<DataTypes>("core.code.installed")?;
        let found = QueryBuilder::nodes()
            .of_type(&installed)
            .column("label", aiida::orm::query::Op::Eq, executable)
            .attribute("input_plugin", aiida::orm::query::Op::Eq, entry_point)
            .all(storage)?;
        if let Some(code) = found.into_iter().find(|c| c.computer_pk() == self.localhost.pk()) {
            return Ok(code);
        }
        let path = which(executable).ok_or_else(|| FixtureError::NoExecutable(executable.to_owned()))?;
        let mut code = data::installed_code(&self.localhost, &path.to_string_lossy(), executable, Some(entry_point))?;
        code.set_description(executable)?;
        code.store(storage)?;
        Ok(code)
    }
}

/// `name` looked up on `PATH` (a path with a `/` is taken as it is, when it is a file).
fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if name.contains('/') {
        let path = Path::new(name);
        return executable(path).then(|| std::path::absolute(path).unwrap_or_else(|_| path.to_owned()));
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| executable(p))
}
