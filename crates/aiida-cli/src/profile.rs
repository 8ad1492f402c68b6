//! `verdi profile`: set up, list, show, choose and delete profiles.

use std::io::Write;

use clap::{Args, Subcommand};

use aiida::config::{ConfigError, Instance, Profile, PsqlDosConfig};
use aiida::orm::User;
use aiida::storage::{Storage, StorageError};

use crate::{CliError, Context, write_line};

#[derive(Debug, Subcommand)]
pub(crate) enum ProfileCommand {
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
pub(crate) enum SetupCommand {
    /// Set up a new profile using the `core.psql_dos` storage (PostgreSQL + disk-objectstore).
    #[command(name = "core.psql_dos")]
    PsqlDos(Box<SetupArgs>),
}

#[derive(Debug, Args)]
pub(crate) struct SetupArgs {
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

/// Runs `verdi profile ...`.
pub(crate) fn run(command: ProfileCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        ProfileCommand::Setup(SetupCommand::PsqlDos(args)) => setup(context.instance(), *args, out)?,
        ProfileCommand::List => {
            let config = context.instance().load()?;
            write_line(out, format!("Report: configuration folder: {}", context.instance().dir().display()));
            for name in config.profile_names() {
                let star = if Some(name.as_str()) == config.default_profile() { "*" } else { " " };
                write_line(out, format!("{star} {name}"));
            }
        }
        ProfileCommand::Show { name } => {
            let profile = context.instance().load()?.profile_or_default(name.as_deref().or(context.profile_name()))?;
            write_line(out, format!("Report: Profile: {}", profile.name()));
            write_line(out, serde_json::to_string_pretty(&profile.to_json()).expect("JSON"));
        }
        ProfileCommand::SetDefault { name } => {
            context.instance().update(|c| c.set_default(&name))?;
            write_line(out, format!("Success: {name} set as default profile"));
        }
        ProfileCommand::Delete { names, delete_data, force, .. } => {
            if delete_data && !force {
                return Err(CliError::Message(format!(
                    "--delete-data drops the database and repository of {}: add --force to confirm",
                    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                )));
            }
            for name in names {
                let profile = context.instance().load()?.profile(&name)?;
                if delete_data {
                    delete_data_of(&profile)?;
                }
                context.instance().update(|c| c.remove_profile(&name).map(drop))?;
                let data = if delete_data { " and its data" } else { " (its data is kept)" };
                write_line(out, format!("Success: profile `{name}` deleted{data}"));
            }
        }
    }
    Ok(())
}

fn setup(instance: &Instance, args: SetupArgs, out: &mut dyn Write) -> Result<(), CliError> {
    aiida::config::validate_profile_name(&args.profile_name)?;
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
    aiida::storage::drop_database(&config)?;
    if repository.exists() {
        std::fs::remove_dir_all(&repository).map_err(|source| StorageError::Io {
            action: "remove",
            path: repository.clone(),
            source,
        })?;
    }
    Ok(())
}
