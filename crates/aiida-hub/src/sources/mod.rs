//! Where plugin metadata comes from. Each source is a small type over HTTP with a configurable
//! base address; a failure says which source, what was asked and why, so that a pass can go on
//! with the other plugins and report it.

mod crates_io;
mod github;
mod pypi;

pub use crates_io::{CrateVersion, CratesIo};
pub use github::{GitHub, repository};
pub use pypi::{Pypi, PypiRelease, aiida_requirement, parse_entry_points_txt};

/// Why a source could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source could not be reached, or did not answer in time.
    #[error("{source_name} cannot be reached for {what}: {reason}")]
    Unreachable {
        /// The source (`crates.io`, ...).
        source_name: &'static str,
        /// What was asked (a URL).
        what: String,
        /// Why.
        reason: String,
    },
    /// It answered with an error status.
    #[error("{source_name} answered {status} for {what}")]
    Status {
        /// The source.
        source_name: &'static str,
        /// What was asked.
        what: String,
        /// The HTTP status.
        status: u16,
    },
    /// What it sent cannot be read.
    #[error("{source_name} sent what cannot be read for {what}: {reason}")]
    Malformed {
        /// The source.
        source_name: &'static str,
        /// What was asked.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The plugin's manifest is missing or invalid.
    #[error("the plugin manifest of {what}")]
    Manifest {
        /// The crate and version.
        what: String,
        /// The cause.
        #[source]
        source: aiida_registry::manifest::ManifestError,
    },
}

/// A source's HTTP client: a timeout, a User-Agent naming the hub (crates.io refuses anonymous
/// clients), statuses returned rather than errors, and retries with back-off (doubling) on a
/// connection failure, a timeout, a 5xx or a 429.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    pub(crate) agent: ureq::Agent,
    attempts: u32,
    initial: std::time::Duration,
}

impl Http {
    /// A client waiting `timeout` for each answer; 3 attempts, 0.5 s before the second.
    pub(crate) fn new(timeout: std::time::Duration) -> Http {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!(
                "aiida-hub/",
                env!("CARGO_PKG_VERSION"),
                " (https://github.com/aiidateam/aiida-registry)"
            ))
            .build()
            .into();
        Http { agent, attempts: 3, initial: std::time::Duration::from_millis(500) }
    }

    /// The same with `attempts` attempts in all, `initial` before the second.
    pub(crate) fn with_retries(mut self, attempts: u32, initial: std::time::Duration) -> Http {
        self.attempts = attempts.max(1);
        self.initial = initial;
        self
    }

    /// `attempt` until it succeeds, fails for good, or the attempts are spent.
    pub(crate) fn retrying<T>(&self, mut attempt: impl FnMut() -> Result<T, SourceError>) -> Result<T, SourceError> {
        let mut pause = self.initial;
        for _ in 1..self.attempts {
            match attempt() {
                Err(e) if retryable(&e) => {
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                other => return other,
            }
        }
        attempt()
    }

    /// The body at `url` from `source_name` (2xx), at most `limit` bytes; `None` for a 404.
    pub(crate) fn get(&self, source_name: &'static str, url: &str, limit: u64) -> Result<Option<Vec<u8>>, SourceError> {
        self.retrying(|| {
            let unreachable = |reason: String| SourceError::Unreachable { source_name, what: url.to_owned(), reason };
            let response = self.agent.get(url).call().map_err(|e| unreachable(e.to_string()))?;
            match response.status().as_u16() {
                404 => Ok(None),
                status if !(200..300).contains(&status) => {
                    Err(SourceError::Status { source_name, what: url.to_owned(), status })
                }
                _ => {
                    let body = response.into_body().with_config().limit(limit).read_to_vec();
                    body.map(Some).map_err(|e| unreachable(e.to_string()))
                }
            }
        })
    }

    /// The JSON at `url` (see [`get`](Self::get)); `None` for a 404.
    pub(crate) fn get_json(
        &self,
        source_name: &'static str,
        url: &str,
        limit: u64,
    ) -> Result<Option<serde_json::Value>, SourceError> {
        let Some(body) = self.get(source_name, url, limit)? else { return Ok(None) };
        serde_json::from_slice(&body).map(Some).map_err(|e| SourceError::Malformed {
            source_name,
            what: url.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// Whether trying again may help.
fn retryable(error: &SourceError) -> bool {
    match error {
        SourceError::Unreachable { .. } => true,
        SourceError::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}
