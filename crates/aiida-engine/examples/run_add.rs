//! Runs `core.arithmetic.add` (x + y) in a profile, on a `core.local` + `core.direct` computer
//! `localhost` (made and configured when missing, working in `WORKDIR`) with a `/bin/bash` code:
//! `cargo run -p aiida-engine --example run_add -- PROFILE WORKDIR X Y`. Prints the calculation's
//! pk, exit status and sum.

use aiida::config::Instance;
use aiida::orm::data::installed_code;
use aiida::orm::{Computer, OrmError, QueryBuilder, User, query::Op};
use aiida::storage::Storage;
use aiida_engine::{ProcessBuilder, run_get_node};

fn main() -> std::process::ExitCode {
    match run_add() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {:#}", aiida::report::Chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_add() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [profile, workdir, x, y] = args.as_slice() else { return Err("usage: run_add PROFILE WORKDIR X Y".into()) };
    let storage = Storage::open(&Instance::from_env().load()?.profile(profile)?)?;
    let computer = match Computer::load_label(&storage, "localhost") {
        Ok(computer) => computer,
        Err(OrmError::NotFound { .. }) => {
            let mut computer = Computer::new("localhost", "localhost", "core.local", "core.direct")
                .with_workdir(workdir.as_str())
                .with_minimum_poll_interval(0.0);
            computer.store(&storage)?;
            computer
        }
        Err(e) => return Err(e.into()),
    };
    let user = User::default_user(&storage)?;
    if !computer.is_configured(&storage, &user)? {
        computer.configure(&storage, &user, serde_json::Map::new())?;
    }
    let installed = aiida::orm::data::data_factory("core.code.installed")?;
    let existing = QueryBuilder::nodes().of_type(&installed).column("label", Op::Eq, "bash").first(&storage)?;
    let code = match existing {
        Some(code) => code,
        None => {
            let mut code = installed_code(&computer, "/bin/bash", "bash", Some("core.arithmetic.add"))?;
            code.store(&storage)?;
            code
        }
    };
    let mut builder = ProcessBuilder::for_code(&code)?;
    builder.value("x", x.parse::<i64>()?).value("y", y.parse::<i64>()?);
    let (outputs, node) = run_get_node(&storage, &builder)?;
    let sum = outputs.get("sum").and_then(|s| s.attribute("value").cloned());
    println!(
        "calculation {} exit_status {} sum {}",
        node.pk().unwrap_or_default(),
        node.attribute("exit_status").cloned().unwrap_or_default(),
        sum.map(|s| s.to_string()).unwrap_or_else(|| "none".into())
    );
    Ok(())
}
