//! Entities named on the command line as aiida names them: a pk, a UUID (or its beginning) or a
//! label; a code also as `label@computer`.

use aiida::orm::query::{Op, QueryBuilder};
use aiida::orm::{Computer, Node};
use aiida::storage::Storage;

use crate::CliError;

/// What aiida reads an identifier as (`infer_identifier_type`).
enum Identifier<'a> {
    Pk(i32),
    /// Hexadecimal digits and dashes: the beginning of a UUID (or, failing that, a label).
    Uuid(&'a str),
    Label(&'a str),
}

fn identify(text: &str) -> Identifier<'_> {
    if let Ok(pk) = text.parse::<i32>() {
        Identifier::Pk(pk)
    } else if !text.is_empty() && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        Identifier::Uuid(text)
    } else {
        Identifier::Label(text)
    }
}

/// The error click gives for a bad argument value (exit code 2), with aiida's text.
pub(crate) fn invalid_argument(argument: &str, message: &str) -> CliError {
    CliError::Usage(format!("Error: Invalid value for '{argument}': {message}"))
}

fn like_prefix(text: &str) -> String {
    format!("{}%", text.to_lowercase())
}

/// The one node among `found`, or aiida's error for none or several.
fn one(found: Vec<Node>, class: &str, id: &str, argument: &str) -> Result<Node, CliError> {
    let mut found = found.into_iter();
    match (found.next(), found.next()) {
        (Some(node), None) => Ok(node),
        (None, _) => Err(invalid_argument(argument, &format!("no {class} found with {id}: No result was found"))),
        (Some(_), Some(_)) => Err(invalid_argument(argument, &format!("multiple {class} entries found with {id}"))),
    }
}

/// The node `text` names among those of `query` (e.g. process nodes), as aiida's node arguments
/// resolve it; `class` names the kind in messages (`ProcessNode`, `CalcJobNode`).
pub(crate) fn node(
    storage: &Storage,
    query: QueryBuilder,
    text: &str,
    class: &str,
    argument: &str,
) -> Result<Node, CliError> {
    match identify(text) {
        Identifier::Pk(pk) => one(query.column("pk", Op::Eq, pk).all(storage)?, class, &format!("ID<{pk}>"), argument),
        Identifier::Uuid(prefix) => {
            let found = query.clone().column("uuid", Op::Like, like_prefix(prefix)).all(storage)?;
            if found.is_empty() {
                let by_label = query.column("label", Op::Eq, text).all(storage)?;
                if !by_label.is_empty() {
                    return one(by_label, class, &format!("LABEL<{text}>"), argument);
                }
            }
            one(found, class, &format!("UUID<{prefix}>"), argument)
        }
        Identifier::Label(label) => {
            one(query.column("label", Op::Eq, label).all(storage)?, class, &format!("LABEL<{label}>"), argument)
        }
    }
}

/// Process nodes.
pub(crate) fn processes() -> QueryBuilder {
    QueryBuilder::nodes().node_type("process.", true)
}

/// Calculation-job nodes.
pub(crate) fn calcjobs() -> QueryBuilder {
    QueryBuilder::nodes().node_type("process.calculation.calcjob.", true)
}

/// Code nodes.
pub(crate) fn codes() -> QueryBuilder {
    QueryBuilder::nodes().node_type("data.core.code.", true)
}

/// The computer `text` names (pk, UUID or label).
pub(crate) fn computer(storage: &Storage, text: &str, argument: &str) -> Result<Computer, CliError> {
    let computers = Computer::list(storage)?;
    let (found, id): (Vec<&Computer>, String) = match identify(text) {
        Identifier::Pk(pk) => (computers.iter().filter(|c| c.pk() == Some(pk)).collect(), format!("ID<{pk}>")),
        Identifier::Uuid(prefix) => {
            let by_uuid: Vec<&Computer> =
                computers.iter().filter(|c| c.uuid().to_string().starts_with(&prefix.to_lowercase())).collect();
            if by_uuid.is_empty() && computers.iter().any(|c| c.label() == text) {
                (computers.iter().filter(|c| c.label() == text).collect(), format!("LABEL<{text}>"))
            } else {
                (by_uuid, format!("UUID<{prefix}>"))
            }
        }
        Identifier::Label(label) => {
            (computers.iter().filter(|c| c.label() == label).collect(), format!("LABEL<{label}>"))
        }
    };
    match found.as_slice() {
        [computer] => Ok((*computer).clone()),
        [] => Err(invalid_argument(argument, &format!("no Computer found with {id}: No result was found"))),
        _ => Err(invalid_argument(argument, &format!("multiple Computer entries found with {id}"))),
    }
}

/// The code `text` names: a pk, a UUID, a label, or `label@computer`.
pub(crate) fn code(storage: &Storage, text: &str, argument: &str) -> Result<Node, CliError> {
    if let Identifier::Label(full) = identify(text)
        && let Some((label, computer)) = full.rsplit_once('@')
    {
        let id = format!("LABEL<{full}>");
        let Ok(computer) = self::computer(storage, computer, argument) else {
            return Err(invalid_argument(argument, &format!("no Code found with {id}: No result was found")));
        };
        let query =
            codes().column("label", Op::Eq, label).column("dbcomputer_id", Op::Eq, computer.pk().unwrap_or_default());
        return one(query.all(storage)?, "Code", &id, argument);
    }
    node(storage, codes(), text, "Code", argument)
}

/// The class name of a node type: `data.core.int.Int.` is an `Int`.
pub(crate) fn class_name(node_type: &str) -> &str {
    node_type.trim_end_matches('.').rsplit('.').next().unwrap_or_default()
}
