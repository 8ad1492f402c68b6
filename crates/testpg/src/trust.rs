//! Never trusting a folder we did not make.
//!
//! The base folder's default place, `/dev/shm` (or the temporary folder), is writable by every
//! local user: anyone could create `/dev/shm/testpg-<uid>` of another user first, with `runs` a
//! symlink to any folder of that user, and have our sweep of dead runs change and remove what is
//! there. So every folder we rely on is checked before use, with `lstat` (a symlink in its place
//! is refused, never followed):
//!
//! - the folders above the base folder, and symlinks on the way to it, can be changed only by us
//!   or root (a folder writable by others must be sticky, like `/tmp`, where only an entry's owner
//!   can rename or remove it);
//! - the base folder, `runs`, each run's folder and `cache` are folders owned by us that nobody
//!   else can write to; missing ones are made so.
//!
//! Below a folder that passes, no other user (root aside) can create, rename or remove anything,
//! so whatever we find there was made by a process running as us. The exceptions are the folders
//! we give the server user on purpose when we are root (a server's `data` and `socket` in a
//! server folder of ours, and cached `initdb` clusters in `cache`): a cached cluster is checked to
//! be owned by that user or by us, and we reach into such folders only with symlink-safe
//! operations (`os::copy_tree`, `os::remove_tree`).
//!
//! A base folder that fails is refused ([`Error::NotOurs`]), not replaced by a fresh one under
//! another name: every process of a run finds the base folder on its own and all must find the
//! same one, and any other name they could all derive could be planted just as well.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::os;

/// The base folder (see `TESTPG_DIR`), made if missing, and checked to be ours.
pub(crate) fn base() -> Result<PathBuf> {
    let base = crate::cluster::base_dir_setting()?;
    check_parents(&base)?;
    os::make_dir(&base, 0o755, None)?;
    Ok(base)
}

/// Folder `name` in `parent`, a folder already checked: made `0755` if missing, else checked to be
/// a folder of ours that nobody else can change.
pub(crate) fn subdir(parent: &Path, name: &str) -> Result<PathBuf> {
    let dir = parent.join(name);
    os::make_dir(&dir, 0o755, None)?;
    Ok(dir)
}

/// Checks the folders above `base` (as named, and as they resolve) and any symlinks on the way.
fn check_parents(base: &Path) -> Result<()> {
    let Some(existing) = base.ancestors().skip(1).find(|p| !p.as_os_str().is_empty() && !os::is_missing(p)) else {
        return Ok(());
    };
    let real = fs::canonicalize(existing).map_err(Error::io("resolve", existing))?;
    for dir in existing.ancestors().chain(real.ancestors()) {
        let meta = fs::symlink_metadata(dir).map_err(Error::io("look at", dir))?;
        let (uid, mode) = (meta.uid(), meta.mode());
        let foreign = uid != 0 && uid != os::euid();
        let shared = meta.is_dir() && mode & 0o022 != 0 && mode & 0o1000 == 0;
        if foreign || shared {
            let kind = if meta.file_type().is_symlink() { "a symlink, " } else { "" };
            return Err(Error::UnsafeParent {
                path: dir.to_owned(),
                base: base.to_owned(),
                detail: format!("{kind}owner uid {uid}, mode {:04o}", mode & 0o7777),
            });
        }
    }
    Ok(())
}
