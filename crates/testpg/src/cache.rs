//! The cache of server data, kept between runs in `<base>/cache`: per binaries, one cluster that
//! `initdb` made, later replaced by the data of a finished run that keeps the templates marked
//! [`Template::cached`](crate::Template::cached) (with a few ready clones of each), so that the
//! next run starts with them built. Beside it, one *ready copy*: a copy made in the background by
//! a running keeper, which the next server takes with a rename instead of copying tens of
//! megabytes while a test waits.
//!
//! One lock file orders the writers: `initdb` and [`DataCache::install`] hold it exclusively;
//! copying the cache, taking a ready copy and sweeping leftovers hold it shared. A ready copy is named after the cache it was copied from
//! (its inode), so one of a replaced cache is never used.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::binaries::Binaries;
use crate::error::{Error, Result};
use crate::os::{self, ProcessId, ServerUser};

/// The cache for one set of binaries.
#[derive(Debug, Clone)]
pub(crate) struct DataCache {
    dir: PathBuf,
    name: String,
    /// Who may own a cached cluster: us, and the server user we give it to when we are root.
    owners: Vec<u32>,
    user: Option<ServerUser>,
}

impl DataCache {
    pub(crate) fn for_binaries(binaries: &Binaries, user: Option<ServerUser>) -> Result<DataCache> {
        let dir = crate::trust::subdir(&crate::trust::base()?, "cache")?;
        let name = format!("pg{}-{:012x}", binaries.version(), crate::hash(&binaries.dir().to_string_lossy()) >> 16);
        let owners = [Some(os::euid()), user.map(|u| u.uid)].into_iter().flatten().collect();
        Ok(DataCache { dir, name, owners, user })
    }

    fn current(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    fn lock(&self) -> Result<File> {
        let path = self.dir.join(format!("{}.lock", self.name));
        os::create_file(&path, 0o644).map_err(Error::io("create", &path))
    }

    /// Whether the cached cluster is there (and ours).
    fn is_ready(&self) -> Result<bool> {
        let current = self.current();
        if os::is_missing(&current) {
            return Ok(false);
        }
        os::check_ours(&current, &self.owners)?;
        Ok(current.join("PG_VERSION").is_file())
    }

    /// The cached cluster, made by `initdb` first if there is none.
    pub(crate) fn cluster(&self, binaries: &Binaries) -> Result<PathBuf> {
        let current = self.current();
        if self.is_ready()? {
            return Ok(current);
        }
        let lock = self.lock()?;
        lock.lock().map_err(Error::io("lock", self.dir.join(&self.name)))?;
        if self.is_ready()? {
            return Ok(current);
        }
        let partial = self.dir.join(format!("{}.partial-{}", self.name, std::process::id()));
        os::remove_tree(&partial)?;
        os::make_dir(&partial, 0o700, self.user)?;
        if let Err(e) = crate::cluster::initdb(binaries, &partial, self.user) {
            let _ = os::remove_tree(&partial);
            return Err(e);
        }
        os::remove_tree(&current)?;
        fs::rename(&partial, &current).map_err(Error::io("rename", &partial))?;
        Ok(current)
    }

    /// Copies the cached cluster to the new folder `to`, given to the server user.
    pub(crate) fn copy_to(&self, binaries: &Binaries, to: &Path) -> Result<()> {
        let current = self.cluster(binaries)?;
        let lock = self.lock()?;
        lock.lock_shared().map_err(Error::io("lock", &current))?;
        os::copy_tree(&current, to, self.user)
    }

    fn ready_prefix(&self) -> Result<String> {
        let current = self.current();
        let inode = fs::symlink_metadata(&current).map_err(Error::io("look at", &current))?.ino();
        Ok(format!("{}.ready-{inode}-", self.name))
    }

    /// Moves a ready copy of the current cache to the new folder `to`; whether there was one.
    pub(crate) fn take_ready_copy(&self, to: &Path) -> Result<bool> {
        if !self.is_ready()? {
            return Ok(false);
        }
        // Shared: the cache is not replaced (and its copies not removed) while we take one.
        let lock = self.lock()?;
        lock.lock_shared().map_err(Error::io("lock", self.current()))?;
        let prefix = self.ready_prefix()?;
        for entry in fs::read_dir(&self.dir).map_err(Error::io("read folder", &self.dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || name.ends_with(".partial") {
                continue;
            }
            let copy = entry.path();
            if os::check_ours(&copy, &self.owners).is_err() {
                continue;
            }
            // A rename: of several servers starting at once, one gets it.
            if fs::rename(&copy, to).is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes a ready copy of the current cache for the next server, unless there is one; removes
    /// those of caches that were replaced. Slow (tens of megabytes): run it where nobody waits.
    pub(crate) fn make_ready_copy(&self) -> Result<()> {
        if !self.is_ready()? {
            return Ok(());
        }
        let lock = self.lock()?;
        lock.lock_shared().map_err(Error::io("lock", self.current()))?;
        let prefix = self.ready_prefix()?;
        let mut have = false;
        for entry in fs::read_dir(&self.dir).map_err(Error::io("read folder", &self.dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Left by a process killed while it made the cache or replaced it: those hold the
            // lock exclusively, so under our shared lock nobody is at it now.
            if [".partial-", ".old-"].iter().any(|tag| name.starts_with(&format!("{}{tag}", self.name))) {
                let _ = os::remove_tree(&entry.path());
                continue;
            }
            if !name.starts_with(&format!("{}.ready-", self.name)) {
                continue;
            }
            let stale = match name.strip_suffix(".partial") {
                // Being made, unless its maker is gone.
                Some(stem) => stem.rsplit('-').next().and_then(|p| p.parse().ok()).and_then(ProcessId::of).is_none(),
                None if name.starts_with(&prefix) => {
                    have = true;
                    false
                }
                // A copy of a cache that was replaced since.
                None => true,
            };
            if stale {
                let _ = os::remove_tree(&entry.path());
            }
        }
        if have {
            return Ok(());
        }
        let rand = os::random_hex(4);
        let partial = self.dir.join(format!("{prefix}{rand}-{}.partial", std::process::id()));
        let done = self.dir.join(format!("{prefix}{rand}"));
        let result = os::copy_tree(&self.current(), &partial, self.user)
            .and_then(|()| fs::rename(&partial, &done).map_err(Error::io("rename", &partial)));
        if result.is_err() {
            let _ = os::remove_tree(&partial);
        }
        result
    }

    /// Makes the data folder `data` (of a cleanly stopped server) the cache, in place of the
    /// current one; ready copies of the old cache are removed.
    pub(crate) fn install(&self, data: &Path) -> Result<()> {
        let lock = self.lock()?;
        lock.lock().map_err(Error::io("lock", self.current()))?;
        let current = self.current();
        if os::is_missing(&current) {
            fs::rename(data, &current).map_err(Error::io("rename", data))?;
        } else {
            // One atomic swap: killed at any point, the cache is either the old or the new one.
            os::exchange(data, &current).map_err(Error::io("swap in", &current))?;
            let _ = os::remove_tree(data);
        }
        for entry in fs::read_dir(&self.dir).map_err(Error::io("read folder", &self.dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{}.ready-", self.name)) && !name.ends_with(".partial") {
                let _ = os::remove_tree(&entry.path());
            }
        }
        Ok(())
    }
}
