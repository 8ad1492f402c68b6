use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;
use crate::groups::Schedulers;
use crate::scheduler::script::tests::arithmetic_template;
use crate::scheduler::{JobTemplateCodeInfo, submit_script};
use crate::transport::{CommandOutput, LocalTransport, TransportError};

/// A transport answering every command with the same output, and remembering the commands.
#[derive(Debug)]
struct Canned {
    output: CommandOutput,
    commands: Mutex<Vec<(String, Option<PathBuf>)>>,
}

impl Canned {
    fn new(retval: i32, stdout: &str, stderr: &str) -> Canned {
        let output = CommandOutput { retval, stdout: stdout.into(), stderr: stderr.into() };
        Canned { output, commands: Mutex::new(Vec::new()) }
    }

    fn commands(&self) -> Vec<(String, Option<PathBuf>)> {
        self.commands.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Transport for Canned {
    async fn put(&self, _: &Path, _: &Path) -> Result<(), TransportError> {
        unimplemented!()
    }
    async fn get(&self, _: &Path, _: &Path, _: bool) -> Result<(), TransportError> {
        unimplemented!()
    }
    async fn copy(&self, _: &Path, _: &Path) -> Result<(), TransportError> {
        unimplemented!()
    }
    async fn symlink(&self, _: &Path, _: &Path) -> Result<(), TransportError> {
        unimplemented!()
    }
    async fn listdir(&self, _: &Path) -> Result<Vec<String>, TransportError> {
        unimplemented!()
    }
    async fn glob(&self, _: &Path) -> Result<Vec<PathBuf>, TransportError> {
        unimplemented!()
    }
    async fn mkdir(&self, _: &Path, _: bool) -> Result<(), TransportError> {
        unimplemented!()
    }
    async fn makedirs(&self, _: &Path, _: bool) -> Result<(), TransportError> {
        unimplemented!()
    }
    async fn rmtree(&self, _: &Path) -> Result<(), TransportError> {
        unimplemented!()
    }
    async fn rename(&self, _: &Path, _: &Path) -> Result<(), TransportError> {
        unimplemented!()
    }
    async fn path_exists(&self, _: &Path) -> Result<bool, TransportError> {
        unimplemented!()
    }
    async fn is_dir(&self, _: &Path) -> Result<bool, TransportError> {
        unimplemented!()
    }
    async fn chmod(&self, _: &Path, _: u32) -> Result<(), TransportError> {
        unimplemented!()
    }
    async fn exec_command_wait(
        &self,
        command: &str,
        workdir: Option<&Path>,
        _: Option<&[u8]>,
    ) -> Result<CommandOutput, TransportError> {
        self.commands.lock().unwrap().push((command.to_owned(), workdir.map(Path::to_owned)));
        Ok(self.output.clone())
    }
}

/// Polls `check` every 10 ms until it gives a value, failing after `limit`.
async fn wait_for<T, F: Future<Output = Option<T>>>(limit: Duration, what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn the_header_redirects_output_and_may_drop_the_environment() {
    let header = |template: &JobTemplate| DirectScheduler.script_header(template);
    let base = JobTemplate { import_sys_environment: true, ..Default::default() };
    assert_eq!(header(&base), "exec 2>&1\n", "stderr kept apart from the caller's");
    let outputs = JobTemplate {
        sched_output_path: Some("o.txt".to_owned()),
        sched_error_path: Some("e.txt".to_owned()),
        ..base.clone()
    };
    assert_eq!(header(&outputs), "exec > o.txt\nexec 2> e.txt\n");
    let joined = JobTemplate { sched_join_files: true, ..outputs.clone() };
    assert_eq!(header(&joined), "exec > o.txt\n", "the error path is ignored when joined");
    let isolated = JobTemplate {
        import_sys_environment: false,
        custom_scheduler_commands: Some("ulimit -s unlimited".to_owned()),
        max_memory_kb: Some(1000),
        max_wallclock_seconds: Some(60),
        rerunnable: true,
        ..outputs
    };
    assert_eq!(
        header(&isolated),
        "exec > o.txt\nexec 2> e.txt\nenv --ignore-environment \\\nulimit -s unlimited\n",
        "verbatim aiida: the continuation swallows the next line; limits are not applied"
    );
}

#[test]
fn ignored_options_are_the_ones_set() {
    assert!(DirectScheduler.ignored_options(&arithmetic_template()).is_empty());
    let template = JobTemplate {
        max_wallclock_seconds: Some(60),
        max_memory_kb: Some(1024),
        rerunnable: true,
        queue_name: Some("debug".to_owned()),
        account: Some("proj".to_owned()),
        qos: Some("low".to_owned()),
        priority: Some("1".to_owned()),
        submit_as_hold: true,
        job_name: Some("aiida-1".to_owned()),
        ..arithmetic_template()
    };
    assert_eq!(
        DirectScheduler.ignored_options(&template),
        [
            "max_wallclock_seconds",
            "max_memory_kb",
            "rerunnable",
            "queue_name",
            "account",
            "qos",
            "priority",
            "submit_as_hold"
        ]
    );
    assert!(DirectScheduler.can_query_by_user());
}

#[test]
fn commands_are_aiidas() {
    assert_eq!(
        DirectScheduler::submit_command("_aiidasubmit.sh"),
        "(bash '_aiidasubmit.sh' > /dev/null 2>&1 & echo $! > .aiida/job_id; echo $!) &"
    );
    assert_eq!(DirectScheduler::joblist_command(&[]), "ps -xo pid=,stat=,user=,time=");
    let ids = ["12".to_owned(), String::new(), "345".to_owned()];
    assert_eq!(DirectScheduler::joblist_command(&ids), "ps -xo pid=,stat=,user=,time= '12' '345'");
    assert!(DirectScheduler::kill_command("12").contains("; kill '12' && "));
}

#[test]
fn the_process_list_is_read_as_aiida_reads_it() {
    let stdout = "  101 Ss   alice    00:00:01\n 102 R+ alice 1-02:03:04\n103 T bob 00:10:00\n104 Z alice 00:00:00\n\
                  105 X a 0:0:0\n106 ? a 00:00:00\n107 Q a 00:00:00\n108 D a bad\n109 I a\n\n";
    let jobs = DirectScheduler::parse_joblist(0, stdout, "").unwrap();
    let states: Vec<_> = jobs.iter().map(|j| (j.job_id.as_str(), j.job_state)).collect();
    assert_eq!(
        states,
        [
            ("101", JobState::Running),
            ("102", JobState::Running),
            ("103", JobState::Suspended),
            ("104", JobState::Done),
            ("105", JobState::Done),
            ("106", JobState::Undetermined),
            ("107", JobState::Undetermined),
            ("108", JobState::Running),
            ("109", JobState::Running),
        ]
    );
    assert_eq!(jobs[0].job_owner.as_deref(), Some("alice"));
    assert_eq!(jobs[0].wallclock_time_seconds, Some(1));
    assert_eq!(jobs[1].wallclock_time_seconds, Some(93_784));
    assert_eq!(jobs[2].wallclock_time_seconds, Some(600));
    assert_eq!((jobs[7].wallclock_time_seconds, jobs[8].wallclock_time_seconds), (None, None));
    assert_eq!(
        serde_json::to_value(&jobs[0]).unwrap(),
        serde_json::json!({"job_id": "101", "job_state": "running", "job_owner": "alice", "wallclock_time_seconds": 1})
    );

    assert!(DirectScheduler::parse_joblist(0, "  PID STAT USER TIME\n", "").unwrap().is_empty());
    let err = DirectScheduler::parse_joblist(0, "101 S\n", "").unwrap_err();
    assert_eq!(err.to_string(), "unexpected output from ps, not enough fields in line '101 S'");
    let err = DirectScheduler::parse_joblist(1, "", "ps: boom\n").unwrap_err();
    assert_eq!(err.to_string(), "listing the jobs with ps failed with exit status 1: ps: boom");
    assert_eq!(DirectScheduler::parse_joblist(0, "101 S a 00:00:00", "warning\n").unwrap().len(), 1);
    assert_eq!(DirectScheduler::parse_joblist(1, "", "").unwrap().len(), 0, "no stderr, no error (aiida)");
}

#[test]
fn times_read_as_days_hours_minutes_seconds() {
    assert_eq!(convert_time("00:00:00"), Some(0));
    assert_eq!(convert_time("12:34:56"), Some(45_296));
    assert_eq!(convert_time("2-00:00:01"), Some(172_801));
    assert_eq!(convert_time("0:01.50"), Some(110), "`.` separates too (aiida reads it as H:M:S)");
    assert_eq!(convert_time("01:02"), None);
    assert_eq!(convert_time("a:b:c"), None);
    assert_eq!(convert_time("-1:00:00"), None);
}

#[tokio::test]
async fn submit_reads_the_pid_and_reports_failures_with_stderr() {
    let workdir = Path::new("/work/dir");
    let canned = Canned::new(0, "4242\n", "");
    assert_eq!(DirectScheduler.submit(&canned, workdir, "_aiidasubmit.sh").await.unwrap(), "4242");
    assert_eq!(canned.commands(), [(DirectScheduler::submit_command("_aiidasubmit.sh"), Some(workdir.to_owned()))]);
    let noisy = Canned::new(0, "Welcome!\n4243\n", "profile warning\n");
    assert_eq!(DirectScheduler.submit(&noisy, workdir, "s.sh").await.unwrap(), "4243");

    let failing = Canned::new(2, "", "bash: cannot fork\n");
    let err = DirectScheduler.submit(&failing, workdir, "s.sh").await.unwrap_err();
    assert!(matches!(err, SchedulerError::Command(_)));
    assert_eq!(
        err.to_string(),
        "cannot submit `s.sh` in /work/dir: the submit command exited with status 2; stdout: \"\"; stderr: \
         \"bash: cannot fork\""
    );
    let silent = Canned::new(0, "  \n", "something odd\n");
    let err = DirectScheduler.submit(&silent, workdir, "s.sh").await.unwrap_err();
    assert!(err.to_string().contains("unable to get the PID") && err.to_string().contains("something odd"), "{err}");
    let garbled = Canned::new(0, "4244 oops\n", "");
    let err = DirectScheduler.submit(&garbled, workdir, "s.sh").await.unwrap_err();
    assert!(err.to_string().contains("no PID"), "{err}");
}

#[tokio::test]
async fn jobs_not_listed_are_done() {
    let canned = Canned::new(0, "  10 S alice 00:00:01\n  11 R alice 00:00:02\n  99 S alice 00:00:00\n", "");
    let ids = ["11".to_owned(), "12".to_owned(), "10".to_owned(), "12".to_owned()];
    let jobs = DirectScheduler.jobs(&canned, &ids).await.unwrap();
    let states: Vec<_> = jobs.iter().map(|j| (j.job_id.as_str(), j.job_state)).collect();
    assert_eq!(states, [("10", JobState::Running), ("11", JobState::Running), ("12", JobState::Done)]);
    assert_eq!(jobs[2], JobInfo::done("12"));
    assert_eq!(canned.commands()[0].0, "ps -xo pid=,stat=,user=,time= '11' '12' '10' '12'");
    assert_eq!(DirectScheduler.jobs(&canned, &[]).await.unwrap().len(), 3, "without ids, every process");
    let failing = Canned::new(1, "", "ps: no such option\n");
    let err = DirectScheduler.jobs(&failing, &ids).await.unwrap_err();
    assert!(err.to_string().contains("ps: no such option"), "{err}");
}

/// A template running `/bin/bash < aiida.in > aiida.out` (and `prepend` before).
fn job(prepend: Option<&str>) -> JobTemplate {
    JobTemplate { prepend_text: prepend.map(str::to_owned), ..arithmetic_template() }
}

/// Writes the submit script of `template` and `aiida.in` into a new folder.
fn job_folder(template: &JobTemplate, input: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = aiida::plugins::factory::<Schedulers>("core.direct").unwrap();
    std::fs::write(dir.path().join("_aiidasubmit.sh"), submit_script(scheduler.as_ref(), template)).unwrap();
    std::fs::write(dir.path().join("aiida.in"), input).unwrap();
    std::fs::create_dir(dir.path().join(".aiida")).unwrap();
    dir
}

async fn state(transport: &LocalTransport, job_id: &str) -> JobInfo {
    let jobs = DirectScheduler.jobs(transport, &[job_id.to_owned()]).await.unwrap();
    assert_eq!(jobs.len(), 1);
    jobs.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_real_job_runs_to_the_end() {
    let transport = LocalTransport::new(false).unwrap();
    let dir = job_folder(&job(None), "echo $((1 + 2))\n");
    let job_id = DirectScheduler.submit(&transport, dir.path(), "_aiidasubmit.sh").await.unwrap();
    assert!(job_id.parse::<u32>().is_ok(), "{job_id}");
    let info = wait_for(Duration::from_secs(10), "the job to end", || async {
        Some(state(&transport, &job_id).await).filter(|info| info.job_state == JobState::Done)
    })
    .await;
    assert_eq!(info.job_id, job_id);
    assert_eq!(std::fs::read_to_string(dir.path().join("aiida.out")).unwrap(), "3\n");
    assert_eq!(std::fs::read_to_string(dir.path().join("_scheduler-stdout.txt")).unwrap(), "");
    assert_eq!(std::fs::read_to_string(dir.path().join("_scheduler-stderr.txt")).unwrap(), "");
}

#[tokio::test]
async fn a_submitted_job_is_found_from_its_folder() {
    let transport = LocalTransport::new(false).unwrap();
    let dir = job_folder(&job(None), "echo $((1 + 2))\n");
    assert_eq!(DirectScheduler.submitted_job(&transport, dir.path()).await.unwrap(), None, "nothing submitted yet");
    let job_id = DirectScheduler.submit(&transport, dir.path(), "_aiidasubmit.sh").await.unwrap();
    assert_eq!(DirectScheduler.submitted_job(&transport, dir.path()).await.unwrap(), Some(job_id));

    std::fs::write(dir.path().join(DirectScheduler::JOB_ID_FILE), "not a pid\n").unwrap();
    let err = DirectScheduler.submitted_job(&transport, dir.path()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{} in {} holds \"not a pid\", not a PID", DirectScheduler::JOB_ID_FILE, dir.path().display())
    );
    let unreadable = Canned::new(1, "", "cat: .aiida/job_id: Permission denied\n");
    let err = DirectScheduler.submitted_job(&unreadable, dir.path()).await.unwrap_err();
    assert!(err.to_string().ends_with("exit status 1: cat: .aiida/job_id: Permission denied"), "{err}");
}

#[tokio::test]
async fn a_job_failing_writes_its_stderr() {
    let transport = LocalTransport::new(false).unwrap();
    let dir = job_folder(&job(Some("echo prepended")), "echo $((1.5 + 2))\n");
    let job_id = DirectScheduler.submit(&transport, dir.path(), "_aiidasubmit.sh").await.unwrap();
    wait_for(Duration::from_secs(10), "the job to end", || async {
        (state(&transport, &job_id).await.job_state == JobState::Done).then_some(())
    })
    .await;
    assert_eq!(std::fs::read_to_string(dir.path().join("aiida.out")).unwrap(), "");
    assert_eq!(std::fs::read_to_string(dir.path().join("_scheduler-stdout.txt")).unwrap(), "prepended\n");
    let stderr = std::fs::read_to_string(dir.path().join("_scheduler-stderr.txt")).unwrap();
    assert!(stderr.contains("syntax error: invalid arithmetic operator"), "{stderr}");
}

/// The PID of a `sleep` among the descendants of process `root`.
async fn sleep_under(transport: &LocalTransport, root: &str) -> Option<String> {
    let listing = transport.exec_command_wait("ps -A -o pid=,ppid=,comm=", None, None).await.unwrap().stdout_text();
    let processes: Vec<Vec<&str>> = listing.lines().map(|line| line.split_whitespace().collect()).collect();
    let mut tree = vec![root];
    while let Some(child) =
        processes.iter().find(|p| p.len() >= 2 && tree.contains(&p[1]) && !tree.contains(&p[0])).map(|p| p[0])
    {
        tree.push(child);
    }
    processes.iter().find(|p| p.len() == 3 && p[2] == "sleep" && tree[1..].contains(&p[0])).map(|p| p[0].to_owned())
}

#[tokio::test]
async fn a_killed_job_and_its_children_end_at_once() {
    let transport = LocalTransport::new(false).unwrap();
    let dir = job_folder(&job(None), "sleep 30\n");
    let job_id = DirectScheduler.submit(&transport, dir.path(), "_aiidasubmit.sh").await.unwrap();
    // The job's bash runs `/bin/bash < aiida.in`, which runs `sleep 30`.
    let sleep_pid =
        wait_for(Duration::from_secs(10), "the job's sleep to start", || sleep_under(&transport, &job_id)).await;
    assert_eq!(state(&transport, &job_id).await.job_state, JobState::Running);

    let started = Instant::now();
    assert!(DirectScheduler.kill(&transport, &job_id).await.unwrap());
    wait_for(Duration::from_secs(5), "the killed job to be done", || async {
        (state(&transport, &job_id).await.job_state == JobState::Done).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(5), "the job's sleep to end", || async {
        let jobs = DirectScheduler.jobs(&transport, std::slice::from_ref(&sleep_pid)).await.unwrap();
        (jobs[0].job_state == JobState::Done).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // (The killed job may linger as a zombie until reaped, which `kill` still accepts.)
    assert!(!DirectScheduler.kill(&transport, "999999999").await.unwrap(), "no such process: not killed");
}

#[tokio::test]
async fn submitting_without_a_workdir_says_so() {
    let transport = LocalTransport::new(false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = DirectScheduler.submit(&transport, &missing, "_aiidasubmit.sh").await.unwrap_err();
    assert!(matches!(err, SchedulerError::Transport(TransportError::Missing(_))), "{err:?}");
    assert_eq!(err.to_string(), format!("{} does not exist", missing.display()));
}

#[test]
fn a_code_line_runs_through_the_script() {
    let template = JobTemplate {
        codes_info: vec![JobTemplateCodeInfo { cmdline_params: vec!["/bin/echo".to_owned()], ..Default::default() }],
        ..arithmetic_template()
    };
    assert!(submit_script(&DirectScheduler, &template).ends_with("\n\n\n'/bin/echo'\n"));
}

/// Medians of 20 runs of a command, a submit and a poll, with and without a login shell:
/// `cargo test -p aiida-engine --release --lib costs -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "prints timings"]
async fn costs() {
    fn median(mut times: Vec<Duration>) -> Duration {
        times.sort();
        times[times.len() / 2]
    }
    let dir = job_folder(&JobTemplate { codes_info: vec![], ..arithmetic_template() }, "");
    for login in [false, true] {
        let transport = LocalTransport::new(login).unwrap();
        let (mut command, mut submit, mut poll) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..20 {
            let start = Instant::now();
            assert_eq!(transport.exec_command_wait("true", None, None).await.unwrap().retval, 0);
            command.push(start.elapsed());
            let start = Instant::now();
            let id = DirectScheduler.submit(&transport, dir.path(), "_aiidasubmit.sh").await.unwrap();
            submit.push(start.elapsed());
            let start = Instant::now();
            DirectScheduler.jobs(&transport, &[id]).await.unwrap();
            poll.push(start.elapsed());
        }
        let (command, submit, poll) = (median(command), median(submit), median(poll));
        println!("login shell {login}: `true` {command:?}, submit {submit:?}, jobs poll {poll:?}");
    }
}
