//! Which `qbox-sidecar` goes into the sidecar image, and building it: a
//! static one that is given or found beside qbox; else the running qbox
//! with its loader and libraries (nothing compiled), or a static one built
//! with cargo from qbox's source tree, as the caller's [`Source`] says.
//! `qbox image build` and `qbox demo` build the image through here, and the
//! agent image takes its static sidecar from [`static_sidecar`]. `qbox run
//! --mcp` builds no image: [`for_mcp`] chooses what it mounts.

use std::path::{Path, PathBuf};

use super::agent_image;
use super::bundle::{self, BundleError, MOUNTED_SIDECAR};
use super::image::{self, BuildProgress, BuiltImage};
use super::run::RunError;
use super::static_binary::{self, StaticBinary, StaticBinaryError};
use crate::exit::{self, Diagnose};

/// Why the sidecar image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SidecarImageError {
    #[error("cannot pack this qbox into the image")]
    CannotPack(#[source] BundleError),
    /// The engine failed: exits 1, as `docker build` does, with the hints
    /// `qbox run` gives.
    #[error(transparent)]
    Engine(RunError),
    #[error(transparent)]
    Static(#[from] StaticBinaryError),
    #[error("the static build stopped before it finished")]
    BuildTask(#[source] tokio::task::JoinError),
}

impl Diagnose for SidecarImageError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Static(err) => err.exit_code(),
            Self::CannotPack(_) | Self::Engine(_) | Self::BuildTask(_) => exit::ERROR,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::CannotPack(_) => Some(
                "pass --static to build a static qbox-sidecar with cargo, or --binary PATH to one"
                    .to_owned(),
            ),
            Self::Engine(err) => err.hint(),
            Self::Static(err) => err.hint(),
            Self::BuildTask(_) => None,
        }
    }
}

impl From<RunError> for SidecarImageError {
    fn from(err: RunError) -> Self {
        Self::Engine(err)
    }
}

/// What a build says while it works.
#[derive(Debug)]
pub enum SidecarProgress<'a> {
    /// A step of qbox's own.
    Note(String),
    /// The engine's builder.
    Build(BuildProgress<'a>),
}

/// What the sidecar image holds.
#[derive(Debug)]
pub enum Packed {
    /// A static `qbox-sidecar` (given, or found beside qbox, or built).
    Static(PathBuf),
    /// The running qbox under the sidecar's name, with this many files of
    /// its loader and libraries.
    RunningQbox { path: PathBuf, libraries: usize },
}

impl Packed {
    const STATIC: &str = "static";
    const PACKED: &str = "packed";

    /// What `--json` calls it: `static`, or `packed` (the running qbox).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Static(_) => Self::STATIC,
            Self::RunningQbox { .. } => Self::PACKED,
        }
    }

    /// The binary the image holds, as a file on this machine.
    pub fn path(&self) -> &Path {
        match self {
            Self::Static(path) | Self::RunningQbox { path, .. } => path,
        }
    }
}

/// Where the sidecar image's binary comes from when no static one is given
/// or beside qbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The running qbox with its loader and libraries; nothing is compiled
    /// (`qbox image build`: seconds instead of minutes, docs/performance.md).
    RunningQbox,
    /// The running qbox, else a static sidecar built with cargo (`qbox demo`,
    /// which is started from the source tree).
    RunningQboxOrCargo,
    /// A static sidecar built with cargo (`qbox image build --static`).
    Static,
}

/// Builds the sidecar image tagged `tag` from a static sidecar that is
/// given (`binary`) or beside qbox; else as `source` says. `quiet` quiets
/// cargo; every step is told to `on_progress`.
pub async fn build(
    binary: Option<PathBuf>,
    tag: &str,
    source: Source,
    quiet: bool,
    on_progress: &mut dyn FnMut(SidecarProgress<'_>),
) -> Result<(BuiltImage, Packed), SidecarImageError> {
    // The engine first: there is no point in compiling for an absent engine.
    let docker = image::connect().await?;
    let arch = image::engine_arch(&docker).await?;
    let given = binary.or_else(static_binary::beside_current_exe);
    let bundled = match (given.is_some(), source) {
        (false, Source::RunningQbox) => {
            Some(bundle::current_exe(arch.as_deref()).map_err(SidecarImageError::CannotPack)?)
        }
        (false, Source::RunningQboxOrCargo) => bundle::current_exe(arch.as_deref())
            .inspect_err(|why| {
                on_progress(SidecarProgress::Note(format!(
                    "not packing this qbox: {why}"
                )));
            })
            .ok(),
        _ => None,
    };
    let (binary, libraries, packed) = match bundled {
        Some(bundle) => {
            let packed = Packed::RunningQbox {
                path: bundle.binary.path,
                libraries: bundle.libraries.len(),
            };
            (bundle.binary.bytes, bundle.libraries, packed)
        }
        None => {
            let binary = static_sidecar(given, arch.as_deref(), quiet, on_progress).await?;
            (binary.bytes, Vec::new(), Packed::Static(binary.path))
        }
    };
    let built = image::build_sidecar(&docker, &binary, &libraries, tag, |event| {
        on_progress(SidecarProgress::Build(event));
    })
    .await?;
    Ok((built, packed))
}

/// The static `qbox-sidecar` for an engine whose CPU is `arch`: `binary`
/// when given, else the one beside qbox, else built with cargo from qbox's
/// source tree (`quiet` quiets cargo; the steps go to `on_progress`).
/// Checked before it is used.
pub async fn static_sidecar(
    binary: Option<PathBuf>,
    arch: Option<&str>,
    quiet: bool,
    on_progress: &mut dyn FnMut(SidecarProgress<'_>),
) -> Result<StaticBinary, SidecarImageError> {
    let path = match binary.or_else(static_binary::beside_current_exe) {
        Some(path) => path,
        None => {
            let source =
                static_binary::source_tree().ok_or(StaticBinaryError::NothingToBuildFrom)?;
            on_progress(SidecarProgress::Note(
                "building a static qbox-sidecar with cargo (the first time takes a few minutes)"
                    .to_owned(),
            ));
            let (path, build) = tokio::task::spawn_blocking(move || {
                static_binary::build_with_cargo(&source, quiet)
            })
            .await
            .map_err(SidecarImageError::BuildTask)??;
            on_progress(SidecarProgress::Note(format!(
                "built {} for {}",
                path.display(),
                build.target
            )));
            path
        }
    };
    Ok(static_binary::load(&path, arch)?)
}

/// Why `qbox run --mcp` cannot mount its sidecar (exit 125, as every setup
/// failure of `qbox run`).
#[derive(Debug, thiserror::Error)]
pub enum McpSidecarError {
    #[error("cannot run this qbox as the sidecar in image `{image}`: {why}")]
    CannotRun { image: String, why: BundleError },
    #[error(
        "the sidecar file {} is not readable by the user {user} that image `{image}` runs as",
        .path.display()
    )]
    Unreadable {
        path: PathBuf,
        user: String,
        image: String,
    },
}

impl Diagnose for McpSidecarError {
    fn exit_code(&self) -> u8 {
        exit::ENGINE
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::CannotRun { .. } => format!(
                "pass a static qbox-sidecar with --sidecar-binary PATH (or put it beside qbox), built with: cargo build --profile static --target {} --bin qbox-sidecar",
                static_binary::musl_target()
            ),
            Self::Unreadable { path, .. } => format!("chmod a+r {}, or drop -u", path.display()),
        })
    }
}

/// What `qbox run --mcp` mounts (host file, target; each read-only) and
/// how the container starts it.
#[derive(Debug)]
pub struct McpSidecar {
    pub mounts: Vec<(PathBuf, String)>,
    pub entrypoint: Vec<String>,
}

impl McpSidecar {
    /// A container user other than this one (`-u`) reads the mounted files
    /// as "others": a file they cannot read would fail inside the container
    /// with the loader's message, so it is said here, before anything is made.
    pub fn check_readable(&self, image: &str, user: Option<&str>) -> Result<(), McpSidecarError> {
        use std::os::unix::fs::PermissionsExt;
        let me = rustix::process::getuid().as_raw().to_string();
        let uid = user.map(|u| u.split(':').next().unwrap_or(u));
        if uid.is_none_or(|uid| uid == me || uid == "0" || uid == "root") {
            return Ok(());
        }
        for (host, _) in &self.mounts {
            let mode = std::fs::metadata(host).map_or(0, |m| m.permissions().mode());
            if mode & 0o004 == 0 {
                return Err(McpSidecarError::Unreadable {
                    path: host.clone(),
                    user: user.unwrap_or_default().to_owned(),
                    image: image.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// The sidecar for `qbox run --mcp` in `image`, without compiling
/// anything: a static `qbox-sidecar` given (`binary`) or beside qbox, else
/// this qbox with its loader and libraries. The image is checked against
/// the engine's CPU and the sidecar's before anything is created.
pub async fn for_mcp(binary: Option<PathBuf>, image: &str) -> anyhow::Result<McpSidecar> {
    let docker = image::connect().await?;
    let arch = image::engine_arch(&docker).await?;
    let platform = agent_image::image_platform(&docker, image).await?;
    if let Some(arch) = &arch {
        agent_image::check_mcp_image(image, platform.clone(), arch)?;
    }
    if let Some(path) = binary.or_else(static_binary::beside_current_exe) {
        let sidecar = static_binary::load(&path, arch.as_deref())?;
        if let Some(sidecar_arch) = agent_image::sidecar_arch(&sidecar.bytes) {
            agent_image::check_mcp_image(image, platform, &sidecar_arch)?;
        }
        return Ok(McpSidecar {
            mounts: vec![(sidecar.path, MOUNTED_SIDECAR.to_owned())],
            entrypoint: vec![MOUNTED_SIDECAR.to_owned()],
        });
    }
    let running = bundle::mountable_current_exe(arch.as_deref()).map_err(|why| {
        McpSidecarError::CannotRun {
            image: image.to_owned(),
            why,
        }
    })?;
    agent_image::check_mcp_image(image, platform, &running.arch)?;
    tracing::debug!(
        exe = %running.exe.display(),
        libraries = running.library_count(),
        "mounting this qbox as the sidecar"
    );
    Ok(McpSidecar {
        mounts: running.mounts(),
        entrypoint: running.entrypoint(),
    })
}
