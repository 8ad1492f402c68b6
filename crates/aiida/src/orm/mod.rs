//! Users, nodes and the data types, stored in aiida-core's tables.

pub mod data;
mod node;
mod user;

pub use node::Node;
pub use user::User;

use crate::storage::StorageError;

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
    /// The operation needs a stored node.
    #[error("the node is not stored yet; store it first")]
    NotStored,
}
