//! Exit codes: how a process says how it ended (aiida's `ExitCode`).

use std::borrow::Cow;

/// A process's exit status with its label and message; 0 is success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitCode {
    /// The status (0 success; 100-199 scheduler errors; 400 and up free for plugins).
    pub status: i32,
    /// The label, e.g. `ERROR_NEGATIVE_NUMBER`.
    pub label: Cow<'static, str>,
    /// The message, e.g. "The sum of the operands is a negative number.".
    pub message: Cow<'static, str>,
    /// Whether a node that ended with it may not be reused by caching.
    pub invalidates_cache: bool,
}

impl ExitCode {
    /// An exit code (it does not invalidate the cache; see [`ExitCode::invalidating_cache`]).
    pub const fn new(status: i32, label: &'static str, message: &'static str) -> ExitCode {
        ExitCode { status, label: Cow::Borrowed(label), message: Cow::Borrowed(message), invalidates_cache: false }
    }

    /// This exit code, marked as invalidating the cache.
    pub const fn invalidating_cache(mut self) -> ExitCode {
        self.invalidates_cache = true;
        self
    }

    /// Success.
    pub const SUCCESS: ExitCode = ExitCode::new(0, "SUCCESS", "");
}

/// The exit codes every process has (aiida's `Process` spec).
pub const PROCESS_EXIT_CODES: [ExitCode; 4] = [
    ExitCode::new(1, "ERROR_UNSPECIFIED", "The process has failed with an unspecified error.").invalidating_cache(),
    ExitCode::new(2, "ERROR_LEGACY_FAILURE", "The process failed with legacy failure mode.").invalidating_cache(),
    ExitCode::new(10, "ERROR_INVALID_OUTPUT", "The process returned an invalid output.").invalidating_cache(),
    ExitCode::new(11, "ERROR_MISSING_OUTPUT", "The process did not register a required output.").invalidating_cache(),
];

/// The exit codes every calculation job has (aiida's `CalcJob` spec), besides the process ones.
pub const CALCJOB_EXIT_CODES: [ExitCode; 7] = [
    ExitCode::new(100, "ERROR_NO_RETRIEVED_FOLDER", "The process did not have the required `retrieved` output.")
        .invalidating_cache(),
    ExitCode::new(110, "ERROR_SCHEDULER_OUT_OF_MEMORY", "The job ran out of memory.").invalidating_cache(),
    ExitCode::new(120, "ERROR_SCHEDULER_OUT_OF_WALLTIME", "The job ran out of walltime.").invalidating_cache(),
    ExitCode::new(131, "ERROR_SCHEDULER_INVALID_ACCOUNT", "The specified account is invalid.").invalidating_cache(),
    ExitCode::new(140, "ERROR_SCHEDULER_NODE_FAILURE", "The node running the job failed.").invalidating_cache(),
    ExitCode::new(150, "STOPPED_BY_MONITOR", "{message}").invalidating_cache(),
    ExitCode::new(160, "ERROR_STASHING_FAILED", "{message}").invalidating_cache(),
];
