//! What a calculation-job plugin writes: a [`CalcJob`] (its [`CalcJobSpec`], and
//! `prepare_for_submission`, which writes the input files and returns a [`CalcInfo`]) and a
//! [`Parser`] that turns the retrieved files into outputs and an exit code. The concepts are
//! aiida's; the engine does the rest (storing, uploading, submitting, polling, retrieving).

use std::collections::BTreeMap;
use std::path::Path;

use aiida::orm::{Computer, Node};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::exit_code::ExitCode;

/// A calculation-job plugin (an entry point of `aiida.calculations`).
pub trait CalcJob: Send + Sync {
    /// The class name aiida records as `process_label`, e.g. `ArithmeticAddCalculation`.
    fn process_label(&self) -> &'static str;

    /// Its inputs, outputs, exit codes and option defaults.
    fn spec(&self) -> CalcJobSpec;

    /// Writes the job's input files into `folder` (a fresh sandbox) and says how to run it.
    fn prepare_for_submission(&self, inputs: &CalcJobInputs, folder: &Path) -> Result<CalcInfo, PluginFailure>;
}

/// A parser plugin (an entry point of `aiida.parsers`).
pub trait Parser: Send + Sync {
    /// Reads the retrieved files, adds outputs with [`ParseContext::out`], and returns the exit
    /// code (`None`: success).
    fn parse(&self, context: &mut ParseContext) -> Result<Option<ExitCode>, PluginFailure>;
}

/// A plugin's own failure, with its message: the process ends excepted with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PluginFailure(pub String);

impl PluginFailure {
    /// A failure with `message`.
    pub fn new(message: impl Into<String>) -> PluginFailure {
        PluginFailure(message.into())
    }
}

/// An input or output port: a name and the node types it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The name (the link label).
    pub name: &'static str,
    /// The node types accepted, e.g. `data.core.int.Int.`; empty: any data node.
    pub valid_types: Vec<&'static str>,
    /// Whether a value must be given.
    pub required: bool,
    /// What it is for.
    pub help: &'static str,
}

impl Port {
    /// A required port accepting `valid_types`.
    pub fn required(name: &'static str, valid_types: &[&'static str], help: &'static str) -> Port {
        Port { name, valid_types: valid_types.to_vec(), required: true, help }
    }

    /// An optional port accepting `valid_types`.
    pub fn optional(name: &'static str, valid_types: &[&'static str], help: &'static str) -> Port {
        Port { name, valid_types: valid_types.to_vec(), required: false, help }
    }

    /// Whether `node` has a type the port accepts.
    pub fn accepts(&self, node: &Node) -> bool {
        self.valid_types.is_empty() || self.valid_types.iter().any(|t| node.node_type() == *t)
    }
}

/// The JSON type of an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    /// A string.
    Str,
    /// A whole number.
    Int,
    /// `true` or `false`.
    Bool,
    /// A JSON object.
    Dict,
    /// A JSON array.
    List,
}

impl OptionType {
    fn accepts(self, value: &Value) -> bool {
        match self {
            OptionType::Str => value.is_string(),
            OptionType::Int => value.is_i64() || value.is_u64(),
            OptionType::Bool => value.is_boolean(),
            OptionType::Dict => value.is_object(),
            OptionType::List => value.is_array(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            OptionType::Str => "a string",
            OptionType::Int => "a whole number",
            OptionType::Bool => "true or false",
            OptionType::Dict => "an object",
            OptionType::List => "a list",
        }
    }
}

/// aiida's `metadata.options` of every calculation job, with their types.
pub const OPTIONS: &[(&str, OptionType)] = &[
    ("resources", OptionType::Dict),
    ("input_filename", OptionType::Str),
    ("output_filename", OptionType::Str),
    ("submit_script_filename", OptionType::Str),
    ("scheduler_stdout", OptionType::Str),
    ("scheduler_stderr", OptionType::Str),
    ("max_wallclock_seconds", OptionType::Int),
    ("custom_scheduler_commands", OptionType::Str),
    ("queue_name", OptionType::Str),
    ("account", OptionType::Str),
    ("qos", OptionType::Str),
    ("priority", OptionType::Str),
    ("rerunnable", OptionType::Bool),
    ("withmpi", OptionType::Bool),
    ("mpirun_extra_params", OptionType::List),
    ("import_sys_environment", OptionType::Bool),
    ("environment_variables", OptionType::Dict),
    ("environment_variables_double_quotes", OptionType::Bool),
    ("max_memory_kb", OptionType::Int),
    ("prepend_text", OptionType::Str),
    ("append_text", OptionType::Str),
    ("parser_name", OptionType::Str),
    ("additional_retrieve_list", OptionType::List),
];

/// The defaults aiida gives the options of every calculation job.
pub fn default_options() -> Map<String, Value> {
    let mut options = Map::new();
    for (key, value) in [
        ("submit_script_filename", Value::from("_aiidasubmit.sh")),
        ("scheduler_stdout", Value::from("_scheduler-stdout.txt")),
        ("scheduler_stderr", Value::from("_scheduler-stderr.txt")),
        ("custom_scheduler_commands", Value::from("")),
        ("mpirun_extra_params", Value::Array(Vec::new())),
        ("import_sys_environment", Value::Bool(true)),
        ("environment_variables", Value::Object(Map::new())),
        ("environment_variables_double_quotes", Value::Bool(false)),
        ("prepend_text", Value::from("")),
        ("append_text", Value::from("")),
    ] {
        options.insert(key.to_owned(), value);
    }
    options
}

/// What a calculation job takes and gives: input and output ports, exit codes, option defaults
/// and options of its own. The `code` input, aiida's options and exit codes are added by the
/// engine.
#[derive(Debug, Clone, Default)]
pub struct CalcJobSpec {
    /// The inputs (besides `code`).
    pub inputs: Vec<Port>,
    /// The outputs (besides `remote_folder` and `retrieved`).
    pub outputs: Vec<Port>,
    /// The plugin's exit codes.
    pub exit_codes: Vec<ExitCode>,
    /// Defaults of `metadata.options` that the plugin sets (e.g. `parser_name`, `resources`).
    pub option_defaults: Map<String, Value>,
    /// Options of the plugin's own (e.g. `sleep`), with their types.
    pub extra_options: Vec<(&'static str, OptionType)>,
}

impl CalcJobSpec {
    /// The type of option `name`, if the job takes it.
    pub fn option_type(&self, name: &str) -> Option<OptionType> {
        OPTIONS.iter().chain(self.extra_options.iter()).find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    /// Checks the options; an error message names the first bad one.
    pub(crate) fn check_options(&self, options: &Map<String, Value>) -> Result<(), String> {
        for (name, value) in options {
            match self.option_type(name) {
                None => return Err(format!("`metadata.options.{name}` is not an option of this calculation job")),
                Some(t) if !value.is_null() && !t.accepts(value) => {
                    return Err(format!("`metadata.options.{name}` must be {}, not {value}", t.name()));
                }
                Some(_) => {}
            }
        }
        if !options.get("resources").is_some_and(Value::is_object) {
            return Err("`metadata.options.resources` is required (e.g. {\"num_machines\": 1})".to_owned());
        }
        Ok(())
    }

    /// The exit code with `status` among the job's own, the calculation job's and the process's.
    pub fn exit_code(&self, status: i32) -> Option<ExitCode> {
        self.exit_codes
            .iter()
            .chain(crate::exit_code::CALCJOB_EXIT_CODES.iter())
            .chain(crate::exit_code::PROCESS_EXIT_CODES.iter())
            .find(|c| c.status == status)
            .cloned()
    }
}

/// What `prepare_for_submission` gets: the input nodes, the options, the code and the computer.
#[derive(Debug, Clone)]
pub struct CalcJobInputs {
    pub(crate) nodes: BTreeMap<String, Node>,
    pub(crate) options: Map<String, Value>,
    pub(crate) computer: Computer,
}

impl CalcJobInputs {
    /// Input `name`.
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Option `name` (`metadata.options.<name>`), with defaults applied.
    pub fn option(&self, name: &str) -> Option<&Value> {
        self.options.get(name).filter(|v| !v.is_null())
    }

    /// Option `name` as a string.
    pub fn option_str(&self, name: &str) -> Option<&str> {
        self.option(name).and_then(Value::as_str)
    }

    /// The code (input `code`).
    pub fn code(&self) -> &Node {
        &self.nodes["code"]
    }

    /// The computer the job runs on.
    pub fn computer(&self) -> &Computer {
        &self.computer
    }
}

/// How to run one code of a job (aiida's `CodeInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CodeInfo {
    /// The parameters after the executable.
    pub cmdline_params: Vec<String>,
    /// The file fed to stdin.
    pub stdin_name: Option<String>,
    /// The file stdout goes to.
    pub stdout_name: Option<String>,
    /// The file stderr goes to.
    pub stderr_name: Option<String>,
    /// stderr joined to stdout.
    pub join_files: bool,
    /// Whether it runs with MPI (`None`: as the code and options say).
    pub withmpi: Option<bool>,
    /// The code's UUID.
    pub code_uuid: String,
}

/// What `prepare_for_submission` says about the job (aiida's `CalcInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CalcInfo {
    /// The calculation's UUID (set by the engine).
    pub uuid: String,
    /// The codes to run.
    pub codes_info: Vec<CodeInfo>,
    /// Files to retrieve into the `retrieved` output, relative to the working folder (globs
    /// allowed; stored under their base name).
    pub retrieve_list: Vec<String>,
    /// Files to retrieve for the parser only, not stored.
    pub retrieve_temporary_list: Vec<String>,
    /// Files from nodes' repositories to copy into the working folder: (node UUID, path in the
    /// node's repository, target path).
    pub local_copy_list: Vec<(String, String, String)>,
    /// Files on the computer to copy in: (computer UUID, absolute source, target path).
    pub remote_copy_list: Vec<(String, String, String)>,
    /// Files on the computer to link in: (computer UUID, absolute source, link path).
    pub remote_symlink_list: Vec<(String, String, String)>,
    /// Sandbox paths not kept in the node's repository.
    pub provenance_exclude_list: Vec<String>,
    /// Upload only, do not submit.
    pub skip_submit: bool,
    /// Shell text before the codes run.
    pub prepend_text: Option<String>,
    /// Shell text after they ran.
    pub append_text: Option<String>,
}

/// What a parser works with: the retrieved files, the job's inputs, and where its outputs go.
#[derive(Debug)]
pub struct ParseContext {
    pub(crate) retrieved: BTreeMap<String, Vec<u8>>,
    pub(crate) inputs: CalcJobInputs,
    pub(crate) outputs: Vec<(String, Node)>,
    pub(crate) logs: Vec<(String, String)>,
}

impl ParseContext {
    /// The retrieved file `name` (at the top of the `retrieved` folder).
    pub fn retrieved_file(&self, name: &str) -> Option<&[u8]> {
        self.retrieved.get(name).map(Vec::as_slice)
    }

    /// The names of the retrieved files.
    pub fn retrieved_names(&self) -> impl Iterator<Item = &str> {
        self.retrieved.keys().map(String::as_str)
    }

    /// The job's inputs and options.
    pub fn inputs(&self) -> &CalcJobInputs {
        &self.inputs
    }

    /// Adds output `name` (a new, unstored data node; the engine stores and links it).
    pub fn out(&mut self, name: &str, node: Node) {
        self.outputs.push((name.to_owned(), node));
    }

    /// Records a message in the calculation's log (`verdi process report`), at `level` (`WARNING`,
    /// `REPORT`, `ERROR`).
    pub fn log(&mut self, level: &str, message: impl Into<String>) {
        self.logs.push((level.to_owned(), message.into()));
    }
}
