//! The hub's HTTP API, served from a [`Catalog`] that each pass rebuilds (requests never wait on
//! the database): the latest public plugins, one plugin's latest or exact version (public or
//! hidden; blocked, invalid (its latest version could not be read) and unknown ones are 404),
//! its manifest with napari-hub's reasons (503 while the first pass runs, 404 when it could not
//! be read or discovered), CORS for browsers.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::pipeline::{Summary, registry_record};
use crate::source_list::{ListVisibility, SourceList};
use crate::store::{Store, StoreError, VersionRecord};

/// One plugin as the API serves it.
#[derive(Debug, Clone)]
struct Served {
    visibility: ListVisibility,
    versions: Vec<VersionRecord>,
    record: Option<Value>,
    discovery_failed: bool,
}

/// What the API serves: nothing until the first pass, then its result.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    ready: bool,
    plugins: BTreeMap<String, Served>,
}

impl Catalog {
    /// The catalog of `list` after a pass that `summary` sums up.
    pub fn build(list: &SourceList, store: &mut Store, summary: &Summary) -> Result<Catalog, StoreError> {
        let mut plugins = BTreeMap::new();
        let mut all = store.all_versions()?;
        for entry in list.entries() {
            let versions = all.remove(&entry.name).unwrap_or_default();
            let record = versions.iter().find(|v| v.latest).map(|latest| registry_record(entry, latest));
            let discovery_failed = summary.failed.iter().any(|(plugin, _)| plugin == &entry.name);
            plugins.insert(
                entry.name.clone(),
                Served { visibility: entry.visibility, versions, record, discovery_failed },
            );
        }
        Ok(Catalog { ready: true, plugins })
    }

    /// A plugin that may be served by name: listed, not blocked.
    fn servable(&self, name: &str) -> Option<&Served> {
        self.plugins.get(name).filter(|p| p.visibility != ListVisibility::Blocked)
    }
}

impl Served {
    /// Whether its latest version could not be read (napari-hub's invalid plugins).
    fn invalid(&self) -> bool {
        self.versions.iter().any(|v| v.latest && v.error.is_some())
    }
}

/// The catalog shared by the API and the passes that replace it.
pub type SharedCatalog = Arc<RwLock<Catalog>>;

/// A JSON answer with CORS.
fn answer(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

fn not_found(reason: String) -> Response {
    answer(StatusCode::NOT_FOUND, json!({ "reason": reason }))
}

/// The API's routes over `catalog`.
pub fn router(catalog: SharedCatalog) -> axum::Router {
    axum::Router::new()
        .route("/plugins", get(plugins))
        .route("/plugins/{name}", get(plugin))
        .route("/plugins/{name}/versions/{version}", get(version))
        .route("/manifest/{name}", get(manifest))
        .fallback(|| async {
            not_found(
                "no such route: /plugins, /plugins/{name}, /plugins/{name}/versions/{version}, /manifest/{name}".into(),
            )
        })
        .with_state(catalog)
}

fn read(catalog: &SharedCatalog) -> std::sync::RwLockReadGuard<'_, Catalog> {
    catalog.read().unwrap_or_else(|e| e.into_inner())
}

async fn plugins(State(catalog): State<SharedCatalog>) -> Response {
    let catalog = read(&catalog);
    let listed: Map<String, Value> = catalog
        .plugins
        .iter()
        .filter(|(_, p)| p.visibility == ListVisibility::Public && !p.invalid())
        .filter_map(|(name, p)| Some((name.clone(), p.record.clone()?)))
        .collect();
    answer(StatusCode::OK, Value::Object(listed))
}

async fn plugin(State(catalog): State<SharedCatalog>, Path(name): Path<String>) -> Response {
    match read(&catalog).servable(&name).filter(|p| !p.invalid()).and_then(|p| p.record.clone()) {
        Some(record) => answer(StatusCode::OK, record),
        None => not_found(format!("plugin `{name}` not found")),
    }
}

async fn version(State(catalog): State<SharedCatalog>, Path((name, version)): Path<(String, String)>) -> Response {
    let catalog = read(&catalog);
    let found = catalog.servable(&name).and_then(|p| p.versions.iter().find(|v| v.version == version));
    match found {
        Some(v) => answer(
            StatusCode::OK,
            json!({"name": v.plugin, "version": v.version, "latest": v.latest, "metadata": v.metadata,
                   "entry_points": v.entry_points, "error": v.error}),
        ),
        None => not_found(format!("version {version} of plugin `{name}` not found")),
    }
}

async fn manifest(State(catalog): State<SharedCatalog>, Path(name): Path<String>) -> Response {
    let catalog = read(&catalog);
    if !catalog.ready {
        let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, json!({"reason": "still processing"}));
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return response;
    }
    let Some(plugin) = catalog.servable(&name) else { return not_found(format!("plugin `{name}` not found")) };
    match plugin.versions.iter().find(|v| v.latest) {
        Some(VersionRecord { entry_points: Some(entry_points), .. }) => {
            answer(StatusCode::OK, json!({"name": name, "entry_points": entry_points}))
        }
        Some(VersionRecord { error: Some(error), .. }) => not_found(format!("the manifest could not be read: {error}")),
        _ if plugin.discovery_failed => not_found("discovery failed".to_owned()),
        _ => not_found(format!("plugin `{name}` has no version")),
    }
}
