//! `core.direct`: jobs run as background processes, followed with `ps`.

/// The `core.direct` scheduler (to be written).
#[derive(Debug, Default)]
pub struct DirectScheduler;
