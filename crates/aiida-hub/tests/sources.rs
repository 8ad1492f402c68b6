//! The hub's sources replayed from loopback servers (no network): crates.io's API and files.

use aiida_hub::SourceError;
use aiida_hub::sources::CratesIo;
use aiida_registry::testing::{Reply, Server};

/// A `.crate`: a gzipped tar of `files` under `{name}-{version}/`.
fn dot_crate(name: &str, version: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, format!("{name}-{version}/{path}"), content.as_bytes()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

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
    CratesIo::new(server.url(""), server.url("/files"))
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
    let err = source.latest("aiida-diff").unwrap_err();
    assert_eq!(err.to_string(), format!("crates.io answered 503 for {}", server.url("/api/v1/crates/aiida-diff")));
    server.reply("/api/v1/crates/aiida-diff", Reply::Json("{\"crate\": {}}".to_owned()));
    assert!(source.latest("aiida-diff").unwrap_err().to_string().contains("the crate has no version"));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = CratesIo::new(format!("http://127.0.0.1:{closed}"), format!("http://127.0.0.1:{closed}"));
    let err = down.latest("aiida-diff").unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
}
