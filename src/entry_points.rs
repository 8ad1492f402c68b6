//! The `entry_points` fixture: plugins added or removed for one test.

use std::any::Any;

use aiida::plugins::ScopedEntryPoints;

use crate::error::FixtureError;

/// Adds and removes entry points for the current test only: the changes are visible to the
/// test's thread, invisible to tests running at the same time, and undone when it ends.
///
/// As aiida's `EntryPointManager`, a string names the FULL group literally (`aiida.calculations:my.calc`),
/// and `remove` fails only when no group has an entry point of that name.
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
