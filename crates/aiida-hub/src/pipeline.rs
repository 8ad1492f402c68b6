//! One pass of the hub: discover the latest version of every listed plugin from its index, read
//! what is new (metadata and entry points) into the store, mark superseded versions stale, and
//! withdraw plugins gone from the list or the index, but only when the discovery was complete (no
//! source failed, and the index did not lose far more of the listed plugins than usual): a source
//! that fails must not make plugins disappear. A version already stored is not asked about again.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::source_list::{ListVisibility, PackageIndex, SourceEntry, SourceList, list_checks};
use crate::sources::{CratesIo, GitHub, Pypi, SourceError, repository};
use crate::store::{Store, StoreError, VersionRecord};

/// The sources a pass reads.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The Python package index.
    pub pypi: Pypi,
    /// crates.io.
    pub crates_io: CratesIo,
    /// GitHub, for plugins whose code is there (description, licence, commits of the last
    /// year); not asked when `None`.
    pub github: Option<GitHub>,
}

/// How many requests a pass makes at once (against all sources together).
const CONCURRENCY: usize = 8;

/// `work` on each item, at most `limit` at once, the results in the items' order.
fn parallel<T: Sync, R: Send>(items: &[T], limit: usize, work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<R>>> = std::sync::Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..limit.min(items.len()) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(index) else { break };
                    let result = work(item);
                    results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(result);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.into_iter().map(|r| r.expect("every item was worked on")).collect()
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Whether every source answered, for as many plugins as before.
    pub complete: bool,
    /// How many plugins have a version on their index.
    pub discovered: usize,
    /// Plugins seen for the first time.
    pub new: Vec<String>,
    /// Plugins with another latest version: (plugin, old, new).
    pub updated: Vec<(String, String, String)>,
    /// Plugins withdrawn (gone from the list or the index).
    pub withdrawn: Vec<String>,
    /// Plugins whose latest version was stored already.
    pub unchanged: usize,
    /// Plugins whose index could not be asked: (plugin, why).
    pub failed: Vec<(String, String)>,
}

/// One pass over `list` with `sources` into `store`.
pub fn update(list: &SourceList, sources: &Sources, store: &mut Store) -> Result<Summary, StoreError> {
    let previous = store.latest()?;
    let mut summary = Summary::default();
    let mut found: BTreeMap<String, (&'static str, String)> = BTreeMap::new();
    let mut not_indexed: BTreeSet<String> = BTreeSet::new();
    let asked: Vec<&SourceEntry> = list.entries().filter(|e| e.visibility != ListVisibility::Blocked).collect();
    let answers = parallel(&asked, CONCURRENCY, |entry| match entry.index() {
        PackageIndex::Pypi(project) => {
            sources.pypi.latest(&project).map(|r| r.filter(|r| !r.yanked).map(|r| ("pypi", r.version)))
        }
        PackageIndex::CratesIo(krate) => {
            sources.crates_io.latest(&krate).map(|r| r.filter(|r| !r.yanked).map(|r| ("crates.io", r.version)))
        }
        PackageIndex::None => Ok(None),
    });
    for (entry, answer) in asked.iter().zip(answers) {
        match answer {
            Ok(Some(found_version)) => drop(found.insert(entry.name.clone(), found_version)),
            Ok(None) => drop(not_indexed.insert(entry.name.clone())),
            Err(e) => summary.failed.push((entry.name.clone(), e.to_string())),
        }
    }
    summary.discovered = found.len();
    // Far fewer of the plugins found last time (and still listed) found now: the index may be
    // having trouble, so nothing is withdrawn. Far fewer: more than a fifth, and more than 2.
    let listed = |plugin: &String| list.get(plugin).is_some_and(|e| e.visibility != ListVisibility::Blocked);
    let before: Vec<&String> = previous.keys().filter(|plugin| listed(plugin)).collect();
    let lost = before.iter().filter(|plugin| !found.contains_key(**plugin)).count();
    let far_fewer = lost > 2 && lost as f64 > 0.2 * before.len() as f64;
    summary.complete = summary.failed.is_empty() && !far_fewer;

    // What is new is read at once (bounded), then stored in order.
    let mut new_versions = Vec::new();
    let known = store.known()?;
    for (plugin, (index, version)) in &found {
        let before = previous.get(plugin).map(|r| r.version.clone());
        if known.contains(&(plugin.clone(), version.clone())) {
            if before.as_deref() == Some(version.as_str()) {
                summary.unchanged += 1;
            } else {
                store.follow(plugin, version)?;
                summary.updated.push((plugin.clone(), before.unwrap_or_default(), version.clone()));
            }
        } else if let Some(entry) = list.get(plugin) {
            new_versions.push((entry, *index, version.as_str(), before));
        }
    }
    let records =
        parallel(&new_versions, CONCURRENCY, |(entry, index, version, _)| read_version(entry, index, version, sources));
    for ((entry, _, version, before), record) in new_versions.iter().zip(records) {
        store.record_latest(&record)?;
        match before {
            Some(before) => summary.updated.push((entry.name.clone(), before.clone(), (*version).to_owned())),
            None => summary.new.push(entry.name.clone()),
        }
    }
    if summary.complete {
        for plugin in previous.keys() {
            if (!listed(plugin) || not_indexed.contains(plugin))
                && !found.contains_key(plugin)
                && store.withdraw(plugin)?
            {
                summary.withdrawn.push(plugin.clone());
            }
        }
    }
    store.record_run(summary.complete, i32::try_from(found.len()).unwrap_or(i32::MAX))?;
    Ok(summary)
}

/// What the sources say of `version` of a plugin: its metadata and entry points, or the error.
fn read_version(
    entry: &crate::source_list::SourceEntry,
    index: &str,
    version: &str,
    sources: &Sources,
) -> VersionRecord {
    let mut record = VersionRecord {
        plugin: entry.name.clone(),
        version: version.to_owned(),
        index: index.to_owned(),
        latest: true,
        metadata: None,
        entry_points: None,
        error: None,
    };
    let read = || -> Result<(Value, Value), SourceError> {
        match entry.index() {
            PackageIndex::Pypi(project) => {
                let (metadata, entry_points) = sources.pypi.metadata_and_entry_points(&project, version)?;
                Ok((Value::Object(metadata), json!(entry_points)))
            }
            PackageIndex::CratesIo(krate) => {
                let mut metadata = sources.crates_io.metadata(&krate, version)?;
                let manifest = sources.crates_io.manifest(&krate, version)?;
                if let Some(aiida_version) = &manifest.aiida_version {
                    metadata.insert("aiida_version".into(), json!(aiida_version));
                }
                if let Some(status) = &manifest.development_status {
                    metadata.insert("development_status".into(), json!(status));
                }
                Ok((Value::Object(metadata), json!(manifest.entry_points)))
            }
            PackageIndex::None => Ok((json!({}), json!({}))),
        }
    };
    match read() {
        Ok((mut metadata, entry_points)) => {
            if let (Some(github), Some((owner, repo)), Some(metadata)) =
                (&sources.github, repository(&entry.code_home), metadata.as_object_mut())
            {
                enrich(github, &owner, &repo, metadata);
            }
            record.metadata = Some(metadata);
            record.entry_points = Some(entry_points);
        }
        Err(e) => record.error = Some(aiida::report::Chain(&e).to_string()),
    }
    record
}

/// What GitHub adds: its licence where the index gave none, its description where the index
/// gave none, stars, the authors of its `CITATION.cff` (which win), and the commits of the last
/// 365 days (as aiida-registry counts them). GitHub failing takes nothing away.
fn enrich(github: &GitHub, owner: &str, repo: &str, metadata: &mut Map<String, Value>) {
    if let Ok(Some(authors)) = github.citation_authors(owner, repo) {
        metadata.insert("author".to_owned(), json!(authors.join(", ")));
    }
    match github.metadata(owner, repo) {
        Ok(found) => {
            for key in ["license", "description"] {
                if let Some(value) = found.get(key).filter(|_| !metadata.contains_key(key)) {
                    metadata.insert(key.to_owned(), value.clone());
                }
            }
            if let Some(stars) = found.get("stars") {
                metadata.insert("stars".to_owned(), stars.clone());
            }
        }
        Err(_) => return,
    }
    let since = (chrono::Utc::now() - chrono::Duration::days(365)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let Ok(Some(count)) = github.commits_since(owner, repo, &since) {
        metadata.insert("commits_count".to_owned(), json!(count));
    }
}

/// The registry of the public plugins with a latest version, in aiida-registry's
/// `plugins_metadata.json` form, with aiida-registry's checks as warnings and errors.
pub fn registry(list: &SourceList, store: &mut Store) -> Result<Value, StoreError> {
    let latest = store.latest()?;
    let plugins: Map<String, Value> = list
        .entries()
        .filter(|e| e.visibility == ListVisibility::Public)
        .filter_map(|entry| Some((entry.name.clone(), registry_record(entry, latest.get(&entry.name)?))))
        .collect();
    Ok(Value::Object(plugins))
}

/// The registry's record of `entry` at version `record`, with the checks its data allow
/// (aiida-registry's codes): W002, W003, W006, W007, W009, W010, W019, W020 and E004.
pub fn registry_record(entry: &SourceEntry, record: &VersionRecord) -> Value {
    let metadata = record.metadata.clone().unwrap_or_else(|| json!({}));
    let entry_points = record.entry_points.clone().unwrap_or_else(|| json!({}));
    let mut warnings: Vec<String> =
        list_checks(entry).into_iter().map(|(code, text)| format!("{code}: {text}")).collect();
    let mut errors = Vec::new();
    if let Some(error) = &record.error {
        if error.contains("W019") {
            warnings.push(format!("W019: {error}"));
        } else if error.contains("not a wheel") {
            warnings.push(format!("W020: {error}"));
        } else {
            errors.push(format!("E004: {error}"));
        }
    }
    if let Some(classifiers) = metadata.get("classifiers").and_then(Value::as_array)
        && !classifiers.iter().any(|c| c.as_str() == Some("Framework :: AiiDA"))
    {
        warnings.push("W003: the classifiers lack `Framework :: AiiDA`".to_owned());
    }
    let aiida_version = metadata.get("aiida_version").cloned().unwrap_or(Value::Null);
    if aiida_version.is_null() && record.error.is_none() {
        warnings.push("W002: no requirement on aiida-core was found".to_owned());
    }
    let prefix = &entry.entry_point_prefix;
    if let Some(groups) = entry_points.as_object() {
        for (group, names) in groups.iter().filter(|(g, _)| g.starts_with("aiida.")) {
            for name in names.as_object().map(|n| n.keys().collect::<Vec<_>>()).unwrap_or_default() {
                if !name.starts_with(prefix.as_str()) {
                    warnings
                        .push(format!("W010: entry point {group}:{name} does not start with the prefix `{prefix}`"));
                }
            }
        }
    }
    let status = entry
        .development_status
        .clone()
        .or_else(|| metadata.get("development_status").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "planning".to_owned());
    let install = match entry.index() {
        PackageIndex::Pypi(project) => format!("pip install {project}"),
        PackageIndex::CratesIo(krate) => format!("cargo add {krate}@{}", record.version),
        PackageIndex::None => match &entry.pip_url {
            Some(url) => format!("pip install {url}"),
            None => "See source code repository.".to_owned(),
        },
    };
    json!({
        "name": entry.name, "entry_point_prefix": prefix, "code_home": entry.code_home,
        "package_name": entry.package_name(), "pip_url": entry.pip_url, "documentation_url": entry.documentation_url,
        "development_status": status, "metadata": metadata, "aiida_version": aiida_version,
        "entry_points": entry_points, "pip_install_cmd": install, "warnings": warnings, "errors": errors,
        "summaryinfo": [], "commits_count": metadata.get("commits_count").cloned().unwrap_or(json!(-1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_use_aiida_registry_s_codes() {
        let list =
            SourceList::parse("aiida-diff: {entry_point_prefix: diff, code_home: h, pip_url: aiida-diff}").unwrap();
        let entry = list.get("aiida-diff").unwrap();
        let record = |classifiers: Value, entry_points: Value| VersionRecord {
            plugin: "aiida-diff".into(),
            version: "1.0.0".into(),
            index: "pypi".into(),
            latest: true,
            metadata: Some(json!({"classifiers": classifiers})),
            entry_points: Some(entry_points),
            error: None,
        };
        let warnings = |r: &VersionRecord| -> Vec<String> {
            let value = registry_record(entry, r);
            value["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()[..4].to_owned()).collect()
        };
        let plain = record(json!(["Programming Language :: Python"]), json!({"aiida.data": {"other.x": "m:X"}}));
        assert_eq!(warnings(&plain), ["W003", "W002", "W010"]);
        let good = record(json!(["Framework :: AiiDA"]), json!({"aiida.data": {"diff.x": "m:X"}}));
        assert_eq!(warnings(&good), ["W002"], "no aiida-core requirement in this record");
    }

    #[test]
    fn work_is_done_in_order_with_a_bound() {
        let running = std::sync::atomic::AtomicUsize::new(0);
        let most = std::sync::atomic::AtomicUsize::new(0);
        let items: Vec<usize> = (0..50).collect();
        let results = parallel(&items, 4, |i| {
            let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            std::thread::yield_now();
            running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            i * 2
        });
        assert_eq!(results, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 4);
    }
}
