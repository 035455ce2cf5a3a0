//! Private files on disk: snapshots, the refresh lock's records, the
//! sidecar's generated token, kept conversations. Each is written whole
//! into a directory no other user can change, readable only as its mode
//! says.
//!
//! Files are replaced atomically (temporary file in the same directory,
//! fsync, rename, fsync of the directory): a reader sees the old snapshot or
//! the new one, never a partial file. A writer killed before its rename must not leave the secrets under a
//! temporary name (an access-only snapshot's directory is mounted into
//! containers; a killed refreshable write would put a refresh token there):
//! on Linux the bytes go into an unnamed `O_TMPFILE` file, named
//! (`linkat`) only once complete and renamed at once; elsewhere, and in the
//! instant between the name and the rename, what a dead writer left is
//! removed by the next write to the directory (the temporary name carries
//! the writer's pid; only the user's own regular files whose pid runs
//! nothing are removed).
//!
//! A private file holds secrets, so where it is written matters as much as
//! its mode. Only finished bytes reach the disk (a snapshot's database is
//! built in memory), through a descriptor opened with `O_EXCL` and
//! `O_NOFOLLOW` relative to the directory's own descriptor: nothing ever
//! opens the file again by path, so no one can redirect the write with a
//! symlink between two opens. The directory itself must be one that no other
//! user can change ([`check_dir`]); the mode is set with `fchmod` on the
//! descriptor, never with `chmod` on a path.

use std::path::{Path, PathBuf};

use super::error::StoreError;

/// What [`check_dir`] thinks of a snapshot directory that it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirVerdict {
    /// Owned by the user (or root), and no one else can change it.
    Private,
    /// Accepted, but others can list or enter it: `mode` is wider than 0700.
    Wide { mode: u32 },
    /// The directory does not exist yet; it will be created with mode 0700.
    Missing,
}

/// Decides whether a directory with this owner and mode may hold a snapshot
/// written by the user `euid`. A directory that another user owns, or that
/// others may write without the sticky bit, lets them replace the snapshot
/// or plant a symlink in its place: refused. (Pure, for unit tests.)
pub fn judge_dir(owner: u32, mode: u32, euid: u32) -> Result<DirVerdict, String> {
    if owner != euid && owner != 0 {
        return Err(format!(
            "it belongs to another user (uid {owner}), who could replace the snapshot"
        ));
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        let who = if mode & 0o002 != 0 {
            "every user"
        } else {
            "its group"
        };
        return Err(format!(
            "{who} can write to it (mode {:04o}), and could replace the snapshot",
            mode & 0o7777
        ));
    }
    if mode & 0o077 != 0 {
        return Ok(DirVerdict::Wide {
            mode: mode & 0o7777,
        });
    }
    Ok(DirVerdict::Private)
}

/// Checks `dir` before a snapshot is written there: refuses a symlink, a
/// non-directory, a directory another user owns, and one that others can
/// write (unless it has the sticky bit).
pub fn check_dir(dir: &Path) -> Result<DirVerdict, StoreError> {
    platform::check_dir(dir)
}

/// Creates `dir` (mode 0700) when it is missing and refuses one that
/// [`check_dir`] refuses: what a later [`write_private_file`] there will
/// demand, checked before work that would be lost if the write failed.
pub fn prepare_private_dir(dir: &Path) -> Result<(), StoreError> {
    platform::prepare_dir(dir)
}

/// A new temporary directory of mode 0700 for a snapshot that lives as long
/// as the returned handle (`qbox run`, the agent's private copy). The
/// default would be 0777 less the umask: readable by everyone.
pub fn private_temp_dir(prefix: &str) -> Result<tempfile::TempDir, StoreError> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    builder
        .tempdir()
        .map_err(|e| StoreError::io("creating a private directory in", std::env::temp_dir(), e))
}

/// Writes `bytes` as `dir/name`, mode 0600, under the same rules as a
/// snapshot (atomic replacement through descriptors; `dir` created 0700
/// when missing, refused when another user could change it). Returns the
/// file's path. For other private files qbox keeps on disk: the sidecar's
/// generated bearer token, kept conversations.
pub fn write_private_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
    platform::replace_file(dir, name, bytes, 0o600)?;
    Ok(dir.join(name))
}

/// Replaces `dir/name` with `bytes` at `mode`, atomically and through
/// descriptors (the module's rules); `dir` is created 0700 when missing and
/// refused when another user could change it.
pub(crate) fn replace_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<(), StoreError> {
    platform::replace_file(dir, name, bytes, mode)
}

fn refused(dir: &Path, reason: String) -> StoreError {
    StoreError::UnsafeDirectory {
        path: dir.to_owned(),
        reason,
    }
}

#[cfg(unix)]
mod platform {
    //! The descriptor-relative implementation (Linux, macOS).

    use std::io::Write;
    use std::os::fd::{AsFd, OwnedFd};
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, Ordering};

    use rustix::fs::{AtFlags, Mode, OFlags};
    use rustix::io::Errno;

    use super::{DirVerdict, judge_dir, refused};
    use crate::store::error::StoreError;

    const DIR_FLAGS: OFlags = OFlags::DIRECTORY
        .union(OFlags::NOFOLLOW)
        .union(OFlags::RDONLY)
        .union(OFlags::CLOEXEC);

    fn io(action: &'static str, path: &Path, errno: Errno) -> StoreError {
        StoreError::io(action, path, errno.into())
    }

    /// Opens `dir` without following a symlink in its last component.
    fn open_dir(dir: &Path) -> Result<Option<OwnedFd>, StoreError> {
        match rustix::fs::open(dir, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            Err(errno @ (Errno::LOOP | Errno::NOTDIR)) => {
                let is_link = std::fs::symlink_metadata(dir)
                    .map(|m| m.file_type().is_symlink())
                    .unwrap_or(false);
                if is_link {
                    Err(refused(
                        dir,
                        "it is a symbolic link, which someone could point elsewhere".into(),
                    ))
                } else if errno == Errno::NOTDIR {
                    Err(refused(dir, "it is not a directory".into()))
                } else {
                    Err(io("opening", dir, errno))
                }
            }
            Err(errno) => Err(io("opening", dir, errno)),
        }
    }

    fn judge(dir: &Path, fd: &OwnedFd) -> Result<DirVerdict, StoreError> {
        let stat = rustix::fs::fstat(fd).map_err(|e| io("inspecting", dir, e))?;
        let euid = rustix::process::geteuid().as_raw();
        judge_dir(stat.st_uid, stat.st_mode as u32, euid).map_err(|reason| refused(dir, reason))
    }

    pub(super) fn check_dir(dir: &Path) -> Result<DirVerdict, StoreError> {
        match open_dir(dir)? {
            Some(fd) => judge(dir, &fd),
            None => Ok(DirVerdict::Missing),
        }
    }

    pub(super) fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
        open_checked_dir(dir).map(drop)
    }

    /// Opens (creating with mode 0700 if missing) and checks `dir`.
    fn open_checked_dir(dir: &Path) -> Result<OwnedFd, StoreError> {
        let fd = match open_dir(dir)? {
            Some(fd) => fd,
            None => {
                let mut builder = std::fs::DirBuilder::new();
                std::os::unix::fs::DirBuilderExt::mode(builder.recursive(true), 0o700);
                builder
                    .create(dir)
                    .map_err(|e| StoreError::io("creating", dir, e))?;
                open_dir(dir)?.ok_or_else(|| {
                    StoreError::io("opening", dir, std::io::ErrorKind::NotFound.into())
                })?
            }
        };
        judge(dir, &fd)?;
        Ok(fd)
    }

    /// A name for the temporary file no one else can predict the moment of.
    fn temporary_name(name: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!(
            ".{name}.{}.{}.{nanos:x}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The pid in a name [`temporary_name`] gives (`.NAME.PID.N.NANOS.tmp`).
    pub(super) fn temporary_owner(entry: &str) -> Option<u32> {
        let rest = entry.strip_prefix('.')?.strip_suffix(".tmp")?;
        let mut parts = rest.rsplitn(4, '.');
        let nanos = parts.next()?;
        let counter = parts.next()?;
        let pid = parts.next()?;
        let name = parts.next()?;
        let hex = !nanos.is_empty() && nanos.bytes().all(|b| b.is_ascii_hexdigit());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (hex && digits(counter) && !name.is_empty())
            .then(|| pid.parse().ok())
            .flatten()
            .filter(|_| digits(pid))
    }

    /// Removes the temporary files that writers killed before their rename
    /// left in `dir`: only names [`temporary_name`] gives, only regular
    /// files owned by this user (never through a symlink), and only when
    /// their pid runs no process at all (a live pid, even another user's
    /// or a recycled one, keeps the file: it may be a write in progress).
    /// A killed write may hold a refresh token beside an access-only
    /// snapshot, in a directory that is mounted into containers.
    fn sweep_stale_temporaries(dir_fd: &OwnedFd) {
        let Ok(entries) = rustix::fs::Dir::read_from(dir_fd) else {
            return;
        };
        let euid = rustix::process::geteuid().as_raw();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            let Some(pid) = temporary_owner(name) else {
                continue;
            };
            if pid == std::process::id() || !process_is_gone(pid) {
                continue;
            }
            let ours =
                rustix::fs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|stat| {
                    rustix::fs::FileType::from_raw_mode(stat.st_mode)
                        == rustix::fs::FileType::RegularFile
                        && stat.st_uid == euid
                });
            if ours {
                let _ = rustix::fs::unlinkat(dir_fd, name, AtFlags::empty());
            }
        }
    }

    /// Whether no process has `pid` (only `ESRCH` says so; `EPERM` is a
    /// process of another user).
    fn process_is_gone(pid: u32) -> bool {
        let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return false;
        };
        rustix::process::test_kill_process(pid) == Err(Errno::SRCH)
    }

    /// An unnamed file in `dir_fd` (`O_TMPFILE`), mode 0600: a process
    /// killed while it writes leaves nothing behind. `None` where the
    /// kernel or filesystem has no unnamed files.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn unnamed_file(dir_fd: &OwnedFd) -> Option<std::fs::File> {
        rustix::fs::openat(
            dir_fd.as_fd(),
            ".",
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .ok()
        .map(std::fs::File::from)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn unnamed_file(_dir_fd: &OwnedFd) -> Option<std::fs::File> {
        None
    }

    /// Gives the unnamed `file` the name `temp_name` in `dir_fd`:
    /// `AT_EMPTY_PATH` where the process may use it, else through
    /// `/proc/self/fd` (which needs no privilege).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn link_unnamed(
        file: &std::fs::File,
        dir_fd: &OwnedFd,
        temp_name: &str,
    ) -> Result<(), Errno> {
        match rustix::fs::linkat(file, "", dir_fd, temp_name, AtFlags::EMPTY_PATH) {
            Err(Errno::NOENT | Errno::PERM | Errno::INVAL) => {
                use std::os::fd::AsRawFd;
                let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
                rustix::fs::linkat(
                    rustix::fs::CWD,
                    proc_path.as_str(),
                    dir_fd,
                    temp_name,
                    AtFlags::SYMLINK_FOLLOW,
                )
            }
            other => other,
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn link_unnamed(
        _file: &std::fs::File,
        _dir_fd: &OwnedFd,
        _temp_name: &str,
    ) -> Result<(), Errno> {
        Err(Errno::NOSYS)
    }

    /// A new file in `dir_fd` under a fresh temporary name, created
    /// `O_EXCL|O_NOFOLLOW` (a name someone planted, file or symlink, is
    /// never opened), mode 0600 from the first instant.
    fn named_temporary(
        dir: &Path,
        dir_fd: &OwnedFd,
        name: &str,
    ) -> Result<(String, std::fs::File), StoreError> {
        loop {
            let temp_name = temporary_name(name);
            match rustix::fs::openat(
                dir_fd.as_fd(),
                temp_name.as_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => return Ok((temp_name, std::fs::File::from(fd))),
                Err(Errno::EXIST) => {}
                Err(errno) => return Err(io("creating a temporary file in", dir, errno)),
            }
        }
    }

    /// Writes `bytes` into the new `file`, sets its mode and syncs it.
    fn fill(
        file: &std::fs::File,
        target: &Path,
        bytes: &[u8],
        mode: u32,
    ) -> Result<(), StoreError> {
        let mut writer = file;
        writer
            .write_all(bytes)
            .map_err(|e| StoreError::io("writing", target, e))?;
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode as _))
            .map_err(|e| io("setting the mode of", target, e))?;
        file.sync_all()
            .map_err(|e| StoreError::io("syncing", target, e))
    }

    /// Gives the complete unnamed `file` a fresh temporary name; `None`
    /// when it cannot be linked (the caller writes a named file instead).
    fn name_unnamed(file: &std::fs::File, dir_fd: &OwnedFd, name: &str) -> Option<String> {
        loop {
            let temp_name = temporary_name(name);
            match link_unnamed(file, dir_fd, &temp_name) {
                Ok(()) => return Some(temp_name),
                Err(Errno::EXIST) => {}
                Err(_) => return None,
            }
        }
    }

    pub(super) fn replace_file(
        dir: &Path,
        name: &str,
        bytes: &[u8],
        mode: u32,
    ) -> Result<(), StoreError> {
        let dir_fd = open_checked_dir(dir)?;
        sweep_stale_temporaries(&dir_fd);
        let target = dir.join(name);
        // Where the filesystem allows it, the bytes go into an unnamed file
        // that gets a name only once it is complete and synced, so a kill
        // during the write leaves nothing; a kill between that name and the
        // rename leaves a temporary file that the next write here removes.
        let mut temp = None;
        if let Some(file) = unnamed_file(&dir_fd) {
            fill(&file, &target, bytes, mode)?;
            temp = name_unnamed(&file, &dir_fd, name);
        }
        let temp_name = match temp {
            Some(temp_name) => temp_name,
            None => {
                let (temp_name, file) = named_temporary(dir, &dir_fd, name)?;
                if let Err(err) = fill(&file, &target, bytes, mode) {
                    let _ = rustix::fs::unlinkat(&dir_fd, temp_name.as_str(), AtFlags::empty());
                    return Err(err);
                }
                temp_name
            }
        };
        // renameat replaces a directory entry; it never follows a symlink
        // that stands at the target name.
        if let Err(errno) = rustix::fs::renameat(&dir_fd, temp_name.as_str(), &dir_fd, name) {
            let _ = rustix::fs::unlinkat(&dir_fd, temp_name.as_str(), AtFlags::empty());
            return Err(io("replacing", &target, errno));
        }
        // Makes the rename durable. Best effort: some filesystems refuse to
        // sync a directory, and the rename itself is already atomic.
        let _ = rustix::fs::fsync(&dir_fd);
        Ok(())
    }
}

#[cfg(not(unix))]
mod platform {
    //! Windows: the user's profile directories are private by default; the
    //! file is still written whole and renamed into place.

    use std::io::Write;
    use std::path::Path;

    use super::DirVerdict;
    use crate::store::error::StoreError;

    pub(super) fn check_dir(dir: &Path) -> Result<DirVerdict, StoreError> {
        Ok(if dir.is_dir() {
            DirVerdict::Private
        } else {
            DirVerdict::Missing
        })
    }

    pub(super) fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io("creating", dir, e))
    }

    pub(super) fn replace_file(
        dir: &Path,
        name: &str,
        bytes: &[u8],
        _mode: u32,
    ) -> Result<(), StoreError> {
        prepare_dir(dir)?;
        let target = dir.join(name);
        let mut temp = tempfile::Builder::new()
            .prefix(".data.sqlite3.")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| StoreError::io("creating a temporary file in", dir, e))?;
        temp.write_all(bytes)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| StoreError::io("writing", &target, e))?;
        temp.persist(&target)
            .map_err(|e| StoreError::io("replacing", &target, e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn only_names_a_writer_gives_its_temporaries_carry_an_owner() {
        use platform::temporary_owner;
        assert_eq!(temporary_owner(".data.sqlite3.4242.0.1a2b.tmp"), Some(4242));
        assert_eq!(
            temporary_owner(".sidecar-127.0.0.1-80.token.7.3.ff.tmp"),
            Some(7)
        );
        for other in [
            "data.sqlite3",
            ".data.sqlite3.4242.0.1a2b",
            "data.sqlite3.4242.0.1a2b.tmp",
            "..4242.0.1a2b.tmp",
            ".data.sqlite3.42x.0.1a2b.tmp",
            ".data.sqlite3.4242.0.zz.tmp",
            ".data.sqlite3.4242..1a2b.tmp",
            ".4242.0.1a2b.tmp",
        ] {
            assert_eq!(temporary_owner(other), None, "{other}");
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn an_unnamed_file_appears_only_once_it_is_linked() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let dir_fd: std::os::fd::OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let Some(mut file) = platform::unnamed_file(&dir_fd) else {
            // A filesystem without O_TMPFILE: the sweep covers it.
            return;
        };
        file.write_all(b"secret").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        drop(dir_fd);
        let dir_fd: std::os::fd::OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        platform::link_unnamed(&file, &dir_fd, "named").unwrap();
        assert_eq!(std::fs::read(dir.path().join("named")).unwrap(), b"secret");
    }

    #[test]
    fn directories_others_can_change_are_refused() {
        let me = 1000;
        assert_eq!(judge_dir(me, 0o40700, me), Ok(DirVerdict::Private));
        assert_eq!(judge_dir(0, 0o40700, me), Ok(DirVerdict::Private));
        assert_eq!(
            judge_dir(me, 0o40755, me),
            Ok(DirVerdict::Wide { mode: 0o755 })
        );
        // /tmp: world-writable, but the sticky bit stops others replacing
        // what the user puts there.
        assert_eq!(
            judge_dir(0, 0o41777, me),
            Ok(DirVerdict::Wide { mode: 0o1777 })
        );
        assert!(
            judge_dir(1001, 0o40700, me)
                .unwrap_err()
                .contains("uid 1001")
        );
        assert!(
            judge_dir(me, 0o40777, me)
                .unwrap_err()
                .contains("every user")
        );
        assert!(
            judge_dir(me, 0o40770, me)
                .unwrap_err()
                .contains("its group")
        );
        // root writing into a user's directory: that user could swap it.
        assert!(judge_dir(1000, 0o40700, 0).is_err());
    }
}
