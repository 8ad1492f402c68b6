//! Connecting: where to (the computer's parameters over `ssh -G`'s settings), through what (TCP
//! with `nodelay`, a `ProxyJump` chain of SSH hops, or a `ProxyCommand`'s stdio), whether the
//! host is the one known, and as whom (a key file, the keys `ssh` would try, an agent).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiida_engine::transport::TransportError;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};

use crate::config::{HostConfig, resolve};
use crate::known_hosts::{self, Verdict};
use crate::{KeyPolicy, SshParams};

/// Asks the kernel to acknowledge what comes in on socket `fd` at once (Linux's quick-ack mode,
/// for the next few packets).
fn quickack(fd: Option<std::os::fd::RawFd>) {
    if let Some(fd) = fd {
        let on: libc::c_int = 1;
        // SAFETY: a plain setsockopt on a socket we own, with a valid pointer and length.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// How long connecting may take when neither the computer nor `ssh`'s configuration says.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// An authenticated connection, with the hops it goes through (kept open as long as it is).
pub(crate) struct Connection {
    pub handle: Handle<HostCheck>,
    /// The jump hosts' connections, which the handle's goes through.
    pub _hops: Vec<Handle<HostCheck>>,
    /// `user@host:port`, for messages.
    pub target: String,
    /// The user logged in as.
    pub user: String,
}

/// Where one SSH connection goes, all settings resolved.
#[derive(Debug, Clone)]
struct Destination {
    host: String,
    port: u16,
    user: String,
    keys: Vec<PathBuf>,
    known_hosts: Vec<PathBuf>,
    timeout: Duration,
}

impl Destination {
    fn target(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Connects to the computer `hostname` with `params`.
pub(crate) async fn connect(hostname: &str, params: &SshParams, home: &Path) -> Result<Connection, TransportError> {
    let config = resolve(hostname, home, None).await;
    let destination = settle(&config, params, home, params.username.clone(), params.port);
    let fail = |reason: String| TransportError::Connect { target: destination.target(), reason };
    let mut hops = Vec::new();
    let proxy_jump = params.proxy_jump.clone().or(config.proxy_jump.clone());
    let proxy_command = params.proxy_command.clone().or(config.proxy_command.clone());
    let handle = if let Some(jumps) = proxy_jump {
        // Each hop is reached through the one before; the last one opens a channel to the target.
        let mut through: Option<Handle<HostCheck>> = None;
        for spec in jumps.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (user, host, port) = parse_hop(spec).map_err(fail)?;
            let hop_config = resolve(&host, home, None).await;
            let hop = settle(
                &hop_config,
                params,
                home,
                user.or_else(|| Some(destination.user.clone())),
                port.or(hop_config.port).or(Some(destination.port)),
            );
            let handle = open(&hop, params, through.as_ref()).await?;
            if let Some(previous) = through.replace(handle) {
                hops.push(previous);
            }
        }
        let last = through.ok_or_else(|| fail(format!("the proxy jump `{jumps}` names no host")))?;
        let handle = open(&destination, params, Some(&last)).await?;
        hops.push(last);
        handle
    } else if let Some(command) = proxy_command {
        let command = command
            .replace("%h", &destination.host)
            .replace("%p", &destination.port.to_string())
            .replace("%r", &destination.user)
            .replace("%%", "%");
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run the proxy command `{command}`: {e}")))?;
        let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
            return Err(fail("the proxy command has no pipes".to_owned()));
        };
        // The child lives as long as the stream: it ends with the connection.
        let stream = ChildStream { io: tokio::io::join(stdout, stdin), _child: child };
        handshake(&destination, params, stream, None).await?
    } else {
        open(&destination, params, None).await?
    };
    Ok(Connection { handle, _hops: hops, target: destination.target(), user: destination.user })
}

fn no_answer(timeout: Duration) -> String {
    format!(
        "no answer within {} s: check that the host is up and reachable from here (a firewall, a VPN?), or raise the \
         computer's `timeout`",
        timeout.as_secs_f64()
    )
}

/// The settings for one connection: the computer's parameters first, then `ssh`'s.
fn settle(
    config: &HostConfig,
    params: &SshParams,
    home: &Path,
    user: Option<String>,
    port: Option<u16>,
) -> Destination {
    let mut keys: Vec<PathBuf> = params.key_filename.iter().cloned().collect();
    if params.look_for_keys {
        keys.extend(config.identity_files.iter().filter(|path| path.is_file()).cloned());
    }
    keys.dedup();
    let known_hosts = if !params.load_system_host_keys {
        Vec::new()
    } else if config.known_hosts_files.is_empty() {
        known_hosts::default_files(home)
    } else {
        config.known_hosts_files.clone()
    };
    Destination {
        host: config.hostname.clone(),
        port: port.or(config.port).unwrap_or(22),
        user: user.or(config.user.clone()).unwrap_or_else(crate::sshd::current_user),
        keys,
        known_hosts,
        timeout: params.timeout.or(config.connect_timeout).unwrap_or(DEFAULT_TIMEOUT),
    }
}

/// `[user@]host[:port]`.
fn parse_hop(spec: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let (user, rest) = match spec.rsplit_once('@') {
        Some((user, rest)) => (Some(user.to_owned()), rest),
        None => (None, spec),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => {
            let port = port.parse().map_err(|_| format!("the proxy jump `{spec}` has an invalid port"))?;
            (host.to_owned(), Some(port))
        }
        None => (rest.to_owned(), None),
    };
    Ok((user, host, port))
}

/// Connects to `destination`, directly or through the SSH connection `through`.
async fn open(
    destination: &Destination,
    params: &SshParams,
    through: Option<&Handle<HostCheck>>,
) -> Result<Handle<HostCheck>, TransportError> {
    let fail = |reason: String| TransportError::Connect { target: destination.target(), reason };
    match through {
        Some(jump) => {
            let channel = jump
                .channel_open_direct_tcpip(destination.host.clone(), u32::from(destination.port), "127.0.0.1", 0)
                .await
                .map_err(|e| fail(format!("the jump host could not open a channel to it: {e}")))?;
            handshake(destination, params, channel.into_stream(), None).await
        }
        None => {
            let address = (destination.host.as_str(), destination.port);
            let tcp = match tokio::time::timeout(destination.timeout, tokio::net::TcpStream::connect(address)).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(fail(format!(
                        "nothing listens on port {} there (connection refused): check the computer's hostname and \
                         port",
                        destination.port
                    )));
                }
                Ok(Err(e)) => return Err(fail(format!("{e}: check the computer's hostname and that the host is up"))),
                Err(_) => return Err(fail(no_answer(destination.timeout))),
            };
            let _ = tcp.set_nodelay(true);
            let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
            handshake(destination, params, tcp, Some(fd)).await
        }
    }
}

/// The SSH handshake (host key checked) and the authentication, over `stream`.
async fn handshake<S>(
    destination: &Destination,
    params: &SshParams,
    stream: S,
    fd: Option<std::os::fd::RawFd>,
) -> Result<Handle<HostCheck>, TransportError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let fail = |reason: String| TransportError::Connect { target: destination.target(), reason };
    let mut config = client::Config { nodelay: true, ..client::Config::default() };
    if params.compress {
        config.preferred.compression = std::borrow::Cow::Borrowed(&[
            russh::compression::ZLIB_LEGACY,
            russh::compression::ZLIB,
            russh::compression::NONE,
        ]);
    }
    let refusal = Arc::new(Mutex::new(None));
    let check = HostCheck {
        host: destination.host.clone(),
        port: destination.port,
        files: destination.known_hosts.clone(),
        policy: params.key_policy,
        fd,
        refusal: refusal.clone(),
    };
    let connecting = client::connect_stream(Arc::new(config), stream, check);
    let mut handle = match tokio::time::timeout(destination.timeout, connecting).await {
        Ok(Ok(handle)) => handle,
        Ok(Err(e)) => {
            let refused = refusal.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Err(fail(refused.unwrap_or_else(|| format!("the SSH handshake failed: {e}"))));
        }
        Err(_) => return Err(fail(no_answer(destination.timeout))),
    };
    authenticate(&mut handle, destination, params).await?;
    // A round trip that lets the host-key announcement through first (see the handler).

    Ok(handle)
}

/// Logs in with the first key the server takes.
async fn authenticate(
    handle: &mut Handle<HostCheck>,
    destination: &Destination,
    params: &SshParams,
) -> Result<(), TransportError> {
    let fail = |reason: String| TransportError::Connect { target: destination.target(), reason };
    let rsa_hash = handle.best_supported_rsa_hash().await.ok().flatten().flatten().or(Some(HashAlg::Sha256));
    let mut tried = Vec::new();
    for path in &destination.keys {
        let key = match russh::keys::load_secret_key(path, None) {
            Ok(key) => key,
            Err(e) if params.key_filename.as_ref() == Some(path) => {
                return Err(fail(format!(
                    "cannot use the key_filename {}: {e} (an encrypted key must be in an agent, with allow_agent)",
                    path.display()
                )));
            }
            Err(e) => {
                tracing::debug!(key = %path.display(), "skipping a key ssh would try: {e}");
                continue;
            }
        };
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash);
        match handle.authenticate_publickey(destination.user.clone(), key).await {
            Ok(result) if result.success() => return Ok(()),
            Ok(_) => tried.push(path.display().to_string()),
            Err(e) => return Err(fail(format!("authentication failed: {e}"))),
        }
    }
    if params.allow_agent
        && let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await
    {
        for identity in agent.request_identities().await.unwrap_or_default() {
            let key = identity.public_key().into_owned();
            let result = handle.authenticate_publickey_with(destination.user.clone(), key, rsa_hash, &mut agent).await;
            if result.is_ok_and(|r| r.success()) {
                return Ok(());
            }
            tried.push("a key of the SSH agent".to_owned());
        }
    }
    Err(fail(if tried.is_empty() {
        "no key to log in with: set the computer's key_filename, or put a key where ssh looks for one \
         (~/.ssh/id_ed25519, ...; or IdentityFile in ~/.ssh/config)"
            .to_owned()
    } else {
        format!(
            "the server refused the keys tried ({}): add the public key to ~/.ssh/authorized_keys of {} there, or \
             configure the computer with the right key_filename and username",
            tried.join(", "),
            destination.user
        )
    }))
}

/// The client's side of the handshake: the host key checked against the known_hosts files.
pub(crate) struct HostCheck {
    host: String,
    port: u16,
    files: Vec<PathBuf>,
    policy: KeyPolicy,
    /// The TCP socket, when the connection is one.
    fd: Option<std::os::fd::RawFd>,
    /// Why the key was refused, for the error.
    refusal: Arc<Mutex<Option<String>>>,
}

impl HostCheck {
    fn refuse(&self, reason: String) -> Result<bool, russh::Error> {
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        Ok(false)
    }
}

impl client::Handler for HostCheck {
    type Error = russh::Error;

    /// OpenSSH announces its host keys right after the login, among packets of its own, and sends
    /// what comes next (the answer to the first channel's opening) only once they are
    /// acknowledged: sshd leaves Nagle's algorithm on for sessions without a terminal, and the
    /// kernel here would delay its acknowledgement by 40 ms. Quick-ack mode acknowledges at once
    /// (measured: the first channel in 0.3 ms instead of 41 ms).
    async fn openssh_ext_host_keys_announced(
        &mut self,
        _keys: Vec<russh::keys::PublicKey>,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        quickack(self.fd);
        Ok(())
    }

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return self.refuse("the server showed a host certificate, which core.ssh does not take".to_owned());
        };
        let listed = known_hosts::listed_name(&self.host, self.port);
        let fingerprint = format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256));
        let files = || self.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ");
        match known_hosts::check(&self.files, &self.host, self.port, key) {
            Verdict::Known => Ok(true),
            Verdict::Changed { file, line } => self.refuse(format!(
                "THE HOST KEY HAS CHANGED: {listed} shows {fingerprint}, not the key at {}:{line}; someone may be \
                 intercepting the connection. If the host was reinstalled, remove the old key (`ssh-keygen -R \
                 '{listed}'`) and connect again",
                file.display()
            )),
            Verdict::Revoked { file, line } => {
                self.refuse(format!("the host key {fingerprint} of {listed} is revoked ({}:{line})", file.display()))
            }
            Verdict::Unknown => match self.policy {
                KeyPolicy::Reject => self.refuse(format!(
                    "the host key of {listed} ({fingerprint}) is not in the known_hosts files ({}): check it and add it \
                     (`ssh-keyscan -p {} {} >> ~/.ssh/known_hosts`), or configure the computer with key_policy \
                     AutoAddPolicy",
                    if self.files.is_empty() { "none loaded: load_system_host_keys is false".to_owned() } else { files() },
                    self.port,
                    self.host
                )),
                KeyPolicy::Warn => {
                    tracing::warn!(host = listed, key = fingerprint, "accepting an unknown host key (WarningPolicy)");
                    Ok(true)
                }
                KeyPolicy::AutoAdd => {
                    tracing::debug!(host = listed, key = fingerprint, "accepting an unknown host key (AutoAddPolicy)");
                    Ok(true)
                }
            },
        }
    }
}

/// A proxy command's stdout and stdin as one stream, owning the child.
struct ChildStream {
    io: tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>,
    _child: tokio::process::Child,
}

impl tokio::io::AsyncRead for ChildStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ChildStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_hop;

    #[test]
    fn hops_are_user_host_port() {
        assert_eq!(parse_hop("bastion").unwrap(), (None, "bastion".to_owned(), None));
        assert_eq!(parse_hop("me@gw:2200").unwrap(), (Some("me".to_owned()), "gw".to_owned(), Some(2200)));
        assert!(parse_hop("gw:x").unwrap_err().contains("invalid port"));
    }
}
