//! The instance folder and its `config.json` (version 10, as aiida-core 2.9 writes it).
//!
//! Reading never creates anything. Every change happens under a lock on the instance: the file is
//! read, changed, backed up (the last few backups are kept) and replaced atomically. A file that
//! cannot be parsed is reported with its path and never overwritten.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::private_fs;

/// The config version this engine reads and writes.
pub const CONFIG_VERSION: u32 = 10;
/// The storage backend this engine implements.
pub const PSQL_DOS: &str = "core.psql_dos";
/// How many `config.json.<time>` backups are kept.
const BACKUPS_KEPT: usize = 3;

/// Errors of the configuration layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `config.json` exists but is not a valid configuration.
    #[error("the configuration file {path} is invalid: {reason}; fix or move it away (it was left untouched)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a newer AiiDA.
    #[error(
        "the configuration file {path} has version {found}, newer than this engine's {CONFIG_VERSION}; downgrade it with a newer AiiDA (`verdi config downgrade {CONFIG_VERSION}`)"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its oldest compatible version.
        found: u64,
    },
    /// No profile of that name.
    #[error("profile `{name}` does not exist{}; {}", in_file(path), profile_list(known))]
    NoProfile {
        /// The name asked for.
        name: String,
        /// The configuration file looked in (`None` for one not read from a file).
        path: Option<PathBuf>,
        /// The profiles there are.
        known: Vec<String>,
    },
    /// A profile name that aiida does not accept.
    #[error("invalid profile name `{0}`: use only letters, digits, dashes, underscores or dots, and not only dots")]
    InvalidProfileName(String),
    /// A profile of that name exists already.
    #[error("profile `{0}` already exists; choose another name or delete it first (`verdi profile delete {0}`)")]
    ProfileExists(String),
    /// No profile was named and there is no default.
    #[error(
        "no profile given and no default profile set{}; pass `-p NAME` or run `verdi profile set-default NAME`",
        in_file(path)
    )]
    NoDefault {
        /// The configuration file looked in (`None` for one not read from a file).
        path: Option<PathBuf>,
    },
    /// A profile whose storage this engine does not implement.
    #[error("profile `{name}` uses storage `{backend}`, but only `core.psql_dos` is supported")]
    UnsupportedStorage {
        /// The profile.
        name: String,
        /// Its storage backend.
        backend: String,
    },
    /// A file-system error.
    #[error("cannot {action} {path}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn profile_list(known: &[String]) -> String {
    match known {
        [] => "there are no profiles yet (`verdi profile setup` makes one)".to_owned(),
        _ => format!("the profiles are {}", known.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")),
    }
}

fn in_file(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()
}

/// Checks `name` against aiida's rules for profile names (`verdi profile setup`): not empty, only
/// word characters, dashes and dots. Names of only dots are refused too: the name becomes a path
/// component (the default repository folder), which must stay inside the instance.
pub fn validate_profile_name(name: &str) -> Result<(), ConfigError> {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || !name.chars().all(allowed) || name.chars().all(|c| c == '.') {
        return Err(ConfigError::InvalidProfileName(name.to_owned()));
    }
    Ok(())
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError {
    let path = path.to_owned();
    move |source| ConfigError::Io { action, path, source }
}

/// The folder holding `config.json` and the profiles' daemon and log files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    dir: PathBuf,
}

impl Instance {
    /// The instance folder as aiida finds it: from `AIIDA_PATH` (the first entry that is, or
    /// contains, a `.aiida` folder; otherwise the last entry with `.aiida` appended), else
    /// `~/.aiida`.
    pub fn from_env() -> Instance {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
        Instance::resolve(std::env::var("AIIDA_PATH").ok().as_deref(), &home)
    }

    fn resolve(aiida_path: Option<&str>, home: &Path) -> Instance {
        let expand = |entry: &str| match entry.strip_prefix('~') {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => home.join(rest.trim_start_matches('/')),
            _ => PathBuf::from(entry),
        };
        // As aiida-core: `.aiida` is appended unless the entry already ends with it; the first
        // entry whose folder exists wins, else the last one.
        let mut candidate = None;
        for entry in aiida_path.unwrap_or_default().split(':').filter(|e| !e.is_empty()) {
            let mut dir = expand(entry);
            if dir.file_name().is_none_or(|n| n != ".aiida") {
                dir = dir.join(".aiida");
            }
            if dir.is_dir() {
                return Instance { dir };
            }
            candidate = Some(dir);
        }
        Instance { dir: candidate.unwrap_or_else(|| home.join(".aiida")) }
    }

    /// The instance in folder `dir` (the folder that holds `config.json`).
    pub fn at(dir: impl Into<PathBuf>) -> Instance {
        Instance { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The configuration; empty when there is no `config.json` yet (nothing is created).
    pub fn load(&self) -> Result<Config, ConfigError> {
        let path = self.config_path();
        match fs::read(&path) {
            Ok(bytes) => Config::parse(&bytes, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Changes the configuration: under the instance's lock, reads it, applies `change`, and
    /// writes it back atomically (after a backup of the previous file) when it changed.
    pub fn update<R>(&self, change: impl FnOnce(&mut Config) -> Result<R, ConfigError>) -> Result<R, ConfigError> {
        for sub in ["daemon/log", "log", "access"] {
            let dir = self.dir.join(sub);
            private_fs::create_dir_all(&dir).map_err(io("create folder", &dir))?;
        }
        let lock_path = self.dir.join(".config.lock");
        let lock = private_fs::create(&lock_path).map_err(io("create", &lock_path))?;
        lock.lock().map_err(io("lock", &lock_path))?;
        let mut config = self.load()?;
        let before = config.to_json();
        let result = change(&mut config)?;
        let after = config.to_json();
        if after != before {
            self.write(&after)?;
        }
        Ok(result)
    }

    fn write(&self, text: &str) -> Result<(), ConfigError> {
        let path = self.config_path();
        if path.exists() {
            let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S%.6f");
            let backup = self.dir.join(format!("config.json.{stamp}"));
            let previous = fs::read(&path).map_err(io("back up", &path))?;
            private_fs::write(&backup, &previous).map_err(io("back up", &backup))?;
            self.prune_backups()?;
        }
        let tmp = self.dir.join(format!(".config.json.{}.tmp", std::process::id()));
        private_fs::write(&tmp, text.as_bytes()).map_err(io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("replace", &path))
    }

    fn prune_backups(&self) -> Result<(), ConfigError> {
        let mut backups: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(io("read folder", &self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("config.json.")))
            .collect();
        backups.sort();
        let excess = backups.len().saturating_sub(BACKUPS_KEPT);
        for old in &backups[..excess] {
            fs::remove_file(old).map_err(io("remove", old))?;
        }
        Ok(())
    }
}

/// The contents of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(rename = "CONFIG_VERSION")]
    version: ConfigVersion,
    profiles: BTreeMap<String, ProfileEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    options: Map<String, Value>,
    /// The file it was read from, named in errors.
    #[serde(skip)]
    path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ConfigVersion {
    #[serde(rename = "CURRENT")]
    current: u64,
    #[serde(rename = "OLDEST_COMPATIBLE")]
    oldest_compatible: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: ConfigVersion { current: CONFIG_VERSION.into(), oldest_compatible: CONFIG_VERSION.into() },
            profiles: BTreeMap::new(),
            default_profile: None,
            options: Map::new(),
            path: None,
        }
    }
}

/// Options renamed by version 10.
const V10_RENAMES: &[(&str, &str)] =
    &[("logging.db_loglevel", "logging.database_handler"), ("rmq.task_timeout", "broker.task_timeout")];

impl Config {
    fn parse(bytes: &[u8], path: &Path) -> Result<Config, ConfigError> {
        let corrupt = |reason: String| ConfigError::Corrupt { path: path.to_owned(), reason };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not JSON ({e})")))?;
        let oldest = value.pointer("/CONFIG_VERSION/OLDEST_COMPATIBLE").and_then(Value::as_u64);
        match oldest {
            Some(v) if v > u64::from(CONFIG_VERSION) => {
                return Err(ConfigError::TooNew { path: path.to_owned(), found: v });
            }
            None => return Err(corrupt("it lacks CONFIG_VERSION.OLDEST_COMPATIBLE".to_owned())),
            Some(_) => {}
        }
        if !value.get("profiles").is_some_and(Value::is_object) {
            return Err(corrupt("it has no `profiles` object (an empty one is `\"profiles\": {}`)".to_owned()));
        }
        let mut config: Config = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        config.path = Some(path.to_owned());
        if config.version.current < u64::from(CONFIG_VERSION) {
            config.migrate_to_v10();
        }
        if let Some(default) = &config.default_profile
            && !config.profiles.contains_key(default)
        {
            return Err(corrupt(format!("the default profile `{default}` is not among its profiles")));
        }
        for (name, entry) in &config.profiles {
            validate_profile_name(name).map_err(|e| corrupt(e.to_string()))?;
            if entry.storage.backend == PSQL_DOS {
                PsqlDosConfig::deserialize(Value::Object(entry.storage.config.clone()))
                    .map_err(|e| corrupt(format!("profile `{name}`: storage config: {e}")))?;
            }
        }
        Ok(config)
    }

    fn migrate_to_v10(&mut self) {
        let options = self.profiles.values_mut().map(|p| &mut p.options).chain(std::iter::once(&mut self.options));
        for options in options {
            for (old, new) in V10_RENAMES {
                if let Some(v) = options.remove(*old) {
                    options.insert((*new).to_owned(), v);
                }
            }
        }
        self.version = ConfigVersion { current: CONFIG_VERSION.into(), oldest_compatible: CONFIG_VERSION.into() };
    }

    fn to_json(&self) -> String {
        // aiida writes 4-space indentation.
        let mut out = Vec::new();
        let mut ser =
            serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
        self.serialize(&mut ser).expect("a config serializes");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// The profiles' names, sorted.
    pub fn profile_names(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }

    /// The default profile's name.
    pub fn default_profile(&self) -> Option<&str> {
        self.default_profile.as_deref()
    }

    /// The instance-wide option `key` (`verdi config set` without a profile), if set.
    pub fn option(&self, key: &str) -> Option<&Value> {
        self.options.get(key)
    }

    /// Sets the instance-wide option `key`.
    pub fn set_option(&mut self, key: impl Into<String>, value: Value) {
        self.options.insert(key.into(), value);
    }

    /// The profile `name`.
    pub fn profile(&self, name: &str) -> Result<Profile, ConfigError> {
        let no_profile =
            || ConfigError::NoProfile { name: name.to_owned(), path: self.path.clone(), known: self.profile_names() };
        let entry = self.profiles.get(name).ok_or_else(no_profile)?;
        Ok(Profile { name: name.to_owned(), entry: entry.clone() })
    }

    /// The profile `name`, or the default one when `name` is `None`.
    pub fn profile_or_default(&self, name: Option<&str>) -> Result<Profile, ConfigError> {
        let no_default = || ConfigError::NoDefault { path: self.path.clone() };
        self.profile(name.or(self.default_profile.as_deref()).ok_or_else(no_default)?)
    }

    /// Adds `profile`; the first profile becomes the default.
    pub fn add_profile(&mut self, profile: Profile) -> Result<(), ConfigError> {
        validate_profile_name(&profile.name)?;
        if self.profiles.contains_key(&profile.name) {
            return Err(ConfigError::ProfileExists(profile.name));
        }
        if self.default_profile.is_none() {
            self.default_profile = Some(profile.name.clone());
        }
        self.profiles.insert(profile.name, profile.entry);
        Ok(())
    }

    /// Makes `name` the default profile.
    pub fn set_default(&mut self, name: &str) -> Result<(), ConfigError> {
        self.profile(name)?;
        self.default_profile = Some(name.to_owned());
        Ok(())
    }

    /// Removes profile `name` (only its entry: its data is the caller's business). When it was the
    /// default, the first remaining profile becomes the default.
    pub fn remove_profile(&mut self, name: &str) -> Result<Profile, ConfigError> {
        let profile = self.profile(name)?;
        self.profiles.remove(name);
        if self.default_profile.as_deref() == Some(name) {
            self.default_profile = self.profiles.keys().next().cloned();
        }
        Ok(profile)
    }
}

/// A profile as `config.json` stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ProfileEntry {
    #[serde(rename = "PROFILE_UUID")]
    uuid: String,
    storage: StorageSection,
    process_control: ProcessControl,
    /// Only a JSON `true` makes a test profile; anything else is kept as it was.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    test_profile: Value,
    #[serde(default)]
    options: Map<String, Value>,
    #[serde(default)]
    default_user_email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StorageSection {
    backend: String,
    config: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ProcessControl {
    backend: Option<String>,
    config: Option<Value>,
}

/// A named profile: where its data lives and how it is used.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    name: String,
    entry: ProfileEntry,
}

/// The settings of `core.psql_dos` storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsqlDosConfig {
    /// Always `postgresql_psycopg` (aiida-core's name for its driver).
    pub database_engine: String,
    /// Host name, or a Unix socket folder.
    pub database_hostname: String,
    /// Port.
    pub database_port: u16,
    /// Role.
    pub database_username: String,
    /// Password.
    pub database_password: String,
    /// Database.
    pub database_name: String,
    /// `file:///absolute/path` of the repository folder.
    pub repository_uri: String,
}

impl PsqlDosConfig {
    /// The repository folder from `repository_uri`.
    pub fn repository_path(&self) -> PathBuf {
        PathBuf::from(self.repository_uri.strip_prefix("file://").unwrap_or(&self.repository_uri))
    }
}

impl Profile {
    /// A new profile on `core.psql_dos` storage, with no process control backend (our daemon
    /// uses the storage's PostgreSQL, and aiida-core accepts `null` there).
    pub fn new(name: impl Into<String>, storage: &PsqlDosConfig, default_user_email: impl Into<String>) -> Profile {
        let config = match serde_json::to_value(storage) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("PsqlDosConfig serializes to an object"),
        };
        Profile {
            name: name.into(),
            entry: ProfileEntry {
                uuid: uuid::Uuid::new_v4().simple().to_string(),
                storage: StorageSection { backend: PSQL_DOS.to_owned(), config },
                process_control: ProcessControl { backend: None, config: None },
                test_profile: Value::Null,
                options: Map::new(),
                default_user_email: Some(default_user_email.into()),
            },
        }
    }

    /// Marks the profile as a test profile (or not): a licence for test tools to wipe its data.
    pub fn with_test_profile(mut self, on: bool) -> Profile {
        self.entry.test_profile = if on { Value::Bool(true) } else { Value::Null };
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `PROFILE_UUID`.
    pub fn uuid(&self) -> &str {
        &self.entry.uuid
    }

    /// Whether it is a test profile: only a JSON `true` counts.
    pub fn is_test_profile(&self) -> bool {
        self.entry.test_profile == Value::Bool(true)
    }

    /// The default user's email.
    pub fn default_user_email(&self) -> Option<&str> {
        self.entry.default_user_email.as_deref()
    }

    /// The storage backend's entry-point name.
    pub fn storage_backend(&self) -> &str {
        &self.entry.storage.backend
    }

    /// The `core.psql_dos` settings.
    pub fn psql_dos(&self) -> Result<PsqlDosConfig, ConfigError> {
        let unsupported =
            || ConfigError::UnsupportedStorage { name: self.name.clone(), backend: self.entry.storage.backend.clone() };
        if self.entry.storage.backend != PSQL_DOS {
            return Err(unsupported());
        }
        serde_json::from_value(Value::Object(self.entry.storage.config.clone())).map_err(|e| ConfigError::Corrupt {
            path: PathBuf::from("config.json"),
            reason: format!("profile `{}`: storage config: {e}", self.name),
        })
    }

    /// The profile's options.
    pub fn options(&self) -> &Map<String, Value> {
        &self.entry.options
    }

    /// Sets option `key`.
    pub fn set_option(&mut self, key: impl Into<String>, value: Value) {
        self.entry.options.insert(key.into(), value);
    }

    /// The profile as `config.json` stores it (for `verdi profile show`).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(&self.entry).expect("a profile serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> PsqlDosConfig {
        PsqlDosConfig {
            database_engine: "postgresql_psycopg".into(),
            database_hostname: "localhost".into(),
            database_port: 5432,
            database_username: "aiida".into(),
            database_password: "secret".into(),
            database_name: "aiida_db".into(),
            repository_uri: "file:///tmp/repo".into(),
        }
    }

    #[test]
    fn aiida_path_resolution_follows_aiida() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir_all(b.join(".aiida")).unwrap();
        fs::create_dir_all(&a).unwrap();
        let joined = format!("{}:{}", a.display(), b.display());
        assert_eq!(
            Instance::resolve(Some(&joined), tmp.path()).dir(),
            b.join(".aiida"),
            "the first with a .aiida wins"
        );
        let none = format!("{}:{}", a.display(), tmp.path().join("c").display());
        assert_eq!(Instance::resolve(Some(&none), tmp.path()).dir(), tmp.path().join("c/.aiida"), "else the last");
        assert_eq!(Instance::resolve(None, Path::new("/home/u")).dir(), Path::new("/home/u/.aiida"));
        let named = tmp.path().join("d/.aiida");
        assert_eq!(Instance::resolve(Some(&named.display().to_string()), tmp.path()).dir(), named, "no second .aiida");
        assert_eq!(Instance::resolve(Some("~/x"), Path::new("/home/u")).dir(), Path::new("/home/u/x/.aiida"));
    }

    #[test]
    fn reading_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let instance = Instance::at(tmp.path().join("inst"));
        assert!(instance.load().unwrap().profile_names().is_empty());
        assert!(!instance.dir().exists());
    }

    #[test]
    fn profiles_round_trip_in_aiidas_format() {
        let tmp = tempfile::tempdir().unwrap();
        let instance = Instance::at(tmp.path());
        instance.update(|c| c.add_profile(Profile::new("p1", &storage(), "me@x").with_test_profile(true))).unwrap();
        let raw: Value = serde_json::from_slice(&fs::read(instance.config_path()).unwrap()).unwrap();
        assert_eq!(raw["CONFIG_VERSION"], serde_json::json!({"CURRENT": 10, "OLDEST_COMPATIBLE": 10}));
        assert_eq!(raw["default_profile"], "p1");
        let p = &raw["profiles"]["p1"];
        assert_eq!(p["storage"]["backend"], "core.psql_dos");
        assert_eq!(p["storage"]["config"]["database_name"], "aiida_db");
        assert_eq!(p["process_control"], serde_json::json!({"backend": null, "config": null}));
        assert_eq!(p["test_profile"], true);
        assert_eq!(p["PROFILE_UUID"].as_str().unwrap().len(), 32);
        assert!(fs::read_to_string(instance.config_path()).unwrap().contains("\n    \"CONFIG_VERSION\""));
        let loaded = instance.load().unwrap().profile("p1").unwrap();
        assert!(loaded.is_test_profile());
        assert_eq!(loaded.psql_dos().unwrap(), storage());
    }

    #[test]
    fn only_json_true_marks_a_test_profile() {
        let tmp = tempfile::tempdir().unwrap();
        let instance = Instance::at(tmp.path());
        instance.update(|c| c.add_profile(Profile::new("p", &storage(), "me@x"))).unwrap();
        let text = fs::read_to_string(instance.config_path()).unwrap();
        for (value, expected) in [("\"true\"", false), ("1", false), ("true", true)] {
            let edited =
                text.replace("\"PROFILE_UUID\"", &format!("\"test_profile\": {value},\n        \"PROFILE_UUID\""));
            fs::write(instance.config_path(), edited).unwrap();
            assert_eq!(instance.load().unwrap().profile("p").unwrap().is_test_profile(), expected, "{value}");
        }
    }

    #[test]
    fn a_corrupt_file_is_reported_and_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let instance = Instance::at(tmp.path());
        fs::write(instance.config_path(), "{ not json").unwrap();
        let err = instance.update(|c| c.add_profile(Profile::new("p", &storage(), "me@x"))).unwrap_err();
        assert!(matches!(err, ConfigError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&instance.config_path().display().to_string()), "{err}");
        assert_eq!(fs::read_to_string(instance.config_path()).unwrap(), "{ not json");
        fs::write(
            instance.config_path(),
            r#"{"CONFIG_VERSION": {"CURRENT": 12, "OLDEST_COMPATIBLE": 11}, "profiles": {}}"#,
        )
        .unwrap();
        assert!(matches!(instance.load(), Err(ConfigError::TooNew { found: 11, .. })));
    }

    #[test]
    fn version_9_is_migrated_and_backups_stay_few() {
        let tmp = tempfile::tempdir().unwrap();
        let instance = Instance::at(tmp.path());
        instance.update(|c| c.add_profile(Profile::new("p", &storage(), "me@x"))).unwrap();
        let v9 = fs::read_to_string(instance.config_path())
            .unwrap()
            .replace(": 10", ": 9")
            .replace("\"options\": {}", "\"options\": {\"rmq.task_timeout\": 5}");
        fs::write(instance.config_path(), v9).unwrap();
        let profile = instance.load().unwrap().profile("p").unwrap();
        assert_eq!(profile.options().get("broker.task_timeout"), Some(&Value::from(5)));
        for i in 0..6 {
            instance.update(|c| c.add_profile(Profile::new(format!("q{i}"), &storage(), "me@x"))).unwrap();
        }
        let backups = fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("config.json."));
        assert_eq!(backups.count(), BACKUPS_KEPT);
    }

    #[test]
    fn profile_management() {
        let mut config = Config::default();
        config.add_profile(Profile::new("a", &storage(), "me@x")).unwrap();
        config.add_profile(Profile::new("b", &storage(), "me@x")).unwrap();
        assert!(matches!(config.add_profile(Profile::new("a", &storage(), "x")), Err(ConfigError::ProfileExists(_))));
        assert_eq!(config.default_profile(), Some("a"));
        config.set_default("b").unwrap();
        assert_eq!(config.profile_or_default(None).unwrap().name(), "b");
        assert_eq!(
            config.set_default("zz").unwrap_err().to_string(),
            "profile `zz` does not exist; the profiles are `a`, `b`"
        );
        config.remove_profile("b").unwrap();
        assert_eq!(config.default_profile(), Some("a"));
    }

    #[test]
    fn profile_names_follow_aiidas_rules() {
        for good in ["work", "my-profile_2.x", "ünï", "a..b"] {
            assert!(validate_profile_name(good).is_ok(), "{good}");
        }
        for bad in ["", "../../../x", "a/b", ".", "..", "with space", "semi;colon"] {
            let err = validate_profile_name(bad).unwrap_err();
            assert!(matches!(err, ConfigError::InvalidProfileName(_)), "{bad}: {err}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let instance = Instance::at(tmp.path().join(".aiida"));
        let err = instance.update(|c| c.add_profile(Profile::new("../../../x", &storage(), "me@x"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid profile name `../../../x`: use only letters, digits, dashes, underscores or dots, and not only dots"
        );
        assert!(!instance.config_path().exists(), "nothing was written");
    }

    #[test]
    fn errors_name_the_configuration_file() {
        let tmp = tempfile::tempdir().unwrap();
        let instance = Instance::at(tmp.path());
        instance.update(|c| c.add_profile(Profile::new("p", &storage(), "me@x"))).unwrap();
        let path = instance.config_path().display().to_string();
        let err = instance.load().unwrap().profile("nope").unwrap_err();
        assert_eq!(err.to_string(), format!("profile `nope` does not exist in {path}; the profiles are `p`"));
        fs::write(instance.config_path(), r#"{"CONFIG_VERSION": {"CURRENT": 10, "OLDEST_COMPATIBLE": 10}}"#).unwrap();
        let err = instance.load().unwrap_err().to_string();
        assert!(err.contains(&path) && err.contains("has no `profiles`"), "{err}");
        let bad_storage = r#"{"CONFIG_VERSION": {"CURRENT": 10, "OLDEST_COMPATIBLE": 10}, "profiles": {"p": {
            "PROFILE_UUID": "x", "storage": {"backend": "core.psql_dos", "config": {"database_port": "x"}},
            "process_control": {"backend": null, "config": null}}}}"#;
        fs::write(instance.config_path(), bad_storage).unwrap();
        let err = instance.load().unwrap_err().to_string();
        assert!(err.contains(&path) && err.contains("profile `p`: storage config"), "{err}");
    }

    #[test]
    fn the_instance_and_its_configuration_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let instance = Instance::at(tmp.path().join(".aiida"));
        for i in 0..2 {
            instance.update(|c| c.add_profile(Profile::new(format!("p{i}"), &storage(), "me@x"))).unwrap();
        }
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(instance.dir()), 0o700);
        for sub in ["access", "log", "daemon", "daemon/log"] {
            assert_eq!(mode(&instance.dir().join(sub)), 0o700, "{sub}");
        }
        for entry in fs::read_dir(instance.dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
        }
        assert_eq!(mode(&instance.config_path()), 0o600);
    }
}
