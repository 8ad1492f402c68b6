use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Node, OrmError, User};
use crate::runtime::block_on;
use crate::storage::Storage;

/// A group of nodes: a label, a type string (`core` for user groups) and its members.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pk: Option<i32>,
    uuid: Uuid,
    label: String,
    type_string: String,
    description: String,
    time: DateTime<Utc>,
    extras: Map<String, Value>,
}

impl Group {
    /// A new, unstored user group (`type_string` `core`).
    pub fn new(label: impl Into<String>) -> Group {
        Group::with_type(label, "core")
    }

    /// A new, unstored group of the given type string.
    pub fn with_type(label: impl Into<String>, type_string: impl Into<String>) -> Group {
        Group {
            pk: None,
            uuid: Uuid::new_v4(),
            label: label.into(),
            type_string: type_string.into(),
            description: String::new(),
            time: super::now(),
            extras: Map::new(),
        }
    }

    /// The database id, once stored.
    pub fn pk(&self) -> Option<i32> {
        self.pk
    }

    /// The label (unique per type string).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The type string.
    pub fn type_string(&self) -> &str {
        &self.type_string
    }

    /// The UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// Stores the group, owned by the profile's default user; a label already used for this
    /// type is an error.
    pub fn store(&mut self, storage: &Storage) -> Result<&mut Group, OrmError> {
        block_on(self.store_async(storage))
    }

    /// [`Group::store`], async.
    pub async fn store_async(&mut self, storage: &Storage) -> Result<&mut Group, OrmError> {
        if self.pk.is_some() {
            return Ok(self);
        }
        let user = User::default_user_async(storage).await?;
        let extras = Value::Object(self.extras.clone());
        self.pk = Some(
            super::insert_labelled(
                storage,
                "INSERT INTO db_dbgroup (uuid, label, type_string, time, description, extras, user_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[&self.uuid, &self.label, &self.type_string, &self.time, &self.description, &extras, &user.pk()],
                "group",
                &self.label,
            )
            .await?,
        );
        Ok(self)
    }

    fn from_row(row: &tokio_postgres::Row) -> Group {
        let extras = super::object(row.get("extras"));
        Group {
            pk: Some(row.get("id")),
            uuid: row.get("uuid"),
            label: row.get("label"),
            type_string: row.get("type_string"),
            description: row.get("description"),
            time: row.get("time"),
            extras,
        }
    }

    /// The user group labelled `label`.
    pub fn load_label(storage: &Storage, label: &str) -> Result<Group, OrmError> {
        block_on(Group::load_label_async(storage, label))
    }

    /// [`Group::load_label`], async.
    pub async fn load_label_async(storage: &Storage, label: &str) -> Result<Group, OrmError> {
        let rows =
            storage.db().query("SELECT * FROM db_dbgroup WHERE label = $1 AND type_string = 'core'", &[&label]).await?;
        rows.first().map(Group::from_row).ok_or(OrmError::NotFound { entity: "group", id: format!("label `{label}`") })
    }

    /// All groups, by pk.
    pub fn list(storage: &Storage) -> Result<Vec<Group>, OrmError> {
        block_on(Group::list_async(storage))
    }

    /// [`Group::list`], async.
    pub async fn list_async(storage: &Storage) -> Result<Vec<Group>, OrmError> {
        let rows = storage.db().query("SELECT * FROM db_dbgroup ORDER BY id", &[]).await?;
        Ok(rows.iter().map(Group::from_row).collect())
    }

    /// Adds stored nodes (those already in the group are skipped).
    pub fn add_nodes(&self, storage: &Storage, nodes: &[&Node]) -> Result<(), OrmError> {
        block_on(self.add_nodes_async(storage, nodes))
    }

    /// [`Group::add_nodes`], async.
    pub async fn add_nodes_async(&self, storage: &Storage, nodes: &[&Node]) -> Result<(), OrmError> {
        let group = self.pk.ok_or(OrmError::NotStored)?;
        let pks = nodes.iter().map(|n| n.pk().ok_or(OrmError::NotStored)).collect::<Result<Vec<i32>, _>>()?;
        storage
            .db()
            .query(
                "INSERT INTO db_dbgroup_dbnodes (dbgroup_id, dbnode_id) SELECT $1, unnest($2::int[])
                 ON CONFLICT (dbgroup_id, dbnode_id) DO NOTHING",
                &[&group, &pks],
            )
            .await?;
        Ok(())
    }

    /// Removes nodes from the group.
    pub fn remove_nodes(&self, storage: &Storage, nodes: &[&Node]) -> Result<(), OrmError> {
        block_on(self.remove_nodes_async(storage, nodes))
    }

    /// [`Group::remove_nodes`], async.
    pub async fn remove_nodes_async(&self, storage: &Storage, nodes: &[&Node]) -> Result<(), OrmError> {
        let group = self.pk.ok_or(OrmError::NotStored)?;
        let pks: Vec<i32> = nodes.iter().filter_map(|n| n.pk()).collect();
        storage
            .db()
            .query("DELETE FROM db_dbgroup_dbnodes WHERE dbgroup_id = $1 AND dbnode_id = ANY($2)", &[&group, &pks])
            .await?;
        Ok(())
    }

    /// The members' pks, ascending.
    pub fn node_pks(&self, storage: &Storage) -> Result<Vec<i32>, OrmError> {
        block_on(self.node_pks_async(storage))
    }

    /// [`Group::node_pks`], async.
    pub async fn node_pks_async(&self, storage: &Storage) -> Result<Vec<i32>, OrmError> {
        let group = self.pk.ok_or(OrmError::NotStored)?;
        let rows = storage
            .db()
            .query("SELECT dbnode_id FROM db_dbgroup_dbnodes WHERE dbgroup_id = $1 ORDER BY 1", &[&group])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
