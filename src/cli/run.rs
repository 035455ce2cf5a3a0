//! `qbox run IMAGE [-- CMD...]`: a container that is already logged in to
//! Amazon Q, with the login mounted read-only and kept fresh while it runs.
//!
//! The login is prepared here: a snapshot in the run's directory under the
//! runtime directory with a `SnapshotKeeper` running beside the container, or
//! the live directory (only a CLI's own data directory, `spec::live_mount`).
//! `options` refuses what would let a container remount the login writable
//! (`guard_login`) and mount targets at, in or above `/run/qbox/auth` after
//! lexical normalisation (`is_reserved_target`).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::app::events::{self, Weight};
use crate::app::report::warn;
use crate::app::term::Palette;
use crate::container::detached::{DETACHED_LABEL, DetachedDir};
use crate::container::keeper::{self, KeeperSettings};
use crate::container::run::RunError;
use crate::container::runtime_dir::{self, RuntimeDir};
use crate::container::sidecar_image;
use crate::container::spec::{AUTH_DB, AUTH_KEY, AuthMode, KEY_FILE_NAME, RunSpec, live_mount};
use crate::container::{CREATOR_LABEL, RUN_LABEL};
use crate::exit::{self, CommandError, Diagnose};
use crate::store::watch::{CopyDirs, SnapshotKeeper, WatchEvent, WatchOptions};
use crate::store::{self, StoreQuery, snapshot};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox run my-image -- kiro-cli chat --no-interactive \"hello\"
  qbox run -it my-image -- sh
  qbox run -e AWS_REGION -v \"$PWD:/work\" -w /work my-image -- make test
  qbox run --auth live my-image -- q whoami
  qbox run -d --name web -p 127.0.0.1:8080:8080 qbox-sidecar:latest -- serve --http 0.0.0.0:8080
  qbox keep web                     # (= qbox run --attach-keeper web) a new keeper for web
  qbox run --refreshable my-image -- long-job   # the container may refresh on its own

Auth modes: snapshot (default) mounts a private directory holding only the login rows
(access token and its expiry, profile; no refresh token, no client secret), refreshed on
the host while the container runs (--refreshable adds the refresh token and the client
registration, for a container that must refresh by itself); live
mounts the CLI's whole data directory read-only (conversations included; a store outside
amazon-q/ or kiro-cli/ is refused); none mounts nothing. Inside: QBOX_DB names the store
(/run/qbox/auth/data.sqlite3).

Detached (-d): the container's id is printed and qbox exits; a keeper process (`qbox keep
--foreground ID`, logging to $XDG_STATE_HOME/qbox/keepers/ID.log) keeps the snapshot fresh and
ends, removing it, when the container stops or is removed. `qbox ps` shows it, `qbox stop` stops
the container (and so its keeper), `qbox keep` restarts a keeper that died. -d -i keeps the
container's stdin open as docker does; -d -t allocates a terminal (read it with docker logs).

Signals: SIGINT, SIGTERM and SIGHUP are passed on to the container; if it still runs
--stop-timeout seconds later (or at a second Ctrl-C) qbox kills it and exits 128+signal
(130, 143, 129). The engine removes the container when it exits (unless --keep), even if
qbox itself is killed; snapshot directories of killed runs are removed by the next run.

Exit codes: the container's, or 125 (qbox or engine failure), 126 (cannot invoke), 127 (not found),
128+signal when qbox had to kill the container after a signal.")]
pub struct RunArgs {
    #[command(flatten)]
    docker: super::run_options::DockerOptions,
    /// Keep the container after it exits (by default the engine removes it when it exits).
    #[arg(long)]
    keep: bool,
    /// How the login reaches the container.
    #[arg(long, value_enum, default_value_t = AuthMode::Snapshot)]
    auth: AuthMode,
    /// Run in the background: print the container's id and exit; a keeper process keeps
    /// the login fresh until the container stops (`qbox ps`, `qbox stop`, `qbox keep`).
    #[arg(short = 'd', long, conflicts_with = "mcp")]
    detach: bool,
    /// Start a new keeper for a container started with -d whose keeper died; the same as
    /// `qbox keep NAME|ID` (the primary spelling).
    #[arg(long, exclusive = true, value_name = "NAME|ID")]
    attach_keeper: Option<String>,
    /// With --auth snapshot: also mount the refresh token and the client registration,
    /// for a container that refreshes on its own (by default it gets the access token only).
    #[arg(long)]
    refreshable: bool,
    /// Serve MCP over stdio from this container: the sidecar is mounted read-only at
    /// /run/qbox/bin/qbox-sidecar and runs `serve` (arguments after `--` are added); the
    /// image's own `q` or `kiro-cli` serves q-developer-agent, which is enabled. Nothing is
    /// compiled: without a static sidecar this qbox itself is mounted, with its loader and
    /// libraries under /run/qbox/lib, so it runs in any Linux image of its CPU. Implies -i.
    #[arg(long, conflicts_with_all = ["tty", "entrypoint"])]
    mcp: bool,
    /// With --mcp: a static qbox-sidecar to mount instead (default: the one beside qbox,
    /// else this qbox with its loader and libraries).
    #[arg(long, env = "QBOX_SIDECAR_BINARY", value_name = "PATH")]
    sidecar_binary: Option<PathBuf>,
    /// The image (never pulled: it must be on this machine).
    #[arg(required_unless_present = "attach_keeper")]
    image: Option<String>,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

impl RunArgs {
    /// The image (clap requires it unless --attach-keeper is given, which
    /// runs no image).
    fn image(&self) -> &str {
        self.image.as_deref().unwrap_or_default()
    }

    /// The container of `--attach-keeper`, which is `qbox keep`'s to handle.
    pub fn keeper_to_attach(&self) -> Option<String> {
        self.attach_keeper.clone()
    }
}

fn usage(err: impl std::fmt::Display) -> anyhow::Error {
    CommandError::new(exit::ENGINE, err.to_string()).into()
}

pub(super) fn spec(args: &RunArgs) -> anyhow::Result<RunSpec> {
    // Detached, nobody types into the terminal: docker allows -dt anywhere.
    if args.docker.tty && !args.detach && !std::io::stdin().is_terminal() {
        return Err(CommandError::new(
            exit::ENGINE,
            "the input device is not a terminal, so -t cannot be used",
        )
        .hint("drop -t when piping input (keep -i)")
        .into());
    }
    let cwd = std::env::current_dir()?;
    let host_env = |name: &str| std::env::var(name).ok();
    let mut options = args
        .docker
        .host_options(&cwd, host_env, args.auth != AuthMode::None)?;
    // Your uid has no home in most images: the copy's is writable.
    let copy_sets_home = options.user.is_none();
    options
        .user
        .get_or_insert_with(|| format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid()));
    let cmd = if args.mcp {
        // --mcp is docker options of qbox's choosing: -i and -e here, the
        // sidecar's read-only mounts and --entrypoint once it is found.
        options.interactive = true;
        let env = &mut options.env;
        if !env
            .iter()
            .any(|e| e.starts_with(&format!("{AGENT_TOOLS_ENV}=")))
        {
            env.push(format!("{AGENT_TOOLS_ENV}=q-developer-agent"));
        }
        // A CLI missing from the image is then reported with its name.
        env.push(format!("{AGENT_IMAGE_ENV}={}", args.image()));
        std::iter::once("serve".to_owned())
            .chain(args.cmd.iter().cloned())
            .collect()
    } else {
        args.cmd.clone()
    };
    Ok(RunSpec {
        image: args.image().to_owned(),
        cmd,
        keep: args.keep,
        detach: args.detach,
        labels: HashMap::new(),
        auth_dir: None,
        auth_db: None,
        copy_dir: None,
        copy_sets_home,
        auth_key: None,
        console_size: options
            .tty
            .then(crate::container::tty::window_size)
            .flatten(),
        options,
    })
}

/// Runs the command; every failure of qbox itself exits 125. `runtime` is
/// the runtime directory, where each run keeps its snapshot.
pub async fn run(
    args: RunArgs,
    query: StoreQuery,
    runtime: &Path,
    palette: Palette,
) -> anyhow::Result<u8> {
    if args.refreshable && args.auth != AuthMode::Snapshot {
        return Err(usage("--refreshable needs --auth snapshot (the default)"));
    }
    let mut spec = spec(&args)?;
    // Who created it: a container this process leaves created but never
    // started (killed in between) is removed by a later run's sweep.
    spec.labels
        .insert(CREATOR_LABEL.to_owned(), runtime_dir::this_creator());
    let scope = if args.refreshable {
        snapshot::SnapshotScope::Refreshable
    } else {
        snapshot::SnapshotScope::AccessOnly
    };
    if args.detach {
        return run_detached(&args, spec, query, scope, runtime, palette).await;
    }
    run_attached(&args, spec, query, scope, runtime, palette).await
}

/// Removes a detached container's snapshot directory when `qbox run -d`
/// fails before its keeper has taken it over.
struct RemoveUnlessKept(Option<DetachedDir>);

impl Drop for RemoveUnlessKept {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = dir.remove();
        }
    }
}

/// `qbox run -d`: the container is started and its id printed; the login
/// snapshot lives in a directory of its own under the runtime directory,
/// which the keeper process started here keeps fresh and removes when the
/// container is gone.
async fn run_detached(
    args: &RunArgs,
    mut spec: RunSpec,
    query: StoreQuery,
    scope: snapshot::SnapshotScope,
    runtime_path: &Path,
    palette: Palette,
) -> anyhow::Result<u8> {
    // As the foreground run: from here on SIGINT, SIGTERM and SIGHUP end
    // this run only after what it made (snapshot, container) is removed.
    let mut signals = crate::container::run::Signals::install(false)?;
    let runtime = sweep_runtime_dir(runtime_path, args.auth == AuthMode::Snapshot, palette)?;
    signals
        .or_stop(sweep_engine(runtime_path.to_owned()))
        .await?;
    let mut guard = RemoveUnlessKept(None);
    let mut keeper = None;
    match args.auth {
        AuthMode::None => {}
        AuthMode::Live => mount_live_store(&query, &mut spec)?,
        AuthMode::Snapshot => {
            let login = match signals.or_stop(login_or_key(&query)).await?? {
                RunLogin::Store(login) => *login,
                RunLogin::Key(_) => {
                    return Err(CommandError::new(
                        exit::USAGE,
                        "qbox run -d has no store login to keep fresh, and does not take a Kiro API key alone",
                    )
                    .hint("run it in the foreground (qbox run without -d), or pass the key as a compose secret (docs/compose.md)")
                    .into());
                }
            };
            let runtime = runtime
                .as_ref()
                .ok_or_else(|| CommandError::new(exit::ENGINE, "no runtime directory"))?;
            let dir = DetachedDir::create(runtime)?;
            guard.0 = Some(dir.clone());
            let settings = KeeperSettings {
                db: std::path::absolute(&login.path)?,
                cli: login.flavor,
                scope,
            };
            // Until the keeper records itself, this process is the keeper:
            // no sweep takes the directory for one whose keeper died. The
            // settings every keeper of the container uses go in the record.
            dir.record_run(settings.recorded()).map_err(|e| {
                CommandError::new(
                    exit::ENGINE,
                    format!("recording this run in {}: {e}", dir.path().display()),
                )
            })?;
            // Its keeper rewrites it with the same scope (from the record).
            let taken = snapshot::take(&login, &dir.auth_dir(), snapshot::DEFAULT_MODE, scope)
                .map_err(reclassify)?;
            // The container's writable copy, which the keeper keeps fresh.
            write_copy(&CopyDirs::under(dir.path()), &login, &taken, scope)?;
            spec.copy_dir = Some(dir.path().to_owned());
            spec.auth_dir = Some(dir.auth_dir());
            spec.auth_db = Some(AUTH_DB.to_owned());
            spec.labels
                .insert(DETACHED_LABEL.to_owned(), dir.key().to_owned());
            spec.labels.extend(settings.labels());
            keeper = Some((dir, settings));
        }
    }
    let id = crate::container::run::start_detached(&spec, &mut signals).await?;
    if let Some((dir, settings)) = keeper {
        let spawned = signals.or_stop(keeper::spawn(&id, &settings, &dir)).await;
        let failed = match spawned {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(reclassify(err)),
            Err(interrupted) => Some(anyhow::Error::from(interrupted)),
        };
        if let Some(err) = failed {
            // A detached container nobody keeps fresh would fail later,
            // quietly; and one asked to stop is not left running.
            crate::container::run::discard(&id).await;
            return Err(err);
        }
        // The keeper owns the directory now.
        guard.0 = None;
    }
    crate::app::output::println(format_args!("{id}"))?;
    Ok(exit::OK)
}

/// `qbox run` in the foreground: attached, with the snapshot kept fresh
/// beside the container for as long as it runs.
async fn run_attached(
    args: &RunArgs,
    mut spec: RunSpec,
    query: StoreQuery,
    scope: snapshot::SnapshotScope,
    runtime_path: &Path,
    palette: Palette,
) -> anyhow::Result<u8> {
    // Which `qbox run` keeps this container's login fresh (`qbox ps`).
    spec.labels
        .insert(RUN_LABEL.to_owned(), runtime_dir::this_run());
    // Before anything else: the snapshots and containers that killed runs
    // left behind go.
    let runtime = sweep_runtime_dir(runtime_path, args.auth == AuthMode::Snapshot, palette)?;
    // Beside the run, not before it: an engine slow to answer delays
    // nothing, and a signal meanwhile still ends this run as it should.
    let sweeper = tokio::spawn(sweep_engine(runtime_path.to_owned()));
    if args.mcp {
        let sidecar = sidecar_image::for_mcp(args.sidecar_binary.clone(), args.image())
            .await
            .map_err(reclassify)?;
        sidecar.check_readable(args.image(), spec.options.user.as_deref())?;
        for (host, target) in &sidecar.mounts {
            spec.options
                .mounts
                .push(crate::container::options::read_only_bind(host, target));
        }
        spec.options.entrypoint = Some(sidecar.entrypoint);
    }
    let mut keeper = None;
    let (stop_keeper, keeper_stopped) = tokio::sync::oneshot::channel::<()>();
    // Dropped at the end of this function: the snapshot never outlives the run.
    let mut snapshot_dir: Option<tempfile::TempDir> = None;
    match args.auth {
        AuthMode::None => {}
        AuthMode::Live => mount_live_store(&query, &mut spec)?,
        AuthMode::Snapshot => {
            let login = match login_or_key(&query).await? {
                RunLogin::Store(login) => Some(*login),
                RunLogin::Key(key) => {
                    // No store login: the key, as a file only the run can
                    // read, in `auth/`; beside it the CLI's writable data
                    // directory and home with its settings, as a store
                    // login's run has them, minus the store the CLI makes.
                    let dir = runtime
                        .as_ref()
                        .ok_or_else(|| CommandError::new(exit::ENGINE, "no runtime directory"))?
                        .create_run_dir()?;
                    let auth_dir = dir.path().join(runtime_dir::RUN_AUTH_DIR);
                    store::private_file::prepare_private_dir(&auth_dir).map_err(reclassify)?;
                    write_key_file(&auth_dir, &key)?;
                    // Only the Kiro CLI takes a key.
                    let settings = store::settings::CliSettings::of(store::Flavor::Kiro);
                    CopyDirs::under(dir.path())
                        .prepare_without_login(
                            store::Flavor::Kiro,
                            settings.carried_bytes().as_deref(),
                        )
                        .map_err(reclassify)?;
                    spec.auth_dir = Some(auth_dir);
                    spec.auth_key = Some(AUTH_KEY.to_owned());
                    spec.copy_dir = Some(dir.path().to_owned());
                    snapshot_dir = Some(dir);
                    None
                }
            };
            if let Some(login) = login {
                let dir = runtime
                    .as_ref()
                    .ok_or_else(|| CommandError::new(exit::ENGINE, "no runtime directory"))?
                    .create_run_dir()?;
                // The read-only snapshot in `auth/`, the container's
                // writable copy in `data/` and `home/`.
                let auth_dir = dir.path().join(runtime_dir::RUN_AUTH_DIR);
                let taken = snapshot::take(&login, &auth_dir, snapshot::DEFAULT_MODE, scope)
                    .map_err(reclassify)?;
                let copy = CopyDirs::under(dir.path());
                write_copy(&copy, &login, &taken, scope)?;
                spec.auth_dir = Some(auth_dir.clone());
                spec.auth_db = Some(AUTH_DB.to_owned());
                spec.copy_dir = Some(dir.path().to_owned());
                keeper = Some(
                    SnapshotKeeper::new(
                        StoreQuery {
                            db: Some(login.path.clone()),
                            cli: Some(login.flavor),
                        },
                        auth_dir,
                        WatchOptions {
                            scope,
                            ..WatchOptions::default()
                        },
                    )
                    .with_written(taken)
                    .with_private_copy(copy),
                );
                snapshot_dir = Some(dir);
            }
        }
    }
    // The snapshot is refreshed next to the container for as long as it runs.
    let container = async {
        let result = crate::container::run::run(&spec).await;
        let _ = stop_keeper.send(());
        result
    };
    let keep_fresh = async {
        let Some(keeper) = keeper else { return };
        // Only what needs the person's attention: the container's own
        // output is on the same terminal.
        let mut on_event = |event: WatchEvent<'_>| {
            let said = events::describe(&event, OffsetDateTime::now_utc());
            if said.weight == Weight::Warning {
                warn(palette, &said.text, said.hint.as_deref());
            }
        };
        let stopped = async {
            let _ = keeper_stopped.await;
        };
        if let Err(err) = keeper.run(stopped, &mut on_event).await {
            warn(
                palette,
                &format!(
                    "the login snapshot could not be updated: {}",
                    exit::chain(&err)
                ),
                None,
            );
        }
    };
    let (result, ()) = tokio::join!(container, keep_fresh);
    drop(snapshot_dir);
    if tokio::time::timeout(SWEEP_PATIENCE, sweeper).await.is_err() {
        tracing::debug!("the sweep of abandoned containers did not finish");
    }
    let exited = result?;
    if exited.oom_killed {
        let limit = args
            .docker
            .memory
            .as_deref()
            .map_or_else(String::new, |limit| format!(" (--memory {limit})"));
        warn(
            palette,
            &format!("the container ran out of memory{limit} and was killed (exit 137)"),
            Some("give it more with -m/--memory"),
        );
    }
    Ok(exited.code)
}

/// The variable that enables the sidecar's agent tool.
const AGENT_TOOLS_ENV: &str = "ENABLE_ADDITIONAL_TOOLS";

/// The variable that tells the sidecar which image it runs in.
const AGENT_IMAGE_ENV: &str = crate::agent::config::IMAGE_ENV;

/// How long a foreground run waits at its end for its sweep to finish.
const SWEEP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Removes the containers killed runs left created but never started, then
/// the snapshot directories of detached containers that are gone. Best
/// effort: an engine that cannot be asked is reported by the run itself.
async fn sweep_engine(runtime: PathBuf) {
    if let Ok(docker) = crate::container::image::connect().await
        && let Ok(containers) = crate::container::manage::list(&docker).await
    {
        let left = crate::container::manage::remove_abandoned(&docker, containers).await;
        keeper::sweep(&runtime, &left);
    }
}

/// Opens the runtime directory (creating it when this run needs it for its
/// snapshot) and removes the directories of runs whose process is gone.
/// A run that does not need it only warns when it cannot be used.
fn sweep_runtime_dir(
    path: &Path,
    needed: bool,
    palette: Palette,
) -> anyhow::Result<Option<RuntimeDir>> {
    let path = path.to_owned();
    let opened = if needed {
        RuntimeDir::open(path).map(Some)
    } else {
        RuntimeDir::existing(path)
    };
    let runtime = match opened {
        Ok(runtime) => runtime,
        Err(err) if needed => return Err(err.into()),
        Err(err) => {
            warn(palette, &err.to_string(), err.hint().as_deref());
            return Ok(None);
        }
    };
    if let Some(runtime) = &runtime
        && let Err(err) = runtime.sweep()
    {
        warn(
            palette,
            &format!("leftover snapshot directories were not removed: {err}"),
            None,
        );
    }
    Ok(runtime)
}

/// Writes the container's writable copy of the login: the snapshot's rows
/// in the run's scope (an access-only run's copy is access-only too) and
/// the settings beside them, where the CLI looks for both.
fn write_copy(
    copy: &CopyDirs,
    login: &store::Login,
    taken: &snapshot::Taken,
    scope: snapshot::SnapshotScope,
) -> anyhow::Result<()> {
    let rows = scope.rows(&taken.rows).map_err(reclassify)?;
    copy.update(login.flavor, &rows, Some(taken.settings.as_deref()))
        .map_err(reclassify)
}

/// `--auth live`: the CLI's own data directory holding the login's store,
/// mounted as it is (anything else is refused: `spec::live_mount`).
fn mount_live_store(query: &StoreQuery, spec: &mut RunSpec) -> anyhow::Result<()> {
    let login = query
        .resolve(OffsetDateTime::now_utc())
        .map_err(reclassify)?;
    let cli_dirs: Vec<PathBuf> = store::discovery::default_store_paths()
        .into_iter()
        .filter_map(|(_, path)| path.parent().map(Path::to_owned))
        .collect();
    let (dir, db) = live_mount(&login.path, &cli_dirs)?;
    spec.auth_dir = Some(dir);
    spec.auth_db = Some(db);
    Ok(())
}

/// What a container's login comes from.
enum RunLogin {
    /// A store login, snapshotted and kept fresh.
    Store(Box<store::Login>),
    /// No usable store login, but a Kiro API key (`KIRO_API_KEY` or
    /// `QBOX_API_KEY_FILE`): a stored login wins, as in the Kiro CLI.
    Key(crate::secret::Secret),
}

/// `--auth snapshot`: the login a snapshot is taken from, refreshed first
/// when it is due, so the container starts with the freshest token; else a
/// Kiro API key when no store login is usable.
async fn login_or_key(query: &StoreQuery) -> anyhow::Result<RunLogin> {
    let attempt = match query.resolve(OffsetDateTime::now_utc()) {
        Ok(login) => store::ensure_fresh(login).await,
        Err(error) => Err(error.into()),
    };
    let error = match attempt {
        Ok(login) => return Ok(RunLogin::Store(Box::new(login))),
        Err(error) => error,
    };
    if error.exit_code() == exit::NO_LOGIN {
        match crate::qapi::ApiKey::from_env() {
            Ok(Some(key)) => return Ok(RunLogin::Key(key.key)),
            Err(key_error) => return Err(reclassify(crate::qapi::ApiError::from(key_error))),
            Ok(None) => {}
        }
    }
    Err(reclassify(error))
}

/// Writes the key into a run's fresh private directory, readable only by
/// the user (and so by the container, which runs as the user).
fn write_key_file(dir: &Path, key: &crate::secret::Secret) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(KEY_FILE_NAME);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .and_then(|mut file| {
            file.write_all(key.expose().as_bytes())?;
            Ok(file)
        })
        .map_err(|e| {
            CommandError::new(
                exit::ENGINE,
                format!("writing the API key file {}: {e}", path.display()),
            )
        })?;
    file.flush()?;
    Ok(())
}

/// A setup failure of `qbox run` exits 125, keeping its message and hint.
fn reclassify(err: impl Into<anyhow::Error>) -> anyhow::Error {
    let err = err.into();
    let (_, hint) = crate::app::report::classify(&err);
    let mut command = CommandError::new(exit::ENGINE, format!("{err:#}"));
    command.hint = hint;
    command.into()
}

impl From<RunError> for CommandError {
    fn from(err: RunError) -> Self {
        let mut command = CommandError::new(err.exit_code(), exit::chain(&err));
        command.hint = err.hint();
        command
    }
}
