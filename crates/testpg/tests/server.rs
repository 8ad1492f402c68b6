//! testpg against real PostgreSQL servers and real processes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgres::NoTls;
use testpg::{Binaries, Cluster, ClusterOptions, ConnectionInfo, Error, Server, Template};

fn connect(info: &ConnectionInfo) -> Result<postgres::Client, postgres::Error> {
    postgres::Client::connect(&info.key_value(), NoTls)
}

/// Polls `done` until it holds or `timeout` passes; returns whether it held.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

/// Whether process `pid` runs (a zombie does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !matches!(s.rsplit(')').next().and_then(|r| r.trim().chars().next()), Some('Z' | 'X')))
}

/// A fresh folder under testpg's base folder (which the server user can enter, unlike /tmp's
/// private temporary folders).
fn scratch(name: &str) -> PathBuf {
    testpg::base_dir().join(format!("test-{name}-{}", std::process::id()))
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn is_root() -> bool {
    uid_of(std::process::id()) == 0
}

fn databases(c: &mut postgres::Client, like: &str) -> Vec<String> {
    c.query("SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1", &[&like])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn cluster_starts_answers_and_stops_leaving_nothing() {
    let binaries = Binaries::discover().unwrap();
    let dir = scratch("start-stop");
    let cluster = Cluster::start(&binaries, &dir, &ClusterOptions::default()).unwrap();
    let pid = cluster.pid();
    assert!(alive(pid));
    let mut c = connect(&cluster.connection()).unwrap();
    let version: String = c.query_one("SHOW server_version", &[]).unwrap().get(0);
    assert!(version.starts_with(binaries.version()), "{version} vs {}", binaries.version());
    for (setting, value) in
        [("fsync", "off"), ("synchronous_commit", "off"), ("autovacuum", "off"), ("listen_addresses", "")]
    {
        let got: String = c.query_one(&format!("SHOW {setting}"), &[]).unwrap().get(0);
        assert_eq!(got, value, "{setting}");
    }
    drop(c);
    cluster.stop().unwrap();
    assert!(!alive(pid), "postmaster {pid} still runs");
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

#[test]
fn cold_start_with_initdb_works_too() {
    let binaries = Binaries::discover().unwrap();
    let dir = scratch("cold");
    let options = ClusterOptions::default().with_cache(false);
    let cluster = Cluster::start(&binaries, &dir, &options).unwrap();
    let mut c = connect(&cluster.connection()).unwrap();
    assert_eq!(c.query_one("SELECT 1 + 1", &[]).unwrap().get::<_, i32>(0), 2);
    drop(cluster);
    assert!(!dir.exists());
}

#[test]
fn as_root_the_server_runs_unprivileged_and_other_users_are_shut_out() {
    let binaries = Binaries::discover().unwrap();
    let dir = scratch("root");
    let cluster = Cluster::start(&binaries, &dir, &ClusterOptions::default().with_tcp(true)).unwrap();
    let server_uid = uid_of(cluster.pid());
    let data = std::fs::metadata(dir.join("data")).unwrap();
    let socket = std::fs::metadata(dir.join("socket")).unwrap();
    assert_eq!(data.uid(), server_uid);
    assert_eq!(socket.permissions().mode() & 0o777, 0o700, "the socket folder is private");
    if is_root() {
        assert_ne!(server_uid, 0, "PostgreSQL must not run as root");
        // Another local user can reach neither the socket nor, without the password, the port.
        let nobody = Command::new(binaries.dir().join("psql"))
            .args(["-h", &cluster.connection().host, "-p", "5432", "-U", "postgres", "-c", "SELECT 1"])
            .env("PGCONNECT_TIMEOUT", "5")
            .current_dir("/")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(!nobody.status.success(), "user nobody connected over the private socket");
    } else {
        assert_eq!(server_uid, uid_of(std::process::id()));
    }
    let tcp = cluster.tcp_connection().unwrap();
    assert_eq!(tcp.host, "127.0.0.1");
    let without_password = ConnectionInfo { password: None, ..tcp.clone() };
    assert!(connect(&without_password).is_err(), "TCP must ask for the password");
    let mut c = connect(&tcp).unwrap();
    assert_eq!(c.query_one("SELECT current_user::text", &[]).unwrap().get::<_, String>(0), "postgres");
}

use std::os::unix::process::CommandExt;

fn schema() -> Template {
    Template::new("items-v1", |db| {
        let mut c = connect(db)?;
        c.batch_execute(
            "CREATE TABLE item (id serial PRIMARY KEY, name text NOT NULL); INSERT INTO item (name) VALUES ('seed')",
        )?;
        Ok(())
    })
}

#[test]
fn clones_are_isolated_from_each_other() {
    let server = Server::shared().unwrap();
    let (a, b) = (server.database(&schema()).unwrap(), server.database(&schema()).unwrap());
    assert_ne!(a.name(), b.name());
    assert!(a.name().starts_with(server.prefix()));
    let mut ca = connect(a.connection()).unwrap();
    let mut cb = connect(b.connection()).unwrap();
    ca.execute("INSERT INTO item (name) VALUES ('only in a')", &[]).unwrap();
    let names = |c: &mut postgres::Client| -> Vec<String> {
        c.query("SELECT name FROM item ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect()
    };
    assert_eq!(names(&mut ca), ["seed", "only in a"]);
    assert_eq!(names(&mut cb), ["seed"], "b sees only the template's row");
}

#[test]
fn handed_back_databases_are_dropped_and_the_pool_refills() {
    let server = Server::shared().unwrap();
    let template = Template::new("pool-v1", |_| Ok(()));
    let db = server.database(&template).unwrap();
    let name = db.name().to_owned();
    let mut admin = connect(server.admin()).unwrap();
    let pooled = format!("{}p\\_%", server.prefix().replace('_', "\\_"));
    assert!(
        wait_until(Duration::from_secs(10), || databases(&mut admin, &pooled).len() >= 4),
        "the keeper keeps a warm pool: {:?}",
        databases(&mut admin, &pooled)
    );
    let mut c = connect(db.connection()).unwrap();
    c.execute("SELECT 1", &[]).unwrap();
    drop(db);
    // The connection is still open: the keeper must wait for it before dropping.
    std::thread::sleep(Duration::from_millis(50));
    assert!(databases(&mut admin, &name).contains(&name), "dropped while still connected");
    drop(c);
    assert!(wait_until(Duration::from_secs(10), || databases(&mut admin, &name).is_empty()), "{name} was not dropped");
}

#[test]
fn recycled_databases_are_handed_out_again_and_dropped_ones_are_not() {
    let server = Server::shared().unwrap();
    let template = Template::new("recycle-v1", |_| Ok(()));
    let mut admin = connect(server.admin()).unwrap();
    let oid_of = |admin: &mut postgres::Client, name: &str| -> u32 {
        admin.query_one("SELECT oid FROM pg_database WHERE datname = $1", &[&name]).unwrap().get(0)
    };
    let db = server.database(&template).unwrap();
    let (name, oid) = (db.name().to_owned(), oid_of(&mut admin, db.name()));
    let mut c = connect(db.connection()).unwrap();
    c.execute("SELECT 1", &[]).unwrap();
    drop(c);
    db.recycle();
    let again = server.database(&template).unwrap();
    assert_eq!((again.name(), oid_of(&mut admin, again.name())), (name.as_str(), oid), "the recycled one, as it was");
    connect(again.connection()).unwrap().execute("SELECT 1", &[]).unwrap();

    // Dropped, not recycled: never handed out again, and gone once unconnected.
    drop(again);
    let other = server.database(&template).unwrap();
    assert_ne!(other.name(), name);
    assert!(wait_until(Duration::from_secs(10), || databases(&mut admin, &name).is_empty()), "{name} was not dropped");
}

#[test]
fn a_failing_migration_is_reported_and_leaves_no_template() {
    let server = Server::shared().unwrap();
    let broken = Template::new("broken-v1", |_| Err("the schema is broken".into()));
    let err = server.database(&broken).unwrap_err();
    assert!(matches!(err, Error::Migration { .. }), "{err}");
    assert!(err.to_string().contains("broken-v1"), "{err}");
    let cause = std::error::Error::source(&err).map(|e| e.to_string());
    assert_eq!(cause.as_deref(), Some("the schema is broken"), "the migration's error is the source, not repeated");
    let fixed = Template::new("broken-v1", |db| {
        connect(db)?.batch_execute("CREATE TABLE fixed ()")?;
        Ok(())
    });
    let db = server.database(&fixed).unwrap();
    connect(db.connection()).unwrap().batch_execute("SELECT * FROM fixed").unwrap();
}

#[test]
fn sync_api_works_inside_a_tokio_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let name =
        runtime.block_on(async { Server::shared().unwrap().database(&Template::empty()).unwrap().name().to_owned() });
    assert!(name.contains("c_"));
}

#[test]
fn the_run_is_keyed_by_the_runner() {
    let server = Server::shared().unwrap();
    let key = server.run_dir().file_name().unwrap().to_string_lossy().into_owned();
    match std::env::var("NEXTEST_RUN_ID") {
        // nextest runs a process per test: all of them share the run's server.
        Ok(run_id) => assert_eq!(key, format!("nextest-{run_id}")),
        // cargo test runs the tests of a binary as threads of one process.
        Err(_) => assert!(key.starts_with(&format!("pid-{}-", std::process::id())), "{key}"),
    }
    assert!(alive(server.keeper_pid()));
    assert!(alive(server.postmaster_pid().unwrap()));
}

// ---- Several processes: children of this test binary that attach to a run and report. ----

/// Run as a child by the tests below: attaches to the run named in the environment and prints
/// what it found.
#[test]
#[ignore = "a helper: other tests run it as a child process"]
fn child_attach() {
    if std::env::var_os("TESTPG_RUN_ID").is_none() {
        return;
    }
    // With TESTPG_TEST_CACHED_KEY: a cached template whose migration appends a line to the file
    // TESTPG_TEST_MARKER, so that the parent can count the builds.
    let template = match (std::env::var("TESTPG_TEST_CACHED_KEY"), std::env::var_os("TESTPG_TEST_MARKER")) {
        (Ok(key), Some(marker)) => Template::new(key, move |_| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&marker)?;
            Ok(writeln!(file, "built")?)
        })
        .cached(),
        _ => Template::empty(),
    };
    match Server::shared().and_then(|s| s.database(&template).map(|db| (s, db))) {
        Ok((server, db)) => println!(
            "ATTACHED keeper={} postmaster={} run_dir={} prefix={} db={}",
            server.keeper_pid(),
            server.postmaster_pid().unwrap_or(0),
            server.run_dir().display(),
            server.prefix(),
            db.name()
        ),
        Err(e) => println!("ERROR {e}"),
    }
}

#[derive(Debug)]
struct Report(std::collections::HashMap<String, String>);

impl Report {
    fn get(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or_else(|| panic!("no {key} in {:?}", self.0))
    }
    fn pid(&self, key: &str) -> u32 {
        self.get(key).parse().unwrap()
    }
}

/// Runs [`child_attach`] in a new process of this binary in run `run_id` owned by `owner`.
fn attach_child(run_id: &str, owner: u32, env: &[(&str, &str)]) -> Result<Report, String> {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_attach", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TESTPG_RUN_ID", run_id)
        .env("TESTPG_RUN_OWNER", owner.to_string())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if let Some(line) = stdout.lines().find_map(|l| l.split_once("ATTACHED ").map(|(_, r)| r)) {
        return Ok(Report(
            line.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect(),
        ));
    }
    Err(stdout
        .lines()
        .find_map(|l| l.split_once("ERROR ").map(|(_, r)| r))
        .map_or_else(|| format!("child failed: {stdout}{}", String::from_utf8_lossy(&output.stderr)), str::to_owned))
}

/// A process standing in for a test runner: the run ends when it does. Killed on drop, so that a
/// failing test does not keep its run's server alive.
struct Owner(Child);

impl std::ops::Deref for Owner {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Owner {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn owner_process() -> Owner {
    Owner(Command::new("sleep").arg("600").stdin(Stdio::null()).spawn().unwrap())
}

fn run_id(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos())
}

#[test]
fn processes_of_one_run_share_one_server_which_a_sigkill_of_the_owner_ends() {
    let mut owner = owner_process();
    let run = run_id("share");
    let first = attach_child(&run, owner.id(), &[]).unwrap();
    let second = attach_child(&run, owner.id(), &[]).unwrap();
    assert_eq!(first.pid("keeper"), second.pid("keeper"), "one keeper per run");
    assert_eq!(first.pid("postmaster"), second.pid("postmaster"), "one server per run");
    assert_ne!(first.get("db"), second.get("db"), "each process gets its own database");
    let (keeper, postmaster) = (first.pid("keeper"), first.pid("postmaster"));
    let run_dir = PathBuf::from(first.get("run_dir"));
    assert!(alive(keeper) && alive(postmaster) && run_dir.is_dir());

    owner.kill().unwrap(); // SIGKILL
    owner.wait().unwrap();
    let gone = wait_until(Duration::from_secs(10), || !alive(postmaster) && !alive(keeper) && !run_dir.exists());
    assert!(
        gone,
        "left behind: postmaster alive={} keeper alive={} folder={}",
        alive(postmaster),
        alive(keeper),
        run_dir.exists()
    );
}

#[test]
fn a_run_whose_keeper_was_killed_is_cleaned_up_by_the_next_one() {
    let mut owner = owner_process();
    let run = run_id("stale");
    let report = attach_child(&run, owner.id(), &[]).unwrap();
    let run_dir = PathBuf::from(report.get("run_dir"));
    // Kill the keeper (its server dies with it) and the owner: nobody is left to clean up.
    unsafe { libc::kill(report.pid("keeper") as i32, libc::SIGKILL) };
    owner.kill().unwrap();
    owner.wait().unwrap();
    assert!(wait_until(Duration::from_secs(10), || !alive(report.pid("postmaster"))));
    assert!(run_dir.exists(), "the crashed run's folder is there until the next run");

    let mut next_owner = owner_process();
    let next = attach_child(&run_id("next"), next_owner.id(), &[]).unwrap();
    // Swept by the next run's start (or, when the tests run in parallel, by another run's start
    // that got there first and may still be at it).
    assert!(wait_until(Duration::from_secs(10), || !run_dir.exists()), "the crashed run's folder stayed");
    next_owner.kill().unwrap();
    next_owner.wait().unwrap();
    assert!(wait_until(Duration::from_secs(10), || !Path::new(next.get("run_dir")).exists()));
}

#[test]
fn a_cached_template_is_built_once_and_later_runs_start_with_it() {
    let base = scratch("cache-base");
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0).or_else(|_| std::fs::remove_file(&self.0));
        }
    }
    let _remove = Remove(base.clone());
    let marker = std::env::temp_dir().join(format!("testpg-cached-builds-{}", std::process::id()));
    let _remove_marker = Remove(marker.clone());
    let key = format!("cached-v1-{}", std::process::id());
    let env = [
        ("TESTPG_DIR", base.to_str().unwrap()),
        ("TESTPG_TEST_CACHED_KEY", key.as_str()),
        ("TESTPG_TEST_MARKER", marker.to_str().unwrap()),
    ];
    for i in 0..3 {
        let mut owner = owner_process();
        let report = attach_child(&run_id(&format!("cached{i}")), owner.id(), &env).unwrap();
        owner.kill().unwrap();
        owner.wait().unwrap();
        // The run's end puts its data in the cache before its folder goes; its keeper then still
        // finishes a ready copy of the cache for the next run.
        let run_dir = PathBuf::from(report.get("run_dir"));
        assert!(wait_until(Duration::from_secs(20), || !run_dir.exists()), "run {i} did not end");
        assert!(wait_until(Duration::from_secs(20), || !alive(report.pid("keeper"))), "run {i}'s keeper stayed");
    }
    let builds = std::fs::read_to_string(&marker).unwrap().lines().count();
    assert_eq!(builds, 1, "the template was built again by a later run");
}

#[test]
fn the_url_backend_touches_only_its_own_databases() {
    let binaries = Binaries::discover().unwrap();
    let dir = scratch("url");
    let cluster = Cluster::start(&binaries, &dir, &ClusterOptions::default().with_tcp(true)).unwrap();
    let mut admin = connect(&cluster.connection()).unwrap();
    admin.batch_execute("CREATE DATABASE bystander").unwrap();
    let url = cluster.tcp_connection().unwrap().url();

    let mut owner = owner_process();
    let report = attach_child(&run_id("url"), owner.id(), &[("TESTPG_URL", &url)]).unwrap();
    assert_eq!(report.pid("postmaster"), 0, "nothing was launched");
    let state = std::fs::metadata(Path::new(report.get("run_dir")).join("state.json")).unwrap();
    assert_eq!(state.permissions().mode() & 0o777, 0o600, "state.json holds the URL's password: private");
    let prefix = report.get("prefix");
    assert!(prefix.starts_with("testpg_") && prefix.len() > "testpg_".len(), "{prefix}");
    let ours = format!("{}%", prefix.replace('_', "\\_"));
    assert!(!databases(&mut admin, &ours).is_empty(), "the run's template and pool live on the server");

    owner.kill().unwrap();
    owner.wait().unwrap();
    let cleaned = wait_until(Duration::from_secs(10), || databases(&mut admin, &ours).is_empty());
    assert!(cleaned, "left behind: {:?}", databases(&mut admin, &ours));
    assert_eq!(databases(&mut admin, "bystander"), ["bystander"], "a database not ours was touched");
    assert!(wait_until(Duration::from_secs(10), || !Path::new(report.get("run_dir")).exists()));
}

#[test]
fn bad_configuration_gives_clear_errors() {
    let owner = std::process::id();
    let cases = [
        ("TESTPG_BIN_DIR", "/nonexistent/bin", "TESTPG_BIN_DIR=/nonexistent/bin does not hold `initdb` and `postgres`"),
        ("TESTPG_URL", "mysql://root@localhost/", "invalid PostgreSQL URL `mysql://root@localhost/`"),
        (
            "TESTPG_BACKEND",
            "docker",
            "TESTPG_BACKEND=docker is not available: choose `launched`, `url` or `testcontainers`",
        ),
        (
            "TESTPG_POOL_SIZE",
            "abc",
            "TESTPG_POOL_SIZE=`abc` is not valid: expected a whole number of ready databases per template",
        ),
        ("TESTPG_START_TIMEOUT", "abc", "TESTPG_START_TIMEOUT=`abc` is not valid: expected a whole number of seconds"),
        (
            "TESTPG_START_TIMEOUT",
            "0",
            "TESTPG_START_TIMEOUT=`0` is not valid: expected a whole number of seconds above 0",
        ),
        (
            "TESTPG_DIR",
            "testpg-relative-dir",
            "TESTPG_DIR=`testpg-relative-dir` is not valid: expected an absolute path",
        ),
        ("TESTPG_RUN_OWNER", "abc", "TESTPG_RUN_OWNER=`abc` is not valid: expected the pid of a running process"),
    ];
    for (variable, value, message) in cases {
        let run = run_id("bad");
        let err = attach_child(&run, owner, &[(variable, value)]).unwrap_err();
        assert!(err.contains(message), "{variable}={value}: {err}");
        let run_dir = testpg::base_dir().join("runs").join(format!("run-{run}"));
        assert!(!run_dir.exists(), "a failed start left {}", run_dir.display());
    }
    assert!(!Path::new("testpg-relative-dir").exists(), "a relative TESTPG_DIR was made");
}

// ---- Folders: we use only folders of ours, and follow no symlink. ----

/// Everything at and below `dir`, not following symlinks: path, kind, owner, mode, mtime, and a
/// file's content or a symlink's target.
fn snapshot(dir: &Path) -> Vec<(PathBuf, String, u32, u32, i64, Vec<u8>)> {
    let meta = std::fs::symlink_metadata(dir).unwrap();
    let (kind, content) = if meta.file_type().is_symlink() {
        ("link", std::fs::read_link(dir).unwrap().into_os_string().into_encoded_bytes())
    } else if meta.is_dir() {
        ("dir", Vec::new())
    } else {
        ("file", std::fs::read(dir).unwrap())
    };
    let mut all = vec![(dir.to_owned(), kind.to_owned(), meta.uid(), meta.mode(), meta.mtime(), content)];
    if kind == "dir" {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for entry in entries {
            all.extend(snapshot(&entry));
        }
    }
    all
}

/// Sets the modification time of `path` itself `seconds` back.
fn age(path: &Path, seconds: i64) {
    let when = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 - seconds;
    let times = [libc::timespec { tv_sec: when, tv_nsec: 0 }; 2];
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// What an old, dead run looks like to the sweep: an old folder without a lock, one with a lock
/// file, and data.
fn plant_runs(runs: &Path) {
    for run in ["run-old", "pid-1-1"] {
        std::fs::create_dir_all(runs.join(run)).unwrap();
    }
    std::fs::write(runs.join("pid-1-1").join("lock"), "").unwrap();
    std::fs::write(runs.join("precious"), "keep me").unwrap();
    for run in ["run-old", "pid-1-1"] {
        age(&runs.join(run), 3600);
    }
}

#[test]
fn a_base_folder_that_is_not_ours_is_refused_and_left_alone() {
    let dir = scratch("planted");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cases = vec![("open", uid_of(std::process::id()), 0o777)];
    if is_root() {
        cases.push(("foreign", 65534, 0o755));
    }
    for (name, uid, mode) in cases {
        let base = dir.join(name);
        plant_runs(&base.join("runs"));
        set_mode(&base, mode);
        std::os::unix::fs::lchown(&base, Some(uid), Some(uid)).unwrap();
        let before = snapshot(&dir);
        let err = attach_child(&run_id("planted"), std::process::id(), &[("TESTPG_DIR", base.to_str().unwrap())])
            .unwrap_err();
        let expected = format!(
            "`{}` is not ours (owner uid {uid}, mode {mode:04o}): remove it, or set TESTPG_DIR to a folder of your own",
            base.display()
        );
        assert!(err.contains(&expected), "{name}: {err}");
        assert_eq!(snapshot(&dir), before, "{name}: something changed");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn symlinks_below_the_base_folder_are_not_followed() {
    let dir = scratch("symlinks");
    std::fs::create_dir_all(&dir).unwrap();
    // A folder of ours that a planted symlink points to, with what a sweep would remove.
    let victim = dir.join("victim");
    plant_runs(&victim);
    set_mode(&victim, 0o700);
    std::fs::create_dir(dir.join("base")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("base").join("runs")).unwrap();
    let before = snapshot(&victim);
    let env = [("TESTPG_DIR", dir.join("base").into_os_string().into_string().unwrap())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let err = attach_child(&run_id("symlinked"), std::process::id(), &env).unwrap_err();
    let expected = format!("`{}` is not ours (a symlink, ", dir.join("base").join("runs").display());
    assert!(err.contains(&expected), "{err}");
    assert_eq!(snapshot(&victim), before, "the symlinked folder changed");

    // Runs that are symlinks in a real `runs` folder: a run starts (in a fresh base folder),
    // sweeps, and neither follows nor removes them.
    let base = dir.join("fresh");
    let runs = base.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    for run in ["run-planted", "pid-2-2"] {
        std::os::unix::fs::symlink(&victim, runs.join(run)).unwrap();
    }
    let mut owner = owner_process();
    let report = attach_child(&run_id("swept"), owner.id(), &[("TESTPG_DIR", base.to_str().unwrap())]).unwrap();
    assert!(report.get("run_dir").starts_with(runs.to_str().unwrap()), "{report:?}");
    owner.kill().unwrap();
    owner.wait().unwrap();
    assert!(wait_until(Duration::from_secs(10), || !Path::new(report.get("run_dir")).exists()));
    for run in ["run-planted", "pid-2-2"] {
        assert!(runs.join(run).is_symlink(), "{run} was removed");
    }
    assert_eq!(snapshot(&victim), before, "a symlinked run's target changed");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- The end of a run. ----

/// Run as a child: attaches, says so, waits for a line on stdin, then queries again.
#[test]
#[ignore = "a helper: other tests run it as a child process"]
fn child_query_after_run_end() {
    if std::env::var_os("TESTPG_RUN_ID").is_none() {
        return;
    }
    let server = Server::shared().unwrap();
    server.execute("SELECT 1").unwrap();
    println!("ATTACHED keeper={} run_dir={}", server.keeper_pid(), server.run_dir().display());
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    match server.execute("SELECT 1") {
        Ok(()) => println!("STILL ok"),
        Err(e @ Error::RunEnded { .. }) => println!("RUN_ENDED {e}"),
        Err(e) => println!("OTHER {e:?}"),
    }
    match server.database(&Template::empty()) {
        Ok(_) => println!("STILL ok"),
        Err(e @ Error::RunEnded { .. }) => println!("DATABASE_RUN_ENDED {e}"),
        Err(e) => println!("OTHER {e:?}"),
    }
}

#[test]
fn a_query_after_the_run_ended_says_so() {
    use std::io::{BufRead, Write};
    let mut owner = owner_process();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_query_after_run_end", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TESTPG_RUN_ID", run_id("ended"))
        .env("TESTPG_RUN_OWNER", owner.id().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || stdout.lines().map_while(Result::ok).try_for_each(|l| tx.send(l)));
    let next = |prefix: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(timeout).unwrap_or_else(|e| panic!("no {prefix} line from the child: {e}"));
            if let Some((_, rest)) = line.split_once(prefix) {
                return rest.to_owned();
            }
        }
    };
    let attached = next("ATTACHED ");
    let report =
        Report(attached.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect());
    let (keeper, run_dir) = (report.pid("keeper"), PathBuf::from(report.get("run_dir")));

    owner.kill().unwrap();
    owner.wait().unwrap();
    assert!(wait_until(Duration::from_secs(10), || !alive(keeper) && !run_dir.exists()), "the run did not end");
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    let said = next("RUN_ENDED ");
    assert!(said.starts_with("the run's PostgreSQL server was stopped because its run ended"), "{said}");
    assert!(said.contains(&format!("owner (pid {})", owner.id())) && said.contains("TESTPG_RUN_OWNER"), "{said}");
    let said = next("DATABASE_RUN_ENDED ");
    assert!(said.contains("stopped because its run ended"), "{said}");
    assert!(child_exits(&mut child), "the child did not end");
}

fn child_exits(child: &mut Child) -> bool {
    wait_until(Duration::from_secs(30), || matches!(child.try_wait(), Ok(Some(_))))
}

#[test]
#[cfg(feature = "testcontainers")]
fn without_a_docker_engine_the_container_backend_says_so() {
    let err = attach_child(
        &run_id("docker"),
        std::process::id(),
        &[("TESTPG_BACKEND", "testcontainers"), ("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    )
    .unwrap_err();
    assert!(err.contains("cannot start a PostgreSQL container") && err.contains("Docker engine"), "{err}");
}

#[test]
fn the_keeper_logs_to_its_run_folder() {
    let server = Server::shared().unwrap();
    let log = server.run_dir().join("keeper.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let pid = server.keeper_pid().to_string();
    assert!(text.contains("keeper starting") && text.contains(&format!("pid={pid}")), "{}: {text}", log.display());
    assert!(text.contains("server ready"), "{}: {text}", log.display());
}
