//! The `qbox` command line: clap definitions, and one handler module per
//! subcommand. Handlers turn plain clap values into checked inputs, call the
//! library, and write data to stdout and everything human to stderr.

mod build_progress;
mod debug;
mod demo;
mod doctor;
mod export;
mod image;
mod keep;
mod mcp_config;
mod ps;
mod run;
mod run_options;
mod snapshot;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::app::term::Palette;
use crate::app::{block_on, chat, parse_args};
use crate::container::runtime_dir;
use crate::exit::{self, CommandError};
use crate::store::{Flavor, StoreQuery};

const EXAMPLES: &str = "\
Examples:
  qbox demo                                 # the whole chain, with no login and no network
  qbox doctor                               # where is my login, is it usable?
  qbox export-token --format env > .env     # tokens for docker --env-file
  eval \"$(qbox export-token --format shell)\"
  qbox export-token --field access          # just the access token
  qbox snapshot ~/.qbox/auth --watch        # keep a least-privilege copy fresh
  qbox chat \"what does this error mean?\"    # ask Amazon Q, streamed
  qbox run my-image -- kiro-cli chat \"hello\" # a container logged in to Amazon Q
  qbox run -v \"$PWD:/work\" -w /work --mcp dev-image  # your image as an MCP server
  qbox run -d --name web -p 127.0.0.1:8080:8080 qbox-sidecar:latest -- serve --http 0.0.0.0:8080
  qbox ps                                   # containers qbox run started, and their keepers
  qbox keep web                             # a new keeper for a detached container
  qbox image build                          # the qbox-sidecar image, built locally
  qbox image build --agent --cli ./q        # the agent image: sidecar + CLI, agent enabled
  qbox debug decode capture.bin             # event-stream capture as JSON lines
  qbox completions bash > /etc/bash_completion.d/qbox

Exit codes: 0 ok, 1 error, 2 usage, 4 no usable login.
Environment: QBOX_DB, QBOX_CLI, QBOX_OIDC_ENDPOINT, QBOX_KIRO_AUTH_ENDPOINT, QBOX_Q_ENDPOINT,
QBOX_Q_TIMEOUT, QBOX_ACCESS_TOKEN, QBOX_PROFILE_ARN, QBOX_REGION, QBOX_STATE_DIR,
QBOX_LOCK_TIMEOUT, RUST_LOG, NO_COLOR. A variable set to the empty string counts as unset.";

/// Use your Amazon Q Developer CLI / Kiro CLI login outside the CLI.
#[derive(Debug, Parser)]
#[command(name = "qbox", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Use this auth store instead of searching the CLIs' default locations.
    #[arg(long, global = true, env = "QBOX_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Which CLI's store to use when both are installed: kiro (the Kiro CLI)
    /// or q (the legacy Amazon Q Developer CLI) (default: the one with a
    /// usable login). With `image build --agent`: the path of the CLI binary
    /// to put in the image (`/opt/kiro/kiro-cli`, `./kiro-cli`).
    #[arg(long, global = true, env = "QBOX_CLI", value_name = "kiro|q|PATH",
          value_parser = parse_cli_choice)]
    pub cli: Option<CliChoice>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace); give it
    /// before the subcommand (`qbox -v doctor`), since `qbox run -v` is a volume.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// What `--cli` names: the CLI whose login qbox uses, or (for
/// `image build --agent`) a CLI binary. One option serves both because clap
/// cannot give a subcommand its own `--cli` beside a global one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliChoice {
    Flavor(Flavor),
    Binary(PathBuf),
}

/// `q` and `kiro` name flavors; anything with a path separator names a file
/// (so a binary called `q` in the working directory is `./q`).
fn parse_cli_choice(text: &str) -> Result<CliChoice, String> {
    if let Some(flavor) = Flavor::from_name(text) {
        return Ok(CliChoice::Flavor(flavor));
    }
    if text.contains(std::path::MAIN_SEPARATOR) || text.contains('/') {
        return Ok(CliChoice::Binary(PathBuf::from(text)));
    }
    Err(format!(
        "`{text}` is neither `kiro` nor `q`; a CLI binary (for `image build --agent`) is \
         given as a path, e.g. `./{text}`"
    ))
}

impl GlobalArgs {
    /// The store the user chose. A binary path in `--cli` is a usage error
    /// here: it only means something to `image build --agent`.
    pub fn store_query(&self) -> Result<StoreQuery, CommandError> {
        let cli = match &self.cli {
            None => None,
            Some(CliChoice::Flavor(flavor)) => Some(*flavor),
            Some(CliChoice::Binary(path)) => {
                return Err(CommandError::new(
                    exit::USAGE,
                    format!(
                        "--cli {} names a CLI binary, which only `qbox image build --agent` takes",
                        path.display()
                    ),
                )
                .hint("to pick a login, give --cli q or --cli kiro (or set QBOX_CLI)"));
            }
        };
        Ok(StoreQuery {
            db: self.db.clone(),
            cli,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the whole chain working, with no login and no network: store, stand-in Amazon Q,
    /// sidecar image, `qbox run`, an MCP call and its streamed answer.
    Demo(demo::DemoArgs),
    /// Show where qbox looks, which login it found, and whether Docker answers.
    Doctor(doctor::DoctorArgs),
    /// Print the login's tokens for scripts and CI (refreshing them if expired).
    ExportToken(export::ExportArgs),
    /// Write a least-privilege copy of the login to DIR/data.sqlite3.
    Snapshot(snapshot::SnapshotArgs),
    /// Ask Amazon Q through qbox's own streaming client; the answer streams to stdout.
    Chat(chat::ChatArgs),
    /// Tools for debugging traffic.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Run a container that is logged in to Amazon Q (the login mounted read-only, kept fresh).
    Run(Box<run::RunArgs>),
    /// List the containers qbox run started, and whether their login keeper runs.
    Ps(ps::PsArgs),
    /// Stop containers qbox run started (their stop signal, then a kill after -t seconds).
    Stop(ps::StopArgs),
    /// Start a new login keeper for a container started with qbox run -d whose keeper died.
    Keep(keep::KeepArgs),
    /// Build the qbox-sidecar container image (no registry needed).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Print an MCP client configuration that runs the sidecar.
    McpConfig(mcp_config::McpConfigArgs),
    /// `qbox-sidecar`, from this executable (the demo's local mode).
    #[command(hide = true)]
    Sidecar {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Parses `args`, runs the command, and returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> u8 {
    let args: Vec<OsString> = args.into_iter().collect();
    // A multi-call binary: under the sidecar's name, qbox is the sidecar
    // (the image `qbox demo` builds holds this very file as qbox-sidecar).
    if invoked_as(&args, crate::container::static_binary::SIDECAR) {
        return crate::sidecar::run(args);
    }
    let cli = match parse_args::<Cli>(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    crate::app::finish(cli.global.verbose, cli.global.quiet, |palette| {
        dispatch(cli, palette)
    })
}

/// Whether the program was started under the file name `name`.
fn invoked_as(args: &[OsString], name: &str) -> bool {
    args.first()
        .and_then(|argv0| std::path::Path::new(argv0).file_name())
        .is_some_and(|file| file == name)
}

fn dispatch(cli: Cli, palette: Palette) -> anyhow::Result<u8> {
    // Only the commands that read a login ask for the query, so a binary
    // path in --cli is an error there and nowhere else.
    let query = || cli.global.store_query();
    // The session's runtime directory when it is usable, and so `qbox
    // run`'s: decided here once, for the commands that look there.
    let xdg_runtime_dir = crate::store::user_dirs::private_runtime_dir;
    let runtime_dir = || runtime_dir::locate(xdg_runtime_dir().as_deref());
    match cli.command {
        Command::Demo(args) => block_on(demo::run(args, cli.global.quiet, palette)),
        Command::Sidecar { args } => Ok(crate::sidecar::run(
            std::iter::once(OsString::from("qbox-sidecar")).chain(args),
        )),
        Command::Doctor(args) => block_on(doctor::run(
            args,
            query()?,
            xdg_runtime_dir().as_deref(),
            palette,
        )),
        Command::ExportToken(args) => block_on(export::run(args, query()?, palette)),
        Command::Snapshot(args) => {
            block_on(snapshot::run(args, query()?, cli.global.quiet, palette))
        }
        Command::Chat(args) => block_on(chat::run(
            args,
            query()?,
            true,
            cli.global.quiet,
            chat::ChatSide::Host,
        )),
        Command::Debug(command) => debug::run(command),
        Command::McpConfig(args) => mcp_config::run(&args, palette),
        Command::Image(command) => block_on(image::run(
            command,
            cli.global.cli.clone(),
            cli.global.quiet,
            palette,
        )),
        Command::Run(args) => match args.keeper_to_attach() {
            // `run --attach-keeper NAME|ID` is `keep NAME|ID`.
            Some(container) => block_on(keep::run(
                keep::KeepArgs::attach(container),
                query()?,
                &runtime_dir(),
                palette,
            )),
            None => block_on(run::run(*args, query()?, &runtime_dir(), palette)),
        },
        Command::Ps(args) => block_on(ps::ps(args, &runtime_dir(), palette)),
        Command::Stop(args) => block_on(ps::stop(args, &runtime_dir(), palette)),
        Command::Keep(args) => block_on(keep::run(args, query()?, &runtime_dir(), palette)),
        Command::Completions { shell } => {
            // Generated into memory: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "qbox", &mut script);
            crate::app::output::print(script)?;
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sidecar_is_told_by_the_file_name_it_was_started_under() {
        let args = |argv0: &str| vec![OsString::from(argv0), OsString::from("serve")];
        assert!(invoked_as(&args("qbox-sidecar"), "qbox-sidecar"));
        assert!(invoked_as(
            &args("/usr/local/bin/qbox-sidecar"),
            "qbox-sidecar"
        ));
        assert!(!invoked_as(&args("/usr/bin/qbox"), "qbox-sidecar"));
        assert!(!invoked_as(&args("/opt/qbox-sidecar/qbox"), "qbox-sidecar"));
        assert!(!invoked_as(&[], "qbox-sidecar"));
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cli_takes_a_flavor_or_a_path() {
        assert_eq!(
            parse_cli_choice("kiro"),
            Ok(CliChoice::Flavor(Flavor::Kiro))
        );
        assert_eq!(
            parse_cli_choice("Q"),
            Ok(CliChoice::Flavor(Flavor::AmazonQ))
        );
        assert_eq!(
            parse_cli_choice("./q"),
            Ok(CliChoice::Binary(PathBuf::from("./q")))
        );
        let bare = parse_cli_choice("kiro-cli").unwrap_err();
        assert!(bare.contains("`./kiro-cli`"), "{bare}");
    }

    #[test]
    fn a_binary_path_does_not_pick_a_login() {
        let cli = Cli::try_parse_from(["qbox", "--cli", "/opt/q", "doctor"]).unwrap();
        let error = cli.global.store_query().unwrap_err();
        assert_eq!(error.code, exit::USAGE);
        assert!(error.message.contains("/opt/q"), "{}", error.message);
        let cli = Cli::try_parse_from(["qbox", "doctor", "--cli", "kiro"]).unwrap();
        assert_eq!(cli.global.store_query().unwrap().cli, Some(Flavor::Kiro));
    }
}
