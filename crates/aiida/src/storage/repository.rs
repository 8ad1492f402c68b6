//! The file repository: a disk-objectstore container (`<repository>/container/`), as aiida-core
//! reads it. Objects are stored loose, uncompressed, keyed by the SHA-256 of their content, and
//! written through `sandbox/` so that a reader never sees half an object.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::StorageError;

/// A new container built beside the current one (see [`Repository::stage`]); removed if dropped
/// without being put in place.
#[derive(Debug)]
pub(crate) struct Staged {
    path: PathBuf,
    pub(crate) id: String,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A disk-objectstore container.
#[derive(Debug, Clone)]
pub struct Repository {
    container: PathBuf,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_owned();
    move |source| StorageError::Io { action, path, source }
}

impl Repository {
    /// The container inside the repository folder `repository` (it may not exist yet).
    pub fn new(repository: &Path) -> Repository {
        Repository { container: repository.join("container") }
    }

    /// The container folder.
    pub fn path(&self) -> &Path {
        &self.container
    }

    /// Whether the container has been created.
    pub fn exists(&self) -> bool {
        self.container.join("config.json").is_file()
    }

    /// Creates an empty container with a new id, replacing any container there; returns the id.
    pub fn create(&self) -> Result<String, StorageError> {
        let staged = self.stage()?;
        let id = staged.id.clone();
        self.replace_with(staged)?;
        Ok(id)
    }

    /// Builds a new, empty container beside the current one, to be put in its place with
    /// [`Repository::replace_with`] once the database agrees.
    pub(crate) fn stage(&self) -> Result<Staged, StorageError> {
        let parent = self.container.parent().expect("a container lives in a repository folder");
        let path = parent.join(format!(".container-new-{}", uuid::Uuid::new_v4().simple()));
        match Self::build(&path) {
            Ok(id) => Ok(Staged { path, id }),
            Err(e) => {
                let _ = fs::remove_dir_all(&path);
                Err(e)
            }
        }
    }

    /// Puts a staged container in place of the current one (which is removed).
    pub(crate) fn replace_with(&self, staged: Staged) -> Result<(), StorageError> {
        if self.container.exists() {
            let old = self.container.with_file_name(format!(".container-old-{}", uuid::Uuid::new_v4().simple()));
            fs::rename(&self.container, &old).map_err(io("move away", &self.container))?;
            fs::rename(&staged.path, &self.container).map_err(io("move into place", &staged.path))?;
            fs::remove_dir_all(&old).map_err(io("remove", &old))
        } else {
            fs::rename(&staged.path, &self.container).map_err(io("move into place", &staged.path))
        }
    }

    fn build(container: &Path) -> Result<String, StorageError> {
        for sub in ["loose", "packs", "duplicates", "sandbox"] {
            let dir = container.join(sub);
            crate::private_fs::create_dir_all(&dir).map_err(io("create folder", &dir))?;
        }
        let packs_idx = container.join("packs.idx");
        fs::write(&packs_idx, empty_pack_index()?).map_err(io("write", &packs_idx))?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let config = json!({
            "container_version": 1,
            "loose_prefix_len": 2,
            "pack_size_target": 4294967296_u64,
            "hash_type": "sha256",
            "container_id": id,
            "compression_algorithm": "zlib+1",
        });
        let path = container.join("config.json");
        fs::write(&path, serde_json::to_vec(&config).expect("JSON")).map_err(io("write", &path))?;
        Ok(id)
    }

    /// The container's id (`container_id` in its `config.json`).
    pub fn container_id(&self) -> Result<String, StorageError> {
        let path = self.container.join("config.json");
        let bytes = fs::read(&path).map_err(io("read", &path))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| StorageError::Repository {
            path: path.clone(),
            reason: format!("invalid config.json: {e}"),
        })?;
        value["container_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| StorageError::Repository { path, reason: "config.json has no container_id".to_owned() })
    }

    /// Stores `content`; returns its key (SHA-256, hex). Storing the same content twice is free.
    pub fn put(&self, content: &[u8]) -> Result<String, StorageError> {
        let key = format!("{:x}", Sha256::digest(content));
        let dest = self.loose_path(&key);
        if dest.is_file() {
            return Ok(key);
        }
        let sandbox = self.container.join("sandbox").join(uuid::Uuid::new_v4().simple().to_string());
        let mut file = fs::File::create(&sandbox).map_err(io("create", &sandbox))?;
        file.write_all(content).and_then(|()| file.sync_data()).map_err(io("write", &sandbox))?;
        let parent = dest.parent().expect("loose objects live in a folder");
        crate::private_fs::create_dir_all(parent).map_err(io("create folder", parent))?;
        fs::rename(&sandbox, &dest).map_err(io("move into place", &dest))?;
        Ok(key)
    }

    /// The content stored under `key`.
    pub fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.loose_path(key);
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StorageError::MissingObject(key.to_owned()),
            _ => io("read", &path)(e),
        })
    }

    /// How many loose objects there are, and their total size in bytes.
    pub fn count_and_size(&self) -> Result<(u64, u64), StorageError> {
        let loose = self.container.join("loose");
        let (mut count, mut size) = (0, 0);
        for prefix in fs::read_dir(&loose).map_err(io("read folder", &loose))? {
            let prefix = prefix.map_err(io("read folder", &loose))?.path();
            for object in fs::read_dir(&prefix).map_err(io("read folder", &prefix))? {
                let meta = object.and_then(|o| o.metadata()).map_err(io("read", &prefix))?;
                count += 1;
                size += meta.len();
            }
        }
        Ok((count, size))
    }

    fn loose_path(&self, key: &str) -> PathBuf {
        let (prefix, rest) = key.split_at(key.len().min(2));
        self.container.join("loose").join(prefix).join(rest)
    }
}

/// The bytes of an empty `packs.idx`, made by SQLite once per process (an SQLite database is one
/// self-contained file, so every new container gets a copy).
fn empty_pack_index() -> Result<&'static [u8], StorageError> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    if let Some(bytes) = BYTES.get() {
        return Ok(bytes);
    }
    let bytes = make_empty_pack_index()?;
    Ok(BYTES.get_or_init(|| bytes))
}

fn make_empty_pack_index() -> Result<Vec<u8>, StorageError> {
    let fail = |e: rusqlite::Error| StorageError::PackIndex(e.to_string());
    // Made in memory and serialised: no scratch file anywhere, so a killed process leaves none.
    let sqlite = rusqlite::Connection::open_in_memory().map_err(fail)?;
    sqlite
        .execute_batch(
            r#"CREATE TABLE db_object (id INTEGER NOT NULL PRIMARY KEY, hashkey VARCHAR NOT NULL,
               compressed BOOLEAN NOT NULL, size INTEGER NOT NULL, "offset" INTEGER NOT NULL,
               length INTEGER NOT NULL, pack_id INTEGER NOT NULL);
               CREATE UNIQUE INDEX ix_db_object_hashkey ON db_object (hashkey);"#,
        )
        .map_err(fail)?;
    let bytes = sqlite.serialize(rusqlite::MAIN_DB).map_err(fail)?;
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_content_addressed_loose_files() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::new(tmp.path());
        let id = repo.create().unwrap();
        assert_eq!(repo.container_id().unwrap(), id);
        let key = repo.put(b"hello").unwrap();
        assert_eq!(key, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert!(
            tmp.path()
                .join("container/loose/2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
                .is_file()
        );
        assert_eq!(repo.put(b"hello").unwrap(), key);
        assert_eq!(repo.get(&key).unwrap(), b"hello");
        assert_eq!(repo.count_and_size().unwrap(), (1, 5));
        assert!(fs::read_dir(tmp.path().join("container/sandbox")).unwrap().next().is_none());
        let idx = rusqlite::Connection::open(tmp.path().join("container/packs.idx")).unwrap();
        let n: i64 = idx.query_row("SELECT count(*) FROM db_object", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        assert!(matches!(repo.get(&"0".repeat(64)), Err(StorageError::MissingObject(_))));
        let new_id = repo.create().unwrap();
        assert_ne!(new_id, id);
        assert_eq!(repo.count_and_size().unwrap(), (0, 0), "a new container is empty");
    }
}
