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
