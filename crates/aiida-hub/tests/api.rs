//! The hub's HTTP API over a catalog built by a real pass (store on testpg, PyPI replayed on
//! loopback), asked over HTTP.

mod common;

use std::sync::{Arc, RwLock};

use aiida_hub::api::{Catalog, router};
use aiida_hub::pipeline::{Sources, update};
use aiida_hub::source_list::SourceList;
use aiida_hub::sources::{CratesIo, Pypi};
use aiida_hub::store::Store;
use aiida_registry::testing::{Reply, Server};

fn publish(server: &Server, project: &str, prefix: &str, broken: bool) {
    let file = format!("/files/{project}.whl");
    let release = serde_json::json!({
        "info": {"name": project, "version": "1.0.0", "summary": "s", "requires_dist": ["aiida-core>=2.6"]},
        "urls": [{"packagetype": "bdist_wheel", "url": server.url(&file), "upload_time": "2026-11-01T00:00:00"}]
    })
    .to_string();
    server.reply(&format!("/pypi/{project}/json"), Reply::Json(release.clone()));
    server.reply(&format!("/pypi/{project}/1.0.0/json"), Reply::Json(release));
    let body = if broken {
        b"broken".to_vec()
    } else {
        common::wheel(&[("x-1.0.0.dist-info/entry_points.txt", &format!("[aiida.data]\n{prefix} = m:D\n"))])
    };
    server.reply(&file, Reply::Bytes(body, "application/zip"));
}

/// GET `path` on the API: status, `Access-Control-Allow-Origin`, JSON body.
fn ask(base: &str, path: &str) -> (u16, Option<String>, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let response = agent.get(&format!("{base}{path}")).call().unwrap();
    let status = response.status().as_u16();
    let cors = response.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = serde_json::from_slice(&response.into_body().read_to_vec().unwrap()).unwrap();
    (status, cors, body)
}

#[test]
fn plugins_are_served_as_the_rules_say() {
    let db = testpg::Server::shared().unwrap().database(&testpg::Template::empty()).unwrap();
    let mut store = Store::connect(&db.url()).unwrap();
    let server = Server::start().unwrap();
    publish(&server, "aiida-diff", "diff", false);
    publish(&server, "aiida-quiet", "quiet", false);
    publish(&server, "aiida-banned", "banned", false);
    publish(&server, "aiida-broken", "broken", true);
    server.reply("/api/v1/crates/aiida-down", Reply::Status(503));
    let list = SourceList::parse(
        "aiida-diff: {entry_point_prefix: diff, code_home: h, pip_url: aiida-diff}\n\
         aiida-quiet: {entry_point_prefix: quiet, code_home: h, pip_url: aiida-quiet, visibility: hidden}\n\
         aiida-banned: {entry_point_prefix: banned, code_home: h, pip_url: aiida-banned, visibility: blocked}\n\
         aiida-broken: {entry_point_prefix: broken, code_home: h, pip_url: aiida-broken}\n\
         aiida-down: {entry_point_prefix: down, code_home: h, crates_io: aiida-down}\n",
    )
    .unwrap();
    let sources = Sources {
        pypi: Pypi::new(server.url("")).with_retries(2, std::time::Duration::from_millis(1)),
        crates_io: CratesIo::new(server.url(""), server.url("/files"))
            .with_retries(2, std::time::Duration::from_millis(1)),
        github: None,
    };

    // Served before any pass: the manifest is still processing.
    let catalog = Arc::new(RwLock::new(Catalog::default()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = catalog.clone();
    runtime.spawn(async move { axum::serve(listener, router(served)).await });
    let (status, _, body) = ask(&base, "/manifest/aiida-diff");
    assert_eq!((status, body["reason"].as_str()), (503, Some("still processing")));

    let summary = update(&list, &sources, &mut store).unwrap();
    *catalog.write().unwrap() = Catalog::build(&list, &mut store, &summary).unwrap();

    let (status, cors, body) = ask(&base, "/plugins");
    assert_eq!((status, cors.as_deref()), (200, Some("*")));
    let mut listed: Vec<&String> = body.as_object().unwrap().keys().collect();
    listed.sort();
    assert_eq!(listed, ["aiida-diff"], "hidden, blocked, invalid and undiscovered ones are not listed");
    assert_eq!(ask(&base, "/plugins/aiida-broken").0, 404, "an invalid plugin is not served");
    assert_eq!(ask(&base, "/plugins/aiida-quiet").0, 200, "a hidden plugin is served by name");
    assert_eq!(ask(&base, "/plugins/aiida-banned").0, 404, "a blocked one is not");
    assert_eq!(ask(&base, "/plugins/aiida-none").0, 404);
    let (status, _, body) = ask(&base, "/plugins/aiida-diff/versions/1.0.0");
    assert_eq!((status, body["latest"].as_bool()), (200, Some(true)));
    assert_eq!(ask(&base, "/plugins/aiida-diff/versions/9.9").0, 404);
    let (status, _, body) = ask(&base, "/manifest/aiida-diff");
    assert_eq!((status, &body["entry_points"]["aiida.data"]["diff"]), (200, &serde_json::json!("m:D")));
    let (status, _, body) = ask(&base, "/manifest/aiida-broken");
    assert!(
        status == 404 && body["reason"].as_str().unwrap().starts_with("the manifest could not be read: "),
        "{body}"
    );
    let (status, _, body) = ask(&base, "/manifest/aiida-down");
    assert_eq!((status, body["reason"].as_str()), (404, Some("discovery failed")));
    assert_eq!(ask(&base, "/nowhere").0, 404);
}
