//! The core against real PostgreSQL servers (testpg).

mod common;
mod orm;
mod storage;
