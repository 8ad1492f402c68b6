//! crates.io, for Rust plugin crates: a crate's latest version (`default_version`, else the
//! newest stable, else the newest), its metadata (crates.io's fields, mapped to the registry's),
//! and its plugin manifest, read from the `Cargo.toml` inside the published `.crate`.

use std::io::Read;
use std::time::Duration;

use aiida_registry::PluginManifest;
use serde_json::{Map, Value, json};

use super::{Http, SourceError};

const NAME: &str = "crates.io";

/// The largest `.crate` read (crates.io's own limit is 10 MB).
const CRATE_LIMIT: u64 = 64 * 1024 * 1024;

/// crates.io's API and its static files (the `.crate`s), at configurable addresses.
#[derive(Debug, Clone)]
pub struct CratesIo {
    api: String,
    files: String,
    http: Http,
}

/// A version of a crate, as crates.io lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct CrateVersion {
    /// The crate.
    pub name: String,
    /// The version.
    pub version: String,
    /// Whether it was withdrawn.
    pub yanked: bool,
    /// When it was published (RFC 3339).
    pub created_at: Option<String>,
    /// The `.crate`'s SHA-256, hexadecimal.
    pub checksum: Option<String>,
}

impl Default for CratesIo {
    fn default() -> Self {
        CratesIo::new("https://crates.io", "https://static.crates.io")
    }
}

impl CratesIo {
    /// The same source, trying `attempts` times in all (a connection failure, a timeout, a 5xx
    /// or a 429 is tried again), waiting `initial` before the second, twice as long each time.
    pub fn with_retries(mut self, attempts: u32, initial: Duration) -> CratesIo {
        self.http = self.http.with_retries(attempts, initial);
        self
    }

    /// The API at `api` (e.g. `https://crates.io`) and the files at `files`
    /// (`https://static.crates.io`); 30 s to answer.
    pub fn new(api: impl Into<String>, files: impl Into<String>) -> CratesIo {
        let trim = |s: String| s.trim_end_matches('/').to_owned();
        CratesIo { api: trim(api.into()), files: trim(files.into()), http: Http::new(Duration::from_secs(30)) }
    }

    /// `GET /api/v1/crates/{name}`: `None` when there is no such crate.
    fn crate_record(&self, name: &str) -> Result<Option<(String, Value)>, SourceError> {
        let url = format!("{}/api/v1/crates/{name}", self.api);
        Ok(self.http.get_json(NAME, &url, 16 * 1024 * 1024)?.map(|value| (url, value)))
    }

    /// The version of crate `name` the hub follows: crates.io's `default_version` (not yanked,
    /// stable preferred), else `max_stable_version`, else `max_version`; `None` when there is no
    /// such crate.
    pub fn latest(&self, name: &str) -> Result<Option<CrateVersion>, SourceError> {
        let Some((url, record)) = self.crate_record(name)? else { return Ok(None) };
        let malformed =
            |reason: &str| SourceError::Malformed { source_name: NAME, what: url.clone(), reason: reason.to_owned() };
        let krate = record.get("crate").ok_or_else(|| malformed("no `crate` object"))?;
        let text = |field: &str| krate.get(field).and_then(Value::as_str).filter(|s| !s.is_empty());
        let version = text("default_version")
            .or_else(|| text("max_stable_version"))
            .or_else(|| text("max_version"))
            .ok_or_else(|| malformed("the crate has no version"))?;
        let listed = record
            .get("versions")
            .and_then(Value::as_array)
            .and_then(|versions| versions.iter().find(|v| v.get("num").and_then(Value::as_str) == Some(version)));
        let field = |name: &str| listed.and_then(|v| v.get(name)).and_then(Value::as_str).map(str::to_owned);
        Ok(Some(CrateVersion {
            name: name.to_owned(),
            version: version.to_owned(),
            yanked: listed.and_then(|v| v.get("yanked")).and_then(Value::as_bool).unwrap_or(false),
            created_at: field("created_at"),
            checksum: field("checksum"),
        }))
    }

    /// The registry's metadata of crate `name` at `version`: description, author (the crate's
    /// owners are not asked: the manifest's authors are the crate's own word), license, home,
    /// documentation (docs.rs when the crate names none), repository, downloads, keywords,
    /// categories, release date.
    pub fn metadata(&self, name: &str, version: &str) -> Result<Map<String, Value>, SourceError> {
        let Some((url, record)) = self.crate_record(name)? else {
            return Err(SourceError::Status {
                source_name: NAME,
                what: format!("{}/api/v1/crates/{name}", self.api),
                status: 404,
            });
        };
        let krate = record.get("crate").cloned().unwrap_or_default();
        let listed = record
            .get("versions")
            .and_then(Value::as_array)
            .and_then(|versions| versions.iter().find(|v| v.get("num").and_then(Value::as_str) == Some(version)))
            .cloned()
            .ok_or_else(|| SourceError::Malformed {
                source_name: NAME,
                what: url.clone(),
                reason: format!("version {version} is not listed"),
            })?;
        let pick = |value: &Value, field: &str| value.get(field).filter(|v| !v.is_null()).cloned();
        let mut metadata = Map::new();
        metadata.insert("version".into(), json!(version));
        let description = pick(&listed, "description").or_else(|| pick(&krate, "description"));
        for (key, value) in [
            ("description", description),
            ("license", pick(&listed, "license")),
            ("release_date", pick(&listed, "created_at")),
            ("home_page", pick(&krate, "homepage")),
            ("repository", pick(&krate, "repository")),
            ("downloads", pick(&krate, "downloads")),
            ("keywords", pick(&record, "keywords").or_else(|| pick(&krate, "keywords"))),
            ("categories", pick(&record, "categories").or_else(|| pick(&krate, "categories"))),
            ("rust_version", pick(&listed, "rust_version")),
        ] {
            if let Some(value) = value {
                metadata.insert(key.into(), value);
            }
        }
        let documentation =
            pick(&krate, "documentation").unwrap_or_else(|| json!(format!("https://docs.rs/{name}/{version}")));
        metadata.insert("documentation_url".into(), documentation);
        Ok(metadata)
    }

    /// The plugin manifest of crate `name` at `version`: the `[package.metadata.aiida.plugin]`
    /// of the `Cargo.toml` in its `.crate` (a gzipped tar of `{name}-{version}/...`).
    pub fn manifest(&self, name: &str, version: &str) -> Result<PluginManifest, SourceError> {
        let url = format!("{}/crates/{name}/{name}-{version}.crate", self.files);
        let malformed = |reason: String| SourceError::Malformed { source_name: NAME, what: url.clone(), reason };
        let body = self.http.get(NAME, &url, CRATE_LIMIT)?.ok_or_else(|| SourceError::Status {
            source_name: NAME,
            what: url.clone(),
            status: 404,
        })?;
        let wanted = format!("{name}-{version}/Cargo.toml");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(body.as_slice()));
        let entries = archive.entries().map_err(|e| malformed(format!("not a gzipped tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| malformed(format!("not a gzipped tar: {e}")))?;
            let path = entry.path().map_err(|e| malformed(e.to_string()))?.to_string_lossy().into_owned();
            if path == wanted {
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(|e| malformed(format!("{wanted} is not text: {e}")))?;
                return PluginManifest::parse(&text)
                    .map_err(|source| SourceError::Manifest { what: format!("{name} {version}"), source });
            }
        }
        Err(malformed(format!("it holds no {wanted}")))
    }
}
