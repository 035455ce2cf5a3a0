//! Opening a file the user named (a store, a token file) without hanging on
//! it. `open(2)` of a FIFO waits for a writer (or a reader), so a FIFO given
//! as `--db` or `--token-file` used to stop a command before it printed
//! anything. Opened with `O_NONBLOCK` and checked on the descriptor (so no
//! file swapped in between is judged), anything but a regular file is
//! refused at once. `O_NONBLOCK` changes nothing for a regular file's reads
//! and writes.
//!
//! [`Identity`] tells a file that is still what it was when it was read
//! from one that may have changed, for readers that would rather not read
//! a file again on every use.

use std::fs::File;
use std::io;
use std::path::Path;

/// Opens `path` for reading (or writing, with `write`) if it is a regular
/// file. Anything else (a FIFO, a device, a socket, a directory) is an
/// [`io::ErrorKind::InvalidInput`] error; see [`is_not_regular`].
pub fn open(path: &Path, write: bool) -> io::Result<File> {
    let file = open_nonblocking(path, write)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, NOT_REGULAR));
    }
    Ok(file)
}

/// [`open`] for reading, refusing a symbolic link as the last component
/// too (`O_NOFOLLOW`: a secret's file is read only where the user put it).
/// A link is an error whose raw OS error is `ELOOP` ([`is_symlink`]).
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    let file = open_nonblocking_flags(path, false, true)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, NOT_REGULAR));
    }
    Ok(file)
}

/// Whether `err` is [`open_no_follow`]'s refusal of a symbolic link.
pub fn is_symlink(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
    }
    #[cfg(not(unix))]
    {
        let _ = err;
        false
    }
}

/// Whether `err` is [`open`]'s refusal of a file that is not a regular one.
pub fn is_not_regular(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::InvalidInput && err.to_string() == NOT_REGULAR
}

const NOT_REGULAR: &str = "not a regular file";

fn open_nonblocking(path: &Path, write: bool) -> io::Result<File> {
    open_nonblocking_flags(path, write, false)
}

#[cfg(unix)]
fn open_nonblocking_flags(path: &Path, write: bool, no_follow: bool) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let mut access = if write {
        OFlags::WRONLY
    } else {
        OFlags::RDONLY
    };
    if no_follow {
        access |= OFlags::NOFOLLOW;
    }
    // A FIFO without a reader makes a write-only non-blocking open fail
    // with ENXIO: it is not a regular file either.
    let fd = rustix::fs::open(
        path,
        access | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|err| match err {
        rustix::io::Errno::NXIO => io::Error::new(io::ErrorKind::InvalidInput, NOT_REGULAR),
        other => io::Error::from(other),
    })?;
    Ok(File::from(fd))
}

#[cfg(not(unix))]
fn open_nonblocking_flags(path: &Path, write: bool, no_follow: bool) -> io::Result<File> {
    if no_follow && std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a symbolic link, which qbox does not follow",
        ));
    }
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path)
}

/// What `stat` says about a file that any change to it would change:
/// which file it is (device and inode) and its size, modification and
/// change times (nanoseconds). A write in place changes the change time,
/// so an equal identity means an unchanged file, on two conditions the
/// holder keeps: the file it describes stays open (else its inode number
/// may be given to the next file), and the change time is trusted only
/// once it lies further back than a timestamp's granularity
/// ([`Identity::settled`]): two writes within one tick leave the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
}

/// How far a file's timestamps may lag behind the clock: the kernel stamps
/// files from a clock that advances once per tick (up to 10 ms), and some
/// filesystems keep whole seconds (ext4 with small inodes) or two (FAT);
/// rounded up.
pub const TIMESTAMP_GRANULARITY: std::time::Duration = std::time::Duration::from_secs(3);

impl Identity {
    /// The identity in `metadata`; `None` where the platform gives no
    /// inode numbers (nothing is then taken for unchanged).
    pub fn of(metadata: &std::fs::Metadata) -> Option<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
            Some(Self {
                device: metadata.dev(),
                inode: metadata.ino(),
                size: metadata.size(),
                modified_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
                changed_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = metadata;
            None
        }
    }

    /// The identity of what `path` names now (links followed).
    pub fn of_path(path: &Path) -> Option<Self> {
        Self::of(&std::fs::metadata(path).ok()?)
    }

    /// Whether the file's last change lies more than
    /// [`TIMESTAMP_GRANULARITY`] before `read_started` (when its reader
    /// began to read it): only then can no later write in place leave the
    /// same change time. A clock that went back makes nothing settled.
    pub fn settled(&self, read_started: std::time::SystemTime) -> bool {
        let Ok(since_epoch) = read_started.duration_since(std::time::UNIX_EPOCH) else {
            return false;
        };
        let started_ns = i128::try_from(since_epoch.as_nanos()).unwrap_or(i128::MAX);
        let margin_ns = i128::try_from(TIMESTAMP_GRANULARITY.as_nanos()).unwrap_or(i128::MAX);
        self.changed_ns < started_ns - margin_ns
    }
}

/// Makes a FIFO at `path` (0600), for tests that feed one where a file
/// is expected.
#[cfg(all(test, unix))]
pub(crate) fn make_fifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("a FIFO can be made in a temporary directory");
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_for_reading_and_writing() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        make_fifo(&fifo);
        for write in [false, true] {
            let err = open(&fifo, write).unwrap_err();
            assert!(is_not_regular(&err), "{err}");
        }
        assert!(is_not_regular(&open(dir.path(), false).unwrap_err()));
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(open(&file, false).is_ok());
        assert!(open(&file, true).is_ok());
    }

    #[test]
    fn an_identity_changes_with_a_write_in_place_and_with_a_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "one").unwrap();
        let first = Identity::of_path(&file).unwrap();
        assert_eq!(Identity::of_path(&file), Some(first));
        // Another size, written in place: the same file, another identity.
        std::fs::write(&file, "three").unwrap();
        let second = Identity::of_path(&file).unwrap();
        assert_ne!(second, first);
        assert_eq!((second.device, second.inode), (first.device, first.inode));
        // Replaced by a rename while the old one is held open: another file.
        let _held = File::open(&file).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, "three").unwrap();
        std::fs::rename(&other, &file).unwrap();
        let replaced = Identity::of_path(&file).unwrap();
        assert_ne!(replaced.inode, second.inode);
        assert_eq!(Identity::of_path(&dir.path().join("missing")), None);
    }

    #[test]
    fn a_change_time_is_settled_only_once_it_lies_a_granularity_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let identity = Identity::of_path(&file).unwrap();
        let now = std::time::SystemTime::now();
        assert!(!identity.settled(now));
        assert!(identity.settled(now + TIMESTAMP_GRANULARITY + std::time::Duration::from_secs(1)));
        assert!(!identity.settled(std::time::UNIX_EPOCH));
    }
}
