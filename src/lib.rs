//! rstest fixtures for testing AiiDA plugins against real, isolated instances of the engine.
//!
//! The fixtures themselves arrive with the engine; today this crate re-exports the temporary
//! PostgreSQL they stand on, [`testpg`]: one fast, root-safe server per test run, shared by every
//! test process, and an isolated database per test.

pub use testpg;
