//! The SSH fixtures (cargo feature `ssh`): a key pair per run, and `core.ssh` computers on a
//! private OpenSSH server the harness starts (or on a real host named in `AIIDA_TEST_SSH_HOST`).
//!
//! The private server listens on a free loopback port with its own host key, lets in the current
//! user with the run's key and nothing else, and keeps its files in the run's folder. One serves
//! each test process; it ends with the process, however the process ends.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aiida::orm::Computer;
use aiida_ssh::sshd::{PrivateSshd, generate_key_pair};
use serde_json::{Map, Value, json};

use crate::computers::{ComputerFactory, ComputerSpec, run_folder};
use crate::error::FixtureError;
use crate::profile::random_hex;

/// The environment variable naming a real host for [`SshComputerFactory`] instead of the private
/// server: `[user@]host[:port]`, reached with the user's own SSH configuration and keys (or the
/// key in `AIIDA_TEST_SSH_KEY`).
pub const TEST_SSH_HOST_ENV: &str = "AIIDA_TEST_SSH_HOST";

/// A private key for a real host named in [`TEST_SSH_HOST_ENV`].
pub const TEST_SSH_KEY_ENV: &str = "AIIDA_TEST_SSH_KEY";

/// The run's key pair (made by the first process of the run that asks): the private key's path;
/// the public key is beside it, with `.pub`.
pub(crate) fn run_key() -> Result<PathBuf, FixtureError> {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key.clone());
    }
    let dir = run_folder("ssh")?;
    let key = dir.join("key").join("id_ed25519");
    if !key.is_file() {
        // Made in a folder aside and renamed into place: of processes racing, one pair wins, whole.
        let aside = dir.join(format!("key-{}", random_hex(4)));
        std::fs::create_dir(&aside).map_err(|e| FixtureError::io("create", &aside, e))?;
        generate_key_pair(&aside.join("id_ed25519")).map_err(|e| FixtureError::Ssh(e.to_string()))?;
        if std::fs::rename(&aside, dir.join("key")).is_err() {
            let _ = std::fs::remove_dir_all(&aside);
        }
    }
    Ok(KEY.get_or_init(|| key).clone())
}

/// This process's private server: its port.
fn private_server() -> Result<u16, FixtureError> {
    static PORT: OnceLock<Result<u16, String>> = OnceLock::new();
    let port = PORT.get_or_init(|| {
        let start = || -> Result<u16, FixtureError> {
            let key = run_key()?;
            let public = std::fs::read_to_string(key.with_extension("pub"))
                .map_err(|e| FixtureError::io("read", &key.with_extension("pub"), e))?;
            let dir = run_folder("ssh")?.join(format!("sshd-{}-{}", std::process::id(), random_hex(4)));
            std::fs::create_dir_all(&dir).map_err(|e| FixtureError::io("create", &dir, e))?;
            // Started from a thread that lives as long as the process: the server's parent-death
            // signal comes when the thread that started it ends.
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("aiida-fixtures-sshd".into())
                .spawn(move || {
                    let server = PrivateSshd::start(&dir, &[public.trim()]);
                    let _ = sender.send(server.as_ref().map(PrivateSshd::port).map_err(|e| e.to_string()));
                    if let Ok(server) = server {
                        let _keep = server;
                        loop {
                            std::thread::park();
                        }
                    }
                })
                .map_err(|e| FixtureError::io("start a thread for", Path::new("sshd"), e))?;
            receiver
                .recv()
                .map_err(|_| FixtureError::Ssh("the server's thread ended".to_owned()))?
                .map_err(FixtureError::Ssh)
        };
        start().map_err(|e| aiida::report::Chain(&e).to_string())
    });
    port.clone().map_err(FixtureError::Ssh)
}

/// Gets or creates `core.ssh` + `core.direct` computers (the `aiida_computer_ssh` fixture).
#[derive(Debug, Clone)]
pub struct SshComputerFactory {
    computers: ComputerFactory,
}

impl SshComputerFactory {
    pub(crate) fn new(computers: ComputerFactory) -> SshComputerFactory {
        SshComputerFactory { computers }
    }

    /// The SSH computer `label` (a new one when `None`) on this process's private server (host
    /// `localhost`, its port), configured as aiida's fixture does (the run's key,
    /// `AutoAddPolicy`, a 1 s safe interval) when `configure`. With [`TEST_SSH_HOST_ENV`] set,
    /// on that host instead.
    pub fn get(&self, label: Option<&str>, configure: bool) -> Result<Computer, FixtureError> {
        let (hostname, mut params) = match std::env::var(TEST_SSH_HOST_ENV) {
            Ok(spec) if !spec.trim().is_empty() => real_host(spec.trim())?,
            _ => {
                let port = private_server()?;
                let mut params = Map::new();
                params.insert("port".into(), json!(port));
                params.insert("key_filename".into(), json!(run_key()?));
                ("localhost".to_owned(), params)
            }
        };
        params.insert("key_policy".into(), json!("AutoAddPolicy"));
        params.insert("safe_interval".into(), json!(1.0));
        self.computers.get(ComputerSpec {
            label: label.map(str::to_owned),
            hostname,
            transport_type: "core.ssh".to_owned(),
            configuration_kwargs: configure.then_some(params),
            ..ComputerSpec::default()
        })
    }
}

/// `[user@]host[:port]` and `AIIDA_TEST_SSH_KEY` as a host name and parameters.
fn real_host(spec: &str) -> Result<(String, Map<String, Value>), FixtureError> {
    let mut params = Map::new();
    let (user, rest) = match spec.rsplit_once('@') {
        Some((user, rest)) => (Some(user), rest),
        None => (None, spec),
    };
    let host = match rest.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port.parse().map_err(|_| {
                FixtureError::Ssh(format!(
                    "{TEST_SSH_HOST_ENV}={spec}: the port is not a number (use [user@]host[:port])"
                ))
            })?;
            params.insert("port".into(), json!(port));
            host
        }
        None => rest,
    };
    if let Some(user) = user {
        params.insert("username".into(), json!(user));
    }
    if let Some(key) = std::env::var_os(TEST_SSH_KEY_ENV) {
        params.insert("key_filename".into(), json!(PathBuf::from(key)));
    }
    Ok((host.to_owned(), params))
}
