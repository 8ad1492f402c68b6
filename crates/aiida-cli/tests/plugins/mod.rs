//! A transport and a scheduler for this machine, registered in the test binary as `test.local` and
//! `test.direct`, so that `verdi computer test` and `verdi calcjob remotecat` can be run in-process
//! (`aiida_cli::run_args`) whatever transports and schedulers the engine ships.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aiida_engine::groups::{Schedulers, Transports};
use aiida_engine::scheduler::{JobInfo, JobState, JobTemplate, Scheduler, SchedulerError};
use aiida_engine::transport::{AuthOption, CommandOutput, Transport, TransportError, TransportType};
use serde_json::{Map, Value, json};

/// Opens [`TestTransport`]s.
pub struct TestTransportType;

/// This machine, with blocking file and process calls (enough for tests).
#[derive(Debug)]
pub struct TestTransport {
    login_shell: bool,
}

aiida::entry_point!(Transports: "test.local", TestTransportType);
aiida::entry_point!(Schedulers: "test.direct", TestScheduler);

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TransportError {
    let path = path.to_owned();
    move |source| TransportError::Io { action, path, source }
}

fn copy(source: &Path, target: &Path) -> Result<(), TransportError> {
    let target: PathBuf =
        if target.is_dir() { target.join(source.file_name().unwrap_or_default()) } else { target.into() };
    if source.is_dir() {
        std::fs::create_dir_all(&target).map_err(io("create", &target))?;
        for entry in std::fs::read_dir(source).map_err(io("list", source))? {
            let entry = entry.map_err(io("list", source))?;
            copy(&entry.path(), &target.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(source, &target).map(drop).map_err(io("copy", source))
    }
}

#[async_trait::async_trait]
impl TransportType for TestTransportType {
    async fn open(&self, _: &str, params: &Map<String, Value>) -> Result<Arc<dyn Transport>, TransportError> {
        let login_shell = params.get("use_login_shell").and_then(Value::as_bool).unwrap_or(true);
        Ok(Arc::new(TestTransport { login_shell }))
    }

    fn auth_options(&self) -> Vec<AuthOption> {
        vec![
            AuthOption { name: "use_login_shell", help: "Run commands in a login shell.", default: json!(true) },
            AuthOption { name: "safe_interval", help: "Seconds between connections.", default: json!(0.1) },
        ]
    }

    fn default_safe_interval(&self) -> Duration {
        Duration::from_millis(100)
    }

    fn default_minimum_job_poll_interval(&self) -> Duration {
        Duration::from_millis(100)
    }
}

#[async_trait::async_trait]
impl Transport for TestTransport {
    async fn put(&self, local: &Path, remote: &Path) -> Result<(), TransportError> {
        copy(local, remote)
    }

    async fn get(&self, remote: &Path, local: &Path, ignore_nonexisting: bool) -> Result<(), TransportError> {
        if !remote.exists() {
            return if ignore_nonexisting { Ok(()) } else { Err(TransportError::Missing(remote.into())) };
        }
        copy(remote, local)
    }

    async fn copy(&self, source: &Path, destination: &Path) -> Result<(), TransportError> {
        copy(source, destination)
    }

    async fn symlink(&self, source: &Path, link: &Path) -> Result<(), TransportError> {
        std::os::unix::fs::symlink(source, link).map_err(io("link", link))
    }

    async fn listdir(&self, path: &Path) -> Result<Vec<String>, TransportError> {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .map_err(io("list", path))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn glob(&self, pattern: &Path) -> Result<Vec<PathBuf>, TransportError> {
        Ok(if pattern.exists() { vec![pattern.into()] } else { vec![] })
    }

    async fn mkdir(&self, path: &Path, ignore_existing: bool) -> Result<(), TransportError> {
        if ignore_existing && path.is_dir() {
            return Ok(());
        }
        std::fs::create_dir(path).map_err(io("create folder", path))
    }

    async fn makedirs(&self, path: &Path, ignore_existing: bool) -> Result<(), TransportError> {
        if path.is_dir() && !ignore_existing {
            return Err(TransportError::Exists(path.into()));
        }
        std::fs::create_dir_all(path).map_err(io("create folder", path))
    }

    async fn rmtree(&self, path: &Path) -> Result<(), TransportError> {
        match std::fs::symlink_metadata(path) {
            Err(_) => Ok(()),
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).map_err(io("remove", path)),
            Ok(_) => std::fs::remove_file(path).map_err(io("remove", path)),
        }
    }

    async fn rename(&self, old: &Path, new: &Path) -> Result<(), TransportError> {
        std::fs::rename(old, new).map_err(io("rename", old))
    }

    async fn path_exists(&self, path: &Path) -> Result<bool, TransportError> {
        Ok(path.exists())
    }

    async fn is_dir(&self, path: &Path) -> Result<bool, TransportError> {
        Ok(path.is_dir())
    }

    async fn chmod(&self, path: &Path, mode: u32) -> Result<(), TransportError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
    }

    async fn exec_command_wait(
        &self,
        command: &str,
        workdir: Option<&Path>,
        _stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, TransportError> {
        let mut bash = std::process::Command::new("bash");
        if self.login_shell {
            bash.arg("-l");
        }
        bash.arg("-c").arg(command).stdin(std::process::Stdio::null());
        if let Some(dir) = workdir {
            bash.current_dir(dir);
        }
        let output = bash.output().map_err(|source| TransportError::Command { command: command.to_owned(), source })?;
        Ok(CommandOutput { retval: output.status.code().unwrap_or(-1), stdout: output.stdout, stderr: output.stderr })
    }
}

/// Lists the user's processes as jobs; submits nothing.
pub struct TestScheduler;

#[async_trait::async_trait]
impl Scheduler for TestScheduler {
    fn script_header(&self, _: &JobTemplate) -> String {
        String::new()
    }

    fn ignored_options(&self, _: &JobTemplate) -> Vec<&'static str> {
        Vec::new()
    }

    async fn submit(&self, _: &dyn Transport, _: &Path, _: &str) -> Result<String, SchedulerError> {
        Err(SchedulerError::Command("test.direct submits nothing".to_owned()))
    }

    async fn jobs(&self, transport: &dyn Transport, _: &[String]) -> Result<Vec<JobInfo>, SchedulerError> {
        let output = transport.exec_command_wait("ps -o pid= -u \"$(id -u)\"", None, None).await?;
        if output.retval != 0 {
            return Err(SchedulerError::Command(output.stderr_text()));
        }
        Ok(output
            .stdout_text()
            .split_whitespace()
            .map(|pid| JobInfo { job_state: JobState::Running, ..JobInfo::done(pid) })
            .collect())
    }

    async fn kill(&self, _: &dyn Transport, _: &str) -> Result<bool, SchedulerError> {
        Ok(false)
    }
}
