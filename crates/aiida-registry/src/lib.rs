//! A client for AiiDA's plugin registry (<https://aiidateam.github.io/aiida-registry/>), with a
//! local cache in the instance folder: aiida-core 0.x's `aiida.plugins` client (removed in 2019)
//! brought back, its defects fixed, on the core only.
//!
//! The low-level interface keeps the cache: [`RegistryClient::update`] downloads the registry
//! (handlers decide what a failure means), [`RegistryClient::load_cached`] reads it (refreshing a
//! missing or corrupt cache once), [`RegistryClient::update_info`] and
//! [`RegistryClient::cleanup_info`] keep one file per plugin. Every write is atomic. The
//! high-level interface answers questions: [`RegistryClient::entry`],
//! [`RegistryClient::find_by_pattern`], [`RegistryClient::find_for_entry_point`] (which plugin
//! provides `quantumespresso.pw`, or the node type `data.quantumespresso.force_constants.`).
//! A [`RegistryEntry`] says whether this binary has the plugin ([`InstallState`]).
//!
//! The registry's address: `AIIDA_REGISTRY_URL`, else the instance option `registry.url`, else
//! the published [`DEFAULT_URL`].

#![warn(missing_docs)]

mod entry;
mod format;
pub mod manifest;
pub mod testing;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub use entry::{InfoFormat, InstallState, RegistryEntry};
pub use format::{Record, Registry, Shape};
pub use manifest::PluginManifest;

/// Where aiida-registry publishes the registry.
pub const DEFAULT_URL: &str = "https://aiidateam.github.io/aiida-registry/plugins_metadata.json";

/// The environment variable naming another registry.
pub const URL_ENV: &str = "AIIDA_REGISTRY_URL";

/// The instance option naming another registry.
pub const URL_OPTION: &str = "registry.url";

/// The cache folder's name, in the instance folder.
pub const CACHE_FOLDER: &str = "plugin_registry_cache";

/// Where to report a registry that stays broken.
const REGISTRY_ISSUES: &str = "https://github.com/aiidateam/aiida-registry/issues";

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry's server could not be reached.
    #[error("cannot reach {url}: check your internet connection (or name another registry in AIIDA_REGISTRY_URL)")]
    Connect {
        /// The address.
        url: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// It did not answer in time.
    #[error("{url} did not answer within {} s: try again later", .timeout.as_secs_f64())]
    Timeout {
        /// The address.
        url: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// It answered with an error status.
    #[error(
        "{url} answered {status}: the plugin registry seems temporarily unavailable; try again later, and if it \
         persists, open an issue at {REGISTRY_ISSUES}"
    )]
    Status {
        /// The address.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// What it sent is no registry.
    #[error(
        "the plugin registry is malformed: {reason}; try again later, and if it persists, open an issue at {REGISTRY_ISSUES}"
    )]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// A plugin's details lack what is required.
    #[error("invalid plugin registry entry: {plugin} is missing `{missing}` in {url}")]
    InvalidEntry {
        /// The plugin.
        plugin: String,
        /// The field.
        missing: String,
        /// Where its details are.
        url: String,
    },
    /// The cache could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cache stays unreadable after a refresh.
    #[error(
        "the registry cache {path} is corrupt even after a refresh ({reason}); delete the folder and run `verdi plugin registry update`"
    )]
    CorruptCache {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The plugin says nothing of how to install it.
    #[error("the author of plugin `{plugin}` did not provide an automatic install link")]
    NoInstallSource {
        /// The plugin.
        plugin: String,
    },
    /// An entry-point or node-type string that names no plugin.
    #[error("`{0}` is not an entry point or a node type of a plugin")]
    NotAnEntryPoint(String),
    /// The instance's configuration.
    #[error(transparent)]
    Config(#[from] aiida::config::ConfigError),
}

/// The registry handler of [`RegistryClient::update`]: given why the download failed, a
/// replacement registry, or the error to stop with.
pub type RegistryHandler<'a> = &'a mut dyn FnMut(RegistryError) -> Result<Registry, RegistryError>;

/// The info handler of [`RegistryClient::update_info`]: given why a plugin's details failed, its
/// key and record, `Ok` to go on with the others (a warning), or the error to stop with.
pub type InfoHandler<'a> = &'a mut dyn FnMut(&RegistryError, &str, &Record) -> Result<(), RegistryError>;

/// What [`RegistryClient::update`] did.
#[derive(Debug)]
pub struct Update {
    /// The registry now cached.
    pub registry: Registry,
    /// The plugins whose details could not be cached (their handler let the update go on).
    pub failed: Vec<String>,
    /// The info files removed as orphans.
    pub removed: Vec<String>,
}

/// The registry at an address, cached in a folder.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    url: String,
    cache_dir: PathBuf,
    timeout: Duration,
    /// The HTTP client (its connections are reused across requests).
    agent: ureq::Agent,
    /// The cache file as last read, while it is unchanged (modification time and length).
    memo: Arc<Mutex<Option<Memo>>>,
}

#[derive(Debug)]
struct Memo {
    modified: std::time::SystemTime,
    len: u64,
    registry: Arc<Registry>,
}

impl RegistryClient {
    /// The registry at `url`, cached in `cache_dir`; 10 s to answer.
    pub fn new(url: impl Into<String>, cache_dir: impl Into<PathBuf>) -> RegistryClient {
        RegistryClient {
            url: url.into(),
            cache_dir: cache_dir.into(),
            timeout: Duration::from_secs(10),
            agent: agent(Duration::from_secs(10)),
            memo: Arc::default(),
        }
    }

    /// The registry of the instance in `instance` (`AIIDA_REGISTRY_URL`, the option
    /// `registry.url`, or the published one), cached in its `plugin_registry_cache` folder.
    pub fn for_instance(instance: &aiida::config::Instance) -> Result<RegistryClient, RegistryError> {
        let url = match std::env::var(URL_ENV) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
            _ => instance.load()?.option(URL_OPTION).and_then(Value::as_str).unwrap_or(DEFAULT_URL).to_owned(),
        };
        Ok(RegistryClient::new(url, instance.dir().join(CACHE_FOLDER)))
    }

    /// The same, waiting `timeout` at most for an answer.
    pub fn with_timeout(mut self, timeout: Duration) -> RegistryClient {
        self.timeout = timeout;
        self.agent = agent(timeout);
        self
    }

    /// The registry's address.
    pub fn registry_url(&self) -> &str {
        &self.url
    }

    /// The cache folder.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The cached registry's file name, `plugins`.
    pub fn cache_file_name() -> &'static str {
        "plugins"
    }

    /// The cached registry's path.
    pub fn cache_file_path(&self) -> PathBuf {
        self.cache_dir.join(Self::cache_file_name())
    }

    /// Whether the cached registry's file exists.
    pub fn cache_exists(&self) -> bool {
        self.cache_file_path().is_file()
    }

    /// Whether the cached registry's file exists and opens for reading (never an error).
    pub fn cache_openable(&self) -> bool {
        self.cache_dir.is_dir() && std::fs::File::open(self.cache_file_path()).is_ok()
    }

    /// Downloads the registry; a failure of any kind goes to `handler` when one is given, which
    /// returns a replacement or the error.
    pub fn load_online(&self, handler: Option<RegistryHandler<'_>>) -> Result<Registry, RegistryError> {
        let loaded = self.fetch(&self.url).and_then(|bytes| Registry::parse(&bytes));
        match (loaded, handler) {
            (Err(e), Some(handler)) => handler(e),
            (loaded, _) => loaded,
        }
    }

    /// Downloads the registry (see [`load_online`](Self::load_online)) into the cache, then,
    /// `with_info`, removes the orphaned info files and caches every plugin's details (see
    /// [`update_info`](Self::update_info)). Without handlers, any failure stops the update.
    pub fn update(
        &self,
        with_info: bool,
        registry_handler: Option<RegistryHandler<'_>>,
        info_handler: Option<InfoHandler<'_>>,
    ) -> Result<Update, RegistryError> {
        let registry = self.load_online(registry_handler)?;
        self.write(Self::cache_file_name(), &registry.to_json())?;
        *self.memo.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let (mut failed, mut removed) = (Vec::new(), Vec::new());
        if with_info {
            removed = self.cleanup_info(Some(&registry))?;
            failed = self.update_info(Some(&registry), info_handler)?;
        }
        Ok(Update { registry, failed, removed })
    }

    /// The cached registry; downloaded first (with every plugin's details) when there is no
    /// readable cache, and downloaded again, once, when the cache is corrupt. Read once while
    /// the file is unchanged.
    pub fn load_cached(&self) -> Result<Arc<Registry>, RegistryError> {
        if !self.cache_openable() {
            self.update(true, None, None)?;
        }
        match self.read_cached() {
            Ok(registry) => Ok(registry),
            Err(first) => {
                tracing::warn!(cache = %self.cache_file_path().display(), "refreshing the corrupt registry cache: {first}");
                self.update(true, None, None)?;
                self.read_cached()
                    .map_err(|e| RegistryError::CorruptCache { path: self.cache_file_path(), reason: e.to_string() })
            }
        }
    }

    fn read_cached(&self) -> Result<Arc<Registry>, RegistryError> {
        let path = self.cache_file_path();
        let stamp = std::fs::metadata(&path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(held), Some((modified, len))) = (memo.as_ref(), stamp)
            && held.modified == modified
            && held.len == len
        {
            return Ok(held.registry.clone());
        }
        let bytes = std::fs::read(&path).map_err(|source| RegistryError::Io { action: "read", path, source })?;
        let registry = Arc::new(Registry::parse(&bytes)?);
        *memo = stamp.map(|(modified, len)| Memo { modified, len, registry: registry.clone() });
        Ok(registry)
    }

    /// Caches each plugin's details of `registry` (the cached one when `None`) in a file named by
    /// its key: from the registry itself (today's shape), or from its `plugin_info` file
    /// (historic). A failure goes to `handler`, which lets the others go on or stops; without
    /// one, the first failure stops. Returns the keys that failed.
    pub fn update_info(
        &self,
        registry: Option<&Registry>,
        mut handler: Option<InfoHandler<'_>>,
    ) -> Result<Vec<String>, RegistryError> {
        let mut held = None;
        let registry = self.given_or_cached(registry, &mut held)?;
        let mut failed = Vec::new();
        for record in registry.records() {
            let written = self.entry_of(registry, record).and_then(|entry| {
                let json = serde_json::to_vec_pretty(&entry).unwrap_or_default();
                self.write(&record.key, &json)
            });
            if let Err(e) = written {
                match handler.as_mut() {
                    Some(handler) => {
                        handler(&e, &record.key, record)?;
                        failed.push(record.key.clone());
                    }
                    None => return Err(e),
                }
            }
        }
        Ok(failed)
    }

    /// Deletes the info files of plugins `registry` (the cached one when `None`) does not list:
    /// every file of the cache folder but the registry's own and hidden ones. Returns their names.
    pub fn cleanup_info(&self, registry: Option<&Registry>) -> Result<Vec<String>, RegistryError> {
        let mut held = None;
        let registry = self.given_or_cached(registry, &mut held)?;
        let entries = match std::fs::read_dir(&self.cache_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(RegistryError::Io { action: "list", path: self.cache_dir.clone(), source }),
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let orphan = entry.file_type().is_ok_and(|t| t.is_file())
                && name != Self::cache_file_name()
                && !name.starts_with('.')
                && registry.get(&name).is_none();
            if orphan {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|source| RegistryError::Io { action: "remove", path, source })?;
                removed.push(name);
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// `registry`, or the cached one (kept in `held`) when `None`: an empty registry is one, not
    /// a reason to load another.
    fn given_or_cached<'a>(
        &self,
        registry: Option<&'a Registry>,
        held: &'a mut Option<Arc<Registry>>,
    ) -> Result<&'a Registry, RegistryError> {
        match registry {
            Some(registry) => Ok(registry),
            None => Ok(held.insert(self.load_cached()?)),
        }
    }

    /// The keys of the cached registry, sorted.
    pub fn keys(&self) -> Result<Vec<String>, RegistryError> {
        Ok(self.load_cached()?.keys().map(str::to_owned).collect())
    }

    /// The plugin with base entry point `key`: from its info file, else from the registry.
    pub fn entry(&self, key: &str) -> Result<Option<RegistryEntry>, RegistryError> {
        if format::valid_key(key)
            && let Ok(bytes) = std::fs::read(self.cache_dir.join(key))
            && let Ok(entry) = serde_json::from_slice::<RegistryEntry>(&bytes)
        {
            return Ok(Some(entry));
        }
        let registry = self.load_cached()?;
        registry.get(key).map(|record| self.entry_of(&registry, record)).transpose()
    }

    /// The plugins `pattern` matches in their key, name, package, description or author; with
    /// `ranking`, ordered by how much matches (1 each, 0.5 for the description), then by key.
    pub fn find_by_pattern(&self, pattern: &regex::Regex, ranking: bool) -> Result<Vec<RegistryEntry>, RegistryError> {
        let registry = self.load_cached()?;
        let mut found: Vec<(f64, &Record)> = Vec::new();
        for record in registry.records() {
            let fields = [
                (Some(record.key.as_str()), 1.0),
                (Some(record.name.as_str()), 1.0),
                (Some(record.package_name.as_str()), 1.0),
                (record.text("description"), 0.5),
                (record.text("author"), 1.0),
            ];
            let hits = fields.iter().filter(|(text, _)| text.is_some_and(|t| pattern.is_match(t)));
            let score: f64 = if ranking { hits.map(|(_, weight)| weight).sum() } else { hits.count().min(1) as f64 };
            if score > 0.0 {
                found.push((score, record));
            }
        }
        found.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
        found.into_iter().map(|(_, record)| self.entry_of(&registry, record)).collect()
    }

    /// The plugin providing `name`: an entry point (`quantumespresso.pw`, or in full
    /// `aiida.calculations:quantumespresso.pw`), a node type (`data.quantumespresso.force_constants.`)
    /// or a process type. A plugin declaring it wins; else the one whose key is its first part.
    pub fn find_for_entry_point(&self, name: &str) -> Result<Option<RegistryEntry>, RegistryError> {
        let name = entry_point_name(name)?;
        let registry = self.load_cached()?;
        let declaring = registry.records().find(|record| {
            record.entry_points.iter().any(|(group, names)| group.starts_with("aiida.") && names.contains_key(&name))
        });
        let base = name.split('.').next().unwrap_or_default();
        match declaring.or_else(|| registry.get(base)) {
            Some(record) => self.entry_of(&registry, record).map(Some),
            None => Ok(None),
        }
    }

    /// The entry of `record`: built from it, or (historic shape) with its `plugin_info` file.
    fn entry_of(&self, registry: &Registry, record: &Record) -> Result<RegistryEntry, RegistryError> {
        match (registry.shape(), &record.info_url) {
            (Shape::Historic, Some(url)) => {
                let bytes = self.fetch(url)?;
                let setup: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Malformed {
                    reason: format!("the details of `{}` at {url} are not JSON: {e}", record.key),
                })?;
                RegistryEntry::from_historic(record, &setup)
            }
            (Shape::Historic, None) => Err(RegistryError::InvalidEntry {
                plugin: record.key.clone(),
                missing: "plugin_info".to_owned(),
                url: self.url.clone(),
            }),
            (Shape::Metadata, _) => Ok(RegistryEntry::from_record(record)),
        }
    }

    /// `bytes` as the cache file `name`, atomically (written aside, then renamed).
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| RegistryError::Io { action, path, source }
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(io("create", &self.cache_dir))?;
        let path = self.cache_dir.join(name);
        let aside = self.cache_dir.join(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::write(&aside, bytes).map_err(io("write", &aside))?;
        std::fs::rename(&aside, &path).map_err(|source| {
            let _ = std::fs::remove_file(&aside);
            RegistryError::Io { action: "write", path, source }
        })
    }

    /// The body at `url` (a 2xx answer), within the timeout.
    fn fetch(&self, url: &str) -> Result<Vec<u8>, RegistryError> {
        let timeout = || RegistryError::Timeout { url: url.to_owned(), timeout: self.timeout };
        let response = self.agent.get(url).call().map_err(|e| match e {
            ureq::Error::Timeout(_) => timeout(),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => timeout(),
            other => RegistryError::Connect { url: url.to_owned(), source: Box::new(other) },
        })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(RegistryError::Status { url: url.to_owned(), status });
        }
        let mut body = Vec::new();
        response.into_body().into_reader().read_to_end(&mut body).map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => timeout(),
            _ => RegistryError::Connect { url: url.to_owned(), source: Box::new(e) },
        })?;
        Ok(body)
    }
}

/// An HTTP client giving up after `timeout`, statuses returned rather than errors.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("aiida-rs-registry/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The entry-point name in `text`: `group:name` or `name` as it is; a node type
/// (`data.<entry point>.<Class>.`, aiida 0.x's `calculation.job.<entry point>.<Class>.`) without
/// its prefix and class.
fn entry_point_name(text: &str) -> Result<String, RegistryError> {
    let text = text.trim();
    if let Some((_, name)) = text.split_once(':') {
        return Ok(name.to_owned());
    }
    let node_type = ["data.", "calculation.job.", "calculation."].iter().find_map(|prefix| text.strip_prefix(prefix));
    match node_type {
        Some(rest) => {
            let parts: Vec<&str> = rest.trim_end_matches('.').split('.').collect();
            match parts.as_slice() {
                [] | [_] => Err(RegistryError::NotAnEntryPoint(text.to_owned())),
                [entry_point @ .., _class] => Ok(entry_point.join(".")),
            }
        }
        None if text.starts_with("process.") || text.ends_with('.') || text.is_empty() => {
            Err(RegistryError::NotAnEntryPoint(text.to_owned()))
        }
        None => Ok(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::entry_point_name;

    #[test]
    fn entry_points_and_node_types_name_an_entry_point() {
        assert_eq!(entry_point_name("quantumespresso.pw").unwrap(), "quantumespresso.pw");
        assert_eq!(entry_point_name("aiida.calculations:quantumespresso.pw").unwrap(), "quantumespresso.pw");
        assert_eq!(
            entry_point_name("data.quantumespresso.force_constants.ForceConstantsData.").unwrap(),
            "quantumespresso.force_constants"
        );
        assert_eq!(
            entry_point_name("calculation.job.quantumespresso.pw.PwCalculation.").unwrap(),
            "quantumespresso.pw"
        );
        assert!(entry_point_name("process.calculation.calcjob.CalcJobNode.").is_err());
        assert!(entry_point_name("data.Int.").is_err());
    }
}
