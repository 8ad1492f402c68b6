//! Small Unix helpers: the unprivileged server user, ownership, process identity and liveness.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// The OS user PostgreSQL runs as when we are root (PostgreSQL refuses to run as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerUser {
    pub uid: u32,
    pub gid: u32,
}

/// Environment variable naming the unprivileged user to run PostgreSQL as when we are root.
pub(crate) const OS_USER_ENV: &str = "TESTPG_OS_USER";

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The user to run the server as: `None` when we are not root (the server runs as us), otherwise
/// `TESTPG_OS_USER` or `postgres`.
pub(crate) fn server_user() -> Result<Option<ServerUser>> {
    if !is_root() {
        return Ok(None);
    }
    let name = std::env::var(OS_USER_ENV).unwrap_or_else(|_| "postgres".to_owned());
    lookup_user(&name)?.map(Some).ok_or(Error::NoServerUser { user: name })
}

fn lookup_user(name: &str) -> Result<Option<ServerUser>> {
    let cname = CString::new(name).map_err(|_| Error::NoServerUser { user: name.to_owned() })?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the duration of the call; buf outlives pwd's use.
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Ok(None);
    }
    Ok(Some(ServerUser { uid: pwd.pw_uid, gid: pwd.pw_gid }))
}

/// Gives `path` (not following symlinks) to `user`, when there is one.
pub(crate) fn give_to(path: &Path, user: Option<ServerUser>) -> Result<()> {
    if let Some(u) = user {
        std::os::unix::fs::lchown(path, Some(u.uid), Some(u.gid)).map_err(Error::io("change owner of", path))?;
    }
    Ok(())
}

/// Creates `path` with `mode`, owned by `user` when given. Missing parents are made `0755`
/// whatever the umask, so that the server's user can reach what lies below them.
pub(crate) fn make_dir(path: &Path, mode: u32, user: Option<ServerUser>) -> Result<()> {
    let missing: Vec<&Path> =
        path.ancestors().skip(1).take_while(|p| !p.as_os_str().is_empty() && !p.exists()).collect();
    for parent in missing.into_iter().rev() {
        match fs::create_dir(parent) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(Error::io("create folder", parent)(e)),
            _ => fs::set_permissions(parent, fs::Permissions::from_mode(0o755))
                .map_err(Error::io("set permissions of", parent))?,
        }
    }
    fs::create_dir_all(path).map_err(Error::io("create folder", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(Error::io("set permissions of", path))?;
    give_to(path, user)
}

/// Copies the folder tree `from` into the new folder `to`, keeping modes and giving every entry to
/// `user`. PostgreSQL clusters hold only files, folders and (rarely) symlinks.
pub(crate) fn copy_tree(from: &Path, to: &Path, user: Option<ServerUser>) -> Result<()> {
    let meta = fs::symlink_metadata(from).map_err(Error::io("read", from))?;
    fs::create_dir(to).map_err(Error::io("create folder", to))?;
    fs::set_permissions(to, meta.permissions()).map_err(Error::io("set permissions of", to))?;
    give_to(to, user)?;
    for entry in fs::read_dir(from).map_err(Error::io("read folder", from))? {
        let entry = entry.map_err(Error::io("read folder", from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(Error::io("read", &src))?;
        if kind.is_dir() {
            copy_tree(&src, &dst, user)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&src).map_err(Error::io("read link", &src))?;
            std::os::unix::fs::symlink(target, &dst).map_err(Error::io("create link", &dst))?;
            give_to(&dst, user)?;
        } else {
            fs::copy(&src, &dst).map_err(Error::io("copy", &src))?;
            give_to(&dst, user)?;
        }
    }
    Ok(())
}

/// Removes a folder tree; a missing folder is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// A process, identified by its pid and its start time (so a reused pid is not mistaken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProcessId {
    pub pid: u32,
    pub start: u64,
}

impl ProcessId {
    pub(crate) fn current() -> ProcessId {
        Self::of(std::process::id()).expect("/proc/self/stat is readable")
    }

    /// The process `pid`, if it exists and is not a zombie.
    pub(crate) fn of(pid: u32) -> Option<ProcessId> {
        let (state, ppid_start) = stat_fields(pid)?;
        (state != 'Z' && state != 'X').then_some(ProcessId { pid, start: ppid_start.1 })
    }

    /// Whether this very process still runs.
    pub(crate) fn is_alive(&self) -> bool {
        ProcessId::of(self.pid).is_some_and(|p| p.start == self.start)
    }
}

/// `(state, (ppid, starttime))` from `/proc/<pid>/stat`.
fn stat_fields(pid: u32) -> Option<(char, (u32, u64))> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, (ppid, start)))
}

pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid).map(|(_, (ppid, _))| ppid).filter(|&p| p > 0)
}

/// The short command name of a process (`/proc/<pid>/comm`).
pub(crate) fn command_name(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_owned())
}

/// A file descriptor that becomes readable when process `pid` ends (Linux `pidfd_open`).
pub(crate) fn pidfd(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us this fd and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub(crate) fn signal(pid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// Free bytes on the file system holding `path`.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Whether we may create entries in `path`.
pub(crate) fn writable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The inode of `path`, to tell whether a lock file was replaced while we waited for it.
pub(crate) fn inode(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

/// `bytes` random bytes from the kernel, as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let mut filled = 0;
    while filled < bytes {
        // SAFETY: buf[filled..] is valid writable memory of the given length.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), bytes - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
