//! `qbox image build`: the `FROM scratch` sidecar image, built through the
//! Engine API from a static `qbox-sidecar` that is given or found beside
//! qbox, else from the running qbox with its loader and libraries (nothing
//! compiled), or with `--static` from a static sidecar built with cargo from
//! qbox's source tree; with `--agent`, the agent image (the sidecar, chosen
//! the same way, and a CLI binary on a local base image).

use std::path::PathBuf;

use super::CliChoice;
use super::build_progress::{build_progress, megabytes, progress, sidecar_progress};
use crate::app::term::Palette;
use crate::container::agent_image::{self, DEFAULT_AGENT_TAG};
use crate::container::bundle;
use crate::container::image::{self, BuiltImage, DEFAULT_TAG};
use crate::container::run::RunError;
use crate::container::sidecar_image::{self, Packed, Source};
use crate::container::static_binary::{self, StaticBinaryError};
use crate::exit::{self, CommandError, Diagnose};

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build the qbox-sidecar image (FROM scratch, non-root, healthcheck), or with --agent
    /// an image that also holds the Amazon Q / Kiro CLI for q-developer-agent.
    #[command(after_help = "\
Examples:
  qbox image build                                  # in seconds: this qbox, nothing compiled
  qbox image build --static                         # the smaller static image, built with cargo
  qbox image build --tag registry.example/qbox-sidecar:1.0
  qbox image build --binary ./qbox-sidecar --json   # a static (musl) binary you already have
  qbox image build --agent --cli ./q                # qbox-agent:latest on qbox-sidecar:latest

Without --binary, qbox uses a static qbox-sidecar beside itself, else packs itself under the
sidecar's name with its loader and C library (\"kind\": \"packed\"; nothing is compiled).
--static instead runs `cargo build --profile static --target <arch>-unknown-linux-musl` in
qbox's source tree (static glibc with the Rust resolver when the musl target is not installed):
minutes once, a smaller image (\"kind\": \"static\"). Nothing is pulled.

The agent image (--agent): the base image (default qbox-sidecar:latest, built first when missing;
any other must already be on this machine, for the engine's CPU) plus the sidecar: a static
qbox-sidecar (--binary, beside qbox, or built with cargo only with --static) at /usr/local/bin,
else this qbox with its loader and libraries under /opt/qbox, started through that loader and
never over the base's own C library (\"kind\": \"packed\"; nothing compiled); and the CLI
binary at /usr/local/bin/q (or /usr/local/bin/kiro-cli when the file is named kiro-cli), mode 0755;
q-developer-agent enabled, HOME=/tmp, user 65532, a healthcheck, `serve` by default. The CLI must be
an executable ELF file for the engine's CPU (static, on the default base). Run it read-only with a
tmpfs at /tmp and the login mounted at /run/qbox/auth:
  qbox run -i --hardened -v \"$PWD:/work\" -w /work qbox-agent -- serve")]
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Name and tag of the image [default: qbox-sidecar:latest, with --agent qbox-agent:latest].
    #[arg(long, short = 't')]
    tag: Option<String>,
    /// Build the agent image: the sidecar with the q-developer-agent tool and the CLI binary
    /// given by --cli PATH (the Kiro CLI `kiro-cli`, with `kiro-cli-chat` when it is beside
    /// it, or the legacy `q`; a path, so a binary in this directory is `./kiro-cli`).
    #[arg(long)]
    agent: bool,
    /// With --agent: the local image to build on (never pulled) [default: qbox-sidecar:latest].
    #[arg(long, value_name = "IMAGE", requires = "agent")]
    base: Option<String>,
    /// A statically linked qbox-sidecar to put in the image.
    #[arg(long, env = "QBOX_SIDECAR_BINARY", value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Put a static qbox-sidecar in the image, built with cargo from qbox's source tree when
    /// none is given or beside qbox (smaller image; the first build takes minutes).
    #[arg(long = "static")]
    static_build: bool,
    /// Print the result as JSON on stdout ({"tag","id","size","binary","kind"}, kind "static"
    /// or "packed", with "libraries" when packed; with --agent also "cli", "cliPath" and
    /// "base").
    #[arg(long)]
    json: bool,
}

pub async fn run(
    command: ImageCommand,
    cli: Option<CliChoice>,
    quiet: bool,
    palette: Palette,
) -> anyhow::Result<u8> {
    let ImageCommand::Build(args) = command;
    let cli_binary = agent_cli(args.agent, cli)?;
    let mut extra = serde_json::Map::new();
    let (built, binary, kind) = match &cli_binary {
        Some(cli) => {
            let tag = args.tag.as_deref().unwrap_or(DEFAULT_AGENT_TAG);
            let base = args.base.as_deref();
            let sidecar = AgentSource {
                binary: args.binary,
                static_build: args.static_build,
            };
            let agent = build_agent(cli, base, sidecar, tag, quiet, palette).await?;
            extra.insert("cli".into(), agent.cli_path.into());
            extra.insert("cliPath".into(), cli.display().to_string().into());
            extra.insert("base".into(), agent.base.into());
            if let Packed::RunningQbox { libraries, .. } = &agent.packed {
                extra.insert("libraries".into(), (*libraries).into());
            }
            let kind = agent.packed.kind();
            (agent.built, agent.packed.path().to_owned(), kind)
        }
        _ => {
            let tag = args.tag.as_deref().unwrap_or(DEFAULT_TAG);
            let source = if args.static_build {
                Source::Static
            } else {
                Source::RunningQbox
            };
            let (built, packed) = sidecar_image::build(
                args.binary,
                tag,
                source,
                quiet,
                &mut sidecar_progress(quiet, palette),
            )
            .await?;
            if let Packed::RunningQbox { libraries, .. } = &packed {
                extra.insert("libraries".into(), (*libraries).into());
            }
            (built, packed.path().to_owned(), packed.kind())
        }
    };
    if args.json {
        let mut value = serde_json::to_value(&built)?;
        value["binary"] = binary.display().to_string().into();
        value["kind"] = kind.into();
        for (key, extra) in extra {
            value[key] = extra;
        }
        crate::app::output::println(format_args!("{}", serde_json::to_string_pretty(&value)?))?;
    } else if !quiet {
        eprintln!(
            "{} {} {} {} ({kind})",
            palette.good("built"),
            palette.bold(&built.tag),
            short_id(&built.id),
            megabytes(built.size)
        );
    }
    Ok(exit::OK)
}

/// The CLI binary of `--agent`, from the global `--cli`: required with
/// `--agent`, and a path, not a flavor; meaningless without `--agent`.
fn agent_cli(agent: bool, cli: Option<CliChoice>) -> Result<Option<PathBuf>, CommandError> {
    match (agent, cli) {
        (true, Some(CliChoice::Binary(path))) => Ok(Some(path)),
        (true, Some(CliChoice::Flavor(_))) => Err(CommandError::new(
            exit::USAGE,
            "--agent needs the CLI binary's path, and --cli (or QBOX_CLI) names a login flavor",
        )
        .hint("give --cli the path of the `q` or `kiro-cli` executable, e.g. --cli ./q")),
        (true, None) => Err(CommandError::new(
            exit::USAGE,
            "--agent needs the CLI binary to put in the image",
        )
        .hint("give its path with --cli, e.g. qbox image build --agent --cli ./q")),
        // A flavor (perhaps from QBOX_CLI) does not concern the sidecar image.
        (false, None | Some(CliChoice::Flavor(_))) => Ok(None),
        (false, Some(CliChoice::Binary(path))) => Err(CommandError::new(
            exit::USAGE,
            format!(
                "--cli {} names a CLI binary, which only the agent image holds",
                path.display()
            ),
        )
        .hint("add --agent to build the agent image with it")),
    }
}

/// The agent image that was built.
struct AgentBuild {
    built: BuiltImage,
    /// The sidecar it holds.
    packed: Packed,
    /// Where the CLI is in the image.
    cli_path: String,
    base: String,
}

/// Where the agent image's sidecar comes from.
struct AgentSource {
    /// `--binary`: a static sidecar.
    binary: Option<PathBuf>,
    /// `--static`: a static sidecar, built with cargo when none is at hand.
    static_build: bool,
}

/// Checks every input before anything is created (the CLI, the engine, the
/// base image, the sidecar, their CPUs), builds the default base when it is
/// missing, then the agent image. The sidecar is a static one given or
/// beside qbox (or built with `--static`), else the running qbox packed
/// with its loader and libraries: nothing is compiled unless asked.
async fn build_agent(
    cli: &std::path::Path,
    base: Option<&str>,
    source: AgentSource,
    tag: &str,
    quiet: bool,
    palette: Palette,
) -> anyhow::Result<AgentBuild> {
    let cli = agent_image::load_cli(cli)?;
    if base.is_none() {
        // The default base is the scratch sidecar image: no C library for
        // the CLI (a packed qbox brings one, but only for itself).
        agent_image::check_cli_runs_without_libc(&cli, DEFAULT_TAG)?;
    }
    let docker = image::connect().await.map_err(|e| image_error(&e))?;
    let engine_arch = image::engine_arch(&docker)
        .await
        .map_err(|e| image_error(&e))?;
    // A wrong CLI or a missing base is said before cargo may spend minutes
    // building the sidecar; the sidecar is for the engine's CPU.
    if let Some(arch) = &engine_arch {
        agent_image::check_cli_arch(&cli, arch)?;
    }
    let given_base = match base {
        Some(base) => {
            let platform = agent_image::image_platform(&docker, base)
                .await
                .map_err(|e| image_error(&e))?;
            if let Some(arch) = &engine_arch {
                agent_image::check_base(base, platform.clone(), arch)?;
            }
            Some((base, platform))
        }
        None => None,
    };
    let given = source.binary.or_else(static_binary::beside_current_exe);
    let (sidecar, packed, arch) = if given.is_some() || source.static_build {
        let binary = sidecar_image::static_sidecar(
            given,
            engine_arch.as_deref(),
            quiet,
            &mut sidecar_progress(quiet, palette),
        )
        .await?;
        let arch =
            agent_image::sidecar_arch(&binary.bytes).ok_or_else(|| StaticBinaryError::NotElf {
                path: binary.path.clone(),
            })?;
        (
            agent_image::AgentSidecar::Static(binary.bytes),
            Packed::Static(binary.path),
            arch,
        )
    } else {
        let running = bundle::mountable_current_exe(engine_arch.as_deref()).map_err(|why| {
            CommandError::new(
                exit::ERROR,
                format!("cannot pack this qbox into the agent image: {why}"),
            )
            .hint(
                "pass --static to build a static qbox-sidecar with cargo, or --binary PATH to one",
            )
        })?;
        progress(
            quiet,
            palette,
            &format!(
                "packing this qbox as the sidecar with {} files of its loader and libraries under {}",
                running.library_count(),
                agent_image::PACKED_PREFIX
            ),
        );
        let packed = Packed::RunningQbox {
            path: running.exe.clone(),
            libraries: running.library_count(),
        };
        let arch = running.arch.clone();
        (agent_image::AgentSidecar::Packed(running), packed, arch)
    };
    agent_image::check_cli_arch(&cli, &arch)?;
    let base = match given_base {
        Some((base, platform)) => {
            agent_image::check_base(base, platform, &arch)?;
            base.to_owned()
        }
        None => {
            let platform = agent_image::image_platform(&docker, DEFAULT_TAG)
                .await
                .map_err(|e| image_error(&e))?;
            if platform.is_none() {
                progress(
                    quiet,
                    palette,
                    &format!("building the base image {DEFAULT_TAG} first"),
                );
                // The same sidecar, as `qbox image build` would put it in.
                let (binary, source) = match &packed {
                    Packed::Static(path) => (Some(path.clone()), Source::Static),
                    Packed::RunningQbox { .. } => (None, Source::RunningQbox),
                };
                sidecar_image::build(
                    binary,
                    DEFAULT_TAG,
                    source,
                    quiet,
                    &mut sidecar_progress(quiet, palette),
                )
                .await?;
            } else {
                agent_image::check_base(DEFAULT_TAG, platform, &arch)?;
            }
            DEFAULT_TAG.to_owned()
        }
    };
    progress(
        quiet,
        palette,
        &format!(
            "building {tag} on {base} with {} and a {} sidecar",
            cli.image_path(),
            packed.kind()
        ),
    );
    let built = agent_image::build_agent(
        &docker,
        &base,
        &sidecar,
        &cli,
        tag,
        build_progress(quiet, palette),
    )
    .await
    .map_err(|e| image_error(&e))?;
    Ok(AgentBuild {
        built,
        packed,
        cli_path: cli.image_path(),
        base,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Flavor;

    #[test]
    fn the_agent_takes_its_cli_binary_from_cli() {
        let path = PathBuf::from("./q");
        let binary = Some(CliChoice::Binary(path.clone()));
        let flavor = Some(CliChoice::Flavor(Flavor::Kiro));
        assert_eq!(agent_cli(true, binary.clone()).unwrap(), Some(path));
        assert_eq!(agent_cli(false, flavor.clone()).unwrap(), None);
        assert_eq!(agent_cli(false, None).unwrap(), None);
        for (agent, cli, says) in [
            (true, None, "--agent needs the CLI binary"),
            (true, flavor, "names a login flavor"),
            (false, binary, "only the agent image holds"),
        ] {
            let error = agent_cli(agent, cli).unwrap_err();
            assert_eq!(error.code, exit::USAGE);
            assert!(error.message.contains(says), "{}", error.message);
            assert!(error.hint.is_some());
        }
    }
}
