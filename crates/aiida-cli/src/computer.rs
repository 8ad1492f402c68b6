//! `verdi computer`: set up, configure, test, show, list and delete computers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use aiida::orm::{Computer, OrmError, User};
use aiida::plugins;
use aiida::storage::Storage;
use aiida_engine::groups::{Schedulers, Transports};
use aiida_engine::transport::{AuthOption, Transport, TransportType};

use crate::table::{Cell, Format, tabulate};
use crate::{CliError, Context, load, on_runtime, write_line};

/// The keys a job resource takes (aiida's `NodeNumberJobResource.get_valid_keys()`), which the
/// mpirun command may use as `{key}`.
const JOB_RESOURCE_KEYS: [&str; 5] =
    ["num_machines", "num_mpiprocs_per_machine", "num_cores_per_machine", "num_cores_per_mpiproc", "tot_num_mpiprocs"];

/// aiida's work directory when a computer sets none (`Computer.get_workdir`).
pub(crate) const DEFAULT_WORKDIR: &str = "/scratch/{username}/aiida_run/";

#[derive(Debug, Subcommand)]
pub(crate) enum ComputerCommand {
    /// Create a new computer.
    Setup(Box<SetupArgs>),
    /// Configure the transport for a computer and user: `verdi computer configure TRANSPORT COMPUTER
    /// [OPTIONS]` (the options are the transport plugin's), or `verdi computer configure show COMPUTER`.
    #[command(disable_help_flag = true)]
    Configure {
        /// The transport's entry point (e.g. `core.local`) or `show`, the computer, and the options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Test the connection to a computer: connect, check for spurious output, ask the scheduler for
    /// jobs, find the remote user name, create and delete a file in the work directory, and time
    /// the login shell. Exits with 1 when a check fails.
    Test {
        /// Test the connection for the AiiDA user with this email (default: the profile's).
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// Print the causes of a failure, each on its own line.
        #[arg(short = 't', long)]
        print_traceback: bool,
        /// The computer (label, pk or UUID).
        computer: String,
    },
    /// Show detailed information for a computer.
    Show {
        /// The computer (label, pk or UUID).
        computer: String,
    },
    /// List all available computers.
    List {
        /// Show also disabled or unconfigured computers.
        #[arg(short = 'a', long = "all")]
        all_entries: bool,
        /// Show only the computer labels, one per line.
        #[arg(short = 'r', long)]
        raw: bool,
    },
    /// Delete a computer (refused while nodes use it).
    Delete {
        /// Perform a dry run.
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// The computer (label, pk or UUID).
        computer: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SetupArgs {
    /// Unique, human-readable label for this computer.
    #[arg(short = 'L', long)]
    label: String,
    /// The fully qualified hostname of the computer (e.g. daint.cscs.ch). Use "localhost" when
    /// setting up the computer that AiiDA is running on.
    #[arg(short = 'H', long)]
    hostname: String,
    /// A human-readable description of this computer.
    #[arg(short = 'D', long, default_value = "")]
    description: String,
    /// A transport plugin (as listed in `verdi plugin list aiida.transports`).
    #[arg(short = 'T', long)]
    transport: String,
    /// A scheduler plugin (as listed in `verdi plugin list aiida.schedulers`).
    #[arg(short = 'S', long)]
    scheduler: String,
    /// Specify the first line of the submission script for this computer (only the bash shell is
    /// supported).
    #[arg(long, default_value = "#!/bin/bash")]
    shebang: String,
    /// The absolute path of the directory on the computer where AiiDA will run the calculations
    /// (often a "scratch" directory). The {username} string will be replaced by your username on
    /// the remote computer.
    #[arg(short = 'w', long, default_value = "/scratch/{username}/aiida/")]
    work_dir: String,
    /// The mpirun command needed on the cluster to run parallel MPI programs. The
    /// {tot_num_mpiprocs} string will be replaced by the total number of cpus.
    #[arg(short = 'm', long, default_value = "mpirun -np {tot_num_mpiprocs}")]
    mpirun_command: String,
    /// The default number of MPI processes that should be executed per machine (node), if not
    /// otherwise specified.
    #[arg(long)]
    mpiprocs_per_machine: Option<i64>,
    /// The default amount of RAM (kB) that should be allocated per machine (node), if not
    /// otherwise specified.
    #[arg(long)]
    default_memory_per_machine: Option<i64>,
    /// Escape the command line arguments before and after the executable in the submission script
    /// with double quotes (instead of single ones).
    #[arg(long, overrides_with = "not_use_double_quotes")]
    use_double_quotes: bool,
    /// Escape them with single quotes (the default).
    #[arg(long)]
    not_use_double_quotes: bool,
    /// Bash commands that should be prepended to the executable call in all submit scripts for
    /// this computer.
    #[arg(long, default_value = "")]
    prepend_text: String,
    /// Bash commands that should be appended to the executable call in all submit scripts for
    /// this computer.
    #[arg(long, default_value = "")]
    append_text: String,
    /// Accepted for compatibility: this command never prompts.
    #[arg(short = 'n', long)]
    non_interactive: bool,
}

/// Runs `verdi computer ...`.
pub(crate) fn run(command: ComputerCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        ComputerCommand::Setup(args) => setup(&context.storage()?, *args, out),
        ComputerCommand::Configure { args } => configure(context, &args, out),
        ComputerCommand::Test { user, print_traceback, computer } => {
            test(&context.storage()?, user.as_deref(), print_traceback, &computer, out)
        }
        ComputerCommand::Show { computer } => show(&context.storage()?, &computer, out),
        ComputerCommand::List { all_entries, raw } => list(&context.storage()?, all_entries, raw, out),
        ComputerCommand::Delete { dry_run, computer } => delete(&context.storage()?, dry_run, &computer, out),
    }
}

/// The entry-point name of a plugin of `group` given as `name` (any of aiida's spellings), checked.
fn plugin_name(group: &str, name: &str, option: &str) -> Result<String, CliError> {
    let invalid = || {
        load::invalid_argument(
            option,
            &format!("entry point '{name}' is not valid for any of the allowed entry point groups: {group}"),
        )
    };
    let (_, short) = plugins::parse(name).map_err(|_| invalid())?;
    plugins::load(name, Some(group)).map_err(|_| invalid())?;
    Ok(short)
}

/// Checks the `{field}`s of a format string (Python's `str.format`): only `valid` ones.
fn check_fields(text: &str, valid: &[&str], what: &str) -> Result<(), String> {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '{' => {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => field.push(c),
                        None => return Err("Error in the string: 'expected '}' before end of string'".to_owned()),
                    }
                }
                let name = field.split([':', '!', '.', '[']).next().unwrap_or_default();
                if !valid.contains(&name) {
                    return Err(format!("In {what} there is an unknown replacement field {name}"));
                }
            }
            '}' => return Err("Error in the string: 'Single '}' encountered in format string'".to_owned()),
            _ => {}
        }
    }
    Ok(())
}

fn setup(storage: &Storage, args: SetupArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if Computer::list(storage)?.iter().any(|c| c.label() == args.label) {
        return Err(CliError::Critical(format!(
            "A computer called {c} already exists. Use \"verdi computer duplicate {c}\" to set up a new computer \
             starting from the settings of {c}.",
            c = args.label
        )));
    }
    let transport = plugin_name("aiida.transports", &args.transport, "-T' / '--transport")?;
    let scheduler = plugin_name("aiida.schedulers", &args.scheduler, "-S' / '--scheduler")?;
    if !args.shebang.starts_with("#!") {
        return Err(load::invalid_argument(
            "--shebang",
            &format!("The shebang line should start with the two caracters #!, it is instead '{}'", args.shebang),
        ));
    }
    let invalid = |message: String| CliError::Critical(format!("ComputerValidationError: {message}"));
    if args.label.trim().is_empty() {
        return Err(invalid("No label specified".to_owned()));
    }
    if args.hostname.trim().is_empty() {
        return Err(invalid("No hostname specified".to_owned()));
    }
    if args.work_dir.trim().is_empty() {
        return Err(invalid("No workdir specified".to_owned()));
    }
    check_fields(&args.work_dir, &["username"], "workdir").map_err(&invalid)?;
    if !args.work_dir.replace("{username}", "test").starts_with('/') {
        return Err(invalid("The workdir must be an absolute path".to_owned()));
    }
    let mpirun: Vec<String> = args.mpirun_command.split_whitespace().map(str::to_owned).collect();
    for arg in &mpirun {
        check_fields(arg, &JOB_RESOURCE_KEYS, "mpirun_command").map_err(&invalid)?;
    }
    let mpiprocs = match args.mpiprocs_per_machine {
        Some(0) => {
            write_line(
                out,
                "Warning: Specifying `0` to not set `default_mpiprocs_per_machine` is deprecated.".to_owned(),
            );
            None
        }
        Some(n) if n < 0 => {
            return Err(invalid("Invalid value provided for mpiprocs_per_machine, must be positive".to_owned()));
        }
        other => other,
    };
    if let Some(memory) = args.default_memory_per_machine.filter(|m| *m <= 0) {
        return Err(invalid(format!(
            "Invalid value for `default_memory_per_machine`: Invalid value for def_memory_per_machine, must be a \
             positive int, got: {memory}"
        )));
    }
    // The metadata in the order aiida's ComputerBuilder writes it.
    let mut computer = Computer::new(&args.label, &args.hostname, transport, scheduler)
        .with_description(&args.description)
        .with_metadata("use_double_quotes", Value::Bool(args.use_double_quotes && !args.not_use_double_quotes))
        .with_metadata("prepend_text", Value::from(args.prepend_text))
        .with_metadata("append_text", Value::from(args.append_text))
        .with_workdir(args.work_dir)
        .with_metadata("shebang", Value::from(args.shebang));
    if let Some(mpiprocs) = mpiprocs {
        computer = computer.with_metadata("default_mpiprocs_per_machine", mpiprocs.into());
    }
    if let Some(memory) = args.default_memory_per_machine {
        computer = computer.with_metadata("default_memory_per_machine", memory.into());
    }
    computer = computer.with_metadata("mpirun_command", Value::from(mpirun));
    computer.store(storage)?;
    write_line(out, format!("Success: Computer<{}> {} created", computer.pk().unwrap_or_default(), computer.label()));
    write_line(out, "Report: Note: before the computer can be used, it has to be configured with the command:".into());
    write_line(
        out,
        format!(
            "Report:   verdi -p {} computer configure {} {}",
            storage.profile().name(),
            computer.transport_type(),
            computer.label()
        ),
    );
    Ok(())
}

/// The user `email` names, or the profile's default user.
fn user(storage: &Storage, email: Option<&str>) -> Result<User, CliError> {
    match email {
        None => Ok(User::default_user(storage)?),
        Some(email) => User::list(storage)?.into_iter().find(|u| u.email() == email).ok_or_else(|| {
            load::invalid_argument("-u' / '--user", &format!("no User found with EMAIL<{email}>: No result was found"))
        }),
    }
}

/// The transport plugin `name`.
fn transport_type(name: &str) -> Result<Arc<dyn TransportType>, CliError> {
    Ok(plugins::factory::<Transports>(name)?)
}

/// The command line `verdi computer configure TRANSPORT` takes: the transport plugin's options.
fn configure_command(transport: &str, options: &[AuthOption]) -> clap::Command {
    use clap::{Arg, ArgAction};
    let mut command = clap::Command::new(transport.to_owned())
        .bin_name(format!("verdi computer configure {transport}"))
        .about(format!("Configure COMPUTER for {transport} transport."))
        .arg(Arg::new("computer").value_name("COMPUTER").required(true).help("The computer (label, pk or UUID)."))
        .arg(Arg::new("user").short('u').long("user").value_name("USER").help("Email address of the user."))
        .arg(
            Arg::new("non_interactive")
                .short('n')
                .long("non-interactive")
                .action(ArgAction::SetTrue)
                .help("Accepted for compatibility: this command never prompts."),
        );
    for option in options {
        let long = option.name.replace('_', "-");
        let default = format!("[default: {}]", crate::table::python_repr(&option.default));
        let help = format!("{} {default}", option.help);
        command = match &option.default {
            Value::Bool(_) => command
                .arg(
                    Arg::new(option.name)
                        .long(long.clone())
                        .action(ArgAction::SetTrue)
                        .overrides_with(format!("no_{}", option.name))
                        .help(help),
                )
                .arg(
                    Arg::new(format!("no_{}", option.name))
                        .long(format!("no-{long}"))
                        .action(ArgAction::SetTrue)
                        .overrides_with(option.name)
                        .help(format!("The opposite of --{long}.")),
                ),
            Value::Number(n) if n.is_f64() => command.arg(
                Arg::new(option.name).long(long).value_name("FLOAT").value_parser(clap::value_parser!(f64)).help(help),
            ),
            Value::Number(_) => command.arg(
                Arg::new(option.name)
                    .long(long)
                    .value_name("INTEGER")
                    .value_parser(clap::value_parser!(i64))
                    .help(help),
            ),
            _ => command.arg(Arg::new(option.name).long(long).value_name("TEXT").help(help)),
        };
    }
    command
}

/// The value given for `option` on the command line, if any.
fn given(matches: &clap::ArgMatches, option: &AuthOption) -> Option<Value> {
    match &option.default {
        Value::Bool(_) => {
            if matches.get_flag(option.name) {
                Some(Value::Bool(true))
            } else if matches.get_flag(&format!("no_{}", option.name)) {
                Some(Value::Bool(false))
            } else {
                None
            }
        }
        Value::Number(n) if n.is_f64() => matches.get_one::<f64>(option.name).map(|f| Value::from(*f)),
        Value::Number(_) => matches.get_one::<i64>(option.name).map(|i| Value::from(*i)),
        Value::String(_) => matches.get_one::<String>(option.name).map(|s| Value::from(s.clone())),
        _ => matches
            .get_one::<String>(option.name)
            .map(|s| serde_json::from_str(s).unwrap_or_else(|_| Value::from(s.clone()))),
    }
}

fn configure_usage() -> String {
    let transports: Vec<String> = plugins::select("aiida.transports", None).iter().map(|e| e.name().into()).collect();
    format!(
        "Usage: verdi computer configure [show|{}] COMPUTER [OPTIONS]\n\n  Configure the transport for a computer \
         and user (`verdi computer configure TRANSPORT --help` lists the transport's options).",
        transports.join("|")
    )
}

/// Parses a command line of a command built at run time: `--help` is written to `out` (and there
/// is nothing to run), a wrong command line is a usage error.
fn parse(
    command: clap::Command,
    args: impl IntoIterator<Item = String>,
    out: &mut dyn Write,
) -> Result<Option<clap::ArgMatches>, CliError> {
    match command.try_get_matches_from(args) {
        Ok(matches) => Ok(Some(matches)),
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            let _ = write!(out, "{}", e.render());
            Ok(None)
        }
        Err(e) => Err(CliError::Usage(e.to_string().trim_end().to_owned())),
    }
}

fn configure(context: &Context, args: &[String], out: &mut dyn Write) -> Result<(), CliError> {
    let Some(name) = args.first() else {
        return Err(CliError::Usage(format!("{}\n\nError: Missing command.", configure_usage())));
    };
    if name == "--help" || name == "-h" {
        write_line(out, configure_usage());
        return Ok(());
    }
    if name == "show" {
        return configure_show(context, &args[1..], out);
    }
    let Ok(transport_type) = transport_type(name) else {
        return Err(CliError::Usage(format!(
            "Usage: verdi computer configure [OPTIONS] COMMAND [ARGS]...\n\nError: No such command '{name}'."
        )));
    };
    let options = transport_type.auth_options();
    let Some(matches) = parse(configure_command(name, &options), args.iter().cloned(), out)? else { return Ok(()) };
    let storage = context.storage()?;
    let computer = load::computer(&storage, matches.get_one::<String>("computer").expect("required"), "COMPUTER")?;
    if plugins::parse(computer.transport_type())?.1 != plugins::parse(name)?.1 {
        return Err(CliError::Critical(format!(
            "Computer {} has transport of type \"{}\", not {name}!",
            computer.label(),
            computer.transport_type()
        )));
    }
    let default_user = User::default_user(&storage)?;
    let user = user(&storage, matches.get_one::<String>("user").map(String::as_str))?;
    write_line(out, format!("Report: Configuring computer {} for user {}.", computer.label(), user.email()));
    if user.pk() != default_user.pk() {
        write_line(out, "Report: Configuring different user, defaults may not be appropriate.".to_owned());
    }
    // Non-interactive, as aiida's `-n`: what is not given keeps its configured value, else gets its
    // default; parameters of the authinfo that the options do not cover are kept.
    let mut params: Map<String, Value> = match computer.authinfo(&storage, &user) {
        Ok(authinfo) => authinfo.auth_params().clone(),
        Err(OrmError::NotConfigured { .. }) => Map::new(),
        Err(e) => return Err(e.into()),
    };
    for option in &options {
        let value = match given(&matches, option) {
            Some(value) => value,
            None => params.get(option.name).cloned().unwrap_or_else(|| option.default.clone()),
        };
        params.insert(option.name.to_owned(), value);
    }
    computer.configure(&storage, &user, params)?;
    write_line(out, format!("Success: {} successfully configured for {}", computer.label(), user.email()));
    Ok(())
}

fn configure_show(context: &Context, args: &[String], out: &mut dyn Write) -> Result<(), CliError> {
    use clap::{Arg, ArgAction};
    let command = clap::Command::new("show")
        .bin_name("verdi computer configure show")
        .about("Show the current configuration for a computer.")
        .arg(Arg::new("computer").value_name("COMPUTER").required(true))
        .arg(
            Arg::new("defaults")
                .long("defaults")
                .action(ArgAction::SetTrue)
                .help("Show the default configuration settings for this computer."),
        )
        .arg(Arg::new("user").short('u').long("user").value_name("USER").help("Email address of the user."));
    let args = std::iter::once("show".to_owned()).chain(args.iter().cloned());
    let Some(matches) = parse(command, args, out)? else { return Ok(()) };
    let storage = context.storage()?;
    let computer = load::computer(&storage, matches.get_one::<String>("computer").expect("required"), "COMPUTER")?;
    let user = user(&storage, matches.get_one::<String>("user").map(String::as_str))?;
    let options = transport_type(computer.transport_type())?.auth_options();
    let config: Map<String, Value> = if matches.get_flag("defaults") {
        options.iter().map(|o| (o.name.to_owned(), o.default.clone())).collect()
    } else {
        match computer.authinfo(&storage, &user) {
            Ok(authinfo) => authinfo.auth_params().clone(),
            Err(OrmError::NotConfigured { .. }) => Map::new(),
            Err(e) => return Err(e.into()),
        }
    };
    let rows: Vec<Vec<Cell>> = options
        .iter()
        .map(|o| vec![Cell::from(format!("* {}", o.name)), config.get(o.name).map_or(Cell::from("-"), Cell::from)])
        .collect();
    write_line(out, tabulate(&rows, &[], Format::Plain, false));
    Ok(())
}

/// An open transport to `computer` as `user`, with the user's authinfo.
pub(crate) struct Connection {
    pub(crate) transport: Arc<dyn Transport>,
    transport_type: Arc<dyn TransportType>,
    hostname: String,
    auth_params: Map<String, Value>,
}

/// Opens a transport to `computer` with `auth_params` through its transport plugin.
fn open(
    transport_type: &Arc<dyn TransportType>,
    hostname: &str,
    auth_params: &Map<String, Value>,
) -> Result<Arc<dyn Transport>, aiida_engine::transport::TransportError> {
    let (transport_type, hostname, params) = (transport_type.clone(), hostname.to_owned(), auth_params.clone());
    on_runtime(async move { transport_type.open(&hostname, &params).await })
}

impl Connection {
    /// Opens a transport to `computer` for `user` (who must have configured it).
    pub(crate) fn open(storage: &Storage, computer: &Computer, user: &User) -> Result<Connection, CliError> {
        let authinfo = computer.authinfo(storage, user)?;
        let transport_type = transport_type(computer.transport_type())?;
        let auth_params = authinfo.auth_params().clone();
        let transport = open(&transport_type, computer.hostname(), &auth_params)
            .map_err(|e| CliError::Critical(format!("{:#}", aiida::report::Chain(&e))))?;
        Ok(Connection { transport, transport_type, hostname: computer.hostname().to_owned(), auth_params })
    }

    /// Copies the remote file `remote` and returns its content.
    pub(crate) fn read(&self, remote: &Path) -> Result<Vec<u8>, String> {
        let scratch = tempfile::tempdir().map_err(|e| format!("cannot make a scratch folder: {e}"))?;
        let local = scratch.path().join("file");
        let (transport, remote, target) = (self.transport.clone(), remote.to_owned(), local.clone());
        on_runtime(async move { transport.get(&remote, &target, false).await })
            .map_err(|e| aiida::report::Chain(&e).to_string())?;
        std::fs::read(&local).map_err(|e| format!("cannot read {}: {e}", local.display()))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let transport = self.transport.clone();
        let _ = on_runtime(async move { transport.close().await });
    }
}

/// What a check of `verdi computer test` found: passed or not, and what to add after `[OK]` /
/// `[Failed]`.
type Check = Result<(bool, Option<String>), String>;

/// One check of `verdi computer test`.
type CheckFn<'a> = Box<dyn Fn() -> Check + 'a>;

fn test(
    storage: &Storage,
    email: Option<&str>,
    print_traceback: bool,
    computer: &str,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let computer = load::computer(storage, computer, "COMPUTER")?;
    let user = user(storage, email)?;
    write_line(out, format!("Report: Testing computer<{}> for user<{}>...", computer.label(), user.email()));
    let authinfo = match computer.authinfo(storage, &user) {
        Ok(authinfo) => authinfo,
        Err(OrmError::NotConfigured { .. }) => {
            return Err(CliError::Critical(format!(
                "Computer<{}> is not yet configured for user<{}>",
                computer.label(),
                user.email()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if !authinfo.enabled() {
        write_line(out, format!("Warning: Computer<{}> is disabled for user<{}>", computer.label(), user.email()));
    }
    let scheduler = plugins::factory::<Schedulers>(computer.scheduler_type())?;
    let transport_type = transport_type(computer.transport_type())?;
    let chain = |e: &(dyn std::error::Error + 'static)| {
        if print_traceback { format!("{:#}", aiida::report::Chain(e)) } else { aiida::report::Chain(e).to_string() }
    };

    let _ = write!(out, "* Opening connection... ");
    let _ = out.flush();
    let transport = match open(&transport_type, computer.hostname(), authinfo.auth_params()) {
        Ok(transport) => transport,
        Err(e) => {
            write_line(out, format!("[FAILED]: Error while trying to connect to the computer: {}", chain(&e)));
            write_line(out, "Warning: 1 out of 1 tests failed".to_owned());
            return Err(CliError::Reported);
        }
    };
    let connection = Connection {
        transport,
        transport_type,
        hostname: computer.hostname().to_owned(),
        auth_params: authinfo.auth_params().clone(),
    };
    write_line(out, "[OK]".to_owned());

    let transport = &connection.transport;
    let mut tests = 1;
    let mut failures = 0;
    let checks: [(&str, CheckFn<'_>); 5] = [
        ("Checking for spurious output", Box::new(|| check_spurious_output(transport))),
        (
            "Getting number of jobs from scheduler",
            Box::new(|| {
                let (transport, scheduler) = (transport.clone(), scheduler.clone());
                let jobs = on_runtime(async move { scheduler.jobs(&*transport, &[]).await }).map_err(|e| chain(&e))?;
                Ok((true, Some(format!("{} jobs found in the queue", jobs.len()))))
            }),
        ),
        (
            "Determining remote user name",
            Box::new(|| {
                let transport = transport.clone();
                let user = on_runtime(async move { transport.whoami().await }).map_err(|e| chain(&e))?;
                Ok((true, Some(user)))
            }),
        ),
        (
            "Creating and deleting temporary file",
            Box::new(|| check_temporary_file(transport, computer.workdir().unwrap_or(DEFAULT_WORKDIR), &chain)),
        ),
        (
            "Checking for possible delay from using login shell",
            Box::new(|| check_login_shell(&connection, &computer, &chain)),
        ),
    ];
    for (label, check) in checks {
        let _ = write!(out, "* {label}... ");
        let _ = out.flush();
        tests += 1;
        let line = match check() {
            Ok((true, None)) => "[OK]".to_owned(),
            Ok((true, Some(message))) => format!("[OK]: {message}"),
            Ok((false, message)) => {
                failures += 1;
                message.map_or_else(|| "[Failed]".to_owned(), |m| format!("[Failed]: {m}"))
            }
            Err(message) => {
                failures += 1;
                format!("[Failed]: {message}")
            }
        };
        write_line(out, line);
    }
    if failures > 0 {
        write_line(out, format!("Warning: {failures} out of {tests} tests failed"));
        return Err(CliError::Reported);
    }
    write_line(out, format!("Success: all {tests} tests succeeded"));
    Ok(())
}

fn check_spurious_output(transport: &Arc<dyn Transport>) -> Check {
    let transport = transport.clone();
    let output = on_runtime(async move { transport.exec_command_wait("echo -n", None, None).await })
        .map_err(|e| aiida::report::Chain(&e).to_string())?;
    if output.retval != 0 {
        return Ok((false, Some(format!("The command `echo -n` returned a non-zero return code ({})", output.retval))));
    }
    for (stream, text) in [("stdout", output.stdout_text()), ("stderr", output.stderr_text())] {
        if !text.is_empty() {
            let bar = "=".repeat(101);
            return Ok((
                false,
                Some(format!(
                    "\nWe detected some spurious output in the {stream} when connecting to the computer, as shown \
                     between the bars\n{bar}\n{text}\n{bar}\nPlease check that you don't have code producing output \
                     in your ~/.bash_profile, ~/.bashrc or similar.\nIf you don't want to remove the code, but just \
                     to disable it for non-interactive shells, see comments\nin this troubleshooting section of the \
                     online documentation: https://bit.ly/2FCRDc5\n"
                )),
            ));
        }
    }
    Ok((true, None))
}

fn check_temporary_file(
    transport: &Arc<dyn Transport>,
    workdir: &str,
    chain: &dyn Fn(&(dyn std::error::Error + 'static)) -> String,
) -> Check {
    let content = format!(
        "Test from 'verdi computer test' on {}",
        chrono::Local::now().naive_local().format("%Y-%m-%dT%H:%M:%S%.6f")
    );
    let scratch = tempfile::tempdir().map_err(|e| format!("cannot make a local scratch folder: {e}"))?;
    // A name as Python's NamedTemporaryFile makes them.
    let local = tempfile::Builder::new()
        .prefix("tmp")
        .tempfile_in(scratch.path())
        .and_then(|file| file.keep().map_err(|e| e.error))
        .map(|(_, path)| path)
        .map_err(|e| format!("cannot make a local temporary file: {e}"))?;
    let name = local.file_name().unwrap_or_default().to_owned();
    std::fs::write(&local, &content).map_err(|e| format!("cannot write {}: {e}", local.display()))?;
    let back = scratch.path().join("retrieved");
    let (transport, workdir) = (transport.clone(), workdir.to_owned());
    let (sent, received) = (local.clone(), back.clone());
    let result = on_runtime(async move {
        let user = transport.whoami().await?;
        let workdir = PathBuf::from(workdir.replace("{username}", &user));
        transport.makedirs(&workdir, true).await?;
        let remote = workdir.join(&name);
        transport.put(&sent, &remote).await?;
        if !transport.path_exists(&remote).await? {
            return Ok(Err(format!("failed to create the file `{}` on the remote", remote.display())));
        }
        transport.get(&remote, &received, false).await?;
        transport.rmtree(&remote).await?;
        Ok::<_, aiida_engine::transport::TransportError>(Ok(()))
    });
    match result {
        Err(e) => Err(chain(&e)),
        Ok(Err(message)) => Ok((false, Some(message))),
        Ok(Ok(())) => {
            let read = std::fs::read_to_string(&back).unwrap_or_default();
            if read != content {
                return Ok((
                    false,
                    Some(format!(
                        "retrieved file content is different from what was expected\n  Expected: {content}\n  \
                         Retrieved: {read}"
                    )),
                ));
            }
            Ok((true, None))
        }
    }
}

/// Whether running commands in a login shell is much slower than without (aiida's
/// `_computer_use_login_shell_performance`): only for a transport with `use_login_shell`, when the
/// computer uses it.
fn check_login_shell(
    connection: &Connection,
    computer: &Computer,
    chain: &dyn Fn(&(dyn std::error::Error + 'static)) -> String,
) -> Check {
    let takes_it = connection.transport_type.auth_options().iter().any(|o| o.name == "use_login_shell");
    if !takes_it || connection.auth_params.get("use_login_shell") == Some(&Value::Bool(false)) {
        return Ok((true, None));
    }
    let timing = |login: bool| -> Result<f64, String> {
        let mut params = connection.auth_params.clone();
        params.insert("use_login_shell".into(), Value::Bool(login));
        let mut total = 0.0;
        for _ in 0..3 {
            let start = Instant::now();
            let transport = open(&connection.transport_type, &connection.hostname, &params).map_err(|e| chain(&e))?;
            // aiida times `whoami` run through the shell (a transport may answer `whoami()`
            // without one).
            let shell = transport.clone();
            on_runtime(async move {
                let output = shell.exec_command_wait("whoami", None, None).await;
                let _ = shell.close().await;
                output
            })
            .map_err(|e| chain(&e))?;
            total += start.elapsed().as_secs_f64();
        }
        Ok(total / 3.0)
    };
    let without = timing(false)?;
    let with = timing(true)?;
    // Python's math.isclose(with, without, rel_tol=0.5, abs_tol=0.1).
    if (with - without).abs() <= (0.5 * with.abs().max(without.abs())).max(0.1) {
        return Ok((true, None));
    }
    Ok((
        true,
        Some(format!(
            "\n\nWarning: The computer is configured to use a login shell, which is slower compared to a normal \
             shell.\nCommand execution time of {with:.3} versus {without:.3} seconds, respectively).\nUnless this \
             setting is really necessary, consider disabling it with:\n\n    verdi computer configure {} {} -n \
             --no-use-login-shell\n\nFor details, please refer to the documentation: \
             https://aiida.readthedocs.io/projects/aiida-core/en/latest/topics/transport.html#login-shells\n",
            computer.transport_type(),
            computer.label()
        )),
    ))
}

fn show(storage: &Storage, computer: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let computer = load::computer(storage, computer, "COMPUTER")?;
    let metadata = computer.metadata();
    let text = |key: &str| metadata.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let mpirun = match metadata.get("mpirun_command").and_then(Value::as_array) {
        Some(args) => args.iter().map(|a| a.as_str().unwrap_or_default()).collect::<Vec<_>>().join(" "),
        None => "mpirun -np {tot_num_mpiprocs}".to_owned(),
    };
    let rows: Vec<Vec<Cell>> = vec![
        vec!["Label".into(), computer.label().into()],
        vec!["PK".into(), computer.pk().into()],
        vec!["UUID".into(), computer.uuid().to_string().into()],
        vec!["Description".into(), computer.description().into()],
        vec!["Hostname".into(), computer.hostname().into()],
        vec!["Transport type".into(), computer.transport_type().into()],
        vec!["Scheduler type".into(), computer.scheduler_type().into()],
        vec!["Work directory".into(), computer.workdir().unwrap_or(DEFAULT_WORKDIR).into()],
        vec!["Shebang".into(), metadata.get("shebang").and_then(Value::as_str).unwrap_or("#!/bin/bash").into()],
        vec!["Mpirun command".into(), mpirun.into()],
        vec![
            "Default #procs/machine".into(),
            metadata.get("default_mpiprocs_per_machine").map_or(Cell::None, Cell::from),
        ],
        vec![
            "Default memory (kB)/machine".into(),
            metadata.get("default_memory_per_machine").map_or(Cell::None, Cell::from),
        ],
        vec!["Prepend text".into(), text("prepend_text").into()],
        vec!["Append text".into(), text("append_text").into()],
    ];
    write_line(out, tabulate(&rows, &[], Format::Simple, false));
    Ok(())
}

fn list(storage: &Storage, all_entries: bool, raw: bool, out: &mut dyn Write) -> Result<(), CliError> {
    if !raw {
        write_line(out, "Report: List of configured computers".to_owned());
        write_line(
            out,
            "Report: Use 'verdi computer show COMPUTERLABEL' to display more detailed information".to_owned(),
        );
    }
    let mut computers = Computer::list(storage)?;
    if computers.is_empty() {
        write_line(out, "Report: No computers configured yet. Use 'verdi computer setup'".to_owned());
    }
    computers.sort_by(|a, b| a.label().cmp(b.label()));
    let user = User::default_user(storage)?;
    for computer in computers {
        let usable = match computer.authinfo(storage, &user) {
            Ok(authinfo) => authinfo.enabled(),
            Err(OrmError::NotConfigured { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if usable {
            write_line(out, format!("* {}", computer.label()));
        } else if all_entries {
            write_line(out, format!("  {}", computer.label()));
        }
    }
    Ok(())
}

fn delete(storage: &Storage, dry_run: bool, computer: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let computer = load::computer(storage, computer, "COMPUTER")?;
    let nodes = computer.node_count(storage)?;
    write_line(out, format!("Report: This computer has {nodes} associated nodes"));
    if nodes > 0 {
        return Err(CliError::Critical(format!(
            "Computer `{}` is used by {nodes} node(s) and is not deleted: delete those nodes first (aiida-core \
             would offer to delete them with it; this verdi does not delete nodes)",
            computer.label()
        )));
    }
    if dry_run {
        return Ok(());
    }
    computer.delete(storage)?;
    write_line(out, format!("Success: Computer `{}` deleted.", computer.label()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_fields;

    #[test]
    fn format_fields_are_checked_as_pythons_str_format_reads_them() {
        assert!(check_fields("/scratch/{username}/aiida", &["username"], "workdir").is_ok());
        assert!(check_fields("{{literal}}", &[], "x").is_ok());
        assert_eq!(
            check_fields("/x/{user}", &["username"], "workdir").unwrap_err(),
            "In workdir there is an unknown replacement field user"
        );
        assert!(check_fields("-np {tot_num_mpiprocs", &["tot_num_mpiprocs"], "mpirun_command").is_err());
        assert!(check_fields("a}", &[], "x").is_err());
    }
}
