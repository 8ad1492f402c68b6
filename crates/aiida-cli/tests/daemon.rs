//! `verdi daemon` for real: the `verdi` binary starts workers (itself, re-run) that outlive it and
//! serve a temporary profile.

#[path = "../../aiida/tests/engine/common.rs"]
mod common;

use std::time::Duration;

use aiida_engine::ProcessBuilder;
use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::json;

use common::{LocalSetup, TestProfile};

/// A temporary profile with a local computer and a code for `core.arithmetic.add`.
type Env = LocalSetup;

fn env() -> Env {
    LocalSetup::new(&[])
}

impl Env {
    /// The `verdi` binary on this profile.
    fn verdi(&self) -> Command {
        verdi(&self.profile)
    }

    /// `verdi ARGS`, which must succeed: its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.verdi().args(args).assert().success().get_output().stdout.clone();
        String::from_utf8(output).unwrap()
    }

    /// Stops the daemon when dropped, also when the test fails: no worker is left behind.
    fn guard(&self) -> StopGuard<'_> {
        StopGuard(&self.profile)
    }

    /// The pids `verdi daemon status` lists.
    fn listed_pids(&self) -> Vec<u32> {
        let status = self.ok(&["daemon", "status"]);
        let table = status.split_once("\n-----").map_or("", |(_, rest)| rest);
        table
            .lines()
            .skip(1)
            .take_while(|line| !line.is_empty() && !line.starts_with("Log file"))
            .map(|line| line.split_whitespace().next().unwrap().parse().unwrap())
            .collect()
    }
}

fn verdi(profile: &TestProfile) -> Command {
    let mut cmd = Command::cargo_bin("verdi").unwrap();
    cmd.env("AIIDA_PATH", profile.dir.path()).env_remove("AIIDA_PROFILE").timeout(Duration::from_secs(60));
    cmd
}

struct StopGuard<'a>(&'a TestProfile);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        let _ = verdi(self.0).args(["daemon", "stop"]).output();
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

#[test]
fn verdi_starts_workers_that_serve_and_outlive_it_and_stops_them() {
    let e = env();
    let _guard = e.guard();
    e.verdi().args(["daemon", "start", "2"]).assert().success().stdout("Starting the daemon with 2 workers... OK\n");

    // `verdi` has ended; its workers serve on.
    let status = e.ok(&["daemon", "status"]);
    assert!(status.starts_with("Profile: test\nDaemon is running as PID "), "{status}");
    assert!(status.contains("\nActive workers [2]:\n  PID    MEM %    CPU %  started\n"), "{status}");
    assert!(status.ends_with("Use `verdi daemon [incr | decr] [num]` to increase / decrease the number of workers\n"));
    let pids = e.listed_pids();
    assert_eq!(pids.len(), 2, "{status}");
    assert!(pids.iter().all(|pid| alive(*pid)), "{status}");
    for pid in &pids {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe.file_name().unwrap(), "verdi", "the workers are verdi itself");
    }

    // A submitted calculation runs on them.
    let mut builder = ProcessBuilder::for_code(&e.code).unwrap();
    builder.value("x", 1).value("y", 2);
    let node = aiida_daemon::submit(&e.storage, &builder).unwrap();
    let pk = node.pk().unwrap();
    let done = aiida_daemon::await_state(&e.storage, pk, "finished", Duration::from_secs(60)).unwrap_or_else(|err| {
        let log = e.ok(&["daemon", "logshow"]);
        panic!("{err}\ndaemon log:\n{log}")
    });
    assert_eq!(done.attribute("exit_status"), Some(&json!(0)));
    let list = e.ok(&["process", "list"]);
    assert!(
        list.ends_with("Report: Checking daemon load... OK\nReport: Using 0% of the available daemon worker slots.\n"),
        "{list}"
    );

    // More workers, fewer: `decr` stops the newest.
    e.verdi().args(["daemon", "incr", "2"]).assert().success().stdout("Starting 2 daemon workers... OK\n");
    let more = e.listed_pids();
    assert_eq!(more.len(), 4, "{more:?}");
    assert_eq!(more[..2], pids[..]);
    e.verdi().args(["daemon", "decr"]).assert().success().stdout("Stopping 1 daemon workers... OK\n");
    assert_eq!(e.listed_pids(), more[..3]);
    assert!(!alive(more[3]), "the decremented worker ended");

    // Restarted with the default number of workers.
    e.verdi()
        .args(["daemon", "restart"])
        .assert()
        .success()
        .stdout("Profile: test\nStopping the daemon... OK\nStarting the daemon with 1 workers... OK\n");
    let restarted = e.listed_pids();
    assert_eq!(restarted.len(), 1);
    assert!(more[..3].iter().all(|pid| !alive(*pid)), "the old workers ended");

    e.verdi().args(["daemon", "stop"]).assert().success().stdout("Profile: test\nStopping the daemon... OK\n");
    assert!(restarted.iter().chain(&more).all(|pid| !alive(*pid)), "no worker is left");
    e.verdi()
        .args(["daemon", "status"])
        .assert()
        .code(3)
        .stdout("Profile: test\n")
        .stderr("Error: The daemon is not running.\n");
}

#[test]
fn commands_on_a_stopped_daemon_say_that_it_is_not_running() {
    let e = env();
    let _guard = e.guard();
    e.verdi().args(["daemon", "status"]).assert().code(3).stderr("Error: The daemon is not running.\n");
    e.verdi().args(["daemon", "stop"]).assert().success().stdout("Profile: test\nStopping the daemon... OK\n");
    for command in ["incr", "decr", "restart"] {
        e.verdi().args(["daemon", command]).assert().code(1).stdout("").stderr("Critical: daemon is not running\n");
    }
    e.verdi().args(["daemon", "start", "0"]).assert().code(2).stderr(predicate::str::contains("0"));
    e.verdi().args(["daemon", "logshow"]).assert().code(1).stderr(predicate::str::starts_with("Critical: cannot read"));
}

/// A foreground worker, terminated (SIGTERM) when dropped, also when the test fails.
struct Foreground(std::process::Child);

impl Foreground {
    /// Terminates the worker and waits for it: whether it exited successfully.
    fn terminate(&mut self) -> bool {
        // SAFETY: signalling a child of ours; kill has no memory-safety preconditions.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        self.0.wait().is_ok_and(|status| status.success())
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

#[test]
fn a_worker_runs_in_the_foreground_until_it_is_terminated() {
    let e = env();
    let bin = assert_cmd::cargo::cargo_bin("verdi");
    let mut worker = Foreground(
        std::process::Command::new(bin)
            .args(["daemon", "worker"])
            .env("AIIDA_PATH", e.profile.dir.path())
            .env_remove("AIIDA_PROFILE")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut builder = ProcessBuilder::for_code(&e.code).unwrap();
    builder.value("x", 3).value("y", 4);
    let node = aiida_daemon::submit(&e.storage, &builder).unwrap();
    let done = aiida_daemon::await_state(&e.storage, node.pk().unwrap(), "finished", Duration::from_secs(60)).unwrap();
    assert_eq!(done.attribute("exit_status"), Some(&json!(0)));
    assert!(worker.terminate(), "the worker ends cleanly on SIGTERM");
}

#[test]
fn verdi_process_kill_kills_a_queued_process_and_says_so_again() {
    let e = env();
    let mut builder = ProcessBuilder::for_code(&e.code).unwrap();
    builder.value("x", 1).value("y", 2);
    let pk = aiida_daemon::submit(&e.storage, &builder).unwrap().pk().unwrap().to_string();
    e.verdi()
        .args(["process", "kill", &pk])
        .assert()
        .success()
        .stdout(format!("Success: Request to kill Process<{pk}> processed.\n"));
    let node = aiida::orm::Node::load(&e.storage, pk.parse().unwrap()).unwrap();
    assert_eq!(node.attribute("process_state"), Some(&serde_json::json!("killed")));
    e.verdi()
        .args(["process", "kill", &pk])
        .assert()
        .success()
        .stdout(format!("Error: Process<{pk}> is already terminated.\n"));
}

#[test]
fn verdi_process_pause_and_play_a_queued_process() {
    let e = env();
    let mut builder = ProcessBuilder::for_code(&e.code).unwrap();
    builder.value("x", 1).value("y", 2);
    let pk = aiida_daemon::submit(&e.storage, &builder).unwrap().pk().unwrap().to_string();
    e.verdi()
        .args(["process", "pause", &pk])
        .assert()
        .success()
        .stdout(format!("Success: Request to pause Process<{pk}> processed.\n"));
    let node = aiida::orm::Node::load(&e.storage, pk.parse().unwrap()).unwrap();
    assert_eq!(node.attribute("paused"), Some(&serde_json::json!(true)));
    e.verdi()
        .args(["process", "play", &pk])
        .assert()
        .success()
        .stdout(format!("Success: Request to play Process<{pk}> processed.\n"));
    let node = aiida::orm::Node::load(&e.storage, pk.parse().unwrap()).unwrap();
    assert!(node.attribute("paused").is_none() && node.attribute("process_status").is_none());
}

#[test]
fn verdi_process_watch_shows_each_state_change_until_the_process_ends() {
    use std::io::BufRead;
    let e = env();
    let mut builder = ProcessBuilder::for_code(&e.code).unwrap();
    builder.value("x", 1).value("y", 2);
    let pk = aiida_engine::create_process(&e.storage, &builder).unwrap().pk().unwrap();
    let mut watch = std::process::Command::new(assert_cmd::cargo::cargo_bin("verdi"))
        .env("AIIDA_PATH", e.profile.dir.path())
        .env_remove("AIIDA_PROFILE")
        .args(["process", "watch", &pk.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let stdout = std::io::BufReader::new(watch.stdout.take().unwrap());
    std::thread::spawn(move || stdout.lines().map_while(Result::ok).try_for_each(|line| lines.send(line)));
    let next = || received.recv_timeout(Duration::from_secs(30)).expect("a line from verdi process watch");
    assert_eq!(next(), "Report: watching for broadcasted messages, press CTRL+C to stop...");

    // The process runs (here, in this test) while verdi watches.
    let (outputs, _) = aiida_engine::continue_process(&e.storage, pk).unwrap();
    assert_eq!(outputs["sum"].attribute("value"), Some(&json!(3)));
    let mut changes = Vec::new();
    loop {
        match received.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => changes.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = watch.kill();
                panic!("verdi process watch did not end with the process: {changes:?}");
            }
        }
    }
    let status = watch.wait().unwrap();
    assert!(status.success(), "verdi process watch ends once the process has: {status}");
    let pattern = format!("Process<{pk}> [state_changed.");
    let transitions: Vec<(&str, &str)> = changes
        .iter()
        .map(|line| {
            let rest = line.strip_prefix(&pattern).unwrap_or_else(|| panic!("{line}"));
            let (states, message) = rest.split_once("|--]: ").unwrap();
            assert_eq!(message, "No message specified");
            states.split_once('.').unwrap()
        })
        .collect();
    assert_eq!(transitions.first(), Some(&("created", "waiting")), "{changes:?}");
    assert_eq!(transitions.last(), Some(&("running", "finished")), "{changes:?}");
    assert!(transitions.windows(2).all(|pair| pair[0].1 == pair[1].0), "each starts where the last ended: {changes:?}");

    e.verdi().args(["process", "watch", &pk.to_string()]).assert().success().stdout(format!(
        "Report: watching for broadcasted messages, press CTRL+C to stop...\nError: Process<{pk}> is already terminated\n"
    ));
}
