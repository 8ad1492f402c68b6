//! What running `core.arithmetic.add` costs on `core.direct` + `core.local`, warm, with the time
//! of each life-cycle step (from the engine's `aiida_engine::steps` debug events); and the wall
//! time of 100 runs at once from threads of one process. aiida-core 2.9.4 takes 0.50 s for one run
//! on this machine.
//!
//! As a plugin's test pays it: the profile, computer and code come from the fixtures (the
//! profile's repository and the computer's work folder in the run's scratch folder).
//!
//! `cargo bench --bench calcjob` (or `just bench`); `BENCH_ITERATIONS` sets the sample size.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use aiida::orm::data::installed_code;
use aiida_engine::{ProcessBuilder, run_get_node};
use aiida_fixtures::prelude::*;
use tracing_subscriber::layer::SubscriberExt;

/// The steps' times of the runs so far, in microseconds.
static STEPS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

/// Collects the engine's step events.
struct Steps;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Steps {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "aiida_engine::steps" {
            return;
        }
        #[derive(Default)]
        struct Fields(Option<String>, Option<u64>);
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "step" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "micros" {
                    self.1 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Fields(Some(step), Some(micros)) = fields {
            STEPS.lock().unwrap().push((step, micros));
        }
    }
}

fn median(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    (samples[n / 2], samples[n / 10], samples[(n * 9) / 10])
}

fn main() {
    let subscriber = tracing_subscriber::registry().with(Steps);
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let n: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);

    let profile = aiida_profile();
    let storage = profile.storage();
    let computers = aiida_computer();
    let no_login_shell = serde_json::json!({"use_login_shell": false}).as_object().unwrap().clone();
    let computer = computers
        .get(ComputerSpec {
            label: Some("no-login-shell".into()),
            configuration_kwargs: Some(no_login_shell),
            ..Default::default()
        })
        .unwrap();
    let mut code = installed_code(&computer, "/bin/bash", "bash", Some("core.arithmetic.add")).unwrap();
    code.store(storage).unwrap();
    // The same with aiida's default, a login shell for every command (its cost is the start-up
    // files of the user running the bench): aiida_localhost.
    let login = aiida_localhost();
    let mut login_code = installed_code(&login, "/bin/bash", "bash-login", Some("core.arithmetic.add")).unwrap();
    login_code.store(storage).unwrap();
    let builder_for = |code: &aiida::orm::Node| {
        let mut builder = ProcessBuilder::for_code(code).unwrap();
        builder.value("x", 1).value("y", 2);
        builder
    };
    let builder = || builder_for(&code);

    println!("aiida-engine benchmarks (release build)");
    for _ in 0..3 {
        run_get_node(storage, &builder()).unwrap();
    }
    STEPS.lock().unwrap().clear();
    let mut totals = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let (outputs, _) = run_get_node(storage, &builder()).unwrap();
        totals.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(outputs["sum"].attribute("value"), Some(&serde_json::json!(3)));
    }
    let (m, p10, p90) = median(totals);
    println!(
        "{:<52} median {m:>8.2} ms   p10 {p10:>8.2}   p90 {p90:>8.2}   n={n}   (aiida-core 500 ms; target <= 25 ms)",
        "run(core.arithmetic.add), direct + local, no login"
    );
    let mut steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order = Vec::new();
    for (step, micros) in STEPS.lock().unwrap().iter() {
        if !order.contains(step) {
            order.push(step.clone());
        }
        steps.entry(step.clone()).or_default().push(*micros as f64 / 1e3);
    }
    for step in order {
        let (m, p10, p90) = median(steps.remove(&step).unwrap());
        println!("  {:<50} median {m:>8.2} ms   p10 {p10:>8.2}   p90 {p90:>8.2}", step);
    }

    let mut logins = Vec::new();
    for _ in 0..n.min(10) {
        let start = Instant::now();
        run_get_node(storage, &builder_for(&login_code)).unwrap();
        logins.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let (m, p10, p90) = median(logins);
    println!(
        "{:<52} median {m:>8.2} ms   p10 {p10:>8.2}   p90 {p90:>8.2}",
        "the same with a login shell (aiida's default)"
    );

    let mut walls = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        std::thread::scope(|scope| {
            let runs: Vec<_> = (0..100)
                .map(|_| {
                    let builder = builder();
                    scope.spawn(move || run_get_node(storage, &builder).unwrap())
                })
                .collect();
            for run in runs {
                run.join().unwrap();
            }
        });
        walls.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let (m, _, _) = median(walls.clone());
    println!("{:<52} median {m:>8.2} ms   runs {walls:.0?}", "100 runs at once (threads), wall time");
}
