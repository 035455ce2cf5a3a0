//! `qbox demo`: the whole chain on a machine with no Amazon Q login and no
//! network. A throwaway store with a demo token, the stand-in Amazon Q
//! service, the sidecar image built locally (from the running qbox when no
//! static sidecar is at hand: nothing compiled twice), a container started through
//! `qbox run` with the snapshot mounted read-only, an MCP call into it, and
//! the answer streamed back; then everything is cleaned up. Without a
//! Docker engine the sidecar runs as a local process instead.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::build_progress::sidecar_progress;
use crate::app::term::Palette;
use crate::container::engine;
use crate::container::image::DEFAULT_TAG;
use crate::container::sidecar_image::{self, Packed, Source};
use crate::exit::{self, CommandError};
use crate::mcp::client::{Endpoint, call_tool};
use crate::standin::q::{Answer, Reply, StandinQ};
use crate::store::Flavor;
use crate::store::schema::{FixtureLogin, StoreBuilder};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox demo                      # container mode when a Docker engine answers
  qbox demo --no-docker          # the sidecar as a local process
  qbox demo --binary ./qbox-sidecar --image qbox-sidecar:demo

Nothing leaves this machine: the Amazon Q service is a stand-in on a local address, and the
login is a demo token in a throwaway store. The container, the snapshot and the store are
removed at the end; the image stays (it is what `qbox run` and the compose stack use).

The image: a static qbox-sidecar when one is given (--binary) or beside qbox; else this qbox
itself, which is the sidecar when started as qbox-sidecar, with its loader and C library (glibc
2.34 or later; nothing to compile); else a static one built with cargo. `qbox image build`
makes the same image, and `qbox image build --static` the static one, which is smaller.")]
pub struct DemoArgs {
    /// Run the sidecar as a local process even when a Docker engine answers.
    #[arg(long)]
    no_docker: bool,
    /// Tag of the sidecar image to build and run.
    #[arg(long, default_value = DEFAULT_TAG)]
    image: String,
    /// A static qbox-sidecar for the image (default: one beside qbox, else this qbox packed
    /// with its libraries, else one built with cargo).
    #[arg(long, env = "QBOX_SIDECAR_BINARY", value_name = "PATH")]
    binary: Option<PathBuf>,
    /// What to ask.
    #[arg(long, default_value = "How does qbox get my login into a container?")]
    prompt: String,
}

/// Prints the demo's steps on stderr; the answer alone goes to stdout.
struct Steps {
    palette: Palette,
    quiet: bool,
}

impl Steps {
    fn step(&self, what: &str, detail: &str) {
        if !self.quiet {
            eprintln!(
                "{} {what} {}",
                self.palette.bold("==>"),
                self.palette.dim(detail)
            );
        }
    }

    fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("    {text}");
        }
    }
}

/// Where the sidecar runs.
enum Mode {
    Container { gateway: IpAddr },
    Local { reason: String },
}

pub async fn run(args: DemoArgs, quiet: bool, palette: Palette) -> anyhow::Result<u8> {
    let steps = Steps { palette, quiet };
    let work = tempfile::Builder::new()
        .prefix("qbox-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?;
    let store = work.path().join("data.sqlite3");
    // Unique per run, so the stand-in's check proves which login arrived.
    let token = format!("qbox-demo-token-{}-{}", std::process::id(), nanos());
    StoreBuilder::create(&store, Flavor::AmazonQ)
        .and_then(|builder| builder.login(&FixtureLogin::builder_id(&token, "qbox-demo-refresh")))
        .with_context(|| format!("creating the demo store {}", store.display()))?;
    steps.step(
        "a throwaway auth store with a demo token",
        &store.display().to_string(),
    );

    let mode = choose_mode(args.no_docker).await;
    let (endpoint, standin, container) = match &mode {
        Mode::Container { gateway } => {
            steps.step(
                "building the qbox-sidecar image",
                "FROM scratch, nothing pulled",
            );
            let (built, packed) = sidecar_image::build(
                args.binary.clone(),
                &args.image,
                Source::RunningQboxOrCargo,
                quiet,
                &mut sidecar_progress(quiet, palette),
            )
            .await
            .map_err(|err| {
                let err = anyhow::Error::from(err);
                let (_, hint) = crate::app::report::classify(&err);
                let hint = hint.map_or_else(String::new, |h| format!("{h}; or "));
                CommandError::new(exit::ERROR, format!("building the sidecar image: {err:#}")).hint(
                    format!("{hint}run `qbox demo --no-docker` to skip the container"),
                )
            })?;
            steps.note(&format!(
                "{} {} ({:.1} MB)",
                palette.good("built"),
                built.tag,
                built.size as f64 / 1e6
            ));
            if let Packed::RunningQbox { libraries, .. } = packed {
                let beside = match libraries {
                    0 => String::new(),
                    n => format!(" with its loader and libraries ({n} files)"),
                };
                steps.note(&format!(
                    "it holds this qbox as qbox-sidecar{beside}; \
                     `qbox image build --static` makes the smaller static one"
                ));
            }
            let standin = start_standin(*gateway, &token, true).await?;
            steps.step("the stand-in Amazon Q service", &standin.url());
            let name = format!("qbox-demo-{}", std::process::id());
            let endpoint = qbox_run_endpoint(&store, &name, &args.image, &standin.url())?;
            steps.step(
                "qbox run: the sidecar in a container, the login mounted read-only",
                &format!("qbox run -i --name {name} {} -- serve", args.image),
            );
            (endpoint, standin, Some(name))
        }
        Mode::Local { reason } => {
            steps.step("no container this time", reason);
            let standin = start_standin(Ipv4Addr::LOCALHOST.into(), &token, false).await?;
            steps.step("the stand-in Amazon Q service", &standin.url());
            let endpoint = Endpoint::Command {
                program: current_exe()?,
                args: vec!["sidecar".into(), "serve".into()],
                env: vec![
                    ("QBOX_DB".into(), store.display().to_string()),
                    (crate::qapi::Q_ENDPOINT_ENV.into(), standin.url()),
                ],
            };
            steps.step(
                "the sidecar as a local process",
                "qbox-sidecar serve (stdio)",
            );
            (endpoint, standin, None)
        }
    };

    steps.step(
        "MCP tools/call q-chat; the answer streams in:",
        &args.prompt,
    );
    let expected = answer_pieces(container.is_some()).concat();
    let mut arguments = serde_json::Map::new();
    arguments.insert("prompt".into(), args.prompt.clone().into());
    let call = call_tool(&endpoint, "q-chat", arguments, |chunk| {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(chunk.as_bytes());
        let _ = stdout.flush();
    });
    let outcome = tokio::select! {
        outcome = call => outcome?,
        () = crate::app::signals::shutdown() => {
            // Dropping the call closes the sidecar's stdin: `qbox run` then
            // removes its container and snapshot on its own.
            return Err(CommandError::new(exit::ERROR, "interrupted").into());
        }
    };
    crate::app::output::print("\n")?;
    if outcome.is_error {
        return Err(CommandError::new(
            exit::ERROR,
            format!("the sidecar answered with an error: {}", outcome.text),
        )
        .into());
    }
    check_outcome(&outcome.text, &expected, &standin, &token)?;
    steps.note(&format!(
        "{} {} streamed chunks; the stand-in saw the demo token from the snapshot",
        palette.good("ok:"),
        outcome.progress_messages
    ));

    if let Some(name) = container {
        let docker = engine::connect().await?;
        if engine::container_exists(&docker, &name).await? {
            return Err(CommandError::new(
                exit::ERROR,
                format!("the container {name} was left behind"),
            )
            .hint(format!("docker rm -f {name}"))
            .into());
        }
    }
    drop(standin);
    let work_path = work.path().to_owned();
    work.close()
        .with_context(|| format!("removing {}", work_path.display()))?;
    steps.step(
        "cleaned up",
        "container removed, snapshot and demo store deleted, stand-in stopped",
    );
    Ok(exit::OK)
}

async fn choose_mode(no_docker: bool) -> Mode {
    if no_docker {
        return Mode::Local {
            reason: "--no-docker: the sidecar runs as a local process".into(),
        };
    }
    let status = engine::probe(Duration::from_secs(3)).await;
    if !status.available {
        return Mode::Local {
            reason: format!(
                "no Docker engine answers at {} ({}): the sidecar runs as a local process instead",
                status.endpoint,
                status.error.unwrap_or_default()
            ),
        };
    }
    let gateway = match engine::connect().await {
        Ok(docker) => engine::bridge_gateway(&docker).await.ok().flatten(),
        Err(_) => None,
    };
    match gateway {
        Some(gateway) => Mode::Container { gateway },
        None => Mode::Local {
            reason:
                "the engine has no IPv4 `bridge` network to reach the stand-in service through: \
                     the sidecar runs as a local process instead"
                    .into(),
        },
    }
}

fn answer_pieces(in_container: bool) -> Vec<&'static str> {
    let place = if in_container {
        "qbox-sidecar, running in a container that `qbox run` started, "
    } else {
        "qbox-sidecar, running as a local process, "
    };
    vec![
        "This answer comes from the stand-in Amazon Q service, ",
        "framed as AWS event-stream messages. ",
        place,
        "read the demo login from a least-privilege snapshot, ",
        "called the service with its token, ",
        "and streamed the text back to qbox as MCP progress notifications.",
    ]
}

async fn start_standin(ip: IpAddr, token: &str, in_container: bool) -> anyhow::Result<StandinQ> {
    let standin = StandinQ::start_on(ip, token)
        .await
        .with_context(|| format!("starting the stand-in Amazon Q service on {ip}"))?;
    let mut answer = Answer::text(&answer_pieces(in_container));
    // A pause after the first piece shows the streaming for what it is.
    answer.pause_after_first = Duration::from_millis(300);
    standin.push(Reply::Answer(answer));
    Ok(standin)
}

fn current_exe() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding the qbox executable")?;
    Ok(exe.display().to_string())
}

/// `qbox --db STORE run -i ... IMAGE -- serve`: the MCP server is the
/// container's stdio, reached through `qbox run` itself.
fn qbox_run_endpoint(
    store: &Path,
    name: &str,
    image: &str,
    q_url: &str,
) -> anyhow::Result<Endpoint> {
    let args = [
        "--db",
        &store.display().to_string(),
        "run",
        "-i",
        "--name",
        name,
        "-e",
        &format!("{}={q_url}", crate::qapi::Q_ENDPOINT_ENV),
        image,
        "--",
        "serve",
    ]
    .map(str::to_owned)
    .to_vec();
    Ok(Endpoint::Command {
        program: current_exe()?,
        args,
        env: Vec::new(),
    })
}

/// The answer must be the stand-in's, and the stand-in must have been
/// called once, with the demo login's token.
fn check_outcome(
    text: &str,
    expected: &str,
    standin: &StandinQ,
    token: &str,
) -> anyhow::Result<()> {
    if text != expected {
        return Err(CommandError::new(
            exit::ERROR,
            format!("the answer differs from what the stand-in sent: {text:?}"),
        )
        .into());
    }
    let requests = standin.requests();
    let authorized = requests
        .iter()
        .filter(|r| r.authorization.as_deref() == Some(&format!("Bearer {token}")))
        .count();
    if requests.len() != 1 || authorized != 1 {
        return Err(CommandError::new(
            exit::ERROR,
            format!(
                "the stand-in saw {} request(s), {authorized} with the demo token",
                requests.len()
            ),
        )
        .into());
    }
    Ok(())
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}
