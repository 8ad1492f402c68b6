//! The engine against real PostgreSQL servers (testpg) and real `verdi` processes.

mod common;
mod orm;
mod storage;
mod verdi;
