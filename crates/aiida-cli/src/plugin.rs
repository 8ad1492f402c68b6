//! `verdi plugin`: the entry points linked into this `verdi`.

use std::io::Write;

use clap::Subcommand;

use aiida::plugins;

use crate::{CliError, write_line};

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Display a list of all available plugins.
    List {
        /// An entry-point group (e.g. `aiida.data`).
        group: Option<String>,
        /// An entry point in that group.
        name: Option<String>,
    },
}

/// Runs `verdi plugin ...`.
pub(crate) fn run(command: PluginCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        PluginCommand::List { group, name } => plugin_list(group, name, out)?,
    }
    Ok(())
}

fn plugin_list(group: Option<String>, name: Option<String>, out: &mut dyn Write) -> Result<(), CliError> {
    match (group, name) {
        (None, _) => {
            write_line(out, "Report: available entry point groups:".to_owned());
            for group in plugins::GROUPS {
                write_line(out, format!("* {group}"));
            }
        }
        (Some(group), None) => {
            let found = plugins::select(&group, None);
            if found.is_empty() {
                write_line(out, format!("Report: no plugins found in group {group}"));
            } else {
                write_line(out, format!("Report: entry points in {group}:"));
                for ep in found {
                    write_line(out, format!("* {}", ep.name()));
                }
            }
        }
        (Some(group), Some(name)) => {
            let ep = plugins::get(&group, &name)?;
            write_line(out, format!("{}  (registered by {})", ep.full(), ep.source()));
        }
    }
    Ok(())
}
