//! The `entry_points` fixture: plugins added or removed for one test.

use std::any::Any;

use aiida::plugins::{EntryPointScope, ScopedEntryPoints};

use crate::error::FixtureError;

/// Adds and removes entry points for the current test only: the changes are in force on the
/// test's thread, invisible to tests running at the same time, and undone when it ends.
///
/// As aiida's `EntryPointManager`, a string names the FULL group literally (`aiida.calculations:my.calc`),
/// and `remove` fails only when no group has an entry point of that name.
///
/// # Where the changes reach
///
/// The changes live in an [`EntryPointScope`], entered on the test's thread. A thread or a Tokio
/// task the test starts sees them once handed the scope ([`EntryPointManager::scope`]):
/// `scope.in_scope(|| ...)` on a thread, `scope.instrument(future)` for a task; the engine's
/// `run` and `submit` take the scope and carry it to where the process runs.
///
/// A daemon worker is another process (the test binary re-executed): it gets the scope described
/// as text, so only what it can find again by name reaches it: removals, and plugins registered at
/// link time as hidden and enabled by name. Register a test's plugin that way when a worker must
/// run it; a value added with [`EntryPointManager::add`] exists only in the test's process, and
/// describing its scope for another process is an error that says so.
///
/// ```
/// # use aiida_fixtures::prelude::*;
/// pub struct MyCalculation;
/// // Linked into the test binary, seen by no test until one enables it.
/// aiida::entry_point!(hidden, "aiida.calculations", "my.calculation", MyCalculation);
///
/// let mut entry_points = entry_points();
/// entry_points.enable("aiida.calculations:my.calculation").unwrap();
/// let scope = entry_points.scope().clone();
/// let in_thread = std::thread::spawn(move || {
///     scope.in_scope(|| aiida::plugins::calculation_factory::<MyCalculation>("my.calculation").is_ok())
/// });
/// assert!(in_thread.join().unwrap());
/// assert!(entry_points.scope().describe().is_ok(), "a worker process can enable it too");
/// ```
#[derive(Default)]
pub struct EntryPointManager {
    scope: ScopedEntryPoints,
}

impl std::fmt::Debug for EntryPointManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryPointManager").finish_non_exhaustive()
    }
}

fn split(entry_point: &str) -> Result<(&str, &str), FixtureError> {
    match entry_point.split(':').collect::<Vec<_>>().as_slice() {
        [group, name] => Ok((group, name)),
        _ => Err(FixtureError::EntryPointFormat),
    }
}

impl EntryPointManager {
    /// A manager with no changes yet.
    pub fn new() -> EntryPointManager {
        EntryPointManager::default()
    }

    /// Adds `value` as the entry point `group:name`.
    pub fn add<T: Any + Send + Sync>(&mut self, value: T, entry_point: &str) -> Result<(), FixtureError> {
        let (group, name) = split(entry_point)?;
        self.scope.add(group, name, value);
        Ok(())
    }

    /// Adds `value` as entry point `name` of `group`.
    pub fn add_to<T: Any + Send + Sync>(&mut self, value: T, group: &str, name: &str) {
        self.scope.add(group, name, value);
    }

    /// Enables the hidden entry point `group:name`, registered at link time with
    /// `aiida::entry_point!(hidden, group, name, value)`: unlike a value added at run time, it
    /// reaches worker processes too.
    pub fn enable(&mut self, entry_point: &str) -> Result<(), FixtureError> {
        let (group, name) = split(entry_point)?;
        Ok(self.scope.enable(group, name)?)
    }

    /// The scope holding this test's changes, to hand to the threads, tasks and processes it
    /// starts.
    pub fn scope(&self) -> &EntryPointScope {
        self.scope.scope()
    }

    /// Removes the entry point `group:name`.
    pub fn remove(&mut self, entry_point: &str) -> Result<(), FixtureError> {
        let (group, name) = split(entry_point)?;
        self.remove_from(group, name)
    }

    /// Removes entry point `name` of `group`.
    pub fn remove_from(&mut self, group: &str, name: &str) -> Result<(), FixtureError> {
        self.scope
            .remove(group, name)
            .map_err(|_| FixtureError::NoEntryPoint { group: group.to_owned(), name: name.to_owned() })
    }
}
