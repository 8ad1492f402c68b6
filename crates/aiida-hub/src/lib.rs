//! The AiiDA plugin hub: plugin metadata gathered from where plugins are published (the registry's
//! source list, the Python package index, crates.io, GitHub) into the registry that
//! `aiida-registry` reads.
//!
//! Built so far: the plugin list ([`source_list`], aiida-registry's `plugins.yaml` with `crates_io`
//! and `visibility` added, and the checks it allows), the sources' common error ([`SourceError`]), the crates.io source
//! ([`sources::CratesIo`]: a crate's latest version, its metadata, and its plugin manifest read
//! from the published `.crate`) and the PyPI source ([`sources::Pypi`]: a project's latest
//! release, aiida-registry's metadata fields, and the entry points of its wheel) and the GitHub
//! source ([`sources::GitHub`]: description, licence, commit activity). Each source
//! takes its base address, so tests replay it from loopback.

#![warn(missing_docs)]

pub mod api;
pub mod pipeline;
pub mod source_list;
pub mod sources;
pub mod store;

pub use sources::SourceError;
