//! What a run publishes for its processes: where its server comes from ([`Backend`]), the state
//! its keeper writes (`state.json`), and whether the keeper is alive.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::conn::ConnectionInfo;
use crate::env::{BACKEND_ENV, URL_ENV};
use crate::error::{Error, Result};
use crate::os::{self, ProcessId};

/// Where the run's server comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backend {
    /// A server launched from local binaries (the default).
    Launched,
    /// An existing server named by `TESTPG_URL`; only databases with the run's prefix are touched.
    Url,
    /// A container started with testcontainers (cargo feature `testcontainers`).
    Testcontainers,
}

impl Backend {
    /// `TESTPG_BACKEND`, else `url` when `TESTPG_URL` is set, else `launched`.
    pub fn from_env() -> Result<Backend> {
        let url_set = std::env::var_os(URL_ENV).is_some_and(|u| !u.is_empty());
        match std::env::var(BACKEND_ENV).unwrap_or_default().as_str() {
            "" if url_set => Ok(Backend::Url),
            "" | "launched" => Ok(Backend::Launched),
            "url" if url_set => Ok(Backend::Url),
            "url" => Err(Error::Backend("url".into(), "set TESTPG_URL=postgresql://user:password@host:port/")),
            "testcontainers" if cfg!(feature = "testcontainers") => Ok(Backend::Testcontainers),
            "testcontainers" => {
                Err(Error::Backend("testcontainers".into(), "build with the cargo feature `testcontainers` of testpg"))
            }
            other => Err(Error::Backend(other.into(), "choose `launched`, `url` or `testcontainers`")),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Launched => "launched",
            Backend::Url => "url",
            Backend::Testcontainers => "testcontainers",
        }
    }
}

/// What the keeper publishes in `state.json` for the run's test processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub backend: Backend,
    pub admin: ConnectionInfo,
    pub prefix: String,
    pub keeper: ProcessId,
    pub owner: ProcessId,
    pub postmaster: Option<ProcessId>,
}

pub(crate) fn read_state(run_dir: &Path) -> Option<State> {
    serde_json::from_slice(&fs::read(run_dir.join("state.json")).ok()?).ok()
}

pub(crate) fn write_state(run_dir: &Path, state: &State) -> Result<()> {
    let tmp = run_dir.join("state.json.tmp");
    let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
    // Private: it may hold the password of a TESTPG_URL server.
    let mut file = os::create_file(&tmp, 0o600).map_err(Error::io("write", &tmp))?;
    std::io::Write::write_all(&mut file, &bytes).map_err(Error::io("write", &tmp))?;
    fs::rename(&tmp, run_dir.join("state.json")).map_err(Error::io("rename", &tmp))
}

/// Whether a keeper holds the run's `keeper.lock` (a lock dies with its process, so this cannot
/// be fooled by a reused pid).
pub(crate) fn keeper_alive(run_dir: &Path) -> bool {
    let Ok(file) = os::open_file(&run_dir.join("keeper.lock")) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}
