//! The core of the AiiDA engine in Rust: the instance folder and its profiles, storage in
//! aiida-core's own PostgreSQL schema and file-repository format, the ORM, and entry points. The
//! `verdi` command line sits on top, in the crate `aiida-cli`.
//!
//! Library code takes the profile or storage it works on as an argument: there is no hidden,
//! process-wide "current profile". Only `verdi` resolves a default profile.

#![warn(missing_docs)]

pub mod config;
pub mod orm;
pub mod plugins;
mod private_fs;
pub mod report;
pub mod runtime;
pub mod storage;

#[doc(hidden)]
pub mod __private {
    pub use ctor;
}
