//! The registry client against registries this test serves itself on loopback (no network):
//! synthetic registries of both published shapes, and every way a server fails.

use std::time::Duration;

use aiida_registry::testing::{Reply, Server};
use aiida_registry::{InfoFormat, InstallState, Registry, RegistryClient, RegistryError, Shape};

/// Entry points this test binary links (package `aiida-registry` at its version), for the
/// installed states.
mod linked {
    aiida::entry_point!("aiida.data", "regtest.a", 1u8);
    aiida::entry_point!("aiida.calculations", "regtest.b", 2u8);
    aiida::entry_point!("aiida.data", "regpart.a", 3u8);
    aiida::entry_point!("aiida.data", "regold.a", 4u8);
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A registry as aiida-registry publishes it (`plugins_metadata.json`).
fn metadata_registry() -> String {
    serde_json::json!({
        "aiida-diff": {
            "name": "aiida-diff", "entry_point_prefix": "diff", "package_name": "aiida_diff",
            "code_home": "https://example.org/aiida-diff", "development_status": "stable",
            "aiida_version": ">=2.0,<3", "pip_url": "aiida-diff", "pip_install_cmd": "pip install aiida-diff",
            "metadata": {"version": "2.1.0", "description": "Compare two files", "author": "Ann Author",
                         "author_email": "ann@example.org"},
            "entry_points": {
                "aiida.calculations": {"diff": {"class": "aiida_diff.calculations:DiffCalculation",
                                                "description": ["Compare two files"], "spec": {}}},
                "aiida.parsers": {"diff": "aiida_diff.parsers:DiffParser"},
                "aiida.data": {"diff.parameters": "aiida_diff.data:DiffParameters"},
                "console_scripts": {"aiida-diff": "aiida_diff.cli:cli"}
            },
            "warnings": [], "errors": [], "summaryinfo": [], "commits_count": 10
        },
        "aiida-regtest": {
            "name": "aiida-regtest", "entry_point_prefix": "regtest",
            "metadata": {"version": VERSION, "description": "Linked in the test", "author": "Test"},
            "entry_points": {"aiida.data": {"regtest.a": "m:A"}, "aiida.calculations": {"regtest.b": "m:B"}}
        },
        "aiida-regpart": {
            "name": "aiida-regpart", "entry_point_prefix": "regpart",
            "metadata": {"version": VERSION, "description": "diff-like, partly linked"},
            "entry_points": {"aiida.data": {"regpart.a": "m:A", "regpart.missing": "m:M"}}
        },
        "aiida-regold": {
            "name": "aiida-regold", "entry_point_prefix": "regold",
            "metadata": {"version": "9.9.9"},
            "entry_points": {"aiida.data": {"regold.a": "m:A"}}
        }
    })
    .to_string()
}

fn client(server: &Server, dir: &tempfile::TempDir) -> RegistryClient {
    RegistryClient::new(server.url("/plugins_metadata.json"), dir.path().join("cache"))
        .with_timeout(Duration::from_millis(500))
}

#[test]
fn the_registry_is_cached_and_then_read_without_the_network() {
    let server = Server::start().unwrap();
    server.reply("/plugins_metadata.json", Reply::Json(metadata_registry()));
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir);
    assert!(!client.cache_exists() && !client.cache_openable());
    assert_eq!(client.cache_file_path(), dir.path().join("cache/plugins"));

    let registry = client.load_cached().unwrap();
    assert_eq!(server.hits("/plugins_metadata.json"), 1, "no cache: downloaded");
    assert_eq!(registry.shape(), Shape::Metadata);
    assert_eq!(client.keys().unwrap(), ["diff", "regold", "regpart", "regtest"]);
    assert!(client.cache_exists() && client.cache_openable());
    for key in ["diff", "regold", "regpart", "regtest"] {
        assert!(dir.path().join("cache").join(key).is_file(), "the info file of {key}");
    }
    client.load_cached().unwrap();
    assert_eq!(server.hits("/plugins_metadata.json"), 1, "cached: not downloaded again");

    let diff = client.entry("diff").unwrap().unwrap();
    assert_eq!(
        (diff.name.as_str(), diff.package_name.as_str(), diff.version.as_deref()),
        ("aiida-diff", "aiida_diff", Some("2.1.0"))
    );
    assert_eq!(diff.categories(), ["calculations", "data", "parsers"]);
    assert_eq!(diff.entry_points_by_category()["calculations"], ["diff"]);
    assert_eq!(
        diff.entry_point_spec(),
        ["aiida.calculations:diff", "aiida.data:diff.parameters", "aiida.parsers:diff"]
    );
    assert_eq!(diff.cli_apps(), ["aiida-diff"]);
    assert!(diff.gui_apps().is_empty());
    assert_eq!(diff.install_command().unwrap(), "pip install aiida-diff");
    assert_eq!(client.entry("nope").unwrap(), None);
    let regold = client.entry("regold").unwrap().unwrap();
    assert_eq!(
        regold.install_command().unwrap_err().to_string(),
        "the author of plugin `regold` did not provide an automatic install link"
    );
}

#[test]
fn installed_states_come_from_the_entry_points_linked_in() {
    let server = Server::start().unwrap();
    server.reply("/plugins_metadata.json", Reply::Json(metadata_registry()));
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir);
    let state = |key: &str| client.entry(key).unwrap().unwrap().install_state();
    assert_eq!(state("regtest"), InstallState::Installed { version: VERSION.to_owned() });
    assert_eq!(state("regpart"), InstallState::Partial { missing: vec!["aiida.data:regpart.missing".to_owned()] });
    assert_eq!(
        state("regold"),
        InstallState::OtherVersion { installed: VERSION.to_owned(), registry: "9.9.9".to_owned() }
    );
    assert_eq!(state("diff"), InstallState::NotInstalled);
    assert_eq!(state("regpart").to_string(), "partly installed: missing aiida.data:regpart.missing");
    assert_eq!(state("regold").to_string(), format!("another version installed: {VERSION} (the registry has 9.9.9)"));

    // A test's scope that removes an entry point makes the plugin partly installed there.
    let scope = aiida::plugins::ScopedEntryPoints::new();
    scope.scope().remove("aiida.calculations", "regtest.b").unwrap();
    assert_eq!(state("regtest"), InstallState::Partial { missing: vec!["aiida.calculations:regtest.b".to_owned()] });
}

#[test]
fn plugins_are_found_by_pattern_entry_point_and_node_type() {
    let server = Server::start().unwrap();
    server.reply("/plugins_metadata.json", Reply::Json(metadata_registry()));
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir);
    let keys = |entries: Vec<aiida_registry::RegistryEntry>| entries.into_iter().map(|e| e.key).collect::<Vec<_>>();
    let pattern = regex::Regex::new("(?i)diff").unwrap();
    // diff: key, name, package and description (3.5); regpart: its description only (0.5).
    assert_eq!(keys(client.find_by_pattern(&pattern, true).unwrap()), ["diff", "regpart"]);
    assert_eq!(keys(client.find_by_pattern(&pattern, false).unwrap()), ["diff", "regpart"], "ties by key");
    let pattern = regex::Regex::new("^reg").unwrap();
    assert_eq!(keys(client.find_by_pattern(&pattern, true).unwrap()), ["regold", "regpart", "regtest"]);
    assert!(client.find_by_pattern(&regex::Regex::new("Ann").unwrap(), false).unwrap().len() == 1, "by author");

    let find = |name: &str| client.find_for_entry_point(name).unwrap().map(|e| e.key);
    assert_eq!(find("diff"), Some("diff".to_owned()));
    assert_eq!(find("aiida.parsers:diff"), Some("diff".to_owned()));
    assert_eq!(find("diff.parameters"), Some("diff".to_owned()));
    assert_eq!(find("data.diff.parameters.DiffParameters."), Some("diff".to_owned()));
    assert_eq!(find("regpart.missing"), Some("regpart".to_owned()));
    assert_eq!(find("quantumespresso.pw"), None);
    let err = client.find_for_entry_point("process.calculation.calcjob.CalcJobNode.").unwrap_err();
    assert_eq!(
        err.to_string(),
        "`process.calculation.calcjob.CalcJobNode.` is not an entry point or a node type of a plugin"
    );
}

#[test]
fn each_failure_of_the_server_says_what_it_is_and_goes_to_the_handler() {
    let server = Server::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let refused = RegistryClient::new(format!("http://127.0.0.1:{closed}/r.json"), dir.path().join("c2"));
    let err = refused.update(false, None, None).unwrap_err();
    assert!(matches!(err, RegistryError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!("cannot reach http://127.0.0.1:{closed}/r.json: check your internet")),
        "{err}"
    );

    server.reply("/plugins_metadata.json", Reply::Silent);
    let err = client.update(false, None, None).unwrap_err();
    assert_eq!(err.to_string(), format!("{} did not answer within 0.5 s: try again later", client.registry_url()));

    server.reply("/plugins_metadata.json", Reply::Status(503));
    let err = client.update(false, None, None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{} answered 503: the plugin registry seems temporarily", client.registry_url())),
        "{err}"
    );

    server.reply("/plugins_metadata.json", Reply::Json("{\"aiida-x\": {\"name\":".to_owned()));
    let err = client.update(false, None, None).unwrap_err();
    assert!(err.to_string().starts_with("the plugin registry is malformed: it is not JSON"), "{err}");
    assert!(!client.cache_exists(), "nothing cached from a failed download");

    // The handler sees the failure and gives a replacement, which is cached.
    let mut seen = Vec::new();
    let mut handler = |e: RegistryError| {
        seen.push(e.to_string());
        Registry::parse(metadata_registry().as_bytes())
    };
    let update = client.update(true, Some(&mut handler), None).unwrap();
    assert_eq!(update.registry.len(), 4);
    assert_eq!(seen.len(), 1);
    assert_eq!(client.keys().unwrap().len(), 4, "the replacement was cached");
    // ... or the error to stop with.
    let mut refuse = |e: RegistryError| Err(e);
    assert!(client.update(false, Some(&mut refuse), None).is_err());
}

#[test]
fn a_truncated_cache_is_refreshed_once_and_an_unwritable_one_says_where() {
    let server = Server::start().unwrap();
    server.reply("/plugins_metadata.json", Reply::Json(metadata_registry()));
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir);
    client.update(false, None, None).unwrap();
    let whole = std::fs::read(client.cache_file_path()).unwrap();
    std::fs::write(client.cache_file_path(), &whole[..whole.len() / 2]).unwrap();
    assert_eq!(client.load_cached().unwrap().len(), 4, "refreshed");
    assert_eq!(server.hits("/plugins_metadata.json"), 2);
    // Truncated again, and the server gone: the refresh's failure is the error.
    std::fs::write(client.cache_file_path(), &whole[..10]).unwrap();
    server.reply("/plugins_metadata.json", Reply::Status(500));
    let err = client.load_cached().unwrap_err();
    assert!(matches!(err, RegistryError::Status { status: 500, .. }), "{err:?}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let unwritable = RegistryClient::new(client.registry_url(), file.join("cache"));
    server.reply("/plugins_metadata.json", Reply::Json(metadata_registry()));
    let err = unwritable.update(false, None, None).unwrap_err();
    assert_eq!(err.to_string(), format!("cannot create {}", file.join("cache").display()));
}

#[test]
fn cleanup_removes_exactly_the_orphaned_info_files() {
    let server = Server::start().unwrap();
    server.reply("/plugins_metadata.json", Reply::Json(metadata_registry()));
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir);
    assert!(client.cleanup_info(Some(&Registry::parse(b"{}").unwrap())).unwrap().is_empty(), "no folder: nothing");
    client.update(true, None, None).unwrap();
    let cache = dir.path().join("cache");
    for name in ["old_a", "old_b", ".lock"] {
        std::fs::write(cache.join(name), "").unwrap();
    }
    std::fs::create_dir(cache.join("a-folder")).unwrap();
    assert_eq!(client.cleanup_info(None).unwrap(), ["old_a", "old_b"]);
    let mut left: Vec<String> =
        std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, [".lock", "a-folder", "diff", "plugins", "regold", "regpart", "regtest"]);
}

/// The historic shape: details in each plugin's `plugin_info`.
fn historic_registry(server: &Server) -> String {
    serde_json::json!({
        "diff": {"name": "aiida-diff", "entry_point": "diff", "pip_url": "aiida-diff", "state": "stable",
                 "plugin_info": server.url("/diff/setup.json")},
        "broken": {"name": "aiida-broken", "entry_point": "broken", "plugin_info": server.url("/broken/setup.json")},
        "thin": {"name": "aiida-thin", "entry_point": "thin", "plugin_info": server.url("/thin/setup.json")}
    })
    .to_string()
}

#[test]
fn historic_details_are_fetched_and_their_failures_go_to_the_info_handler() {
    let server = Server::start().unwrap();
    server.reply("/plugins.json", Reply::Json(historic_registry(&server)));
    let setup = |name: &str| {
        serde_json::json!({"name": name, "version": "1.0.0", "author": "A", "author_email": "a@example.org",
                           "description": "d", "url": "https://example.org", "license": "MIT",
                           "entry_points": {"aiida.calculations": ["diff = aiida_diff.calculations:Diff"],
                                            "console_scripts": ["aiida-diff = aiida_diff.cli:cli"]}})
        .to_string()
    };
    server.reply("/diff/setup.json", Reply::Json(setup("aiida-diff")));
    server.reply("/broken/setup.json", Reply::Status(404));
    server.reply("/thin/setup.json", Reply::Json("{\"name\": \"aiida-thin\"}".to_owned()));
    let dir = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(server.url("/plugins.json"), dir.path().join("cache"));

    // Without a handler the first failure stops the update.
    let err = client.update(true, None, None).unwrap_err();
    assert!(matches!(err, RegistryError::Status { status: 404, .. }), "{err:?}");

    // A handler that only warns: the others are cached, and the failures listed.
    let mut warned = Vec::new();
    let mut warn = |e: &RegistryError, key: &str, _: &aiida_registry::Record| {
        warned.push(format!("{key}: {e}"));
        Ok(())
    };
    let update = client.update(true, None, Some(&mut warn)).unwrap();
    assert_eq!(update.failed, ["broken", "thin"]);
    assert!(warned[0].starts_with(&format!("broken: {} answered 404", server.url("/broken/setup.json"))), "{warned:?}");
    assert_eq!(
        warned[1],
        format!("thin: invalid plugin registry entry: thin is missing `version` in {}", server.url("/thin/setup.json"))
    );
    let diff = client.entry("diff").unwrap().unwrap();
    assert_eq!((diff.version.as_deref(), diff.development_status.as_deref()), (Some("1.0.0"), Some("stable")));
    assert_eq!(diff.entry_points_by_category()["calculations"], ["diff"]);
    assert_eq!(diff.cli_apps(), ["aiida-diff"]);
    let fetched = server.hits("/diff/setup.json");
    client.entry("diff").unwrap();
    assert_eq!(server.hits("/diff/setup.json"), fetched, "read from its info file");

    // A handler that stops: the error it returns.
    let mut stop = |e: &RegistryError, _: &str, _: &aiida_registry::Record| {
        Err(RegistryError::Malformed { reason: e.to_string() })
    };
    assert!(client.update_info(None, Some(&mut stop)).is_err());
}

#[test]
fn details_format_as_aiidas_table_a_map_and_json() {
    let server = Server::start().unwrap();
    server.reply("/plugins_metadata.json", Reply::Json(metadata_registry()));
    let dir = tempfile::tempdir().unwrap();
    let diff = client(&server, &dir).entry("diff").unwrap().unwrap();
    assert_eq!(
        diff.format_info(InfoFormat::Table),
        "Name          aiida-diff\n\
         Version       2.1.0\n\
         Installed     not installed\n\
         Pip url       aiida-diff\n\
         Project home  https://example.org/aiida-diff\n\
         Author        Ann Author\n\
         Author Email  ann@example.org\n\
         Package       aiida_diff\n\
         Description   Compare two files\n\
         Plugins:\n              Calculations:\n              diff\n\n              Data:\n              diff.parameters\n\n\
         \x20             Parsers:\n              diff\n\nCLI apps:\n              aiida-diff"
    );
    let map: serde_json::Value = serde_json::from_str(&diff.format_info(InfoFormat::Map)).unwrap();
    assert_eq!(map["package"], "aiida_diff");
    assert_eq!(map["plugins"]["parsers"], serde_json::json!(["diff"]));
    assert_eq!(map["installed"], "not installed");
    let back: aiida_registry::RegistryEntry = serde_json::from_str(&diff.format_info(InfoFormat::Json)).unwrap();
    assert_eq!(back, diff);
}

#[test]
fn the_registry_is_the_instance_option_or_else_the_published_one() {
    let dir = tempfile::tempdir().unwrap();
    let instance = aiida::config::Instance::at(dir.path().join(".aiida"));
    let client = RegistryClient::for_instance(&instance).unwrap();
    assert_eq!(client.cache_dir(), dir.path().join(".aiida/plugin_registry_cache"));
    if std::env::var_os(aiida_registry::URL_ENV).is_some() {
        return; // The environment of whoever runs this names another registry.
    }
    assert_eq!(client.registry_url(), aiida_registry::DEFAULT_URL);
    instance
        .update(|config| {
            config.set_option(aiida_registry::URL_OPTION, serde_json::json!("http://127.0.0.1:1/r.json"));
            Ok(())
        })
        .unwrap();
    assert_eq!(RegistryClient::for_instance(&instance).unwrap().registry_url(), "http://127.0.0.1:1/r.json");
}
