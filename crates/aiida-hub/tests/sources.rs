//! The hub's sources replayed from loopback servers (no network): crates.io's API and files.

mod common;

use aiida_hub::SourceError;
use aiida_hub::sources::CratesIo;
use aiida_registry::testing::{Reply, Server};
use common::{dot_crate, wheel};

const CARGO_TOML: &str = r#"[package]
name = "aiida-diff"
version = "2.1.0"

[package.metadata.aiida.plugin]
entry_point_prefix = "diff"
development_status = "beta"

[package.metadata.aiida.plugin.entry_points."aiida.calculations"]
"diff" = "aiida_diff::DiffCalculation"
"#;

/// crates.io's answer for the crate, in the shape of its API (`crate`, `versions`, ...).
fn crate_record() -> String {
    serde_json::json!({
        "crate": {"name": "aiida-diff", "description": "Compare files (old text)", "homepage": null,
                  "repository": "https://github.com/example/aiida-diff", "documentation": null,
                  "downloads": 1234, "default_version": "2.1.0", "max_version": "3.0.0-beta.1",
                  "max_stable_version": "2.1.0"},
        "versions": [
            {"num": "3.0.0-beta.1", "yanked": false, "created_at": "2026-11-01T00:00:00Z", "checksum": "cc"},
            {"num": "2.1.0", "yanked": false, "created_at": "2026-10-01T00:00:00Z", "checksum": "ab12",
             "description": "Compare files", "license": "MIT", "rust_version": "1.89"}
        ],
        "keywords": [{"id": "aiida"}], "categories": []
    })
    .to_string()
}

fn crates_io(server: &Server) -> CratesIo {
    CratesIo::new(server.url(""), server.url("/files")).with_retries(3, std::time::Duration::from_millis(1))
}

#[test]
fn a_crate_s_latest_version_metadata_and_manifest_come_from_crates_io() {
    let server = Server::start().unwrap();
    server.reply("/api/v1/crates/aiida-diff", Reply::Json(crate_record()));
    let gz = dot_crate("aiida-diff", "2.1.0", &[("Cargo.toml", CARGO_TOML), ("src/lib.rs", "")]);
    server.reply("/files/crates/aiida-diff/aiida-diff-2.1.0.crate", Reply::Bytes(gz, "application/gzip"));
    let source = crates_io(&server);

    let latest = source.latest("aiida-diff").unwrap().unwrap();
    assert_eq!((latest.version.as_str(), latest.yanked), ("2.1.0", false), "the default version, not the beta");
    assert_eq!(
        (latest.created_at.as_deref(), latest.checksum.as_deref()),
        (Some("2026-10-01T00:00:00Z"), Some("ab12"))
    );
    assert_eq!(source.latest("aiida-none").unwrap(), None, "a crate crates.io does not have");

    let metadata = source.metadata("aiida-diff", "2.1.0").unwrap();
    assert_eq!(metadata["description"], "Compare files", "the version's own description wins");
    assert_eq!(metadata["license"], "MIT");
    assert_eq!(metadata["documentation_url"], "https://docs.rs/aiida-diff/2.1.0", "docs.rs when the crate names none");
    assert_eq!(metadata["repository"], "https://github.com/example/aiida-diff");
    assert!(!metadata.contains_key("home_page"), "null fields are left out");

    let manifest = source.manifest("aiida-diff", "2.1.0").unwrap();
    assert_eq!((manifest.entry_point_prefix.as_str(), manifest.version.as_str()), ("diff", "2.1.0"));
    assert_eq!(manifest.declared(), ["aiida.calculations:diff"]);
}

#[test]
fn a_broken_crate_a_missing_manifest_and_a_failing_server_are_errors_that_say_which() {
    let server = Server::start().unwrap();
    let source = crates_io(&server);
    let path = |v: &str| format!("/files/crates/aiida-diff/aiida-diff-{v}.crate");
    server.reply(&path("1.0.0"), Reply::Bytes(b"not gzip at all".to_vec(), "application/gzip"));
    let err = source.manifest("aiida-diff", "1.0.0").unwrap_err();
    assert!(matches!(err, SourceError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("not a gzipped tar"), "{err}");

    let no_table = dot_crate("aiida-diff", "1.1.0", &[("Cargo.toml", "[package]\nname = \"aiida-diff\"\n")]);
    server.reply(&path("1.1.0"), Reply::Bytes(no_table, "application/gzip"));
    let err = source.manifest("aiida-diff", "1.1.0").unwrap_err();
    assert_eq!(err.to_string(), "the plugin manifest of aiida-diff 1.1.0");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.starts_with("Cargo.toml has no [package.metadata.aiida.plugin] table"), "{cause}");

    let elsewhere = dot_crate("aiida-diff", "1.2.0", &[("README.md", "hi")]);
    server.reply(&path("1.2.0"), Reply::Bytes(elsewhere, "application/gzip"));
    assert!(
        source
            .manifest("aiida-diff", "1.2.0")
            .unwrap_err()
            .to_string()
            .contains("holds no aiida-diff-1.2.0/Cargo.toml")
    );

    server.reply("/api/v1/crates/aiida-diff", Reply::Status(503));
    let before = server.hits("/api/v1/crates/aiida-diff");
    let err = source.latest("aiida-diff").unwrap_err();
    assert_eq!(server.hits("/api/v1/crates/aiida-diff") - before, 3, "a 5xx is tried 3 times");
    assert_eq!(err.to_string(), format!("crates.io answered 503 for {}", server.url("/api/v1/crates/aiida-diff")));
    server.reply("/api/v1/crates/aiida-diff", Reply::Json("{\"crate\": {}}".to_owned()));
    assert!(source.latest("aiida-diff").unwrap_err().to_string().contains("the crate has no version"));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = CratesIo::new(format!("http://127.0.0.1:{closed}"), format!("http://127.0.0.1:{closed}"))
        .with_retries(2, std::time::Duration::from_millis(1));
    let err = down.latest("aiida-diff").unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
}

// ---- PyPI ----

/// PyPI's JSON for aiida-diff 2.1.0, its wheel at `wheel_url` (or none).
fn pypi_release(wheel_url: Option<String>) -> String {
    let mut files = vec![
        serde_json::json!({"packagetype": "sdist", "url": "x.tar.gz", "upload_time": "2026-10-01T12:00:00", "yanked": false}),
    ];
    if let Some(url) = wheel_url {
        files.push(serde_json::json!({"packagetype": "bdist_wheel", "url": url, "upload_time": "2026-10-02T12:00:00", "yanked": false}));
    }
    serde_json::json!({
        "info": {"name": "aiida-diff", "version": "2.1.0", "summary": "Compare files", "author": "Ann",
                 "author_email": "ann@example.org", "license": "MIT", "home_page": "", "classifiers": ["Framework :: AiiDA"],
                 "requires_dist": ["numpy", "aiida-core (>=2.0,<3)", "pytest; extra == \"tests\""]},
        "urls": files
    })
    .to_string()
}

#[test]
fn a_project_s_release_metadata_and_wheel_entry_points_come_from_pypi() {
    let server = Server::start().unwrap();
    let wheel_url = server.url("/files/aiida_diff-2.1.0-py3-none-any.whl");
    server.reply("/pypi/aiida-diff/json", Reply::Json(pypi_release(Some(wheel_url.clone()))));
    server.reply("/pypi/aiida-diff/2.1.0/json", Reply::Json(pypi_release(Some(wheel_url))));
    let entry_points = "[aiida.calculations]\ndiff = aiida_diff.calculations:DiffCalculation\n\n[aiida.parsers]\ndiff = aiida_diff.parsers:DiffParser\n";
    let whl = wheel(&[("aiida_diff/__init__.py", ""), ("aiida_diff-2.1.0.dist-info/entry_points.txt", entry_points)]);
    server.reply("/files/aiida_diff-2.1.0-py3-none-any.whl", Reply::Bytes(whl, "application/zip"));
    let pypi = aiida_hub::sources::Pypi::new(server.url(""));

    let latest = pypi.latest("aiida-diff").unwrap().unwrap();
    assert_eq!((latest.version.as_str(), latest.yanked), ("2.1.0", false));
    assert_eq!(pypi.latest("aiida-none").unwrap(), None);
    let metadata = pypi.metadata("aiida-diff", "2.1.0").unwrap();
    assert_eq!(metadata["description"], "Compare files");
    assert_eq!(metadata["aiida_version"], ">=2.0,<3");
    assert_eq!(metadata["release_date"], "2026-10-01");
    assert!(!metadata.contains_key("home_page"), "empty fields are left out, as aiida-registry does");
    let groups = pypi.entry_points("aiida-diff", "2.1.0").unwrap();
    assert_eq!(groups["aiida.calculations"]["diff"], "aiida_diff.calculations:DiffCalculation");
    assert_eq!(groups["aiida.parsers"]["diff"], "aiida_diff.parsers:DiffParser");
}

#[test]
fn a_release_without_a_wheel_or_with_a_broken_one_is_an_error_that_says_so() {
    let server = Server::start().unwrap();
    server.reply("/pypi/aiida-diff/2.1.0/json", Reply::Json(pypi_release(None)));
    let pypi = aiida_hub::sources::Pypi::new(server.url(""));
    let err = pypi.entry_points("aiida-diff", "2.1.0").unwrap_err();
    assert!(err.to_string().contains("aiida-diff 2.1.0 has no wheel, so no entry points can be read (W019)"), "{err}");

    let wheel_url = server.url("/files/broken.whl");
    server.reply("/pypi/aiida-diff/2.2.0/json", Reply::Json(pypi_release(Some(wheel_url)).replace("2.1.0", "2.2.0")));
    server.reply("/files/broken.whl", Reply::Bytes(b"PK not really".to_vec(), "application/zip"));
    let err = pypi.entry_points("aiida-diff", "2.2.0").unwrap_err();
    assert!(matches!(err, SourceError::Malformed { .. }) && err.to_string().contains("not a wheel"), "{err}");
    let err = pypi.metadata("aiida-diff", "9.9.9").unwrap_err();
    assert_eq!(err.to_string(), format!("PyPI answered 404 for {}", server.url("/pypi/aiida-diff/9.9.9/json")));
}

// ---- GitHub ----

#[test]
fn a_repository_s_description_licence_and_commit_activity_come_from_github() {
    let server = Server::start().unwrap();
    server.reply(
        "/repos/o/aiida-diff",
        Reply::Json(
            serde_json::json!({"description": "Compare files", "license": {"spdx_id": "MIT"}, "stargazers_count": 7,
                               "archived": false, "pushed_at": "2026-11-30T00:00:00Z"})
            .to_string(),
        ),
    );
    server.reply(
        "/repos/o/unlicensed",
        Reply::Json(serde_json::json!({"license": {"spdx_id": "NOASSERTION"}}).to_string()),
    );
    let since = "/commits?since=2025-12-06T00:00:00Z&per_page=1";
    let last = format!("<{}?since=x&per_page=1&page=57>; rel=\"last\"", server.url("/repos/o/aiida-diff/commits"));
    let next = format!("<{}?page=2>; rel=\"next\", ", server.url("/repos/o/aiida-diff/commits"));
    server.reply(
        &format!("/repos/o/aiida-diff{since}"),
        Reply::JsonWithHeaders("[{\"sha\": \"a\"}]".to_owned(), vec![("Link".to_owned(), format!("{next}{last}"))]),
    );
    server.reply(&format!("/repos/o/one{since}"), Reply::Json("[{\"sha\": \"a\"}]".to_owned()));
    server.reply(&format!("/repos/o/none{since}"), Reply::Json("[]".to_owned()));
    server.reply(&format!("/repos/o/limited{since}"), Reply::Status(403));
    server.reply("/repos/o/busy", Reply::Status(502));
    let github =
        aiida_hub::sources::GitHub::new(server.url(""), None).with_retries(2, std::time::Duration::from_millis(1));

    let metadata = github.metadata("o", "aiida-diff").unwrap();
    assert_eq!((metadata["description"].as_str(), metadata["license"].as_str()), (Some("Compare files"), Some("MIT")));
    assert_eq!(metadata["stars"], 7);
    assert!(!github.metadata("o", "unlicensed").unwrap().contains_key("license"), "NOASSERTION is no licence");
    let err = github.metadata("o", "missing").unwrap_err();
    assert_eq!(err.to_string(), format!("GitHub answered 404 for {}", server.url("/repos/o/missing")));

    let count = |repo: &str| github.commits_since("o", repo, "2025-12-06T00:00:00Z").unwrap();
    assert_eq!(count("aiida-diff"), Some(57), "the last page's number");
    assert_eq!(count("one"), Some(1), "one commit has no Link");
    assert_eq!(count("none"), Some(0));
    assert_eq!(count("limited"), None, "a refusal says nothing");
    assert!(github.metadata("o", "busy").is_err());
    assert_eq!(server.hits("/repos/o/busy"), 2, "a 502 is tried again, a 403 is not");
    assert_eq!(server.hits(&format!("/repos/o/limited{since}")), 1);
}
