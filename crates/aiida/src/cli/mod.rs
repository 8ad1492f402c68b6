//! `verdi`, the command line, with aiida-core 2.9's command and flag names.

use std::io::Write;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::config::{ConfigError, Instance, Profile, PsqlDosConfig};
use crate::orm::{Group, Node, OrmError, User};
use crate::plugins::{self, PluginError};
use crate::storage::{Storage, StorageError};

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
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Message(String),
}

/// The command line interface to AiiDA.
#[derive(Debug, Parser)]
#[command(name = "verdi", version, about = "The command line interface of AiiDA.")]
pub struct Verdi {
    /// Execute the command for this profile instead of the default profile.
    #[arg(short = 'p', long = "profile", global = true, env = "AIIDA_PROFILE")]
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
    /// Inspect, create and manage data nodes (commands come from plugins: `aiida.cmdline.data`).
    Data {
        /// The data command (an entry point of `aiida.cmdline.data`) and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create an empty group with a given label.
    Create {
        /// The label.
        label: String,
    },
    /// Show a list of existing groups.
    List,
    /// Add nodes to a group.
    AddNodes {
        /// The group's label.
        #[arg(short = 'G', long = "group")]
        group: String,
        /// Node pks.
        #[arg(required = true)]
        nodes: Vec<i32>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// A `verdi data` subcommand provided by a plugin: register it as an entry point of
/// `aiida.cmdline.data`; it appears as `verdi data <entry point name> ...`.
///
/// A plugin's commands are in every binary that links the plugin crate, so a plugin ships its
/// own `verdi` (`fn main() -> ExitCode { my_plugin::link(); aiida::cli::main() }`).
pub struct DataCommand {
    /// One line shown by `verdi data`.
    pub about: &'static str,
    /// The command's arguments (its name is set by `verdi`).
    pub command: fn() -> clap::Command,
    /// Runs the command.
    pub run: fn(&clap::ArgMatches, &Context, &mut dyn Write) -> Result<(), CliError>,
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
}

fn dict_command() -> clap::Command {
    clap::Command::new("core.dict").subcommand_required(true).subcommand(
        clap::Command::new("show")
            .about("Show the contents of Dict nodes")
            .arg(clap::Arg::new("pks").required(true).num_args(1..).value_parser(clap::value_parser!(i32))),
    )
}

fn dict_run(matches: &clap::ArgMatches, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let storage = context.storage()?;
    if let Some(("show", show)) = matches.subcommand() {
        for pk in show.get_many::<i32>("pks").into_iter().flatten() {
            let node = Node::load(&storage, *pk)?;
            if node.node_type() != crate::orm::data::DICT.node_type {
                return Err(CliError::Message(format!("node {pk} is a `{}`, not a Dict", node.node_type())));
            }
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&Value::Object(node.attributes().clone())).expect("JSON")
            );
        }
    }
    Ok(())
}

crate::entry_point!(
    "aiida.cmdline.data",
    "core.dict",
    DataCommand { about: "Show the contents of Dict nodes", command: dict_command, run: dict_run }
);

#[derive(Debug, Subcommand)]
enum ProfileCommand {
    /// Set up a new profile.
    #[command(subcommand)]
    Setup(SetupCommand),
    /// Display a list of all available profiles.
    List,
    /// Show details for a profile.
    Show {
        /// The profile (default: the current one).
        name: Option<String>,
    },
    /// Set a profile as the default profile.
    SetDefault {
        /// The profile.
        name: String,
    },
    /// Delete one or more profiles.
    Delete {
        /// The profiles.
        #[arg(required = true)]
        names: Vec<String>,
        /// Also delete the profile's database and repository (cannot be undone).
        #[arg(long)]
        delete_data: bool,
        /// Keep the data (the default).
        #[arg(long, conflicts_with = "delete_data")]
        keep_data: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SetupCommand {
    /// Set up a new profile using the `core.psql_dos` storage (PostgreSQL + disk-objectstore).
    #[command(name = "core.psql_dos")]
    PsqlDos(Box<SetupArgs>),
}

#[derive(Debug, Args)]
struct SetupArgs {
    /// The name of the new profile.
    #[arg(long)]
    profile_name: String,
    /// Email of the default user.
    #[arg(long)]
    email: String,
    /// First name of the default user.
    #[arg(long, default_value = "")]
    first_name: String,
    /// Last name of the default user.
    #[arg(long, default_value = "")]
    last_name: String,
    /// Institution of the default user.
    #[arg(long, default_value = "")]
    institution: String,
    /// Database server host (or Unix socket folder).
    #[arg(long, default_value = "localhost")]
    database_hostname: String,
    /// Database server port.
    #[arg(long, default_value_t = 5432)]
    database_port: u16,
    /// Database role.
    #[arg(long)]
    database_username: String,
    /// Database password.
    #[arg(long, default_value = "")]
    database_password: String,
    /// Name of the (existing) database.
    #[arg(long)]
    database_name: String,
    /// `file://` URI of the repository folder (default: `<instance>/repository/<profile>`).
    #[arg(long)]
    repository_uri: Option<String>,
    /// Make the new profile the default.
    #[arg(long, overrides_with = "no_set_as_default")]
    set_as_default: bool,
    /// Leave the default profile as it is.
    #[arg(long)]
    no_set_as_default: bool,
    /// Mark the profile as a test profile (test tools may then wipe its data).
    #[arg(long)]
    test_profile: bool,
    /// Accepted for compatibility: this command never prompts.
    #[arg(short = 'n', long)]
    non_interactive: bool,
}

#[derive(Debug, Subcommand)]
enum StorageCommand {
    /// Summarise the contents of the storage.
    Info,
    /// Migrate the storage to the current schema (creating it in an empty database).
    Migrate {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Show a list of all users.
    List,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Display a list of all available plugins.
    List {
        /// An entry-point group (e.g. `aiida.data`).
        group: Option<String>,
        /// An entry point in that group.
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Show generic information on one or more nodes.
    Show {
        /// Node pks.
        #[arg(required = true)]
        pks: Vec<i32>,
    },
    /// Show the attributes of one or more nodes.
    Attributes {
        /// Node pks.
        #[arg(required = true)]
        pks: Vec<i32>,
    },
}

/// Parses `args` (the first is the program name) and runs them like the `verdi` binary would,
/// in this process: commands that plugins linked into this binary registered are available.
pub fn run_args<I, T>(args: I, instance: &Instance, out: &mut dyn Write) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let verdi = Verdi::try_parse_from(args).map_err(|e| CliError::Message(e.to_string().trim_end().to_owned()))?;
    run(verdi, instance, out)
}

/// Runs a parsed `verdi` command against `instance`, writing to `out`.
pub fn run(verdi: Verdi, instance: &Instance, out: &mut dyn Write) -> Result<(), CliError> {
    let profile_name = verdi.profile.as_deref();
    let verdi_profile = verdi.profile.clone();
    let open = || -> Result<Storage, CliError> {
        let profile = instance.load()?.profile_or_default(profile_name)?;
        Ok(Storage::open(&profile)?)
    };
    let w = |out: &mut dyn Write, text: String| {
        let _ = writeln!(out, "{text}");
    };
    match verdi.command {
        Command::Profile(ProfileCommand::Setup(SetupCommand::PsqlDos(args))) => setup(instance, *args, out)?,
        Command::Profile(ProfileCommand::List) => {
            let config = instance.load()?;
            w(out, format!("Report: configuration folder: {}", instance.dir().display()));
            for name in config.profile_names() {
                let star = if Some(name.as_str()) == config.default_profile() { "*" } else { " " };
                w(out, format!("{star} {name}"));
            }
        }
        Command::Profile(ProfileCommand::Show { name }) => {
            let profile = instance.load()?.profile_or_default(name.as_deref().or(profile_name))?;
            w(out, format!("Report: Profile: {}", profile.name()));
            w(out, serde_json::to_string_pretty(&profile.to_json()).expect("JSON"));
        }
        Command::Profile(ProfileCommand::SetDefault { name }) => {
            instance.update(|c| c.set_default(&name))?;
            w(out, format!("Success: {name} set as default profile"));
        }
        Command::Profile(ProfileCommand::Delete { names, delete_data, force, .. }) => {
            if delete_data && !force {
                return Err(CliError::Message(format!(
                    "--delete-data drops the database and repository of {}: add --force to confirm",
                    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                )));
            }
            for name in names {
                let profile = instance.load()?.profile(&name)?;
                if delete_data {
                    delete_data_of(&profile)?;
                }
                instance.update(|c| c.remove_profile(&name).map(drop))?;
                let data = if delete_data { " and its data" } else { " (its data is kept)" };
                w(out, format!("Success: profile `{name}` deleted{data}"));
            }
        }
        Command::Storage(StorageCommand::Info) => {
            let info = open()?.info()?;
            w(out, format!("database:     {}", info.database));
            w(out, format!("schema:       {}", info.schema));
            w(out, format!("repository:   {} (container {})", info.repository.display(), info.container_id));
            w(out, format!("objects:      {} ({} bytes)", info.objects, info.object_bytes));
            for (entity, count) in info.counts {
                w(out, format!("{:<13} {count}", format!("{entity}:")));
            }
        }
        Command::Storage(StorageCommand::Migrate { .. }) => {
            let profile = instance.load()?.profile_or_default(profile_name)?;
            Storage::initialise(&profile)?;
            w(
                out,
                format!(
                    "Success: storage of profile `{}` is at schema {}",
                    profile.name(),
                    crate::storage::SCHEMA_HEAD
                ),
            );
        }
        Command::User(UserCommand::List) => {
            let storage = open()?;
            let default = storage.profile().default_user_email().map(str::to_owned);
            for user in User::list(&storage)? {
                let star = if Some(user.email()) == default.as_deref() { "*" } else { " " };
                let (first, last, institution) = user.names();
                w(out, format!("{star} {:<30} {first} {last} {institution}", user.email()).trim_end().to_owned());
            }
        }
        Command::Plugin(PluginCommand::List { group, name }) => plugin_list(group, name, out)?,
        Command::Node(NodeCommand::Show { pks }) => {
            let storage = open()?;
            for pk in pks {
                let node = Node::load(&storage, pk)?;
                for (key, value) in [
                    ("type", node.node_type().trim_end_matches('.').rsplit('.').next().unwrap_or_default().to_owned()),
                    ("pk", pk.to_string()),
                    ("uuid", node.uuid().to_string()),
                    ("label", node.label().to_owned()),
                    ("description", node.description().to_owned()),
                    ("ctime", node.ctime().to_rfc3339()),
                    ("mtime", node.mtime().to_rfc3339()),
                ] {
                    w(out, format!("{key:<12} {value}").trim_end().to_owned());
                }
                if let Some(value) = node.attribute("value") {
                    w(out, format!("{:<12} {value}", "value"));
                }
            }
        }
        Command::Group(GroupCommand::Create { label }) => {
            let storage = open()?;
            let mut group = Group::new(&label);
            group.store(&storage)?;
            w(out, format!("Success: Group created with PK = {} and label '{label}'.", group.pk().unwrap_or_default()));
        }
        Command::Group(GroupCommand::List) => {
            let storage = open()?;
            w(out, format!("{:<6}{:<30}{:<14}{}", "PK", "Label", "Type string", "Node count"));
            for group in Group::list(&storage)? {
                let count = group.node_pks(&storage)?.len();
                w(
                    out,
                    format!(
                        "{:<6}{:<30}{:<14}{count}",
                        group.pk().unwrap_or_default(),
                        group.label(),
                        group.type_string()
                    ),
                );
            }
        }
        Command::Group(GroupCommand::AddNodes { group, nodes, .. }) => {
            let storage = open()?;
            let group = Group::load_label(&storage, &group)?;
            let loaded = nodes.iter().map(|pk| Node::load(&storage, *pk)).collect::<Result<Vec<_>, _>>()?;
            group.add_nodes(&storage, &loaded.iter().collect::<Vec<_>>())?;
            w(out, format!("Success: added {} node(s) to group `{}`", loaded.len(), group.label()));
        }
        Command::Data { args } => {
            let context = Context { instance: instance.clone(), profile: verdi_profile };
            data(&args, &context, out)?;
        }
        Command::Node(NodeCommand::Attributes { pks }) => {
            let storage = open()?;
            for pk in pks {
                let node = Node::load(&storage, pk)?;
                w(out, format!("PK: {pk}"));
                w(out, serde_json::to_string_pretty(&Value::Object(node.attributes().clone())).expect("JSON"));
            }
        }
    }
    Ok(())
}

/// `verdi data [NAME ARGS...]`: runs a plugin's data command, or lists them.
fn data(args: &[String], context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let Some(name) = args.first() else {
        let _ = writeln!(out, "Report: data commands (entry points of aiida.cmdline.data):");
        for ep in plugins::select("aiida.cmdline.data", None) {
            let about = ep.downcast::<DataCommand>().map(|c| c.about).unwrap_or("");
            let _ = writeln!(out, "  {:<24}{about}", ep.name());
        }
        return Ok(());
    };
    let command = plugins::load_as::<DataCommand>(name, "aiida.cmdline.data")?;
    let cli = (command.command)().bin_name(format!("verdi data {name}"));
    let matches = cli.try_get_matches_from(args).map_err(|e| CliError::Message(e.to_string().trim_end().to_owned()))?;
    (command.run)(&matches, context, out)
}

fn setup(instance: &Instance, args: SetupArgs, out: &mut dyn Write) -> Result<(), CliError> {
    crate::config::validate_profile_name(&args.profile_name)?;
    if instance.load()?.profile(&args.profile_name).is_ok() {
        return Err(ConfigError::ProfileExists(args.profile_name).into());
    }
    let repository_uri = args
        .repository_uri
        .unwrap_or_else(|| format!("file://{}", instance.dir().join("repository").join(&args.profile_name).display()));
    if !repository_uri.starts_with("file:///") {
        return Err(CliError::Message(format!(
            "invalid --repository-uri `{repository_uri}`: give an absolute file:/// URI"
        )));
    }
    let storage = PsqlDosConfig {
        database_engine: "postgresql_psycopg".to_owned(),
        database_hostname: args.database_hostname,
        database_port: args.database_port,
        database_username: args.database_username,
        database_password: args.database_password,
        database_name: args.database_name,
        repository_uri,
    };
    let profile = Profile::new(&args.profile_name, &storage, &args.email).with_test_profile(args.test_profile);
    // The storage first: a profile whose database is unreachable is not written to the config.
    let opened = Storage::initialise(&profile)?;
    User::get_or_create(&opened, &args.email)?.set_names(
        &opened,
        &args.first_name,
        &args.last_name,
        &args.institution,
    )?;
    instance.update(|c| {
        c.add_profile(profile.clone())?;
        if args.set_as_default && !args.no_set_as_default {
            c.set_default(profile.name())?;
        }
        Ok(())
    })?;
    let _ = writeln!(out, "Success: created new profile `{}`.", profile.name());
    Ok(())
}

fn delete_data_of(profile: &Profile) -> Result<(), CliError> {
    let config = profile.psql_dos()?;
    let repository = config.repository_path();
    crate::storage::drop_database(&config)?;
    if repository.exists() {
        std::fs::remove_dir_all(&repository).map_err(|source| StorageError::Io {
            action: "remove",
            path: repository.clone(),
            source,
        })?;
    }
    Ok(())
}

fn plugin_list(group: Option<String>, name: Option<String>, out: &mut dyn Write) -> Result<(), CliError> {
    let w = |out: &mut dyn Write, text: String| {
        let _ = writeln!(out, "{text}");
    };
    match (group, name) {
        (None, _) => {
            w(out, "Report: available entry point groups:".to_owned());
            for group in plugins::GROUPS {
                w(out, format!("* {group}"));
            }
        }
        (Some(group), None) => {
            let found = plugins::select(&group, None);
            if found.is_empty() {
                w(out, format!("Report: no plugins found in group {group}"));
            } else {
                w(out, format!("Report: entry points in {group}:"));
                for ep in found {
                    w(out, format!("* {}", ep.name()));
                }
            }
        }
        (Some(group), Some(name)) => {
            let ep = plugins::get(&group, &name)?;
            w(out, format!("{}  (registered by {})", ep.full(), ep.source()));
        }
    }
    Ok(())
}

/// `verdi`'s `main`: parses the arguments, finds the instance folder, runs, and reports an error
/// as one line on stderr with a non-zero exit code.
pub fn main() -> std::process::ExitCode {
    let verdi = Verdi::parse();
    let instance = Instance::from_env();
    let mut stdout = std::io::stdout().lock();
    match run(verdi, &instance, &mut stdout) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
