//! The AiiDA daemon in Rust, layer 3 (on the engine): processes submitted to a queue in the
//! profile's own PostgreSQL (tables of ours beside aiida-core's), served by worker processes that
//! claim them with `FOR UPDATE SKIP LOCKED`, are woken with `LISTEN/NOTIFY` (a slow poll as a
//! safety net), beat a heartbeat, and take over the processes of a worker that died. No broker.
//!
//! [`submit`] hands a process to the daemon; [`DaemonClient`] starts and stops workers, which are
//! this very executable re-run (a constructor catches them before `main` or the test harness), so
//! a worker links exactly the plugins its starter links.

#![warn(missing_docs)]

mod client;
mod control;
mod queue;
mod wait;
mod worker;

pub use client::{DaemonClient, DaemonError};
pub use control::{KILLED_BY_VERDI, PAUSED_BY_VERDI, kill, pause, play};
pub use queue::{Submittable, submit};
pub use wait::{AwaitError, StateChange, Watch, await_state, watch};

/// Runs a daemon worker of profile `profile` (configured in the instance folder `instance`) in this
/// process, in the foreground, until it is told to stop (SIGTERM, SIGINT): `verdi daemon worker`.
/// It serves the entry points linked into this executable.
pub fn run_worker(instance: &std::path::Path, profile: &str) -> Result<(), String> {
    worker::run(worker::WorkerSpec {
        instance: instance.to_owned(),
        profile: profile.to_owned(),
        parent: None,
        scope: None,
    })
}
