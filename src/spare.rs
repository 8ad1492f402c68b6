//! The storage behind temporary profiles, reused within a process.
//!
//! A temporary profile's storage is a database cloned from the migrated template, a repository
//! folder, and the open connection to them. When the test that used it ends, the storage is kept,
//! and the next test of the process that needs a temporary profile gets it reset (every row
//! deleted, ids restarted, a new repository container, its own default user): under `cargo test`,
//! whose threads run many tests per process, a test then costs no new database, folder or
//! connection. Under `cargo nextest`, which runs each test in a process of its own, nothing is
//! kept: the database is emptied and handed back to the run's pool, where the next test process
//! gets it (no new clone, no drop).

use std::sync::Mutex;

use aiida::config::Profile;
use aiida::storage::Storage;
use testpg::{Server, TestDatabase};

use crate::error::FixtureError;
use crate::profile::{ScratchDir, aiida_template, psql_dos, scratch_dir};

/// How many storages a process keeps: about as many as tests run at once.
const KEEP_AT_MOST: usize = 8;

/// What a temporary profile's storage stands on: its database and repository folder.
#[derive(Debug)]
pub(crate) struct StorageParts {
    _database: TestDatabase,
    _repository: ScratchDir,
}

static KEPT: Mutex<Vec<(Storage, StorageParts)>> = Mutex::new(Vec::new());

/// Whether tests of this process run one per process (`cargo nextest`'s default), so that a
/// storage kept for the next test would never be used.
fn one_test_per_process() -> bool {
    std::env::var("NEXTEST_EXECUTION_MODE").is_ok_and(|m| m == "process-per-test")
}

impl StorageParts {
    /// Storage for a new test profile `name` whose default user is `email`: a kept one, reset for
    /// it, or a new clone of the template with a new repository folder.
    pub(crate) fn for_profile(name: &str, email: &str) -> Result<(Profile, Storage, StorageParts), FixtureError> {
        loop {
            let kept = KEPT.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some((storage, parts)) = kept else { break };
            let profile = Profile::new(name, &storage.profile().psql_dos()?, email).with_test_profile(true);
            match storage.with_profile(&profile).and_then(|s| s.reset().map(|()| s)) {
                Ok(storage) => return Ok((profile, storage, parts)),
                // A connection that broke (say, the server restarted) is not worth repairing.
                Err(_) => drop(parts),
            }
        }
        let server = Server::shared()?;
        let database = server.database(&aiida_template())?;
        let repository = scratch_dir(&server, "repository")?;
        let profile =
            Profile::new(name, &psql_dos(database.connection(), repository.path()), email).with_test_profile(true);
        let storage = Storage::initialise(&profile)?;
        Ok((profile, storage, StorageParts { _database: database, _repository: repository }))
    }

    /// Called when the profile is gone: keeps its storage for the next test of the process, or
    /// empties its database and hands it back to the run's pool for another process.
    pub(crate) fn give_back(self, storage: Storage) {
        // Another session on the database (a second storage of the test's, a `verdi` it started)
        // could still write into it: then it is not passed on, but dropped once that session ends.
        if !one_test_per_process() {
            let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() < KEEP_AT_MOST && storage.other_sessions().ok() == Some(0) {
                kept.push((storage, self));
            }
            return;
        }
        // Back to what the template holds, then the connection closed: the keeper hands it out again.
        let reusable = storage.empty_for_reuse().unwrap_or(false);
        drop(storage);
        if reusable {
            self._database.recycle();
        }
    }
}
