//! Finding, or building, the statically linked `qbox-sidecar` that goes into
//! the `FROM scratch` sidecar image.
//!
//! A scratch image has no C library and no loader, so the binary must carry
//! everything: it is checked (ELF, no program interpreter, the engine's CPU)
//! before it is sent anywhere. When none is given, qbox looks beside itself,
//! then builds one with cargo from the source tree it was built from: for
//! the musl target when that target is installed, else as a statically
//! linked glibc binary (with a resolver written in Rust, `static-dns`, when
//! the glibc is older than 2.34 and could not resolve names in a scratch
//! image). Both are linked at a fixed address, and SQLite without the
//! features qbox never uses: the image is the binary, so its size is theirs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::exit::Diagnose;

/// The binary the image runs.
pub const SIDECAR: &str = "qbox-sidecar";

/// The cargo profile for it (fat LTO, one codegen unit: a smaller binary).
pub const PROFILE: &str = "static";

/// Why no usable static binary is at hand.
#[derive(Debug, thiserror::Error)]
pub enum StaticBinaryError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a 64-bit little-endian ELF executable")]
    NotElf { path: PathBuf },
    #[error(
        "{path} is dynamically linked (it asks for the loader {interpreter}), so it cannot run in a `FROM scratch` image"
    )]
    Dynamic { path: PathBuf, interpreter: String },
    #[error("{path} is built for {binary}, but the docker engine runs {engine}")]
    WrongArch {
        path: PathBuf,
        binary: String,
        engine: String,
    },
    #[error(
        "no static qbox-sidecar was given, none is beside qbox, and qbox's source tree is not on this machine"
    )]
    NothingToBuildFrom,
    #[error("cannot run cargo")]
    CargoMissing(#[source] std::io::Error),
    #[error("cargo could not build the static qbox-sidecar ({target}): it exited with {status}")]
    CargoFailed { target: String, status: String },
    #[error("cargo finished without naming the qbox-sidecar executable")]
    NoArtifact,
}

impl Diagnose for StaticBinaryError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Read { .. } => "check the path given to --binary (or QBOX_SIDECAR_BINARY)".into(),
            Self::NotElf { .. } | Self::Dynamic { .. } => format!(
                "build it statically: rustup target add {0} && cargo build --profile static --target {0} --bin qbox-sidecar",
                musl_target()
            ),
            Self::WrongArch { .. } => {
                "build qbox-sidecar for the engine's CPU (cargo build --target ...)".into()
            }
            Self::NothingToBuildFrom => {
                "pass --binary PATH to a static qbox-sidecar (a musl build)".into()
            }
            Self::CargoMissing(_) => "install Rust (rustup), or pass --binary PATH".into(),
            Self::CargoFailed { .. } => format!(
                "cargo's messages are above; for musl: rustup target add {} and apt-get install musl-tools",
                musl_target()
            ),
            Self::NoArtifact => return None,
        })
    }
}

/// What the ELF header says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// The CPU in Docker's spelling (`amd64`, `arm64`), or `machine-N`.
    pub arch: String,
    /// The program interpreter (dynamic loader), if it asks for one.
    pub interpreter: Option<String>,
}

const PT_INTERP: u32 = 3;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<usize> {
    let value = u64::from_le_bytes(bytes.get(at..at.checked_add(8)?)?.try_into().ok()?);
    usize::try_from(value).ok()
}

/// Reads the ELF64 header and program headers of `bytes`; `None` when it is
/// not a 64-bit little-endian ELF file (the only kind qbox targets).
pub fn inspect_elf(bytes: &[u8]) -> Option<ElfInfo> {
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let arch = match u16_at(bytes, 0x12)? {
        62 => "amd64".to_owned(),
        183 => "arm64".to_owned(),
        other => format!("machine-{other}"),
    };
    let table = u64_at(bytes, 0x20)?;
    let entry_size = usize::from(u16_at(bytes, 0x36)?);
    let entries = usize::from(u16_at(bytes, 0x38)?);
    let mut interpreter = None;
    for index in 0..entries {
        let header = table.checked_add(index.checked_mul(entry_size)?)?;
        if u32_at(bytes, header)? == PT_INTERP {
            let offset = u64_at(bytes, header.checked_add(0x08)?)?;
            let size = u64_at(bytes, header.checked_add(0x20)?)?;
            let raw = bytes.get(offset..offset.checked_add(size)?)?;
            let text = String::from_utf8_lossy(raw);
            interpreter = Some(text.trim_end_matches('\0').to_owned());
        }
    }
    Some(ElfInfo { arch, interpreter })
}

/// A checked static binary, read into memory for the build context.
#[derive(Debug)]
pub struct StaticBinary {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Reads `path` and checks that it can run in a scratch image on an engine
/// whose CPU is `engine_arch` (Docker's spelling; `None` skips that check).
pub fn load(path: &Path, engine_arch: Option<&str>) -> Result<StaticBinary, StaticBinaryError> {
    let bytes = std::fs::read(path).map_err(|source| StaticBinaryError::Read {
        path: path.to_owned(),
        source,
    })?;
    let info = inspect_elf(&bytes).ok_or_else(|| StaticBinaryError::NotElf {
        path: path.to_owned(),
    })?;
    if let Some(interpreter) = info.interpreter {
        return Err(StaticBinaryError::Dynamic {
            path: path.to_owned(),
            interpreter,
        });
    }
    if let Some(engine) = engine_arch
        && engine != info.arch
    {
        return Err(StaticBinaryError::WrongArch {
            path: path.to_owned(),
            binary: info.arch,
            engine: engine.to_owned(),
        });
    }
    Ok(StaticBinary {
        path: path.to_owned(),
        bytes,
    })
}

/// `qbox-sidecar` beside the running executable, if it is static (a release
/// archive built for musl ships both binaries together).
pub fn beside_current_exe() -> Option<PathBuf> {
    let candidate = std::env::current_exe().ok()?.with_file_name(SIDECAR);
    let head = std::fs::read(&candidate).ok()?;
    inspect_elf(&head)
        .filter(|info| info.interpreter.is_none())
        .map(|_| candidate)
}

/// The musl target for this machine's CPU.
pub fn musl_target() -> String {
    format!("{}-unknown-linux-musl", std::env::consts::ARCH)
}

/// How cargo is asked to produce a static binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticBuild {
    pub target: String,
    /// `RUSTFLAGS` for the target (static glibc needs `crt-static`).
    pub rustflags: String,
    pub features: Option<String>,
}

/// Code generation for both static builds. A fixed load address: a
/// position-independent static binary carries a relocation record for every
/// pointer in its read-only data (a third of a megabyte here), which its
/// start-up code then applies; at a fixed address the linker resolves them.
/// No unwind tables: the profile aborts on panic, so nothing unwinds.
const CODEGEN: &str = "-C relocation-model=static -C force-unwind-tables=no";

/// SQLite features the bundled build compiles in by default that qbox never
/// uses (full-text search, R-trees, statistics tables, SOUNDEX): left out of
/// the static binary to make the image smaller. The stores it reads are plain
/// tables.
pub const SQLITE_FLAGS: &str = "-USQLITE_ENABLE_FTS3 -USQLITE_ENABLE_FTS3_PARENTHESIS \
-USQLITE_ENABLE_FTS5 -USQLITE_ENABLE_RTREE -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_ENABLE_STAT4 \
-USQLITE_SOUNDEX";

/// The first glibc whose static builds carry the `files` and `dns` name
/// services themselves (they were merged into libc in 2.34), so that
/// `getaddrinfo` reads `/etc/hosts` and `/etc/resolv.conf` inside a scratch
/// image without loading any module.
pub(crate) const GLIBC_WITH_BUILTIN_NSS: (u32, u32) = (2, 34);

impl StaticBuild {
    /// musl when its standard library is installed (`rustup target add`),
    /// else glibc linked statically; with the Rust resolver only when the
    /// C library's (version `glibc`, if known) cannot resolve names in a
    /// scratch image.
    pub fn choose(musl_installed: bool, glibc: Option<(u32, u32)>) -> Self {
        if musl_installed {
            Self {
                target: musl_target(),
                rustflags: CODEGEN.to_owned(),
                features: None,
            }
        } else {
            let builtin_nss = glibc.is_some_and(|version| version >= GLIBC_WITH_BUILTIN_NSS);
            Self {
                target: format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
                rustflags: format!("-C target-feature=+crt-static {CODEGEN}"),
                features: (!builtin_nss).then(|| "static-dns".to_owned()),
            }
        }
    }

    /// The cargo invocation (arguments after `cargo`).
    pub fn cargo_args(&self) -> Vec<String> {
        let mut args = vec![
            "build".to_owned(),
            "--profile".to_owned(),
            PROFILE.to_owned(),
            "--bin".to_owned(),
            SIDECAR.to_owned(),
            "--target".to_owned(),
            self.target.clone(),
            "--message-format".to_owned(),
            "json-render-diagnostics".to_owned(),
        ];
        if let Some(features) = &self.features {
            args.extend(["--features".to_owned(), features.clone()]);
        }
        args
    }
}

/// The version of this machine's glibc (`getconf GNU_LIBC_VERSION` prints
/// `glibc 2.36`), which a static glibc build links in; `None` if unknown.
pub(crate) fn glibc_version() -> Option<(u32, u32)> {
    let output = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_glibc_version(&String::from_utf8_lossy(&output.stdout))
}

fn parse_glibc_version(text: &str) -> Option<(u32, u32)> {
    let version = text.trim().strip_prefix("glibc ")?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether rustc has the standard library for `target` installed.
fn target_installed(target: &str) -> bool {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .stderr(Stdio::null())
        .output();
    let Ok(sysroot) = sysroot else { return false };
    let sysroot = String::from_utf8_lossy(&sysroot.stdout);
    Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(target)
        .join("lib")
        .is_dir()
}

/// The source tree this qbox was built from, if it is still on disk.
pub fn source_tree() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).ok()?;
    manifest.contains("name = \"qbox\"").then_some(root)
}

/// Builds `qbox-sidecar` statically in `source`; cargo's progress goes to
/// stderr. Returns the executable's path and the build used.
pub fn build_with_cargo(
    source: &Path,
    quiet: bool,
) -> Result<(PathBuf, StaticBuild), StaticBinaryError> {
    let build = StaticBuild::choose(target_installed(&musl_target()), glibc_version());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(build.cargo_args())
        .args(quiet.then_some("--quiet"))
        .current_dir(source)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
        .env("RUSTFLAGS", &build.rustflags)
        .env("LIBSQLITE3_FLAGS", SQLITE_FLAGS);
    // Under `cargo run`, qbox inherits the variables cargo sets for the
    // program it runs; build scripts (ring's, cc's) watch some of them, so
    // passing them on would make this build redo what an earlier one did.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_by_cargo_run) {
            command.env_remove(key);
        }
    }
    let mut child = command.spawn().map_err(StaticBinaryError::CargoMissing)?;
    let mut executable = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(path) = artifact_executable(&line) {
                executable = Some(path);
            }
        }
    }
    let status = child.wait().map_err(StaticBinaryError::CargoMissing)?;
    if !status.success() {
        return Err(StaticBinaryError::CargoFailed {
            target: build.target,
            status: status.to_string(),
        });
    }
    executable
        .map(|path| (path, build))
        .ok_or(StaticBinaryError::NoArtifact)
}

/// Whether `cargo run` / `cargo test` put this variable in the environment
/// of the program they start (as opposed to configuration a user sets).
fn set_by_cargo_run(key: &str) -> bool {
    const EXACT: [&str; 9] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    EXACT.contains(&key)
        || ["CARGO_PKG_", "CARGO_BIN_EXE_", "CARGO_CFG_"]
            .iter()
            .any(|prefix| key.starts_with(prefix))
}

/// The executable named by one line of cargo's JSON messages, if that line
/// reports the `qbox-sidecar` binary.
fn artifact_executable(line: &str) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" || message["target"]["name"] != SIDECAR {
        return None;
    }
    message["executable"].as_str().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 image: header plus program headers of the given types.
    fn elf(machine: u16, segments: &[u32], interpreter: &[u8]) -> Vec<u8> {
        let table = 64usize;
        let data = table + 56 * segments.len();
        let mut bytes = vec![0u8; data + interpreter.len()];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        bytes[0x20..0x28].copy_from_slice(&(table as u64).to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, kind) in segments.iter().enumerate() {
            let at = table + 56 * i;
            bytes[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            bytes[at + 8..at + 16].copy_from_slice(&(data as u64).to_le_bytes());
            bytes[at + 0x20..at + 0x28].copy_from_slice(&(interpreter.len() as u64).to_le_bytes());
        }
        bytes[data..].copy_from_slice(interpreter);
        bytes
    }

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        let dynamic = elf(62, &[6, PT_INTERP, 1], b"/lib64/ld-linux-x86-64.so.2\0");
        assert_eq!(
            inspect_elf(&dynamic),
            Some(ElfInfo {
                arch: "amd64".into(),
                interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            })
        );
        let static_pie = elf(183, &[6, 1, 2], b"");
        assert_eq!(
            inspect_elf(&static_pie),
            Some(ElfInfo {
                arch: "arm64".into(),
                interpreter: None,
            })
        );
    }

    #[test]
    fn truncated_or_foreign_files_are_not_elf() {
        assert_eq!(inspect_elf(b"#!/bin/sh\n"), None);
        assert_eq!(inspect_elf(b"\x7fELF\x01\x01"), None);
        let mut cut = elf(62, &[PT_INTERP], b"/lib/ld.so\0");
        cut.truncate(80);
        assert_eq!(inspect_elf(&cut), None);
        let mut huge_table = elf(62, &[1], b"");
        huge_table[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(inspect_elf(&huge_table), None);
    }

    #[test]
    fn this_test_binary_is_recognised() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let info = inspect_elf(&me).unwrap();
        let expected = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        assert_eq!(info.arch, expected);
    }

    #[test]
    fn the_fallback_build_is_static_glibc_with_the_rust_resolver_only_before_2_34() {
        let musl = StaticBuild::choose(true, None);
        assert!(musl.target.ends_with("-unknown-linux-musl"));
        assert_eq!(musl.rustflags, CODEGEN);
        assert_eq!(musl.features, None);
        let old_glibc = StaticBuild::choose(false, Some((2, 31)));
        assert!(old_glibc.target.ends_with("-unknown-linux-gnu"));
        assert_eq!(
            old_glibc.rustflags,
            format!("-C target-feature=+crt-static {CODEGEN}")
        );
        assert!(
            old_glibc
                .cargo_args()
                .ends_with(&["--features".into(), "static-dns".into()])
        );
        assert_eq!(
            StaticBuild::choose(false, None).features.as_deref(),
            Some("static-dns")
        );
        let new_glibc = StaticBuild::choose(false, Some((2, 36)));
        assert_eq!(new_glibc.rustflags, old_glibc.rustflags);
        assert_eq!(new_glibc.features, None);
        assert!(!new_glibc.cargo_args().contains(&"--features".to_owned()));
    }

    #[test]
    fn glibc_versions_are_read_from_getconf() {
        assert_eq!(parse_glibc_version("glibc 2.36\n"), Some((2, 36)));
        assert_eq!(parse_glibc_version("glibc 2.39.1"), Some((2, 39)));
        assert_eq!(parse_glibc_version("musl"), None);
        assert_eq!(parse_glibc_version(""), None);
    }

    #[test]
    fn variables_from_cargo_run_are_told_from_configuration() {
        for injected in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_BIN_EXE_qbox",
            "OUT_DIR",
        ] {
            assert!(set_by_cargo_run(injected), "{injected}");
        }
        for config in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_PROFILE_STATIC_LTO",
            "CARGO",
        ] {
            assert!(!set_by_cargo_run(config), "{config}");
        }
    }

    #[test]
    fn cargo_messages_name_the_sidecar_executable() {
        let line = r#"{"reason":"compiler-artifact","target":{"name":"qbox-sidecar"},"executable":"/t/release/qbox-sidecar"}"#;
        assert_eq!(
            artifact_executable(line),
            Some(PathBuf::from("/t/release/qbox-sidecar"))
        );
        let other =
            r#"{"reason":"compiler-artifact","target":{"name":"qbox"},"executable":"/t/qbox"}"#;
        assert_eq!(artifact_executable(other), None);
        assert_eq!(artifact_executable("not json"), None);
    }
}
