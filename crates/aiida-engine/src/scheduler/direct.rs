//! `core.direct`: jobs run as background processes, followed with `ps`.

use std::collections::HashSet;
use std::path::Path;

use super::{JobInfo, JobState, JobTemplate, Scheduler, SchedulerError};
use crate::transport::{Transport, escape_for_bash};

/// The `core.direct` scheduler (aiida's `DirectScheduler`): a job is `bash <script>` started in
/// the background on the computer, its id the PID; `ps` tells its state, `kill` ends it and its
/// descendants. Queues, accounts, limits and holds do not exist here (see
/// [`Scheduler::ignored_options`]).
#[derive(Debug, Default)]
pub struct DirectScheduler;

aiida::entry_point!(crate::groups::Schedulers: "core.direct", DirectScheduler);

impl DirectScheduler {
    /// The command submitting `script_filename` (run in the job's folder): the job's output goes
    /// to `/dev/null`, so that the command returns at once, having printed the job's PID. The PID
    /// is also written to [`JOB_ID_FILE`](Self::JOB_ID_FILE) before it is printed, for
    /// [`Scheduler::submitted_job`].
    pub fn submit_command(script_filename: &str) -> String {
        format!(
            "(bash {} > /dev/null 2>&1 & echo $! > {}; echo $!) &",
            escape_for_bash(script_filename, false),
            Self::JOB_ID_FILE
        )
    }

    /// Where in the job's folder the submit command records the job's PID (aiida's `.aiida`
    /// folder, beside `calcinfo.json` and `job_tmpl.json`).
    pub const JOB_ID_FILE: &str = ".aiida/job_id";

    /// The command listing the user's processes (`ps -x` selects all of them, whatever the ids
    /// given), without the header.
    pub fn joblist_command(job_ids: &[String]) -> String {
        // aiida's `ps -xo pid,stat,user,time <ids> | tail -n +2`, with the header left out by ps
        // itself (`pid=`): one process per poll instead of three, and the same lines.
        let mut command = "ps -xo pid=,stat=,user=,time=".to_owned();
        for id in job_ids.iter().filter(|id| !id.is_empty()) {
            command.push(' ');
            command.push_str(&escape_for_bash(id, false));
        }
        command
    }

    /// The command killing process `job_id` and its descendants, found with `ps` and `awk` on the
    /// computer itself (aiida uses psutil on the engine's machine). It fails only when the job's
    /// process cannot be signalled: a descendant ending meanwhile is no failure.
    pub fn kill_command(job_id: &str) -> String {
        let id = escape_for_bash(job_id, false);
        format!(
            "descendants=$(ps -A -o pid=,ppid= | awk -v root={id} '{{ parent[$1] = $2 }} END {{ for (pid in parent) \
             {{ p = parent[pid]; n = 0; while (p != root && (p in parent) && n++ < 10000) p = parent[p]; \
             if (p == root) printf \"%s \", pid }} }}'); kill {id} && {{ [ -z \"$descendants\" ] || kill \
             $descendants 2> /dev/null; true; }}"
        )
    }

    /// The job's PID from the output of the submit command.
    fn parse_submit_output(
        retval: i32,
        stdout: &str,
        stderr: &str,
        workdir: &Path,
        script: &str,
    ) -> Result<String, SchedulerError> {
        let failed = |why: String| {
            SchedulerError::Command(format!(
                "cannot submit `{script}` in {}: {why}; stdout: {:?}; stderr: {:?}",
                workdir.display(),
                stdout.trim(),
                stderr.trim()
            ))
        };
        if retval != 0 {
            return Err(failed(format!("the submit command exited with status {retval}")));
        }
        if !stderr.trim().is_empty() {
            tracing::warn!(script, workdir = %workdir.display(), stderr = stderr.trim(), "text on stderr when submitting");
        }
        // The PID is the last line: a login shell's profile may have printed before.
        match stdout.lines().map(str::trim).rfind(|line| !line.is_empty()) {
            Some(pid) if pid.bytes().all(|b| b.is_ascii_digit()) => Ok(pid.to_owned()),
            Some(_) => Err(failed("the submit command printed no PID last".to_owned())),
            None => Err(failed("unable to get the PID: the submit command printed nothing".to_owned())),
        }
    }

    /// The processes listed by the [`joblist_command`](Self::joblist_command), as aiida reads
    /// them: pid, the first letter of the state, user and `[D-]HH:MM:SS` time.
    pub fn parse_joblist(retval: i32, stdout: &str, stderr: &str) -> Result<Vec<JobInfo>, SchedulerError> {
        if !stderr.trim().is_empty() {
            tracing::warn!(retval, stderr = stderr.trim(), "text on stderr when listing the jobs");
            if retval != 0 {
                return Err(SchedulerError::Command(format!(
                    "listing the jobs with ps failed with exit status {retval}: {}",
                    stderr.trim()
                )));
            }
        }
        let mut jobs = Vec::new();
        for line in stdout.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with("PID") {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 3 {
                return Err(SchedulerError::Command(format!(
                    "unexpected output from ps, not enough fields in line '{line}'"
                )));
            }
            let job_state = match fields[1].chars().next() {
                Some('D' | 'I' | 'R' | 'S' | 'U' | 'W') => JobState::Running,
                Some('T') => JobState::Suspended,
                Some('X' | 'Z') => JobState::Done,
                Some('?') => JobState::Undetermined,
                other => {
                    tracing::warn!(job_id = fields[0], state = ?other, "unrecognised process state");
                    JobState::Undetermined
                }
            };
            let wallclock_time_seconds = fields.get(3).and_then(|time| {
                let seconds = convert_time(time);
                if seconds.is_none() {
                    tracing::warn!(job_id = fields[0], time, "cannot read the time of a process");
                }
                seconds
            });
            let mut job = JobInfo::done(fields[0]);
            job.job_state = job_state;
            job.job_owner = Some(fields[2].to_owned());
            job.wallclock_time_seconds = wallclock_time_seconds;
            jobs.push(job);
        }
        Ok(jobs)
    }
}

/// `[D-]HH:MM:SS` (`.` also separating) in seconds.
fn convert_time(time: &str) -> Option<u64> {
    let pieces: Vec<&str> = time.split([':', '.']).collect();
    let [hours, minutes, seconds] = pieces[..] else { return None };
    let (days, hours) = match hours.split_once('-') {
        Some((days, hours)) => (days.parse::<u64>().ok()?, hours),
        None => (0, hours),
    };
    let (hours, minutes, seconds): (u64, u64, u64) =
        (hours.parse().ok()?, minutes.parse().ok()?, seconds.parse().ok()?);
    Some(days * 86_400 + hours * 3_600 + minutes * 60 + seconds)
}

#[async_trait::async_trait]
impl Scheduler for DirectScheduler {
    /// The output redirections, `env --ignore-environment \` when the job does not import the
    /// engine's environment (verbatim aiida 2.9: the continuation swallows the next header line),
    /// the custom scheduler commands and `OMP_NUM_THREADS`, then an empty line.
    fn script_header(&self, template: &JobTemplate) -> String {
        let mut lines: Vec<String> = Vec::new();
        if let Some(path) = template.sched_output_path.as_deref().filter(|p| !p.is_empty()) {
            lines.push(format!("exec > {path}"));
        }
        let error_path = template.sched_error_path.as_deref().filter(|p| !p.is_empty());
        if template.sched_join_files {
            if error_path.is_some() {
                tracing::info!("sched_join_files is true, but sched_error_path is set; ignoring sched_error_path");
            }
        } else if let Some(path) = error_path {
            lines.push(format!("exec 2> {path}"));
        } else {
            lines.push("exec 2>&1".to_owned());
        }
        if template.max_memory_kb.is_some_and(|kb| kb > 0) {
            tracing::warn!("Physical memory limiting is not supported by the direct scheduler.");
        }
        if !template.import_sys_environment {
            lines.push("env --ignore-environment \\".to_owned());
        }
        if let Some(commands) = template.custom_scheduler_commands.as_deref().filter(|c| !c.is_empty()) {
            lines.push(commands.to_owned());
        }
        if let Some(threads) = template.job_resource.num_cores_per_mpiproc.filter(|n| *n > 0) {
            lines.push(format!("export OMP_NUM_THREADS={threads}"));
        }
        if template.rerunnable {
            tracing::warn!(
                "The 'rerunnable' option is set to 'True', but has no effect when using the direct scheduler."
            );
        }
        lines.push(String::new());
        lines.join("\n")
    }

    fn ignored_options(&self, template: &JobTemplate) -> Vec<&'static str> {
        let t = template;
        [
            ("max_wallclock_seconds", t.max_wallclock_seconds.is_some()),
            ("max_memory_kb", t.max_memory_kb.is_some()),
            ("rerunnable", t.rerunnable),
            ("queue_name", t.queue_name.as_deref().is_some_and(|q| !q.is_empty())),
            ("account", t.account.as_deref().is_some_and(|a| !a.is_empty())),
            ("qos", t.qos.as_deref().is_some_and(|q| !q.is_empty())),
            ("priority", t.priority.as_deref().is_some_and(|p| !p.is_empty())),
            ("submit_as_hold", t.submit_as_hold),
        ]
        .into_iter()
        .filter_map(|(option, set)| set.then_some(option))
        .collect()
    }

    /// True, as in aiida: `ps -x` lists all of the user's processes in one go.
    fn can_query_by_user(&self) -> bool {
        true
    }

    async fn submit(
        &self,
        transport: &dyn Transport,
        workdir: &Path,
        script_filename: &str,
    ) -> Result<String, SchedulerError> {
        let command = Self::submit_command(script_filename);
        let output = transport.exec_command_wait(&command, Some(workdir), None).await?;
        let (stdout, stderr) = (output.stdout_text(), output.stderr_text());
        Self::parse_submit_output(output.retval, &stdout, &stderr, workdir, script_filename)
    }

    /// The jobs `job_ids` as `ps` lists them, those it does not list reported done; with no ids,
    /// every process of the user.
    async fn jobs(&self, transport: &dyn Transport, job_ids: &[String]) -> Result<Vec<JobInfo>, SchedulerError> {
        let output = transport.exec_command_wait(&Self::joblist_command(job_ids), None, None).await?;
        let mut jobs = Self::parse_joblist(output.retval, &output.stdout_text(), &output.stderr_text())?;
        if job_ids.is_empty() {
            return Ok(jobs);
        }
        let wanted: HashSet<&str> = job_ids.iter().map(String::as_str).collect();
        jobs.retain(|job| wanted.contains(job.job_id.as_str()));
        let mut reported: HashSet<String> = jobs.iter().map(|job| job.job_id.clone()).collect();
        for id in job_ids {
            if reported.insert(id.clone()) {
                jobs.push(JobInfo::done(id.as_str()));
            }
        }
        Ok(jobs)
    }

    /// The PID the submit command recorded in the job's folder, if it ran.
    async fn submitted_job(&self, transport: &dyn Transport, workdir: &Path) -> Result<Option<String>, SchedulerError> {
        let output = transport
            .exec_command_wait(&format!("[ ! -e {0} ] || cat {0}", Self::JOB_ID_FILE), Some(workdir), None)
            .await?;
        let stdout = output.stdout_text();
        match stdout.trim() {
            _ if output.retval != 0 => Err(SchedulerError::Command(format!(
                "cannot read {} in {}: exit status {}: {}",
                Self::JOB_ID_FILE,
                workdir.display(),
                output.retval,
                output.stderr_text().trim()
            ))),
            "" => Ok(None),
            pid if pid.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(pid.to_owned())),
            other => Err(SchedulerError::Command(format!(
                "{} in {} holds {other:?}, not a PID",
                Self::JOB_ID_FILE,
                workdir.display()
            ))),
        }
    }

    async fn kill(&self, transport: &dyn Transport, job_id: &str) -> Result<bool, SchedulerError> {
        let output = transport.exec_command_wait(&Self::kill_command(job_id), None, None).await?;
        let (stdout, stderr) = (output.stdout_text(), output.stderr_text());
        if output.retval != 0 {
            tracing::error!(job_id, retval = output.retval, stdout, stderr, "killing the job failed");
            return Ok(false);
        }
        if !stderr.trim().is_empty() {
            tracing::warn!(job_id, stderr = stderr.trim(), "text on stderr when killing the job");
        }
        if !stdout.trim().is_empty() {
            tracing::warn!(job_id, stdout = stdout.trim(), "text on stdout when killing the job");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
