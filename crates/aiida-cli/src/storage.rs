//! `verdi storage`: what the storage holds, and migrating it.

use std::io::Write;

use clap::Subcommand;

use aiida::storage::Storage;

use crate::{CliError, Context, write_line};

#[derive(Debug, Subcommand)]
pub(crate) enum StorageCommand {
    /// Summarise the contents of the storage.
    Info,
    /// Migrate the storage to the current schema (creating it in an empty database).
    Migrate {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs `verdi storage ...`.
pub(crate) fn run(command: StorageCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        StorageCommand::Info => {
            let info = context.storage()?.info()?;
            write_line(out, format!("database:     {}", info.database));
            write_line(out, format!("schema:       {}", info.schema));
            write_line(out, format!("repository:   {} (container {})", info.repository.display(), info.container_id));
            write_line(out, format!("objects:      {} ({} bytes)", info.objects, info.object_bytes));
            for (entity, count) in info.counts {
                write_line(out, format!("{:<13} {count}", format!("{entity}:")));
            }
        }
        StorageCommand::Migrate { .. } => {
            let profile = context.instance().load()?.profile_or_default(context.profile_name())?;
            Storage::initialise(&profile)?;
            write_line(
                out,
                format!(
                    "Success: storage of profile `{}` is at schema {}",
                    profile.name(),
                    aiida::storage::SCHEMA_HEAD
                ),
            );
        }
    }
    Ok(())
}
