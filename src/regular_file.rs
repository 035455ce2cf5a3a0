//! Opening a file the user named (a store, a token file) without hanging on
//! it. `open(2)` of a FIFO waits for a writer (or a reader), so a FIFO given
//! as `--db` or `--token-file` used to stop a command before it printed
//! anything. Opened with `O_NONBLOCK` and checked on the descriptor (so no
//! file swapped in between is judged), anything but a regular file is
//! refused at once. `O_NONBLOCK` changes nothing for a regular file's reads
//! and writes.

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
}
