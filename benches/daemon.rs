//! What the daemon costs, beside aiida-core 2.9.4 with RabbitMQ on the same machine: daemon start
//! 1.20 s, `submit_and_await` of `core.arithmetic.add` 0.62-0.71 s warm and 1.46 s the first, daemon
//! stop 0.31 s. Workers are this bench binary run again (release build).
//!
//! `cargo bench --bench daemon`; `BENCH_ITERATIONS` sets the sample size.

use std::time::{Duration, Instant};

use aiida::orm::data::installed_code;
use aiida_engine::ProcessBuilder;
use aiida_fixtures::prelude::*;

fn median_line(name: &str, mut samples: Vec<f64>, reference: &str) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    println!(
        "{name:<52} median {:>8.2} ms   p10 {:>8.2}   p90 {:>8.2}   n={n}   ({reference})",
        samples[n / 2],
        samples[n / 10],
        samples[(n * 9) / 10]
    );
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let n: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    println!("aiida-daemon benchmarks (release build; workers are processes of this binary)");
    let profile = aiida_profile();
    let no_login_shell = serde_json::json!({"use_login_shell": false}).as_object().cloned();
    let computer = aiida_computer()
        .get(ComputerSpec { label: Some("quick".into()), configuration_kwargs: no_login_shell, ..Default::default() })
        .unwrap();
    let mut code = installed_code(&computer, "/bin/bash", "bash", Some("core.arithmetic.add")).unwrap();
    code.store(&profile).unwrap();
    let builder = || {
        let mut builder = ProcessBuilder::for_code(&code).unwrap();
        builder.value("x", 1).value("y", 2);
        builder
    };

    let (mut starts, mut firsts, mut warms, mut stops) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n.min(10) {
        let daemon = daemon_client();
        let start = Instant::now();
        daemon.client().start(1).unwrap();
        starts.push(ms(start));
        let start = Instant::now();
        daemon.submit_and_await(&builder()).unwrap();
        firsts.push(ms(start));
        for _ in 0..3 {
            let start = Instant::now();
            daemon.submit_and_await(&builder()).unwrap();
            warms.push(ms(start));
        }
        let start = Instant::now();
        daemon.client().stop(Duration::from_secs(5)).unwrap();
        stops.push(ms(start));
    }
    median_line("daemon start (1 worker, serving)", starts, "aiida-core 1.20 s; target <= 30 ms");
    median_line("submit_and_await(core.arithmetic.add), first", firsts, "aiida-core 1.46 s; target <= 100 ms");
    median_line("submit_and_await(core.arithmetic.add), warm", warms, "aiida-core 0.62-0.71 s; target <= 30 ms");
    median_line("daemon stop", stops, "aiida-core 0.31 s; target <= 20 ms");
}
