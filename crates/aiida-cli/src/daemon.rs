//! `verdi daemon`: starts, stops and looks at the profile's daemon workers (`aiida_daemon`).
//!
//! There is no circus here: the daemon is its workers, each a `verdi` process of its own (this
//! executable re-run), with pid files and a log in the instance folder's `daemon/`. What aiida-core
//! asks circus for is read from `/proc`: a worker's memory and CPU use, and its start time; the
//! "daemon" pid that `status` prints is the first worker's.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};

use aiida::config::Profile;
use aiida_daemon::DaemonClient;

use crate::table::{Cell, Format, tabulate};
use crate::{CliError, Context, write_line};

/// `-t/--timeout`, as aiida-core's `TIMEOUT` option.
#[derive(Debug, Args)]
pub(crate) struct Timeout {
    /// Time in seconds to wait for a response before timing out.
    #[arg(short = 't', long = "timeout", value_name = "FLOAT")]
    timeout: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DaemonCommand {
    /// Start the daemon with NUMBER workers.
    ///
    /// If the NUMBER of desired workers is not specified, the default is used, which is determined by the
    /// configuration option `daemon.default_workers`, which if not explicitly changed defaults to 1.
    Start {
        /// The number of workers.
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        number: Option<u32>,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Print the status of the current daemon or all daemons.
    ///
    /// Returns exit code 0 if all requested daemons are running, else exit code 3.
    Status {
        /// Show status of all daemons.
        #[arg(long = "all")]
        all_profiles: bool,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Add NUMBER [default=1] workers to the running daemon.
    Incr {
        /// The number of workers to add.
        #[arg(default_value_t = 1)]
        number: u32,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Remove NUMBER [default=1] workers from the running daemon.
    Decr {
        /// The number of workers to remove.
        #[arg(default_value_t = 1)]
        number: u32,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Show the log of the daemon.
    Logshow,
    /// Stop the daemon.
    ///
    /// Returns exit code 0 if the daemon was shut down successfully (or was not running), non-zero if there was an
    /// error.
    Stop {
        /// Do not wait for confirmation.
        #[arg(long = "no-wait")]
        no_wait: bool,
        /// Stop all daemons.
        #[arg(long = "all")]
        all_profiles: bool,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Restart the daemon.
    ///
    /// The daemon is stopped before being restarted with the default number of workers that is started when calling
    /// `verdi daemon start` manually.
    Restart {
        /// Completely reset the daemon.
        #[arg(long)]
        reset: bool,
        /// Do not wait for confirmation.
        #[arg(long = "no-wait")]
        no_wait: bool,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Run a single daemon worker in the current process.
    Worker,
}

/// Runs `verdi daemon ...`.
pub(crate) fn run(command: DaemonCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        DaemonCommand::Start { number, timeout } => {
            let (profile, client) = client(context, None)?;
            let number = number.map_or_else(|| default_workers(&profile), |n| n as usize);
            start(&client, number, stop_timeout(&profile, &timeout), out)
        }
        DaemonCommand::Status { all_profiles, timeout: _ } => {
            let mut all_running = true;
            for name in profiles(context, all_profiles)? {
                let (profile, client) = client(context, name.as_deref())?;
                all_running &= status(&profile, &client, out);
            }
            if all_running { Ok(()) } else { Err(CliError::Exit(3)) }
        }
        DaemonCommand::Incr { number, timeout: _ } => {
            let (_, client) = running_client(context)?;
            write_partial(out, &format!("Starting {number} daemon workers... "));
            outcome(client.start(number as usize), out)
        }
        DaemonCommand::Decr { number, timeout } => {
            let (profile, client) = running_client(context)?;
            write_partial(out, &format!("Stopping {number} daemon workers... "));
            outcome(client.decrease(number as usize, stop_timeout(&profile, &timeout)).map(drop), out)
        }
        DaemonCommand::Logshow => {
            let (_, client) = client(context, None)?;
            let path = client.log_path();
            let log =
                std::fs::read(&path).map_err(|e| CliError::Critical(format!("cannot read {}: {e}", path.display())))?;
            let _ = out.write_all(&log);
            Ok(())
        }
        DaemonCommand::Stop { no_wait: _, all_profiles, timeout } => {
            for name in profiles(context, all_profiles)? {
                let (profile, client) = client(context, name.as_deref())?;
                stop(&profile, &client, stop_timeout(&profile, &timeout), out)?;
            }
            Ok(())
        }
        DaemonCommand::Restart { reset, no_wait, timeout } => {
            let (profile, client) = running_client(context)?;
            if reset {
                deprecated(
                    "`--reset` flag is deprecated. Now, `verdi daemon restart` by default restarts the full daemon.",
                );
            }
            if no_wait {
                deprecated("The `--no-wait` flag is deprecated and no longer has any effect.");
            }
            if timeout.timeout.is_some() {
                deprecated("The `--timeout` option is deprecated and no longer has any effect.");
            }
            let wait = stop_timeout(&profile, &Timeout { timeout: None });
            stop(&profile, &client, wait, out)?;
            start(&client, default_workers(&profile), wait, out)
        }
        DaemonCommand::Worker => {
            let storage = context.storage()?;
            let name = storage.profile().name().to_owned();
            aiida_daemon::run_worker(context.instance().dir(), &name).map_err(CliError::Critical)
        }
    }
}

/// The client of the daemon of profile `name` (the chosen one when `None`), with its profile.
fn client(context: &Context, name: Option<&str>) -> Result<(Profile, DaemonClient), CliError> {
    let storage = match name {
        Some(name) => aiida::storage::Storage::open(&context.instance().load()?.profile(name)?)?,
        None => context.storage()?,
    };
    let profile = storage.profile().clone();
    // Not tied to this process: the workers outlive `verdi`.
    let client = DaemonClient::new(&storage, context.instance().dir());
    Ok((profile, client))
}

/// What `verdi process list` ends with: whether the daemon runs, and how loaded its workers are.
pub(crate) fn load_report(
    storage: &aiida::storage::Storage,
    context: &Context,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let client = DaemonClient::new(storage, context.instance().dir());
    if !client.is_daemon_running() {
        write_line(out, "Warning: The daemon is not running".to_owned());
        return Ok(());
    }
    write_line(out, "Report: Checking daemon load... OK".to_owned());
    let workers = client.worker_pids().into_iter().filter(|pid| ProcInfo::read(*pid).is_some()).count();
    if workers == 0 {
        write_line(out, "Warning: The daemon has no active workers!".to_owned());
        write_line(out, "Warning: Increase the number of workers with `verdi daemon incr`.".to_owned());
        return Ok(());
    }
    let slots = storage.profile().options().get("daemon.worker_process_slots").and_then(serde_json::Value::as_u64);
    let active = crate::load::processes()
        .attribute("process_state", aiida::orm::query::Op::In, serde_json::json!(["created", "waiting", "running"]))
        .count(storage)?;
    let load = active as f64 / (workers as f64 * slots.unwrap_or(200) as f64);
    let percent = load * 100.0;
    if load > 0.9 {
        write_line(out, format!("Warning: {percent:.0}% of the available daemon worker slots have been used!"));
        write_line(out, "Warning: Increase the number of workers with `verdi daemon incr`.".to_owned());
    } else {
        write_line(out, format!("Report: Using {percent:.0}% of the available daemon worker slots."));
    }
    Ok(())
}

/// The client of the chosen profile's daemon, which must be running (aiida's `only_if_daemon_running`).
fn running_client(context: &Context) -> Result<(Profile, DaemonClient), CliError> {
    let (profile, client) = client(context, None)?;
    if !client.is_daemon_running() {
        return Err(CliError::Critical("daemon is not running".to_owned()));
    }
    Ok((profile, client))
}

/// The profiles a `--all` command works on: all but the test profiles; else the chosen one.
fn profiles(context: &Context, all: bool) -> Result<Vec<Option<String>>, CliError> {
    if !all {
        return Ok(vec![None]);
    }
    let config = context.instance().load()?;
    let mut names = Vec::new();
    for name in config.profile_names() {
        if !config.profile(&name)?.is_test_profile() {
            names.push(Some(name));
        }
    }
    Ok(names)
}

/// `daemon.default_workers` of the profile (aiida's default: 1).
fn default_workers(profile: &Profile) -> usize {
    profile.options().get("daemon.default_workers").and_then(serde_json::Value::as_u64).map_or(1, |n| n.max(1) as usize)
}

/// How long stopping workers waits before it kills them: `--timeout`, else `daemon.timeout` (2 s).
fn stop_timeout(profile: &Profile, timeout: &Timeout) -> Duration {
    let seconds = timeout
        .timeout
        .or_else(|| profile.options().get("daemon.timeout").and_then(serde_json::Value::as_f64))
        .unwrap_or(2.0);
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::from_secs(2))
}

fn start(client: &DaemonClient, number: usize, timeout: Duration, out: &mut dyn Write) -> Result<(), CliError> {
    write_partial(out, &format!("Starting the daemon with {number} workers... "));
    if client.is_daemon_running() {
        write_line(out, "FAILED".to_owned());
        return Err(CliError::Critical("The daemon is already running.".to_owned()));
    }
    // Pid files of workers that ended without being stopped (aiida cleans a stale pid file too).
    let _ = client.stop(timeout);
    outcome(client.start(number), out)
}

fn stop(profile: &Profile, client: &DaemonClient, timeout: Duration, out: &mut dyn Write) -> Result<(), CliError> {
    write_line(out, format!("Profile: {}", profile.name()));
    write_partial(out, "Stopping the daemon... ");
    // Not running is fine for `stop` (the pid files of dead workers go too).
    outcome(client.stop(timeout), out)
}

/// Writes the status of `client`'s daemon; whether it runs.
fn status(profile: &Profile, client: &DaemonClient, out: &mut dyn Write) -> bool {
    write_line(out, format!("Profile: {}", profile.name()));
    if !client.is_daemon_running() {
        let _ = out.flush();
        let _ = writeln!(std::io::stderr(), "Error: The daemon is not running.");
        return false;
    }
    // The live workers (circus lists only those).
    let infos: Vec<(u32, ProcInfo)> =
        client.worker_pids().into_iter().filter_map(|pid| Some((pid, ProcInfo::read(pid)?))).collect();
    let rows: Vec<Vec<Cell>> = infos
        .iter()
        .map(|(pid, info)| {
            vec![
                Cell::Int((*pid).into()),
                Cell::Float(info.mem_percent),
                Cell::Float(info.cpu_percent),
                Cell::Str(local_time(info.started)),
            ]
        })
        .collect();
    let workers = if rows.is_empty() {
        "--> No workers are running. Use `verdi daemon incr` to start some!\n".to_owned()
    } else {
        tabulate(&rows, &["PID", "MEM %", "CPU %", "started"], Format::Simple, false)
    };
    // No circus: the daemon's pid and start are its first worker's.
    let (daemon_pid, since) = infos.first().map_or((0, "-".to_owned()), |(pid, info)| (*pid, local_time(info.started)));
    let lines = [
        format!("Daemon is running as PID {daemon_pid} since {since}"),
        format!("Active workers [{}]:", rows.len()),
        workers,
        format!("Log file: {}", client.log_path().display()),
        "Use `verdi daemon [incr | decr] [num]` to increase / decrease the number of workers".to_owned(),
    ];
    write_line(out, lines.join("\n"));
    true
}

/// `OK`, or `FAILED` and the error as aiida's `echo_critical`.
fn outcome<E: std::error::Error + 'static>(result: Result<(), E>, out: &mut dyn Write) -> Result<(), CliError> {
    match result {
        Ok(()) => {
            write_line(out, "OK".to_owned());
            Ok(())
        }
        Err(e) => {
            write_line(out, "FAILED".to_owned());
            Err(CliError::Critical(aiida::report::Chain(&e).to_string()))
        }
    }
}

/// Writes `text` without a newline (aiida's `echo(..., nl=False)`), flushed: the outcome follows
/// after the work.
fn write_partial(out: &mut dyn Write, text: &str) {
    let _ = write!(out, "{text}");
    let _ = out.flush();
}

fn deprecated(message: &str) {
    let _ = writeln!(std::io::stderr(), "Deprecated: {message}");
}

/// `time` (seconds since the epoch) as aiida's `format_local_time`: `%Y-%m-%d %H:%M:%S`, local.
fn local_time(time: f64) -> String {
    let time = chrono::DateTime::from_timestamp(time as i64, 0).unwrap_or_default();
    time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// What circus reports of a worker (with psutil), read from `/proc`.
#[derive(Debug)]
struct ProcInfo {
    /// Resident memory as a percentage of the total, rounded to 3 digits (circus's `mem`).
    mem_percent: f64,
    /// CPU use, averaged since the worker started (circus measures it between two of its calls),
    /// rounded to 1 digit.
    cpu_percent: f64,
    /// When it started, in seconds since the epoch.
    started: f64,
}

impl ProcInfo {
    /// The process `pid`, unless it is gone (or a zombie).
    fn read(pid: u32) -> Option<ProcInfo> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        // Fields from the third (state) on.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            return None;
        }
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        let (utime, stime, start_ticks, rss_pages) = (field(14)?, field(15)?, field(22)?, field(24)?);
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let (ticks, page) = (ticks.max(1) as f64, page.max(1) as f64);
        let proc_stat = std::fs::read_to_string("/proc/stat").ok()?;
        let boot: f64 = proc_stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let total_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        let started = boot + start_ticks / ticks;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
        let elapsed = (now - started).max(1e-3);
        let cpu = (utime + stime) / ticks / elapsed * 100.0;
        let mem = rss_pages * page / (total_kb * 1024.0) * 100.0;
        Some(ProcInfo {
            mem_percent: (mem * 1000.0).round() / 1000.0,
            cpu_percent: (cpu * 10.0).round() / 10.0,
            started,
        })
    }
}
