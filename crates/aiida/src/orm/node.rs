use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{OrmError, User};
use std::sync::Arc;

use crate::runtime::{self, block_on};
use crate::storage::Storage;

/// A node of the provenance graph: data or a process, with attributes (frozen once stored),
/// extras (always mutable) and files (in the repository).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pk: Option<i32>,
    uuid: Uuid,
    node_type: String,
    process_type: Option<String>,
    label: String,
    description: String,
    ctime: DateTime<Utc>,
    mtime: DateTime<Utc>,
    attributes: Map<String, Value>,
    extras: Map<String, Value>,
    repository_metadata: Value,
    computer: Option<i32>,
    user: Option<i32>,
    /// Files to store, shared so that storing can hand them to a blocking thread.
    files: BTreeMap<String, Arc<[u8]>>,
}

impl Node {
    /// A new, unstored node of `node_type` (e.g. `data.core.int.Int.`).
    pub fn new(node_type: impl Into<String>) -> Node {
        let now = super::now();
        Node {
            pk: None,
            uuid: Uuid::new_v4(),
            node_type: node_type.into(),
            process_type: None,
            label: String::new(),
            description: String::new(),
            ctime: now,
            mtime: now,
            attributes: Map::new(),
            extras: Map::new(),
            repository_metadata: json!({}),
            computer: None,
            user: None,
            files: BTreeMap::new(),
        }
    }

    /// The database id, once stored.
    pub fn pk(&self) -> Option<i32> {
        self.pk
    }

    /// The UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The type string, e.g. `data.core.int.Int.`.
    pub fn node_type(&self) -> &str {
        &self.node_type
    }

    /// The process type, for process nodes.
    pub fn process_type(&self) -> Option<&str> {
        self.process_type.as_deref()
    }

    /// The label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Sets the label (before storing).
    pub fn set_label(&mut self, label: impl Into<String>) -> Result<(), OrmError> {
        self.check_mutable()?;
        self.label = label.into();
        Ok(())
    }

    /// The description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Sets the description (before storing).
    pub fn set_description(&mut self, description: impl Into<String>) -> Result<(), OrmError> {
        self.check_mutable()?;
        self.description = description.into();
        Ok(())
    }

    /// Sets the process type, e.g. `aiida.calculations:core.arithmetic.add` (before storing).
    pub fn set_process_type(&mut self, process_type: impl Into<String>) -> Result<(), OrmError> {
        self.check_mutable()?;
        self.process_type = Some(process_type.into());
        Ok(())
    }

    /// Sets the computer the node belongs to (before storing).
    pub fn set_computer(&mut self, computer: &super::Computer) -> Result<(), OrmError> {
        self.check_mutable()?;
        self.computer = Some(computer.pk().ok_or(OrmError::NotStored)?);
        Ok(())
    }

    /// The pk of the node's computer, if any.
    pub fn computer_pk(&self) -> Option<i32> {
        self.computer
    }

    /// The pk of the node's user (its creator), once stored or set.
    pub fn user_pk(&self) -> Option<i32> {
        self.user
    }

    /// Creation time.
    pub fn ctime(&self) -> DateTime<Utc> {
        self.ctime
    }

    /// Last modification time.
    pub fn mtime(&self) -> DateTime<Utc> {
        self.mtime
    }

    /// The attributes.
    pub fn attributes(&self) -> &Map<String, Value> {
        &self.attributes
    }

    /// One attribute.
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// Sets an attribute; an error once the node is stored.
    pub fn set_attribute(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<(), OrmError> {
        self.check_mutable()?;
        self.attributes.insert(key.into(), value.into());
        Ok(())
    }

    /// The extras.
    pub fn extras(&self) -> &Map<String, Value> {
        &self.extras
    }

    /// Sets an extra; on a stored node it is written to `storage` at once.
    pub fn set_extra(
        &mut self,
        storage: &Storage,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<(), OrmError> {
        block_on(self.set_extra_async(storage, key, value))
    }

    /// [`Node::set_extra`], async.
    pub async fn set_extra_async(
        &mut self,
        storage: &Storage,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<(), OrmError> {
        let (key, value) = (key.into(), value.into());
        if let Some(pk) = self.pk {
            let rows = storage
                .db()
                .query(
                    "UPDATE db_dbnode SET extras = coalesce(extras, '{}'::jsonb) || jsonb_build_object($2::text, $3::jsonb),
                     mtime = now() WHERE id = $1 RETURNING mtime",
                    &[&pk, &key, &value],
                )
                .await?;
            self.mtime = rows[0].get(0);
        }
        self.extras.insert(key, value);
        Ok(())
    }

    /// Adds a file at `path` (`/`-separated) to the node's repository folder (before storing).
    pub fn put_file(&mut self, path: impl Into<String>, content: impl Into<Vec<u8>>) -> Result<(), OrmError> {
        self.check_mutable()?;
        self.files.insert(path.into(), content.into().into());
        Ok(())
    }

    /// The content of the file at `path`.
    pub fn file(&self, storage: &Storage, path: &str) -> Result<Vec<u8>, OrmError> {
        block_on(self.file_async(storage, path))
    }

    /// [`Node::file`], async.
    pub async fn file_async(&self, storage: &Storage, path: &str) -> Result<Vec<u8>, OrmError> {
        if let Some(content) = self.files.get(path) {
            return Ok(content.to_vec());
        }
        let mut entry = &self.repository_metadata;
        for part in path.split('/') {
            entry = entry
                .get("o")
                .and_then(|o| o.get(part))
                .ok_or_else(|| OrmError::NotFound { entity: "file", id: format!("`{path}` in node {}", self.uuid) })?;
        }
        let key = entry.get("k").and_then(Value::as_str).ok_or_else(|| OrmError::NotFound {
            entity: "file",
            id: format!("`{path}` in node {} (it is a folder)", self.uuid),
        })?;
        let (storage, key) = (storage.clone(), key.to_owned());
        Ok(runtime::spawn_blocking(move || storage.repository().get(&key)).await?)
    }

    /// The repository tree, as `repository_metadata` stores it.
    pub fn repository_metadata(&self) -> &Value {
        &self.repository_metadata
    }

    /// Whether the node is stored.
    pub fn is_stored(&self) -> bool {
        self.pk.is_some()
    }

    fn check_mutable(&self) -> Result<(), OrmError> {
        match self.pk {
            Some(pk) => Err(OrmError::Frozen { pk }),
            None => Ok(()),
        }
    }

    /// Stores the node (its files first, then its row, with its hash in extra `_aiida_hash` as
    /// aiida-core does), by the profile's default user unless a user was set. Storing a stored
    /// node does nothing.
    pub fn store(&mut self, storage: &Storage) -> Result<&mut Node, OrmError> {
        block_on(self.store_async(storage))
    }

    /// [`Node::store`], async. Without files and by the default user, it is one round trip.
    pub async fn store_async(&mut self, storage: &Storage) -> Result<&mut Node, OrmError> {
        self.store_linked(storage, &[]).await
    }

    /// Stores the node with links from `inputs` (label, stored node) into it, in one transaction;
    /// its hash covers the inputs, as aiida-core's does for a process node stored with its inputs.
    pub(super) async fn store_linked(
        &mut self,
        storage: &Storage,
        inputs: &[(&str, &Node, super::LinkType)],
    ) -> Result<&mut Node, OrmError> {
        if self.pk.is_some() {
            return Ok(self);
        }
        let user = match self.user {
            Some(id) => id,
            None => match storage.default_user_id().await? {
                Some(id) => id,
                None => User::default_user_async(storage).await?.pk(),
            },
        };
        let tree = if self.files.is_empty() {
            json!({})
        } else {
            let (storage, files) = (storage.clone(), self.files.clone());
            runtime::spawn_blocking(move || {
                let mut tree = json!({});
                for (path, content) in &files {
                    insert_file(&mut tree, path, storage.repository().put(content)?);
                }
                Ok::<_, OrmError>(tree)
            })
            .await?
        };
        let mut input_hashes = Map::new();
        let (mut sources, mut labels, mut types) = (Vec::new(), Vec::new(), Vec::new());
        for (label, input, link_type) in inputs {
            let hash = match input.extras.get(super::hash::HASH_EXTRA).and_then(Value::as_str) {
                Some(hash) => hash.to_owned(),
                None => input.compute_hash_async(storage).await?,
            };
            input_hashes.insert((*label).to_owned(), Value::String(hash));
            sources.push(input.pk.ok_or(OrmError::NotStored)?);
            labels.push(*label);
            types.push(link_type.as_str());
        }
        let mut extras = self.extras.clone();
        let hash = super::hash::on_store(storage, self, &tree, input_hashes).await?;
        extras.insert(super::hash::HASH_EXTRA.to_owned(), hash.into());
        let attributes = Value::Object(self.attributes.clone());
        let extras = Value::Object(extras);
        const INSERT: &str = "INSERT INTO db_dbnode (uuid, node_type, process_type, label, description, ctime, mtime,
             attributes, extras, repository_metadata, dbcomputer_id, user_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id";
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
            &self.uuid,
            &self.node_type,
            &self.process_type,
            &self.label,
            &self.description,
            &self.ctime,
            &self.mtime,
            &attributes,
            &extras,
            &tree,
            &self.computer,
            &user,
        ];
        let pk: i32 = if inputs.is_empty() {
            storage.db().query(INSERT, &args).await?[0].get(0)
        } else {
            let tx = storage.db().begin().await?;
            let pk: i32 = tx.query(INSERT, &args).await?[0].get(0);
            tx.query(
                "INSERT INTO db_dblink (input_id, output_id, label, type)
                 SELECT source, $1, label, type FROM unnest($2::int[], $3::text[], $4::text[]) AS l(source, label, type)",
                &[&pk, &sources, &labels, &types],
            )
            .await?;
            tx.commit().await?;
            pk
        };
        self.pk = Some(pk);
        self.user = Some(user);
        self.extras = super::object(Some(extras));
        self.repository_metadata = tree;
        self.files.clear();
        Ok(self)
    }

    /// Applies a change the database made to the attributes of this stored node.
    pub(super) fn set_stored_attributes(&mut self, set: Map<String, Value>, remove: &[&str], mtime: DateTime<Utc>) {
        for key in remove {
            self.attributes.remove(*key);
        }
        self.attributes.extend(set);
        self.mtime = mtime;
    }

    /// Applies a change the database made to the file tree of this stored node.
    pub(super) fn set_stored_repository(&mut self, tree: Value, mtime: DateTime<Utc>) {
        self.repository_metadata = tree;
        self.mtime = mtime;
    }

    /// Loads node `pk`.
    pub fn load(storage: &Storage, pk: i32) -> Result<Node, OrmError> {
        block_on(Node::load_async(storage, pk))
    }

    /// [`Node::load`], async.
    pub async fn load_async(storage: &Storage, pk: i32) -> Result<Node, OrmError> {
        let rows = storage.db().query("SELECT * FROM db_dbnode WHERE id = $1", &[&pk]).await?;
        rows.first().map(Node::from_row).ok_or(OrmError::NotFound { entity: "node", id: format!("pk {pk}") })
    }

    /// Loads the node with `uuid`.
    pub fn load_uuid(storage: &Storage, uuid: Uuid) -> Result<Node, OrmError> {
        block_on(Node::load_uuid_async(storage, uuid))
    }

    /// [`Node::load_uuid`], async.
    pub async fn load_uuid_async(storage: &Storage, uuid: Uuid) -> Result<Node, OrmError> {
        let rows = storage.db().query("SELECT * FROM db_dbnode WHERE uuid = $1", &[&uuid]).await?;
        rows.first().map(Node::from_row).ok_or(OrmError::NotFound { entity: "node", id: format!("uuid {uuid}") })
    }

    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Node {
        use super::object;
        Node {
            pk: Some(row.get("id")),
            uuid: row.get("uuid"),
            node_type: row.get("node_type"),
            process_type: row.get("process_type"),
            label: row.get("label"),
            description: row.get("description"),
            ctime: row.get("ctime"),
            mtime: row.get("mtime"),
            attributes: object(row.get("attributes")),
            extras: object(row.get("extras")),
            repository_metadata: row.get("repository_metadata"),
            computer: row.get("dbcomputer_id"),
            user: row.get("user_id"),
            files: BTreeMap::new(),
        }
    }
}

/// Puts file `path` with object `key` into a `{"o": {name: child}}` / `{"k": key}` tree.
pub(super) fn insert_file(tree: &mut Value, path: &str, key: String) {
    let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some(file) = parts.pop() else { return };
    let mut dir = tree;
    for part in parts {
        dir = children(dir).entry(part.to_owned()).or_insert_with(|| json!({}));
    }
    children(dir).insert(file.to_owned(), json!({ "k": key }));
}

fn children(dir: &mut Value) -> &mut Map<String, Value> {
    let dir = dir.as_object_mut().expect("folders are objects");
    dir.entry("o").or_insert_with(|| json!({})).as_object_mut().expect("a folder's children are an object")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_metadata_is_aiidas_tree() {
        let mut tree = json!({});
        insert_file(&mut tree, "a.txt", "k1".into());
        insert_file(&mut tree, "sub/deeper/b.txt", "k2".into());
        assert_eq!(tree, json!({"o": {"a.txt": {"k": "k1"}, "sub": {"o": {"deeper": {"o": {"b.txt": {"k": "k2"}}}}}}}));
    }
}
