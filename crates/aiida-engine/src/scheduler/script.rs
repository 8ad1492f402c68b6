//! The submit script, assembled as aiida's `Scheduler.get_submit_script` does.

use super::{JobTemplate, Scheduler};

/// The submit script for `template` (to be written).
pub fn submit_script(_scheduler: &dyn Scheduler, _template: &JobTemplate) -> String {
    todo!()
}
