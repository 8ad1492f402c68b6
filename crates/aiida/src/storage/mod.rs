//! `core.psql_dos` storage: aiida-core's PostgreSQL schema plus a disk-objectstore repository.

mod pg;
mod repository;
mod schema;

use std::path::PathBuf;

pub(crate) use pg::{Db, Params, params};
pub use repository::Repository;
pub use schema::SCHEMA_HEAD;
use serde_json::Value;

use crate::config::{ConfigError, Profile, PsqlDosConfig};

/// The setting that ties the database to its repository container.
const REPOSITORY_UUID_KEY: &str = "repository|uuid";

const SET_SETTING: &str = "INSERT INTO db_dbsetting (key, val, description, time) VALUES ($1, $2, $3, now())
     ON CONFLICT (key) DO UPDATE SET val = EXCLUDED.val, time = EXCLUDED.time";

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database could not be reached or refused us.
    #[error(
        "cannot connect to PostgreSQL {target}: {}; check the profile's database settings (`verdi profile show`)",
        describe(source)
    )]
    Connect {
        /// Database, host, port and role.
        target: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed.
    #[error("query failed ({sql}): {}", describe(source))]
    Query {
        /// The statement, abbreviated.
        sql: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database holds no AiiDA schema.
    #[error("the database of profile `{0}` is not initialised; run `verdi -p {0} storage migrate`")]
    NotInitialised(String),
    /// The database holds a schema version we do not know.
    #[error("the database schema is at `{found}`, but this engine reads only `{SCHEMA_HEAD}` (aiida-core 2.x)")]
    SchemaVersion {
        /// The `alembic_version` found.
        found: String,
    },
    /// The repository container is not the one the database was made with.
    #[error(
        "the repository at {path} (container `{found}`) does not belong to this database (it expects `{expected}`)"
    )]
    RepositoryMismatch {
        /// The container.
        path: PathBuf,
        /// Its id.
        found: String,
        /// The id the database records.
        expected: String,
    },
    /// The repository container the database expects is not there.
    #[error(
        "the repository container at {path} is missing, but the database expects container `{expected}`; \
         restore it or fix the profile's repository_uri"
    )]
    RepositoryMissing {
        /// Where it should be.
        path: PathBuf,
        /// The id the database records.
        expected: String,
    },
    /// The repository container is damaged.
    #[error("the repository container at {path} is invalid: {reason}")]
    Repository {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `packs.idx` could not be created.
    #[error("cannot create the repository's pack index: {0}")]
    PackIndex(String),
    /// An object is not in the repository.
    #[error("object `{0}` is not in the repository")]
    MissingObject(String),
    /// A file-system error.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The profile's configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A key naming the schema this engine creates: it changes whenever the schema does, so template
/// databases built from it are rebuilt.
pub fn schema_key() -> String {
    let hash = schema::CREATE
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("aiida-core.psql_dos-{SCHEMA_HEAD}-{hash:016x}")
}

/// Creates aiida's schema in the (empty) database of `config`, without a repository or users: what
/// a template database for test profiles holds. A database at the current schema is left as it is.
pub fn migrate_database(config: &PsqlDosConfig) -> Result<(), StorageError> {
    let db = Db::connect(config)?;
    let exists = db.query("SELECT to_regclass('alembic_version') IS NOT NULL", params![])?;
    if !exists[0].get::<_, bool>(0) {
        db.transaction(|tx| tx.batch(schema::CREATE))?;
    }
    Ok(())
}

/// Drops the database of `config` (connecting to the server's `postgres` database with the same
/// role). The repository folder is the caller's to remove.
pub fn drop_database(config: &PsqlDosConfig) -> Result<(), StorageError> {
    let maintenance = PsqlDosConfig { database_name: "postgres".to_owned(), ..config.clone() };
    let db = Db::connect(&maintenance)?;
    let name = config.database_name.replace('"', "\"\"");
    db.batch(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
}

/// The driver's error with the server's own message (its `Display` says only "db error").
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            text
        }
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

impl StorageError {
    /// Whether a unique constraint refused the statement (e.g. a duplicate label).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StorageError::Query { source, .. } if source.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

/// A profile's storage, open.
#[derive(Debug)]
pub struct Storage {
    db: Db,
    repository: Repository,
    profile: Profile,
}

/// Counts shown by `verdi storage info`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StorageInfo {
    /// Where the data lives (database, host, role).
    pub database: String,
    /// The schema revision.
    pub schema: String,
    /// The repository folder.
    pub repository: PathBuf,
    /// Its container id.
    pub container_id: String,
    /// Rows per entity: users, computers, nodes, links, groups, comments, logs.
    pub counts: Vec<(String, i64)>,
    /// Objects in the repository.
    pub objects: u64,
    /// Their total size in bytes.
    pub object_bytes: u64,
}

impl Storage {
    /// Opens the storage of `profile`: the schema must be at `main_0002` and the repository must
    /// be the one the database was made with.
    pub fn open(profile: &Profile) -> Result<Storage, StorageError> {
        let storage = Storage::connect(profile)?;
        match storage.schema_version()? {
            None => return Err(StorageError::NotInitialised(profile.name().to_owned())),
            Some(v) if v != SCHEMA_HEAD => return Err(StorageError::SchemaVersion { found: v }),
            Some(_) => {}
        }
        storage.check_repository()?;
        Ok(storage)
    }

    /// Opens the storage of `profile`, first creating what is missing: the schema in an empty
    /// database, the repository container, and the profile's default user.
    pub fn initialise(profile: &Profile) -> Result<Storage, StorageError> {
        let storage = Storage::connect(profile)?;
        storage.migrate()?;
        Ok(storage)
    }

    fn connect(profile: &Profile) -> Result<Storage, StorageError> {
        let config: PsqlDosConfig = profile.psql_dos()?;
        let db = Db::connect(&config)?;
        Ok(Storage { db, repository: Repository::new(&config.repository_path()), profile: profile.clone() })
    }

    /// Brings the storage to the current schema: creates it in an empty database; a database at
    /// another revision is an error. Creates the repository and the default user when missing.
    pub fn migrate(&self) -> Result<(), StorageError> {
        match self.schema_version()? {
            None => self.db.transaction(|tx| tx.batch(schema::CREATE))?,
            Some(v) if v != SCHEMA_HEAD => return Err(StorageError::SchemaVersion { found: v }),
            Some(_) => {}
        }
        if !self.repository.exists() {
            // A database that already names its container must not be cut off from it.
            if let Some(Value::String(expected)) = self.setting(REPOSITORY_UUID_KEY)? {
                return Err(StorageError::RepositoryMissing { path: self.repository.path().to_owned(), expected });
            }
            let id = self.repository.create()?;
            self.set_setting(REPOSITORY_UUID_KEY, Value::String(id), "Repository UUID")?;
        }
        self.check_repository()?;
        self.ensure_default_user()
    }

    fn schema_version(&self) -> Result<Option<String>, StorageError> {
        let exists = self.db.query("SELECT to_regclass('alembic_version') IS NOT NULL", params![])?;
        if !exists[0].get::<_, bool>(0) {
            return Ok(None);
        }
        let rows = self.db.query("SELECT version_num FROM alembic_version", params![])?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn check_repository(&self) -> Result<(), StorageError> {
        let expected = self.setting(REPOSITORY_UUID_KEY)?;
        if !self.repository.exists() {
            let expected =
                expected.and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| "(none recorded)".into());
            return Err(StorageError::RepositoryMissing { path: self.repository.path().to_owned(), expected });
        }
        let found = self.repository.container_id()?;
        match expected {
            Some(Value::String(expected)) if expected != found => {
                Err(StorageError::RepositoryMismatch { path: self.repository.path().to_owned(), found, expected })
            }
            _ => Ok(()),
        }
    }

    /// A value from `db_dbsetting`.
    pub fn setting(&self, key: &str) -> Result<Option<Value>, StorageError> {
        let rows = self.db.query("SELECT val FROM db_dbsetting WHERE key = $1", params![key.to_owned()])?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    /// Sets a value in `db_dbsetting`.
    pub fn set_setting(&self, key: &str, value: Value, description: &str) -> Result<(), StorageError> {
        self.db.query(SET_SETTING, params![key.to_owned(), value, description.to_owned()])?;
        Ok(())
    }

    fn ensure_default_user(&self) -> Result<(), StorageError> {
        match self.profile.default_user_email() {
            Some(email) => self.ensure_user(email),
            None => Ok(()),
        }
    }

    /// Makes sure a user with `email` exists (with empty names if it is new).
    pub(crate) fn ensure_user(&self, email: &str) -> Result<(), StorageError> {
        self.db.query(
            "INSERT INTO db_dbuser (email, first_name, last_name, institution) VALUES ($1, '', '', '')
             ON CONFLICT (email) DO NOTHING",
            params![email.to_owned()],
        )?;
        Ok(())
    }

    /// Counts of everything stored.
    pub fn info(&self) -> Result<StorageInfo, StorageError> {
        let mut counts = Vec::new();
        for (entity, table) in [
            ("users", "db_dbuser"),
            ("computers", "db_dbcomputer"),
            ("nodes", "db_dbnode"),
            ("links", "db_dblink"),
            ("groups", "db_dbgroup"),
            ("comments", "db_dbcomment"),
            ("logs", "db_dblog"),
        ] {
            let n: i64 = self.db.query(&format!("SELECT count(*) FROM {table}"), params![])?[0].get(0);
            counts.push((entity.to_owned(), n));
        }
        let (objects, object_bytes) = self.repository.count_and_size()?;
        Ok(StorageInfo {
            database: self.db.target().to_owned(),
            schema: self.schema_version()?.unwrap_or_default(),
            repository: self.repository.path().to_owned(),
            container_id: self.repository.container_id()?,
            counts,
            objects,
            object_bytes,
        })
    }

    /// Empties the storage as aiida's clean does: every table but `alembic_version` and
    /// `db_dbsetting` is emptied, the repository container is replaced by a new one (its id
    /// recorded), and the default user is created again.
    pub fn clean(&self) -> Result<(), StorageError> {
        // DELETE costs little on the few rows tests store, unlike TRUNCATE's new files per table;
        // the foreign keys are deferred, so the order does not matter. Ids restart at 1.
        let delete: String = schema::DATA_TABLES
            .iter()
            .map(|t| format!("DELETE FROM {t}; SELECT setval(pg_get_serial_sequence('{t}', 'id'), 1, false);"))
            .collect();
        // The new container is built first and put in place only after the database committed:
        // a failure on either side leaves the other as it was.
        let staged = self.repository.stage()?;
        let id = staged.id.clone();
        self.db.transaction(|tx| {
            tx.batch(&delete)?;
            tx.query(
                SET_SETTING,
                params![REPOSITORY_UUID_KEY.to_owned(), Value::String(id), "Repository UUID".to_owned()],
            )
        })?;
        self.repository.replace_with(staged)?;
        self.ensure_default_user()
    }

    /// The profile this storage belongs to.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The file repository.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }
}
