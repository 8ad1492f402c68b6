//! Schedulers: how the engine runs a job on a computer and follows it.
//!
//! A [`Scheduler`] (an entry point of `aiida.schedulers`) writes the submit script from a
//! [`JobTemplate`], submits it through a transport, lists the state of jobs and kills them. Options
//! a scheduler does not honour are reported by [`Scheduler::ignored_options`], never dropped in
//! silence.

mod direct;
mod script;

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

pub use direct::DirectScheduler;
pub use script::submit_script;

use crate::transport::{Transport, TransportError};

/// Errors of schedulers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The job resources are not valid for this scheduler.
    #[error("invalid job resources: {0}")]
    Resources(String),
    /// A scheduler command failed or answered what we cannot read.
    #[error("{0}")]
    Command(String),
    /// The scheduler cannot tell which job, if any, was submitted from a folder (the default of
    /// [`Scheduler::submitted_job`]).
    #[error("the scheduler cannot tell whether a job was submitted from the job's folder")]
    CannotTell,
}

/// How the codes of a job run: one after the other, or all at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum CodeRunMode {
    /// One after the other (aiida's `SERIAL`, 0).
    #[default]
    Serial,
    /// All at once, then `wait` (aiida's `PARALLEL`, 1).
    Parallel,
}

/// The resources of a job in machines and MPI processes (aiida's `NodeNumberJobResource`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeNumberJobResource {
    /// Machines.
    pub num_machines: u32,
    /// MPI processes per machine.
    pub num_mpiprocs_per_machine: u32,
    /// MPI processes in all.
    pub tot_num_mpiprocs: u32,
    /// Cores per machine, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_cores_per_machine: Option<u32>,
    /// Cores per MPI process, when given (`OMP_NUM_THREADS` for the direct scheduler).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_cores_per_mpiproc: Option<u32>,
}

impl NodeNumberJobResource {
    /// The resources given as aiida's `metadata.options.resources`: at least two of
    /// `num_machines`, `num_mpiprocs_per_machine` and `tot_num_mpiprocs` (the third is derived;
    /// `default_mpiprocs_per_machine`, the computer's, fills in the second when only one is given),
    /// optionally `num_cores_per_machine` and `num_cores_per_mpiproc`; anything else is an error.
    pub fn from_options(
        resources: &Map<String, Value>,
        default_mpiprocs_per_machine: Option<u32>,
    ) -> Result<Self, SchedulerError> {
        const KNOWN: [&str; 5] = [
            "num_machines",
            "num_mpiprocs_per_machine",
            "tot_num_mpiprocs",
            "num_cores_per_machine",
            "num_cores_per_mpiproc",
        ];
        let unknown: Vec<&str> = resources.keys().map(String::as_str).filter(|k| !KNOWN.contains(k)).collect();
        if !unknown.is_empty() {
            return Err(SchedulerError::Resources(format!(
                "these parameters were not recognized: {}",
                unknown.join(", ")
            )));
        }
        let get = |key: &str| -> Result<Option<u32>, SchedulerError> {
            match resources.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    v.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n >= 1).map(Some).ok_or_else(|| {
                        SchedulerError::Resources(format!("`{key}` must be a whole number >= 1, not {v}"))
                    })
                }
            }
        };
        let machines = get("num_machines")?;
        let mut per_machine = get("num_mpiprocs_per_machine")?;
        let total = get("tot_num_mpiprocs")?;
        if per_machine.is_none() && !(machines.is_some() && total.is_some()) {
            per_machine = default_mpiprocs_per_machine;
        }
        let (machines, per_machine, total) = match (machines, per_machine, total) {
            (Some(m), Some(p), Some(t)) if m * p != t => {
                return Err(SchedulerError::Resources(format!(
                    "tot_num_mpiprocs ({t}) is not num_machines ({m}) times num_mpiprocs_per_machine ({p})"
                )));
            }
            (Some(m), Some(p), _) => (m, p, m * p),
            (Some(m), None, Some(t)) if t % m == 0 => (m, t / m, t),
            (None, Some(p), Some(t)) if t % p == 0 => (t / p, p, t),
            (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
                return Err(SchedulerError::Resources(
                    "tot_num_mpiprocs must be a multiple of num_machines and num_mpiprocs_per_machine".to_owned(),
                ));
            }
            _ => {
                return Err(SchedulerError::Resources(
                    "give at least two of num_machines, num_mpiprocs_per_machine and tot_num_mpiprocs, e.g. \
                     {\"num_machines\": 1, \"num_mpiprocs_per_machine\": 1}"
                        .to_owned(),
                ));
            }
        };
        Ok(NodeNumberJobResource {
            num_machines: machines,
            num_mpiprocs_per_machine: per_machine,
            tot_num_mpiprocs: total,
            num_cores_per_machine: get("num_cores_per_machine")?,
            num_cores_per_mpiproc: get("num_cores_per_mpiproc")?,
        })
    }
}

/// How to run one code of a job (aiida's `JobTemplateCodeInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobTemplateCodeInfo {
    /// What comes before the command line: the MPI launcher and its parameters when with MPI.
    pub prepend_cmdline_params: Vec<String>,
    /// The executable, then its parameters.
    pub cmdline_params: Vec<String>,
    /// Double quotes instead of single ones: for the prepend parameters and redirections (the
    /// computer's setting), and for the command line (the code's).
    pub use_double_quotes: (bool, bool),
    /// The parameters and redirections wrapped as one double-quoted argument.
    pub wrap_cmdline_params: bool,
    /// The file fed to stdin.
    pub stdin_name: Option<String>,
    /// The file stdout goes to.
    pub stdout_name: Option<String>,
    /// The file stderr goes to.
    pub stderr_name: Option<String>,
    /// stderr joined to stdout.
    pub join_files: bool,
}

/// What the scheduler needs to write a job's submit script (aiida's `JobTemplate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobTemplate {
    /// The first line; `None` is `#!/bin/bash`, an empty string an empty line.
    pub shebang: Option<String>,
    /// Submit the job on hold.
    pub submit_as_hold: bool,
    /// The job may be rerun.
    pub rerunnable: bool,
    /// Environment variables exported before the codes run.
    pub job_environment: Map<String, Value>,
    /// Export them in double quotes (so that `$VAR` expands) instead of single ones.
    pub environment_variables_double_quotes: bool,
    /// The job's name, `aiida-<pk>`.
    pub job_name: Option<String>,
    /// Where the scheduler writes the job's stdout.
    pub sched_output_path: Option<String>,
    /// Where it writes its stderr.
    pub sched_error_path: Option<String>,
    /// stderr joined to stdout.
    pub sched_join_files: bool,
    /// The queue.
    pub queue_name: Option<String>,
    /// The account charged.
    pub account: Option<String>,
    /// The quality of service.
    pub qos: Option<String>,
    /// The resources.
    pub job_resource: NodeNumberJobResource,
    /// The priority.
    pub priority: Option<String>,
    /// The memory limit per machine, in kB.
    pub max_memory_kb: Option<u64>,
    /// The wall-clock limit, in seconds.
    pub max_wallclock_seconds: Option<u64>,
    /// Lines put in the script's header verbatim.
    pub custom_scheduler_commands: Option<String>,
    /// Shell text run before the codes.
    pub prepend_text: Option<String>,
    /// Shell text run after them.
    pub append_text: Option<String>,
    /// Whether the job sees the environment of the process that submits it.
    pub import_sys_environment: bool,
    /// Serial or parallel.
    pub codes_run_mode: CodeRunMode,
    /// The codes to run.
    pub codes_info: Vec<JobTemplateCodeInfo>,
}

/// A job's state, as aiida names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum JobState {
    /// Not known.
    #[serde(rename = "undetermined")]
    Undetermined,
    /// Waiting in a queue.
    #[serde(rename = "queued")]
    Queued,
    /// Held in a queue.
    #[serde(rename = "queued held")]
    QueuedHeld,
    /// Running.
    #[serde(rename = "running")]
    Running,
    /// Suspended.
    #[serde(rename = "suspended")]
    Suspended,
    /// Finished (aiida has no failed state).
    #[serde(rename = "done")]
    Done,
}

impl JobState {
    /// The value aiida stores (`scheduler_state`, `last_job_info.job_state`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Undetermined => "undetermined",
            JobState::Queued => "queued",
            JobState::QueuedHeld => "queued held",
            JobState::Running => "running",
            JobState::Suspended => "suspended",
            JobState::Done => "done",
        }
    }

    /// The member name `process_status` shows (`Monitoring scheduler: job state RUNNING`).
    pub fn status_name(self) -> &'static str {
        match self {
            JobState::Undetermined => "UNDETERMINED",
            JobState::Queued => "QUEUED",
            JobState::QueuedHeld => "QUEUED_HELD",
            JobState::Running => "RUNNING",
            JobState::Suspended => "SUSPENDED",
            JobState::Done => "DONE",
        }
    }
}

/// What a scheduler says of a job (aiida's `JobInfo`; serialised with only the fields set, as the
/// `last_job_info` attribute).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobInfo {
    /// The job's id.
    pub job_id: String,
    /// Its state.
    pub job_state: JobState,
    /// The state as the scheduler names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_substate: Option<String>,
    /// Who owns it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_owner: Option<String>,
    /// How long it has run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wallclock_time_seconds: Option<u64>,
    /// Its title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Anything else worth knowing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
}

impl JobInfo {
    /// A job the scheduler no longer lists: done.
    pub fn done(job_id: impl Into<String>) -> JobInfo {
        JobInfo {
            job_id: job_id.into(),
            job_state: JobState::Done,
            job_substate: None,
            job_owner: None,
            wallclock_time_seconds: None,
            title: None,
            annotation: None,
        }
    }
}

/// A scheduler plugin.
#[async_trait::async_trait]
pub trait Scheduler: Send + Sync {
    /// The job resources `resources` (`metadata.options.resources`) describe, checked.
    fn job_resource(
        &self,
        resources: &Map<String, Value>,
        default_mpiprocs_per_machine: Option<u32>,
    ) -> Result<NodeNumberJobResource, SchedulerError> {
        NodeNumberJobResource::from_options(resources, default_mpiprocs_per_machine)
    }

    /// The lines after the shebang that tell the scheduler about the job.
    fn script_header(&self, template: &JobTemplate) -> String;

    /// The lines at the end of the script.
    fn script_footer(&self, _template: &JobTemplate) -> String {
        String::new()
    }

    /// The options set in `template` that this scheduler does not honour, by aiida's option name
    /// (e.g. `max_wallclock_seconds`): the engine reports them.
    fn ignored_options(&self, template: &JobTemplate) -> Vec<&'static str>;

    /// Whether [`Scheduler::jobs`] lists all of the user's jobs (one query serves every job).
    fn can_query_by_user(&self) -> bool {
        false
    }

    /// Submits the script `script_filename` in `workdir`; returns the job's id.
    async fn submit(
        &self,
        transport: &dyn Transport,
        workdir: &Path,
        script_filename: &str,
    ) -> Result<String, SchedulerError>;

    /// What the scheduler says of the jobs `job_ids`; a job it does not list is reported done.
    async fn jobs(&self, transport: &dyn Transport, job_ids: &[String]) -> Result<Vec<JobInfo>, SchedulerError>;

    /// Kills job `job_id`; whether the scheduler accepted.
    async fn kill(&self, transport: &dyn Transport, job_id: &str) -> Result<bool, SchedulerError>;

    /// The id of the job submitted from `workdir`, or `None` when none was: asked when the engine
    /// stopped between handing a job to the scheduler and recording its id (the node's `state` is
    /// still `submitting`), so that the job is followed instead of submitted twice. The default
    /// cannot tell ([`SchedulerError::CannotTell`]), and the engine pauses the process for a person
    /// to decide.
    async fn submitted_job(&self, transport: &dyn Transport, workdir: &Path) -> Result<Option<String>, SchedulerError> {
        let _ = (transport, workdir);
        Err(SchedulerError::CannotTell)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resources(value: Value) -> Result<NodeNumberJobResource, SchedulerError> {
        NodeNumberJobResource::from_options(value.as_object().unwrap(), None)
    }

    #[test]
    fn resources_derive_the_third_number_and_refuse_what_they_do_not_know() {
        let r = resources(json!({"num_machines": 2, "num_mpiprocs_per_machine": 3})).unwrap();
        assert_eq!((r.num_machines, r.num_mpiprocs_per_machine, r.tot_num_mpiprocs), (2, 3, 6));
        let r = resources(json!({"num_machines": 2, "tot_num_mpiprocs": 8})).unwrap();
        assert_eq!(r.num_mpiprocs_per_machine, 4);
        let err = resources(json!({"num_machines": 1, "gpus": 1})).unwrap_err();
        assert_eq!(err.to_string(), "invalid job resources: these parameters were not recognized: gpus");
        assert!(resources(json!({"num_machines": 1})).is_err());
        assert!(resources(json!({"num_machines": 0, "num_mpiprocs_per_machine": 1})).is_err());
        assert!(resources(json!({"num_machines": 2, "num_mpiprocs_per_machine": 2, "tot_num_mpiprocs": 3})).is_err());
        let r = NodeNumberJobResource::from_options(json!({"num_machines": 1}).as_object().unwrap(), Some(4)).unwrap();
        assert_eq!(r.tot_num_mpiprocs, 4, "the computer's default fills in");
    }
}
