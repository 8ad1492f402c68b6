//! `aiida-hub update`: one pass of the hub over a plugin list (for cron or CI), its summary on the
//! terminal, and the registry written in aiida-registry's `plugins_metadata.json` form.

use std::path::PathBuf;
use std::process::ExitCode;

use aiida_hub::pipeline::{Sources, registry, update};
use aiida_hub::source_list::SourceList;
use aiida_hub::sources::{CratesIo, Pypi};
use aiida_hub::store::Store;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "aiida-hub", version, about = "The AiiDA plugin hub: plugin metadata gathered into the registry.")]
struct Hub {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One pass: discover every listed plugin's latest version, read what is new, write the registry.
    Update {
        /// The plugin list (aiida-registry's plugins.yaml form).
        #[arg(long, default_value = "plugins.yaml")]
        list: PathBuf,
        /// The hub's PostgreSQL database (postgresql://...); a temporary one when not given (testpg).
        #[arg(long, env = "AIIDA_HUB_DATABASE")]
        database: Option<String>,
        /// Where to write the registry.
        #[arg(long, default_value = "plugins_metadata.json")]
        output: PathBuf,
        /// PyPI's address.
        #[arg(long, env = "AIIDA_HUB_PYPI", default_value = "https://pypi.org")]
        pypi: String,
        /// crates.io's API address.
        #[arg(long, env = "AIIDA_HUB_CRATES_IO", default_value = "https://crates.io")]
        crates_io: String,
        /// The address of crates.io's files (the `.crate`s).
        #[arg(long, env = "AIIDA_HUB_CRATES_FILES", default_value = "https://static.crates.io")]
        crates_files: String,
    },
}

fn main() -> ExitCode {
    let Command::Update { list, database, output, pypi, crates_io, crates_files } = Hub::parse().command;
    let run = || -> Result<bool, Box<dyn std::error::Error>> {
        let text = std::fs::read_to_string(&list).map_err(|e| format!("cannot read {}: {e}", list.display()))?;
        let list = SourceList::parse(&text)?;
        // A temporary database lives as long as this pass.
        let (url, _temporary) = match database {
            Some(url) => (url, None),
            None => {
                let db = testpg::Server::shared()?.database(&testpg::Template::empty())?;
                eprintln!("aiida-hub: no --database: a temporary one ({})", db.name());
                (db.url(), Some(db))
            }
        };
        let mut store = Store::connect(&url)?;
        let sources = Sources { pypi: Pypi::new(pypi), crates_io: CratesIo::new(crates_io, crates_files) };
        eprintln!("aiida-hub: {} plugins listed", list.len());
        let summary = update(&list, &sources, &mut store)?;
        for plugin in &summary.new {
            println!("new        {plugin}");
        }
        for (plugin, from, to) in &summary.updated {
            println!("updated    {plugin} {from} -> {to}");
        }
        for plugin in &summary.withdrawn {
            println!("withdrawn  {plugin}");
        }
        for (plugin, why) in &summary.failed {
            println!("failed     {plugin}: {why}");
        }
        let published = registry(&list, &mut store)?;
        let bytes = serde_json::to_vec_pretty(&published)?;
        let aside = output.with_extension("json.tmp");
        std::fs::write(&aside, &bytes).map_err(|e| format!("cannot write {}: {e}", aside.display()))?;
        std::fs::rename(&aside, &output).map_err(|e| format!("cannot write {}: {e}", output.display()))?;
        println!(
            "{} discovered, {} new, {} updated, {} unchanged, {} withdrawn, {} failed; discovery {}; {} plugins in {}",
            summary.discovered,
            summary.new.len(),
            summary.updated.len(),
            summary.unchanged,
            summary.withdrawn.len(),
            summary.failed.len(),
            if summary.complete { "complete" } else { "incomplete (nothing withdrawn)" },
            published.as_object().map_or(0, |p| p.len()),
            output.display()
        );
        Ok(summary.failed.is_empty())
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
