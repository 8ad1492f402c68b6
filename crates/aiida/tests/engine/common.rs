//! A temporary profile on a database cloned from a template migrated once per run. Shared by the
//! core's tests and `aiida-cli`'s (`#[path]`), each of which uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use aiida::config::{Instance, Profile, PsqlDosConfig};
use testpg::{ConnectionInfo, Server, Template, TestDatabase};

/// The aiida schema, migrated once (and kept between runs: its key hashes the schema) and cloned
/// for each test; the same template as the harness's.
pub fn aiida_template() -> Template {
    Template::new(aiida::storage::schema_key(), |db| {
        aiida::storage::migrate_database(&psql_dos(db, Path::new("/unused")))?;
        Ok(())
    })
    .cached()
}

pub fn psql_dos(db: &ConnectionInfo, repository: &Path) -> PsqlDosConfig {
    PsqlDosConfig {
        database_engine: "postgresql_psycopg".into(),
        database_hostname: db.host.clone(),
        database_port: db.port,
        database_username: db.user.clone(),
        database_password: db.password.clone().unwrap_or_default(),
        database_name: db.dbname.clone(),
        repository_uri: format!("file://{}", repository.display()),
    }
}

/// A profile of its own: database, repository and instance folder.
pub struct TestProfile {
    pub db: TestDatabase,
    pub dir: tempfile::TempDir,
    pub profile: Profile,
}

impl TestProfile {
    pub fn new(template: &Template) -> TestProfile {
        let db = Server::shared().unwrap().database(template).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = psql_dos(db.connection(), &dir.path().join("repository"));
        let profile = Profile::new("test", &config, "test@localhost").with_test_profile(true);
        let instance = Instance::at(dir.path().join(".aiida"));
        instance.update(|c| c.add_profile(profile.clone())).unwrap();
        TestProfile { db, dir, profile }
    }

    pub fn instance(&self) -> Instance {
        Instance::at(self.dir.path().join(".aiida"))
    }

    pub fn repository(&self) -> PathBuf {
        self.dir.path().join("repository")
    }
}

/// A temporary profile with a `core.local` + `core.direct` computer `localhost` (configured
/// without a login shell, working in a scratch folder, polled without delay) and a `/bin/bash`
/// code `bash` whose default calculation is `core.arithmetic.add`: what the engine's, the
/// daemon's and verdi's tests run calculations on.
pub struct LocalSetup {
    pub profile: TestProfile,
    pub storage: aiida::storage::Storage,
    pub work: tempfile::TempDir,
    pub computer: aiida::orm::Computer,
    pub code: aiida::orm::Node,
}

impl LocalSetup {
    /// The setup, with profile options `options` (e.g. quick retries), in the profile the storage
    /// opens and in the instance folder's configuration.
    pub fn new(options: &[(&str, serde_json::Value)]) -> LocalSetup {
        let profile = TestProfile::new(&aiida_template());
        let mut with_options = profile.profile.clone();
        for (key, value) in options {
            with_options.set_option(*key, value.clone());
        }
        // Also in the instance folder, where `verdi` and daemon workers read them.
        profile
            .instance()
            .update(|config| {
                config.remove_profile(with_options.name())?;
                config.add_profile(with_options.clone())
            })
            .unwrap();
        let storage = aiida::storage::Storage::initialise(&with_options).unwrap();
        let work = tempfile::tempdir().unwrap();
        let mut computer = aiida::orm::Computer::new("localhost", "localhost", "core.local", "core.direct")
            .with_workdir(work.path().to_string_lossy())
            .with_minimum_poll_interval(0.0);
        computer.store(&storage).unwrap();
        let user = aiida::orm::User::default_user(&storage).unwrap();
        computer.configure(&storage, &user, no_login_shell()).unwrap();
        let mut code =
            aiida::orm::data::installed_code(&computer, "/bin/bash", "bash", Some("core.arithmetic.add")).unwrap();
        code.store(&storage).unwrap();
        LocalSetup { profile, storage, work, computer, code }
    }
}

/// Authentication parameters of a `core.local` computer that runs commands without a login shell.
pub fn no_login_shell() -> serde_json::Map<String, serde_json::Value> {
    let mut params = serde_json::Map::new();
    params.insert("use_login_shell".into(), serde_json::Value::Bool(false));
    params
}
