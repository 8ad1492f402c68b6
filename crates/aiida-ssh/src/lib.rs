//! The `core.ssh` transport of the AiiDA engine in Rust (layer 2, beside the engine's own
//! transports): a computer reached over SSH, files through SFTP and commands through exec
//! channels of one connection, which the jobs of a computer share.
//!
//! The connection honours `~/.ssh/config` as `ssh` does (it asks `ssh -G`: Host aliases,
//! `ProxyJump`, `ProxyCommand`, `IdentityFile`, `UserKnownHostsFile`), checks host keys against
//! the known_hosts files as OpenSSH matches them, and takes aiida's authentication parameters,
//! which win over the configuration file: `username`, `port`, `look_for_keys`, `key_filename`,
//! `timeout`, `allow_agent`, `proxy_jump`, `proxy_command`, `compress`, `load_system_host_keys`,
//! `key_policy`, `use_login_shell` and `safe_interval` (15 s by default).
//!
//! [`sshd`] starts a private OpenSSH server for tests.

#![warn(missing_docs)]

mod config;
mod connect;
mod known_hosts;
pub mod sshd;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiida_engine::transport::{AuthOption, Transport, TransportError, TransportType, bool_param, seconds_param};
use serde_json::{Map, Value, json};

pub use transport::SshTransport;

/// The `core.ssh` plugin: opens [`SshTransport`]s.
#[derive(Debug, Default)]
pub struct SshTransportType;

aiida::entry_point!(aiida_engine::groups::Transports: "core.ssh", SshTransportType);

/// What to do with a host key that no known_hosts file lists (a changed or revoked key is always
/// refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyPolicy {
    /// Refuse to connect (aiida's default).
    Reject,
    /// Connect, and log a warning.
    Warn,
    /// Connect (the key is not written anywhere: as paramiko's, it is accepted for this process).
    AutoAdd,
}

/// The authentication parameters of a `core.ssh` computer, read and checked.
#[derive(Debug, Clone)]
pub(crate) struct SshParams {
    pub username: Option<String>,
    pub port: Option<u16>,
    pub look_for_keys: bool,
    pub key_filename: Option<PathBuf>,
    pub timeout: Option<Duration>,
    pub allow_agent: bool,
    pub proxy_jump: Option<String>,
    pub proxy_command: Option<String>,
    pub compress: bool,
    pub load_system_host_keys: bool,
    pub key_policy: KeyPolicy,
    pub use_login_shell: bool,
}

/// aiida's parameter names, and ours.
const NAMES: &[&str] = &[
    "username",
    "port",
    "look_for_keys",
    "key_filename",
    "timeout",
    "allow_agent",
    "proxy_jump",
    "proxy_command",
    "compress",
    "gss_auth",
    "gss_kex",
    "gss_deleg_creds",
    "gss_host",
    "load_system_host_keys",
    "key_policy",
    "use_login_shell",
    "safe_interval",
];

impl SshParams {
    /// `params` checked: known names, values of the right types.
    pub(crate) fn read(params: &Map<String, Value>) -> Result<SshParams, TransportError> {
        if let Some((name, value)) = params.iter().find(|(name, _)| !NAMES.contains(&name.as_str())) {
            return Err(TransportError::Parameter {
                name: name.clone(),
                value: value.to_string(),
                expected: "no such parameter of core.ssh (see `verdi computer configure core.ssh --help`)",
            });
        }
        let invalid = |name: &str, expected: &'static str| TransportError::Parameter {
            name: name.to_owned(),
            value: params.get(name).map(Value::to_string).unwrap_or_default(),
            expected,
        };
        let text = |name: &str| -> Result<Option<String>, TransportError> {
            match params.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
                Some(_) => Err(invalid(name, "a text")),
            }
        };
        for gss in ["gss_auth", "gss_kex", "gss_deleg_creds"] {
            if bool_param(params, gss, false)? {
                return Err(invalid(gss, "false: GSSAPI (Kerberos) authentication is not supported by core.ssh here"));
            }
        }
        let port = match params.get("port") {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) {
                Some(port) => Some(port),
                None => return Err(invalid("port", "a port number (1-65535)")),
            },
        };
        let key_filename = text("key_filename")?.map(PathBuf::from);
        if key_filename.as_ref().is_some_and(|path| !path.is_absolute()) {
            return Err(invalid("key_filename", "an absolute path to a private key"));
        }
        let key_policy = match text("key_policy")?.as_deref() {
            None | Some("RejectPolicy") => KeyPolicy::Reject,
            Some("WarningPolicy") => KeyPolicy::Warn,
            Some("AutoAddPolicy") => KeyPolicy::AutoAdd,
            Some(_) => return Err(invalid("key_policy", "RejectPolicy, WarningPolicy or AutoAddPolicy")),
        };
        let timeout = match params.get("timeout") {
            None | Some(Value::Null) => None,
            Some(_) => Some(seconds_param(params, "timeout", Duration::ZERO)?).filter(|t| !t.is_zero()),
        };
        seconds_param(params, "safe_interval", Duration::ZERO)?;
        Ok(SshParams {
            username: text("username")?,
            port,
            look_for_keys: bool_param(params, "look_for_keys", true)?,
            key_filename,
            timeout,
            allow_agent: bool_param(params, "allow_agent", false)?,
            proxy_jump: text("proxy_jump")?,
            proxy_command: text("proxy_command")?,
            compress: bool_param(params, "compress", true)?,
            load_system_host_keys: bool_param(params, "load_system_host_keys", true)?,
            key_policy,
            use_login_shell: bool_param(params, "use_login_shell", true)?,
        })
    }
}

#[async_trait::async_trait]
impl TransportType for SshTransportType {
    async fn open(
        &self,
        hostname: &str,
        auth_params: &Map<String, Value>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        let params = SshParams::read(auth_params)?;
        Ok(Arc::new(SshTransport::connect(hostname, &params).await?))
    }

    fn auth_options(&self) -> Vec<AuthOption> {
        let option = |name, help, default| AuthOption { name, help, default };
        vec![
            option("username", "Login user name on the remote machine.", Value::Null),
            option("port", "Port number.", Value::Null),
            option("look_for_keys", "Automatically look for private keys in the ~/.ssh folder.", json!(true)),
            option(
                "key_filename",
                "Absolute path to your private SSH key. Leave empty to use the path set in the SSH config.",
                Value::Null,
            ),
            option(
                "timeout",
                "Time in seconds to wait for connection before giving up. Leave empty to use default value.",
                Value::Null,
            ),
            option("allow_agent", "Switch to allow or disallow using an SSH agent.", json!(false)),
            option(
                "proxy_jump",
                "SSH proxy jump for tunneling through other SSH hosts. Use a comma-separated list of hosts of the \
                 form [user@]host[:port]. If user or port are not specified for a host, the user & port values from \
                 the target host are used.",
                Value::Null,
            ),
            option(
                "proxy_command",
                "SSH proxy command for tunneling through a proxy server. Leave empty to parse the proxy command from \
                 the SSH config file.",
                Value::Null,
            ),
            option("compress", "Turn file transfer compression on or off.", json!(true)),
            option("gss_auth", "Enable when using GSS kerberos token to connect (not supported).", json!(false)),
            option("gss_kex", "GSS kex for kerberos (not supported).", json!(false)),
            option("gss_deleg_creds", "GSS deleg_creds for kerberos (not supported).", json!(false)),
            option("gss_host", "GSS host for kerberos (not supported).", Value::Null),
            option("load_system_host_keys", "Load system host keys from default SSH location.", json!(true)),
            option("key_policy", "SSH key policy if host is not known.", json!("RejectPolicy")),
            option(
                "use_login_shell",
                "Whether to use a login shell when running commands (`bash -l -c`): it reads the profile files, at \
                 a cost for every command.",
                json!(true),
            ),
            option(
                "safe_interval",
                "The minimum time in seconds between two openings of the transport.",
                json!(self.default_safe_interval().as_secs_f64()),
            ),
        ]
    }

    fn default_safe_interval(&self) -> Duration {
        Duration::from_secs(15)
    }

    fn default_minimum_job_poll_interval(&self) -> Duration {
        Duration::from_secs(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(params: Value) -> Result<SshParams, TransportError> {
        SshParams::read(params.as_object().unwrap())
    }

    #[test]
    fn parameters_are_aiidas_and_checked() {
        let params = read(json!({"username": "alice", "port": 2222, "key_filename": "/k/id", "timeout": 7,
                                 "key_policy": "AutoAddPolicy", "safe_interval": 1.0, "proxy_jump": "",
                                 "gss_auth": false}))
        .unwrap();
        assert_eq!((params.username.as_deref(), params.port), (Some("alice"), Some(2222)));
        assert_eq!((params.key_policy, params.timeout), (KeyPolicy::AutoAdd, Some(Duration::from_secs(7))));
        assert_eq!(params.proxy_jump, None, "empty is unset, as in aiida");
        assert!(params.look_for_keys && params.compress && params.use_login_shell && !params.allow_agent);
        let err = read(json!({"port": 70000})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the transport parameter `port` = 70000 is invalid: expected a port number (1-65535)"
        );
        assert!(read(json!({"key_filename": "id_rsa"})).unwrap_err().to_string().contains("an absolute path"));
        assert!(read(json!({"key_policy": "Trust"})).unwrap_err().to_string().contains("RejectPolicy, WarningPolicy"));
        assert!(read(json!({"gss_auth": true})).unwrap_err().to_string().contains("GSSAPI"));
        assert!(read(json!({"password": "x"})).unwrap_err().to_string().contains("no such parameter of core.ssh"));
        let names: Vec<&str> = SshTransportType.auth_options().iter().map(|o| o.name).collect();
        assert_eq!(names, NAMES, "one option per parameter, in aiida's order");
    }
}
