//! The running `qbox` as the sidecar image's binary, with the loader and the
//! shared libraries it was linked against: an image in seconds, without a
//! second build of the dependency tree (what `qbox demo` does on a first run).
//!
//! `qbox` is a multi-call binary: started under the name `qbox-sidecar` it
//! is the sidecar (see `cli::run`), so the same file serves both. A `FROM
//! scratch` image has no C library, so a dynamically linked qbox brings its
//! own: the program interpreter at the path the executable names, and each
//! library at the path the host's loader resolves it to (`ld.so --list`, what
//! `ldd` does), where the loader inside the image looks first. Only glibc
//! 2.34 and later: from that version the `files` and `dns` name services are
//! part of libc itself, so names resolve inside the image without modules
//! loaded at run time. A statically linked qbox needs nothing beside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::static_binary::{self, GLIBC_WITH_BUILTIN_NSS, StaticBinary};

/// A file the image holds beside the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Absolute path inside the image.
    pub path: String,
    pub mode: u32,
    pub bytes: Vec<u8>,
}

/// The binary and what it needs to start in an empty image.
#[derive(Debug)]
pub struct Bundle {
    pub binary: StaticBinary,
    /// The loader and shared libraries; empty for a static binary.
    pub libraries: Vec<ImageFile>,
}

/// Why the running qbox cannot be packed (the caller then builds a static
/// sidecar instead; none of these is the user's mistake).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the running qbox ({path})")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the running qbox is not a Linux ELF executable")]
    NotElf,
    #[error("the running qbox is built for {binary}, but the docker engine runs {engine}")]
    WrongArch { binary: String, engine: String },
    #[error("the running qbox uses the loader {0}, which is not glibc's")]
    NotGlibc(String),
    #[error("this glibc ({0}.{1}) is older than 2.34 and could not resolve names inside the image")]
    OldGlibc(u32, u32),
    #[error("cannot tell this machine's glibc version")]
    UnknownGlibc,
    #[error("the loader {loader} could not list qbox's libraries: {detail}")]
    List { loader: String, detail: String },
}

/// The running qbox, for an engine whose CPU is `engine_arch` (Docker's
/// spelling; `None` skips that check), with everything it needs to start.
pub fn current_exe(engine_arch: Option<&str>) -> Result<Bundle, BundleError> {
    let path = std::env::current_exe().map_err(|source| BundleError::Read {
        path: PathBuf::from("qbox"),
        source,
    })?;
    let bytes = std::fs::read(&path).map_err(|source| BundleError::Read {
        path: path.clone(),
        source,
    })?;
    let info = static_binary::inspect_elf(&bytes).ok_or(BundleError::NotElf)?;
    if let Some(engine) = engine_arch
        && engine != info.arch
    {
        return Err(BundleError::WrongArch {
            binary: info.arch,
            engine: engine.to_owned(),
        });
    }
    let binary = StaticBinary { path, bytes };
    let Some(loader) = info.interpreter else {
        return Ok(Bundle {
            binary,
            libraries: Vec::new(),
        });
    };
    check_glibc(&loader, static_binary::glibc_version())?;
    let libraries = linked_libraries(&loader, &binary.path)?
        .into_iter()
        .map(|(path, host)| read_library(&loader, path, &host))
        .collect::<Result<_, _>>()?;
    Ok(Bundle { binary, libraries })
}

/// The loader must be glibc's, recent enough to resolve names by itself.
fn check_glibc(loader: &str, version: Option<(u32, u32)>) -> Result<(), BundleError> {
    let name = Path::new(loader).file_name().and_then(|n| n.to_str());
    if !name.is_some_and(|n| n.starts_with("ld-linux")) {
        return Err(BundleError::NotGlibc(loader.to_owned()));
    }
    match version {
        Some(version) if version >= GLIBC_WITH_BUILTIN_NSS => Ok(()),
        Some((major, minor)) => Err(BundleError::OldGlibc(major, minor)),
        None => Err(BundleError::UnknownGlibc),
    }
}

/// Asks `loader` which files `exe` loads: pairs of the path inside the
/// image and the file on this machine (the same path; the loader itself is
/// read through its symbolic links but kept at the path the executable names).
fn linked_libraries(loader: &str, exe: &Path) -> Result<Vec<(String, PathBuf)>, BundleError> {
    let failed = |detail: String| BundleError::List {
        loader: loader.to_owned(),
        detail,
    };
    let output = Command::new(loader)
        .arg("--list")
        .arg(exe)
        .stdin(Stdio::null())
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!("{} ({})", stderr.trim(), output.status)));
    }
    parse_list(&String::from_utf8_lossy(&output.stdout)).map_err(failed)
}

/// Reads the lines of `ld.so --list`: `name => /path (0x…)` for a library,
/// `/path (0x…)` for the loader, `name (0x…)` for the kernel's vDSO (no
/// file); a library `not found` is an error.
fn parse_list(text: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let mut files = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once(" => ") {
            Some((name, rest)) if rest.starts_with("not found") => {
                return Err(format!("{name} not found"));
            }
            Some((_, rest)) => rest,
            None => line,
        };
        let path = target.split(" (0x").next().unwrap_or(target).trim();
        if path.starts_with('/') {
            files.push((path.to_owned(), PathBuf::from(path)));
        }
    }
    if files.is_empty() {
        return Err("it listed no files".to_owned());
    }
    Ok(files)
}

fn read_library(loader: &str, path: String, host: &Path) -> Result<ImageFile, BundleError> {
    let bytes = std::fs::read(host).map_err(|source| BundleError::Read {
        path: host.to_owned(),
        source,
    })?;
    // The loader is executed by the kernel; libraries are only mapped.
    let mode = if path == loader { 0o755 } else { 0o644 };
    Ok(ImageFile { path, mode, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loaders_list_gives_each_file_once_and_skips_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd1a3f2000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f6018ecb000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f6018c09000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f6018efe000)\n";
        let paths: Vec<String> = parse_list(text).unwrap().into_iter().map(|f| f.0).collect();
        assert_eq!(
            paths,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        let missing = "\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        assert_eq!(parse_list(missing).unwrap_err(), "libfoo.so.1 not found");
        assert!(parse_list("\tstatically linked\n").is_err());
    }

    #[test]
    fn only_glibc_from_2_34_is_packed() {
        let glibc = "/lib64/ld-linux-x86-64.so.2";
        assert!(check_glibc(glibc, Some((2, 36))).is_ok());
        assert!(check_glibc(glibc, Some((2, 34))).is_ok());
        assert!(matches!(
            check_glibc(glibc, Some((2, 31))),
            Err(BundleError::OldGlibc(2, 31))
        ));
        assert!(matches!(
            check_glibc(glibc, None),
            Err(BundleError::UnknownGlibc)
        ));
        assert!(matches!(
            check_glibc("/lib/ld-musl-x86_64.so.1", Some((2, 36))),
            Err(BundleError::NotGlibc(_))
        ));
    }

    #[test]
    fn this_test_binary_is_packed_with_its_loader_and_c_library() {
        let bundle = match current_exe(None) {
            Ok(bundle) => bundle,
            // A machine whose glibc is too old, or not glibc, packs nothing.
            Err(BundleError::OldGlibc(..) | BundleError::NotGlibc(_)) => return,
            Err(other) => panic!("{other}"),
        };
        let info = static_binary::inspect_elf(&bundle.binary.bytes).unwrap();
        let Some(loader) = info.interpreter else {
            assert!(bundle.libraries.is_empty());
            return;
        };
        let loader_file = bundle.libraries.iter().find(|f| f.path == loader).unwrap();
        assert_eq!(loader_file.mode, 0o755);
        assert!(loader_file.bytes.starts_with(b"\x7fELF"));
        let libc = bundle
            .libraries
            .iter()
            .find(|f| f.path.ends_with("/libc.so.6"))
            .unwrap();
        assert_eq!(libc.mode, 0o644);
        assert!(libc.bytes.starts_with(b"\x7fELF"));
    }
}
