//! The core against real PostgreSQL servers (testpg).

mod common;
mod concurrency;
mod orm;
mod storage;
