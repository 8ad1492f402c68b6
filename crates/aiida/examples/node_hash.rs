//! Node hashes, ours beside the stored `_aiida_hash` extra, for comparing with aiida-core:
//!
//! `cargo run -p aiida --example node_hash -- PROFILE [PK...]` prints, for each node (every node
//! when no pk is given), `PK NODE_TYPE computed HASH extra HASH`, and fails if one differs.
//! `... -- PROFILE --store-samples` first stores a few nodes of several kinds (floats, nested
//! values, files in folders, a computer, a calculation job) and prints their pks.

use aiida::config::Instance;
use aiida::orm::{Computer, Node, QueryBuilder, data};
use aiida::storage::Storage;
use serde_json::json;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((profile, rest)) = args.split_first() else {
        return Err("usage: node_hash PROFILE [--store-samples | PK...]".into());
    };
    let profile = Instance::from_env().load()?.profile(profile)?;
    let storage = Storage::open(&profile)?;
    if rest == ["--store-samples"] {
        for mut node in samples(&storage)? {
            node.store(&storage)?;
            println!("stored {} {}", node.pk().unwrap_or_default(), node.node_type());
        }
        return Ok(true);
    }
    let nodes = if rest.is_empty() {
        QueryBuilder::nodes().order_by("id", false).all(&storage)?
    } else {
        rest.iter()
            .map(|pk| Ok(Node::load(&storage, pk.parse()?)?))
            .collect::<Result<_, Box<dyn std::error::Error>>>()?
    };
    let mut same = true;
    for node in nodes {
        let computed = node.compute_hash(&storage)?;
        let extra = node.extras().get("_aiida_hash").and_then(|v| v.as_str()).unwrap_or("-");
        same &= computed == extra;
        let pk = node.pk().unwrap_or_default();
        println!("{pk} {} computed {computed} extra {extra}", node.node_type());
    }
    Ok(same)
}

fn samples(storage: &Storage) -> Result<Vec<Node>, Box<dyn std::error::Error>> {
    let label = format!("hash-samples-{}", std::process::id());
    let mut computer = Computer::new(label, "localhost", "core.local", "core.direct");
    computer.store(storage)?;
    let values = json!({
        "pi": std::f64::consts::PI, "tenth": 0.1, "big": 1e20, "whole": 3.0, "minus_zero": -0.0,
        "huge": 9223372036854775808_u64, "nested": {"list": [1, "two", null, true, {"x": 2.5}]}, "text": "ü",
    });
    let mut calcjob = Node::new("process.calculation.calcjob.CalcJobNode.");
    calcjob.set_process_type("aiida.calculations:core.arithmetic.add")?;
    calcjob.set_computer(&computer)?;
    for (key, value) in [
        ("process_state", json!("finished")),
        ("exit_status", json!(0)),
        ("resources", json!({"num_machines": 1})),
        ("max_wallclock_seconds", json!(60)),
        ("version", json!({"core": "2.9.4"})),
        ("parser_name", json!("core.arithmetic.add")),
    ] {
        calcjob.set_attribute(key, value)?;
    }
    calcjob.put_file("aiida.in", "echo $((1 + 2))\n")?;
    Ok(vec![
        data::dict(values.as_object().cloned().unwrap_or_default()),
        data::float(1e-7),
        data::list(vec![json!(1), json!(2.0), json!("three")]),
        data::folder([
            ("top.txt", "top".repeat(3000)),
            ("zz/deeper/c.txt", "deep".to_owned()),
            ("other/d.txt", "stored by the Rust engine".to_owned()),
        ]),
        data::singlefile("data.bin", (0..=255u8).cycle().take(5000).collect::<Vec<u8>>()),
        data::remote(&computer, "/tmp/remote")?,
        calcjob,
    ])
}
