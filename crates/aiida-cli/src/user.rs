//! `verdi user`: the profile's users.

use std::io::Write;

use clap::Subcommand;

use aiida::orm::User;

use crate::{CliError, Context, write_line};

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Show a list of all users.
    List,
}

/// Runs `verdi user ...`.
pub(crate) fn run(command: UserCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        UserCommand::List => {
            let storage = context.storage()?;
            let default = storage.profile().default_user_email().map(str::to_owned);
            for user in User::list(&storage)? {
                let star = if Some(user.email()) == default.as_deref() { "*" } else { " " };
                let (first, last, institution) = user.names();
                write_line(
                    out,
                    format!("{star} {:<30} {first} {last} {institution}", user.email()).trim_end().to_owned(),
                );
            }
        }
    }
    Ok(())
}
