//! `verdi node`: show nodes and their attributes.

use std::io::Write;

use clap::Subcommand;
use serde_json::Value;

use aiida::orm::Node;

use crate::{CliError, Context, format_time, write_line};

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
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
    /// Inspect the content of a node's repository folder.
    #[command(subcommand)]
    Repo(RepoCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RepoCommand {
    /// Output the content of a file in the node repository folder (for a SinglefileData node,
    /// its file unless a path is given).
    Cat {
        /// Node pk.
        node: i32,
        /// The file's path in the node's folder, `/`-separated.
        relative_path: Option<String>,
    },
}

/// Runs `verdi node ...`.
pub(crate) fn run(command: NodeCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        NodeCommand::Show { pks } => {
            let storage = context.storage()?;
            for pk in pks {
                let node = Node::load(&storage, pk)?;
                for (key, value) in [
                    ("type", node.node_type().trim_end_matches('.').rsplit('.').next().unwrap_or_default().to_owned()),
                    ("pk", pk.to_string()),
                    ("uuid", node.uuid().to_string()),
                    ("label", node.label().to_owned()),
                    ("description", node.description().to_owned()),
                    ("ctime", format_time(node.ctime())),
                    ("mtime", format_time(node.mtime())),
                ] {
                    write_line(out, format!("{key:<12} {value}").trim_end().to_owned());
                }
                if let Some(value) = node.attribute("value") {
                    write_line(out, format!("{:<12} {value}", "value"));
                }
            }
        }
        NodeCommand::Attributes { pks } => {
            let storage = context.storage()?;
            for pk in pks {
                let node = Node::load(&storage, pk)?;
                write_line(out, format!("PK: {pk}"));
                write_line(out, serde_json::to_string_pretty(&Value::Object(node.attributes().clone())).expect("JSON"));
            }
        }
        NodeCommand::Repo(RepoCommand::Cat { node, relative_path }) => {
            let storage = context.storage()?;
            let node = Node::load(&storage, node)?;
            let singlefile = node.node_type() == aiida::orm::data::SINGLEFILE.node_type;
            let path = match relative_path {
                Some(path) => path,
                None if singlefile => node.attribute("filename").and_then(Value::as_str).unwrap_or_default().to_owned(),
                None => return Err(CliError::Usage("Error: Missing argument 'RELATIVE_PATH'.".to_owned())),
            };
            let _ = out.write_all(&node.file(&storage, &path)?);
        }
    }
    Ok(())
}
