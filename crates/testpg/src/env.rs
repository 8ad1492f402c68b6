//! The environment variables testpg reads, in one place. Each is documented in the crate's
//! environment table; values are checked by [`Server::shared`](crate::Server::shared), which
//! says what it expected.

/// The folder holding `initdb` and `postgres`.
pub const BIN_DIR_ENV: &str = "TESTPG_BIN_DIR";

/// The download fallback (cargo feature `embedded`): `0`, `no`, `off` or `false` disables it;
/// anything else is the version requirement to download (default `*`, the newest).
pub const DOWNLOAD_ENV: &str = "TESTPG_DOWNLOAD";

/// The folder under which servers, caches and runs are kept (absolute; default
/// `/dev/shm/testpg-<uid>`).
pub const DIR_ENV: &str = "TESTPG_DIR";

/// How many ready clones the keeper keeps per template (default 4).
pub const POOL_SIZE_ENV: &str = "TESTPG_POOL_SIZE";

/// Seconds to wait for a server to be ready (default 60).
pub const START_TIMEOUT_ENV: &str = "TESTPG_START_TIMEOUT";

/// The user to run PostgreSQL as when we are root (default `postgres`).
pub const OS_USER_ENV: &str = "TESTPG_OS_USER";

/// The URL of an existing server to use instead of launching one.
pub const URL_ENV: &str = "TESTPG_URL";

/// The backend: `launched` (default), `url`, `testcontainers`.
pub const BACKEND_ENV: &str = "TESTPG_BACKEND";

/// The image tag of the `testcontainers` backend (default `15-alpine`).
pub const CONTAINER_TAG_ENV: &str = "TESTPG_CONTAINER_TAG";

/// Names the run explicitly, so that processes not started by one `cargo nextest` (e.g. several
/// `cargo test` binaries under one script) share a server.
pub const RUN_ID_ENV: &str = "TESTPG_RUN_ID";

/// The pid of the process whose end ends a `TESTPG_RUN_ID` run (default: the parent of the first
/// process that attaches).
pub const RUN_OWNER_ENV: &str = "TESTPG_RUN_OWNER";

/// How much the run's keeper logs to `keeper.log` in the run's folder: `error`, `warn`, `info`
/// (the default), `debug` or `trace`.
pub const LOG_ENV: &str = "TESTPG_LOG";

/// Set on the keeper process (this executable run again): its run folder.
pub(crate) const KEEPER_ENV: &str = "TESTPG_KEEPER";

/// Set on the keeper process: the run's owner, `pid:start time`.
pub(crate) const KEEPER_OWNER_ENV: &str = "TESTPG_KEEPER_OWNER";
