//! The built-in data types, registered as `core.*` entry points of `aiida.data`.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::Node;
use crate::plugins::{self, PluginError, PluginGroup};

/// A data type: what its nodes' `node_type` is, and its class name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataType {
    /// The `node_type` of its nodes, e.g. `data.core.int.Int.`.
    pub node_type: &'static str,
    /// The class name, e.g. `Int`.
    pub class: &'static str,
}

/// The `aiida.data` group: its plugins are [`DataType`]s, registered with
/// `aiida::entry_point!(DataTypes: "my.type", MY_TYPE)`.
#[derive(Debug)]
pub struct DataTypes;

impl PluginGroup for DataTypes {
    const NAME: &'static str = "aiida.data";
    type Plugin = DataType;
}

impl DataType {
    /// A new, unstored node of this type.
    pub fn node(&self) -> Node {
        Node::new(self.node_type)
    }
}

macro_rules! builtin {
    ($($konst:ident = $name:literal => $node_type:literal, $class:literal;)*) => {
        $(
            #[doc = concat!("`", $node_type, "` (entry point `aiida.data:", $name, "`).")]
            pub const $konst: DataType = DataType { node_type: $node_type, class: $class };
            crate::entry_point!(DataTypes: $name, $konst);
        )*
    };
}

builtin! {
    INT = "core.int" => "data.core.int.Int.", "Int";
    FLOAT = "core.float" => "data.core.float.Float.", "Float";
    STR = "core.str" => "data.core.str.Str.", "Str";
    BOOL = "core.bool" => "data.core.bool.Bool.", "Bool";
    DICT = "core.dict" => "data.core.dict.Dict.", "Dict";
    LIST = "core.list" => "data.core.list.List.", "List";
    SINGLEFILE = "core.singlefile" => "data.core.singlefile.SinglefileData.", "SinglefileData";
    FOLDER = "core.folder" => "data.core.folder.FolderData.", "FolderData";
    REMOTE = "core.remote" => "data.core.remote.RemoteData.", "RemoteData";
    INSTALLED_CODE = "core.code.installed" => "data.core.code.installed.InstalledCode.", "InstalledCode";
}

/// Loads a data type by entry point (`core.int`, `data:core.int`, `aiida.data:core.int`).
pub fn data_factory(name: &str) -> Result<Arc<DataType>, PluginError> {
    plugins::factory::<DataTypes>(name)
}

fn with_value(data_type: &DataType, value: Value) -> Node {
    let mut node = data_type.node();
    node.set_attribute("value", value).expect("a new node is mutable");
    node
}

/// An `Int` node.
pub fn int(value: i64) -> Node {
    with_value(&INT, value.into())
}

/// A `Float` node.
pub fn float(value: f64) -> Node {
    with_value(&FLOAT, value.into())
}

/// A `Str` node.
pub fn string(value: impl Into<String>) -> Node {
    with_value(&STR, Value::String(value.into()))
}

/// A `Bool` node.
pub fn boolean(value: bool) -> Node {
    with_value(&BOOL, value.into())
}

/// A `Dict` node: its keys are the attributes.
pub fn dict(value: Map<String, Value>) -> Node {
    let mut node = DICT.node();
    for (k, v) in value {
        node.set_attribute(k, v).expect("a new node is mutable");
    }
    node
}

/// A `List` node: `{"list": [...]}`.
pub fn list(values: Vec<Value>) -> Node {
    let mut node = LIST.node();
    node.set_attribute("list", Value::Array(values)).expect("a new node is mutable");
    node
}

/// A `SinglefileData` node: one file, its name in attribute `filename`.
pub fn singlefile(filename: &str, content: impl Into<Vec<u8>>) -> Node {
    let mut node = SINGLEFILE.node();
    node.set_attribute("filename", filename).expect("a new node is mutable");
    node.put_file(filename, content).expect("a new node is mutable");
    node
}

/// A `FolderData` node holding `files` (`/`-separated paths and their contents).
pub fn folder<P: Into<String>, C: Into<Vec<u8>>>(files: impl IntoIterator<Item = (P, C)>) -> Node {
    let mut node = FOLDER.node();
    for (path, content) in files {
        node.put_file(path, content).expect("a new node is mutable");
    }
    node
}

/// A `RemoteData` node: a folder `remote_path` on a stored `computer`.
pub fn remote(computer: &super::Computer, remote_path: &str) -> Result<Node, super::OrmError> {
    let mut node = REMOTE.node();
    node.set_computer(computer)?;
    node.set_attribute("remote_path", remote_path)?;
    Ok(node)
}

/// An `InstalledCode` node: an executable already on a stored `computer`, with aiida's attributes
/// (`filepath_executable`, `input_plugin` = the default calculation plugin, `prepend_text`,
/// `append_text`, `use_double_quotes`, `with_mpi`, `wrap_cmdline_params`).
pub fn installed_code(
    computer: &super::Computer,
    filepath_executable: &str,
    label: &str,
    default_calc_job_plugin: Option<&str>,
) -> Result<Node, super::OrmError> {
    let mut node = INSTALLED_CODE.node();
    node.set_computer(computer)?;
    node.set_label(label)?;
    for (key, value) in [
        ("filepath_executable", Value::from(filepath_executable)),
        ("input_plugin", default_calc_job_plugin.map_or(Value::Null, Value::from)),
        ("prepend_text", Value::from("")),
        ("append_text", Value::from("")),
        ("use_double_quotes", Value::Bool(false)),
        ("with_mpi", Value::Null),
        ("wrap_cmdline_params", Value::Bool(false)),
    ] {
        node.set_attribute(key, value)?;
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_core_entry_points() {
        assert_eq!(data_factory("core.int").unwrap().node_type, "data.core.int.Int.");
        assert_eq!(data_factory("aiida.data:core.code.installed").unwrap().class, "InstalledCode");
        assert_eq!(int(3).attribute("value"), Some(&Value::from(3)));
        assert_eq!(list(vec![1.into()]).attribute("list"), Some(&serde_json::json!([1])));
    }
}
