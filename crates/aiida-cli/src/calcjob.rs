//! `verdi calcjob`: the input files, retrieved files, remote files and results of a calculation job.

use std::io::Write;
use std::path::Path;

use clap::{Subcommand, ValueEnum};
use serde_json::{Map, Value};

use aiida::orm::{Computer, Node, OrmError, User};
use aiida::storage::Storage;

use crate::computer::Connection;
use crate::process::output;
use crate::table::python_json;
use crate::{CliError, Context, load};

/// The output `verdi calcjob res` shows: the `Dict` most calculation jobs give as their results.
const RESULTS_OUTPUT: &str = "output_parameters";

#[derive(Debug, Subcommand)]
pub(crate) enum CalcjobCommand {
    /// Print data from the result output Dict node of a calcjob.
    Res {
        /// The calculation job: pk, UUID or label.
        calcjob: String,
        /// The format of the output data.
        #[arg(short = 'f', long = "format", value_enum, default_value = "json+date")]
        fmt: DictFormat,
        /// Filter the output by one or more keys.
        #[arg(short = 'k', long, num_args = 1..)]
        keys: Vec<String>,
    },
    /// Show the contents of one of the calcjob input files (by default the `input_filename` option).
    Inputcat {
        /// The calculation job: pk, UUID or label.
        calcjob: String,
        /// The file's relative path in the job's input folder.
        path: Option<String>,
    },
    /// Show the contents of one of the calcjob retrieved outputs (by default the `output_filename`
    /// option).
    Outputcat {
        /// The calculation job: pk, UUID or label.
        calcjob: String,
        /// The file's relative path in the retrieved folder.
        path: Option<String>,
    },
    /// Show the contents of a file in the remote working directory (by default the
    /// `output_filename` option).
    Remotecat {
        /// The calculation job: pk, UUID or label.
        calcjob: String,
        /// The file's path relative to the remote working directory.
        path: Option<String>,
    },
}

/// The formats of `verdi calcjob res`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DictFormat {
    /// `json.dumps(indent=4, sort_keys=True)`.
    #[value(name = "json+date")]
    JsonDate,
}

/// Runs `verdi calcjob ...`.
pub(crate) fn run(command: CalcjobCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let storage = context.storage()?;
    let calcjob = |text: &str| load::node(&storage, load::calcjobs(), text, "CalcJobNode", "CALCJOB");
    match command {
        CalcjobCommand::Res { calcjob: text, fmt: DictFormat::JsonDate, keys } => {
            let calcjob = calcjob(&text)?;
            let Some(results) = output(&storage, &calcjob, RESULTS_OUTPUT)? else {
                return Err(CliError::Critical(format!(
                    "cannot load results as the default node could not be retrieved: CalcJobNode<{}> has no output \
                     `{RESULTS_OUTPUT}`",
                    calcjob.pk().unwrap_or_default()
                )));
            };
            let mut shown: Map<String, Value> = results.attributes().clone();
            if !keys.is_empty() {
                shown = Map::new();
                for key in keys {
                    let value = results.attribute(&key).ok_or_else(|| {
                        CliError::Critical(format!("key '{key}' was not found in the results dictionary"))
                    })?;
                    shown.insert(key, value.clone());
                }
            }
            crate::write_line(out, python_json(&Value::Object(shown)));
        }
        CalcjobCommand::Inputcat { calcjob: text, path } => {
            let calcjob = calcjob(&text)?;
            let path = default_path(&calcjob, path, "input")?;
            cat(&storage, &calcjob, &path, out)?;
        }
        CalcjobCommand::Outputcat { calcjob: text, path } => {
            let calcjob = calcjob(&text)?;
            let Some(retrieved) = output(&storage, &calcjob, "retrieved")? else {
                return Err(CliError::Critical(
                    "No 'retrieved' node found. Have the calcjob files already been retrieved?".to_owned(),
                ));
            };
            let path = default_path(&calcjob, path, "output")?;
            cat(&storage, &retrieved, &path, out)?;
        }
        CalcjobCommand::Remotecat { calcjob: text, path } => {
            let calcjob = calcjob(&text)?;
            remotecat(&storage, &calcjob, path, out)?;
        }
    }
    Ok(())
}

/// `path`, or the job's option `<kind>_filename`.
fn default_path(calcjob: &Node, path: Option<String>, kind: &str) -> Result<String, CliError> {
    if let Some(path) = path {
        return Ok(path);
    }
    match calcjob.attribute(&format!("{kind}_filename")).and_then(Value::as_str) {
        Some(path) => Ok(path.to_owned()),
        None => Err(CliError::Critical(format!(
            "\"CalcJobNode\" and its process class \"{}\" do not define a default {kind} file (option \
             \"{kind}_filename\" not found).\nPlease specify a path explicitly.",
            calcjob.attribute("process_label").and_then(Value::as_str).unwrap_or("None")
        ))),
    }
}

/// Writes file `path` of `node`'s repository to `out`.
fn cat(storage: &Storage, node: &Node, path: &str, out: &mut dyn Write) -> Result<(), CliError> {
    match node.file(storage, path) {
        Ok(content) => {
            let _ = out.write_all(&content);
            Ok(())
        }
        Err(OrmError::NotFound { .. }) => Err(CliError::Critical(format!(
            "Could not open output path \"{path}\". Exception: object with path `{path}` does not exist."
        ))),
        Err(e) => Err(e.into()),
    }
}

fn remotecat(storage: &Storage, calcjob: &Node, path: Option<String>, out: &mut dyn Write) -> Result<(), CliError> {
    let pk = calcjob.pk().unwrap_or_default();
    let Some(remote) = output(storage, calcjob, "remote_folder")? else {
        return Err(CliError::Critical(format!(
            "`CalcJobNode<{pk}>` has no `remote_folder` output. It probably has not started running yet."
        )));
    };
    let path = match path {
        Some(path) => path,
        None => calcjob.attribute("output_filename").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
            CliError::Critical(format!(
                "`CalcJobNode<{pk}>` does not define a default output file (option \"output_filename\" not found)\n\
                 Please specify a path explicitly."
            ))
        })?,
    };
    let folder = remote.attribute("remote_path").and_then(Value::as_str).unwrap_or_default();
    let computer_pk = remote.computer_pk().or(calcjob.computer_pk()).ok_or_else(|| {
        CliError::Critical(format!("the `remote_folder` of CalcJobNode<{pk}> belongs to no computer"))
    })?;
    let computer = Computer::load(storage, computer_pk)?;
    let connection = Connection::open(storage, &computer, &User::default_user(storage)?)?;
    let content = connection.read(&Path::new(folder).join(&path)).map_err(CliError::Critical)?;
    let _ = out.write_all(&content);
    Ok(())
}
