//! What the fixtures cost, against aiida-core 2.9.4's pytest fixtures measured on the same
//! machine (psql storage): process start to the first test body with a fresh profile 3.22 s;
//! a clean profile 96 ms; teardown at the end of a run 2.21 s.
//!
//! `cargo bench --bench fixtures` (or `just bench`); `BENCH_ITERATIONS` sets the sample size.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aiida::orm::{Computer, data};
use aiida_fixtures::prelude::*;

const CHILD_ENV: &str = "AIIDA_FIXTURES_BENCH_CHILD";

fn median_line(name: &str, mut samples: Vec<Duration>, target: &str) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = samples.len();
    println!(
        "{name:<52} median {:>8.2} ms   p10 {:>8.2}   p90 {:>8.2}   n={n}   ({target})",
        ms(samples[n / 2]),
        ms(samples[n / 10]),
        ms(samples[(n * 9) / 10])
    );
}

/// A child process of this bench: a "test process" that takes a fresh profile, then says so.
fn child_main() {
    let profile = aiida_profile();
    assert!(profile.profile().is_test_profile());
    println!("READY");
}

/// Spawns a child in run `run_id` owned by `owner`; returns the time until its test body ran.
fn time_child(run_id: &str, owner: u32) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "1")
        .env("TESTPG_RUN_ID", run_id)
        .env("TESTPG_RUN_OWNER", owner.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(line.trim(), "READY", "the child failed");
    child.wait().unwrap();
    elapsed
}

fn owner() -> Child {
    Command::new("sleep").arg("600").stdin(Stdio::null()).spawn().unwrap()
}

fn run_dir(run_id: &str) -> PathBuf {
    testpg::base_dir().join("runs").join(format!("run-{run_id}"))
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child_main();
    }
    let n: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    println!("aiida-fixtures benchmarks (release build; children are processes of this binary)");

    // Warm: the run's server is up and the template built; each child is a new test process.
    let mut warm_owner = owner();
    let warm_run = format!("bench-warm-{}", std::process::id());
    time_child(&warm_run, warm_owner.id());
    let samples = (0..n).map(|_| time_child(&warm_run, warm_owner.id())).collect();
    median_line("process start -> test body, fresh profile, server up", samples, "aiida-core 3.22 s; target <= 150 ms");

    // Cold: a new run each time (server start from the cached initdb, template migration).
    let mut cold = Vec::new();
    let mut teardown = Vec::new();
    for i in 0..n.min(10) {
        let mut run_owner = owner();
        let run = format!("bench-cold-{}-{i}", std::process::id());
        cold.push(time_child(&run, run_owner.id()));
        // Teardown at the end of a run: from the runner's end until server and folder are gone.
        let dir = run_dir(&run);
        let start = Instant::now();
        run_owner.kill().unwrap();
        run_owner.wait().unwrap();
        while dir.exists() {
            assert!(start.elapsed() < Duration::from_secs(30), "the run was not torn down");
            std::thread::sleep(Duration::from_micros(200));
        }
        teardown.push(start.elapsed());
    }
    median_line("process start -> test body, fresh profile, cold", cold, "target <= 400 ms");
    median_line("teardown at the end of a run (server + folders)", teardown, "aiida-core 2.21 s; target <= 100 ms");

    // In process: a fresh profile, and cleaning a used one.
    let fresh = (0..n)
        .map(|_| {
            let start = Instant::now();
            let profile = aiida_profile_tmp();
            let elapsed = start.elapsed();
            drop(profile);
            elapsed
        })
        .collect();
    median_line("fresh temporary profile, in a running test process", fresh, "");
    let profile = aiida_profile_tmp();
    let clean = (0..n)
        .map(|i| {
            for v in 0..10 {
                data::int(v).store(&profile).unwrap();
            }
            let mut computer = Computer::new(format!("c{i}"), "localhost", "core.local", "core.direct");
            computer.store(&profile).unwrap();
            let start = Instant::now();
            profile.clean().unwrap();
            start.elapsed()
        })
        .collect();
    median_line("clean a used profile (11 rows, new repository)", clean, "aiida-core 96 ms; target <= 10 ms");

    // Storing: one Int, then 1,000 Ints from 8 threads and from 8 tasks through one storage.
    profile.clean().unwrap();
    let store = (0..n * 10)
        .map(|v| {
            let mut node = data::int(v as i64);
            let start = Instant::now();
            node.store(&profile).unwrap();
            start.elapsed()
        })
        .collect();
    median_line("store an Int", store, "");
    let storage = profile.storage();
    let threads = (0..n.min(10))
        .map(|_| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..8 {
                    scope.spawn(move || {
                        for v in 0..125 {
                            data::int(t * 1000 + v).store(storage).unwrap();
                        }
                    });
                }
            });
            start.elapsed()
        })
        .collect();
    median_line("store 1,000 Ints from 8 threads, one storage", threads, "");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tasks = (0..n.min(10))
        .map(|_| {
            let start = Instant::now();
            runtime.block_on(async {
                let tasks: Vec<_> = (0..8)
                    .map(|t| {
                        let storage = storage.clone();
                        tokio::spawn(async move {
                            for v in 0..125 {
                                data::int(t * 1000 + v).store_async(&storage).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            });
            start.elapsed()
        })
        .collect();
    median_line("store 1,000 Ints from 8 tasks, one storage", tasks, "");
    warm_owner.kill().unwrap();
    warm_owner.wait().unwrap();
}
