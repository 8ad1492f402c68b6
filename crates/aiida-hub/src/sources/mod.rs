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

/// An HTTP client for a source: a timeout, a User-Agent naming the hub (crates.io refuses
/// anonymous clients), statuses returned rather than errors.
pub(crate) fn agent(timeout: std::time::Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("aiida-hub/", env!("CARGO_PKG_VERSION"), " (https://github.com/aiidateam/aiida-registry)"))
        .build()
        .into()
}

/// The body at `url` from `source_name` (2xx), at most `limit` bytes; `None` for a 404.
pub(crate) fn get(
    agent: &ureq::Agent,
    source_name: &'static str,
    url: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, SourceError> {
    let unreachable = |reason: String| SourceError::Unreachable { source_name, what: url.to_owned(), reason };
    let response = agent.get(url).call().map_err(|e| unreachable(e.to_string()))?;
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
}

/// The JSON at `url` from `source_name` (see [`get`]); `None` for a 404.
pub(crate) fn get_json(
    agent: &ureq::Agent,
    source_name: &'static str,
    url: &str,
    limit: u64,
) -> Result<Option<serde_json::Value>, SourceError> {
    let Some(body) = get(agent, source_name, url, limit)? else { return Ok(None) };
    serde_json::from_slice(&body).map(Some).map_err(|e| SourceError::Malformed {
        source_name,
        what: url.to_owned(),
        reason: e.to_string(),
    })
}
