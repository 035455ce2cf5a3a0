//! Test harness: a throwaway home directory with CLI stores in the real
//! schema, and a builder that runs the real `qbox` binary against it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use qbox::store::Flavor;
use qbox::store::schema::{FixtureLogin, StoreBuilder};
use tempfile::TempDir;

/// A temporary home with the CLIs' data directories under it.
pub struct TestHome {
    pub dir: TempDir,
}

impl TestHome {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("qbox-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join(".local").join("share")
    }

    /// Where the CLI of `flavor` keeps its store in this home.
    pub fn store_path(&self, flavor: Flavor) -> PathBuf {
        self.data_dir().join(flavor.dir_name()).join("data.sqlite3")
    }

    /// Creates the store of `flavor` at its default place with `login`.
    pub fn login(&self, flavor: Flavor, login: &FixtureLogin) -> PathBuf {
        let path = self.store_path(flavor);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        StoreBuilder::create(&path, flavor)
            .unwrap()
            .login(login)
            .unwrap();
        path
    }

    /// A `qbox` invocation with this home and a clean environment.
    pub fn qbox(&self) -> Qbox {
        Qbox::new(self.path())
    }
}

/// Builder for one run of the `qbox` binary.
pub struct Qbox {
    command: Command,
}

/// What a run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Qbox {
    pub fn new(home: &Path) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_qbox"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join(".local").join("share"))
            .env("NO_COLOR", "1")
            // Doctor probes Docker; tests that want the engine set it back.
            .env("DOCKER_HOST", "unix:///nonexistent/qbox-test.sock")
            .stdin(Stdio::null());
        Self { command }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.command.args(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    pub fn command(self) -> Command {
        self.command
    }

    /// Runs to completion (blocking; call from `spawn_blocking` in async tests
    /// that serve a stand-in from the same runtime).
    pub fn run(mut self) -> Run {
        let output = self.command.output().expect("qbox binary runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("stdout is utf-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is utf-8"),
        }
    }

    /// Runs on a blocking thread so that async stand-ins keep serving.
    pub async fn run_async(self) -> Run {
        tokio::task::spawn_blocking(move || self.run())
            .await
            .unwrap()
    }
}

impl Run {
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Every error must be one `error:` line, lowercase, then maybe `hint:`.
    #[track_caller]
    pub fn assert_one_line_error(&self) -> &Self {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.starts_with("warning:"))
            .collect();
        assert!(
            lines.first().is_some_and(|l| l.starts_with("error: ")),
            "no error line:\n{}",
            self.stderr
        );
        let first_char = lines[0]["error: ".len()..].chars().next().unwrap();
        assert!(
            !first_char.is_uppercase(),
            "error is not lowercase: {}",
            lines[0]
        );
        assert!(
            lines.len() == 1 || (lines.len() == 2 && lines[1].starts_with("hint: ")),
            "error is not one line plus a hint:\n{}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

/// SHA-free file fingerprint: the exact bytes.
pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A Builder ID login valid for an hour, with distinctive token values.
pub fn valid_login(tag: &str) -> FixtureLogin {
    FixtureLogin::builder_id(&format!("aoa-access-{tag}"), &format!("aor-refresh-{tag}"))
}

/// A login whose token expired ten minutes ago.
pub fn expired_login(tag: &str) -> FixtureLogin {
    let mut login = valid_login(tag);
    login.expires_at = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    login
}

/// Whether this process runs as root (file modes do not stop root).
pub fn running_as_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
}

/// Replaces the token row of `flavor` in the store at `path`, as a CLI
/// logging in (or another refresher) would.
pub fn replace_stored_token(path: &Path, flavor: Flavor, token_json: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    conn.execute(
        "UPDATE auth_kv SET value = ?1 WHERE key = ?2",
        [token_json, flavor.token_key()],
    )
    .unwrap();
}
