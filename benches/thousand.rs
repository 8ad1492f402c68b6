//! 1,000 trivial tests, each with a clean profile (store one `Int`, count): what a plugin's suite
//! pays per test. Not part of `cargo test` (`test = false`); `scripts/bench-suite` (`just bench`)
//! times it under both runners, debug build, as a plugin author runs it.
//!
//! With `AIIDA_BENCH_FIRST_BODY=<file>`, the first test body of the run writes into that file how
//! many milliseconds after its process started it began.

use std::io::Write;
use std::sync::OnceLock;
use std::time::SystemTime;

use aiida::orm::{QueryBuilder, data};
use aiida_fixtures::prelude::*;

static PROCESS_START: OnceLock<SystemTime> = OnceLock::new();

/// Before `main`: as close to the process's start as Rust code gets (after the dynamic loader).
#[ctor::ctor(unsafe)]
fn mark_process_start() {
    let _ = PROCESS_START.set(SystemTime::now());
}

fn mark_first_body() {
    let Some(path) = std::env::var_os("AIIDA_BENCH_FIRST_BODY") else { return };
    let started = *PROCESS_START.get().expect("set before main");
    let ms = SystemTime::now().duration_since(started).unwrap_or_default().as_secs_f64() * 1e3;
    // The first body to create the file is the run's first.
    if let Ok(mut file) = std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        let _ = writeln!(file, "{ms:.1}");
    }
}

#[rstest]
fn trivial(
    #[values(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)] hundreds: i64,
    #[values(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)] tens: i64,
    #[values(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)] ones: i64,
    aiida_profile_clean: AiidaProfile,
) {
    mark_first_body();
    let value = hundreds * 100 + tens * 10 + ones;
    data::int(value).store(&aiida_profile_clean).unwrap();
    assert_eq!(QueryBuilder::nodes().count(&aiida_profile_clean).unwrap(), 1, "the profile was not clean");
}
