//! A private OpenSSH server for tests: `sshd -D` on a free loopback port, with its own host key
//! and an `authorized_keys` of the caller's choice, all in a folder the caller owns; it needs
//! nothing configured on the machine but an installed `sshd`.
//!
//! Sessions start as on a clean account: the server sets `SHLVL=1` in them (`SetEnv`), so that
//! Debian's bash, which otherwise reads `~/.bashrc` for every command run over SSH, skips it. A
//! login shell (`bash -l`, aiida's `use_login_shell`) still reads the profile files.
//!
//! The server ends when the [`PrivateSshd`] drops, and with the process that started it (it gets
//! SIGTERM when that process dies, however it dies).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

/// Why the private server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshdError {
    /// No `sshd` binary.
    #[error(
        "sshd is not installed (looked for {looked}): install OpenSSH's server (`apt-get install openssh-server`) or \
         name the binary in AIIDA_TEST_SSHD"
    )]
    NotInstalled {
        /// Where it was looked for.
        looked: String,
    },
    /// A file of the server could not be written or read.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key could not be made.
    #[error("cannot make an SSH key: {0}")]
    Key(String),
    /// The server did not come up.
    #[error("sshd did not start: {reason}; its log {log} ends:\n{tail}")]
    Start {
        /// Why.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
}

/// Makes a new ed25519 key pair: the private key at `path` (OpenSSH format, mode 0600), the public
/// key at `path` + `.pub`; returns the public key's line (`ssh-ed25519 AAAA...`).
pub fn generate_key_pair(path: &Path) -> Result<String, SshdError> {
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| SshdError::Key(e.to_string()))?;
    let private = key.to_openssh(LineEnding::LF).map_err(|e| SshdError::Key(e.to_string()))?;
    let public = key.public_key().to_openssh().map_err(|e| SshdError::Key(e.to_string()))?;
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| SshdError::Io { action, path, source }
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io("write the key", path))?;
    file.write_all(private.as_bytes()).map_err(io("write the key", path))?;
    let public_path = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.pub", ext.to_string_lossy()),
        None => "pub".to_owned(),
    });
    std::fs::write(&public_path, format!("{public}\n")).map_err(io("write the key", &public_path))?;
    Ok(public)
}

/// A running private `sshd`. See the [module](self).
#[derive(Debug)]
pub struct PrivateSshd {
    dir: PathBuf,
    port: u16,
    host_key: String,
    child: Child,
}

impl PrivateSshd {
    /// Starts a server keeping its files (host key, configuration, pid file, log) in `dir` (which
    /// must exist and stay until the server is dropped), letting in the current user with the
    /// public keys `authorized_keys` (OpenSSH lines).
    pub fn start(dir: &Path, authorized_keys: &[&str]) -> Result<PrivateSshd, SshdError> {
        let sshd = find_sshd()?;
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| SshdError::Io { action, path, source }
        };
        // sshd reads authorized_keys as the user it logs in, and refuses group- or
        // world-writable parents only with StrictModes (off here).
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io("open up", dir))?;
        let host_key = generate_key_pair(&dir.join("host_ed25519"))?;
        let keys = dir.join("authorized_keys");
        std::fs::write(&keys, authorized_keys.iter().map(|k| format!("{k}\n")).collect::<String>())
            .map_err(io("write", &keys))?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Compiled into a root sshd: its privilege separation folder.
            let run = Path::new("/run/sshd");
            if !run.is_dir() {
                std::fs::create_dir_all(run).map_err(io("create", run))?;
                std::fs::set_permissions(run, std::fs::Permissions::from_mode(0o755)).map_err(io("set up", run))?;
            }
        }
        let user = current_user();
        let mut last = String::new();
        // Another process may take the free port between our look and sshd's bind: try again.
        for _ in 0..5 {
            let port = free_port().map_err(io("find a free port on", Path::new("127.0.0.1")))?;
            let config = dir.join("sshd_config");
            std::fs::write(&config, configuration(dir, port, &user)).map_err(io("write", &config))?;
            let log_path = dir.join("sshd.log");
            let log = std::fs::File::create(&log_path).map_err(io("create", &log_path))?;
            let mut command = Command::new(&sshd);
            command.args(["-D", "-e", "-f"]).arg(&config).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
            // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let child = command.spawn().map_err(io("run", &sshd))?;
            let mut server = PrivateSshd { dir: dir.to_owned(), port, host_key: host_key.clone(), child };
            match server.wait_until_ready(Duration::from_secs(10)) {
                Ok(()) => return Ok(server),
                Err(reason) => last = reason,
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if !log.contains("Address already in use") {
                let tail = log.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>();
                return Err(SshdError::Start { reason: last, log: log_path, tail: tail.join("\n") });
            }
        }
        Err(SshdError::Start { reason: last, log: dir.join("sshd.log"), tail: String::new() })
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its host key's public line (`ssh-ed25519 AAAA...`).
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits until the server answers with its banner; kills it if it does not.
    fn wait_until_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited with {status}"));
            }
            if let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-" {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!("no SSH banner on port {} within {timeout:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for PrivateSshd {
    fn drop(&mut self) {
        // A session's sshd leaves the listener's process group: end the sessions first.
        let pid = self.child.id();
        for child in children_of(pid) {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(child as i32, libc::SIGTERM) };
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The server's configuration: loopback only, keys only, the caller's user only, SFTP in process,
/// many sessions and connections at once, and no `~/.bashrc` for commands.
fn configuration(dir: &Path, port: u16, user: &str) -> String {
    let d = dir.display();
    format!(
        "ListenAddress 127.0.0.1:{port}\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
         AllowUsers {user}\nSubsystem sftp internal-sftp\nMaxStartups 100:30:200\nMaxSessions 100\n\
         PrintMotd no\nPrintLastLog no\nLogLevel VERBOSE\nSetEnv SHLVL=1\n"
    )
}

/// The `sshd` binary: AIIDA_TEST_SSHD, else the usual places (sshd needs an absolute path).
fn find_sshd() -> Result<PathBuf, SshdError> {
    find_sshd_in(std::env::var_os("AIIDA_TEST_SSHD"))
}

fn find_sshd_in(named: Option<std::ffi::OsString>) -> Result<PathBuf, SshdError> {
    let candidates: Vec<PathBuf> = match named {
        Some(path) => vec![PathBuf::from(path)],
        None => ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"].iter().map(PathBuf::from).collect(),
    };
    candidates.iter().find(|path| path.is_absolute() && path.is_file()).cloned().ok_or_else(|| {
        SshdError::NotInstalled {
            looked: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        }
    })
}

/// The user this process runs as.
pub(crate) fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; read at once.
    unsafe {
        let entry = libc::getpwuid(libc::geteuid());
        if !entry.is_null() && !(*entry).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*entry).pw_name).to_string_lossy().into_owned();
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".to_owned())
}

/// A loopback port nobody listens on (bound, read, released).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`: the fields after the last `)`.
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_sshd_says_how_to_get_one() {
        let err = find_sshd_in(Some("/nonexistent/sshd".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sshd is not installed (looked for /nonexistent/sshd): install OpenSSH's server (`apt-get install \
             openssh-server`) or name the binary in AIIDA_TEST_SSHD"
        );
        assert!(find_sshd_in(Some("sshd".into())).is_err(), "a relative path is refused: sshd must be absolute");
    }

    #[test]
    fn key_pairs_are_openssh_files() {
        let dir = tempfile::tempdir().unwrap();
        let public = generate_key_pair(&dir.path().join("id")).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("id.pub")).unwrap(), format!("{public}\n"));
        let key = russh::keys::load_secret_key(dir.path().join("id"), None).unwrap();
        assert_eq!(key.public_key().to_openssh().unwrap(), public);
        let mode = std::fs::metadata(dir.path().join("id")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
