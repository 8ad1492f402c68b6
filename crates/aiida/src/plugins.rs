//! Entry points: plugins found by group and name.
//!
//! A plugin crate registers its entry points at link time with [`entry_point!`](crate::entry_point),
//! so every binary that links the crate (test binaries and daemon workers included) sees them.
//! Strings name them as aiida does: FULL `aiida.data:core.int`, PARTIAL `data:core.int`, or
//! MINIMAL `core.int` (the group then comes from the factory).
//!
//! Tests change what is registered for themselves only with [`ScopedEntryPoints`]: additions and
//! removals are visible to the current thread and undone when the guard drops.

use std::any::Any;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

/// A plugin value: anything a factory can downcast to its group's type.
pub type Plugin = Arc<dyn Any + Send + Sync>;

/// The entry-point groups aiida defines.
pub const GROUPS: &[&str] = &[
    "aiida.brokers",
    "aiida.calculations",
    "aiida.calculations.importers",
    "aiida.calculations.monitors",
    "aiida.cmdline.computer.configure",
    "aiida.cmdline.data",
    "aiida.cmdline.data.structure.import",
    "aiida.data",
    "aiida.groups",
    "aiida.node",
    "aiida.parsers",
    "aiida.schedulers",
    "aiida.storage",
    "aiida.tools.calculations",
    "aiida.tools.data.orbitals",
    "aiida.tools.dbexporters",
    "aiida.tools.dbimporters",
    "aiida.transports",
    "aiida.workflows",
];

/// The prefix of every aiida group.
pub const GROUP_PREFIX: &str = "aiida.";

/// Errors of the plugin system.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PluginError {
    /// No entry point of that name.
    #[error("entry point `{name}` not found in group `{group}`; `verdi plugin list {group}` shows what is there")]
    Missing {
        /// The group searched.
        group: String,
        /// The name looked for.
        name: String,
    },
    /// Two plugins claim the same group and name.
    #[error(
        "multiple entry points `{name}` found in group `{group}` (registered by {sources}); uninstall one of the plugins"
    )]
    Multiple {
        /// The group.
        group: String,
        /// The contested name.
        name: String,
        /// Where the claimants were registered.
        sources: String,
    },
    /// A string names a group other than the one the factory loads from.
    #[error("entry point `{string}` is in group `{group}`, but `{expected}` was asked for")]
    WrongGroup {
        /// The string given.
        string: String,
        /// Its group.
        group: String,
        /// The factory's group.
        expected: String,
    },
    /// A MINIMAL name exists in several groups and no group was given.
    #[error("entry point `{name}` exists in several groups ({groups}): write it as `group:{name}`")]
    Ambiguous {
        /// The name.
        name: String,
        /// The groups holding it.
        groups: String,
    },
    /// A malformed entry-point string.
    #[error("invalid entry point string `{0}`: write `group:name` (e.g. `aiida.data:core.int`) or `name`")]
    InvalidString(String),
    /// The plugin is not of the type its group promises.
    #[error("entry point `{entry_point}` is not a {expected}")]
    WrongType {
        /// `group:name`.
        entry_point: String,
        /// The Rust type the factory expected.
        expected: &'static str,
    },
}

/// A registered plugin.
#[derive(Clone)]
pub struct EntryPoint {
    group: String,
    name: String,
    source: String,
    value: Plugin,
}

impl EntryPoint {
    /// A new entry point; `source` says who registered it (shown in messages).
    pub fn new(group: impl Into<String>, name: impl Into<String>, source: impl Into<String>, value: Plugin) -> Self {
        EntryPoint { group: group.into(), name: name.into(), source: source.into(), value }
    }

    /// The group, e.g. `aiida.data`.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The name, e.g. `core.int`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who registered it (a module path).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The FULL string, `group:name`.
    pub fn full(&self) -> String {
        format!("{}:{}", self.group, self.name)
    }

    /// The plugin value.
    pub fn value(&self) -> &Plugin {
        &self.value
    }

    /// The plugin as a `T`, if it is one.
    pub fn downcast<T: Any + Send + Sync>(&self) -> Result<Arc<T>, PluginError> {
        self.value
            .clone()
            .downcast::<T>()
            .map_err(|_| PluginError::WrongType { entry_point: self.full(), expected: std::any::type_name::<T>() })
    }

    /// Whether both are the very same plugin value (registered twice), which is no conflict.
    fn same_plugin(&self, other: &EntryPoint) -> bool {
        Arc::ptr_eq(&self.value, &other.value)
    }
}

impl std::fmt::Debug for EntryPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryPoint")
            .field("group", &self.group)
            .field("name", &self.name)
            .field("source", &self.source)
            .finish()
    }
}

static REGISTRY: Mutex<Vec<EntryPoint>> = Mutex::new(Vec::new());

/// Registers an entry point for the whole process; [`entry_point!`](crate::entry_point) calls this at
/// start-up.
pub fn register(entry_point: EntryPoint) {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).push(entry_point);
}

/// Registers `$value` as entry point `$name` of `$group` when the binary starts.
///
/// ```
/// pub struct Greeting(pub &'static str);
/// aiida::entry_point!("aiida.data", "docs.greeting", Greeting("hello"));
///
/// let ep = aiida::plugins::load("aiida.data:docs.greeting", None).unwrap();
/// assert_eq!(ep.downcast::<Greeting>().unwrap().0, "hello");
/// ```
#[macro_export]
macro_rules! entry_point {
    ($group:expr, $name:expr, $value:expr $(,)?) => {
        $crate::__private::ctor::declarative::ctor!(
            #[ctor(unsafe, anonymous)]
            fn register() {
                $crate::plugins::register($crate::plugins::EntryPoint::new(
                    $group,
                    $name,
                    ::std::module_path!(),
                    ::std::sync::Arc::new($value),
                ));
            }
        );
    };
}

enum Change {
    Add(EntryPoint),
    Remove { group: String, name: String },
}

thread_local! {
    static LAYERS: RefCell<Vec<(u64, Vec<Change>)>> = const { RefCell::new(Vec::new()) };
}

/// Every entry point as this thread sees it: the registered ones with this thread's scoped
/// changes applied, sorted by group and name.
pub fn entry_points() -> Vec<EntryPoint> {
    let mut all = REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).clone();
    LAYERS.with(|layers| {
        for (_, changes) in layers.borrow().iter() {
            for change in changes {
                match change {
                    Change::Add(ep) => all.push(ep.clone()),
                    Change::Remove { group, name } => all.retain(|ep| !(&ep.group == group && &ep.name == name)),
                }
            }
        }
    });
    all.sort_by(|a, b| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
    all
}

/// The entry points of `group` (with `name`, when given).
pub fn select(group: &str, name: Option<&str>) -> Vec<EntryPoint> {
    entry_points().into_iter().filter(|ep| ep.group == group && name.is_none_or(|n| ep.name == n)).collect()
}

/// The one entry point `name` of `group`.
pub fn get(group: &str, name: &str) -> Result<EntryPoint, PluginError> {
    let mut found = select(group, Some(name));
    let Some(first) = found.first().cloned() else {
        return Err(PluginError::Missing { group: group.to_owned(), name: name.to_owned() });
    };
    found.dedup_by(|a, b| a.same_plugin(b));
    if found.len() > 1 {
        let sources = found.iter().map(|ep| format!("`{}`", ep.source)).collect::<Vec<_>>().join(", ");
        return Err(PluginError::Multiple { group: group.to_owned(), name: name.to_owned(), sources });
    }
    Ok(first)
}

/// Splits an entry-point string into its group (if it names one) and name.
pub fn parse(string: &str) -> Result<(Option<String>, String), PluginError> {
    let invalid = || PluginError::InvalidString(string.to_owned());
    match string.split(':').collect::<Vec<_>>().as_slice() {
        [name] if !name.is_empty() => Ok((None, (*name).to_owned())),
        [group, name] if !group.is_empty() && !name.is_empty() => {
            let group =
                if group.starts_with(GROUP_PREFIX) { (*group).to_owned() } else { format!("{GROUP_PREFIX}{group}") };
            Ok((Some(group), (*name).to_owned()))
        }
        _ => Err(invalid()),
    }
}

/// Loads the entry point named by a FULL, PARTIAL or MINIMAL `string`. `group` is the group a
/// factory loads from: a string naming another group is an error, and a MINIMAL one is looked up
/// there. Without `group`, a MINIMAL name must be unique across groups.
pub fn load(string: &str, group: Option<&str>) -> Result<EntryPoint, PluginError> {
    let (named, name) = parse(string)?;
    match (named, group) {
        (Some(named), Some(expected)) if named != expected => {
            Err(PluginError::WrongGroup { string: string.to_owned(), group: named, expected: expected.to_owned() })
        }
        (Some(group), _) => get(&group, &name),
        (None, Some(group)) => get(group, &name),
        (None, None) => {
            let mut groups: Vec<String> =
                entry_points().into_iter().filter(|ep| ep.name == name).map(|ep| ep.group).collect();
            groups.dedup();
            match groups.as_slice() {
                [] => Err(PluginError::Missing { group: "any group".to_owned(), name }),
                [group] => get(group, &name),
                _ => Err(PluginError::Ambiguous { name, groups: groups.join(", ") }),
            }
        }
    }
}

/// Loads `string` from `group` as a `T`.
pub fn load_as<T: Any + Send + Sync>(string: &str, group: &str) -> Result<Arc<T>, PluginError> {
    load(string, Some(group))?.downcast::<T>()
}

/// Loads a calculation plugin (`aiida.calculations`) as a `T`.
pub fn calculation_factory<T: Any + Send + Sync>(name: &str) -> Result<Arc<T>, PluginError> {
    load_as(name, "aiida.calculations")
}

/// Loads a parser plugin (`aiida.parsers`) as a `T`.
pub fn parser_factory<T: Any + Send + Sync>(name: &str) -> Result<Arc<T>, PluginError> {
    load_as(name, "aiida.parsers")
}

/// Loads a workflow plugin (`aiida.workflows`) as a `T`.
pub fn workflow_factory<T: Any + Send + Sync>(name: &str) -> Result<Arc<T>, PluginError> {
    load_as(name, "aiida.workflows")
}

/// Loads a scheduler plugin (`aiida.schedulers`) as a `T`.
pub fn scheduler_factory<T: Any + Send + Sync>(name: &str) -> Result<Arc<T>, PluginError> {
    load_as(name, "aiida.schedulers")
}

/// Loads a transport plugin (`aiida.transports`) as a `T`.
pub fn transport_factory<T: Any + Send + Sync>(name: &str) -> Result<Arc<T>, PluginError> {
    load_as(name, "aiida.transports")
}

/// Entry-point changes for the current thread, undone when dropped.
///
/// ```
/// use aiida::plugins::{self, ScopedEntryPoints};
///
/// let mut scope = ScopedEntryPoints::new();
/// scope.add("aiida.data", "docs.temporary", 42_i32);
/// assert!(plugins::get("aiida.data", "docs.temporary").is_ok());
/// drop(scope);
/// assert!(plugins::get("aiida.data", "docs.temporary").is_err());
/// ```
#[must_use = "the changes are undone when this guard drops"]
pub struct ScopedEntryPoints {
    id: u64,
    // Not Send: the changes belong to this thread.
    _thread_bound: std::marker::PhantomData<*const ()>,
}

impl ScopedEntryPoints {
    /// A new, empty scope on top of any outer ones.
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LAYERS.with(|layers| layers.borrow_mut().push((id, Vec::new())));
        ScopedEntryPoints { id, _thread_bound: std::marker::PhantomData }
    }

    /// Adds `value` as entry point `name` of `group` (no duplicate check, as in aiida: a second
    /// plugin of the same name makes loading it an error).
    pub fn add<T: Any + Send + Sync>(&mut self, group: &str, name: &str, value: T) {
        self.add_plugin(group, name, Arc::new(value));
    }

    /// Adds an already shared plugin value.
    pub fn add_plugin(&mut self, group: &str, name: &str, value: Plugin) {
        let ep = EntryPoint::new(group, name, format!("a test scope (#{})", self.id), value);
        self.push(Change::Add(ep));
    }

    /// Removes entry point `name` of `group`. As in aiida, it is an error only when no entry point
    /// of that name exists in any group.
    pub fn remove(&mut self, group: &str, name: &str) -> Result<(), PluginError> {
        if !entry_points().iter().any(|ep| ep.name == name) {
            return Err(PluginError::Missing { group: group.to_owned(), name: name.to_owned() });
        }
        self.push(Change::Remove { group: group.to_owned(), name: name.to_owned() });
        Ok(())
    }

    fn push(&mut self, change: Change) {
        LAYERS.with(|layers| {
            let mut layers = layers.borrow_mut();
            let layer = layers.iter_mut().find(|(id, _)| *id == self.id).expect("a live scope has its layer");
            layer.1.push(change);
        });
    }
}

impl Default for ScopedEntryPoints {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ScopedEntryPoints {
    fn drop(&mut self) {
        LAYERS.with(|layers| layers.borrow_mut().retain(|(id, _)| *id != self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Marker(u8);
    crate::entry_point!("aiida.data", "tests.marker", Marker(7));
    crate::entry_point!("aiida.parsers", "tests.shared_name", Marker(1));
    crate::entry_point!("aiida.calculations", "tests.shared_name", Marker(2));

    #[test]
    fn link_time_registrations_load_by_full_partial_and_minimal_strings() {
        for s in ["aiida.data:tests.marker", "data:tests.marker", "tests.marker"] {
            assert_eq!(load_as::<Marker>(s, "aiida.data").unwrap().0, 7, "{s}");
        }
        assert_eq!(load("tests.marker", None).unwrap().full(), "aiida.data:tests.marker");
    }

    #[test]
    fn group_factories_load_from_their_group_only() {
        assert_eq!(parser_factory::<Marker>("tests.shared_name").unwrap().0, 1);
        assert_eq!(calculation_factory::<Marker>("calculations:tests.shared_name").unwrap().0, 2);
        assert!(matches!(workflow_factory::<Marker>("tests.shared_name"), Err(PluginError::Missing { .. })));
        assert!(matches!(
            scheduler_factory::<Marker>("parsers:tests.shared_name"),
            Err(PluginError::WrongGroup { .. })
        ));
        assert!(matches!(transport_factory::<Marker>("x:y:z"), Err(PluginError::InvalidString(_))));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let missing = load("data:tests.nothing", None).unwrap_err();
        assert_eq!(missing, PluginError::Missing { group: "aiida.data".into(), name: "tests.nothing".into() });
        let wrong = load("aiida.parsers:tests.shared_name", Some("aiida.data")).unwrap_err();
        assert!(matches!(wrong, PluginError::WrongGroup { .. }), "{wrong}");
        let ambiguous = load("tests.shared_name", None).unwrap_err();
        assert!(ambiguous.to_string().contains("aiida.calculations, aiida.parsers"), "{ambiguous}");
        assert!(matches!(parse("a:b:c"), Err(PluginError::InvalidString(_))));
        let typed = load_as::<String>("tests.marker", "aiida.data").unwrap_err();
        assert!(typed.to_string().contains("is not a alloc::string::String"), "{typed}");
    }

    #[test]
    fn two_plugins_claiming_one_name_is_an_error_on_load() {
        let mut scope = ScopedEntryPoints::new();
        scope.add("aiida.data", "tests.marker", Marker(8));
        let err = get("aiida.data", "tests.marker").unwrap_err();
        assert!(matches!(err, PluginError::Multiple { .. }), "{err}");
        assert!(err.to_string().contains("aiida::plugins::tests") && err.to_string().contains("test scope"), "{err}");
    }

    #[test]
    fn scoped_changes_are_undone_and_invisible_to_other_threads() {
        let mut scope = ScopedEntryPoints::new();
        scope.add("aiida.data", "tests.scoped", Marker(3));
        scope.remove("aiida.data", "tests.marker").unwrap();
        assert!(get("aiida.data", "tests.scoped").is_ok());
        assert!(get("aiida.data", "tests.marker").is_err());
        std::thread::spawn(|| {
            assert!(get("aiida.data", "tests.scoped").is_err(), "another thread sees a scoped addition");
            assert!(get("aiida.data", "tests.marker").is_ok(), "another thread misses a scoped removal");
        })
        .join()
        .unwrap();
        {
            let mut inner = ScopedEntryPoints::new();
            inner.add("aiida.data", "tests.inner", Marker(4));
            assert!(get("aiida.data", "tests.scoped").is_ok(), "outer scopes stay in force");
        }
        assert!(get("aiida.data", "tests.inner").is_err());
        drop(scope);
        assert!(get("aiida.data", "tests.scoped").is_err());
        assert_eq!(get("aiida.data", "tests.marker").unwrap().downcast::<Marker>().unwrap().0, 7);
    }

    #[test]
    fn removing_a_name_no_group_has_is_an_error_but_another_group_is_not() {
        let mut scope = ScopedEntryPoints::new();
        let err = scope.remove("aiida.data", "tests.never").unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry point `tests.never` not found in group `aiida.data`; `verdi plugin list aiida.data` shows what is there"
        );
        // The name exists in other groups: silently nothing to do, as in aiida.
        scope.remove("aiida.nonexistent", "tests.marker").unwrap();
        assert!(get("aiida.data", "tests.marker").is_ok());
    }
}
