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
//!
//! `qbox run --mcp` takes the same files without building anything: they
//! are bind-mounted read-only under `/run/qbox/`, a directory of qbox's own,
//! and the sidecar is started through the mounted loader (`--library-path`,
//! `--inhibit-cache`, `--argv0`), so it runs in any Linux image of the same
//! CPU whatever C library the image has (glibc of any age, musl, none),
//! while the image's own loader and libraries, which its CLI needs, stay
//! as they are. Nothing is set in the environment: the CLI the sidecar
//! starts loads the image's libraries, never these. The agent image
//! (`qbox image build --agent`) holds the same files in its layer under
//! `/opt/qbox/`, started the same way, for the same reason.

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
    #[error("the loader {loader} that this qbox names is not on this machine")]
    LoaderMissing { loader: String },
    #[error("the loader {loader} could not list qbox's libraries: {detail}")]
    List { loader: String, detail: String },
}

/// The directory of qbox's own where `qbox run --mcp` mounts its files.
const MOUNT_PREFIX: &str = "/run/qbox";

/// The sidecar's executable under `prefix`: the multi-call name.
fn sidecar_under(prefix: &str) -> String {
    format!("{prefix}/bin/{}", static_binary::SIDECAR)
}

/// Where `qbox run --mcp` mounts the sidecar's executable.
pub const MOUNTED_SIDECAR: &str = "/run/qbox/bin/qbox-sidecar";

/// A host file and the name it is mounted under in `/run/qbox/lib` (or the
/// agent image's `/opt/qbox/lib`): the name the executable (or a library)
/// asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedFile {
    pub name: String,
    /// The file itself (symbolic links resolved: the engine mounts files).
    pub host: PathBuf,
}

/// The running qbox as files to mount into a container: no bytes are read
/// beyond the ELF headers, and nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mountable {
    /// The executable (symbolic links resolved).
    pub exe: PathBuf,
    /// The CPU it is built for, in Docker's spelling.
    pub arch: String,
    /// The loader and the libraries; `None` for a static qbox.
    pub linked: Option<(LinkedFile, Vec<LinkedFile>)>,
}

impl Mountable {
    /// Host file and target inside the container, each mounted read-only.
    pub fn mounts(&self) -> Vec<(PathBuf, String)> {
        self.files_under(MOUNT_PREFIX)
            .into_iter()
            .map(|(host, target, _)| (host, target))
            .collect()
    }

    /// The container's entrypoint: the mounted loader running the mounted
    /// executable under the sidecar's name (the multi-call binary is told by
    /// its `argv[0]`), with only the mounted libraries and never the image's
    /// cache; a static qbox is started directly.
    pub fn entrypoint(&self) -> Vec<String> {
        self.entrypoint_under(MOUNT_PREFIX)
    }

    /// The files under `prefix`, a directory of qbox's own in the container
    /// (mounted by `qbox run --mcp`, or a layer of the agent image): host
    /// file, target and the mode it needs (the executable and the loader are
    /// executed, the libraries only mapped). The executable is
    /// `{prefix}/bin/qbox-sidecar`, the others `{prefix}/lib/` under the
    /// name asked for, never at the image's own library paths.
    pub fn files_under(&self, prefix: &str) -> Vec<(PathBuf, String, u32)> {
        let mut files = vec![(self.exe.clone(), sidecar_under(prefix), 0o755)];
        if let Some((loader, libraries)) = &self.linked {
            let lib = |file: &LinkedFile, mode| {
                (
                    file.host.clone(),
                    format!("{prefix}/lib/{}", file.name),
                    mode,
                )
            };
            files.push(lib(loader, 0o755));
            files.extend(libraries.iter().map(|file| lib(file, 0o644)));
        }
        files
    }

    /// The entrypoint for the files of [`Mountable::files_under`]`(prefix)`.
    pub fn entrypoint_under(&self, prefix: &str) -> Vec<String> {
        let sidecar = sidecar_under(prefix);
        let Some((loader, _)) = &self.linked else {
            return vec![sidecar];
        };
        let lib = format!("{prefix}/lib");
        vec![
            format!("{lib}/{}", loader.name),
            "--library-path".to_owned(),
            lib,
            "--inhibit-cache".to_owned(),
            "--argv0".to_owned(),
            sidecar.clone(),
            sidecar,
        ]
    }

    /// How many files beside the executable are mounted.
    pub fn library_count(&self) -> usize {
        self.linked.as_ref().map_or(0, |(_, libs)| libs.len() + 1)
    }
}

/// The running qbox, for an engine whose CPU is `engine_arch` (Docker's
/// spelling; `None` skips that check), as files to mount: the same checks as
/// [`current_exe`], and each file must be on this machine.
pub fn mountable_current_exe(engine_arch: Option<&str>) -> Result<Mountable, BundleError> {
    let path = std::env::current_exe().map_err(|source| BundleError::Read {
        path: PathBuf::from("qbox"),
        source,
    })?;
    mountable(&path, engine_arch)
}

/// The executable at `path` as files to mount (see [`mountable_current_exe`]).
fn mountable(path: &Path, engine_arch: Option<&str>) -> Result<Mountable, BundleError> {
    let exe = resolve(path)?;
    let info = static_binary::inspect_elf(&read_head(&exe)?).ok_or(BundleError::NotElf)?;
    if let Some(engine) = engine_arch
        && engine != info.arch
    {
        return Err(BundleError::WrongArch {
            binary: info.arch,
            engine: engine.to_owned(),
        });
    }
    let Some(loader) = info.interpreter else {
        return Ok(Mountable {
            exe,
            arch: info.arch,
            linked: None,
        });
    };
    check_glibc(&loader, glibc_version(&loader))?;
    let loader_host = resolve(Path::new(&loader)).map_err(|_| BundleError::LoaderMissing {
        loader: loader.clone(),
    })?;
    let mut libraries = Vec::new();
    for (name, host) in linked_names(&loader, &exe)? {
        // The loader is listed too, under its own path: mounted once, apart.
        if host == Path::new(&loader) {
            continue;
        }
        libraries.push(LinkedFile {
            name,
            host: resolve(&host)?,
        });
    }
    let loader_name = file_name(&loader).to_owned();
    Ok(Mountable {
        exe,
        arch: info.arch,
        linked: Some((
            LinkedFile {
                name: loader_name,
                host: loader_host,
            },
            libraries,
        )),
    })
}

/// The last part of a path (all of it when there is no slash).
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The file behind `path`, symbolic links resolved.
fn resolve(path: &Path) -> Result<PathBuf, BundleError> {
    std::fs::canonicalize(path).map_err(|source| BundleError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The start of an executable: enough for the ELF header and the program
/// headers, which come first, without reading the whole file.
fn read_head(path: &Path) -> Result<Vec<u8>, BundleError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(HEAD_BYTES);
    std::fs::File::open(path)
        .and_then(|file| file.take(HEAD_BYTES as u64).read_to_end(&mut head))
        .map_err(|source| BundleError::Read {
            path: path.to_owned(),
            source,
        })?;
    Ok(head)
}

const HEAD_BYTES: usize = 64 * 1024;

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
    check_glibc(&loader, glibc_version(&loader))?;
    let libraries = linked_libraries(&loader, &binary.path)?
        .into_iter()
        .map(|(path, host)| read_library(&loader, path, &host))
        .collect::<Result<_, _>>()?;
    Ok(Bundle { binary, libraries })
}

/// The version of the glibc whose `loader` this is, from the loader itself
/// (`ld.so --version`: "... release version 2.36."), which needs no
/// `getconf` on the PATH; else from `getconf`.
fn glibc_version(loader: &str) -> Option<(u32, u32)> {
    Command::new(loader)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|out| parse_loader_version(&String::from_utf8_lossy(&out.stdout)))
        .or_else(static_binary::glibc_version)
}

/// `2.36` out of the first line of `ld.so --version`.
fn parse_loader_version(text: &str) -> Option<(u32, u32)> {
    let first = text.lines().next()?;
    let (_, version) = first.split_once("version ")?;
    let mut parts = version.trim_end_matches('.').split('.');
    let major = parts.next()?.trim().parse().ok()?;
    let minor = parts.next()?.trim().parse().ok()?;
    Some((major, minor))
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
    Ok(linked_names(loader, exe)?
        .into_iter()
        .map(|(_, host)| (host.display().to_string(), host))
        .collect())
}

/// Asks `loader` which files `exe` loads: pairs of the name it is asked for
/// (the loader: its file name) and its path on this machine.
fn linked_names(loader: &str, exe: &Path) -> Result<Vec<(String, PathBuf)>, BundleError> {
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
/// file); a library `not found` is an error. Pairs of the name asked for
/// (the loader's file name) and the path.
fn parse_list(text: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let mut files = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, target) = match line.split_once(" => ") {
            Some((name, rest)) if rest.starts_with("not found") => {
                return Err(format!("{name} not found"));
            }
            Some((name, rest)) => (Some(name.trim()), rest),
            None => (None, line),
        };
        let path = target.split(" (0x").next().unwrap_or(target).trim();
        if path.starts_with('/') {
            let name = name.unwrap_or_else(|| file_name(path));
            files.push((name.to_owned(), PathBuf::from(path)));
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
        let listed = parse_list(text).unwrap();
        let paths: Vec<_> = listed.iter().map(|f| f.1.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        // The names asked for, under which `qbox run --mcp` mounts them.
        let names: Vec<_> = listed.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            ["libgcc_s.so.1", "libc.so.6", "ld-linux-x86-64.so.2"]
        );
        let missing = "\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        assert_eq!(parse_list(missing).unwrap_err(), "libfoo.so.1 not found");
        assert!(parse_list("\tstatically linked\n").is_err());
    }

    #[test]
    fn the_glibc_version_is_read_from_the_loader() {
        let debian = "ld.so (Debian GLIBC 2.36-9+deb12u14) stable release version 2.36.\nCopyright (C) 2022\n";
        assert_eq!(parse_loader_version(debian), Some((2, 36)));
        let plain = "ld.so (GNU libc) stable release version 2.39.\n";
        assert_eq!(parse_loader_version(plain), Some((2, 39)));
        assert_eq!(parse_loader_version("musl libc (x86_64)\n"), None);
        assert_eq!(parse_loader_version(""), None);
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

    #[test]
    fn the_mounted_qbox_starts_through_its_own_loader_under_the_sidecars_name() {
        let file = |name: &str, host: &str| LinkedFile {
            name: name.to_owned(),
            host: PathBuf::from(host),
        };
        let dynamic = Mountable {
            exe: PathBuf::from("/opt/q/qbox"),
            arch: "amd64".into(),
            linked: Some((
                file(
                    "ld-linux-x86-64.so.2",
                    "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                ),
                vec![file("libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6")],
            )),
        };
        assert_eq!(
            dynamic.entrypoint(),
            [
                "/run/qbox/lib/ld-linux-x86-64.so.2",
                "--library-path",
                "/run/qbox/lib",
                "--inhibit-cache",
                "--argv0",
                "/run/qbox/bin/qbox-sidecar",
                "/run/qbox/bin/qbox-sidecar"
            ]
        );
        let targets: Vec<_> = dynamic.mounts().into_iter().map(|m| m.1).collect();
        assert_eq!(
            targets,
            [
                "/run/qbox/bin/qbox-sidecar",
                "/run/qbox/lib/ld-linux-x86-64.so.2",
                "/run/qbox/lib/libc.so.6"
            ]
        );
        assert_eq!(dynamic.library_count(), 2);
        // The agent image's layer: the same files and start under its prefix.
        let files = dynamic.files_under("/opt/qbox");
        let in_layer: Vec<_> = files.iter().map(|f| (f.1.as_str(), f.2)).collect();
        assert_eq!(
            in_layer,
            [
                ("/opt/qbox/bin/qbox-sidecar", 0o755),
                ("/opt/qbox/lib/ld-linux-x86-64.so.2", 0o755),
                ("/opt/qbox/lib/libc.so.6", 0o644)
            ]
        );
        assert_eq!(
            files[2].0,
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        let start = dynamic.entrypoint_under("/opt/qbox");
        assert_eq!(start[0], "/opt/qbox/lib/ld-linux-x86-64.so.2");
        assert_eq!(start[2], "/opt/qbox/lib");
        assert_eq!(start[5..], ["/opt/qbox/bin/qbox-sidecar"; 2]);
        let fixed = Mountable {
            linked: None,
            ..dynamic
        };
        assert_eq!(fixed.entrypoint(), ["/run/qbox/bin/qbox-sidecar"]);
        assert_eq!(fixed.mounts().len(), 1);
        assert_eq!(
            fixed.entrypoint_under("/opt/qbox"),
            ["/opt/qbox/bin/qbox-sidecar"]
        );
    }

    #[test]
    fn a_loader_missing_on_this_machine_is_named() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let Some(loader) = static_binary::inspect_elf(&me).unwrap().interpreter else {
            return;
        };
        if check_glibc(&loader, glibc_version(&loader)).is_err() {
            return;
        }
        // The same executable naming a loader of the same length that is
        // not there (the last character changed).
        let mut missing = loader.clone().into_bytes();
        *missing.last_mut().unwrap() = if missing.ends_with(b"9") { b'8' } else { b'9' };
        let at = me
            .windows(loader.len())
            .position(|w| w == loader.as_bytes())
            .unwrap();
        let mut patched = me;
        patched[at..at + loader.len()].copy_from_slice(&missing);
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("qbox");
        std::fs::write(&exe, patched).unwrap();
        match mountable(&exe, None) {
            Err(BundleError::LoaderMissing { loader }) => {
                assert_eq!(loader.as_bytes(), missing);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn this_test_binary_is_mountable_with_files_that_exist() {
        let mountable = match mountable_current_exe(None) {
            Ok(mountable) => mountable,
            Err(BundleError::OldGlibc(..) | BundleError::NotGlibc(_)) => return,
            Err(other) => panic!("{other}"),
        };
        for (host, target) in mountable.mounts() {
            assert!(host.is_absolute() && host.is_file(), "{}", host.display());
            assert!(target.starts_with("/run/qbox/"), "{target}");
        }
        assert!(matches!(
            mountable_current_exe(Some("machine-0")),
            Err(BundleError::WrongArch { .. })
        ));
    }
}
