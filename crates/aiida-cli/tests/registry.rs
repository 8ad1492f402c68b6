//! `verdi plugin registry` against a registry served on loopback by the test (no network), and
//! the hints `verdi` gives where it meets an entry point it does not link.

#[path = "../../aiida/tests/engine/common.rs"]
mod common;

use aiida_registry::testing::{Reply, Server};
use assert_cmd::Command;
use predicates::prelude::*;

use common::{TestProfile, aiida_template};

/// A registry of two plugins, as aiida-registry publishes it.
fn registry() -> String {
    serde_json::json!({
        "aiida-diff": {
            "name": "aiida-diff", "entry_point_prefix": "diff", "pip_install_cmd": "pip install aiida-diff",
            "metadata": {"version": "2.1.0", "description": "Compare two files", "author": "Ann Author"},
            "entry_points": {"aiida.calculations": {"diff": "aiida_diff.calculations:DiffCalculation"},
                             "aiida.parsers": {"diff": "aiida_diff.parsers:DiffParser"}}
        },
        "aiida-core-arith": {
            "name": "aiida-core-arith", "entry_point_prefix": "core",
            "metadata": {"version": "9.9.9", "description": "claims core.arithmetic.add"},
            "entry_points": {"aiida.calculations": {"core.arithmetic.add": "x:Y"}}
        }
    })
    .to_string()
}

fn verdi(profile: &TestProfile, server: &Server) -> Command {
    let mut cmd = Command::cargo_bin("verdi").unwrap();
    cmd.env("AIIDA_PATH", profile.dir.path())
        .env_remove("AIIDA_PROFILE")
        .env("AIIDA_REGISTRY_URL", server.url("/plugins_metadata.json"));
    cmd
}

#[test]
fn verdi_updates_lists_searches_shows_and_finds_plugins_of_the_registry() {
    let profile = TestProfile::new(&aiida_template());
    let server = Server::start().unwrap();
    server.reply("/plugins_metadata.json", Reply::Json(registry()));
    let cache = profile.dir.path().join(".aiida/plugin_registry_cache");
    verdi(&profile, &server).args(["plugin", "registry", "update"]).assert().success().stdout(format!(
        "Report: downloading the plugin registry from {}\nSuccess: 2 plugins cached in {}\n",
        server.url("/plugins_metadata.json"),
        cache.display()
    ));
    assert!(cache.join("plugins").is_file() && cache.join("diff").is_file());

    // core.arithmetic.add is linked here, from aiida-engine 0.1.0.
    let other = "another version installed: 0.1.0 (the registry has 9.9.9)";
    verdi(&profile, &server).args(["plugin", "registry", "list"]).assert().success().stdout(format!(
        "Prefix    Name              Version    Installed\n\
         --------  ----------------  ---------  {}\n\
         core      aiida-core-arith  9.9.9      {other}\n\
         diff      aiida-diff        2.1.0      not installed\n",
        "-".repeat(other.len())
    ));
    verdi(&profile, &server)
        .args(["plugin", "registry", "search", "(?i)DIFF", "--ranked"])
        .assert()
        .success()
        .stdout("* diff (aiida-diff): Compare two files\n");
    verdi(&profile, &server).args(["plugin", "registry", "show", "diff"]).assert().success().stdout(
        predicate::str::starts_with("Name          aiida-diff\nVersion       2.1.0\nInstalled     not installed\n"),
    );
    verdi(&profile, &server)
        .args(["plugin", "registry", "show", "diff", "--format", "json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"key\": \"diff\""));
    verdi(&profile, &server)
        .args(["plugin", "registry", "find", "aiida.parsers:diff"])
        .assert()
        .success()
        .stdout("aiida.parsers:diff: plugin `diff` (aiida-diff), not installed\nInstall: pip install aiida-diff\n");
    verdi(&profile, &server)
        .args(["plugin", "registry", "find", "quantumespresso.pw"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no plugin of the registry provides `quantumespresso.pw`"));
    verdi(&profile, &server)
        .args(["plugin", "registry", "show", "nope"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no plugin `nope` in the registry"));
    assert_eq!(server.hits("/plugins_metadata.json"), 1, "everything after the update came from the cache");
}

#[test]
fn verdi_names_the_plugin_behind_an_entry_point_it_does_not_link() {
    let profile = TestProfile::new(&aiida_template());
    let server = Server::start().unwrap();
    server.reply("/plugins_metadata.json", Reply::Json(registry()));
    // Without a cache, nothing is downloaded behind the user's back: the plain error.
    verdi(&profile, &server)
        .args(["plugin", "list", "aiida.calculations", "diff"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("diff").and(predicate::str::contains("provided by").not()));
    assert_eq!(server.hits("/plugins_metadata.json"), 0);

    verdi(&profile, &server).args(["plugin", "registry", "update", "--no-info"]).assert().success();
    verdi(&profile, &server).args(["plugin", "list", "aiida.calculations", "diff"]).assert().code(1).stderr(
        predicate::str::contains(
            "it is provided by plugin `diff` (aiida-diff) (`pip install aiida-diff`), which this verdi does not link",
        ),
    );

    // A process of that plugin, stored as aiida-core would.
    let storage = aiida::storage::Storage::initialise(&profile.profile).unwrap();
    let mut node = aiida::orm::Node::new("process.calculation.calcjob.CalcJobNode.");
    node.set_process_type("aiida.calculations:diff").unwrap();
    node.set_attribute("process_label", "DiffCalculation").unwrap();
    node.set_attribute("process_state", "finished").unwrap();
    node.set_attribute("exit_status", 0).unwrap();
    node.store(&storage).unwrap();
    let pk = node.pk().unwrap().to_string();
    verdi(&profile, &server).args(["process", "show", &pk]).assert().success().stdout(predicate::str::ends_with(
        "Warning: entry point `aiida.calculations:diff`: it is provided by plugin `diff` (aiida-diff) \
         (`pip install aiida-diff`), which this verdi does not link\n",
    ));
}
