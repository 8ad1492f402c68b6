//! Users, nodes and the data types, stored in aiida-core's tables.

mod comment;
mod computer;
pub mod data;
mod group;
mod hash;
mod link;
mod node;
mod process;
pub mod query;
mod user;

pub use comment::{Comment, Log};
pub use computer::{AuthInfo, Computer};
pub use group::Group;
pub use link::{Link, LinkType, add_link, add_link_async};
pub use node::Node;
pub use process::{PROCESS_STATE_CHANNEL, is_updatable_attribute};
pub use query::QueryBuilder;
pub use user::User;

use crate::storage::StorageError;

/// Runs an `INSERT ... RETURNING id` of an entity with a unique label; a label in use is a
/// [`OrmError::Duplicate`] and changes nothing.
pub(crate) async fn insert_labelled(
    storage: &crate::storage::Storage,
    sql: &str,
    args: crate::storage::Args<'_>,
    entity: &'static str,
    label: &str,
) -> Result<i32, OrmError> {
    match storage.db().query(sql, args).await {
        Ok(rows) => Ok(rows[0].get(0)),
        Err(e) if e.is_unique_violation() => Err(OrmError::Duplicate { entity, label: label.to_owned() }),
        Err(e) => Err(e.into()),
    }
}

/// A JSON column's object (absent or non-object values read as empty).
pub(crate) fn object(value: Option<serde_json::Value>) -> serde_json::Map<String, serde_json::Value> {
    match value {
        Some(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// Now, to the microsecond: what PostgreSQL keeps, so that a stored entity equals its loaded self.
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// Errors of the ORM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrmError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Attributes of a stored node cannot change.
    #[error("node {pk} is stored: its attributes are frozen (extras may still change)")]
    Frozen {
        /// The node's pk.
        pk: i32,
    },
    /// A sealed process node does not change any more.
    #[error("process node {pk} is sealed: it ended, and nothing about it changes any more")]
    Sealed {
        /// The node's pk.
        pk: i32,
    },
    /// An attribute of a stored node that is not among the updatable ones.
    #[error("attribute `{key}` of stored node {pk} cannot change (only a process node's updatable attributes can)")]
    NotUpdatable {
        /// The node's pk.
        pk: i32,
        /// The attribute.
        key: String,
    },
    /// Nothing with that id.
    #[error("no {entity} with {id}")]
    NotFound {
        /// What was looked for ("node", "user").
        entity: &'static str,
        /// The id given.
        id: String,
    },
    /// The profile names no default user.
    #[error("profile `{0}` has no default user email; set one with `verdi profile setup --email`")]
    NoDefaultUser(String),
    /// The operation needs a stored entity.
    #[error("not stored yet; store it first")]
    NotStored,
    /// A unique label is taken.
    #[error("a {entity} labelled `{label}` exists already; choose another label")]
    Duplicate {
        /// "computer", "group".
        entity: &'static str,
        /// The label.
        label: String,
    },
    /// An entity that nodes use cannot be deleted.
    #[error("cannot delete {entity} `{label}`: {nodes} node(s) use it; delete them first")]
    InUse {
        /// "computer".
        entity: &'static str,
        /// Its label.
        label: String,
        /// How many nodes use it.
        nodes: i64,
    },
    /// A computer has not been configured for a user.
    #[error("computer `{computer}` is not configured for user `{user}`; run `verdi computer configure`")]
    NotConfigured {
        /// The computer's label.
        computer: String,
        /// The user's email.
        user: String,
    },
    /// A link that breaks aiida's rules.
    #[error("cannot add a `{link_type}` link labelled `{label}`: {reason}")]
    InvalidLink {
        /// The link type.
        link_type: &'static str,
        /// The label.
        label: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A query that cannot be built.
    #[error("invalid query: {0}")]
    Query(String),
}
