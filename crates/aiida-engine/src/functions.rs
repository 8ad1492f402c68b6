//! Process functions: a plain Rust function whose call is recorded with provenance, as aiida's
//! `calcfunction` (a `CalcFunctionNode` with the inputs linked in and the new outputs created by
//! it). Write one with [`calcfunction!`](crate::calcfunction).

use aiida::orm::Node;
use aiida::storage::Storage;
use serde_json::{Value, json};

use crate::calcjob::PluginFailure;
use crate::exit_code::ExitCode;
use crate::launch::{EngineError, Outputs};

/// What a process function returns: one node (the output `result`), several by label, or an
/// exit code without outputs.
#[derive(Debug)]
pub enum FunctionResult {
    /// One new node: the output `result`.
    Node(Box<Node>),
    /// New nodes by output label.
    Outputs(Outputs),
    /// No outputs, this exit status.
    Exit(ExitCode),
}

impl From<Node> for FunctionResult {
    fn from(node: Node) -> Self {
        FunctionResult::Node(Box::new(node))
    }
}

impl From<Outputs> for FunctionResult {
    fn from(outputs: Outputs) -> Self {
        FunctionResult::Outputs(outputs)
    }
}

impl From<ExitCode> for FunctionResult {
    fn from(exit_code: ExitCode) -> Self {
        FunctionResult::Exit(exit_code)
    }
}

/// Where a process function is defined (its node's `function_*` attributes and `process_type`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct FunctionSource {
    pub name: &'static str,
    pub module: &'static str,
    pub line: u32,
}

/// Runs the calculation function `source` on `inputs` (stored first when they are not), with
/// provenance: its node stored with the inputs linked before `body` runs, its new outputs created
/// by it, and its end recorded (finished with the exit status, or excepted with the failure or
/// panic, and sealed either way). Returns the outputs and the node.
#[doc(hidden)]
pub fn run_calcfunction(
    storage: &Storage,
    source: FunctionSource,
    inputs: Vec<(&'static str, Node)>,
    body: impl FnOnce(&[Node]) -> Result<FunctionResult, PluginFailure>,
) -> Result<(Outputs, Node), EngineError> {
    let mut inputs = inputs;
    for (_, node) in &mut inputs {
        node.store(storage)?;
    }
    let mut process = Node::new("process.calculation.calcfunction.CalcFunctionNode.");
    process.set_process_type(format!("{}.{}", source.module.replace("::", "."), source.name))?;
    process.set_label(source.name)?;
    for (key, value) in [
        ("process_label", json!(source.name)),
        ("process_state", json!("running")),
        ("function_name", json!(source.name)),
        ("function_namespace", json!(source.name)),
        ("function_starting_line_number", json!(source.line)),
        ("version", json!({"core": "2.9.4"})),
    ] {
        process.set_attribute(key, value)?;
    }
    let links: Vec<(&str, &Node)> = inputs.iter().map(|(label, node)| (*label, node)).collect();
    process.store_process(storage, &links)?;
    let nodes: Vec<Node> = inputs.into_iter().map(|(_, node)| node).collect();
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&nodes)));
    let failure = match ran {
        Ok(Ok(result)) => {
            let (outputs, exit_code) = match result {
                FunctionResult::Node(node) => (Outputs::from([("result".to_owned(), *node)]), ExitCode::SUCCESS),
                FunctionResult::Outputs(outputs) => (outputs, ExitCode::SUCCESS),
                FunctionResult::Exit(exit_code) => (Outputs::new(), exit_code),
            };
            match link_outputs(storage, &process, outputs) {
                Ok(outputs) => return finish(storage, process, outputs, &exit_code),
                Err(failure) => failure,
            }
        }
        Ok(Err(failure)) => failure.0,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            format!("panic: {text}")
        }
    };
    let pk = process.pk().unwrap_or_default();
    let mut set = serde_json::Map::new();
    set.insert("exception".into(), json!(failure));
    set.insert("process_state".into(), json!("excepted"));
    set.insert("sealed".into(), json!(true));
    process.update_process(storage, set, &[])?;
    Err(EngineError::Excepted { pk, exception: failure })
}

/// Stores the outputs and links them from the process; a failure is the process's exception.
fn link_outputs(storage: &Storage, process: &Node, outputs: Outputs) -> Result<Outputs, String> {
    let mut linked = Outputs::new();
    for (label, mut node) in outputs {
        process
            .add_output(storage, &mut node, &label)
            .map_err(|e| format!("invalid output `{label}`: {}", aiida::report::Chain(&e)))?;
        linked.insert(label, node);
    }
    Ok(linked)
}

fn finish(
    storage: &Storage,
    mut process: Node,
    outputs: Outputs,
    exit_code: &ExitCode,
) -> Result<(Outputs, Node), EngineError> {
    let mut set = serde_json::Map::new();
    set.insert("exit_status".into(), json!(exit_code.status));
    if exit_code.status != 0 && !exit_code.message.is_empty() {
        set.insert("exit_message".into(), Value::String(exit_code.message.to_string()));
    }
    set.insert("process_state".into(), json!("finished"));
    set.insert("sealed".into(), json!(true));
    process.update_process(storage, set, &[])?;
    Ok((outputs, process))
}

/// Defines calculation functions (aiida's `@calcfunction`): each `fn name(a, b, ...) { body }`
/// becomes `fn name(storage, a: Node, b: Node, ...) -> Result<(Outputs, Node), EngineError>`, whose
/// call is recorded with provenance. The body sees its inputs as `&Node`s and returns a
/// `Result<impl Into<FunctionResult>, PluginFailure>`: a new node (the output `result`), new
/// nodes by label, or an exit code.
///
/// ```no_run
/// use aiida::orm::{Node, data};
/// use aiida_engine::calcjob::PluginFailure;
///
/// aiida_engine::calcfunction! {
///     /// Adds two Ints.
///     pub fn add(x, y) {
///         let value = |n: &Node| n.attribute("value").and_then(|v| v.as_i64()).ok_or(PluginFailure::new("not an Int"));
///         Ok(data::int(value(x)? + value(y)?))
///     }
/// }
///
/// # fn demo(storage: &aiida::storage::Storage) -> Result<(), aiida_engine::EngineError> {
/// let (outputs, node) = add(storage, data::int(1), data::int(2))?;
/// assert_eq!(outputs["result"].attribute("value"), Some(&3.into()));
/// # Ok(()) }
/// ```
#[macro_export]
macro_rules! calcfunction {
    ($($(#[$meta:meta])* $vis:vis fn $name:ident($($input:ident),* $(,)?) $body:block)*) => {$(
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(
            storage: &$crate::__private::Storage,
            $($input: $crate::__private::Node),*
        ) -> ::std::result::Result<($crate::Outputs, $crate::__private::Node), $crate::EngineError> {
            let source = $crate::functions::FunctionSource { name: stringify!($name), module: module_path!(), line: line!() };
            $crate::functions::run_calcfunction(storage, source, vec![$((stringify!($input), $input)),*], |inputs| {
                #[allow(unused_variables, unused_mut)]
                let mut inputs = inputs.iter();
                $(let $input: &$crate::__private::Node = inputs.next().expect("one node per input");)*
                let result: ::std::result::Result<_, $crate::calcjob::PluginFailure> = (|| $body)();
                result.map(::std::convert::Into::into)
            })
        }
    )*};
}
