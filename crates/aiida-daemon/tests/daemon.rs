//! The daemon for real: worker processes (this test binary re-run) serving a temporary profile.

#[path = "../../aiida/tests/engine/common.rs"]
mod common;

use std::time::{Duration, Instant};

use aiida::orm::Node;
use aiida::storage::Storage;
use aiida_daemon::DaemonClient;
use aiida_engine::ProcessBuilder;
use serde_json::json;

use crate::common::LocalSetup;

type Setup = LocalSetup;

fn setup() -> Setup {
    LocalSetup::new(&[])
}

fn add(s: &Setup, x: i64, y: i64) -> ProcessBuilder {
    let mut builder = ProcessBuilder::for_code(&s.code).unwrap();
    builder.value("x", x).value("y", y);
    builder
}

/// Waits (with a deadline) until process `pk` is sealed.
fn await_sealed(storage: &Storage, client: &DaemonClient, pk: i32, timeout: Duration) -> Node {
    let deadline = Instant::now() + timeout;
    loop {
        let node = Node::load(storage, pk).unwrap();
        if node.is_sealed() {
            return node;
        }
        assert!(
            Instant::now() < deadline,
            "process {pk} is still {:?}; daemon log:\n{}",
            node.attribute("process_state"),
            std::fs::read_to_string(client.log_path()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

#[test]
fn a_submitted_calculation_runs_on_a_worker_process() {
    let s = setup();
    let client = DaemonClient::new(&s.storage, s.profile.instance().dir()).tied_to_this_process();
    client.start(1).unwrap();
    assert!(client.is_daemon_running());
    let pids = client.worker_pids();
    assert_eq!(pids.len(), 1);
    assert_ne!(pids[0], std::process::id(), "a process of its own");

    let node = aiida_daemon::submit(&s.storage, &add(&s, 1, 2)).unwrap();
    assert_eq!(node.attribute("process_state"), Some(&json!("created")));
    let node = await_sealed(&s.storage, &client, node.pk().unwrap(), Duration::from_secs(20));
    assert_eq!(node.attribute("exit_status"), Some(&json!(0)));
    let sum = node.outgoing(&s.storage).unwrap().into_iter().find(|l| l.label == "sum").unwrap();
    assert_eq!(sum.node.attribute("value"), Some(&json!(3)));

    client.stop(Duration::from_secs(5)).unwrap();
    assert!(!client.is_daemon_running());
    assert!(!alive(pids[0]), "the worker ended");
}

#[test]
fn processes_submitted_while_the_daemon_is_stopped_run_when_it_starts() {
    let s = setup();
    let client = DaemonClient::new(&s.storage, s.profile.instance().dir()).tied_to_this_process();
    let nodes: Vec<Node> = (0..5).map(|i| aiida_daemon::submit(&s.storage, &add(&s, i, 10)).unwrap()).collect();
    client.start(2).unwrap();
    for (i, node) in nodes.iter().enumerate() {
        let node = await_sealed(&s.storage, &client, node.pk().unwrap(), Duration::from_secs(20));
        let sum = node.outgoing(&s.storage).unwrap().into_iter().find(|l| l.label == "sum").unwrap();
        assert_eq!(sum.node.attribute("value"), Some(&json!(i as i64 + 10)));
    }
    client.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_calculation_whose_worker_is_killed_finishes_on_another_with_its_job_run_once() {
    let s = setup();
    let client = DaemonClient::new(&s.storage, s.profile.instance().dir()).tied_to_this_process();
    client.start(2).unwrap();
    let count = s.work.path().join("executions");
    let mut builder = add(&s, 1, 2);
    builder.option("sleep", 2).option("prepend_text", format!("echo ran >> '{}'", count.display()));
    let node = aiida_daemon::submit(&s.storage, &builder).unwrap();
    let pk = node.pk().unwrap();
    // Wait until the job is with the scheduler, then kill the worker that runs it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Node::load(&s.storage, pk).unwrap().attribute("job_id").is_none() {
        assert!(Instant::now() < deadline, "never submitted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let holder = aiida::runtime::block_on(s.storage.execute_own_async(&format!(
        "SELECT w.pid FROM aiida_rs_process_queue q JOIN aiida_rs_daemon_worker w ON w.id = q.worker
         WHERE q.process_id = {pk}"
    )))
    .unwrap();
    let pid: i32 = holder[0][0].as_deref().unwrap().parse().unwrap();
    // SAFETY: sending a signal has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);

    let node = await_sealed(&s.storage, &client, pk, Duration::from_secs(30));
    assert_eq!(node.attribute("exit_status"), Some(&json!(0)));
    let sum = node.outgoing(&s.storage).unwrap().into_iter().find(|l| l.label == "sum").unwrap();
    assert_eq!(sum.node.attribute("value"), Some(&json!(3)));
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "ran\n", "the job ran exactly once");
    client.stop(Duration::from_secs(5)).unwrap();
}

/// The threads of process `pid`.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn two_hundred_submissions_finish_on_one_worker_with_few_threads() {
    let s = setup();
    let client = DaemonClient::new(&s.storage, s.profile.instance().dir()).tied_to_this_process();
    client.start(1).unwrap();
    let pid = client.worker_pids()[0];
    let nodes: Vec<Node> = (0..200).map(|i| aiida_daemon::submit(&s.storage, &add(&s, i, 1)).unwrap()).collect();
    let mut most = 0;
    for (i, node) in nodes.iter().enumerate() {
        let pk = node.pk().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let node = loop {
            most = most.max(threads(pid));
            let node = Node::load(&s.storage, pk).unwrap();
            if node.is_sealed() {
                break node;
            }
            assert!(Instant::now() < deadline, "process {pk} did not finish");
            std::thread::sleep(Duration::from_millis(5));
        };
        let sum = node.outgoing(&s.storage).unwrap().into_iter().find(|l| l.label == "sum");
        let sum = sum.unwrap_or_else(|| {
            panic!(
                "process {pk} ended without sum: {:?} {:?} {:?}; daemon log:\n{}",
                node.attribute("process_state"),
                node.attribute("exit_status"),
                node.attribute("exception"),
                std::fs::read_to_string(client.log_path()).unwrap_or_default()
            )
        });
        assert_eq!(sum.node.attribute("value"), Some(&json!(i as i64 + 1)));
    }
    println!("the worker had at most {most} threads for 200 processes");
    assert!(most > 0 && most <= 32, "the worker had {most} threads");
    client.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn processes_running_when_the_daemon_stops_finish_after_it_starts_again() {
    let s = setup();
    let client = DaemonClient::new(&s.storage, s.profile.instance().dir()).tied_to_this_process();
    client.start(1).unwrap();
    let count = s.work.path().join("executions");
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            let mut builder = add(&s, i, 1);
            builder.option("sleep", 1).option("prepend_text", format!("echo {i} >> '{}'", count.display()));
            aiida_daemon::submit(&s.storage, &builder).unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes.iter().any(|n| Node::load(&s.storage, n.pk().unwrap()).unwrap().attribute("job_id").is_none()) {
        assert!(Instant::now() < deadline, "not all submitted");
        std::thread::sleep(Duration::from_millis(5));
    }
    client.stop(Duration::from_secs(5)).unwrap();
    assert!(!client.is_daemon_running());
    for node in &nodes {
        assert!(!Node::load(&s.storage, node.pk().unwrap()).unwrap().is_sealed(), "stopped in the middle");
    }
    client.start(1).unwrap();
    for (i, node) in nodes.iter().enumerate() {
        let node = await_sealed(&s.storage, &client, node.pk().unwrap(), Duration::from_secs(20));
        let sum = node.outgoing(&s.storage).unwrap().into_iter().find(|l| l.label == "sum").unwrap();
        assert_eq!(sum.node.attribute("value"), Some(&json!(i as i64 + 1)));
    }
    let mut ran: Vec<String> = std::fs::read_to_string(&count).unwrap().lines().map(str::to_owned).collect();
    ran.sort();
    assert_eq!(ran, ["0", "1", "2"], "each job ran once");
    client.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn two_daemons_of_two_instance_folders_serve_one_profile_together_running_each_process_once() {
    let s = setup();
    // A second instance folder naming the same database and repository: another machine's.
    let other = tempfile::tempdir().unwrap();
    let instance = aiida::config::Instance::at(other.path().join(".aiida"));
    instance.update(|c| c.add_profile(s.profile.profile.clone())).unwrap();
    let here = DaemonClient::new(&s.storage, s.profile.instance().dir()).tied_to_this_process();
    let there = DaemonClient::new(&s.storage, instance.dir()).tied_to_this_process();
    here.start(1).unwrap();
    there.start(1).unwrap();
    assert_ne!(here.worker_pids(), there.worker_pids());
    let count = s.work.path().join("executions");
    let nodes: Vec<Node> = (0..20)
        .map(|i| {
            let mut builder = add(&s, i, 1);
            builder.option("prepend_text", format!("echo {i} >> '{}'", count.display()));
            aiida_daemon::submit(&s.storage, &builder).unwrap()
        })
        .collect();
    for node in &nodes {
        let node = await_sealed(&s.storage, &here, node.pk().unwrap(), Duration::from_secs(30));
        assert_eq!(node.attribute("exit_status"), Some(&json!(0)));
    }
    let mut ran: Vec<i64> = std::fs::read_to_string(&count).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    ran.sort();
    assert_eq!(ran, (0..20).collect::<Vec<i64>>(), "every process ran exactly once");
    here.stop(Duration::from_secs(5)).unwrap();
    there.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn cleaning_the_storage_empties_the_queue_too() {
    let s = setup();
    aiida_daemon::submit(&s.storage, &add(&s, 1, 2)).unwrap();
    let queued = |storage: &Storage| {
        let rows = aiida::runtime::block_on(storage.execute_own_async("SELECT count(*) FROM aiida_rs_process_queue"));
        rows.unwrap()[0][0].clone().unwrap()
    };
    assert_eq!(queued(&s.storage), "1");
    s.storage.clean().unwrap();
    assert_eq!(queued(&s.storage), "0", "no queued pk may name a node of the next test");
}

/// Where the parent test tells the child below which instance folder to use.
const CHILD_INSTANCE: &str = "AIIDA_DAEMON_TEST_INSTANCE";

#[test]
fn workers_end_when_the_process_that_started_them_is_killed() {
    use std::io::BufRead;
    let s = setup();
    // The child: this test binary running the ignored test below, which starts two workers.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "daemon_starter_child", "--nocapture", "--test-threads", "1"])
        .env(CHILD_INSTANCE, s.profile.instance().dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // (libtest may print the test's name on the same line first.)
        if let Some((_, list)) = line.split_once("WORKERS ") {
            pids = list.split(',').map(|p| p.parse::<u32>().unwrap()).collect();
            break;
        }
    }
    assert_eq!(pids.len(), 2, "the child started its workers");
    assert!(pids.iter().all(|pid| alive(*pid)));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|pid| alive(*pid)) {
        assert!(Instant::now() < deadline, "workers outlived the killed test process: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run by the test above in a process of its own, which it kills (ignored otherwise).
#[test]
#[ignore = "run by workers_end_when_the_process_that_started_them_is_killed"]
fn daemon_starter_child() {
    let instance = aiida::config::Instance::at(std::env::var(CHILD_INSTANCE).expect("started by the parent test"));
    let profile = instance.load().unwrap().profile("test").unwrap();
    let storage = Storage::open(&profile).unwrap();
    let client = DaemonClient::new(&storage, instance.dir()).tied_to_this_process();
    client.start(2).unwrap();
    let pids: Vec<String> = client.worker_pids().iter().map(u32::to_string).collect();
    println!("WORKERS {}", pids.join(","));
    // Until the parent kills this process (a minute at most).
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn killing_a_waiting_process_ends_it_killed_and_kills_its_job() {
    let s = setup();
    let client = DaemonClient::new(&s.storage, s.profile.instance().dir()).tied_to_this_process();
    client.start(1).unwrap();
    let mut builder = add(&s, 1, 2);
    builder.option("sleep", 30);
    let pk = aiida_daemon::submit(&s.storage, &builder).unwrap().pk().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let job: u32 = loop {
        if let Some(job) =
            Node::load(&s.storage, pk).unwrap().attribute("job_id").and_then(|j| j.as_str().map(str::to_owned))
        {
            break job.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "never submitted");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(alive(job), "the job runs");
    let node = aiida_daemon::kill(&s.storage, pk, aiida_daemon::KILLED_BY_VERDI, Duration::from_secs(10)).unwrap();
    assert_eq!(node.attribute("process_state"), Some(&json!("killed")));
    assert_eq!(node.attribute("process_status"), Some(&json!("Killed through `verdi process kill`")));
    assert!(node.is_sealed());
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(job) {
        assert!(Instant::now() < deadline, "the scheduler job {job} was not killed");
        std::thread::sleep(Duration::from_millis(10));
    }
    client.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_queued_process_that_no_worker_runs_is_killed_at_once() {
    let s = setup();
    let pk = aiida_daemon::submit(&s.storage, &add(&s, 1, 2)).unwrap().pk().unwrap();
    let node = aiida_daemon::kill(&s.storage, pk, aiida_daemon::KILLED_BY_VERDI, Duration::from_secs(5)).unwrap();
    assert_eq!(node.attribute("process_state"), Some(&json!("killed")));
    assert!(node.is_sealed());
    let queued = aiida::runtime::block_on(s.storage.execute_own_async("SELECT count(*) FROM aiida_rs_process_queue"));
    assert_eq!(queued.unwrap()[0][0].as_deref(), Some("0"), "nothing left to run");
}

#[test]
fn a_paused_process_waits_and_finishes_once_played() {
    let s = setup();
    let client = DaemonClient::new(&s.storage, s.profile.instance().dir()).tied_to_this_process();
    client.start(1).unwrap();
    let count = s.work.path().join("executions");
    let mut builder = add(&s, 1, 2);
    builder.option("sleep", 1).option("prepend_text", format!("echo ran >> '{}'", count.display()));
    let pk = aiida_daemon::submit(&s.storage, &builder).unwrap().pk().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Node::load(&s.storage, pk).unwrap().attribute("job_id").is_none() {
        assert!(Instant::now() < deadline, "never submitted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let node = aiida_daemon::pause(&s.storage, pk, aiida_daemon::PAUSED_BY_VERDI, Duration::from_secs(10)).unwrap();
    assert_eq!(node.attribute("paused"), Some(&json!(true)));
    assert_eq!(node.attribute("process_status"), Some(&json!("Paused through `verdi process pause`")));
    assert!(!node.is_sealed());
    assert!(!client.worker_pids().is_empty() && client.is_daemon_running());
    aiida_daemon::play(&s.storage, pk).unwrap();
    let node = await_sealed(&s.storage, &client, pk, Duration::from_secs(20));
    assert_eq!(node.attribute("exit_status"), Some(&json!(0)));
    assert!(node.attribute("paused").is_none());
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "ran\n", "the job ran once");
    client.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_worker_runs_no_more_processes_at_once_than_its_slots() {
    let s = LocalSetup::new(&[("daemon.worker_process_slots", json!(2))]);
    let client = DaemonClient::new(&s.storage, s.profile.instance().dir()).tied_to_this_process();
    client.start(1).unwrap();
    let mut builder = add(&s, 1, 2);
    builder.option("sleep", 1);
    let pks: Vec<i32> = (0..5).map(|_| aiida_daemon::submit(&s.storage, &builder).unwrap().pk().unwrap()).collect();
    let (mut most_claimed, mut most_active) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let claimed = aiida::runtime::block_on(
            s.storage.execute_own_async("SELECT count(*) FROM aiida_rs_process_queue WHERE worker IS NOT NULL"),
        )
        .unwrap();
        let claimed: usize = claimed[0][0].as_deref().unwrap().parse().unwrap();
        let nodes: Vec<Node> = pks.iter().map(|pk| Node::load(&s.storage, *pk).unwrap()).collect();
        let state = |node: &Node| node.attribute("process_state").cloned();
        let active =
            nodes.iter().filter(|n| [Some(json!("waiting")), Some(json!("running"))].contains(&state(n))).count();
        (most_claimed, most_active) = (most_claimed.max(claimed), most_active.max(active));
        if nodes.iter().all(Node::is_sealed) {
            assert!(nodes.iter().all(|n| n.attribute("exit_status") == Some(&json!(0))));
            break;
        }
        assert!(Instant::now() < deadline, "not all finished: {:?}", nodes.iter().map(state).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!((most_claimed, most_active), (2, 2), "two slots, used and not exceeded");
    client.stop(Duration::from_secs(5)).unwrap();
}
