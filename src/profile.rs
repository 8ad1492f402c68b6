//! Test instances and profiles: temporary ones on the run's PostgreSQL, or the real profile named
//! by `AIIDA_TEST_PROFILE`.

use std::cell::RefCell;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};

use aiida::config::{Config, Instance, Profile, PsqlDosConfig};
use aiida::storage::Storage;
use testpg::{Server, Template};

use crate::error::FixtureError;
use crate::spare::StorageParts;

/// Environment variable naming an existing test profile to run the tests on.
pub const TEST_PROFILE_ENV: &str = "AIIDA_TEST_PROFILE";

/// The default user of temporary profiles.
pub const DEFAULT_EMAIL: &str = "test@localhost";

/// The template every temporary profile's database is cloned from: aiida's schema, migrated once
/// and kept between runs (its key is a hash of the schema, so a changed schema is a new template).
pub(crate) fn aiida_template() -> Template {
    Template::new(aiida::storage::schema_key(), |db| {
        aiida::storage::migrate_database(&psql_dos(db, Path::new("/")))?;
        Ok(())
    })
    .cached()
}

/// `core.psql_dos` settings for a testpg database and a repository folder.
pub(crate) fn psql_dos(db: &testpg::ConnectionInfo, repository: &Path) -> PsqlDosConfig {
    PsqlDosConfig {
        database_engine: "postgresql_psycopg".to_owned(),
        database_hostname: db.host.clone(),
        database_port: db.port,
        database_username: db.user.clone(),
        database_password: db.password.clone().unwrap_or_default(),
        database_name: db.dbname.clone(),
        repository_uri: format!("file://{}", repository.display()),
    }
}

/// A new folder for one test's files, inside the run's folder: removed when its owner drops it,
/// and by the run's keeper at the end of the run whatever happened.
pub(crate) fn scratch_dir(server: &Server, what: &str) -> Result<ScratchDir, FixtureError> {
    use std::os::unix::fs::DirBuilderExt;
    // Private, as aiida-core's umask 0077 makes them: a test's config.json holds a password.
    let private = || {
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        builder
    };
    let parent = server.run_dir().join("aiida");
    private().recursive(true).create(&parent).map_err(|e| FixtureError::io("create", &parent, e))?;
    let path = parent.join(format!("{what}-{}", random_hex(8)));
    private().create(&path).map_err(|e| FixtureError::io("create", &path, e))?;
    Ok(ScratchDir(path))
}

/// A folder removed on drop.
#[derive(Debug)]
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // SAFETY: buf is valid writable memory of the given length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), bytes, 0) };
    assert_eq!(n, bytes as isize, "getrandom failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A test's instance folder (`config.json` and the profiles' files).
///
/// Temporary by default (removed when the last handle drops); the real instance (`AIIDA_PATH` or
/// `~/.aiida`) when `AIIDA_TEST_PROFILE` is set.
#[derive(Debug, Clone)]
pub struct AiidaInstance {
    inner: Arc<InstanceInner>,
}

#[derive(Debug)]
struct InstanceInner {
    instance: Instance,
    _scratch: Option<ScratchDir>,
}

impl AiidaInstance {
    /// A new, empty, temporary instance folder.
    pub fn temporary() -> Result<AiidaInstance, FixtureError> {
        let server = Server::shared()?;
        let scratch = scratch_dir(&server, "instance")?;
        let instance = Instance::at(scratch.path().join(".aiida"));
        Ok(AiidaInstance { inner: Arc::new(InstanceInner { instance, _scratch: Some(scratch) }) })
    }

    fn real() -> AiidaInstance {
        AiidaInstance { inner: Arc::new(InstanceInner { instance: Instance::from_env(), _scratch: None }) }
    }

    /// The instance.
    pub fn instance(&self) -> &Instance {
        &self.inner.instance
    }

    /// The folder holding `config.json`: point `AIIDA_PATH` of a `verdi` subprocess here.
    pub fn dir(&self) -> &Path {
        self.inner.instance.dir()
    }

    /// The configuration as it is on disk now.
    pub fn config(&self) -> Result<Config, FixtureError> {
        Ok(self.inner.instance.load()?)
    }

    /// Whether this is a temporary instance (not the real one of `AIIDA_TEST_PROFILE`).
    pub fn is_temporary(&self) -> bool {
        self.inner._scratch.is_some()
    }
}

/// A profile for tests, with its storage open. Dereferences to [`Storage`], so it can be passed
/// wherever the ORM wants one: `node.store(&aiida_profile)`.
#[derive(Debug, Clone)]
pub struct AiidaProfile {
    inner: Arc<ProfileInner>,
}

#[derive(Debug)]
struct ProfileInner {
    storage: Option<Storage>,
    instance: AiidaInstance,
    _access: Option<Arc<Access>>,
    /// The database and repository made for this profile, given back when it drops.
    owned: Option<StorageParts>,
}

impl Drop for ProfileInner {
    fn drop(&mut self) {
        if let (Some(storage), Some(owned)) = (self.storage.take(), self.owned.take()) {
            owned.give_back(storage);
        }
    }
}

impl Deref for AiidaProfile {
    type Target = Storage;

    fn deref(&self) -> &Storage {
        self.inner.storage.as_ref().expect("a profile's storage is there until the profile drops")
    }
}

/// How to make a temporary profile ([`AiidaProfile::create`]).
#[derive(Debug, Clone, Default)]
pub struct ProfileOptions {
    /// The profile's name (default: 32 random hex characters, as aiida).
    pub name: Option<String>,
    /// The default user's email (default `test@localhost`).
    pub email: Option<String>,
    /// The storage (default: a fresh database cloned from the migrated template, and a fresh
    /// repository folder).
    pub storage: Option<PsqlDosConfig>,
}

impl AiidaProfile {
    /// A new test profile in `instance`: its storage initialised (schema, repository, default
    /// user), added to `config.json` and made the default there (so `verdi` run in a subprocess
    /// with `AIIDA_PATH` pointing at the instance finds it).
    pub fn create(instance: &AiidaInstance, options: ProfileOptions) -> Result<AiidaProfile, FixtureError> {
        let name = options.name.unwrap_or_else(|| random_hex(16));
        aiida::config::validate_profile_name(&name)?;
        let email = options.email.unwrap_or_else(|| DEFAULT_EMAIL.to_owned());
        let (profile, storage, owned) = match options.storage {
            Some(config) => {
                let profile = Profile::new(&name, &config, &email).with_test_profile(true);
                let storage = Storage::initialise(&profile)?;
                (profile, storage, None)
            }
            None => {
                let (profile, storage, parts) = StorageParts::for_profile(&name, &email)?;
                (profile, storage, Some(parts))
            }
        };
        instance.instance().update(|config| {
            config.add_profile(profile.clone())?;
            config.set_default(&name)
        })?;
        Ok(AiidaProfile {
            inner: Arc::new(ProfileInner { storage: Some(storage), instance: instance.clone(), _access: None, owned }),
        })
    }

    /// The profile named by `AIIDA_TEST_PROFILE` in the real instance, checked to be a test
    /// profile before anything is touched; with `access`, held for this test alone.
    fn existing(name: &str, access: bool) -> Result<AiidaProfile, FixtureError> {
        let instance = AiidaInstance::real();
        let profile = test_profile(&instance, name)?;
        let access = if access { Some(Access::acquire(&instance, name)?) } else { None };
        let storage = Storage::open(&profile)?;
        Ok(AiidaProfile {
            inner: Arc::new(ProfileInner { storage: Some(storage), instance, _access: access, owned: None }),
        })
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        self.storage().profile()
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        self.profile().name()
    }

    /// The open storage.
    pub fn storage(&self) -> &Storage {
        self
    }

    /// The instance folder the profile lives in.
    pub fn instance(&self) -> &AiidaInstance {
        &self.inner.instance
    }

    /// Empties the profile's storage (aiida's `reset_storage`): every table but the schema
    /// version and the settings, a new repository container, the default user again.
    pub fn clean(&self) -> Result<(), FixtureError> {
        Ok(self.storage().clean()?)
    }
}

thread_local! {
    static CURRENT_INSTANCE: RefCell<Weak<InstanceInner>> = const { RefCell::new(Weak::new()) };
    static CURRENT_PROFILE: RefCell<Weak<ProfileInner>> = const { RefCell::new(Weak::new()) };
}

/// The instance of the test running on this thread: the one its other fixtures use, or a new one.
pub fn current_instance() -> Result<AiidaInstance, FixtureError> {
    if let Some(inner) = CURRENT_INSTANCE.with(|c| c.borrow().upgrade()) {
        return Ok(AiidaInstance { inner });
    }
    let instance = match std::env::var(TEST_PROFILE_ENV) {
        Ok(name) if !name.is_empty() => AiidaInstance::real(),
        _ => AiidaInstance::temporary()?,
    };
    CURRENT_INSTANCE.with(|c| *c.borrow_mut() = Arc::downgrade(&instance.inner));
    Ok(instance)
}

/// The profile of the test running on this thread, and whether this call made it.
///
/// With `AIIDA_TEST_PROFILE` set it is that profile, used by this test alone (tests of a shared
/// profile run one at a time, in any thread or process); otherwise a new temporary profile in the
/// test's instance.
pub fn current_profile() -> Result<(AiidaProfile, bool), FixtureError> {
    if let Some(inner) = CURRENT_PROFILE.with(|c| c.borrow().upgrade()) {
        return Ok((AiidaProfile { inner }, false));
    }
    let profile = match std::env::var(TEST_PROFILE_ENV) {
        Ok(name) if !name.is_empty() => AiidaProfile::existing(&name, true)?,
        _ => AiidaProfile::create(&current_instance()?, ProfileOptions::default())?,
    };
    CURRENT_PROFILE.with(|c| *c.borrow_mut() = Arc::downgrade(&profile.inner));
    Ok((profile, true))
}

/// Profile `name` of `instance`, if it is marked as a test profile.
fn test_profile(instance: &AiidaInstance, name: &str) -> Result<Profile, FixtureError> {
    let profile = instance.config()?.profile(name)?;
    if !profile.is_test_profile() {
        return Err(FixtureError::NotATestProfile(name.to_owned()));
    }
    Ok(profile)
}

/// Exclusive use of the shared `AIIDA_TEST_PROFILE` profile, across threads and processes: an
/// exclusive lock on a file of the instance, taken once per test and shared by all the fixtures of
/// the test's thread (two locks of one thread would wait for each other).
#[derive(Debug)]
struct Access {
    _held: File,
}

thread_local! {
    static HELD_ACCESS: RefCell<Weak<Access>> = const { RefCell::new(Weak::new()) };
}

impl Access {
    /// Takes the lock of `profile`, after checking that it is a test profile: nothing is created in
    /// the instance for a profile that is not one.
    fn acquire(instance: &AiidaInstance, profile: &str) -> Result<Arc<Access>, FixtureError> {
        if let Some(held) = HELD_ACCESS.with(|h| h.borrow().upgrade()) {
            return Ok(held);
        }
        test_profile(instance, profile)?;
        let dir = instance.dir().join("access");
        std::fs::create_dir_all(&dir).map_err(|e| FixtureError::io("create", &dir, e))?;
        let path = dir.join(format!("test-profile-{profile}.lock"));
        let file = File::create(&path).map_err(|e| FixtureError::io("create", &path, e))?;
        file.lock().map_err(|e| FixtureError::io("lock", &path, e))?;
        let access = Arc::new(Access { _held: file });
        HELD_ACCESS.with(|h| *h.borrow_mut() = Arc::downgrade(&access));
        Ok(access)
    }
}

/// A profile shared by a named group of tests: made (and, on a shared `AIIDA_TEST_PROFILE`,
/// cleaned) once, handed to the group's tests one at a time.
///
/// Rust has no test classes; this is aiida's `aiida_profile_clean_class`. Name the group in a
/// fixture of your own, and take it in the group's tests:
///
/// ```
/// use aiida_fixtures::prelude::*;
///
/// #[fixture]
/// fn parser_tests() -> GroupProfile {
///     GroupProfile::get("parser-tests")
/// }
///
/// // #[rstest] fn first(parser_tests: GroupProfile) { ... } -- here called by hand:
/// let first = parser_tests();
/// aiida::orm::data::int(1).store(&first).unwrap();
/// drop(first); // the test ends; the next test of the group gets its turn
/// let second = parser_tests();
/// assert_eq!(aiida::orm::QueryBuilder::nodes().count(&second).unwrap(), 1, "it sees what `first` stored");
/// ```
///
/// Under `cargo nextest` each test is a process of its own, so each gets a fresh group profile.
#[derive(Debug)]
pub struct GroupProfile {
    profile: AiidaProfile,
    _turn: Turn,
    _access: Option<Arc<Access>>,
}

impl Deref for GroupProfile {
    type Target = AiidaProfile;

    fn deref(&self) -> &AiidaProfile {
        &self.profile
    }
}

/// A named group: whose turn it is, and its profile once made.
struct Group {
    name: String,
    turn: Arc<(Mutex<bool>, Condvar)>,
    profile: Option<AiidaProfile>,
}

static GROUPS: Mutex<Vec<Group>> = Mutex::new(Vec::new());

/// Runs `f` on group `name` (registered if new) under the registry's lock.
fn with_group<R>(name: &str, f: impl FnOnce(&mut Group) -> R) -> R {
    let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    let i = match groups.iter().position(|g| g.name == name) {
        Some(i) => i,
        None => {
            let turn = Arc::new((Mutex::new(false), Condvar::new()));
            groups.push(Group { name: name.to_owned(), turn, profile: None });
            groups.len() - 1
        }
    };
    f(&mut groups[i])
}

/// One test's turn at a group profile.
#[derive(Debug)]
struct Turn(Arc<(Mutex<bool>, Condvar)>);

impl Turn {
    fn take(lock: Arc<(Mutex<bool>, Condvar)>) -> Turn {
        let (busy, freed) = &*lock;
        let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy {
            busy = freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy = true;
        drop(busy);
        Turn(lock)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let (busy, freed) = &*self.0;
        *busy.lock().unwrap_or_else(|e| e.into_inner()) = false;
        freed.notify_one();
    }
}

impl GroupProfile {
    /// The profile of group `name`, after waiting for the group's previous test to finish.
    pub fn get(name: &str) -> GroupProfile {
        Self::try_get(name).unwrap_or_else(|e| panic!("aiida-fixtures: {}", aiida::report::Chain(&e)))
    }

    /// Like [`GroupProfile::get`], returning the error.
    pub fn try_get(name: &str) -> Result<GroupProfile, FixtureError> {
        // On a shared profile, its lock comes first, then the group's turn: every test takes them
        // in this order, so none waits for a turn while holding what another turn waits for.
        let shared = std::env::var(TEST_PROFILE_ENV).ok().filter(|n| !n.is_empty());
        let access = match &shared {
            Some(test_profile) => Some(Access::acquire(&AiidaInstance::real(), test_profile)?),
            None => None,
        };
        let turn = Turn::take(with_group(name, |g| g.turn.clone()));
        // Our turn: nobody else touches this group's profile until it ends. The registry's lock
        // is not held while a profile is made.
        let existing = with_group(name, |g| g.profile.clone());
        let profile = match (existing, &shared) {
            (Some(profile), _) => profile,
            (None, shared) => {
                let profile = match shared {
                    // Cleaned once, when the group starts.
                    Some(test_profile) => {
                        let profile = AiidaProfile::existing(test_profile, false)?;
                        profile.clean()?;
                        profile
                    }
                    None => AiidaProfile::create(&AiidaInstance::temporary()?, ProfileOptions::default())?,
                };
                with_group(name, |g| g.profile = Some(profile.clone()));
                profile
            }
        };
        Ok(GroupProfile { profile, _turn: turn, _access: access })
    }
}
