//! At the end of a run that built a template marked [`Template::cached`](crate::Template::cached):
//! the launched server's data is stripped to the cached templates (and a few ready clones of each)
//! and becomes the cache the next runs start from (see `cache`). What a test made (its databases,
//! roles) never gets into the cache: it is dropped first, and a run whose maintenance database
//! holds objects of a test's keeps the cache as it was.

use std::collections::{BTreeSet, HashSet};

use crate::client::Client;
use crate::conn::{ConnectionInfo, ident, literal};
use crate::error::Result;
use crate::naming::{CACHED_COMMENT, Kind, drop_sql, kind, like_prefix};

/// How many cached templates the cache keeps at most.
pub(crate) const TEMPLATES_KEPT: usize = 3;

/// The cached templates on the server.
pub(crate) async fn cached_templates(client: &Client, prefix: &str) -> Result<BTreeSet<String>> {
    let sql = format!(
        "SELECT datname FROM pg_database WHERE datname LIKE {} AND shobj_description(oid, 'pg_database') = {}",
        like_prefix(&format!("{prefix}t_")),
        literal(CACHED_COMMENT)
    );
    Ok(client.column_async(&sql).await?.into_iter().collect())
}

/// Readies the server's data to become the cache, if the run built cached templates the cache did
/// not have (`started_with`): drops every other database and every role but the superuser.
/// Whether the data should be kept.
///
/// `ready_clones` of each cached template are kept too: the first claims of a run are renames.
/// At most [`TEMPLATES_KEPT`] templates are kept, those the run `used` (hashes) first, then the
/// newest: a schema that changes often does not fill the cache with old versions.
pub(crate) async fn prepare(
    admin: &ConnectionInfo,
    prefix: &str,
    ready_clones: usize,
    started_with: &BTreeSet<String>,
    used: &HashSet<String>,
) -> Result<bool> {
    let client = &Client::connect_async(admin).await?;
    let version = client.version_num_async().await?;
    let cached = cached_templates(client, prefix).await?;
    if cached.is_empty() || cached.is_subset(started_with) {
        return Ok(false);
    }
    // Newest first (databases get increasing oids), those the run used before all others.
    let sql = format!(
        "SELECT datname FROM pg_database WHERE datname IN ({}) ORDER BY oid DESC",
        cached.iter().map(|n| literal(n)).collect::<Vec<_>>().join(", ")
    );
    let mut newest = client.column_async(&sql).await?;
    newest.sort_by_key(|name| !kind(prefix, name).is_some_and(|k| matches!(k, Kind::Template(h) if used.contains(h))));
    let cached: BTreeSet<String> = newest.into_iter().take(TEMPLATES_KEPT).collect();
    // What a test may have made beside its own databases would come along: then the cache stays
    // as it is. In `postgres` and `template1` (which `CREATE DATABASE` copies): any object of a
    // user (oids from 16384 on); in the whole cluster: settings of roles and databases (`ALTER
    // ... SET`, `ALTER SYSTEM`), replication slots, tablespaces, a superuser password.
    const USER_OBJECTS: &str = "SELECT (SELECT count(*) FROM pg_class WHERE oid >= 16384)
        + (SELECT count(*) FROM pg_namespace WHERE oid >= 16384) + (SELECT count(*) FROM pg_proc WHERE oid >= 16384)
        + (SELECT count(*) FROM pg_type WHERE oid >= 16384) + (SELECT count(*) FROM pg_extension WHERE oid >= 16384)
        + (SELECT count(*) FROM pg_largeobject_metadata) + (SELECT count(*) FROM pg_event_trigger)";
    const CLUSTER_STATE: &str = "SELECT (SELECT count(*) FROM pg_db_role_setting)
        + (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_tablespace WHERE oid >= 16384)
        + (SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf')
        + (SELECT count(*) FROM pg_authid WHERE rolname = current_user AND rolpassword IS NOT NULL)";
    let template1 = Client::connect_async(&admin.with_dbname("template1")).await?;
    for (client, sql) in [(client, USER_OBJECTS), (&template1, USER_OBJECTS), (client, CLUSTER_STATE)] {
        if client.column_async(sql).await?.first().is_none_or(|n| n != "0") {
            return Ok(false);
        }
    }
    drop(template1);
    let hashes: BTreeSet<&str> = cached.iter().filter_map(|t| t.strip_prefix(prefix)?.strip_prefix("t_")).collect();
    let mut ready = std::collections::BTreeMap::<&str, usize>::new();
    let names = client
        .column_async("SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')")
        .await?;
    for name in &names {
        let keep = match kind(prefix, name) {
            Some(Kind::Template(hash)) => hashes.contains(hash),
            Some(Kind::Pooled(hash)) if hashes.contains(hash) => {
                let n = ready.entry(hash).or_default();
                *n += 1;
                *n <= ready_clones
            }
            _ => false,
        };
        if !keep {
            client.query_async(&format!("ALTER DATABASE {} WITH IS_TEMPLATE false", ident(name))).await?;
            client.query_async(&drop_sql(name, version)).await?;
        }
    }
    let roles = client
        .column_async("SELECT rolname FROM pg_roles WHERE rolname <> current_user AND rolname NOT LIKE 'pg\\_%'")
        .await?;
    for role in roles {
        client.query_async(&format!("DROP ROLE {}", ident(&role))).await?;
    }
    Ok(true)
}
