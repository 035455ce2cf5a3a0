//! The agent image (`qbox image build --agent`): a local base image plus the
//! sidecar and an Amazon Q / Kiro CLI binary, with the
//! `q-developer-agent` tool enabled, and the checks that keep a bad input
//! from creating anything: the CLI must be an executable ELF for the
//! sidecar's CPU, and a base image (or, for `qbox run --mcp`, the user's
//! image) must be on this machine and built for that CPU.
//!
//! The sidecar, the CLI and a world-writable `/tmp` go in as one layer, a
//! tar archive in the build context that the builder's `ADD` unpacks with
//! the modes it holds: no shell is needed in the base (the default base is
//! the `FROM scratch` sidecar image), and the CLI is 0755 whatever its mode
//! on the host. The sidecar is a static `qbox-sidecar` at
//! `/usr/local/bin/qbox-sidecar`, or the running qbox with its loader and
//! libraries under [`PACKED_PREFIX`] (see `bundle`), started through that
//! loader: never at the base's library paths, whose C library the base's
//! own CLI may need.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bollard::Docker;

use super::bundle::Mountable;
use super::image::{self, BuildProgress, BuiltImage};
use super::run::{RunError, engine_error};
use crate::container::static_binary::{SIDECAR, inspect_elf};
use crate::exit::Diagnose;
use crate::store::Flavor;

/// The Dockerfile of the agent image.
pub const AGENT_DOCKERFILE: &str = include_str!("../../images/agent/Dockerfile");

/// The tag `qbox image build --agent` gives by default.
pub const DEFAULT_AGENT_TAG: &str = "qbox-agent:latest";

/// The layer archive in the build context.
const LAYER: &str = "agent-layer.tar";

/// Where the CLI goes in the image (its name is `q` or `kiro-cli`).
pub const CLI_DIR: &str = "/usr/local/bin";

/// Where a packed qbox goes in the image: `bin/qbox-sidecar` and `lib/`.
pub const PACKED_PREFIX: &str = "/opt/qbox";

/// The opening of the exec forms in [`AGENT_DOCKERFILE`] that start a
/// static sidecar (the entrypoint and the healthcheck).
const STATIC_EXEC: &str = "[\"/usr/local/bin/qbox-sidecar\"";

/// The sidecar the agent image holds.
#[derive(Debug)]
pub enum AgentSidecar {
    /// A static `qbox-sidecar`, at `/usr/local/bin/qbox-sidecar`.
    Static(Vec<u8>),
    /// The running qbox with its loader and libraries under
    /// [`PACKED_PREFIX`]; nothing compiled.
    Packed(Mountable),
}

impl AgentSidecar {
    /// How the image starts the sidecar (the healthcheck adds `health`).
    pub fn entrypoint(&self) -> Vec<String> {
        match self {
            Self::Static(_) => vec![format!("{CLI_DIR}/{SIDECAR}")],
            Self::Packed(packed) => packed.entrypoint_under(PACKED_PREFIX),
        }
    }

    /// The Dockerfile that starts this sidecar: [`AGENT_DOCKERFILE`] as it
    /// is for a static one, else with its exec forms starting the packed
    /// loader (the builder expands no variables there).
    pub fn dockerfile(&self) -> String {
        let array = serde_json::Value::from(self.entrypoint()).to_string();
        let open = array.strip_suffix(']').unwrap_or(&array);
        AGENT_DOCKERFILE.replace(STATIC_EXEC, open)
    }

    /// The layer's files of the sidecar: path in the archive, mode, bytes.
    fn files(&self) -> std::io::Result<Vec<(String, u32, Vec<u8>)>> {
        let bin = CLI_DIR.trim_start_matches('/');
        match self {
            Self::Static(bytes) => Ok(vec![(format!("{bin}/{SIDECAR}"), 0o755, bytes.clone())]),
            Self::Packed(packed) => packed
                .files_under(PACKED_PREFIX)
                .into_iter()
                .map(|(host, target, mode)| {
                    let bytes = std::fs::read(&host).map_err(|e| {
                        std::io::Error::new(e.kind(), format!("reading {}: {e}", host.display()))
                    })?;
                    Ok((target.trim_start_matches('/').to_owned(), mode, bytes))
                })
                .collect(),
        }
    }
}

/// A bad input to `image build --agent` or `run --mcp`, found before
/// anything is created.
#[derive(Debug, thiserror::Error)]
pub enum AgentImageError {
    #[error("cannot read the CLI binary {path}")]
    CliUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CLI binary {path} is not an ELF executable ({found})")]
    CliNotElf { path: PathBuf, found: &'static str },
    #[error("the CLI binary {path} is not executable (mode {mode:04o})")]
    CliNotExecutable { path: PathBuf, mode: u32 },
    #[error(
        "the CLI binary {path} is built for {cli}, but the static qbox-sidecar is for {sidecar}"
    )]
    CliWrongArch {
        path: PathBuf,
        cli: String,
        sidecar: String,
    },
    #[error(
        "the CLI binary {path} is dynamically linked (it asks for the loader {interpreter}), and the base image `{base}` has no C library"
    )]
    CliNeedsLoader {
        path: PathBuf,
        interpreter: String,
        base: String,
    },
    #[error("the base image `{image}` is not on this machine")]
    BaseMissing { image: String },
    #[error(
        "the base image `{image}` is built for {platform}, but the static qbox-sidecar is for linux/{sidecar}"
    )]
    BaseWrongPlatform {
        image: String,
        platform: String,
        sidecar: String,
    },
    #[error(
        "image `{image}` is built for {platform}, but the qbox-sidecar that --mcp mounts is for linux/{sidecar}"
    )]
    ImageWrongPlatform {
        image: String,
        platform: String,
        sidecar: String,
    },
}

impl Diagnose for AgentImageError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::CliUnreadable { .. } => "check the path given to --cli".into(),
            Self::CliNotElf { .. } => "give --cli the CLI's executable itself (the `q` or `kiro-cli` binary from its Linux release), not a script or an archive".into(),
            Self::CliNotExecutable { path, .. } => {
                format!("make it executable (chmod +x {}), or give the right file", path.display())
            }
            Self::CliWrongArch { sidecar, .. } => format!(
                "download the CLI's Linux build for {sidecar}, the docker engine's CPU"
            ),
            Self::CliNeedsLoader { .. } => "use the CLI's static (musl) Linux build, or pass --base an image that has its C library".into(),
            Self::BaseMissing { image } => format!(
                "qbox never pulls images: get it with `docker pull {image}` or `docker load -i FILE`, then build again"
            ),
            Self::BaseWrongPlatform { sidecar, .. } => format!(
                "pass --base an image for linux/{sidecar}, the docker engine's CPU"
            ),
            Self::ImageWrongPlatform { sidecar, .. } => format!(
                "use an image built for linux/{sidecar}, the docker engine's CPU (qbox never pulls: build it or `docker load` it)"
            ),
        })
    }
}

/// A checked CLI binary, read into memory for the build context.
#[derive(Debug)]
pub struct CliBinary {
    pub path: PathBuf,
    /// Its name in the image: the file's own when it is one of a CLI's
    /// release binaries (`kiro-cli`, `kiro-cli-chat`, `q`, `qchat`), else
    /// `kiro-cli` (a build from source is `chat_cli`).
    pub name: &'static str,
    pub bytes: Vec<u8>,
    /// The release's other binaries found beside it and taken along (the
    /// Kiro CLI's `kiro-cli` starts `kiro-cli-chat` for `chat`), by name.
    pub companions: Vec<(&'static str, Vec<u8>)>,
    /// The CPU in Docker's spelling (`amd64`, `arm64`), or `machine-N`.
    pub arch: String,
    /// The program interpreter, when it is dynamically linked.
    pub interpreter: Option<String>,
}

impl CliBinary {
    /// Where the CLI is in the image.
    pub fn image_path(&self) -> String {
        format!("{CLI_DIR}/{}", self.name)
    }
}

/// The CPU an ELF file is built for, in Docker's spelling, for ELF files of
/// either class and byte order (a CLI for another CPU is named, not called
/// "not ELF"); `None` when it is not ELF.
pub fn elf_arch(bytes: &[u8]) -> Option<String> {
    if bytes.get(..4)? != b"\x7fELF" {
        return None;
    }
    let raw: [u8; 2] = bytes.get(0x12..0x14)?.try_into().ok()?;
    let machine = match bytes.get(5)? {
        1 => u16::from_le_bytes(raw),
        2 => u16::from_be_bytes(raw),
        _ => return None,
    };
    let class = *bytes.get(4)?;
    Some(match (machine, class) {
        (62, _) => "amd64".into(),
        (183, _) => "arm64".into(),
        (3, _) => "386".into(),
        (40, _) => "arm".into(),
        (21, _) => "ppc64".into(),
        (22, _) => "s390x".into(),
        (243, 2) => "riscv64".into(),
        (8, _) => "mips".into(),
        (other, _) => format!("machine-{other}"),
    })
}

/// Reads and checks the CLI at `path`: a regular, executable ELF file.
/// Its CPU is checked against the sidecar's with [`check_cli_arch`].
pub fn load_cli(path: &Path) -> Result<CliBinary, AgentImageError> {
    let unreadable = |source| AgentImageError::CliUnreadable {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(AgentImageError::CliNotElf {
            path: path.to_owned(),
            found: if meta.is_dir() {
                "it is a directory"
            } else {
                "it is not a regular file"
            },
        });
    }
    let bytes = std::fs::read(path).map_err(unreadable)?;
    let Some(arch) = elf_arch(&bytes) else {
        return Err(AgentImageError::CliNotElf {
            path: path.to_owned(),
            found: if bytes.starts_with(b"#!") {
                "it is a script"
            } else if bytes.is_empty() {
                "it is empty"
            } else {
                "it does not start with the ELF magic"
            },
        });
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o111 == 0 {
        return Err(AgentImageError::CliNotExecutable {
            path: path.to_owned(),
            mode,
        });
    }
    let flavor = Flavor::from_binary_name(path);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| {
            let flavor = flavor?;
            flavor.release_binaries().iter().copied().find(|b| *b == n)
        })
        .unwrap_or(Flavor::ALL[0].binary());
    let companions = companions(path, flavor.unwrap_or(Flavor::ALL[0]), name, &arch);
    let interpreter = inspect_elf(&bytes).and_then(|info| info.interpreter);
    Ok(CliBinary {
        path: path.to_owned(),
        name,
        bytes,
        arch,
        interpreter,
        companions,
    })
}

/// The other release binaries of `flavor` beside `path` that are
/// executables for the same CPU, read for the image.
fn companions(path: &Path, flavor: Flavor, name: &str, arch: &str) -> Vec<(&'static str, Vec<u8>)> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    flavor
        .release_binaries()
        .iter()
        .filter(|other| **other != name)
        .filter_map(|other| {
            let candidate = dir.join(other);
            let meta = std::fs::metadata(&candidate).ok()?;
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                return None;
            }
            let bytes = std::fs::read(&candidate).ok()?;
            (elf_arch(&bytes).as_deref() == Some(arch)).then_some((*other, bytes))
        })
        .collect()
}

/// The CLI must run on the CPU the sidecar (and so the engine) runs on.
pub fn check_cli_arch(cli: &CliBinary, sidecar_arch: &str) -> Result<(), AgentImageError> {
    if cli.arch == sidecar_arch {
        return Ok(());
    }
    Err(AgentImageError::CliWrongArch {
        path: cli.path.clone(),
        cli: cli.arch.clone(),
        sidecar: sidecar_arch.to_owned(),
    })
}

/// A dynamically linked CLI cannot run on a base without a C library (the
/// `FROM scratch` sidecar image).
pub fn check_cli_runs_without_libc(cli: &CliBinary, base: &str) -> Result<(), AgentImageError> {
    match &cli.interpreter {
        None => Ok(()),
        Some(interpreter) => Err(AgentImageError::CliNeedsLoader {
            path: cli.path.clone(),
            interpreter: interpreter.clone(),
            base: base.to_owned(),
        }),
    }
}

/// The CPU the static sidecar is built for.
pub fn sidecar_arch(sidecar: &[u8]) -> Option<String> {
    elf_arch(sidecar)
}

/// What `docker image inspect` says an image runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

impl Platform {
    /// Whether a static `linux/<arch>` binary runs on it.
    pub fn runs(&self, arch: &str) -> bool {
        self.os == "linux" && self.arch == arch
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)
    }
}

/// The platform of the local image `image`; `None` when it is not on this
/// machine (nothing is pulled).
pub async fn image_platform(docker: &Docker, image: &str) -> Result<Option<Platform>, RunError> {
    match docker.inspect_image(image).await {
        Ok(found) => Ok(Some(Platform {
            os: found.os.unwrap_or_default(),
            arch: found.architecture.unwrap_or_default(),
        })),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(err) => Err(engine_error(err)),
    }
}

/// The base image must be on this machine (`platform` is what
/// [`image_platform`] found) and run the static sidecar for `arch`.
pub fn check_base(
    base: &str,
    platform: Option<Platform>,
    arch: &str,
) -> Result<(), AgentImageError> {
    let platform = platform.ok_or_else(|| AgentImageError::BaseMissing {
        image: base.to_owned(),
    })?;
    if platform.runs(arch) {
        return Ok(());
    }
    Err(AgentImageError::BaseWrongPlatform {
        image: base.to_owned(),
        platform: platform.to_string(),
        sidecar: arch.to_owned(),
    })
}

/// For `qbox run --mcp`: the user's image must be on this machine and run
/// the static sidecar for `arch` that is mounted into it.
pub fn check_mcp_image(image: &str, platform: Option<Platform>, arch: &str) -> anyhow::Result<()> {
    let platform = platform.ok_or_else(|| RunError::ImageMissing {
        image: image.to_owned(),
    })?;
    if platform.runs(arch) {
        return Ok(());
    }
    Err(AgentImageError::ImageWrongPlatform {
        image: image.to_owned(),
        platform: platform.to_string(),
        sidecar: arch.to_owned(),
    }
    .into())
}

/// The build context: the Dockerfile and the layer archive holding the
/// sidecar (see [`AgentSidecar`]), the CLI (0755, owned by root, like the
/// sidecar's files) and `/tmp` (1777, the writable `HOME` when no tmpfs is
/// mounted there).
pub fn context(sidecar: &AgentSidecar, cli: &CliBinary) -> std::io::Result<Vec<u8>> {
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        header
    }
    let sidecar_files = sidecar.files()?;
    let size: usize = sidecar_files.iter().map(|f| f.2.len()).sum();
    let mut layer = tar::Builder::new(Vec::with_capacity(size + cli.bytes.len() + 8192));
    layer.append_data(
        &mut header(tar::EntryType::Directory, 0o1777, 0),
        "tmp/",
        std::io::empty(),
    )?;
    let bin = CLI_DIR.trim_start_matches('/');
    let cli_files = std::iter::once((cli.name, cli.bytes.as_slice()))
        .chain(
            cli.companions
                .iter()
                .map(|(name, bytes)| (*name, bytes.as_slice())),
        )
        .map(|(name, data)| (format!("{bin}/{name}"), 0o755, data));
    let files = sidecar_files
        .iter()
        .map(|(path, mode, data)| (path.clone(), *mode, data.as_slice()))
        .chain(cli_files);
    for (path, mode, data) in files {
        layer.append_data(
            &mut header(tar::EntryType::Regular, mode, data.len() as u64),
            path,
            data,
        )?;
    }
    let layer = layer.into_inner()?;
    let dockerfile = sidecar.dockerfile();
    let mut context = tar::Builder::new(Vec::with_capacity(layer.len() + 8192));
    for (name, data) in [
        ("Dockerfile", dockerfile.as_bytes()),
        (LAYER, layer.as_slice()),
    ] {
        context.append_data(
            &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
            name,
            data,
        )?;
    }
    context.into_inner()
}

/// Builds the agent image on `base` (already checked: on this machine, for
/// the sidecar's CPU) and tags it `tag`.
pub async fn build_agent(
    docker: &Docker,
    base: &str,
    sidecar: &AgentSidecar,
    cli: &CliBinary,
    tag: &str,
    on_progress: impl FnMut(BuildProgress<'_>),
) -> Result<BuiltImage, RunError> {
    let context = context(sidecar, cli).map_err(|e| RunError::Failed(e.to_string()))?;
    let args = HashMap::from([
        ("QBOX_VERSION", env!("CARGO_PKG_VERSION")),
        ("BASE", base),
        ("CLI", cli.name),
    ]);
    image::build_context(docker, context, tag, &args, on_progress).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(name: &'static str) -> CliBinary {
        CliBinary {
            path: PathBuf::from(format!("/x/{name}")),
            name,
            bytes: b"\x7fELF cli".to_vec(),
            arch: "amd64".into(),
            interpreter: None,
            companions: Vec::new(),
        }
    }

    fn entries(tar: &[u8]) -> Vec<(String, u32, u64, u64)> {
        tar::Archive::new(tar)
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                (
                    entry.path().unwrap().display().to_string(),
                    header.mode().unwrap(),
                    header.size().unwrap(),
                    header.uid().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_layer_holds_both_binaries_executable_and_a_sticky_tmp() {
        let context = context(
            &AgentSidecar::Static(b"\x7fELF sidecar".to_vec()),
            &cli("kiro-cli"),
        )
        .unwrap();
        let mut archive = tar::Archive::new(context.as_slice());
        let mut layer = Vec::new();
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name == LAYER {
                std::io::Read::read_to_end(&mut entry, &mut layer).unwrap();
            }
            names.push(name);
        }
        assert_eq!(names, ["Dockerfile", LAYER]);
        assert_eq!(
            entries(&layer),
            vec![
                ("tmp/".into(), 0o1777, 0, 0),
                ("usr/local/bin/qbox-sidecar".into(), 0o755, 12, 0),
                ("usr/local/bin/kiro-cli".into(), 0o755, 8, 0),
            ]
        );
    }

    /// A packed qbox whose three files are in `dir`.
    fn packed(dir: &Path) -> AgentSidecar {
        use crate::container::bundle::LinkedFile;
        let file = |name: &str, bytes: &[u8]| {
            let host = dir.join(name);
            std::fs::write(&host, bytes).unwrap();
            LinkedFile {
                name: name.to_owned(),
                host,
            }
        };
        let exe = file("qbox", b"\x7fELF qbox").host;
        AgentSidecar::Packed(Mountable {
            exe,
            arch: "amd64".into(),
            linked: Some((
                file("ld-linux-x86-64.so.2", b"\x7fELF ld"),
                vec![file("libc.so.6", b"\x7fELF libc")],
            )),
        })
    }

    fn layer_of(context: &[u8]) -> (String, Vec<u8>) {
        let mut archive = tar::Archive::new(context);
        let (mut dockerfile, mut layer) = (String::new(), Vec::new());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            match entry.path().unwrap().to_str() {
                Some("Dockerfile") => {
                    std::io::Read::read_to_string(&mut entry, &mut dockerfile).unwrap();
                }
                Some(LAYER) => {
                    std::io::Read::read_to_end(&mut entry, &mut layer).unwrap();
                }
                other => panic!("{other:?} in the context"),
            }
        }
        (dockerfile, layer)
    }

    #[test]
    fn a_packed_qbox_goes_under_its_own_prefix_and_starts_through_its_loader() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = packed(dir.path());
        let (dockerfile, layer) = layer_of(&context(&sidecar, &cli("kiro-cli")).unwrap());
        assert_eq!(
            entries(&layer),
            vec![
                ("tmp/".into(), 0o1777, 0, 0),
                ("opt/qbox/bin/qbox-sidecar".into(), 0o755, 9, 0),
                ("opt/qbox/lib/ld-linux-x86-64.so.2".into(), 0o755, 7, 0),
                ("opt/qbox/lib/libc.so.6".into(), 0o644, 9, 0),
                ("usr/local/bin/kiro-cli".into(), 0o755, 8, 0),
            ]
        );
        // Nothing at the base's own library paths, no static sidecar.
        assert_eq!(dockerfile, sidecar.dockerfile());
        let start = "[\"/opt/qbox/lib/ld-linux-x86-64.so.2\",\"--library-path\",\"/opt/qbox/lib\",\"--inhibit-cache\",\"--argv0\",\"/opt/qbox/bin/qbox-sidecar\",\"/opt/qbox/bin/qbox-sidecar\"";
        assert_dockerfile(&dockerfile, start);
        assert!(!dockerfile.contains("[\"/usr/local/bin/qbox-sidecar\""));
        // A file that went away is named.
        std::fs::remove_file(dir.path().join("libc.so.6")).unwrap();
        let error = context(&sidecar, &cli("q")).unwrap_err();
        assert!(error.to_string().contains("libc.so.6"), "{error}");
    }

    /// What every agent image's Dockerfile holds, with `start` the opening
    /// of the exec form that starts the sidecar.
    fn assert_dockerfile(dockerfile: &str, start: &str) {
        let lines: Vec<&str> = dockerfile
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert!(lines.contains(&"FROM ${BASE}"));
        assert!(lines.contains(&format!("ADD {LAYER} /").as_str()));
        assert!(lines.contains(&"USER 65532:65532"));
        assert!(lines.iter().any(|l| l.contains("HOME=/tmp")));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("ENABLE_ADDITIONAL_TOOLS=q-developer-agent"))
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("QBOX_AGENT_CLI=/usr/local/bin/${CLI}"))
        );
        assert!(
            lines.contains(&format!("CMD {start}, \"health\"]").as_str()),
            "{dockerfile}"
        );
        assert!(
            lines.contains(&format!("ENTRYPOINT {start}]").as_str()),
            "{dockerfile}"
        );
        assert!(lines.contains(&"CMD [\"serve\"]"));
    }

    #[test]
    fn the_dockerfile_enables_the_agent_as_a_non_root_user_with_home_in_tmp() {
        let sidecar = AgentSidecar::Static(Vec::new());
        assert_eq!(sidecar.dockerfile(), AGENT_DOCKERFILE);
        assert_eq!(sidecar.entrypoint(), ["/usr/local/bin/qbox-sidecar"]);
        assert_dockerfile(AGENT_DOCKERFILE, "[\"/usr/local/bin/qbox-sidecar\"");
    }

    #[test]
    fn elf_files_of_every_class_and_order_are_named_by_cpu() {
        let mut amd64 = vec![0u8; 64];
        amd64[..6].copy_from_slice(b"\x7fELF\x02\x01");
        amd64[0x12] = 62;
        assert_eq!(elf_arch(&amd64).as_deref(), Some("amd64"));
        let mut arm32 = amd64.clone();
        arm32[4] = 1;
        arm32[0x12] = 40;
        assert_eq!(elf_arch(&arm32).as_deref(), Some("arm"));
        let mut s390x = amd64.clone();
        s390x[5] = 2;
        s390x[0x12..0x14].copy_from_slice(&22u16.to_be_bytes());
        assert_eq!(elf_arch(&s390x).as_deref(), Some("s390x"));
        assert_eq!(elf_arch(b"#!/bin/sh\n"), None);
        assert_eq!(elf_arch(b"\x7fELF"), None);
    }

    #[test]
    fn a_cli_is_checked_for_the_elf_magic_the_mode_and_the_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("q");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            load_cli(&script),
            Err(AgentImageError::CliNotElf {
                found: "it is a script",
                ..
            })
        ));
        assert!(matches!(
            load_cli(dir.path()),
            Err(AgentImageError::CliNotElf {
                found: "it is a directory",
                ..
            })
        ));
        assert!(matches!(
            load_cli(&dir.path().join("absent")),
            Err(AgentImageError::CliUnreadable { .. })
        ));
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let elf = dir.path().join("kiro-cli");
        std::fs::write(&elf, &me).unwrap();
        std::fs::set_permissions(&elf, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_cli(&elf),
            Err(AgentImageError::CliNotExecutable { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&elf, std::fs::Permissions::from_mode(0o700)).unwrap();
        let loaded = load_cli(&elf).unwrap();
        assert_eq!(loaded.name, "kiro-cli");
        assert_eq!(loaded.image_path(), "/usr/local/bin/kiro-cli");
        assert!(check_cli_arch(&loaded, &loaded.arch.clone()).is_ok());
        assert!(matches!(
            check_cli_arch(&loaded, "s390x"),
            Err(AgentImageError::CliWrongArch { .. })
        ));
        assert!(loaded.companions.is_empty());

        // The Kiro CLI's launcher takes its chat binary along; a script
        // beside it is no companion.
        let chat = dir.path().join("kiro-cli-chat");
        std::fs::write(&chat, &me).unwrap();
        std::fs::set_permissions(&chat, std::fs::Permissions::from_mode(0o755)).unwrap();
        let with_chat = load_cli(&elf).unwrap();
        assert_eq!(with_chat.companions.len(), 1);
        assert_eq!(with_chat.companions[0].0, "kiro-cli-chat");
        let context = context(
            &AgentSidecar::Static(b"\x7fELF sidecar".to_vec()),
            &with_chat,
        )
        .unwrap();
        let mut archive = tar::Archive::new(context.as_slice());
        let mut layer = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_str() == Some(LAYER) {
                std::io::Read::read_to_end(&mut entry, &mut layer).unwrap();
            }
        }
        let in_layer: Vec<(String, u32)> = entries(&layer)
            .into_iter()
            .map(|(name, mode, ..)| (name, mode))
            .collect();
        assert!(
            in_layer.contains(&("usr/local/bin/kiro-cli-chat".into(), 0o755)),
            "{in_layer:?}"
        );
        std::fs::write(&chat, "#!/bin/sh\n").unwrap();
        assert!(load_cli(&elf).unwrap().companions.is_empty());

        // A build from source (`chat_cli`) goes in as the Kiro CLI.
        let source_build = dir.path().join("chat_cli");
        std::fs::write(&source_build, &me).unwrap();
        std::fs::set_permissions(&source_build, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(load_cli(&source_build).unwrap().name, "kiro-cli");
    }

    #[test]
    fn a_platform_runs_only_linux_binaries_of_its_cpu() {
        let platform = Platform {
            os: "linux".into(),
            arch: "arm64".into(),
        };
        assert!(platform.runs("arm64"));
        assert!(!platform.runs("amd64"));
        assert_eq!(platform.to_string(), "linux/arm64");
        let windows = Platform {
            os: "windows".into(),
            arch: "amd64".into(),
        };
        assert!(!windows.runs("amd64"));
        assert!(matches!(
            check_base("b", None, "amd64"),
            Err(AgentImageError::BaseMissing { .. })
        ));
        assert!(matches!(
            check_base("b", Some(platform.clone()), "amd64"),
            Err(AgentImageError::BaseWrongPlatform { .. })
        ));
        assert!(check_base("b", Some(platform.clone()), "arm64").is_ok());
        let missing = check_mcp_image("i", None, "amd64").unwrap_err();
        assert!(matches!(
            missing.downcast_ref::<RunError>(),
            Some(RunError::ImageMissing { .. })
        ));
        let wrong = check_mcp_image("i", Some(platform), "amd64").unwrap_err();
        assert!(matches!(
            wrong.downcast_ref::<AgentImageError>(),
            Some(AgentImageError::ImageWrongPlatform { .. })
        ));
    }
}
