//! An open `core.ssh` transport: one SSH connection, its files through one SFTP session and its
//! commands through exec channels, any number of them at once. The operations mean what they mean
//! for `core.local` (aiida's semantics: globs, copying into existing folders, merging trees).

use std::path::{Path, PathBuf};

use aiida_engine::transport::pattern::{Pattern, glob as local_glob, has_magic, inside};
use aiida_engine::transport::{CommandOutput, Transport, TransportError, escape_for_bash};
use russh::ChannelMsg;
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::SshParams;
use crate::connect::{Connection, connect};

/// An open `core.ssh` transport. Relative remote paths are taken from the remote home folder;
/// local paths must be absolute.
pub struct SshTransport {
    connection: Connection,
    sftp: SftpSession,
    home: PathBuf,
    use_login_shell: bool,
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport").field("target", &self.connection.target).finish_non_exhaustive()
    }
}

impl SshTransport {
    /// Connects to `hostname` with the checked parameters `params`.
    pub(crate) async fn connect(hostname: &str, params: &SshParams) -> Result<SshTransport, TransportError> {
        let home = std::env::home_dir().unwrap_or_else(|| PathBuf::from("/"));
        let connection = connect(hostname, params, &home).await?;
        let fail =
            |reason: String| TransportError::Connect { target: connection.target.clone(), reason: reason.clone() };
        let channel =
            connection.handle.channel_open_session().await.map_err(|e| fail(format!("cannot open a channel: {e}")))?;
        channel.request_subsystem(true, "sftp").await.map_err(|e| fail(format!("the server has no SFTP: {e}")))?;
        let sftp = SftpSession::new(channel.into_stream()).await.map_err(|e| fail(format!("SFTP failed: {e}")))?;
        let home = sftp.canonicalize(".").await.map_err(|e| fail(format!("cannot find the home folder: {e}")))?;
        Ok(SshTransport { connection, sftp, home: PathBuf::from(home), use_login_shell: params.use_login_shell })
    }

    /// `user@host:port` of the connection.
    pub fn target(&self) -> &str {
        &self.connection.target
    }

    /// The remote home folder, which relative paths start from.
    pub fn home(&self) -> &Path {
        &self.home
    }

    fn resolve(&self, path: &Path) -> Result<PathBuf, TransportError> {
        if path.as_os_str().is_empty() {
            return Err(TransportError::InvalidPath { path: path.to_owned(), reason: "it is empty" });
        }
        Ok(self.home.join(path))
    }

    fn local(path: &Path) -> Result<PathBuf, TransportError> {
        if path.is_absolute() {
            Ok(path.to_owned())
        } else {
            Err(TransportError::InvalidPath { path: path.to_owned(), reason: "a local path must be absolute" })
        }
    }

    /// What is at `path` (links not followed), or `None`.
    async fn lstat(&self, path: &Path) -> Result<Option<FileAttributes>, TransportError> {
        match self.sftp.symlink_metadata(text(path)).await {
            Ok(attributes) => Ok(Some(attributes)),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(sftp_error("look at", path, e)),
        }
    }

    /// What `path` is (links followed), or `None`.
    async fn stat(&self, path: &Path) -> Result<Option<FileAttributes>, TransportError> {
        match self.sftp.metadata(text(path)).await {
            Ok(attributes) => Ok(Some(attributes)),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(sftp_error("look at", path, e)),
        }
    }

    async fn remote_is_dir(&self, path: &Path) -> Result<bool, TransportError> {
        Ok(self.stat(path).await?.is_some_and(|a| a.is_dir()))
    }

    /// The names in folder `path` (without `.` and `..`), sorted.
    async fn names(&self, path: &Path) -> Result<Vec<String>, TransportError> {
        let entries = self.sftp.read_dir(text(path)).await.map_err(|e| sftp_error("list the folder", path, e))?;
        let mut names: Vec<String> = entries.map(|e| e.file_name()).filter(|n| n != "." && n != "..").collect();
        names.sort();
        Ok(names)
    }

    /// The remote paths matching the absolute pattern `pattern`, as the local glob finds them.
    async fn remote_glob(&self, pattern: &Path) -> Result<Vec<PathBuf>, TransportError> {
        let raw = text(pattern);
        let dirs_only = raw.ends_with('/');
        let components: Vec<&str> = raw.split('/').filter(|c| !c.is_empty()).collect();
        let mut found = vec![PathBuf::from("/")];
        for (index, component) in components.iter().enumerate() {
            let last = index + 1 == components.len();
            let need_dir = !last || dirs_only;
            let mut next = Vec::new();
            if has_magic(Path::new(component)) {
                let pattern = Pattern::new(component);
                for dir in &found {
                    let Ok(names) = self.names(dir).await else { continue };
                    for name in names.iter().filter(|name| pattern.matches_listed(name)) {
                        let path = dir.join(name);
                        if !need_dir || self.remote_is_dir(&path).await? {
                            next.push(path);
                        }
                    }
                }
            } else {
                for dir in &found {
                    let path = dir.join(component);
                    if !last || (self.lstat(&path).await?.is_some() && (!need_dir || self.remote_is_dir(&path).await?))
                    {
                        next.push(path);
                    }
                }
            }
            found = next;
            if found.is_empty() {
                break;
            }
        }
        found.sort();
        Ok(found)
    }

    /// Runs `command` as it is (the login shell of the account, no wrapper) and waits.
    async fn exec_raw(&self, command: &str, stdin: Option<&[u8]>) -> Result<CommandOutput, TransportError> {
        let fail = |e: russh::Error| TransportError::Command {
            command: command.to_owned(),
            source: std::io::Error::other(format!("over SSH to {}: {e}", self.connection.target)),
        };
        let mut channel = self.connection.handle.channel_open_session().await.map_err(fail)?;
        channel.exec(true, command).await.map_err(fail)?;
        if let Some(data) = stdin {
            // A command that does not read all of its input closes the channel: not an error.
            let _ = channel.data(data).await;
        }
        channel.eof().await.map_err(fail)?;
        let (mut stdout, mut stderr, mut retval) = (Vec::new(), Vec::new(), None);
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => retval = Some(exit_status as i32),
                ChannelMsg::ExitSignal { .. } => retval = Some(-1),
                _ => {}
            }
        }
        Ok(CommandOutput { retval: retval.unwrap_or(-1), stdout, stderr })
    }

    /// Runs a command of ours (`rm`, `cp`) and fails with its stderr when it fails.
    async fn run_checked(&self, command: String, action: &'static str, path: &Path) -> Result<(), TransportError> {
        let output = self.exec_raw(&command, None).await?;
        if output.retval == 0 {
            return Ok(());
        }
        Err(TransportError::Io {
            action,
            path: path.to_owned(),
            source: std::io::Error::other(format!("`{command}` failed: {}", output.stderr_text().trim())),
        })
    }

    /// Copies the local file `local` to `remote` (overwriting; its permission bits kept).
    async fn upload_file(&self, local: &Path, remote: &Path) -> Result<(), TransportError> {
        let mut source = tokio::fs::File::open(local).await.map_err(|e| local_error("read", local, e))?;
        let mode = source.metadata().await.map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        let mut file = self.sftp.create(text(remote)).await.map_err(|e| sftp_error("write", remote, e))?;
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = source.read(&mut buffer).await.map_err(|e| local_error("read", local, e))?;
            if n == 0 {
                break;
            }
            file.write_all(&buffer[..n]).await.map_err(|e| io_error("write", remote, e))?;
        }
        file.shutdown().await.map_err(|e| io_error("write", remote, e))?;
        if let Ok(mode) = mode {
            let attributes = FileAttributes { permissions: Some(mode & 0o7777), ..FileAttributes::empty() };
            self.sftp
                .set_metadata(text(remote), attributes)
                .await
                .map_err(|e| sftp_error("set the permissions of", remote, e))?;
        }
        Ok(())
    }

    /// Copies the remote file `remote` to `local` (overwriting; its permission bits kept).
    async fn download_file(&self, remote: &Path, local: &Path, mode: Option<u32>) -> Result<(), TransportError> {
        let mut file = self.sftp.open(text(remote)).await.map_err(|e| sftp_error("read", remote, e))?;
        let mut target = tokio::fs::File::create(local).await.map_err(|e| local_error("write", local, e))?;
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buffer).await.map_err(|e| io_error("read", remote, e))?;
            if n == 0 {
                break;
            }
            target.write_all(&buffer[..n]).await.map_err(|e| local_error("write", local, e))?;
        }
        target.flush().await.map_err(|e| local_error("write", local, e))?;
        if let Some(mode) = mode {
            let permissions = std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777);
            tokio::fs::set_permissions(local, permissions)
                .await
                .map_err(|e| local_error("set the permissions of", local, e))?;
        }
        Ok(())
    }

    /// `put` of one local path (links followed): into `remote` when that is a folder, as it
    /// otherwise; folders merged, files overwritten.
    async fn upload(&self, local: &Path, remote: &Path) -> Result<(), TransportError> {
        let remote_dir = self.remote_is_dir(remote).await?;
        let target = if remote_dir { inside(remote, local) } else { remote.to_owned() };
        if !local.is_dir() {
            return self.upload_file(local, &target).await;
        }
        if !remote_dir && self.lstat(remote).await?.is_some() {
            return Err(TransportError::InvalidPath {
                path: remote.to_owned(),
                reason: "it is a file: a folder cannot be copied onto it",
            });
        }
        // Depth first, with a stack: (local folder, remote folder).
        let mut stack = vec![(local.to_owned(), target)];
        while let Some((from, to)) = stack.pop() {
            if !self.remote_is_dir(&to).await? {
                self.sftp.create_dir(text(&to)).await.map_err(|e| sftp_error("create the folder", &to, e))?;
            }
            let entries = std::fs::read_dir(&from).map_err(|e| local_error("list the folder", &from, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| local_error("list the folder", &from, e))?;
                let path = entry.path();
                let destination = to.join(entry.file_name());
                if path.is_dir() {
                    stack.push((path, destination));
                } else {
                    self.upload_file(&path, &destination).await?;
                }
            }
            let mode = std::fs::metadata(&from).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
            if let Ok(mode) = mode {
                let attributes = FileAttributes { permissions: Some(mode & 0o7777), ..FileAttributes::empty() };
                let _ = self.sftp.set_metadata(text(&to), attributes).await;
            }
        }
        Ok(())
    }

    /// `get` of one remote path (links followed), as [`upload`](Self::upload) the other way.
    async fn download(&self, remote: &Path, local: &Path) -> Result<(), TransportError> {
        let attributes = self.stat(remote).await?.ok_or_else(|| TransportError::Missing(remote.to_owned()))?;
        let local_dir = local.is_dir();
        let target = if local_dir { inside(local, remote) } else { local.to_owned() };
        if !attributes.is_dir() {
            return self.download_file(remote, &target, attributes.permissions).await;
        }
        if !local_dir && std::fs::symlink_metadata(local).is_ok() {
            return Err(TransportError::InvalidPath {
                path: local.to_owned(),
                reason: "it is a file: a folder cannot be copied onto it",
            });
        }
        let mut stack = vec![(remote.to_owned(), target, attributes.permissions)];
        while let Some((from, to, mode)) = stack.pop() {
            if !to.is_dir() {
                std::fs::create_dir(&to).map_err(|e| local_error("create the folder", &to, e))?;
            }
            for name in self.names(&from).await? {
                let path = from.join(&name);
                let Some(attributes) = self.stat(&path).await? else { continue };
                if attributes.is_dir() {
                    stack.push((path, to.join(&name), attributes.permissions));
                } else {
                    self.download_file(&path, &to.join(&name), attributes.permissions).await?;
                }
            }
            if let Some(mode) = mode {
                let _ = std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777));
            }
        }
        Ok(())
    }

    /// The paths a source names: its glob's matches, or itself (which must exist unless
    /// `ignore_missing`).
    async fn sources(&self, source: &Path, ignore_missing: bool) -> Result<Vec<PathBuf>, TransportError> {
        if has_magic(source) {
            return self.remote_glob(source).await;
        }
        match self.lstat(source).await? {
            Some(_) => Ok(vec![source.to_owned()]),
            None if ignore_missing => Ok(Vec::new()),
            None => Err(TransportError::Missing(source.to_owned())),
        }
    }
}

/// A remote path as SFTP takes it.
fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn missing(error: &SftpError) -> bool {
    matches!(error, SftpError::Status(status) if status.status_code == StatusCode::NoSuchFile)
}

fn sftp_error(action: &'static str, path: &Path, error: SftpError) -> TransportError {
    if missing(&error) {
        return TransportError::Missing(path.to_owned());
    }
    TransportError::Io { action, path: path.to_owned(), source: std::io::Error::other(error.to_string()) }
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> TransportError {
    TransportError::Io { action, path: path.to_owned(), source }
}

fn local_error(action: &'static str, path: &Path, source: std::io::Error) -> TransportError {
    match source.kind() {
        std::io::ErrorKind::NotFound => TransportError::Missing(path.to_owned()),
        _ => io_error(action, path, source),
    }
}

fn several_need_a_folder(destination: &Path, exists: bool) -> TransportError {
    if exists {
        TransportError::InvalidPath {
            path: destination.to_owned(),
            reason: "it is not a folder, and the pattern matches several paths",
        }
    } else {
        TransportError::Missing(destination.to_owned())
    }
}

#[async_trait::async_trait]
impl Transport for SshTransport {
    async fn put(&self, local: &Path, remote: &Path) -> Result<(), TransportError> {
        let local = Self::local(local)?;
        let remote = self.resolve(remote)?;
        if !has_magic(&local) {
            if !local.exists() {
                return Err(TransportError::Missing(local));
            }
            return self.upload(&local, &remote).await;
        }
        if has_magic(&remote) {
            return Err(TransportError::InvalidPath { path: remote, reason: "a destination cannot be a glob pattern" });
        }
        let matches = local_glob(&local);
        if matches.len() > 1 && !self.remote_is_dir(&remote).await? {
            return Err(several_need_a_folder(&remote, self.lstat(&remote).await?.is_some()));
        }
        for path in matches {
            self.upload(&path, &remote).await?;
        }
        Ok(())
    }

    async fn get(&self, remote: &Path, local: &Path, ignore_nonexisting: bool) -> Result<(), TransportError> {
        let local = Self::local(local)?;
        let remote = self.resolve(remote)?;
        if has_magic(&remote) && has_magic(&local) {
            return Err(TransportError::InvalidPath { path: local, reason: "a destination cannot be a glob pattern" });
        }
        let matches = match self.stat(&remote).await? {
            Some(_) if !has_magic(&remote) => vec![remote.clone()],
            None if !has_magic(&remote) && ignore_nonexisting => return Ok(()),
            None if !has_magic(&remote) => return Err(TransportError::Missing(remote)),
            _ => self.remote_glob(&remote).await?,
        };
        if matches.len() > 1 && !local.is_dir() {
            return Err(several_need_a_folder(&local, std::fs::symlink_metadata(&local).is_ok()));
        }
        for path in matches {
            self.download(&path, &local).await?;
        }
        Ok(())
    }

    async fn copy(&self, source: &Path, destination: &Path) -> Result<(), TransportError> {
        let source = self.resolve(source)?;
        let destination = self.resolve(destination)?;
        if has_magic(&destination) {
            return Err(TransportError::InvalidPath {
                path: destination,
                reason: "a destination cannot be a glob pattern",
            });
        }
        let matches = self.sources(&source, false).await?;
        if matches.len() > 1 && !self.remote_is_dir(&destination).await? {
            return Err(several_need_a_folder(&destination, self.lstat(&destination).await?.is_some()));
        }
        for path in matches {
            // Links are copied as links (`-P`), as shutil.copytree(symlinks=True) does.
            let command = format!(
                "cp -R -P {} {}",
                escape_for_bash(&text(&path), false),
                escape_for_bash(&text(&destination), false)
            );
            self.run_checked(command, "copy", &path).await?;
        }
        Ok(())
    }

    async fn symlink(&self, source: &Path, link: &Path) -> Result<(), TransportError> {
        let link = self.resolve(link)?;
        if source.as_os_str().is_empty() {
            return Err(TransportError::InvalidPath { path: source.to_owned(), reason: "it is empty" });
        }
        let pairs: Vec<(PathBuf, PathBuf)> = if !has_magic(source) {
            // The target is stored as given: a relative one is relative to the link's folder.
            vec![(source.to_owned(), link)]
        } else {
            if has_magic(&link) {
                return Err(TransportError::InvalidPath { path: link, reason: "a link cannot be a glob pattern" });
            }
            let source = self.resolve(source)?;
            let matches = self.remote_glob(&source).await?;
            matches.into_iter().map(|path| (path.clone(), inside(&link, &path))).collect()
        };
        for (target, link) in pairs {
            if self.lstat(&link).await?.is_some() {
                return Err(TransportError::Exists(link));
            }
            // OpenSSH's server reads SSH_FXP_SYMLINK's two paths the other way round from the
            // draft: the target first.
            self.sftp.symlink(text(&target), text(&link)).await.map_err(|e| sftp_error("create the link", &link, e))?;
        }
        Ok(())
    }

    async fn listdir(&self, path: &Path) -> Result<Vec<String>, TransportError> {
        let path = self.resolve(path)?;
        self.names(&path).await
    }

    async fn glob(&self, pattern: &Path) -> Result<Vec<PathBuf>, TransportError> {
        let pattern = self.resolve(pattern)?;
        self.remote_glob(&pattern).await
    }

    async fn mkdir(&self, path: &Path, ignore_existing: bool) -> Result<(), TransportError> {
        let path = self.resolve(path)?;
        match self.sftp.create_dir(text(&path)).await {
            Ok(()) => Ok(()),
            Err(e) => match self.lstat(&path).await? {
                Some(_) if ignore_existing && self.remote_is_dir(&path).await? => Ok(()),
                Some(_) => Err(TransportError::Exists(path)),
                None => Err(TransportError::Io {
                    action: "create the folder",
                    path,
                    source: std::io::Error::other(e.to_string()),
                }),
            },
        }
    }

    async fn makedirs(&self, path: &Path, ignore_existing: bool) -> Result<(), TransportError> {
        let path = self.resolve(path)?;
        if self.lstat(&path).await?.is_some() {
            return if ignore_existing && self.remote_is_dir(&path).await? {
                Ok(())
            } else {
                Err(TransportError::Exists(path))
            };
        }
        let mut missing = vec![path.clone()];
        let mut above = path.parent();
        while let Some(dir) = above {
            if self.lstat(dir).await?.is_some() {
                break;
            }
            missing.push(dir.to_owned());
            above = dir.parent();
        }
        for dir in missing.iter().rev() {
            self.sftp.create_dir(text(dir)).await.map_err(|e| sftp_error("create the folder", dir, e))?;
        }
        Ok(())
    }

    async fn rmtree(&self, path: &Path) -> Result<(), TransportError> {
        let path = self.resolve(path)?;
        self.run_checked(format!("rm -rf -- {}", escape_for_bash(&text(&path), false)), "remove", &path).await
    }

    async fn rename(&self, old: &Path, new: &Path) -> Result<(), TransportError> {
        let old = self.resolve(old)?;
        let new = self.resolve(new)?;
        if self.lstat(&old).await?.is_none() {
            return Err(TransportError::Missing(old));
        }
        if self.lstat(&new).await?.is_some() {
            return Err(TransportError::Exists(new));
        }
        self.sftp.rename(text(&old), text(&new)).await.map_err(|e| sftp_error("rename", &old, e))
    }

    async fn path_exists(&self, path: &Path) -> Result<bool, TransportError> {
        if path.as_os_str().is_empty() {
            return Ok(false);
        }
        let path = self.resolve(path)?;
        Ok(self.stat(&path).await?.is_some())
    }

    async fn is_dir(&self, path: &Path) -> Result<bool, TransportError> {
        if path.as_os_str().is_empty() {
            return Ok(false);
        }
        let path = self.resolve(path)?;
        self.remote_is_dir(&path).await
    }

    async fn chmod(&self, path: &Path, mode: u32) -> Result<(), TransportError> {
        let path = self.resolve(path)?;
        let attributes = FileAttributes { permissions: Some(mode), ..FileAttributes::empty() };
        self.sftp
            .set_metadata(text(&path), attributes)
            .await
            .map_err(|e| sftp_error("change the permissions of", &path, e))
    }

    /// aiida's command line: `bash [-l] -c 'cd <workdir> && ( <command> )'`.
    async fn exec_command_wait(
        &self,
        command: &str,
        workdir: Option<&Path>,
        stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, TransportError> {
        let workdir = match workdir {
            Some(dir) => self.resolve(dir)?,
            None => self.home.clone(),
        };
        let inner = format!("cd {} && ( {command} )", escape_for_bash(&text(&workdir), false));
        let shell = if self.use_login_shell { "bash -l -c " } else { "bash -c " };
        self.exec_raw(&format!("{shell}{}", escape_for_bash(&inner, false)), stdin).await
    }

    /// The user logged in as.
    async fn whoami(&self) -> Result<String, TransportError> {
        Ok(self.connection.user.clone())
    }

    async fn close(&self) -> Result<(), TransportError> {
        let _ = self.sftp.close().await;
        let _ = self.connection.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
        Ok(())
    }
}
