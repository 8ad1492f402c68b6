//! `verdi computer`, `verdi code`, `verdi process` and `verdi calcjob` on a temporary profile.
//!
//! Commands that need a transport or a scheduler plugin run in-process (`aiida_cli::run_args`) with
//! the plugins of `plugins/` (`test.local`, `test.direct`); the others run the `verdi` binary. The
//! calculation nodes are built with the core's ORM, as the engine records them, so that these tests
//! do not depend on the engine's life-cycle.

#[path = "../../aiida/tests/engine/common.rs"]
mod common;
mod plugins;

use std::path::Path;

use aiida::orm::data::{self, installed_code};
use aiida::orm::{Computer, Log, Node, QueryBuilder, User};
use aiida::storage::Storage;
use aiida_cli::CliError;
use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::{Map, Value, json};

use common::{TestProfile, aiida_template};

/// A temporary profile, its storage opened.
struct Env {
    profile: TestProfile,
    storage: Storage,
}

fn env() -> Env {
    let profile = TestProfile::new(&aiida_template());
    let storage = Storage::initialise(&profile.profile).unwrap();
    Env { profile, storage }
}

impl Env {
    /// `verdi ARGS` in this process (where the test plugins are registered): its output, or its error.
    fn run(&self, args: &[&str]) -> Result<String, CliError> {
        let mut out = Vec::new();
        aiida_cli::run_args(std::iter::once("verdi").chain(args.iter().copied()), &self.profile.instance(), &mut out)
            .map(|()| String::from_utf8(out).unwrap())
    }

    /// `verdi ARGS` in this process, which must succeed.
    fn ok(&self, args: &[&str]) -> String {
        self.run(args).unwrap_or_else(|e| panic!("verdi {args:?} failed: {e:?}"))
    }

    /// `verdi ARGS` in this process, which must fail: its error and what it wrote until then.
    fn fails(&self, args: &[&str]) -> (CliError, String) {
        let mut out = Vec::new();
        let instance = self.profile.instance();
        let err = aiida_cli::run_args(std::iter::once("verdi").chain(args.iter().copied()), &instance, &mut out)
            .expect_err("the command should fail");
        (err, String::from_utf8(out).unwrap())
    }

    /// The `verdi` binary on this profile.
    fn verdi(&self) -> Command {
        let mut cmd = Command::cargo_bin("verdi").unwrap();
        cmd.env("AIIDA_PATH", self.profile.dir.path()).env_remove("AIIDA_PROFILE");
        cmd
    }

    /// A stored computer, configured for the default user.
    fn computer(&self, label: &str, transport: &str, workdir: &Path) -> Computer {
        let mut computer =
            Computer::new(label, "localhost", transport, "core.direct").with_workdir(workdir.to_string_lossy());
        computer.store(&self.storage).unwrap();
        computer.configure(&self.storage, &User::default_user(&self.storage).unwrap(), Map::new()).unwrap();
        computer
    }
}

fn critical(err: &CliError) -> &str {
    match err {
        CliError::Critical(message) => message,
        other => panic!("not a critical error: {other:?}"),
    }
}

fn usage(err: &CliError) -> &str {
    match err {
        CliError::Usage(message) => message,
        other => panic!("not a usage error: {other:?}"),
    }
}

#[test]
fn a_computer_is_set_up_configured_shown_listed_and_deleted() {
    let e = env();
    let work = tempfile::tempdir().unwrap();
    let workdir = work.path().join("{username}").to_string_lossy().into_owned();
    let out = e.ok(&[
        "computer",
        "setup",
        "-n",
        "--label",
        "work",
        "--hostname",
        "localhost",
        "--description",
        "my machine",
        "--transport",
        "test.local",
        "--scheduler",
        "test.direct",
        "--work-dir",
        &workdir,
        "--mpiprocs-per-machine",
        "2",
        "--prepend-text",
        "module load x\nexport A=1",
        "--shebang",
        "#!/bin/bash -l",
    ]);
    assert_eq!(
        out,
        "Success: Computer<1> work created\n\
         Report: Note: before the computer can be used, it has to be configured with the command:\n\
         Report:   verdi -p test computer configure test.local work\n"
    );
    // The metadata aiida-core's `verdi computer setup` writes, key for key.
    let computer = Computer::load_label(&e.storage, "work").unwrap();
    assert_eq!(
        Value::Object(computer.metadata().clone()),
        json!({
            "use_double_quotes": false, "prepend_text": "module load x\nexport A=1", "append_text": "",
            "workdir": workdir, "shebang": "#!/bin/bash -l", "default_mpiprocs_per_machine": 2,
            "mpirun_command": ["mpirun", "-np", "{tot_num_mpiprocs}"],
        })
    );
    assert_eq!(
        (computer.description(), computer.transport_type(), computer.scheduler_type()),
        ("my machine", "test.local", "test.direct")
    );

    // Not configured yet: listed only with -a.
    let header = "Report: List of configured computers\n\
                  Report: Use 'verdi computer show COMPUTERLABEL' to display more detailed information\n";
    assert_eq!(e.ok(&["computer", "list"]), header);
    assert_eq!(e.ok(&["computer", "list", "-a"]), format!("{header}  work\n"));
    assert_eq!(e.ok(&["computer", "list", "-a", "-r"]), "  work\n");

    // Configured with the transport's own options; what is not given keeps its value or default.
    assert_eq!(
        e.ok(&["computer", "configure", "test.local", "work", "-n", "--safe-interval", "2", "--no-use-login-shell"]),
        "Report: Configuring computer work for user test@localhost.\n\
         Success: work successfully configured for test@localhost\n"
    );
    let user = User::default_user(&e.storage).unwrap();
    let params = || Value::Object(computer.authinfo(&e.storage, &user).unwrap().auth_params().clone());
    assert_eq!(params(), json!({"use_login_shell": false, "safe_interval": 2.0}));
    e.ok(&["computer", "configure", "test.local", "work", "--safe-interval", "0.5"]);
    assert_eq!(params(), json!({"use_login_shell": false, "safe_interval": 0.5}));
    assert_eq!(e.ok(&["computer", "configure", "show", "work"]), "* use_login_shell  0\n* safe_interval    0.5\n");
    assert_eq!(e.ok(&["computer", "list"]), format!("{header}* work\n"));

    // Options the transport does not take, another transport, an unknown computer.
    let (err, _) = e.fails(&["computer", "configure", "test.local", "work", "--port", "22"]);
    assert!(usage(&err).contains("unexpected argument '--port'"), "{err}");
    let help = e.ok(&["computer", "configure", "test.local", "--help"]);
    assert!(help.contains("--safe-interval <FLOAT>") && help.contains("--no-use-login-shell"), "{help}");
    let (err, _) = e.fails(&["computer", "configure", "core.nope", "work"]);
    assert!(usage(&err).ends_with("Error: No such command 'core.nope'."), "{err}");
    let (err, _) = e.fails(&["computer", "configure", "test.local", "nope"]);
    assert_eq!(
        usage(&err),
        "Error: Invalid value for 'COMPUTER': no Computer found with LABEL<nope>: No result was found"
    );
    assert_eq!(params(), json!({"use_login_shell": false, "safe_interval": 0.5}), "failed commands changed nothing");

    // `verdi computer show`, as aiida's table.
    let shown = e.verdi().args(["computer", "show", "work"]).assert().success().get_output().stdout.clone();
    let uuid = computer.uuid();
    let dashes = "-".repeat(27);
    let wide = "-".repeat(36.max(workdir.len()));
    let row = |k: &str, v: &str| format!("{k:<27}  {v}").trim_end().to_owned();
    let expected = [
        format!("{dashes}  {wide}"),
        row("Label", "work"),
        row("PK", "1"),
        row("UUID", &uuid.to_string()),
        row("Description", "my machine"),
        row("Hostname", "localhost"),
        row("Transport type", "test.local"),
        row("Scheduler type", "test.direct"),
        row("Work directory", &workdir),
        row("Shebang", "#!/bin/bash -l"),
        row("Mpirun command", "mpirun -np {tot_num_mpiprocs}"),
        row("Default #procs/machine", "2"),
        row("Default memory (kB)/machine", ""),
        row("Prepend text", "module load x"),
        row("", "export A=1"),
        row("Append text", ""),
        format!("{dashes}  {wide}"),
    ]
    .join("\n");
    assert_eq!(String::from_utf8(shown).unwrap(), format!("{expected}\n"));

    // What setup refuses.
    let setup = |extra: &[&str]| {
        let mut args =
            vec!["computer", "setup", "-n", "-L", "other", "-H", "h", "-T", "test.local", "-S", "test.direct"];
        args.extend_from_slice(extra);
        e.fails(&args).0
    };
    let (err, _) = e.fails(&["computer", "setup", "-L", "work", "-H", "h", "-T", "test.local", "-S", "test.direct"]);
    assert!(critical(&err).starts_with("A computer called work already exists."), "{err}");
    assert!(critical(&setup(&["-w", "relative/dir"])).ends_with("The workdir must be an absolute path"));
    assert!(critical(&setup(&["-w", "/x/{user}"])).ends_with("In workdir there is an unknown replacement field user"));
    assert!(critical(&setup(&["-m", "mpirun -np {nprocs}"])).contains("unknown replacement field nprocs"));
    assert!(critical(&setup(&["--default-memory-per-machine=-1"])).contains("must be a positive int"));
    assert!(usage(&setup(&["--shebang", "/bin/bash"])).contains("'--shebang'"));
    let (err, _) = e.fails(&["computer", "setup", "-L", "other", "-H", "h", "-T", "core.nope", "-S", "test.direct"]);
    assert_eq!(
        usage(&err),
        "Error: Invalid value for '-T' / '--transport': entry point 'core.nope' is not valid for any of the allowed \
         entry point groups: aiida.transports"
    );
    assert_eq!(Computer::list(&e.storage).unwrap().len(), 1, "nothing was stored");

    // A computer that nodes use is not deleted; one that none use is, with its authinfo.
    let mut code = installed_code(&computer, "/bin/true", "true", None).unwrap();
    code.store(&e.storage).unwrap();
    e.verdi()
        .args(["computer", "delete", "work"])
        .assert()
        .code(1)
        .stdout("Report: This computer has 1 associated nodes\n")
        .stderr(predicate::str::starts_with("Critical: Computer `work` is used by 1 node(s) and is not deleted"));
    let spare = e.computer("spare", "test.local", work.path());
    e.verdi().args(["computer", "delete", "spare", "--dry-run"]).assert().success();
    e.verdi()
        .args(["computer", "delete", &spare.uuid().to_string()])
        .assert()
        .success()
        .stdout("Report: This computer has 0 associated nodes\nSuccess: Computer `spare` deleted.\n");
    assert_eq!(Computer::list(&e.storage).unwrap().iter().map(|c| c.label().to_owned()).collect::<Vec<_>>(), ["work"]);
    assert!(spare.authinfo(&e.storage, &user).is_err(), "the authinfo went with the computer");
    e.verdi()
        .args(["computer", "show", "spare"])
        .assert()
        .code(2)
        .stderr("Error: Invalid value for 'COMPUTER': no Computer found with LABEL<spare>: No result was found\n");
}

#[test]
fn codes_are_created_listed_and_shown_as_aiida_shows_them() {
    let e = env();
    let work = tempfile::tempdir().unwrap();
    let local = e.computer("localhost", "core.local", work.path());
    let mut remote = Computer::new("remote", "remote.example.com", "core.ssh", "core.slurm");
    remote.store(&e.storage).unwrap();
    e.verdi()
        .args(["code", "create", "core.code.installed", "-n", "--label", "bash", "--computer", "localhost"])
        .args(["--filepath-executable", "/bin/bash", "--default-calc-job-plugin", "core.arithmetic.add"])
        .assert()
        .success()
        .stdout("Success: Created InstalledCode<1>\n");
    e.verdi()
        .args(["code", "create", "core.code.installed", "-n", "-L", "cat", "-Y", "remote", "-X", "/bin/cat"])
        .args(["-D", "the cat", "--prepend-text", "module load x", "--with-mpi", "--use-double-quotes"])
        .assert()
        .success()
        .stdout("Success: Created InstalledCode<2>\n");

    // The attributes and extras aiida-core's `verdi code create` gives an InstalledCode.
    let bash = Node::load(&e.storage, 1).unwrap();
    assert_eq!(bash.node_type(), "data.core.code.installed.InstalledCode.");
    assert_eq!(bash.computer_pk(), local.pk());
    let mut attributes = bash.attributes().clone();
    attributes.sort_keys();
    assert_eq!(
        Value::Object(attributes),
        json!({
            "append_text": "", "filepath_executable": "/bin/bash", "input_plugin": "core.arithmetic.add",
            "prepend_text": "", "use_double_quotes": false, "with_mpi": null, "wrap_cmdline_params": false,
        })
    );
    assert_eq!(bash.extras().get("hidden"), Some(&json!(false)));
    let cat = Node::load(&e.storage, 2).unwrap();
    assert_eq!(
        (cat.attribute("with_mpi"), cat.attribute("use_double_quotes")),
        (Some(&json!(true)), Some(&json!(true)))
    );

    e.verdi().args(["code", "list"]).assert().success().stdout(
        "Full label        Pk  Entry point\n\
         --------------  ----  -------------------\n\
         bash@localhost     1  core.code.installed\n\
         cat@remote         2  core.code.installed\n\
         \n\
         Use `verdi code show IDENTIFIER` to see details for a code\n",
    );
    e.verdi()
        .args(["code", "list", "-Y", "remote", "-P", "label", "default_calc_job_plugin", "-r"])
        .assert()
        .success()
        .stdout("cat  None\n");
    e.verdi()
        .args(["code", "list", "-d", "core.arithmetic.add", "-P", "full_label", "user"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("bash@localhost  test@localhost\n").and(predicate::str::contains("cat").not()),
        );

    let show = |identifier: &str| {
        String::from_utf8(e.verdi().args(["code", "show", identifier]).assert().success().get_output().stdout.clone())
            .unwrap()
    };
    let expected = format!(
        "----------------------------  ------------------------------------\n\
         PK                            2\n\
         UUID                          {}\n\
         Type                          core.code.installed\n\
         Label                         cat\n\
         Description                   the cat\n\
         Computer                      remote (remote.example.com), pk: {}\n\
         Default `CalcJob` plugin\n\
         Escape using double quotes    True\n\
         Run with MPI                  True\n\
         Wrap command line parameters  False\n\
         Prepend script                module load x\n\
         Append script\n\
         Filepath executable           /bin/cat\n\
         ----------------------------  ------------------------------------\n",
        cat.uuid(),
        remote.pk().unwrap()
    );
    assert_eq!(show("cat@remote"), expected);
    assert_eq!(show("2"), expected);
    assert_eq!(show("cat"), expected);
    // The beginning of the UUID, with its first dash: all-digit text would be a pk.
    assert_eq!(show(&cat.uuid().to_string()[..9]), expected);
    e.verdi()
        .args(["code", "show", "nope@remote"])
        .assert()
        .code(2)
        .stderr("Error: Invalid value for 'CODE': no Code found with LABEL<nope@remote>: No result was found\n");

    // A second `bash` on the same computer would make `bash@localhost` ambiguous: refused.
    e.verdi()
        .args(["code", "create", "core.code.installed", "-L", "bash", "-Y", "localhost", "-X", "/bin/sh"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("a code labelled `bash` exists already on computer `localhost`"));
    e.verdi()
        .args(["code", "create", "core.code.installed", "-L", "x", "-Y", "nowhere", "-X", "/bin/sh"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no Computer found with LABEL<nowhere>"));
    assert_eq!(QueryBuilder::nodes().count(&e.storage).unwrap(), 2);
}

#[test]
fn computer_test_passes_on_a_writable_work_dir_and_fails_on_one_that_is_not() {
    let e = env();
    let work = tempfile::tempdir().unwrap();
    e.ok(&["computer", "setup", "-L", "here", "-H", "localhost", "-T", "test.local", "-S", "test.direct"]);
    // Not configured: refused before connecting.
    let (err, out) = e.fails(&["computer", "test", "here"]);
    assert_eq!(critical(&err), "Computer<here> is not yet configured for user<test@localhost>");
    assert_eq!(out, "Report: Testing computer<here> for user<test@localhost>...\n");

    // A work directory that can be written.
    let mut ok = Computer::new("ok", "localhost", "test.local", "test.direct")
        .with_workdir(work.path().join("{username}/aiida").to_string_lossy());
    ok.store(&e.storage).unwrap();
    e.ok(&["computer", "configure", "test.local", "ok", "-n", "--no-use-login-shell"]);
    let out = e.ok(&["computer", "test", "ok"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Report: Testing computer<ok> for user<test@localhost>...");
    assert_eq!(lines[1], "* Opening connection... [OK]");
    assert_eq!(lines[2], "* Checking for spurious output... [OK]");
    assert!(
        lines[3].starts_with("* Getting number of jobs from scheduler... [OK]: ")
            && lines[3].ends_with(" jobs found in the queue"),
        "{out}"
    );
    let whoami = String::from_utf8(std::process::Command::new("whoami").output().unwrap().stdout).unwrap();
    assert_eq!(lines[4], format!("* Determining remote user name... [OK]: {}", whoami.trim()));
    assert_eq!(lines[5], "* Creating and deleting temporary file... [OK]");
    assert_eq!(lines[6], "* Checking for possible delay from using login shell... [OK]");
    assert_eq!(lines[7], "Success: all 6 tests succeeded");
    assert_eq!(lines.len(), 8);
    let made = work.path().join(whoami.trim()).join("aiida");
    assert!(made.is_dir(), "the work directory was made");
    assert_eq!(std::fs::read_dir(&made).unwrap().count(), 0, "the temporary file was removed");

    // A work directory below a file cannot be made: that check fails, and the command with it.
    let blocked = work.path().join("a-file");
    std::fs::write(&blocked, "not a folder").unwrap();
    let mut bad = Computer::new("bad", "localhost", "test.local", "test.direct")
        .with_workdir(blocked.join("work").to_string_lossy());
    bad.store(&e.storage).unwrap();
    e.ok(&["computer", "configure", "test.local", "bad", "-n"]);
    let (err, out) = e.fails(&["computer", "test", "bad"]);
    assert!(matches!(err, CliError::Reported), "{err:?}");
    assert!(
        out.contains(&format!(
            "* Creating and deleting temporary file... [Failed]: cannot create folder {}/work: Not a directory",
            blocked.display()
        )),
        "{out}"
    );
    assert!(out.ends_with("Warning: 1 out of 6 tests failed\n"), "{out}");
}

/// `verdi computer test` on the engine's own plugins, `core.local` and `core.direct`, through the
/// `verdi` binary.
#[test]
fn computer_test_passes_on_core_local_with_the_verdi_binary() {
    let e = env();
    let work = tempfile::tempdir().unwrap();
    let workdir = work.path().join("run").to_string_lossy().into_owned();
    e.verdi()
        .args(["computer", "setup", "-n", "-L", "localhost", "-H", "localhost", "-T", "core.local"])
        .args(["-S", "core.direct", "-w", &workdir])
        .assert()
        .success();
    e.verdi()
        .args(["computer", "configure", "core.local", "localhost", "-n", "--safe-interval", "0"])
        .assert()
        .success();
    e.verdi().args(["computer", "test", "localhost"]).assert().success().stdout(
        predicate::str::starts_with(
            "Report: Testing computer<localhost> for user<test@localhost>...\n\
             * Opening connection... [OK]\n\
             * Checking for spurious output... [OK]\n\
             * Getting number of jobs from scheduler... [OK]: ",
        )
        .and(predicate::str::contains("* Creating and deleting temporary file... [OK]\n"))
        .and(predicate::str::ends_with("Success: all 6 tests succeeded\n")),
    );
    assert!(work.path().join("run").is_dir(), "the work directory was made");
    let blocked = work.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    e.verdi()
        .args(["computer", "setup", "-n", "-L", "blocked", "-H", "localhost", "-T", "core.local", "-S", "core.direct"])
        .args(["-w", &blocked.join("run").to_string_lossy()])
        .assert()
        .success();
    e.verdi().args(["computer", "configure", "core.local", "blocked", "-n"]).assert().success();
    e.verdi().args(["computer", "test", "blocked"]).assert().code(1).stdout(
        predicate::str::contains("* Creating and deleting temporary file... [Failed]: ")
            .and(predicate::str::ends_with("Warning: 1 out of 6 tests failed\n")),
    );
}

/// `verdi computer configure core.ssh` and `verdi computer test` against a private sshd.
#[cfg(feature = "ssh")]
#[test]
fn computer_test_passes_on_core_ssh_with_the_verdi_binary() {
    use aiida_ssh::sshd::{PrivateSshd, generate_key_pair};
    let e = env();
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("id_ed25519");
    let public = generate_key_pair(&key).unwrap();
    std::fs::create_dir(work.path().join("sshd")).unwrap();
    let sshd = PrivateSshd::start(&work.path().join("sshd"), &[&public]).unwrap();
    let workdir = work.path().join("run").to_string_lossy().into_owned();
    e.verdi()
        .args(["computer", "setup", "-n", "-L", "remote", "-H", "localhost", "-T", "core.ssh"])
        .args(["-S", "core.direct", "-w", &workdir])
        .assert()
        .success();
    let port = sshd.port().to_string();
    let key = key.to_string_lossy().into_owned();
    e.verdi()
        .args(["computer", "configure", "core.ssh", "remote", "-n", "--port", &port, "--key-filename", &key])
        .args(["--key-policy", "AutoAddPolicy", "--safe-interval", "0", "--no-use-login-shell"])
        .assert()
        .success()
        .stdout(
            "Report: Configuring computer remote for user test@localhost.\n\
                 Success: remote successfully configured for test@localhost\n",
        );
    let shown = e.ok(&["computer", "configure", "show", "remote"]);
    assert!(shown.contains(&format!("* port                   {port}\n")), "{shown}");
    assert!(shown.contains("* key_policy             AutoAddPolicy\n"), "{shown}");
    e.verdi().args(["computer", "test", "remote"]).assert().success().stdout(
        predicate::str::starts_with(
            "Report: Testing computer<remote> for user<test@localhost>...\n* Opening connection... [OK]\n",
        )
        .and(predicate::str::contains("* Creating and deleting temporary file... [OK]\n"))
        .and(predicate::str::ends_with("Success: all 6 tests succeeded\n")),
    );
    assert!(work.path().join("run").is_dir(), "the work directory was made over SFTP");

    // The host's key unknown, under aiida's default policy: the test says so.
    e.verdi()
        .args(["computer", "configure", "core.ssh", "remote", "-n", "--key-policy", "RejectPolicy"])
        .args(["--no-load-system-host-keys"])
        .assert()
        .success();
    e.verdi().args(["computer", "test", "remote"]).assert().code(1).stdout(
        predicate::str::contains("* Opening connection... [FAILED]: ")
            .and(predicate::str::contains("is not in the known_hosts files")),
    );
}

/// A calculation job's node as the engine records it: stored with its inputs, then its progress,
/// files and outputs.
struct Job {
    node: Node,
}

fn set(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

impl Job {
    fn new(e: &Env, code: &Node, computer: &Computer, label: &str) -> Job {
        let mut node = Node::new("process.calculation.calcjob.CalcJobNode.");
        node.set_process_type("aiida.calculations:core.arithmetic.add").unwrap();
        node.set_computer(computer).unwrap();
        node.set_label(label).unwrap();
        for (key, value) in [
            ("process_label", json!("ArithmeticAddCalculation")),
            ("process_state", json!("created")),
            ("input_filename", json!("aiida.in")),
            ("output_filename", json!("aiida.out")),
            ("scheduler_stdout", json!("_scheduler-stdout.txt")),
            ("scheduler_stderr", json!("_scheduler-stderr.txt")),
            ("resources", json!({"num_machines": 1, "num_mpiprocs_per_machine": 1})),
        ] {
            node.set_attribute(key, value).unwrap();
        }
        let (mut x, mut y) = (data::int(1), data::int(2));
        x.store(&e.storage).unwrap();
        y.store(&e.storage).unwrap();
        node.store_process(&e.storage, &[("code", code), ("x", &x), ("y", &y)]).unwrap();
        Job { node }
    }

    fn update(&mut self, e: &Env, pairs: &[(&str, Value)], remove: &[&str]) -> &mut Job {
        self.node.update_process(&e.storage, set(pairs), remove).unwrap();
        self
    }

    fn pk(&self) -> String {
        self.node.pk().unwrap().to_string()
    }
}

#[test]
fn processes_and_calcjobs_are_listed_shown_and_reported_as_aiida_does() {
    let e = env();
    let remote_root = tempfile::tempdir().unwrap();
    let computer = e.computer("localhost", "test.local", remote_root.path());
    let mut code = installed_code(&computer, "/bin/bash", "bash", Some("core.arithmetic.add")).unwrap();
    code.store(&e.storage).unwrap();
    e.verdi().args(["process", "list", "-a"]).assert().success().stdout(
        "PK    Created    Process label    \u{267b}    Process State    Process status\n\
                 ----  ---------  ---------------  ---  ---------------  ----------------\n\
                 \n\
                 Total results: 0\n\
                 \n\
                 Report: \u{267b} Processes marked with check-mark were not run but taken from the cache.\n\
                 Report: Add the option `-P pk cached_from` to the command to display cache source.\n\
                 Report: Last time an entry changed state: never\n\
                 Warning: The daemon is not running\n",
    );

    // A job that finished: files uploaded, outputs attached, a log message, sealed.
    let mut done = Job::new(&e, &code, &computer, "first");
    let workdir = remote_root.path().join("ab/cd/ef");
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::write(workdir.join("aiida.out"), "3\n").unwrap();
    std::fs::write(workdir.join("_aiidasubmit.sh"), "#!/bin/bash\n").unwrap();
    done.update(
        &e,
        &[("process_state", json!("waiting")), ("process_status", json!("Waiting for transport task: upload"))],
        &[],
    );
    aiida::runtime::block_on(done.node.put_process_files_async(
        &e.storage,
        vec![("aiida.in".into(), b"echo $((1 + 2))\n".to_vec()), ("_aiidasubmit.sh".into(), b"#!/bin/bash\n".to_vec())],
    ))
    .unwrap();
    let mut remote = data::remote(&computer, &workdir.to_string_lossy()).unwrap();
    done.node.add_output(&e.storage, &mut remote, "remote_folder").unwrap();
    done.update(
        &e,
        &[
            ("remote_workdir", json!(workdir.to_string_lossy())),
            ("state", json!("withscheduler")),
            ("job_id", json!("123")),
            ("scheduler_state", json!("running")),
        ],
        &["process_status"],
    );
    let (err, _) = e.fails(&["calcjob", "outputcat", &done.pk()]);
    assert_eq!(critical(&err), "No 'retrieved' node found. Have the calcjob files already been retrieved?");
    let mut retrieved =
        data::folder([("aiida.out", "3\n"), ("_scheduler-stdout.txt", ""), ("_scheduler-stderr.txt", "oops\n")]);
    done.node.add_output(&e.storage, &mut retrieved, "retrieved").unwrap();
    let mut sum = data::int(3);
    done.node.add_output(&e.storage, &mut sum, "sum").unwrap();
    Log::add(
        &e.storage,
        &done.node,
        "aiida.orm.nodes.process.calculation.calcjob.CalcJobNode",
        "WARNING",
        "first line\nsecond line",
    )
    .unwrap();
    done.update(
        &e,
        &[("process_state", json!("finished")), ("exit_status", json!(0)), ("sealed", json!(true))],
        &["state"],
    );

    // Others in each state.
    let mut failed = Job::new(&e, &code, &computer, "");
    failed.update(
        &e,
        &[
            ("process_state", json!("finished")),
            ("exit_status", json!(410)),
            ("exit_message", json!("The sum of the operands is a negative number.")),
            ("sealed", json!(true)),
        ],
        &[],
    );
    let mut excepted = Job::new(&e, &code, &computer, "");
    excepted.update(
        &e,
        &[
            ("process_state", json!("excepted")),
            ("exception", json!("panic: the parser broke")),
            ("sealed", json!(true)),
        ],
        &[],
    );
    let mut paused = Job::new(&e, &code, &computer, "");
    paused.update(
        &e,
        &[
            ("process_state", json!("waiting")),
            ("paused", json!(true)),
            (
                "process_status",
                json!("Pausing after failed transport task: upload_calculation failed 5 times consecutively"),
            ),
        ],
        &[],
    );
    let mut running = Job::new(&e, &code, &computer, "");
    running.update(&e, &[("process_state", json!("running"))], &[]);
    let killed = {
        let mut job = Job::new(&e, &code, &computer, "");
        job.update(&e, &[("process_state", json!("killed")), ("sealed", json!(true))], &[]);
        job
    };
    let created = Job::new(&e, &code, &computer, "");

    // `verdi process list`: the active ones; `-a`: all; `-X`: the failed; `-S`, `-P`, `-r`.
    let list = |args: &[&str]| {
        String::from_utf8(
            e.verdi().arg("process").arg("list").args(args).assert().success().get_output().stdout.clone(),
        )
        .unwrap()
    };
    const STATUS: &str = "Pausing after failed transport task: upload_calculation failed 5 times consecutively";
    let row = |job: &Job, state: &str, status: Option<&str>| -> Vec<String> {
        [job.pk().as_str(), "ArithmeticAddCalculation", state].into_iter().chain(status).map(str::to_owned).collect()
    };
    let active = list(&[]);
    assert_eq!(
        table_rows(&active),
        [
            row(&paused, "\u{23f8} Waiting", Some(STATUS)),
            row(&running, "\u{23f5} Running", None),
            row(&created, "\u{23f9} Created", None),
        ],
        "{active}"
    );
    assert!(
        active.starts_with("  PK  Created    Process label             \u{267b}    Process State    Process status\n"),
        "{active}"
    );
    assert!(active.contains("\nTotal results: 3\n\n"), "{active}");
    let last = active.lines().rev().nth(1).unwrap();
    assert!(active.ends_with("\nWarning: The daemon is not running\n"), "{active}");
    assert!(
        last.starts_with("Report: Last time an entry changed state: ")
            && last.contains(" ago (at ")
            && last.ends_with(')'),
        "{last}"
    );
    assert_eq!(
        table_rows(&list(&["-a"])),
        [
            row(&done, "\u{23f9} Finished [0]", None),
            row(&failed, "\u{23f9} Finished [410]", None),
            row(&excepted, "\u{2a2f} Excepted", None),
            row(&paused, "\u{23f8} Waiting", Some(STATUS)),
            row(&running, "\u{23f5} Running", None),
            row(&killed, "\u{2620} Killed", None),
            row(&created, "\u{23f9} Created", None),
        ]
    );
    assert_eq!(
        list(&["-X", "-P", "pk", "exit_status", "exit_message", "-r"]),
        format!("{}  410  The sum of the operands is a negative number.\n", failed.pk())
    );
    assert_eq!(
        list(&["-S", "excepted", "killed", "-P", "pk", "process_state", "sealed", "-r", "-D", "desc"]),
        format!("{}  Killed    True\n{}  Excepted  True\n", killed.pk(), excepted.pk())
    );
    assert_eq!(list(&["-a", "-l", "1", "-P", "pk", "label", "job_state", "-r"]), format!("{}  first\n", done.pk()));
    assert_eq!(list(&["--paused", "-P", "pk", "paused", "-r"]), format!("{}  True\n", paused.pk()));

    // `verdi process show`.
    let show = String::from_utf8(
        e.verdi().args(["process", "show", &done.pk()]).assert().success().get_output().stdout.clone(),
    )
    .unwrap();
    let node = Node::load(&e.storage, done.node.pk().unwrap()).unwrap();
    let time = |t: chrono::DateTime<chrono::Utc>| {
        let local = t.with_timezone(&chrono::Local);
        local
            .format(if t.timestamp_subsec_micros() == 0 { "%Y-%m-%d %H:%M:%S%:z" } else { "%Y-%m-%d %H:%M:%S%.6f%:z" })
            .to_string()
    };
    let value_width = 36.max(time(node.ctime()).len());
    let pks = |label: &str| {
        node.incoming(&e.storage)
            .unwrap()
            .into_iter()
            .chain(node.outgoing(&e.storage).unwrap())
            .find(|l| l.label == label)
            .unwrap()
            .node
            .pk()
            .unwrap()
    };
    let expected = format!(
        "Property     Value\n\
         -----------  {}\n\
         type         ArithmeticAddCalculation\n\
         state        Finished [0]\n\
         pk           {}\n\
         uuid         {}\n\
         label        first\n\
         description\n\
         ctime        {}\n\
         mtime        {}\n\
         computer     [{}] localhost\n\
         \n\
         Inputs      PK  Type\n\
         --------  ----  -------------\n\
         code      {:>4}  InstalledCode\n\
         x         {:>4}  Int\n\
         y         {:>4}  Int\n\
         \n\
         Outputs          PK  Type\n\
         -------------  ----  ----------\n\
         remote_folder  {:>4}  RemoteData\n\
         retrieved      {:>4}  FolderData\n\
         sum            {:>4}  Int\n\
         \n\
         Log messages\n\
         ---------------------------------------------\n\
         There are 1 log messages for this calculation\n\
         Run 'verdi process report {}' to see them\n",
        "-".repeat(value_width),
        done.pk(),
        node.uuid(),
        time(node.ctime()),
        time(node.mtime()),
        computer.pk().unwrap(),
        pks("code"),
        pks("x"),
        pks("y"),
        pks("remote_folder"),
        pks("retrieved"),
        pks("sum"),
        done.pk()
    );
    assert_eq!(show, expected);
    e.verdi().args(["process", "show", &failed.pk()]).assert().success().stdout(predicate::str::contains(
        "\nstate        Finished [410] The sum of the operands is a negative number.\n",
    ));
    e.verdi()
        .args(["process", "show", &excepted.pk()])
        .assert()
        .success()
        .stdout(predicate::str::contains("\nstate        Excepted <panic: the parser broke>\n"));
    e.verdi().args(["process", "show", &code.pk().unwrap().to_string()]).assert().code(2).stderr(format!(
        "Error: Invalid value for '[PROCESSES]...': no ProcessNode found with ID<{}>: No result was found\n",
        code.pk().unwrap()
    ));
    e.verdi().args(["process", "show"]).assert().code(2);
    e.verdi()
        .args(["process", "show", "-M"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("\npk           {}\n", created.pk())));

    // `verdi process report` and `verdi process status`.
    let log = Log::of(&e.storage, &done.node).unwrap().remove(0);
    e.verdi().args(["process", "report", &done.pk()]).assert().success().stdout(format!(
        "*** {} [first]: None\n\
         *** (empty scheduler output file)\n\
         *** Scheduler errors:\n\
         oops\n\
         \n\
         *** 1 LOG MESSAGES:\n\
         +-> WARNING at {}\n \
         | first line\n \
         | second line\n",
        done.pk(),
        time(log.time)
    ));
    e.verdi().args(["process", "report", &paused.pk()]).assert().success().stdout(format!(
        "*** {}: None\n*** Scheduler output: N/A\n*** Scheduler errors: N/A\n*** 0 LOG MESSAGES\n",
        paused.pk()
    ));
    e.verdi().args(["process", "status", &failed.pk(), &running.pk()]).assert().success().stdout(format!(
        "ArithmeticAddCalculation<{}> Finished [410]\nArithmeticAddCalculation<{}> Running\n",
        failed.pk(),
        running.pk()
    ));

    // `verdi calcjob`: the input file kept in the node, the retrieved output, the remote files.
    e.verdi().args(["calcjob", "inputcat", &done.pk()]).assert().success().stdout("echo $((1 + 2))\n");
    e.verdi().args(["calcjob", "inputcat", &done.pk(), "_aiidasubmit.sh"]).assert().success().stdout("#!/bin/bash\n");
    e.verdi().args(["calcjob", "outputcat", &done.pk()]).assert().success().stdout("3\n");
    e.verdi().args(["calcjob", "outputcat", &done.pk(), "_scheduler-stderr.txt"]).assert().success().stdout("oops\n");
    e.verdi()
        .args(["calcjob", "inputcat", &done.pk(), "nope"])
        .assert()
        .code(1)
        .stderr("Critical: Could not open output path \"nope\". Exception: object with path `nope` does not exist.\n");
    assert_eq!(e.ok(&["calcjob", "remotecat", &done.pk()]), "3\n");
    assert_eq!(e.ok(&["calcjob", "remotecat", &done.pk(), "_aiidasubmit.sh"]), "#!/bin/bash\n");
    let (err, _) = e.fails(&["calcjob", "remotecat", &done.pk(), "missing.txt"]);
    assert!(critical(&err).contains("missing.txt"), "{err}");
    let (err, _) = e.fails(&["calcjob", "remotecat", &running.pk()]);
    assert_eq!(
        critical(&err),
        format!(
            "`CalcJobNode<{}>` has no `remote_folder` output. It probably has not started running yet.",
            running.pk()
        )
    );
    e.verdi()
        .args(["calcjob", "inputcat", &code.pk().unwrap().to_string()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no CalcJobNode found with ID<"));

    // `verdi calcjob res`: the `output_parameters` Dict, as json.dumps(indent=4, sort_keys=True).
    e.verdi().args(["calcjob", "res", &done.pk()]).assert().code(1).stderr(predicate::str::starts_with(
        "Critical: cannot load results as the default node could not be retrieved",
    ));
    let mut params =
        data::dict(set(&[("energy", json!(-1.5)), ("converged", json!(true)), ("name", json!("Ångström"))]));
    let open = Job::new(&e, &code, &computer, "");
    open.node.add_output(&e.storage, &mut params, "output_parameters").unwrap();
    e.verdi()
        .args(["calcjob", "res", &open.pk()])
        .assert()
        .success()
        .stdout("{\n    \"converged\": true,\n    \"energy\": -1.5,\n    \"name\": \"\\u00c5ngstr\\u00f6m\"\n}\n");
    e.verdi()
        .args(["calcjob", "res", &open.pk(), "-k", "energy"])
        .assert()
        .success()
        .stdout("{\n    \"energy\": -1.5\n}\n");
    e.verdi()
        .args(["calcjob", "res", &open.pk(), "-k", "nope"])
        .assert()
        .code(1)
        .stderr("Critical: key 'nope' was not found in the results dictionary\n");
}

/// The data rows of a `verdi process list` table (after the dashes, before the blank line), without
/// the relative creation time.
fn table_rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(2)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let cells: Vec<String> =
                l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect();
            assert!(cells[1].ends_with(" ago"), "{l}");
            cells.into_iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, c)| c).collect()
        })
        .collect()
}
