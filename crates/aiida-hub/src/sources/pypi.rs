//! The Python package index, for Python plugins: a project's latest release, its metadata (the
//! fields aiida-registry copies from PyPI's `info`), and its entry points, read from the
//! `*.dist-info/entry_points.txt` of the release's wheel.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Http, SourceError};

const NAME: &str = "PyPI";

/// The largest wheel read.
const WHEEL_LIMIT: u64 = 256 * 1024 * 1024;

/// PyPI's JSON API at a configurable address (the wheels' addresses come from its answers).
#[derive(Debug, Clone)]
pub struct Pypi {
    base: String,
    http: Http,
}

/// A release of a project, as PyPI lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct PypiRelease {
    /// The project.
    pub name: String,
    /// The version.
    pub version: String,
    /// Whether it was withdrawn (every file yanked).
    pub yanked: bool,
    /// Its wheel, if it has one.
    pub wheel_url: Option<String>,
}

impl Default for Pypi {
    fn default() -> Self {
        Pypi::new("https://pypi.org")
    }
}

impl Pypi {
    /// The same source, trying `attempts` times in all (a connection failure, a timeout, a 5xx
    /// or a 429 is tried again), waiting `initial` before the second, twice as long each time.
    pub fn with_retries(mut self, attempts: u32, initial: Duration) -> Pypi {
        self.http = self.http.with_retries(attempts, initial);
        self
    }

    /// The API at `base` (e.g. `https://pypi.org`); 30 s to answer.
    pub fn new(base: impl Into<String>) -> Pypi {
        Pypi { base: base.into().trim_end_matches('/').to_owned(), http: Http::new(Duration::from_secs(30)) }
    }

    /// `GET /pypi/{name}[/{version}]/json`; `None` when PyPI has no such project (or release).
    fn project(&self, name: &str, version: Option<&str>) -> Result<Option<(String, Value)>, SourceError> {
        let url = match version {
            Some(version) => format!("{}/pypi/{name}/{version}/json", self.base),
            None => format!("{}/pypi/{name}/json", self.base),
        };
        Ok(self.http.get_json(NAME, &url, 64 * 1024 * 1024)?.map(|value| (url, value)))
    }

    /// The latest release of project `name` (PyPI's `info.version`); `None` when there is no
    /// such project.
    pub fn latest(&self, name: &str) -> Result<Option<PypiRelease>, SourceError> {
        let Some((url, project)) = self.project(name, None)? else { return Ok(None) };
        release(name, &url, &project).map(Some)
    }

    /// The registry's metadata of `name` at `version`, as aiida-registry takes it from PyPI:
    /// `summary` as `description`, `author`, `author_email`, `license`, `home_page`,
    /// `classifiers`, `version`; `release_date` (the first file's upload day); and
    /// `aiida_version`, the specifier of its last requirement on aiida-core.
    pub fn metadata(&self, name: &str, version: &str) -> Result<Map<String, Value>, SourceError> {
        let (url, project) = self.release_record(name, version)?;
        metadata_in(&url, &project)
    }

    /// The entry points of `name` at `version`, from its wheel's `entry_points.txt`: group ->
    /// name -> target. A release without a wheel is an error (aiida-registry's W019).
    pub fn entry_points(&self, name: &str, version: &str) -> Result<EntryPoints, SourceError> {
        let (url, project) = self.release_record(name, version)?;
        self.entry_points_in(name, version, &url, &project)
    }

    /// [`metadata`](Self::metadata) and [`entry_points`](Self::entry_points) of a release, with
    /// one request for its JSON.
    pub fn metadata_and_entry_points(
        &self,
        name: &str,
        version: &str,
    ) -> Result<(Map<String, Value>, EntryPoints), SourceError> {
        let (url, project) = self.release_record(name, version)?;
        Ok((metadata_in(&url, &project)?, self.entry_points_in(name, version, &url, &project)?))
    }

    fn entry_points_in(
        &self,
        name: &str,
        version: &str,
        url: &str,
        project: &Value,
    ) -> Result<EntryPoints, SourceError> {
        let wheel = release(name, url, project)?.wheel_url.ok_or_else(|| SourceError::Malformed {
            source_name: NAME,
            what: url.to_owned(),
            reason: format!("{name} {version} has no wheel, so no entry points can be read (W019)"),
        })?;
        let malformed = |reason: String| SourceError::Malformed { source_name: NAME, what: wheel.clone(), reason };
        let body = self.http.get(NAME, &wheel, WHEEL_LIMIT)?.ok_or_else(|| SourceError::Status {
            source_name: NAME,
            what: wheel.clone(),
            status: 404,
        })?;
        let mut archive =
            zip::ZipArchive::new(std::io::Cursor::new(body)).map_err(|e| malformed(format!("not a wheel: {e}")))?;
        for index in 0..archive.len() {
            let mut file = archive.by_index(index).map_err(|e| malformed(format!("not a wheel: {e}")))?;
            let path = file.name().to_owned();
            if path.ends_with(".dist-info/entry_points.txt") && path.matches('/').count() == 1 {
                let mut text = String::new();
                file.read_to_string(&mut text).map_err(|e| malformed(format!("{path} is not text: {e}")))?;
                return Ok(parse_entry_points_txt(&text));
            }
        }
        // A wheel with no entry points declares none.
        Ok(BTreeMap::new())
    }

    fn release_record(&self, name: &str, version: &str) -> Result<(String, Value), SourceError> {
        self.project(name, Some(version))?.ok_or_else(|| SourceError::Status {
            source_name: NAME,
            what: format!("{}/pypi/{name}/{version}/json", self.base),
            status: 404,
        })
    }
}

/// Entry points: group -> name -> target.
pub type EntryPoints = BTreeMap<String, BTreeMap<String, String>>;

/// The registry's metadata in a release's JSON (see [`Pypi::metadata`]).
fn metadata_in(url: &str, project: &Value) -> Result<Map<String, Value>, SourceError> {
    let info = project.get("info").ok_or_else(|| SourceError::Malformed {
        source_name: NAME,
        what: url.to_owned(),
        reason: "no `info` object".to_owned(),
    })?;
    let mut metadata = Map::new();
    for (from, to) in [
        ("summary", "description"),
        ("author", "author"),
        ("author_email", "author_email"),
        ("license", "license"),
        ("home_page", "home_page"),
        ("classifiers", "classifiers"),
        ("version", "version"),
    ] {
        let value = info
            .get(from)
            .filter(|v| !v.is_null() && v.as_str() != Some("") && v.as_array().is_none_or(|a| !a.is_empty()));
        if let Some(value) = value {
            metadata.insert(to.into(), value.clone());
        }
    }
    let uploaded = project.get("urls").and_then(Value::as_array).and_then(|files| files.first());
    if let Some(day) = uploaded.and_then(|f| f.get("upload_time")).and_then(Value::as_str).and_then(|t| t.get(..10)) {
        metadata.insert("release_date".into(), json!(day));
    }
    let requirements: Vec<&str> = info
        .get("requires_dist")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(specifier) = aiida_requirement(&requirements) {
        metadata.insert("aiida_version".into(), json!(specifier));
    }
    Ok(metadata)
}

/// The release a project's (or release's) JSON describes.
fn release(name: &str, url: &str, project: &Value) -> Result<PypiRelease, SourceError> {
    let version = project.pointer("/info/version").and_then(Value::as_str).ok_or_else(|| SourceError::Malformed {
        source_name: NAME,
        what: url.to_owned(),
        reason: "no `info.version`".to_owned(),
    })?;
    let files = project.get("urls").and_then(Value::as_array).cloned().unwrap_or_default();
    let yanked = !files.is_empty() && files.iter().all(|f| f.get("yanked").and_then(Value::as_bool) == Some(true));
    let wheel_url = files
        .iter()
        .find(|f| f.get("packagetype").and_then(Value::as_str) == Some("bdist_wheel"))
        .and_then(|f| f.get("url"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(PypiRelease { name: name.to_owned(), version: version.to_owned(), yanked, wheel_url })
}

/// `entry_points.txt`: INI sections (groups) of `name = target` lines, case kept, `#` and `;`
/// comments skipped.
pub fn parse_entry_points_txt(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut groups: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut group: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            group = Some(name.trim().to_owned());
            groups.entry(name.trim().to_owned()).or_default();
        } else if let (Some(group), Some((name, target))) = (&group, line.split_once('=')) {
            groups.entry(group.clone()).or_default().insert(name.trim().to_owned(), target.trim().to_owned());
        }
    }
    groups
}

/// The version specifier of the last requirement on aiida-core (`aiida-core`, `aiida_core` or
/// `aiida`), without markers: `aiida-core (>=2.0,<3)` and `aiida-core>=2.0,<3; extra == "x"` give
/// `>=2.0,<3`.
pub fn aiida_requirement(requirements: &[&str]) -> Option<String> {
    requirements.iter().rev().find_map(|requirement| {
        let requirement = requirement.split(';').next().unwrap_or_default().trim();
        let end = requirement.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'));
        let (name, rest) = requirement.split_at(end.unwrap_or(requirement.len()));
        let name = name.to_ascii_lowercase().replace('_', "-");
        if name != "aiida-core" && name != "aiida" {
            return None;
        }
        let rest = rest.trim();
        let rest = if rest.starts_with('[') { rest.split_once(']').map_or("", |(_, r)| r).trim() } else { rest };
        let specifier = rest.trim_start_matches('(').trim_end_matches(')').replace(' ', "");
        Some(if specifier.is_empty() { "*".to_owned() } else { specifier })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_txt_is_read_as_setuptools_writes_it() {
        let text = "[aiida.calculations]\ndiff = aiida_diff.calculations:DiffCalculation\n\n# a comment\n\
                    [console_scripts]\naiida-diff = aiida_diff.cli:cli\n[Empty]\n";
        let groups = parse_entry_points_txt(text);
        assert_eq!(groups["aiida.calculations"]["diff"], "aiida_diff.calculations:DiffCalculation");
        assert_eq!(groups["console_scripts"]["aiida-diff"], "aiida_diff.cli:cli");
        assert!(groups["Empty"].is_empty(), "case kept");
    }

    #[test]
    fn the_aiida_requirement_is_the_last_one_without_markers() {
        assert_eq!(aiida_requirement(&["numpy", "aiida-core (>=2.0,<3)"]).as_deref(), Some(">=2.0,<3"));
        assert_eq!(aiida_requirement(&["aiida_core[atomic_tools]>=2.5; extra == \"x\""]).as_deref(), Some(">=2.5"));
        assert_eq!(aiida_requirement(&["aiida-core>=1", "aiida-core ~=2.6"]).as_deref(), Some("~=2.6"));
        assert_eq!(aiida_requirement(&["aiida-core"]).as_deref(), Some("*"));
        assert_eq!(aiida_requirement(&["aiida-core-extras>=1", "pytest"]), None);
    }
}
