//! Passes of the hub over a plugin list, with PyPI and crates.io replayed from a loopback server
//! and the store on a temporary PostgreSQL: new plugins, a new version, nothing changed, a source
//! down, a withdrawn plugin, a broken wheel, hidden and blocked plugins; the registry read back by
//! the registry client.

mod common;

use aiida_hub::pipeline::{Sources, registry, update};
use aiida_hub::source_list::SourceList;
use aiida_hub::sources::{CratesIo, GitHub, Pypi};
use aiida_hub::store::Store;
use aiida_registry::testing::{Reply, Server};
use common::{dot_crate, wheel};

/// Publishes `version` of the Python plugin `project` (prefix `prefix`) on the server's PyPI.
fn publish_pypi(server: &Server, project: &str, prefix: &str, version: &str, broken_wheel: bool) {
    let file = format!("/files/{project}-{version}.whl");
    let release = serde_json::json!({
        "info": {"name": project, "version": version, "summary": format!("{project} does things"),
                 "author": "A", "requires_dist": ["aiida-core>=2.6,<3"], "classifiers": ["Framework :: AiiDA"]},
        "urls": [{"packagetype": "bdist_wheel", "url": server.url(&file), "upload_time": "2026-11-01T00:00:00", "yanked": false}]
    })
    .to_string();
    server.reply(&format!("/pypi/{project}/json"), Reply::Json(release.clone()));
    server.reply(&format!("/pypi/{project}/{version}/json"), Reply::Json(release));
    let entry_points = format!("[aiida.calculations]\n{prefix} = m:Calc\n[aiida.parsers]\n{prefix} = m:Parser\n");
    let body = if broken_wheel {
        b"not a zip".to_vec()
    } else {
        wheel(&[(&format!("{}-{version}.dist-info/entry_points.txt", project.replace('-', "_")), &entry_points)])
    };
    server.reply(&file, Reply::Bytes(body, "application/zip"));
}

/// Publishes `version` of the Rust plugin crate `name` (prefix `prefix`) on the server's crates.io.
fn publish_crate(server: &Server, name: &str, prefix: &str, version: &str) {
    let record = serde_json::json!({
        "crate": {"name": name, "default_version": version, "repository": "https://github.com/o/r"},
        "versions": [{"num": version, "yanked": false, "license": "MIT", "description": "A Rust plugin"}]
    });
    server.reply(&format!("/api/v1/crates/{name}"), Reply::Json(record.to_string()));
    let cargo_toml = format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\n[package.metadata.aiida.plugin]\n\
         entry_point_prefix = \"{prefix}\"\naiida_version = \">=2.9,<3\"\ndevelopment_status = \"alpha\"\n\
         [package.metadata.aiida.plugin.entry_points.\"aiida.data\"]\n\"{prefix}.sequence\" = \"x::SEQUENCE\"\n"
    );
    let body = dot_crate(name, version, &[("Cargo.toml", &cargo_toml)]);
    server.reply(&format!("/files/crates/{name}/{name}-{version}.crate"), Reply::Bytes(body, "application/gzip"));
}

const LIST: &str = "
aiida-diff:
  entry_point_prefix: diff
  code_home: https://github.com/o/aiida-diff
  pip_url: aiida-diff
aiida-rusty:
  entry_point_prefix: rusty
  code_home: https://github.com/o/aiida-rusty
  crates_io: aiida-rusty
aiida-quiet:
  entry_point_prefix: quiet
  code_home: https://github.com/o/aiida-quiet
  pip_url: aiida-quiet
  visibility: hidden
aiida-banned:
  entry_point_prefix: banned
  code_home: https://github.com/o/aiida-banned
  pip_url: aiida-banned
  visibility: blocked
";

/// Requests made for `path` so far.
fn hits(server: &Server, paths: &[&str]) -> usize {
    paths.iter().map(|p| server.hits(p)).sum()
}

#[test]
fn passes_record_new_updated_unchanged_and_withdrawn_plugins_and_publish_the_registry() {
    let db = testpg::Server::shared().unwrap().database(&testpg::Template::empty()).unwrap();
    let mut store = Store::connect(&db.url()).unwrap();
    let server = Server::start().unwrap();
    publish_pypi(&server, "aiida-diff", "diff", "2.1.0", false);
    publish_pypi(&server, "aiida-quiet", "quiet", "1.0.0", false);
    publish_pypi(&server, "aiida-banned", "banned", "1.0.0", false);
    publish_crate(&server, "aiida-rusty", "rusty", "0.1.0");
    // GitHub knows aiida-diff's licence (PyPI gave none) and its commits of the year.
    server.reply(
        "/repos/o/aiida-diff",
        Reply::Json(r#"{"license": {"spdx_id": "Apache-2.0"}, "stargazers_count": 3}"#.into()),
    );
    let last = format!("<{}?page=42>; rel=\"last\"", server.url("/repos/o/aiida-diff/commits"));
    server.reply("/repos/o/aiida-diff/commits", Reply::JsonWithHeaders("[{}]".into(), vec![("Link".into(), last)]));
    let citation =
        "cff-version: 1.2.0\nauthors:\n  - given-names: Ann\n    family-names: Author\n  - name: The diff team\n";
    server.reply("/raw/o/aiida-diff/HEAD/CITATION.cff", Reply::Bytes(citation.as_bytes().to_vec(), "text/plain"));
    let sources = Sources {
        pypi: Pypi::new(server.url("")).with_retries(2, std::time::Duration::from_millis(1)),
        crates_io: CratesIo::new(server.url(""), server.url("/files"))
            .with_retries(2, std::time::Duration::from_millis(1)),
        github: Some(
            GitHub::new(server.url(""), None)
                .with_raw(server.url("/raw"))
                .with_retries(2, std::time::Duration::from_millis(1)),
        ),
    };
    let list = SourceList::parse(LIST).unwrap();

    // First pass: everything is new; the blocked plugin is not even asked about.
    let summary = update(&list, &sources, &mut store).unwrap();
    assert!(summary.complete, "{summary:?}");
    assert_eq!(summary.new, ["aiida-diff", "aiida-quiet", "aiida-rusty"]);
    assert_eq!(server.hits("/pypi/aiida-banned/json"), 0);
    let published = registry(&list, &mut store).unwrap();
    let parsed = aiida_registry::Registry::parse(published.to_string().as_bytes()).unwrap();
    assert_eq!(parsed.keys().collect::<Vec<_>>(), ["diff", "rusty"], "the hidden and the blocked are not listed");
    let diff = aiida_registry::RegistryEntry::from_record(parsed.get("diff").unwrap());
    assert_eq!(diff.entry_point_spec(), ["aiida.calculations:diff", "aiida.parsers:diff"]);
    assert_eq!((diff.version.as_deref(), diff.aiida_version.as_deref()), (Some("2.1.0"), Some(">=2.6,<3")));
    assert_eq!(diff.license.as_deref(), Some("Apache-2.0"), "from GitHub");
    assert_eq!(diff.author.as_deref(), Some("Ann Author, The diff team"), "CITATION.cff's authors win");
    assert_eq!(published["aiida-diff"]["commits_count"], 42);
    assert_eq!(published["aiida-rusty"]["metadata"]["license"], "MIT", "crates.io's licence kept");
    let rusty = aiida_registry::RegistryEntry::from_record(parsed.get("rusty").unwrap());
    assert_eq!(rusty.entry_point_spec(), ["aiida.data:rusty.sequence"]);
    assert_eq!(rusty.install_command().unwrap(), "cargo add aiida-rusty@0.1.0");
    assert_eq!(
        (rusty.development_status.as_deref(), rusty.aiida_version.as_deref()),
        (Some("alpha"), Some(">=2.9,<3"))
    );

    // Nothing changed: only discovery is asked.
    let details = [
        "/pypi/aiida-diff/2.1.0/json",
        "/files/aiida-diff-2.1.0.whl",
        "/files/crates/aiida-rusty/aiida-rusty-0.1.0.crate",
    ];
    let before = hits(&server, &details);
    let summary = update(&list, &sources, &mut store).unwrap();
    assert_eq!((summary.unchanged, summary.new.len(), summary.updated.len()), (3, 0, 0));
    assert_eq!(hits(&server, &details), before, "no metadata or manifest request");

    // A new version: the old one stale, the new one latest.
    publish_pypi(&server, "aiida-diff", "diff", "2.2.0", false);
    let summary = update(&list, &sources, &mut store).unwrap();
    assert_eq!(summary.updated, [("aiida-diff".to_owned(), "2.1.0".to_owned(), "2.2.0".to_owned())]);
    let versions = store.versions("aiida-diff").unwrap();
    let flags: Vec<(&str, bool)> = versions.iter().map(|v| (v.version.as_str(), v.latest)).collect();
    assert_eq!(flags, [("2.1.0", false), ("2.2.0", true)]);

    // crates.io down: the discovery is incomplete, nothing is withdrawn, the failure is reported.
    server.reply("/api/v1/crates/aiida-rusty", Reply::Status(503));
    let without_diff = LIST.replace("aiida-diff:", "aiida-gone:").replace("pip_url: aiida-diff", "pip_url: aiida-gone");
    let shrunk = SourceList::parse(&without_diff).unwrap();
    let summary = update(&shrunk, &sources, &mut store).unwrap();
    assert!(!summary.complete);
    let failed: Vec<&str> = summary.failed.iter().map(|(plugin, _)| plugin.as_str()).collect();
    assert_eq!(failed, ["aiida-rusty"], "crates.io's 503 (aiida-gone is only not on PyPI): {:?}", summary.failed);
    assert!(summary.withdrawn.is_empty(), "an incomplete discovery withdraws nothing");
    assert!(store.latest().unwrap().contains_key("aiida-diff"));

    // Everything answering again, aiida-diff gone from the list: withdrawn.
    publish_crate(&server, "aiida-rusty", "rusty", "0.1.0");
    let without = LIST.replace("aiida-diff:\n  entry_point_prefix: diff\n  code_home: https://github.com/o/aiida-diff\n  pip_url: aiida-diff\n", "");
    let list = SourceList::parse(&without).unwrap();
    let summary = update(&list, &sources, &mut store).unwrap();
    assert!(summary.complete, "{summary:?}");
    assert_eq!(summary.withdrawn, ["aiida-diff"]);
    assert!(!store.latest().unwrap().contains_key("aiida-diff"));
}

#[test]
fn a_broken_wheel_or_manifest_is_recorded_as_an_error_and_published_with_its_check() {
    let db = testpg::Server::shared().unwrap().database(&testpg::Template::empty()).unwrap();
    let mut store = Store::connect(&db.url()).unwrap();
    let server = Server::start().unwrap();
    publish_pypi(&server, "aiida-diff", "diff", "2.1.0", true);
    let sources = Sources {
        pypi: Pypi::new(server.url("")).with_retries(2, std::time::Duration::from_millis(1)),
        crates_io: CratesIo::new(server.url(""), server.url("/files"))
            .with_retries(2, std::time::Duration::from_millis(1)),
        github: None,
    };
    let list =
        SourceList::parse("aiida-diff:\n  entry_point_prefix: diff\n  code_home: h\n  pip_url: aiida-diff\n").unwrap();
    let summary = update(&list, &sources, &mut store).unwrap();
    assert_eq!(summary.new, ["aiida-diff"]);
    let record = &store.latest().unwrap()["aiida-diff"];
    assert!(record.error.as_deref().is_some_and(|e| e.contains("not a wheel")), "{record:?}");
    let published = registry(&list, &mut store).unwrap();
    let warnings = published["aiida-diff"]["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().starts_with("W020: ")), "{warnings:?}");
    // A crate whose Cargo.toml has no plugin manifest: an error record too.
    let body = dot_crate("aiida-plain", "1.0.0", &[("Cargo.toml", "[package]\nname = \"aiida-plain\"\n")]);
    server.reply("/files/crates/aiida-plain/aiida-plain-1.0.0.crate", Reply::Bytes(body, "application/gzip"));
    let record = serde_json::json!({"crate": {"default_version": "1.0.0"}, "versions": [{"num": "1.0.0"}]});
    server.reply("/api/v1/crates/aiida-plain", Reply::Json(record.to_string()));
    let plain =
        SourceList::parse("aiida-plain:\n  entry_point_prefix: plain\n  code_home: h\n  crates_io: aiida-plain\n")
            .unwrap();
    assert_eq!(update(&plain, &sources, &mut store).unwrap().new, ["aiida-plain"]);
    let error = store.latest().unwrap()["aiida-plain"].error.clone().unwrap();
    assert!(
        error.contains("the plugin manifest of aiida-plain 1.0.0: Cargo.toml has no [package.metadata.aiida.plugin]"),
        "{error}"
    );
    assert!(registry(&plain, &mut store).unwrap()["aiida-plain"]["errors"][0].as_str().unwrap().starts_with("E004: "));
}

#[test]
fn an_index_that_suddenly_lacks_many_plugins_withdraws_none() {
    let db = testpg::Server::shared().unwrap().database(&testpg::Template::empty()).unwrap();
    let mut store = Store::connect(&db.url()).unwrap();
    let server = Server::start().unwrap();
    let names = ["aiida-a", "aiida-b", "aiida-c", "aiida-d"];
    let mut text = String::new();
    for name in names {
        let prefix = name.trim_start_matches("aiida-");
        publish_pypi(&server, name, prefix, "1.0.0", false);
        text.push_str(&format!("{name}:\n  entry_point_prefix: {prefix}\n  code_home: h\n  pip_url: {name}\n"));
    }
    let sources = Sources {
        pypi: Pypi::new(server.url("")).with_retries(2, std::time::Duration::from_millis(1)),
        crates_io: CratesIo::new(server.url(""), server.url("/files"))
            .with_retries(2, std::time::Duration::from_millis(1)),
        github: None,
    };
    let list = SourceList::parse(&text).unwrap();
    assert_eq!(update(&list, &sources, &mut store).unwrap().new.len(), 4);
    // PyPI answers 404 for three of the four: far fewer than before, so nothing is withdrawn ...
    for name in &names[1..] {
        server.reply(&format!("/pypi/{name}/json"), Reply::Status(404));
    }
    let summary = update(&list, &sources, &mut store).unwrap();
    assert!(!summary.complete && summary.withdrawn.is_empty(), "{summary:?}");
    assert_eq!(store.latest().unwrap().len(), 4);
    // ... while one plugin gone from the index is withdrawn.
    publish_pypi(&server, "aiida-b", "b", "1.0.0", false);
    publish_pypi(&server, "aiida-c", "c", "1.0.0", false);
    let summary = update(&list, &sources, &mut store).unwrap();
    assert!(summary.complete, "{summary:?}");
    assert_eq!(summary.withdrawn, ["aiida-d"]);
}
