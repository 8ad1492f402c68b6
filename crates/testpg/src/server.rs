//! [`Server`], the PostgreSQL server of the current test run: attaching to it, its connection for
//! maintenance, and the databases it hands out.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::client::{Client, block};
use crate::conn::{ConnectionInfo, ident, literal};
use crate::error::{Error, Result};
use crate::keeper_link::KeeperLink;
use crate::naming::{CACHED_COMMENT, CHANNEL, claimed_name, clone_sql, drop_sql, template_name};
use crate::pool::claim;
use crate::state::{Backend, State, keeper_alive};
use crate::template::Template;

/// The PostgreSQL server of the current test run.
///
/// Get it with [`Server::shared`]; hand out isolated databases with [`Server::database`].
#[derive(Debug)]
pub struct Server {
    pub(crate) state: State,
    run_dir: PathBuf,
    admin_client: Mutex<Option<Client>>,
    pub(crate) ready_templates: Mutex<HashSet<String>>,
    pub(crate) building: Mutex<()>,
    pub(crate) version_num: OnceLock<u32>,
    pub(crate) link: KeeperLink,
}

impl Server {
    /// The run's server, started on first use.
    ///
    /// Under `cargo nextest` (which runs a process per test) all processes of the run share one
    /// server, keyed by `NEXTEST_RUN_ID`; otherwise each process has its own. The server is
    /// stopped and its folder removed when the run ends (nextest exits, or this process exits),
    /// also when the run is killed with SIGKILL.
    pub fn shared() -> Result<Arc<Server>> {
        static SHARED: OnceLock<Arc<Server>> = OnceLock::new();
        static STARTING: Mutex<()> = Mutex::new(());
        if let Some(server) = SHARED.get() {
            return Ok(server.clone());
        }
        let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(server) = SHARED.get() {
            return Ok(server.clone());
        }
        let (state, run_dir) = crate::run::attach()?;
        let server = Arc::new(Server::new(state, run_dir));
        Ok(SHARED.get_or_init(|| server).clone())
    }

    /// Superuser (or, for `url`, the given role's) settings for the maintenance database.
    pub fn admin(&self) -> &ConnectionInfo {
        &self.state.admin
    }

    /// Where this server comes from.
    pub fn backend(&self) -> Backend {
        self.state.backend
    }

    /// The prefix of every database this run creates.
    pub fn prefix(&self) -> &str {
        &self.state.prefix
    }

    /// The run's folder (state, logs, and the launched server's data).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The keeper process's id: it owns the server and ends with the run.
    pub fn keeper_pid(&self) -> u32 {
        self.state.keeper.pid
    }

    /// The launched server's postmaster process id (`None` for other backends).
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.state.postmaster.map(|p| p.pid)
    }

    /// Runs `sql` (one or more statements) as the admin role on the maintenance database, e.g. to
    /// create roles or databases of one's own.
    pub fn execute(&self, sql: &str) -> Result<()> {
        self.run_ended(self.client().and_then(|c| c.query(sql)).map(drop))
    }

    /// `result`, unless it failed because the run ended (its keeper is gone, and with it the
    /// server): then [`Error::RunEnded`], which says why and what to do, instead of the driver's
    /// bare "connection closed".
    pub(crate) fn run_ended<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Err(Error::Postgres { .. }) if !keeper_alive(&self.run_dir) => {
                Err(Error::RunEnded { run_dir: self.run_dir.clone(), owner: self.state.owner.pid })
            }
            other => other,
        }
    }

    /// The process-wide connection to the maintenance database.
    pub(crate) fn client(&self) -> Result<Client> {
        let mut slot = self.admin_client.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(c) if !c.is_closed() => Ok(c.clone()),
            _ => {
                let client = Client::connect(&self.state.admin)?;
                *slot = Some(client.clone());
                Ok(client)
            }
        }
    }
}

impl Server {
    pub(crate) fn new(state: State, run_dir: PathBuf) -> Server {
        Server {
            state,
            link: KeeperLink::new(&run_dir),
            run_dir,
            admin_client: Mutex::new(None),
            ready_templates: Mutex::new(HashSet::new()),
            building: Mutex::new(()),
            version_num: OnceLock::new(),
        }
    }
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
            return Ok(TestDatabase::new(self.clone(), self.admin().with_dbname(name)));
        }
        self.ensure_template(template, &hash)?;
        let client = self.client()?;
        let prefix = self.prefix().to_owned();
        let claimed = claimed_name(&prefix, &hash);
        let version = self.version_num(&client)?;
        let name = claimed.clone();
        block(async move { claim(&client, &prefix, &hash, &name, version).await })?;
        Ok(TestDatabase::new(self.clone(), self.admin().with_dbname(claimed)))
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
        Ok(TestDatabase::new(self.clone(), self.admin().with_dbname(name)))
    }

    pub(crate) fn version_num(&self, client: &Client) -> Result<u32> {
        if let Some(v) = self.version_num.get() {
            return Ok(*v);
        }
        let client = client.clone();
        let v = block(async move { client.version_num_async().await })?;
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
        client.query(drop_sql(&building, version))?;
        client.query(format!("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'", ident(&building)))?;
        let result = (def.migrate)(&self.admin().with_dbname(&building))
            .map_err(|source| Error::Migration { key: def.key.clone(), source })
            .and_then(|()| wait_no_connections(client, &building, Duration::from_secs(30)));
        if let Err(e) = result {
            let _ = client.query(drop_sql(&building, version));
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

/// A database of one's own, cloned from a template. Dropping it hands it back; the run's keeper
/// drops it once its connections are gone (or, after [`TestDatabase::recycle`], pools it again).
#[derive(Debug)]
pub struct TestDatabase {
    server: Arc<Server>,
    info: ConnectionInfo,
    recycle: bool,
}

impl TestDatabase {
    pub(crate) fn new(server: Arc<Server>, info: ConnectionInfo) -> TestDatabase {
        TestDatabase { server, info, recycle: false }
    }

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
