//! `verdi group`: create, list and fill groups of nodes.

use std::io::Write;

use clap::Subcommand;

use aiida::orm::{Group, Node};

use crate::{CliError, Context, write_line};

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
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

/// Runs `verdi group ...`.
pub(crate) fn run(command: GroupCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        GroupCommand::Create { label } => {
            let storage = context.storage()?;
            let mut group = Group::new(&label);
            group.store(&storage)?;
            write_line(
                out,
                format!("Success: Group created with PK = {} and label '{label}'.", group.pk().unwrap_or_default()),
            );
        }
        GroupCommand::List => {
            let storage = context.storage()?;
            write_line(out, format!("{:<6}{:<30}{:<14}{}", "PK", "Label", "Type string", "Node count"));
            for group in Group::list(&storage)? {
                let count = group.node_pks(&storage)?.len();
                write_line(
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
        GroupCommand::AddNodes { group, nodes, .. } => {
            let storage = context.storage()?;
            let group = Group::load_label(&storage, &group)?;
            let loaded = nodes.iter().map(|pk| Node::load(&storage, *pk)).collect::<Result<Vec<_>, _>>()?;
            group.add_nodes(&storage, &loaded.iter().collect::<Vec<_>>())?;
            write_line(out, format!("Success: added {} node(s) to group `{}`", loaded.len(), group.label()));
        }
    }
    Ok(())
}
