//! `verdi` against real PostgreSQL servers (testpg): real `verdi` processes, and `run_args` in process.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;
use testpg::{Binaries, Cluster, ClusterOptions, Server};

#[path = "../../aiida/tests/engine/common.rs"]
mod common;

use common::{TestProfile, aiida_template};

fn verdi(instance: &Path) -> Command {
    let mut cmd = Command::cargo_bin("verdi").unwrap();
    cmd.env("AIIDA_PATH", instance).env_remove("AIIDA_PROFILE");
    cmd
}

/// `verdi profile setup core.psql_dos` on a fresh database of the run's server.
fn setup(instance: &Path, name: &str, extra: &[&str]) -> (testpg::TestDatabase, assert_cmd::assert::Assert) {
    let db = Server::shared().unwrap().database(&aiida_template()).unwrap();
    let c = db.connection().clone();
    let port = c.port.to_string();
    let repo = format!("file://{}/repo-{name}", instance.display());
    let mut args = vec![
        "profile",
        "setup",
        "core.psql_dos",
        "-n",
        "--profile-name",
        name,
        "--email",
        "me@example.com",
        "--first-name",
        "Ada",
        "--database-hostname",
        &c.host,
        "--database-port",
        &port,
        "--database-username",
        &c.user,
        "--database-name",
        &c.dbname,
        "--repository-uri",
        &repo,
    ];
    args.extend_from_slice(extra);
    let assert = verdi(instance).args(&args).assert();
    (db, assert)
}

#[test]
fn a_profile_set_up_with_verdi_is_listed_shown_and_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, assert) = setup(dir.path(), "work", &["--test-profile"]);
    assert.success().stdout(predicate::str::contains("Success: created new profile `work`."));
    let (_db2, assert) = setup(dir.path(), "second", &["--set-as-default"]);
    assert.success();
    verdi(dir.path())
        .args(["profile", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("* second\n  work\n"));
    verdi(dir.path()).args(["-p", "work", "profile", "show"]).assert().success().stdout(
        predicate::str::contains("\"test_profile\": true")
            .and(predicate::str::contains("\"backend\": \"core.psql_dos\"")),
    );
    verdi(dir.path()).args(["profile", "set-default", "work"]).assert().success();
    verdi(dir.path())
        .args(["storage", "info"])
        .assert()
        .success()
        .stdout(predicate::str::contains("schema:       main_0002").and(predicate::str::contains("nodes:        0")));
    verdi(dir.path()).args(["user", "list"]).assert().success().stdout(predicate::str::contains("* me@example.com"));
    verdi(dir.path()).args(["storage", "migrate", "--force"]).assert().success();
}

#[test]
fn nodes_stored_by_the_library_are_shown_by_verdi() {
    let t = TestProfile::new(&aiida_template());
    let storage = aiida::storage::Storage::initialise(&t.profile).unwrap();
    let mut node = aiida::orm::data::int(42);
    node.put_file("sub/notes.txt", "a note").unwrap();
    let pk = node.store(&storage).unwrap().pk().unwrap().to_string();
    let mut single = aiida::orm::data::singlefile("data.bin", b"\x00\x01".to_vec());
    let single = single.store(&storage).unwrap().pk().unwrap().to_string();
    verdi(t.dir.path()).args(["node", "show", &pk]).assert().success().stdout(
        predicate::str::contains("type         Int").and(predicate::str::is_match(r"(?m)^value +42$").unwrap()),
    );
    verdi(t.dir.path())
        .args(["node", "attributes", &pk])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"value\": 42"));
    verdi(t.dir.path()).args(["node", "show", "999"]).assert().failure().stderr("Error: no node with pk 999\n");
    verdi(t.dir.path()).args(["node", "repo", "cat", &pk, "sub/notes.txt"]).assert().success().stdout("a note");
    verdi(t.dir.path()).args(["node", "repo", "cat", &single]).assert().success().stdout(&b"\x00\x01"[..]);
    verdi(t.dir.path()).args(["node", "repo", "cat", &pk]).assert().code(2);
    verdi(t.dir.path()).args(["node", "repo", "cat", &pk, "sub"]).assert().failure();
}

#[test]
fn bad_input_fails_with_one_line_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, assert) = setup(dir.path(), "p", &[]);
    assert.success();
    let config = dir.path().join(".aiida/config.json");
    let before = std::fs::read(&config).unwrap();

    // A duplicate profile name.
    let (_db2, assert) = setup(dir.path(), "p", &[]);
    assert.failure().stderr(predicate::str::starts_with("Error: profile `p` already exists"));
    // An unknown profile.
    verdi(dir.path())
        .args(["-p", "nope", "storage", "info"])
        .assert()
        .code(1)
        .stderr(format!("Error: profile `nope` does not exist in {}; the profiles are `p`\n", config.display()));
    // Command lines verdi does not accept: exit code 2, its own and those of plugin commands.
    for args in [&["no-such-command"][..], &["data", "core.dict"], &["data", "core.dict", "show", "x"]] {
        verdi(dir.path()).args(args).assert().code(2).stderr(predicate::str::starts_with("error: "));
    }
    // An unknown entry point.
    verdi(dir.path())
        .args(["plugin", "list", "aiida.data", "core.nope"])
        .assert()
        .failure()
        .stderr(predicate::str::starts_with("Error: entry point `core.nope` not found in group `aiida.data`"));
    assert_eq!(std::fs::read(&config).unwrap(), before, "a failed command changed config.json");

    // A corrupt config.json is reported and left alone.
    std::fs::write(&config, b"{\"CONFIG_VERSION\": ").unwrap();
    for args in [&["profile", "list"][..], &["profile", "set-default", "p"]] {
        verdi(dir.path())
            .args(args)
            .assert()
            .failure()
            .stderr(predicate::str::contains("config.json is invalid").and(predicate::str::contains("left untouched")));
    }
    assert_eq!(std::fs::read(&config).unwrap(), b"{\"CONFIG_VERSION\": ");
}

#[test]
fn profile_names_outside_aiidas_rules_are_refused_before_anything_is_made() {
    let root = tempfile::tempdir().unwrap();
    let instance = root.path().join("deep/down/inside");
    std::fs::create_dir_all(&instance).unwrap();
    let db = Server::shared().unwrap().database(&aiida_template()).unwrap();
    let c = db.connection().clone();
    let port = c.port.to_string();
    for name in ["../../../x", "", "a/b", ".."] {
        verdi(&instance)
            .args(["profile", "setup", "core.psql_dos", "--profile-name", name, "--email", "a@b"])
            .args(["--database-hostname", &c.host, "--database-port", &port])
            .args(["--database-username", &c.user, "--database-name", &c.dbname])
            .assert()
            .failure()
            .stderr(format!(
                "Error: invalid profile name `{name}`: use only letters, digits, dashes, underscores or dots, and \
                 not only dots\n"
            ));
    }
    let made: Vec<_> = walk(root.path());
    assert_eq!(made, vec![root.path().join("deep"), root.path().join("deep/down"), instance], "nothing was created");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        found.push(path.clone());
        if path.is_dir() {
            found.extend(walk(&path));
        }
    }
    found.sort();
    found
}

#[test]
fn a_new_instance_its_configuration_and_repository_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = Server::shared().unwrap().database(&aiida_template()).unwrap();
    let c = db.connection().clone();
    let port = c.port.to_string();
    verdi(dir.path())
        .args(["profile", "setup", "core.psql_dos", "--profile-name", "secret", "--email", "a@b"])
        .args(["--database-hostname", &c.host, "--database-port", &port, "--database-password", "hunter2"])
        .args(["--database-username", &c.user, "--database-name", &c.dbname])
        .assert()
        .success();
    let instance = dir.path().join(".aiida");
    assert!(std::fs::read_to_string(instance.join("config.json")).unwrap().contains("hunter2"));
    for path in walk(&instance) {
        let mode = std::fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
        } else if path.starts_with(instance.join("repository")) {
            assert_eq!(mode & 0o077 & !0o044, 0, "{}: only readable by others inside private folders", path.display());
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
    assert_eq!(std::fs::metadata(&instance).unwrap().permissions().mode() & 0o777, 0o700);
    assert!(instance.join("repository/secret/container/packs.idx").is_file());
}

#[test]
fn a_wrong_database_password_writes_no_profile() {
    let binaries = Binaries::discover().unwrap();
    let scratch = testpg::base_dir().join(format!("test-verdi-pw-{}", std::process::id()));
    let cluster = Cluster::start(&binaries, &scratch, &ClusterOptions::default().with_tcp(true)).unwrap();
    let port = cluster.tcp_connection().unwrap().port.to_string();
    let dir = tempfile::tempdir().unwrap();
    verdi(dir.path())
        .args(["profile", "setup", "core.psql_dos", "--profile-name", "x", "--email", "a@b", "--database-hostname"])
        .args(["127.0.0.1", "--database-port", &port, "--database-username", "postgres", "--database-password"])
        .args(["wrong", "--database-name", "postgres"])
        .assert()
        .failure()
        .stderr(
            // The message, then its causes, each once.
            predicate::str::starts_with("Error: cannot connect to PostgreSQL")
                .and(predicate::str::contains("\n  caused by: ").count(2))
                .and(predicate::str::contains("password authentication failed").count(1)),
        );
    assert!(!dir.path().join(".aiida/config.json").exists(), "a profile was written for an unusable database");
}

#[test]
fn deleting_a_profile_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (db, assert) = setup(dir.path(), "gone", &[]);
    assert.success();
    let name = db.name().to_owned();
    assert!(dir.path().join("repo-gone/container").is_dir());
    verdi(dir.path())
        .args(["profile", "delete", "gone", "--delete-data"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("add --force to confirm"));
    assert!(dir.path().join("repo-gone/container").is_dir(), "nothing is deleted without --force");
    verdi(dir.path()).args(["profile", "delete", "gone", "--delete-data", "--force"]).assert().success();
    assert!(!dir.path().join("repo-gone").exists());
    let mut admin = postgres::Client::connect(&Server::shared().unwrap().admin().key_value(), postgres::NoTls).unwrap();
    let left = admin.query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).unwrap();
    assert!(left.is_empty(), "the database was not dropped");
    verdi(dir.path()).args(["profile", "list"]).assert().success().stdout(predicate::str::contains("gone").not());
}

#[test]
fn plugin_list_shows_the_builtin_data_types() {
    let dir = tempfile::tempdir().unwrap();
    verdi(dir.path())
        .args(["plugin", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("* aiida.transports"));
    verdi(dir.path())
        .args(["plugin", "list", "aiida.data"])
        .assert()
        .success()
        .stdout(predicate::str::contains("* core.int").and(predicate::str::contains("* core.code.installed")));
}

#[test]
fn groups_from_the_command_line() {
    let t = TestProfile::new(&aiida_template());
    let storage = aiida::storage::Storage::initialise(&t.profile).unwrap();
    let pks: Vec<String> =
        (0..2).map(|v| aiida::orm::data::int(v).store(&storage).unwrap().pk().unwrap().to_string()).collect();
    verdi(t.dir.path())
        .args(["group", "create", "results"])
        .assert()
        .success()
        .stdout(predicate::str::contains("label 'results'"));
    verdi(t.dir.path()).args(["group", "add-nodes", "-G", "results", &pks[0], &pks[1], "--force"]).assert().success();
    verdi(t.dir.path())
        .args(["group", "list"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"(?m)^1 +results +core +2$").unwrap());
    verdi(t.dir.path())
        .args(["group", "create", "results"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("exists already"));
    verdi(t.dir.path())
        .args(["group", "add-nodes", "-G", "nope", &pks[0]])
        .assert()
        .failure()
        .stderr("Error: no group with label `nope`\n");
}

#[test]
fn data_commands_come_from_entry_points() {
    let t = TestProfile::new(&aiida_template());
    let storage = aiida::storage::Storage::initialise(&t.profile).unwrap();
    let mut dict = aiida::orm::data::dict(serde_json::from_value(serde_json::json!({"cutoff": 30})).unwrap());
    let pk = dict.store(&storage).unwrap().pk().unwrap().to_string();
    let int = aiida::orm::data::int(1).store(&storage).unwrap().pk().unwrap().to_string();
    verdi(t.dir.path()).args(["data"]).assert().success().stdout(predicate::str::contains("core.dict"));
    verdi(t.dir.path())
        .args(["data", "core.dict", "show", &pk])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"cutoff\": 30"));
    verdi(t.dir.path())
        .args(["data", "core.dict", "show", &int])
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a Dict"));
    verdi(t.dir.path())
        .args(["data", "core.nope"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("entry point `core.nope` not found"));

    // A plugin linked into this (test) binary adds its own command, run in-process.
    let mut out = Vec::new();
    aiida_cli::run_args(["verdi", "data", "test.echo", "hello"], &t.instance(), &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "echo: hello\n");
    let err = aiida_cli::run_args(["verdi", "data", "test.echo"], &t.instance(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("required"), "{err}");
}

fn echo_command() -> clap::Command {
    clap::Command::new("test.echo").arg(clap::Arg::new("word").required(true))
}

fn echo_run(
    m: &clap::ArgMatches,
    _: &aiida_cli::Context,
    out: &mut dyn std::io::Write,
) -> Result<(), aiida_cli::CliError> {
    writeln!(out, "echo: {}", m.get_one::<String>("word").unwrap()).unwrap();
    Ok(())
}

aiida::entry_point!(
    aiida_cli::DataCommands: "test.echo",
    aiida_cli::DataCommand { about: "repeats a word", command: echo_command, run: echo_run }
);
