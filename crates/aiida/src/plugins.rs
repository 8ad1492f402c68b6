//! Entry points: plugins found by group and name.
//!
//! A plugin crate registers its entry points at link time with [`entry_point!`](crate::entry_point),
//! so every binary that links the crate (test binaries and daemon workers included) sees them.
//! Strings name them as aiida does: FULL `aiida.data:core.int`, PARTIAL `data:core.int`, or
//! MINIMAL `core.int` (the group then comes from the factory).
//!
//! Tests change what is registered for themselves only, with an [`EntryPointScope`]: additions,
//! removals and hidden entry points enabled, in force where the scope is entered (the test's
//! thread, the threads and tasks it hands the scope to, another process it describes it to).

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
    /// Enabling an entry point that was not registered as hidden.
    #[error(
        "no hidden entry point `{name}` in group `{group}`: register it with \
         `aiida::entry_point!(hidden, \"{group}\", \"{name}\", value)` in the test's crate"
    )]
    NotHidden {
        /// The group.
        group: String,
        /// The name.
        name: String,
    },
    /// A scope holding a value added at run time was described for another process.
    #[error(
        "entry point `{group}:{name}` was added at run time and exists only in this process, so another process \
         (a daemon worker) cannot see it; register it at link time with \
         `aiida::entry_point!(hidden, \"{group}\", \"{name}\", value)` and enable it in the test's scope by name"
    )]
    RunTimeOnly {
        /// The group.
        group: String,
        /// The name.
        name: String,
    },
    /// The text given to [`EntryPointScope::from_description`] is not a description.
    #[error("invalid entry-point scope description (write it with `EntryPointScope::describe`): {0}")]
    InvalidDescription(String),
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
    package: Option<(String, String)>,
    value: Plugin,
}

impl EntryPoint {
    /// A new entry point; `source` says who registered it (shown in messages).
    pub fn new(group: impl Into<String>, name: impl Into<String>, source: impl Into<String>, value: Plugin) -> Self {
        EntryPoint { group: group.into(), name: name.into(), source: source.into(), package: None, value }
    }

    /// The same, provided by the package `name` at `version` (what [`entry_point!`] records: the
    /// crate that registers it).
    pub fn with_package(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.package = Some((name.into(), version.into()));
        self
    }

    /// The package providing it, and its version, when known.
    pub fn package(&self) -> Option<(&str, &str)> {
        self.package.as_ref().map(|(name, version)| (name.as_str(), version.as_str()))
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
///
/// With `hidden` first, the entry point is registered but seen only where an
/// [`EntryPointScope`](crate::plugins::EntryPointScope) enables it by name: how a test adds a
/// plugin for itself that a worker process (the same binary) can enable too.
///
/// ```
/// pub struct Doubler;
/// aiida::entry_point!(hidden, "aiida.calculations", "docs.doubler", Doubler);
///
/// assert!(aiida::plugins::get("aiida.calculations", "docs.doubler").is_err());
/// let scope = aiida::plugins::EntryPointScope::new();
/// scope.enable("aiida.calculations", "docs.doubler").unwrap();
/// scope.in_scope(|| assert!(aiida::plugins::get("aiida.calculations", "docs.doubler").is_ok()));
/// ```
///
/// With a [`PluginGroup`](crate::plugins::PluginGroup) and a colon before the name, the value is
/// registered as that group's plugin type, which [`factory`](crate::plugins::factory) hands back:
///
/// ```
/// use aiida::plugins::{self, PluginGroup};
///
/// pub trait Greeter: Send + Sync {
///     fn greet(&self) -> String;
/// }
/// pub struct Greeters;
/// impl PluginGroup for Greeters {
///     const NAME: &'static str = "aiida.docs.greeters";
///     type Plugin = dyn Greeter;
/// }
///
/// struct English;
/// impl Greeter for English {
///     fn greet(&self) -> String {
///         "hello".into()
///     }
/// }
/// aiida::entry_point!(Greeters: "docs.english", English);
///
/// assert_eq!(plugins::factory::<Greeters>("docs.english").unwrap().greet(), "hello");
/// ```
#[macro_export]
macro_rules! entry_point {
    (hidden, $group:path : $name:expr, $value:expr $(,)?) => {
        $crate::entry_point!(@register register_hidden, <$group as $crate::plugins::PluginGroup>::NAME, $name,
            $crate::plugins::Registered::<$group>::new({
                let plugin: ::std::sync::Arc<<$group as $crate::plugins::PluginGroup>::Plugin> =
                    ::std::sync::Arc::new($value);
                plugin
            }));
    };
    ($group:path : $name:expr, $value:expr $(,)?) => {
        $crate::entry_point!(@register register, <$group as $crate::plugins::PluginGroup>::NAME, $name,
            $crate::plugins::Registered::<$group>::new({
                let plugin: ::std::sync::Arc<<$group as $crate::plugins::PluginGroup>::Plugin> =
                    ::std::sync::Arc::new($value);
                plugin
            }));
    };
    (hidden, $group:expr, $name:expr, $value:expr $(,)?) => {
        $crate::entry_point!(@register register_hidden, $group, $name, $value);
    };
    ($group:expr, $name:expr, $value:expr $(,)?) => {
        $crate::entry_point!(@register register, $group, $name, $value);
    };
    (@register $register:ident, $group:expr, $name:expr, $value:expr) => {
        $crate::__private::ctor::declarative::ctor!(
            #[ctor(unsafe, anonymous)]
            fn register() {
                $crate::plugins::$register(
                    $crate::plugins::EntryPoint::new(
                        $group,
                        $name,
                        ::std::module_path!(),
                        ::std::sync::Arc::new($value),
                    )
                    .with_package(::std::env!("CARGO_PKG_NAME"), ::std::env!("CARGO_PKG_VERSION")),
                );
            }
        );
    };
}

/// One change a scope makes to the entry points its outer scopes see.
#[derive(Clone)]
enum Change {
    /// A value that exists only in this process.
    Add(EntryPoint),
    /// A hidden entry point registered at link time, enabled by name.
    Enable(EntryPoint),
    Remove {
        group: String,
        name: String,
    },
}

thread_local! {
    /// The scopes entered on this thread, innermost last.
    static ENTERED: RefCell<Vec<EntryPointScope>> = const { RefCell::new(Vec::new()) };
}

/// Every entry point as the current scope sees it (see [`EntryPointScope`]): the registered ones
/// with the changes of the scope entered on this thread applied, sorted by group and name.
pub fn entry_points() -> Vec<EntryPoint> {
    let mut all = REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(scope) = EntryPointScope::current() {
        scope.apply(&mut all);
    }
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

/// An entry-point group whose plugins share one Rust interface: a typed descriptor over the
/// untyped registry. A group's crate declares it (the core: [`DataTypes`](crate::orm::data::DataTypes);
/// the engine: calculations, parsers, schedulers, transports, workflows, with their traits), plugins
/// register into it with `entry_point!(Group: "name", value)`, and [`factory`] hands back the
/// plugin as the group's type, so the caller never names a plugin's concrete type.
pub trait PluginGroup: 'static {
    /// The group's name, e.g. `aiida.data`.
    const NAME: &'static str;
    /// What a plugin of the group is, as its users call it: a struct (a descriptor such as
    /// [`DataType`](crate::orm::data::DataType)) or a trait object (`dyn Parser`).
    type Plugin: ?Sized + Send + Sync + 'static;
}

/// The value an entry point of a typed group holds (see [`PluginGroup`]).
pub struct Registered<G: PluginGroup>(Arc<G::Plugin>);

impl<G: PluginGroup> Registered<G> {
    /// `plugin`, shared as the group's plugin type (`Arc::new(value)` coerces to a trait object).
    pub fn new(plugin: Arc<G::Plugin>) -> Self {
        Registered(plugin)
    }

    /// The plugin.
    pub fn plugin(&self) -> &Arc<G::Plugin> {
        &self.0
    }
}

/// Loads the plugin `name` (FULL, PARTIAL or MINIMAL) of group `G` as the group's plugin type.
pub fn factory<G: PluginGroup>(name: &str) -> Result<Arc<G::Plugin>, PluginError> {
    typed::<G>(&load(name, Some(G::NAME))?)
}

/// The plugin of a typed group's entry point (an error if it was registered with another type).
pub fn typed<G: PluginGroup>(entry_point: &EntryPoint) -> Result<Arc<G::Plugin>, PluginError> {
    match entry_point.value.downcast_ref::<Registered<G>>() {
        Some(registered) => Ok(registered.0.clone()),
        None => Err(PluginError::WrongType {
            entry_point: entry_point.full(),
            expected: std::any::type_name::<G::Plugin>(),
        }),
    }
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

/// What a test changes in the entry points: additions, removals and hidden entry points enabled,
/// on top of the scope it was made in. A handle: clones share the scope.
///
/// A scope is in force where it is entered: on a thread with [`EntryPointScope::enter`] or
/// [`EntryPointScope::in_scope`], in a future with [`EntryPointScope::instrument`] (on whatever
/// thread polls it). Tests running at the same time have scopes of their own and see none of each
/// other's changes. To reach the threads and tasks a test starts, hand them the scope; the engine's
/// `run` and `submit` take it and carry it to where the process runs.
///
/// Another process (a daemon worker, which is the same binary re-executed) gets the scope from
/// [`EntryPointScope::describe`] and [`EntryPointScope::from_description`]: only what it can find
/// again by name travels, that is removals and hidden entry points (`entry_point!(hidden, ...)`)
/// enabled with [`EntryPointScope::enable`]. A value added at run time exists only in this process:
/// describing a scope that holds one is an error that says how to register it instead.
///
/// ```
/// use aiida::plugins::{self, EntryPointScope};
///
/// let scope = EntryPointScope::new();
/// scope.add("aiida.parsers", "docs.parser", 42_i32);
/// let seen = std::thread::spawn({
///     let scope = scope.clone();
///     move || scope.in_scope(|| plugins::get("aiida.parsers", "docs.parser").is_ok())
/// });
/// assert!(seen.join().unwrap());
/// assert!(plugins::get("aiida.parsers", "docs.parser").is_err(), "not entered on this thread");
/// ```
#[derive(Clone)]
pub struct EntryPointScope {
    inner: Arc<ScopeInner>,
}

struct ScopeInner {
    id: u64,
    outer: Option<EntryPointScope>,
    changes: Mutex<Vec<Change>>,
}

impl std::fmt::Debug for EntryPointScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryPointScope").field("id", &self.inner.id).finish_non_exhaustive()
    }
}

/// One change of a scope as [`EntryPointScope::describe`] writes it, in order.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Described {
    Enable { group: String, name: String },
    Remove { group: String, name: String },
}

static HIDDEN: Mutex<Vec<EntryPoint>> = Mutex::new(Vec::new());

/// Registers an entry point that only scopes enabling it see; `entry_point!(hidden, ...)` calls
/// this at start-up.
pub fn register_hidden(entry_point: EntryPoint) {
    HIDDEN.lock().unwrap_or_else(|e| e.into_inner()).push(entry_point);
}

impl EntryPointScope {
    /// A new scope with no changes, on top of the one entered on this thread (if any), whose
    /// changes stay in force inside it.
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let inner = ScopeInner { id, outer: EntryPointScope::current(), changes: Mutex::new(Vec::new()) };
        EntryPointScope { inner: Arc::new(inner) }
    }

    /// The scope entered on this thread, if any.
    pub fn current() -> Option<EntryPointScope> {
        ENTERED.with(|entered| entered.borrow().last().cloned())
    }

    /// Adds `value` as entry point `name` of `group` (no duplicate check, as in aiida: a second
    /// plugin of the same name makes loading it an error). The value exists only in this process.
    pub fn add<T: Any + Send + Sync>(&self, group: &str, name: &str, value: T) {
        self.add_plugin(group, name, Arc::new(value));
    }

    /// Adds `plugin` as entry point `name` of the typed group `G` (see [`PluginGroup`]).
    pub fn add_typed<G: PluginGroup>(&self, name: &str, plugin: Arc<G::Plugin>) {
        self.add(G::NAME, name, Registered::<G>::new(plugin));
    }

    /// Adds an already shared plugin value.
    pub fn add_plugin(&self, group: &str, name: &str, value: Plugin) {
        let ep = EntryPoint::new(group, name, format!("a test scope (#{})", self.inner.id), value);
        self.push(Change::Add(ep));
    }

    /// Enables the hidden entry point `name` of `group` (registered with
    /// `entry_point!(hidden, ...)`): unlike a value added at run time, another process of the same
    /// binary can enable it too.
    pub fn enable(&self, group: &str, name: &str) -> Result<(), PluginError> {
        let hidden = HIDDEN.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = hidden.iter().filter(|ep| ep.group == group && ep.name == name);
        let Some(ep) = found.next() else {
            return Err(PluginError::NotHidden { group: group.to_owned(), name: name.to_owned() });
        };
        let changes: Vec<Change> = std::iter::once(ep).chain(found).cloned().map(Change::Enable).collect();
        drop(hidden);
        self.inner.changes.lock().unwrap_or_else(|e| e.into_inner()).extend(changes);
        Ok(())
    }

    /// Removes entry point `name` of `group`. As in aiida, it is an error only when no entry point
    /// of that name exists in any group.
    pub fn remove(&self, group: &str, name: &str) -> Result<(), PluginError> {
        let mut seen = REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.apply(&mut seen);
        if !seen.iter().any(|ep| ep.name == name) {
            return Err(PluginError::Missing { group: group.to_owned(), name: name.to_owned() });
        }
        self.push(Change::Remove { group: group.to_owned(), name: name.to_owned() });
        Ok(())
    }

    fn push(&self, change: Change) {
        self.inner.changes.lock().unwrap_or_else(|e| e.into_inner()).push(change);
    }

    /// Applies this scope's changes, after its outer scopes', to `entry_points`.
    fn apply(&self, entry_points: &mut Vec<EntryPoint>) {
        if let Some(outer) = &self.inner.outer {
            outer.apply(entry_points);
        }
        for change in self.inner.changes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            match change {
                Change::Add(ep) | Change::Enable(ep) => entry_points.push(ep.clone()),
                Change::Remove { group, name } => entry_points.retain(|ep| !(&ep.group == group && &ep.name == name)),
            }
        }
    }

    /// Puts the scope in force on this thread until the guard drops.
    pub fn enter(&self) -> EnteredScope {
        ENTERED.with(|entered| entered.borrow_mut().push(self.clone()));
        EnteredScope { id: self.inner.id, _thread_bound: std::marker::PhantomData }
    }

    /// Runs `f` with the scope in force.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _entered = self.enter();
        f()
    }

    /// `future`, with the scope in force whenever it is polled, on any thread: what a task the
    /// test spawns runs.
    pub fn instrument<F: Future>(&self, future: F) -> InScope<F> {
        InScope { scope: self.clone(), future: Box::pin(future) }
    }

    /// The scope, as text another process of this binary turns back into it with
    /// [`EntryPointScope::from_description`]; an error if it holds a value added at run time.
    pub fn describe(&self) -> Result<String, PluginError> {
        let mut described = Vec::new();
        self.describe_into(&mut described)?;
        Ok(serde_json::to_string(&described).expect("a description serialises"))
    }

    fn describe_into(&self, described: &mut Vec<Described>) -> Result<(), PluginError> {
        if let Some(outer) = &self.inner.outer {
            outer.describe_into(described)?;
        }
        for change in self.inner.changes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            described.push(match change {
                Change::Add(ep) => {
                    return Err(PluginError::RunTimeOnly { group: ep.group.clone(), name: ep.name.clone() });
                }
                Change::Enable(ep) => Described::Enable { group: ep.group.clone(), name: ep.name.clone() },
                Change::Remove { group, name } => Described::Remove { group: group.clone(), name: name.clone() },
            });
        }
        Ok(())
    }

    /// The scope [`EntryPointScope::describe`] described, rebuilt in this process (a new scope on
    /// top of the one entered on this thread).
    pub fn from_description(text: &str) -> Result<EntryPointScope, PluginError> {
        let described: Vec<Described> =
            serde_json::from_str(text).map_err(|e| PluginError::InvalidDescription(e.to_string()))?;
        let scope = EntryPointScope::new();
        for change in described {
            match change {
                Described::Enable { group, name } => scope.enable(&group, &name)?,
                Described::Remove { group, name } => scope.push(Change::Remove { group, name }),
            }
        }
        Ok(scope)
    }
}

impl Default for EntryPointScope {
    fn default() -> Self {
        Self::new()
    }
}

/// A scope in force on this thread until dropped (see [`EntryPointScope::enter`]); it cannot leave
/// the thread.
///
/// ```compile_fail
/// let entered = aiida::plugins::EntryPointScope::new().enter();
/// std::thread::spawn(move || drop(entered));
/// ```
#[must_use = "the scope is in force until this guard drops"]
pub struct EnteredScope {
    id: u64,
    _thread_bound: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for EnteredScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnteredScope").field("id", &self.id).finish()
    }
}

impl Drop for EnteredScope {
    fn drop(&mut self) {
        ENTERED.with(|entered| {
            let mut entered = entered.borrow_mut();
            if let Some(at) = entered.iter().rposition(|scope| scope.inner.id == self.id) {
                entered.remove(at);
            }
        });
    }
}

/// A future with an entry-point scope in force whenever it is polled (see
/// [`EntryPointScope::instrument`]).
#[must_use = "futures do nothing unless polled"]
pub struct InScope<F> {
    scope: EntryPointScope,
    future: std::pin::Pin<Box<F>>,
}

impl<F> std::fmt::Debug for InScope<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InScope").field("scope", &self.scope).finish_non_exhaustive()
    }
}

impl<F: Future> Future for InScope<F> {
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = &mut *self;
        let _entered = this.scope.enter();
        this.future.as_mut().poll(cx)
    }
}

/// Entry-point changes in force on the current thread, undone when dropped: an
/// [`EntryPointScope`] made and entered at once. [`ScopedEntryPoints::scope`] hands the scope to
/// threads, tasks and processes.
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
#[derive(Debug)]
pub struct ScopedEntryPoints {
    // Dropped first: the scope leaves the thread before the handle goes.
    _entered: EnteredScope,
    scope: EntryPointScope,
}

impl ScopedEntryPoints {
    /// A new, empty scope on top of any outer ones, entered on this thread.
    pub fn new() -> Self {
        let scope = EntryPointScope::new();
        ScopedEntryPoints { _entered: scope.enter(), scope }
    }

    /// The scope, to hand to threads, tasks and processes the test starts.
    pub fn scope(&self) -> &EntryPointScope {
        &self.scope
    }

    /// Adds `value` as entry point `name` of `group` (see [`EntryPointScope::add`]).
    pub fn add<T: Any + Send + Sync>(&mut self, group: &str, name: &str, value: T) {
        self.scope.add(group, name, value);
    }

    /// Adds an already shared plugin value.
    pub fn add_plugin(&mut self, group: &str, name: &str, value: Plugin) {
        self.scope.add_plugin(group, name, value);
    }

    /// Enables a hidden entry point (see [`EntryPointScope::enable`]).
    pub fn enable(&mut self, group: &str, name: &str) -> Result<(), PluginError> {
        self.scope.enable(group, name)
    }

    /// Removes entry point `name` of `group` (see [`EntryPointScope::remove`]).
    pub fn remove(&mut self, group: &str, name: &str) -> Result<(), PluginError> {
        self.scope.remove(group, name)
    }
}

impl Default for ScopedEntryPoints {
    fn default() -> Self {
        Self::new()
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

    crate::entry_point!(hidden, "aiida.calculations", "tests.hidden", Marker(9));

    #[test]
    fn a_scope_reaches_the_threads_and_tasks_it_is_handed_to() {
        let scoped = ScopedEntryPoints::new();
        scoped.scope().add("aiida.data", "tests.handed", Marker(5));
        let scope = scoped.scope().clone();
        let in_thread = std::thread::spawn(move || scope.in_scope(|| get("aiida.data", "tests.handed").is_ok()));
        assert!(in_thread.join().unwrap(), "a thread handed the scope sees the addition");
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let in_task = runtime.spawn(scoped.scope().instrument(async {
            tokio::task::yield_now().await;
            get("aiida.data", "tests.handed").is_ok()
        }));
        assert!(runtime.block_on(in_task).unwrap(), "a task handed the scope sees it on any worker");
        let bare = runtime.spawn(async { get("aiida.data", "tests.handed").is_ok() });
        assert!(!runtime.block_on(bare).unwrap(), "a task without the scope does not");
    }

    #[test]
    fn tests_running_at_once_do_not_see_each_others_scopes() {
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let test = |own: &'static str, other: &'static str| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut scope = ScopedEntryPoints::new();
                scope.add("aiida.data", own, Marker(1));
                barrier.wait(); // both scopes hold their additions now
                let seen = (get("aiida.data", own).is_ok(), get("aiida.data", other).is_ok());
                barrier.wait();
                seen
            })
        };
        let (a, b) = (test("tests.test_a", "tests.test_b"), test("tests.test_b", "tests.test_a"));
        assert_eq!(a.join().unwrap(), (true, false));
        assert_eq!(b.join().unwrap(), (true, false));
    }

    #[test]
    fn hidden_entry_points_are_enabled_by_name_and_travel_as_a_description() {
        assert!(get("aiida.calculations", "tests.hidden").is_err(), "hidden until enabled");
        let scope = EntryPointScope::new();
        scope.remove("aiida.data", "tests.marker").unwrap();
        scope.enable("aiida.calculations", "tests.hidden").unwrap();
        let err = scope.enable("aiida.calculations", "tests.marker").unwrap_err();
        assert!(err.to_string().contains("entry_point!(hidden, \"aiida.calculations\", \"tests.marker\""), "{err}");
        let text = scope.describe().unwrap();
        // What another process of this binary does with the text.
        let rebuilt = std::thread::spawn(move || {
            let scope = EntryPointScope::from_description(&text).unwrap();
            scope.in_scope(|| {
                (calculation_factory::<Marker>("tests.hidden").map(|m| m.0), get("aiida.data", "tests.marker").is_ok())
            })
        });
        assert_eq!(rebuilt.join().unwrap(), (Ok(9), false));
        assert!(matches!(EntryPointScope::from_description("nonsense"), Err(PluginError::InvalidDescription(_))));
    }

    #[test]
    fn a_value_added_at_run_time_cannot_travel_to_another_process() {
        let mut outer = ScopedEntryPoints::new();
        outer.add("aiida.parsers", "tests.local", Marker(3));
        let inner = EntryPointScope::new();
        inner.enable("aiida.calculations", "tests.hidden").unwrap();
        let err = inner.describe().unwrap_err();
        assert_eq!(err, PluginError::RunTimeOnly { group: "aiida.parsers".into(), name: "tests.local".into() });
        assert!(err.to_string().contains("register it at link time with `aiida::entry_point!(hidden,"), "{err}");
    }
}
