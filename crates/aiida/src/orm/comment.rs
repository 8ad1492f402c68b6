use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Node, OrmError, User};
use crate::runtime::block_on;
use crate::storage::Storage;

/// A comment a user left on a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    /// The database id.
    pub pk: i32,
    /// The UUID.
    pub uuid: Uuid,
    /// The author's email.
    pub user_email: String,
    /// The text.
    pub content: String,
    /// When it was written.
    pub ctime: DateTime<Utc>,
}

impl Comment {
    /// Adds a comment by `user` to the stored `node`.
    pub fn add(storage: &Storage, node: &Node, user: &User, content: &str) -> Result<Comment, OrmError> {
        block_on(Comment::add_async(storage, node, user, content))
    }

    /// [`Comment::add`], async.
    pub async fn add_async(storage: &Storage, node: &Node, user: &User, content: &str) -> Result<Comment, OrmError> {
        let node = node.pk().ok_or(OrmError::NotStored)?;
        let rows = storage
            .db()
            .query(
                "INSERT INTO db_dbcomment (uuid, dbnode_id, ctime, mtime, user_id, content)
             VALUES ($1, $2, now(), now(), $3, $4) RETURNING id, uuid, ctime",
                &[&Uuid::new_v4(), &node, &user.pk(), &content],
            )
            .await?;
        let row = &rows[0];
        Ok(Comment {
            pk: row.get(0),
            uuid: row.get(1),
            user_email: user.email().to_owned(),
            content: content.to_owned(),
            ctime: row.get(2),
        })
    }

    /// The comments on `node`, oldest first.
    pub fn of(storage: &Storage, node: &Node) -> Result<Vec<Comment>, OrmError> {
        block_on(Comment::of_async(storage, node))
    }

    /// [`Comment::of`], async.
    pub async fn of_async(storage: &Storage, node: &Node) -> Result<Vec<Comment>, OrmError> {
        let node = node.pk().ok_or(OrmError::NotStored)?;
        let rows = storage.db().query(
            "SELECT c.id, c.uuid, u.email, c.content, c.ctime FROM db_dbcomment c JOIN db_dbuser u ON u.id = c.user_id
             WHERE c.dbnode_id = $1 ORDER BY c.id",
            &[&node],
        ).await?;
        Ok(rows
            .iter()
            .map(|r| Comment { pk: r.get(0), uuid: r.get(1), user_email: r.get(2), content: r.get(3), ctime: r.get(4) })
            .collect())
    }
}

/// A log record attached to a node (typically a process's report).
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// The database id.
    pub pk: i32,
    /// When it was recorded.
    pub time: DateTime<Utc>,
    /// The logger, e.g. `aiida.calculations`.
    pub loggername: String,
    /// The level name, e.g. `REPORT`, `WARNING`.
    pub levelname: String,
    /// The message.
    pub message: String,
    /// Free-form metadata.
    pub metadata: Map<String, Value>,
}

impl Log {
    /// Records a log message for the stored `node`.
    pub fn add(
        storage: &Storage,
        node: &Node,
        loggername: &str,
        levelname: &str,
        message: &str,
    ) -> Result<Log, OrmError> {
        block_on(Log::add_async(storage, node, loggername, levelname, message))
    }

    /// [`Log::add`], async.
    pub async fn add_async(
        storage: &Storage,
        node: &Node,
        loggername: &str,
        levelname: &str,
        message: &str,
    ) -> Result<Log, OrmError> {
        let node = node.pk().ok_or(OrmError::NotStored)?;
        let rows = storage
            .db()
            .query(
                "INSERT INTO db_dblog (uuid, time, loggername, levelname, dbnode_id, message, metadata)
             VALUES ($1, now(), $2, $3, $4, $5, '{}'::jsonb) RETURNING id, time",
                &[&Uuid::new_v4(), &loggername, &levelname, &node, &message],
            )
            .await?;
        Ok(Log {
            pk: rows[0].get(0),
            time: rows[0].get(1),
            loggername: loggername.to_owned(),
            levelname: levelname.to_owned(),
            message: message.to_owned(),
            metadata: Map::new(),
        })
    }

    /// The log records of `node`, oldest first.
    pub fn of(storage: &Storage, node: &Node) -> Result<Vec<Log>, OrmError> {
        block_on(Log::of_async(storage, node))
    }

    /// [`Log::of`], async.
    pub async fn of_async(storage: &Storage, node: &Node) -> Result<Vec<Log>, OrmError> {
        let node = node.pk().ok_or(OrmError::NotStored)?;
        let rows = storage.db().query(
            "SELECT id, time, loggername, levelname, message, metadata FROM db_dblog WHERE dbnode_id = $1 ORDER BY id",
            &[&node],
        ).await?;
        Ok(rows
            .iter()
            .map(|r| Log {
                pk: r.get(0),
                time: r.get(1),
                loggername: r.get(2),
                levelname: r.get(3),
                message: r.get(4),
                metadata: super::object(r.get(5)),
            })
            .collect())
    }
}
