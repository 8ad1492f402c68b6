//! Process nodes as the engine records them: stored with their inputs, then only their updatable
//! attributes change (state, status, exit status, a calculation job's progress) until they are
//! sealed; outputs are stored and linked as they come.

use serde_json::{Map, Value};

use super::{LinkType, Node, OrmError};
use crate::runtime::block_on;
use crate::storage::Storage;

/// The attributes of a stored process node that may change until it is sealed: aiida's
/// `_updatable_attributes` of `ProcessNode`,
pub(crate) const PROCESS_UPDATABLE: &[&str] = &[
    "sealed",
    "paused",
    "checkpoints",
    "exception",
    "exit_message",
    "exit_status",
    "process_label",
    "process_state",
    "process_status",
];

/// those `CalcJobNode` adds,
pub(crate) const CALC_JOB_UPDATABLE: &[&str] = &[
    "state",
    "imported",
    "remote_workdir",
    "retrieve_list",
    "retrieve_temporary_list",
    "job_id",
    "scheduler_state",
    "scheduler_lastchecktime",
    "last_job_info",
    "detailed_job_info",
];

/// and those `WorkChainNode` adds.
pub(crate) const WORK_CHAIN_UPDATABLE: &[&str] = &["stepper_state_info"];

/// Whether attribute `key` of a stored process node may change until it is sealed.
pub fn is_updatable_attribute(key: &str) -> bool {
    [PROCESS_UPDATABLE, CALC_JOB_UPDATABLE, WORK_CHAIN_UPDATABLE].iter().any(|keys| keys.contains(&key))
}

/// The PostgreSQL notification channel on which process state changes are announced, with the
/// payload `<pk> <state> <previous state>`, and a process being paused or played, with `paused`
/// or `played` after that (ours: aiida-core announces nothing in its database).
pub const PROCESS_STATE_CHANNEL: &str = "aiida_rs_process_state";

/// Whether `node` is a process node.
fn is_process(node: &Node) -> bool {
    node.node_type().starts_with("process.")
}

impl Node {
    /// Whether the node is sealed (a process that ended: nothing about it changes any more).
    pub fn is_sealed(&self) -> bool {
        self.attribute("sealed") == Some(&Value::Bool(true))
    }

    /// Stores this process node with `inputs` (label, stored data node) linked into it, in one
    /// transaction: `input_calc` links into a calculation, `input_work` into a workflow. Its hash
    /// covers the inputs.
    pub fn store_process(&mut self, storage: &Storage, inputs: &[(&str, &Node)]) -> Result<(), OrmError> {
        block_on(self.store_process_async(storage, inputs))
    }

    /// [`Node::store_process`], async.
    pub async fn store_process_async(&mut self, storage: &Storage, inputs: &[(&str, &Node)]) -> Result<(), OrmError> {
        let link_type = match self.node_type() {
            t if t.starts_with("process.calculation.") => LinkType::InputCalc,
            t if t.starts_with("process.workflow.") => LinkType::InputWork,
            t => return Err(OrmError::Query(format!("`{t}` is not a calculation or workflow node type"))),
        };
        for (label, input) in inputs {
            super::link::check_label(link_type, label)?;
            if !input.node_type().starts_with("data.") {
                return Err(OrmError::InvalidLink {
                    link_type: link_type.as_str(),
                    label: (*label).to_owned(),
                    reason: format!("an input must be a data node, not `{}`", input.node_type()),
                });
            }
        }
        let linked: Vec<(&str, &Node, LinkType)> = inputs.iter().map(|(l, n)| (*l, *n, link_type)).collect();
        self.store_linked(storage, &linked).await?;
        Ok(())
    }

    /// Changes the updatable attributes of this stored, unsealed process node: sets those in `set`
    /// and removes those in `remove`, in one round trip. Setting `process_state` also records the
    /// time of the change in the setting `process|state_change|calculation` (or `|work`), as
    /// aiida-core does (`verdi process list` shows it), and announces it on the channel
    /// [`PROCESS_STATE_CHANNEL`] (as does pausing and playing), so that waiting needs no polling.
    pub fn update_process(
        &mut self,
        storage: &Storage,
        set: Map<String, Value>,
        remove: &[&str],
    ) -> Result<(), OrmError> {
        block_on(self.update_process_async(storage, set, remove))
    }

    /// [`Node::update_process`], async.
    pub async fn update_process_async(
        &mut self,
        storage: &Storage,
        set: Map<String, Value>,
        remove: &[&str],
    ) -> Result<(), OrmError> {
        let pk = self.pk().ok_or(OrmError::NotStored)?;
        if !is_process(self) {
            return Err(OrmError::Frozen { pk });
        }
        if let Some(key) =
            set.keys().map(String::as_str).chain(remove.iter().copied()).find(|k| !is_updatable_attribute(k))
        {
            return Err(OrmError::NotUpdatable { pk, key: key.to_owned() });
        }
        let state_change = set.contains_key("process_state").then(|| {
            let key = if self.node_type().starts_with("process.calculation.") { "calculation" } else { "work" };
            format!("process|state_change|{key}")
        });
        let pausing = match (set.get("paused"), remove.contains(&"paused")) {
            (Some(Value::Bool(true)), _) => Some("paused"),
            (_, true) => Some("played"),
            _ => None,
        };
        let now = Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false));
        let changes = Value::Object(set.clone());
        let rows = storage
            .db()
            .query(
                "WITH updated AS (
                     UPDATE db_dbnode SET attributes = (db_dbnode.attributes - $2::text[]) || $3::jsonb, mtime = now()
                     FROM (SELECT id, attributes->>'process_state' AS state FROM db_dbnode WHERE id = $1 FOR UPDATE)
                          AS previous
                     WHERE db_dbnode.id = previous.id
                       AND NOT coalesce((db_dbnode.attributes->>'sealed')::boolean, false)
                     RETURNING mtime, previous.state
                 ), changed AS (
                     INSERT INTO db_dbsetting (key, val, description, time)
                     SELECT $4::text, $5::jsonb, '', now() WHERE $4::text IS NOT NULL AND EXISTS (SELECT 1 FROM updated)
                     ON CONFLICT (key) DO UPDATE SET val = EXCLUDED.val, time = EXCLUDED.time
                 ), announced AS (
                     SELECT pg_notify('aiida_rs_process_state', concat_ws(' ', $1::text,
                                      coalesce($3::jsonb ->> 'process_state', state, 'created'),
                                      coalesce(state, 'created'), $6::text))
                     FROM updated WHERE $4::text IS NOT NULL OR $6::text IS NOT NULL
                 )
                 SELECT mtime, (SELECT count(*) FROM announced) FROM updated",
                &[&pk, &remove, &changes, &state_change, &now, &pausing],
            )
            .await?;
        let Some(row) = rows.first() else { return Err(OrmError::Sealed { pk }) };
        self.set_stored_attributes(set, remove, row.get(0));
        Ok(())
    }

    /// Stores `output` (unless it is) and links it from this process node as `label`: a `create`
    /// link from a calculation, a `return` link from a workflow (whose output must be stored
    /// already). A label the process has used for an output is an error.
    pub fn add_output(&self, storage: &Storage, output: &mut Node, label: &str) -> Result<(), OrmError> {
        block_on(self.add_output_async(storage, output, label))
    }

    /// [`Node::add_output`], async.
    pub async fn add_output_async(&self, storage: &Storage, output: &mut Node, label: &str) -> Result<(), OrmError> {
        let pk = self.pk().ok_or(OrmError::NotStored)?;
        let link_type = match self.node_type() {
            t if t.starts_with("process.calculation.") => LinkType::Create,
            t if t.starts_with("process.workflow.") => LinkType::Return,
            t => return Err(OrmError::Query(format!("`{t}` is not a calculation or workflow node type"))),
        };
        super::link::check_label(link_type, label)?;
        let invalid =
            |reason: String| OrmError::InvalidLink { link_type: link_type.as_str(), label: label.to_owned(), reason };
        if !output.node_type().starts_with("data.") {
            return Err(invalid(format!("an output must be a data node, not `{}`", output.node_type())));
        }
        if self.is_sealed() {
            return Err(OrmError::Sealed { pk });
        }
        if link_type == LinkType::Create {
            if output.is_stored() {
                return Err(invalid(format!(
                    "node {} is stored already: a created node is stored with its link",
                    output.pk().unwrap_or_default()
                )));
            }
            output.store_async(storage).await?;
        }
        let target = output.pk().ok_or(OrmError::NotStored)?;
        let rows = storage
            .db()
            .query(
                "INSERT INTO db_dblink (input_id, output_id, label, type) SELECT $1::int, $2::int, $3::text, $4::text
                 WHERE NOT EXISTS (
                     SELECT 1 FROM db_dblink WHERE input_id = $1::int AND label = $3::text AND type IN ('create', 'return')
                 )
                 RETURNING id",
                &[&pk, &target, &label, &link_type.as_str()],
            )
            .await?;
        if rows.is_empty() {
            return Err(invalid(format!("node {pk} already has an output labelled `{label}`")));
        }
        Ok(())
    }

    /// Adds files (path, content) to the repository of this stored, unsealed process node: what a
    /// calculation job keeps of its input files once they are uploaded.
    pub async fn put_process_files_async(
        &mut self,
        storage: &Storage,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), OrmError> {
        let pk = self.pk().ok_or(OrmError::NotStored)?;
        if !is_process(self) {
            return Err(OrmError::Frozen { pk });
        }
        let mut tree = self.repository_metadata().clone();
        let owner = storage.clone();
        let keys = crate::runtime::spawn_blocking(move || {
            files
                .into_iter()
                .map(|(path, content)| Ok((path, owner.repository().put(&content)?)))
                .collect::<Result<Vec<_>, crate::storage::StorageError>>()
        })
        .await?;
        for (path, key) in keys {
            super::node::insert_file(&mut tree, &path, key);
        }
        let rows = storage
            .db()
            .query(
                "UPDATE db_dbnode SET repository_metadata = $2, mtime = now()
                 WHERE id = $1 AND NOT coalesce((attributes->>'sealed')::boolean, false) RETURNING mtime",
                &[&pk, &tree],
            )
            .await?;
        let Some(row) = rows.first() else { return Err(OrmError::Sealed { pk }) };
        self.set_stored_repository(tree, row.get(0));
        Ok(())
    }
}
