//! What `core.ssh` costs, against the private sshd of the SSH fixtures (loopback, release build):
//! connecting (`ssh -G`, TCP, key exchange, key authentication, the SFTP session), a 50 MB file
//! put and got back, and `run(core.arithmetic.add)` on `core.ssh` + `core.direct`.
//!
//! `cargo bench --bench ssh --features ssh`; `BENCH_ITERATIONS` sets the sample size.

use std::time::Instant;

use aiida::orm::data::installed_code;
use aiida::orm::{Computer, User};
use aiida::plugins;
use aiida_engine::groups::Transports;
use aiida_engine::{ProcessBuilder, run_get_node};
use aiida_fixtures::prelude::*;
use serde_json::{Map, Value, json};

fn median(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    (samples[n / 2], samples[n / 10], samples[(n * 9) / 10])
}

fn report(what: &str, samples: Vec<f64>, note: &str) {
    let n = samples.len();
    let (m, p10, p90) = median(samples);
    println!("{what:<52} median {m:>8.2} ms   p10 {p10:>8.2}   p90 {p90:>8.2}   n={n}{note}");
}

fn params(storage: &aiida::storage::Storage, computer: &Computer) -> Map<String, Value> {
    let user = User::default_user(storage).unwrap();
    computer.authinfo(storage, &user).unwrap().auth_params().clone()
}

fn main() {
    let n: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let profile = aiida_profile();
    let storage = profile.storage();
    let computers = aiida_computer_ssh();
    // As the fixture configures it (aiida's: the run's key, AutoAddPolicy, safe_interval 1 s, and
    // a login shell for every command), and without the login shell.
    let fixture = computers.get(Some("ssh"), true).unwrap();
    let quick = computers.get(Some("ssh-quick"), true).unwrap();
    let mut quick_params = params(storage, &quick);
    quick_params.insert("use_login_shell".into(), json!(false));
    quick.configure(storage, &User::default_user(storage).unwrap(), quick_params.clone()).unwrap();

    println!("core.ssh benchmarks (release build; a private sshd on loopback)");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ssh = plugins::factory::<Transports>("core.ssh").unwrap();
    let mut connects = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let transport = runtime.block_on(ssh.open(quick.hostname(), &quick_params)).unwrap();
        connects.push(start.elapsed().as_secs_f64() * 1e3);
        runtime.block_on(transport.close()).unwrap();
    }
    report("connect (ssh -G, kex, auth, SFTP session)", connects, "");

    let transport = runtime.block_on(ssh.open(quick.hostname(), &quick_params)).unwrap();
    let mut commands = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let out = runtime.block_on(transport.exec_command_wait("true", None, None)).unwrap();
        commands.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(out.retval, 0);
    }
    report("a command (`true`, no login shell)", commands, "");
    runtime.block_on(transport.close()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..50 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let local = dir.path().join("big.bin");
    std::fs::write(&local, &big).unwrap();
    for compress in [true, false] {
        let mut params = quick_params.clone();
        params.insert("compress".into(), json!(compress));
        let transport = runtime.block_on(ssh.open(quick.hostname(), &params)).unwrap();
        let (mut puts, mut gets) = (Vec::new(), Vec::new());
        for i in 0..n.min(5) {
            let remote = dir.path().join(format!("remote-{i}.bin"));
            let back = dir.path().join(format!("back-{i}.bin"));
            let start = Instant::now();
            runtime.block_on(transport.put(&local, &remote)).unwrap();
            puts.push(start.elapsed().as_secs_f64() * 1e3);
            let start = Instant::now();
            runtime.block_on(transport.get(&remote, &back, false)).unwrap();
            gets.push(start.elapsed().as_secs_f64() * 1e3);
            assert_eq!(std::fs::metadata(&back).unwrap().len(), big.len() as u64);
            std::fs::remove_file(remote).unwrap();
            std::fs::remove_file(back).unwrap();
        }
        let how = if compress { "compressed (aiida's default)" } else { "compress false" };
        report(&format!("put 50 MB, {how}"), puts, "");
        report(&format!("get 50 MB, {how}"), gets, "");
        runtime.block_on(transport.close()).unwrap();
    }
    drop(runtime);

    let add = |computer: &Computer, label: &str| {
        let mut code = installed_code(computer, "/bin/bash", label, Some("core.arithmetic.add")).unwrap();
        code.store(storage).unwrap();
        move || {
            let mut builder = ProcessBuilder::for_code(&code).unwrap();
            builder.value("x", 1).value("y", 2);
            builder
        }
    };
    let quick_add = add(&quick, "add-quick");
    let mut runs = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let (outputs, _) = run_get_node(storage, &quick_add()).unwrap();
        runs.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(outputs["sum"].attribute("value"), Some(&json!(3)));
    }
    report("run(core.arithmetic.add), ssh + direct, no login", runs, "   (core.local: 18 ms; aiida-core 0.50 s)");
    // Each run after 1.1 s: the connection has closed, and is opened again.
    let mut cold = Vec::new();
    for _ in 0..n.min(5) {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let start = Instant::now();
        run_get_node(storage, &quick_add()).unwrap();
        cold.push(start.elapsed().as_secs_f64() * 1e3);
    }
    report("the same, connecting anew", cold, "");
    let fixture_add = add(&fixture, "add-fixture");
    let mut runs = Vec::new();
    for _ in 0..n.min(5) {
        let start = Instant::now();
        run_get_node(storage, &fixture_add()).unwrap();
        runs.push(start.elapsed().as_secs_f64() * 1e3);
    }
    report("the same with a login shell (aiida's default)", runs, "   (root's .bashrc here: 130 ms a command)");
}
