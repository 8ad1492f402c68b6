//! `aiida-hub update` for real: the binary, a plugin list file, PyPI replayed on loopback, a
//! temporary database, and the registry file it writes read back by the registry client.

mod common;

use aiida_registry::testing::{Reply, Server};
use assert_cmd::Command;

#[test]
fn one_command_updates_a_registry_on_a_fresh_machine() {
    let server = Server::start().unwrap();
    let file = "/files/aiida_diff-2.1.0-py3-none-any.whl";
    let release = serde_json::json!({
        "info": {"name": "aiida-diff", "version": "2.1.0", "summary": "Compare files", "requires_dist": ["aiida-core>=2.6"]},
        "urls": [{"packagetype": "bdist_wheel", "url": server.url(file), "upload_time": "2026-11-01T00:00:00"}]
    })
    .to_string();
    server.reply("/pypi/aiida-diff/json", Reply::Json(release.clone()));
    server.reply("/pypi/aiida-diff/2.1.0/json", Reply::Json(release));
    let wheel = common::wheel(&[("aiida_diff-2.1.0.dist-info/entry_points.txt", "[aiida.calculations]\ndiff = m:C\n")]);
    server.reply(file, Reply::Bytes(wheel, "application/zip"));
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("plugins.yaml");
    std::fs::write(&list, "aiida-diff:\n  entry_point_prefix: diff\n  code_home: https://github.com/o/aiida-diff\n  pip_url: aiida-diff\n")
        .unwrap();
    let output = dir.path().join("plugins_metadata.json");

    let assert = Command::cargo_bin("aiida-hub")
        .unwrap()
        .args(["update", "--list"])
        .arg(&list)
        .arg("--output")
        .arg(&output)
        .args(["--pypi", &server.url("")])
        .env_remove("AIIDA_HUB_DATABASE")
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(stdout.starts_with("new        aiida-diff\n"), "{stdout}");
    assert!(
        stdout.contains(
            "1 discovered, 1 new, 0 updated, 0 unchanged, 0 withdrawn, 0 failed; discovery complete; 1 plugins"
        ),
        "{stdout}"
    );
    let registry = aiida_registry::Registry::parse(&std::fs::read(&output).unwrap()).unwrap();
    let diff = aiida_registry::RegistryEntry::from_record(registry.get("diff").unwrap());
    assert_eq!(diff.entry_point_spec(), ["aiida.calculations:diff"]);
    assert_eq!(diff.install_command().unwrap(), "pip install aiida-diff");
}
