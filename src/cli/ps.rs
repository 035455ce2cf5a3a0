//! `qbox ps` and `qbox stop`: the containers `qbox run` started, whether
//! the `qbox run` that keeps each one's login fresh still runs, and
//! stopping them as `docker stop` does.

use std::path::Path;
use std::time::Duration;

use crate::app::report::{printable_line, warn};
use crate::app::term::Palette;
use crate::container::detached::{self, KeeperState};
use crate::container::image;
use crate::container::keeper;
use crate::container::manage::{self, Managed};
use crate::container::runtime_dir::{self, Owner};
use crate::exit::{self, CommandError};
use crate::timefmt::rfc3339_seconds;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox ps                 # running containers that qbox run started, with their login's expiry
  qbox ps -a --json       # all of them, as JSON

KEEPER is what keeps the container's login fresh: the `qbox run` in the foreground, or
for a container started with qbox run -d its keeper process. `running (pid N)`, `dead`
when it was killed or ended (`dead: WHY` when it ended by itself, having lost its
engine; the container keeps its last snapshot until it expires: `qbox keep
NAME` starts a new keeper for a detached container; a foreground one is stopped and run
again), or `none` (a detached container with --auth none or live needs none).
Container logs: docker logs NAME; a keeper's: $XDG_STATE_HOME/qbox/keepers/ID.log.")]
pub struct PsArgs {
    /// Also list containers that have exited (kept with --keep).
    #[arg(short, long)]
    all: bool,
    /// Print a JSON array: id, name, image, state, status, created, run, keeper,
    /// token_expires_at.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox stop web           # SIGTERM (the image's stop signal), SIGKILL 10 s later
  qbox stop -t 0 web db   # kill at once

Only containers that qbox run started are stopped; others are refused. The `qbox run`
in charge then exits with the container's code and removes its snapshot; a detached
container's keeper ends and removes its snapshot (qbox stop waits for it).
Exit codes: 0 all stopped, 1 one was not found, not qbox's, or the engine failed.")]
pub struct StopArgs {
    /// Seconds to wait for the container to stop before killing it.
    #[arg(
        short = 't',
        long = "time",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    time: u32,
    /// Names or ids (an id prefix of at least 4 characters).
    #[arg(required = true, value_name = "NAME|ID")]
    containers: Vec<String>,
}

/// When the login mounted in the container expires: read from the
/// snapshot its `qbox run` (or, detached, its keeper) keeps in the runtime
/// directory.
fn token_expiry(runtime: &Path, container: &Managed) -> Option<time::OffsetDateTime> {
    let dir = if container.detached.is_some() {
        keeper::detached_dir(runtime, container)?.auth_dir()
    } else {
        let run = container.run.as_ref()?;
        runtime_dir::RuntimeDir::existing(runtime.to_owned())
            .ok()??
            .run_dir(run)
            .join(runtime_dir::RUN_AUTH_DIR)
    };
    let snapshot = dir.join(crate::store::snapshot::SNAPSHOT_FILE_NAME);
    let login = crate::store::read_login(&snapshot, None).ok()?;
    Some(login.token?.token.expires_at)
}

/// What keeps a container's login fresh, and whether it runs: `running`,
/// `dead` or `none`, with the pid.
fn keeper_state(runtime: &Path, container: &Managed) -> (&'static str, Option<u32>) {
    if container.detached.is_some() {
        return match keeper::detached_dir(runtime, container).map(|dir| dir.keeper_state()) {
            Some(KeeperState::Running { pid }) => ("running", Some(pid)),
            _ => ("dead", None),
        };
    }
    let Some(run) = &container.run else {
        return ("none", None);
    };
    let pid = run.split('-').next().and_then(|p| p.parse().ok());
    match runtime_dir::run_owner(run) {
        Owner::Alive => ("running", pid),
        Owner::Gone => ("dead", pid),
    }
}

/// Why a detached container's keeper ended by itself, if it said (it
/// lost its engine).
fn keeper_ended(runtime: &Path, container: &Managed) -> Option<String> {
    keeper::detached_dir(runtime, container)
        .filter(|dir| dir.keeper_state() == KeeperState::Dead)?
        .end_reason()
}

/// `runtime` is `qbox run`'s runtime directory, where the snapshots are.
pub async fn ps(args: PsArgs, runtime: &Path, palette: Palette) -> anyhow::Result<u8> {
    let docker = image::connect().await?;
    let containers: Vec<Managed> = manage::list(&docker)
        .await?
        .into_iter()
        .filter(|c| args.all || c.state == "running")
        .collect();
    if args.json {
        let rows: Vec<serde_json::Value> = containers
            .iter()
            .map(|c| {
                let (state, pid) = keeper_state(runtime, c);
                let mut row = serde_json::to_value(c).unwrap_or_default();
                let log = c
                    .detached
                    .is_some()
                    .then(|| keeper::log_path(&c.id))
                    .flatten();
                row["keeper"] = serde_json::json!({
                    "state": state,
                    "pid": pid,
                    "detached": c.detached.is_some() || c.run.is_none(),
                    "log": log,
                    "ended": keeper_ended(runtime, c),
                });
                row["token_expires_at"] = token_expiry(runtime, c).map(rfc3339_seconds).into();
                row
            })
            .collect();
        crate::app::output::println(format_args!("{}", serde_json::to_string_pretty(&rows)?))?;
        return Ok(exit::OK);
    }
    crate::app::output::println(format_args!(
        "{:<14} {:<24} {:<28} {:<22} {:<22} KEEPER",
        "CONTAINER ID", "NAME", "IMAGE", "STATUS", "LOGIN EXPIRES"
    ))?;
    for c in &containers {
        let keeper = match keeper_state(runtime, c) {
            ("running", Some(pid)) => format!("running (pid {pid})"),
            ("dead", _) => match keeper_ended(runtime, c) {
                Some(why) => palette.warning(&format!("dead: {}", printable_line(&why))),
                None => palette.warning("dead"),
            },
            (state, _) => state.to_owned(),
        };
        let expires = token_expiry(runtime, c).map_or_else(|| "-".to_owned(), rfc3339_seconds);
        // Engine text, printed only as single clean lines.
        crate::app::output::println(format_args!(
            "{:<14} {:<24} {:<28} {:<22} {expires:<22} {keeper}",
            printable_line(c.id.get(..12).unwrap_or(&c.id)),
            printable_line(&c.name),
            printable_line(&c.image),
            printable_line(&c.status)
        ))?;
    }
    Ok(exit::OK)
}

/// `runtime` is `qbox run`'s runtime directory, where the snapshots are.
pub async fn stop(args: StopArgs, runtime: &Path, palette: Palette) -> anyhow::Result<u8> {
    let docker = image::connect().await?;
    let containers = manage::list(&docker).await?;
    keeper::sweep(runtime, &containers);
    // Every name is checked before anything is stopped.
    let mut targets = Vec::new();
    for wanted in &args.containers {
        let Some(found) = manage::find(&containers, wanted) else {
            return Err(CommandError::new(
                exit::ERROR,
                format!("no container that qbox run started is named `{wanted}`"),
            )
            .hint("`qbox ps -a` lists them; qbox stops only its own containers (docker stop stops any)")
            .into());
        };
        targets.push(found);
    }
    for target in targets {
        manage::stop(&docker, &target.id, args.time).await?;
        if let Some(dir) = keeper::detached_dir(runtime, target) {
            match detached::settle_after_stop(&dir, KEEPER_PATIENCE).await {
                Ok(true) => {}
                Ok(false) => warn(
                    palette,
                    &format!(
                        "the keeper of {} still runs {}s after the container stopped",
                        target.name,
                        KEEPER_PATIENCE.as_secs()
                    ),
                    None,
                ),
                Err(err) => warn(
                    palette,
                    &format!("could not remove {}: {err}", dir.path().display()),
                    None,
                ),
            }
        }
        crate::app::output::println(format_args!("{}", printable_line(&target.name)))?;
    }
    Ok(exit::OK)
}

/// How long `qbox stop` waits for a detached container's keeper to end.
const KEEPER_PATIENCE: Duration = Duration::from_secs(15);
