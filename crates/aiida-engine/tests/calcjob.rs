//! Calculation jobs run for real: `core.arithmetic.add` on `core.local` + `core.direct`, on a
//! temporary profile, with the remote working folder in a scratch folder.

#[path = "../../aiida/tests/engine/common.rs"]
mod common;

use std::path::{Path, PathBuf};

use aiida::orm::data::installed_code;
use aiida::orm::{Computer, LinkType, Log, Node, QueryBuilder, User};
use aiida::storage::Storage;
use aiida_engine::calcjob::{ParseContext, Parser, PluginFailure};
use aiida_engine::groups::{Parsers, Schedulers, Transports};
use aiida_engine::scheduler::{DirectScheduler, JobInfo, JobTemplate, Scheduler, SchedulerError};
use aiida_engine::transport::{LocalTransportType, Transport, TransportError, TransportType};
use aiida_engine::{EngineError, ExitCode, ProcessBuilder, run_get_node};
use serde_json::{Value, json};

use crate::common::{LocalSetup, no_login_shell};

/// A profile with a configured `core.local` + `core.direct` computer and a `/bin/bash` code, whose
/// failed transport tasks are retried quickly. Commands run without a login shell, so that the
/// suite's time does not depend on the start-up files of whoever runs it (one test runs with
/// aiida's default, a login shell).
type Setup = LocalSetup;

fn setup() -> Setup {
    LocalSetup::new(&[
        ("transport.task_retry_initial_interval", json!(0.01)),
        ("transport.task_maximum_attempts", json!(2)),
    ])
}

fn add(setup: &Setup, x: impl Into<Value>, y: impl Into<Value>) -> ProcessBuilder {
    let mut builder = ProcessBuilder::for_code(&setup.code).unwrap();
    builder.value("x", x).value("y", y);
    builder
}

fn node_count(storage: &Storage) -> i64 {
    QueryBuilder::nodes().count(storage).unwrap()
}

#[test]
fn one_plus_two_finishes_with_sum_three_and_aiidas_provenance() {
    let s = setup();
    // aiida's default: commands run in a login shell.
    s.computer.configure(&s.storage, &User::default_user(&s.storage).unwrap(), serde_json::Map::new()).unwrap();
    let (outputs, node) = run_get_node(&s.storage, &add(&s, 1, 2)).unwrap();
    assert_eq!(outputs["sum"].attribute("value"), Some(&json!(3)));
    assert_eq!(node.attribute("exit_status"), Some(&json!(0)));
    assert_eq!(node.attribute("process_state"), Some(&json!("finished")));
    assert_eq!(node.attribute("sealed"), Some(&json!(true)));
    assert!(node.attribute("exit_message").is_none() && node.attribute("state").is_none());

    // As stored, reloaded.
    let node = Node::load(&s.storage, node.pk().unwrap()).unwrap();
    assert_eq!(node.node_type(), "process.calculation.calcjob.CalcJobNode.");
    assert_eq!(node.process_type(), Some("aiida.calculations:core.arithmetic.add"));
    assert_eq!(node.computer_pk(), s.computer.pk());
    for (key, value) in [
        ("process_label", json!("ArithmeticAddCalculation")),
        ("parser_name", json!("core.arithmetic.add")),
        ("input_filename", json!("aiida.in")),
        ("output_filename", json!("aiida.out")),
        ("resources", json!({"num_machines": 1, "num_mpiprocs_per_machine": 1})),
        ("scheduler_state", json!("done")),
        ("retrieve_list", json!(["aiida.out", "_scheduler-stdout.txt", "_scheduler-stderr.txt"])),
        ("retrieve_temporary_list", json!([])),
        ("import_sys_environment", json!(true)),
    ] {
        assert_eq!(node.attribute(key), Some(&value), "{key}");
    }
    assert!(node.attribute("job_id").and_then(Value::as_str).is_some_and(|id| id.parse::<u32>().is_ok()));
    assert_eq!(node.attribute("last_job_info").and_then(|i| i.get("job_state")), Some(&json!("done")));
    assert!(node.attribute("scheduler_lastchecktime").is_some());

    let mut incoming: Vec<(String, LinkType)> =
        node.incoming(&s.storage).unwrap().into_iter().map(|l| (l.label, l.link_type)).collect();
    incoming.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        incoming,
        [("code".into(), LinkType::InputCalc), ("x".into(), LinkType::InputCalc), ("y".into(), LinkType::InputCalc)]
    );
    let mut outgoing: Vec<(String, LinkType, String)> = node
        .outgoing(&s.storage)
        .unwrap()
        .into_iter()
        .map(|l| (l.label, l.link_type, l.node.node_type().to_owned()))
        .collect();
    outgoing.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        outgoing,
        [
            ("remote_folder".into(), LinkType::Create, "data.core.remote.RemoteData.".into()),
            ("retrieved".into(), LinkType::Create, "data.core.folder.FolderData.".into()),
            ("sum".into(), LinkType::Create, "data.core.int.Int.".into()),
        ]
    );

    // The working folder, as aiida lays it out, and the node's repository.
    let uuid = node.uuid().to_string();
    let workdir: PathBuf = s.work.path().join(&uuid[..2]).join(&uuid[2..4]).join(&uuid[4..]);
    assert_eq!(node.attribute("remote_workdir"), Some(&json!(workdir.to_string_lossy())));
    for file in [
        "aiida.in",
        "aiida.out",
        "_aiidasubmit.sh",
        "_scheduler-stdout.txt",
        "_scheduler-stderr.txt",
        ".aiida/calcinfo.json",
        ".aiida/job_tmpl.json",
    ] {
        assert!(workdir.join(file).is_file(), "{file} is not in {}", workdir.display());
    }
    assert_eq!(std::fs::read_to_string(workdir.join("aiida.in")).unwrap(), "echo $((1 + 2))\n");
    assert_eq!(std::fs::read_to_string(workdir.join("aiida.out")).unwrap(), "3\n");
    let script = std::fs::read_to_string(workdir.join("_aiidasubmit.sh")).unwrap();
    assert!(
        script.starts_with("#!/bin/bash\nexec > _scheduler-stdout.txt\nexec 2> _scheduler-stderr.txt\n"),
        "{script}"
    );
    assert!(script.contains("'/bin/bash' < 'aiida.in' > 'aiida.out'"), "{script}");
    assert_eq!(node.file(&s.storage, "aiida.in").unwrap(), b"echo $((1 + 2))\n");
    assert_eq!(node.file(&s.storage, "_aiidasubmit.sh").unwrap(), script.as_bytes());
    assert!(node.file(&s.storage, ".aiida/calcinfo.json").is_ok());
    let retrieved = &outputs["retrieved"];
    assert_eq!(retrieved.file(&s.storage, "aiida.out").unwrap(), b"3\n");
    assert!(retrieved.file(&s.storage, "_scheduler-stderr.txt").is_ok());
    assert_eq!(outputs["remote_folder"].attribute("remote_path"), Some(&json!(workdir.to_string_lossy())));
}

#[test]
fn a_negative_sum_ends_with_410_and_keeps_sum() {
    let s = setup();
    let (outputs, node) = run_get_node(&s.storage, &add(&s, -5, 2)).unwrap();
    assert_eq!(node.attribute("exit_status"), Some(&json!(410)));
    assert_eq!(node.attribute("exit_message"), Some(&json!("The sum of the operands is a negative number.")));
    assert_eq!(outputs["sum"].attribute("value"), Some(&json!(-3)));
    let logs = Log::of(&s.storage, &node).unwrap();
    assert!(
        logs.iter().any(|l| l.levelname == "WARNING" && l.message.starts_with("output parser returned exit code<410>")),
        "{logs:?}"
    );
}

#[test]
fn a_float_input_ends_with_320_and_no_sum() {
    let s = setup();
    let (outputs, node) = run_get_node(&s.storage, &add(&s, 1.5, 2)).unwrap();
    assert_eq!(node.attribute("exit_status"), Some(&json!(320)));
    assert!(!outputs.contains_key("sum"));
    let stderr = outputs["retrieved"].file(&s.storage, "_scheduler-stderr.txt").unwrap();
    assert!(String::from_utf8_lossy(&stderr).contains("syntax error"), "{}", String::from_utf8_lossy(&stderr));
}

/// `core.local`, counting how many of its transports are open at once.
struct CountingLocal {
    open: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    opened: std::sync::atomic::AtomicUsize,
    /// Whether the first transport it opens is broken (its commands fail, as over a connection
    /// whose server went away).
    broken_first: bool,
}

impl CountingLocal {
    const fn new(broken_first: bool) -> CountingLocal {
        CountingLocal {
            open: std::sync::atomic::AtomicUsize::new(0),
            most: std::sync::atomic::AtomicUsize::new(0),
            opened: std::sync::atomic::AtomicUsize::new(0),
            broken_first,
        }
    }
}

/// One counter per test that counts (tests run at once).
static COUNTING: CountingLocal = CountingLocal::new(false);
static COUNTING_LINGER: CountingLocal = CountingLocal::new(false);
static COUNTING_BROKEN: CountingLocal = CountingLocal::new(true);

struct CountingType(&'static CountingLocal);

/// A transport, its counter, and whether it is broken.
#[derive(Debug)]
struct Counted(std::sync::Arc<dyn Transport>, &'static CountingLocal, bool);

impl std::fmt::Debug for CountingLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountingLocal")
    }
}

aiida::entry_point!(hidden, Transports: "test.counting_local", CountingType(&COUNTING));
aiida::entry_point!(hidden, Transports: "test.counting_linger", CountingType(&COUNTING_LINGER));
aiida::entry_point!(hidden, Transports: "test.counting_broken", CountingType(&COUNTING_BROKEN));

#[async_trait::async_trait]
impl TransportType for CountingType {
    async fn open(
        &self,
        hostname: &str,
        params: &serde_json::Map<String, Value>,
    ) -> Result<std::sync::Arc<dyn Transport>, TransportError> {
        use std::sync::atomic::Ordering::SeqCst;
        let inner = LocalTransportType.open(hostname, params).await?;
        let now = self.0.open.fetch_add(1, SeqCst) + 1;
        self.0.most.fetch_max(now, SeqCst);
        let first = self.0.opened.fetch_add(1, SeqCst) == 0;
        Ok(std::sync::Arc::new(Counted(inner, self.0, first && self.0.broken_first)))
    }
    fn auth_options(&self) -> Vec<aiida_engine::transport::AuthOption> {
        LocalTransportType.auth_options()
    }
    fn default_safe_interval(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    fn default_minimum_job_poll_interval(&self) -> std::time::Duration {
        LocalTransportType.default_minimum_job_poll_interval()
    }
}

#[async_trait::async_trait]
impl Transport for Counted {
    async fn put(&self, l: &Path, r: &Path) -> Result<(), TransportError> {
        self.0.put(l, r).await
    }
    async fn get(&self, r: &Path, l: &Path, i: bool) -> Result<(), TransportError> {
        self.0.get(r, l, i).await
    }
    async fn copy(&self, s: &Path, d: &Path) -> Result<(), TransportError> {
        self.0.copy(s, d).await
    }
    async fn symlink(&self, s: &Path, l: &Path) -> Result<(), TransportError> {
        self.0.symlink(s, l).await
    }
    async fn listdir(&self, p: &Path) -> Result<Vec<String>, TransportError> {
        self.0.listdir(p).await
    }
    async fn glob(&self, p: &Path) -> Result<Vec<PathBuf>, TransportError> {
        self.0.glob(p).await
    }
    async fn mkdir(&self, p: &Path, i: bool) -> Result<(), TransportError> {
        self.0.mkdir(p, i).await
    }
    async fn makedirs(&self, p: &Path, i: bool) -> Result<(), TransportError> {
        self.0.makedirs(p, i).await
    }
    async fn rmtree(&self, p: &Path) -> Result<(), TransportError> {
        self.0.rmtree(p).await
    }
    async fn rename(&self, o: &Path, n: &Path) -> Result<(), TransportError> {
        self.0.rename(o, n).await
    }
    async fn path_exists(&self, p: &Path) -> Result<bool, TransportError> {
        self.0.path_exists(p).await
    }
    async fn is_dir(&self, p: &Path) -> Result<bool, TransportError> {
        self.0.is_dir(p).await
    }
    async fn chmod(&self, p: &Path, m: u32) -> Result<(), TransportError> {
        self.0.chmod(p, m).await
    }
    async fn exec_command_wait(
        &self,
        c: &str,
        w: Option<&Path>,
        i: Option<&[u8]>,
    ) -> Result<aiida_engine::transport::CommandOutput, TransportError> {
        if self.2 {
            return Err(TransportError::Connect {
                target: "localhost".into(),
                reason: "the connection is gone".into(),
            });
        }
        self.0.exec_command_wait(c, w, i).await
    }
    async fn close(&self) -> Result<(), TransportError> {
        self.1.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.close().await
    }
}

#[test]
fn a_hundred_runs_at_once_share_one_transport() {
    let s = setup();
    let scope = aiida::plugins::ScopedEntryPoints::new();
    scope.scope().enable("aiida.transports", "test.counting_local").unwrap();
    let mut computer = Computer::new("counting", "localhost", "test.counting_local", "core.direct")
        .with_workdir(s.work.path().to_string_lossy())
        .with_minimum_poll_interval(0.0);
    computer.store(&s.storage).unwrap();
    computer.configure(&s.storage, &User::default_user(&s.storage).unwrap(), no_login_shell()).unwrap();
    let mut code = installed_code(&computer, "/bin/bash", "bash-counted", Some("core.arithmetic.add")).unwrap();
    code.store(&s.storage).unwrap();
    let barrier = std::sync::Barrier::new(100);
    std::thread::scope(|threads| {
        let runs: Vec<_> = (0..100)
            .map(|i| {
                let (s, code, barrier, scope) = (&s, &code, &barrier, scope.scope().clone());
                threads.spawn(move || {
                    let mut builder = ProcessBuilder::for_code(code).unwrap();
                    builder.value("x", i).value("y", 1);
                    barrier.wait();
                    let (outputs, node) = scope.in_scope(|| run_get_node(&s.storage, &builder)).unwrap();
                    assert_eq!(node.attribute("exit_status"), Some(&json!(0)), "run {i}");
                    outputs["sum"].attribute("value").cloned()
                })
            })
            .collect();
        for (i, run) in runs.into_iter().enumerate() {
            assert_eq!(run.join().unwrap(), Some(json!(i + 1)));
        }
    });
    let most = COUNTING.most.load(std::sync::atomic::Ordering::SeqCst);
    let opened = COUNTING.opened.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(most, 1, "never more than one transport open at once ({opened} opened in all)");
}

#[test]
fn a_connection_stays_open_for_the_safe_interval_after_its_last_job() {
    let s = setup();
    let scope = aiida::plugins::ScopedEntryPoints::new();
    scope.scope().enable("aiida.transports", "test.counting_linger").unwrap();
    let mut computer = Computer::new("lingering", "localhost", "test.counting_linger", "core.direct")
        .with_workdir(s.work.path().to_string_lossy())
        .with_minimum_poll_interval(0.0);
    computer.store(&s.storage).unwrap();
    let mut params = no_login_shell();
    params.insert("safe_interval".into(), json!(0.5));
    computer.configure(&s.storage, &User::default_user(&s.storage).unwrap(), params).unwrap();
    let mut code = installed_code(&computer, "/bin/bash", "bash-lingering", Some("core.arithmetic.add")).unwrap();
    code.store(&s.storage).unwrap();
    let opened = || COUNTING_LINGER.opened.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..3 {
        let mut builder = ProcessBuilder::for_code(&code).unwrap();
        builder.value("x", i).value("y", 1);
        let (outputs, _) = run_get_node(&s.storage, &builder).unwrap();
        assert_eq!(outputs["sum"].attribute("value"), Some(&json!(i + 1)));
    }
    assert_eq!(opened(), 1, "the runs one after the other used one connection (none waited to reopen)");
    // Past the interval it is closed; a new job opens one (the interval since the last opening
    // has passed too, so without waiting).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while COUNTING_LINGER.open.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        assert!(std::time::Instant::now() < deadline, "the connection was not closed after its interval");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut builder = ProcessBuilder::for_code(&code).unwrap();
    builder.value("x", 5).value("y", 1);
    run_get_node(&s.storage, &builder).unwrap();
    assert_eq!(opened(), 2);
}

#[test]
fn a_connection_that_failed_is_not_used_again() {
    let s = setup();
    let scope = aiida::plugins::ScopedEntryPoints::new();
    scope.scope().enable("aiida.transports", "test.counting_broken").unwrap();
    let mut computer = Computer::new("broken", "localhost", "test.counting_broken", "core.direct")
        .with_workdir(s.work.path().to_string_lossy())
        .with_minimum_poll_interval(0.0);
    computer.store(&s.storage).unwrap();
    computer.configure(&s.storage, &User::default_user(&s.storage).unwrap(), no_login_shell()).unwrap();
    let mut code = installed_code(&computer, "/bin/bash", "bash-broken", Some("core.arithmetic.add")).unwrap();
    code.store(&s.storage).unwrap();
    let mut builder = ProcessBuilder::for_code(&code).unwrap();
    builder.value("x", 1).value("y", 2);
    let (outputs, node) = run_get_node(&s.storage, &builder).unwrap();
    assert_eq!(outputs["sum"].attribute("value"), Some(&json!(3)), "the retry ran on a new connection");
    assert_eq!(COUNTING_BROKEN.opened.load(std::sync::atomic::Ordering::SeqCst), 2);
    let logs = Log::of(&s.storage, &node).unwrap();
    assert!(logs.iter().any(|l| l.message.contains("failed (attempt 1)") && l.message.contains("gone")), "{logs:?}");
}

#[test]
fn an_input_of_the_wrong_type_is_refused_before_anything_is_stored() {
    let s = setup();
    let before = node_count(&s.storage);
    let err = run_get_node(&s.storage, &add(&s, "one", 2)).unwrap_err();
    assert!(matches!(err, EngineError::InvalidInputs(_)), "{err}");
    assert!(err.to_string().contains("value 'x' is not of the right type. Got 'data.core.str.Str.'"), "{err}");
    let mut unknown = add(&s, 1, 2);
    unknown.value("z", 3);
    assert!(run_get_node(&s.storage, &unknown).unwrap_err().to_string().contains("unexpected inputs [\"z\"]"));
    let mut bad_option = add(&s, 1, 2);
    bad_option.option("sleep", "long");
    let err = run_get_node(&s.storage, &bad_option).unwrap_err();
    assert!(err.to_string().contains("`metadata.options.sleep` must be a whole number"), "{err}");
    assert_eq!(node_count(&s.storage), before, "nothing was stored");
}

#[test]
fn an_unconfigured_computer_is_refused_before_anything_is_stored() {
    let s = setup();
    let mut other = Computer::new("unconfigured", "localhost", "core.local", "core.direct");
    other.store(&s.storage).unwrap();
    let mut code = installed_code(&other, "/bin/bash", "bash2", Some("core.arithmetic.add")).unwrap();
    code.store(&s.storage).unwrap();
    let before = node_count(&s.storage);
    let mut builder = ProcessBuilder::for_code(&code).unwrap();
    builder.value("x", 1).value("y", 2);
    let err = run_get_node(&s.storage, &builder).unwrap_err();
    assert!(err.to_string().contains("computer `unconfigured` is not configured for user `test@localhost`"), "{err}");
    assert_eq!(node_count(&s.storage), before);
}

#[test]
fn a_job_that_fails_and_writes_nothing_ends_with_320_and_a_missing_output_file_with_310() {
    let s = setup();
    // Exits 1 and writes nothing.
    let mut silent = installed_code(&s.computer, "/bin/false", "false", Some("core.arithmetic.add")).unwrap();
    silent.store(&s.storage).unwrap();
    let mut builder = ProcessBuilder::for_code(&silent).unwrap();
    builder.value("x", 1).value("y", 2);
    let (_, node) = run_get_node(&s.storage, &builder).unwrap();
    assert_eq!(node.attribute("exit_status"), Some(&json!(320)));
    let mut removed = add(&s, 1, 2);
    removed.option("append_text", "rm aiida.out");
    let (outputs, node) = run_get_node(&s.storage, &removed).unwrap();
    assert_eq!(node.attribute("exit_status"), Some(&json!(310)));
    assert!(outputs["retrieved"].file(&s.storage, "aiida.out").is_err());
}

#[test]
fn a_missing_executable_ends_the_job_excepted_with_a_clear_message() {
    let s = setup();
    let mut missing =
        installed_code(&s.computer, "/nonexistent/bin/add", "missing", Some("core.arithmetic.add")).unwrap();
    missing.store(&s.storage).unwrap();
    let mut builder = ProcessBuilder::for_code(&missing).unwrap();
    builder.value("x", 1).value("y", 2);
    let err = run_get_node(&s.storage, &builder).unwrap_err();
    let EngineError::Excepted { pk, exception } = err else { panic!("{err}") };
    assert_eq!(
        exception,
        "the executable /nonexistent/bin/add of code `missing` does not exist on computer `localhost`; fix the code's \
         filepath_executable or install it there"
    );
    let node = Node::load(&s.storage, pk).unwrap();
    assert!(node.is_sealed() && node.outgoing(&s.storage).unwrap().is_empty(), "nothing uploaded, nothing submitted");
}

#[test]
fn a_work_folder_that_cannot_be_written_pauses_the_job_after_its_retries() {
    let s = setup();
    let blocked = s.work.path().join("blocked");
    std::fs::write(&blocked, "a file where a folder should be").unwrap();
    let mut computer = Computer::new("blocked", "localhost", "core.local", "core.direct")
        .with_workdir(blocked.join("work").to_string_lossy())
        .with_minimum_poll_interval(0.0);
    computer.store(&s.storage).unwrap();
    computer.configure(&s.storage, &User::default_user(&s.storage).unwrap(), no_login_shell()).unwrap();
    let mut code = installed_code(&computer, "/bin/bash", "bash3", Some("core.arithmetic.add")).unwrap();
    code.store(&s.storage).unwrap();
    let mut builder = ProcessBuilder::for_code(&code).unwrap();
    builder.value("x", 1).value("y", 2);
    let err = run_get_node(&s.storage, &builder).unwrap_err();
    let EngineError::Paused { pk, status } = err else { panic!("{err}") };
    assert_eq!(status, "Pausing after failed transport task: upload_calculation failed 2 times consecutively");
    let node = Node::load(&s.storage, pk).unwrap();
    assert_eq!(node.attribute("paused"), Some(&json!(true)));
    assert!(!node.is_sealed(), "a paused process can be played again");
    let logs = Log::of(&s.storage, &node).unwrap();
    assert!(logs.iter().any(|l| l.message.contains("upload_calculation failed (attempt 1)")), "{logs:?}");
}

struct PanickingParser;

impl Parser for PanickingParser {
    fn parse(&self, _: &mut ParseContext) -> Result<Option<ExitCode>, PluginFailure> {
        panic!("the parser broke");
    }
}

aiida::entry_point!(hidden, Parsers: "test.panicking", PanickingParser);

#[test]
fn a_parser_that_panics_ends_the_process_excepted_and_sealed() {
    let s = setup();
    let scope = aiida::plugins::ScopedEntryPoints::new();
    scope.scope().enable("aiida.parsers", "test.panicking").unwrap();
    let mut builder = add(&s, 1, 2);
    builder.option("parser_name", "test.panicking");
    let err = run_get_node(&s.storage, &builder).unwrap_err();
    let EngineError::Excepted { pk, exception } = err else { panic!("{err}") };
    assert_eq!(exception, "panic: the parser broke");
    let node = Node::load(&s.storage, pk).unwrap();
    assert_eq!(node.attribute("process_state"), Some(&json!("excepted")));
    assert_eq!(node.attribute("exception"), Some(&json!("panic: the parser broke")));
    assert!(node.is_sealed());
}

// ---- Process functions ----

aiida_engine::calcfunction! {
    /// Adds two Ints.
    fn add_ints(x, y) {
        let value = |n: &Node| n.attribute("value").and_then(Value::as_i64).ok_or(PluginFailure::new("not an Int"));
        Ok(aiida::orm::data::int(value(x)? + value(y)?))
    }

    /// Splits an Int into its halves, or fails, or panics.
    fn halves(n) {
        let n = n.attribute("value").and_then(Value::as_i64).unwrap_or_default();
        if n < 0 {
            return Err(PluginFailure::new(format!("{n} is negative")));
        }
        assert!(n != 13, "unlucky number");
        let mut outputs = aiida_engine::Outputs::new();
        outputs.insert("low".into(), aiida::orm::data::int(n / 2));
        outputs.insert("high".into(), aiida::orm::data::int(n - n / 2));
        Ok(outputs)
    }
}

#[test]
fn a_calcfunction_call_is_recorded_with_provenance() {
    let s = setup();
    let (outputs, node) = add_ints(&s.storage, aiida::orm::data::int(1), aiida::orm::data::int(2)).unwrap();
    assert_eq!(outputs["result"].attribute("value"), Some(&json!(3)));
    let node = Node::load(&s.storage, node.pk().unwrap()).unwrap();
    assert_eq!(node.node_type(), "process.calculation.calcfunction.CalcFunctionNode.");
    assert_eq!(node.process_type(), Some("calcjob.add_ints"));
    assert_eq!(node.label(), "add_ints");
    for (key, value) in [
        ("process_label", json!("add_ints")),
        ("process_state", json!("finished")),
        ("exit_status", json!(0)),
        ("sealed", json!(true)),
        ("function_name", json!("add_ints")),
    ] {
        assert_eq!(node.attribute(key), Some(&value), "{key}");
    }
    let mut incoming: Vec<String> = node.incoming(&s.storage).unwrap().into_iter().map(|l| l.label).collect();
    incoming.sort();
    assert_eq!(incoming, ["x", "y"]);
    let outgoing = node.outgoing(&s.storage).unwrap();
    assert_eq!((outgoing[0].label.as_str(), outgoing[0].link_type), ("result", LinkType::Create));

    let (outputs, _) = halves(&s.storage, aiida::orm::data::int(7)).unwrap();
    assert_eq!(
        (outputs["low"].attribute("value"), outputs["high"].attribute("value")),
        (Some(&json!(3)), Some(&json!(4)))
    );
}

#[test]
fn a_calcfunction_that_fails_or_panics_ends_excepted_and_sealed() {
    let s = setup();
    for (n, exception) in [(-1, "-1 is negative"), (13, "panic: unlucky number")] {
        let err = halves(&s.storage, aiida::orm::data::int(n)).unwrap_err();
        let EngineError::Excepted { pk, exception: got } = err else { panic!("{err}") };
        assert_eq!(got, exception);
        let node = Node::load(&s.storage, pk).unwrap();
        assert_eq!(node.attribute("process_state"), Some(&json!("excepted")));
        assert!(node.is_sealed());
        assert!(node.outgoing(&s.storage).unwrap().is_empty());
    }
}

#[test]
fn options_the_scheduler_does_not_honour_are_reported() {
    let s = setup();
    let mut builder = add(&s, 1, 2);
    builder.option("max_wallclock_seconds", 60).option("queue_name", "fast");
    let (_, node) = run_get_node(&s.storage, &builder).unwrap();
    assert_eq!(node.attribute("exit_status"), Some(&json!(0)));
    assert_eq!(node.attribute("max_wallclock_seconds"), Some(&json!(60)), "kept as aiida keeps options");
    let logs = Log::of(&s.storage, &node).unwrap();
    let warning = logs.iter().find(|l| l.message.contains("does not honour")).expect("a warning");
    assert_eq!(warning.levelname, "WARNING");
    assert!(warning.message.contains("max_wallclock_seconds") && warning.message.contains("queue_name"), "{warning:?}");
}

// ---- Continuing a process from its node (what a daemon worker does) ----

#[test]
fn a_created_process_is_continued_to_its_end() {
    let s = setup();
    let node = aiida_engine::create_process(&s.storage, &add(&s, 1, 2)).unwrap();
    assert_eq!(node.attribute("process_state"), Some(&json!("created")));
    assert!(node.outgoing(&s.storage).unwrap().is_empty(), "nothing ran yet");
    let (outputs, node) = aiida_engine::continue_process(&s.storage, node.pk().unwrap()).unwrap();
    assert_eq!(outputs["sum"].attribute("value"), Some(&json!(3)));
    assert_eq!(
        (node.attribute("process_state"), node.attribute("exit_status")),
        (Some(&json!("finished")), Some(&json!(0)))
    );
    // A sealed process is returned as it is.
    let (again, _) = aiida_engine::continue_process(&s.storage, node.pk().unwrap()).unwrap();
    assert_eq!(again["sum"].pk(), outputs["sum"].pk());
}

#[test]
fn a_process_stopped_while_its_job_runs_is_continued_without_submitting_again() {
    let s = setup();
    let count = s.work.path().join("executions");
    let mut builder = add(&s, 1, 2);
    builder.option("sleep", 2).option("prepend_text", format!("echo ran >> '{}'", count.display()));
    let node = aiida_engine::create_process(&s.storage, &builder).unwrap();
    let pk = node.pk().unwrap();
    // A worker that stops (its task cancelled) while the job runs.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stopped = runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_millis(1000),
            aiida_engine::continue_process_async(&s.storage, pk),
        )
        .await
    });
    assert!(stopped.is_err(), "the job sleeps 2 s: the process was still waiting");
    let node = Node::load(&s.storage, pk).unwrap();
    let job_id = node.attribute("job_id").cloned().expect("submitted before it stopped");
    assert_eq!(node.attribute("state"), Some(&json!("withscheduler")));
    assert!(!node.is_sealed());

    let (outputs, node) = aiida_engine::continue_process(&s.storage, pk).unwrap();
    assert_eq!(outputs["sum"].attribute("value"), Some(&json!(3)));
    assert_eq!(node.attribute("job_id"), Some(&job_id), "the same job, followed");
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "ran\n", "the job ran exactly once");
}

/// `core.direct`, whose first submit hands the job to `ps` and then never answers, as a worker
/// that dies between the scheduler's answer and saving the job id; `tells` whether it can find
/// the job from its folder afterwards (`core.direct` can, a scheduler keeping the default cannot).
struct StopsAfterSubmit {
    tells: bool,
    submits: std::sync::atomic::AtomicUsize,
    submitted: tokio::sync::Notify,
}

static STOPS_TELLING: StopsAfterSubmit = StopsAfterSubmit::new(true);
static STOPS_UNSURE: StopsAfterSubmit = StopsAfterSubmit::new(false);

impl StopsAfterSubmit {
    const fn new(tells: bool) -> Self {
        StopsAfterSubmit {
            tells,
            submits: std::sync::atomic::AtomicUsize::new(0),
            submitted: tokio::sync::Notify::const_new(),
        }
    }
}

aiida::entry_point!(hidden, Schedulers: "test.direct_stops", &STOPS_TELLING);
aiida::entry_point!(hidden, Schedulers: "test.direct_stops_unsure", &STOPS_UNSURE);

#[async_trait::async_trait]
impl Scheduler for &'static StopsAfterSubmit {
    fn script_header(&self, template: &JobTemplate) -> String {
        DirectScheduler.script_header(template)
    }
    fn ignored_options(&self, template: &JobTemplate) -> Vec<&'static str> {
        DirectScheduler.ignored_options(template)
    }
    fn can_query_by_user(&self) -> bool {
        true
    }
    async fn submit(&self, transport: &dyn Transport, workdir: &Path, script: &str) -> Result<String, SchedulerError> {
        let job_id = DirectScheduler.submit(transport, workdir, script).await?;
        if self.submits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            self.submitted.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(job_id)
    }
    async fn jobs(&self, transport: &dyn Transport, job_ids: &[String]) -> Result<Vec<JobInfo>, SchedulerError> {
        DirectScheduler.jobs(transport, job_ids).await
    }
    async fn kill(&self, transport: &dyn Transport, job_id: &str) -> Result<bool, SchedulerError> {
        DirectScheduler.kill(transport, job_id).await
    }
    async fn submitted_job(&self, transport: &dyn Transport, workdir: &Path) -> Result<Option<String>, SchedulerError> {
        if self.tells {
            DirectScheduler.submitted_job(transport, workdir).await
        } else {
            Err(SchedulerError::CannotTell)
        }
    }
}

/// Runs process `pk` until its scheduler `stops` has the job, then drops the run: what a worker
/// killed at that instant leaves.
fn run_until_submitted(s: &Setup, pk: i32, stops: &'static StopsAfterSubmit) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        tokio::select! {
            result = aiida_engine::continue_process_async(&s.storage, pk) => panic!("the run ended: {result:?}"),
            _ = stops.submitted.notified() => {}
        }
    });
}

/// A computer and code like the setup's, on scheduler `scheduler`.
fn code_with_scheduler(s: &Setup, scheduler: &str) -> Node {
    let mut computer = Computer::new(scheduler, "localhost", "core.local", scheduler)
        .with_workdir(s.work.path().to_string_lossy())
        .with_minimum_poll_interval(0.0);
    computer.store(&s.storage).unwrap();
    computer.configure(&s.storage, &User::default_user(&s.storage).unwrap(), no_login_shell()).unwrap();
    let mut code = installed_code(&computer, "/bin/bash", scheduler, Some("core.arithmetic.add")).unwrap();
    code.store(&s.storage).unwrap();
    code
}

#[test]
fn a_job_submitted_by_a_run_that_stopped_before_saving_its_id_is_followed_not_submitted_again() {
    let s = setup();
    let scope = aiida::plugins::ScopedEntryPoints::new();
    scope.scope().enable("aiida.schedulers", "test.direct_stops").unwrap();
    let code = code_with_scheduler(&s, "test.direct_stops");
    let count = s.work.path().join("executions");
    let mut builder = ProcessBuilder::for_code(&code).unwrap();
    builder.value("x", 1).value("y", 2).option("prepend_text", format!("echo ran >> '{}'", count.display()));
    let pk = aiida_engine::create_process(&s.storage, &builder).unwrap().pk().unwrap();

    run_until_submitted(&s, pk, &STOPS_TELLING);
    let node = Node::load(&s.storage, pk).unwrap();
    assert_eq!(node.attribute("state"), Some(&json!("submitting")), "the intent, recorded before the submit");
    assert_eq!(node.attribute("job_id"), None, "the run stopped before saving the job id");

    let (outputs, node) = aiida_engine::continue_process(&s.storage, pk).unwrap();
    assert_eq!(outputs["sum"].attribute("value"), Some(&json!(3)));
    let workdir = node.attribute("remote_workdir").and_then(Value::as_str).unwrap();
    let recorded = std::fs::read_to_string(Path::new(workdir).join(DirectScheduler::JOB_ID_FILE)).unwrap();
    assert_eq!(node.attribute("job_id"), Some(&json!(recorded.trim())), "the job the first run submitted");
    assert_eq!(STOPS_TELLING.submits.load(std::sync::atomic::Ordering::SeqCst), 1, "submitted once");
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "ran\n", "the job ran exactly once");
    let logs = Log::of(&s.storage, &node).unwrap();
    let report = format!("job {} was submitted before the process stopped: following it", recorded.trim());
    assert!(logs.iter().any(|l| l.levelname == "REPORT" && l.message == report), "{logs:?}");
}

#[test]
fn a_scheduler_that_cannot_tell_whether_it_has_the_job_pauses_the_process_for_a_person() {
    let s = setup();
    let scope = aiida::plugins::ScopedEntryPoints::new();
    scope.scope().enable("aiida.schedulers", "test.direct_stops_unsure").unwrap();
    let code = code_with_scheduler(&s, "test.direct_stops_unsure");
    let mut builder = ProcessBuilder::for_code(&code).unwrap();
    builder.value("x", 1).value("y", 2);
    let pk = aiida_engine::create_process(&s.storage, &builder).unwrap().pk().unwrap();
    run_until_submitted(&s, pk, &STOPS_UNSURE);

    let err = aiida_engine::continue_process(&s.storage, pk).unwrap_err();
    let EngineError::Paused { status, .. } = err else { panic!("{err}") };
    let workdir = Node::load(&s.storage, pk).unwrap().attribute("remote_workdir").cloned().unwrap();
    assert_eq!(
        status,
        format!(
            "The process stopped while submitting its job, and scheduler `test.direct_stops_unsure` cannot tell \
             whether the job reached it: if the scheduler has a job from {}, kill the process; if not, play it to \
             submit the job",
            workdir.as_str().unwrap()
        )
    );
    let node = Node::load(&s.storage, pk).unwrap();
    assert_eq!((node.attribute("paused"), node.attribute("state")), (Some(&json!(true)), Some(&json!("uploading"))));
    assert_eq!(STOPS_UNSURE.submits.load(std::sync::atomic::Ordering::SeqCst), 1, "not submitted again");

    // A person decides there is no job: played, it is submitted.
    aiida::runtime::block_on(aiida_engine::play_process_async(&s.storage, pk)).unwrap();
    let (outputs, _) = aiida_engine::continue_process(&s.storage, pk).unwrap();
    assert_eq!(outputs["sum"].attribute("value"), Some(&json!(3)));
    assert_eq!(STOPS_UNSURE.submits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn a_builder_run_twice_uses_the_input_nodes_its_first_run_stored() {
    let s = setup();
    let builder = add(&s, 1, 2);
    let (_, first) = run_get_node(&s.storage, &builder).unwrap();
    let (outputs, second) = run_get_node(&s.storage, &builder).unwrap();
    assert_eq!(outputs["sum"].attribute("value"), Some(&json!(3)));
    let inputs = |node: &Node| {
        let mut pks: Vec<_> = node.incoming(&s.storage).unwrap().into_iter().map(|l| (l.label, l.node.pk())).collect();
        pks.sort();
        pks
    };
    assert_ne!(first.pk(), second.pk());
    assert_eq!(inputs(&first), inputs(&second), "the same code, x and y nodes");
}
