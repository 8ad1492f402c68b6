//! `aiida-hub update` for real: the binary, a plugin list file, PyPI replayed on loopback, a
//! temporary database, and the registry file it writes read back by the registry client.

mod common;

use aiida_registry::testing::{Reply, Server};
use assert_cmd::Command;

/// A loopback PyPI with aiida-diff 2.1.0, and a list naming it.
fn pypi_and_list(dir: &std::path::Path) -> (Server, std::path::PathBuf) {
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
    let list = dir.join("plugins.yaml");
    std::fs::write(&list, "aiida-diff:\n  entry_point_prefix: diff\n  code_home: https://github.com/o/aiida-diff\n  pip_url: aiida-diff\n")
        .unwrap();
    (server, list)
}

#[test]
fn one_command_updates_a_registry_on_a_fresh_machine() {
    let dir = tempfile::tempdir().unwrap();
    let (server, list) = pypi_and_list(dir.path());
    let output = dir.path().join("plugins_metadata.json");

    let assert = Command::cargo_bin("aiida-hub")
        .unwrap()
        .args(["update", "--list"])
        .arg(&list)
        .arg("--output")
        .arg(&output)
        .args(["--pypi", &server.url(""), "--github", &server.url("")])
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

#[test]
fn serve_passes_and_answers_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (server, list) = pypi_and_list(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut hub = std::process::Command::new(assert_cmd::cargo::cargo_bin("aiida-hub"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--list"])
        .arg(&list)
        .args(["--pypi", &server.url(""), "--no-github"])
        .env_remove("AIIDA_HUB_DATABASE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let body = loop {
        let answer = agent.get(&format!("http://127.0.0.1:{port}/plugins")).call();
        if let Ok(response) = answer {
            let body: serde_json::Value = serde_json::from_slice(&response.into_body().read_to_vec().unwrap()).unwrap();
            if body.get("aiida-diff").is_some() {
                break body;
            }
        }
        if std::time::Instant::now() > deadline {
            let _ = hub.kill();
            panic!("aiida-hub serve did not publish aiida-diff in time");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(body["aiida-diff"]["entry_points"]["aiida.calculations"]["diff"], "m:C");
    hub.kill().unwrap();
    hub.wait().unwrap();
}
