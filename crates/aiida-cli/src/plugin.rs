//! `verdi plugin`: the entry points linked into this `verdi`, and the plugin registry.

use std::io::Write;

use clap::{Subcommand, ValueEnum};

use aiida::plugins;
use aiida_registry::{InfoFormat, RegistryClient, RegistryError};

use crate::table::{Cell, Format, tabulate};
use crate::{CliError, Context, write_line};

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Display a list of all available plugins.
    List {
        /// An entry-point group (e.g. `aiida.data`).
        group: Option<String>,
        /// An entry point in that group.
        name: Option<String>,
    },
    /// AiiDA's plugin registry: every published plugin (cached in the instance folder).
    #[command(subcommand)]
    Registry(RegistryCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RegistryCommand {
    /// Download the registry into the cache, with each plugin's details.
    Update {
        /// Only the registry, not each plugin's details.
        #[arg(long)]
        no_info: bool,
    },
    /// List the registry's plugins: entry-point prefix, name, version and whether this `verdi` has it.
    List,
    /// Search the plugins by a regular expression over prefix, name, package, description and author.
    Search {
        /// The regular expression (e.g. `(?i)quantum`).
        pattern: String,
        /// Best matches first (prefix, name, package and author count 1, the description 0.5).
        #[arg(short, long)]
        ranked: bool,
    },
    /// Show a plugin of the registry.
    Show {
        /// Its entry-point prefix (e.g. `quantumespresso`).
        plugin: String,
        /// How to show it.
        #[arg(short, long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Find the plugin providing an entry point (`quantumespresso.pw`, `aiida.calculations:quantumespresso.pw`)
    /// or a node type (`data.quantumespresso.force_constants.ForceConstantsData.`).
    Find {
        /// The entry point or node type.
        entry_point: String,
    },
}

/// The layouts of `verdi plugin registry show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ShowFormat {
    /// Two columns, as aiida's client printed it.
    Table,
    /// aiida's `dict` form, as JSON.
    Map,
    /// The plugin's entry as JSON.
    Json,
}

/// Runs `verdi plugin ...`.
pub(crate) fn run(command: PluginCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        PluginCommand::List { group, name } => match plugin_list(group.clone(), name.clone(), out) {
            Err(CliError::Plugin(e)) => {
                let full = format!("{}:{}", group.unwrap_or_default(), name.unwrap_or_default());
                return Err(match provider_hint(context, &full) {
                    Some(hint) => CliError::Critical(format!("{}; {hint}", aiida::report::Chain(&e))),
                    None => CliError::Plugin(e),
                });
            }
            other => other?,
        },
        PluginCommand::Registry(command) => registry(command, context, out)?,
    }
    Ok(())
}

fn registry_error(e: RegistryError) -> CliError {
    CliError::Critical(aiida::report::Chain(&e).to_string())
}

/// `verdi plugin registry ...`.
fn registry(command: RegistryCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    let client = RegistryClient::for_instance(context.instance()).map_err(registry_error)?;
    match command {
        RegistryCommand::Update { no_info } => {
            write_line(out, format!("Report: downloading the plugin registry from {}", client.registry_url()));
            let mut warn = |e: &RegistryError, key: &str, _: &aiida_registry::Record| {
                tracing::warn!(plugin = key, "{}", aiida::report::Chain(e));
                Ok(())
            };
            let update = client.update(!no_info, None, Some(&mut warn)).map_err(registry_error)?;
            for key in &update.failed {
                write_line(out, format!("Warning: the details of plugin `{key}` could not be cached"));
            }
            write_line(
                out,
                format!("Success: {} plugins cached in {}", update.registry.len(), client.cache_dir().display()),
            );
        }
        RegistryCommand::List => {
            let registry = client.load_cached().map_err(registry_error)?;
            let mut rows = Vec::new();
            for key in registry.keys() {
                let entry = client.entry(key).map_err(registry_error)?;
                let Some(entry) = entry else { continue };
                let state = entry.install_state().to_string();
                let cells = [key.to_owned(), entry.name.clone(), entry.version.clone().unwrap_or_default(), state];
                rows.push(cells.into_iter().map(Cell::Str).collect());
            }
            let headers = ["Prefix", "Name", "Version", "Installed"];
            write_line(out, tabulate(&rows, &headers, Format::Simple, false));
        }
        RegistryCommand::Search { pattern, ranked } => {
            let regex = regex::Regex::new(&pattern)
                .map_err(|e| CliError::Usage(format!("Error: Invalid value for 'PATTERN': {e}")))?;
            let found = client.find_by_pattern(&regex, ranked).map_err(registry_error)?;
            if found.is_empty() {
                write_line(out, format!("Report: no plugin matches `{pattern}`"));
            }
            for entry in found {
                let description = entry.description.clone().unwrap_or_default();
                write_line(out, format!("* {} ({}): {description}", entry.key, entry.name));
            }
        }
        RegistryCommand::Show { plugin, format } => {
            let Some(entry) = client.entry(&plugin).map_err(registry_error)? else {
                return Err(CliError::Critical(format!(
                    "no plugin `{plugin}` in the registry (`verdi plugin registry search {plugin}` looks wider)"
                )));
            };
            let format = match format {
                ShowFormat::Table => InfoFormat::Table,
                ShowFormat::Map => InfoFormat::Map,
                ShowFormat::Json => InfoFormat::Json,
            };
            write_line(out, entry.format_info(format));
        }
        RegistryCommand::Find { entry_point } => {
            match client.find_for_entry_point(&entry_point).map_err(registry_error)? {
                Some(entry) => {
                    let install = entry.install_command().map(str::to_owned).unwrap_or_else(|e| e.to_string());
                    write_line(
                        out,
                        format!("{entry_point}: plugin `{}` ({}), {}", entry.key, entry.name, entry.install_state()),
                    );
                    write_line(out, format!("Install: {install}"));
                }
                None => {
                    return Err(CliError::Critical(format!("no plugin of the registry provides `{entry_point}`")));
                }
            }
        }
    }
    Ok(())
}

/// Where an entry point is not linked: the plugin that provides it, from the cached registry
/// (nothing when there is no cache: no download behind the user's back).
pub(crate) fn provider_hint(context: &Context, entry_point: &str) -> Option<String> {
    let client = RegistryClient::for_instance(context.instance()).ok()?;
    if !client.cache_openable() {
        return None;
    }
    let entry = client.find_for_entry_point(entry_point).ok()??;
    let install = entry.install_command().map(|c| format!(" (`{c}`)")).unwrap_or_default();
    Some(format!("it is provided by plugin `{}` ({}){install}, which this verdi does not link", entry.key, entry.name))
}

fn plugin_list(group: Option<String>, name: Option<String>, out: &mut dyn Write) -> Result<(), CliError> {
    match (group, name) {
        (None, _) => {
            write_line(out, "Report: available entry point groups:".to_owned());
            for group in plugins::GROUPS {
                write_line(out, format!("* {group}"));
            }
        }
        (Some(group), None) => {
            let found = plugins::select(&group, None);
            if found.is_empty() {
                write_line(out, format!("Report: no plugins found in group {group}"));
            } else {
                write_line(out, format!("Report: entry points in {group}:"));
                for ep in found {
                    write_line(out, format!("* {}", ep.name()));
                }
            }
        }
        (Some(group), Some(name)) => {
            let ep = plugins::get(&group, &name)?;
            write_line(out, format!("{}  (registered by {})", ep.full(), ep.source()));
        }
    }
    Ok(())
}
