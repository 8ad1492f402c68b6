//! `verdi`, AiiDA's command line, with aiida-core 2.9's command and flag names: the layer on top of
//! the core (`aiida`), and later of the engine and the daemon. One module per command group.

#![warn(missing_docs)]

use std::io::Write;

use clap::{Parser, Subcommand};

use aiida::config::{ConfigError, Instance};
use aiida::orm::OrmError;
use aiida::plugins::PluginError;
use aiida::storage::{Storage, StorageError};

// Linked for its entry point, `aiida.transports:core.ssh`.
#[cfg(feature = "ssh")]
use aiida_ssh as _;

mod calcjob;
mod code;
mod computer;
mod daemon;
mod data;
mod group;
mod load;
mod node;
mod plugin;
mod process;
mod profile;
mod storage;
mod table;
mod user;

use calcjob::CalcjobCommand;
use code::CodeCommand;
use computer::ComputerCommand;
use daemon::DaemonCommand;
use group::GroupCommand;
use node::NodeCommand;
use plugin::PluginCommand;
use process::ProcessCommand;
use profile::ProfileCommand;
use storage::StorageCommand;
use user::UserCommand;

/// Why a command failed; printed as one line, without a backtrace.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// ORM.
    #[error(transparent)]
    Orm(#[from] OrmError),
    /// Plugins.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A command line the command does not accept (`verdi` exits with 2, as for its own).
    #[error("{0}")]
    Usage(String),
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Message(String),
    /// What aiida-core reports with `echo_critical`: `verdi` prints `Critical: <message>`.
    #[error("{0}")]
    Critical(String),
    /// The command failed and its output already says why (`verdi computer test`): `verdi` exits
    /// with 1 and prints nothing more.
    #[error("the command failed (its output says why)")]
    Reported,
    /// The same, with this exit code (`verdi daemon status` exits with 3 when a daemon is not
    /// running).
    #[error("the command failed with exit code {0} (its output says why)")]
    Exit(u8),
}

/// The command line interface to AiiDA.
#[derive(Debug, Parser)]
#[command(name = "verdi", version, about = "The command line interface of AiiDA.")]
pub struct Verdi {
    /// Execute the command for this profile instead of the default profile (before the command, as
    /// in aiida: `-p` of a command is its own, e.g. `verdi process list -p 1` for the past day).
    #[arg(short = 'p', long = "profile", env = "AIIDA_PROFILE")]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect and manage the configured profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Inspect and manage the data storage.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Inspect and manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect AiiDA plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Inspect, create and manage nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Create, inspect and manage groups of nodes.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Setup and manage computers.
    #[command(subcommand)]
    Computer(ComputerCommand),
    /// Setup and manage codes.
    #[command(subcommand)]
    Code(CodeCommand),
    /// Inspect and manage processes.
    #[command(subcommand)]
    Process(ProcessCommand),
    /// Inspect and manage calcjobs.
    #[command(subcommand)]
    Calcjob(CalcjobCommand),
    /// Inspect and manage the daemon.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Inspect, create and manage data nodes (commands come from plugins: `aiida.cmdline.data`).
    Data {
        /// The data command (an entry point of `aiida.cmdline.data`) and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// A `verdi data` subcommand provided by a plugin: register it as an entry point of
/// `aiida.cmdline.data`; it appears as `verdi data <entry point name> ...`.
///
/// A plugin's commands are in every binary that links the plugin crate, so a plugin ships its
/// own `verdi` (`fn main() -> ExitCode { my_plugin::link(); aiida_cli::main() }`).
pub struct DataCommand {
    /// One line shown by `verdi data`.
    pub about: &'static str,
    /// The command's arguments (its name is set by `verdi`).
    pub command: fn() -> clap::Command,
    /// Runs the command.
    pub run: fn(&clap::ArgMatches, &Context, &mut dyn Write) -> Result<(), CliError>,
}

/// The `aiida.cmdline.data` group: its plugins are [`DataCommand`]s, registered with
/// `aiida::entry_point!(DataCommands: "my.type", DataCommand { .. })`.
#[derive(Debug)]
pub struct DataCommands;

impl aiida::plugins::PluginGroup for DataCommands {
    const NAME: &'static str = "aiida.cmdline.data";
    type Plugin = DataCommand;
}

/// What a command gets to work with: the instance and the profile chosen with `-p`.
#[derive(Debug)]
pub struct Context {
    instance: Instance,
    profile: Option<String>,
}

impl Context {
    /// The chosen (or default) profile's storage, opened.
    pub fn storage(&self) -> Result<Storage, CliError> {
        let profile = self.instance.load()?.profile_or_default(self.profile.as_deref())?;
        Ok(Storage::open(&profile)?)
    }

    /// The instance folder.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The profile chosen with `-p` (or `AIIDA_PROFILE`), if any.
    pub fn profile_name(&self) -> Option<&str> {
        self.profile.as_deref()
    }
}

/// Parses `args` (the first is the program name) and runs them like the `verdi` binary would,
/// in this process: commands that plugins linked into this binary registered are available.
pub fn run_args<I, T>(args: I, instance: &Instance, out: &mut dyn Write) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let verdi = Verdi::try_parse_from(args).map_err(|e| CliError::Usage(e.to_string().trim_end().to_owned()))?;
    run(verdi, instance, out)
}

/// Runs a parsed `verdi` command against `instance`, writing to `out`.
pub fn run(verdi: Verdi, instance: &Instance, out: &mut dyn Write) -> Result<(), CliError> {
    let context = Context { instance: instance.clone(), profile: verdi.profile };
    match verdi.command {
        Command::Profile(command) => profile::run(command, &context, out),
        Command::Storage(command) => storage::run(command, &context, out),
        Command::User(command) => user::run(command, &context, out),
        Command::Plugin(command) => plugin::run(command, &context, out),
        Command::Node(command) => node::run(command, &context, out),
        Command::Group(command) => group::run(command, &context, out),
        Command::Computer(command) => computer::run(command, &context, out),
        Command::Code(command) => code::run(command, &context, out),
        Command::Process(command) => process::run(command, &context, out),
        Command::Calcjob(command) => calcjob::run(command, &context, out),
        Command::Daemon(command) => daemon::run(command, &context, out),
        Command::Data { args } => data::run(&args, &context, out),
    }
}

/// Runs `future` on the core's runtime (where transports do their I/O) and waits for it.
pub(crate) fn on_runtime<F>(future: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    aiida::runtime::block_on(aiida::runtime::on_runtime(future))
}

/// Writes one line of a command's output (a closed stdout is not an error of the command).
pub(crate) fn write_line(out: &mut dyn Write, text: String) {
    let _ = writeln!(out, "{text}");
}

/// A time as aiida-core's `verdi` prints one (Python's `str(datetime)`), in local time:
/// `2024-05-01 14:03:07.123456+02:00`, without the fraction when it is zero.
pub(crate) fn format_time(time: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Timelike;
    let local = time.with_timezone(&chrono::Local);
    let format = if local.nanosecond() / 1000 == 0 { "%Y-%m-%d %H:%M:%S%:z" } else { "%Y-%m-%d %H:%M:%S%.6f%:z" };
    local.format(format).to_string()
}

/// `verdi`'s `main`: parses the arguments, finds the instance folder, runs, and reports an error
/// as one line on stderr: exit code 2 for a command line it does not accept, 1 for anything else.
pub fn main() -> std::process::ExitCode {
    let verdi = Verdi::parse();
    let instance = Instance::from_env();
    let mut stdout = std::io::stdout().lock();
    match run(verdi, &instance, &mut stdout) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(CliError::Usage(usage)) => {
            let _ = writeln!(std::io::stderr(), "{usage}");
            std::process::ExitCode::from(2)
        }
        Err(CliError::Critical(message)) => {
            let _ = writeln!(std::io::stderr(), "Critical: {message}");
            std::process::ExitCode::FAILURE
        }
        Err(CliError::Reported) => std::process::ExitCode::FAILURE,
        Err(CliError::Exit(code)) => std::process::ExitCode::from(code),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "Error: {:#}", aiida::report::Chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};

    #[test]
    fn times_print_as_pythons_str_of_a_datetime_in_local_time() {
        let exact = Utc.with_ymd_and_hms(2024, 5, 1, 12, 3, 7).unwrap();
        let precise = exact + chrono::Duration::microseconds(1234);
        for (time, fraction) in [(exact, ""), (precise, ".001234")] {
            let text = super::format_time(time);
            let (clock, offset) = text.split_at(text.len() - 6);
            assert!(clock.ends_with(&format!(":07{fraction}")), "{text}");
            assert!(offset.starts_with(['+', '-']) && offset.as_bytes()[3] == b':', "{text}");
            assert_eq!(text.as_bytes()[10], b' ', "{text}");
            assert_eq!(DateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f%:z").unwrap(), time);
        }
    }
}
