//! The AiiDA engine in Rust, layer 2 (on the core, `aiida`): processes and their provenance,
//! calculation jobs run on a computer through a [`transport`] and a [`scheduler`], parsers, and
//! the built-in plugins (`core.local`, `core.direct`, `core.arithmetic.add`).
//!
//! Plugins implement the traits of this crate and register as entry points of the typed groups in
//! [`groups`], so the engine loads them by name without knowing their types.

#![warn(missing_docs)]

pub mod groups;
pub mod scheduler;
pub mod transport;

pub mod arithmetic;
mod builder;
pub mod calcjob;
mod connections;
pub mod exit_code;
pub mod functions;
mod launch;

pub use builder::ProcessBuilder;
pub use exit_code::ExitCode;
pub use launch::{
    EngineError, Outputs, continue_process, continue_process_async, create_process, create_process_async,
    kill_process_async, pause_process_async, play_process_async, run, run_get_node, run_get_node_async,
};

#[doc(hidden)]
pub mod __private {
    pub use aiida::orm::Node;
    pub use aiida::storage::Storage;
}
