//! `aiida-hub update`: one pass of the hub over a plugin list (for cron or CI), its summary on the
//! terminal, and the registry written in aiida-registry's `plugins_metadata.json` form.
//! `aiida-hub serve`: passes on an interval, and the HTTP API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aiida_hub::api::{Catalog, router};
use aiida_hub::pipeline::{Sources, Summary, registry, update};
use aiida_hub::source_list::SourceList;
use aiida_hub::sources::{CratesIo, GitHub, Pypi};
use aiida_hub::store::Store;
use clap::{Args, Parser, Subcommand};

type Error = Box<dyn std::error::Error>;

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
        #[command(flatten)]
        pass: PassArgs,
        /// Where to write the registry.
        #[arg(long, default_value = "plugins_metadata.json")]
        output: PathBuf,
    },
    /// Passes on an interval, and the HTTP API (`/plugins`, `/plugins/{name}`,
    /// `/plugins/{name}/versions/{version}`, `/manifest/{name}`).
    Serve {
        #[command(flatten)]
        pass: PassArgs,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
        /// Seconds between passes.
        #[arg(long, default_value_t = 3600)]
        interval: u64,
        /// Where to write the registry after each pass, too.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct PassArgs {
    /// The plugin list (aiida-registry's plugins.yaml form).
    #[arg(long, default_value = "plugins.yaml")]
    list: PathBuf,
    /// The hub's PostgreSQL database (postgresql://...); a temporary one when not given (testpg).
    #[arg(long, env = "AIIDA_HUB_DATABASE")]
    database: Option<String>,
    /// PyPI's address.
    #[arg(long, env = "AIIDA_HUB_PYPI", default_value = "https://pypi.org")]
    pypi: String,
    /// crates.io's API address.
    #[arg(long, env = "AIIDA_HUB_CRATES_IO", default_value = "https://crates.io")]
    crates_io: String,
    /// The address of crates.io's files (the `.crate`s).
    #[arg(long, env = "AIIDA_HUB_CRATES_FILES", default_value = "https://static.crates.io")]
    crates_files: String,
    /// GitHub's API address (a token in GITHUB_TOKEN raises its rate limit).
    #[arg(long, env = "AIIDA_HUB_GITHUB", default_value = "https://api.github.com")]
    github: String,
    /// The address of GitHub's raw files (`CITATION.cff`).
    #[arg(long, env = "AIIDA_HUB_GITHUB_RAW", default_value = "https://raw.githubusercontent.com")]
    github_raw: String,
    /// Do not ask GitHub.
    #[arg(long)]
    no_github: bool,
}

/// The store, and the temporary database behind it when none was given (dropped with it).
fn open_store(args: &PassArgs) -> Result<(Store, Option<testpg::TestDatabase>), Error> {
    match &args.database {
        Some(url) => Ok((Store::connect(url)?, None)),
        None => {
            let db = testpg::Server::shared()?.database(&testpg::Template::empty())?;
            eprintln!("aiida-hub: no --database: a temporary one ({})", db.name());
            Ok((Store::connect(&db.url())?, Some(db)))
        }
    }
}

/// One pass: the list read again, the summary printed, the registry written to `output`.
fn pass(args: &PassArgs, store: &mut Store, output: Option<&Path>) -> Result<(SourceList, Summary), Error> {
    let text = std::fs::read_to_string(&args.list).map_err(|e| format!("cannot read {}: {e}", args.list.display()))?;
    let list = SourceList::parse(&text)?;
    let sources = Sources {
        pypi: Pypi::new(args.pypi.clone()),
        crates_io: CratesIo::new(args.crates_io.clone(), args.crates_files.clone()),
        github: (!args.no_github).then(|| {
            GitHub::new(args.github.clone(), std::env::var("GITHUB_TOKEN").ok()).with_raw(args.github_raw.clone())
        }),
    };
    eprintln!("aiida-hub: {} plugins listed", list.len());
    let summary = update(&list, &sources, store)?;
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
    let published = registry(&list, store)?;
    if let Some(output) = output {
        let bytes = serde_json::to_vec_pretty(&published)?;
        let aside = output.with_extension("json.tmp");
        std::fs::write(&aside, &bytes).map_err(|e| format!("cannot write {}: {e}", aside.display()))?;
        std::fs::rename(&aside, output).map_err(|e| format!("cannot write {}: {e}", output.display()))?;
    }
    println!(
        "{} discovered, {} new, {} updated, {} unchanged, {} withdrawn, {} failed; discovery {}; {} plugins published",
        summary.discovered,
        summary.new.len(),
        summary.updated.len(),
        summary.unchanged,
        summary.withdrawn.len(),
        summary.failed.len(),
        if summary.complete { "complete" } else { "incomplete (nothing withdrawn)" },
        published.as_object().map_or(0, |p| p.len()),
    );
    Ok((list, summary))
}

fn run(command: Command) -> Result<bool, Error> {
    match command {
        Command::Update { pass: args, output } => {
            let (mut store, _temporary) = open_store(&args)?;
            let (_, summary) = pass(&args, &mut store, Some(&output))?;
            Ok(summary.failed.is_empty())
        }
        Command::Serve { pass: args, bind, interval, output } => {
            let (mut store, temporary) = open_store(&args)?;
            let catalog = Arc::new(RwLock::new(Catalog::default()));
            let shared = catalog.clone();
            std::thread::spawn(move || {
                let _temporary = temporary;
                loop {
                    match pass(&args, &mut store, output.as_deref()) {
                        Ok((list, summary)) => match Catalog::build(&list, &mut store, &summary) {
                            Ok(built) => *shared.write().unwrap_or_else(|e| e.into_inner()) = built,
                            Err(e) => eprintln!("aiida-hub: the catalog could not be built: {e}"),
                        },
                        Err(e) => eprintln!("aiida-hub: the pass failed: {e}"),
                    }
                    std::thread::sleep(Duration::from_secs(interval.max(1)));
                }
            });
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async {
                let listener =
                    tokio::net::TcpListener::bind(&bind).await.map_err(|e| format!("cannot listen on {bind}: {e}"))?;
                eprintln!("aiida-hub: serving on http://{}", listener.local_addr()?);
                axum::serve(listener, router(catalog)).await?;
                Ok::<_, Error>(())
            })?;
            Ok(true)
        }
    }
}

fn main() -> ExitCode {
    match run(Hub::parse().command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
