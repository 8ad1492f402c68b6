//! `verdi data`: commands that plugins provide as entry points of `aiida.cmdline.data`, and the
//! built-in `core.dict`.

use std::io::Write;

use serde_json::Value;

use aiida::orm::Node;
use aiida::plugins;

use crate::{CliError, Context, DataCommand, DataCommands};

/// `verdi data [NAME ARGS...]`: runs a plugin's data command, or lists them.
pub(crate) fn run(args: &[String], context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let Some(name) = args.first() else {
        let _ = writeln!(out, "Report: data commands (entry points of aiida.cmdline.data):");
        for ep in plugins::select("aiida.cmdline.data", None) {
            let about = plugins::typed::<DataCommands>(&ep).map(|c| c.about).unwrap_or("");
            let _ = writeln!(out, "  {:<24}{about}", ep.name());
        }
        return Ok(());
    };
    let command = plugins::factory::<DataCommands>(name)?;
    let cli = (command.command)().bin_name(format!("verdi data {name}"));
    let matches = cli.try_get_matches_from(args).map_err(|e| CliError::Usage(e.to_string().trim_end().to_owned()))?;
    (command.run)(&matches, context, out)
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
            if node.node_type() != aiida::orm::data::DICT.node_type {
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

aiida::entry_point!(
    DataCommands: "core.dict",
    DataCommand { about: "Show the contents of Dict nodes", command: dict_command, run: dict_run }
);
