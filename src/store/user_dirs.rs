//! Where qbox keeps its private directories: the session's runtime
//! directory (`XDG_RUNTIME_DIR`) when it is usable, else qbox's directory in
//! the user's state directory. One decision, asked by the refresh lock, the
//! sidecar's generated token, `qbox run`'s runtime directory and `qbox
//! doctor`; what is created there is checked by `private_file::check_dir`.

use std::path::{Path, PathBuf};

/// qbox's own directory in the user's state directory (`$XDG_STATE_HOME/qbox`,
/// else `~/.local/state/qbox`; the cache directory where the platform has
/// none): the parent of qbox's private directories when the session has no
/// runtime directory (`XDG_RUNTIME_DIR`). Never a name under the shared
/// temporary directory, where another local user could create it first and
/// so disable the refresh lock or stop `qbox run`. `None` without a home.
pub fn user_state_dir() -> Option<PathBuf> {
    dirs::state_dir()
        .or_else(dirs::cache_dir)
        .map(|dir| dir.join("qbox"))
}

/// The session's runtime directory (`XDG_RUNTIME_DIR`), if it is the
/// user's own and no one else can write it ([`usable_runtime_dir`]).
/// Containers and CI often set it to `/tmp`, where another local user could
/// create qbox's names first; such a directory is passed over (the caller
/// then uses [`user_state_dir`]).
pub fn private_runtime_dir() -> Option<PathBuf> {
    dirs::runtime_dir().filter(|dir| usable_runtime_dir(dir))
}

/// Whether `dir` may serve as the runtime directory: a directory of this
/// user that no one else can write, or none yet. What qbox creates in it
/// is made 0700 and checked, so others reading the directory itself see
/// only names; others writing it could create those names first. A
/// directory of anyone else, or one others may write, is not used.
pub fn usable_runtime_dir(dir: &Path) -> bool {
    let metadata = match std::fs::metadata(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return true,
        Err(_) => return false,
        Ok(metadata) => metadata,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        metadata.is_dir()
            && metadata.uid() == rustix::process::geteuid().as_raw()
            && metadata.mode() & 0o022 == 0
    }
    #[cfg(not(unix))]
    {
        metadata.is_dir()
    }
}
