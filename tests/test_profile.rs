//! `AIIDA_TEST_PROFILE`: tests run in child processes of this binary against a real profile made
//! with `verdi profile setup ... --test-profile` in an instance folder of the parent's.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aiida::config::Instance;
use aiida::orm::{QueryBuilder, data};
use aiida::storage::Storage;
use aiida_fixtures::prelude::*;

/// Sets up profile `name` with our `verdi` (in-process) in `instance_dir`, on a new database.
fn verdi_setup(cluster: &PostgresCluster, instance_dir: &Path, name: &str, test_profile: bool) {
    let db = cluster.create_database(None, None, None).unwrap();
    let port = db.database_port.to_string();
    let repository = format!("file://{}/repository-{name}", instance_dir.display());
    let mut args = vec![
        "verdi",
        "profile",
        "setup",
        "core.psql_dos",
        "--profile-name",
        name,
        "--email",
        "tester@example.com",
        "--database-hostname",
        &db.database_hostname,
        "--database-port",
        &port,
        "--database-username",
        &db.database_username,
        "--database-password",
        &db.database_password,
        "--database-name",
        &db.database_name,
        "--repository-uri",
        &repository,
    ];
    if test_profile {
        args.push("--test-profile");
    }
    aiida_cli::run_args(args, &Instance::at(instance_dir.join(".aiida")), &mut Vec::new()).unwrap();
}

fn open(instance_dir: &Path, name: &str) -> Storage {
    Storage::open(&Instance::at(instance_dir.join(".aiida")).load().unwrap().profile(name).unwrap()).unwrap()
}

fn child(test: &str, instance_dir: &Path, profile: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
        .env("AIIDA_PATH", instance_dir)
        .env("AIIDA_TEST_PROFILE", profile)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Whether this process started a temporary server (it must not, with AIIDA_TEST_PROFILE).
fn started_a_server() -> bool {
    let prefix = format!("pid-{}-", std::process::id());
    std::fs::read_dir(testpg::base_dir().join("runs"))
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with(&prefix)))
        .unwrap_or(false)
}

#[test]
#[ignore = "a helper: run as a child process with AIIDA_TEST_PROFILE"]
fn child_stores_a_node() {
    let profile = aiida_profile();
    let before = QueryBuilder::nodes().count(&profile).unwrap();
    data::int(7).store(&profile).unwrap();
    println!("CHILD profile={} before={before} server={}", profile.name(), started_a_server());
}

#[test]
#[ignore = "a helper: run as a child process with AIIDA_TEST_PROFILE"]
fn child_cleans() {
    let profile = aiida_profile_clean();
    println!(
        "CHILD profile={} before={} server={}",
        profile.name(),
        QueryBuilder::nodes().count(&profile).unwrap(),
        started_a_server()
    );
}

#[test]
#[ignore = "a helper: run as a child process with AIIDA_TEST_PROFILE"]
fn child_uses_profile_group_and_clean_in_one_test() {
    let profile = aiida_profile();
    let group = GroupProfile::get("together");
    let clean = aiida_profile_clean();
    assert_eq!(group.name(), profile.name());
    println!("CHILD together profile={} nodes={}", clean.name(), QueryBuilder::nodes().count(&clean).unwrap());
}

#[test]
#[ignore = "a helper: run as a child process with AIIDA_TEST_PROFILE"]
fn child_takes_a_group_profile() {
    let group = GroupProfile::get("a-group");
    println!("CHILD group profile={}", group.name());
}

/// Every entry under `dir`: path, mode, and content of files.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, u32, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let bytes = if meta.is_file() { std::fs::read(&path).unwrap() } else { Vec::new() };
        found.push((path.clone(), meta.mode(), bytes));
        if meta.is_dir() {
            found.extend(snapshot(&path));
        }
    }
    found.sort();
    found
}

#[rstest]
fn one_test_may_take_every_fixture_of_a_shared_profile(postgres_cluster: PostgresCluster) {
    let dir = tempfile::tempdir().unwrap();
    verdi_setup(&postgres_cluster, dir.path(), "together", true);
    let mut child = child("child_uses_profile_group_and_clean_in_one_test", dir.path(), "together").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the test deadlocked on its own profile lock");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output().unwrap();
    assert!(text(&output).contains("CHILD together profile=together nodes=0"), "{}", text(&output));
}

#[rstest]
fn the_named_test_profile_is_used_and_its_data_stays(postgres_cluster: PostgresCluster) {
    let dir = tempfile::tempdir().unwrap();
    verdi_setup(&postgres_cluster, dir.path(), "shared", true);

    let first = child("child_stores_a_node", dir.path(), "shared").output().unwrap();
    assert!(text(&first).contains("CHILD profile=shared before=0 server=false"), "{}", text(&first));
    let second = child("child_stores_a_node", dir.path(), "shared").output().unwrap();
    assert!(text(&second).contains("CHILD profile=shared before=1 server=false"), "data stays: {}", text(&second));
    assert_eq!(QueryBuilder::nodes().count(&open(dir.path(), "shared")).unwrap(), 2);

    let clean = child("child_cleans", dir.path(), "shared").output().unwrap();
    assert!(text(&clean).contains("CHILD profile=shared before=0 server=false"), "{}", text(&clean));
    assert_eq!(QueryBuilder::nodes().count(&open(dir.path(), "shared")).unwrap(), 0);
}

#[rstest]
fn an_unknown_or_non_test_profile_is_refused_and_untouched(postgres_cluster: PostgresCluster) {
    let dir = tempfile::tempdir().unwrap();
    let unknown = child("child_cleans", dir.path(), "nope").output().unwrap();
    assert!(!unknown.status.success());
    assert!(text(&unknown).contains("profile `nope` does not exist"), "{}", text(&unknown));

    verdi_setup(&postgres_cluster, dir.path(), "precious", false);
    data::int(1).store(&open(dir.path(), "precious")).unwrap();
    let before = snapshot(dir.path());
    assert!(before.iter().any(|(p, _, _)| p.ends_with("config.json")));
    for helper in ["child_cleans", "child_stores_a_node", "child_takes_a_group_profile"] {
        for name in ["precious", "nope"] {
            let refused = child(helper, dir.path(), name).output().unwrap();
            assert!(!refused.status.success(), "{helper} {name}");
            let expected = match name {
                "nope" => "profile `nope` does not exist",
                _ => "specified test profile `precious` is not a test profile.",
            };
            assert!(text(&refused).contains(expected), "{helper}: {}", text(&refused));
            assert_eq!(snapshot(dir.path()), before, "{helper} {name} changed the instance");
        }
    }
    assert_eq!(QueryBuilder::nodes().count(&open(dir.path(), "precious")).unwrap(), 1, "its data was touched");
}

/// Whether `pid` waits for a file lock (a `->` line of /proc/locks).
fn waits_for_a_lock(pid: u32) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| l.contains("->") && l.split_whitespace().any(|w| w == pid.to_string()))
}

#[rstest]
fn a_cleaning_test_waits_for_every_other_user_of_the_profile(postgres_cluster: PostgresCluster) {
    let dir = tempfile::tempdir().unwrap();
    verdi_setup(&postgres_cluster, dir.path(), "busy", true);
    // This test uses the profile (as a test holding `aiida_profile` would): a shared lock.
    let lock_dir = dir.path().join(".aiida/access");
    std::fs::create_dir_all(&lock_dir).unwrap();
    let lock = std::fs::File::create(lock_dir.join("test-profile-busy.lock")).unwrap();
    lock.lock_shared().unwrap();

    let mut cleaner = child("child_cleans", dir.path(), "busy").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !waits_for_a_lock(cleaner.id()) {
        assert!(Instant::now() < deadline, "the cleaning test never waited for the profile");
        assert!(cleaner.try_wait().unwrap().is_none(), "the cleaning test ran while the profile was in use");
        std::thread::sleep(Duration::from_millis(5));
    }
    lock.unlock().unwrap();
    let output = cleaner.wait_with_output().unwrap();
    assert!(text(&output).contains("CHILD profile=busy before=0"), "{}", text(&output));
}
