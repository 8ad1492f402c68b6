//! An example AiiDA plugin: the `Sequence` data type (entry point `aiida.data:example.sequence`)
//! and the command `verdi data example.sequence stats PK`.
//!
//! Its tests (`tests/plugin.rs`) show how a plugin uses `aiida-fixtures`.

use std::io::Write;

use aiida::orm::data::{DataType, DataTypes};
use aiida::orm::{Node, OrmError};
use aiida_cli::{CliError, Context, DataCommand, DataCommands};
use serde_json::Value;

/// The data type: a list of numbers, with its length.
pub const SEQUENCE: DataType = DataType { node_type: "data.example.sequence.Sequence.", class: "Sequence" };

aiida::entry_point!(DataTypes: "example.sequence", SEQUENCE);
aiida::entry_point!(
    DataCommands: "example.sequence",
    DataCommand { about: "Statistics of Sequence nodes", command: stats_command, run: stats_run }
);

/// A new, unstored `Sequence` node.
pub fn sequence(values: &[f64]) -> Node {
    let mut node = SEQUENCE.node();
    node.set_attribute("values", values.to_vec()).expect("a new node is mutable");
    node.set_attribute("length", values.len()).expect("a new node is mutable");
    node
}

/// The values of a `Sequence` node.
pub fn values(node: &Node) -> Result<Vec<f64>, OrmError> {
    if node.node_type() != SEQUENCE.node_type {
        return Err(OrmError::NotFound {
            entity: "Sequence",
            id: format!("node {:?} is a `{}`", node.pk(), node.node_type()),
        });
    }
    Ok(node.attribute("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_f64).collect())
}

/// Sum and mean, or `None` for an empty sequence.
pub fn stats(values: &[f64]) -> Option<(f64, f64)> {
    let sum: f64 = values.iter().sum();
    (!values.is_empty()).then(|| (sum, sum / values.len() as f64))
}

fn stats_command() -> clap::Command {
    clap::Command::new("example.sequence").subcommand_required(true).subcommand(
        clap::Command::new("stats")
            .about("Print the sum and mean of a Sequence")
            .arg(clap::Arg::new("pk").required(true).value_parser(clap::value_parser!(i32))),
    )
}

fn stats_run(matches: &clap::ArgMatches, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let Some(("stats", args)) = matches.subcommand() else { return Ok(()) };
    let storage = context.storage()?;
    let node = Node::load(&storage, *args.get_one::<i32>("pk").expect("required"))?;
    match stats(&values(&node)?) {
        Some((sum, mean)) => writeln!(out, "sum {sum} mean {mean}"),
        None => writeln!(out, "empty sequence"),
    }
    .map_err(|e| CliError::Message(e.to_string()))
}
