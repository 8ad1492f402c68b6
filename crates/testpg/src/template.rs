//! [`Template`]: a database built once per key by the caller's migration step, cloned for every
//! test (the server builds and clones it, see `server`).

use std::sync::Arc;

use crate::conn::ConnectionInfo;
use crate::error::{BoxError, Result};

type Migrate = dyn Fn(&ConnectionInfo) -> Result<(), BoxError> + Send + Sync;

/// A template database: built once per run and key by the caller's migration step, then cloned
/// for every test.
///
/// The key names the schema version: change it whenever the migration changes.
#[derive(Clone)]
pub struct Template {
    pub(crate) key: String,
    pub(crate) migrate: Arc<Migrate>,
    pub(crate) cached: bool,
}

impl Template {
    /// A template whose database `migrate` fills (schema, seed data). `migrate` gets superuser
    /// settings for the new database and must close its connections before returning.
    pub fn new(
        key: impl Into<String>,
        migrate: impl Fn(&ConnectionInfo) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Template {
        Template { key: key.into(), migrate: Arc::new(migrate), cached: false }
    }

    /// Keeps the template, once built, for later runs: a launched server's data is kept in
    /// testpg's cache (per PostgreSQL binaries) when a run that built such a template ends, and
    /// the next runs start with it, with a few clones ready. Only for a key that changes whenever
    /// the migration does (say, a hash of the schema): a template is never built again for a key
    /// the cache has.
    pub fn cached(mut self) -> Template {
        self.cached = true;
        self
    }

    /// A template of an empty database.
    pub fn empty() -> Template {
        Template::new("empty", |_| Ok(()))
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn hash(&self) -> String {
        format!("{:012x}", crate::hash(&self.key) >> 16)
    }
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").field("key", &self.key).finish_non_exhaustive()
    }
}
