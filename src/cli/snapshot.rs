//! `qbox snapshot DIR [--watch] [--access-only | --refreshable]`: a
//! least-privilege copy of the login, optionally kept fresh until SIGINT or
//! SIGTERM. A kept copy is access-only unless `--refreshable`; a one-off
//! copy is full unless `--access-only`.

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use crate::app::args::parse_positive_duration;
use crate::app::events::{self, Weight};
use crate::app::report::{printable_line, warn};
use crate::app::term::Palette;
use crate::exit::{self, CommandError};
use crate::store::private_file::{DirVerdict, check_dir};
use crate::store::snapshot::{self, SHARING_MODE_BITS, SnapshotScope, parse_mode};
use crate::store::watch::{SnapshotKeeper, WatchEvent, WatchOptions};
use crate::store::{self, RefreshPolicy, StoreQuery};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox snapshot ./.qbox/auth                 # one full snapshot, token refreshed if expired
  qbox snapshot ./.qbox/auth --access-only   # one snapshot without refresh token or client secret
  qbox snapshot ./.qbox/auth --watch         # keep an access-only one fresh until Ctrl-C / SIGTERM
  qbox snapshot ./.qbox/auth --watch --refreshable   # kept fresh, and the consumer may refresh too
  docker run -v \"$PWD/.qbox/auth:/run/qbox/auth:ro\" -e QBOX_DB=/run/qbox/auth/data.sqlite3 IMAGE

Mount the directory, not the file: the file is replaced atomically on every update.
An access-only snapshot works until its token expires (about an hour after the last
refresh); with --watch the host refreshes it before then.")]
pub struct SnapshotArgs {
    /// Directory to write data.sqlite3 into (created with mode 0700 if missing).
    dir: PathBuf,
    /// Keep running: refresh the token on the host before it expires and
    /// rewrite the snapshot whenever the host's login changes.
    #[arg(long)]
    watch: bool,
    /// How often --watch reads the host store (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration, requires = "watch")]
    interval: Duration,
    /// With --watch, refresh the host token this long before it expires
    /// (at most half its lifetime, and never twice within 30 s).
    #[arg(long, default_value = "5m", value_parser = parse_positive_duration, requires = "watch")]
    refresh_before: Duration,
    /// File mode of the snapshot, in octal. Modes that let the group or
    /// others read it are refused unless --force-mode.
    #[arg(long, default_value = "600", value_parser = parse_mode)]
    mode: u32,
    /// Accept a --mode that lets the group or others read the snapshot
    /// (it holds the login's tokens).
    #[arg(long)]
    force_mode: bool,
    /// Do not refresh an expired token before writing the snapshot.
    #[arg(long, conflicts_with = "watch")]
    no_refresh: bool,
    /// Leave out the refresh token and the client registration: the copy
    /// works until its token expires and cannot mint new tokens (the
    /// default with --watch).
    #[arg(long, conflicts_with = "refreshable")]
    access_only: bool,
    /// Keep the refresh token and the client registration, for a consumer
    /// that must refresh on its own (the default without --watch).
    #[arg(long)]
    refreshable: bool,
}

impl SnapshotArgs {
    /// What the snapshot carries: a kept copy is access-only, a one-off
    /// copy full, unless the flags say otherwise.
    fn scope(&self) -> SnapshotScope {
        match (self.access_only, self.refreshable, self.watch) {
            (true, _, _) => SnapshotScope::AccessOnly,
            (_, true, _) => SnapshotScope::Refreshable,
            (false, false, true) => SnapshotScope::AccessOnly,
            (false, false, false) => SnapshotScope::Refreshable,
        }
    }
}

/// Refuses a mode that shares the snapshot's secrets, and a directory
/// others could change; warns about a directory others can read.
fn check_destination(args: &SnapshotArgs, palette: Palette) -> anyhow::Result<()> {
    if args.mode & SHARING_MODE_BITS != 0 && !args.force_mode {
        let what = match args.scope() {
            SnapshotScope::Refreshable => {
                "the snapshot holds the refresh token and the client secret, which let anyone who reads it use your login for weeks"
            }
            SnapshotScope::AccessOnly => {
                "the snapshot holds an access token, which lets anyone who reads it use your login until it expires"
            }
        };
        return Err(CommandError::new(
            exit::USAGE,
            format!("refusing --mode {:04o}: {what}", args.mode),
        )
        .hint("keep the default 600 and run the consumer as your user, or add --force-mode if the group is trusted")
        .into());
    }
    if let DirVerdict::Wide { mode } = check_dir(&args.dir)? {
        warn(
            palette,
            &format!(
                "{} has mode {mode:04o}: other users can see what is in it; 0700 is safer",
                args.dir.display()
            ),
            None,
        );
    }
    Ok(())
}

pub async fn run(
    args: SnapshotArgs,
    query: StoreQuery,
    quiet: bool,
    palette: Palette,
) -> anyhow::Result<u8> {
    check_destination(&args, palette)?;
    if args.watch {
        return watch(args, query, quiet, palette).await;
    }
    let mut login = query.resolve(OffsetDateTime::now_utc())?;
    login.require_token()?;
    if !args.no_refresh {
        login = store::ensure_fresh(login).await?;
    }
    let taken = snapshot::take(&login, &args.dir, args.mode, args.scope())?;
    crate::app::output::println(format_args!("{}", taken.path.display()))?;
    Ok(exit::OK)
}

async fn watch(
    args: SnapshotArgs,
    query: StoreQuery,
    quiet: bool,
    palette: Palette,
) -> anyhow::Result<u8> {
    let args_scope = args.scope();
    let options = WatchOptions {
        interval: args.interval,
        policy: RefreshPolicy::with_refresh_before(args.refresh_before),
        mode: args.mode,
        scope: args.scope(),
    };
    let keeper = SnapshotKeeper::new(query, args.dir, options);
    if !quiet {
        eprintln!(
            "watching the host login, keeping {} fresh ({}; Ctrl-C to stop)",
            keeper.snapshot_path().display(),
            args_scope.name()
        );
    }
    let mut printed_path = false;
    let mut on_event = |event: WatchEvent<'_>| {
        if let WatchEvent::Written { path, .. } = event
            && !printed_path
        {
            // The path is data: print it once, for scripts.
            // A reader that left does not stop the keeper.
            let _ = crate::app::output::println(format_args!("{}", path.display()));
            printed_path = true;
        }
        let said = events::describe(&event, OffsetDateTime::now_utc());
        match said.weight {
            Weight::Progress if quiet => {}
            Weight::Progress => eprintln!("{} {}", palette.good("✓"), printable_line(&said.text)),
            Weight::Warning => warn(palette, &said.text, said.hint.as_deref()),
        }
    };
    keeper
        .run(crate::app::signals::shutdown(), &mut on_event)
        .await?;
    if !quiet {
        eprintln!("stopped");
    }
    Ok(exit::OK)
}
