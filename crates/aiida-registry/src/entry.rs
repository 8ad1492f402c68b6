//! One plugin's details ([`RegistryEntry`]): what the registry says of it, and whether this
//! binary has it ([`InstallState`], from the entry points linked in).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::RegistryError;
use crate::format::{Record, entry_points_of};

/// A plugin of the registry, with its entry points: what the cache keeps per plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryEntry {
    /// The base entry-point name, e.g. `quantumespresso`.
    pub key: String,
    /// The distribution name, e.g. `aiida-quantumespresso`.
    pub name: String,
    /// The package as installed, e.g. `aiida_quantumespresso`.
    pub package_name: String,
    /// Its version, as the registry knows it.
    pub version: Option<String>,
    /// What it does.
    pub description: Option<String>,
    /// Its author.
    pub author: Option<String>,
    /// The author's e-mail.
    pub author_email: Option<String>,
    /// Its licence.
    pub license: Option<String>,
    /// Its home page (the code's).
    pub home_url: Option<String>,
    /// Its documentation.
    pub documentation_url: Option<String>,
    /// `planning`, `pre-alpha`, `alpha`, `beta`, `stable`, `mature` or `inactive`.
    pub development_status: Option<String>,
    /// The aiida-core versions it supports, e.g. `>=2.0,<3`.
    pub aiida_version: Option<String>,
    /// What pip installs it from.
    pub pip_url: Option<String>,
    /// The command that installs it, as the registry gives it.
    pub install_command: Option<String>,
    /// Its entry points by group (`aiida.calculations`, `console_scripts`, ...), name -> target.
    pub entry_points: BTreeMap<String, BTreeMap<String, String>>,
}

/// Whether this binary has a plugin: its entry points, and the version of the package that
/// registers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallState {
    /// None of its entry points is linked.
    NotInstalled,
    /// Every one is, from the registry's version (or the registry gives none).
    Installed {
        /// The linked version.
        version: String,
    },
    /// Some are: these are missing (`group:name`).
    Partial {
        /// The missing entry points.
        missing: Vec<String>,
    },
    /// Every one is, from another version than the registry's.
    OtherVersion {
        /// The linked version.
        installed: String,
        /// The registry's.
        registry: String,
    },
}

impl std::fmt::Display for InstallState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallState::NotInstalled => f.write_str("not installed"),
            InstallState::Installed { version } => write!(f, "installed ({version})"),
            InstallState::Partial { missing } => write!(f, "partly installed: missing {}", missing.join(", ")),
            InstallState::OtherVersion { installed, registry } => {
                write!(f, "another version installed: {installed} (the registry has {registry})")
            }
        }
    }
}

/// How [`RegistryEntry::format_info`] lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoFormat {
    /// Two aligned columns, as aiida's `format_info(format="tabulate")`.
    Table,
    /// aiida's `format_info(format="dict")`, as JSON.
    Map,
    /// The entry itself, as JSON.
    Json,
}

impl RegistryEntry {
    /// The entry of a record of today's registry (everything is in the record).
    pub fn from_record(record: &Record) -> RegistryEntry {
        let text = |field: &str| record.text(field).map(str::to_owned);
        let install_command = text("pip_install_cmd")
            .or_else(|| record.raw.get("pip_url").and_then(Value::as_str).map(|url| format!("pip install {url}")));
        RegistryEntry {
            key: record.key.clone(),
            name: record.name.clone(),
            package_name: record.package_name.clone(),
            version: record.version.clone(),
            description: text("description"),
            author: text("author"),
            author_email: text("author_email"),
            license: text("license"),
            home_url: text("code_home").or_else(|| text("home_page")),
            documentation_url: text("documentation_url"),
            development_status: text("development_status"),
            aiida_version: text("aiida_version"),
            pip_url: text("pip_url"),
            install_command,
            entry_points: record.entry_points.clone(),
        }
    }

    /// The entry of a record of the historic registry, with the `setup.json` its `plugin_info`
    /// points to, which must hold what aiida's client required.
    pub fn from_historic(record: &Record, setup: &Value) -> Result<RegistryEntry, RegistryError> {
        let url = record.info_url.clone().unwrap_or_default();
        let required = |key: &str| -> Result<String, RegistryError> {
            setup.get(key).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| RegistryError::InvalidEntry {
                plugin: record.key.clone(),
                missing: key.to_owned(),
                url: url.clone(),
            })
        };
        let pip_url = record.text("pip_url").map(str::to_owned);
        Ok(RegistryEntry {
            key: record.key.clone(),
            name: required("name")?,
            package_name: record.package_name.clone(),
            version: Some(required("version")?),
            description: Some(required("description")?),
            author: Some(required("author")?),
            author_email: Some(required("author_email")?),
            license: Some(required("license")?),
            home_url: Some(required("url")?),
            documentation_url: record.text("documentation_url").map(str::to_owned),
            development_status: record.text("state").map(str::to_owned),
            aiida_version: None,
            install_command: pip_url.as_ref().map(|url| format!("pip install {url}")),
            pip_url,
            entry_points: entry_points_of(setup.get("entry_points")),
        })
    }

    /// The categories of its AiiDA entry points (`calculations` for `aiida.calculations`).
    pub fn categories(&self) -> Vec<String> {
        self.entry_points.keys().filter_map(|group| group.strip_prefix("aiida.")).map(str::to_owned).collect()
    }

    /// Its AiiDA entry-point names by category, sorted.
    pub fn entry_points_by_category(&self) -> BTreeMap<String, Vec<String>> {
        self.entry_points
            .iter()
            .filter_map(|(group, names)| {
                Some((group.strip_prefix("aiida.")?.to_owned(), names.keys().cloned().collect()))
            })
            .collect()
    }

    /// Every AiiDA entry point it declares, as `group:name`.
    pub fn entry_point_spec(&self) -> Vec<String> {
        self.entry_points
            .iter()
            .filter(|(group, _)| group.starts_with("aiida."))
            .flat_map(|(group, names)| names.keys().map(move |name| format!("{group}:{name}")))
            .collect()
    }

    /// Its command-line programs (`console_scripts`).
    pub fn cli_apps(&self) -> Vec<String> {
        self.entry_points.get("console_scripts").map(|n| n.keys().cloned().collect()).unwrap_or_default()
    }

    /// Its graphical programs (`gui_scripts`).
    pub fn gui_apps(&self) -> Vec<String> {
        self.entry_points.get("gui_scripts").map(|n| n.keys().cloned().collect()).unwrap_or_default()
    }

    /// The command that installs it.
    pub fn install_command(&self) -> Result<&str, RegistryError> {
        self.install_command.as_deref().ok_or_else(|| RegistryError::NoInstallSource { plugin: self.key.clone() })
    }

    /// Whether this binary has it: its AiiDA entry points against the ones linked in (and visible
    /// in the caller's entry-point scope), and the linked package's version against the
    /// registry's.
    pub fn install_state(&self) -> InstallState {
        let linked: BTreeMap<String, Option<String>> = aiida::plugins::entry_points()
            .iter()
            .map(|ep| (ep.full(), ep.package().map(|(_, version)| version.to_owned())))
            .collect();
        let declared = self.entry_point_spec();
        let missing: Vec<String> = declared.iter().filter(|ep| !linked.contains_key(*ep)).cloned().collect();
        if declared.is_empty() || missing.len() == declared.len() {
            return InstallState::NotInstalled;
        }
        if !missing.is_empty() {
            return InstallState::Partial { missing };
        }
        let versions: Vec<&str> = declared.iter().filter_map(|ep| linked[ep].as_deref()).collect();
        let installed = versions.first().map(|v| (*v).to_owned()).or_else(|| self.version.clone()).unwrap_or_default();
        match &self.version {
            Some(registry) if versions.iter().any(|v| v != registry) => {
                InstallState::OtherVersion { installed, registry: registry.clone() }
            }
            _ => InstallState::Installed { version: installed },
        }
    }

    /// aiida's `format_info(format="dict")`, with `package` for its `package:`.
    pub fn info_map(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("name".into(), json!(self.name));
        map.insert("version".into(), json!(self.version));
        map.insert("installed".into(), json!(self.install_state().to_string()));
        map.insert("pip url".into(), json!(self.pip_url));
        map.insert("project home".into(), json!(self.home_url));
        map.insert("author".into(), json!(self.author));
        map.insert("author email".into(), json!(self.author_email));
        map.insert("package".into(), json!(self.package_name));
        map.insert("description".into(), json!(self.description));
        map.insert("plugins".into(), json!(self.entry_points_by_category()));
        map.insert("cli apps".into(), json!(self.cli_apps()));
        map.insert("gui apps".into(), json!(self.gui_apps()));
        map
    }

    /// Its details as text: aiida's table (two aligned columns, the rows of aiida's client), its
    /// map as JSON, or the entry as JSON.
    pub fn format_info(&self, format: InfoFormat) -> String {
        match format {
            InfoFormat::Map => serde_json::to_string_pretty(&self.info_map()).unwrap_or_default(),
            InfoFormat::Json => serde_json::to_string_pretty(self).unwrap_or_default(),
            InfoFormat::Table => {
                let or_empty = |v: &Option<String>| v.clone().unwrap_or_default();
                let mut rows: Vec<(String, String)> = vec![
                    ("Name".into(), self.name.clone()),
                    ("Version".into(), or_empty(&self.version)),
                    ("Installed".into(), self.install_state().to_string()),
                    ("Pip url".into(), or_empty(&self.pip_url)),
                    ("Project home".into(), or_empty(&self.home_url)),
                    ("Author".into(), or_empty(&self.author)),
                    ("Author Email".into(), or_empty(&self.author_email)),
                    ("Package".into(), self.package_name.clone()),
                    ("Description".into(), or_empty(&self.description)),
                ];
                let plugins = self.entry_points_by_category();
                if !plugins.is_empty() {
                    rows.push(("Plugins:".into(), String::new()));
                    for (category, names) in plugins {
                        let mut title = category.clone();
                        if let Some(first) = title.get_mut(..1) {
                            first.make_ascii_uppercase();
                        }
                        rows.push((String::new(), format!("{title}:")));
                        rows.extend(names.into_iter().map(|name| (String::new(), name)));
                        rows.push((String::new(), String::new()));
                    }
                }
                for (title, apps) in [("CLI apps:", self.cli_apps()), ("GUI apps:", self.gui_apps())] {
                    if !apps.is_empty() {
                        rows.push((title.into(), String::new()));
                        rows.extend(apps.into_iter().map(|app| (String::new(), app)));
                    }
                }
                let width = rows.iter().map(|(left, _)| left.chars().count()).max().unwrap_or(0);
                rows.iter()
                    .map(|(left, right)| format!("{left:<width$}  {right}").trim_end().to_owned())
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    }
}
