//! A Rust plugin's manifest: the table `[package.metadata.aiida.plugin]` of its `Cargo.toml`,
//! published inside its `.crate`, where the hub reads what a Python plugin's wheel says in its
//! `entry_points.txt` (and more: the registry's fields a crate has no place for).
//!
//! ```toml
//! [package.metadata.aiida.plugin]
//! entry_point_prefix = "example"          # required: every AiiDA entry point is it or starts with `example.`
//! aiida_version = ">=2.9,<3"              # the AiiDA it supports (default: from its dependency on aiida)
//! development_status = "alpha"            # planning, pre-alpha, alpha, beta, stable, mature or inactive
//! visibility = "public"                   # or "hidden": in the hub, not in its list
//! display_name = "Example sequences"
//! deprecated_by = "aiida-better-sequence" # a crate that replaces it
//! links = { documentation = "https://example.org/docs" }
//!
//! [package.metadata.aiida.plugin.entry_points."aiida.data"]
//! "example.sequence" = "aiida_sequence::SEQUENCE"  # name -> what registers it
//! ```
//!
//! [`PluginManifest::compare_linked`] checks it against the entry points the crate registers in
//! the running binary: a plugin's test keeps the two equal.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The development statuses aiida-registry knows, from least to most mature (and `inactive`).
pub const DEVELOPMENT_STATUSES: [&str; 7] = ["planning", "pre-alpha", "alpha", "beta", "stable", "mature", "inactive"];

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It is not TOML, or the table has fields of the wrong type.
    #[error("the plugin manifest is invalid: {0}")]
    Invalid(String),
    /// There is no manifest table.
    #[error(
        "Cargo.toml has no [package.metadata.aiida.plugin] table: add one with the crate's entry_point_prefix and \
         entry_points (see aiida_registry::manifest)"
    )]
    Missing,
}

/// Whether the hub lists a plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Listed.
    #[default]
    Public,
    /// Served when asked for by name, not listed.
    Hidden,
}

/// A plugin crate's manifest, with the crate's name and version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginManifest {
    /// The crate's name (`[package] name`).
    pub package: String,
    /// The crate's version (`[package] version`).
    pub version: String,
    /// What its entry points start with.
    pub entry_point_prefix: String,
    /// Its entry points: group -> name -> the item that registers it.
    pub entry_points: BTreeMap<String, BTreeMap<String, String>>,
    /// The AiiDA versions it supports.
    pub aiida_version: Option<String>,
    /// One of [`DEVELOPMENT_STATUSES`].
    pub development_status: Option<String>,
    /// Listed or not.
    pub visibility: Visibility,
    /// A name for people.
    pub display_name: Option<String>,
    /// The crate that replaces it.
    pub deprecated_by: Option<String>,
    /// Documentation, support, issues, ...
    pub links: BTreeMap<String, String>,
    /// The manifest's schema (1).
    pub schema_version: u32,
}

/// How a manifest and the entry points a binary links differ (both empty: they agree).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkedDifference {
    /// Declared, but not registered by the crate (`group:name`).
    pub missing: Vec<String>,
    /// Registered by the crate, but not declared.
    pub undeclared: Vec<String>,
}

#[derive(Deserialize)]
struct CargoToml {
    package: Option<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: Option<toml::Value>,
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    aiida: Option<AiidaMetadata>,
}

#[derive(Deserialize)]
struct AiidaMetadata {
    plugin: Option<Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    entry_point_prefix: String,
    #[serde(default)]
    entry_points: BTreeMap<String, BTreeMap<String, String>>,
    aiida_version: Option<String>,
    development_status: Option<String>,
    #[serde(default)]
    visibility: Visibility,
    display_name: Option<String>,
    deprecated_by: Option<String>,
    #[serde(default)]
    links: BTreeMap<String, String>,
    #[serde(default = "one")]
    schema_version: u32,
}

fn one() -> u32 {
    1
}

impl PluginManifest {
    /// The manifest in the text of a `Cargo.toml`.
    pub fn parse(cargo_toml: &str) -> Result<PluginManifest, ManifestError> {
        let parsed: CargoToml =
            toml::from_str(cargo_toml).map_err(|e| ManifestError::Invalid(e.message().to_owned()))?;
        let package = parsed.package.ok_or(ManifestError::Missing)?;
        let table = package.metadata.and_then(|m| m.aiida).and_then(|a| a.plugin).ok_or(ManifestError::Missing)?;
        // A version inherited from the workspace (`version.workspace = true`) is not known here.
        let version = match package.version {
            Some(toml::Value::String(version)) => version,
            _ => String::new(),
        };
        Ok(PluginManifest {
            package: package.name,
            version,
            entry_point_prefix: table.entry_point_prefix,
            entry_points: table.entry_points,
            aiida_version: table.aiida_version,
            development_status: table.development_status,
            visibility: table.visibility,
            display_name: table.display_name,
            deprecated_by: table.deprecated_by,
            links: table.links,
            schema_version: table.schema_version,
        })
    }

    /// The manifest of the `Cargo.toml` at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<PluginManifest, ManifestError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| ManifestError::Io { path: path.to_owned(), source })?;
        PluginManifest::parse(&text)
    }

    /// What is wrong with it, as the registry's checks would say: names outside the prefix, an
    /// unknown development status or schema.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let prefix = &self.entry_point_prefix;
        if !crate::format::valid_key(prefix) {
            problems.push(format!("the entry_point_prefix {prefix:?} is not a valid entry-point name"));
        }
        for (group, names) in &self.entry_points {
            if !group.starts_with("aiida.") {
                continue;
            }
            for name in names.keys() {
                if name != prefix && !name.starts_with(&format!("{prefix}.")) {
                    problems.push(format!("entry point {group}:{name} does not start with the prefix `{prefix}.`"));
                }
            }
        }
        if let Some(status) = &self.development_status
            && !DEVELOPMENT_STATUSES.contains(&status.as_str())
        {
            problems.push(format!("development_status {status:?} is not one of {}", DEVELOPMENT_STATUSES.join(", ")));
        }
        if self.schema_version != 1 {
            problems.push(format!("schema_version {} is not known (1 is)", self.schema_version));
        }
        problems
    }

    /// The AiiDA entry points it declares, as `group:name`, sorted.
    pub fn declared(&self) -> Vec<String> {
        self.entry_points
            .iter()
            .filter(|(group, _)| group.starts_with("aiida."))
            .flat_map(|(group, names)| names.keys().map(move |name| format!("{group}:{name}")))
            .collect()
    }

    /// How it differs from the entry points its crate registers in this binary (those whose
    /// package, as `aiida::entry_point!` records it, is this crate).
    pub fn compare_linked(&self) -> LinkedDifference {
        let mut registered: Vec<String> = aiida::plugins::entry_points()
            .iter()
            .filter(|ep| ep.package().is_some_and(|(name, _)| name == self.package))
            .map(|ep| ep.full())
            .collect();
        registered.sort();
        registered.dedup();
        let declared = self.declared();
        LinkedDifference {
            missing: declared.iter().filter(|ep| !registered.contains(ep)).cloned().collect(),
            undeclared: registered.into_iter().filter(|ep| !declared.contains(ep)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARGO_TOML: &str = r#"
[package]
name = "aiida-diff"
version = "2.1.0"

[package.metadata.aiida.plugin]
entry_point_prefix = "diff"
aiida_version = ">=2.9,<3"
development_status = "beta"
visibility = "hidden"
links = { documentation = "https://example.org/docs" }

[package.metadata.aiida.plugin.entry_points."aiida.calculations"]
"diff" = "aiida_diff::DiffCalculation"
"diff.fast" = "aiida_diff::Fast"

[package.metadata.aiida.plugin.entry_points.console_scripts]
"aiida-diff" = "aiida_diff::main"
"#;

    #[test]
    fn the_table_is_read_with_the_crate_s_name_and_version() {
        let manifest = PluginManifest::parse(CARGO_TOML).unwrap();
        assert_eq!((manifest.package.as_str(), manifest.version.as_str()), ("aiida-diff", "2.1.0"));
        assert_eq!(manifest.entry_point_prefix, "diff");
        assert_eq!(manifest.declared(), ["aiida.calculations:diff", "aiida.calculations:diff.fast"]);
        assert_eq!(manifest.visibility, Visibility::Hidden);
        assert_eq!(manifest.links["documentation"], "https://example.org/docs");
        assert_eq!(manifest.schema_version, 1);
        assert!(manifest.problems().is_empty(), "{:?}", manifest.problems());
    }

    // Registered by this test binary (package `aiida-registry`).
    aiida::entry_point!("aiida.data", "mine.linked", 0u8);
    aiida::entry_point!("aiida.data", "mine.undeclared", 0u8);

    #[test]
    fn the_manifest_is_compared_with_what_the_crate_registers() {
        let text = format!(
            "[package]\nname = \"{}\"\nversion = \"0.1.0\"\n[package.metadata.aiida.plugin]\n\
             entry_point_prefix = \"mine\"\n[package.metadata.aiida.plugin.entry_points.\"aiida.data\"]\n\
             \"mine.linked\" = \"x\"\n\"mine.missing\" = \"y\"\n",
            env!("CARGO_PKG_NAME")
        );
        let difference = PluginManifest::parse(&text).unwrap().compare_linked();
        assert_eq!(difference.missing, ["aiida.data:mine.missing"]);
        assert_eq!(difference.undeclared, ["aiida.data:mine.undeclared"]);
    }

    #[test]
    fn what_is_wrong_is_said() {
        let missing = PluginManifest::parse("[package]\nname = \"x\"\nversion = \"1.0.0\"\n").unwrap_err();
        assert!(missing.to_string().starts_with("Cargo.toml has no [package.metadata.aiida.plugin] table"));
        let err = PluginManifest::parse("[package]\nname = \"x\"\n[package.metadata.aiida.plugin]\nprefix = \"x\"\n")
            .unwrap_err();
        assert!(err.to_string().starts_with("the plugin manifest is invalid: "), "{err}");
        let text = CARGO_TOML
            .replace("\"diff.fast\"", "\"fastdiff\"")
            .replace("\"beta\"", "\"ready\"")
            .replace("[package.metadata.aiida.plugin]", "[package.metadata.aiida.plugin]\nschema_version = 2");
        let problems = PluginManifest::parse(&text).unwrap().problems();
        assert_eq!(
            problems,
            [
                "entry point aiida.calculations:fastdiff does not start with the prefix `diff.`",
                "development_status \"ready\" is not one of planning, pre-alpha, alpha, beta, stable, mature, inactive",
                "schema_version 2 is not known (1 is)",
            ]
        );
    }
}
