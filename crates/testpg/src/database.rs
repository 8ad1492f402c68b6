//! Databases for tests: a template built once per key, clones handed out from a warm pool.
//!
//! Every database of a run is named `<prefix><kind>_<key hash>…`, and the names are the whole
//! state: `t_<h>` a finished template, `b_<h>` a template being built, `p_<h>_<n>` a pooled clone,
//! `c_<h>_<pid>_<n>` a clone claimed by process `pid`. A claim renames a pooled clone, which only
//! one process can win.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;

use crate::client::{Client, block};
use crate::conn::{ConnectionInfo, ident, literal};
use crate::error::{BoxError, Error, Result};
use crate::run::Server;

/// The channel the keeper listens on.
pub(crate) const CHANNEL: &str = "testpg_keeper";

type Migrate = dyn Fn(&ConnectionInfo) -> Result<(), BoxError> + Send + Sync;

/// A template database: built once per run and key by the caller's migration step, then cloned
/// for every test.
///
/// The key names the schema version: change it whenever the migration changes.
#[derive(Clone)]
pub struct Template {
    key: String,
    migrate: Arc<Migrate>,
    cached: bool,
}

/// The comment that marks a template to be kept in the cache between runs.
pub(crate) const CACHED_COMMENT: &str = "testpg: cached between runs";

impl Template {
    /// A template whose database `migrate` fills (schema, seed data). `migrate` gets superuser
    /// settings for the new database and must close its connections before returning.
    pub fn new(
        key: impl Into<String>,
        migrate: impl Fn(&ConnectionInfo) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Template {
        Template { key: key.into(), migrate: Arc::new(migrate), cached: false }
    }

    /// Keeps the template, once built, for later runs: a launched server's data is kept in
    /// testpg's cache (per PostgreSQL binaries) when a run that built such a template ends, and
    /// the next runs start with it, with a few clones ready. Only for a key that changes whenever
    /// the migration does (say, a hash of the schema): a template is never built again for a key
    /// the cache has.
    pub fn cached(mut self) -> Template {
        self.cached = true;
        self
    }

    /// A template of an empty database.
    pub fn empty() -> Template {
        Template::new("empty", |_| Ok(()))
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn hash(&self) -> String {
        format!("{:012x}", crate::hash(&self.key) >> 16)
    }
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").field("key", &self.key).finish_non_exhaustive()
    }
}

/// A database of one's own, cloned from a template. Dropping it hands it back; the run's keeper
/// drops it once its connections are gone (or, after [`TestDatabase::recycle`], pools it again).
#[derive(Debug)]
pub struct TestDatabase {
    server: Arc<Server>,
    info: ConnectionInfo,
    recycle: bool,
}

impl TestDatabase {
    /// Settings to connect to this database (as the server's superuser).
    pub fn connection(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.info.dbname
    }

    /// A `postgresql://` URL of this database.
    pub fn url(&self) -> String {
        self.info.url()
    }

    /// Hands the database back to be handed out again to the next test that asks for a clone of
    /// its template, instead of dropped: no SQL at all, where a new clone copies files and waits
    /// for checkpoints.
    ///
    /// Call it only when the database is again exactly what its template holds (say, every row
    /// the test added deleted, sequences restarted) and after closing every connection to it:
    /// the next test gets it as it is.
    pub fn recycle(mut self) {
        self.recycle = true;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.server.link.hand_back(&self.info.dbname, self.recycle) {
            return;
        }
        // No keeper link (an older keeper): tell it over the server; it drops the database.
        let notify = format!("NOTIFY {CHANNEL}, {}", literal(&format!("drop:{}", self.info.dbname)));
        if let Err(e) = self.server.client().and_then(|c| c.query(notify)) {
            tracing::warn!("handing back database {}: {e}; it is dropped when the run ends", self.info.dbname);
        }
    }
}

/// A database name's meaning.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    Template(&'a str),
    Building(&'a str),
    Pooled(&'a str),
    Claimed { hash: &'a str, pid: u32 },
}

pub(crate) fn template_name(prefix: &str, hash: &str) -> String {
    format!("{prefix}t_{hash}")
}

pub(crate) fn pooled_name(prefix: &str, hash: &str) -> String {
    format!("{prefix}p_{hash}_{}", crate::os::random_hex(4))
}

fn claimed_name(prefix: &str, hash: &str) -> String {
    claimed_name_for(prefix, hash, std::process::id())
}

/// The name of a clone of template `hash` claimed by process `pid`.
pub(crate) fn claimed_name_for(prefix: &str, hash: &str, pid: u32) -> String {
    format!("{prefix}c_{hash}_{pid}_{}", crate::os::random_hex(4))
}

/// What `name` is, if it is one of ours.
pub(crate) fn kind<'a>(prefix: &str, name: &'a str) -> Option<Kind<'a>> {
    let rest = name.strip_prefix(prefix)?;
    let (tag, rest) = rest.split_once('_')?;
    let hash = rest.split('_').next()?;
    match tag {
        "t" => Some(Kind::Template(hash)),
        "b" => Some(Kind::Building(hash)),
        "p" => Some(Kind::Pooled(hash)),
        "c" => Some(Kind::Claimed { hash, pid: rest.split('_').nth(1)?.parse().ok()? }),
        _ => None,
    }
}

/// A `LIKE` pattern matching names that start with `start`.
pub(crate) fn like_prefix(start: &str) -> String {
    let escaped = start.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    literal(&format!("{escaped}%"))
}

/// `STRATEGY FILE_COPY` where the server has it (PostgreSQL 15+): much faster for small databases.
pub(crate) fn clone_sql(name: &str, template: &str, version_num: u32) -> String {
    let strategy = if version_num >= 150000 { " STRATEGY FILE_COPY" } else { "" };
    format!("CREATE DATABASE {} TEMPLATE {}{strategy}", ident(name), ident(template))
}

impl Server {
    /// A new database cloned from `template` (built first if this run has not built it yet).
    ///
    /// Taken from the warm pool the keeper refills in the background when one is there, cloned
    /// on the spot otherwise. Nothing stored in it is visible in any other database.
    pub fn database(self: &Arc<Self>, template: &Template) -> Result<TestDatabase> {
        self.run_ended(self.database_pooled(template))
    }

    fn database_pooled(self: &Arc<Self>, template: &Template) -> Result<TestDatabase> {
        let hash = template.hash();
        // The keeper hands one out without a connection of ours, when the template exists.
        if let Some(name) = self.link.claim(&hash) {
            return Ok(TestDatabase { server: self.clone(), info: self.admin().with_dbname(name), recycle: false });
        }
        self.ensure_template(template, &hash)?;
        let client = self.client()?;
        let prefix = self.prefix().to_owned();
        let claimed = claimed_name(&prefix, &hash);
        let version = self.version_num(&client)?;
        let name = claimed.clone();
        block(async move { claim(&client, &prefix, &hash, &name, version).await })?;
        Ok(TestDatabase { server: self.clone(), info: self.admin().with_dbname(claimed), recycle: false })
    }

    /// A new database cloned from `template` without the pool (what a pool miss costs).
    pub fn database_unpooled(self: &Arc<Self>, template: &Template) -> Result<TestDatabase> {
        self.run_ended(self.clone_unpooled(template))
    }

    fn clone_unpooled(self: &Arc<Self>, template: &Template) -> Result<TestDatabase> {
        let hash = template.hash();
        self.ensure_template(template, &hash)?;
        let client = self.client()?;
        let name = claimed_name(self.prefix(), &hash);
        client.query(clone_sql(&name, &template_name(self.prefix(), &hash), self.version_num(&client)?))?;
        Ok(TestDatabase { server: self.clone(), info: self.admin().with_dbname(name), recycle: false })
    }

    pub(crate) fn version_num(&self, client: &Client) -> Result<u32> {
        if let Some(v) = self.version_num.get() {
            return Ok(*v);
        }
        let rows = client.query("SHOW server_version_num")?;
        let v = rows.first().and_then(|r| r[0].as_deref()).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(*self.version_num.get_or_init(|| v))
    }

    fn ensure_template(&self, template: &Template, hash: &str) -> Result<()> {
        let ready = |s: &Self| s.ready_templates.lock().unwrap_or_else(|e| e.into_inner()).contains(hash);
        if ready(self) {
            return Ok(());
        }
        let _one_builder_per_process = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if ready(self) {
            return Ok(());
        }
        let client = self.client()?;
        let name = template_name(self.prefix(), hash);
        let exists = |c: &Client| -> Result<bool> {
            Ok(!c.query(format!("SELECT 1 FROM pg_database WHERE datname = {}", literal(&name)))?.is_empty())
        };
        if !exists(&client)? {
            // One builder per run: a session advisory lock, released when its connection closes.
            let lock = Client::connect(self.admin())?;
            let lock_id = crate::hash(&format!("testpg template {}{hash}", self.prefix())) as i64;
            lock.query(format!("SELECT pg_advisory_lock({lock_id})"))?;
            if !exists(&client)? {
                self.build_template(&client, template, hash)?;
            }
        }
        self.ready_templates.lock().unwrap_or_else(|e| e.into_inner()).insert(hash.to_owned());
        Ok(())
    }

    fn build_template(&self, client: &Client, def: &Template, hash: &str) -> Result<()> {
        let building = format!("{}b_{hash}", self.prefix());
        let version = self.version_num(client)?;
        let force = if version >= 130000 { " WITH (FORCE)" } else { "" };
        client.query(format!("DROP DATABASE IF EXISTS {}{force}", ident(&building)))?;
        client.query(format!("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'", ident(&building)))?;
        let result = (def.migrate)(&self.admin().with_dbname(&building))
            .map_err(|source| Error::Migration { key: def.key.clone(), source })
            .and_then(|()| wait_no_connections(client, &building, Duration::from_secs(30)));
        if let Err(e) = result {
            let _ = client.query(format!("DROP DATABASE IF EXISTS {}{force}", ident(&building)));
            return Err(e);
        }
        // Renamed first: a leftover `b_` is then never a template, which DROP would refuse.
        let template = template_name(self.prefix(), hash);
        client.query(format!("ALTER DATABASE {} RENAME TO {}", ident(&building), ident(&template)))?;
        if def.cached {
            client.query(format!("COMMENT ON DATABASE {} IS {}", ident(&template), literal(CACHED_COMMENT)))?;
        }
        client.query(format!("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false", ident(&template)))?;
        client.query(format!("NOTIFY {CHANNEL}, 'template'"))?;
        Ok(())
    }
}

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

/// Waits until no session is connected to database `name` (a client that just closed its
/// connection leaves a backend behind for a moment).
pub(crate) fn wait_no_connections(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = {}", literal(name));
    loop {
        let rows = client.query(sql.clone())?;
        if rows.first().and_then(|r| r[0].as_deref()) == Some("0") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Migration {
                key: name.to_owned(),
                source: format!(
                    "connections to `{name}` stayed open for {} s: close them before returning",
                    timeout.as_secs()
                )
                .into(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_what_they_are() {
        let p = "testpg_";
        assert_eq!(kind(p, &template_name(p, "abc")), Some(Kind::Template("abc")));
        assert_eq!(kind(p, &pooled_name(p, "abc")), Some(Kind::Pooled("abc")));
        assert_eq!(kind(p, &claimed_name(p, "abc")), Some(Kind::Claimed { hash: "abc", pid: std::process::id() }));
        assert_eq!(kind(p, "testpg_b_abc"), Some(Kind::Building("abc")));
        assert_eq!(kind(p, "postgres"), None);
        assert_eq!(kind("testpg_1a2b3c_", "testpg_t_abc"), None);
        assert!(claimed_name("testpg_1a2b3c_", &Template::empty().hash()).len() <= 63);
    }

    #[test]
    fn like_patterns_escape_underscores() {
        assert_eq!(like_prefix("testpg_p_"), "'testpg\\_p\\_%'");
    }
}
