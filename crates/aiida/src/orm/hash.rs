//! The node hash aiida-core keeps in the extra `_aiida_hash` (its caching key), computed exactly
//! as aiida-core 2.9's `node.base.caching.compute_hash()` does.
//!
//! aiida-core hashes a dict of "objects to hash": the node's Python class (`str(cls)`), its
//! attributes less the ignored and updatable ones of that class, the hash of its repository
//! content (left out for `CalcJobNode`s), its computer's UUID (or `None`) and, for process
//! nodes, the hash of each input. `make_hash` turns a value into a list of BLAKE2b digests, each
//! personalised by the value's type (`int`, `float`, `str`, `dict(` ...), and hashes them as the
//! leaves of a BLAKE2b tree (`aiida.common.hashing`).

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{Node, OrmError};
use crate::runtime::block_on;
use crate::storage::Storage;

/// The extra aiida-core keeps a node's hash in.
pub(crate) const HASH_EXTRA: &str = "_aiida_hash";

/// The hash that storing `node` with file tree `tree` and the inputs `inputs` (label to the
/// input's hash) gives it, as aiida-core's `store()` does.
pub(crate) async fn on_store(
    storage: &Storage,
    node: &Node,
    tree: &Value,
    inputs: Map<String, Value>,
) -> Result<String, OrmError> {
    hash_in(storage, node, tree, inputs).await
}

/// The hash of a node that is to be stored with `repository_metadata` (its file tree), on the
/// computer `computer_uuid`, with inputs `inputs` (label to the input's hash; process nodes only).
pub(crate) fn node_hash(
    node_type: &str,
    attributes: &Map<String, Value>,
    repository_metadata: &Value,
    computer_uuid: Option<Uuid>,
    inputs: Map<String, Value>,
) -> String {
    let class = NodeClass::of(node_type);
    let attributes: Map<String, Value> = attributes
        .iter()
        .filter(|(key, _)| !class.ignores(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let mut objects = json!({
        "class": format!("<class '{}'>", class.path),
        "attributes": attributes,
        "computer_uuid": computer_uuid.map(|uuid| uuid.to_string()),
    });
    // A calculation job's files are written after it is stored: aiida-core leaves them out.
    if class.kind != Kind::CalcJob {
        objects["repository_hash"] = Value::String(repository_hash(repository_metadata));
    }
    if class.kind != Kind::Data {
        objects["inputs"] = Value::Object(inputs);
    }
    make_hash(&objects)
}

impl Node {
    /// The node's hash as aiida-core computes it (`node.base.caching.compute_hash()`): what
    /// storing a node keeps in its extra `_aiida_hash`, and what aiida-core's caching compares.
    /// A process node's hash covers its inputs: those linked by now.
    pub fn compute_hash(&self, storage: &Storage) -> Result<String, OrmError> {
        block_on(self.compute_hash_async(storage))
    }

    /// [`Node::compute_hash`], async.
    pub async fn compute_hash_async(&self, storage: &Storage) -> Result<String, OrmError> {
        if !self.is_stored() {
            return Err(OrmError::NotStored);
        }
        let mut inputs = Map::new();
        if !self.node_type().starts_with("data.") {
            for link in self.incoming_async(storage).await? {
                // aiida-core skips two labels, a leftover of old link types.
                if matches!(link.link_type, super::LinkType::InputCalc | super::LinkType::InputWork)
                    && !["CALL_CALC", "CALL_WORK"].contains(&link.label.as_str())
                {
                    let hash = Box::pin(link.node.compute_hash_async(storage)).await?;
                    inputs.insert(link.label, Value::String(hash));
                }
            }
        }
        hash_in(storage, self, self.repository_metadata(), inputs).await
    }
}

/// [`node_hash`] of `node` with file tree `tree`, its computer's UUID looked up in `storage`.
async fn hash_in(storage: &Storage, node: &Node, tree: &Value, inputs: Map<String, Value>) -> Result<String, OrmError> {
    let computer = match node.computer_pk() {
        Some(pk) => Some(super::Computer::load_async(storage, pk).await?.uuid()),
        None => None,
    };
    Ok(node_hash(node.node_type(), node.attributes(), tree, computer, inputs))
}

/// The hash of a node's files, as aiida-core's `Repository.hash()`: a dict of every file's path
/// (`a/b.txt`) to its SHA-256, plus `__dirnames__`, the folders at the top.
fn repository_hash(tree: &Value) -> String {
    fn files(dir: &Value, prefix: &str, objects: &mut Map<String, Value>) {
        for (name, entry) in dir.get("o").and_then(Value::as_object).into_iter().flatten() {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            match entry.get("k") {
                Some(key) => {
                    objects.insert(path, key.clone());
                }
                None => files(entry, &path, objects),
            }
        }
    }
    let mut objects = Map::new();
    files(tree, "", &mut objects);
    // aiida-core walks the tree bottom up and keeps the last folder's subfolders: the top's, in
    // the order its `repository_metadata` lists them, which is PostgreSQL's jsonb key order
    // (shorter first, then bytewise) once the node is read back from the database.
    let mut dirnames: Vec<&String> = (tree.get("o").and_then(Value::as_object).into_iter().flatten())
        .filter(|(_, entry)| entry.get("k").is_none())
        .map(|(name, _)| name)
        .collect();
    dirnames.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
    objects.insert("__dirnames__".to_owned(), dirnames.into_iter().cloned().collect());
    make_hash(&Value::Object(objects))
}

/// What kind of node a class is, as far as hashing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Process,
    CalcJob,
    WorkChain,
}

/// The Python class aiida-core loads for a node type: its dotted path and kind.
#[derive(Debug, PartialEq, Eq)]
struct NodeClass {
    path: String,
    kind: Kind,
}

/// aiida-core's `aiida.data` entry points: name, class (its module and name, as `str(cls)` shows).
const DATA_CLASSES: &[(&str, &str)] = &[
    ("core.array", "array.array.ArrayData"),
    ("core.array.bands", "array.bands.BandsData"),
    ("core.array.kpoints", "array.kpoints.KpointsData"),
    ("core.array.projection", "array.projection.ProjectionData"),
    ("core.array.trajectory", "array.trajectory.TrajectoryData"),
    ("core.array.xy", "array.xy.XyData"),
    ("core.base", "base.BaseType"),
    ("core.bool", "bool.Bool"),
    ("core.cif", "cif.CifData"),
    ("core.code", "code.legacy.Code"),
    ("core.code.abstract", "code.abstract.AbstractCode"),
    ("core.code.containerized", "code.containerized.ContainerizedCode"),
    ("core.code.installed", "code.installed.InstalledCode"),
    ("core.code.portable", "code.portable.PortableCode"),
    ("core.dict", "dict.Dict"),
    ("core.enum", "enum.EnumData"),
    ("core.float", "float.Float"),
    ("core.folder", "folder.FolderData"),
    ("core.int", "int.Int"),
    ("core.jsonable", "jsonable.JsonableData"),
    ("core.list", "list.List"),
    ("core.numeric", "numeric.NumericType"),
    ("core.orbital", "orbital.OrbitalData"),
    ("core.remote", "remote.base.RemoteData"),
    ("core.remote.stash", "remote.stash.base.RemoteStashData"),
    ("core.remote.stash.compress", "remote.stash.compress.RemoteStashCompressedData"),
    ("core.remote.stash.custom", "remote.stash.custom.RemoteStashCustomData"),
    ("core.remote.stash.folder", "remote.stash.folder.RemoteStashFolderData"),
    ("core.singlefile", "singlefile.SinglefileData"),
    ("core.str", "str.Str"),
    ("core.structure", "structure.StructureData"),
    ("core.upf", "upf.UpfData"),
];

/// aiida-core's `aiida.node` entry points for process nodes: name, class, kind.
const PROCESS_CLASSES: &[(&str, &str, Kind)] = &[
    ("process", "process.ProcessNode", Kind::Process),
    ("process.calculation", "calculation.calculation.CalculationNode", Kind::Process),
    ("process.calculation.calcfunction", "calculation.calcfunction.CalcFunctionNode", Kind::Process),
    ("process.calculation.calcjob", "calculation.calcjob.CalcJobNode", Kind::CalcJob),
    ("process.workflow", "workflow.workflow.WorkflowNode", Kind::Process),
    ("process.workflow.workchain", "workflow.workchain.WorkChainNode", Kind::WorkChain),
    ("process.workflow.workfunction", "workflow.workfunction.WorkFunctionNode", Kind::Process),
];

impl NodeClass {
    /// The class as aiida-core's `load_node_class` finds it: by entry point, from the type
    /// string less its class name; a data or process type it does not know (a plugin of ours)
    /// loads as the base `Data` or `ProcessNode`.
    fn of(node_type: &str) -> NodeClass {
        let data = |path: &str| NodeClass { path: format!("aiida.orm.nodes.data.{path}"), kind: Kind::Data };
        match node_type {
            "" => return NodeClass { path: "aiida.orm.nodes.node.Node".to_owned(), kind: Kind::Data },
            "data.Data." => return data("data.Data"),
            _ => {}
        }
        let base = node_type.trim_end_matches('.').rsplit_once('.').map_or("", |(base, _)| base);
        let base = base.strip_prefix("node.").unwrap_or(base);
        if let Some(name) = base.strip_prefix("data.") {
            return DATA_CLASSES.iter().find(|(n, _)| *n == name).map_or_else(|| data("data.Data"), |(_, c)| data(c));
        }
        if base.starts_with("process") {
            let (_, path, kind) = PROCESS_CLASSES.iter().find(|(n, ..)| *n == base).unwrap_or(&PROCESS_CLASSES[0]);
            return NodeClass { path: format!("aiida.orm.nodes.process.{path}"), kind: *kind };
        }
        data("data.Data")
    }

    /// Whether attribute `key` is left out of the hash: the class's `_hash_ignored_attributes`
    /// and `_updatable_attributes`.
    fn ignores(&self, key: &str) -> bool {
        use super::process::{CALC_JOB_UPDATABLE, PROCESS_UPDATABLE, WORK_CHAIN_UPDATABLE};
        // `_hash_ignored_attributes`, besides the updatable ones.
        const PROCESS: &[&str] = &["metadata_inputs"];
        const CALC_JOB: &[&str] =
            &["queue_name", "account", "qos", "priority", "max_wallclock_seconds", "max_memory_kb", "version"];
        let process = PROCESS.contains(&key) || PROCESS_UPDATABLE.contains(&key);
        match self.kind {
            Kind::Data => false,
            Kind::Process => process,
            Kind::CalcJob => process || CALC_JOB_UPDATABLE.contains(&key) || CALC_JOB.contains(&key),
            Kind::WorkChain => process || WORK_CHAIN_UPDATABLE.contains(&key),
        }
    }
}

/// aiida-core's `make_hash` of a JSON value (a Python dict, list, str, int, float, bool or None),
/// as aiida-core holds it once `clean_value` has normalised it (which storing a node does).
pub(crate) fn make_hash(value: &Value) -> String {
    let mut leaves = Vec::new();
    digests(value, &mut leaves);
    let mut root = tree_params();
    let mut state = root.node_depth(1).last_node(true).to_state();
    for leaf in &leaves {
        state.update(leaf);
    }
    // An empty last leaf closes the tree.
    state.update(tree_params().node_depth(0).last_node(true).hash(b"").as_bytes());
    state.finalize().to_hex().to_string()
}

/// BLAKE2b as aiida-core sets it up: unlimited fanout, depth 2, 32-byte digests, 64-byte inner
/// digests.
fn tree_params() -> blake2b_simd::Params {
    let mut params = blake2b_simd::Params::new();
    params.hash_length(32).fanout(0).max_depth(2).inner_hash_length(64);
    params
}

/// One leaf: `bytes` personalised by the type name `person`.
fn leaf(person: &str, bytes: &[u8]) -> [u8; 32] {
    let hash = tree_params().personal(person.as_bytes()).node_depth(0).hash(bytes);
    hash.as_bytes().try_into().expect("32-byte digests")
}

fn digests(value: &Value, out: &mut Vec<[u8; 32]>) {
    match value {
        Value::Null => out.push(leaf("none", b"")),
        Value::Bool(b) => out.push(leaf("bool", &[u8::from(*b)])),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => out.push(leaf("int", i.to_string().as_bytes())),
            (None, Some(u)) => out.push(leaf("int", u.to_string().as_bytes())),
            _ => {
                // aiida-core's `clean_value` keeps a float to 14 digits, and makes it an int when
                // that is written with an exponent and is whole (from 1e14 on): hash it as such.
                let text = float_to_text(n.as_f64().unwrap_or(f64::NAN));
                match text.contains("e+").then(|| text.parse::<f64>()) {
                    Some(Ok(whole)) => out.push(leaf("int", format!("{whole:.0}").as_bytes())),
                    _ => out.push(leaf("float", text.as_bytes())),
                }
            }
        },
        Value::String(s) => out.push(leaf("str", s.as_bytes())),
        Value::Array(items) => {
            out.push(leaf("list(", b""));
            for item in items {
                digests(item, out);
            }
            out.push(leaf(")", b""));
        }
        Value::Object(map) => {
            // Python sorts the items by the digest of their key.
            let mut items: Vec<([u8; 32], &Value)> = map.iter().map(|(k, v)| (leaf("str", k.as_bytes()), v)).collect();
            items.sort_by_key(|(key, _)| *key);
            out.push(leaf("dict(", b""));
            for (key, value) in items {
                out.push(key);
                digests(value, out);
            }
            out.push(leaf(")", b""));
        }
    }
}

/// Python's `'{:.14g}'.format(value)`, aiida-core's `float_to_text` at `AIIDA_FLOAT_PRECISION`:
/// 14 significant digits, trailing zeros dropped, exponent form below 1e-4 and from 1e14 on.
fn float_to_text(value: f64) -> String {
    const DIGITS: i32 = 14;
    if value == 0.0 {
        return "0".to_owned(); // -0.0 too
    }
    if !value.is_finite() {
        return if value.is_nan() {
            "nan"
        } else if value > 0.0 {
            "inf"
        } else {
            "-inf"
        }
        .to_owned();
    }
    // Rust's exact formatting rounds half to even on the exact binary value, as Python's does.
    let scientific = format!("{:.*e}", (DIGITS - 1) as usize, value.abs());
    let (mantissa, exponent) = scientific.split_once('e').expect("exponent form");
    let exponent: i32 = exponent.parse().expect("an exponent");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let sign = if value < 0.0 { "-" } else { "" };
    if (-4..DIGITS).contains(&exponent) {
        if exponent < 0 {
            return format!("{sign}0.{}{digits}", "0".repeat((-exponent - 1) as usize));
        }
        let whole = (exponent + 1) as usize;
        if digits.len() <= whole {
            return format!("{sign}{digits}{}", "0".repeat(whole - digits.len()));
        }
        return format!("{sign}{}.{}", &digits[..whole], &digits[whole..]);
    }
    let (first, rest) = digits.split_at(1);
    let point = if rest.is_empty() { "" } else { "." };
    let exp_sign = if exponent < 0 { '-' } else { '+' };
    format!("{sign}{first}{point}{rest}e{exp_sign}{:02}", exponent.abs())
}

#[cfg(test)]
mod tests {
    //! Expected hashes are aiida-core 2.9.4's own: `scripts/aiida-core-hashes.py` stores each
    //! node in a temporary (`core.sqlite_temp`) profile and prints the `_aiida_hash` extra that
    //! storing set, and `node.base.caching.compute_hash()`; both agree for every node here.

    use super::*;

    fn hash(node_type: &str, attributes: Value, tree: Value, computer: Option<&str>, inputs: Value) -> String {
        let Value::Object(attributes) = attributes else { panic!("attributes are an object") };
        let Value::Object(inputs) = inputs else { panic!("inputs are an object") };
        node_hash(node_type, &attributes, &tree, computer.map(|c| c.parse().unwrap()), inputs)
    }

    fn data(node_type: &str, attributes: Value) -> String {
        hash(node_type, attributes, json!({}), None, json!({}))
    }

    #[test]
    fn simple_data_nodes_hash_as_in_aiida_core() {
        let int42 = "bb1b385ba40bdb75cadccf353dcf4cb5806e00540c77220efc1a50cef5db93bd";
        assert_eq!(data("data.core.int.Int.", json!({"value": 42})), int42);
        assert_eq!(
            data("data.core.str.Str.", json!({"value": "hello wörld"})),
            "99384361aa4017fb459e1c09ca557f4e89d04e4d1af7d4d0e373b71f3c7ebd64"
        );
        assert_eq!(
            data("data.core.float.Float.", json!({"value": std::f64::consts::PI})),
            "a5d2b8d8bbb52241a7c6a101429af27e1cfda6655534788272a101e000f6bd4f"
        );
        assert_eq!(
            data("data.core.bool.Bool.", json!({"value": true})),
            "ff3722ce53929991a6ca552ef45d1147c9c0b36b0692334ff2f7d73185acb978"
        );
        assert_eq!(
            data("data.core.list.List.", json!({"list": [1, 2, 3]})),
            "14c9a97d053d62b9e70f4d915628faa10f2ff67cd8f92331fdc6145cb87e5dac"
        );
        assert_eq!(
            data("data.core.int.Int.", json!({"value": 3})),
            "c4b85179040890d06cf824483af8554b144fd9d193e1418f1a525394eb44faed"
        );
    }

    #[test]
    fn a_dict_with_nested_values_and_floats_hashes_as_in_aiida_core() {
        // aiida-core stores 1e20 as the int 100000000000000000000 (`clean_value`): the hash
        // follows, whether the value is ours (a float) or read back from the database.
        // orm.Dict({'a': 1, 'b': [1, 2.5, 'x', None, True, {'c': -0.0}],
        //           'nested': {'z': 1e20, 'y': False, 'w': 1e-7}, 'u': 'ü', 'big': 2**63, 'neg': -7})
        let attributes = json!({
            "a": 1,
            "b": [1, 2.5, "x", null, true, {"c": -0.0}],
            "nested": {"z": 1e20, "y": false, "w": 1e-7},
            "u": "ü",
            "big": 9223372036854775808_u64,
            "neg": -7,
        });
        assert_eq!(
            data("data.core.dict.Dict.", attributes),
            "46b1617ad5c6533da982d77dbf450bb327c6ad9326ab04e3e9b669742ecbfe95"
        );
        let whole = make_hash(&json!(100000000000000000000_u128 as f64));
        assert_eq!(whole, make_hash(&serde_json::from_str("100000000000000000000").unwrap()));
        assert_eq!(make_hash(&json!(1e14)), make_hash(&json!(100000000000000_u64)));
        assert_ne!(make_hash(&json!(12345678901234.0)), make_hash(&json!(12345678901234_u64)));
    }

    #[test]
    fn files_enter_the_hash_by_path_and_content() {
        // orm.Int(1) with 'notes/readme.txt' = b'stored by the Rust engine'.
        let tree = json!({"o": {"notes": {"o": {"readme.txt": {
            "k": "4ed62f69e2c71b324fdf4ba3d09370ba72bc4c5193643be4506e80c3a06df279"}}}}});
        assert_eq!(
            hash("data.core.int.Int.", json!({"value": 1}), tree, None, json!({})),
            "4b8ad7ffcf8a9a8ebfe4bc3665b67cb0e91fe59e2f1738fb18a721bea9b1c21c"
        );
        // orm.FolderData with a.txt = b'top', sub/deeper/c.txt = b'deep', other/d.txt = b'other':
        // two folders at the top, listed here in another order than jsonb's (`sub` first).
        let tree = json!({"o": {
            "a.txt": {"k": "28720365c5e7476a011e4f43ac003ee5f16247a263b9d623aa85ed311d73bf39"},
            "other": {"o": {"d.txt": {"k": "d9298a10d1b0735837dc4bd85dac641b0f3cef27a47e5d53a54f2f3f5b2fcffa"}}},
            "sub": {"o": {"deeper": {"o": {"c.txt": {
                "k": "74611c1d6455b534323a21f8133a6f43dc3a8188e7b946f96dcc28dde932fcb2"}}}}},
        }});
        assert_eq!(
            hash("data.core.folder.FolderData.", json!({}), tree, None, json!({})),
            "775fd4e262b9abd5e158c60b38060f7a29f7b145642f8dd3e90e0b00152d765d"
        );
    }

    #[test]
    fn computers_inputs_and_process_attributes_as_in_aiida_core() {
        let computer = Some("6e0fa1a2-3f7b-4a59-9d7c-2a1f5b8c9d01");
        // orm.RemoteData(remote_path='/tmp/x', computer=c)
        assert_eq!(
            hash("data.core.remote.RemoteData.", json!({"remote_path": "/tmp/x"}), json!({}), computer, json!({})),
            "869b64d3258f26b240208be199255304903525024cee86b978ec52464f5b754d"
        );
        // orm.CalcJobNode(computer=c) with process state and label, options `resources` and
        // `max_wallclock_seconds`, attribute `version` and file in.txt: only `resources` and the
        // computer count.
        let attributes = json!({
            "process_state": "created",
            "process_label": "Add",
            "resources": {"num_machines": 1},
            "max_wallclock_seconds": 60,
            "version": {"core": "2.9.4"},
        });
        let tree = json!({"o": {"in.txt": {"k": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"}}});
        assert_eq!(
            hash("process.calculation.calcjob.CalcJobNode.", attributes, tree, computer, json!({})),
            "47480366fff71ffb98b6e2fca49411e933ab62fb52fb67603803c37b57ab617c"
        );
        // orm.CalcFunctionNode with input `x` (Int(3), hashed above) and process label `add`.
        let inputs = json!({"x": "c4b85179040890d06cf824483af8554b144fd9d193e1418f1a525394eb44faed"});
        assert_eq!(
            hash(
                "process.calculation.calcfunction.CalcFunctionNode.",
                json!({"process_label": "add"}),
                json!({}),
                None,
                inputs
            ),
            "a2b9d4c51e039eb147f241a32f281002691e50a8fb092ea1f34762c542d29666"
        );
    }

    #[test]
    fn node_types_load_aiida_cores_classes() {
        let class = |t| NodeClass::of(t).path;
        assert_eq!(class("data.core.remote.RemoteData."), "aiida.orm.nodes.data.remote.base.RemoteData");
        assert_eq!(
            class("data.core.code.installed.InstalledCode."),
            "aiida.orm.nodes.data.code.installed.InstalledCode"
        );
        assert_eq!(class("data.my_plugin.Thing."), "aiida.orm.nodes.data.data.Data", "unknown plugins load as Data");
        assert_eq!(
            class("process.workflow.workchain.WorkChainNode."),
            "aiida.orm.nodes.process.workflow.workchain.WorkChainNode"
        );
        assert_eq!(class("process.Odd."), "aiida.orm.nodes.process.process.ProcessNode");
        assert_eq!(NodeClass::of("process.workflow.workchain.WorkChainNode.").kind, Kind::WorkChain);
    }

    #[test]
    fn floats_are_written_as_pythons_14g() {
        // Python: '{:.14g}'.format(v) for each v.
        for (value, text) in [
            (0.1, "0.1"),
            (1.0 / 3.0, "0.33333333333333"),
            (1e-5, "1e-05"),
            (123456789012345678.0, "1.2345678901235e+17"),
            (-0.0, "0"),
            (2f64.powi(-21), "4.7683715820312e-07"),
            (1e16, "1e+16"),
            (100.0, "100"),
            (1e14, "1e+14"),
            (12345678901234.0, "12345678901234"),
            (0.0001, "0.0001"),
            (1e20, "1e+20"),
            (1e-7, "1e-07"),
            (2.5, "2.5"),
            (-1.5e-300, "-1.5e-300"),
            (f64::MAX, "1.7976931348623e+308"),
            (5e-324, "4.9406564584125e-324"),
            (0.5, "0.5"),
            (99999999999999.5, "1e+14"),
            (999999999999995.0, "1e+15"),
            (0.000123456789012345, "0.00012345678901234"),
            (-42.0, "-42"),
        ] {
            assert_eq!(float_to_text(value), text, "{value:?}");
        }
    }
}
