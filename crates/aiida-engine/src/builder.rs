//! Process builders: the inputs of a calculation job, gathered and checked before it runs
//! (aiida's `ProcessBuilder`, as `code.get_builder()` returns it).

use std::collections::BTreeMap;
use std::sync::Arc;

use aiida::orm::Node;
use aiida::orm::data;
use aiida::plugins;
use serde_json::{Map, Value};

use crate::calcjob::CalcJob;
use crate::groups::Calculations;
use crate::launch::EngineError;

/// The inputs of a calculation job: nodes by port name, `metadata` (label, description, options).
#[derive(Clone)]
pub struct ProcessBuilder {
    pub(crate) entry_point: String,
    pub(crate) calcjob: Arc<dyn CalcJob>,
    pub(crate) inputs: BTreeMap<String, Node>,
    pub(crate) options: Map<String, Value>,
    pub(crate) label: Option<String>,
    pub(crate) description: Option<String>,
}

impl std::fmt::Debug for ProcessBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessBuilder")
            .field("entry_point", &self.entry_point)
            .field("inputs", &self.inputs.keys().collect::<Vec<_>>())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ProcessBuilder {
    /// A builder for the calculation job `entry_point` (e.g. `core.arithmetic.add`), loaded from
    /// `aiida.calculations`.
    pub fn new(entry_point: &str) -> Result<ProcessBuilder, EngineError> {
        let calcjob = plugins::factory::<Calculations>(entry_point)?;
        let (_, name) = plugins::parse(entry_point)?;
        Ok(ProcessBuilder {
            entry_point: name,
            calcjob,
            inputs: BTreeMap::new(),
            options: Map::new(),
            label: None,
            description: None,
        })
    }

    /// A builder for `code`'s default calculation job, with `code` set (aiida's
    /// `code.get_builder()`).
    pub fn for_code(code: &Node) -> Result<ProcessBuilder, EngineError> {
        let plugin = code.attribute("input_plugin").and_then(Value::as_str).ok_or_else(|| {
            EngineError::InvalidInputs(format!(
                "code `{}` has no default calculation job (input_plugin); make a builder with ProcessBuilder::new",
                code.label()
            ))
        })?;
        let mut builder = ProcessBuilder::new(plugin)?;
        builder.input("code", code.clone());
        Ok(builder)
    }

    /// Sets input `name` to `node`.
    pub fn input(&mut self, name: &str, node: Node) -> &mut Self {
        self.inputs.insert(name.to_owned(), node);
        self
    }

    /// Sets input `name` to a new node holding `value` (aiida's `to_aiida_type`: a whole number
    /// is an `Int`, a number a `Float`, a bool a `Bool`, a string a `Str`, an object a `Dict`, an
    /// array a `List`).
    pub fn value(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        let node = match value.into() {
            Value::Number(n) if n.is_i64() => data::int(n.as_i64().unwrap_or_default()),
            Value::Number(n) => data::float(n.as_f64().unwrap_or_default()),
            Value::Bool(b) => data::boolean(b),
            Value::String(s) => data::string(s),
            Value::Object(map) => data::dict(map),
            Value::Array(values) => data::list(values),
            Value::Null => return self,
        };
        self.input(name, node)
    }

    /// Sets `metadata.options.<name>`.
    pub fn option(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.options.insert(name.to_owned(), value.into());
        self
    }

    /// Sets `metadata.label`.
    pub fn label(&mut self, label: impl Into<String>) -> &mut Self {
        self.label = Some(label.into());
        self
    }

    /// Sets `metadata.description`.
    pub fn description(&mut self, description: impl Into<String>) -> &mut Self {
        self.description = Some(description.into());
        self
    }
}
