//! The file repository: a disk-objectstore container (`<repository>/container/`), as aiida-core
//! reads it. Objects are stored loose, uncompressed, keyed by the SHA-256 of their content, and
//! written through `sandbox/` so that a reader never sees half an object.
//!
//! aiida-core's `verdi storage maintain` moves loose objects into pack files (`packs/<n>`, each
//! object possibly zlib-compressed) listed in the SQLite index `packs.idx`; those are read here
//! too, and never written again as loose objects.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

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
    /// `packs.idx`, opened once it is needed (shared by clones).
    packs: Arc<Mutex<Option<PackIndex>>>,
}

/// `packs.idx` open read-only, and the file (device, inode) it was opened on: a container
/// replaced since (a storage clean) has a new index, which is then opened instead.
#[derive(Debug)]
struct PackIndex {
    sqlite: rusqlite::Connection,
    file: (u64, u64),
}

/// Where a packed object is: `length` bytes at `offset` of `packs/<pack_id>`, zlib-compressed or
/// not; `size` is the object's own size.
#[derive(Debug)]
struct Packed {
    compressed: bool,
    size: i64,
    offset: i64,
    length: i64,
    pack_id: i64,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_owned();
    move |source| StorageError::Io { action, path, source }
}

impl Repository {
    /// The container inside the repository folder `repository` (it may not exist yet).
    pub fn new(repository: &Path) -> Repository {
        Repository { container: repository.join("container"), packs: Arc::default() }
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

    /// Stores `content`; returns its key (SHA-256, hex). Storing the same content twice is free,
    /// whether the first copy is still loose or was packed since.
    pub fn put(&self, content: &[u8]) -> Result<String, StorageError> {
        let key = format!("{:x}", Sha256::digest(content));
        let dest = self.loose_path(&key);
        if dest.is_file() || self.packed(&key)?.is_some() {
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

    /// The content stored under `key`, loose or packed.
    pub fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.loose_path(key);
        match fs::read(&path) {
            Ok(content) => Ok(content),
            // Packing writes the pack before it removes the loose copy: look there now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.packed(key)? {
                Some(packed) => self.read_packed(key, &packed),
                None => Err(StorageError::MissingObject(key.to_owned())),
            },
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// How many objects there are, loose or packed (an object in both counts once), and their
    /// total size in bytes (uncompressed).
    pub fn count_and_size(&self) -> Result<(u64, u64), StorageError> {
        let loose = self.container.join("loose");
        let (mut count, mut size) = (0, 0);
        let mut keys = HashSet::new();
        for prefix in fs::read_dir(&loose).map_err(io("read folder", &loose))? {
            let prefix = prefix.map_err(io("read folder", &loose))?;
            let path = prefix.path();
            for object in fs::read_dir(&path).map_err(io("read folder", &path))? {
                let object = object.map_err(io("read folder", &path))?;
                let meta = object.metadata().map_err(io("read", &path))?;
                keys.insert(format!(
                    "{}{}",
                    prefix.file_name().to_string_lossy(),
                    object.file_name().to_string_lossy()
                ));
                count += 1;
                size += meta.len();
            }
        }
        if self.has_packs()? {
            self.with_index(|sqlite| {
                let mut rows = sqlite.prepare("SELECT hashkey, size FROM db_object")?;
                let mut rows = rows.query([])?;
                while let Some(row) = rows.next()? {
                    if !keys.contains(row.get_ref(0)?.as_str()?) {
                        count += 1;
                        size += u64::try_from(row.get::<_, i64>(1)?).unwrap_or_default();
                    }
                }
                Ok(())
            })?;
        }
        Ok((count, size))
    }

    /// Whether any pack file exists: without one no object is packed, and `packs.idx` need not
    /// be opened (the common case, and `put` is on the path of every stored file).
    fn has_packs(&self) -> Result<bool, StorageError> {
        let packs = self.container.join("packs");
        match fs::read_dir(&packs) {
            Ok(mut entries) => Ok(entries.next().is_some()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("read folder", &packs)(e)),
        }
    }

    /// Where object `key` is packed, if it is.
    fn packed(&self, key: &str) -> Result<Option<Packed>, StorageError> {
        if !self.has_packs()? {
            return Ok(None);
        }
        self.with_index(|sqlite| {
            let mut query = sqlite.prepare_cached(
                r#"SELECT compressed, size, "offset", length, pack_id FROM db_object WHERE hashkey = ?1"#,
            )?;
            let mut rows = query.query([key])?;
            let Some(row) = rows.next()? else { return Ok(None) };
            Ok(Some(Packed {
                compressed: row.get(0)?,
                size: row.get(1)?,
                offset: row.get(2)?,
                length: row.get(3)?,
                pack_id: row.get(4)?,
            }))
        })
    }

    /// Runs `f` on `packs.idx`, opened read-only once per container (and again if the container
    /// was replaced).
    fn with_index<T>(&self, f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> Result<T, StorageError> {
        let path = self.container.join("packs.idx");
        let invalid = |e: rusqlite::Error| StorageError::Repository {
            path: path.clone(),
            reason: format!("cannot read the pack index: {e}"),
        };
        let meta = fs::metadata(&path).map_err(io("read", &path))?;
        let file = (meta.dev(), meta.ino());
        let mut index = self.packs.lock().unwrap_or_else(PoisonError::into_inner);
        let sqlite = match &mut *index {
            Some(open) if open.file == file => &open.sqlite,
            index => {
                use rusqlite::OpenFlags;
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let sqlite = rusqlite::Connection::open_with_flags(&path, flags).map_err(invalid)?;
                &index.insert(PackIndex { sqlite, file }).sqlite
            }
        };
        f(sqlite).map_err(invalid)
    }

    fn read_packed(&self, key: &str, packed: &Packed) -> Result<Vec<u8>, StorageError> {
        let path = self.container.join("packs").join(packed.pack_id.to_string());
        let invalid = |reason: String| StorageError::Repository { path: path.clone(), reason };
        let (Ok(offset), Ok(length), Ok(size)) =
            (u64::try_from(packed.offset), usize::try_from(packed.length), usize::try_from(packed.size))
        else {
            return Err(invalid(format!("the pack index has a negative offset or length for object `{key}`")));
        };
        let file = fs::File::open(&path).map_err(io("open", &path))?;
        let mut raw = vec![0; length];
        file.read_exact_at(&mut raw, offset).map_err(io("read", &path))?;
        let content = if packed.compressed {
            miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&raw, size)
                .map_err(|e| invalid(format!("object `{key}` does not decompress: {e}")))?
        } else {
            raw
        };
        if content.len() != size {
            return Err(invalid(format!("object `{key}` has {} bytes, the index says {size}", content.len())));
        }
        Ok(content)
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

    /// Packs objects into `packs/<pack_id>` as disk-objectstore does (appended, each compressed
    /// or not) and lists them in `packs.idx`, which disk-objectstore keeps in WAL mode.
    fn pack(container: &Path, pack_id: i64, objects: &[(&str, bool, usize, &[u8])]) {
        let idx = rusqlite::Connection::open(container.join("packs.idx")).unwrap();
        idx.pragma_update(None, "journal_mode", "wal").unwrap();
        let path = container.join("packs").join(pack_id.to_string());
        let mut pack = fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        for (key, compressed, size, stored) in objects {
            let offset = pack.metadata().unwrap().len();
            pack.write_all(stored).unwrap();
            idx.execute(
                r#"INSERT INTO db_object (hashkey, compressed, size, "offset", length, pack_id)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6)"#,
                rusqlite::params![key, compressed, *size as i64, offset as i64, stored.len() as i64, pack_id],
            )
            .unwrap();
        }
    }

    #[test]
    fn packed_objects_are_read_counted_and_not_stored_again() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::new(tmp.path());
        repo.create().unwrap();
        let kept = repo.put(b"stays loose").unwrap();
        assert_eq!(repo.count_and_size().unwrap(), (1, 11), "no pack file: only loose objects");

        let compressed_content = "packed and compressed ".repeat(4);
        let compressed_key = format!("{:x}", Sha256::digest(&compressed_content));
        // Python's zlib.compressobj(level=1) of that content: what disk-objectstore writes for
        // compression_algorithm "zlib+1".
        let zlib: Vec<u8> = (0..64)
            .step_by(2)
            .map(|i| {
                let hex = "78012b484cce4e4d5148cc4b5148cecf2d284a2d2e06720b28160500b4a720c1";
                u8::from_str_radix(&hex[i..i + 2], 16).unwrap()
            })
            .collect();
        let plain_key = format!("{:x}", Sha256::digest(b"packed, not compressed"));
        pack(repo.path(), 0, &[(&compressed_key, true, 88, &zlib), (&plain_key, false, 22, b"packed, not compressed")]);
        assert_eq!(repo.get(&compressed_key).unwrap(), compressed_content.as_bytes());
        assert_eq!(repo.get(&plain_key).unwrap(), b"packed, not compressed");
        assert_eq!(repo.get(&kept).unwrap(), b"stays loose");
        assert_eq!(repo.count_and_size().unwrap(), (3, 11 + 88 + 22));

        // Storing packed content again writes no loose copy.
        assert_eq!(repo.put(compressed_content.as_bytes()).unwrap(), compressed_key);
        assert_eq!(repo.put(b"packed, not compressed").unwrap(), plain_key);
        assert!(!repo.loose_path(&compressed_key).exists() && !repo.loose_path(&plain_key).exists());
        assert_eq!(repo.count_and_size().unwrap(), (3, 121));

        // A loose copy that packing left behind (it removes them only when asked) counts once;
        // objects packed later, in another pack file, are seen by the index already open.
        pack(repo.path(), 1, &[(&kept, false, 11, b"stays loose")]);
        let late = format!("{:x}", Sha256::digest(b"late"));
        pack(repo.path(), 1, &[(&late, false, 4, b"late")]);
        assert_eq!(repo.get(&late).unwrap(), b"late");
        assert_eq!(repo.count_and_size().unwrap(), (4, 125));
        assert!(fs::read_dir(repo.path().join("sandbox")).unwrap().next().is_none());

        // A damaged pack is an error, not a panic or garbage.
        let broken = "f".repeat(64);
        pack(repo.path(), 1, &[(&broken, true, 10, b"not zlib at all")]);
        let err = repo.get(&broken).unwrap_err();
        assert!(matches!(err, StorageError::Repository { .. }), "{err}");

        // A new container (a storage clean) has no packed objects: the old index is not used.
        repo.create().unwrap();
        assert!(matches!(repo.get(&plain_key), Err(StorageError::MissingObject(_))));
        assert_eq!(repo.count_and_size().unwrap(), (0, 0));
        assert_eq!(repo.put(b"packed, not compressed").unwrap(), plain_key);
        assert!(repo.loose_path(&plain_key).is_file());
    }
}
