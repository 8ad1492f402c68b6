use serde_json::{Map, Value};
use uuid::Uuid;

use super::{OrmError, User};
use crate::runtime::block_on;
use crate::storage::Storage;

/// A computer: where calculation jobs run, reached through a transport, managed by a scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct Computer {
    pk: Option<i32>,
    uuid: Uuid,
    label: String,
    hostname: String,
    description: String,
    transport_type: String,
    scheduler_type: String,
    metadata: Map<String, Value>,
}

/// A user's settings for a computer (the transport's parameters), made by [`Computer::configure`].
#[derive(Debug, Clone, PartialEq)]
pub struct AuthInfo {
    pk: i32,
    user: i32,
    computer: i32,
    auth_params: Map<String, Value>,
    enabled: bool,
}

impl AuthInfo {
    /// The transport's parameters (e.g. `safe_interval`, `use_login_shell`).
    pub fn auth_params(&self) -> &Map<String, Value> {
        &self.auth_params
    }

    /// Whether the computer is enabled for this user.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The user's pk.
    pub fn user_pk(&self) -> i32 {
        self.user
    }

    /// The computer's pk.
    pub fn computer_pk(&self) -> i32 {
        self.computer
    }

    /// The database id.
    pub fn pk(&self) -> i32 {
        self.pk
    }
}

impl Computer {
    /// A new, unstored computer. `transport_type` and `scheduler_type` are entry-point names
    /// (e.g. `core.local`, `core.direct`).
    pub fn new(
        label: impl Into<String>,
        hostname: impl Into<String>,
        transport_type: impl Into<String>,
        scheduler_type: impl Into<String>,
    ) -> Computer {
        Computer {
            pk: None,
            uuid: Uuid::new_v4(),
            label: label.into(),
            hostname: hostname.into(),
            description: String::new(),
            transport_type: transport_type.into(),
            scheduler_type: scheduler_type.into(),
            metadata: Map::new(),
        }
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Computer {
        self.description = description.into();
        self
    }

    /// Sets the working folder on the computer (`{username}` is replaced by the remote user).
    pub fn with_workdir(self, workdir: impl Into<String>) -> Computer {
        self.with_metadata("workdir", Value::String(workdir.into()))
    }

    /// Sets the shortest interval between two scheduler polls, in seconds.
    pub fn with_minimum_poll_interval(self, seconds: f64) -> Computer {
        self.with_metadata("minimum_scheduler_poll_interval", seconds.into())
    }

    /// Sets a metadata entry (e.g. `mpirun_command`, `default_mpiprocs_per_machine`).
    pub fn with_metadata(mut self, key: impl Into<String>, value: Value) -> Computer {
        self.metadata.insert(key.into(), value);
        self
    }

    /// The database id, once stored.
    pub fn pk(&self) -> Option<i32> {
        self.pk
    }

    /// The UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The label (unique in a profile).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The host name.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The transport's entry-point name.
    pub fn transport_type(&self) -> &str {
        &self.transport_type
    }

    /// The scheduler's entry-point name.
    pub fn scheduler_type(&self) -> &str {
        &self.scheduler_type
    }

    /// The metadata.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// The working folder, if set.
    pub fn workdir(&self) -> Option<&str> {
        self.metadata.get("workdir").and_then(Value::as_str)
    }

    /// Stores the computer; a label already in use is an error and changes nothing.
    pub fn store(&mut self, storage: &Storage) -> Result<&mut Computer, OrmError> {
        block_on(self.store_async(storage))
    }

    /// [`Computer::store`], async.
    pub async fn store_async(&mut self, storage: &Storage) -> Result<&mut Computer, OrmError> {
        if self.pk.is_some() {
            return Ok(self);
        }
        let metadata = Value::Object(self.metadata.clone());
        self.pk = Some(
            super::insert_labelled(
                storage,
                "INSERT INTO db_dbcomputer (uuid, label, hostname, description, scheduler_type, transport_type, metadata)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &self.uuid,
                    &self.label,
                    &self.hostname,
                    &self.description,
                    &self.scheduler_type,
                    &self.transport_type,
                    &metadata,
                ],
                "computer",
                &self.label,
            )
            .await?,
        );
        Ok(self)
    }

    fn from_row(row: &tokio_postgres::Row) -> Computer {
        let metadata = super::object(row.get("metadata"));
        Computer {
            pk: Some(row.get("id")),
            uuid: row.get("uuid"),
            label: row.get("label"),
            hostname: row.get("hostname"),
            description: row.get("description"),
            transport_type: row.get("transport_type"),
            scheduler_type: row.get("scheduler_type"),
            metadata,
        }
    }

    /// The computer with `label`.
    pub fn load_label(storage: &Storage, label: &str) -> Result<Computer, OrmError> {
        block_on(Computer::load_label_async(storage, label))
    }

    /// [`Computer::load_label`], async.
    pub async fn load_label_async(storage: &Storage, label: &str) -> Result<Computer, OrmError> {
        let rows = storage.db().query("SELECT * FROM db_dbcomputer WHERE label = $1", &[&label]).await?;
        rows.first()
            .map(Computer::from_row)
            .ok_or(OrmError::NotFound { entity: "computer", id: format!("label `{label}`") })
    }

    /// The computer `pk`.
    pub fn load(storage: &Storage, pk: i32) -> Result<Computer, OrmError> {
        block_on(Computer::load_async(storage, pk))
    }

    /// [`Computer::load`], async.
    pub async fn load_async(storage: &Storage, pk: i32) -> Result<Computer, OrmError> {
        let rows = storage.db().query("SELECT * FROM db_dbcomputer WHERE id = $1", &[&pk]).await?;
        rows.first().map(Computer::from_row).ok_or(OrmError::NotFound { entity: "computer", id: format!("pk {pk}") })
    }

    /// All computers, by pk.
    pub fn list(storage: &Storage) -> Result<Vec<Computer>, OrmError> {
        block_on(Computer::list_async(storage))
    }

    /// [`Computer::list`], async.
    pub async fn list_async(storage: &Storage) -> Result<Vec<Computer>, OrmError> {
        let rows = storage.db().query("SELECT * FROM db_dbcomputer ORDER BY id", &[]).await?;
        Ok(rows.iter().map(Computer::from_row).collect())
    }

    fn stored_pk(&self) -> Result<i32, OrmError> {
        self.pk.ok_or(OrmError::NotStored)
    }

    /// How many nodes belong to this computer (calculations, codes, remote folders).
    pub fn node_count(&self, storage: &Storage) -> Result<i64, OrmError> {
        block_on(self.node_count_async(storage))
    }

    /// [`Computer::node_count`], async.
    pub async fn node_count_async(&self, storage: &Storage) -> Result<i64, OrmError> {
        let pk = self.stored_pk()?;
        let rows = storage.db().query("SELECT count(*) FROM db_dbnode WHERE dbcomputer_id = $1", &[&pk]).await?;
        Ok(rows[0].get(0))
    }

    /// Deletes the computer and its users' authinfos. A computer that nodes belong to is not
    /// deleted ([`OrmError::InUse`]): its nodes must go first, as in aiida-core.
    pub fn delete(&self, storage: &Storage) -> Result<(), OrmError> {
        block_on(self.delete_async(storage))
    }

    /// [`Computer::delete`], async.
    pub async fn delete_async(&self, storage: &Storage) -> Result<(), OrmError> {
        let pk = self.stored_pk()?;
        // One statement: nodes stored meanwhile make it delete nothing rather than fail at commit.
        let rows = storage
            .db()
            .query(
                "WITH used AS (SELECT count(*) AS n FROM db_dbnode WHERE dbcomputer_id = $1),
                 deleted AS (DELETE FROM db_dbcomputer WHERE id = $1 AND (SELECT n FROM used) = 0 RETURNING id)
                 SELECT (SELECT n FROM used), (SELECT count(*) FROM deleted)",
                &[&pk],
            )
            .await?;
        let (used, deleted): (i64, i64) = (rows[0].get(0), rows[0].get(1));
        match (used, deleted) {
            (0, 0) => Err(OrmError::NotFound { entity: "computer", id: format!("pk {pk}") }),
            (0, _) => Ok(()),
            (nodes, _) => Err(OrmError::InUse { entity: "computer", label: self.label.clone(), nodes }),
        }
    }

    /// Configures the computer for `user` with the transport's parameters (creating or replacing
    /// the user's authinfo, enabled).
    pub fn configure(
        &self,
        storage: &Storage,
        user: &User,
        auth_params: Map<String, Value>,
    ) -> Result<AuthInfo, OrmError> {
        block_on(self.configure_async(storage, user, auth_params))
    }

    /// [`Computer::configure`], async.
    pub async fn configure_async(
        &self,
        storage: &Storage,
        user: &User,
        auth_params: Map<String, Value>,
    ) -> Result<AuthInfo, OrmError> {
        let (computer, params) = (self.stored_pk()?, Value::Object(auth_params));
        let rows = storage
            .db()
            .query(
                "INSERT INTO db_dbauthinfo (aiidauser_id, dbcomputer_id, metadata, auth_params, enabled)
                 VALUES ($1, $2, '{}'::jsonb, $3, true)
                 ON CONFLICT (aiidauser_id, dbcomputer_id) DO UPDATE SET auth_params = EXCLUDED.auth_params, enabled = true
                 RETURNING id",
                &[&user.pk(), &computer, &params],
            )
            .await?;
        let auth_params = super::object(Some(params));
        Ok(AuthInfo { pk: rows[0].get(0), user: user.pk(), computer, auth_params, enabled: true })
    }

    /// The authinfo of `user` for this computer.
    pub fn authinfo(&self, storage: &Storage, user: &User) -> Result<AuthInfo, OrmError> {
        block_on(self.authinfo_async(storage, user))
    }

    /// [`Computer::authinfo`], async.
    pub async fn authinfo_async(&self, storage: &Storage, user: &User) -> Result<AuthInfo, OrmError> {
        let computer = self.stored_pk()?;
        let rows = storage
            .db()
            .query(
                "SELECT id, auth_params, enabled FROM db_dbauthinfo WHERE aiidauser_id = $1 AND dbcomputer_id = $2",
                &[&user.pk(), &computer],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| OrmError::NotConfigured { computer: self.label.clone(), user: user.email().to_owned() })?;
        let auth_params = super::object(row.get(1));
        Ok(AuthInfo { pk: row.get(0), user: user.pk(), computer, auth_params, enabled: row.get(2) })
    }

    /// Whether `user` has configured this computer.
    pub fn is_configured(&self, storage: &Storage, user: &User) -> Result<bool, OrmError> {
        block_on(self.is_configured_async(storage, user))
    }

    /// [`Computer::is_configured`], async.
    pub async fn is_configured_async(&self, storage: &Storage, user: &User) -> Result<bool, OrmError> {
        match self.authinfo_async(storage, user).await {
            Ok(_) => Ok(true),
            Err(OrmError::NotConfigured { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
