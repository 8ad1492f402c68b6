//! The hub's list of plugins: aiida-registry's `plugins.yaml` (a distribution name mapped to its
//! `entry_point_prefix`, `code_home`, `pip_url`, `plugin_info`, `documentation_url`,
//! `package_name`, and the deprecated `development_status`), with two additions of ours:
//! `crates_io` (the crate of a Rust plugin) and `visibility` (`hidden`: served when asked for
//! by name, not listed; `blocked`: not served at all).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a source list cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the plugin source list is invalid: {0}")]
pub struct ListError(String);

/// Whether and how the hub serves a plugin of the list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListVisibility {
    /// Listed and served.
    #[default]
    Public,
    /// Served when asked for by name, not listed.
    Hidden,
    /// Not served.
    Blocked,
}

/// Where a plugin's releases are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageIndex {
    /// On PyPI, as this project.
    Pypi(String),
    /// On crates.io, as this crate.
    CratesIo(String),
    /// Nowhere the hub reads (a `pip_url` that is an address, or none).
    None,
}

/// One plugin of the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    /// The distribution name (the list's key).
    #[serde(skip)]
    pub name: String,
    /// What its entry points start with.
    pub entry_point_prefix: String,
    /// Its repository or home page.
    pub code_home: String,
    /// A PyPI name, or anything pip installs from.
    pub pip_url: Option<String>,
    /// Its crate on crates.io (a Rust plugin).
    pub crates_io: Option<String>,
    /// A build file to read when the index cannot say.
    pub plugin_info: Option<String>,
    /// Its documentation.
    pub documentation_url: Option<String>,
    /// Where `__version__` is (documented by aiida-registry, unused).
    pub version_file: Option<String>,
    /// Deprecated: the status, overriding the classifiers' (W006).
    pub development_status: Option<String>,
    /// The package as imported (default: the name with `_` for `-`).
    pub package_name: Option<String>,
    /// Listed, hidden or blocked.
    #[serde(default)]
    pub visibility: ListVisibility,
}

impl SourceEntry {
    /// Where its releases are.
    pub fn index(&self) -> PackageIndex {
        if let Some(krate) = &self.crates_io {
            return PackageIndex::CratesIo(krate.clone());
        }
        match &self.pip_url {
            Some(pip)
                if !pip.is_empty() && pip.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                PackageIndex::Pypi(pip.clone())
            }
            _ => PackageIndex::None,
        }
    }

    /// The package as imported.
    pub fn package_name(&self) -> String {
        self.package_name.clone().unwrap_or_else(|| self.name.replace('-', "_"))
    }
}

/// The list, by distribution name.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceList {
    entries: BTreeMap<String, SourceEntry>,
}

impl SourceList {
    /// The list in `text` (`plugins.yaml`; JSON is YAML too): every entry checked for its required
    /// keys and known fields, prefixes unique.
    pub fn parse(text: &str) -> Result<SourceList, ListError> {
        let raw: BTreeMap<String, SourceEntry> = serde_yaml_ng::from_str(text).map_err(|e| ListError(e.to_string()))?;
        let mut prefixes: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, entry) in &raw {
            if let Some(other) = prefixes.insert(&entry.entry_point_prefix, name) {
                return Err(ListError(format!(
                    "`{other}` and `{name}` have the same entry_point_prefix `{}`",
                    entry.entry_point_prefix
                )));
            }
        }
        let entries = raw.into_iter().map(|(name, entry)| (name.clone(), SourceEntry { name, ..entry })).collect();
        Ok(SourceList { entries })
    }

    /// The plugins, by name.
    pub fn entries(&self) -> impl Iterator<Item = &SourceEntry> {
        self.entries.values()
    }

    /// The plugin `name`.
    pub fn get(&self, name: &str) -> Option<&SourceEntry> {
        self.entries.get(name)
    }

    /// How many plugins it lists.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it lists none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The checks the list alone allows, with aiida-registry's codes: W006 (a deprecated
/// `development_status`), W007 (an unknown status), W009 (a package name against the prefix's
/// convention).
pub fn list_checks(entry: &SourceEntry) -> Vec<(&'static str, String)> {
    let mut checks = Vec::new();
    if let Some(status) = &entry.development_status {
        checks.push((
            "W006",
            "`development_status` in the list is deprecated: give it in the package's classifiers".to_owned(),
        ));
        if !aiida_registry::manifest::DEVELOPMENT_STATUSES.contains(&status.as_str()) {
            checks.push(("W007", format!("development status `{status}` is not a known one")));
        }
    }
    let expected = format!("aiida_{}", entry.entry_point_prefix.to_lowercase());
    if !entry.entry_point_prefix.is_empty() && entry.package_name().to_lowercase() != expected {
        checks.push((
            "W009",
            format!("the package `{}` does not follow the convention `{expected}`", entry.package_name()),
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"
aiida-diff:
  entry_point_prefix: diff
  code_home: https://github.com/o/aiida-diff
  pip_url: aiida-diff
  documentation_url: https://aiida-diff.readthedocs.io
aiida-rusty:
  entry_point_prefix: rusty
  code_home: https://github.com/o/aiida-rusty
  crates_io: aiida-rusty
  visibility: hidden
aiida-git:
  entry_point_prefix: gitonly
  code_home: https://github.com/o/aiida-git
  pip_url: git+https://github.com/o/aiida-git
  development_status: beta
  package_name: aiida_git
"#;

    #[test]
    fn aiida_registry_s_list_is_read_with_our_additions() {
        let list = SourceList::parse(LIST).unwrap();
        assert_eq!(list.len(), 3);
        let diff = list.get("aiida-diff").unwrap();
        assert_eq!((diff.name.as_str(), diff.package_name().as_str()), ("aiida-diff", "aiida_diff"));
        assert_eq!(diff.index(), PackageIndex::Pypi("aiida-diff".to_owned()));
        let rusty = list.get("aiida-rusty").unwrap();
        assert_eq!(
            (rusty.index(), rusty.visibility),
            (PackageIndex::CratesIo("aiida-rusty".to_owned()), ListVisibility::Hidden)
        );
        let git = list.get("aiida-git").unwrap();
        assert_eq!(git.index(), PackageIndex::None, "an address is not an index");
        assert_eq!(
            list_checks(git),
            [
                (
                    "W006",
                    "`development_status` in the list is deprecated: give it in the package's classifiers".to_owned()
                ),
                ("W009", "the package `aiida_git` does not follow the convention `aiida_gitonly`".to_owned()),
            ]
        );
        assert!(list_checks(diff).is_empty());
    }

    #[test]
    fn what_cannot_be_a_list_says_why() {
        let err = SourceList::parse("aiida-x:\n  code_home: https://x\n").unwrap_err().to_string();
        assert!(err.contains("missing field `entry_point_prefix`"), "{err}");
        let err = SourceList::parse("aiida-x:\n  entry_point_prefix: x\n  code_home: h\n  colour: red\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
        let twice = "a:\n  entry_point_prefix: p\n  code_home: h\nb:\n  entry_point_prefix: p\n  code_home: h\n";
        assert_eq!(
            SourceList::parse(twice).unwrap_err().to_string(),
            "the plugin source list is invalid: `a` and `b` have the same entry_point_prefix `p`"
        );
        assert!(
            SourceList::parse("{\"a\": {\"entry_point_prefix\": \"a\", \"code_home\": \"h\"}}").is_ok(),
            "JSON too"
        );
    }
}
