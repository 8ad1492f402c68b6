//! Stores an `Int` in a profile: `cargo run -p aiida --example store_int -- PROFILE VALUE`.

use aiida::config::Instance;
use aiida::orm::data;
use aiida::storage::Storage;

fn main() -> std::process::ExitCode {
    match store_int() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {:#}", aiida::report::Chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn store_int() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [profile, value] = args.as_slice() else { return Err("usage: store_int PROFILE VALUE".into()) };
    let profile = Instance::from_env().load()?.profile(profile)?;
    let storage = Storage::open(&profile)?;
    let mut node = data::int(value.parse()?);
    node.put_file("notes/readme.txt", "stored by the Rust engine")?;
    node.store(&storage)?;
    println!("stored Int {} as node {} ({})", value, node.pk().unwrap_or_default(), node.uuid());
    Ok(())
}
