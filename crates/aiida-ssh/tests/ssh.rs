//! `core.ssh` for real, against a private OpenSSH server started for each test.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aiida_engine::transport::{Transport, TransportError, TransportType};
use aiida_ssh::SshTransportType;
use aiida_ssh::sshd::{PrivateSshd, generate_key_pair};
use serde_json::{Map, Value, json};

/// A private server letting in `key`, in a folder of its own.
struct Server {
    sshd: PrivateSshd,
    key: PathBuf,
    dir: tempfile::TempDir,
    /// The runtime the test's connections live on.
    runtime: tokio::runtime::Runtime,
}

fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let public = generate_key_pair(&key).unwrap();
    let sshd_dir = dir.path().join("sshd");
    std::fs::create_dir(&sshd_dir).unwrap();
    let sshd = PrivateSshd::start(&sshd_dir, &[&public]).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    Server { sshd, key, dir, runtime }
}

impl Server {
    /// The parameters a test computer takes (aiida's fixture: key, AutoAddPolicy).
    fn params(&self) -> Map<String, Value> {
        json!({"port": self.sshd.port(), "key_filename": self.key, "key_policy": "AutoAddPolicy",
               "use_login_shell": false, "look_for_keys": false})
        .as_object()
        .cloned()
        .unwrap()
    }

    fn open_with(&self, params: Map<String, Value>) -> Result<Arc<dyn Transport>, TransportError> {
        self.block(SshTransportType.open("127.0.0.1", &params))
    }

    fn open(&self) -> Arc<dyn Transport> {
        self.open_with(self.params()).unwrap()
    }

    fn block<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    /// A scratch folder for the "remote" side (the same machine).
    fn remote(&self) -> PathBuf {
        let path = self.dir.path().join("remote");
        std::fs::create_dir_all(&path).unwrap();
        path
    }
}

#[test]
fn commands_run_with_their_exit_code_stderr_stdin_and_folder() {
    let s = server();
    let t = s.open();
    let out = s.block(t.exec_command_wait("echo hi; echo oops >&2; exit 3", None, None)).unwrap();
    assert_eq!((out.retval, out.stdout_text().as_str(), out.stderr_text().as_str()), (3, "hi\n", "oops\n"));
    let remote = s.remote();
    let out = s.block(t.exec_command_wait("pwd; cat", Some(&remote), Some(b"fed in\n"))).unwrap();
    assert_eq!(out.stdout_text(), format!("{}\nfed in\n", remote.display()));
    let home = std::env::home_dir().unwrap();
    assert_eq!(s.block(t.exec_command_wait("pwd", None, None)).unwrap().stdout_text().trim(), home.to_str().unwrap());
    let user = s.block(t.whoami()).unwrap();
    assert_eq!(s.block(t.exec_command_wait("whoami", None, None)).unwrap().stdout_text().trim(), user);
    let err = s.block(t.exec_command_wait("true", Some(Path::new("/nonexistent-folder")), None)).unwrap();
    assert_ne!(err.retval, 0, "cd into a missing folder fails the command");
    s.block(t.close()).unwrap();
}

#[test]
fn a_large_file_and_a_folder_tree_go_there_and_back_unchanged() {
    let s = server();
    let t = s.open();
    let local = s.dir.path().join("local");
    std::fs::create_dir_all(local.join("tree/sub/deeper")).unwrap();
    let big: Vec<u8> = (0..50 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(local.join("big.bin"), &big).unwrap();
    std::fs::write(local.join("tree/a.txt"), "a").unwrap();
    std::fs::write(local.join("tree/sub/b.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(local.join("tree/sub/b.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(local.join("tree/sub/deeper/c"), "").unwrap();
    let remote = s.remote();

    s.block(t.put(&local.join("big.bin"), &remote.join("big.bin"))).unwrap();
    s.block(t.put(&local.join("tree"), &remote)).unwrap();
    assert_eq!(s.block(t.listdir(&remote)).unwrap(), ["big.bin", "tree"]);
    assert_eq!(s.block(t.listdir(&remote.join("tree"))).unwrap(), ["a.txt", "sub"]);

    let back = s.dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    s.block(t.get(&remote.join("big.bin"), &back.join("big.bin"), false)).unwrap();
    assert!(std::fs::read(back.join("big.bin")).unwrap() == big, "50 MB came back identical");
    s.block(t.get(&remote.join("tree"), &back, false)).unwrap();
    assert_eq!(std::fs::read_to_string(back.join("tree/a.txt")).unwrap(), "a");
    assert_eq!(std::fs::read_to_string(back.join("tree/sub/b.sh")).unwrap(), "#!/bin/sh\n");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(back.join("tree/sub/b.sh")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o755, "permission bits kept both ways");
    assert!(back.join("tree/sub/deeper/c").is_file());

    // Globs on both sides; several matches need a folder.
    s.block(t.get(&remote.join("tree/*.txt"), &back, false)).unwrap();
    assert!(back.join("a.txt").is_file());
    let err = s.block(t.get(&remote.join("*"), &back.join("nope"), false)).unwrap_err();
    assert!(matches!(err, TransportError::Missing(_)), "{err}");
    s.block(t.get(&remote.join("missing"), &back, true)).unwrap();
    let err = s.block(t.get(&remote.join("missing"), &back, false)).unwrap_err();
    assert_eq!(err.to_string(), format!("{} does not exist", remote.join("missing").display()));
}

#[test]
fn folders_links_copies_and_renames_behave_as_core_local() {
    let s = server();
    let t = s.open();
    let r = s.remote();
    s.block(t.makedirs(&r.join("x/y/z"), false)).unwrap();
    assert!(s.block(t.is_dir(&r.join("x/y/z"))).unwrap());
    assert!(matches!(s.block(t.makedirs(&r.join("x/y"), false)).unwrap_err(), TransportError::Exists(_)));
    s.block(t.makedirs(&r.join("x/y"), true)).unwrap();
    s.block(t.mkdir(&r.join("m"), false)).unwrap();
    assert!(matches!(s.block(t.mkdir(&r.join("m"), false)).unwrap_err(), TransportError::Exists(_)));
    s.block(t.mkdir(&r.join("m"), true)).unwrap();
    std::fs::write(r.join("x/f.txt"), "f").unwrap();

    s.block(t.copy(&r.join("x"), &r.join("m"))).unwrap();
    assert!(r.join("m/x/y/z").is_dir() && r.join("m/x/f.txt").is_file(), "copied into the existing folder");
    s.block(t.symlink(&r.join("x/f.txt"), &r.join("link"))).unwrap();
    assert_eq!(std::fs::read_link(r.join("link")).unwrap(), r.join("x/f.txt"));
    assert!(matches!(s.block(t.symlink(&r.join("x"), &r.join("link"))).unwrap_err(), TransportError::Exists(_)));
    // A glob: one link per match, inside the folder given.
    s.block(t.mkdir(&r.join("links"), false)).unwrap();
    s.block(t.symlink(&r.join("x/*.txt"), &r.join("links"))).unwrap();
    assert_eq!(std::fs::read_link(r.join("links/f.txt")).unwrap(), r.join("x/f.txt"));
    s.block(t.rmtree(&r.join("links"))).unwrap();
    s.block(t.rename(&r.join("m"), &r.join("n"))).unwrap();
    assert!(s.block(t.path_exists(&r.join("n/x/f.txt"))).unwrap() && !s.block(t.path_exists(&r.join("m"))).unwrap());
    assert!(matches!(s.block(t.rename(&r.join("n"), &r.join("x"))).unwrap_err(), TransportError::Exists(_)));
    assert!(matches!(s.block(t.rename(&r.join("gone"), &r.join("q"))).unwrap_err(), TransportError::Missing(_)));
    s.block(t.chmod(&r.join("x/f.txt"), 0o600)).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(r.join("x/f.txt")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(s.block(t.glob(&r.join("*/f*"))).unwrap(), [r.join("x/f.txt")]);
    assert_eq!(s.block(t.glob(&r.join("[mn]/*/f?txt"))).unwrap(), [r.join("n/x/f.txt")]);
    s.block(t.rmtree(&r.join("n"))).unwrap();
    s.block(t.rmtree(&r.join("n"))).unwrap();
    assert!(!r.join("n").exists());
    assert_eq!(s.block(t.listdir(&r)).unwrap(), ["link", "x"]);
    assert!(matches!(s.block(t.listdir(&r.join("none"))).unwrap_err(), TransportError::Missing(_)));
}

#[test]
fn a_refused_key_an_unknown_host_key_and_a_closed_port_say_what_to_do() {
    let s = server();
    let other = s.dir.path().join("other_key");
    generate_key_pair(&other).unwrap();
    let mut params = s.params();
    params.insert("key_filename".into(), json!(other));
    let err = s.open_with(params).unwrap_err().to_string();
    assert!(err.contains("the server refused the keys tried") && err.contains("other_key"), "{err}");

    let mut params = s.params();
    params.insert("key_policy".into(), json!("RejectPolicy"));
    params.insert("load_system_host_keys".into(), json!(false));
    let err = s.open_with(params).unwrap_err().to_string();
    let expected = format!("the host key of [127.0.0.1]:{} (ssh-ed25519 SHA256:", s.sshd.port());
    assert!(err.contains(&expected) && err.contains("key_policy AutoAddPolicy"), "{err}");

    // A host that takes the connection and never speaks.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut params = s.params();
    params.insert("port".into(), json!(silent.local_addr().unwrap().port()));
    params.insert("timeout".into(), json!(1));
    let err = s.open_with(params).unwrap_err().to_string();
    assert!(err.contains("no answer within 1 s: check that the host is up"), "{err}");
    drop(silent);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut params = s.params();
    params.insert("port".into(), json!(closed));
    let err = s.open_with(params).unwrap_err().to_string();
    assert!(err.contains(&format!("nothing listens on port {closed} there (connection refused)")), "{err}");
}

/// How many logins the server's log records.
fn logins(s: &Server, log: &str) -> usize {
    let log = std::fs::read_to_string(s.sshd.dir().join(log)).unwrap_or_default();
    log.matches("Accepted publickey").count()
}

#[test]
fn a_proxy_jump_and_a_proxy_command_lead_to_the_computer() {
    let s = server();
    let before = logins(&s, "sshd.log");
    let mut params = s.params();
    // Jump through the server to itself: two logins for one transport.
    params.insert("proxy_jump".into(), json!(format!("127.0.0.1:{}", s.sshd.port())));
    let t = s.open_with(params).unwrap();
    let out = s.block(t.exec_command_wait("echo through", None, None)).unwrap();
    assert_eq!(out.stdout_text(), "through\n");
    assert_eq!(logins(&s, "sshd.log") - before, 2, "the jump host's login and the computer's");
    s.block(t.close()).unwrap();

    // A proxy command speaking SSH on its stdio: sshd itself, in inetd mode, logging aside.
    let config = s.sshd.dir().join("sshd_config");
    let inetd_log = s.sshd.dir().join("inetd.log");
    let mut params = s.params();
    let command = format!("/usr/sbin/sshd -i -f {} -E {}", config.display(), inetd_log.display());
    params.insert("proxy_command".into(), json!(command));
    let t = s.open_with(params).unwrap();
    let out = s.block(t.exec_command_wait("echo piped", None, None)).unwrap();
    assert_eq!(out.stdout_text(), "piped\n");
    assert_eq!(logins(&s, "inetd.log"), 1, "the login went through the proxy command's server");
    s.block(t.close()).unwrap();
}
