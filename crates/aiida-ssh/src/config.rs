//! `~/.ssh/config` as OpenSSH itself reads it: `ssh -G <host>` prints the settings in force for a
//! host (aliases, `Match`, `Include`, wildcards resolved), so a computer named by a Host alias
//! connects as `ssh <alias>` would. Without an `ssh` binary, the host is taken as it is.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The settings `ssh` would use for a host.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HostConfig {
    /// The real host name (an alias resolved).
    pub hostname: String,
    /// The port.
    pub port: Option<u16>,
    /// The remote user.
    pub user: Option<String>,
    /// The identity files, in order (`~` expanded; those that do not exist included).
    pub identity_files: Vec<PathBuf>,
    /// `ProxyJump`, as written.
    pub proxy_jump: Option<String>,
    /// `ProxyCommand`, as written (`%h`, `%p` unexpanded).
    pub proxy_command: Option<String>,
    /// The user's and the global known_hosts files.
    pub known_hosts_files: Vec<PathBuf>,
    /// `ConnectTimeout`.
    pub connect_timeout: Option<Duration>,
}

/// What `ssh -G host` says (run without a shell, with no input), reading `config_file` instead of
/// `~/.ssh/config` when given; `host` as it is when there is no `ssh` or it fails.
pub(crate) async fn resolve(host: &str, home: &Path, config_file: Option<&Path>) -> HostConfig {
    let mut ssh = tokio::process::Command::new("ssh");
    if let Some(file) = config_file {
        ssh.arg("-F").arg(file);
    }
    let output =
        ssh.arg("-G").arg(host).stdin(std::process::Stdio::null()).stderr(std::process::Stdio::null()).output().await;
    match output {
        Ok(output) if output.status.success() => parse(&String::from_utf8_lossy(&output.stdout), home),
        _ => HostConfig {
            hostname: host.to_owned(),
            known_hosts_files: crate::known_hosts::default_files(home),
            ..HostConfig::default()
        },
    }
}

/// The lines of `ssh -G` (`keyword value`, keywords in lower case, `none` for unset).
pub(crate) fn parse(text: &str, home: &Path) -> HostConfig {
    let expand = |path: &str| match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(path),
    };
    let mut config = HostConfig::default();
    for line in text.lines() {
        let Some((keyword, value)) = line.split_once(' ') else { continue };
        let value = value.trim();
        if value == "none" {
            continue;
        }
        match keyword.to_ascii_lowercase().as_str() {
            "hostname" => config.hostname = value.to_owned(),
            "port" => config.port = value.parse().ok(),
            "user" => config.user = Some(value.to_owned()),
            "identityfile" => config.identity_files.push(expand(value)),
            "proxyjump" => config.proxy_jump = Some(value.to_owned()),
            "proxycommand" => config.proxy_command = Some(value.to_owned()),
            "userknownhostsfile" | "globalknownhostsfile" => {
                config.known_hosts_files.extend(value.split_whitespace().map(expand));
            }
            "connecttimeout" => config.connect_timeout = value.parse().ok().map(Duration::from_secs),
            _ => {}
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_of_ssh_g_is_read() {
        let text = "User alice\nhostname login.example.org\nport 2222\nidentityfile ~/.ssh/id_rsa\n\
                    identityfile /keys/cluster\nproxyjump bastion\nproxycommand none\n\
                    userknownhostsfile ~/.ssh/known_hosts /tmp/kh2\nglobalknownhostsfile /etc/ssh/ssh_known_hosts\n\
                    connecttimeout 7\nforwardagent no\n";
        let config = parse(text, Path::new("/home/alice"));
        assert_eq!(config.hostname, "login.example.org");
        assert_eq!((config.port, config.user.as_deref()), (Some(2222), Some("alice")));
        assert_eq!(config.identity_files, [PathBuf::from("/home/alice/.ssh/id_rsa"), PathBuf::from("/keys/cluster")]);
        assert_eq!((config.proxy_jump.as_deref(), config.proxy_command), (Some("bastion"), None));
        assert_eq!(
            config.known_hosts_files,
            ["/home/alice/.ssh/known_hosts", "/tmp/kh2", "/etc/ssh/ssh_known_hosts"].map(PathBuf::from)
        );
        assert_eq!(config.connect_timeout, Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn an_alias_resolves_through_ssh_itself() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        std::fs::write(
            &file,
            "Host other\n  User nobody\nHost cluster\n  HostName 127.0.0.1\n  Port 2222\n  User bob\n\
             IdentityFile ~/keys/cluster\nHost *\n  User everybody\n  ProxyJump bastion\n",
        )
        .unwrap();
        let config = resolve("cluster", Path::new("/home/bob"), Some(&file)).await;
        assert_eq!(config.hostname, "127.0.0.1", "an `ssh` client must be installed (openssh-client)");
        assert_eq!((config.port, config.user.as_deref()), (Some(2222), Some("bob")), "the first value wins");
        assert_eq!(config.identity_files, [PathBuf::from("/home/bob/keys/cluster")]);
        assert_eq!(config.proxy_jump.as_deref(), Some("bastion"));
    }
}
