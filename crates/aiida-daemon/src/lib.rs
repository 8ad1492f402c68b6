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
mod queue;
mod wait;
mod worker;

pub use client::{DaemonClient, DaemonError};
pub use queue::submit;
pub use wait::{AwaitError, await_state};
