//! `qbox image build`: the `FROM scratch` sidecar image, built through the
//! Engine API from a static `qbox-sidecar` that is given, found beside qbox,
//! or built with cargo from qbox's source tree.

use std::path::PathBuf;

use crate::app::term::Palette;
use crate::container::image::{self, BuildProgress, BuiltImage, DEFAULT_TAG};
use crate::container::run::RunError;
use crate::container::static_binary::{self, StaticBinaryError};
use crate::exit::{self, CommandError, Diagnose};

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build the qbox-sidecar image (FROM scratch, static binary, non-root, healthcheck).
    #[command(after_help = "\
Examples:
  qbox image build                                  # builds the static binary with cargo if needed
  qbox image build --tag registry.example/qbox-sidecar:1.0
  qbox image build --binary ./qbox-sidecar --json   # a static (musl) binary you already have

Without --binary, qbox uses a static qbox-sidecar beside itself, else runs
`cargo build --profile static --target <arch>-unknown-linux-musl` in its source tree (static glibc
with the Rust resolver when the musl target is not installed). Nothing is pulled.")]
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Name and tag of the image.
    #[arg(long, short = 't', default_value = DEFAULT_TAG)]
    tag: String,
    /// A statically linked qbox-sidecar to put in the image.
    #[arg(long, env = "QBOX_SIDECAR_BINARY", value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Print the result as JSON on stdout ({"tag","id","size","binary"}).
    #[arg(long)]
    json: bool,
}

pub async fn run(command: ImageCommand, quiet: bool, palette: Palette) -> anyhow::Result<u8> {
    let ImageCommand::Build(args) = command;
    let (built, binary) = build(args.binary, &args.tag, quiet, palette).await?;
    if args.json {
        let mut value = serde_json::to_value(&built)?;
        value["binary"] = binary.display().to_string().into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if !quiet {
        eprintln!(
            "{} {} {} {}",
            palette.good("built"),
            palette.bold(&built.tag),
            short_id(&built.id),
            megabytes(built.size)
        );
    }
    Ok(exit::OK)
}

/// Finds or builds the static binary, then builds the image with progress
/// on stderr. Returns the image and the binary it holds.
pub(crate) async fn build(
    binary: Option<PathBuf>,
    tag: &str,
    quiet: bool,
    palette: Palette,
) -> anyhow::Result<(BuiltImage, PathBuf)> {
    // The engine first: there is no point in compiling for an absent engine.
    let docker = image::connect().await.map_err(|e| image_error(&e))?;
    let arch = image::engine_arch(&docker)
        .await
        .map_err(|e| image_error(&e))?;
    let binary = static_sidecar(binary, arch.as_deref(), quiet, palette).await?;
    let built = image::build_sidecar(&docker, &binary, tag, |event| match event {
        BuildProgress::Sending(bytes) => {
            progress(
                quiet,
                palette,
                &format!("sending the build context ({})", megabytes(bytes as u64)),
            );
        }
        BuildProgress::Line(line) => {
            if !quiet {
                // Continuation lines of the Dockerfile arrive as runs of spaces.
                let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
                eprintln!("  {}", palette.dim(&line));
            }
        }
    })
    .await
    .map_err(|e| image_error(&e))?;
    Ok((built, binary.path))
}

fn progress(quiet: bool, palette: Palette, text: &str) {
    if !quiet {
        eprintln!("{} {text}", palette.dim("qbox:"));
    }
}

/// The static `qbox-sidecar` for an engine whose CPU is `arch`: `binary`
/// when given, else the one beside qbox, else built with cargo from qbox's
/// source tree (progress on stderr). Checked before it is used.
pub(crate) async fn static_sidecar(
    binary: Option<PathBuf>,
    arch: Option<&str>,
    quiet: bool,
    palette: Palette,
) -> anyhow::Result<static_binary::StaticBinary> {
    let path = match binary.or_else(static_binary::beside_current_exe) {
        Some(path) => path,
        None => {
            let source =
                static_binary::source_tree().ok_or(StaticBinaryError::NothingToBuildFrom)?;
            progress(
                quiet,
                palette,
                "building a static qbox-sidecar with cargo (the first time takes a few minutes)",
            );
            let (path, build) = tokio::task::spawn_blocking(move || {
                static_binary::build_with_cargo(&source, quiet)
            })
            .await??;
            progress(
                quiet,
                palette,
                &format!("built {} for {}", path.display(), build.target),
            );
            path
        }
    };
    Ok(static_binary::load(&path, arch)?)
}

/// An engine failure while building exits 1 (as `docker build` does), with
/// the same hints `qbox run` gives.
fn image_error(err: &RunError) -> anyhow::Error {
    let mut command = CommandError::new(exit::ERROR, exit::chain(err));
    command.hint = err.hint();
    command.into()
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}
