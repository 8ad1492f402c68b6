//! Small Unix helpers: the unprivileged server user, ownership, folders made and removed without
//! following symlinks, process identity and liveness.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::env::OS_USER_ENV;
use crate::error::{Error, Result};

/// The OS user PostgreSQL runs as when we are root (PostgreSQL refuses to run as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerUser {
    pub uid: u32,
    pub gid: u32,
}

pub(crate) fn is_root() -> bool {
    euid() == 0
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

/// Our effective user id: the owner of everything we create.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Opens folder `path`; a symlink in its place is refused (`ELOOP`), not followed.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(path)
}

/// Opens file `path` for reading; a symlink in its place is refused, not followed.
pub(crate) fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// Creates (or truncates) file `path` with `mode` (for a new file, less the umask); a symlink in
/// its place is refused, not followed.
pub(crate) fn create_file(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// Why `meta` (from `lstat`) is not a folder that only its owner can change, owned by one of
/// `owners`: `None` when it is one.
pub(crate) fn not_ours(meta: &fs::Metadata, owners: &[u32]) -> Option<String> {
    let what = if meta.file_type().is_symlink() {
        "a symlink, "
    } else if !meta.is_dir() {
        "not a folder, "
    } else if !owners.contains(&meta.uid()) || meta.mode() & 0o022 != 0 {
        ""
    } else {
        return None;
    };
    Some(format!("{what}owner uid {}, mode {:04o}", meta.uid(), meta.mode() & 0o7777))
}

/// Checks that `path` itself (not what a symlink there points to) is a folder owned by one of
/// `owners` that nobody else can change.
pub(crate) fn check_ours(path: &Path, owners: &[u32]) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(Error::io("look at", path))?;
    match not_ours(&meta, owners) {
        Some(detail) => Err(Error::NotOurs { path: path.to_owned(), detail }),
        None => Ok(()),
    }
}

/// Whether nothing (not even a dangling symlink) is at `path`.
pub(crate) fn is_missing(path: &Path) -> bool {
    matches!(fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// Makes folder `path` with exactly `mode` (whatever the umask) and gives it to `user`, when
/// given. Missing parents are made `0755`, so that the server's user can reach what lies below.
///
/// Only what this call creates is changed, through a descriptor opened without following
/// symlinks and checked to be ours. An existing `path` is left as it is and must be a folder of
/// ours (not a symlink, not writable by others); existing parents are left alone (callers check
/// the folders they rely on, see `trust`).
pub(crate) fn make_dir(path: &Path, mode: u32, user: Option<ServerUser>) -> Result<()> {
    let missing: Vec<&Path> =
        path.ancestors().skip(1).take_while(|p| !p.as_os_str().is_empty() && is_missing(p)).collect();
    for parent in missing.into_iter().rev() {
        create_dir(parent, 0o755)?;
    }
    match create_dir(path, mode)? {
        Some(dir) => {
            if let Some(u) = user {
                std::os::unix::fs::fchown(&dir, Some(u.uid), Some(u.gid))
                    .map_err(Error::io("change owner of", path))?;
            }
            Ok(())
        }
        None => check_ours(path, &[euid()]),
    }
}

/// Makes folder `path` with exactly `mode`; `None` when something was there already (untouched).
fn create_dir(path: &Path, mode: u32) -> Result<Option<File>> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(Error::io("create folder", path)(e)),
    }
    // What we open is what we made, unless someone swapped it in the meantime: then it is not ours.
    let dir = open_dir(path).map_err(Error::io("open folder", path))?;
    let meta = dir.metadata().map_err(Error::io("look at", path))?;
    if meta.uid() != euid() {
        return Err(Error::NotOurs { path: path.to_owned(), detail: not_ours(&meta, &[]).unwrap_or_default() });
    }
    dir.set_permissions(fs::Permissions::from_mode(mode)).map_err(Error::io("set permissions of", path))?;
    Ok(Some(dir))
}

/// Copies the folder tree `from` into the new folder `to`, keeping modes and giving every entry to
/// `user`. PostgreSQL clusters hold only files, folders and (rarely) symlinks.
///
/// `from` may belong to the server user, who could swap its entries for symlinks while we copy:
/// entries are reached through the descriptor of their (already opened) folder and opened without
/// following symlinks. The copy is ours until it is complete, then given away from the leaves up,
/// so that no path we still use passes through a folder the server user could change.
pub(crate) fn copy_tree(from: &Path, to: &Path, user: Option<ServerUser>) -> Result<()> {
    let source = open_dir(from).map_err(Error::io("open folder", from))?;
    copy_dir(&source, from, to, user)
}

fn copy_dir(source: &File, from: &Path, to: &Path, user: Option<ServerUser>) -> Result<()> {
    let meta = source.metadata().map_err(Error::io("read", from))?;
    fs::DirBuilder::new().mode(0o700).create(to).map_err(Error::io("create folder", to))?;
    // The folder's entries, reached through its descriptor, never through a path the owner of
    // `from` could change.
    let by_fd = Path::new("/proc/self/fd").join(source.as_raw_fd().to_string());
    for entry in fs::read_dir(&by_fd).map_err(Error::io("read folder", from))? {
        let entry = entry.map_err(Error::io("read folder", from))?;
        let (name, dst) = (entry.file_name(), to.join(entry.file_name()));
        let (src, shown) = (by_fd.join(&name), from.join(&name));
        let kind = entry.file_type().map_err(Error::io("read", &shown))?;
        if kind.is_dir() {
            let sub = open_dir(&src).map_err(Error::io("open folder", &shown))?;
            copy_dir(&sub, &shown, &dst, user)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&src).map_err(Error::io("read link", &shown))?;
            std::os::unix::fs::symlink(target, &dst).map_err(Error::io("create link", &dst))?;
            give_to(&dst, user)?;
        } else {
            let mut input = open_file(&src).map_err(Error::io("open", &shown))?;
            let mode = input.metadata().map_err(Error::io("read", &shown))?.mode() & 0o7777;
            let mut output = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&dst)
                .map_err(Error::io("create", &dst))?;
            io::copy(&mut input, &mut output).map_err(Error::io("copy", &shown))?;
            output.set_permissions(fs::Permissions::from_mode(mode)).map_err(Error::io("set permissions of", &dst))?;
            give_to(&dst, user)?;
        }
    }
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(Error::io("set permissions of", to))?;
    give_to(to, user)
}

/// Removes a folder tree; a missing folder is fine. Symlinks are removed, never followed, also
/// in `path`'s place (std's `remove_dir_all` since Rust 1.58; see the test below).
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

/// The inode of `path` itself, to tell whether a lock file was replaced while we waited for it.
pub(crate) fn inode(path: &Path) -> Option<u64> {
    fs::symlink_metadata(path).ok().map(|m| m.ino())
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

/// Swaps the two paths atomically (Linux `renameat2` with `RENAME_EXCHANGE`).
pub(crate) fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let (ca, cb) = (
        CString::new(a.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?,
        CString::new(b.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?,
    );
    // SAFETY: both are valid C strings; AT_FDCWD makes the paths relative to the working folder.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Lowers the calling thread's scheduling priority to the lowest (nice 19): for background work
/// that must not slow tests down.
pub(crate) fn lower_priority() {
    // SAFETY: gettid and setpriority take plain integers; a failure only leaves the priority.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("testpg-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn remove_tree_removes_symlinks_without_following_them() {
        let dir = scratch("remove");
        let target = dir.join("target");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), "x").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("link")).unwrap();
        fs::create_dir(dir.join("tree")).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("tree").join("inner")).unwrap();
        remove_tree(&dir.join("link")).unwrap();
        remove_tree(&dir.join("tree")).unwrap();
        assert!(is_missing(&dir.join("link")) && is_missing(&dir.join("tree")));
        assert_eq!(fs::read_to_string(target.join("keep")).unwrap(), "x");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn make_dir_refuses_a_symlink_and_leaves_existing_parents_alone() {
        let dir = scratch("make");
        let target = dir.join("target");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("link")).unwrap();
        let err = make_dir(&dir.join("link"), 0o755, None).unwrap_err();
        assert!(matches!(err, Error::NotOurs { .. }), "{err}");
        assert!(err.to_string().contains("a symlink"), "{err}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).unwrap();
        make_dir(&dir.join("new").join("deeper"), 0o700, None).unwrap();
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!((mode(&dir), mode(&dir.join("new")), mode(&dir.join("new/deeper"))), (0o711, 0o755, 0o700));
        assert_eq!(mode(&target), 0o700);
        fs::remove_dir_all(&dir).unwrap();
    }
}
