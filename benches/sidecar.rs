//! The sidecar over stdio with `/bin/echo` standing in for an instant CLI:
//! `tools/call` round trip next to spawning `/bin/echo` directly and next
//! to the same tool on the official MCP Python SDK; 100 concurrent calls;
//! resident memory while idle. Run: `cargo bench --bench sidecar`
//! (the Python peer needs `.venv` with `tests/python/requirements.txt`;
//! `QBOX_BENCH_SIDECAR=PATH` measures that sidecar binary instead, e.g. the
//! static build of the image).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const RUNS: usize = 300;

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Server {
    fn start(program: &str, args: &[&str]) -> Self {
        Self::start_with(program, args, &[])
    }

    fn start_with(program: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent")
            .env("QBOX_AGENT_CLI", "/bin/echo")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut server = Self {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        server.send(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}));
        server.read_until_id(0);
        server.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        server
    }

    fn send(&mut self, message: &Value) {
        writeln!(self.stdin, "{message}").expect("write");
        self.stdin.flush().expect("flush");
    }

    fn read_until_id(&mut self, id: u64) -> Value {
        loop {
            let mut line = String::new();
            self.stdout.read_line(&mut line).expect("read");
            assert!(!line.is_empty(), "server closed stdout");
            let message: Value = serde_json::from_str(&line).expect("json");
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    fn call_request(&mut self, prompt: &str) -> (u64, Value) {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "q-developer-agent", "arguments": {"prompt": prompt}}});
        (id, request)
    }

    /// One `tools/call`; returns its round-trip time.
    fn call(&mut self, prompt: &str) -> Duration {
        let (id, request) = self.call_request(prompt);
        let started = Instant::now();
        self.send(&request);
        let response = self.read_until_id(id);
        let elapsed = started.elapsed();
        assert!(response["result"]["isError"] != json!(true), "{response}");
        elapsed
    }

    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The peak resident memory so far.
    fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn measure_calls(server: &mut Server) -> Duration {
    for _ in 0..20 {
        server.call("warm-up");
    }
    median(
        (0..RUNS)
            .map(|i| server.call(&format!("call {i}")))
            .collect(),
    )
}

fn main() {
    let spawn = median(
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                let out = Command::new("/bin/echo")
                    .args(["chat", "--no-interactive", "--", "x"])
                    .output()
                    .expect("echo");
                assert!(out.status.success());
                started.elapsed()
            })
            .collect(),
    );

    // QBOX_BENCH_SIDECAR measures another build of the sidecar (the static
    // one of the image) against the same peers.
    let sidecar = std::env::var("QBOX_BENCH_SIDECAR")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_qbox-sidecar").to_owned());
    println!("sidecar: {sidecar}");
    let mut qbox = Server::start(&sidecar, &["serve"]);
    std::thread::sleep(Duration::from_millis(500));
    let qbox_idle_rss = qbox.rss_kib();
    let qbox_call = measure_calls(&mut qbox);

    // 100 concurrent calls: all sent before any answer is read.
    let requests: Vec<(u64, Value)> = (0..100)
        .map(|i| qbox.call_request(&format!("concurrent {i}")))
        .collect();
    let started = Instant::now();
    for (_, request) in &requests {
        qbox.send(request);
    }
    let mut errors = 0;
    let mut answered = std::collections::HashSet::new();
    while answered.len() < requests.len() {
        let mut line = String::new();
        qbox.stdout.read_line(&mut line).expect("read");
        let message: Value = serde_json::from_str(&line).expect("json");
        if let Some(id) = message["id"].as_u64() {
            if message["result"]["isError"] != json!(false) {
                errors += 1;
            }
            answered.insert(id);
        }
    }
    let concurrent = started.elapsed();
    let qbox_peak_rss = qbox.peak_rss_kib();

    // With a store: the agent's private copy of a snapshot (`QBOX_DB`),
    // brought up to date before every call.
    let store_dir = tempfile::tempdir().expect("tempdir");
    let snapshot = store_dir.path().join("data.sqlite3");
    qbox::store::schema::StoreBuilder::create(&snapshot, qbox::store::Flavor::Kiro)
        .expect("store")
        .login(&qbox::store::schema::FixtureLogin::builder_id(
            "bench-access",
            "bench-refresh",
        ))
        .expect("login");
    let tmp = store_dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let mut with_store = Server::start_with(
        &sidecar,
        &["serve"],
        &[
            ("QBOX_DB", snapshot.to_str().expect("utf-8")),
            ("TMPDIR", tmp.to_str().expect("utf-8")),
            ("HOME", store_dir.path().to_str().expect("utf-8")),
        ],
    );
    let store_call = measure_calls(&mut with_store);
    drop(with_store);

    println!("spawn /bin/echo directly: median {:.3} ms", ms(spawn));
    println!(
        "qbox-sidecar tools/call:   median {:.3} ms ({:+.3} ms over spawn), idle RSS {:.1} MB",
        ms(qbox_call),
        ms(qbox_call) - ms(spawn),
        qbox_idle_rss as f64 / 1024.0
    );
    println!(
        "100 concurrent calls:      {errors} errors, all answered in {:.1} ms, peak RSS {:.1} MB",
        ms(concurrent),
        qbox_peak_rss as f64 / 1024.0
    );
    println!(
        "qbox-sidecar with a store: median {:.3} ms ({:+.3} ms over spawn)",
        ms(store_call),
        ms(store_call) - ms(spawn)
    );

    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/echo_mcp_server.py"
    );
    if std::path::Path::new(python).exists() {
        let mut peer = Server::start(python, &[script]);
        std::thread::sleep(Duration::from_millis(500));
        let peer_idle_rss = peer.rss_kib();
        let peer_call = measure_calls(&mut peer);
        println!(
            "python SDK tools/call:     median {:.3} ms ({:+.3} ms over spawn), idle RSS {:.1} MB",
            ms(peer_call),
            ms(peer_call) - ms(spawn),
            peer_idle_rss as f64 / 1024.0
        );
        println!(
            "round-trip ratio qbox / python: {:.2}x (with a store {:.2}x)",
            ms(qbox_call) / ms(peer_call),
            ms(store_call) / ms(peer_call)
        );
    } else {
        println!(
            "python SDK peer skipped: no .venv (python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt)"
        );
    }
}
