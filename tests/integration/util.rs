//! Test harness: a throwaway home directory with CLI stores in the real
//! schema, one builder that runs the real `qbox` or `qbox-sidecar` binary
//! against it with a cleared environment, [`wait_until`] for every wait on
//! a condition, and the address a server under test reports it bound.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

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

    /// `qbox-test=NAME`, NAME this home's directory name: a label for the
    /// containers this test starts, so that a check for leftovers counts
    /// only those, never a container the user (or another test) runs.
    pub fn label(&self) -> String {
        format!(
            "qbox-test={}",
            self.path().file_name().unwrap().to_string_lossy()
        )
    }

    /// A `qbox` invocation with this home and a clean environment.
    pub fn qbox(&self) -> Qbox {
        Qbox::new(self.path())
    }

    /// A `qbox-sidecar` invocation with this home, a clean environment
    /// and a private runtime directory in the home ([`runtime_dir`]), run
    /// in the home.
    pub fn sidecar(&self) -> Qbox {
        Qbox::sidecar(self.path())
            .env("XDG_RUNTIME_DIR", runtime_dir(self.path()))
            .current_dir(self.path())
    }
}

/// `home/run`, created private (0700) as a login's runtime directory is:
/// where `qbox-sidecar serve --http` keeps the token it generates.
pub fn runtime_dir(home: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = home.join("run");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// `program` with a cleared environment: only `PATH`, `HOME` and
/// `XDG_DATA_HOME` (in `home`) and `NO_COLOR`, so that nothing of the
/// environment the tests run in (a real login, `QBOX_*` settings, a proxy)
/// reaches the process under test. Stdin is empty.
pub fn clean_command(program: impl AsRef<OsStr>, home: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join(".local").join("share"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// Builder for one run of `qbox` or `qbox-sidecar`.
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
    /// `qbox` with `home` ([`clean_command`]).
    pub fn new(home: &Path) -> Self {
        let mut command = clean_command(env!("CARGO_BIN_EXE_qbox"), home);
        // Doctor probes Docker; tests that want the engine set it back.
        command.env("DOCKER_HOST", "unix:///nonexistent/qbox-test.sock");
        Self { command }
    }

    /// The `qbox` at `program` (a copy of the built one) with `home`
    /// ([`clean_command`]), the engine unset as in [`Qbox::new`].
    pub fn at(program: &Path, home: &Path) -> Self {
        let mut command = clean_command(program, home);
        command.env("DOCKER_HOST", "unix:///nonexistent/qbox-test.sock");
        Self { command }
    }

    /// `qbox-sidecar` with `home` ([`clean_command`]); `home` need not
    /// exist. [`TestHome::sidecar`] adds a runtime directory.
    pub fn sidecar(home: &Path) -> Self {
        Self {
            command: clean_command(env!("CARGO_BIN_EXE_qbox-sidecar"), home),
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.command.args(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Sets each of `env` in turn.
    pub fn envs<K, V>(mut self, env: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.command.envs(env);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
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
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        "UPDATE auth_kv SET value = ?1 WHERE key = ?2",
        [token_json, flavor.token_key()],
    )
    .unwrap();
}

/// How often [`wait_until`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// What a condition of [`wait_until`] says: not yet, or yes (with a value).
pub trait Condition {
    type Value;
    fn holds(self) -> Option<Self::Value>;
}

impl Condition for bool {
    type Value = ();
    fn holds(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Condition for Option<T> {
    type Value = T;
    fn holds(self) -> Option<T> {
        self
    }
}

/// Checks `condition` until it holds (`true`, or `Some(value)`, which is
/// returned) and panics naming `what` once `limit` has passed. Every wait
/// of a test for something another process does goes through here: a
/// limit generous for a loaded machine, and no fixed sleep.
#[track_caller]
pub fn wait_until<C: Condition>(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> C,
) -> C::Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = condition().holds() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting until {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// [`wait_until`] for async tests: the condition runs on a blocking thread,
/// so that stand-ins served by the test's runtime keep serving.
pub async fn wait_until_async<C>(
    limit: Duration,
    what: &str,
    condition: impl FnMut() -> C + Send + 'static,
) -> C::Value
where
    C: Condition,
    C::Value: Send + 'static,
{
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || wait_until(limit, &what, condition))
        .await
        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
}

/// A child process that is killed and reaped when dropped, so that a test
/// that fails while waiting for it leaves nothing running.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child is still held")
    }

    /// Waits until the process exits ([`wait_until`]: panics naming `what`
    /// after `limit`, and the process is killed).
    #[track_caller]
    pub fn wait(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let child = self.child();
        wait_until(limit, what, || child.try_wait().unwrap())
    }

    /// The child, no longer killed on drop: for a process that was waited
    /// for until it is ready and is then owned by something else.
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("the child is still held")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `command` (a `qbox-sidecar serve --http` on port 0) with its
/// stderr read as it comes, and waits until it says which port it bound;
/// a server that never does is killed.
pub fn spawn_serving(command: &mut Command) -> (Child, u16, StderrLines) {
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = KillOnDrop::new(command.spawn().expect("the sidecar starts"));
    let stderr = StderrLines::read(child.child().stderr.take().unwrap());
    let port = stderr.serving_port();
    (child.into_inner(), port, stderr)
}

/// A server's stderr, read line by line as it comes, kept for the test.
#[derive(Clone)]
pub struct StderrLines {
    text: Arc<Mutex<String>>,
    ended: Arc<std::sync::atomic::AtomicBool>,
    lines: Arc<Mutex<mpsc::Receiver<String>>>,
}

impl StderrLines {
    /// Starts reading `pipe` on a thread of its own.
    pub fn read(pipe: ChildStderr) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let (sender, lines) = mpsc::channel();
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (collected, at_end) = (text.clone(), ended.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                {
                    let mut text = collected.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
                let _ = sender.send(line);
            }
            at_end.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Self {
            text,
            ended,
            lines: Arc::new(Mutex::new(lines)),
        }
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Whether the stream has ended (the process closed it, or exited).
    pub fn ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for the first line (not yet taken) for which `pick` says
    /// `Some`; panics naming `what` after `limit` or when the stream ends.
    #[track_caller]
    pub fn wait_for<T>(
        &self,
        limit: Duration,
        what: &str,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let lines = self.lines.lock().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(found) = pick(&line) {
                        return found;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "gave up after {limit:?} waiting until {what}; stderr so far:\n{}",
                    self.text()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("stderr ended before {what}:\n{}", self.text())
                }
            }
        }
    }

    /// Waits until `qbox-sidecar serve --http` says where it serves MCP
    /// (`serving MCP at http://ADDRESS:PORT/mcp`) and returns the port it
    /// bound: a server given port 0 picks a free one itself, so no port is
    /// chosen in the test and handed over, which another process may take.
    #[track_caller]
    pub fn serving_port(&self) -> u16 {
        self.wait_for(
            Duration::from_secs(30),
            "the sidecar says where it serves MCP",
            |line| {
                let rest = line.split("serving MCP at http://").nth(1)?;
                let address = rest.split('/').next()?;
                address.rsplit(':').next()?.parse().ok()
            },
        )
    }
}

/// A loopback port that refuses connections for as long as the returned
/// socket lives: it is bound but not listening, so nothing else can take
/// it (unlike a port bound and released, which another process may bind).
pub fn refusing_port() -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

/// Whether process `pid` has the SQLite file at `path` open and one of its
/// threads sleeps between tries, as a reader waiting out another
/// connection's lock does (the store's busy handler retries every half
/// millisecond). With the lock held by the test, this is the proof that the
/// process met the lock and waits, rather than having not got there yet.
pub fn waits_for_a_lock_on(pid: u32, path: &Path) -> bool {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    has_open(pid, &path) && sleeps_on_a_timer(pid)
}

/// Whether a thread of process `pid` sleeps in a timed sleep, as a reader
/// waiting out a store lock does between its tries.
fn sleeps_on_a_timer(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        let wchan = std::fs::read_to_string(task.path().join("wchan")).unwrap_or_default();
        // Where the kernel hides wait channels, the system call number says it.
        let call = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
        let nanosleep: &[&str] = if cfg!(target_arch = "aarch64") {
            &["101", "115"]
        } else {
            &["35", "230"]
        };
        wchan.contains("nanosleep")
            || call
                .split_whitespace()
                .next()
                .is_some_and(|n| nanosleep.contains(&n))
    })
}

/// Whether process `pid` has the file at `path` open.
fn has_open(pid: u32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

/// This test's turn at the Docker engine. Every test that starts
/// containers takes it: they share images, the bridge network and the
/// engine's time, and some sweep what dead runs left. Checks that nothing
/// was left behind count only the test's own containers (its label, its
/// name, its runtime directory), so a user's `qbox run -d` beside the
/// tests is never counted.
pub fn engine_turn() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The interpreter of the project's `.venv`, which holds the official MCP
/// Python SDK; `None` with a visible skip when it is missing, a failure
/// under `QBOX_REQUIRE_PYTHON_MCP`.
pub fn python_mcp() -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var_os("QBOX_REQUIRE_PYTHON_MCP").is_none(),
        "QBOX_REQUIRE_PYTHON_MCP is set but .venv has no python with the mcp package"
    );
    eprintln!(
        "SKIPPED: no .venv (python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt)"
    );
    None
}

/// Imports a test image `tag` from a root filesystem holding the static
/// busybox, `applets` linked to it (every applet for an empty list), and
/// whatever `prepare` adds, with `PATH` set to `path`. `false` with a
/// visible skip when there is no engine or no `/bin/busybox`, a failure
/// under `QBOX_REQUIRE_DOCKER`. Call it once per image (from a `OnceLock`).
pub fn import_busybox_image(
    tag: &str,
    applets: &[&str],
    path: &str,
    prepare: impl FnOnce(&Path),
) -> bool {
    let engine = Command::new("docker").arg("version").output();
    let busybox = Path::new("/bin/busybox");
    if !engine.is_ok_and(|o| o.status.success()) || !busybox.exists() {
        assert!(
            std::env::var_os("QBOX_REQUIRE_DOCKER").is_none(),
            "QBOX_REQUIRE_DOCKER is set but no Docker engine (or /bin/busybox from busybox-static) is available"
        );
        eprintln!("SKIPPED: no Docker engine or no /bin/busybox (apt-get install busybox-static)");
        return false;
    }
    let root = tempfile::tempdir().unwrap();
    for dir in ["bin", "tmp"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    std::fs::set_permissions(
        root.path().join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    std::fs::copy(busybox, root.path().join("bin/busybox")).unwrap();
    let all: Vec<String>;
    let applets: Vec<&str> = if applets.is_empty() {
        let list = Command::new(busybox).arg("--list").output().unwrap();
        all = String::from_utf8(list.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        all.iter()
            .map(String::as_str)
            .filter(|a| *a != "busybox")
            .collect()
    } else {
        applets.to_vec()
    };
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.path().join("bin").join(applet)).unwrap();
    }
    prepare(root.path());
    let mut tar = Command::new("tar")
        .args(["-C", root.path().to_str().unwrap(), "-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let imported = Command::new("docker")
        .args(["import", "-c", &format!("ENV PATH={path}"), "-", tag])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(tar.wait().unwrap().success());
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    true
}

/// The toolchain's own variables, which the harness's clean environment
/// drops: `qbox image build --static` (and `--agent`) run cargo to build the
/// static sidecar when none is given.
pub fn toolchain_vars() -> Vec<(&'static str, OsString)> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut vars = Vec::new();
    for (key, default) in [
        ("CARGO_HOME", home.join(".cargo")),
        ("RUSTUP_HOME", home.join(".rustup")),
    ] {
        vars.push((key, std::env::var_os(key).unwrap_or_else(|| default.into())));
    }
    for key in [
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "QBOX_SIDECAR_BINARY",
    ] {
        if let Some(value) = std::env::var_os(key) {
            vars.push((key, value));
        }
    }
    vars
}
