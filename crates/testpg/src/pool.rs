//! The pool's SQL: claiming a pooled clone of a template, or cloning one on the spot.

use tokio_postgres::error::SqlState;

use crate::client::Client;
use crate::conn::ident;
use crate::error::{Error, Result};
use crate::naming::{CHANNEL, clone_sql, like_prefix, template_name};

/// Claims a pooled clone of template `hash` under the name `claimed`, or clones one if the pool
/// is empty.
pub(crate) async fn claim(client: &Client, prefix: &str, hash: &str, claimed: &str, version_num: u32) -> Result<()> {
    let pooled = client
        .column_async(&format!(
            "SELECT datname FROM pg_database WHERE datname LIKE {} ORDER BY datname LIMIT 8",
            like_prefix(&format!("{prefix}p_{hash}_"))
        ))
        .await?;
    for candidate in pooled {
        let sql = format!(
            "ALTER DATABASE {} RENAME TO {}; NOTIFY {CHANNEL}, 'claimed:{hash}'",
            ident(&candidate),
            ident(claimed)
        );
        match client.query_raw(&sql).await {
            Ok(_) => return Ok(()),
            // Another process won this one (renamed it away) or is touching it: try the next.
            Err(e) if [SqlState::INVALID_CATALOG_NAME, SqlState::OBJECT_IN_USE].iter().any(|s| e.code() == Some(s)) => {
            }
            Err(e) => return Err(Error::pg(client.target())(e)),
        }
    }
    client.query_async(&format!("NOTIFY {CHANNEL}, 'claimed:{hash}'")).await?;
    client.query_async(&clone_sql(claimed, &template_name(prefix, hash), version_num)).await?;
    Ok(())
}
