//! The keeper: the process that owns a run's server.
//!
//! It is this very executable, run again with `TESTPG_KEEPER` set; a constructor catches that
//! before `main` (or the test harness) starts. The keeper starts the server, publishes
//! `state.json`, refills the pools of template clones, drops handed-back databases once their
//! connections are gone, and when the run's owner process ends (watched with a pidfd, so a
//! SIGKILL is noticed too) stops the server and removes the run's folder.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::binaries::Binaries;
use crate::cache::DataCache;
use crate::client::{Client, block};
use crate::cluster::{Cluster, ClusterOptions};
use crate::conn::{ConnectionInfo, ident, literal};
use crate::env::{BACKEND_ENV, BIN_DIR_ENV, KEEPER_ENV, KEEPER_OWNER_ENV, LOG_ENV, POOL_SIZE_ENV, URL_ENV};
use crate::error::{Error, Result, chain};
use crate::keeper_link::{self, Reuse};
use crate::naming::{CHANNEL, Kind, clone_sql, kind, like_prefix, pooled_name, template_name};
use crate::os::{self, ProcessId};
use crate::snapshot;
use crate::state::{Backend, State, write_state};

#[ctor::ctor(unsafe)]
fn intercept_keeper() {
    let Some(run_dir) = std::env::var_os(KEEPER_ENV) else {
        return;
    };
    // SAFETY: constructors run before main, while this process has a single thread.
    unsafe { std::env::remove_var(KEEPER_ENV) };
    // Before main, Rust has not set SIGPIPE to "ignore" yet; a closed pipe must not kill us.
    // SAFETY: setting a signal disposition has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    start_log();
    tracing::info!(run = %Path::new(&run_dir).display(), pid = std::process::id(), "keeper starting");
    let code = match std::panic::catch_unwind(|| run(PathBuf::from(run_dir))) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            tracing::error!("{}", chain(&e));
            1
        }
        Err(_) => 101,
    };
    tracing::info!(code, "keeper ending");
    std::process::exit(code);
}

/// Logs to the keeper's stderr, which is `keeper.log` in the run's folder, at the level `TESTPG_LOG`
/// names (info by default).
fn start_log() {
    let level = std::env::var(LOG_ENV).ok().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).with_max_level(level).try_init();
}

/// What the keeper holds for the run: dropping it ends the server.
enum Resource {
    /// A launched server, and the cache its data came from.
    Cluster(Cluster, DataCache),
    #[cfg(feature = "testcontainers")]
    Container(Box<testcontainers_modules::testcontainers::ContainerAsync<testcontainers_modules::postgres::Postgres>>),
    External,
}

impl Resource {
    fn has_exited(&mut self) -> bool {
        match self {
            Resource::Cluster(c, _) => c.has_exited(),
            _ => false,
        }
    }
}

fn run(run_dir: PathBuf) -> Result<()> {
    let keeper_lock_path = run_dir.join("keeper.lock");
    let keeper_lock = os::create_file(&keeper_lock_path, 0o644).map_err(Error::io("create", &keeper_lock_path))?;
    keeper_lock.lock().map_err(Error::io("lock", &keeper_lock_path))?;
    let started = parse_owner().and_then(|owner| {
        let fd = match os::pidfd(owner.pid) {
            Ok(fd) if owner.is_alive() => fd,
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => {
                return Err(Error::Keeper(format!(
                    "cannot watch the run's owner (pid {}) with pidfd_open: {e}",
                    owner.pid
                )));
            }
            _ => return Err(Error::Keeper(format!("the run's owner (pid {}) has already ended", owner.pid))),
        };
        let (resource, admin, prefix) = start_backend(&run_dir)?;
        let postmaster = match &resource {
            Resource::Cluster(c, _) => ProcessId::of(c.pid()),
            _ => None,
        };
        let state =
            State { backend: backend_from_env(), admin, prefix, keeper: ProcessId::current(), owner, postmaster };
        // Listening before the state is published: whoever sees the state finds the socket.
        let link = bind_link(&run_dir);
        write_state(&run_dir, &state)?;
        Ok((state, fd, resource, link))
    });
    let (state, owner_fd, resource, link) = match started {
        Ok(s) => s,
        Err(e) => {
            // The spawner reads this line; the folder goes with us.
            println!("error {}", chain(&e));
            let _ = os::remove_tree(&run_dir.join("server"));
            return Err(e);
        }
    };
    tracing::info!(postmaster = ?state.postmaster.map(|p| p.pid), backend = state.backend.name(), "server ready");
    println!("ready");
    let _ = std::io::stdout().flush();
    detach_stdout();
    // The next run's server will take a copy of the cache ready-made, instead of copying it.
    let copier = match &resource {
        Resource::Cluster(_, cache) => {
            let cache = cache.clone();
            std::thread::Builder::new()
                .name("testpg-ready-copy".to_owned())
                .spawn(move || {
                    os::lower_priority();
                    if let Err(e) = cache.make_ready_copy() {
                        tracing::error!("making a ready copy of the cache: {}", chain(&e));
                    }
                })
                .ok()
        }
        _ => None,
    };
    let (resource, cache_use) = block(serve(state.clone(), owner_fd, resource, link));
    let result = teardown(&run_dir, &state, resource, cache_use);
    // The run is gone; a copy for the next one still being made is finished first.
    if let Some(copier) = copier {
        let _ = copier.join();
    }
    result
}

/// The keeper's socket (see `keeper_link`), private to us; `None` if it cannot be made (test
/// processes then do the work over SQL).
fn bind_link(run_dir: &Path) -> Option<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = run_dir.join(keeper_link::SOCKET);
    let bound = std::os::unix::net::UnixListener::bind(&path).and_then(|listener| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    });
    match bound {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::error!("cannot listen on {}: {}", path.display(), chain(&e));
            None
        }
    }
}

fn parse_owner() -> Result<ProcessId> {
    let value = std::env::var(KEEPER_OWNER_ENV).unwrap_or_default();
    let parsed =
        value.split_once(':').and_then(|(p, s)| Some(ProcessId { pid: p.parse().ok()?, start: s.parse().ok()? }));
    parsed.ok_or_else(|| Error::Keeper(format!("bad {KEEPER_OWNER_ENV}=`{value}`")))
}

fn backend_from_env() -> Backend {
    match std::env::var(BACKEND_ENV).as_deref() {
        Ok("url") => Backend::Url,
        Ok("testcontainers") => Backend::Testcontainers,
        _ => Backend::Launched,
    }
}

/// Points stdout at /dev/null: the spawner has read our one line, and a test runner must not
/// see a process that outlives a test holding its output open.
fn detach_stdout() {
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are valid; dup2 atomically replaces fd 1.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

fn start_backend(run_dir: &Path) -> Result<(Resource, ConnectionInfo, String)> {
    match backend_from_env() {
        Backend::Launched => {
            let dir = std::env::var_os(BIN_DIR_ENV).map(PathBuf::from).unwrap_or_default();
            let binaries = Binaries::in_dir(dir)?;
            // The keeper's main thread lives as long as the keeper: tie the server to it.
            let mut options = ClusterOptions::default();
            options.ready_copy = true;
            let cluster = Cluster::start(&binaries, run_dir.join("server"), &options)?;
            let cache = DataCache::for_binaries(&binaries, os::server_user()?)?;
            let admin = cluster.connection();
            Ok((Resource::Cluster(cluster, cache), admin, "testpg_".to_owned()))
        }
        Backend::Url => {
            let url = std::env::var(URL_ENV).unwrap_or_default();
            let admin = ConnectionInfo::parse_url(&url)?;
            let check = admin.clone();
            block(async move { Client::connect_async(&check).await.map(drop) })?;
            Ok((Resource::External, admin, format!("testpg_{}_", os::random_hex(3))))
        }
        Backend::Testcontainers => start_container(),
    }
}

#[cfg(feature = "testcontainers")]
fn start_container() -> Result<(Resource, ConnectionInfo, String)> {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::{ImageExt, runners::AsyncRunner};
    let tag = std::env::var(crate::env::CONTAINER_TAG_ENV).unwrap_or_else(|_| "15-alpine".to_owned());
    block(async move {
        let fail = |e: testcontainers_modules::testcontainers::TestcontainersError| Error::Container(e.to_string());
        let container = Postgres::default().with_tag(tag).start().await.map_err(fail)?;
        let host = container.get_host().await.map_err(fail)?.to_string();
        let port = container.get_host_port_ipv4(5432).await.map_err(fail)?;
        let admin = ConnectionInfo {
            host,
            port,
            user: "postgres".to_owned(),
            password: Some("postgres".to_owned()),
            dbname: "postgres".to_owned(),
        };
        Ok((Resource::Container(Box::new(container)), admin, "testpg_".to_owned()))
    })
}

#[cfg(not(feature = "testcontainers"))]
fn start_container() -> Result<(Resource, ConnectionInfo, String)> {
    Err(Error::Backend("testcontainers".into(), "build with the cargo feature `testcontainers` of testpg"))
}

/// `TESTPG_POOL_SIZE`, or 4 when it is unset or empty.
pub(crate) fn pool_size() -> Result<usize> {
    let value = std::env::var(POOL_SIZE_ENV).unwrap_or_default();
    if value.is_empty() {
        return Ok(4);
    }
    value.trim().parse().map_err(|_| Error::BadSetting {
        name: POOL_SIZE_ENV,
        value,
        expected: "a whole number of ready databases per template, e.g. 4 (0: none)",
    })
}

/// Waits until the run ends: its owner exits, or we are told to stop; says which.
async fn run_end(owner: &AsyncFd<OwnedFd>, term: &mut Signal, int: &mut Signal) -> &'static str {
    tokio::select! {
        _ = owner.readable() => "the run's owner ended",
        _ = term.recv() => "terminated",
        _ = int.recv() => "interrupted",
    }
}

/// Serves the run until its owner ends (or we are told to stop, or the server dies).
async fn serve(
    state: State,
    owner_fd: OwnedFd,
    mut resource: Resource,
    link: Option<std::os::unix::net::UnixListener>,
) -> (Resource, Option<CacheUse>) {
    // SAFETY: the AsyncFd owns the pidfd, which stays open and unchanged until it is dropped.
    let owner = unsafe { AsyncFd::register_with_interest(owner_fd, Interest::READABLE) };
    let (Ok(owner), Ok(mut term), Ok(mut int)) =
        (owner, signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::warn!("cannot watch the run's owner; stopping");
        return (resource, None);
    };
    let (note_tx, mut notes) = mpsc::unbounded_channel();
    let reuse = Arc::new(Mutex::new(Reuse::default()));
    // Checked by the process that started us.
    let size = pool_size().unwrap_or(4);
    let link = link.and_then(|l| tokio::net::UnixListener::from_std(l).ok()).map(|listener| {
        let (admin, prefix, notes, reuse) = (state.admin.clone(), state.prefix.clone(), note_tx.clone(), reuse.clone());
        // First, and with a connection of its own: the run's first test is waiting for a claim,
        // which must not wait behind the pool's refills either.
        tokio::spawn(async move {
            let client = match Client::connect_async(&admin).await {
                Ok(client) => client,
                Err(e) => return tracing::error!("no claims over the socket: {}", chain(&e)),
            };
            let version = client.version_num_async().await.unwrap_or(0);
            let templates = Default::default();
            let keep = size.max(1) * 2;
            let service = keeper_link::LinkService { client, prefix, version, notes, templates, reuse, keep };
            keeper_link::serve(listener, Arc::new(service)).await;
        })
    });
    let client = match listen(&state.admin, note_tx).await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("{}; stopping", chain(&e));
            return (resource, None);
        }
    };
    let mut pool = Pool {
        client,
        prefix: state.prefix.clone(),
        size,
        version: 0,
        used: HashSet::new(),
        handed_back: Vec::new(),
        reuse,
        waiting_since: None,
    };
    pool.version = pool.client.version_num_async().await.unwrap_or(0);
    // What the cache gave this server: a run that adds to it replaces the cache at its end.
    let started_with = match &resource {
        Resource::Cluster(..) => snapshot::cached_templates(&pool.client, &state.prefix).await.ok(),
        _ => None,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        // Maintenance (refills clone databases one after the other) gives way to the run's end.
        tokio::select! {
            biased;
            reason = run_end(&owner, &mut term, &mut int) => {
                tracing::info!("{reason}; stopping");
                break;
            }
            result = pool.maintain() => if let Err(e) = result {
                tracing::error!("maintaining the pool: {}", chain(&e));
            },
        }
        // Handed-back databases whose connections linger are looked at again soon, then less often.
        let retry = match pool.waiting_since {
            Some(since) if since.elapsed() > Duration::from_secs(1) => Some(Duration::from_millis(100)),
            Some(_) => Some(Duration::from_millis(2)),
            None => None,
        };
        tokio::select! {
            reason = run_end(&owner, &mut term, &mut int) => {
                tracing::info!("{reason}; stopping");
                break;
            }
            note = notes.recv() => match note {
                Some(note) => {
                    pool.note(&note);
                    while let Ok(note) = notes.try_recv() {
                        pool.note(&note);
                    }
                }
                None => {
                    tracing::warn!("lost the server connection; stopping");
                    break;
                }
            },
            _ = tick.tick() => if resource.has_exited() {
                tracing::warn!("the server ended; stopping");
                break;
            },
            _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
        }
    }
    // The run is over: no more claims, also not from a process that outlived its runner.
    if let Some(link) = link {
        link.abort();
    }
    (resource, started_with.map(|started_with| CacheUse { started_with, used: pool.used }))
}

/// What a run did with the cache's templates, for its end.
struct CacheUse {
    /// The cached templates the server started with.
    started_with: BTreeSet<String>,
    /// The hashes of the templates the run claimed from.
    used: HashSet<String>,
}

/// A connection that receives our channel's notifications.
async fn listen(admin: &ConnectionInfo, tx: mpsc::UnboundedSender<String>) -> Result<Client> {
    let (client, mut connection) = admin.to_config().connect(NoTls).await.map_err(Error::pg(admin.to_string()))?;
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = message
                && tx.send(n.payload().to_owned()).is_err()
            {
                break;
            }
        }
    });
    let client = Client::from_parts(client, admin);
    client.query_async(&format!("LISTEN {CHANNEL}")).await?;
    Ok(client)
}

struct Pool {
    client: Client,
    prefix: String,
    size: usize,
    version: u32,
    /// Templates claimed from in this run: only their pools are kept warm.
    used: HashSet<String>,
    handed_back: Vec<String>,
    /// Databases handed back emptied, ready to be handed out again, and who holds those that were.
    reuse: Arc<Mutex<Reuse>>,
    /// Since when some handed-back database has been waiting for its connections to go.
    waiting_since: Option<std::time::Instant>,
}

impl Pool {
    fn note(&mut self, note: &str) {
        if let Some(hash) = note.strip_prefix("claimed:") {
            self.used.insert(hash.to_owned());
        }
        if let Some(name) = note.strip_prefix("drop:")
            && matches!(kind(&self.prefix, name), Some(Kind::Claimed { .. }))
            && !self.handed_back.iter().any(|n| n == name)
        {
            self.handed_back.push(name.to_owned());
        }
    }

    /// Drops handed-back databases (and those of processes that died) once nobody is connected
    /// to them, then tops up the pools of the templates this run uses once half their clones are
    /// taken.
    async fn maintain(&mut self) -> Result<()> {
        let sql = format!("SELECT datname FROM pg_database WHERE datname LIKE {}", like_prefix(&self.prefix));
        let names = self.client.column_async(&sql).await?;
        let mut pooled: HashMap<&str, usize> = HashMap::new();
        {
            let reuse = self.reuse.lock().unwrap_or_else(|e| e.into_inner());
            for name in &names {
                match kind(&self.prefix, name) {
                    Some(Kind::Claimed { pid, .. })
                        if reuse.holder(name, pid).is_some_and(|p| ProcessId::of(p).is_none())
                            && !self.handed_back.contains(name) =>
                    {
                        self.handed_back.push(name.clone());
                    }
                    Some(Kind::Pooled(hash)) => *pooled.entry(hash).or_default() += 1,
                    _ => {}
                }
            }
        }
        self.handed_back.retain(|n| names.contains(n));
        if !self.handed_back.is_empty() {
            let list = self.handed_back.iter().map(|n| literal(n)).collect::<Vec<_>>().join(", ");
            let busy = self
                .client
                .column_async(&format!("SELECT DISTINCT datname FROM pg_stat_activity WHERE datname IN ({list})"))
                .await?;
            for name in self.handed_back.clone() {
                if busy.contains(&name) {
                    continue;
                }
                // Recycled meanwhile (a reply lost, a fallback notice late): not ours to drop.
                if self.reuse.lock().unwrap_or_else(|e| e.into_inner()).in_use_again(&name) {
                    self.handed_back.retain(|n| n != &name);
                    continue;
                }
                match self.client.query_async(&format!("DROP DATABASE IF EXISTS {}", ident(&name))).await {
                    Ok(_) => {
                        self.handed_back.retain(|n| n != &name);
                        self.reuse.lock().unwrap_or_else(|e| e.into_inner()).forget(&name);
                    }
                    Err(e) => tracing::error!("dropping {name}: {}", chain(&e)),
                }
            }
        }
        self.waiting_since = match (self.handed_back.is_empty(), self.waiting_since) {
            (true, _) => None,
            (false, None) => Some(std::time::Instant::now()),
            (false, since) => since,
        };
        for name in &names {
            let Some(Kind::Template(hash)) = kind(&self.prefix, name) else {
                continue;
            };
            // Refilled when half used up: a run's first claims do not set the server cloning
            // while their tests connect.
            let have = pooled.get(hash).copied().unwrap_or(0);
            if !self.used.contains(hash) || have * 2 >= self.size {
                continue;
            }
            for _ in have..self.size {
                let sql = clone_sql(&pooled_name(&self.prefix, hash), &template_name(&self.prefix, hash), self.version);
                self.client.query_async(&sql).await?;
            }
        }
        Ok(())
    }
}

/// Drops every database whose name starts with `prefix` (templates included), after any clone
/// still being made by a cancelled refill has finished. Carries on past a database it cannot drop.
pub(crate) async fn drop_prefixed(admin: &ConnectionInfo, prefix: &str) -> Result<()> {
    let client = Client::connect_async(admin).await?;
    let in_flight = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND state = 'active'
         AND query LIKE {}",
        like_prefix(&format!("CREATE DATABASE \"{prefix}"))
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.column_async(&in_flight).await?.first().is_some_and(|n| n != "0")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let names = client
        .column_async(&format!("SELECT datname FROM pg_database WHERE datname LIKE {}", like_prefix(prefix)))
        .await?;
    let mut failed = Vec::new();
    for name in names {
        let quoted = ident(&name);
        let terminate =
            format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}", literal(&name));
        let steps = [
            format!("ALTER DATABASE {quoted} WITH IS_TEMPLATE false"),
            terminate,
            format!("DROP DATABASE IF EXISTS {quoted}"),
        ];
        for step in steps {
            if let Err(e) = client.query_async(&step).await {
                tracing::error!("dropping {name}: {}", chain(&e));
                failed.push(name.clone());
                break;
            }
        }
    }
    match failed.as_slice() {
        [] => Ok(()),
        _ => Err(Error::Keeper(format!("could not drop {}", failed.join(", ")))),
    }
}

fn teardown(run_dir: &Path, state: &State, resource: Resource, cache_use: Option<CacheUse>) -> Result<()> {
    // Wait for anyone attaching right now, then take the folder away from under the lock.
    let lock = os::open_file(&run_dir.join("lock")).ok();
    if let Some(lock) = &lock {
        let _ = lock.lock();
    }
    let result = match resource {
        Resource::Cluster(cluster, cache) => {
            let keep = cache_use.is_some_and(|CacheUse { started_with, used }| {
                let (admin, prefix) = (state.admin.clone(), state.prefix.clone());
                let prepared = block(async move {
                    let ready_clones = pool_size().unwrap_or(4);
                    snapshot::prepare(&admin, &prefix, ready_clones, &started_with, &used).await
                });
                prepared.unwrap_or_else(|e| {
                    tracing::error!("keeping this run's templates in the cache: {}", chain(&e));
                    false
                })
            });
            tracing::info!(keep_as_cache = keep, "stopping the server");
            if keep { cluster.stop_keeping_data(|data| cache.install(data)) } else { cluster.stop() }
        }
        #[cfg(feature = "testcontainers")]
        Resource::Container(container) => {
            block(async move { (*container).rm().await }).map_err(|e| Error::Container(e.to_string()))
        }
        Resource::External => {
            let (admin, prefix) = (state.admin.clone(), state.prefix.clone());
            block(async move { drop_prefixed(&admin, &prefix).await })
        }
    };
    os::remove_tree(run_dir)?;
    result
}
