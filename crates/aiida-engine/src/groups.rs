//! The entry-point groups the engine loads from, typed (see [`aiida::plugins::PluginGroup`]).

use aiida::plugins::PluginGroup;

use crate::scheduler::Scheduler;
use crate::transport::TransportType;

/// `aiida.schedulers`: scheduler plugins, e.g. `core.direct`.
#[derive(Debug)]
pub struct Schedulers;

impl PluginGroup for Schedulers {
    const NAME: &'static str = "aiida.schedulers";
    type Plugin = dyn Scheduler;
}

/// `aiida.transports`: transport plugins, e.g. `core.local`.
#[derive(Debug)]
pub struct Transports;

impl PluginGroup for Transports {
    const NAME: &'static str = "aiida.transports";
    type Plugin = dyn TransportType;
}

/// `aiida.calculations`: calculation-job plugins, e.g. `core.arithmetic.add`.
#[derive(Debug)]
pub struct Calculations;

impl PluginGroup for Calculations {
    const NAME: &'static str = "aiida.calculations";
    type Plugin = dyn crate::calcjob::CalcJob;
}

/// `aiida.parsers`: parser plugins, e.g. `core.arithmetic.add`.
#[derive(Debug)]
pub struct Parsers;

impl PluginGroup for Parsers {
    const NAME: &'static str = "aiida.parsers";
    type Plugin = dyn crate::calcjob::Parser;
}
