//! `postgres_cluster` and `config_psql_dos`: the run's PostgreSQL, and storage settings on it.

use std::sync::{Arc, Mutex};

use aiida::config::PsqlDosConfig;
use testpg::{Server, TestDatabase};

use crate::error::FixtureError;
use crate::profile::{ScratchDir, aiida_template, psql_dos, random_hex, scratch_dir};

/// The run's temporary PostgreSQL (shared by all tests of the run, stopped when it ends).
#[derive(Debug, Clone)]
pub struct PostgresCluster {
    server: Arc<Server>,
}

/// Connection settings of a database made by [`PostgresCluster::create_database`], with
/// aiida's key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `postgresql_psycopg`.
    pub database_engine: String,
    /// Host (or Unix socket folder).
    pub database_hostname: String,
    /// Port.
    pub database_port: u16,
    /// Role.
    pub database_username: String,
    /// Password.
    pub database_password: String,
    /// Database.
    pub database_name: String,
}

impl PostgresCluster {
    /// The run's server, started on first use.
    pub fn shared() -> Result<PostgresCluster, FixtureError> {
        Ok(PostgresCluster { server: Server::shared()? })
    }

    /// The underlying server.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Creates a database owned by `user` (created with `CREATEDB` and `password` if new), as
    /// aiida's `create_database`: defaults are a random name, user `guest`, password `guest`.
    /// Databases made here live until the run ends.
    pub fn create_database(
        &self,
        name: Option<&str>,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<DatabaseConfig, FixtureError> {
        let name = name.map_or_else(|| format!("{}x_{}", self.server.prefix(), random_hex(16)), str::to_owned);
        let (user, password) = (user.unwrap_or("guest"), password.unwrap_or("guest"));
        let admin = self.server.admin();
        let quote = |s: &str| s.replace('\'', "''");
        let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        // A random dollar-quote tag: no user-given value can end the block. CREATE DATABASE
        // cannot run in the implicit transaction of a multi-statement query, so it comes apart.
        let tag = format!("$tag_{}$", random_hex(8));
        self.server.execute(&format!(
            "DO {tag} BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{u}') THEN
                 CREATE ROLE {ui} LOGIN CREATEDB PASSWORD '{p}'; END IF; END {tag}",
            u = quote(user),
            ui = ident(user),
            p = quote(password),
        ))?;
        self.server.execute(&format!("CREATE DATABASE {} OWNER {}", ident(&name), ident(user)))?;
        Ok(DatabaseConfig {
            database_engine: "postgresql_psycopg".to_owned(),
            database_hostname: admin.host.clone(),
            database_port: admin.port,
            database_username: user.to_owned(),
            database_password: password.to_owned(),
            database_name: name,
        })
    }
}

/// A factory of `core.psql_dos` storage settings: each is a fresh database cloned from the
/// migrated aiida template, and a fresh repository folder. Both go when the factory drops.
#[derive(Debug, Clone)]
pub struct ConfigPsqlDos {
    kept: Arc<Mutex<Vec<(TestDatabase, ScratchDir)>>>,
}

impl ConfigPsqlDos {
    pub(crate) fn new() -> ConfigPsqlDos {
        ConfigPsqlDos { kept: Arc::new(Mutex::new(Vec::new())) }
    }

    /// New storage settings (database with aiida's schema, empty repository folder). They are
    /// valid as long as this factory (or a clone of it) lives: the database and folder go with it.
    pub fn create(&self) -> Result<PsqlDosConfig, FixtureError> {
        let server = Server::shared()?;
        let database = server.database(&aiida_template())?;
        let repository = scratch_dir(&server, "repository")?;
        let config = psql_dos(database.connection(), repository.path());
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).push((database, repository));
        Ok(config)
    }
}
