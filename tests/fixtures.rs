//! The harness's fixtures, ported from aiida-core's own tests where they apply, plus isolation
//! tests that hold under `cargo test` (threads) and `cargo nextest` (processes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use aiida::orm::{Node, QueryBuilder, data};
use aiida::plugins::{self, PluginError};
use aiida_fixtures::prelude::*;

fn node_count(profile: &AiidaProfile) -> i64 {
    QueryBuilder::nodes().count(profile).unwrap()
}

// ---- Configuration and profiles (aiida-core: tests/tools/pytest_fixtures/test_configuration.py) ----

#[rstest]
fn the_config_holds_the_profile_as_default(aiida_config: AiidaInstance, aiida_profile: AiidaProfile) {
    let config = aiida_config.config().unwrap();
    assert!(aiida_config.dir().join("config.json").is_file());
    assert_eq!(config.default_profile(), Some(aiida_profile.name()));
    assert!(aiida_config.dir().starts_with(testpg::base_dir()), "the instance lives in the run's scratch space");
    let profile = config.profile(aiida_profile.name()).unwrap();
    assert!(profile.is_test_profile());
    assert_eq!(profile.default_user_email(), Some("test@localhost"));
    assert_eq!(aiida_profile.name().len(), 32, "random hex names, as aiida");
}

#[rstest]
fn all_fixtures_of_a_test_share_its_instance_and_profile(
    aiida_instance: AiidaInstance,
    aiida_profile: AiidaProfile,
    aiida_manager: AiidaManager,
) {
    assert_eq!(aiida_profile.instance().dir(), aiida_instance.dir());
    assert_eq!(aiida_manager.instance().dir(), aiida_instance.dir());
    let again = aiida_fixtures::fixtures::aiida_profile();
    assert_eq!(again.profile().uuid(), aiida_profile.profile().uuid());
    let loaded = aiida_manager.load_profile(Some(aiida_profile.name())).unwrap();
    assert_eq!(loaded.profile().uuid(), aiida_profile.profile().uuid());
}

#[rstest]
fn the_tmp_profile_is_a_new_test_profile(aiida_profile: AiidaProfile, aiida_profile_tmp: AiidaProfile) {
    assert!(aiida_profile_tmp.profile().is_test_profile());
    assert_ne!(aiida_profile_tmp.profile().uuid(), aiida_profile.profile().uuid());
    assert_ne!(aiida_profile_tmp.instance().dir(), aiida_profile.instance().dir());
}

// ---- Profile factory (aiida-core: test_aiida_profile_factory*) ----

#[rstest]
fn the_profile_factory_takes_storage_name_and_email(
    aiida_profile_factory: AiidaProfileFactory,
    config_psql_dos: ConfigPsqlDos,
) {
    let storage = config_psql_dos.create().unwrap();
    let options = ProfileOptions {
        name: Some("custom".into()),
        email: Some("me@example.com".into()),
        storage: Some(storage.clone()),
    };
    let profile = aiida_profile_factory.create(options).unwrap();
    assert_eq!(profile.name(), "custom");
    assert_eq!(profile.profile().psql_dos().unwrap(), storage);
    assert_eq!(aiida::orm::User::default_user(&profile).unwrap().email(), "me@example.com");
    let config = aiida_profile_factory.instance().config().unwrap();
    assert_eq!(config.default_profile(), Some("custom"), "the new profile is the default (aiida PR #6893)");

    let again = ProfileOptions { name: Some("custom".into()), ..ProfileOptions::default() };
    let err = aiida_profile_factory.create(again).unwrap_err();
    assert!(err.to_string().starts_with("profile `custom` already exists"), "{err}");
}

#[rstest]
fn the_profile_factory_refuses_names_outside_aiidas_rules(aiida_profile_factory: AiidaProfileFactory) {
    let before = std::fs::read(aiida_profile_factory.instance().dir().join("config.json")).ok();
    for name in ["../../../x", "", "a/b"] {
        let options = ProfileOptions { name: Some(name.into()), ..ProfileOptions::default() };
        let err = aiida_profile_factory.create(options).unwrap_err();
        assert!(err.to_string().starts_with(&format!("invalid profile name `{name}`")), "{err}");
    }
    assert_eq!(std::fs::read(aiida_profile_factory.instance().dir().join("config.json")).ok(), before);
}

#[rstest]
fn a_test_instance_and_its_configuration_are_private(aiida_profile: AiidaProfile) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let instance = aiida_profile.instance().dir();
    assert_eq!(mode(instance), 0o700);
    assert_eq!(mode(instance.parent().unwrap()), 0o700, "the test's scratch folder");
    assert_eq!(mode(&instance.join("config.json")), 0o600);
    let repository = aiida_profile.profile().psql_dos().unwrap().repository_path();
    assert_eq!(mode(&repository), 0o700);
    assert_eq!(mode(&repository.join("container")), 0o700);
}

#[rstest]
fn postgres_cluster_creates_databases_with_aiidas_defaults(postgres_cluster: PostgresCluster) {
    let db = postgres_cluster.create_database(None, None, None).unwrap();
    assert_eq!((db.database_username.as_str(), db.database_password.as_str()), ("guest", "guest"));
    let odd = postgres_cluster.create_database(None, Some("odd\"user"), Some("pa$$'word$$; DROP")).unwrap();
    assert_eq!(odd.database_username, "odd\"user", "quotes and dollar signs are data, not SQL");
    let named = postgres_cluster
        .create_database(Some(&format!("named_{}", std::process::id())), Some("owner_x"), Some("pw"))
        .unwrap();
    let info = testpg::ConnectionInfo {
        host: named.database_hostname.clone(),
        port: named.database_port,
        user: named.database_username.clone(),
        password: Some(named.database_password.clone()),
        dbname: named.database_name.clone(),
    };
    let mut client = postgres::Client::connect(&info.key_value(), postgres::NoTls).unwrap();
    let owner: String = client
        .query_one("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = current_database()", &[])
        .unwrap()
        .get(0);
    assert_eq!(owner, "owner_x");
}

// ---- Clean semantics ----

#[rstest]
fn the_clean_fixture_empties_a_used_profile(aiida_profile: AiidaProfile) {
    let mut node = data::int(1);
    node.store(&aiida_profile).unwrap();
    assert_eq!(node_count(&aiida_profile), 1);
    let clean = aiida_profile_clean();
    assert_eq!(clean.profile().uuid(), aiida_profile.profile().uuid(), "the same profile, cleaned");
    assert_eq!(node_count(&clean), 0);
    assert_eq!(aiida::orm::User::list(&clean).unwrap().len(), 1, "the default user is back");
}

#[rstest]
fn a_storage_used_before_holds_nothing_of_the_test_before() {
    // Under `cargo test` the second profile gets the first one's storage, cleaned; under nextest
    // its database, emptied and handed back through the run's keeper.
    let first = aiida_profile_tmp();
    let (first_name, first_container) = (first.name().to_owned(), first.repository().container_id().unwrap());
    let mut node = data::int(1);
    node.put_file("notes.txt", "from the first test").unwrap();
    node.store(&first).unwrap();
    aiida::orm::Computer::new("c", "localhost", "core.local", "core.direct").store(&first).unwrap();
    aiida::orm::Group::new("g").store(&first).unwrap();
    aiida::orm::User::get_or_create(&first, "someone@else").unwrap();
    first.set_setting("test|left", serde_json::json!("behind"), "set by the first test").unwrap();
    drop(first);

    let options = ProfileOptions { email: Some("second@test".into()), ..ProfileOptions::default() };
    let second = AiidaProfile::create(&AiidaInstance::temporary().unwrap(), options).unwrap();
    assert_ne!(second.name(), first_name);
    let counts = second.info().unwrap().counts;
    assert!(counts.iter().all(|(entity, n)| *n == i64::from(entity == "users")), "{counts:?}");
    let users = aiida::orm::User::list(&second).unwrap();
    assert_eq!(users.iter().map(|u| u.email()).collect::<Vec<_>>(), ["second@test"]);
    assert_ne!(second.repository().container_id().unwrap(), first_container, "a new repository container");
    assert_eq!(second.setting("test|left").unwrap(), None, "a setting of the test before");
    assert_eq!(second.repository().count_and_size().unwrap(), (0, 0));
    let mut node = data::int(2);
    assert_eq!(node.store(&second).unwrap().pk(), Some(1), "ids start again");
}

#[rstest]
fn a_storage_still_in_use_is_not_passed_on() {
    let first = aiida_profile_tmp();
    let database = first.profile().psql_dos().unwrap().database_name;
    // A second session on the first test's database outlives its profile.
    let other = aiida::storage::Storage::open(first.profile()).unwrap();
    drop(first);
    let second = aiida_profile_tmp();
    assert_ne!(second.profile().psql_dos().unwrap().database_name, database, "handed on while still in use");
    assert_eq!(QueryBuilder::nodes().count(&other).unwrap(), 0);
}

#[test]
#[ignore = "a helper: run as a child process, then killed"]
fn child_holds_a_profile_until_killed() {
    let profile = aiida_profile();
    let mut node = data::int(1);
    node.put_file("notes.txt", "written before the kill").unwrap();
    node.store(&profile).unwrap();
    profile.clean().unwrap();
    data::int(2).store(&profile).unwrap();
    println!("READY {}", testpg::Server::shared().unwrap().run_dir().display());
    // Until the parent kills us (it keeps our stdin open).
    let _ = std::io::stdin().read_line(&mut String::new());
}

#[test]
fn a_killed_test_leaves_nothing_outside_its_run_folder_which_goes_too() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_holds_a_profile_until_killed", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TMPDIR", tmp.path())
        // A run of its own, which ends with the child.
        .env_remove("NEXTEST_RUN_ID")
        .env_remove("TESTPG_RUN_ID")
        .env_remove("AIIDA_TEST_PROFILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    // libtest prints `test NAME ... ` before the test's own output, on the same line.
    while !line.contains("READY ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child ended before it was ready");
    }
    let run_dir = std::path::PathBuf::from(line.trim_end().split("READY ").nth(1).unwrap());
    assert!(run_dir.join("aiida").is_dir(), "the test's instance and repository live in its run folder");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while run_dir.exists() {
        assert!(Instant::now() < deadline, "the killed run's folder {} stayed", run_dir.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "scratch left in the temporary folder: {left:?}");
}

// ---- Isolation: each test its own profile, whatever the runner ----

fn store_and_count(profile: &AiidaProfile, label: &str) {
    let mut node = data::string(label);
    node.set_label(label).unwrap();
    node.store(profile).unwrap();
    assert_eq!(node_count(profile), 1, "another test's nodes are visible");
    let found: Vec<Node> = QueryBuilder::nodes().all(profile).unwrap();
    assert_eq!(found[0].label(), label);
}

#[rstest]
fn isolation_a(aiida_profile: AiidaProfile) {
    store_and_count(&aiida_profile, "a");
}

#[rstest]
fn isolation_b(aiida_profile: AiidaProfile) {
    store_and_count(&aiida_profile, "b");
}

#[rstest]
fn isolation_c(aiida_profile_clean: AiidaProfile) {
    store_and_count(&aiida_profile_clean, "c");
}

// ---- A profile shared by a named group (aiida's aiida_profile_clean_class) ----

static GROUP_BUSY: AtomicBool = AtomicBool::new(false);
static GROUP_PROFILE: OnceLock<String> = OnceLock::new();
static GROUP_LABELS: Mutex<Vec<&str>> = Mutex::new(Vec::new());

#[fixture]
fn my_group() -> GroupProfile {
    GroupProfile::get("fixture-tests")
}

fn group_test(profile: &GroupProfile, label: &'static str) {
    assert!(!GROUP_BUSY.swap(true, Ordering::SeqCst), "two tests of the group overlapped");
    assert_eq!(GROUP_PROFILE.get_or_init(|| profile.name().to_owned()), profile.name(), "one profile per group");
    let mut node = data::string(label);
    node.store(profile).unwrap();
    let mut labels = GROUP_LABELS.lock().unwrap();
    labels.push(label);
    assert_eq!(node_count(profile), labels.len() as i64, "the group's earlier tests' nodes are there");
    GROUP_BUSY.store(false, Ordering::SeqCst);
}

#[rstest]
fn group_first(my_group: GroupProfile) {
    group_test(&my_group, "first");
}

#[rstest]
fn group_second(my_group: GroupProfile) {
    group_test(&my_group, "second");
}

// ---- Entry points (aiida-core: tests/test_conftest.py, EntryPointManager) ----

#[derive(Debug)]
struct MyCalculation(&'static str);

#[rstest]
fn entry_points_can_be_added_by_string_or_name_and_group(mut entry_points: EntryPointManager) {
    entry_points.add(MyCalculation("by string"), "aiida.calculations:test.by_string").unwrap();
    entry_points.add_to(MyCalculation("by name"), "aiida.calculations", "test.by_name");
    assert_eq!(plugins::calculation_factory::<MyCalculation>("test.by_string").unwrap().0, "by string");
    assert_eq!(plugins::calculation_factory::<MyCalculation>("calculations:test.by_name").unwrap().0, "by name");
}

#[rstest]
fn malformed_entry_point_strings_are_refused(mut entry_points: EntryPointManager) {
    for bad in ["no_colon", "a:b:c"] {
        let err = entry_points.add(MyCalculation("x"), bad).unwrap_err();
        assert_eq!(err.to_string(), "invalid `entry_point_string` format, should `group:name`.");
        let err = entry_points.remove(bad).unwrap_err();
        assert_eq!(err.to_string(), "invalid `entry_point_string` format, should `group:name`.");
    }
}

#[rstest]
fn removing_entry_points(mut entry_points: EntryPointManager) {
    let err = entry_points.remove("aiida.data:test.never_registered").unwrap_err();
    assert_eq!(err.to_string(), "entry point `test.never_registered` does not exist in group `aiida.data`.");
    // The name exists in another group: a silent no-op, as in aiida.
    entry_points.remove("aiida.nonexistent:core.int").unwrap();
    assert!(aiida::orm::data::data_factory("core.int").is_ok());
    entry_points.remove("aiida.data:core.int").unwrap();
    assert!(matches!(aiida::orm::data::data_factory("core.int"), Err(PluginError::Missing { .. })));
}

#[rstest]
fn two_values_for_one_name_make_loading_fail(mut entry_points: EntryPointManager) {
    entry_points.add(MyCalculation("one"), "aiida.calculations:test.twice").unwrap();
    entry_points.add(MyCalculation("two"), "aiida.calculations:test.twice").unwrap();
    let err = plugins::calculation_factory::<MyCalculation>("test.twice").unwrap_err();
    assert!(matches!(err, PluginError::Multiple { .. }), "{err}");
}

#[rstest]
fn entry_point_changes_end_with_the_test() {
    {
        let mut scoped = entry_points();
        scoped.add(MyCalculation("gone soon"), "aiida.calculations:test.scoped").unwrap();
        scoped.remove("aiida.data:core.int").unwrap();
        std::thread::spawn(|| {
            assert!(plugins::get("aiida.calculations", "test.scoped").is_err(), "visible to another test's thread");
            assert!(plugins::get("aiida.data", "core.int").is_ok());
        })
        .join()
        .unwrap();
    }
    assert!(plugins::get("aiida.calculations", "test.scoped").is_err());
    assert!(plugins::get("aiida.data", "core.int").is_ok());
}

// ---- Entry-point scopes beyond the test's thread ----

aiida::entry_point!(hidden, "aiida.calculations", "test.hidden", MyCalculation("hidden"));

/// Where the parent test puts its scope's description for the child process.
const SCOPE_FOR_CHILD: &str = "AIIDA_FIXTURES_TEST_SCOPE";

#[rstest]
fn a_tests_entry_points_reach_a_process_of_the_same_binary(mut entry_points: EntryPointManager) {
    entry_points.enable("aiida.calculations:test.hidden").unwrap();
    entry_points.remove("aiida.data:core.int").unwrap();
    let description = entry_points.scope().describe().unwrap();
    // The test binary re-executed, as a daemon worker will be: it runs only the child test below.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "entry_point_scope_child", "--nocapture", "--test-threads", "1"])
        .env(SCOPE_FOR_CHILD, description)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "the child failed: {stdout}{}", String::from_utf8_lossy(&child.stderr));
    assert!(stdout.contains("1 passed"), "the child test did not run: {stdout}");

    // A value that exists only in this process cannot go: a clear error says what to do instead.
    entry_points.add(MyCalculation("local"), "aiida.calculations:test.local").unwrap();
    let err = entry_points.scope().describe().unwrap_err();
    assert!(err.to_string().contains("`aiida.calculations:test.local` was added at run time"), "{err}");
}

/// Run by the test above in a process of its own (ignored otherwise).
#[rstest]
#[ignore = "run by a_tests_entry_points_reach_a_process_of_the_same_binary"]
fn entry_point_scope_child() {
    let description = std::env::var(SCOPE_FOR_CHILD).expect("started by the parent test");
    let scope = plugins::EntryPointScope::from_description(&description).unwrap();
    assert!(plugins::get("aiida.calculations", "test.hidden").is_err(), "hidden outside the scope");
    scope.in_scope(|| {
        assert_eq!(plugins::calculation_factory::<MyCalculation>("test.hidden").unwrap().0, "hidden");
        assert!(aiida::orm::data::data_factory("core.int").is_err(), "the parent's removal reached the child");
    });
}

// ---- Computers and codes (aiida-core: tests/tools/pytest_fixtures/test_orm.py) ----

#[rstest]
fn aiida_computer_gets_or_creates_by_label(aiida_computer: ComputerFactory) {
    let spec = ComputerSpec { label: Some("shared".into()), ..ComputerSpec::default() };
    let first = aiida_computer.get(spec.clone()).unwrap();
    assert_eq!(aiida_computer.get(spec.clone()).unwrap().uuid(), first.uuid());
    assert_ne!(aiida_computer.get(ComputerSpec::default()).unwrap().uuid(), first.uuid(), "no label: a new one");
    assert_eq!(first.metadata().get("minimum_scheduler_poll_interval"), Some(&serde_json::json!(0.0)));
    let workdir = std::path::PathBuf::from(first.workdir().unwrap());
    assert!(workdir.is_dir() && workdir.starts_with(testpg::Server::shared().unwrap().run_dir()), "{workdir:?}");
    let err = aiida_computer.get(ComputerSpec { transport_type: "core.ssh".into(), ..spec }).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a computer labelled `shared` exists already as localhost with core.local + core.direct, not localhost with \
         core.ssh + core.direct: choose another label"
    );
}

#[rstest]
fn threads_racing_for_one_label_get_one_computer(aiida_profile: AiidaProfile) {
    let uuids: Vec<_> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let profile = aiida_profile.clone();
                scope.spawn(move || {
                    let computers = aiida_fixtures::ComputerFactory::for_profile(profile);
                    computers
                        .get(ComputerSpec { label: Some("raced".into()), ..ComputerSpec::default() })
                        .unwrap()
                        .uuid()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert!(uuids.windows(2).all(|w| w[0] == w[1]), "{uuids:?}");
}

#[rstest]
fn aiida_computer_local_configures_unless_told_not_to(
    aiida_profile: AiidaProfile,
    aiida_computer_local: LocalComputerFactory,
) {
    let user = aiida::orm::User::default_user(&aiida_profile).unwrap();
    let configured = aiida_computer_local.get(Some("configured"), true).unwrap();
    assert_eq!(configured.authinfo(&aiida_profile, &user).unwrap().auth_params(), &serde_json::Map::new());
    let bare = aiida_computer_local.get(Some("bare"), false).unwrap();
    assert!(!bare.is_configured(&aiida_profile, &user).unwrap());
}

#[rstest]
fn aiida_localhost_is_a_configured_local_computer(aiida_profile: AiidaProfile, aiida_localhost: aiida::orm::Computer) {
    assert_eq!(
        (
            aiida_localhost.label(),
            aiida_localhost.hostname(),
            aiida_localhost.transport_type(),
            aiida_localhost.scheduler_type()
        ),
        ("localhost", "localhost", "core.local", "core.direct")
    );
    let user = aiida::orm::User::default_user(&aiida_profile).unwrap();
    assert!(aiida_localhost.is_configured(&aiida_profile, &user).unwrap());
    assert_eq!(aiida_fixtures::fixtures::aiida_localhost().uuid(), aiida_localhost.uuid(), "the same one again");
}

#[rstest]
fn aiida_code_installed_stores_aiidas_attributes(aiida_code_installed: InstalledCodeFactory) {
    let spec = InstalledCodeSpec {
        label: Some("adder".into()),
        default_calc_job_plugin: Some("core.arithmetic.add".into()),
        prepend_text: "module load x".into(),
        ..InstalledCodeSpec::default()
    };
    let code = aiida_code_installed.get(spec.clone()).unwrap();
    assert_eq!(code.node_type(), "data.core.code.installed.InstalledCode.");
    for (key, value) in [
        ("filepath_executable", serde_json::json!("/bin/bash")),
        ("input_plugin", serde_json::json!("core.arithmetic.add")),
        ("prepend_text", serde_json::json!("module load x")),
        ("append_text", serde_json::json!("")),
        ("use_double_quotes", serde_json::json!(false)),
        ("with_mpi", serde_json::Value::Null),
        ("wrap_cmdline_params", serde_json::json!(false)),
    ] {
        assert_eq!(code.attribute(key), Some(&value), "{key}");
    }
    assert_eq!(aiida_code_installed.get(spec).unwrap().pk(), code.pk(), "found by label");
}

#[rstest]
fn aiida_local_code_factory_finds_executables_on_the_path(aiida_local_code_factory: LocalCodeFactory) {
    let code = aiida_local_code_factory.get("core.arithmetic.add", "bash").unwrap();
    let path = code.attribute("filepath_executable").and_then(|v| v.as_str()).unwrap().to_owned();
    assert!(path.ends_with("/bash") && std::path::Path::new(&path).is_file(), "{path}");
    assert_eq!(aiida_local_code_factory.get("core.arithmetic.add", "bash").unwrap().pk(), code.pk());
    let err = aiida_local_code_factory.get("core.arithmetic.add", "no-such-program-here").unwrap_err();
    assert_eq!(err.to_string(), "The executable \"no-such-program-here\" was not found in the $PATH.");
}

// ---- The daemon (aiida-core: tests/tools/pytest_fixtures/test_daemon.py) ----

/// A code on a local computer without a login shell (quick), for `core.arithmetic.add`.
fn adder(computers: &ComputerFactory, executable: &str) -> aiida::orm::Node {
    let no_login_shell = serde_json::json!({"use_login_shell": false}).as_object().cloned();
    let computer = computers
        .get(ComputerSpec {
            label: Some("quick".into()),
            configuration_kwargs: no_login_shell,
            ..ComputerSpec::default()
        })
        .unwrap();
    let mut code = aiida::orm::data::installed_code(
        &computer,
        executable,
        &format!("add-{}", executable.len()),
        Some("core.arithmetic.add"),
    )
    .unwrap();
    code.store(&aiida_fixtures::fixtures::aiida_profile()).unwrap();
    code
}

fn add(code: &aiida::orm::Node, x: i64, y: i64) -> aiida_fixtures::aiida_engine::ProcessBuilder {
    let mut builder = aiida_fixtures::aiida_engine::ProcessBuilder::for_code(code).unwrap();
    builder.value("x", x).value("y", y);
    builder
}

#[rstest]
fn submit_and_await_runs_a_calculation_on_the_daemon(submit_and_await: TestDaemon, aiida_computer: ComputerFactory) {
    let code = adder(&aiida_computer, "/bin/bash");
    let node = submit_and_await.submit_and_await(&add(&code, 1, 2)).unwrap();
    assert_eq!(node.attribute("process_state"), Some(&serde_json::json!("finished")));
    let sum = node.outgoing(&aiida_fixtures::fixtures::aiida_profile()).unwrap().into_iter().find(|l| l.label == "sum");
    assert_eq!(sum.unwrap().node.attribute("value"), Some(&serde_json::json!(3)));
    assert!(submit_and_await.client().is_daemon_running());
}

#[rstest]
fn submit_and_await_takes_an_entry_point_with_inputs_or_a_process_node(
    submit_and_await: TestDaemon,
    aiida_computer: ComputerFactory,
) {
    use aiida_fixtures::aiida::orm::data;
    let storage = aiida_fixtures::fixtures::aiida_profile();
    let sum = |node: &aiida::orm::Node| {
        let outputs = node.outgoing(&storage).unwrap();
        outputs.into_iter().find(|l| l.label == "sum").map(|l| l.node.attribute("value").cloned())
    };
    let code = adder(&aiida_computer, "/bin/bash");
    let (x, y) = (data::int(20), data::int(22));
    let node =
        submit_and_await.submit_and_await(("core.arithmetic.add", [("code", &code), ("x", &x), ("y", &y)])).unwrap();
    assert_eq!(sum(&node), Some(Some(serde_json::json!(42))));

    // A process only created is queued; one that ended is returned as it is.
    let created = aiida_fixtures::aiida_engine::create_process(&storage, &add(&code, 1, 2)).unwrap();
    let node = submit_and_await.submit_and_await(&created).unwrap();
    assert_eq!(sum(&node), Some(Some(serde_json::json!(3))));
    let again = submit_and_await.submit_and_await(&node).unwrap();
    assert_eq!(again.pk(), node.pk());

    let err = submit_and_await.submit_and_await(&code).unwrap_err();
    let expected = format!("not node {} ({}): submit a builder instead", code.pk().unwrap(), code.node_type());
    assert_eq!(err.to_string(), format!("invalid inputs: only a stored process node can be submitted, {expected}"));
    let err = submit_and_await.submit_and_await(&x).unwrap_err();
    assert!(err.to_string().ends_with("not an unstored data.core.int.Int. node: submit a builder instead"), "{err}");
}

#[rstest]
fn submit_and_await_fails_at_once_on_another_end_and_names_the_state_on_a_timeout(
    submit_and_await: TestDaemon,
    aiida_computer: ComputerFactory,
) {
    let missing = adder(&aiida_computer, "/nonexistent/add");
    let err = submit_and_await.submit_and_await(&add(&missing, 1, 2)).unwrap_err();
    assert!(err.to_string().contains("ended excepted: the executable /nonexistent/add"), "{err}");
    let code = adder(&aiida_computer, "/bin/bash");
    let mut slow = add(&code, 1, 2);
    slow.option("sleep", 3);
    let err =
        submit_and_await.submit_and_await_state(&slow, "killed", std::time::Duration::from_millis(300)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("did not reach killed within 0.3 s: it is waiting") && text.contains("the daemon log"),
        "{text}"
    );
}

#[rstest]
fn the_daemon_fixtures_start_and_stop_workers(daemon_client: TestDaemon) {
    assert!(!daemon_client.client().is_daemon_running());
    daemon_client.client().start(2).unwrap();
    assert!(daemon_client.client().is_daemon_running());
    let pids = daemon_client.client().worker_pids();
    assert_eq!(pids.len(), 2);
    drop(daemon_client);
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "worker {pid} outlived its fixture");
    }
}

// ---- SSH (cargo feature `ssh`): a private sshd, nothing configured by hand ----

#[cfg(feature = "ssh")]
#[rstest]
fn the_run_has_one_ssh_key_pair(ssh_key: std::path::PathBuf) {
    let public = std::fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    let private = std::fs::read_to_string(&ssh_key).unwrap();
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&ssh_key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(aiida_fixtures::fixtures::ssh_key(), ssh_key, "one per run");
}

#[cfg(feature = "ssh")]
#[rstest]
fn core_arithmetic_add_runs_over_core_ssh_with_run_and_through_the_daemon(
    aiida_computer_ssh: SshComputerFactory,
    submit_and_await: TestDaemon,
) {
    let storage = aiida_fixtures::fixtures::aiida_profile();
    let computer = aiida_computer_ssh.get(Some("ssh"), true).unwrap();
    assert_eq!((computer.hostname(), computer.transport_type()), ("localhost", "core.ssh"));
    let mut code =
        aiida::orm::data::installed_code(&computer, "/bin/bash", "add-ssh", Some("core.arithmetic.add")).unwrap();
    code.store(&storage).unwrap();
    let sum =
        |outputs: &std::collections::BTreeMap<String, aiida::orm::Node>| outputs["sum"].attribute("value").cloned();
    let (outputs, node) = aiida_fixtures::aiida_engine::run_get_node(&storage, &add(&code, 1, 2)).unwrap();
    assert_eq!(sum(&outputs), Some(serde_json::json!(3)));
    assert_eq!(node.attribute("exit_status"), Some(&serde_json::json!(0)));

    let node = submit_and_await.submit_and_await(&add(&code, 20, 22)).unwrap();
    let outputs = node.outgoing(&storage).unwrap();
    let sum = outputs.into_iter().find(|l| l.label == "sum").unwrap();
    assert_eq!(sum.node.attribute("value"), Some(&serde_json::json!(42)));

    let unconfigured = aiida_computer_ssh.get(None, false).unwrap();
    let user = aiida::orm::User::default_user(&storage).unwrap();
    assert!(!unconfigured.is_configured(&storage, &user).unwrap());
}

/// The processes whose command line contains `needle`, and their children.
#[cfg(feature = "ssh")]
fn processes_with(needle: &str) -> Vec<u32> {
    let stat_parent = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>()).unwrap_or_default();
        (state.first() != Some(&"Z")).then(|| state.get(1).and_then(|p| p.parse::<u32>().ok())).flatten()
    };
    let pids: Vec<u32> =
        std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    let listeners: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect();
    let children = pids.iter().copied().filter(|pid| stat_parent(*pid).is_some_and(|p| listeners.contains(&p)));
    listeners.iter().copied().filter(|pid| stat_parent(*pid).is_some()).chain(children).collect()
}

#[cfg(feature = "ssh")]
#[test]
fn the_private_sshd_and_its_sessions_end_when_the_test_process_is_killed() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "sshd_starter_child", "--nocapture", "--test-threads", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.map_while(Result::ok).any(|line| line.contains("SSHD READY"));
    assert!(ready, "the child started its server and logged in");
    let needle = format!("/sshd-{}-", child.id());
    let running = processes_with(&needle);
    assert!(running.len() >= 2, "a server and the child's session: {running:?}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running
        .iter()
        .any(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")))
    {
        assert!(std::time::Instant::now() < deadline, "sshd outlived the killed test process: {running:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Run by the test above in a process of its own, which it kills (ignored otherwise).
#[cfg(feature = "ssh")]
#[test]
#[ignore = "run by the_private_sshd_and_its_sessions_end_when_the_test_process_is_killed"]
fn sshd_starter_child() {
    use aiida_fixtures::aiida_engine::groups::Transports;
    let storage = aiida_fixtures::fixtures::aiida_profile();
    let computer = aiida_fixtures::fixtures::aiida_computer_ssh().get(None, true).unwrap();
    let user = aiida::orm::User::default_user(&storage).unwrap();
    let params = computer.authinfo(&storage, &user).unwrap().auth_params().clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let transport = runtime.block_on(async {
        let ssh = plugins::factory::<Transports>("core.ssh").unwrap();
        ssh.open(computer.hostname(), &params).await.unwrap()
    });
    let out = runtime.block_on(transport.exec_command_wait("echo in", None, None)).unwrap();
    assert_eq!(out.stdout_text(), "in\n");
    println!("SSHD READY");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(feature = "ssh")]
#[test]
fn aiida_computer_ssh_can_point_at_a_real_host_named_in_the_environment() {
    use aiida_fixtures::aiida_ssh::sshd::{PrivateSshd, generate_key_pair};
    // The "real host": a server of this test's own, with its own key.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let public = generate_key_pair(&key).unwrap();
    std::fs::create_dir(dir.path().join("sshd")).unwrap();
    let sshd = PrivateSshd::start(&dir.path().join("sshd"), &[&public]).unwrap();
    let user = String::from_utf8(std::process::Command::new("whoami").output().unwrap().stdout).unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "real_host_child", "--nocapture", "--test-threads", "1"])
        .env(aiida_fixtures::TEST_SSH_HOST_ENV, format!("{}@127.0.0.1:{}", user.trim(), sshd.port()))
        .env(aiida_fixtures::TEST_SSH_KEY_ENV, &key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("ON 127.0.0.1 SUM 3"), "{stdout}");
    let log = std::fs::read_to_string(dir.path().join("sshd/sshd.log")).unwrap();
    assert!(log.contains("Accepted publickey"), "the child's calculation logged in here: {log}");
}

/// Run by the test above in a process of its own, with the host in its environment.
#[cfg(feature = "ssh")]
#[test]
#[ignore = "run by aiida_computer_ssh_can_point_at_a_real_host_named_in_the_environment"]
fn real_host_child() {
    let storage = aiida_fixtures::fixtures::aiida_profile();
    let computer = aiida_fixtures::fixtures::aiida_computer_ssh().get(None, true).unwrap();
    let mut code = data::installed_code(&computer, "/bin/bash", "add-real", Some("core.arithmetic.add")).unwrap();
    code.store(&storage).unwrap();
    let outputs = aiida_fixtures::aiida_engine::run(&storage, &add(&code, 1, 2)).unwrap();
    println!("ON {} SUM {}", computer.hostname(), outputs["sum"].attribute("value").unwrap());
}
