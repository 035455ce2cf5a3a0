//! `qbox keep NAME|ID`: a new keeper for a container started with `qbox
//! run -d` whose keeper died (killed, crashed), and, hidden, `keep
//! --foreground ID`, the keeper process itself, whose log this writes. What
//! a keeper is and does: `container::keeper`.

use std::path::Path;
use std::time::Duration;

use crate::app::events::{self, Weight};
use crate::app::report::printable_line;
use crate::app::term::Palette;
use crate::container::detached::KeeperState;
use crate::container::image;
use crate::container::keeper::{
    self, DEFAULT_ENGINE_PATIENCE, KeeperEnd, KeeperNote, MAX_ENGINE_PATIENCE,
};
use crate::container::manage;
use crate::exit::{self, CommandError};
use crate::store::StoreQuery;
use crate::timefmt::rfc3339_seconds;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox keep web           # web's keeper was killed: start a new one
  qbox ps                 # KEEPER says running (pid N), dead or none

Only containers started with qbox run -d have a keeper of their own (a foreground
qbox run keeps its container's login itself). The keeper ends, and removes the
container's login snapshot, when the container stops or is removed. Its log:
$XDG_STATE_HOME/qbox/keepers/<container id>.log (~/.local/state/qbox/keepers/...);
a keeper that starts removes the logs nothing has written to for 30 days.
`qbox run --attach-keeper NAME|ID` is the same command.

Exit codes: 0 a keeper runs, 1 the container is not one qbox run -d started and
that runs, a keeper already runs, or the keeper did not start.")]
pub struct KeepArgs {
    /// The container: name or id (an id prefix of at least 4 characters).
    #[arg(value_name = "NAME|ID")]
    pub container: String,
    /// Be the keeper, in this process (what `qbox run -d` and `qbox keep` start).
    #[arg(long, hide = true)]
    pub foreground: bool,
    /// How long a keeper waits for an engine that does not answer before it
    /// ends (removing the login it kept): a keeper started by `qbox run -d`
    /// or `qbox keep` inherits the variable.
    #[arg(
        long,
        hide = true,
        env = "QBOX_KEEPER_ENGINE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = DEFAULT_ENGINE_PATIENCE,
        value_parser = clap::value_parser!(u64).range(1..=MAX_ENGINE_PATIENCE)
    )]
    pub engine_timeout: u64,
}

impl KeepArgs {
    /// What `qbox run --attach-keeper NAME|ID` means: `qbox keep NAME|ID`.
    pub fn attach(container: String) -> Self {
        Self {
            container,
            foreground: false,
            engine_timeout: DEFAULT_ENGINE_PATIENCE,
        }
    }
}

/// `runtime` is `qbox run`'s runtime directory, where detached containers
/// keep their snapshots.
pub async fn run(
    args: KeepArgs,
    query: StoreQuery,
    runtime: &Path,
    palette: Palette,
) -> anyhow::Result<u8> {
    if args.foreground {
        let patience = Duration::from_secs(args.engine_timeout);
        return foreground(&args.container, query, runtime, patience).await;
    }
    let docker = image::connect().await?;
    let containers = manage::list(&docker).await?;
    keeper::sweep(runtime, &containers);
    let wanted = &args.container;
    let Some(container) = manage::find(&containers, wanted) else {
        return Err(CommandError::new(
            exit::ERROR,
            format!("no container that qbox run started is named `{wanted}`"),
        )
        .hint("`qbox ps -a` lists them")
        .into());
    };
    let name = &container.name;
    if container.run.is_some() {
        return Err(CommandError::new(
            exit::ERROR,
            format!("`{name}` was started by a foreground qbox run, which keeps its login itself"),
        )
        .hint("only containers started with qbox run -d get a keeper of their own; if its qbox run was killed, stop the container and start it again with qbox run -d")
        .into());
    }
    if container.state != "running" {
        return Err(CommandError::new(
            exit::ERROR,
            format!("`{name}` is not running ({})", container.state),
        )
        .hint("a stopped container needs no login; start a new one with qbox run -d")
        .into());
    }
    if container.detached.is_none() {
        return Err(CommandError::new(
            exit::ERROR,
            format!("`{name}` has no login snapshot to keep fresh"),
        )
        .hint("it was started with --auth none or --auth live, which need no keeper")
        .into());
    }
    let Some(dir) = keeper::detached_dir(runtime, container) else {
        return Err(CommandError::new(
            exit::ERROR,
            format!("the login snapshot of `{name}` is gone"),
        )
        .hint(format!(
            "its directory under {} was removed (a reboot empties the runtime directory): stop the container and start it again with qbox run -d",
            runtime.display()
        ))
        .into());
    };
    if let KeeperState::Running { pid } = dir.keeper_state() {
        return Err(CommandError::new(
            exit::ERROR,
            format!("a keeper already runs for `{name}` (pid {pid})"),
        )
        .hint("`qbox ps` shows it; a container has one keeper at a time")
        .into());
    }
    let settings = keeper::recorded_settings(&dir, &container.id).ok_or_else(|| {
        CommandError::new(
            exit::ERROR,
            format!(
                "the login snapshot of `{name}` records no keeper settings for it ({})",
                dir.path().join("keeper.json").display()
            ),
        )
        .hint("stop the container and start it again with qbox run -d")
    })?;
    let started = keeper::spawn(&container.id, &settings, &dir).await?;
    eprintln!(
        "{} keeping the login of {name} fresh (keeper pid {}, log {})",
        palette.bold("qbox:"),
        started.pid,
        started.log.display()
    );
    crate::app::output::println(format_args!("{name}"))?;
    Ok(exit::OK)
}

/// A timestamped line in the keeper's log.
fn log_line(text: &str) {
    eprintln!(
        "{} {}",
        rfc3339_seconds(time::OffsetDateTime::now_utc()),
        printable_line(text)
    );
}

/// A warning in the keeper's log, with the prefix warnings have on a
/// terminal.
fn log_warning(text: &str) {
    log_line(&format!("{} {text}", crate::app::report::WARNING));
}

/// The keeper process (`keep --foreground`): the library keeps the login
/// fresh; its notes go to the log, timestamped, the warnings marked as on a
/// terminal.
async fn foreground(
    id: &str,
    query: StoreQuery,
    runtime: &Path,
    patience: Duration,
) -> anyhow::Result<u8> {
    let mut note = |note: KeeperNote<'_>| match note {
        KeeperNote::Line(text) => log_line(&text),
        KeeperNote::Warning(text) => log_warning(&text),
        KeeperNote::Watch(event) => {
            let said = events::describe(&event, time::OffsetDateTime::now_utc());
            match said.weight {
                Weight::Progress => log_line(&said.text),
                Weight::Warning => {
                    log_warning(&said.text);
                    if let Some(hint) = said.hint {
                        log_line(&format!("hint: {hint}"));
                    }
                }
            }
        }
    };
    Ok(
        match keeper::keep(id, query, runtime, patience, &mut note).await? {
            KeeperEnd::ContainerGone | KeeperEnd::Stopped(_) => exit::OK,
            KeeperEnd::EngineLost | KeeperEnd::SnapshotFailed => exit::ERROR,
        },
    )
}
