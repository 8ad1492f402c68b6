//! `core.psql_dos` storage: aiida-core's PostgreSQL schema plus a disk-objectstore repository.

mod pg;
mod repository;
mod schema;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use pg::literal;
pub(crate) use pg::{Args, Db, Params, args};
pub use repository::Repository;
pub use schema::SCHEMA_HEAD;
use serde_json::Value;

use crate::config::{ConfigError, Profile, PsqlDosConfig};
use crate::runtime::{self, block_on};

/// The setting that ties the database to its repository container.
const REPOSITORY_UUID_KEY: &str = "repository|uuid";

const SET_SETTING: &str = "INSERT INTO db_dbsetting (key, val, description, time) VALUES ($1, $2, $3, now())
     ON CONFLICT (key) DO UPDATE SET val = EXCLUDED.val, time = EXCLUDED.time";

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database could not be reached or refused us.
    #[error("cannot connect to PostgreSQL {target}; check the profile's database settings (`verdi profile show`)")]
    Connect {
        /// Database, host, port and role.
        target: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The pool of connections failed (not the server).
    #[error("the pool of database connections failed: {0}")]
    Pool(String),
    /// A statement failed.
    #[error("the query `{sql}` failed")]
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
    /// A storage was asked to serve a profile with other storage settings.
    #[error("profile `{profile}` names another database or repository than this open storage")]
    OtherStorage {
        /// The profile.
        profile: String,
    },
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
    block_on(async {
        let db = Db::connect(config).await?;
        let exists = db.query("SELECT to_regclass('alembic_version') IS NOT NULL", &[]).await?;
        if !exists[0].get::<_, bool>(0) {
            let tx = db.begin().await?;
            tx.batch(schema::CREATE).await?;
            tx.commit().await?;
        }
        Ok(())
    })
}

/// Drops the database of `config` (connecting to the server's `postgres` database with the same
/// role). The repository folder is the caller's to remove.
pub fn drop_database(config: &PsqlDosConfig) -> Result<(), StorageError> {
    let maintenance = PsqlDosConfig { database_name: "postgres".to_owned(), ..config.clone() };
    let name = config.database_name.replace('"', "\"\"");
    block_on(async {
        let db = Db::connect(&maintenance).await?;
        db.batch(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
    })
}

/// Empties every data table (and, with `settings`, `db_dbsetting`) and restarts its ids at 1, in
/// one batch. DELETE costs little on the few rows tests store, unlike TRUNCATE's new files per
/// table; the foreign keys are deferred, so the order does not matter.
fn empty_sql(settings: bool) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; 2] = [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    SQL[usize::from(settings)].get_or_init(|| {
        let settings: &[&str] = if settings { &["db_dbsetting"] } else { &[] };
        let aiidas: String = schema::DATA_TABLES
            .iter()
            .chain(settings)
            .map(|t| format!("DELETE FROM {t}; SELECT setval(pg_get_serial_sequence('{t}', 'id'), 1, false);"))
            .collect();
        // Our own tables beside aiida-core's (the daemon's queue) name its processes: emptied too.
        format!(
            "{aiidas} DO $$ DECLARE t text; BEGIN
                 FOR t IN SELECT tablename FROM pg_tables
                          WHERE schemaname = current_schema() AND tablename LIKE 'aiida\\_rs\\_%' LOOP
                     EXECUTE format('DELETE FROM %I', t);
                 END LOOP;
             END $$;"
        )
    })
}

/// Counts the sessions connected to the current database from elsewhere than this storage's pool.
/// (A storage's own pool names its sessions alike: see `pg::application_name`.)
const OTHER_SESSIONS: &str = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
     AND application_name <> current_setting('application_name');";

/// A statement setting `key` of `db_dbsetting` to the JSON string `value`.
fn set_setting_sql(key: &str, value: &str, description: &str) -> String {
    format!(
        "INSERT INTO db_dbsetting (key, val, description, time) VALUES ({}, {}::jsonb, {}, now())
         ON CONFLICT (key) DO UPDATE SET val = EXCLUDED.val, time = EXCLUDED.time;",
        literal(key),
        literal(&Value::String(value.to_owned()).to_string()),
        literal(description)
    )
}

impl StorageError {
    /// Whether a unique constraint refused the statement (e.g. a duplicate label).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StorageError::Query { source, .. } if source.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

/// A profile's storage, open: its database, through a pool of connections, and its file
/// repository.
///
/// Cloning a storage is cheap and shares the pool: give each task or thread a clone. Every
/// operation has an async form (`*_async`) for code on a Tokio runtime, such as the engine's; the
/// plain form blocks on it, from a plain thread or inside a caller's runtime alike.
#[derive(Debug, Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    repository: Repository,
    profile: Profile,
    /// The default user's id, read at open, so that storing a node without files is one round trip
    /// (a clean forgets it).
    default_user: Mutex<Option<i32>>,
}

/// What [`Storage::probe`] reads in one round trip.
struct Probe {
    version: String,
    repository: Option<String>,
    default_user: Option<i32>,
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
        block_on(Storage::open_async(profile))
    }

    /// [`Storage::open`], async.
    pub async fn open_async(profile: &Profile) -> Result<Storage, StorageError> {
        let storage = Storage::connect(profile).await?;
        let probe = storage.probe().await?.ok_or_else(|| StorageError::NotInitialised(profile.name().to_owned()))?;
        if probe.version != SCHEMA_HEAD {
            return Err(StorageError::SchemaVersion { found: probe.version });
        }
        storage.check_repository_against(probe.repository)?;
        storage.remember_default_user(probe.default_user);
        tracing::debug!(profile = profile.name(), "storage opened");
        Ok(storage)
    }

    /// Opens the storage of `profile`, first creating what is missing: the schema in an empty
    /// database, the repository container, and the profile's default user.
    pub fn initialise(profile: &Profile) -> Result<Storage, StorageError> {
        block_on(Storage::initialise_async(profile))
    }

    /// [`Storage::initialise`], async.
    pub async fn initialise_async(profile: &Profile) -> Result<Storage, StorageError> {
        let storage = Storage::connect(profile).await?;
        storage.migrate_async().await?;
        Ok(storage)
    }

    async fn connect(profile: &Profile) -> Result<Storage, StorageError> {
        let config: PsqlDosConfig = profile.psql_dos()?;
        let db = Db::connect(&config).await?;
        Ok(Storage::from_parts(db, Repository::new(&config.repository_path()), profile.clone()))
    }

    fn from_parts(db: Db, repository: Repository, profile: Profile) -> Storage {
        Storage { inner: Arc::new(Inner { db, repository, profile, default_user: Mutex::new(None) }) }
    }

    /// This open storage, for `profile`, which must name the same database and repository: what a
    /// test harness does to hand a cleaned storage to the next test without connecting anew.
    pub fn with_profile(self, profile: &Profile) -> Result<Storage, StorageError> {
        if profile.psql_dos()? != self.inner.profile.psql_dos()? {
            return Err(StorageError::OtherStorage { profile: profile.name().to_owned() });
        }
        Ok(Storage::from_parts(self.inner.db.clone(), self.inner.repository.clone(), profile.clone()))
    }

    /// Brings the storage to the current schema: creates it in an empty database; a database at
    /// another revision is an error. Creates the repository and the default user when missing.
    pub fn migrate(&self) -> Result<(), StorageError> {
        block_on(self.migrate_async())
    }

    /// [`Storage::migrate`], async.
    pub async fn migrate_async(&self) -> Result<(), StorageError> {
        let recorded = match self.probe().await? {
            None => {
                tracing::info!(profile = self.profile().name(), schema = SCHEMA_HEAD, "creating the schema");
                let tx = self.db().begin().await?;
                tx.batch(schema::CREATE).await?;
                tx.commit().await?;
                None
            }
            Some(probe) if probe.version != SCHEMA_HEAD => {
                return Err(StorageError::SchemaVersion { found: probe.version });
            }
            Some(probe) => probe.repository,
        };
        let repository = self.repository();
        if repository.exists() {
            self.check_repository_against(recorded)?;
            return self.with_default_user("").await;
        }
        // A database that already names its container must not be cut off from it.
        if let Some(expected) = recorded {
            return Err(StorageError::RepositoryMissing { path: repository.path().to_owned(), expected });
        }
        let id = repository.create()?;
        tracing::info!(path = %repository.path().display(), container = id, "created the repository");
        self.with_default_user(&set_setting_sql(REPOSITORY_UUID_KEY, &id, "Repository UUID")).await
    }

    /// The schema version, the recorded repository container and the default user's id, in one
    /// round trip; `None` when the database holds no schema.
    async fn probe(&self) -> Result<Option<Probe>, StorageError> {
        let user = match self.profile().default_user_email() {
            Some(email) => format!("(SELECT id FROM db_dbuser WHERE email = {})", literal(email)),
            None => "NULL".to_owned(),
        };
        let sql = format!(
            "SELECT (SELECT version_num FROM alembic_version LIMIT 1),
                    (SELECT val #>> '{{}}' FROM db_dbsetting WHERE key = {}), {user}",
            literal(REPOSITORY_UUID_KEY)
        );
        match self.db().simple(&sql).await {
            Ok(rows) => {
                let mut values = rows.into_iter().next().unwrap_or_default().into_iter();
                Ok(Some(Probe {
                    version: values.next().flatten().unwrap_or_default(),
                    repository: values.next().flatten(),
                    default_user: values.next().flatten().and_then(|id| id.parse().ok()),
                }))
            }
            Err(StorageError::Query { source, .. })
                if source.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn check_repository_against(&self, expected: Option<String>) -> Result<(), StorageError> {
        let repository = self.repository();
        if !repository.exists() {
            let expected = expected.unwrap_or_else(|| "(none recorded)".into());
            return Err(StorageError::RepositoryMissing { path: repository.path().to_owned(), expected });
        }
        let found = repository.container_id()?;
        match expected {
            Some(expected) if expected != found => {
                Err(StorageError::RepositoryMismatch { path: repository.path().to_owned(), found, expected })
            }
            _ => Ok(()),
        }
    }

    /// A value from `db_dbsetting`.
    pub fn setting(&self, key: &str) -> Result<Option<Value>, StorageError> {
        block_on(self.setting_async(key))
    }

    /// [`Storage::setting`], async.
    pub async fn setting_async(&self, key: &str) -> Result<Option<Value>, StorageError> {
        let rows = self.db().query("SELECT val FROM db_dbsetting WHERE key = $1", &[&key]).await?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    /// Sets a value in `db_dbsetting`.
    pub fn set_setting(&self, key: &str, value: Value, description: &str) -> Result<(), StorageError> {
        block_on(self.set_setting_async(key, value, description))
    }

    /// [`Storage::set_setting`], async.
    pub async fn set_setting_async(&self, key: &str, value: Value, description: &str) -> Result<(), StorageError> {
        self.db().query(SET_SETTING, &[&key, &value, &description]).await?;
        Ok(())
    }

    fn remember_default_user(&self, id: Option<i32>) {
        *self.inner.default_user.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }

    /// Runs `sql` (statements without results, may be empty) and makes sure the default user
    /// exists, in one round trip and one transaction; remembers the default user's id.
    async fn with_default_user(&self, sql: &str) -> Result<(), StorageError> {
        let Some(email) = self.profile().default_user_email() else {
            return if sql.is_empty() { Ok(()) } else { self.db().batch(sql).await };
        };
        let email = literal(email);
        // The last statement's row: those before it may return rows too (setval).
        let id = self
            .db()
            .simple_last(&format!(
                "{sql} INSERT INTO db_dbuser (email, first_name, last_name, institution) VALUES ({email}, '', '', '')
                 ON CONFLICT (email) DO NOTHING; SELECT id FROM db_dbuser WHERE email = {email}"
            ))
            .await?;
        self.remember_default_user(id.and_then(|id| id.parse().ok()));
        Ok(())
    }

    /// The id of the profile's default user (created if missing); `None` for a profile without one.
    pub(crate) async fn default_user_id(&self) -> Result<Option<i32>, StorageError> {
        if let Some(id) = *self.inner.default_user.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(Some(id));
        }
        self.with_default_user("").await?;
        Ok(*self.inner.default_user.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes sure a user with `email` exists (with empty names if it is new).
    pub(crate) async fn ensure_user(&self, email: &str) -> Result<(), StorageError> {
        self.db()
            .query(
                "INSERT INTO db_dbuser (email, first_name, last_name, institution) VALUES ($1, '', '', '')
                 ON CONFLICT (email) DO NOTHING",
                &[&email],
            )
            .await?;
        Ok(())
    }

    /// Counts of everything stored.
    pub fn info(&self) -> Result<StorageInfo, StorageError> {
        block_on(self.info_async())
    }

    /// [`Storage::info`], async.
    pub async fn info_async(&self) -> Result<StorageInfo, StorageError> {
        const ENTITIES: [(&str, &str); 7] = [
            ("users", "db_dbuser"),
            ("computers", "db_dbcomputer"),
            ("nodes", "db_dbnode"),
            ("links", "db_dblink"),
            ("groups", "db_dbgroup"),
            ("comments", "db_dbcomment"),
            ("logs", "db_dblog"),
        ];
        let counts: Vec<String> = ENTITIES.iter().map(|(_, table)| format!("(SELECT count(*) FROM {table})")).collect();
        let sql = format!("SELECT (SELECT version_num FROM alembic_version LIMIT 1), {}", counts.join(", "));
        let row = self.db().simple(&sql).await?.pop().unwrap_or_default();
        let mut values = row.into_iter().map(Option::unwrap_or_default);
        let schema = values.next().unwrap_or_default();
        let counts = ENTITIES.iter().zip(values).map(|((entity, _), n)| ((*entity).to_owned(), n.parse().unwrap_or(0)));
        let storage = self.clone();
        let (objects, object_bytes, container_id) = runtime::spawn_blocking(move || {
            let repository = storage.repository();
            let (objects, bytes) = repository.count_and_size()?;
            Ok::<_, StorageError>((objects, bytes, repository.container_id()?))
        })
        .await?;
        Ok(StorageInfo {
            database: self.db().target().to_owned(),
            schema,
            repository: self.repository().path().to_owned(),
            container_id,
            counts: counts.collect(),
            objects,
            object_bytes,
        })
    }

    /// Empties the storage as aiida's clean does: every table but `alembic_version` and
    /// `db_dbsetting` is emptied, the repository container is replaced by a new one (its id
    /// recorded), and the default user is created again.
    pub fn clean(&self) -> Result<(), StorageError> {
        block_on(self.clean_with(empty_sql(false)))
    }

    /// Empties the storage to what [`Storage::initialise`] makes of a freshly migrated database:
    /// like [`Storage::clean`], and the settings are emptied too. For a harness that hands a used
    /// storage to the next test.
    pub fn reset(&self) -> Result<(), StorageError> {
        block_on(self.clean_with(empty_sql(true)))
    }

    async fn clean_with(&self, empty: &str) -> Result<(), StorageError> {
        tracing::debug!(profile = self.profile().name(), "emptying the storage");
        // The new container is built first and put in place only after the database committed:
        // a failure on either side leaves the other as it was.
        let staged = self.repository().stage()?;
        let setting = set_setting_sql(REPOSITORY_UUID_KEY, &staged.id, "Repository UUID");
        self.with_default_user(&format!("{empty} {setting}")).await?;
        self.repository().replace_with(staged)
    }

    /// How many other sessions are connected to this storage's database (a second storage of the
    /// profile, a `verdi` process, ...).
    pub fn other_sessions(&self) -> Result<i64, StorageError> {
        let count = block_on(self.db().simple_last(OTHER_SESSIONS))?;
        Ok(count.and_then(|n| n.parse().ok()).unwrap_or(i64::MAX))
    }

    /// Empties the storage to what a freshly migrated database holds (no rows in any table but the
    /// schema version, ids restarting at 1, no repository recorded; the repository folder is left
    /// as it is) and, in the same round trip, says whether it is then fit to be set up anew for
    /// someone else: whether no other session is connected to its database.
    pub fn empty_for_reuse(&self) -> Result<bool, StorageError> {
        self.remember_default_user(None);
        let others = block_on(self.db().simple_last(&format!("{} {OTHER_SESSIONS}", empty_sql(true))))?;
        Ok(others.as_deref() == Some("0"))
    }

    /// The profile this storage belongs to.
    pub fn profile(&self) -> &Profile {
        &self.inner.profile
    }

    /// The file repository.
    pub fn repository(&self) -> &Repository {
        &self.inner.repository
    }

    /// Runs one or more statements without parameters on the profile's database, in one round
    /// trip; returns the rows of those that return any, as text. For tables of our own beside
    /// aiida-core's (the daemon's process queue): never change aiida-core's tables this way.
    pub async fn execute_own_async(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, StorageError> {
        self.db().simple(sql).await
    }

    /// The database's connection settings (for a connection of one's own, e.g. to `LISTEN`).
    pub fn database(&self) -> Result<PsqlDosConfig, StorageError> {
        Ok(self.profile().psql_dos()?)
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }
}
