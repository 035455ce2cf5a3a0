//! What `qbox run` asks the engine for: qbox's own settings (how the
//! login is mounted, `--keep`, `-d`, the image and command) over the
//! checked `docker run` options (`options::HostOptions`), turned into a
//! container create body. Pure and unit-tested: every auth mount is
//! read-only, and no token ever goes into the environment.

use crate::qapi::API_KEY_FILE_ENV;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig};

use super::options::HostOptions;
use super::{AUTH_MOUNT, MANAGED_LABEL};
use crate::exit::{self, Diagnose};

/// `QBOX_DB` inside containers.
pub const AUTH_DB: &str = "/run/qbox/auth/data.sqlite3";
/// Where a CLI run in the container finds its writable copy of the login:
/// the container's `XDG_DATA_HOME` (`amazon-q/` or `kiro-cli/` under it).
pub const COPY_DATA_MOUNT: &str = "/run/qbox/data";
/// The container's `HOME` with the writable copy: the Kiro CLI reads its
/// settings from `~/.kiro/settings/cli.json`, and both CLIs write history
/// and settings under `HOME`.
pub const COPY_HOME_MOUNT: &str = "/run/qbox/home";
/// The file name of a Kiro API key in a run's private directory.
pub const KEY_FILE_NAME: &str = "kiro-api-key";
/// `QBOX_API_KEY_FILE` inside containers given a key.
pub const AUTH_KEY: &str = "/run/qbox/auth/kiro-api-key";

/// How the login reaches the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// A least-privilege snapshot (token, registration, profile), kept fresh.
    Snapshot,
    /// The CLI's own data directory, read-only (includes conversations).
    Live,
    /// No login.
    None,
}

/// A login `qbox run` will not mount (`--auth live`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "--auth live mounts the directory holding the store, and {} is not a CLI's own data directory",
        .0.display()
    )]
    LiveNotCliDir(PathBuf),
    #[error("--auth live: the store {} cannot be resolved: {}", .0.display(), .1)]
    LiveUnresolved(PathBuf, String),
}

/// A bad option is a usage error of `qbox run`, which (as `docker run`)
/// exits 125 for those.
impl Diagnose for SpecError {
    fn exit_code(&self) -> u8 {
        exit::ENGINE
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::LiveNotCliDir(_) => Some(
                "use the default --auth snapshot (a copy of the login alone); --auth live mounts only the directory where the CLI itself keeps its store".into(),
            ),
            Self::LiveUnresolved(..) => None,
        }
    }
}

/// `--auth live`: the directory to mount read-only at [`AUTH_MOUNT`] and
/// `QBOX_DB` inside. Only a CLI's own data directory is mounted: one of
/// `cli_dirs` (where the CLIs keep their stores on this machine,
/// `~/.local/share/kiro-cli` and the like), compared once symbolic links
/// are resolved. The directory of any other store may hold anything, keys
/// included, whatever it is called (`--db ~/login.sqlite3`, or
/// `~/backup/amazon-q/data.sqlite3` beside other files). `QBOX_DB` names
/// the store's own file in the mount.
pub fn live_mount(store: &Path, cli_dirs: &[PathBuf]) -> Result<(PathBuf, String), SpecError> {
    let real = std::fs::canonicalize(store)
        .map_err(|e| SpecError::LiveUnresolved(store.to_owned(), e.to_string()))?;
    let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
        return Err(SpecError::LiveUnresolved(
            store.to_owned(),
            "no directory holds it".into(),
        ));
    };
    let own = cli_dirs
        .iter()
        .filter_map(|cli_dir| std::fs::canonicalize(cli_dir).ok())
        .any(|cli_dir| cli_dir == dir);
    // And named as one once links are resolved: a CLI directory that is a
    // link to the home directory would otherwise mount the whole home.
    if !own || crate::store::Flavor::from_path(&real).is_none() {
        return Err(SpecError::LiveNotCliDir(dir.to_owned()));
    }
    let db = Path::new(AUTH_MOUNT).join(name);
    Ok((dir.to_owned(), db.display().to_string()))
}

/// A checked request to run a container: qbox's own settings, and every
/// `docker run` option in [`HostOptions`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub image: String,
    pub cmd: Vec<String>,
    /// Keep the container after it exits; otherwise the engine removes it
    /// when it exits (`AutoRemove`), even if qbox itself was killed.
    pub keep: bool,
    /// `-d`: started without attaching; with `-i` its stdin is kept open
    /// (as `docker run -d -i` does) but nothing is written to it.
    pub detach: bool,
    /// qbox's own labels (`qbox.*`: who created the container, which run
    /// or keeper keeps its login fresh), beside [`MANAGED_LABEL`]; `-l`
    /// cannot set them.
    pub labels: HashMap<String, String>,
    /// Host directory mounted read-only at [`AUTH_MOUNT`], if any.
    pub auth_dir: Option<PathBuf>,
    /// The database file inside the container, if any.
    pub auth_db: Option<String>,
    /// A host directory holding the run's writable copy of the login
    /// (`data/`, `home/`), mounted read-write at [`COPY_DATA_MOUNT`] and
    /// [`COPY_HOME_MOUNT`], where the CLI looks for its store.
    pub copy_dir: Option<PathBuf>,
    /// Whether the copy's home becomes the container's `HOME`: not when
    /// the user chose the container's user (`-u`), whose home the image
    /// knows, or set `HOME` itself.
    pub copy_sets_home: bool,
    /// The Kiro API key file inside the container (`QBOX_API_KEY_FILE`),
    /// if any: the key itself is never in the container's environment.
    pub auth_key: Option<String>,
    /// With `-t`: the host terminal's (rows, columns), given at creation so
    /// the first output already has it (engines from API 1.42 on; older ones
    /// get it by the resize right after start).
    pub console_size: Option<(u16, u16)>,
    /// Every `docker run` option, checked.
    pub options: HostOptions,
}

impl RunSpec {
    /// The engine's create body.
    pub fn create_body(&self) -> ContainerCreateBody {
        let interactive = self.options.interactive;
        let mut body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: (!self.cmd.is_empty()).then(|| self.cmd.clone()),
            // A detached container's stdin never closes: nobody attaches.
            stdin_once: Some(interactive && !self.detach),
            attach_stdin: Some(interactive && !self.detach),
            attach_stdout: Some(!self.detach),
            attach_stderr: Some(!self.detach),
            labels: Some(
                self.labels
                    .clone()
                    .into_iter()
                    .chain([(MANAGED_LABEL.to_owned(), "true".to_owned())])
                    .collect(),
            ),
            host_config: Some(HostConfig {
                // The engine removes the container when it exits, so a qbox
                // killed with SIGKILL cannot leave it behind.
                auto_remove: Some(!self.keep),
                console_size: self
                    .console_size
                    .filter(|_| self.options.tty)
                    .map(|(rows, columns)| vec![usize::from(rows), usize::from(columns)]),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        self.options.apply(&mut body);
        let env = body.env.get_or_insert_with(Vec::new);
        let binds = body
            .host_config
            .get_or_insert_with(HostConfig::default)
            .binds
            .get_or_insert_with(Vec::new);
        if let Some(dir) = &self.auth_dir {
            // Read-only, always: nothing inside may change the login, and
            // the directory (not the file) is mounted so that atomic
            // replacements on the host are visible inside.
            binds.push(format!("{}:{AUTH_MOUNT}:ro", dir.display()));
            for (name, value) in [
                ("QBOX_DB", &self.auth_db),
                (API_KEY_FILE_ENV, &self.auth_key),
            ] {
                if let Some(value) = value {
                    env.retain(|e| !e.starts_with(&format!("{name}=")));
                    env.push(format!("{name}={value}"));
                }
            }
        }
        if let Some(dir) = &self.copy_dir {
            // The container's own copy, written by its CLI: never the host
            // store, and rewritten by the host when the login changes.
            binds.push(format!(
                "{}:{COPY_DATA_MOUNT}:rw",
                dir.join("data").display()
            ));
            binds.push(format!(
                "{}:{COPY_HOME_MOUNT}:rw",
                dir.join("home").display()
            ));
            let mut set_unless_given = |name: &str, value: &str| {
                if !env.iter().any(|e| e.starts_with(&format!("{name}="))) {
                    env.push(format!("{name}={value}"));
                }
            };
            set_unless_given("XDG_DATA_HOME", COPY_DATA_MOUNT);
            if self.copy_sets_home {
                set_unless_given("HOME", COPY_HOME_MOUNT);
            }
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::super::RUN_LABEL;
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            image: "img".into(),
            cmd: vec!["sh".into(), "-c".into(), "true".into()],
            keep: false,
            detach: false,
            labels: HashMap::new(),
            auth_dir: Some(PathBuf::from("/tmp/qbox-auth-x")),
            copy_dir: None,
            copy_sets_home: false,
            auth_db: Some(AUTH_DB.into()),
            auth_key: None,
            console_size: Some((33, 101)),
            options: HostOptions {
                env: vec!["A=1".into(), "QBOX_DB=/elsewhere".into()],
                workdir: Some("/w".into()),
                user: Some("1000:1000".into()),
                init: true,
                stop_timeout: 10,
                ..HostOptions::default()
            },
        }
    }

    #[test]
    fn a_detached_container_is_not_attached_and_its_stdin_stays_open() {
        let mut detached = spec();
        detached.detach = true;
        detached.options.interactive = true;
        let body = detached.create_body();
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.stdin_once, Some(false));
        assert_eq!(body.attach_stdin, Some(false));
        assert_eq!(body.attach_stdout, Some(false));
        assert_eq!(body.attach_stderr, Some(false));
        assert_eq!(body.host_config.unwrap().auto_remove, Some(true));
    }

    #[test]
    fn the_engine_removes_the_container_unless_it_is_kept() {
        let body = spec().create_body();
        assert_eq!(body.host_config.unwrap().auto_remove, Some(true));
        assert_eq!(body.stop_timeout, Some(10));
        let mut kept = spec();
        kept.keep = true;
        assert_eq!(
            kept.create_body().host_config.unwrap().auto_remove,
            Some(false)
        );
    }

    #[test]
    fn the_console_size_is_given_only_with_a_terminal() {
        let without = spec().create_body();
        assert_eq!(without.host_config.unwrap().console_size, None);
        let mut tty = spec();
        tty.options.tty = true;
        let with = tty.create_body();
        assert_eq!(with.host_config.unwrap().console_size, Some(vec![33, 101]));
    }

    #[test]
    fn the_auth_mount_is_read_only_and_labelled() {
        let mut spec = spec();
        spec.labels.insert(RUN_LABEL.into(), "1-2".into());
        let body = spec.create_body();
        let binds = body.host_config.as_ref().unwrap().binds.clone().unwrap();
        assert_eq!(binds, ["/tmp/qbox-auth-x:/run/qbox/auth:ro"]);
        assert!(
            binds
                .iter()
                .all(|b| !b.contains("qbox-auth") || b.ends_with(":ro"))
        );
        let env = body.env.unwrap();
        assert_eq!(env, ["A=1", "QBOX_DB=/run/qbox/auth/data.sqlite3"]);
        assert!(
            env.iter().all(|e| !e.contains("aoa")),
            "no token in the environment"
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels["qbox.managed"], "true");
        assert_eq!(labels["qbox.run"], "1-2");
        assert_eq!(body.host_config.unwrap().init, Some(true));
    }

    #[test]
    fn issue_28_the_writable_copy_is_where_the_cli_looks_unless_the_user_says_otherwise() {
        let mut copy = spec();
        copy.copy_dir = Some(PathBuf::from("/rt/run-1-2"));
        copy.copy_sets_home = true;
        let body = copy.create_body();
        let binds = body.host_config.unwrap().binds.unwrap();
        assert!(binds.contains(&"/tmp/qbox-auth-x:/run/qbox/auth:ro".to_owned()));
        assert!(binds.contains(&"/rt/run-1-2/data:/run/qbox/data:rw".to_owned()));
        assert!(binds.contains(&"/rt/run-1-2/home:/run/qbox/home:rw".to_owned()));
        let env = body.env.unwrap();
        assert!(env.contains(&"XDG_DATA_HOME=/run/qbox/data".to_owned()));
        assert!(env.contains(&"HOME=/run/qbox/home".to_owned()));
        // `-e` wins, and `-u` leaves HOME to the image.
        copy.options.env = vec!["XDG_DATA_HOME=/mine".into()];
        copy.copy_sets_home = false;
        let env = copy.create_body().env.unwrap();
        assert!(env.contains(&"XDG_DATA_HOME=/mine".to_owned()));
        assert!(
            !env.iter()
                .any(|e| e.starts_with("HOME=") || e == "XDG_DATA_HOME=/run/qbox/data")
        );
    }

    #[test]
    fn issue_30_live_mounts_only_a_cli_data_directory_and_names_the_file() {
        let root = tempfile::tempdir().unwrap();
        let cli = root.path().join("kiro-cli");
        std::fs::create_dir(&cli).unwrap();
        std::fs::write(cli.join("own.sqlite3"), "").unwrap();
        let cli_dirs = [cli.clone()];
        let (dir, db) = live_mount(&cli.join("own.sqlite3"), &cli_dirs).unwrap();
        assert_eq!(dir, std::fs::canonicalize(&cli).unwrap());
        assert_eq!(db, "/run/qbox/auth/own.sqlite3");

        // A store in a directory that holds other things is refused.
        std::fs::write(root.path().join("my-login.sqlite3"), "").unwrap();
        let err = live_mount(&root.path().join("my-login.sqlite3"), &cli_dirs).unwrap_err();
        assert!(matches!(err, SpecError::LiveNotCliDir(_)), "{err}");
        assert!(err.hint().unwrap().contains("--auth snapshot"));
        // So is one reached through a directory link named like a CLI's.
        let decoy = root.path().join("decoy");
        std::fs::create_dir(&decoy).unwrap();
        std::os::unix::fs::symlink(root.path(), decoy.join("amazon-q")).unwrap();
        let err = live_mount(&decoy.join("amazon-q/my-login.sqlite3"), &cli_dirs).unwrap_err();
        assert!(matches!(err, SpecError::LiveNotCliDir(_)), "{err}");
        // And one in a directory merely named like a CLI's.
        let backup = root.path().join("backup/kiro-cli");
        std::fs::create_dir_all(&backup).unwrap();
        std::fs::write(backup.join("data.sqlite3"), "").unwrap();
        let err = live_mount(&backup.join("data.sqlite3"), &cli_dirs).unwrap_err();
        assert!(matches!(err, SpecError::LiveNotCliDir(_)), "{err}");
        // A CLI directory that is a link to a directory holding anything
        // (the home directory) is refused, though it is where the CLI looks.
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink(root.path(), data.join("kiro-cli")).unwrap();
        let linked = [data.join("kiro-cli")];
        let err = live_mount(&data.join("kiro-cli/my-login.sqlite3"), &linked).unwrap_err();
        assert!(matches!(err, SpecError::LiveNotCliDir(_)), "{err}");
        // A missing store is said to be one.
        assert!(matches!(
            live_mount(&cli.join("absent.sqlite3"), &cli_dirs),
            Err(SpecError::LiveUnresolved(..))
        ));
    }
}
