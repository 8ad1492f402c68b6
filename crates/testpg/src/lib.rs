//! Fast, root-safe, temporary PostgreSQL for tests.
//!
//! `testpg` gives each test a database of its own, cloned from a template that is migrated once per
//! run, on a PostgreSQL server shared by every test process of the run:
//!
//! ```no_run
//! use testpg::{Server, Template};
//!
//! # fn main() -> Result<(), testpg::Error> {
//! let schema = Template::new("my-app-schema-v3", |db| {
//!     // Connect to `db` with any client (db.url(), db.key_value()) and create the schema.
//!     # let _ = db;
//!     Ok(())
//! });
//! let server = Server::shared()?;          // started on first use, stopped when the run ends
//! let db = server.database(&schema)?;      // a clone from the warm pool: a few milliseconds
//! println!("connect to {}", db.url());
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! - **Binaries** ([`Binaries::discover`]): `TESTPG_BIN_DIR`, `pg_config --bindir`, the highest
//!   `/usr/lib/postgresql/*/bin`, `PATH`; with the `embedded` feature (off by default: it brings
//!   an HTTP and TLS stack) PostgreSQL is downloaded into a cache when none is found and the
//!   network allows.
//! - **Launch** ([`Cluster`]): `initdb` runs once per binaries into a cache; each server starts from
//!   a copy, with `postgres` run directly (as the `postgres` user when we are root), on a Unix
//!   socket in a private folder (on tmpfs when there is room), fsync and autovacuum off, and is
//!   ready as soon as `postmaster.pid` says so.
//! - **Sharing** ([`Server::shared`]): under `cargo nextest` all test processes of a run share one
//!   server (keyed by `NEXTEST_RUN_ID`); under `cargo test` each test binary has one. A *keeper*
//!   process (this executable run again) owns the server and stops it, and removes its folder,
//!   when the run ends, including after SIGKILL. Leftovers of crashed runs go at the next run.
//! - **Databases** ([`Server::database`]): the caller's migration builds a template database once
//!   per key and run (once per machine for a [`Template::cached`] one, whose server data the cache
//!   keeps); tests get clones (`CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY`) from a pool the
//!   keeper keeps warm, asking it over a Unix socket in the run folder; handed-back databases are
//!   dropped in the background, or, when their test emptied them ([`TestDatabase::recycle`]),
//!   handed out again.
//! - **Other backends** ([`Backend`]): an existing server (`TESTPG_URL`; only databases with the
//!   run's own prefix are created and dropped), or a container (cargo feature `testcontainers`,
//!   `TESTPG_BACKEND=testcontainers`).
//!
//! # Environment
//!
//! The names are in [`env`](mod@env).
//!
//! | variable | meaning |
//! |---|---|
//! | `TESTPG_BIN_DIR` | folder holding `initdb` and `postgres` |
//! | `TESTPG_URL` | use this server instead of launching one |
//! | `TESTPG_BACKEND` | `launched`, `url` or `testcontainers` |
//! | `TESTPG_RUN_ID` | share one server among all processes that set the same id (any text), whoever starts them; takes precedence over nextest's run |
//! | `TESTPG_RUN_OWNER` | with `TESTPG_RUN_ID`: the pid of the process whose end ends the run (it must be running). The process that starts the run's server (the first to attach) decides; default: that process's parent. When the owner exits, the keeper stops the server and removes the run's folder, and processes still using it get [`Error::RunEnded`]; in a script, `export TESTPG_RUN_OWNER=$$` keeps the server until the script ends |
//! | `TESTPG_DIR` | where servers, caches and run folders live (default `/dev/shm/testpg-<uid>`); an absolute path. It and everything below must be ours: a folder owned by another user, writable by others or a symlink is refused ([`Error::NotOurs`]) |
//! | `TESTPG_OS_USER` | the user to run PostgreSQL as when we are root (default `postgres`) |
//! | `TESTPG_POOL_SIZE` | ready clones kept per template: a whole number (default 4) |
//! | `TESTPG_DOWNLOAD` | `0` disables the download fallback, else a version requirement |
//! | `TESTPG_START_TIMEOUT` | seconds to wait for a server to be ready: a whole number above 0 (default 60) |
//! | `TESTPG_CONTAINER_TAG` | the image tag of the `testcontainers` backend (default `15-alpine`) |
//!
//! Values that cannot be used are reported by [`Server::shared`] as [`Error::BadSetting`].

#![warn(missing_docs)]

mod binaries;
mod cache;
mod client;
mod cluster;
mod conn;
pub mod env;
mod error;
mod keeper;
mod keeper_link;
mod naming;
mod os;
mod pool;
mod run;
mod server;
mod snapshot;
mod state;
mod template;
mod trust;

pub use binaries::Binaries;
pub use cluster::{Cluster, ClusterOptions, SUPERUSER};
pub use conn::ConnectionInfo;
pub use error::{BoxError, Error, Result};
pub use server::{Server, TestDatabase};
pub use state::Backend;
pub use template::Template;

/// The folder holding everything of ours (see `TESTPG_DIR`).
pub fn base_dir() -> std::path::PathBuf {
    cluster::base_dir()
}

/// FNV-1a: a stable hash for names derived from keys (std's hasher may change between releases).
pub(crate) fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
